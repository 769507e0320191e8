"""Routed SR's planning time and its tile cover's FLOPs: choosing ``plan.SETTLE`` -> docs/results/routed_planner.md.

The heavy tile cover (``plan.guillotine_cover``) searches cuts top-down. It takes a box whole, without a search,
when the pixels of the light cells it would promote are fewer than ``SETTLE`` x what the cheapest cut could add
(context on both sides of a cut across the box's shorter side, plus a tile); ``SETTLE = 0`` is the former rule
(a box more than ``DENSE`` heavy). A larger ``SETTLE`` stops sooner: less planning time, a few more promoted
patches. This sweeps it on *training* renders (the
router's validation renders and in-focus images, plus every ``--every``-th router-training image rendered once
and in focus: ``routed_fallback.training_pairs``). Per render, the defocus map and the learned router's scores are
computed once; each ``SETTLE`` then plans every render as ``upscale_routed`` does (``plan_routes``, default
grid, ``DEFAULT_MIN_SAVING``), ``--repeats`` times (median of the summed planning time). FLOPs are those of the
plans (context, map and router included), summed over the renders, as a % of the heavy model on every image.
``--eval`` adds the same sweep on the ``defocus-sr`` evaluation set as a check (not used to choose).

``python benchmarks/routed_planner.py [--every 1] [--repeats 3] [--eval] [--out FILE.md]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_table, write_md  # noqa: E402
from routed_fallback import training_pairs  # noqa: E402
from routed_sr import REPO, defocus_items, load_pair  # noqa: E402

SWEEP = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5)
RULE_POINTS = 0.05  # the largest SETTLE whose FLOPs stay within this many points of SETTLE = 0's


def scored(lrs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per LR image: the learned router's scores, threshold and the map + router MACs (what plan_routes needs)."""
    from blurwise.routing import estimate_lr_map, learned_scores, lr_map_macs

    out = []
    for lr in lrs:
        sig = estimate_lr_map(lr, 4)
        sc, tau, r_macs = learned_scores(lr, sig, "router-x4", scale=4)
        out.append({"scores": sc, "tau": tau, "shape": lr.shape[:2], "map_macs": lr_map_macs(lr.shape[:2], 4) + r_macs})
    return out


def sweep(cases: list[dict[str, Any]], pair: dict, repeats: int) -> list[dict[str, float]]:
    """Planning time (s, summed over the cases, median of ``repeats``) and FLOPs % for every SETTLE of SWEEP."""
    import blurwise.routing.plan as plan
    from blurwise.routing import DEFAULT_MIN_SAVING
    from blurwise.routing import plan_routes as plan_fn

    hm, lm = pair["heavy"][1].macs_per_pixel, pair["light"][1].macs_per_pixel
    shipped = plan.SETTLE
    rows = []
    try:
        for settle in SWEEP:
            plan.SETTLE = settle
            times, macs, full = [], 0.0, 0.0
            for k in range(max(1, repeats)):
                t = 0.0
                for c in cases:
                    t0 = time.perf_counter()
                    p = plan_fn(scores=c["scores"], shape=c["shape"], scale=4, threshold=c["tau"], heavy_macs=hm,
                                light_macs=lm, map_macs=c["map_macs"], scorer="learned",
                                min_saving=DEFAULT_MIN_SAVING)  # fmt: skip
                    t += time.perf_counter() - t0
                    if k == 0:
                        macs += p.macs_fraction * p.full_heavy_macs
                        full += p.full_heavy_macs
                times.append(t)
            rows.append({"settle": settle, "time": statistics.median(times), "flops": 100 * macs / full})
    finally:
        plan.SETTLE = shipped
    return rows


def table(rows: list[dict[str, float]], shipped: float) -> list[str]:
    """Markdown rows: SETTLE, planning time and FLOPs %, both also against SETTLE = 0 (the former rule)."""
    base = rows[0]

    def name(v: float) -> str:
        return f"{v:g}" + (" **(shipped)**" if v == shipped else "") + (" (former rule)" if v == 0 else "")

    return md_table(
        ["SETTLE", "planning s (sum)", "time vs 0", "FLOPs % of heavy", "points over 0"],
        [
            [name(r["settle"]), f"{r['time']:.2f}", f"{r['time'] / base['time']:.2f}", f"{r['flops']:.2f}",
             f"{r['flops'] - base['flops']:+.2f}"]
            for r in rows
        ],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="every N-th router-training image (default 1: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval", action="store_true", help="also sweep the defocus-sr evaluation set (a check)")
    ap.add_argument("--eval-dir", default=os.environ.get("BLURWISE_EVAL", str(Path.home() / ".cache/blurwise/eval")))
    ap.add_argument("--out", default=str(REPO / "docs/results/routed_planner.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import blurwise.routing.plan as plan

    pair = load_pair(4, None, False, "cpu")
    train = scored([lr for _, lr, _, _ in training_pairs(args.every)])
    print(f"{len(train)} training renders scored", flush=True)
    rows = sweep(train, pair, args.repeats)
    ok = [r for r in rows if r["flops"] - rows[0]["flops"] <= RULE_POINTS]
    pick = max(ok, key=lambda r: r["settle"])
    lines = header(
        "Routed SR x4: planning time and the tile cover's SETTLE (training renders)",
        "benchmarks/routed_planner.py",
        argv if argv is not None else sys.argv[1:],
        [
            f"sample: {len(train)} training renders and in-focus training images, x4 LR (router validation images "
            f"and every {args.every}th router-training image); torch threads 1; planning time = plan_routes only "
            f"(map and router computed once per image beforehand), summed over the sample, median of {args.repeats}",
            "FLOPs: the plans' MACs (tile context, map and router included), summed over the sample, as a % of the "
            "heavy model on every whole image",
        ],
    )
    lines += table(rows, plan.SETTLE)
    lines += [
        "",
        f"Rule: the largest SETTLE within {RULE_POINTS:g} points of the former rule's FLOPs: "
        f"{pick['settle']:g} (shipped: {plan.SETTLE:g}).",
    ]
    if args.eval:
        eval_dir, items, _ = defocus_items(Path(args.eval_dir), False, None)
        from blurwise.data import load_defocus_item

        lrs = [load_defocus_item(eval_dir, it, scale=4)["lr"].astype(np.float32) / 255 for it in items]
        ev = sweep(scored(lrs), pair, args.repeats)
        lines += ["", f"## Check: the defocus-sr evaluation set ({len(lrs)} images, x4; not used to choose)", ""]
        lines += table(ev, plan.SETTLE)
    write_md(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
