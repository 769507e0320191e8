"""Transfer curves: sRGB <-> linear light, and the gamma-2.2 camera-response approximation.

Blur happens in linear light (photons add up), while images are stored gamma-encoded; every
degradation here decodes first, blurs, and encodes again.
"""

from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Decode sRGB values in [0, 1] to linear light (IEC 61966-2-1 piecewise curve), float32."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Encode linear light in [0, 1] to sRGB values (inverse of :func:`srgb_to_linear`), float32."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def gamma_decode(x: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """``x ** gamma``: the inverse camera response used to make the GoPro blur set (gamma 2.2)."""
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) ** np.float32(gamma)


def gamma_encode(x: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """``x ** (1 / gamma)``: back from linear light to the camera's encoded values."""
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) ** np.float32(1.0 / gamma)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8/uint16/float HW or HWC image -> float32 HWC in [0, 1] (gray stays one channel)."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    else:
        out = arr.astype(np.float32, copy=False)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding (the convention for every stored 8-bit image)."""
    return np.clip(np.round(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
