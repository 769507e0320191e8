"""Segmenter backends behind one interface: ``segment(image, depth=None, kind=...) -> int32 labels``.

Regions are what DGS gives one blur level each, so they should follow object boundaries: colour
superpixels (``slic``, ``felzenszwalb``), depth-quantised regions (``depth``: blur is a function of
depth, so equal-depth regions share a blur level), both (``color+depth``: colour superpixels split
at depth-level changes; the default when a depth map is given) and Segment-Anything automatic masks
(``sam``, optional: needs the ``segment-anything`` package and a checkpoint; see ``sam.py``).
"""

from __future__ import annotations

import numpy as np

from blurwise.errors import UsageError

KINDS = ("auto", "slic", "felzenszwalb", "depth", "color+depth", "sam")


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive int32 labels 0..n-1 (keeps the region partition)."""
    _, inv = np.unique(labels.ravel(), return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def _connected(labels: np.ndarray) -> np.ndarray:
    """Split every label into its 4-connected components (consecutive int32 labels)."""
    from skimage.measure import label

    return (label(labels + 1, background=0, connectivity=1) - 1).astype(np.int32)


def region_size(shape: tuple[int, ...]) -> int:
    """Default superpixel area in px for an image of ``shape``: ~12x12 px regions, 16..4000 of them."""
    n = shape[0] * shape[1]
    return int(np.clip(n / 144, 16, 4000))


def slic_labels(image: np.ndarray, n_segments: int | None = None, compactness: float = 10.0) -> np.ndarray:
    """SLIC superpixels on colour (CIELAB), a few iterations (superpixels need not be perfect here)."""
    from skimage.segmentation import slic

    img = np.asarray(image, dtype=np.float32)
    multichannel = img.ndim == 3 and img.shape[2] == 3
    if img.ndim == 3 and not multichannel:
        img = img[..., 0]
    if n_segments is not None and (isinstance(n_segments, bool) or not int(n_segments) == n_segments or n_segments < 1):
        raise UsageError(
            f"n_segments is a number of regions (an integer >= 1, or None for automatic), not {n_segments!r}"
        )
    n = n_segments or region_size(img.shape)
    lab = slic(
        img,
        n_segments=n,
        compactness=compactness if multichannel else compactness / 100.0,
        start_label=0,
        channel_axis=-1 if multichannel else None,
        max_num_iter=5,
        enforce_connectivity=True,
    )
    return _relabel(lab)


def felzenszwalb_labels(image: np.ndarray, scale: float | None = None, min_size: int | None = None) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation on colour (adapts region count to content)."""
    from skimage.segmentation import felzenszwalb

    img = np.asarray(image, dtype=np.float32)
    n = img.shape[0] * img.shape[1]
    sc = scale if scale is not None else 100.0 * np.sqrt(n / 1e5)
    ms = min_size if min_size is not None else max(8, n // 3000)
    lab = felzenszwalb(img, scale=sc, sigma=0.5, min_size=ms, channel_axis=-1 if img.ndim == 3 else None)
    return _relabel(lab)


def depth_levels(depth: np.ndarray, levels: int = 12, depth_kind: str = "depth") -> np.ndarray:
    """Quantise depth into ``levels`` bins uniform in disparity (``1/depth``), where blur is linear.

    ``depth_kind="disparity"`` means larger values are nearer and the values are binned directly.
    """
    d = np.asarray(depth, dtype=np.float32)
    if depth_kind == "depth":
        v = 1.0 / np.maximum(d, 1e-6 * max(float(np.nanmax(d)), 1e-12))
    elif depth_kind == "disparity":
        v = d
    else:
        raise UsageError(f"depth_kind must be 'depth' or 'disparity', not {depth_kind!r}")
    lo, hi = np.percentile(v, [0.5, 99.5])
    if hi - lo < 1e-12:
        return np.zeros(d.shape, dtype=np.int32)
    q = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return np.minimum((q * levels).astype(np.int32), levels - 1)


def depth_labels(depth: np.ndarray, levels: int = 12, depth_kind: str = "depth", min_size: int = 4) -> np.ndarray:
    """Connected regions of equal quantised depth; specks under ``min_size`` px join a neighbour."""
    lab = _connected(depth_levels(depth, levels, depth_kind))
    return _merge_small(lab, min_size)


def color_depth_labels(
    image: np.ndarray,
    depth: np.ndarray,
    *,
    n_segments: int | None = None,
    levels: int = 12,
    depth_kind: str = "depth",
) -> np.ndarray:
    """Colour superpixels split where the quantised depth changes: regions respect both kinds of edge."""
    col = slic_labels(image, n_segments)
    lev = depth_levels(depth, levels, depth_kind)
    combined = col.astype(np.int64) * (levels + 1) + lev
    return _merge_small(_connected(_relabel(combined)), 4)


def _merge_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Give regions smaller than ``min_size`` px the label of their largest-contact neighbour."""
    counts = np.bincount(labels.ravel())
    small = counts < min_size
    if not small.any() or small.all():
        return labels
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    diff = a != b
    a, b = a[diff], b[diff]
    a, b = np.concatenate([a, b]), np.concatenate([b, a])
    keep = small[a] & ~small[b]
    target = np.arange(len(counts))
    if keep.any():
        # For each small region, the neighbour with the largest area.
        order = np.lexsort((counts[b[keep]], a[keep]))
        aa, bb = a[keep][order], b[keep][order]
        last = np.r_[aa[1:] != aa[:-1], True]
        target[aa[last]] = bb[last]
    return _relabel(target[labels])


def segment(
    image: np.ndarray,
    depth: np.ndarray | None = None,
    kind: str = "auto",
    *,
    n_segments: int | None = None,
    depth_levels_n: int = 12,
    depth_kind: str = "depth",
    sam_checkpoint: str | None = None,
    sam_model: object | None = None,
) -> np.ndarray:
    """Split ``image`` (HWC float in [0, 1]) into regions: int32 HW labels 0..n-1.

    ``kind="auto"`` is ``color+depth`` when ``depth`` (HW, already at the image's size) is given,
    else ``slic``. ``depth``/``color+depth`` need a depth map; ``sam`` needs the optional
    ``segment-anything`` package and ``sam_checkpoint`` (or a built ``sam_model``; NotAvailableError
    otherwise).
    """
    if kind not in KINDS:
        raise UsageError(f"unknown segmenter {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "auto":
        kind = "color+depth" if depth is not None else "slic"
    if kind in ("depth", "color+depth") and depth is None:
        raise UsageError(f"segmenter {kind!r} needs a depth map (--depth PATH)")
    if depth is not None and depth.shape != image.shape[:2]:
        raise UsageError(f"depth map {depth.shape} does not match the image {image.shape[:2]}; resize it first")
    if kind == "slic":
        return slic_labels(image, n_segments)
    if kind == "felzenszwalb":
        return felzenszwalb_labels(image)
    if kind == "depth":
        return depth_labels(depth, depth_levels_n, depth_kind)  # type: ignore[arg-type]
    if kind == "color+depth":
        return color_depth_labels(image, depth, n_segments=n_segments, levels=depth_levels_n, depth_kind=depth_kind)  # type: ignore[arg-type]
    from blurwise.defocus.sam import sam_labels

    return sam_labels(image, checkpoint=sam_checkpoint, model=sam_model)
