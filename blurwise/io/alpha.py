"""Alpha handling for models: split it off before the network, resize it on its own, re-attach it.

Restoration networks are trained on RGB; feeding them alpha (or premultiplied colour) breaks them.
So the alpha plane goes around the model: it is resized with bicubic interpolation (MATLAB
``imresize`` for moderate sizes; Pillow's bicubic, the same a = -0.5 kernel, for large outputs where
the dense resize matrices would cost too much) and clipped back to [0, 1].
"""

from __future__ import annotations

import numpy as np

_IMRESIZE_MAX_SIDE = 2048  # beyond this output side, use Pillow's bicubic (same kernel) for speed


def split_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an HW / HWC array (C = 1..4) into (colour HWC with C = 1 or 3, alpha HW or None)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr[:, :, None], None
    c = arr.shape[2]
    if c == 2:
        return arr[:, :, :1], arr[:, :, 1]
    if c == 4:
        return arr[:, :, :3], arr[:, :, 3]
    if c in (1, 3):
        return arr, None
    raise ValueError(f"expected 1 to 4 channels, got {c}")


def resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float HW plane to ``size`` = (height, width), clipped to [0, 1], float32."""
    plane = np.asarray(plane, dtype=np.float32)
    h, w = int(size[0]), int(size[1])
    if plane.shape == (h, w):
        return plane
    if max(h, w) <= _IMRESIZE_MAX_SIDE:
        from blurwise.metrics.imresize import imresize

        out = imresize(plane.astype(np.float64), size=(h, w))
    else:
        from PIL import Image as PILImage

        out = np.asarray(PILImage.fromarray(plane, mode="F").resize((w, h), PILImage.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def merge_alpha(pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Re-attach ``alpha`` to ``pixels`` (HWC float), resizing alpha to the pixels' size if needed.

    Returns HWC float32 with C + 1 channels (or ``pixels`` unchanged when alpha is None).
    """
    if alpha is None:
        return pixels
    a = resize_plane(alpha, pixels.shape[:2])
    return np.concatenate([np.asarray(pixels, dtype=np.float32), a[:, :, None]], axis=2)
