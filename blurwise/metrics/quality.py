"""PSNR and SSIM as the super-resolution and deblurring literature computes them.

Conventions (those of the MATLAB evaluation scripts behind published SR tables):

- Images are brought to the [0, 255] scale in float64: uint8 as is, uint16 times 255/65535,
  float input is taken to be in [0, 1] and multiplied by 255.
- ``y=True`` compares the luma of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` defines it
  (16 + (65.481 R + 128.553 G + 24.966 B) / 255 on the [0, 255] scale), kept in float
  (not rounded to integers). Single-channel inputs are taken to be luma already.
- ``crop`` removes that many pixels from every border before comparing (SR: crop = scale).
- SSIM uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, only the "valid" part of
  the filtered maps (as ``filter2(..., 'valid')``), and is averaged over channels on RGB.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from blurwise.errors import InputError
from blurwise.io.image import float_pixels_problem

__all__ = ["rgb_to_y", "psnr", "ssim", "to_255"]


def to_255(img: np.ndarray) -> np.ndarray:
    """An image as float64 on the [0, 255] scale (uint8 as is, uint16 rescaled, float from [0, 1])."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) * (255.0 / 65535.0)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"cannot compare images of dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"integer images must be uint8 or uint16, got {arr.dtype}")
    problem = float_pixels_problem(arr)  # NaN, or 0-255 data in floats: a number that means nothing
    if problem:
        raise InputError(problem)
    return arr.astype(np.float64) * 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image (HWC) on the [16, 235] scale, float64.

    Same coefficients as MATLAB's ``rgb2ycbcr`` (and BasicSR's ``bgr2ycbcr(..., y_only=True)``),
    so PSNR/SSIM figures are comparable with published SR tables. Accepts uint8, uint16 or float
    in [0, 1]; single-channel input (HW or HW1) is returned unchanged on the [0, 255] scale.
    """
    x = to_255(img)
    if x.ndim == 2:
        return x
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise InputError(f"rgb_to_y needs an HW or HWC image with 1, 3 or 4 channels, got shape {x.shape}")
    if x.shape[2] == 1:
        return x[:, :, 0]
    return 16.0 + (65.481 * x[:, :, 0] + 128.553 * x[:, :, 1] + 24.966 * x[:, :, 2]) / 255.0


def _prepare(a: np.ndarray, b: np.ndarray, crop: int, y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 [0, 255] HWC (HW1 for luma), same shape, borders cropped."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    channels = [x.shape[2] if x.ndim == 3 else 1 for x in (a_arr, b_arr)]
    if a_arr.shape[:2] != b_arr.shape[:2] or channels[0] != channels[1]:  # RGB luma vs gray: on other scales
        raise InputError(f"images differ in shape: {a_arr.shape} vs {b_arr.shape}")
    if a_arr.ndim not in (2, 3) or a_arr.shape[0] == 0 or a_arr.shape[1] == 0:
        raise InputError(f"need non-empty HW or HWC images, got shape {a_arr.shape}")
    if y:
        fa, fb = rgb_to_y(a_arr)[:, :, None], rgb_to_y(b_arr)[:, :, None]
    else:
        fa, fb = to_255(a_arr), to_255(b_arr)
        if fa.ndim == 2:
            fa, fb = fa[:, :, None], fb[:, :, None]
        if fa.shape[2] == 4:  # alpha is not part of image quality
            fa, fb = fa[:, :, :3], fb[:, :, :3]
    if isinstance(crop, bool) or not float(crop).is_integer() or crop < 0:
        raise InputError(f"crop is a number of border pixels (an integer >= 0), not {crop!r}")
    crop = int(crop)
    if crop:
        if 2 * crop >= fa.shape[0] or 2 * crop >= fa.shape[1]:
            raise InputError(f"border crop {crop} leaves nothing of a {fa.shape[0]}x{fa.shape[1]} image")
        fa, fb = fa[crop:-crop, crop:-crop], fb[crop:-crop, crop:-crop]
    return fa, fb


def psnr(a: np.ndarray, b: np.ndarray, *, crop: int = 0, y: bool = True, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images (``inf`` when they are identical).

    ``y=True`` compares BT.601 luma (the SR convention); ``y=False`` all colour channels (the
    deblurring convention). ``crop`` pixels are removed from each border first. The MSE is taken
    on the [0, 255] scale in float64, against a peak of ``data_range`` on that scale too (255; unlike
    scikit-image's, whatever the input dtype).
    """
    if not (math.isfinite(data_range) and data_range > 0):
        raise InputError(f"data_range is the peak on the 0-255 scale (> 0), not {data_range!r}")
    fa, fb = _prepare(a, b, crop, y)
    mse = float(np.mean((fa - fb) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (normalised to sum 1)."""
    r = (size - 1) / 2.0
    g = np.exp(-((np.arange(size) - r) ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable correlation with ``win`` keeping only the 'valid' part (no border handling)."""
    r = len(win) // 2
    out = correlate1d(correlate1d(x, win, axis=0, mode="constant"), win, axis=1, mode="constant")
    return out[r:-r, r:-r]


def _ssim_channel(a: np.ndarray, b: np.ndarray, win: np.ndarray, data_range: float) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, win), _filter_valid(b, win)
    saa = _filter_valid(a * a, win) - mu_a**2
    sbb = _filter_valid(b * b, win) - mu_b**2
    sab = _filter_valid(a * b, win) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, *, crop: int = 0, y: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) exactly as the SR literature's MATLAB code computes it.

    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, on the [0, 255] scale in float64,
    mean over the valid part of the SSIM map; on RGB (``y=False``) the mean over channels.
    """
    fa, fb = _prepare(a, b, crop, y)
    if fa.shape[0] < 11 or fa.shape[1] < 11:
        raise InputError(f"SSIM needs at least 11x11 pixels after cropping, got {fa.shape[0]}x{fa.shape[1]}")
    win = _gaussian_window()
    vals = [_ssim_channel(fa[:, :, c], fb[:, :, c], win, 255.0) for c in range(fa.shape[2])]
    return float(np.mean(vals))
