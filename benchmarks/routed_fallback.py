"""When a routed plan saves too little to pay: choosing ``DEFAULT_MIN_SAVING`` -> docs/results/routed_fallback.md.

On *training* renders only (the router's validation images, the first 12 BSD200 training images with three
defocus renders each and in focus, plus every ``--every``-th router-training image rendered once and in focus;
``blurwise.train.router``'s recipe and seeds), each image runs ``--route off`` (the heavy model on the whole
image) and the default routing with ``min_saving=0`` (route whatever it saves), ``--repeats`` times each, in this
process (medians). With a minimum saving ``m``, a plan whose FLOPs are above ``1 - m`` of the heavy model's
(plus the map's) runs the heavy model everywhere instead; that run costs the map, the router and the whole
image, because the fallback is decided before the tile cover (``plan_routes``). The table gives the total
speed-up over the sample for each ``m``, from these measurements; the last line checks the shipped default by
running it.

``python benchmarks/routed_fallback.py [--every 8] [--repeats 3] [--out FILE.md]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_table, write_md  # noqa: E402
from routed_overheads import time_off_and_routed  # noqa: E402
from routed_sr import REPO, load_pair  # noqa: E402

SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)


def training_pairs(every: int) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(name, LR float image, HR uint8, in focus) of the router's validation renders and a spread of its training
    renders (the images and seeds of ``blurwise.train.router``'s banks)."""
    from blurwise.data.datasets import read_rgb, render_item
    from blurwise.data.sr import make_sr_pair
    from blurwise.train.router import TRAIN_SEED, VAL_SEEDS, _files

    jobs = []
    for i, f in enumerate(_files("val")):
        jobs += [(f"val {f.stem} s{b}", f, b + i) for b in VAL_SEEDS] + [(f"val {f.stem} in focus", f, None)]
    for i, f in list(enumerate(_files("train")))[::every]:
        jobs += [(f"train {f.stem} render", f, TRAIN_SEED + i), (f"train {f.stem} in focus", f, None)]
    out = []
    for name, f, seed in jobs:
        img = read_rgb(f)
        if seed is None:
            lr8, hr8 = make_sr_pair(img, 4)
        else:
            r = render_item(img, np.random.default_rng(seed), scale=4)
            lr8, hr8 = r["lr"], r["hr"]
        if min(lr8.shape[:2]) >= 24:
            out.append((name, lr8.astype(np.float32) / 255, hr8, seed is None))
    return out


def sample_args(description: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of the benchmarks on this training sample (``--every``, ``--repeats``, ``--out``);
    also sets one torch thread (stable timings on a shared CPU)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--every", type=int, default=8, help="every N-th router-training image (default 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "docs/results" / out))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    return args


def measure(lr: np.ndarray, pair: dict, repeats: int, min_saving: float | None) -> dict:
    """Median route-off time and the median routed run (time, FLOPs fraction, sunk map + router time)."""
    off, t, rep = time_off_and_routed(lr, pair, 4, repeats, min_saving=min_saving)
    sunk = rep.timings.get("map", 0.0) + rep.timings.get("score", 0.0)
    fell = bool(rep.plan is not None and rep.plan.extra.get("fallback"))
    mapf = rep.macs.get("map", 0.0) / max(rep.full_heavy_macs, 1e-12)
    heavy = rep.fractions.get("heavy", 0.0) >= 1.0 - 1e-9  # nothing cheap: no plan to fall back from
    return {"off": off, "routed": t, "flops": rep.flops_fraction, "mapf": mapf, "sunk": sunk,
            "fell": fell, "heavy": heavy}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = sample_args(__doc__.splitlines()[0], "routed_fallback.md", argv)
    from blurwise.routing import DEFAULT_MIN_SAVING

    pair = load_pair(4, None, False, "cpu")
    images = training_pairs(args.every)
    recs, shipped = [], []
    for name, lr, _, _ in images:
        r = measure(lr, pair, args.repeats, 0.0)
        d = measure(lr, pair, args.repeats, None)
        recs.append(r)
        shipped.append(d)
        print(f"{name}: off {r['off']:.3f} s, routed {r['routed']:.3f} s at {100 * r['flops']:.0f}% FLOPs", flush=True)
    off = sum(r["off"] for r in recs)
    rows = []
    for m in SWEEP:
        # plan_routes' rule (the map's FLOPs on both sides); plans with no cheap patch have nothing to fall back from
        fall = [m > 0 and not r["heavy"] and r["flops"] > 1.0 + r["mapf"] - m for r in recs]
        t = sum(r["off"] + r["sunk"] if f else r["routed"] for r, f in zip(recs, fall, strict=True))
        band = [r["routed"] / r["off"] for r, f in zip(recs, fall, strict=True) if f]
        rows.append(
            [f"{m:g}" + (" **(default)**" if m == DEFAULT_MIN_SAVING else ""), f"{sum(fall)} / {len(recs)}",
             f"{off / t:.3f}x", f"{statistics.median(band):.2f}" if band else "n/a"]
        )  # fmt: skip
    t_def = sum(d["routed"] for d in shipped)
    off_def = sum(d["off"] for d in shipped)
    lines = header(
        "Routed SR x4: the least saving worth routing (training renders)",
        "benchmarks/routed_fallback.py",
        argv if argv is not None else sys.argv[1:],
        [
            f"sample: {len(recs)} training renders and in-focus training images, x4 LR "
            f"(router validation images and every {args.every}th router-training image); torch threads 1; "
            f"medians of {args.repeats} runs",
            "rows: with min saving m, routed plans above 1 - m of the heavy FLOPs (map included) run the heavy model "
            "everywhere at the cost of route off + map + router, from the same measurements; the last column is "
            "what those plans cost when routed (median)",
        ],
    )
    lines += md_table(
        ["min saving", "plans that fall back", "speed-up over the sample", "routed / route-off time of those plans"],
        rows,
    )
    lines += [
        "",
        f"Shipped default (min saving {DEFAULT_MIN_SAVING:g}), run: {off_def / t_def:.3f}x over the sample "
        f"({sum(d['fell'] for d in shipped)} plans fell back; {sum(d['heavy'] for d in shipped)} all heavy in all).",
    ]
    write_md(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
