"""Defocus map estimation: per-pixel Gaussian blur sigma (px, at the given image's resolution).

``estimate_defocus(image, depth=None, method=..., segmenter=...)`` is the entry point:

* ``method="edge"``: Zhuo & Sim edge estimates (``edge.py``), calibrated for the image's origin
  (``lr_scale``: 1 = a full-resolution photo, s = the LR input of an x``s`` SR made by bicubic
  downscaling), then propagated by DGS: segment-guided region levels + guided filter
  (``propagate.py``) over the regions of ``segmenter`` (``segment.py``); ``segmenter="none"``
  gives the plain Zhuo & Sim propagation instead.
* ``method="learned"``: the small CNN (``blurwise/models/defocus_cnn.py``), optionally refined by the
  same segment-guided step.
* ``method="auto"``: the method that won ``benchmarks/defocus_map.py`` (see :data:`DEFAULT_METHOD`).

``colorize`` and ``overlay`` make the previews the CLI writes next to the float TIFF.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import InputError, UsageError

MIN_SIDE = 8  # smallest image side (px) a defocus map is estimated for

__all__ = [
    "DefocusResult",
    "METHODS",
    "SEGMENTERS",
    "colorize",
    "defocus_details",
    "estimate_defocus",
    "estimate_macs",
    "overlay",
]

METHODS = ("auto", "edge", "learned")
SEGMENTERS = ("auto", "slic", "felzenszwalb", "depth", "color+depth", "sam", "none")
# Chosen by benchmarks/defocus_map.py (docs/results/defocus_map.md): best patch F1 / MAE on defocus-sr.
DEFAULT_METHOD = "edge"
DEFAULT_REFINE_LEARNED = True


@dataclass
class DefocusResult:
    """A defocus map with what produced it: sigma (float32 HW px), flat mask, regions, stage timings."""

    sigma: np.ndarray
    method: str
    segmenter: str
    flat: np.ndarray | None = None
    labels: np.ndarray | None = None
    edges: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def as_float_image(image: Any) -> np.ndarray:
    """HWC (or HW) float32 in [0, 1] from a float/uint8/uint16/bool array, a PIL image or a ``blurwise.io`` Image."""
    arr = getattr(image, "pixels", image)
    if hasattr(arr, "convert") and hasattr(arr, "mode"):  # PIL image: 16-bit and float modes keep their values
        from blurwise.io.image import _pil_to_array

        arr = _pil_to_array(arr, "<PIL image>")[0]
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise InputError(f"expected an HxW or HxWxC image, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[..., :-1]  # drop alpha
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if min(arr.shape[:2]) < MIN_SIDE:
        raise InputError(
            f"image too small for a defocus map: {arr.shape[1]}x{arr.shape[0]} (need >= {MIN_SIDE}x{MIN_SIDE})"
        )
    from blurwise.io.image import (
        float_pixels_problem,
        to_float,  # the one pixel-type converter (8/16-bit scaled, bool, float kept)
    )

    out = to_float(arr)
    if np.issubdtype(arr.dtype, np.floating):
        problem = float_pixels_problem(out)  # NaN, or 0-255 data in floats (clipped, it was a white image)
        if problem:
            raise InputError(problem)
        out = np.clip(out, 0.0, 1.0)
    return np.ascontiguousarray(out)


def defocus_details(
    image: Any,
    depth: np.ndarray | str | Path | None = None,
    *,
    method: str = "auto",
    segmenter: str = "auto",
    sam_checkpoint: str | Path | None = None,
    sam_model: Any = None,
    lr_scale: int = 1,
    depth_kind: str = "depth",
    propagation: str = "guided",
    refine: bool | None = None,
    calibrate: bool = True,
    n_segments: int | None = None,
    device: str | None = None,
    half: bool | str = False,
) -> DefocusResult:
    """Like :func:`estimate_defocus` but returns a :class:`DefocusResult` (map, regions, timings)."""
    # The edge, segmentation and propagation modules (scipy, scikit-image) are imported where they are used:
    # the learned map without refinement, the routing default, needs none of them.
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if segmenter not in SEGMENTERS:
        raise UsageError(f"unknown segmenter {segmenter!r}; choose from {', '.join(SEGMENTERS)}")
    if not (isinstance(lr_scale, (int, np.integer)) and 1 <= lr_scale <= 8):
        raise UsageError(f"lr_scale must be an integer 1..8, not {lr_scale!r}")
    img = as_float_image(image)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    dep = None
    if depth is not None:
        from blurwise.defocus.depth import prepare_depth

        dep = prepare_depth(depth, img.shape[:2])
        t["depth"] = time.perf_counter() - t0
    if method == "auto":
        method = DEFAULT_METHOD
        if method == "learned" and not _learned_available():
            method = "edge"
    seg = segmenter
    if seg == "auto":
        seg = "color+depth" if dep is not None else "slic"
        if method == "learned" and not (DEFAULT_REFINE_LEARNED if refine is None else refine):
            seg = "none"
    if seg in ("depth", "color+depth") and dep is None:
        raise UsageError(f"segmenter {seg!r} needs a depth map (--depth PATH)")

    labels = None
    if seg != "none":
        from blurwise.defocus.segment import segment

        t1 = time.perf_counter()
        labels = segment(
            img,
            dep,
            seg,
            n_segments=n_segments,
            depth_kind=depth_kind,
            sam_checkpoint=sam_checkpoint,
            sam_model=sam_model,
        )  # type: ignore[arg-type]
        t["segment"] = time.perf_counter() - t1

    if method == "learned":
        from blurwise.defocus.learned import learned_defocus

        t1 = time.perf_counter()
        dense = learned_defocus(img, lr_scale=int(lr_scale), device=device, half=half)
        t["network"] = time.perf_counter() - t1
        flat = None
        if labels is not None:
            from blurwise.defocus.propagate import refine_dense

            t1 = time.perf_counter()
            dense = refine_dense(img, dense, labels)
            t["propagate"] = time.perf_counter() - t1
        t["total"] = time.perf_counter() - t0
        return DefocusResult(dense, "learned", seg, flat, labels, None, t)

    from blurwise.defocus.edge import edge_defocus
    from blurwise.defocus.propagate import dgs_propagate, zhuo_sim_propagate

    t1 = time.perf_counter()
    sparse = edge_defocus(img)
    if calibrate:
        from blurwise.defocus.calibrate import apply_monotone, edge_table

        table = edge_table(int(lr_scale))
        if table is not None and sparse.mask.any():
            sparse.sigma[sparse.mask] = apply_monotone(sparse.sigma[sparse.mask], table)
    t["edges"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    if labels is None:
        sigma = zhuo_sim_propagate(img, sparse, method=propagation)
        flat = None
    else:
        sigma, flat = dgs_propagate(img, sparse, labels, depth=dep, depth_kind=depth_kind)
    t["propagate"] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0
    return DefocusResult(sigma, "edge", seg, flat, labels, sparse, t)


def estimate_defocus(
    image: Any,
    depth: np.ndarray | str | Path | None = None,
    *,
    method: str = "auto",
    segmenter: str = "auto",
    sam_checkpoint: str | Path | None = None,
    lr_scale: int = 1,
    depth_kind: str = "depth",
    **kwargs: Any,
) -> np.ndarray:
    """Per-pixel defocus blur of ``image`` as Gaussian sigma in px (float32 HW, image resolution).

    ``image``: HWC/HW array (float in [0, 1], uint8, uint16) or a ``blurwise.io`` Image.
    ``depth``: optional depth map (array or file: PNG/TIFF/NPY, HEIC with ``pillow-heif``), resized
    to the image; it guides the segmentation (``segmenter="auto"`` -> ``color+depth``).
    ``depth_kind``: ``"depth"`` (larger = farther) or ``"disparity"`` (larger = nearer).
    ``method``: ``edge`` (Zhuo & Sim + DGS), ``learned`` (CNN), ``auto`` (the benchmark winner).
    ``segmenter``: ``slic``, ``felzenszwalb``, ``depth``, ``color+depth``, ``sam`` (needs the
    ``segment-anything`` package and ``sam_checkpoint``), ``none`` (plain Zhuo & Sim propagation for
    ``edge``, raw network output for ``learned``).
    ``lr_scale``: the image is the LR input of an x``lr_scale`` SR (bicubic-downscaled); the estimate
    is calibrated for it. Leave 1 for full-resolution photos.
    Other keyword arguments go to :func:`defocus_details` (e.g. ``device`` and ``half`` for the learned CNN,
    ``calibrate=False`` for the raw edge law, ``propagation="matting"`` with ``segmenter="none"``).
    """
    return defocus_details(
        image,
        depth,
        method=method,
        segmenter=segmenter,
        sam_checkpoint=sam_checkpoint,
        lr_scale=lr_scale,
        depth_kind=depth_kind,
        **kwargs,
    ).sigma


# Rough multiply-accumulates per pixel, for routed SR's FLOPs accounting (counted from the filters:
# Gaussian-derivative gradients at 3 scales ~160, SLIC 5 iterations x 9 centres x 5 dims ~250,
# guided filter ~40, region statistics ~50). The CNN's figure is measured (FlopCounterMode); the
# fallback when no learned weights are shipped.
EDGE_DGS_MACS_PER_PIXEL = 500.0
ZHUO_SIM_GUIDED_MACS_PER_PIXEL = 250.0
CNN_MACS_PER_PIXEL = 21168.0


def estimate_macs(h: int, w: int, method: str = "auto", segmenter: str = "auto", lr_scale: int = 1) -> float:
    """Approximate MACs of :func:`estimate_defocus` on an ``h`` x ``w`` image (for FLOPs budgets).

    For the learned method, the MACs of the network actually used at ``lr_scale`` (a per-scale model
    may be larger than the general one), measured when its weights load.
    """
    if method not in METHODS or segmenter not in SEGMENTERS:
        raise UsageError(f"unknown method {method!r} or segmenter {segmenter!r} (methods {METHODS}, {SEGMENTERS})")
    if h < 0 or w < 0:
        raise UsageError(f"an image size is not negative: {h}x{w}")
    if method == "auto":
        method = DEFAULT_METHOD if (DEFAULT_METHOD != "learned" or _learned_available()) else "edge"
    if method == "learned":
        cnn = CNN_MACS_PER_PIXEL
        if _learned_available():
            from blurwise.defocus.learned import learned_macs_per_pixel

            cnn = learned_macs_per_pixel(lr_scale)
        per = cnn + (0.0 if segmenter == "none" else EDGE_DGS_MACS_PER_PIXEL - 160.0)
    else:
        per = ZHUO_SIM_GUIDED_MACS_PER_PIXEL if segmenter == "none" else EDGE_DGS_MACS_PER_PIXEL
    return float(h * w * per)


def _learned_available() -> bool:
    from blurwise.models.registry import WEIGHTS_DIR

    return (WEIGHTS_DIR / "defocus-cnn.safetensors").is_file()


# --------------------------------------------------------------------------- previews


def _colormap(x: np.ndarray, cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[cmap](np.clip(x, 0.0, 1.0))[..., :3] * 255.0 + 0.5).astype(np.uint8)


def colorize(sigma: np.ndarray, *, vmax: float | None = None, cmap: str = "magma", bar: bool = True) -> np.ndarray:
    """uint8 RGB preview of a sigma map (dark = sharp, bright = blurred) with a labelled colour bar.

    ``vmax`` fixes the top of the scale (default: the 99th percentile, at least 1 px), so maps of
    several images can share one scale.
    """
    from PIL import Image, ImageDraw, ImageFont

    s = np.asarray(sigma, dtype=np.float32)
    if s.ndim != 2 or s.size == 0:
        raise InputError(f"sigma map must be a non-empty HxW array, got shape {s.shape}")
    if vmax is not None and not (math.isfinite(vmax) and vmax > 0):
        raise InputError(f"vmax is the top of the colour scale in px (> 0), not {vmax!r}")
    finite = s[np.isfinite(s)]  # a NaN pixel (no estimate) must not pin the scale
    top = float(vmax) if vmax else max(1.0, float(np.percentile(finite, 99)) if finite.size else 1.0)
    rgb = _colormap(s / top, cmap)
    if not bar:
        return rgb
    h, w = s.shape
    bw = max(12, w // 40)
    font = ImageFont.load_default()
    labels = [f"{top:.1f} px", f"{top / 2:.1f}", "0"]
    tw = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in labels)
    panel = np.full((h, bw + tw + 12, 3), 255, dtype=np.uint8)
    ramp = np.linspace(1.0, 0.0, h)[:, None].repeat(bw, 1)
    panel[:, 4 : 4 + bw] = _colormap(ramp, cmap)
    pim = Image.fromarray(panel)
    d = ImageDraw.Draw(pim)
    for frac, text in zip((0.0, 0.5, 1.0), labels, strict=False):
        y = int(np.clip(frac * (h - 1) - 5, 0, max(h - 11, 0)))
        d.text((bw + 7, y), text, fill=(0, 0, 0), font=font)
    return np.concatenate([rgb, np.asarray(pim)], axis=1)


def overlay(
    image: Any, sigma: np.ndarray, *, alpha: float = 0.5, vmax: float | None = None, cmap: str = "magma"
) -> np.ndarray:
    """uint8 RGB: the colourised map blended over the image (shows what is judged blurred where)."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha is the map's share of the blend, in [0, 1], not {alpha!r}")
    img = as_float_image(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    s = np.asarray(sigma, dtype=np.float32)
    if s.shape != img.shape[:2]:
        raise InputError(f"sigma map {s.shape} does not match the image {img.shape[:2]}")
    col = colorize(s, vmax=vmax, cmap=cmap, bar=False).astype(np.float32) / 255.0
    out = (1.0 - alpha) * img + alpha * col
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
