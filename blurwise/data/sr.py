"""Super-resolution pairs and the augmentation shared by every training dataset.

Convention: the HR image is cropped to a multiple of the scale (top-left kept), the LR image is
``imresize(hr, 1 / scale)`` with the project's MATLAB-compatible bicubic, and both are stored as
8-bit (the LR is rounded to uint8, as MATLAB and every published SR benchmark did). A blur map
goes to LR by area averaging over each ``scale`` x ``scale`` block, divided by ``scale`` (sigma in
LR pixels).
"""

from __future__ import annotations

import numpy as np

from blurwise.data.color import to_uint8
from blurwise.errors import InputError, UsageError

SCALES = (2, 3, 4)


def mod_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    """Crop H and W down to multiples of ``multiple`` (keeps the top-left corner)."""
    if multiple < 1:
        raise UsageError("multiple must be >= 1")
    h, w = img.shape[:2]
    hh, ww = h - h % multiple, w - w % multiple
    if hh == 0 or ww == 0:
        raise InputError(f"image {h}x{w} is smaller than the scale {multiple}")
    return img[:hh, :ww]


def make_sr_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(lr, hr) uint8 HWC: HR mod-cropped to the scale, LR = MATLAB bicubic downscale, rounded to uint8.

    Float input in [0, 1] is rounded to uint8 first, so the pair is exactly what an 8-bit file pair
    on disk would give.
    """
    from blurwise.metrics.imresize import imresize

    if int(scale) != scale or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale}")
    arr = np.asarray(hr)
    if arr.dtype != np.uint8:
        arr = to_uint8(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = mod_crop(arr, int(scale))
    lr = imresize(arr, scale=1.0 / scale)
    if lr.ndim == 2:
        lr = lr[:, :, None]
    return lr, arr


def downscale_sigma(sigma: np.ndarray, scale: int) -> np.ndarray:
    """Blur map (HR px) -> LR px: mean over each ``scale`` x ``scale`` block, divided by ``scale``; float32.

    H and W are mod-cropped to the scale first (as the HR image is).
    """
    s = mod_crop(np.asarray(sigma, np.float32), int(scale))
    h, w = s.shape
    return (s.reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3)) / scale).astype(np.float32)


def random_crop(
    arrays: list[np.ndarray], size: int, rng: np.random.Generator, factors: list[int] | None = None
) -> list[np.ndarray]:
    """Crop aligned patches from arrays whose sizes are integer multiples of the first one's (e.g. LR, HR).

    ``factors[i]`` is array i's size relative to the coarsest grid (LR 1, HR ``scale``; default all 1);
    ``size`` is the patch size on that coarsest grid, so array i gets a ``size * factors[i]`` patch and
    every patch covers the same scene region.
    """
    factors = [1] * len(arrays) if factors is None else list(factors)
    hb, wb = arrays[0].shape[0] // factors[0], arrays[0].shape[1] // factors[0]
    if hb < size or wb < size:
        raise InputError(f"image of {hb}x{wb} (coarse grid) is smaller than the patch {size}")
    y = int(rng.integers(0, hb - size + 1))
    x = int(rng.integers(0, wb - size + 1))
    return [a[y * f : (y + size) * f, x * f : (x + size) * f] for a, f in zip(arrays, factors, strict=True)]


def augment(arrays: list[np.ndarray], rng: np.random.Generator, *, flips: bool = True, rot90: bool = True) -> list:
    """Apply the same random horizontal flip, vertical flip and 90-degree rotation to HW/HWC arrays."""
    hflip = flips and rng.random() < 0.5
    vflip = flips and rng.random() < 0.5
    rot = rot90 and rng.random() < 0.5
    out = []
    for a in arrays:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if rot:
            a = np.swapaxes(a, 0, 1)
        out.append(np.ascontiguousarray(a))
    return out
