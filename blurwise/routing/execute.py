"""Execute a RoutePlan: batched model runs per route, feathered blending into one seamless HR image.

Blending is exact by construction. Every tile's weight is its core rectangle's indicator smoothed by
a separable ramp of half-width ``overlap * scale`` HR px (linear or raised cosine); because the cores
of all tiles partition the image, the weights of all tiles sum to exactly 1 at every HR pixel, also at
T-junctions between rectangles of different sizes. Image borders get no ramp. So a pixel far from
any route boundary comes from one model, and across a boundary the two routes' outputs cross-fade
over ``2 * overlap`` LR px. Each window is computed with ``context`` extra LR px beyond the blend
band (clamped at the image border, where the model's own zero padding equals a whole-image run), so
the outputs used are those of a whole-image run up to the model's receptive field. When a route runs once on
the whole image, the blend starts from its output and adds the other routes' tiles as weighted differences from it:
the same sum, with only those tiles to weigh. That base also lets a heavy tile move its band inside its core
on sides next to cheaper routes only (``Tile.inset``): its weight there ramps up from 0 at the core's edge, never
above what the partition gives it, and the base takes the rest, so every pixel's weights still sum to 1 and the
heavy window needs no overlap beyond the core on those sides.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from blurwise.errors import ModelError, UsageError
from blurwise.routing.plan import BICUBIC, HEAVY, LIGHT, ROUTE_NAMES, RoutePlan, Tile
from blurwise.tiling import feather_profiles, forward_batch, half_dtype

log = logging.getLogger(__name__)


def tile_weights(
    tile: Tile, shape: tuple[int, int], *, scale: int, overlap: int, blend: str = "linear", device: Any = None
) -> torch.Tensor:
    """(Hout, Wout) HR blend weights of a tile over its ``out`` box (LR ``tile.out`` times ``scale``).

    The core's indicator smoothed by a ramp ``2 * overlap * scale`` HR px wide centred on every
    interior core edge (``tiling.feather_weights`` with the tile's margins); sides on the image border
    keep weight 1. Because the cores partition the image, all tiles' weights sum to exactly 1.
    """
    wy, wx = _tile_profiles(tile, scale=scale, overlap=overlap, blend=blend, device=device)
    return (wy[:, None] * wx[None, :]).float()


def _tile_geometry(tile: Tile, scale: int) -> tuple[int, int, tuple[int, int, int, int]]:
    """(h, w, margins) in HR px of a tile's ``out`` box: its size and the distance from each side to its blend core."""
    cy0, cy1, cx0, cx1 = tile.blend_core
    oy0, oy1, ox0, ox1 = tile.out
    margins = ((cy0 - oy0) * scale, (oy1 - cy1) * scale, (cx0 - ox0) * scale, (ox1 - cx1) * scale)
    return (oy1 - oy0) * scale, (ox1 - ox0) * scale, margins


def _profiles(
    h: int, w: int, margins: tuple[int, int, int, int], pad: int, blend: str, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and column factors (float64) of the HR blend weights of an ``h`` x ``w`` box with these margins."""
    if blend not in ("linear", "cosine"):
        raise UsageError(f"blend must be 'linear' or 'cosine', got {blend!r}")
    return feather_profiles(h, w, pad, blend, margins=margins, device=device)


def _tile_profiles(
    tile: Tile, *, scale: int, overlap: int, blend: str, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and column factors (float64) of a tile's HR blend weights over its ``out`` box."""
    return _profiles(*_tile_geometry(tile, scale), 2 * overlap * scale, blend, device)


def _span_of_ones(p: torch.Tensor) -> tuple[int, int]:
    """[a, b): the stretch of a 1D blend profile where it is exactly 1 (a == b when there is none)."""
    ones = torch.nonzero(p == 1.0).flatten()
    if ones.numel() == 0:
        return 0, 0
    return int(ones[0]), int(ones[-1]) + 1


@functools.lru_cache(maxsize=1024)
def _blend_layout(
    h: int, w: int, margins: tuple[int, int, int, int], pad: int, blend: str, device: str
) -> tuple[tuple[int, int, int, int] | None, tuple[tuple[int, int, int, int, torch.Tensor], ...]]:
    """How a tile of ``h`` x ``w`` HR px with these ramp ``margins`` is blended: its inside, where the weight is
    exactly 1 (None when there is none), and the strips around it with their float32 weights.

    A pure function of the tile's geometry: tiles of one plan (and of one image size) repeat the same few, so
    the weights are built once instead of per tile (the blend is otherwise mostly small tensor ops)."""
    wy, wx = _profiles(h, w, margins, pad, blend, device)  # a bad ``blend`` raises here, so it is never cached
    a, b = _span_of_ones(wy)
    c, d = _span_of_ones(wx)
    inside = (a, b, c, d) if a < b and c < d else None
    boxes = [(0, a, 0, w), (b, h, 0, w), (a, b, 0, c), (a, b, d, w)] if inside else [(0, h, 0, w)]
    strips = tuple(
        (r0, r1, c0, c1, (wy[r0:r1, None] * wx[None, c0:c1]).float()) for r0, r1, c0, c1 in boxes if r1 > r0 and c1 > c0
    )
    return inside, strips


def add_weighted(
    acc: torch.Tensor,
    y: torch.Tensor,
    tile: Tile,
    *,
    scale: int,
    overlap: int,
    blend: str = "linear",
    base: torch.Tensor | None = None,
) -> None:
    """``acc[tile.out] += y * tile_weights(tile)``, the same numbers for less work: the weights are separable
    and exactly 1 inside the tile's ramps, where no other tile reaches (their ramps end at this tile's), so
    the inside is copied and only the ramp strips are weighed. ``y``: the tile's output over its ``out`` box.

    With ``base`` (a whole HR image that ``acc`` started from, standing for every tile not blended this way),
    adds ``(y - base) * weights`` instead: the tile takes its weight from the base's.
    """
    h, w, margins = _tile_geometry(tile, scale)
    inside, strips = _blend_layout(h, w, margins, 2 * overlap * scale, blend, str(acc.device))
    oy0, oy1, ox0, ox1 = tile.out
    box = (slice(None), slice(None), slice(oy0 * scale, oy1 * scale), slice(ox0 * scale, ox1 * scale))
    dst = acc[box]
    under = base[box] if base is not None else None
    if inside is not None:
        a, b, c, d = inside
        dst[:, :, a:b, c:d] = y[:, :, a:b, c:d]  # (0 or base) + (y - base) * 1: nothing else lands here
    for r0, r1, c0, c1, wt in strips:
        v = y[:, :, r0:r1, c0:c1].float()
        if under is not None:
            v = v - under[:, :, r0:r1, c0:c1]
        dst[:, :, r0:r1, c0:c1] += v * wt


def route_weights(plan: RoutePlan, *, blend: str = "linear", base: bool = True) -> np.ndarray:
    """(routes, Hout, Wout) float64: the weight each route's output gets in the blend (used by tests).

    Each route's tiles' weights summed; with ``base``, the base route (:attr:`RoutePlan.base_route`) takes
    what the others leave, as :func:`execute_plan` blends, instead of its own tiles' weights."""
    s = plan.scale
    acc = torch.zeros(plan.routes, plan.shape[0] * s, plan.shape[1] * s, dtype=torch.float64)
    for t in plan.tiles:
        oy0, oy1, ox0, ox1 = t.out
        acc[t.route, oy0 * s : oy1 * s, ox0 * s : ox1 * s] += tile_weights(
            t, plan.shape, scale=s, overlap=plan.overlap, blend=blend
        ).double()
    if base and plan.base_route is not None:
        acc[plan.base_route] = 1 - (acc.sum(0) - acc[plan.base_route])
    return acc.numpy()


def weight_sum(plan: RoutePlan, *, blend: str = "linear") -> np.ndarray:
    """Sum of all tiles' own blend weights over the HR image (1 everywhere, except in the inset bands a base
    route fills: see :func:`route_weights`; used by tests)."""
    return route_weights(plan, blend=blend, base=False).sum(0)


def _auto_batch(window_px: int, device: torch.device, scale: int) -> int:
    """Tiles per forward pass: bounded by a pixel budget (CPU) or by free GPU memory (CUDA)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        per_px = 4 * 64 * 4 * max(scale, 1) ** 2  # bytes per LR px: ~64 ch fp32 at HR, x4 live tensors
        return int(max(1, min(64, free * 0.5 // max(per_px * window_px, 1))))
    return int(max(1, min(16, (192 * 192) // max(window_px, 1))))


def _forward(model: nn.Module, x: torch.Tensor, *, half: bool | str) -> torch.Tensor:
    """Model call under no_grad; ``half`` autocasts as in ``tiling.run_tiled`` (fp16/bf16 on CUDA, bf16 on a
    CPU: ~4x faster heavy SR on CPUs with AMX units), with the same fp32 rerun of a non-finite result."""
    with torch.no_grad():
        return forward_batch(model, x, half_dtype(half, x.device))


def _run_windows(
    model: nn.Module,
    src: torch.Tensor,
    windows: list[tuple[int, int, int, int]],
    *,
    batch: int | None,
    scale: int,
    half: bool | str,
    progress: Any = None,
) -> dict[tuple[int, int, int, int], torch.Tensor]:
    """Run ``model`` on every window of ``src`` (1, C, H, W), batching windows of equal shape."""
    groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    for w in windows:
        groups[(w[1] - w[0], w[3] - w[2])].append(w)
    out: dict[tuple[int, int, int, int], torch.Tensor] = {}
    for (h, w), boxes in groups.items():
        b = batch or _auto_batch(h * w, src.device, scale)
        i = 0
        while i < len(boxes):
            chunk = boxes[i : i + b]
            x = torch.cat([src[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in chunk], dim=0)
            try:
                y = _forward(model, x, half=half)
            except torch.OutOfMemoryError:
                if b == 1:
                    raise ModelError(f"out of memory on a {h}x{w} tile; use a smaller tile (--tile / tile=)") from None
                b = max(1, b // 2)
                log.info("out of memory: retrying with batch %d", b)
                torch.cuda.empty_cache()
                continue
            if y.shape[-2:] != (h * scale, w * scale):
                raise ModelError(f"model returned {tuple(y.shape[-2:])} for a {h}x{w} input; expected x{scale}")
            for k, box in enumerate(chunk):
                out[box] = y[k : k + 1]
            i += len(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return out


def execute_plan(
    lr: np.ndarray,
    plan: RoutePlan,
    models: dict[int, nn.Module | None],
    sigma_lr: np.ndarray | None = None,
    *,
    batch: int | None = None,
    device: str | torch.device | None = None,
    half: bool | str = False,
    blend: str = "linear",
    clamp: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, float]]:
    """Run every route of ``plan`` on ``lr`` (float32 HWC in [0, 1]) and blend: (SR HWC float32, timings).

    ``models`` maps route ids (HEAVY=0, LIGHT=1) to networks; a 4-channel network gets the sigma map
    concatenated to the RGB input (EBM-SR). The bicubic route is MATLAB's bicubic (``upscale_bicubic_torch``).
    ``batch=None`` picks the batch size for the device. Timings are seconds per route plus 'blend'.
    """
    s = plan.scale
    arr = np.asarray(lr, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UsageError(f"routed SR needs an RGB HWC image, got shape {arr.shape}")
    if arr.shape[:2] != tuple(plan.shape):
        ph, pw = plan.shape
        raise UsageError(f"the plan was made for {ph}x{pw}, the image is {arr.shape[0]}x{arr.shape[1]}")
    if device is None:
        ps = [next(iter(m.parameters()), None) for m in models.values() if m is not None]
        device = ps[0].device if ps and ps[0] is not None else torch.device("cpu")
    device = torch.device(device)
    timings: dict[str, float] = {}
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].to(device)
    H, W = plan.shape
    bar = None
    if progress:
        from tqdm import tqdm

        n = sum(len({t.window for t in plan.tiles_of(r)}) for r in (HEAVY, LIGHT))
        bar = tqdm(total=n, unit="tile", leave=False, disable=None)
    outs_of: dict[int, tuple[dict, dict]] = {}
    for r in range(plan.routes):
        tiles = plan.tiles_of(r)
        if not tiles:
            continue
        t0 = time.perf_counter()
        if r == BICUBIC:  # MATLAB's bicubic (the field's baseline) on the whole image: cheaper than any tiling
            from blurwise.metrics.imresize import upscale_bicubic_torch

            outs = {(0, H, 0, W): upscale_bicubic_torch(x, s)}
            win = {t: (0, H, 0, W) for t in tiles}
        else:
            model = models.get(r)
            if model is None:
                raise UsageError(f"no model given for the {ROUTE_NAMES[r]} route")
            src = x
            in_ch = getattr(model, "in_channels", 3)
            if in_ch == 4:
                if sigma_lr is None:
                    raise UsageError(f"the {ROUTE_NAMES[r]} model takes a sigma map (4 input channels); none given")
                sig = torch.from_numpy(np.asarray(sigma_lr, dtype=np.float32))[None, None].to(device)
                src = torch.cat([x, sig], dim=1)
            elif in_ch != 3:
                raise ModelError(f"the {ROUTE_NAMES[r]} model takes {in_ch} input channels; routing feeds 3 or 4")
            if plan.full_image.get(r, False):
                win = {t: (0, H, 0, W) for t in tiles}
            else:
                win = {t: t.window for t in tiles}
            outs = _run_windows(model, src, sorted(set(win.values())), batch=batch, scale=s, half=half, progress=bar)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[ROUTE_NAMES[r]] = time.perf_counter() - t0
        outs_of[r] = (outs, win)
    t1 = time.perf_counter()
    # A route run once on the whole image (the light one, typically, with most of the tiles) is the base: the
    # blend starts from its output, where its tiles' weights already are, and adds only the other routes' tiles
    # as differences from it. The same sum as blending every tile onto zeros, for the other routes' tiles only.
    base_r = plan.base_route
    base = None
    if base_r is not None:
        base = outs_of[base_r][0][(0, H, 0, W)].float()
        acc = base.clone()
    else:
        acc = torch.zeros(1, 3, H * s, W * s, device=device)
    for r, (outs, win) in outs_of.items():
        if r == base_r:
            continue
        for t in plan.tiles_of(r):
            wy0, _, wx0, _ = win[t]
            oy0, oy1, ox0, ox1 = t.out
            y = outs[win[t]][:, :, (oy0 - wy0) * s : (oy1 - wy0) * s, (ox0 - wx0) * s : (ox1 - wx0) * s]
            add_weighted(acc, y, t, scale=s, overlap=plan.overlap, blend=blend, base=base)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    blend_time = time.perf_counter() - t1
    if bar is not None:
        bar.close()
    timings["blend"] = blend_time
    if clamp:
        acc = acc.clamp_(0, 1)
    return acc[0].permute(1, 2, 0).cpu().numpy(), timings
