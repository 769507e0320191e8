"""Where routed SR's wall-clock goes -> docs/results/routed_overheads.md.

The FLOPs cut is an upper bound on the speed-up; this says what keeps the measured speed-up below it.
On a spread sample of the ``defocus-sr`` set (``--limit`` images per subset, first and last included),
the default routing (``upscale_routed`` as ``blurwise upscale`` runs it) and ``--route off`` each run
``--repeats`` times per image after one untimed run of the same method (medians), in a process warmed up on
the sample's largest image. Per subset: both times, the
speed-up, the FLOPs % of the heavy model and the speed-up those FLOPs would give if time followed them,
then each stage of the routed pipeline as a share of the route-off time: map estimation, the learned
router (features and forward pass), the rest of planning (tile cover), the heavy and light models
(tiles, batches) and blending.

``python benchmarks/routed_overheads.py [--scale 4] [--limit 12] [--repeats 3] [--out FILE.md]``
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
from routed_sr import REPO, defocus_items, load_pair, run_off  # noqa: E402

STAGES = ("map", "score", "cover", "heavy", "light", "blend")


def time_off_and_routed(lr: np.ndarray, pair: dict, s: int, repeats: int, **route_kw: Any) -> tuple[float, float, Any]:
    """Route off, then the default routing (``upscale_routed(**route_kw)``), each ``repeats`` times after one
    untimed run: (median route-off time, median routed time, the RouteReport of the median routed run).

    Each method is timed after a run of itself, as when a folder is processed with it: routed right after a
    whole-image run measured 15-22% slower than after another routed run (B100 renders), while route off does
    not depend on what ran before it."""
    from blurwise.routing import upscale_routed

    def routed() -> Any:
        return upscale_routed(lr, heavy=pair["heavy"], light=pair["light"], device="cpu", **route_kw)[1]

    offs, runs = [], []
    run_off(pair["heavy"], lr, s, "cpu")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        run_off(pair["heavy"], lr, s, "cpu")
        offs.append(time.perf_counter() - t0)
    routed()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        rep = routed()
        runs.append((time.perf_counter() - t0, rep))
    runs.sort(key=lambda r: r[0])
    t, rep = runs[len(runs) // 2]
    return statistics.median(offs), t, rep


def measure(lr: np.ndarray, pair: dict, s: int, repeats: int) -> dict:
    """Median route-off and routed times of one image, with the stage timings of the median routed run."""
    off, t, rep = time_off_and_routed(lr, pair, s, repeats)
    st = dict(rep.timings)
    stages = {k: st.get(k, 0.0) for k in ("map", "score", "heavy", "light", "blend")}
    stages["cover"] = st.get("plan", 0.0) - stages["score"]
    return {"off": off, "routed": t, "stages": stages, "macs": rep.total_macs, "full": rep.full_heavy_macs}


def rows_of(groups: dict[str, list[dict]], weights: dict[str, float]) -> list[list[str]]:
    """One table row per group; a record counts ``weights[its subset]`` times (1 without a weight)."""
    rows = []
    for name, recs in groups.items():
        w = [weights.get(r["subset"], 1.0) for r in recs]
        off = sum(wi * r["off"] for wi, r in zip(w, recs, strict=True))
        routed = sum(wi * r["routed"] for wi, r in zip(w, recs, strict=True))
        flops = sum(wi * r["macs"] for wi, r in zip(w, recs, strict=True))
        flops /= sum(wi * r["full"] for wi, r in zip(w, recs, strict=True))
        shares = [sum(wi * r["stages"][k] for wi, r in zip(w, recs, strict=True)) / off for k in STAGES]
        other = routed / off - sum(shares)
        rows.append(
            [name, str(len(recs)), f"{off:.2f}", f"{routed:.2f}", f"{off / routed:.2f}x", f"{100 * flops:.1f}",
             f"{1 / flops:.2f}x", *[f"{100 * v:.1f}" for v in shares], f"{100 * other:.1f}"]
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4, choices=(2, 4))
    ap.add_argument("--limit", type=int, default=12, help="images per subset (spread over it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    ap.add_argument("--eval-dir", default=os.environ.get("BLURWISE_EVAL", str(Path.home() / ".cache/blurwise/eval")))
    ap.add_argument("--out", default=str(REPO / "docs/results/routed_overheads.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from blurwise.data import load_defocus_item

    s = args.scale
    pair = load_pair(s, None, False, "cpu")
    eval_dir, items, _ = defocus_items(Path(args.eval_dir), False, args.limit, "spread")
    lrs = {it["id"]: load_defocus_item(eval_dir, it, scale=s)["lr"].astype(np.float32) / 255.0 for it in items}
    # Warm-up on the largest image: until glibc's malloc has raised its mmap threshold, a fresh process pays
    # page faults on every large buffer (route off ran ~25% slower at the start of a process than minutes later).
    big = max(lrs.values(), key=lambda a: a.size)
    time_off_and_routed(big, pair, s, 1)
    groups: dict[str, list[dict]] = {}
    for it in items:
        rec = measure(lrs[it["id"]], pair, s, args.repeats) | {"subset": it["subset"]}
        groups.setdefault(it["subset"], []).append(rec)
        print(f"x{s} {it['id']}: off {rec['off']:.2f} s, routed {rec['routed']:.2f} s", flush=True)
    sample = [r for recs in list(groups.values()) for r in recs]
    rows = rows_of(groups, {})
    rows += rows_of({"all (sample)": sample}, {})
    # every subset as often as in the whole set: an estimate of the whole set's breakdown
    full: dict[str, int] = {}
    for it in defocus_items(Path(args.eval_dir), False, None)[1]:
        full[it["subset"]] = full.get(it["subset"], 0) + 1
    weights = {k: full.get(k, len(v)) / len(v) for k, v in groups.items()}
    rows += rows_of({f"all, weighted as the whole set ({sum(full.values())} images)": sample}, weights)
    heads = ["subset", "images", "route off s", "routed s", "speed-up", "FLOPs %", "speed-up at FLOPs"]
    heads += [f"{k} %" for k in STAGES] + ["other %"]
    lines = header(
        f"Routed SR x{s}: where the wall-clock goes",
        "benchmarks/routed_overheads.py",
        argv if argv is not None else sys.argv[1:],
        [
            f"sample: defocus-sr, {args.limit} images per subset spread over it ({len(sample)} images); "
            f"torch threads {args.threads}; times summed over the images, each the median of {args.repeats} runs",
            "stage columns: % of the route-off time spent in that stage of the routed pipeline (map = defocus map, "
            "score = learned router features + forward, cover = the rest of planning: decisions and the heavy "
            "tile cover, heavy/light = the models on their tiles, blend = stitching; other = the rest)",
            "speed-up at FLOPs = 1 / (routed FLOPs / heavy FLOPs): what the FLOPs cut would give if time followed it",
        ],
    )
    lines += md_table(heads, rows)
    write_md(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
