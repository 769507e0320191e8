"""Benchmark the deblurring models -> docs/results/deblur.md (issue "Fast deblurring (LPRN)", "Benchmark").

Sets (``--sets``):

* ``gopro``: the 14 real pairs of ``deblur/gopro_pairs`` (1280x720, frame-averaged blur, other frames
  than the training ones), read with ``blurwise.evaluate.find_pairs``;
* ``synth`` (deblur-synth): Set14 and the first ``--synth-b100`` B100 images blurred, as
  ``blurwise.data.make_eval`` does, by its fixed camera-shake kernels (``evalsets.fixed_kernels``:
  k1..k8, 11-51 px, seed 0; ``apply_kernel``, 8-bit rounding); one kernel per image in turn
  (k1, k2, ... over the images; ``--synth-kernels all`` uses all 8 per image: the full set);
* ``levin``: Levin et al.'s 32 real-kernel images (``deblur/levin/blurred/imI_kernelK_img.png`` vs
  ``sharp/imI.png``; grey, scored as replicated RGB).

Figures: PSNR/SSIM on RGB without border crop (``blurwise.metrics``, the deblurring papers' convention)
of the blurred input and of every registered deblur model whose weights ship (``lprn``, ``lprn-t5/t7``,
``lprn-recal-*``, ``lprn-unrolled``, ``plainres``, ``nafnet16``; the others are listed as skipped). The
default model runs on every set; the ablation variants on ``--ablation-sets`` (default gopro, where the
seed ran its ablation) to keep the run short. LPRN's quality at ``--stages k`` for k = 1..T comes from
one forward pass with every stage's output (``return_all``: the loss is on every stage, so each is a
usable output), its speed from timing ``stages=k``. Params, MACs at 1280x720 (``blurwise.metrics.flops``
on a meta-device copy), CPU time at 1280x720 (median over the GoPro images of the quality pass, all
1280x720 and in this process, or of ``--repeats`` dedicated runs when fewer than 3 were timed), GPU fp16
time when CUDA is available (synchronised, after warm-up), the seed's figures for reference, and a
profile of LPRN at 1280x720 (torch.profiler op table, per-module times, conv throughput against a
reference convolution) explaining what bounds its CPU time. Torch threads = all cores (``--threads``).

Runtime (2-core CPU, no other load; estimated from the MACs at ~25 GMAC/s, ~4.5 s per LPRN pass at
1280x720): ``--quick`` (3 GoPro pairs, 2 synth, 4 Levin images) ~1-2 min with LPRN only, ~4 min with
all nine variants; the full run ~10-12 min with all nine (LPRN on all sets ~1.5 min, each ablation
variant on GoPro ~1 min, stage timing ~1 min, profile ~15 s). ``--limit N`` keeps N images per set.
The load average at the start of the run is in the report: timings under load are slower.

    python benchmarks/deblur.py --quick
    python benchmarks/deblur.py
    python benchmarks/deblur.py --ablation-sets gopro,synth,levin --synth-kernels all   # long
"""

from __future__ import annotations

import argparse
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
from blurwise.evaluate import find_pairs, list_images, load_rgb8  # noqa: E402
from blurwise.metrics import psnr, ssim  # noqa: E402

SETS = ("gopro", "synth", "levin")
SET_TITLES = {"gopro": "deblur-gopro", "synth": "deblur-synth", "levin": "Levin"}
W, H = 1280, 720
SEED = {  # the seed paper (lprn_deblur_abstract.txt; reference.md): GoPro PSNR, params (its units), time
    "stages": {5: 30.17, 6: 30.21, 7: 30.21},
    "time": {5: 0.02, 6: 0.03, 7: 0.07},
    "recalib": {"none": 30.08, "channel": 30.16, "spatial": 30.14, "both": 30.21},
}
ACCEPT = {"params": 120_000, "gain": 2.5, "unrolled": 0.2, "cpu_s": 2.0}


# ---------------------------------------------------------------------- data
def gopro_items(limit: int | None) -> list[tuple[str, Any]]:
    pairs = find_pairs(data_path("deblur", "gopro_pairs"))
    pairs = pairs[:limit] if limit else pairs
    return [(name, lambda b=b, s=s: (load_rgb8(b), load_rgb8(s))) for name, b, s in pairs]


def synth_items(limit: int | None, n_b100: int, all_kernels: bool, quick: bool) -> list[tuple[str, Any]]:
    """deblur-synth items as make_eval writes them (same sharp images, kernels, convolution and rounding)."""
    from blurwise.data import apply_kernel
    from blurwise.data.color import to_uint8
    from blurwise.data.datasets import read_rgb
    from blurwise.data.evalsets import fixed_kernels

    kernels = fixed_kernels()
    knames = list(kernels)
    srcs = [("Set14", f) for f in list_images(data_path("sr", "test", "Set14"))]
    srcs += [("B100", f) for f in list_images(data_path("sr", "test", "B100"))[:n_b100]]
    if quick:  # the small set's items: the first two Set14 images with k1 and k2
        srcs = srcs[:2]
    items, i = [], 0
    for subset, src in srcs:
        names = knames if all_kernels else [knames[i % len(knames)]]
        i += 1
        for kn in names:

            def load(src: Path = src, kn: str = kn) -> tuple[np.ndarray, np.ndarray]:
                sharp = read_rgb(src)
                return to_uint8(apply_kernel(sharp, kernels[kn])), sharp

            items.append((f"{subset}__{src.stem}__{kn}", load))
    return items[:limit] if limit else items


def levin_items(limit: int | None, quick: bool) -> list[tuple[str, Any]]:
    root = data_path("deblur", "levin")
    items = []
    for b in sorted((root / "blurred").glob("im*_kernel*_img.png")):
        im = b.name.split("_")[0]
        s = root / "sharp" / f"{im}.png"
        if s.is_file():
            items.append((b.stem, lambda b=b, s=s: (load_rgb8(b), load_rgb8(s))))
    if quick:
        items = items[:4]
    return items[:limit] if limit else items


# ---------------------------------------------------------------------- models
class Net:
    def __init__(self, name: str, net: Any, info: Any, trained: bool) -> None:
        self.name, self.net, self.info, self.trained = name, net, info, trained
        self.stages = int(getattr(net, "stages", 0)) if info.arch == "lprn" else 0


def load_models(allow_untrained: bool, only: list[str] | None) -> tuple[list[Net], list[str]]:
    from blurwise.models import default_variant

    default = default_variant("deblur").name
    loaded, notes = load_variants(*variants_for("deblur"), allow_untrained, only)
    loaded.sort(key=lambda t: (t[0].name != default, t[0].name))  # the default model first, then by name
    return [Net(v.name, net, info, trained) for v, net, info, trained in loaded], notes


def to_tensor(img8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img8.transpose(2, 0, 1)).astype(np.float32) / 255.0)[None]


def to_img(y: torch.Tensor) -> np.ndarray:
    return to8(y[0].clamp(0, 1).permute(1, 2, 0).numpy())


def rgb_scores(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    return psnr(out, ref, y=False), ssim(out, ref, y=False)


# ---------------------------------------------------------------------- passes
def quality_pass(items: list[tuple[str, Any]], nets: list[Net], per_k: str | None) -> tuple[dict, dict, list]:
    """({row: [(psnr, ssim)]}, {model: [seconds per forward on 1280x720 inputs]}, image names).

    ``per_k``: the model whose every stage output is scored (rows ``NAME k=1`` ...).
    """
    from blurwise.tiling import run_tiled

    res: dict[str, list] = {}
    secs: dict[str, list] = {}
    names = []
    for name, load in items:
        blur, sharp = load()
        if blur.shape != sharp.shape:
            raise SystemExit(f"{name}: blurred {blur.shape} and sharp {sharp.shape} differ")
        names.append(name)
        res.setdefault("blurred input", []).append(rgb_scores(blur, sharp))
        x = to_tensor(blur)
        full = blur.shape[:2] == (H, W)
        for n in nets:
            t0 = time.perf_counter()
            if n.name == per_k:
                with torch.no_grad():
                    outs = n.net(x, return_all=True)
                dt = time.perf_counter() - t0
                for k, y in enumerate(outs, 1):
                    res.setdefault(f"{n.name} k={k}", []).append(rgb_scores(to_img(y), sharp))
                out = outs[-1]
            else:
                out = run_tiled(n.net, x, scale=1, tile=0)
                dt = time.perf_counter() - t0
            res.setdefault(n.name, []).append(rgb_scores(to_img(out), sharp))
            if full:
                secs.setdefault(n.name, []).append(dt)
    return res, secs, names


def stage_timing(net: Net, x: torch.Tensor, repeats: int, warmup: bool = True) -> dict[int, float]:
    """CPU seconds from the start of a pass to the end of stage k, k = 1..T: median over ``repeats`` full passes.

    Stage k's output is the ``--stages k`` result (the pass only adds the final pixel shuffle), so the
    time up to it is what ``stages=k`` costs; measuring all k inside full passes takes ``repeats``
    passes instead of ``repeats * (T + 1) / 2``.
    """
    marks: list[float] = []
    stage_mods = list(net.net.body)
    handles = [mod.register_forward_hook(lambda *_: marks.append(time.perf_counter())) for mod in stage_mods]
    runs: list[list[float]] = []
    try:
        with torch.no_grad():
            if warmup:
                net.net(x)
            for _ in range(max(1, repeats)):
                marks.clear()
                t0 = time.perf_counter()
                net.net(x)
                runs.append([m - t0 for m in marks])
    finally:
        for h in handles:
            h.remove()
    return {k: float(np.median([r[k - 1] for r in runs])) for k in range(1, net.stages + 1)}


def gpu_time(net: Net, x: torch.Tensor) -> float | None:
    """Median fp16 (autocast) GPU seconds at ``x``'s size, synchronised, after warm-up; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    import copy

    m = copy.deepcopy(net.net).cuda().eval()
    xc = x.cuda()

    def fwd() -> Any:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            return m(xc)

    _, t = median_time(fwd, 10, warmup=3, device="cuda")
    torch.cuda.empty_cache()
    return t


def profile_lprn(net: Net, x: torch.Tensor) -> list[str]:
    """What bounds LPRN's CPU time at 1280x720: op table, per-module times and conv throughput."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    m = net.net  # already warmed up by the quality and timing passes
    with torch.no_grad():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            m(x)
            wall = time.perf_counter() - t0
    ev = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in ev) or 1.0
    top = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    conv_ops = ("conv", "mkldnn_convolution", "thnn_conv", "_convolution", "slow_conv")
    conv_self = sum(e.self_cpu_time_total for e in ev if any(c in e.key for c in conv_ops))

    # MACs per module (meta device: no arithmetic) and wall time per module (forward hooks)
    import copy

    meta = copy.deepcopy(m).to("meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.zeros(x.shape, device="meta"))
    flops_by_mod = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    total_flops = flops_by_mod.get("Global", sum(flops_by_mod.values()))

    groups = {"feat_img": "input features (once)"}
    for name, _ in m.named_modules():
        for part, label in (
            ("conv_in", "stage conv_in"),
            ("blocks", "stage residual blocks"),
            ("recalib", "recalibration"),
            ("conv_out", "stage conv_out"),
        ):
            if name.endswith(f".{part}") and name.count(".") == 2:
                groups[name] = label
    times: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for name, mod in m.named_modules():
        if name in groups:

            def pre(_m: Any, _i: Any, name: str = name) -> None:
                starts[name] = time.perf_counter()

            def post(_m: Any, _i: Any, _o: Any, name: str = name) -> None:
                times[groups[name]] = times.get(groups[name], 0.0) + time.perf_counter() - starts[name]

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            m(x)
            wall2 = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    macs_by_group: dict[str, float] = {}
    for name, label in groups.items():
        key = next((k for k in flops_by_mod if k.endswith(name) and k != "Global"), None)
        if key is not None:
            macs_by_group[label] = macs_by_group.get(label, 0.0) + flops_by_mod[key] / 2

    # reference: a large dense 3x3 convolution (64 -> 64 channels at 640x360), the CPU's practical conv rate
    ref = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    xr = torch.rand(1, 64, 360, 640)
    with torch.no_grad():
        _, t_ref = median_time(lambda: ref(xr), 3)
    ref_rate = 64 * 64 * 9 * 360 * 640 / t_ref / 1e9
    conv_macs = total_flops / 2
    measured = min(wall, wall2)  # the profiler adds overhead; the hooked pass is closer to a plain one
    conv_time = measured * conv_self / total_self
    rate = conv_macs / max(conv_time, 1e-9) / 1e9

    lines = [
        f"One forward pass of `{net.name}` (T = {net.stages}) on 1x3x{x.shape[2]}x{x.shape[3]}: {wall:.2f} s under "
        f"the profiler, "
        f"{wall2:.2f} s with module hooks; {conv_macs / 1e9:.1f} GMACs (all in conv layers; the image is "
        f"pixel-unshuffled, so every stage runs at {x.shape[2] // max(1, getattr(m, 'unshuffle', 1))}x"
        f"{x.shape[3] // max(1, getattr(m, 'unshuffle', 1))}).",
        "",
        "Top operators by self CPU time (torch.profiler):",
        "",
        *md_table(
            ["op", "self CPU ms", "share", "calls"],
            [
                [
                    f"`{e.key}`",
                    f"{e.self_cpu_time_total / 1e3:.0f}",
                    f"{100 * e.self_cpu_time_total / total_self:.1f}%",
                    e.count,
                ]
                for e in top
            ],  # fmt: skip
        ),
        "",
        "Per module (forward hooks; shared stage modules summed over the T calls):",
        "",
        *md_table(
            ["module", "seconds", "share of pass", "GMACs", "GMAC/s"],
            [
                [
                    k,
                    f"{v:.2f}",
                    f"{100 * v / wall2:.0f}%",
                    fmt(macs_by_group.get(k, 0) / 1e9, ".2f"),
                    fmt(macs_by_group.get(k, 0) / 1e9 / max(v, 1e-9), ".1f"),
                ]  # fmt: skip
                for k, v in sorted(times.items(), key=lambda kv: -kv[1])
            ],
        ),
        "",
        f"Convolutions take {100 * conv_self / total_self:.0f}% of the self CPU time and run at ~{rate:.1f} "
        f"GMAC/s; a large dense 3x3 convolution (64 channels at 640x360) reaches {ref_rate:.1f} GMAC/s on this "
        f"machine with the same threads, so the pass could take {conv_macs / 1e9 / ref_rate:.2f} s at that rate "
        f"(compute floor) against {measured:.2f} s measured. "
        + " ".join(
            f"{k}: {100 * v / wall2:.0f}% of the time for {100 * macs_by_group.get(k, 0) / max(conv_macs, 1):.0f}% "
            f"of the MACs ({macs_by_group.get(k, 0) / 1e9 / max(v, 1e-9):.1f} GMAC/s"
            + (
                "; far below the reference rate: memory-bound)."
                if macs_by_group.get(k, 0) / 1e9 / max(v, 1e-9) < 0.25 * ref_rate
                else ")."
            )
            for k, v in sorted(times.items(), key=lambda kv: -kv[1])
            if v / wall2 >= 0.05
        )
        + (
            " CPU time is bound by the convolution arithmetic: fewer MACs per pixel (channels, blocks, stages, "
            "a coarser unshuffle) is what makes it faster."
            if measured < 1.5 * conv_macs / 1e9 / ref_rate
            else " Beyond the MACs, thin (32-channel) convolutions run below the wide reference rate and the "
            "elementwise work moves whole feature maps through memory: fusing or trimming those ops, not only "
            "cutting MACs, is what would close the gap to the floor."
        )
        + f" Even at the reference rate, {ACCEPT['cpu_s']:g} s allows at most {ACCEPT['cpu_s'] * ref_rate:.0f} GMACs "
        f"at 1280x720 ({conv_macs / 1e9:.0f} now).",
    ]
    return lines


# ---------------------------------------------------------------------- report
def table(res: dict, rows: list[str]) -> list[list[str]]:
    out = []
    for r in rows:
        if r in res:
            out.append([r, f"{mean([p for p, _ in res[r]]):.2f}", f"{mean([q for _, q in res[r]]):.4f}"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 GoPro pairs, 2 synth and 4 Levin images")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    ap.add_argument("--ablation-sets", default="gopro", help="sets the non-default variants run on")
    ap.add_argument("--limit", type=int, default=None, help="images per set")
    ap.add_argument("--synth-b100", type=int, default=16, help="B100 images in deblur-synth (besides Set14)")
    ap.add_argument("--synth-kernels", choices=("one", "all"), default="one", help="kernels per synth image")
    ap.add_argument("--models", default=None, help="comma-separated model names (default: all shipped)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--time-size", default=f"{W}x{H}", help="WxH of the timing input (default 1280x720)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--allow-untrained", action="store_true", help="dry run: untrained models where not shipped")
    ap.add_argument("--out", default=None, help="report path (default docs/results/deblur.md)")
    a = ap.parse_args(argv)
    set_threads(a.threads)
    sw = Stopwatch()
    sets = [s for s in a.sets.split(",") if s]
    bad = [s for s in sets + a.ablation_sets.split(",") if s and s not in SETS]
    if bad:
        ap.error(f"unknown set(s) {bad}; known: {SETS}")
    abl_sets = set(a.ablation_sets.split(","))
    tw, th = (int(v) for v in a.time_size.lower().split("x"))
    limit = a.limit if a.limit is not None else (3 if a.quick else None)
    out_md = Path(a.out) if a.out else RESULTS / "deblur.md"
    if a.allow_untrained and not a.out:
        out_md = Path("/tmp/deblur.md")

    nets, notes = load_models(a.allow_untrained, a.models.split(",") if a.models else None)
    main_net = nets[0] if nets and nets[0].info.arch == "lprn" else next((n for n in nets if n.stages), None)
    items = {
        "gopro": lambda: gopro_items(limit),
        "synth": lambda: synth_items(a.limit, a.synth_b100, a.synth_kernels == "all", a.quick),
        "levin": lambda: levin_items(a.limit, a.quick),
    }
    md = header(
        "Deblurring: LPRN, its ablations and baselines"
        + (" (QUICK run: subsets, not the full sets)" if a.quick else ""),
        __file__,
        argv,
        [
            "PSNR/SSIM on RGB, no border crop (`blurwise.metrics`, deblurring papers' convention), outputs rounded to "
            "8 bits; means over images",
            f"deblur-synth = Set14 + first {a.synth_b100} B100 images, "
            + ("all 8 kernels" if a.synth_kernels == "all" else "one fixed kernel each (k1..k8 in turn)")
            + " of `blurwise.data.evalsets.fixed_kernels` (as `make_eval` writes them); Levin = 4 images x 8 real "
            "kernels (grey, scored as RGB)",
            f"default model on every set; the other variants on: {', '.join(sorted(abl_sets))}",
        ],
    )
    if notes:
        md += ["Models:", "", *[f"- {n}" for n in notes], ""]
    if any(not n.trained for n in nets):
        md += ["> **DRY RUN: untrained weights involved; quality numbers are meaningless.**", ""]

    results: dict[str, dict] = {}
    secs_all: dict[str, list] = {}
    counts: dict[str, int] = {}
    for st in sets:
        its = items[st]()
        counts[st] = len(its)
        run = [n for n in nets if n is main_net or st in abl_sets]
        with sw(st):
            t0 = time.time()
            res, secs, _ = quality_pass(its, run, main_net.name if main_net else None)
            print(f"{st}: {len(its)} images, {len(run)} models, {time.time() - t0:.0f} s", flush=True)
        results[st] = res
        for k, v in secs.items():
            secs_all.setdefault(k, []).extend(v)

    # quality table: one column pair per set
    rows = ["blurred input"] + [n.name for n in nets]
    heads = ["method"] + [f"{SET_TITLES[st]} ({counts[st]}) PSNR / SSIM" for st in sets]
    trows = []
    for r in rows:
        cells = [
            f"{mean([p for p, _ in results[st][r]]):.2f} / {mean([q for _, q in results[st][r]]):.4f}"
            if r in results[st]
            else "-"
            for st in sets
        ]
        trows.append([r, *cells])
    if "gopro" in sets:
        trows.append(
            ["*LPRN (seed paper, GoPro test set, T = 5/6/7)*", "*30.17 / 30.21 / 30.21*", *["" for _ in sets[1:]]]
        )
    md += [
        "## Quality",
        "",
        *md_table(heads, trows),
        "",
        "Seed paper (its GoPro test set, its training): T = 5 / 6 / 7 stages 30.17 / 30.21 / 30.21 dB; "
        "recalibration none / channel / spatial / both 30.08 / 30.16 / 30.14 / 30.21 dB; 0.02 / 0.03 / 0.07 s "
        "per image on its GPU. Our deblur-gopro pairs are 14 real pairs of other frames than the training ones, "
        "not the GoPro test set, and our models train for minutes to hours on a CPU.",
        "",
    ]

    # compute + timing
    xt = torch.rand(1, 3, th, tw)
    comp_rows = []
    cpu_t: dict[str, float] = {}
    with sw("compute"):
        for n in nets:
            c = meta_compute(n.net, (1, 3, H, W))
            ts = secs_all.get(n.name, [])
            if len(ts) >= 3 and (tw, th) == (W, H):
                t, src = float(np.median(ts)), f"median of {len(ts)} GoPro images"
            else:
                with torch.no_grad():
                    _, t = median_time(lambda n=n: n.net(xt), a.repeats)
                src = f"median of {a.repeats} runs at {tw}x{th}"
            cpu_t[n.name] = t
            g = gpu_time(n, torch.rand(1, 3, H, W))
            comp_rows.append(
                [
                    n.name,
                    f"{c.params / 1e3:.1f}K",
                    f"{c.macs / 1e9:.1f}",
                    f"{t:.2f}",
                    src,
                    fmt(g * 1e3 if g else None, ".1f"),
                    training_budget(n.info) if n.trained else "untrained (dry run)",
                ]
            )
    if nets:
        md += [
            f"## Compute at {W}x{H}",
            "",
            *md_table(
                ["model", "params", "GMACs", "CPU s", "CPU timing", "GPU fp16 ms", "training budget (metadata)"],
                comp_rows,
                "lrrrlrl",
            ),
            "",
            f"GMACs: `blurwise.metrics.flops` at 1x3x{H}x{W} (FLOPs = 2 x MACs). CPU: torch threads = "
            f"{torch.get_num_threads()}, model forward only (no file I/O); GPU: autocast fp16, synchronised, "
            "median of 10 after 3 warm-ups (`-` = no GPU in this run). Seed paper: 0.02 / 0.03 / 0.07 s per image "
            "for T = 5 / 6 / 7 on its GPU.",
            "",
        ]

    # LPRN per stage
    if main_net is not None and main_net.stages:
        with sw("stages"):
            warm = not (secs_all.get(main_net.name) and (tw, th) == (W, H))  # shape seen in the GoPro pass?
            st_t = stage_timing(main_net, xt, a.repeats, warmup=warm)
        heads = ["k"] + [f"{SET_TITLES[st]} PSNR / SSIM" for st in sets] + [f"CPU s at {tw}x{th}", f"GMACs at {W}x{H}"]
        srows = []
        for k in range(1, main_net.stages + 1):
            key = f"{main_net.name} k={k}"
            cells = [
                f"{mean([p for p, _ in results[st][key]]):.2f} / {mean([q for _, q in results[st][key]]):.4f}"
                if key in results[st]
                else "-"
                for st in sets
            ]

            class _K(torch.nn.Module):  # stages=k as a module, for the FLOP counter
                def __init__(self, m: Any, k: int) -> None:
                    super().__init__()
                    self.m, self.k = m, k

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return self.m(x, stages=self.k)

            macs = meta_compute(_K(main_net.net, k), (1, 3, H, W)).macs
            srows.append([str(k), *cells, f"{st_t[k]:.2f}", f"{macs / 1e9:.1f}"])
        md += [
            f"## `{main_net.name}` at --stages k (one model, T = {main_net.stages}; quality of every stage's output)",
            "",
            *md_table(heads, srows),
            "",
            f"Timing: time from the start of a full pass to the end of stage k (forward hooks), median of "
            f"{a.repeats} passes in this process; = the cost of `--stages k` up to the final pixel shuffle.",
            "",
        ]

    # profile
    if main_net is not None and not a.no_profile:
        with sw("profile"):
            md += [f"## Profile of `{main_net.name}` at {tw}x{th} (CPU)", "", *profile_lprn(main_net, xt), ""]

    # acceptance
    checks = []
    by = {n.name: n for n in nets}
    if main_net is not None:
        mn = main_net.name
        checks.append(
            check_line(
                f"`{mn}` <= {ACCEPT['params'] // 1000}K params",
                main_net.info.params <= ACCEPT["params"],
                f"{main_net.info.params / 1e3:.1f}K",
            )  # fmt: skip
        )
        for st in ("gopro", "synth"):
            if st in results and mn in results[st]:
                g = mean([p for p, _ in results[st][mn]]) - mean([p for p, _ in results[st]["blurred input"]])
                part = " (quick subset)" if a.quick or a.limit else ""
                checks.append(check_line(f"{SET_TITLES[st]}: `{mn}` >= blurred + {ACCEPT['gain']} dB",
                                         g >= ACCEPT["gain"], f"{g:+.2f} dB{part}"))  # fmt: skip
        if mn in cpu_t and (tw, th) == (W, H):
            checks.append(check_line(f"CPU time at {W}x{H} < {ACCEPT['cpu_s']} s (or explained by the profile)",
                                     cpu_t[mn] < ACCEPT["cpu_s"], f"{cpu_t[mn]:.2f} s"))  # fmt: skip
        unr = "lprn-unrolled"
        common = [st for st in sets if mn in results[st] and unr in results[st]]
        if unr in by and common:
            st = common[0]
            d = mean([p for p, _ in results[st][mn]]) - mean([p for p, _ in results[st][unr]])
            ratio = by[unr].info.params / main_net.info.params
            label = f"{SET_TITLES[st]}: `{mn}` within {ACCEPT['unrolled']} dB of `{unr}`"
            checks.append(check_line(label, d >= -ACCEPT["unrolled"], f"{d:+.2f} dB at 1/{ratio:.1f} of the params"))
        rb, rn = mn, "lprn-recal-none"
        common = [st for st in sets if rb in results[st] and rn in results[st]]
        if rn in by and common:
            st = common[0]
            d = mean([p for p, _ in results[st][rb]]) - mean([p for p, _ in results[st][rn]])
            checks.append(check_line(f"{SET_TITLES[st]}: recalibration both > none", d > 0,
                                     f"{d:+.2f} dB (seed: +0.13 dB)"))  # fmt: skip
    if any(not n.trained for n in nets):
        checks.append("- DRY RUN models involved; the checks above say nothing about quality")
    if not checks:
        checks = ["- no shipped deblurring model to check yet"]
    insert_at = next(i for i, line in enumerate(md) if line.startswith("## Quality"))
    md[insert_at:insert_at] = ['## Acceptance (issue "Fast deblurring")', "", *checks, ""]
    md += ["## Runtime", "", f"- this benchmark: {sw.summary()}", f"- {load_now()} at the end of the run", ""]
    write_md(out_md, md)
    print(f"wrote {out_md} ({sw.total():.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
