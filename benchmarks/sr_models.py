"""Benchmark the SR models -> docs/results/sr_models.md (issue "SR models", section "Benchmark").

What it measures, for x2 and x4 (``--scales``):

* PSNR/SSIM (Y of BT.601, border = scale, HR cropped to a multiple of the scale, LR = MATLAB-bicubic
  ``imresize`` rounded to 8 bits, outputs rounded to 8 bits: the protocol of ``blurwise.evaluate``,
  whose bicubic Set5 figure is checked against this script's in the report) on Set5, Set14, B100 and
  the shared Urban100 subset (``--sets``) for bicubic, every registered heavy SR model whose weights
  ship (``edsr-s``, ``safmn``, ``edsr-baseline``), and every shipped EBM-SR on plain images with the
  sigma map = 0 everywhere and with the map estimated by ``blurwise.routing.estimate_lr_map``
  (``blurwise.defocus.estimate_defocus``, on the first ``--est-limit`` images of each set: it is slow);
* the same models on synthetic items of the ``defocus-sr`` evaluation set (``blurwise.data.make_eval``'s
  set in ``--eval-dir`` when there is one, never rewritten; otherwise ``--quick`` writes the small set and
  a full run renders the first ``--defocus-limit`` (4) items of ``--defocus-subsets`` (Set14, B100,
  Urban100) in memory with the set's own recipe and seeds; LR and GT sigma map brought to LR as
  ``load_defocus_item`` does), EBM-SR with the GT map, the zero map and the estimated map; whole images
  and the *defocused patches* only (LR patches of the routing grid whose GT sigma is >= the routing
  threshold everywhere);
* published anchors (x4: EDSR-baseline, IMDN, SAFMN; bicubic) beside ours;
* params, MACs and FLOPs at 1280x720 output (``blurwise.metrics.flops`` on a meta-device copy), CPU
  seconds per megapixel of output (median of ``--repeats`` runs on a 320x180 x4 / 640x360 x2 input,
  all in this process), and the training budget read from each weights file's metadata;
* the acceptance checks of the issue (heavy targets, heavy vs EBM-SR gap on Set5 x4, EBM-SR vs its
  teacher and vs bicubic on defocused patches, EBM-SR FLOPs share).

Models whose weights are not shipped are skipped with a line saying so (``--allow-untrained`` runs
them untrained, as a dry run of the code path; its report goes to /tmp unless ``--out`` is given).

Runtime on this 2-core CPU (measured; the CPU is shared, and load slows everything up to ~7x):
``--quick`` (Set5 + 3 images of each other set, the small defocus-sr set) with edsr-s and EBM-SR x2/x4:
54 s at load ~2, 6 min at load 3-7; the full run with the same models: 12 min at load ~3 (x2 on B100
and Urban100 and x4 on B100 are most of it; the 12 defocus-sr renders take ~20 s). Each further heavy
model adds time in proportion to its MACs (safmn-x4 ~1/4 of edsr-s-x4, an EDSR-baseline ~2x edsr-s).
``--limit N`` keeps N images per set. The report records the load average at the start and the end.

    python benchmarks/sr_models.py --quick
    python benchmarks/sr_models.py                       # full: all sets, x2 and x4
    python benchmarks/sr_models.py --sets Set5,B100 --scales 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    RESULTS,
    Stopwatch,
    check_line,
    fmt,
    header,
    load_now,
    load_variants,
    md_table,
    mean,
    median_time,
    meta_compute,
    set_threads,
    to8,
    training_budget,
    variants_for,
    write_md,
)
from blurwise.data.paths import data_path  # noqa: E402
from blurwise.evaluate import evaluate, list_images, load_rgb8  # noqa: E402
from blurwise.metrics import imresize, psnr, rgb_to_y, ssim  # noqa: E402

SETS = ("Set5", "Set14", "B100", "Urban100")
# Published x4 figures (Y-PSNR, border = scale; reference.md). Urban100 = the full 100 images there,
# our Urban100 column is the shared 24-image subset, so that column compares only roughly.
ANCHORS = {
    4: [
        ("bicubic (published)", "-", (28.42, 26.00, 25.96, 23.14)),
        ("EDSR-baseline (published, DIV2K)", "1.5M", (32.09, 28.58, 27.57, 26.04)),
        ("IMDN (published, DIV2K)", "715K", (32.21, 28.58, 27.56, 26.04)),
        ("SAFMN (published, DIV2K)", "240K", (32.18, 28.60, 27.58, 25.97)),
    ],
    2: [("bicubic (published)", "-", (33.66, 30.24, 29.56, 26.88))],
}
ACCEPT = {
    4: {"Set5": 31.20, "B100": 26.95},
    2: {"Set5": 36.80},
    "gap": 0.6,  # heavy >= EBM-SR + 0.6 dB on all-in-focus Set5 x4
    "teacher": 0.05,  # EBM-SR x4 within 0.05 dB of its teacher on defocused patches
    "bicubic": 0.3,  # ... and >= 0.3 dB above bicubic there
    "flops": 0.05,  # EBM-SR <= 5% of the teacher's FLOPs
}
OUT_W, OUT_H = 1280, 720


# ---------------------------------------------------------------------- models
class Net:
    """One model under test: name, network, ModelInfo, role (heavy / ebm) and whether it is trained."""

    def __init__(self, name: str, net: Any, info: Any, role: str, trained: bool) -> None:
        self.name, self.net, self.info, self.role, self.trained = name, net, info, role, trained

    def run(self, lr8: np.ndarray, s: int, sigma: np.ndarray | None = None, tile: int = 0) -> np.ndarray:
        """uint8 LR in -> uint8 SR out (``blurwise.tiling.run_tiled``; EBM-SR gets the sigma map as channel 4)."""
        from blurwise.tiling import run_tiled

        x = lr8.astype(np.float32) / 255.0
        if self.role == "ebm":
            sig = np.zeros(x.shape[:2], np.float32) if sigma is None else np.asarray(sigma, np.float32)
            x = np.concatenate([x, sig[..., None]], axis=2)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        y = run_tiled(self.net, t, scale=s, tile=tile)
        return to8(y[0, :3].clamp(0, 1).permute(1, 2, 0).numpy())


def load_models(s: int, allow_untrained: bool, only: list[str] | None) -> tuple[list[Net], list[str]]:
    """Shipped heavy SR and EBM-SR models at scale ``s`` (untrained too with ``allow_untrained``); skip notes."""
    nets, notes = [], []
    for task, role in (("sr", "heavy"), ("ebmsr", "ebm")):
        loaded, n = load_variants(*variants_for(task, s), allow_untrained, only)
        nets += [Net(v.name, net, info, role, trained) for v, net, info, trained in loaded]
        notes += n
    return nets, notes


def teacher_of(ebm: Net, nets: list[Net]) -> Net | None:
    """The heavy model an EBM-SR was distilled from (weights metadata, else the registry), if loaded."""
    from blurwise.models import get_variant

    name = ebm.info.teacher or get_variant(ebm.name).teacher
    return next((n for n in nets if n.name == name), None)


def has_estimator() -> bool:
    try:
        from blurwise.defocus import estimate_defocus  # noqa: F401
    except ImportError:
        return False
    return True


def estimate_map(lr8: np.ndarray, s: int) -> np.ndarray:
    """Defocus map of an LR image in LR px, as routing estimates it (``estimate_lr_map``)."""
    from blurwise.routing import estimate_lr_map

    return estimate_lr_map(lr8.astype(np.float32) / 255.0, s)


# ---------------------------------------------------------------------- scoring
def score(out: np.ndarray, hr: np.ndarray, s: int) -> tuple[float, float]:
    return psnr(out, hr, crop=s), ssim(out, hr, crop=s)


def defocused_mask(sigma_lr: np.ndarray, s: int, hr_shape: tuple[int, ...], thr: float, patch: int) -> np.ndarray:
    """HR pixels of the LR patches (``patch`` px grid) whose GT sigma is >= ``thr`` LR px everywhere, border cropped."""
    h, w = sigma_lr.shape
    gh, gw = -(-h // patch), -(-w // patch)
    pad = np.pad(sigma_lr, ((0, gh * patch - h), (0, gw * patch - w)), mode="edge")
    cells = pad.reshape(gh, patch, gw, patch).min(axis=(1, 3)) >= thr
    m = np.repeat(np.repeat(cells, patch * s, axis=0), patch * s, axis=1)[: hr_shape[0], : hr_shape[1]]
    m = m.copy()
    m[:s], m[-s:], m[:, :s], m[:, -s:] = False, False, False, False
    return m


def masked_psnr(out: np.ndarray, hr: np.ndarray, mask: np.ndarray) -> float:
    """Y-PSNR (BT.601, as ``blurwise.metrics.psnr``) over the pixels of ``mask`` only; NaN if empty."""
    if not mask.any():
        return math.nan
    d = rgb_to_y(out)[mask] - rgb_to_y(hr)[mask]
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


# ---------------------------------------------------------------------- passes
def plain_pass(
    files: list[Path], s: int, nets: list[Net], est_limit: int, est: bool, tile: int
) -> dict[str, list[tuple[float, float]]]:
    """Every method on every image of one set: {row name: [(psnr, ssim) per image]}."""
    res: dict[str, list[tuple[float, float]]] = {}
    for i, f in enumerate(files):
        hr = load_rgb8(f)
        hr = hr[: hr.shape[0] - hr.shape[0] % s, : hr.shape[1] - hr.shape[1] % s]
        lr = imresize(hr, 1 / s)
        res.setdefault("bicubic", []).append(score(imresize(lr, s), hr, s))
        sig = estimate_map(lr, s) if est and i < est_limit and any(n.role == "ebm" for n in nets) else None
        for n in nets:
            if n.role == "heavy":
                res.setdefault(n.name, []).append(score(n.run(lr, s, tile=tile), hr, s))
            else:
                res.setdefault(f"{n.name} (sigma 0)", []).append(score(n.run(lr, s, None, tile), hr, s))
                if sig is not None:
                    res.setdefault(f"{n.name} (est. map)", []).append(score(n.run(lr, s, sig, tile), hr, s))
    return res


def defocus_items(eval_dir: Path, quick: bool, limit: int | None, subsets: list[str]) -> tuple[list[dict], str]:
    """Synthetic defocus-sr items as ``{"id", "subset", "load": scale -> (lr, hr, sigma_lr)}`` and where they came from.

    An existing evaluation set in ``eval_dir`` is used as it is (never rewritten: other benchmarks share
    it). Without one, ``--quick`` writes the small set (``make_eval(small=True)``); a full run renders the
    first ``limit`` items of each subset in memory with the eval set's own recipe and seeds
    (``render_item``), the same images the full set holds, without writing all of its 300+ renders.
    """
    from blurwise.data import load_defocus_item, make_eval, read_manifest

    mpath = eval_dir / "defocus-sr" / "manifest.json"
    small = bool(json.loads(mpath.read_text()).get("small")) if mpath.is_file() else None
    if small is None and quick:
        print(f"writing the small defocus-sr evaluation set to {eval_dir} ...", flush=True)
        make_eval(eval_dir, small=True, sets=["defocus-sr"])
        small = True
    if small is not None and (quick or not small):
        items = [it for it in read_manifest(eval_dir, "defocus-sr")["items"] if it["kind"] == "synthetic"]
        items = [it for it in items if it["subset"] in subsets]
        if quick and not small:  # the small set's items: first two Set14 images, seed 0
            items = [it for it in items if it["subset"] == "Set14" and it["seed"] == 0][:2]
        per: dict[str, list[dict]] = {}
        for it in sorted(items, key=lambda it: it["seed"]):  # stable: seed 0 of every image first (variety)
            per.setdefault(it["subset"], []).append(it)
        items = [it for v in per.values() for it in (v[:limit] if limit else v)]

        def loader(it: dict) -> Any:
            def load(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                d = load_defocus_item(eval_dir, it, scale=s)
                return d["lr"], d["hr"], d["sigma_lr"]

            return load

        src = f"{'small' if small else 'full'} set in {eval_dir}"
        return [{"id": it["id"], "subset": it["subset"], "load": loader(it)} for it in items], src
    return render_defocus_items(subsets, limit or 4), "rendered in memory with the eval set's recipe and seeds"


def render_defocus_items(subsets: list[str], per_subset: int) -> list[dict]:
    """The first ``per_subset`` synthetic defocus-sr items of each subset, rendered as ``make_eval`` does."""
    from blurwise.data.datasets import read_rgb, render_item
    from blurwise.data.evalsets import MOD, _item_seed, _synthetic_sources
    from blurwise.data.sr import downscale_sigma, make_sr_pair, mod_crop

    out = []
    count: dict[str, int] = {}
    sources = [(i, sub, src, seed) for sub, src, seeds in _synthetic_sources(False) for i, seed in enumerate(seeds)]
    for _, subset, src, seed in sorted(sources, key=lambda t: t[0]):  # seed 0 of every image first (variety)
        if subset not in subsets or count.get(subset, 0) >= per_subset:
            continue
        count[subset] = count.get(subset, 0) + 1
        t0 = time.time()
        img = mod_crop(read_rgb(src), MOD)
        r = render_item(img, np.random.default_rng(_item_seed("defocus-sr", subset, src.name, seed)), scale=MOD)
        hr_d, sig_hr = r["hr"], r["sigma_hr"]
        iid = f"{subset}__{src.stem}__s{seed}"
        print(f"rendered {iid} ({time.time() - t0:.0f} s)", flush=True)

        def load(s: int, hr_d: np.ndarray = hr_d, sig_hr: np.ndarray = sig_hr) -> tuple:
            lr, hr = make_sr_pair(hr_d, s)
            return lr, hr, downscale_sigma(sig_hr, s)

        out.append({"id": iid, "subset": subset, "load": load})
    return out


def defocus_pass(items: list[dict], s: int, nets: list[Net], est: bool, tile: int) -> dict:
    """Whole-image and defocused-patch scores on defocus-sr: {row: {"q": [(psnr, ssim)], "dp": [psnr]}}."""
    from blurwise.routing import DEFAULT_PATCH, default_threshold

    thr = default_threshold(s)
    res: dict[str, dict[str, list]] = {}
    fracs = []

    def add(row: str, out: np.ndarray, hr: np.ndarray, mask: np.ndarray) -> None:
        r = res.setdefault(row, {"q": [], "dp": []})
        r["q"].append(score(out, hr, s))
        r["dp"].append(masked_psnr(out, hr, mask))

    for it in items:
        lr, hr, sig = it["load"](s)
        mask = defocused_mask(sig, s, hr.shape, thr, DEFAULT_PATCH)
        fracs.append(float(mask.mean()))
        add("bicubic", imresize(lr, s), hr, mask)
        sig_est = estimate_map(lr, s) if est and any(n.role == "ebm" for n in nets) else None
        for n in nets:
            if n.role == "heavy":
                add(n.name, n.run(lr, s, tile=tile), hr, mask)
                continue
            add(f"{n.name} (GT map)", n.run(lr, s, sig, tile), hr, mask)
            add(f"{n.name} (sigma 0)", n.run(lr, s, None, tile), hr, mask)
            if sig_est is not None:
                add(f"{n.name} (est. map)", n.run(lr, s, sig_est, tile), hr, mask)
    return {"rows": res, "fractions": fracs, "threshold_lr": thr, "patch": DEFAULT_PATCH}


def compute_rows(s: int, nets: list[Net], repeats: int) -> dict[str, dict]:
    """Params, MACs/FLOPs at 1280x720 output and CPU s/MP (median of ``repeats``) per model, bicubic included."""
    h, w = OUT_H // s, OUT_W // s
    mp = OUT_W * OUT_H / 1e6
    rng = np.random.default_rng(0)
    lr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    out: dict[str, dict] = {}
    _, t = median_time(lambda: imresize(lr, s), repeats)
    out["bicubic"] = {"params": 0, "macs": None, "flops": None, "s_per_mp": t / mp}
    for n in nets:
        c = meta_compute(n.net, (1, n.info.in_channels, h, w))
        x = torch.from_numpy(rng.random((1, n.info.in_channels, h, w), dtype=np.float32))
        if n.role == "ebm":
            x[:, 3] = 0.0
        with torch.no_grad():
            _, t = median_time(lambda n=n, x=x: n.net(x), repeats)
        out[n.name] = {
            "params": c.params,
            "macs": c.macs,
            "flops": c.flops,
            "s_per_mp": t / mp,
            "budget": training_budget(n.info) if n.trained else "untrained (dry run)",
        }
    return out


# ---------------------------------------------------------------------- report
def quality_table(
    s: int, per_set: dict[str, dict], sets: list[str], counts: dict[str, int], anchors: bool = True
) -> list[str]:
    rows_order: list[str] = []
    for res in per_set.values():
        for k in res:
            if k not in rows_order:
                rows_order.append(k)
    heads = ["method"] + [f"{st} ({counts[st]})" for st in sets]
    rows = []
    for k in rows_order:
        cells = []
        for st in sets:
            v = per_set.get(st, {}).get(k)
            if not v:
                cells.append("-")
                continue
            part = f" (first {len(v)})" if len(v) != counts[st] else ""
            cells.append(f"{mean([a for a, _ in v]):.2f} / {mean([b for _, b in v]):.4f}{part}")
        rows.append([k, *cells])
    for name, params, vals in ANCHORS.get(s, []) if anchors else []:
        rows.append([f"*{name}, {params} params*", *[f"*{vals[SETS.index(st)]:.2f}*" for st in sets]])
    return md_table(heads, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Set5 + 3 images of each other set, small defocus-sr set")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--limit", type=int, default=None, help="images per set (default: all; --quick: 3, Set5 all)")
    ap.add_argument("--est-limit", type=int, default=None, help="images per set for EBM-SR with the estimated map")
    ap.add_argument("--defocus-limit", type=int, default=None, help="defocus-sr synthetic items per subset")
    ap.add_argument("--defocus-subsets", default="Set14,B100,Urban100", help="defocus-sr subsets (also DIV2K)")
    ap.add_argument("--no-defocus", action="store_true", help="skip the defocus-sr set")
    ap.add_argument("--models", default=None, help="comma-separated model names (default: all shipped)")
    ap.add_argument("--eval-dir", default=os.environ.get("BLURWISE_EVAL", str(Path.home() / ".cache/blurwise/eval")))
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--tile", type=int, default=0, help="run_tiled tile (0 = whole image when it fits)")
    ap.add_argument("--allow-untrained", action="store_true", help="dry run: untrained models where not shipped")
    ap.add_argument("--out", default=None, help="report path (default docs/results/sr_models.md)")
    a = ap.parse_args(argv)
    set_threads(a.threads)
    sw = Stopwatch()
    sets = [x for x in a.sets.split(",") if x]
    bad = [x for x in sets if x not in SETS]
    if bad:
        ap.error(f"unknown set(s) {bad}; known: {SETS}")
    scales = [int(x) for x in a.scales.split(",") if x]
    only = a.models.split(",") if a.models else None
    limit = a.limit if a.limit is not None else (3 if a.quick else None)
    est_limit = a.est_limit if a.est_limit is not None else (2 if a.quick else 5)
    dlimit = a.defocus_limit if a.defocus_limit is not None else (None if a.quick else 4)
    out_md = Path(a.out) if a.out else RESULTS / "sr_models.md"
    if a.allow_untrained and not a.out:
        out_md = Path("/tmp/sr_models.md")
    est = has_estimator()

    files = {}
    for st in sets:
        fs = list_images(data_path("sr", "test", st))
        files[st] = fs if (st == "Set5" and a.quick and a.limit is None) else fs[:limit] if limit else fs
    dsubsets = a.defocus_subsets.split(",")
    items, dsrc = ([], "") if a.no_defocus else defocus_items(Path(a.eval_dir), a.quick, dlimit, dsubsets)

    md = header(
        "SR models: heavy SR and EBM-SR" + (" (QUICK run: subsets, not the full sets)" if a.quick else ""),
        __file__,
        argv,
        [
            "protocol: PSNR/SSIM on Y (BT.601), border = scale, HR cropped to a multiple of the scale, LR = MATLAB "
            "bicubic `imresize` rounded to 8 bits, outputs rounded to 8 bits (`blurwise.evaluate`); cells are "
            "PSNR dB / SSIM, means over images; the number of images per set is in the header",
            f"images: {', '.join(f'{st} {len(files[st])}' for st in sets)}; EBM-SR with the estimated map on the "
            f"first {est_limit} of each set" + ("" if est else " (no defocus estimator available: rows skipped)"),
            "heavy models run through `blurwise.tiling.run_tiled` (whole image); EBM-SR gets the sigma map "
            "(LR px) as its 4th input channel: 0 everywhere (all in focus), estimated "
            "(`blurwise.routing.estimate_lr_map`) or, on defocus-sr, the GT map brought to LR",
        ],
    )
    head_len = len(md)
    checks: list[str] = []
    for s in scales:
        nets, notes = load_models(s, a.allow_untrained, only)
        md += [f"## x{s}", ""]
        if notes:
            md += [*[f"- {n}" for n in notes], ""]
        if any(not n.trained for n in nets):
            md += ["> **DRY RUN: untrained weights in this section; quality numbers are meaningless.**", ""]
        per_set: dict[str, dict] = {}
        with sw(f"x{s} plain"):
            for st in sets:
                t0 = time.time()
                per_set[st] = plain_pass(files[st], s, nets, est_limit, est, a.tile)
                print(f"x{s} {st}: {len(files[st])} images, {time.time() - t0:.0f} s", flush=True)
        counts = {st: len(files[st]) for st in sets}
        md += [f"### x{s}: PSNR / SSIM on all-in-focus test sets", ""]
        md += quality_table(s, per_set, sets, counts) + [""]
        est_rows = [k for k in per_set.get(sets[0], {}) if k.endswith("(est. map)")] if sets else []
        if est_rows:  # the estimated map ran on the first N images only: every method on those same images
            n_est = {st: len(per_set[st][est_rows[0]]) for st in sets if est_rows[0] in per_set[st]}
            same = {st: {k: v[: n_est[st]] for k, v in per_set[st].items()} for st in n_est}
            md += [
                "(first N) = mean over the first N images only: the estimated map is slow. All methods on those same "
                "images:",
                "",
                *quality_table(s, same, list(n_est), n_est, anchors=False),
                "",
            ]
        if s in (2, 4) and "Set5" in sets and "Set5" in per_set:  # protocol check against blurwise.evaluate
            ref = evaluate("sr", data_path("sr", "test", "Set5"), scale=s, model="bicubic", limit=len(files["Set5"]))
            ours = mean([p for p, _ in per_set["Set5"]["bicubic"]])
            md += [
                f"Protocol check: `blurwise.evaluate` bicubic on the same Set5 images: {ref['psnr_y']:.3f} dB "
                f"(this script: {ours:.3f} dB).",
                "",
            ]

        with sw(f"x{s} compute"):
            comp = compute_rows(s, nets, a.repeats)
        rows = []
        for name, c in comp.items():
            rows.append(
                [
                    name,
                    fmt(c["params"] / 1e3, ".1f") + "K" if c["params"] else "0",
                    fmt(c["macs"] / 1e9 if c["macs"] is not None else None, ".2f"),
                    fmt(c["flops"] / 1e9 if c["flops"] is not None else None, ".2f"),
                    fmt(c["s_per_mp"], ".3f"),
                    c.get("budget", "-"),
                ]
            )
        md += [
            f"### x{s}: compute at 1280x720 output ({OUT_W // s}x{OUT_H // s} input)",
            "",
            *md_table(["model", "params", "GMACs", "GFLOPs", "CPU s / MP out", "training budget"], rows, "lrrrrl"),
            "",
            f"GMACs/GFLOPs: `blurwise.metrics.flops` (FlopCounterMode; FLOPs = 2 x MACs; EBM-SR's bicubic "
            f"upsampling is a fixed LR convolution and counts). CPU time: median of {a.repeats} forward passes "
            f"(after one warm-up) in this process, torch threads = {torch.get_num_threads()}; bicubic = the numpy "
            "MATLAB `imresize`.",
            "",
        ]

        dres = None
        if items:
            with sw(f"x{s} defocus-sr"):
                t0 = time.time()
                dres = defocus_pass(items, s, nets, est, a.tile)
                print(f"x{s} defocus-sr: {len(items)} items, {time.time() - t0:.0f} s", flush=True)
            thr_hr = dres["threshold_lr"] * s
            rows = []
            for k, v in dres["rows"].items():
                rows.append(
                    [
                        k,
                        f"{mean([p for p, _ in v['q']]):.2f}",
                        f"{mean([q for _, q in v['q']]):.4f}",
                        fmt(mean(v["dp"]), ".2f"),
                    ]
                )
            md += [
                f"### x{s}: defocus-sr ({len(items)} synthetic items, {dsrc}"
                + (f", first {dlimit} per subset" if dlimit else "")
                + ")",
                "",
                *md_table(["method", "PSNR (whole)", "SSIM (whole)", "PSNR defocused patches"], rows),
                "",
                f"Defocused patches: LR cells of {dres['patch']} px (the routing grid) whose GT sigma is >= the "
                f"routing threshold {dres['threshold_lr']:.3g} LR px (sigma_HR {thr_hr:g} px, "
                "`blurwise.routing.default_threshold`) everywhere; Y-PSNR over their HR pixels (border = scale "
                f"excluded), mean over images. They cover {100 * mean(dres['fractions']):.0f}% of the HR pixels "
                f"on average. Items: {', '.join(it['id'] for it in items[:6])}{' ...' if len(items) > 6 else ''}.",
                "",
            ]

        # acceptance
        heavy = [n for n in nets if n.role == "heavy"]
        for n in heavy:
            for st, target in ACCEPT.get(s, {}).items():
                if st in per_set and n.name in per_set[st]:
                    v = mean([p for p, _ in per_set[st][n.name]])
                    part = "" if len(files[st]) == len(list_images(data_path("sr", "test", st))) else " (subset)"
                    checks.append(check_line(f"`{n.name}` {st} x{s} >= {target}", v >= target, f"{v:.2f} dB{part}"))
        for e in (n for n in nets if n.role == "ebm"):
            t = teacher_of(e, nets)
            if t is None:
                checks.append(f"- `{e.name}`: teacher {e.info.teacher!r} not loaded; no comparison")
                continue
            ratio = comp[e.name]["flops"] / comp[t.name]["flops"]
            checks.append(
                check_line(
                    f"`{e.name}` FLOPs <= {ACCEPT['flops']:.0%} of `{t.name}`",
                    ratio <= ACCEPT["flops"],
                    f"{100 * ratio:.1f}%",
                )  # fmt: skip
            )
            if s == 4 and "Set5" in per_set:
                hv = mean([p for p, _ in per_set["Set5"][t.name]])
                ev = mean([p for p, _ in per_set["Set5"][f"{e.name} (sigma 0)"]])
                checks.append(
                    check_line(
                        f"Set5 x4 `{t.name}` >= `{e.name}` (sigma 0) + {ACCEPT['gap']} dB",
                        hv - ev >= ACCEPT["gap"],
                        f"{hv:.2f} vs {ev:.2f} dB, gap {hv - ev:+.2f} dB",
                    )  # fmt: skip
                )
                ek = f"{e.name} (est. map)"
                if ek in per_set["Set5"]:
                    n_est = len(per_set["Set5"][ek])
                    he = mean([p for p, _ in per_set["Set5"][t.name][:n_est]])
                    ee = mean([p for p, _ in per_set["Set5"][ek]])
                    checks.append(f"- (for reference) with the estimated map: gap {he - ee:+.2f} dB on {n_est} images")
            if s == 4 and dres is not None:
                r = dres["rows"]
                dp_e = mean(r[f"{e.name} (GT map)"]["dp"])
                dp_t, dp_b = mean(r[t.name]["dp"]), mean(r["bicubic"]["dp"])
                checks.append(
                    check_line(
                        f"defocus-sr x4 defocused patches: `{e.name}` (GT map) within {ACCEPT['teacher']} dB "
                        f"of `{t.name}`",
                        dp_e >= dp_t - ACCEPT["teacher"],
                        f"{dp_e:.2f} vs {dp_t:.2f} dB ({dp_e - dp_t:+.3f})",
                    )  # fmt: skip
                )
                checks.append(
                    check_line(
                        f"... and >= bicubic + {ACCEPT['bicubic']} dB",
                        dp_e >= dp_b + ACCEPT["bicubic"],
                        f"bicubic {dp_b:.2f} dB ({dp_e - dp_b:+.2f})",
                    )  # fmt: skip
                )
                ek = f"{e.name} (est. map)"
                if ek in r:
                    checks.append(f"- (for reference) estimated map: {mean(r[ek]['dp']):.2f} dB on defocused patches")
        if any(not n.trained for n in nets):
            checks.append(f"- x{s}: DRY RUN models involved; the checks above say nothing about quality")
    if checks:
        md[head_len:head_len] = ['## Acceptance (issue "SR models")', "", *checks, ""]
    else:
        md[head_len:head_len] = ['## Acceptance (issue "SR models")', "", "- no shipped model to check yet", ""]
    md += ["## Runtime", "", f"- this benchmark: {sw.summary()}", f"- {load_now()} at the end of the run", ""]
    write_md(out_md, md)
    print(f"wrote {out_md} ({sw.total():.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
