"""Where the ideal FLOPs cut goes: routing efficiency taken apart -> docs/results/routed_cut_budget.md.

Routing efficiency = achieved cut / ideal cut, the ideal being every LR pixel whose GT sigma_HR is above the
threshold (0.625 px) on the light model and nothing else spent. On the ``defocus-sr`` synthetic renders
(``--limit`` per subset, spread; default all) this runs the default routing (``upscale_routed`` as
``blurwise upscale`` runs it) and splits ``ideal - achieved`` into its terms, each in points of the heavy
model's whole-image FLOPs (pixel-weighted over the images):

- blurred pixels the router kept heavy, split by what the light model would really have lost on their patch
  (from whole-image outputs of both models, the router's own target and threshold): *light-safe* (the
  router was too careful; with the estimated map's patch statistic below the threshold, the map called them in
  focus) or *not light-safe* (the light model is worse there: a limit of the light model, not of routing);
- blurred pixels routed light but run heavy: the whole image fell back to the heavy model (it would have saved
  too little) or the tile cover promoted them (a light island too small to pay for its context);
- in-focus pixels routed light (a gain: the cut can exceed the ideal there);
- context: the heavy tiles' windows beyond their cores, and the light model's windows (or whole image);
- the defocus map and the router.

The terms add up to ``ideal - achieved`` exactly (the last column checks it). A second table gives how often the
estimated map sees no blur (its routing statistic below the threshold) on patches that are blurred by 0.625-1,
1-2 and >= 2 px HR, per subset and on the router's calibration renders (the first 12 BSD200 *training* images,
its three seeds): whether the map's misses are the LR image's ambiguity (alike everywhere) or a gap between the
training content and a subset. Analysis only: nothing here is tuned on these images.

``python benchmarks/routed_cut_budget.py [--limit N] [--out FILE.md]``
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_table, write_md  # noqa: E402
from routed_sr import REPO, defocus_items, load_pair, run_off  # noqa: E402

TERMS = (
    ("kept heavy, light-safe", "router_safe"),
    ("... of which the map saw no blur", "router_safe_map"),
    ("kept heavy, not light-safe", "router_unsafe"),
    ("fallback", "fallback"),
    ("promoted", "promoted"),
    ("in focus sent light", "sharp_light"),
    ("heavy context", "ctx_heavy"),
    ("light windows", "light"),
    ("map + router", "map"),
)


BANDS = ((0.625, 1.0), (1.0, 2.0), (2.0, np.inf))  # GT sigma_HR bands (px) of the map-miss table


def map_sees_no_blur(est: np.ndarray, s: int = 4, patch: int = 4) -> np.ndarray:
    """Per patch: the map's routing statistic (the scale's calibrated percentile over the patch and 1 px around
    it, ``blurwise.routing.default_stat``) is below the threshold, so routing sees an in-focus patch there."""
    from blurwise.routing import default_stat, default_threshold_hr
    from blurwise.routing.plan import _pool

    return _pool(est, patch, 1, default_stat(s)) < default_threshold_hr(s) / s


def map_misses(gt_lr: np.ndarray, no_blur: np.ndarray, s: int = 4, patch: int = 4) -> np.ndarray:
    """(patches, missed) per GT band: patches wholly blurred within the band (GT minimum over the patch and 1 px
    around it) and those of them where ``no_blur`` (:func:`map_sees_no_blur`) holds; shape (len(BANDS), 2)."""
    from blurwise.routing.plan import _pool

    g = _pool(gt_lr, patch, 1, "min") * s
    out = np.zeros((len(BANDS), 2))
    for i, (lo, hi) in enumerate(BANDS):
        band = (g >= lo) & (g < hi)
        out[i] = band.sum(), (band & no_blur).sum()
    return out


def budget(lr8: np.ndarray, hr8: np.ndarray, gt_lr: np.ndarray, pair: dict) -> tuple[dict[str, float], np.ndarray]:
    """The cut's terms for one render, in LR pixels weighted as heavy-FLOPs shares (summed by the caller), and
    its :func:`map_misses`."""
    from blurwise.routing import HEAVY, LIGHT, default_threshold_hr, upscale_routed
    from blurwise.train.router import _light_input, patch_targets, target_transform

    s = 4
    lr = lr8.astype(np.float32) / 255
    _, rep = upscale_routed(lr, heavy=pair["heavy"], light=pair["light"], device="cpu")
    plan, est = rep.plan, rep.sigma_lr
    r = pair["light"][1].macs_per_pixel / pair["heavy"][1].macs_per_pixel
    th_hr = default_threshold_hr(s)  # the ideal's threshold, as in benchmarks/routed_sr.py
    with torch.no_grad():
        heavy = run_off(pair["heavy"], lr, s, "cpu")
        light = pair["light"][0](_light_input(lr8, est))[0].clamp(0, 1).permute(1, 2, 0).numpy()
    u8 = lambda a: (a * 255).round().astype(np.uint8)  # noqa: E731
    d = {"lr": lr8, "hr": hr8, "heavy": u8(heavy), "light": u8(light)}
    safe = target_transform(patch_targets(d, s, plan.patch)) <= -plan.thresholds[0]  # router's units: -loss
    n = lr.shape[0] * lr.shape[1]
    blur = gt_lr > th_hr / s
    said_light = plan.per_pixel(plan.scores >= plan.thresholds[0])
    final = plan.route_map()
    fell = bool(plan.extra.get("fallback"))
    safe_px = plan.per_pixel(safe)
    no_blur = map_sees_no_blur(est, s, plan.patch)
    map_off = plan.per_pixel(no_blur)
    kept = blur & ~said_light
    heavy_core = int((final == HEAVY).sum())
    out = {
        "n": float(n),
        "ideal": float(blur.sum()) * (1 - r),
        "achieved": (1 - rep.flops_fraction) * n,
        "router_safe": float((kept & safe_px).sum()) * (1 - r),
        "router_safe_map": float((kept & safe_px & map_off).sum()) * (1 - r),
        "router_unsafe": float((kept & ~safe_px).sum()) * (1 - r),
        "fallback": float((blur & said_light).sum()) * (1 - r) if fell else 0.0,
        "promoted": 0.0 if fell else float((blur & said_light & (final != LIGHT)).sum()) * (1 - r),
        "sharp_light": -float((~blur & (final == LIGHT)).sum()) * (1 - r),
        "ctx_heavy": float(plan.route_pixels(HEAVY) - heavy_core),
        "light": float(plan.route_pixels(LIGHT) - (final == LIGHT).sum()) * r,
        "map": rep.macs.get("map", 0.0) / pair["heavy"][1].macs_per_pixel,
    }
    return out, map_misses(gt_lr, no_blur, s, plan.patch)


def calibration_misses() -> np.ndarray:
    """:func:`map_misses` summed over the router's calibration renders (training images)."""
    from blurwise.data.datasets import read_rgb, render_item
    from blurwise.routing import estimate_lr_map
    from blurwise.train.router import VAL_SEEDS, _files

    tot = np.zeros((len(BANDS), 2))
    for i, f in enumerate(_files("val")):
        img = read_rgb(f)
        for b in VAL_SEEDS:
            r = render_item(img, np.random.default_rng(b + i), scale=4)
            est = estimate_lr_map(r["lr"].astype(np.float32) / 255, 4)
            tot += map_misses(r["sigma_lr"], map_sees_no_blur(est))
    return tot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="renders per subset, spread over it (default: all)")
    ap.add_argument("--eval-dir", default=str(Path.home() / ".cache/blurwise/eval"))
    ap.add_argument("--out", default=str(REPO / "docs/results/routed_cut_budget.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from blurwise.data import load_defocus_item
    from blurwise.routing import default_stat

    pair = load_pair(4, None, False, "cpu")
    eval_dir, items, _ = defocus_items(Path(args.eval_dir), False, args.limit, "spread")
    items = [it for it in items if it["kind"] == "synthetic"]
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    misses: dict[str, np.ndarray] = {"calibration renders (BSD200 training)": calibration_misses()}
    for i, it in enumerate(items):
        d = load_defocus_item(eval_dir, it, scale=4)
        b, miss = budget(d["lr"], d["hr"], d["sigma_lr"], pair)
        misses[it["subset"]] = misses.get(it["subset"], 0) + miss
        for group in (it["subset"], "all"):
            counts[group] += 1
            for k, v in b.items():
                sums[group][k] += v
        print(f"{i + 1}/{len(items)} {it['id']}: efficiency {b['achieved'] / max(b['ideal'], 1e-9):.2f}", flush=True)
    rows = []
    for g in [*sorted(k for k in sums if k != "all"), "all"]:
        t = sums[g]
        pts = {k: 100 * v / t["n"] for k, v in t.items() if k != "n"}
        gap = pts["ideal"] - pts["achieved"]
        total = sum(pts[k] for _, k in TERMS if k != "router_safe_map")
        rows.append(
            [
                f"{g} ({counts[g]})",
                f"{pts['ideal']:.1f}",
                f"{pts['achieved']:.1f}",
                f"{pts['achieved'] / pts['ideal']:.2f}",
            ]
            + [f"{pts[k]:+.1f}" for _, k in TERMS]
            + [f"{gap:.1f} / {total:.1f}"]
        )
    lines = header(
        "Routed SR x4: where the ideal FLOPs cut goes (defocus-sr synthetic renders)",
        "benchmarks/routed_cut_budget.py",
        argv if argv is not None else sys.argv[1:],
        [
            f"renders: {len(items)} synthetic items of the defocus-sr set"
            + (f" ({args.limit} per subset, spread)" if args.limit else " (all)")
            + "; default routing (learned router); x4",
            "every column after efficiency: points of the heavy model's whole-image FLOPs, pixel-weighted; "
            "positive = lost from the ideal cut, negative = gained; 'light-safe' = the light model's real loss "
            "on that patch (whole-image outputs of both models) is within the router's threshold",
            "'... of which the map saw no blur' is part of 'kept heavy, light-safe' (not added again); the last "
            "column is ideal - achieved / the sum of the terms",
        ],
    )
    lines += md_table(
        ["subset", "ideal cut", "achieved", "efficiency", *[name for name, _ in TERMS], "gap / terms"], rows
    )
    lines += [
        "",
        "## How often the map sees no blur on blurred patches",
        "",
        "Patches wholly blurred within each GT band (sigma_HR px); missed = the estimated map's "
        f"p{default_stat(4):g} over the patch and 1 px around it is below 0.625 px: "
        "the router sees an in-focus patch there.",
        "",
    ]
    band_names = [f"{lo:g}-{hi:g} px" if np.isfinite(hi) else f">= {lo:g} px" for lo, hi in BANDS]
    mrows = []
    for g, m in misses.items():
        mrows.append([g] + [f"{100 * mi / max(n, 1):.1f}% of {int(n)}" for n, mi in m])
    lines += md_table(["renders", *[f"missed, {b}" for b in band_names]], mrows)
    write_md(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
