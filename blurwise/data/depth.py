"""Depth for defocus rendering: loaders for the real RGB-D samples and synthetic scene depth for any image.

Real depth (training data, ``defocus/depth``): NYU Depth v2 ``depth/N.npy`` (float32 metres, paired
with ``rgb/N.jpg``); SYNDOF's MPI Sintel ``.dpt`` (header float32 202021.25, int32 width, int32
height, then float32 row-major depth; the sky is ~1e11 and is clipped to 1e4); SYNDOF's SYNTHIA
8-bit depth PNG (grey, R = G = B, ~44 levels, 0 at the bottom rows = nearest, 255 = sky). SYNTHIA
units are unknown at this precision: the grey level is returned as is (0 clamped to 0.5), which is
fine for ``max_coc`` rendering (only depth ratios matter).

Synthetic depth (:func:`synthetic_depth`): a smooth background ramp in inverse depth (mostly nearer
at the bottom, as in photographs) with low-frequency undulation, plus 1-3 nearer foreground objects
grown from Felzenszwalb segments of the image itself, so depth edges follow image edges. The
camera (:func:`random_dof`) focuses on a foreground object or on a point of the background and picks
the max CoC (<= 25 px) so that a target fraction of the pixels (55-85% by default: the CUHK blur
masks have 67-86% blurred) has sigma > 1 px.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from blurwise.data.paths import data_path
from blurwise.errors import InputError

SINTEL_TAG = 202021.25
FAR_CLIP = 1e4


@dataclass(frozen=True)
class DepthSample:
    """One real RGB-D pair of ``defocus/depth``."""

    name: str
    image: Path
    depth: Path


def read_dpt(path: str | Path) -> np.ndarray:
    """Read an MPI Sintel ``.dpt`` depth file -> float32 HW (sky clipped to 1e4)."""
    raw = Path(path).read_bytes()
    if len(raw) < 12:
        raise InputError(f"{path}: truncated .dpt file")
    tag, w, h = struct.unpack("<fii", raw[:12])
    if abs(tag - SINTEL_TAG) > 1e-3 or w <= 0 or h <= 0 or len(raw) < 12 + 4 * w * h:
        raise InputError(f"{path}: not a Sintel .dpt depth file")
    d = np.frombuffer(raw, dtype="<f4", count=w * h, offset=12).reshape(h, w)
    return np.clip(d, 1e-3, FAR_CLIP).astype(np.float32)


def load_depth(path: str | Path) -> np.ndarray:
    """Load a depth map of ``defocus/depth`` (``.npy`` metres, Sintel ``.dpt``, SYNTHIA 8-bit PNG) -> float32 HW."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: depth file not found")
    ext = p.suffix.lower()
    if ext == ".npy":
        d = np.load(p, allow_pickle=False).astype(np.float32)
    elif ext == ".dpt":
        d = read_dpt(p)
    elif ext in (".png", ".tif", ".tiff"):
        from PIL import Image

        with Image.open(p) as im:
            a = np.asarray(im)
        d = (a[:, :, 0] if a.ndim == 3 else a).astype(np.float32)
        d = np.maximum(d, 0.5)
    else:
        raise InputError(f"{p}: unknown depth format {ext!r}")
    if d.ndim != 2:
        raise InputError(f"{p}: depth must be 2-D, got shape {d.shape}")
    d = np.where(np.isfinite(d), d, FAR_CLIP)
    return np.clip(d, 1e-3, FAR_CLIP).astype(np.float32)


def depth_samples(root: str | Path | None = None) -> list[DepthSample]:
    """The real RGB-D samples under ``root`` (default ``data_root()/defocus/depth``), sorted by name."""
    root = Path(root) if root is not None else data_path("defocus", "depth")
    out: list[DepthSample] = []
    nyu = root / "nyuv2"
    for d in sorted((nyu / "depth").glob("*.npy")):
        img = nyu / "rgb" / f"{d.stem}.jpg"
        if img.is_file():
            out.append(DepthSample(f"nyuv2_{d.stem}", img, d))
    syn = root / "syndof"
    for d in sorted((syn / "depth").glob("*")):
        img = syn / "image" / f"{d.stem}.png"
        if img.is_file() and d.suffix.lower() in (".dpt", ".png"):
            out.append(DepthSample(f"syndof_{d.stem}", img, d))
    return out


def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ``scale`` (fraction of the long side)."""
    h, w = shape
    f = max(1, int(round(max(h, w) * scale / 4)))  # make it on a coarse grid, then upsample (cheap)
    gh, gw = max(2, h // f + 2), max(2, w // f + 2)
    g = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), sigma=2.0, mode="wrap")
    z = ndimage.zoom(g, (h / gh, w / gw), order=1, mode="nearest", grid_mode=True)[:h, :w]
    if z.shape != (h, w):
        z = np.pad(z, ((0, h - z.shape[0]), (0, w - z.shape[1])), mode="edge")
    z = z - z.mean()
    return (z / (z.std() + 1e-12)).astype(np.float32)


def _segments(img: np.ndarray, long_side: int = 320) -> tuple[np.ndarray, float]:
    """Felzenszwalb segments of a downscaled copy: (labels at that size, downscale factor)."""
    from PIL import Image
    from skimage.segmentation import felzenszwalb

    h, w = img.shape[:2]
    f = min(1.0, long_side / max(h, w))
    small = img
    if f < 1.0:
        small = np.asarray(Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))
    labels = felzenszwalb(small, scale=150, sigma=0.8, min_size=max(20, small.shape[0] * small.shape[1] // 400))
    return labels, f


def _grow_object(labels: np.ndarray, rng: np.random.Generator, target: float, taken: np.ndarray) -> np.ndarray:
    """Grow a connected set of segments from a random seed segment until it covers ``target`` of the image."""
    n = int(labels.max()) + 1
    area = np.bincount(labels.ravel(), minlength=n).astype(np.float64) / labels.size
    # adjacency from horizontally and vertically neighbouring label pairs
    pairs = np.concatenate(
        [
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    adj = [set() for _ in range(n)]
    for a, b in np.unique(np.sort(pairs, axis=1), axis=0):
        adj[a].add(int(b))
        adj[b].add(int(a))
    free = np.bincount(labels[~taken].ravel(), minlength=n) > 0.5 * np.bincount(labels.ravel(), minlength=n)
    # seed: prefer segments away from the top border (objects rest in the lower/middle part of a photo)
    hh, _ = labels.shape
    cy = ndimage.mean(np.arange(hh)[:, None].repeat(labels.shape[1], 1), labels, index=np.arange(n)) / hh
    weight = free * (area < target * 1.5) * (0.3 + np.asarray(cy))
    if weight.sum() <= 0:
        return np.zeros(labels.shape, bool)
    seed = int(rng.choice(n, p=weight / weight.sum()))
    chosen, cover = {seed}, area[seed]
    frontier = set(adj[seed])
    while cover < target and frontier:
        cand = sorted(c for c in frontier if free[c])
        if not cand:
            break
        c = int(rng.choice(cand))
        frontier.discard(c)
        if cover + area[c] > target * 1.6:
            continue
        chosen.add(c)
        cover += area[c]
        frontier |= adj[c] - chosen
    return np.isin(labels, np.fromiter(chosen, int))


def _regularize(m: np.ndarray) -> np.ndarray:
    """Make a grown segment mask object-like: close gaps, cut thin spikes, fill holes, keep the largest part."""
    r = max(1, round(0.015 * max(m.shape)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy * yy + xx * xx <= r * r
    padded = np.pad(m, r + 1)
    padded = ndimage.binary_opening(ndimage.binary_closing(padded, disk), disk)
    out = ndimage.binary_fill_holes(padded)[r + 1 : -r - 1, r + 1 : -r - 1]
    lab, n = ndimage.label(out)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        out = lab == (int(np.argmax(sizes)) + 1)
    return out


def synthetic_depth(img: np.ndarray, rng: np.random.Generator, *, n_objects: int | None = None) -> np.ndarray:
    """Plausible scene depth (float32 HW, metres) for any sharp photo: background ramp + foreground objects.

    Background: inverse depth ramps from far (4-40 m) to 2.5-10x nearer (>= 1.2 m) along a random
    direction (70%: near at the bottom), plus low-frequency undulation. Foreground: ``n_objects``
    (default 1-3) connected groups of image segments (3-30% of the image each) placed at 0.6-3 m as
    slightly tilted planes, always in front of the background behind them. Deterministic given ``rng``.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(np.asarray(arr, np.float32) * 255), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3]
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= max(h - 1, 1)
    xx /= max(w - 1, 1)
    # background ramp in inverse depth
    if rng.random() < 0.7:
        theta = np.pi / 2 + rng.normal(0.0, 0.35)
    else:
        theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xx + np.sin(theta) * yy
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    ramp = ramp ** rng.uniform(0.6, 1.6) + 0.05 * smooth_noise((h, w), rng, rng.uniform(0.2, 0.5))
    ramp = np.clip(ramp, 0.0, 1.0)
    z_far = rng.uniform(4.0, 40.0)
    z_near = max(z_far / rng.uniform(2.5, 10.0), 1.2)  # at least a factor 2.5 of depth range (unless near 1.2 m)
    d_far, d_near = 1.0 / z_far, 1.0 / z_near
    disp = d_far + (d_near - d_far) * ramp
    # foreground objects from image segments
    labels, f = _segments(arr)
    n_obj = int(rng.integers(1, 4)) if n_objects is None else int(n_objects)
    taken = np.zeros(labels.shape, bool)
    for _ in range(n_obj):
        m = _grow_object(labels, rng, rng.uniform(0.03, 0.3), taken)
        if not m.any():
            break
        m = _regularize(m) & ~taken
        if not m.any():
            continue
        taken |= m
        if f < 1.0:  # upsample the mask smoothly, then threshold: no blocky depth edges
            zoom = (h / m.shape[0], w / m.shape[1])
            mf = ndimage.zoom(m.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest")
            mf = mf[:h, :w]
            if mf.shape != (h, w):
                mf = np.pad(mf, ((0, h - mf.shape[0]), (0, w - mf.shape[1])), mode="edge")
            mask = mf > 0.5
        else:
            mask = m
        if not mask.any():
            continue
        d_obj = 1.0 / rng.uniform(0.6, 3.0)
        tilt = rng.normal(0.0, 0.08, size=2) * d_obj
        plane = d_obj + tilt[0] * (xx - xx[mask].mean()) + tilt[1] * (yy - yy[mask].mean())
        behind = float(disp[mask].max())
        plane = np.maximum(plane, behind * 1.25)  # clearly in front of what it occludes
        disp = np.where(mask, plane, disp)
    return (1.0 / disp).astype(np.float32)


def blurred_fraction(sigma: np.ndarray, threshold: float = 1.0) -> float:
    """Fraction of pixels whose blur sigma exceeds ``threshold`` px (the 'blurred' share of a photo)."""
    return float(np.mean(np.asarray(sigma) > threshold))


def random_dof(
    depth: np.ndarray,
    rng: np.random.Generator,
    *,
    target: tuple[float, float] = (0.55, 0.85),
    max_coc_cap: float = 25.0,
    threshold: float = 1.0,
    fg_prob: float = 0.5,
    n_candidates: int = 41,
) -> dict:
    """Pick a shallow depth of field for ``depth``: {'focus_depth', 'max_coc', 'fraction', 'focus_on'}.

    A blurred fraction ``t`` is drawn from ``target``. Candidate focus distances are ``n_candidates``
    quantiles of the depth (the nearest object included); for each, the max CoC (<= ``max_coc_cap`` px)
    that makes a share ``t`` of the pixels have sigma > ``threshold`` px is computed, and the share it
    really reaches. Among the candidates that land in ``target``, one is drawn: with probability
    ``fg_prob`` from the nearest 35% of the depth distribution (a foreground object, 'fg'), else from
    the rest ('bg'); if none lands in the range, the closest one is kept. ``fraction`` is the analytic
    blurred share (the rendered map differs from it by layer quantisation only).
    """
    full = np.asarray(depth, np.float64).ravel()
    d = full[:: max(1, full.size // 40000)]  # the search works on a fixed subsample (fast on 2K images)
    coc_thr = 4.0 * threshold + 1.0  # CoC that gives sigma == threshold
    qs = np.linspace(0.0, 1.0, n_candidates)
    zf = np.quantile(d, qs)
    t = rng.uniform(*target)
    shape = np.abs(1.0 - zf[:, None] / d[None, :])  # (candidates, pixels), CoC up to a factor
    peak = shape.max(axis=1)
    qv = np.quantile(shape, 1.0 - t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(qv > 0, coc_thr / qv, np.inf)
        k = np.minimum(k, np.where(peak > 0, max_coc_cap / peak, 0.0))
    k = np.where(np.isfinite(k), k, 0.0)
    frac = np.mean(k[:, None] * shape > coc_thr, axis=1)
    err = np.where(frac < target[0], target[0] - frac, np.where(frac > target[1], frac - target[1], 0.0))
    ok = np.flatnonzero(err == 0.0)
    if ok.size:
        fg, bg = ok[qs[ok] <= 0.35], ok[qs[ok] > 0.35]
        pool = fg if (rng.random() < fg_prob and fg.size) or not bg.size else bg
        i = int(rng.choice(pool))
    else:
        i = int(np.argmin(err))
    out = {"focus_depth": float(zf[i]), "max_coc": float(k[i] * peak[i]), "focus_on": "fg" if qs[i] <= 0.35 else "bg"}
    shape_full = np.abs(1.0 - out["focus_depth"] / full)  # exact fraction on all pixels
    top = shape_full.max()
    out["fraction"] = float(np.mean(out["max_coc"] / top * shape_full > coc_thr)) if top > 0 else 0.0
    return out
