"""Benchmark defocus-aware routed SR -> docs/results/routed_sr.md + routed_sr.png.

On the ``defocus-sr`` evaluation set (``blurwise.data.make_eval``; written to ``--eval-dir`` first if
missing), at x4 and x2, with the shipped heavy model (``edsr-s-xS``) and its EBM-SR:

* bicubic, EBM-SR alone, the heavy model on the whole image (``--route off`` = ``tiling.run_tiled``),
  and routed SR at several thresholds: PSNR/SSIM (Y, border = scale), FLOPs % of the heavy model
  (context, overlap and map estimation counted), wall-clock of the whole pipeline without file I/O
  (map estimation, routing, both models, stitching; median of ``--repeats`` runs in this process),
  speed-up over route off, and routing efficiency = achieved FLOPs cut / ideal cut, the ideal being
  (share of LR pixels whose GT sigma is above the threshold) x (1 - light/heavy MACs per pixel);
* PSNR vs FLOPs % of defocus, texture (ClassSR-style gradient energy) and random routing at equal
  budgets (the figure);
* synthetic renders and real photos as separate rows, each image with its blurred fraction;
* the all-in-focus Set14 / B100 images: what routing costs where nothing is defocused.

``--quick`` uses a few images so it finishes in minutes on a 2-core CPU; ``--allow-untrained`` runs
with untrained registered models when the weights are not shipped yet (a dry run: the numbers then
say nothing about quality). ``--calibrate`` adds a threshold sweep on *training* images (never the
test sets) that picks the default threshold: the lowest one whose PSNR loss with the estimated map
stays within 0.04 dB on average and 0.4 dB on every image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import round_robin  # noqa: E402

from blurwise.errors import ModelError  # noqa: E402
from blurwise.metrics import psnr, ssim  # noqa: E402
from blurwise.metrics.imresize import imresize  # noqa: E402
from blurwise.routing import (  # noqa: E402
    DEFAULT_CONTEXT,
    DEFAULT_MIN_SAVING,
    DEFAULT_OVERLAP,
    DEFAULT_PATCH,
    DEFAULT_SIDE_CONTEXT,
    DEFAULT_THRESHOLD_HR,
    ROUTER_MODELS,
    default_edges,
    default_smooth,
    default_stat,
    default_threshold_hr,
    estimate_lr_map,
    find_light_model,
    lr_map_kwargs,
    lr_map_macs,
    map_precision,
    router_for,
    routing_overlay,
    upscale_routed,
)

SCORERS = ("learned", "defocus", "texture", "random", "defocus-gt")  # defocus-gt: the GT map (oracle)
DEFAULT = "default"  # key of the default routing (no threshold given: the learned router where it ships)
ACCEPT = {"efficiency": 0.8, "cut": 0.55, "speedup": 1.8, "dpsnr": 0.05, "dpsnr_infocus": 0.02}


# ---------------------------------------------------------------------- helpers
def to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


def quality(sr: np.ndarray, hr: np.ndarray, s: int) -> tuple[float, float]:
    a = to8(sr) if sr.dtype != np.uint8 else sr
    return psnr(a, hr, crop=s), ssim(a, hr, crop=s)


def _map_arith(device: Any) -> str:
    """What the default routing's map runs in here, for the report header."""
    mh = map_precision(None, False, device)
    return "fp32" if mh is False else f"{mh} (autocast)"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}){gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def load_pair(scale: int, heavy_name: str | None, allow_untrained: bool, device: str) -> dict:
    """Heavy and light models for a scale, with whether each is trained (shipped weights)."""
    from blurwise.models import get_variant, load_model
    from blurwise.models.registry import is_shipped

    hname = heavy_name or f"edsr-s-x{scale}"
    lname = find_light_model(hname, scale)
    out = {}
    for role, name in (("heavy", hname), ("light", lname)):
        trained = is_shipped(get_variant(name))
        if not trained and not allow_untrained:
            raise ModelError(f"{name} weights are not shipped; rerun with --allow-untrained for a dry run")
        model, info = load_model(name, device=device, allow_untrained=True)
        out[role] = (model, info)
        out[f"{role}_trained"] = trained
    return out


def pick(n: int, limit: int | None, how: str) -> list[int]:
    """Indices of the items a ``--limit`` keeps out of ``n``: the first ``limit``, or ``limit`` spread evenly
    (first and last included), so a few items per subset still cover different source images."""
    if not limit or limit >= n:
        return list(range(n))
    if how == "spread":
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})
    return list(range(limit))


def defocus_items(eval_dir: Path, quick: bool, limit: int | None, how: str = "first") -> tuple[Path, list[dict], bool]:
    """The defocus-sr items (written with make_eval first if missing), ``limit`` per subset picked by ``how``."""
    from blurwise.data import make_eval, read_manifest

    mpath = eval_dir / "defocus-sr" / "manifest.json"
    small = False
    if mpath.is_file():
        small = bool(json.loads(mpath.read_text()).get("small"))
    else:
        print(f"writing the defocus-sr evaluation set to {eval_dir} (small={quick}) ...", flush=True)
        make_eval(eval_dir, small=quick, sets=["defocus-sr"])
        small = quick
    items = read_manifest(eval_dir, "defocus-sr")["items"]
    if quick:
        synth = [it for it in items if it["kind"] == "synthetic"][:1]
        real = [it for it in items if it["kind"] == "real"]
        real = ([it for it in real if it.get("mask")] or real)[:1]
        items = synth + real
    if limit:
        per: dict[str, list[dict]] = {}
        for it in items:
            per.setdefault(it["subset"], []).append(it)
        items = [v[i] for v in per.values() for i in pick(len(v), limit, how)]
    return eval_dir, items, small


def infocus_images(quick: bool, limit: int | None, how: str = "first") -> list[tuple[str, np.ndarray]]:
    from blurwise.data.datasets import read_rgb
    from blurwise.data.paths import data_path

    out = []
    for name in ("Set14", "B100"):
        files = sorted(data_path("sr", "test", name).glob("*.png"))
        if quick:
            keep = [0] if name == "Set14" else []
        else:
            keep = pick(len(files), limit, how)
        out += [(f"{name}/{files[i].stem}", read_rgb(files[i])) for i in keep]
    return out


def crop_item(d: dict, s: int, n: int | None) -> dict:
    """Centre-crop an item's LR arrays to at most n x n (and the HR ones to match); n=None keeps it."""
    if not n:
        return d
    h, w = d["lr"].shape[:2]
    y0, x0 = max(0, (h - n) // 2), max(0, (w - n) // 2)
    y1, x1 = min(h, y0 + n), min(w, x0 + n)
    out = dict(d)
    for k in ("lr", "sigma_lr"):
        if d.get(k) is not None:
            out[k] = d[k][y0:y1, x0:x1]
    for k in ("hr", "sigma", "mask"):
        if d.get(k) is not None:
            out[k] = d[k][y0 * s : y1 * s, x0 * s : x1 * s]
    return out


# ---------------------------------------------------------------------- per image
def run_off(heavy: tuple, lr: np.ndarray, s: int, device: str) -> np.ndarray:
    """The heavy model on the whole image: ``--route off`` (tiling.run_tiled, automatic tile)."""
    from blurwise.tiling import run_tiled

    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None].to(device)
    y = run_tiled(heavy[0], x, scale=s, tile=0)
    return y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def run_light_alone(light: tuple, lr: np.ndarray, sigma: np.ndarray, device: str) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate([lr, sigma[..., None]], 2).transpose(2, 0, 1)))
    with torch.no_grad():
        y = light[0](x[None].to(device))
    return y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def bench_image(
    lr: np.ndarray,
    hr: np.ndarray,
    gt_lr: np.ndarray | None,
    pair: dict,
    s: int,
    args: argparse.Namespace,
    thresholds_hr: list[float],
    budgets: list[float],
) -> dict:
    """Every method on one image: quality, FLOPs, time; routed at each threshold and budget."""
    heavy, light = pair["heavy"], pair["light"]
    r_light = light[1].macs_per_pixel / heavy[1].macs_per_pixel
    dev = args.device
    rec: dict[str, Any] = {"shape": lr.shape[:2], "full_macs": lr.shape[0] * lr.shape[1] * heavy[1].macs_per_pixel}
    # Every timed method runs once per round, rounds repeated: load drift on a shared machine then hits
    # all methods alike, and each method's time is the median over the rounds.
    map_half = map_precision(None, False, dev)  # the map's precision in the default routing
    fns: dict[Any, Any] = {
        "bicubic": lambda: np.clip(imresize(lr, scale=s), 0, 1),
        "map": lambda: estimate_lr_map(lr, s, device=dev, half=map_half),  # as routed
        "ebmsr": lambda: run_light_alone(light, lr, estimate_lr_map(lr, s), dev),
        "off": lambda: run_off(heavy, lr, s, dev),
    }
    for th in thresholds_hr:
        fns[th] = lambda th=th: upscale_routed(lr, heavy=heavy, light=light, threshold=th / s, device=dev)
    fns[DEFAULT] = lambda: upscale_routed(lr, heavy=heavy, light=light, device=dev)
    last, t = round_robin(fns, args.repeats, device=dev)
    est = last["map"]
    rec["map_time"] = t["map"]
    rec["bicubic"] = {"q": quality(last["bicubic"], hr, s), "t": t["bicubic"], "flops": 0.0}
    flops_light = r_light + lr_map_macs(lr.shape[:2], s) / rec["full_macs"]
    rec["ebmsr"] = {"q": quality(last["ebmsr"], hr, s), "t": t["ebmsr"], "flops": flops_light}
    rec["off"] = {"q": quality(last["off"], hr, s), "t": t["off"], "flops": 1.0}
    rec["routed"] = {}
    for key in [*thresholds_hr, DEFAULT]:
        sr, rep = last[key]
        e = {"q": quality(sr, hr, s), "t": t[key], "flops": rep.flops_fraction}
        e["light"] = rep.fractions.get("light", 0.0)
        e["scorer"], e["thresholds"] = rep.scorer, rep.thresholds
        if gt_lr is not None:  # the default's "defocused" pixels: GT sigma above the map's calibrated threshold
            th = default_threshold_hr(s) if key == DEFAULT else key
            e["ideal"] = float(np.mean(gt_lr > th / s)) * (1.0 - r_light)
        rec["routed"][key] = e
        if key in (thresholds_hr[0], DEFAULT):
            rec.setdefault("plans", {})[key] = rep.plan
    if gt_lr is not None:  # oracle: the GT map instead of the estimated one (separates map quality from routing)
        sr, rep = upscale_routed(lr, heavy=heavy, light=light, sigma_lr=gt_lr, threshold=default_threshold_hr(s) / s)
        rec["oracle"] = {
            "q": quality(sr, hr, s),
            "flops": rep.flops_fraction,
            "ideal": float(np.mean(gt_lr > default_threshold_hr(s) / s)) * (1.0 - r_light),
        }
    rec["curves"] = {}
    for scorer in SCORERS:
        sig = gt_lr if scorer == "defocus-gt" else est
        if sig is None:
            continue
        kind = "defocus" if scorer == "defocus-gt" else scorer
        for b in budgets:
            sr, rep = upscale_routed(lr, heavy=heavy, light=light, sigma_lr=sig, budget=b, scorer=kind, device=dev)
            rec["curves"][(scorer, b)] = {"q": quality(sr, hr, s), "flops": rep.flops_fraction}
    rec["est_fraction"] = float(np.mean(est > 1.0 / s))
    return rec


# ---------------------------------------------------------------------- aggregation
def agg(recs: list[dict], key: Any, sub: str | None = None) -> dict:
    """Mean PSNR/SSIM, pixel-weighted FLOPs %, summed time, efficiency over images."""
    rows = [(r, (r[key] if sub is None else r[key][sub])) for r in recs]
    full = sum(r["full_macs"] for r, _ in rows)
    out = {
        "psnr": float(np.mean([e["q"][0] for _, e in rows])),
        "ssim": float(np.mean([e["q"][1] for _, e in rows])),
        "flops": sum(e["flops"] * r["full_macs"] for r, e in rows) / full,
    }
    if all("t" in e for _, e in rows):
        out["t"] = float(sum(e["t"] for _, e in rows))
    if all("ideal" in e for _, e in rows):
        ideal = sum(e["ideal"] * r["full_macs"] for r, e in rows)
        cut = sum((1 - e["flops"]) * r["full_macs"] for r, e in rows)
        out["eff"] = cut / ideal if ideal > 0.01 * full else float("nan")  # undefined without defocus
        out["ideal"] = ideal / full
    if all("light" in e for _, e in rows):
        out["light"] = float(np.mean([e["light"] for _, e in rows]))
    return out


def fmt(v: float | None, spec: str = ".2f", na: str = "n/a") -> str:
    return na if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def method_table(recs: list[dict], s: int, thresholds_hr: list[float], with_eff: bool) -> tuple[list[str], dict]:
    off = agg(recs, "off")
    lines = [
        "| method | PSNR (Y) | SSIM (Y) | FLOPs % of heavy | wall-clock s | speed-up | light % | efficiency |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, a: dict) -> str:
        sp = off["t"] / a["t"] if a.get("t") else None
        return (
            f"| {name} | {a['psnr']:.3f} | {a['ssim']:.4f} | {100 * a['flops']:.1f} | {fmt(a.get('t'))} | "
            f"{fmt(sp, '.2f') + ('x' if sp else '')} | {fmt(100 * a['light'] if 'light' in a else None, '.0f')} | "
            f"{fmt(a.get('eff') if with_eff else None, '.2f')} |"
        )

    lines.append(row("bicubic", agg(recs, "bicubic")))
    lines.append(row("EBM-SR alone (estimated map)", agg(recs, "ebmsr")))
    lines.append(row("heavy, whole image (`--route off`)", off))
    for th in thresholds_hr:
        a = agg(recs, "routed", th)
        st = default_stat(s)
        sm, ed = default_smooth(s), default_edges(s)
        st = ("" if st == "min" else f", p{st:g}") + ("" if sm is None else f", smooth {sm:g}")
        st += "" if ed is None else f", edges {ed:g}"
        lines.append(row(f"routed, map threshold sigma_HR >= {th:g} px (LR {th / s:.3g}){st}", a))
    default = agg(recs, "routed", DEFAULT)
    lines.append(row(f"routed, {default_label(recs[0]['routed'][DEFAULT], s)} **(default)**", default))
    if all("oracle" in r for r in recs):
        lines.append(row("routed, default, GT map (oracle, no map cost)", agg(recs, "oracle")))
    return lines, {"off": off, "default": default}


def default_label(e: dict, s: int) -> str:
    """How the default routing decided: the learned router and its threshold, or the map threshold."""
    if e.get("scorer") == "learned":
        return f"learned router (`router-x{s}`, predicted loss <= {-e['thresholds'][0]:g})"
    return f"map threshold sigma_HR >= {default_threshold_hr(s):g} px"


def per_image_table(recs: list[dict], ids: list[str], fracs: list[Any], s: int) -> list[str]:
    lines = [
        "| image | kind | blurred fraction | PSNR heavy | PSNR routed (default) | delta dB | FLOPs % | "
        "efficiency | speed-up | map time % of heavy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, iid, (kind, frac, src) in zip(recs, ids, fracs, strict=True):
        d = r["routed"][DEFAULT]
        eff = (1 - d["flops"]) / d["ideal"] if d.get("ideal", 0) > 0.01 else None
        lines.append(
            f"| {iid} | {kind} | {fmt(frac, '.2f')} ({src}) | {r['off']['q'][0]:.3f} | {d['q'][0]:.3f} | "
            f"{d['q'][0] - r['off']['q'][0]:+.3f} | {100 * d['flops']:.1f} | {fmt(eff, '.2f')} | "
            f"{r['off']['t'] / d['t']:.2f}x | {100 * r['map_time'] / r['off']['t']:.1f} |"
        )
    return lines


def curve_table(recs: list[dict], budgets: list[float]) -> tuple[list[str], dict]:
    names = [k for k in SCORERS if all((k, budgets[0]) in r["curves"] for r in recs)]
    lines = ["| budget | " + " | ".join(f"{k} PSNR / FLOPs %" for k in names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    pts: dict[str, list[tuple[float, float]]] = {}
    for b in budgets:
        cells = []
        for k in names:
            a = agg(recs, "curves", (k, b))
            pts.setdefault(k, []).append((100 * a["flops"], a["psnr"]))
            cells.append(f"{a['psnr']:.3f} / {100 * a['flops']:.1f}")
        lines.append(f"| {b:g} | " + " | ".join(cells) + " |")
    return lines, pts


# ---------------------------------------------------------------------- calibration (training images only)
MAP_SPECS = {
    "default": {},
    "edge": {"method": "edge"},
    "learned": {"method": "learned", "segmenter": "none"},
    "learned+slic": {"method": "learned", "segmenter": "slic"},
}


CAL_MEAN_DB, CAL_WORST_DB = -0.03, -0.3  # the calibration rule: 0.05 dB target less a margin for the shift to eval
CAL_INFOCUS_DB = -0.02  # ... and the acceptance's in-focus limit on the same images unblurred


def rules_text(smooth: float | None, edges: float | None) -> str:
    """How ``upscale_routed``'s smooth-patch and strong-edge rules route, as a clause ("" when both are off)."""
    text = "" if smooth is None else f", smooth patches (texture score >= {smooth:g}) light"
    return text + ("" if edges is None else f", strong-edge patches (texture score < {edges:g}) heavy")


def calibrate(
    pair: dict,
    s: int,
    n: int,
    thresholds_hr: list[float],
    dev: str,
    maps: tuple[str, ...] = ("default",),
    stats: tuple[str | float, ...] = ("min",),
    seeds: tuple[int, ...] = (1000,),
    smooths: tuple[float | None, ...] = (None,),
    edges: tuple[float | None, ...] = (None,),
) -> list[str]:
    """Threshold sweep on defocus renders of *training* images (sr/train BSD200): PSNR loss vs the heavy
    model and FLOPs cut, routing on the GT map and on maps estimated from the LR image (``maps``: names of
    ``MAP_SPECS``; ``default`` = what ``blurwise upscale`` uses) with each per-patch statistic of
    ``stats``, each ``smooth`` of ``smooths`` (``upscale_routed``'s smooth-patch rule; None = off) and each
    of ``edges`` (its strong-edge rule); every image is rendered once per seed base in ``seeds`` (seed base +
    image index). The same images unblurred give the in-focus loss of each estimated-map setting."""
    from blurwise.data.datasets import list_images, read_rgb, render_item
    from blurwise.data.paths import data_path

    files = list_images(data_path("sr", "train", "BSD200"))[:n]
    heavy, light = pair["heavy"], pair["light"]
    names = ["estimated" if m == "default" else f"estimated ({m})" for m in maps]
    keys = [("GT", "min", t, None, None) for t in thresholds_hr]
    keys += [(m, st, t, sm, e) for m in names for st in stats for sm in smooths for e in edges for t in thresholds_hr]
    loss: dict[tuple, list[float]] = {k: [] for k in keys}
    infocus: dict[tuple, list[float]] = {k: [] for k in keys if k[0] != "GT"}
    cut: dict[tuple, list[float]] = {k: [] for k in keys}
    ideal: dict[tuple, list[float]] = {k: [] for k in keys}
    light_share = 1.0 - light[1].macs_per_pixel / heavy[1].macs_per_pixel

    def estimates(lr: np.ndarray) -> dict[str, np.ndarray]:  # every candidate map of one LR image
        return {nm: estimate_lr_map(lr, s, **MAP_SPECS[m]) for nm, m in zip(names, maps, strict=True)}

    for base in seeds:
        for i, f in enumerate(files):
            r = render_item(read_rgb(f), np.random.default_rng(base + i), scale=s)
            lr, hr, gt = r["lr"].astype(np.float32) / 255, r["hr"], r["sigma_lr"]
            p0 = quality(run_off(heavy, lr, s, dev), hr, s)[0]
            est = estimates(lr)
            for k in keys:
                m, st, t, sm, e = k
                sr, rep = upscale_routed(
                    lr,
                    heavy=heavy,
                    light=light,
                    sigma_lr=gt if m == "GT" else est[m],
                    threshold=t / s,
                    stat=st,
                    smooth=sm,
                    edges=e,
                    device=dev,
                )
                loss[k].append(quality(sr, hr, s)[0] - p0)
                cut[k].append(rep.flops_cut)
                ideal[k].append(float((gt >= t / s).mean()) * light_share)
    from blurwise.data.sr import make_sr_pair

    for f in files:  # in focus: the same images, not blurred
        lr8, hr8 = make_sr_pair(read_rgb(f), s)
        lr = lr8.astype(np.float32) / 255
        p0 = quality(run_off(heavy, lr, s, dev), hr8, s)[0]
        est = estimates(lr)
        for k in infocus:
            m, st, t, sm, e = k
            sr, _ = upscale_routed(
                lr, heavy=heavy, light=light, sigma_lr=est[m], threshold=t / s, stat=st, smooth=sm, edges=e, device=dev
            )
            infocus[k].append(quality(sr, hr8, s)[0] - p0)
    seed_txt = ", ".join(f"{b}+i" for b in seeds)
    lines = [
        f"Calibration at x{s}: {len(files)} BSD200 *training* images (never seen by the map's training) rendered "
        f"like defocus-sr, {len(seeds)} render(s) each (seeds {seed_txt}); routing on the GT map and on the map "
        "estimated from the LR image (as `blurwise upscale` does), per-patch statistic `min` or a percentile. "
        "The map-estimation cost is not counted in the estimated rows' cut here (it is in every table above).",
        "",
        "| map | patch statistic | smooth patches light | strong edges heavy | threshold sigma_HR px | "
        "mean delta PSNR vs heavy | worst | in focus | FLOPs cut | ideal cut | efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        eff = sum(cut[k]) / max(sum(ideal[k]), 1e-9)
        st = k[1] if k[1] == "min" else f"p{k[1]:g}"
        inf = f"{np.mean(infocus[k]):+.4f}" if k in infocus else "-"
        lines.append(
            f"| {k[0]} | {st} | {'-' if k[3] is None else f'>= {k[3]:g}'} | {'-' if k[4] is None else f'< {k[4]:g}'} | "
            f"{k[2]:g} | {np.mean(loss[k]):+.4f} | {np.min(loss[k]):+.4f} | {inf} | {100 * np.mean(cut[k]):.1f}% | "
            f"{100 * np.mean(ideal[k]):.1f}% | {eff:.2f} |"
        )
    est0 = names[0]
    ok = [
        k
        for k in keys
        if k[0] == est0
        and np.mean(loss[k]) >= CAL_MEAN_DB
        and np.min(loss[k]) >= CAL_WORST_DB
        and np.mean(infocus[k]) >= CAL_INFOCUS_DB
    ]
    best = max(ok, key=lambda k: np.mean(cut[k])) if ok else None
    pick = "none"
    if best is not None:
        pick = (
            f"statistic {best[1]}{rules_text(best[3], best[4])}, sigma_HR {best[2]:g} px "
            f"({100 * np.mean(cut[best]):.1f}% cut)"
        )
    lines += [
        "",
        f"Largest cut whose {est0}-map routing stays within {-CAL_MEAN_DB:g} dB on average (the 0.05 dB target less "
        f"a margin for the shift to the eval set) and {-CAL_WORST_DB:g} dB on every render, and within "
        f"{-CAL_INFOCUS_DB:g} dB on the same images unblurred (the in-focus criterion): {pick} "
        f"(the defaults are {default_stat(s)}, smooth {default_smooth(s)}, edges {default_edges(s)}, "
        f"{default_threshold_hr(s):g} px).",
    ]
    return lines


def calibrate_from_args(pair: dict, s: int, args: argparse.Namespace, thresholds_hr: list[float], n: int) -> list[str]:
    """:func:`calibrate` with the candidate maps, statistics, seeds and rules of the ``--calibrate-*`` flags."""

    def rules(text: str) -> tuple[float | None, ...]:
        return tuple(None if v == "none" else float(v) for v in text.split(","))

    return calibrate(
        pair,
        s,
        n,
        thresholds_hr,
        args.device,
        tuple(args.calibrate_maps.split(",")),
        tuple(v if v == "min" else float(v) for v in args.calibrate_stats.split(",")),
        tuple(int(v) for v in args.calibrate_seeds.split(",")),
        rules(args.calibrate_smooth),
        rules(args.calibrate_edges),
    )


def calibration_report(args: argparse.Namespace, scales: list[int], thresholds_hr: list[float], argv: Any) -> int:
    """``--calibrate-only``: the calibration tables of every scale (training renders only) as their own file."""
    t_start = time.time()
    cmd = "python benchmarks/routed_sr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [
        "# Routed SR: calibration of the routing defaults on training renders",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- command: `{cmd}`",
        "",
    ]
    for s in scales:
        pair = load_pair(s, args.heavy, args.allow_untrained, args.device)
        md += [f"## x{s}", ""]
        md += calibrate_from_args(pair, s, args, thresholds_hr, args.calibrate or 12)
        md.append("")
    md += [f"- total time: {time.time() - t_start:.0f} s", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print(f"wrote {out}", flush=True)
    return 0


# ---------------------------------------------------------------------- grid design (GT maps only, no models run)
GRIDS = [(16, 2, 6), (8, 1, 3), (4, 1, 3), (4, 1, 2), (4, 1, 1), (4, 0, 2)]  # (patch, overlap, context)


def design_sweep(n: int, scales: list[int], mpp: dict[int, tuple[float, float]]) -> list[str]:
    """Efficiency of grid settings on GT sigma maps of *training* images (defocus-sr recipe, no rendering)."""
    from blurwise.data import coc_to_sigma, random_dof, signed_coc, synthetic_depth
    from blurwise.data.datasets import list_images, read_rgb
    from blurwise.data.paths import data_path
    from blurwise.data.sr import downscale_sigma, mod_crop
    from blurwise.routing import default_threshold, plan_routes

    files = list_images(data_path("sr", "train", "BSD200"))[:n]
    maps = []
    for i, f in enumerate(files):
        img = mod_crop(read_rgb(f), 12)
        rng = np.random.default_rng(2000 + i)
        d = synthetic_depth(img, rng)
        dof = random_dof(d, rng)
        maps.append(coc_to_sigma(signed_coc(d, dof["focus_depth"], max_coc=dof["max_coc"])))
    lines = [
        f"GT sigma maps of {len(files)} BSD200 *training* images made with the defocus-sr recipe (synthetic depth, "
        "random shallow depth of field); routing on the GT map (no estimation error), FLOPs with the registered "
        "models' MACs per pixel. efficiency = achieved cut / ideal cut.",
        "",
        "| scale | threshold sigma_HR | ideal cut | " + " | ".join(f"p{p} o{o} c{c}" for p, o, c in GRIDS) + " |",
        "|---|---|---|" + "---|" * len(GRIDS),
    ]
    for s in scales:
        hm, lm = mpp[s]
        for thr in (0.5, 1.0, 2.0):
            ideal_px = cut_px = None
            cells = []
            for p, o, c in GRIDS:
                ideal = cut = full = 0.0
                for sig in maps:
                    m = downscale_sigma(sig, s)
                    t = thr / s
                    pl = plan_routes(
                        m,
                        scale=s,
                        threshold=t,
                        patch=p,
                        overlap=o,
                        context=c,
                        heavy_macs=hm,
                        light_macs=lm,
                        map_macs=200.0 * m.size,
                    )
                    ideal += float(np.mean(m > t)) * (1 - lm / hm) * m.size
                    cut += (1 - pl.macs_fraction) * m.size
                    full += m.size
                ideal_px, cut_px = ideal / full, cut / full
                cells.append(f"{cut_px / ideal_px:.2f} ({100 * cut_px:.0f}%)" if ideal_px > 0 else "n/a")
            lines.append(f"| x{s} | {thr:g} | {100 * (ideal_px or 0):.0f}% | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"(cells: efficiency (FLOPs cut); default grid: patch/overlap/context from plan.py; default "
        f"threshold sigma_HR {default_threshold(1):g} px)",
    ]
    return lines


# ---------------------------------------------------------------------- figure
def make_figure(curves: dict[int, dict], refs: dict[int, dict], overlay: tuple | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves) + (overlay is not None)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2))
    axes = np.atleast_1d(axes)
    style = {
        "learned": ("tab:purple", "P"),
        "defocus": ("tab:green", "o"),
        "texture": ("tab:orange", "s"),
        "random": ("tab:gray", "^"),
        "defocus-gt": ("tab:olive", "d"),
    }
    for ax, (s, pts) in zip(axes, sorted(curves.items(), reverse=True), strict=False):
        for k, p in pts.items():
            p = sorted(p)
            c, m = style[k]
            ax.plot([x for x, _ in p], [y for _, y in p], marker=m, color=c, label=f"{k} routing")
        ref = refs[s]
        ax.axhline(ref["off"]["psnr"], color="tab:red", ls="--", lw=1, label="heavy, whole image")
        ax.plot([100 * ref["ebmsr"]["flops"]], [ref["ebmsr"]["psnr"]], "b*", ms=10, label="EBM-SR alone")
        for th, a in ref["thr"].items():
            ax.plot([100 * a["flops"]], [a["psnr"]], "kx")
            ax.annotate(
                f"{th:g}", (100 * a["flops"], a["psnr"]), fontsize=7, xytext=(3, -8), textcoords="offset points"
            )
        if "default" in ref:
            a = ref["default"]
            ax.plot([100 * a["flops"]], [a["psnr"]], "r*", ms=11, label="default routing")
        ax.set_xlabel("FLOPs % of the heavy model (map and context included)")
        ax.set_ylabel("PSNR (Y) dB, synthetic defocus-sr")
        ax.set_title(f"x{s}: PSNR vs FLOPs % (x: map thresholds, sigma_HR px)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if overlay is not None:
        axes[-1].imshow(overlay[1])
        axes[-1].set_title(f"routes at the default: {overlay[2]}\n(red heavy, green EBM-SR, white: tiles)", fontsize=9)
        axes[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few images (minutes on a 2-core CPU)")
    ap.add_argument("--allow-untrained", action="store_true", help="dry run with untrained models if not shipped")
    ap.add_argument("--scales", default="4,2")
    ap.add_argument("--heavy", default=None, help="heavy model name (default edsr-s-xS)")
    ap.add_argument("--eval-dir", default=os.environ.get("BLURWISE_EVAL", str(Path.home() / ".cache/blurwise/eval")))
    ap.add_argument("--limit", type=int, default=None, help="images per subset")
    ap.add_argument(
        "--pick", choices=["first", "spread"], default="first", help="with --limit: the first N, or N spread evenly"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-lr", type=int, default=None, help="centre-crop LR images to at most N x N (quick: 48)")
    ap.add_argument("--thresholds", default=None, help="sigma_HR px, comma-separated")
    ap.add_argument("--budgets", default=None, help="FLOPs fractions for the scorer curves")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU; 0 = torch default)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calibrate", type=int, default=0, help="N training images for the threshold calibration")
    ap.add_argument(
        "--calibrate-maps",
        default="default",
        help=f"map estimators compared by --calibrate, comma-separated from {', '.join(MAP_SPECS)} (first decides)",
    )
    ap.add_argument(
        "--calibrate-stats", default="min", help="per-patch statistics compared by --calibrate: min and/or percentiles"
    )
    ap.add_argument(
        "--calibrate-seeds", default="1000", help="seed bases of --calibrate's renders (one render per image each)"
    )
    ap.add_argument(
        "--calibrate-smooth",
        default="none",
        help="smooth-patch rules compared by --calibrate: 'none' and/or texture-score thresholds, comma-separated",
    )
    ap.add_argument(
        "--calibrate-edges",
        default="none",
        help="strong-edge rules compared by --calibrate: 'none' and/or texture-score thresholds, comma-separated",
    )
    ap.add_argument(
        "--calibrate-only", action="store_true", help="only the --calibrate tables (training renders), no eval set"
    )
    ap.add_argument("--design", type=int, default=None, help="N training maps for the grid sweep (quick: 2, else 24)")
    ap.add_argument("--out", default=str(REPO / "docs/results/routed_sr.md"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or os.cpu_count()))
    scales = [int(v) for v in args.scales.split(",")]
    thresholds_hr = (
        [float(v) for v in args.thresholds.split(",")]
        if args.thresholds
        else ([0.5, DEFAULT_THRESHOLD_HR] if args.quick else [0.5, 0.75, 1.0, 1.5, 2.0])
    )
    if args.quick and args.max_lr is None:
        args.max_lr = 48
    defaults_hr = {default_threshold_hr(s) for s in scales}
    thresholds_hr = sorted({*thresholds_hr, *defaults_hr})
    budgets = (
        [float(v) for v in args.budgets.split(",")]
        if args.budgets
        else ([0.5] if args.quick else [0.3, 0.4, 0.5, 0.6, 0.75, 0.9])
    )
    if args.calibrate_only:
        return calibration_report(args, scales, thresholds_hr, argv)
    eval_dir, items, small = defocus_items(Path(args.eval_dir), args.quick, args.limit, args.pick)
    infocus = infocus_images(args.quick, args.limit, args.pick)
    t_start = time.time()
    out_md = Path(args.out)
    n_synth = sum(it["kind"] == "synthetic" for it in items)
    cmd = "python benchmarks/routed_sr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md: list[str] = [
        "# Routed SR: defocus-aware routing vs the heavy model on the whole image",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- command: `{cmd}`",
        f"- eval set: defocus-sr ({'small' if small else 'full'}), {len(items)} items used "
        f"({n_synth} synthetic, {len(items) - n_synth} real)"
        f"; all-in-focus: {len(infocus)} images of Set14/B100",
        "- FLOPs = 2 x MACs on both sides of every ratio; MACs per pixel from each model's ModelInfo; routed FLOPs "
        "include the context of every tile and the defocus-map estimate; wall-clock = the whole pipeline without "
        f"file I/O, median of {args.repeats} runs in this process (route off = `tiling.run_tiled`, automatic tile).",
        "- routing efficiency = achieved FLOPs cut / ideal cut; ideal cut = (share of LR pixels whose GT sigma is "
        "above the threshold) x (1 - light/heavy MACs per pixel), pixel-weighted over the images.",
        f"- routing map arithmetic (the default, `--map-precision auto`): {_map_arith(args.device)} (default "
        "routing here and in focus; the budget curves and EBM-SR alone take the fp32 map).",
        "",
    ]
    header_len = len(md)
    curves: dict[int, dict] = {}
    mpps: dict[int, tuple[float, float]] = {}
    refs: dict[int, dict] = {}
    overlay: tuple | None = None
    overlay_s = None
    checks: list[str] = []
    from blurwise.data import load_defocus_item

    for s in scales:
        pair = load_pair(s, args.heavy, args.allow_untrained, args.device)
        hi, li = pair["heavy"][1], pair["light"][1]
        mpps[s] = (hi.macs_per_pixel, li.macs_per_pixel)
        trained = pair["heavy_trained"] and pair["light_trained"]
        md += [
            f"## x{s}: heavy `{hi.name}` ({hi.params / 1e3:.0f}K params, {hi.macs_per_pixel / 1e3:.0f}K MACs/LR px), "
            f"light `{li.name}` ({li.params / 1e3:.1f}K, {li.macs_per_pixel / 1e3:.1f}K MACs/LR px, "
            f"{100 * li.macs_per_pixel / hi.macs_per_pixel:.1f}% of heavy)",
            "",
        ]
        if not trained:
            md += [
                "> **DRY RUN: untrained weights** ("
                + ", ".join(n for n, k in ((hi.name, "heavy_trained"), (li.name, "light_trained")) if not pair[k])
                + "). Quality numbers are meaningless; FLOPs, efficiency and timings are representative.",
                "",
            ]
        # warm-up (imports, allocator, thread pools)
        lr0 = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
        upscale_routed(lr0, heavy=pair["heavy"], light=pair["light"], device=args.device)
        run_off(pair["heavy"], lr0, s, args.device)
        recs: dict[str, list[dict]] = {"synthetic": [], "real": []}
        ids: dict[str, list[str]] = {"synthetic": [], "real": []}
        fracs: dict[str, list[Any]] = {"synthetic": [], "real": []}
        for it in items:
            d = crop_item(load_defocus_item(eval_dir, it, scale=s), s, args.max_lr)
            lr = d["lr"].astype(np.float32) / 255.0
            gt = d.get("sigma_lr")
            t0 = time.time()
            rec = bench_image(lr, d["hr"], gt, pair, s, args, thresholds_hr, budgets)
            kind = it["kind"]
            if gt is not None:
                frac = (float(np.mean(d["sigma"] > 1.0)), "GT sigma_HR > 1 px")
            elif d.get("mask") is not None:
                frac = (float(np.mean(d["mask"] > 127)), "GT mask")
                # binary mask: ideal = blurred share of LR pixels, whatever the threshold
                m = d["mask"][: lr.shape[0] * s, : lr.shape[1] * s] > 127
                m_lr = m.reshape(lr.shape[0], s, lr.shape[1], s).mean(axis=(1, 3))
                r_l = li.macs_per_pixel / hi.macs_per_pixel
                for e in rec["routed"].values():
                    e["ideal"] = float(np.mean(m_lr > 0.5)) * (1 - r_l)
            else:
                frac = (rec["est_fraction"], "estimated")
            rec["sr_train_source"] = str(it.get("source", "")).startswith("sr/train/")
            recs[kind].append(rec)
            ids[kind].append(it["id"])
            fracs[kind].append((kind, frac[0], frac[1]))
            print(f"x{s} {it['id']}: {time.time() - t0:.1f}s", flush=True)
            if kind == "synthetic" and "plans" in rec:  # show the most mixed routing of the first scale
                plan = rec["plans"][DEFAULT]
                mix = abs(plan.fractions().get("light", 0.0) - 0.5)
                if overlay_s in (None, s) and (overlay is None or mix < overlay[0]):
                    overlay_s = s
                    overlay = (mix, routing_overlay(lr, plan, zoom=max(1, 256 // max(lr.shape[:2]))), it["id"])
        ref: dict[str, Any] = {}
        for kind in ("synthetic", "real"):
            if not recs[kind]:
                continue
            with_eff = all("ideal" in r["routed"][DEFAULT] for r in recs[kind])
            lines, key = method_table(recs[kind], s, thresholds_hr, with_eff)
            md += [f"### x{s}, {kind} ({len(recs[kind])} images)", "", *lines, ""]
            md += per_image_table(recs[kind], ids[kind], fracs[kind], s) + [""]
            off, dflt = key["off"], key["default"]
            if kind == "synthetic":
                ref = {
                    "off": off,
                    "ebmsr": agg(recs[kind], "ebmsr"),
                    "thr": {th: agg(recs[kind], "routed", th) for th in thresholds_hr},
                    "default": dflt,
                }
                lines, pts = curve_table(recs[kind], budgets)
                curves[s] = pts
                title = (
                    f"### x{s}: learned vs defocus vs texture vs random routing, equal budgets "
                    "(synthetic; defocus-gt: GT map)"
                )
                md += [title, "", *lines, ""]
                if s == 4:
                    checks += [
                        f"- routing efficiency >= {ACCEPT['efficiency']}: {fmt(dflt.get('eff'))} "
                        f"({'PASS' if dflt.get('eff', 0) >= ACCEPT['efficiency'] else 'FAIL'})",
                        f"- heavy FLOPs cut >= {100 * ACCEPT['cut']:.0f}%: {100 * (1 - dflt['flops']):.1f}% "
                        f"({'PASS' if 1 - dflt['flops'] >= ACCEPT['cut'] else 'FAIL'})",
                        f"- CPU speed-up >= {ACCEPT['speedup']}x: {off['t'] / dflt['t']:.2f}x "
                        f"({'PASS' if off['t'] / dflt['t'] >= ACCEPT['speedup'] else 'FAIL'})",
                        f"- PSNR within {ACCEPT['dpsnr']} dB of heavy: {dflt['psnr'] - off['psnr']:+.3f} dB "
                        f"({'PASS' if dflt['psnr'] - off['psnr'] >= -ACCEPT['dpsnr'] else 'FAIL'})",
                    ]
                    clean = [r for r in recs[kind] if not r["sr_train_source"]]
                    if 0 < len(clean) < len(recs[kind]):
                        c_off, c_d = agg(clean, "off"), agg(clean, "routed", DEFAULT)
                        checks.append(
                            f"- (split check, not the acceptance figure) the {len(clean)} synthetic renders of "
                            f"images the SR models never trained on (without the {len(recs[kind]) - len(clean)} "
                            f"renders of `sr/train` DIV2K images): {c_d['psnr'] - c_off['psnr']:+.3f} dB, "
                            f"cut {100 * (1 - c_d['flops']):.1f}%, efficiency {fmt(c_d.get('eff'))}, "
                            f"{c_off['t'] / c_d['t']:.2f}x"
                        )
            elif s == 4:
                checks.append(
                    f"- real photos lose <= {ACCEPT['dpsnr']} dB: {dflt['psnr'] - off['psnr']:+.3f} dB "
                    f"({'PASS' if dflt['psnr'] - off['psnr'] >= -ACCEPT['dpsnr'] else 'FAIL'})"
                )
        if ref:
            refs[s] = ref
        # all in focus
        rows = []
        for name, hr in infocus:
            from blurwise.data.sr import make_sr_pair

            lr8, hr8 = make_sr_pair(hr, s)
            if args.max_lr:
                c = crop_item({"lr": lr8, "hr": hr8}, s, args.max_lr)
                lr8, hr8 = c["lr"], c["hr"]
            lr = lr8.astype(np.float32) / 255.0
            p_off = quality(run_off(pair["heavy"], lr, s, args.device), hr8, s)
            sr, rep = upscale_routed(lr, heavy=pair["heavy"], light=pair["light"], device=args.device)
            p_r = quality(sr, hr8, s)
            rows.append((name, p_off[0], p_r[0], rep.flops_fraction, rep.fractions.get("light", 0.0)))
        if rows:
            md += [
                f"### x{s}: all-in-focus images (Set14 / B100), default routing with the estimated map",
                "",
                "| image | PSNR heavy | PSNR routed | delta dB | FLOPs % | light % |",
                "|---|---|---|---|---|---|",
            ]
            md += [
                f"| {n} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {100 * f:.1f} | {100 * lf:.0f} |"
                for n, a, b, f, lf in rows
            ]
            for sub in ("Set14", "B100"):
                sel = [r for r in rows if r[0].startswith(sub)]
                if sel:
                    d = float(np.mean([r[2] - r[1] for r in sel]))
                    md.append(
                        f"| **{sub} mean** | {np.mean([r[1] for r in sel]):.3f} | "
                        f"{np.mean([r[2] for r in sel]):.3f} | {d:+.3f} | | |"
                    )
                    if s == 4 and sub == "Set14":
                        checks.append(
                            f"- Set14 (in focus) loses <= {ACCEPT['dpsnr_infocus']} dB: {d:+.3f} dB "
                            f"({'PASS' if d >= -ACCEPT['dpsnr_infocus'] else 'FAIL'})"
                        )
            md.append("")
        if args.calibrate:
            md += [
                f"### x{s}: threshold calibration",
                "",
                *calibrate_from_args(pair, s, args, thresholds_hr, args.calibrate),
                "",
            ]
    n_design = args.design if args.design is not None else (2 if args.quick else 24)
    if n_design:
        md += [
            "## Grid design: patch / overlap / context vs routing efficiency",
            "",
            *design_sweep(n_design, scales, mpps),
            "",
        ]
    if checks:
        md[header_len:header_len] = ["## Acceptance at the default setting (x4, defocus-sr)", "", *checks, ""]
    md += [
        "## How routing works and why these defaults",
        "",
        f"- **Grid**: {DEFAULT_PATCH} x {DEFAULT_PATCH} LR px patches. A patch goes to EBM-SR only if a low statistic "
        f"of the sigma over it and {DEFAULT_OVERLAP} px around it is >= the threshold: the *minimum* for a given map "
        "(any in-focus pixel keeps it heavy), a calibrated low percentile for the estimated map (per scale, "
        "`LR_MAP_STAT`: it tolerates the map's isolated false 'in focus' pixels, which would otherwise break the "
        "defocused area into fragments that each need a context ring). "
        "Small patches lose little of the defocused area to quantisation (see the grid-design table).",
        "- **Tiles**: heavy patches are covered by a cost-aware guillotine partition: the tight bounding box of "
        "the heavy patches is cut where two boxes with their context cost fewer window pixels than one; a light "
        "patch inside a heavy box is computed by the heavy model anyway and is promoted to heavy (free quality). "
        "Light patches are merged into row-run rectangles, or the light model runs once on the whole image "
        "when that is cheaper. If routing would save less than "
        f"{DEFAULT_MIN_SAVING:.0%} of the heavy FLOPs, everything runs heavy (fallback, decided before the cover "
        "when even context-free tiles could not save that; docs/results/routed_fallback.md).",
        f"- **Context and blending**: each tile's window adds {DEFAULT_OVERLAP} px (blend band) + {DEFAULT_CONTEXT} px "
        "(context) per interior side, clamped at the image border (no padding there, so border pixels equal a "
        "whole-image run); a heavy tile's side that borders only cheaper routes puts its blend band inside its core "
        f"and gets {DEFAULT_SIDE_CONTEXT} px of context beyond the core (no band outside it): the light model runs on "
        "the whole image and fills the band, and the planner keeps bands outside the core when that costs fewer "
        "FLOPs (few light patches); the cover's cost counts the context of each side, so fragmented heavy areas are "
        "covered more tightly. Blend weights are each tile's indicator smoothed by a linear ramp "
        "2 x overlap x scale HR px wide; the tiles partition the image and the whole-image light output takes "
        "what the heavy bands inside their cores leave, so the weights sum to exactly 1 everywhere (tested).",
        "- **Default map and threshold per scale**: "
        + "; ".join(
            f"x{s}: {lr_map_kwargs(s).get('method', 'edge/DGS')} map, sigma_HR >= {default_threshold_hr(s):g} px, "
            f"patch statistic {default_stat(s)}" + rules_text(default_smooth(s), default_edges(s))
            for s in scales
        )
        + " (`blurwise.routing.LR_MAP_DEFAULTS` / `LR_MAP_THRESHOLD_HR` / `LR_MAP_STAT` / `LR_MAP_SMOOTH` / "
        "`LR_MAP_EDGES`, chosen with "
        "`--calibrate N "
        "--calibrate-maps ... --calibrate-stats ... --calibrate-seeds ...` on training renders by the rule stated "
        "under the calibration table: the x4 learned map (`defocus-cnn-x4`, trained on LR x4 "
        "renders of training images) separates sub-LR-pixel blur that the edge estimate cannot). "
        f"Without a per-scale map: sigma_HR = {DEFAULT_THRESHOLD_HR:g} px (LR map: / scale). reference.md: bicubic x4 "
        "PSNR on Gaussian-defocused content is 25.9 dB in focus, 32.5 dB at 1 px, 41.3 dB at 2 px, so routing "
        "decisions cost PSNR only below ~1-2 px; defocus-sr (calibrated to real shallow-DoF photos) has 55-85% "
        "of its pixels above 1 px but only ~25% above 2 px, so 2 px could never reach a large cut. "
        "`--calibrate N` re-checks the choice on training renders once trained weights exist.",
        "- **Default routing decision**: "
        + "; ".join(
            f"x{s}: "
            + (
                f"the learned router `{ROUTER_MODELS[s]}` (a small CNN over per-patch map and luma-texture features "
                "predicting the light route's quality loss, trained and its threshold calibrated on training renders "
                "only: `python -m blurwise.train.router`); the map-threshold rows show the map rule alone"
                if s in ROUTER_MODELS and router_for(s, f"edsr-s-x{s}")
                else "the map threshold above"
            )
            for s in scales
        )
        + ". The routing efficiency of the default uses the map threshold's definition of defocused pixels.",
        "- **Wall-clock**: heavy tiles are few and large (the guillotine merges them), so the FLOPs cut turns "
        "into time on the CPU; tiles of equal window size are batched (batch size from free GPU memory on CUDA).",
        f"- total benchmark time: {time.time() - t_start:.0f} s",
        "",
    ]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(md))
    if curves:
        make_figure(curves, refs, overlay, out_md.with_suffix(".png"))
    print(f"wrote {out_md}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
