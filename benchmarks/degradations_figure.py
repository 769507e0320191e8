"""Figure of the degradations (docs/results/degradations.png) and renderer timings (docs/results/degradations.md).

Rows: an NYU Depth v2 sample (measured depth), a BSD200 training image (synthetic depth), a SYNDOF
Sintel frame (rendered depth). Columns: sharp, depth, rendered defocus, GT blur map (sigma px),
camera-shake blur (kernel inset), and a GoPro frame average (7-13 frames of the training sequence,
linear light). Only training data is used.

    .venv/bin/python benchmarks/degradations_figure.py [--out docs/results] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurwise.data import depth as dmod  # noqa: E402
from blurwise.data.datasets import GoProFrames, read_rgb  # noqa: E402
from blurwise.data.defocus import render_defocus  # noqa: E402
from blurwise.data.motion import apply_kernel, motion_kernel  # noqa: E402
from blurwise.data.paths import data_path  # noqa: E402


def _fit(img: np.ndarray, long_side: int = 480) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    f = long_side / max(h, w)
    if f >= 1:
        return img
    return np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.BICUBIC))


def _fit_map(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from scipy import ndimage

    if m.shape == shape:
        return m
    return ndimage.zoom(m, (shape[0] / m.shape[0], shape[1] / m.shape[1]), order=0)[: shape[0], : shape[1]]


def rows(seed: int = 0) -> list[dict]:
    """The three example rows (arrays + captions)."""
    samples = {s.name: s for s in dmod.depth_samples()}
    result = []
    specs = [
        ("nyuv2_294", None, "NYU v2 (measured depth)"),
        (None, data_path("sr", "train", "BSD200", "100075.png"), "BSD200 (synthetic depth)"),
        ("syndof_MPI_market_2_frame_0001", None, "Sintel (rendered depth)"),
    ]
    gopro = GoProFrames()
    seq = gopro.names[0]
    for k, (name, path, title) in enumerate(specs):
        rng = np.random.default_rng([seed, k])
        if name is not None:
            s = samples[name]
            img = _fit(read_rgb(s.image))
            d = _fit_map(dmod.load_depth(s.depth), img.shape[:2])
        else:
            img = _fit(read_rgb(path))
            d = dmod.synthetic_depth(img, rng)
        dof = dmod.random_dof(d, rng)
        t0 = time.process_time()
        out, sigma = render_defocus(img, d, focus_depth=dof["focus_depth"], max_coc=dof["max_coc"])
        cpu = time.process_time() - t0
        ks = (17, 31, 45)[k]
        ker = motion_kernel(ks, rng)
        shaken = apply_kernel(img, ker)
        n = (7, 9, 13)[k]
        start = (5, 30, 60)[k]
        h, w = gopro.shape
        ch, cw = min(h, img.shape[0] * 2), min(w, img.shape[1] * 2)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        avg, _sharp = gopro.window(seq, start, n, (slice(y0, y0 + ch), slice(x0, x0 + cw)))
        result.append(
            {
                "title": title,
                "sharp": img,
                "depth": d,
                "defocus": out,
                "sigma": sigma,
                "shaken": shaken,
                "kernel": ker,
                "avg": avg,
                "avg_caption": f"GoPro frames {start + 1}-{start + n} (n={n})",
                "dof": dof,
                "cpu": cpu,
                "ks": ks,
            }
        )
    return result


def figure(data: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["sharp", "depth (log)", "rendered defocus", "GT blur map (sigma, px)", "camera shake", "frame average"]
    fig, axes = plt.subplots(len(data), 6, figsize=(19, 2.9 * len(data) + 0.4))
    for r, row in enumerate(data):
        ax = axes[r]
        ax[0].imshow(row["sharp"])
        ax[0].set_ylabel(row["title"], fontsize=10)
        im = ax[1].imshow(np.log(row["depth"]), cmap="viridis_r")
        fig.colorbar(im, ax=ax[1], fraction=0.035, pad=0.01).set_label("log m", fontsize=7)
        ax[2].imshow(np.clip(row["defocus"], 0, 1))
        d = row["dof"]
        ax[2].set_xlabel(
            f"focus {d['focus_depth']:.2f} ({d['focus_on']}), max CoC {d['max_coc']:.1f} px, {row['cpu']:.2f} s",
            fontsize=8,
        )
        im = ax[3].imshow(row["sigma"], cmap="magma", vmin=0, vmax=6.0)
        fig.colorbar(im, ax=ax[3], fraction=0.035, pad=0.01)
        ax[3].set_xlabel(f"{100 * np.mean(row['sigma'] > 1):.0f}% of pixels with sigma > 1 px", fontsize=8)
        ax[4].imshow(row["shaken"])
        k = row["kernel"]
        inset = ax[4].inset_axes([0.0, 0.62, 0.36, 0.36])
        inset.imshow(k / k.max(), cmap="gray")
        inset.set_xticks([])
        inset.set_yticks([])
        ax[4].set_xlabel(f"random {row['ks']}x{row['ks']} kernel (inset)", fontsize=8)
        ax[5].imshow(row["avg"])
        ax[5].set_xlabel(row["avg_caption"] + ", linear light", fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    for c, name in enumerate(cols):
        axes[0][c].set_title(name, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def timings(repeats: int) -> list[tuple[str, float, float]]:
    """Median CPU seconds of depth synthesis and rendering at 512x512 over ``repeats`` images."""
    files = sorted(data_path("sr", "train", "DIV2K6").glob("*.png"))
    res = []
    for psf in ("gaussian", "disk"):
        td, tr = [], []
        for i in range(repeats):
            img = read_rgb(files[i % len(files)])[300:812, 600:1112]
            rng = np.random.default_rng(i)
            t = time.process_time()
            d = dmod.synthetic_depth(img, rng)
            td.append(time.process_time() - t)
            dof = dmod.random_dof(d, rng)
            t = time.process_time()
            render_defocus(img, d, focus_depth=dof["focus_depth"], max_coc=dof["max_coc"], psf=psf)
            tr.append(time.process_time() - t)
        res.append((psf, float(np.median(td)), float(np.median(tr))))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)
    data = rows()
    figure(data, out / "degradations.png")
    tim = timings(args.repeats)
    lines = [
        "# Degradations: renderer cost",
        "",
        f"- machine: {platform.machine()} {platform.processor() or ''}, shared 2-core CPU, 1 thread;"
        f" date {datetime.now(timezone.utc):%Y-%m-%d}",
        "- command: `.venv/bin/python benchmarks/degradations_figure.py`",
        f"- CPU seconds (process time), median over {args.repeats} 512x512 crops of the DIV2K samples,"
        " synthetic depth, 128 layers, random focus/aperture as in the datasets",
        "",
        "| PSF | synthetic depth (s) | render (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {p} | {a:.2f} | {b:.2f} |" for p, a, b in tim]
    lines += ["", "Figure: `degradations.png` (rows: NYU v2, BSD200 with synthetic depth, Sintel)."]
    lines += [f"- {r['title']}: render {r['cpu']:.2f} s for {r['sharp'].shape[1]}x{r['sharp'].shape[0]}" for r in data]
    (out / "degradations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
