"""Tiled inference: run any image-to-image model on images of any size.

The image is cut into a grid of *cores* that partition it (sizes differ by at most one pixel).
Each core is run inside a *window* that adds ``tile_pad`` pixels of context on every interior
side; all windows have the same size, so several go through the model in one batch. Outputs are
blended with feathered weights: across every boundary between two cores the weight ramps from
one tile to the other over ``tile_pad`` pixels (in input units) centred on the boundary, linear
or raised-cosine, and the weights of all tiles sum to exactly 1 everywhere. A side on the image
border is never feathered.

Consequence: every output pixel that receives weight lies at least ``tile_pad / 2`` input pixels
inside its window's interior edges, so for a fully convolutional model whose receptive-field
radius is at most ``tile_pad / 2`` the tiled output equals the untiled one (up to float
rounding); larger models get seamless, feathered transitions instead of hard seams. A model that
pools over the whole image (squeeze-excitation, channel attention) is not fully convolutional: it
tiles exactly only through its own ``tiled_forward`` (see :class:`Tiler`; LPRN has one), and
others are tiled as they are with a warning that the output will differ.

``tile=0`` picks the size automatically: the whole image when it fits the memory budget, else the
largest tile that does. The memory per pixel is first bounded from the model's layer widths without
running it; only when that (conservative) bound says the whole image might not fit is it measured
with one 64x64 probe forward pass. So small and medium images, the usual case on CPU, never pay
for a probe (it would cost more than their own work); large ones pay a few percent at most.
An out-of-memory error halves the tile and starts the image again; on half precision a batch with
NaN/Inf outputs is rerun in fp32.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blurwise.errors import InputError, ModelError, UsageError

__all__ = [
    "Tile",
    "Tiler",
    "tile_grid",
    "feather_profiles",
    "feather_weights",
    "run_tiled",
    "auto_tile",
    "is_oom",
    "resolve_device",
    "half_dtype",
    "cpu_has_fast_bf16",
    "forward_batch",
]

log = logging.getLogger(__name__)

MIN_TILE = 16  # below this an OOM is reported instead of halving again


@dataclass(frozen=True)
class Tile:
    """One grid cell: its core (the part it is responsible for) and its window (what the model sees).

    Boxes are ``(y0, y1, x0, x1)`` in input pixels, end-exclusive. ``margins`` are the distances
    ``(top, bottom, left, right)`` from the window edge to the core boundary on sides that face
    another tile, and 0 on sides lying on the image border (those are not feathered).
    """

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]
    margins: tuple[int, int, int, int]


def _split(n: int, tile: int) -> list[tuple[int, int]]:
    """Partition [0, n) into ceil(n / tile) nearly equal intervals."""
    k = max(1, math.ceil(n / tile))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


def tile_grid(h: int, w: int, tile: int, pad: int) -> list[Tile]:
    """The tiles covering an ``h`` x ``w`` image with cores of at most ``tile`` pixels and ``pad`` context.

    All windows have the same size (``min(h, max_core + 2 * pad)`` by the same for ``w``), so they
    can be stacked into one batch; a window that would leave the image is shifted inside it.
    ``tile <= 0`` means one tile for the whole image.
    """
    if h <= 0 or w <= 0:
        raise InputError(f"cannot tile an empty {h}x{w} image")
    if pad < 0:
        raise ValueError(f"tile_pad must be >= 0, got {pad}")
    tile_h = h if tile <= 0 else tile
    tile_w = w if tile <= 0 else tile
    rows, cols = _split(h, tile_h), _split(w, tile_w)
    wh = min(h, max(b - a for a, b in rows) + 2 * pad)
    ww = min(w, max(b - a for a, b in cols) + 2 * pad)

    def place(c0: int, c1: int, n: int, size: int) -> tuple[int, int, int, int]:
        start = min(max(c0 - pad, 0), n - size)
        lo = c0 - start if c0 > 0 else 0
        hi = start + size - c1 if c1 < n else 0
        return start, start + size, lo, hi

    tiles = []
    for y0, y1 in rows:
        wy0, wy1, mt, mb = place(y0, y1, h, wh)
        for x0, x1 in cols:
            wx0, wx1, ml, mr = place(x0, x1, w, ww)
            tiles.append(Tile((y0, y1, x0, x1), (wy0, wy1, wx0, wx1), (mt, mb, ml, mr)))
    return tiles


def _ramp(d: torch.Tensor, pad: float, blend: str) -> torch.Tensor:
    """Step of width ``pad`` centred at d = 0 going 0 -> 1; R(d) + R(-d) = 1 for both shapes."""
    if pad <= 0:
        return (d >= 0).to(d.dtype)
    t = (d / pad + 0.5).clamp(0.0, 1.0)
    if blend == "linear":
        return t
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _profile(n: int, lo: float, hi: float, pad: float, blend: str, device: Any) -> torch.Tensor:
    """1D weights of a window of length ``n`` whose core spans [lo, n - hi); 0 margin = image border."""
    centre = torch.arange(n, device=device, dtype=torch.float64) + 0.5
    rise = _ramp(centre - lo, pad, blend) if lo > 0 else torch.ones_like(centre)
    fall = _ramp(centre - (n - hi), pad, blend) if hi > 0 else torch.zeros_like(centre)
    return rise - fall  # difference form: the profiles of neighbouring tiles telescope to exactly 1


def feather_weights(h: int, w: int, pad: float, blend: str = "cosine", **where: Any) -> torch.Tensor:
    """Blending weights (float32 ``h`` x ``w``) of one window, ramping over ``pad`` pixels at each core boundary.

    ``margins`` = (top, bottom, left, right) distances from the window edge to its core; a margin
    of 0 marks a side on the image border (weight 1 up to the edge). Default: ``pad`` on all four
    sides (an interior window). The ramp is centred on the core boundary and ``pad`` wide, linear
    or raised-cosine (``blend``), so the weights of tiles from :func:`tile_grid` sum to 1 everywhere.
    Give everything in output pixels when the model upscales (margins and pad times the scale).
    ``where``: ``margins`` and ``device``, keywords of :func:`feather_profiles`.
    """
    wy, wx = feather_profiles(h, w, pad, blend, **where)
    return (wy[:, None] * wx[None, :]).float()


def feather_profiles(
    h: int,
    w: int,
    pad: float,
    blend: str = "cosine",
    *,
    margins: tuple[float, float, float, float] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two float64 1D factors of :func:`feather_weights` (rows, columns): the weights are their outer
    product, so a blender can weigh only the ramps and copy the window's inside (weight exactly 1)."""
    if blend not in ("cosine", "linear"):
        raise ValueError(f"blend must be 'cosine' or 'linear', got {blend!r}")
    mt, mb, ml, mr = (pad, pad, pad, pad) if margins is None else margins
    return _profile(h, mt, mb, pad, blend, device), _profile(w, ml, mr, pad, blend, device)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error of any torch backend."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA if available, then Apple MPS, then CPU; else the named device, checked.

    An unknown or unavailable device is a one-line UsageError (the CLI's ``--device``).
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):  # meta, xla, ...: would fail on the first image, not here
        raise UsageError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA GPU is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UsageError(f"--device {name}: no such GPU (this machine has {n}: cuda:0..cuda:{n - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps asked for, but Apple MPS is not available")
    return dev


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def _free_memory(device: torch.device) -> int:
    """Bytes the tiler may use on ``device`` (a conservative share of what is free)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.7)
    if device.type == "mps":
        try:
            total = torch.mps.recommended_max_memory()
            return int(max(total - torch.mps.current_allocated_memory(), 0) * 0.5)
        except (AttributeError, RuntimeError):
            return 2 << 30
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 << 30
    return int(min(avail * 0.5, 8 << 30))


def _bytes_per_pixel(model: nn.Module, in_ch: int, device: torch.device, dtype: torch.dtype, extra: dict) -> float:
    """Peak memory one input pixel costs in a forward pass, measured on a small probe input."""
    size = 64
    x = torch.zeros(1, in_ch, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad(), _autocast(device, dtype):
            model(x, **extra)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return 1.5 * max(peak, 1) / (size * size)
    # Elsewhere: the largest activation, times a few live tensors (input, output, a temporary).
    biggest = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal biggest
        if isinstance(out, torch.Tensor):
            biggest = max(biggest, out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), _autocast(device, dtype):
            model(x, **extra)
    finally:
        for hd in handles:
            hd.remove()
    return 4.0 * max(biggest, x.numel() * 4) / (size * size)


def _static_bytes_per_pixel(model: nn.Module, in_ch: int, scale: int) -> float | None:
    """Upper bound of peak memory per input pixel from layer widths alone (no forward pass), or None.

    The widest conv/linear layer times ``scale**2`` bounds the largest activation per input pixel
    both for pixel-shuffle tails (features at LR size, ``3 * s**2`` channels) and for models that
    upsample internally (features at HR size, i.e. ``s**2`` values per input pixel); four such
    tensors live at once (input, output, residual, temporary), all fp32. None when the model has no
    conv/linear layer to read (then the probe measures it).
    """
    widest = 0
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widest = max(widest, m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            widest = max(widest, m.in_features, m.out_features)
    if widest == 0:
        return None
    return 4.0 * 4 * max(widest, in_ch) * max(1, scale) ** 2


def auto_tile(
    model: nn.Module,
    h: int,
    w: int,
    *,
    in_channels: int,
    scale: int = 1,
    pad: int = 16,
    batch: int = 4,
    dtype: torch.dtype | None = None,
    extra: dict | None = None,
    budget: int | None = None,
) -> int:
    """Core tile size for an ``h`` x ``w`` image: 0 (whole image) when it fits the memory budget.

    The budget is a share of free memory on the model's device (GPU memory on CUDA, RAM on CPU)
    unless ``budget`` (bytes) is given. The cost per pixel is a static upper bound from the layer
    widths (:func:`_static_bytes_per_pixel`); only when the whole image does not fit under that
    bound is it measured with one 64x64 probe forward pass. That image then has at least
    ``budget / bound`` pixels, usually far more than the probe's 4096 (~40x for a 64-feature x4
    model and the 8 GiB CPU cap), so the probe costs a few percent of its work; smaller images pay nothing.
    """
    device = _model_device(model)
    budget = _free_memory(device) if budget is None else budget
    out_bytes = 4 * h * w * scale * scale * 4  # output and blending buffers on the model device, worst case
    bpp = _static_bytes_per_pixel(model, in_channels, scale)
    if bpp is None or h * w * bpp + out_bytes > budget:
        bpp = _bytes_per_pixel(model, in_channels, device, dtype, extra or {})
    if h * w * bpp + out_bytes <= budget:
        return 0
    per_window = max(budget - min(out_bytes, budget // 2), budget // 4) / max(batch, 1)
    side = int(math.sqrt(per_window / bpp)) - 2 * pad
    return max(MIN_TILE, (side // 8) * 8)


class _autocast:
    """torch.autocast for fp16/bf16, a no-op context for fp32."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else None

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def half_dtype(half: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``half`` asks for on ``device`` (None = fp32), so every caller reads the flag alike.

    True/"fp16" is fp16 on CUDA and bf16 on a CPU (CPU autocast is bf16-only in practice); "bf16" is bf16.
    """
    if half in (False, None, "fp32", "no"):
        return None
    if half in (True, "fp16", "float16"):
        return torch.bfloat16 if device.type == "cpu" else torch.float16  # CPU autocast is bf16-only in practice
    if half in ("bf16", "bfloat16"):
        return torch.bfloat16
    raise ValueError(f"half must be False, True, 'fp16' or 'bf16', got {half!r}")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16 units; Linux ``/proc/cpuinfo``).

    There a small bf16 conv net runs 2-2.5x faster than in fp32; elsewhere oneDNN emulates bf16, more slowly
    than fp32, so callers that pick bf16 by themselves ask this first. ``flags`` overrides the CPU's (tests).
    """
    f = _cpu_flags() if flags is None else flags
    return "amx_bf16" in f or "avx512_bf16" in f


def _batches(tiles: list[Tile], batch: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), batch):
        yield tiles[i : i + batch]


def forward_batch(
    model: nn.Module, xb: torch.Tensor, dtype: torch.dtype | None, extra: dict | None = None
) -> torch.Tensor:
    """One batched forward pass under autocast ``dtype`` (from :func:`half_dtype`), returned in fp32.

    A half-precision result with NaN/Inf is recomputed in fp32: overflow must cost time, not a broken image.
    """
    extra = extra or {}
    with _autocast(xb.device, dtype):
        out = model(xb, **extra)
    if dtype is not None:
        out = out.float()
        if not torch.isfinite(out).all():
            log.warning("non-finite output in %s; rerunning this batch in fp32", dtype)
            out = model(xb, **extra).float()
    return out


def _run_image(
    model: nn.Module,
    x: torch.Tensor,
    *,
    scale: int,
    tile: int,
    pad: int,
    batch: int,
    blend: str,
    dtype: torch.dtype | None,
    channels_last: bool,
    progress: bool,
    extra: dict,
    bar: Any = None,
) -> torch.Tensor:
    """Tile, run and blend one image ``x`` [C, H, W]; returns [Cout, H*scale, W*scale] on x's device.

    A model with a ``tiled_forward`` (see :class:`Tiler`) computes its own tiled output when the image takes more
    than one tile. ``bar``: a progress bar to advance (one of its own is made when ``progress`` and none is given).
    """
    device = _model_device(model)
    _, h, w = x.shape
    tiles = tile_grid(h, w, tile, pad)
    staged = getattr(model, "tiled_forward", None) if len(tiles) > 1 else None
    out: torch.Tensor | None = None
    own_bar = bar is None and progress and len(tiles) > 1
    if own_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if staged else len(tiles), desc="tiles", unit="tile", leave=False, disable=None)
    try:
        if callable(staged):
            tiler = Tiler(tile, pad, batch=batch, blend=blend, dtype=dtype, channels_last=channels_last, bar=bar)
            y = staged(x[None], tiler, **extra)
            if y.ndim != 4 or y.shape[0] != 1 or y.shape[-2:] != (h * scale, w * scale):
                raise ModelError(f"tiled output {tuple(y.shape)} does not match input {tuple(x.shape)} at x{scale}")
            return y[0].to(device=x.device, dtype=torch.float32)
        for group in _batches(tiles, batch):
            xb = _window_batch(x, group, device, channels_last)
            yb = forward_batch(model, xb, dtype, extra)
            wh, ww = xb.shape[-2:]
            if yb.ndim != 4 or yb.shape[-2:] != (wh * scale, ww * scale):
                raise ModelError(
                    f"model output {tuple(yb.shape)} does not match input {tuple(xb.shape)} at scale x{scale}"
                )
            if out is None:
                out = torch.zeros(yb.shape[1], h * scale, w * scale, device=x.device, dtype=torch.float32)
            for t, y in zip(group, yb, strict=True):
                oy0, oy1, ox0, ox1 = (v * scale for v in t.window)
                if len(tiles) == 1:
                    out[:, oy0:oy1, ox0:ox1] = y.to(out.device)
                    continue
                wt = feather_weights(
                    wh * scale,
                    ww * scale,
                    pad * scale,
                    blend,
                    margins=tuple(m * scale for m in t.margins),
                    device=y.device,
                )
                # Only the rows/columns with non-zero weight are touched (the core plus half the ramp).
                cy0, cy1, cx0, cx1 = t.core
                r = pad * scale / 2
                ly0 = max(0, int(math.floor(cy0 * scale - r)) - oy0) if t.margins[0] else 0
                ly1 = min(wh * scale, int(math.ceil(cy1 * scale + r)) - oy0) if t.margins[1] else wh * scale
                lx0 = max(0, int(math.floor(cx0 * scale - r)) - ox0) if t.margins[2] else 0
                lx1 = min(ww * scale, int(math.ceil(cx1 * scale + r)) - ox0) if t.margins[3] else ww * scale
                contrib = (y[:, ly0:ly1, lx0:lx1] * wt[ly0:ly1, lx0:lx1]).to(out.device)
                out[:, oy0 + ly0 : oy0 + ly1, ox0 + lx0 : ox0 + lx1] += contrib
            if bar is not None:
                bar.update(len(group))
    finally:
        if own_bar:
            bar.close()
    assert out is not None
    return out


def _window_batch(x: torch.Tensor, group: list[Tile], device: torch.device, channels_last: bool) -> torch.Tensor:
    """The input windows of ``group``'s tiles of ``x`` [C, H, W], stacked as one fp32 batch on ``device``."""
    xb = torch.stack([x[:, t.window[0] : t.window[1], t.window[2] : t.window[3]] for t in group])
    xb = xb.to(device=device, dtype=torch.float32, non_blocking=True)
    return xb.contiguous(memory_format=torch.channels_last) if channels_last else xb


@dataclass(frozen=True)
class Tiler:
    """Tiled evaluation of *local* modules (convolutions, no global pooling) at one tile size and overlap.

    A model whose output depends on whole-image statistics, such as a squeeze-excitation's global average pool,
    cannot be cut into tiles as it is: every tile would pool its own statistics and come out in its own tone (the
    shipped LPRN: up to 104/255 off the untiled output on a 1280x720 frame at 64 px tiles). Such a model defines
    ``tiled_forward(x, tiler, **extra)`` for ``x`` [1, C, H, W] and builds its forward pass from :meth:`map` (a local
    module over the whole image, tiled and blended) and :meth:`mean` (whole-image channel means of a local module's
    output, summed over the tiles' cores), so that the tiled output equals the untiled one as it does for a fully
    convolutional model. :func:`run_tiled` calls it instead of tiling the model whenever an image takes more than one
    tile; its out-of-memory retry and half-precision fallback apply as usual.
    """

    tile: int
    pad: int
    batch: int = 4
    blend: str = "cosine"
    dtype: torch.dtype | None = None
    channels_last: bool = False
    bar: Any = None

    def scaled(self, factor: int) -> Tiler:
        """The same tiler for an image ``factor`` times smaller (e.g. pixel-unshuffled): tile and pad rounded up."""
        return replace(self, tile=max(1, -(-self.tile // factor)), pad=-(-self.pad // factor))

    def map(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` for a same-size local module and ``x`` [1, C, H, W], computed in blended tiles (fp32, on
        x's device)."""
        return _run_image(
            module,
            x[0],
            scale=1,
            tile=self.tile,
            pad=self.pad,
            batch=self.batch,
            blend=self.blend,
            dtype=self.dtype,
            channels_last=self.channels_last,
            progress=False,
            extra={},
            bar=self.bar,
        )[None]

    def mean(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x).mean((2, 3), keepdim=True)`` for a same-size local module and ``x`` [1, C, H, W], from the
        tiles' cores (summed in float64); [1, Cout, 1, 1] fp32 on the module's device."""
        device = _model_device(module)
        _, _, h, w = x.shape
        tiles = tile_grid(h, w, self.tile, self.pad)
        total: torch.Tensor | None = None
        for group in _batches(tiles, self.batch):
            xb = _window_batch(x[0], group, device, self.channels_last)
            yb = forward_batch(module, xb, self.dtype)
            if yb.ndim != 4 or yb.shape[-2:] != xb.shape[-2:]:
                raise ModelError(f"module output {tuple(yb.shape)} does not match its input {tuple(xb.shape)}")
            for t, y in zip(group, yb, strict=True):
                y0, y1, x0, x1 = (
                    t.core[0] - t.window[0],
                    t.core[1] - t.window[0],
                    t.core[2] - t.window[2],
                    t.core[3] - t.window[2],
                )
                part = y[:, y0:y1, x0:x1].double().sum((1, 2))
                total = part if total is None else total + part
            if self.bar is not None:
                self.bar.update(len(group))
        assert total is not None
        return (total / (h * w)).float()[None, :, None, None]


_WARNED_POOLING: set[str] = set()


def _warn_global_pooling(model: nn.Module, n_tiles: int) -> None:
    """Warn (once per model class) that a model pooling over the whole image is being cut into tiles: every tile
    pools its own statistics, so the output differs from the untiled one (nafnet16 at 64 px tiles: up to 21/255)."""
    if n_tiles <= 1:
        return
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    if not any(isinstance(m, pools) and m.output_size in (1, (1, 1)) for m in model.modules()):
        return
    name = type(getattr(model, "_orig_mod", model)).__name__
    if name not in _WARNED_POOLING:
        _WARNED_POOLING.add(name)
        log.warning(
            "%s pools over the whole image, so each of the %d tiles gets its own statistics and the output differs "
            "from the untiled one; larger tiles (or --tile 0) keep it closer",
            name,
            n_tiles,
        )


def run_tiled(
    model: nn.Module,
    x: torch.Tensor,
    *,
    scale: int = 1,
    tile: int = 0,
    tile_pad: int = 16,
    batch: int = 4,
    blend: str = "cosine",
    half: bool | str = False,
    channels_last: bool = False,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``x`` [N, C, H, W] in overlapping, feather-blended tiles; returns [N, Cout, H*s, W*s].

    ``tile`` is the core size in input pixels (0 = automatic: the whole image if it fits memory),
    ``tile_pad`` the context added on each interior side (the output is exact for receptive-field
    radii up to ``tile_pad / 2``), ``batch`` how many tiles go through one forward pass. All input
    channels are sliced alike (e.g. RGB + sigma map), so any image-to-image model works; ``extra``
    holds keyword arguments passed unchanged to every forward call. ``half`` = True/"fp16"/"bf16"
    runs under autocast with a per-batch NaN/Inf fallback to fp32. On out-of-memory the tile is
    halved and the image restarted. The model is used as given (call ``.eval()`` first); the
    output lives on ``x``'s device, the tiles move to the model's device one batch at a time.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"run_tiled needs an [N, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
    n, c, h, w = x.shape
    if n == 0 or c == 0 or h == 0 or w == 0:
        raise InputError(f"cannot run a model on an empty tensor of shape {tuple(x.shape)}")
    if blend not in ("cosine", "linear"):
        raise ValueError(f"blend must be 'cosine' or 'linear', got {blend!r}")
    scale, tile_pad, batch = int(scale), int(tile_pad), max(1, int(batch))
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    device = _model_device(model)
    dtype = half_dtype(half, device)
    extra = dict(extra or {})
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if tile <= 0:
        tile = auto_tile(model, h, w, in_channels=c, scale=scale, pad=tile_pad, batch=batch, dtype=dtype, extra=extra)
    if tile > 0 and not callable(getattr(model, "tiled_forward", None)):
        _warn_global_pooling(model, len(tile_grid(h, w, tile, tile_pad)))
    outs = []
    with torch.no_grad():
        for i in range(n):
            cur = tile
            while True:
                try:
                    outs.append(
                        _run_image(
                            model,
                            x[i],
                            scale=scale,
                            tile=cur,
                            pad=tile_pad,
                            batch=batch,
                            blend=blend,
                            dtype=dtype,
                            channels_last=channels_last,
                            progress=progress,
                            extra=extra,
                        )
                    )
                    break
                except Exception as exc:
                    if not is_oom(exc):
                        raise
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    size = cur if cur > 0 else max(h, w)
                    if size // 2 < MIN_TILE:
                        raise ModelError(f"out of memory even with {size}px tiles; try --device cpu") from None
                    cur = size // 2
                    log.warning("out of memory; retrying with %dpx tiles", cur)
    return torch.stack(outs)
