"""Defocus-map benchmark -> docs/results/defocus_map.md.

1. defocus-sr renders (Set14 + the first B100 images; the project's renderer: synthetic depth,
   random shallow depth of field, GT Gaussian sigma map), evaluated at full resolution and on the LR
   images routed SR receives (x2, x4: MATLAB bicubic of the defocused HR, GT sigma / scale):
   per-pixel MAE of sigma, and patch accuracy / F1 of the routing decision "wholly defocused" (the
   routing statistic: min of sigma over a 16x16 LR patch + 2 px margin, > threshold) at
   sigma_HR = 1 and 2 px (the routing default), for the plain Zhuo & Sim propagation, DGS with each
   segmenter (with and without depth), and the learned estimator (raw and DGS-refined).
2. CUHK blur-detection photos with binary masks (``defocus/gt_maps``): F-measure (beta^2 = 0.3,
   adaptive threshold 2 x mean) and MAE of the min-max normalised map, and patch decisions on x4 LR;
   ``motion0138`` (motion blur) is reported apart.
3. Wall-clock per megapixel and as a fraction of the heavy SR model (``edsr-s-xS``, untrained, same
   LR image, same thread count), medians over repeats.

Run: ``python benchmarks/defocus_map.py [--b100 16] [--repeats 3]`` (~15 min on 2 loaded cores).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # BLAS threads spinning on a shared 2-core machine ruin timings

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurwise.data.paths import data_path  # noqa: E402
from blurwise.defocus import defocus_details  # noqa: E402
from blurwise.defocus.synth import downscale_pair, render_pair  # noqa: E402

SCALES = (4, 2, 1)  # LR first: what routed SR uses
THRESH_HR = (1.0, 2.0)
PATCH_LR = 16
MARGIN = 2


def patch_scores(sigma: np.ndarray, patch: int = PATCH_LR, margin: int = MARGIN) -> np.ndarray:
    """Routing's conservative patch statistic (min over the patch + margin)."""
    try:
        from blurwise.routing.plan import defocus_scores

        return defocus_scores(sigma, patch=patch, margin=margin, stat="min")
    except ImportError:  # pragma: no cover - routing not installed
        from scipy import ndimage

        v = ndimage.minimum_filter(sigma, 2 * margin + 1, mode="nearest")
        h, w = sigma.shape
        ys, xs = np.arange(0, h, patch), np.arange(0, w, patch)
        return np.minimum.reduceat(np.minimum.reduceat(v, ys, axis=0), xs, axis=1)


def prf(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, int, int]:
    """(accuracy, F1 of the positive class, true positives count, GT positives count)."""
    tp = int(np.sum(pred & gt))
    fp = int(np.sum(pred & ~gt))
    fn = int(np.sum(~pred & gt))
    acc = float(np.mean(pred == gt))
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return acc, f1, tp, int(gt.sum())


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def make_eval_set(n_b100: int, cache: Path) -> list[dict]:
    """Render (or load) the eval images: full-res render + GT + depth; LR versions derived."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=True)  # our own cache file
        items = list(z["items"])
        if len(items) >= 14 + n_b100:
            return items[: 14 + n_b100]
    files = sorted(data_path("sr", "test", "Set14").glob("*.png"))
    files += sorted(data_path("sr", "test", "B100").glob("*.png"))[:n_b100]
    items = []
    for i, f in enumerate(files):
        rng = np.random.default_rng([20261126, i])
        img, sig, depth = render_pair(read_rgb(f), rng, scale=1)
        h, w = img.shape[:2]
        img, sig, depth = img[: h - h % 4, : w - w % 4], sig[: h - h % 4, : w - w % 4], depth[: h - h % 4, : w - w % 4]
        items.append({"name": f"{f.parent.name}/{f.stem}", "img": img, "sig": sig, "depth": depth})
        print(f"render {i + 1}/{len(files)} {f.name}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    np.savez(cache, items=arr)
    return items


def at_scale(item: dict, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, sig = downscale_pair(item["img"], item["sig"], s)
    d = item["depth"]
    if s > 1:
        d = d.reshape(d.shape[0] // s, s, d.shape[1] // s, s).mean(axis=(1, 3))
    return img, sig, d.astype(np.float32)


METHODS = {
    # name: (kwargs for defocus_details, uses depth)
    "Zhuo & Sim, matting Laplacian": (dict(method="edge", segmenter="none", propagation="matting"), False),
    "Zhuo & Sim, guided-filter interp.": (dict(method="edge", segmenter="none", propagation="guided"), False),
    "DGS slic": (dict(method="edge", segmenter="slic"), False),
    "DGS felzenszwalb": (dict(method="edge", segmenter="felzenszwalb"), False),
    "DGS depth (with depth)": (dict(method="edge", segmenter="depth"), True),
    "DGS color+depth (with depth)": (dict(method="edge", segmenter="color+depth"), True),
    "learned (raw CNN)": (dict(method="learned", segmenter="none"), False),
    "learned + DGS slic refine": (dict(method="learned", segmenter="slic"), False),
}


def run_method(name: str, img: np.ndarray, depth: np.ndarray, s: int) -> tuple[np.ndarray, float]:
    kw, uses_depth = METHODS[name]
    t0 = time.perf_counter()
    res = defocus_details(img, depth if uses_depth else None, lr_scale=s, **kw)
    return res.sigma, time.perf_counter() - t0


def heavy_time(img: np.ndarray, s: int, repeats: int) -> float:
    import torch

    from blurwise.models import create_model

    key = ("heavy", s)
    if key not in _MODELS:
        _MODELS[key] = create_model(f"edsr-s-x{max(s, 2) if s > 1 else 4}").eval()
    m = _MODELS[key]
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    ts = []
    with torch.inference_mode():
        m(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            m(x)
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


_MODELS: dict = {}


def cuhk(methods: list[str]) -> list[dict]:
    """Blur-detection scores on the shared CUHK images (binary GT masks, 255 = blurred)."""
    from PIL import Image

    root = data_path("defocus", "gt_maps")
    rows = []
    for img_path in sorted((root / "images").glob("*")):
        gt = np.asarray(Image.open(root / "gt" / (img_path.stem + ".png")).convert("L")) > 127
        img = read_rgb(img_path)
        h, w = img.shape[:2]
        img, gt = img[: h - h % 4, : w - w % 4], gt[: h - h % 4, : w - w % 4]
        lr, _ = downscale_pair(img, np.zeros(img.shape[:2], np.float32), 4)
        gt_lr = gt.reshape(gt.shape[0] // 4, 4, gt.shape[1] // 4, 4).all(axis=(1, 3))
        for name in methods:
            kw, uses_depth = METHODS[name]
            if uses_depth:
                continue
            full = defocus_details(img, None, lr_scale=1, **kw).sigma
            lo, hi = float(full.min()), float(full.max())
            nm = (full - lo) / max(hi - lo, 1e-6)
            thr = min(2.0 * float(nm.mean()), 1.0)
            pb = nm >= thr
            tp = np.sum(pb & gt)
            prec = tp / max(pb.sum(), 1)
            rec = tp / max(gt.sum(), 1)
            fm = 1.3 * prec * rec / max(0.3 * prec + rec, 1e-12)
            mae = float(np.mean(np.abs(nm - gt)))
            sl = defocus_details(lr, None, lr_scale=4, **kw).sigma
            gp = patch_scores(gt_lr.astype(np.float32)) > 0.5
            pp = patch_scores(sl) > 2.0 / 4
            acc, f1, _, _ = prf(pp, gp)
            rows.append({"image": img_path.stem, "method": name, "F": fm, "MAE": mae, "acc": acc, "f1": f1})
        print("cuhk", img_path.name, flush=True)
    return rows


def timing_table(items: list[dict], methods: list[str], n_images: int, repeats: int) -> list[str]:
    """Map time vs heavy SR time on the same LR images, runs interleaved (map, SR, map, SR, ...) so a
    change of machine load hits both alike; median over repeats and images."""
    rows = ["## Cost vs the heavy SR model (interleaved runs)", ""]
    rows += [
        f"Median over {n_images} images x {repeats} interleaved repeats; 1 thread each; heavy = untrained "
        "`edsr-s-x4` on the x4 LR image (`edsr-s-x2` on the x2 LR image).",
        "",
        "| method | x4: map ms | heavy ms | map / heavy | x2: map ms | heavy ms | map / heavy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        if "matting" in name:
            continue
        cells = []
        for s in (4, 2):
            tm, th, rat = [], [], []
            for it in items[:n_images]:
                img, _, depth = at_scale(it, s)
                run_method(name, img, depth, s)  # warm-up (model load, caches)
                heavy_time(img, s, 1)
                for _ in range(repeats):
                    a = run_method(name, img, depth, s)[1]
                    b = heavy_time(img, s, 1)
                    tm.append(a)
                    th.append(b)
                    rat.append(a / b)
            cells += [f"{np.median(tm) * 1e3:.0f}", f"{np.median(th) * 1e3:.0f}", f"{np.median(rat) * 100:.1f}%"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b100", type=int, default=16, help="number of B100 images besides Set14")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-images", type=int, default=6)
    ap.add_argument("--cache", default="/tmp/blurwise_defocus_eval.npz")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "defocus_map.md"))
    ap.add_argument("--title", default="Defocus map estimation: accuracy and cost", help="heading of the report")
    ap.add_argument("--intro", default="", help="a paragraph under the heading (what this run is for)")
    ap.add_argument("--scales", default="4,2,1", help="comma-separated evaluation scales (1 = full resolution)")
    ap.add_argument("--no-cuhk", action="store_true", help="skip the CUHK blur-detection photos")
    ap.add_argument("--timing-only", action="store_true", help="only the interleaved map-vs-heavy timing table")
    ap.add_argument("--methods", default="", help="semicolon-separated subset of the method names")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from blurwise.models.registry import WEIGHTS_DIR

    methods = [m for m in METHODS if not a.methods or m in a.methods.split(";")]
    if not (WEIGHTS_DIR / "defocus-cnn.safetensors").is_file():
        methods = [m for m in methods if not m.startswith("learned")]
    items = make_eval_set(a.b100, Path(a.cache))
    if a.timing_only:
        rows = timing_table(items, methods, a.timing_images, a.repeats)
        Path(a.out).write_text("\n".join(rows) + "\n")
        return
    acc: dict = {}
    t_start = time.time()
    scales = tuple(int(v) for v in a.scales.split(","))
    for s in scales:
        for k, it in enumerate(items):
            img, sig, depth = at_scale(it, s)
            gts = {t: patch_scores(sig) > t / s for t in THRESH_HR}
            timed = k < a.timing_images
            # The heavy model is timed on LR inputs only (what routed SR runs); full-res maps get ms/MP.
            t_heavy = heavy_time(img, s, a.repeats) if timed and s > 1 else None
            for name in methods:
                if name.startswith("Zhuo & Sim, matting") and s != 4:
                    continue  # ~5 s per 10K px: LR x4 only
                est, dt = run_method(name, img, depth, s)
                r = acc.setdefault((name, s), {"mae": [], "t_mp": [], "ratio": [], **{t: [] for t in THRESH_HR}})
                r["mae"].append(float(np.mean(np.abs(est - sig))))
                for t in THRESH_HR:
                    r[t].append((patch_scores(est) > t / s, gts[t]))
                if timed:
                    reps = 1 if "matting" in name else a.repeats  # the slow baseline: timed once
                    ts = [dt] + [run_method(name, img, depth, s)[1] for _ in range(reps - 1)]
                    tm = float(np.median(ts))
                    r["t_mp"].append(tm / (img.shape[0] * img.shape[1] / 1e6))
                    if t_heavy is not None:
                        r["ratio"].append(tm / t_heavy)
            print(f"x{s} {k + 1}/{len(items)} {it['name']} ({time.time() - t_start:.0f} s)", flush=True)
        write_report(a, items, methods, acc, [], time.time() - t_start)  # partial results after each scale
    rows_cuhk = [] if a.no_cuhk else cuhk([m for m in methods if "matting" not in m])
    write_report(a, items, methods, acc, rows_cuhk, time.time() - t_start)


def write_report(a, items, methods, acc, rows_cuhk, elapsed) -> None:  # type: ignore[no-untyped-def]
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    blurred = [float(np.mean(it["sig"] > 1.0)) for it in items]
    out = [
        f"# {a.title}",
        "",
        *([a.intro, ""] if a.intro else []),
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {cpu}, "
        f"{os.cpu_count()} cores shared with other jobs (load average {load:.1f} at the end); "
        f"Python {platform.python_version()}, 1 thread for numpy and torch",
        f"- command: `python benchmarks/defocus_map.py {shlex.join(sys.argv[1:])}` ({elapsed / 60:.1f} min)",
        f"- defocus-sr renders: {len(items)} images (Set14 + first {a.b100} of B100), one render each with the "
        "project's renderer (synthetic depth, random shallow depth of field, 128 layers, Gaussian PSF); "
        f"pixels with sigma > 1 px: {np.mean(blurred) * 100:.0f}% on average "
        f"({min(blurred) * 100:.0f}-{max(blurred) * 100:.0f}%). LR x2/x4 = the defocused-SR recipe "
        "(MATLAB bicubic of the uint8 defocused HR; GT sigma = block mean / scale), maps estimated on the LR "
        "image with `lr_scale` set.",
        "- MAE: mean |sigma_est - sigma_gt| in px of the evaluated image. Patch decision: the routing statistic "
        f"(min of sigma over a {PATCH_LR}x{PATCH_LR} patch + {MARGIN} px margin, at every resolution) above "
        "sigma_HR / scale, for GT and estimate; F1 of the 'defocused' class, accuracy over all patches.",
        "- time: median of the per-image medians over repeats, on the first "
        f"{a.timing_images} images; 'x heavy' = map time / time of the heavy SR model (untrained `edsr-s-x4` "
        "48 ch / 12 blocks) on the same x4 LR image (`edsr-s-x2` on x2 LR), same run, 1 thread each; not "
        "measured at full resolution.",
        "- Zhuo & Sim, matting Laplacian: the published propagation (lambda = 1e-3, eps = 1e-7, 3x3 windows, "
        "CG warm-started from the guided variant); ~5 s per 10K px here, so run on x4 LR only. The guided-filter "
        "interpolation is the linear-time variant used at every scale. Both use the same calibrated sparse "
        "edge estimates as DGS, so the rows compare propagation.",
        "- SAM segmenter: not in the table (no checkpoint on this machine; the integration is tested with a tiny "
        "randomly initialised `Sam` in `tests/test_defocus.py`).",
        "",
    ]
    for s in SCALES:
        if not any(k[1] == s for k in acc):
            continue
        title = "full resolution" if s == 1 else f"LR x{s}"
        out += [f"## defocus-sr, {title}", ""]
        hdr = "| method | MAE px | " + " | ".join(f"acc / F1 @ sigma_HR {t:g}" for t in THRESH_HR)
        out += [hdr + " | ms / MP | x heavy |", "|---" * (4 + len(THRESH_HR)) + "|"]
        for name in methods:
            r = acc.get((name, s))
            if r is None:
                continue
            cells = [f"{np.mean(r['mae']):.3f}"]
            for t in THRESH_HR:
                p = np.concatenate([x[0].ravel() for x in r[t]])
                g = np.concatenate([x[1].ravel() for x in r[t]])
                ac, f1, _, npos = prf(p, g)
                cells.append(f"{ac:.3f} / {f1:.3f}")
            tmp = f"{np.median(r['t_mp']) * 1e3:.0f}" if r["t_mp"] else "-"
            rat = f"{np.median(r['ratio']) * 100:.1f}%" if r["ratio"] else "-"
            out.append(f"| {name} | " + " | ".join(cells) + f" | {tmp} | {rat} |")
        gpos = [np.concatenate([x[1].ravel() for x in acc[(methods[-1], s)][t]]).mean() for t in THRESH_HR]
        out += [
            "",
            "GT 'defocused' patches: "
            + ", ".join(f"{g * 100:.0f}% at sigma_HR {t:g}" for g, t in zip(gpos, THRESH_HR, strict=False)),
            "",
        ]
    if rows_cuhk:
        out += cuhk_table(rows_cuhk, methods)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


def cuhk_table(rows_cuhk: list[dict], methods: list[str]) -> list[str]:
    """Markdown section for the CUHK photos: F-measure, MAE and patch scores per method."""
    out = [
        "## CUHK blur-detection photos (defocus/gt_maps, binary masks)",
        "",
        "F-measure (beta^2 = 0.3, adaptive threshold 2 x mean) and MAE of the min-max normalised full-res map "
        "against the mask; patch acc / F1 on x4 LR (mask wholly blurred vs estimate min > 0.5 LR px = sigma_HR 2).",
        "",
        "| method | F (defocus, 4 images) | MAE | patch acc / F1 | motion0138: F | MAE |",
        "|---|---|---|---|---|---|",
    ]
    for name in methods:
        rr = [r for r in rows_cuhk if r["method"] == name]
        if not rr:
            continue
        d = [r for r in rr if not r["image"].startswith("motion")]
        mo = [r for r in rr if r["image"].startswith("motion")]
        cell = (
            f"| {name} | {np.mean([r['F'] for r in d]):.3f} | {np.mean([r['MAE'] for r in d]):.3f} | "
            f"{np.mean([r['acc'] for r in d]):.3f} / {np.mean([r['f1'] for r in d]):.3f} | "
        )
        cell += f"{mo[0]['F']:.3f} | {mo[0]['MAE']:.3f} |" if mo else "- | - |"
        out.append(cell)
    out.append("")
    return out


if __name__ == "__main__":
    main()
