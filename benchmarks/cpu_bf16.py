"""bf16 inference on a CPU: speed and quality of `--half bf16` against fp32 -> docs/results/cpu_bf16.md.

CPUs with bf16 matrix units (Intel AMX on Sapphire Rapids and later, AVX512-BF16) run the convolutions
of the heavy SR models several times faster in bf16 (``torch.autocast("cpu", dtype=torch.bfloat16)``,
what ``--half bf16`` does on a CPU). This script measures, in one run on one machine:

- the heavy SR models (``--route off`` path, ``tiling.run_tiled``): Y-PSNR on Set5 and Set14 in fp32 and
  bf16 (the field's protocol, outputs rounded to 8 bits) and the time at 1280x720 output;
- EBM-SR and LPRN at 1280x720 (LPRN's PSNR on the 14 deblur-gopro pairs, RGB, as deblur.md);
- the whole routed upscale of the shipped example scene (``--route auto``) against ``--route off``, in
  fp32 and in bf16: does routing still pay when the heavy model is cheap?

Timings are medians of ``--repeats`` runs after a warm-up, ratios within this run.
``python benchmarks/cpu_bf16.py [--repeats 3] [--threads 0] [--out docs/results/cpu_bf16.md]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, md_table, median_time, set_threads, to8, write_md  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H = 1280, 720
PRECISIONS = {"fp32": None, "bf16": "bf16"}


def cpu_flags() -> str:
    """The CPU's bf16-related feature flags (from /proc/cpuinfo), or a note that none were found."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    found = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f") if f in flags]
    return ", ".join(found) or "no AMX / AVX512-BF16 (bf16 is emulated and slow here)"


def _sr_images(subset: str, scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR float32 in [0, 1], HR uint8) pairs of a test set by the field's protocol (``make_sr_pair``)."""
    from blurwise.data.datasets import list_images, read_rgb
    from blurwise.data.paths import data_path
    from blurwise.data.sr import make_sr_pair

    pairs = [make_sr_pair(read_rgb(f), scale) for f in list_images(data_path("sr", "test", subset))]
    return [(lr.astype(np.float32) / 255, hr) for lr, hr in pairs]


def _run(model: torch.nn.Module, x: torch.Tensor, scale: int, half: str | None) -> torch.Tensor:
    from blurwise.tiling import run_tiled

    return run_tiled(model, x, scale=scale, tile=0, half=half or False)


def sr_rows(repeats: int) -> list[list[str]]:
    """Heavy SR: Set5/Set14 Y-PSNR and 1280x720 time in fp32 and bf16."""
    from blurwise.metrics import psnr
    from blurwise.models import load_model

    rows = []
    for name, scale in (("edsr-s-x2", 2), ("edsr-s-x4", 4)):
        model, _ = load_model(name)
        sets = {subset: _sr_images(subset, scale) for subset in ("Set5", "Set14")}  # read once, both precisions
        x = torch.rand(1, 3, H // scale, W // scale)
        q: dict[str, list[float]] = {}
        t: dict[str, float] = {}
        for prec, half in PRECISIONS.items():
            q[prec] = []
            for pairs in sets.values():
                vals = []
                for lr, hr in pairs:
                    xs = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
                    with torch.no_grad():
                        y = _run(model, xs, scale, half)[0].clamp(0, 1).permute(1, 2, 0).numpy()
                    vals.append(psnr(to8(y), hr, crop=scale))
                q[prec].append(float(np.mean(vals)))
            _, t[prec] = median_time(lambda m=model, x=x, s=scale, half=half: _run(m, x, s, half), repeats)
        cells = [c for p in PRECISIONS for c in (f"{q[p][0]:.3f}", f"{q[p][1]:.3f}", f"{t[p]:.2f}")]
        d5, d14 = (q["bf16"][i] - q["fp32"][i] for i in (0, 1))
        rows.append([name, *cells, f"{d5:+.3f} / {d14:+.3f}", f"{t['fp32'] / t['bf16']:.2f}x"])
    return rows


def light_and_deblur_rows(repeats: int, eval_dir: Path) -> list[list[str]]:
    """EBM-SR and LPRN at 1280x720 (LPRN also on deblur-gopro) in fp32 and bf16."""
    from blurwise.data.datasets import read_rgb
    from blurwise.metrics import psnr
    from blurwise.models import load_model

    rows = []
    for name, scale in (("ebmsr-x4", 4), ("lprn", 1)):
        model, _ = load_model(name)
        x = torch.rand(1, model.in_channels, H // scale, W // scale)
        times = {}
        for prec, half in PRECISIONS.items():
            _, times[prec] = median_time(lambda m=model, x=x, s=scale, half=half: _run(m, x, s, half), repeats)
        q = {"fp32": "-", "bf16": "-"}
        man = eval_dir / "deblur-gopro" / "manifest.json"
        if name == "lprn" and man.is_file():
            root = eval_dir / "deblur-gopro"
            pairs = [
                (read_rgb(root / it["blur"]).astype(np.float32) / 255, read_rgb(root / it["sharp"]))
                for it in json.loads(man.read_text())["items"]
            ]  # read once, both precisions
            for prec, half in PRECISIONS.items():
                vals = []
                for blur, sharp in pairs:
                    xb = torch.from_numpy(np.ascontiguousarray(blur.transpose(2, 0, 1)))[None]
                    with torch.no_grad():
                        y = _run(model, xb, 1, half)[0].clamp(0, 1).permute(1, 2, 0).numpy()
                    vals.append(psnr(to8(y), sharp, y=False))
                q[prec] = f"{np.mean(vals):.3f}"
        rows.append([name, f"{times['fp32']:.2f}", f"{times['bf16']:.2f}", f"{times['fp32'] / times['bf16']:.2f}x",
                     q["fp32"], q["bf16"]])  # fmt: skip
    return rows


def routed_rows(repeats: int) -> tuple[list[list[str]], dict[str, list[float]]]:
    """Whole routed upscale of the example scene vs --route off, fp32 and bf16 (same run); rows and the
    routed speed-ups per precision."""
    from blurwise import api
    from blurwise.io import read_image

    lr = read_image(REPO / "examples" / "defocus_scene.png").pixels
    rows = []
    ratios: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for scale in (4, 2):
        t = {}
        for prec, half in PRECISIONS.items():
            for route in ("off", "auto"):

                def go(route: str = route, half: str | None = half, scale: int = scale) -> object:
                    return api.upscale(lr, scale, route=route, device="cpu", half=half, return_report=True)

                _, t[(prec, route)] = median_time(go, repeats)
        for p in PRECISIONS:
            ratios[p].append(t[(p, "off")] / t[(p, "auto")])
        rows.append([
            f"x{scale}", f"{lr.shape[1]}x{lr.shape[0]}",
            *[f"{t[(p, 'off')]:.2f} / {t[(p, 'auto')]:.2f} ({r[-1]:.2f}x)" for p, r in ratios.items()],
            f"{t[('fp32', 'auto')] / t[('bf16', 'auto')]:.2f}x",
            f"{t[('fp32', 'off')] / t[('bf16', 'auto')]:.2f}x",
        ])  # fmt: skip
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--eval-dir", default=str(Path.home() / ".cache/blurwise/eval"))
    ap.add_argument("--out", default=str(REPO / "docs/results/cpu_bf16.md"))
    args = ap.parse_args(argv)
    threads = set_threads(args.threads or None)
    lines = header(
        "bf16 inference on a CPU (`--half bf16`)",
        "benchmarks/cpu_bf16.py",
        argv,
        [
            f"CPU bf16 features: {cpu_flags()}; torch threads {threads}",
            "bf16 = `torch.autocast('cpu', dtype=torch.bfloat16)` around the model (what `--half bf16` does on a CPU);"
            " outputs rounded to 8 bits; times are medians of "
            f"{args.repeats} runs after a warm-up, model forward through `tiling.run_tiled` (no file I/O)",
        ],
    )
    lines += ["## Heavy SR models (`--route off` path)", ""]
    lines += md_table(
        ["model", "fp32 Set5 Y-PSNR", "fp32 Set14", "fp32 s at 1280x720", "bf16 Set5", "bf16 Set14",
         "bf16 s at 1280x720", "bf16 - fp32 dB (Set5 / Set14)", "bf16 speed-up"],
        sr_rows(args.repeats),
    )  # fmt: skip
    lines += ["", "## EBM-SR and LPRN at 1280x720", ""]
    lines += md_table(
        ["model", "fp32 s", "bf16 s", "bf16 speed-up", "deblur-gopro PSNR fp32", "deblur-gopro PSNR bf16"],
        light_and_deblur_rows(args.repeats, Path(args.eval_dir)),
    )
    lines += ["", "## Routed upscale of examples/defocus_scene.png (whole pipeline, no file I/O)", ""]
    rows, ratios = routed_rows(args.repeats)
    lines += md_table(
        ["scale", "LR size", "fp32: off / routed s (speed-up)", "bf16: off / routed s (speed-up)",
         "routed bf16 vs routed fp32", "routed bf16 vs off fp32"],
        rows,
    )  # fmt: skip
    r32, r16 = (", ".join(f"{v:.2f}x" for v in ratios[p]) for p in PRECISIONS)
    lines += [
        "",
        f"Routing's speed-up over `--route off` (x4, x2): {r32} in fp32, {r16} in bf16. bf16 speeds up the heavy",
        "model's large convolutions most; EBM-SR, the map network, planning and blending are small, memory-bound",
        "steps that it speeds up far less, so they weigh more in the routed time.",
    ]
    write_md(args.out, lines)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
