"""Edge-based sparse defocus estimate (Zhuo & Sim, Pattern Recognition 2011), vectorised.

At an edge, the image is a step blurred by an unknown Gaussian ``sigma``. Re-blurring with a known
Gaussian ``sigma0`` lowers the peak gradient magnitude by ``R = sqrt(sigma^2 + sigma0^2) / sigma``, so
``sigma = sigma0 / sqrt(R^2 - 1)``. We measure gradients with Gaussian derivatives at scale ``s1``
(noise robustness) and at ``s2 = sqrt(s1^2 + sigma0^2)`` (the re-blurred image), which gives the
same law with the derivative scale accounted for exactly::

    R = |grad_s1| / |grad_s2|,   sigma^2 = (s2^2 - R^2 s1^2) / (R^2 - 1)

Edges are Canny's (gradient at ``s1``, non-maximum suppression along the quantised gradient
direction, hysteresis). The peak magnitudes are read with log-parabolic interpolation across the
edge, which is exact for a Gaussian-blurred straight step wherever its centre falls between pixels.
Two re-blur scales can be combined (the larger takes over where the blur exceeds it) to cover sigma
from a fraction of a pixel up to ~10 px. Sparse estimates are cleaned with a windowed
median or a joint bilateral filter over the edge pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Neighbour offsets (dy, dx) along the 4 quantised gradient directions: 0, 45, 90, 135 degrees.
_DIRS = np.array([(0, 1), (1, 1), (1, 0), (1, -1)], dtype=np.int64)


@dataclass
class EdgeEstimate:
    """Sparse defocus estimate at edge pixels (image resolution).

    ``sigma`` holds the Gaussian blur in px at edge pixels and NaN elsewhere; ``mask`` marks the edge
    pixels; ``weight`` is a confidence (edge contrast, 0 off edges); ``magnitude`` the gradient
    magnitude at scale ``s1`` everywhere (reused by callers, e.g. as a texture cue).
    """

    sigma: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    magnitude: np.ndarray

    @property
    def count(self) -> int:
        """Number of edge pixels with an estimate."""
        return int(self.mask.sum())


def to_gray(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an HWC/HW float image in [0, 1], as float32 HW (what the estimate works on)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0]
    if img.ndim == 3 and img.shape[2] >= 3:
        return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)
    raise ValueError(f"expected an HW or HWC image, got shape {img.shape}")


def gaussian_gradient(gray: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(gy, gx): Gaussian-derivative gradients of ``gray`` at ``scale`` px (reflect borders)."""
    gy = ndimage.gaussian_filter(gray, scale, order=(1, 0), mode="nearest", truncate=3.5)
    gx = ndimage.gaussian_filter(gray, scale, order=(0, 1), mode="nearest", truncate=3.5)
    return gy, gx


def _direction_index(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Quantise the gradient angle to 0/45/90/135 degrees (index into ``_DIRS``)."""
    ang = np.arctan2(gy, gx)  # radians in (-pi, pi]
    return (np.round(ang / (np.pi / 4)).astype(np.int64) % 4).astype(np.int8)


def _neighbours(a: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``a`` one step before/after each pixel along direction ``d`` (edge-replicated)."""
    h, w = a.shape
    p = np.pad(a, 1, mode="edge")
    yy, xx = np.mgrid[0:h, 0:w]
    dy = _DIRS[d.astype(np.int64), 0]
    dx = _DIRS[d.astype(np.int64), 1]
    before = p[yy + 1 - dy, xx + 1 - dx]
    after = p[yy + 1 + dy, xx + 1 + dx]
    return before, after


def _peak_log_parabola(before: np.ndarray, centre: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Peak of the parabola through the logs of three samples (exact for a sampled Gaussian)."""
    eps = 1e-12
    a = np.log(np.maximum(before, eps))
    b = np.log(np.maximum(centre, eps))
    c = np.log(np.maximum(after, eps))
    curv = 2.0 * b - a - c
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(curv > 1e-9, (c - a) ** 2 / (8.0 * curv), 0.0)
    # NMS guarantees the vertex lies within half a pixel; cap the correction accordingly.
    corr = np.minimum(corr, np.abs(c - a) / 4.0)
    return np.exp(b + corr)


def canny_edges(
    magnitude: np.ndarray,
    direction: np.ndarray,
    *,
    low: float,
    high: float,
    border: int = 2,
) -> np.ndarray:
    """Canny edges: non-maximum suppression along ``direction`` plus hysteresis on ``magnitude``."""
    before, after = _neighbours(magnitude, direction)
    nms = (magnitude >= before) & (magnitude > after) & (magnitude > low)
    if border > 0:
        nms[:border] = nms[-border:] = False
        nms[:, :border] = nms[:, -border:] = False
    if not nms.any():
        return nms
    labels, n = ndimage.label(nms, structure=np.ones((3, 3), dtype=bool))
    strong = np.zeros(n + 1, dtype=bool)
    strong[np.unique(labels[nms & (magnitude > high)])] = True
    strong[0] = False
    return strong[labels]


def _sigma_from_ratio(r: np.ndarray, s1: float, s2: float, sigma_max: float) -> np.ndarray:
    """Invert ``R = sqrt((sigma^2 + s2^2) / (sigma^2 + s1^2))`` for sigma (clipped to [0, sigma_max])."""
    r2 = r.astype(np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        s2sq = (s2 * s2 - r2 * s1 * s1) / (r2 - 1.0)
    s2sq = np.where(r2 <= 1.0 + 1e-9, sigma_max**2, s2sq)
    return np.sqrt(np.clip(s2sq, 0.0, sigma_max**2))


def _gather_windows(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """(n, (2r+1)^2) values of the windows centred at (ys, xs); NaN outside the image."""
    p = np.pad(values, radius, mode="constant", constant_values=np.nan)
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    return p[ys[:, None] + radius + oy.ravel()[None], xs[:, None] + radius + ox.ravel()[None]]


def clean_sparse(
    sigma: np.ndarray,
    mask: np.ndarray,
    *,
    method: str = "median",
    radius: int = 3,
    guide: np.ndarray | None = None,
    range_sigma: float = 0.1,
) -> np.ndarray:
    """Remove outliers from sparse estimates: windowed median or joint bilateral over edge pixels only.

    ``median`` replaces each estimate by the median of the estimates within ``radius`` px (a sparse
    median filter); ``bilateral`` by a spatial x range weighted mean, the range term on ``guide``
    intensity (Zhuo & Sim's choice), so estimates across an intensity edge do not mix.
    """
    if method == "none" or not mask.any():
        return sigma
    ys, xs = np.nonzero(mask)
    vals = np.where(mask, sigma, np.nan).astype(np.float32)
    win = _gather_windows(vals, ys, xs, radius)
    out = sigma.copy()
    if method == "median":
        # NaN sort last: the median index depends on the number of valid entries per row.
        srt = np.sort(win, axis=1)
        n = np.sum(~np.isnan(win), axis=1)
        lo = srt[np.arange(len(ys)), (n - 1) // 2]
        hi = srt[np.arange(len(ys)), n // 2]
        out[ys, xs] = 0.5 * (lo + hi)
    elif method == "bilateral":
        if guide is None:
            raise ValueError("bilateral clean-up needs a guide image")
        gwin = _gather_windows(guide.astype(np.float32), ys, xs, radius)
        off = np.arange(-radius, radius + 1)
        d2 = (off[:, None] ** 2 + off[None, :] ** 2).ravel().astype(np.float32)
        w = np.exp(-d2 / (2.0 * (radius / 2.0) ** 2))[None] * np.exp(
            -((gwin - guide[ys, xs][:, None]) ** 2) / (2.0 * range_sigma**2)
        )
        w = np.where(np.isnan(win), 0.0, w)
        out[ys, xs] = np.nansum(w * np.nan_to_num(win), axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    else:
        raise ValueError(f"unknown clean-up {method!r} (median, bilateral, none)")
    return out


def edge_defocus(
    image: np.ndarray,
    *,
    sigma0: float | tuple[float, ...] = (0.7, 2.0),
    s1: float = 0.7,
    low: float = 0.01,
    high: float = 0.025,
    sigma_max: float = 12.0,
    clean: str = "median",
    clean_radius: int = 3,
) -> EdgeEstimate:
    """Sparse defocus sigma (px) at Canny edges of ``image`` (HWC/HW float in [0, 1]).

    ``sigma0`` is the re-blur scale, or several: a small one resolves sub-pixel blur, a larger one
    takes over where the blur exceeds it (better precision for large blur). ``low``/``high``
    are Canny's hysteresis thresholds on the gradient magnitude at scale ``s1`` (intensity per
    px). Returns an :class:`EdgeEstimate` (NaN off the edges).
    """
    gray = to_gray(image)
    gy, gx = gaussian_gradient(gray, s1)
    m1 = np.hypot(gy, gx)
    direction = _direction_index(gy, gx)
    edges = canny_edges(m1, direction, low=low, high=high)
    sig = np.full(gray.shape, np.nan, dtype=np.float32)
    weight = np.zeros(gray.shape, dtype=np.float32)
    if not edges.any():
        return EdgeEstimate(sig, edges, weight, m1)
    ys, xs = np.nonzero(edges)
    d = direction[ys, xs].astype(np.int64)
    dy, dx = _DIRS[d, 0], _DIRS[d, 1]
    h, w = gray.shape

    def peak(m: np.ndarray) -> np.ndarray:
        # NMS border keeps ys +- 1 and xs +- 1 inside the image.
        b = m[ys - dy, np.clip(xs - dx, 0, w - 1)]
        a = m[ys + dy, np.clip(xs + dx, 0, w - 1)]
        return _peak_log_parabola(b, m[ys, xs], a)

    p1 = peak(m1)
    sigma0s = sorted((float(sigma0),) if np.isscalar(sigma0) else tuple(float(v) for v in sigma0))
    ests = []
    for s0 in sigma0s:
        s2 = float(np.hypot(s1, s0))
        g2y, g2x = gaussian_gradient(gray, s2)
        p2 = peak(np.hypot(g2y, g2x))
        ests.append(_sigma_from_ratio(p1 / np.maximum(p2, 1e-12), s1, s2, sigma_max))
    # Multi-scale: each larger re-blur takes over where the previous estimate exceeds its own sigma0
    # (a small re-blur resolves sub-pixel blur, a large one is precise for large blur; the large one
    # mixes in neighbouring structures, so it is used only where the blur is large anyway).
    est = ests[0]
    for s0, nxt in zip(sigma0s[1:], ests[1:], strict=False):
        t = np.clip((est - 0.75 * s0) / (0.5 * s0), 0.0, 1.0)
        est = (1.0 - t) * est + t * nxt
    sig[ys, xs] = est.astype(np.float32)
    # Contrast of the step: peak gradient x sqrt(2 pi) x total blur scale.
    weight[ys, xs] = (p1 * np.sqrt(2 * np.pi) * np.sqrt(sig[ys, xs] ** 2 + s1**2)).astype(np.float32)
    sig = clean_sparse(sig, edges, method=clean, radius=clean_radius, guide=gray)
    return EdgeEstimate(sig, edges, weight, m1)
