"""Depth inputs for the defocus map: files (PNG 8/16-bit, TIFF, NPY, HEIC/HEIF portrait depth) or arrays.

Everything ends in :func:`prepare_depth`, which checks that the map really is a depth map for this
image (one channel, some finite values, the image's aspect ratio within a tolerance), fills holes and
resizes it to the image. Files are read with ``blurwise.io.read_depth`` when that exists, else with
the small loader here; HEIC/HEIF needs the optional ``pillow-heif`` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blurwise.errors import InputError, NotAvailableError

HEIF_SUFFIXES = (".heic", ".heif", ".hif", ".avif")


def read_heif_depth(path: str | Path) -> np.ndarray:
    """The depth (or disparity) map embedded in a HEIC/HEIF photo, float32 HW, as stored.

    Apple portrait photos store disparity-like maps (near = bright): pass ``depth_kind="disparity"``.
    """
    try:
        import pillow_heif
    except ImportError:
        raise NotAvailableError("reading depth from HEIC/HEIF needs the optional 'pillow-heif' package") from None
    try:
        heif = pillow_heif.open_heif(str(path), convert_hdr_to_8bit=False)
    except Exception as exc:  # pillow_heif raises several types for unreadable files
        raise InputError(f"cannot read {Path(path).name}: {str(exc).splitlines()[0]}") from None
    try:
        primary = heif[getattr(heif, "primary_index", 0)]
    except Exception:
        primary = heif
    depths = list(getattr(primary, "depth_image_list", []) or [])
    if not depths:
        raise InputError(f"{Path(path).name} has no embedded depth map")
    d = depths[0]
    try:
        arr = np.asarray(d)
    except Exception:
        arr = np.asarray(d.to_pillow())
    return np.asarray(arr, dtype=np.float32)


def _read_depth_file(path: Path) -> np.ndarray:
    """Private minimal loader (used when ``blurwise.io.read_depth`` is not available)."""
    suf = path.suffix.lower()
    try:
        if suf == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        if suf in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path), dtype=np.float32)
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.float32)
            return np.asarray(im, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read depth map {path.name}: {str(exc).splitlines()[0]}") from None


def read_depth_any(path: str | Path) -> np.ndarray:
    """Read a depth map from a file (any supported format), without resizing; float32, HW or HWC."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"depth map not found: {p}")
    if p.suffix.lower() in HEIF_SUFFIXES:
        return read_heif_depth(p)
    try:
        from blurwise.io import read_depth  # helper "ux"'s loader (checks formats, bit depths)
    except ImportError:
        return _read_depth_file(p)
    return np.asarray(read_depth(p), dtype=np.float32)


def _to_single_channel(d: np.ndarray, name: str) -> np.ndarray:
    if d.ndim == 2:
        return d
    if d.ndim == 3 and d.shape[2] == 1:
        return d[..., 0]
    if d.ndim == 3 and d.shape[2] in (2, 3, 4):
        c = d[..., :3] if d.shape[2] >= 3 else d[..., :1]
        if c.shape[2] == 3 and not (np.allclose(c[..., 0], c[..., 1]) and np.allclose(c[..., 0], c[..., 2])):
            raise InputError(
                f"{name} has {d.shape[2]} colour channels (an RGB image?); expected a single-channel depth map"
            )
        return c[..., 0]
    raise InputError(f"{name} has shape {d.shape}; expected a single-channel HxW depth map")


def prepare_depth(
    depth: np.ndarray | str | Path,
    shape: tuple[int, int],
    *,
    aspect_tolerance: float = 0.02,
) -> np.ndarray:
    """A validated float32 HW depth map at ``shape`` (the image's height, width).

    Raises InputError for an RGB image given as depth, a map with no finite values, or an aspect
    ratio differing from the image's by more than ``aspect_tolerance`` (relative). NaN holes are
    filled from the nearest valid pixel, +inf becomes the largest finite depth, then the map is
    resized (bilinear) when its size differs.
    """
    name = Path(depth).name if isinstance(depth, (str, Path)) else "depth map"
    d = read_depth_any(depth) if isinstance(depth, (str, Path)) else np.asarray(depth)
    if d.dtype == bool or not np.issubdtype(d.dtype, np.number):
        raise InputError(f"{name} must be numeric, not {d.dtype}")
    d = _to_single_channel(np.asarray(d, dtype=np.float32), name)
    if d.size == 0 or min(d.shape) < 2:
        raise InputError(f"{name} is empty ({d.shape})")
    finite = np.isfinite(d)
    if not finite.any():
        raise InputError(f"{name} has no finite values (all NaN/inf)")
    h, w = shape
    a_img, a_dep = w / h, d.shape[1] / d.shape[0]
    if abs(a_dep / a_img - 1.0) > aspect_tolerance:
        raise InputError(
            f"{name} is {d.shape[1]}x{d.shape[0]} (aspect {a_dep:.3f}) but the image is {w}x{h} "
            f"(aspect {a_img:.3f}); it is not this image's depth map"
        )
    if not finite.all():
        d = d.copy()
        d[np.isposinf(d)] = float(d[finite].max())
        holes = ~np.isfinite(d)
        if holes.any():
            from scipy import ndimage

            idx = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
            d = d[tuple(idx)]
    if d.shape != (h, w):
        from skimage.transform import resize

        down = d.shape[0] > h
        d = resize(d, (h, w), order=1, mode="edge", anti_aliasing=down, preserve_range=True)
    return np.ascontiguousarray(d, dtype=np.float32)
