"""MATLAB-compatible bicubic ``imresize`` (antialiased when downscaling).

Every low-resolution image blurwise makes goes through this function, so that PSNR figures
match the super-resolution literature (which used MATLAB's ``imresize(img, 1/s, 'bicubic')``).
Resizing is separable: one weight matrix per axis, applied as a matrix product.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["bicubic_phase_taps", "imresize", "imresize_torch", "resize_weights", "upscale_bicubic_torch"]


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic kernel; a = -0.5 as in MATLAB (-0.75: PyTorch's bicubic)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    inner = (a + 2) * ax3 - (a + 3) * ax2 + 1
    outer = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return inner * (ax <= 1) + outer * ((ax > 1) & (ax <= 2))


def _fold_symmetric(idx: np.ndarray, n: int) -> np.ndarray:
    """0-based indices into an axis of length ``n`` folded back by MATLAB's symmetric border rule: the axis
    mirrored including its edge pixel, [0..n-1, n-1..0] repeated (also for axes shorter than the reach)."""
    aux = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    return aux[np.mod(idx, 2 * n)]


@lru_cache(maxsize=64)
def resize_weights(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix that resizes one axis exactly as MATLAB does."""
    kernel_width = 4.0
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # input-space coordinate of each output pixel
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if antialias else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    idx = _fold_symmetric(idx.astype(np.int64) - 1, in_len)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), p)
    np.add.at(mat, (rows, idx.ravel()), w.ravel())
    return mat


def imresize(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Resize an HW or HWC image like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Give either ``scale`` (e.g. 1/4 to make an x4 LR image) or ``size`` = (height, width).
    uint8 input returns uint8 (rounded, as MATLAB does); float input returns float64 unclipped.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"imresize needs a non-empty HW or HWC array, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if oh < 1 or ow < 1:
            raise ValueError(f"imresize needs an output size of at least 1x1, got {size}")
        sh, sw = oh / h, ow / w
    else:
        sh = sw = float(scale)  # type: ignore[arg-type]
        if not (math.isfinite(sh) and sh > 0):
            raise ValueError(f"imresize needs a positive scale, got {scale}")
        oh, ow = int(math.ceil(h * sh)), int(math.ceil(w * sw))
    is_uint8 = arr.dtype == np.uint8
    is_uint16 = arr.dtype == np.uint16
    x = arr.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    # MATLAB resizes the dimension with the smaller scale first.
    order = (0, 1) if sh <= sw else (1, 0)
    for dim in order:
        if dim == 0:
            m = resize_weights(h, oh, sh)
            x = np.tensordot(m, x, axes=(1, 0))
        else:
            m = resize_weights(w, ow, sw)
            x = np.tensordot(x, m, axes=(1, 1)).transpose(0, 2, 1)
    if squeeze:
        x = x[:, :, 0]
    if is_uint8:
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    if is_uint16:
        return np.clip(np.round(x), 0, 65535).astype(np.uint16)
    return x


def imresize_torch(x, scale: float | None = None, size: tuple[int, int] | None = None):  # noqa: ANN001, ANN201
    """Batched torch version of :func:`imresize` for NCHW (or CHW / HW) tensors on any device.

    Same weights as the numpy version (one matrix per axis, MATLAB's border rule and antialias),
    applied as two matrix products, so a batch of training crops can be degraded on the GPU.
    Float tensors stay float (computed in their dtype, float64 for float64); uint8 tensors are
    computed in float64 and rounded back to uint8, exactly like the numpy version.
    """
    import torch

    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"imresize_torch needs a non-empty (..., H, W) tensor, got {getattr(x, 'shape', type(x))}")
    h, w = x.shape[-2:]
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        sh, sw = oh / h, ow / w
    else:
        sh = sw = float(scale)  # type: ignore[arg-type]
        oh, ow = int(math.ceil(h * sh)), int(math.ceil(w * sw))
    is_int = not x.is_floating_point()
    if is_int and x.dtype != torch.uint8:
        raise ValueError(f"imresize_torch supports float and uint8 tensors, not {x.dtype}")
    dtype = torch.float64 if is_int else x.dtype
    y = x.to(dtype)
    mh = torch.from_numpy(resize_weights(h, oh, sh)).to(device=x.device, dtype=dtype)
    mw = torch.from_numpy(resize_weights(w, ow, sw)).to(device=x.device, dtype=dtype)
    if sh <= sw:  # same axis order as MATLAB (smaller scale first)
        y = torch.matmul(mh, y)
        y = torch.matmul(y, mw.T)
    else:
        y = torch.matmul(y, mw.T)
        y = torch.matmul(mh, y)
    if is_int:
        return y.round().clamp(0, 255).to(torch.uint8)
    return y


def bicubic_phase_taps(scale: int, a: float = -0.5):  # noqa: ANN201
    """Bicubic upsampling by an integer ``scale`` as LR filters, one per output sub-pixel: a (s*s, 1, 5, 5)
    float64 tensor for a grouped conv followed by a pixel shuffle. ``a`` = -0.5 is MATLAB's kernel, -0.75
    PyTorch's ``F.interpolate(mode="bicubic")``; the border rule is the caller's padding (2 px).

    Upsampling this way runs at LR resolution instead of filtering s*s times as many HR pixels.
    """
    import torch

    rows = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5  # source offset of sub-pixel p from its LR pixel
        fl = math.floor(d)
        t = d - fl
        wts = _cubic(np.array([1 + t, t, 1 - t, 2 - t]), a)  # LR taps fl-1 .. fl+2, window -2 .. 2
        for j, wt in enumerate(wts.tolist()):
            rows[p, fl + 1 + j] += wt
    taps = rows[:, None, :, None] * rows[None, :, None, :]  # (py, px, 5, 5): outer product per phase
    return taps.reshape(scale * scale, 1, 5, 5)


def upscale_bicubic_torch(x, scale: int):  # noqa: ANN001, ANN201
    """MATLAB's ``imresize(x, scale, 'bicubic')`` for an integer ``scale`` >= 1 on NCHW float tensors: the
    numbers of :func:`imresize` (to float rounding), as LR phase filters and a pixel shuffle, several times
    faster than the dense matrix products on large images (the routed SR's bicubic route)."""
    import torch
    import torch.nn.functional as F

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point() or min(x.shape[-2:]) == 0:
        raise ValueError(f"upscale_bicubic_torch needs a non-empty float NCHW tensor, got {getattr(x, 'shape', x)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"upscale_bicubic_torch needs an integer scale >= 1, got {scale}")
    s, c = int(scale), x.shape[1]
    if s == 1:
        return x.clone()
    taps = bicubic_phase_taps(s).to(device=x.device, dtype=x.dtype).repeat(c, 1, 1, 1)
    iy, ix = (torch.from_numpy(_fold_symmetric(np.arange(-2, n + 2), n)).to(x.device) for n in x.shape[-2:])
    padded = x[..., iy[:, None], ix[None, :]]
    return F.pixel_shuffle(F.conv2d(padded, taps, groups=c), s)
