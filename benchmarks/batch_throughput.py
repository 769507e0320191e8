"""Folder-processing throughput: the CLI's reader/writer pipeline against a plain read-compute-write loop.

Builds a folder of 50 mixed images (PNG 8/16-bit, JPEG, 16-bit TIFF, RGBA, gray; crops of the shared
B100 test photos, plus one corrupt file), runs ``blurwise upscale`` on it, checks that every good image
was written and the corrupt one reported, re-runs with ``--skip-existing`` (must do nothing), and
times the same work done sequentially. Writes ``docs/results/batch.md``.

    python benchmarks/batch_throughput.py [--n 50] [--size 64] [--threads 1] [--out docs/results/batch.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurwise.data.paths import data_path  # noqa: E402
from blurwise.io import read_image, write_image  # noqa: E402

KINDS = ("png8", "png16", "jpg", "tif16", "rgba", "gray")


def make_folder(folder: Path, n: int, size: int) -> list[Path]:
    """n mixed images cropped from the shared B100 photos (one corrupt), in two sub-folders."""
    srcs = sorted(data_path("sr", "test", "B100").glob("*.png"))
    if not srcs:
        raise SystemExit("shared data not found (sr/test/B100); set BLURWISE_DATA")
    rng = np.random.default_rng(0)
    made = []
    for k in range(n - 1):
        img = read_image(srcs[k % len(srcs)]).pixels
        y = int(rng.integers(0, img.shape[0] - size))
        x = int(rng.integers(0, img.shape[1] - size))
        crop = img[y : y + size, x : x + size]
        kind = KINDS[k % len(KINDS)]
        sub = folder / ("a" if k % 2 else "b")
        if kind == "png8":
            p = write_image(sub / f"{k:03d}.png", crop)
        elif kind == "png16":
            p = write_image(sub / f"{k:03d}_16.png", crop, bit_depth=16)
        elif kind == "jpg":
            p = write_image(sub / f"{k:03d}.jpg", crop)
        elif kind == "tif16":
            p = write_image(sub / f"{k:03d}.tif", crop, bit_depth=16)
        elif kind == "rgba":
            alpha = np.linspace(0, 1, size, dtype=np.float32)[None, :].repeat(size, 0)[:, :, None]
            p = write_image(sub / f"{k:03d}_rgba.png", np.concatenate([crop, alpha], axis=2))
        else:
            p = write_image(sub / f"{k:03d}_gray.png", crop.mean(axis=2))
        made.append(p)
    bad = folder / "a" / "zz_corrupt.png"
    data = made[0].read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return made


def run_cli(args: list[str]) -> tuple[int, float, str]:
    from blurwise.cli import main

    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, time.perf_counter() - t0, err.getvalue()


def sequential(folder: Path, out: Path, model: str, scale: int) -> float:
    """The same work without the pipeline: read, compute, write, one image after another."""
    from blurwise.api import Upscaler
    from blurwise.batch import plan_jobs

    up = Upscaler(scale, model=model, route="off", device="cpu", tile=0)
    jobs = plan_jobs([folder], out, recursive=True)
    t0 = time.perf_counter()
    for job in jobs:
        try:
            img = read_image(job.src)
        except Exception:  # noqa: BLE001 - the corrupt one
            continue
        px, a, _ = up(img.pixels, img.alpha)
        write_image(job.dst, img.with_pixels(px, a))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--size", type=int, default=64, help="input crop side (px)")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--models", default="bicubic,edsr-s-x4", help="comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per setting (median)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "batch.md"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("BLURWISE_ALLOW_UNTRAINED", "1")  # timing only: untrained weights cost the same
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="blurwise-batch-"))
    rows = []
    checks = []
    try:
        src = tmp / "in"
        good = make_folder(src, args.n, args.size)
        for model in args.models.split(","):
            # warm-up (model load, first-call overheads) outside the timings
            run_cli(["upscale", "-i", str(good[0]), "-o", str(tmp / "warm"), "-s", str(args.scale), "-m", model,
                     "--route", "off", "--device", "cpu", "-q", "--overwrite"])  # fmt: skip
            pipe, seq = [], []
            for r in range(args.repeats):
                out = tmp / f"out_{model}_{r}"
                cmd = ["upscale", "-i", str(src), "-o", str(out), "-s", str(args.scale), "-m", model, "--recursive",
                       "--route", "off", "--device", "cpu", "-q"]  # fmt: skip
                code, secs, err = run_cli(cmd)
                written = sorted(out.rglob("*_out.*"))
                ok = code == 1 and len(written) == len(good) and "zz_corrupt.png" in err and err.count("\n") == 1
                pipe.append(secs)
                before = {p: p.stat().st_mtime_ns for p in written}
                code2, secs2, _ = run_cli([*cmd, "--skip-existing"])
                unchanged = {p: p.stat().st_mtime_ns for p in written} == before
                seq.append(sequential(src, tmp / f"seq_{model}_{r}", model, args.scale))
                if r == 0:
                    checks.append(
                        f"- `{model}`: exit {code}, {len(written)}/{len(good)} good images written, corrupt one "
                        f"reported on one line: {'yes' if ok else 'NO'}; `--skip-existing` re-run: exit {code2}, "
                        f"{secs2:.2f} s, outputs untouched: {'yes' if unchanged else 'NO'}"
                    )
            p_med, s_med = statistics.median(pipe), statistics.median(seq)
            n = len(good)
            rows.append((model, n, s_med, n / s_med, p_med, n / p_med, s_med / p_med))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "# Folder processing throughput",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
        f"{args.threads} torch thread(s), CPU; 1-min load average {load0:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine). Date: {date.today().isoformat()}.",
        f"Command: `python benchmarks/batch_throughput.py --n {args.n} --size {args.size} --scale {args.scale} "
        f"--models {args.models} --threads {args.threads} --repeats {args.repeats}`",
        "",
        f"{args.n} mixed inputs ({args.n - 1} good: PNG 8/16-bit, JPEG, 16-bit TIFF, RGBA, gray; one truncated PNG), "
        f"{args.size}x{args.size} crops of B100, upscaled x{args.scale} with `--route off` (model weights untrained "
        "where none ship: same cost). 'sequential' = read, compute, write one image after another with the same "
        "functions; 'pipeline' = `blurwise upscale -i DIR --recursive` (reader and writer threads). "
        f"Medians of {args.repeats} runs; the pipeline time includes planning and the one failure.",
        "",
        "| model | images | sequential s | sequential img/s | pipeline s | pipeline img/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, n, s, si, p, pi, sp in rows:
        lines.append(f"| {m} | {n} | {s:.2f} | {si:.1f} | {p:.2f} | {pi:.1f} | {sp:.2f}x |")
    lines += [
        "",
        "Checks (first repeat):",
        *checks,
        "",
        "Reading: decoding/encoding overlap with compute only while a core is free for them. When the model "
        "dominates and the CPU is saturated (as on a loaded 2-core machine), the pipeline cannot beat the plain "
        "loop; with a GPU doing the compute, or for light models, it hides most of the I/O.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
