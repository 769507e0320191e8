"""Routing plan: patch grid on the LR image, per-patch scores, route decisions, merged tiles, FLOPs.

The LR image is cut into a grid of small patches (16x16 LR px by default). Each patch gets a score
where *higher means safer to send to a cheaper route*: for defocus routing it is a conservative
statistic of the sigma map (the minimum over the patch and a margin around it, so a patch with any
in-focus content stays heavy). Patches are routed by thresholds on that score:

    score <  t_light                -> heavy   (route 0)
    t_light <= score < t_bicubic    -> light   (route 1, EBM-SR)
    score >= t_bicubic (routes=3)   -> bicubic (route 2)

Small patches keep the routing fine (a coarse grid wastes the cut: a 32x32 patch is far less often
*wholly* defocused than a 16x16 one), but every tile a model runs on needs a few pixels of context on
each side. So neighbouring patches of one route are merged into large rectangles (greedy maximal
rectangles per connected component), each rectangle becomes one tile, and its window is the
rectangle grown by ``overlap + context`` pixels (clamped at the image border, where the model's own
padding is exactly what a whole-image run sees, so no padding is needed there). Where a heavy tile
borders only cheaper routes, its blend band goes inside its core and the light model, run on the
whole image, fills it (``Tile.inset``): the heavy window then grows by ``side_context`` alone there.

FLOPs are counted from each model's ``ModelInfo.macs_per_pixel`` times the LR pixels of every window
it runs on (context included), plus the defocus-map estimation, and reported against running the
heavy model once on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from blurwise.errors import UsageError

HEAVY, LIGHT, BICUBIC = 0, 1, 2
ROUTE_NAMES = ("heavy", "light", "bicubic")

# Default threshold in HR pixels of Gaussian sigma (divided by the scale for the LR map): 1 px.
# reference.md: SR error of defocused content collapses with sigma_HR (bicubic x4: 25.9 dB in focus,
# 32.5 dB at 1 px, 41.3 dB at 2 px), so decisions cost PSNR only below ~1-2 px. The map estimated from
# the LR image has false positives, so the default comes from `benchmarks/routed_sr.py --calibrate 16`
# (16 defocus renders of BSD200 *training* images, x4, estimated map, EBM-SR sigma clamped to its
# training range): 0.75 / 1 / 1.5 px lose 0.038 / 0.030 / 0.010 dB on average (worst image 0.44 / 0.39 /
# 0.11 dB) and cut 20 / 18 / 15% of the FLOPs. 1 px is the lowest threshold within 0.04 dB on average
# (the 0.05 dB target less a margin) and 0.4 dB on every image; a better map would let it go lower.
DEFAULT_THRESHOLD_HR = 1.0
# Third route (bicubic) default: sigma_HR >= 4 px, where even bicubic is > 55 dB (reference.md).
DEFAULT_BICUBIC_THRESHOLD_HR = 4.0
# MACs of the bicubic route per output pixel (multiplied by scale^2 in plan_routes): MATLAB's bicubic runs as a
# 5x5 LR filter per output sub-pixel and channel (metrics.imresize.upscale_bicubic_torch), 3 x 25.
BICUBIC_MACS_PER_OUT_PX = 3 * 25
# Grid defaults (LR px), measured in docs/results/routed_sr.md: 4 px patches route finely (coarse
# patches lose the cut: a patch is only light when *all* of it is defocused); 1 px blend half-width
# (a 2*scale HR px cross-fade); 2 px context beyond it, which kept the trained heavy model within
# 0.005 dB of its whole-image output; tiles up to 256 px bound the memory.
DEFAULT_PATCH = 4
DEFAULT_MAX_TILE = 256  # LR px: the heavy tiles' bound (memory); the light model may still run on the whole image
DEFAULT_OVERLAP = 1
DEFAULT_CONTEXT = 2
# Context of a heavy tile on a side that borders only cheaper routes. There the two sides' outputs
# differ anyway (different models), so the heavy output need not match a whole-image run exactly;
# 1 px keeps the heavy model's border effects out of the blend band (both routes = the heavy model:
# Set5 -0.005 dB vs the whole image; 0 px: -0.010 dB) and, on 12 x4 calibration renders with the
# estimated map, cuts 51% instead of 48% of the FLOPs for 0.003 dB (scripts in benchmarks/routed_sr.py). With the
# blend band inside the core (``inset``, the default since session 27) it is the context beyond the core there.
DEFAULT_SIDE_CONTEXT = 1
# Least FLOPs saving a routed plan must reach (threshold routing), else the heavy model runs everywhere. A small
# saving does not pay on the CPU: the tiles' context and per-call costs eat it, and it still spends the light
# model's quality. Chosen on training renders (benchmarks/routed_fallback.py -> docs/results/routed_fallback.md:
# the router's 48 validation items and every 8th router-training image rendered and in focus, x4, 94 in all):
# the plans it turns into fallbacks ran 1.26x the heavy model's whole-image time when routed. Sample speed-up by
# min saving 0 / 0.1 / 0.15 / 0.2 / 0.25 / 0.3 / 0.4: 1.409 / 1.424 / 1.427 / 1.436 / 1.434 / 1.430 / 1.393x
# (0.2 was also the best in a first run at 1.451x); 0.2 is the smallest within 0.5% of the best. With the heavy bands
# inside the cores (session 27) the sample's speed-up is flat in it (2.05-2.09x up to 0.35) and those plans run as fast
# routed as not (1.01x), so speed no longer chooses; 0.2 stays, keeping images routing would save little on whole.
DEFAULT_MIN_SAVING = 0.2


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open, LR pixels)


@dataclass(frozen=True)
class Tile:
    """One merged rectangle of same-route patches and the window a model runs on for it.

    ``core`` is the union of the tile's patches; ``out`` the region where its blend weight is > 0
    (core grown by the overlap, clamped); ``window`` the input region computed (core grown by
    overlap + context, clamped). All boxes are (y0, y1, x0, x1) in LR pixels. ``inset`` (top,
    bottom, left, right; LR px) moves the blend band of those sides inside the core: the weight
    ramps up from 0 at the core's edge, ``out`` ends there, and the route the plan runs on the whole
    image (:attr:`RoutePlan.base_route`) fills the rest, so the window needs no overlap on that side.
    """

    route: int
    core: Box
    out: Box
    window: Box
    inset: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def blend_core(self) -> Box:
        """The box whose indicator, smoothed across the blend band, is the tile's weight (``core`` less ``inset``)."""
        y0, y1, x0, x1 = self.core
        t, b, lf, rt = self.inset
        return (y0 + t, y1 - b, x0 + lf, x1 - rt)

    @property
    def window_pixels(self) -> int:
        """LR pixels the model processes for this tile (context included)."""
        y0, y1, x0, x1 = self.window
        return (y1 - y0) * (x1 - x0)

    @property
    def window_shape(self) -> tuple[int, int]:
        """(height, width) of the window: tiles of equal window shape are batched together."""
        y0, y1, x0, x1 = self.window
        return (y1 - y0, x1 - x0)


@dataclass
class RoutePlan:
    """Everything decided before any model runs: grid, scores, routes, tiles and the compute estimate."""

    shape: tuple[int, int]  # LR (H, W)
    scale: int
    patch: int
    overlap: int
    context: int
    routes: int
    thresholds: tuple[float, ...]  # (t_light,) or (t_light, t_bicubic), in score units
    scores: np.ndarray  # float32 (gh, gw)
    route_grid: np.ndarray  # int8 (gh, gw)
    tiles: list[Tile]
    full_image: dict[int, bool]  # route -> run that route once on the whole image instead of tiles
    macs_per_pixel: dict[int, float]  # route -> MACs per LR input pixel
    map_macs: float = 0.0
    scorer: str = "defocus"
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ geometry
    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of patch rows and columns."""
        return self.route_grid.shape  # type: ignore[return-value]

    def patch_boxes(self) -> np.ndarray:
        """(gh*gw, 4) int array of patch boxes (y0, y1, x0, x1), row-major; edge patches may be smaller."""
        gh, gw = self.grid_shape
        ys = _edges(self.shape[0], self.patch)
        xs = _edges(self.shape[1], self.patch)
        b = np.zeros((gh, gw, 4), dtype=np.int64)
        b[..., 0] = ys[:-1, None]
        b[..., 1] = ys[1:, None]
        b[..., 2] = xs[None, :-1]
        b[..., 3] = xs[None, 1:]
        return b.reshape(-1, 4)

    def tiles_of(self, route: int) -> list[Tile]:
        """The merged tiles of one route."""
        return [t for t in self.tiles if t.route == route]

    def per_pixel(self, grid: np.ndarray) -> np.ndarray:
        """A per-patch array (``grid_shape``) expanded to every LR pixel (H, W) of its patch."""
        return cells_to_pixels(grid, self.shape, self.patch)

    def route_map(self) -> np.ndarray:
        """int8 (H, W) map of the route of every LR pixel."""
        return self.per_pixel(self.route_grid)

    # ------------------------------------------------------------------ accounting
    def fractions(self) -> dict[str, float]:
        """Fraction of LR pixels assigned to each route (by patch area)."""
        area = np.outer(np.diff(_edges(self.shape[0], self.patch)), np.diff(_edges(self.shape[1], self.patch)))
        total = int(area.sum())  # the patch areas, not a per-pixel route map: the same counts, less work
        return {ROUTE_NAMES[r]: int(area[self.route_grid == r].sum()) / total for r in range(self.routes)}

    def route_pixels(self, route: int) -> int:
        """LR pixels the model of ``route`` processes (all its windows, or the whole image)."""
        if not any(t.route == route for t in self.tiles):
            return 0
        if self.full_image.get(route, False):
            return self.shape[0] * self.shape[1]
        return sum(t.window_pixels for t in _unique_windows(self.tiles_of(route)))

    def macs(self) -> dict[str, float]:
        """MACs per route (context and overlap included) and of the defocus map."""
        out = {ROUTE_NAMES[r]: self.route_pixels(r) * self.macs_per_pixel.get(r, 0.0) for r in range(self.routes)}
        out["map"] = float(self.map_macs)
        return out

    @property
    def full_heavy_macs(self) -> float:
        """MACs of the heavy model on the whole image (the reference the cut is measured against)."""
        return self.shape[0] * self.shape[1] * self.macs_per_pixel[HEAVY]

    @property
    def total_macs(self) -> float:
        """All MACs of the routed pipeline, map estimation included."""
        return float(sum(self.macs().values()))

    @property
    def macs_fraction(self) -> float:
        """Total routed MACs as a fraction of the heavy model on the whole image."""
        return self.total_macs / max(self.full_heavy_macs, 1e-12)

    @property
    def has_inset(self) -> bool:
        """Whether a heavy tile's blend band lies inside its core on some side (``Tile.inset``)."""
        return any(any(t.inset) for t in self.tiles)

    @property
    def base_route(self) -> int | None:
        """The route run once on the whole image that the blend starts from (None: no route is): the light
        route when a heavy tile's blend band lies inside its core (``Tile.inset``: the light output fills the
        band), else the one with the most tiles (the blend then weighs the fewest tiles)."""
        whole = [r for r in range(self.routes) if self.full_image.get(r, False) and self.tiles_of(r)]
        if not whole:
            return None
        if LIGHT in whole and self.has_inset:
            return LIGHT
        return max(whole, key=lambda r: len(self.tiles_of(r)))

    @property
    def overhead(self) -> float:
        """Window pixels / core pixels of the tiled routes (1.0 = no context overhead)."""
        core = win = 0
        for r in range(self.routes):
            ts = self.tiles_of(r)
            if not ts or r == BICUBIC:
                continue
            core += sum((t.core[1] - t.core[0]) * (t.core[3] - t.core[2]) for t in ts)
            win += self.route_pixels(r)
        return win / max(core, 1)


# ---------------------------------------------------------------------- scores


def _edges(n: int, patch: int) -> np.ndarray:
    """Patch edges along one axis: 0, patch, 2*patch, ..., n (the last patch may be smaller)."""
    e = list(range(0, n, patch)) + [n]
    if len(e) >= 3 and e[-1] - e[-2] < max(1, patch // 4):  # fold a sliver into the previous patch
        e.pop(-2)
    return np.asarray(e, dtype=np.int64)


def cells_to_pixels(grid: np.ndarray, shape: tuple[int, int], patch: int) -> np.ndarray:
    """A per-patch array (``grid_shape(shape, patch)``) expanded to every pixel (H, W) of its patch, for
    whatever must be read per pixel (a route map, a training mask)."""
    ys, xs = _edges(shape[0], patch), _edges(shape[1], patch)
    rows = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    cols = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    return np.asarray(grid)[rows][:, cols]


def grid_shape(shape: tuple[int, int], patch: int) -> tuple[int, int]:
    """(rows, cols) of the patch grid for an LR image of ``shape`` (H, W)."""
    return len(_edges(shape[0], patch)) - 1, len(_edges(shape[1], patch)) - 1


def _pool(values: np.ndarray, patch: int, margin: int, stat: str | float) -> np.ndarray:
    """Statistic of ``values`` (H, W) over every patch grown by ``margin`` pixels (clamped)."""
    h, w = values.shape
    ys, xs = _edges(h, patch), _edges(w, patch)
    if stat in ("min", "max", "mean") and margin >= 0:
        # Separable running statistic, then one read per patch: fast for large images.
        if stat == "mean":
            return _pool_means(values, patch, (margin,))[0]
        # Row pass then column pass over whole patch extents: pool each patch's rows/cols block.
        v = values.astype(np.float32)
        op = np.minimum if stat == "min" else np.maximum
        if margin > 0:
            v = _running(_running(v, margin, 0, op), margin, 1, op)
        return op.reduceat(op.reduceat(v, ys[:-1], axis=0), xs[:-1], axis=1).astype(np.float32)
    return _pool_percentile(values, ys, xs, margin, float(stat))


# The few neighbourhood filters of the routing path, in numpy. They give the same numbers as scipy.ndimage's
# (minimum/maximum_filter1d with mode "nearest", sobel and laplace with mode "reflect"; tests compare them), and
# spare every process that routes the ~0.25 s it takes to import scipy.ndimage.


def _taps(v: np.ndarray, r: int, axis: int, mode: Literal["edge", "symmetric"]) -> list[np.ndarray]:
    """The ``2 * r + 1`` views of a plane shifted by -r .. r samples along ``axis`` (0 or 1), each the size of
    ``v``; beyond the ends the plane is extended by ``np.pad``'s ``mode`` ("edge" or "symmetric")."""
    n = v.shape[axis]
    p = np.pad(v, ((r, r), (0, 0)) if axis == 0 else ((0, 0), (r, r)), mode=mode)
    return [p[k : k + n] if axis == 0 else p[:, k : k + n] for k in range(2 * r + 1)]


def _running(v: np.ndarray, margin: int, axis: int, op: Any) -> np.ndarray:
    """Running min or max (``op``: ``np.minimum`` or ``np.maximum``) over ``2 * margin + 1`` samples along
    ``axis`` (0 or 1), the edge samples repeated beyond the ends."""
    first, *rest = _taps(v, margin, axis, "edge")
    out = first.copy()
    for t in rest:
        op(out, t, out=out)
    return out


def _diff(v: np.ndarray, axis: int) -> np.ndarray:
    """Central difference ``v[i + 1] - v[i - 1]`` of a float32 plane along ``axis`` (reflect borders), as
    ``scipy.ndimage.correlate1d(v, [-1, 0, 1])``: IEEE float32 subtraction rounds the exact difference, as
    rounding scipy's float64 one does."""
    before, _, after = _taps(v, 1, axis, "symmetric")
    return after - before


def _sym3(v: np.ndarray, centre: float, axis: int) -> np.ndarray:
    """``v[i - 1] + centre * v[i] + v[i + 1]`` of a float32 plane along ``axis`` (reflect borders), as
    ``scipy.ndimage.correlate1d(v, [1, centre, 1])``: summed in float64 (exact for a small integer ``centre``)
    and rounded once to float32."""
    before, mid, after = _taps(v.astype(np.float64), 1, axis, "symmetric")
    out = before + after
    out += mid * centre
    return out.astype(np.float32)


def _laplace(y: np.ndarray) -> np.ndarray:
    """Discrete Laplacian of a float32 plane (reflect borders), as ``scipy.ndimage.laplace``."""
    y = np.asarray(y, dtype=np.float32)
    return _sym3(y, -2.0, 0) + _sym3(y, -2.0, 1)


def _pool_means(values: np.ndarray, patch: int, margins: tuple[int, ...]) -> list[np.ndarray]:
    """Mean of ``values`` (H, W) over every patch grown by each of ``margins`` (clamped): one summed-area table
    for all of them, every window's sum from four corner reads."""
    h, w = values.shape
    ys, xs = _edges(h, patch), _edges(w, patch)
    cs = np.zeros((h + 1, w + 1), np.float64)
    cs[1:, 1:] = values
    cs = cs.cumsum(0).cumsum(1)
    out = []
    for margin in margins:
        y0, y1 = np.maximum(ys[:-1] - margin, 0), np.minimum(ys[1:] + margin, h)
        x0, x1 = np.maximum(xs[:-1] - margin, 0), np.minimum(xs[1:] + margin, w)
        s = cs[y1][:, x1] - cs[y0][:, x1] - cs[y1][:, x0] + cs[y0][:, x0]
        out.append((s / ((y1 - y0)[:, None] * (x1 - x0)[None, :])).astype(np.float32))
    return out


def _window_index(edges: np.ndarray, margin: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch along one axis: the pixel indices of its window (patch grown by margin, clamped) padded
    to a common length, and which of them are real (the rest repeat a valid index and are masked)."""
    lo = np.maximum(edges[:-1] - margin, 0)
    hi = np.minimum(edges[1:] + margin, n)
    idx = lo[:, None] + np.arange(int((hi - lo).max()))[None, :]
    valid = idx < hi[:, None]
    return np.where(valid, idx, lo[:, None]), valid


def _pool_percentile(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, margin: int, q: float) -> np.ndarray:
    """``np.percentile(window, q)`` (linear interpolation) of every patch window, all windows at once."""
    iy, vy = _window_index(ys, margin, values.shape[0])
    ix, vx = _window_index(xs, margin, values.shape[1])
    win = values.astype(np.float64)[iy[:, None, :, None], ix[None, :, None, :]]  # (gh, gw, Ly, Lx)
    ok = vy[:, None, :, None] & vx[None, :, None, :]
    flat = np.where(ok, win, np.inf).reshape(win.shape[0], win.shape[1], -1)
    flat.sort(axis=-1)  # the padding (inf) sorts last
    n = ok.reshape(flat.shape).sum(axis=-1)
    pos = (q / 100.0) * (n - 1)
    k0 = np.floor(pos).astype(np.int64)
    k1 = np.minimum(k0 + 1, n - 1)
    a = np.take_along_axis(flat, k0[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(flat, k1[..., None], axis=-1)[..., 0]
    return (a + (b - a) * (pos - k0)).astype(np.float32)


def defocus_scores(
    sigma_lr: np.ndarray, *, patch: int = DEFAULT_PATCH, margin: int = 1, stat: str | float = "min"
) -> np.ndarray:
    """Per-patch defocus score (sigma, LR px): ``stat`` of the map over the patch plus ``margin``.

    ``stat="min"`` (default) is conservative: one in-focus pixel anywhere in the patch or within
    the blend margin around it keeps the patch on the heavy route. A number (e.g. 5) takes that
    percentile instead, which tolerates isolated low values in a noisy estimated map.
    """
    sigma = np.asarray(sigma_lr, dtype=np.float32)
    if sigma.ndim != 2:
        raise UsageError(f"the sigma map must be a 2-D (H, W) array, got shape {sigma.shape}")
    return _pool(np.nan_to_num(sigma, nan=0.0), patch, margin, stat)


# Budget routing on a defocus map ranks patches by blur; patches of equal blur (a calibrated map is
# flat at its floor, often over much of the image) are ranked by texture, smoothest first, through
# a tie-break far below any blur difference that matters (1e-4 LR px), so a budget can be met finely.
TIE_BREAK = 1e-4


def break_ties(scores: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """``scores`` with ties ordered by ``secondary`` (higher first), shifted by less than ``TIE_BREAK``."""
    sec = np.asarray(secondary, dtype=np.float64).ravel()
    rank = np.empty(sec.size, dtype=np.float64)
    rank[np.argsort(sec, kind="stable")] = np.arange(sec.size) / max(sec.size, 1)
    return np.asarray(scores, np.float64) + TIE_BREAK * rank.reshape(scores.shape)


def _luma(lr: np.ndarray) -> np.ndarray:
    """BT.601 luma (float32 HW) of an HWC image with >= 3 channels (extra channels ignored), or the HW plane."""
    img = np.asarray(lr, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] >= 3:
        return img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return img.reshape(img.shape[:2])


def _grad_energy(y: np.ndarray) -> np.ndarray:
    """Squared Sobel gradient magnitude of a plane (the texture cue of the texture scores and the router)."""
    y = np.asarray(y, dtype=np.float32)
    gx = _sym3(_diff(y, 1), 2.0, 0)  # as scipy.ndimage.sobel
    gy = _sym3(_diff(y, 0), 2.0, 1)
    return gx * gx + gy * gy


def texture_scores(lr: np.ndarray, *, patch: int = DEFAULT_PATCH, margin: int = 1) -> np.ndarray:
    """ClassSR-style texture score: minus log mean gradient energy of the luminance per patch.

    Higher = smoother = safer to route light. Gradient energy (Sobel, squared) is a standard cue
    for how much an SR network can add to a patch; it is blind to *why* a patch is smooth.
    """
    energy = _pool(_grad_energy(_luma(lr)), patch, margin, "mean")
    return (-np.log10(energy + 1e-8)).astype(np.float32)


def random_scores(shape: tuple[int, int], *, patch: int = DEFAULT_PATCH, seed: int = 0) -> np.ndarray:
    """Uniform random per-patch scores (the baseline every router must beat)."""
    return np.random.default_rng(seed).random(grid_shape(shape, patch)).astype(np.float32)


# ---------------------------------------------------------------------- merging


def merge_rectangles(mask: np.ndarray, max_cells: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """Cover the True cells of ``mask`` exactly by disjoint rectangles (r0, r1, c0, c1), few and large.

    Row runs: each row's maximal runs of True cells (split every ``max_cells[1]`` columns), then runs
    with the same column span in consecutive rows are stacked into one rectangle (split every
    ``max_cells[0]`` rows; ``max_cells`` caps the rectangle size, for memory). All runs at once (the
    planner calls this for every box it weighs), listed by end row, start row, then column.
    """
    rows, cols = mask.shape
    mr, mc = max_cells if max_cells is not None else (rows, cols)
    m8 = np.zeros((rows, cols + 2), np.int8)  # one empty column on each side (np.pad costs more here)
    m8[:, 1:-1] = mask
    d = m8[:, 1:] - m8[:, :-1]
    r, c0 = np.nonzero(d == 1)  # row-major, so starts and ends pair up in order
    c1 = np.nonzero(d == -1)[1]
    if r.size == 0:
        return []
    n = (c1 - c0 + mc - 1) // mc  # pieces per run
    if n.max() > 1:
        run = np.repeat(np.arange(r.size), n)
        k = np.arange(run.size) - np.repeat(np.cumsum(n) - n, n)
        r, start = r[run], c0[run] + k * mc
        c0, c1 = start, np.minimum(start + mc, c1[run])
    o = np.lexsort((r, c1, c0))  # by span, then row: a stack is a stretch of consecutive rows
    rs, a, b = r[o], c0[o], c1[o]
    new = np.ones(rs.size, bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (rs[1:] != rs[:-1] + 1)
    piece = (rs - rs[new][np.cumsum(new) - 1]) // mr  # stacks split every mr rows
    cut = new.copy()
    cut[1:] |= piece[1:] != piece[:-1]
    st = np.flatnonzero(cut)
    en = np.append(st[1:], rs.size) - 1
    r0, r1, a0, b0 = rs[st], rs[en] + 1, a[st], b[st]
    o = np.lexsort((a0, r0, r1))
    return list(zip(r0[o].tolist(), r1[o].tolist(), a0[o].tolist(), b0[o].tolist(), strict=True))


DENSE = 0.9  # guillotine_cover (without a ``settled`` rule) stops at boxes whose cells are this much True already
LEAF_CELLS = 4  # ... and at boxes of at most this many cells
# The planner's rule for a settled heavy box (taken whole, not searched for cuts): its promoted cells' pixels are
# fewer than SETTLE x what the cheapest cut could add (full context on both sides of a cut across the box's
# shorter side, plus a tile). Searching such boxes took a large part of the planning time and rarely paid. Chosen on
# training renders (benchmarks/routed_planner.py -> docs/results/routed_planner.md) as the largest value whose
# plans stay within 0.05 points of the heavy FLOPs of the former density rule (DENSE, SETTLE = 0).
SETTLE = 0.8


def guillotine_cover(
    mask: np.ndarray,
    cost: Callable[..., Any],
    max_cells: tuple[int, int] | None = None,
    settled: Callable[[tuple[int, int, int, int], int], bool] | None = None,
) -> list[tuple[int, int, int, int]]:
    """Disjoint rectangles (r0, r1, c0, c1) covering every True cell of ``mask``, cheap under ``cost``.

    Rectangles may include False cells (the caller promotes them): a blob is often cheaper as its
    bounding box with one ring of context than as several exact rectangles that each need their own.
    Top-down: take the tight bounding box of the True cells; find the cheapest horizontal or vertical
    cut (each side reduced to its tight bounding box), cover both sides the same way, and keep the
    cut when the two covers cost less than the box (or the box exceeds ``max_cells``), so cuts that
    pay off only one level deeper (a scattered mask) are found too. Each box also weighs the exact
    row-run cover of its cells (:func:`merge_rectangles`), which a frame or ring needs. A box is kept whole
    without a search when it has at most ``LEAF_CELLS`` cells or ``settled(box, empty_cells)`` says so
    (default: more than ``DENSE`` of its cells True).
    """
    if not mask.any():
        return []

    def tight(r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int] | None:
        sub = mask[r0:r1, c0:c1]
        rows = sub.any(axis=1)
        if not rows.any():
            return None
        cols = sub.any(axis=0)
        n, m = rows.size, cols.size
        return (
            r0 + int(rows.argmax()),
            r0 + n - int(rows[::-1].argmax()),
            c0 + int(cols.argmax()),
            c0 + m - int(cols[::-1].argmax()),
        )

    def best_cut(box: tuple[int, int, int, int], forced: tuple[bool, bool]) -> tuple[float, tuple | None]:
        r0, r1, c0, c1 = box
        sub = mask[r0:r1, c0:c1]
        cand_a, cand_b = [], []  # both sides of every candidate cut, both axes, priced in one call
        for axis in (0, 1):
            m = sub if axis == 0 else sub.T
            n = m.shape[0]
            if n < 2 or (any(forced) and not forced[axis]):
                continue
            # Per row: whether it holds a True cell, its first and last True column; the two sides of
            # the cut after row k span rows [0, k] and [k + 1, n), so their column spans are running
            # minima / maxima of those (1-D scans instead of OR-accumulating the whole box).
            rany = m.any(axis=1)
            rf = np.where(rany, m.argmax(axis=1), m.shape[1])
            rl = np.where(rany, m.shape[1] - 1 - m[:, ::-1].argmax(axis=1), -1)
            idx = np.arange(n)
            first_row = int(rany.argmax())
            last_upto = np.maximum.accumulate(np.where(rany, idx, -1))[:-1]
            first_from = np.minimum.accumulate(np.where(rany, idx, n)[::-1])[::-1][1:]
            last_row = n - 1 - int(rany[::-1].argmax())
            ta, ba = last_upto >= 0, first_from < n
            tf, tl = np.minimum.accumulate(rf)[:-1], np.maximum.accumulate(rl)[:-1]
            bf, bl = np.minimum.accumulate(rf[::-1])[::-1][1:], np.maximum.accumulate(rl[::-1])[::-1][1:]
            ks = np.flatnonzero(ta & ba)
            if forced[axis]:  # too big: only near-halving cuts, so the pieces shrink geometrically
                ks = ks[np.abs(ks + 1 - n / 2) <= max(1, n // 8)]
            if ks.size == 0:
                continue
            # (r0, r1, c0, c1) of both sides, box coordinates made absolute (rows and columns swap for axis 1)
            (ra, rb, ca, cb), (o_r, o_c) = ((0, 1, 2, 3), (r0, c0)) if axis == 0 else ((2, 3, 0, 1), (c0, r0))
            a, b = np.empty((4, ks.size), np.int64), np.empty((4, ks.size), np.int64)
            a[ra], a[rb], a[ca], a[cb] = first_row + o_r, last_upto[ks] + (1 + o_r), tf[ks] + o_c, tl[ks] + (1 + o_c)
            b[ra], b[rb], b[ca], b[cb] = first_from[ks] + o_r, last_row + 1 + o_r, bf[ks] + o_c, bl[ks] + (1 + o_c)
            cand_a.append(a)
            cand_b.append(b)
        if not cand_a:
            return (np.inf, None)
        a, b = np.concatenate(cand_a, axis=1), np.concatenate(cand_b, axis=1)
        both = np.asarray(cost(*np.concatenate([a, b], axis=1)))
        c = both[: a.shape[1]] + both[a.shape[1] :]
        i = int(np.argmin(c))  # the first cheapest: rows before columns, as one axis after the other
        return (float(c[i]), (tuple(int(v) for v in a[:, i]), tuple(int(v) for v in b[:, i])))

    def too_big(box: tuple[int, int, int, int]) -> tuple[bool, bool]:
        if max_cells is None:
            return (False, False)
        return (box[1] - box[0] > max_cells[0], box[3] - box[2] > max_cells[1])

    def box_or_exact(box: tuple[int, int, int, int], own: float) -> tuple[float, list[tuple[int, int, int, int]]]:
        # The box, or the exact row-run cover of its cells (merge_rectangles) when that is cheaper: a
        # frame of cells has no good single cut (each half's bounding box still spans the hole, and
        # greedy cuts peel it row by row), yet its four sides cost a fraction of the box.
        r0, r1, c0, c1 = box
        if min(r1 - r0, c1 - c0) < 3:
            return own, [box]
        rects = merge_rectangles(mask[r0:r1, c0:c1], max_cells)
        if len(rects) > 1:
            arr = np.asarray(rects, dtype=np.int64).T + np.array([r0, r0, c0, c0])[:, None]
            c = float(np.sum(cost(*arr)))
            if c < own:
                return c, [tuple(int(v) for v in col) for col in arr.T]
        return own, [box]

    def solve(box: tuple[int, int, int, int] | None) -> tuple[float, list[tuple[int, int, int, int]]]:
        # Best single cut, then each side solved the same way; the cut is kept when the two covers
        # together are cheaper than the box (looking past cuts that only pay off a level deeper).
        if box is None:
            return 0.0, []
        own = float(cost(*box))
        forced = too_big(box)
        sub = mask[box[0] : box[1], box[2] : box[3]]
        if not any(forced) and (
            sub.size <= LEAF_CELLS
            or (settled(box, int(sub.size - np.count_nonzero(sub))) if settled else sub.mean() > DENSE)
        ):
            return own, [box]  # tiny or (nearly) full: no cut can save much
        c, parts = best_cut(box, forced)
        # Every cut is explored, however much it costs at this level: pruning cuts above 1.05 x the box
        # gave up on frame-shaped regions, where each half of any single cut still spans the hole and
        # pays context on the cut (a render whose in-focus region framed its defocused centre went all
        # heavy: 101% of the FLOPs instead of 86%), for ~10% less planning time.
        if parts is None:
            return box_or_exact(box, own)
        ca, la = solve(tight(*parts[0]))
        cb, lb = solve(tight(*parts[1]))
        if any(forced):
            return ca + cb, la + lb
        ce, le = box_or_exact(box, own)
        return (ca + cb, la + lb) if ca + cb < ce else (ce, le)

    return solve(tight(0, mask.shape[0], 0, mask.shape[1]))[1]


def _unique_windows(tiles: list[Tile]) -> list[Tile]:
    seen: dict[Box, Tile] = {}
    for t in tiles:
        seen.setdefault(t.window, t)
    return list(seen.values())


def _grow(box: Box, by: int, shape: tuple[int, int]) -> Box:
    y0, y1, x0, x1 = box
    return (max(y0 - by, 0), min(y1 + by, shape[0]), max(x0 - by, 0), min(x1 + by, shape[1]))


# ---------------------------------------------------------------------- planning


def _grow_sides(box: Box, by: tuple[int, int, int, int], shape: tuple[int, int]) -> Box:
    y0, y1, x0, x1 = box
    t, b, lf, rt = by
    return (max(y0 - t, 0), min(y1 + b, shape[0]), max(x0 - lf, 0), min(x1 + rt, shape[1]))


def _heavy_sides(grid: np.ndarray, pad: int, cheap_pad: int) -> Callable[..., tuple[Any, Any, Any, Any]]:
    """``sides(r0, r1, c0, c1)`` -> window growth (top, bottom, left, right) of a heavy rectangle of cells
    (vectorised over arrays of rectangles): the full ``pad`` on a side that touches another heavy cell
    of ``grid`` (incl. diagonally), where the two heavy outputs must agree as in a whole-image run, and
    ``cheap_pad`` on a side that touches only cheaper routes, whose outputs differ anyway."""
    # Prefix sums of the heavy cells, padded by one empty cell all round: any strip in O(1).
    cum = np.pad(np.pad(grid == HEAVY, 1).astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    rows = cum.tolist()  # the same table for one box at a time (plain ints: no numpy call per lookup)

    def sides(r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[Any, Any, Any, Any]:
        if cheap_pad >= pad:
            return (pad, pad, pad, pad)
        if type(r0) is int:  # one box (the planner's most frequent query): the four strips' sums inline
            top, below, up, down = rows[r0], rows[r0 + 1], rows[r1 + 1], rows[r1 + 2]  # padded rows
            w0, w1 = c0, c1 + 2  # padded columns of a strip one cell wider than the box on each side
            return (
                pad if below[w1] - top[w1] - below[w0] + top[w0] > 0 else cheap_pad,  # row above
                pad if down[w1] - up[w1] - down[w0] + up[w0] > 0 else cheap_pad,  # row below
                pad if down[c0 + 1] - top[c0 + 1] - down[c0] + top[c0] > 0 else cheap_pad,  # left column
                pad if down[w1] - top[w1] - down[c1 + 1] + top[c1 + 1] > 0 else cheap_pad,  # right column
            )
        # Arrays of boxes: the same four strips from one gather of the 4 x 4 prefix-sum corners they use.
        g = cum[np.array((r0, r0 + 1, r1 + 1, r1 + 2))[:, None], np.array((c0, c0 + 1, c1 + 1, c1 + 2))[None]]
        return (
            np.where(g[1, 3] - g[0, 3] - g[1, 0] + g[0, 0] > 0, pad, cheap_pad),
            np.where(g[3, 3] - g[2, 3] - g[3, 0] + g[2, 0] > 0, pad, cheap_pad),
            np.where(g[3, 1] - g[0, 1] - g[3, 0] + g[0, 0] > 0, pad, cheap_pad),
            np.where(g[3, 3] - g[0, 3] - g[3, 2] + g[0, 2] > 0, pad, cheap_pad),
        )

    return sides


# An inset must leave the blend core at least this many blend half-widths (overlap) a side, so the heavy
# output keeps full weight somewhere: thinner heavy tiles keep their blend band outside the core on that axis.
INSET_MIN_CORE = 2


def _insets(core: Box, grow: tuple[int, ...], shape: tuple[int, int], overlap: int, cheap_pad: int) -> tuple[int, ...]:
    """Per side (top, bottom, left, right), ``overlap`` where a heavy tile's blend band goes inside its core: a
    side that borders only cheaper routes (grown by ``cheap_pad``), not on the image border, on an axis whose
    core stays at least ``INSET_MIN_CORE * overlap`` wide after its insets."""
    y0, y1, x0, x1 = core
    on_border = (y0 == 0, y1 == shape[0], x0 == 0, x1 == shape[1])
    ins = [overlap if g == cheap_pad and not b else 0 for g, b in zip(grow, on_border, strict=True)]
    for a, extent in ((0, y1 - y0), (2, x1 - x0)):
        if extent - ins[a] - ins[a + 1] < INSET_MIN_CORE * overlap:
            ins[a] = ins[a + 1] = 0
    return tuple(ins)


def _decide(scores: np.ndarray, thresholds: tuple[float, ...], routes: int) -> np.ndarray:
    grid = np.where(scores >= thresholds[0], LIGHT, HEAVY).astype(np.int8)
    if routes == 3:
        grid[scores >= thresholds[1]] = BICUBIC
    return grid


def _fill_small_light(grid: np.ndarray, min_cells: int) -> np.ndarray:
    """Promote cheap-route components smaller than ``min_cells`` patches to heavy (quality and cost win:
    their windows would be mostly context)."""
    if min_cells <= 1:
        return grid
    g = grid.copy()
    if min_cells == 2:  # the default: single cheap patches with no cheap 4-neighbour (no labelling needed)
        cheap = np.pad(g != HEAVY, 1)
        alone = cheap[1:-1, 1:-1] & ~(cheap[:-2, 1:-1] | cheap[2:, 1:-1] | cheap[1:-1, :-2] | cheap[1:-1, 2:])
        g[alone] = HEAVY
        return g
    from scipy import ndimage

    labels, n = ndimage.label(g != HEAVY)
    if n:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        small = np.isin(labels, np.flatnonzero(sizes < min_cells) + 1)
        g[small] = HEAVY
    return g


def _route_grid(
    scores: np.ndarray,
    thresholds: tuple[float, ...],
    routes: int,
    min_light_cells: int,
    light_floor: np.ndarray | None = None,
    keep_heavy: np.ndarray | None = None,
    bicubic_ok: np.ndarray | None = None,
) -> np.ndarray:
    """Each patch's route before the tile cover: thresholds, the light floor, the kept-heavy patches, the
    light patches that may go bicubic, then cheap components too small to pay for their context promoted
    to heavy."""
    grid = _decide(scores, thresholds, routes)
    if light_floor is not None:  # patches that go at least light whatever their score
        grid[(grid == HEAVY) & light_floor] = LIGHT
    if keep_heavy is not None:  # patches that stay heavy whatever their score (and the light floor)
        grid[keep_heavy] = HEAVY
    if bicubic_ok is not None and routes == 3:  # a second opinion on the cheap side (e.g. the map's blur)
        grid[(grid == LIGHT) & bicubic_ok] = BICUBIC
    return _fill_small_light(grid, min_light_cells)


def _build(
    shape: tuple[int, int],
    grid: np.ndarray,
    *,
    routes: int,
    patch: int,
    overlap: int,
    context: int,
    max_tile: int,
    tile_cost: int,
    side_context: int,
    inset: bool = False,
) -> tuple[np.ndarray, list[Tile]]:
    """The tiles each route runs on for a route grid (:func:`_route_grid`); returns the grid after the
    heavy cover's promotions and the tiles. ``inset``: heavy sides that border only cheaper routes put
    their blend band inside the core (``Tile.inset``; the caller runs the light route on the whole image)."""
    grid = grid.copy()
    ys, xs = _edges(shape[0], patch), _edges(shape[1], patch)
    cells = max(1, max_tile // patch)
    pad = overlap + context

    def core_of(r0: int, r1: int, c0: int, c1: int) -> Box:
        return (int(ys[r0]), int(ys[r1]), int(xs[c0]), int(xs[c1]))

    inset = inset and overlap > 0
    # A heavy side next to cheaper routes only: the blend band outside the core, then side_context (standard),
    # or the band inside the core and side_context beyond the core (inset): the heavy output used has the
    # same context either way.
    cheap_pad = side_context if inset else overlap + side_context
    sides = _heavy_sides(grid, pad, cheap_pad)  # the cover's cost knows which sides need full context

    ysl, xsl = ys.tolist(), xs.tolist()

    def window_cost(r0: Any, r1: Any, c0: Any, c1: Any) -> Any:
        # Window pixels (core grown by overlap + context on sides next to other heavy cells, by overlap
        # + side_context elsewhere; clamped) plus a per-tile charge; vectorised over candidate boxes.
        pt, pb, pl, pr = sides(r0, r1, c0, c1)
        if type(r0) is int:  # one box: plain ints
            h = min(ysl[r1] + pb, shape[0]) - max(ysl[r0] - pt, 0)
            return h * (min(xsl[c1] + pr, shape[1]) - max(xsl[c0] - pl, 0)) + tile_cost
        h = np.minimum(ys[r1] + pb, shape[0]) - np.maximum(ys[r0] - pt, 0)
        w = np.minimum(xs[c1] + pr, shape[1]) - np.maximum(xs[c0] - pl, 0)
        return h * w + tile_cost

    def settled(box: Box, empty: int) -> bool:  # SETTLE's rule: too few promoted pixels to pay for any cut
        side = min(ysl[box[1]] - ysl[box[0]], xsl[box[3]] - xsl[box[2]])
        return empty * patch * patch < SETTLE * (2 * pad * side + tile_cost)

    tiles: list[Tile] = []
    # Heavy: cost-aware cover; cheap-route cells inside a heavy rectangle are promoted to heavy
    # (computed anyway, so the best model is free there).
    rects = guillotine_cover(grid == HEAVY, window_cost, (cells, cells), settled if SETTLE > 0 else None)
    for r0, r1, c0, c1 in rects:
        grid[r0:r1, c0:c1] = HEAVY
    final_sides = _heavy_sides(grid, pad, cheap_pad)  # neighbours after the promotion
    for r0, r1, c0, c1 in rects:
        core = core_of(r0, r1, c0, c1)
        grow = tuple(int(v) for v in final_sides(r0, r1, c0, c1))
        ins = _insets(core, grow, shape, overlap, cheap_pad) if inset else (0, 0, 0, 0)
        if inset:  # a cheap side left without an inset (a thin tile) has its band outside the core: overlap more
            grow = tuple(g + overlap if g == cheap_pad and not i else g for g, i in zip(grow, ins, strict=True))
        window = _grow_sides(core, grow, shape)  # type: ignore[arg-type]
        out = _grow_sides(core, tuple(0 if i else overlap for i in ins), shape)  # type: ignore[arg-type]
        tiles.append(Tile(HEAVY, core, out, window, ins))
    for r in range(1, routes):
        for r0, r1, c0, c1 in merge_rectangles(grid == r, (cells, cells)):
            core = core_of(r0, r1, c0, c1)
            tiles.append(Tile(r, core, _grow(core, overlap, shape), _grow(core, pad, shape)))
    return grid, tiles


def plan_routes(
    sigma_lr: np.ndarray | None = None,
    *,
    scale: int,
    threshold: float | tuple[float, float] | None = None,
    budget: float | None = None,
    routes: int = 2,
    scores: np.ndarray | None = None,
    scorer: str = "defocus",
    shape: tuple[int, int] | None = None,
    patch: int = DEFAULT_PATCH,
    overlap: int = DEFAULT_OVERLAP,
    context: int = DEFAULT_CONTEXT,
    side_context: int | None = DEFAULT_SIDE_CONTEXT,
    stat: str | float = "min",
    margin: int | None = None,
    max_tile: int = DEFAULT_MAX_TILE,
    light_whole: bool = True,
    min_light_cells: int = 2,
    tile_cost: int = 64,
    allow_full: bool = True,
    fallback: bool = True,
    heavy_macs: float = 1e6,
    light_macs: float = 3e4,
    map_macs: float = 0.0,
    tie_scores: np.ndarray | None = None,
    light_floor: np.ndarray | None = None,
    keep_heavy: np.ndarray | None = None,
    min_saving: float = 0.0,
    bicubic_ok: np.ndarray | None = None,
    inset: bool = True,
) -> RoutePlan:
    """Decide the route of every LR patch and the tiles each model runs on.

    Give the LR sigma map (defocus routing) or precomputed per-patch ``scores`` (texture/random
    routing; then ``shape`` is the LR (H, W)). ``threshold`` is in score units (sigma in LR px for
    defocus routing; sigma_HR = scale x sigma_LR): one number, or (t_light, t_bicubic) for
    ``routes=3``. ``budget`` instead picks the threshold whose total MACs (context and map
    included) are the largest not above ``budget`` x the heavy model on the whole image.
    ``heavy_macs``/``light_macs`` are MACs per LR input pixel (``ModelInfo.macs_per_pixel``);
    ``map_macs`` the MACs of estimating the map (counted in the totals); the defaults are typical of
    a ~1M-MAC/px heavy model and its EBM-SR. ``fallback`` routes everything heavy when the cheap
    routes plus their context would cost more than that. ``tie_scores`` (per patch, e.g. texture
    scores) order patches of equal score in budget mode (:func:`break_ties`). ``side_context``
    (<= ``context``; None = ``context``) is a heavy tile's context on sides that border only cheaper
    routes; ``context`` stays where heavy tiles meet, so heavy outputs agree there as in one run.
    ``light_floor`` (bool per patch) sends those patches at least to the light route whatever their
    score (``plan.extra["floor_share"]``: the share of patches it moved); the all-heavy fallback ignores it.
    ``keep_heavy`` (bool per patch) keeps those patches heavy whatever their score or the light floor
    (``plan.extra["kept_share"]``: the share of patches that would otherwise have gone cheaper).
    ``bicubic_ok`` (bool per patch, ``routes=3``) sends the patches the thresholds route light to the bicubic
    route instead: how routes=3 works with scores that only separate heavy from light (the learned router),
    the map deciding which light patches are blurred enough for bicubic.
    ``min_saving`` (with ``fallback``, not with a ``budget``): a plan that would save less than this fraction of
    the heavy model's FLOPs runs the heavy model everywhere instead (``plan.extra["fallback"]`` says so);
    :data:`DEFAULT_MIN_SAVING` is what ``upscale_routed`` uses. Tiles span at most ``max_tile`` LR px a side; a
    route whose tiles would cover the image runs on the whole image instead, the light route always so unless
    ``light_whole`` is False (then it too only within ``max_tile``: a bound on memory for every route).
    ``inset`` (with ``light_whole``): heavy tile sides that border only cheaper routes put their blend band
    inside the core (``Tile.inset``) and the light route runs on the whole image to fill it, so the heavy
    windows need no overlap there; the planner keeps the standard layout when that costs fewer FLOPs (few
    light patches, whose own windows cost less than the whole image).
    """
    if routes not in (2, 3):
        raise UsageError(f"routes must be 2 or 3, got {routes}")
    if threshold is not None and budget is not None:
        raise UsageError("give either a threshold or a budget, not both")
    if not 0.0 <= min_saving < 1.0:
        raise UsageError(f"min_saving is a fraction of the heavy model's FLOPs in [0, 1), got {min_saving}")
    if budget is not None:
        min_saving = 0.0  # a budget asks for that cost: it is not second-guessed
    if budget is not None and not 0.0 < budget <= 1.0:
        raise UsageError(f"budget is a fraction of the heavy model's FLOPs in (0, 1], got {budget}")
    if threshold is not None:
        given = [float(t) for t in (threshold if isinstance(threshold, (tuple, list)) else (threshold,))]
        if not all(np.isfinite(given)):
            raise UsageError(f"the routing threshold must be a finite number, got {threshold}")
        if scorer == "defocus" and min(given) < 0:
            raise UsageError(f"a defocus threshold is a blur sigma in LR pixels (>= 0), got {threshold}")
    if patch < 2 or overlap < 0 or context < 0 or (side_context is not None and side_context < 0):
        raise UsageError(
            f"bad grid: patch={patch} (>= 2), overlap={overlap}, context={context} "
            f"and side_context={side_context} (>= 0)"
        )
    if scores is None:
        if sigma_lr is None:
            raise UsageError("plan_routes needs a sigma map or per-patch scores")
        shape = tuple(np.asarray(sigma_lr).shape[:2])  # type: ignore[assignment]
        scores = defocus_scores(sigma_lr, patch=patch, margin=overlap if margin is None else margin, stat=stat)  # type: ignore[arg-type]
    else:
        if shape is None:
            raise UsageError("plan_routes with precomputed scores needs the LR shape")
        if tuple(scores.shape) != grid_shape(shape, patch):
            raise UsageError(f"scores grid {scores.shape} does not match the patch grid {grid_shape(shape, patch)}")
    assert shape is not None
    if budget is not None and tie_scores is not None:
        if np.shape(tie_scores) != scores.shape:
            raise UsageError(f"tie scores {np.shape(tie_scores)} do not match the patch grid {scores.shape}")
        scores = break_ties(scores, tie_scores)
    for mask_name, mask in (("light_floor", light_floor), ("keep_heavy", keep_heavy), ("bicubic_ok", bicubic_ok)):
        if mask is not None and np.shape(mask) != scores.shape:
            raise UsageError(f"{mask_name} {np.shape(mask)} does not match the patch grid {scores.shape}")
    mpp = {HEAVY: float(heavy_macs), LIGHT: float(light_macs), BICUBIC: float(BICUBIC_MACS_PER_OUT_PX * scale * scale)}
    side = context if side_context is None else min(int(side_context), context)
    kw = dict(routes=routes, patch=patch, overlap=overlap, context=context, max_tile=max_tile, side_context=side)

    # The heavy model everywhere costs at least the whole image (tiles add context) plus the map.
    full_heavy = max(shape[0] * shape[1] * mpp[HEAVY], 1e-12)
    floor = 1.0 + map_macs / full_heavy
    cell_px = np.outer(np.diff(_edges(shape[0], patch)), np.diff(_edges(shape[1], patch)))
    route_mpp = np.array([mpp[HEAVY], mpp[LIGHT], mpp[BICUBIC]])
    too_little = f"all heavy: routing would save less than {min_saving:.0%} of the FLOPs"

    def all_heavy(th: tuple[float, ...], why: str) -> RoutePlan:
        every = make((np.inf,) * len(th), do_fallback=False)
        every.thresholds = th
        every.extra["fallback"] = why
        return every

    def make(th: tuple[float, ...], do_fallback: bool = True) -> RoutePlan:
        lf = light_floor if do_fallback else None  # the fallback is everything heavy
        decided = _route_grid(scores, th, routes, min_light_cells, lf, keep_heavy, bicubic_ok)
        check = fallback and do_fallback and bool((decided != HEAVY).any())
        if check and min_saving > 0:
            # Every patch on its route with no context and no promotions: the cover can only add to this,
            # so a plan that cannot save min_saving is known before the cover (the planner's costliest step).
            bound = float((cell_px * route_mpp[decided]).sum()) / full_heavy
            if bound > 1.0 - min_saving:
                return all_heavy(th, too_little)
        plan = layout(th, decided, inset and light_whole)
        light_px = sum(t.window_pixels for t in _unique_windows(plan.tiles_of(LIGHT)))
        if plan.has_inset and light_px < shape[0] * shape[1]:
            # The inset runs the light model on the whole image where its tiles alone would cost less.
            standard = layout(th, decided, False)
            if standard.total_macs < plan.total_macs:
                plan = standard
        grid = plan.route_grid
        kh = keep_heavy if keep_heavy is not None else np.zeros(scores.shape, bool)
        if lf is not None:  # patches whose score alone would have kept them heavy
            plan.extra["floor_share"] = float(np.mean(lf & (scores < th[0]) & ~kh))
        if keep_heavy is not None:  # patches the score (or the light floor) would have sent cheaper
            cheaper = (scores >= th[0]) | (lf if lf is not None else False)
            plan.extra["kept_share"] = float(np.mean(kh & cheaper))
        if check and (grid != HEAVY).any():  # the cover may have promoted every cheap patch
            if plan.macs_fraction >= floor:
                # Routing must pay for itself: if the cheap routes plus their context cost more than
                # the heavy model everywhere, run the heavy model everywhere (best quality, less compute).
                every = all_heavy(th, "all heavy: routing would not save compute")
                if every.macs_fraction <= plan.macs_fraction:
                    return every
            elif min_saving > 0 and plan.macs_fraction > floor - min_saving:
                return all_heavy(th, too_little)
        return plan

    def layout(th: tuple[float, ...], decided: np.ndarray, use_inset: bool) -> RoutePlan:
        """The tiles of a route grid and which routes run on the whole image."""
        grid, tiles = _build(shape, decided, tile_cost=tile_cost, inset=use_inset, **kw)  # type: ignore[arg-type]
        plan = RoutePlan(
            shape=shape,  # type: ignore[arg-type]
            scale=scale,
            patch=patch,
            overlap=overlap,
            context=context,
            routes=routes,
            thresholds=th,
            scores=scores,  # type: ignore[arg-type]
            route_grid=grid,
            tiles=tiles,
            full_image={BICUBIC: True},
            macs_per_pixel=mpp,
            map_macs=map_macs,
            scorer=scorer,
        )
        # A route whose windows add up to more than the image runs once on the whole image instead.
        whole = shape[0] * shape[1]
        for r in (HEAVY, LIGHT):
            ts = plan.tiles_of(r)
            if allow_full and ts and sum(t.window_pixels for t in _unique_windows(ts)) >= whole:
                plan.full_image[r] = max(shape) <= max_tile + 2 * (overlap + context) or (r == LIGHT and light_whole)
        if plan.has_inset:
            if plan.full_image.get(HEAVY, False):  # the heavy output is everywhere: no band to move inside
                return layout(th, decided, False)
            plan.full_image[LIGHT] = True  # fills the heavy tiles' inset bands (a light-free plan: bicubic does)
        return plan

    def thresholds_for(t: float) -> tuple[float, ...]:
        if routes == 2:
            return (float(t),)
        t3 = default_threshold(scale, bicubic=True) if scorer == "defocus" else np.inf
        return (float(t), float(max(t3, t)))

    if budget is None:
        if threshold is None:
            if scorer != "defocus":
                raise UsageError(f"{scorer} routing needs a threshold or a budget")
            threshold = default_threshold(scale)
        if isinstance(threshold, (tuple, list)):
            if routes == 3 and len(threshold) != 2:
                raise UsageError("routes=3 takes two thresholds (light, bicubic)")
            th = tuple(float(v) for v in threshold[: routes - 1])
            if routes == 3 and th[1] < th[0]:
                raise UsageError(f"the bicubic threshold {th[1]} is below the light threshold {th[0]}")
            return make(th)
        return make(thresholds_for(float(threshold)))

    # Budget: the largest threshold (most heavy patches, best quality) whose cost fits.
    cands = np.unique(scores[np.isfinite(scores)])
    cands = np.concatenate([cands, [np.inf]])  # inf = everything heavy
    lo, hi = 0, len(cands) - 1
    best = make(thresholds_for(cands[0]))
    if best.macs_fraction > budget:  # even routing everything cheap is over budget: return the cheapest
        best.extra["budget_met"] = False
        return best
    while lo < hi:  # cost is (almost) monotone in the threshold: binary search, then verify
        mid = (lo + hi + 1) // 2
        p = make(thresholds_for(cands[mid]))
        if p.macs_fraction <= budget:
            lo, best = mid, p
        else:
            hi = mid - 1
    best.extra["budget_met"] = True
    best.extra["budget"] = budget
    return best


def default_threshold(scale: int, *, bicubic: bool = False) -> float:
    """Default defocus threshold in LR pixels: sigma_HR = 2 px (4 px for the bicubic route) / scale."""
    return (DEFAULT_BICUBIC_THRESHOLD_HR if bicubic else DEFAULT_THRESHOLD_HR) / float(scale)
