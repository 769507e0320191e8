"""Minimal private defocus renderer for training and benchmarking the defocus estimators.

``blurwise.data`` (``render_defocus``, ``synthetic_depth``) is the project's renderer; this file is a
small stand-in used when it is not importable: a synthetic scene depth (smooth background ramp plus
foreground segments), a thin-lens-like blur law ``sigma = k |1/d - 1/d_focus|`` and layered Gaussian
rendering composited back to front in linear light. ``render_pair`` picks whichever is available and
returns the defocused image with its ground-truth sigma map, at full resolution or at LR (MATLAB
bicubic downscale, sigma divided by the scale).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve (defocus happens in linear light)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Apply the sRGB transfer curve."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def synthetic_depth_private(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible scene depth (metres-like, larger = farther) for a sharp image with no depth.

    A random tilted background plane plus 1-3 foreground objects made of image segments (so depth
    edges follow image edges, as real occlusion boundaries do), each a slanted plane nearer the camera.
    """
    from skimage.segmentation import slic

    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= max(h - 1, 1)
    xx /= max(w - 1, 1)
    far = rng.uniform(4.0, 12.0)
    gy, gx = rng.uniform(-0.6, 0.6, size=2) * far
    depth = far + gy * (yy - 0.5) + gx * (xx - 0.5)
    n_seg = int(rng.integers(12, 40))
    seg = slic(img, n_segments=n_seg, compactness=10.0, start_label=0, channel_axis=-1)
    n_lab = int(seg.max()) + 1
    n_obj = int(rng.integers(1, 4))
    for _ in range(n_obj):
        k = int(rng.integers(1, max(2, n_lab // 4)))
        picks = rng.choice(n_lab, size=min(k, n_lab), replace=False)
        mask = np.isin(seg, picks)
        d0 = rng.uniform(0.8, far * 0.6)
        sy, sx = rng.uniform(-0.2, 0.2, size=2) * d0
        plane = d0 + sy * (yy - 0.5) + sx * (xx - 0.5)
        depth = np.where(mask, np.minimum(depth, plane), depth)
    return np.maximum(depth, 0.3).astype(np.float32)


def sigma_from_depth(depth: np.ndarray, focus_depth: float, max_sigma: float) -> np.ndarray:
    """Gaussian blur sigma per pixel: proportional to ``|1/d - 1/d_focus|``, the thin-lens CoC law."""
    inv = 1.0 / depth
    dev = np.abs(inv - 1.0 / focus_depth)
    return (max_sigma * dev / max(float(dev.max()), 1e-6)).astype(np.float32)


def render_layers(img: np.ndarray, depth: np.ndarray, sigma: np.ndarray, n_layers: int = 24) -> np.ndarray:
    """Layered Gaussian defocus: bin by depth, blur each layer and its alpha, composite far to near."""
    lin = srgb_to_linear(img)
    edges = np.quantile(depth, np.linspace(0, 1, n_layers + 1))
    edges[-1] += 1e-3
    idx = np.clip(np.searchsorted(edges, depth, side="right") - 1, 0, n_layers - 1)
    out = np.zeros_like(lin)
    for b in range(n_layers - 1, -1, -1):  # far to near
        m = (idx == b).astype(np.float32)
        if not m.any():
            continue
        s = float(np.median(sigma[idx == b]))
        if s > 0.05:
            a = ndimage.gaussian_filter(m, s, mode="reflect")
            c = ndimage.gaussian_filter(lin * m[..., None], (s, s, 0), mode="reflect")
        else:
            a, c = m, lin * m[..., None]
        out = c + (1.0 - a[..., None]) * out
    # Layers cover every pixel, so the nearest layers' alphas sum to ~1: no normalisation needed.
    return linear_to_srgb(out)


def render_pair(
    hr: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int = 1,
    max_sigma: float | None = None,
    depth: np.ndarray | None = None,
    n_layers: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, sigma_gt, depth) for a sharp HR image: defocus-rendered, then downscaled by ``scale``.

    With the project's renderer (``blurwise.data``: synthetic depth, random depth of field aimed at
    55-85% blurred pixels, 128-layer compositing) this is exactly the defocused-SR recipe: the
    defocused HR rounded to uint8, LR = MATLAB bicubic of it rounded to uint8, sigma = block mean of
    the HR sigma / scale. Without it, the private layered renderer above (``max_sigma`` applies only
    there). Returned sigma is in pixels of the returned image; depth is at the returned size too.
    """
    hr = np.asarray(hr, dtype=np.float32)
    h, w = hr.shape[:2]
    hr = hr[: h - h % scale, : w - w % scale]
    try:
        from blurwise.data.defocus import render_defocus
        from blurwise.data.depth import random_dof, synthetic_depth
    except ImportError:
        return _render_pair_private(hr, rng, scale=scale, max_sigma=max_sigma, depth=depth)
    if depth is None:
        depth = synthetic_depth(hr, rng)
    dof = random_dof(depth, rng)
    out, sig = render_defocus(hr, depth, focus_depth=dof["focus_depth"], max_coc=dof["max_coc"], n_layers=n_layers)
    img = np.clip(np.round(np.asarray(out, np.float32) * 255.0), 0, 255).astype(np.float32) / 255.0
    img, sig = downscale_pair(img, np.asarray(sig, np.float32), scale)
    d = np.asarray(depth, np.float32)
    if scale > 1:
        d = d.reshape(d.shape[0] // scale, scale, d.shape[1] // scale, scale).mean(axis=(1, 3))
    return img, sig, d.astype(np.float32)


def downscale_pair(img: np.ndarray, sigma: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """LR image and LR sigma from a defocused HR (float [0, 1]) and its sigma map, as routed SR sees them.

    The project's recipe when ``blurwise.data`` is present (uint8 HR, MATLAB bicubic LR rounded to
    uint8, sigma block mean / scale); else a float bicubic downscale of both.
    """
    if scale == 1:
        return img, sigma
    try:
        from blurwise.data.sr import downscale_sigma, make_sr_pair
    except ImportError:
        from blurwise.metrics.imresize import imresize

        lr = np.clip(imresize(img, scale=1.0 / scale), 0.0, 1.0).astype(np.float32)
        return lr, (imresize(sigma, scale=1.0 / scale) / scale).clip(0.0).astype(np.float32)
    u8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    lr, _ = make_sr_pair(u8, scale)
    lr = np.asarray(lr)
    lr = lr.astype(np.float32) / 255.0 if lr.dtype == np.uint8 else np.clip(lr.astype(np.float32), 0, 1)
    return lr, downscale_sigma(sigma, scale)


def _render_pair_private(
    hr: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: int,
    max_sigma: float | None,
    depth: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from blurwise.metrics.imresize import imresize

    if max_sigma is None:
        max_sigma = float(rng.uniform(1.5, 7.0))
    if depth is None:
        depth = synthetic_depth_private(hr, rng)
    focus = float(np.quantile(depth, rng.uniform(0.0, 0.6)))
    sig = sigma_from_depth(depth, focus, max_sigma)
    img = render_layers(hr, depth, sig)
    if scale > 1:
        img = np.clip(imresize(img, scale=1.0 / scale), 0.0, 1.0).astype(np.float32)
        sig = (imresize(sig, scale=1.0 / scale) / scale).clip(0.0).astype(np.float32)
        depth = imresize(depth.astype(np.float32), scale=1.0 / scale).astype(np.float32)
    return img, sig, depth
