"""Read a depth (or disparity) map for the defocus estimator: PNG, TIFF, NPY, Sintel ``.dpt``, HEIC.

Values are returned as stored (float32 HW; 8/16-bit images as their integer values), since only the
defocus module knows whether it wants metres, disparity or relative depth. Missing values (NaN/Inf)
are filled from the nearest valid pixel; a map that is all missing, an RGB image passed as depth,
or a map whose aspect ratio differs from the image's by more than 2% is refused with one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from blurwise.errors import InputError
from blurwise.io.image import READ_EXTS

ASPECT_TOLERANCE = 0.02
# What a folder of depth maps is searched for, by name, in this order of preference: the lossless formats first,
# then every other image format the readers take.
DEPTH_EXTS = tuple(dict.fromkeys((".npy", ".png", ".tif", ".tiff", ".dpt", ".pfm", *READ_EXTS)))
_DPT_TAG = 202021.25


def _read_dpt(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) < 12 or not np.isclose(np.frombuffer(raw[:4], "<f4")[0], _DPT_TAG):
        raise InputError(f"not a Sintel .dpt depth file: {path}")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(raw) < 12 + 4 * w * h:
        raise InputError(f"truncated .dpt depth file: {path}")
    return np.frombuffer(raw[12 : 12 + 4 * w * h], "<f4").reshape(h, w).copy()


def _load(path: Path) -> np.ndarray:
    ext = path.suffix.lower()
    if ext == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"cannot read depth {path}: {str(exc).splitlines()[0]}") from None
    if ext == ".dpt":
        return _read_dpt(path)
    if ext in (".heic", ".heif", ".hif"):  # the depth map embedded in a portrait photo (needs pillow-heif)
        from blurwise.defocus.depth import read_heif_depth

        return read_heif_depth(path)
    if ext in (".tif", ".tiff"):
        import tifffile

        try:
            return tifffile.imread(str(path), key=0)
        except Exception as exc:
            raise InputError(f"cannot read depth TIFF {path}: {str(exc).splitlines()[0]}") from None
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGB")
            return np.asarray(im)
    except UnidentifiedImageError:
        raise InputError(f"depth map is not an image, .npy or .dpt file: {path}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"corrupt depth map ({str(exc).splitlines()[0]}): {path}") from None


def _to_plane(arr: np.ndarray, path: Path | str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # drop alpha
            arr = arr[:, :, : arr.shape[2] - 1]
        if arr.shape[2] == 3:
            if not (np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2])):
                raise InputError(
                    f"depth map has 3 distinct channels (an RGB image?); give a single-channel depth: {path}"
                )
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise InputError(f"depth map must be 2-D (HxW), got shape {arr.shape}: {path}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"zero-size depth map: {path}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"depth map has non-numeric type {arr.dtype}: {path}")
    return arr.astype(np.float32)


def _fill_missing(d: np.ndarray, path: Path | str) -> np.ndarray:
    bad = ~np.isfinite(d)
    if not bad.any():
        return d
    if bad.all():
        raise InputError(f"depth map has no valid values (all NaN/Inf): {path}")
    from scipy import ndimage

    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return d[tuple(idx)]


def resize_depth(d: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float HW map to ``shape`` = (height, width)."""
    h, w = int(shape[0]), int(shape[1])
    if d.shape == (h, w):
        return d
    from PIL import Image as PILImage

    return np.asarray(PILImage.fromarray(d.astype(np.float32), mode="F").resize((w, h), PILImage.Resampling.BILINEAR))


def depth_plane(
    arr: np.ndarray, shape: tuple[int, int] | None = None, source: Path | str = "depth array"
) -> np.ndarray:
    """A depth map given as an array, checked and made as :func:`read_depth` makes a file's: float32 HW,
    filled where missing, resized (bilinear) to ``shape`` unless its aspect ratio is off by more than 2%
    (:class:`InputError`, naming ``source``: a map of another image)."""
    d = _fill_missing(_to_plane(arr, source), source)
    if shape is not None:
        h, w = int(shape[0]), int(shape[1])
        ratio = (d.shape[1] / d.shape[0]) / (w / h)
        if abs(ratio - 1.0) > ASPECT_TOLERANCE:
            raise InputError(
                f"depth map {d.shape[1]}x{d.shape[0]} does not match the image {w}x{h} "
                f"(aspect ratios differ by {abs(ratio - 1) * 100:.0f}%): {source}"
            )
        d = resize_depth(d, (h, w))
    return np.ascontiguousarray(d, dtype=np.float32)


def read_depth(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a depth map as float32 HW, filled where missing, and resized (bilinear) to ``shape``.

    ``shape`` is the (height, width) of the image it belongs to; maps of another resolution are
    resized, but an aspect ratio off by more than 2% is an :class:`InputError` (wrong file).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"depth file not found: {path}")
    if path.is_dir() or path.stat().st_size == 0:
        raise InputError(f"depth file is empty or a folder: {path}")
    return depth_plane(_load(path), shape, path)
