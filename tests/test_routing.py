"""Tests for blurwise.routing: plan (scores, decisions, merging, budget, FLOPs), execute (blending,
batching, seamlessness) and upscale_routed (report, errors, scorers, overlay)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from blurwise.errors import InputError, ModelError, UsageError
from blurwise.routing import (
    BICUBIC,
    HEAVY,
    LIGHT,
    default_threshold,
    defocus_scores,
    grid_shape,
    merge_rectangles,
    plan_routes,
    random_scores,
    routing_overlay,
    texture_scores,
    upscale_routed,
)
from blurwise.routing.execute import execute_plan, weight_sum
from blurwise.routing.plan import ROUTE_NAMES, guillotine_cover


# ---------------------------------------------------------------------- helpers
class TinySR(nn.Module):
    """Fully convolutional x``scale`` SR stand-in: 3x3 conv stack + pixel shuffle (receptive field 3 px).

    ``feats`` sets the cost: the heavy stand-in uses 32 (~12K MACs/px), the light one 2 (~0.3K).
    """

    def __init__(self, scale: int = 2, in_channels: int = 3, seed: int = 0, feats: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scale, self.in_channels, self.out_channels = scale, in_channels, 3
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, feats, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(feats, feats, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(feats, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.2
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(x[:, :3], scale_factor=self.scale, mode="nearest")
        return up + 0.1 * self.body(x)


class SigmaEcho(nn.Module):
    """4-channel stand-in whose output is the sigma channel (nearest-upscaled) in all three channels."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.in_channels, self.out_channels = scale, 4, 3
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 4
        s = nn.functional.interpolate(x[:, 3:4], scale_factor=self.scale, mode="nearest")
        return s.repeat(1, 3, 1, 1) + self.dummy


def info(model: nn.Module, name: str, task: str = "sr", scale: int = 2, teacher: str | None = None):
    """A ModelInfo for a stand-in; MACs per pixel counted from its convolutions (no FLOP counter needed)."""
    from blurwise.models.registry import ModelInfo

    macs = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    return ModelInfo(
        name=name,
        arch="edsr" if task == "sr" else "ebmsr",
        task=task,
        scale=scale,
        in_channels=model.in_channels,
        out_channels=3,
        params=sum(p.numel() for p in model.parameters()),
        macs_per_pixel=float(macs),
        supports_half=True,
        teacher=teacher,
    )


@pytest.fixture
def pair():
    """(heavy, light) (model, ModelInfo) pairs at x2 whose names match (light taught by heavy)."""
    h = TinySR(2, 3, seed=1, feats=32)
    lm = TinySR(2, 4, seed=2, feats=2)
    return (h, info(h, "tiny-heavy")), (lm, info(lm, "tiny-light", task="ebmsr", teacher="tiny-heavy"))


def two_region_map(h: int = 48, w: int = 64, blurred: float = 2.0) -> np.ndarray:
    """In focus (0) on the left half, defocused (``blurred``) on the right half, with a sharp 6x6 square inside."""
    sig = np.zeros((h, w), np.float32)
    sig[:, w // 2 :] = blurred
    sig[20:26, 44:50] = 0.0
    return sig


def rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


# ---------------------------------------------------------------------- scores
class TestScores:
    def test_min_is_conservative(self):
        sig = np.full((16, 16), 3.0, np.float32)
        sig[5, 9] = 0.0  # one in-focus pixel
        s = defocus_scores(sig, patch=8, margin=0)
        assert s.shape == (2, 2)
        assert s[0, 1] == 0.0 and s[0, 0] == 3.0 and s[1, 1] == 3.0

    def test_margin_reaches_neighbours(self):
        sig = np.full((16, 16), 3.0, np.float32)
        sig[:, 7] = 0.0  # in focus just left of the patch boundary at x = 8
        assert defocus_scores(sig, patch=8, margin=0)[0, 1] == 3.0
        assert defocus_scores(sig, patch=8, margin=1)[0, 1] == 0.0

    def test_percentile_tolerates_outliers(self):
        sig = np.full((16, 16), 3.0, np.float32)
        sig[0, 0] = 0.0
        assert defocus_scores(sig, patch=16, margin=0, stat=5)[0, 0] == pytest.approx(3.0)

    @pytest.mark.parametrize(
        "shape,patch,margin,q", [((50, 70), 4, 1, 20.0), ((37, 41), 4, 2, 10.0), ((66, 33), 8, 1, 5.0)]
    )
    def test_percentile_scores_equal_numpy_per_window(self, shape, patch, margin, q):
        """The vectorised percentile equals np.percentile over each clamped window (folded slivers too)."""
        from blurwise.routing.plan import _edges

        sig = np.random.default_rng(3).random(shape).astype(np.float32)
        ys, xs = _edges(shape[0], patch), _edges(shape[1], patch)
        ref = [
            [
                np.percentile(sig[max(y0 - margin, 0) : y1 + margin, max(x0 - margin, 0) : x1 + margin], q)
                for x0, x1 in zip(xs[:-1], xs[1:], strict=True)
            ]
            for y0, y1 in zip(ys[:-1], ys[1:], strict=True)
        ]
        got = defocus_scores(sig, patch=patch, margin=margin, stat=q)
        np.testing.assert_allclose(got, np.asarray(ref, np.float32), rtol=1e-6, atol=1e-7)

    def test_grid_edges(self):
        assert grid_shape((50, 33), 16) == (3, 2)  # slivers < patch/4 fold into the previous patch
        assert defocus_scores(np.zeros((50, 33)), patch=16).shape == (3, 2)

    def test_texture_and_random(self):
        img = rgb(32, 32)
        img[:, :16] = 0.5  # flat left half: smoother -> higher score
        t = texture_scores(img, patch=16, margin=0)
        assert t[0, 0] > t[0, 1]
        r = random_scores((32, 32), patch=16, seed=3)
        assert r.shape == (2, 2) and np.array_equal(r, random_scores((32, 32), patch=16, seed=3))

    def test_bad_map(self):
        with pytest.raises(UsageError, match="2-D"):
            defocus_scores(np.zeros((4, 4, 3)))


# ---------------------------------------------------------------------- plan
class TestPlan:
    def test_known_regions(self):
        sig = two_region_map()
        # decisions: score >= threshold -> light; margin 1 px makes column 4 (x 32-40, next to the
        # in-focus x < 32) and the patches within 1 px of the sharp square (rows 20-26, cols 44-50) heavy
        expected = np.full((6, 8), LIGHT)
        expected[:, :5] = HEAVY
        expected[2:4, 5:7] = HEAVY
        scores = defocus_scores(sig, patch=8, margin=1)
        np.testing.assert_array_equal(np.where(scores >= 1.0, LIGHT, HEAVY), expected)
        p = plan_routes(sig, scale=2, threshold=1.0, patch=8, overlap=1, context=2, min_light_cells=1)
        assert p.route_grid.shape == (6, 8)
        assert (p.route_grid[expected == HEAVY] == HEAVY).all()  # never demoted
        promoted = (p.route_grid != expected).sum()  # light cells inside a heavy tile may be promoted
        assert promoted <= 2
        assert p.fractions()["light"] == pytest.approx((expected == LIGHT).sum() / 48 - promoted / 48)

    def test_three_routes(self):
        sig = np.zeros((32, 96), np.float32)
        sig[:, 32:64] = 1.0
        sig[:, 64:] = 5.0
        p = plan_routes(sig, scale=2, threshold=(0.5, 2.0), routes=3, patch=8, overlap=0, context=0, fallback=False)
        assert (p.route_grid[:, :4] == HEAVY).all()
        assert (p.route_grid[:, 4:8] == LIGHT).all()
        assert (p.route_grid[:, 8:] == BICUBIC).all()
        assert p.full_image[BICUBIC]

    def test_tiles_partition_the_image(self, rng):
        sig = rng.random((70, 90)).astype(np.float32) * 2
        p = plan_routes(sig, scale=2, threshold=1.0, patch=8, overlap=2, context=3, max_tile=32)
        cover = np.zeros(p.shape, int)
        for t in p.tiles:
            y0, y1, x0, x1 = t.core
            cover[y0:y1, x0:x1] += 1
            assert (p.route_map()[y0:y1, x0:x1] == t.route).all()
            oy0, oy1, ox0, ox1 = t.out
            wy0, wy1, wx0, wx1 = t.window
            assert wy0 <= oy0 <= y0 and y1 <= oy1 <= wy1 and wx0 <= ox0 <= x0 and x1 <= ox1 <= wx1
            assert max(y1 - y0, x1 - x0) <= 32
        assert (cover == 1).all()

    @pytest.mark.parametrize("overlap", [0, 1, 3])
    @pytest.mark.parametrize("blend", ["linear", "cosine"])
    @pytest.mark.parametrize("scale", [2, 4])
    def test_blend_weights_sum_to_one(self, rng, overlap, blend, scale):
        sig = _blob_map(rng, (40, 52))
        p = plan_routes(
            sig,
            scale=scale,
            threshold=1.0,
            patch=4,
            overlap=overlap,
            context=1,
            max_tile=16,
            margin=0,
            fallback=False,
            inset=False,
        )
        assert len(p.tiles_of(HEAVY)) > 4 and len(p.tiles_of(LIGHT)) > 4
        ws = weight_sum(p, blend=blend)
        assert ws.shape == (40 * scale, 52 * scale)
        np.testing.assert_allclose(ws, 1.0, atol=1e-6)

    @pytest.mark.parametrize("overlap", [0, 1, 3])
    @pytest.mark.parametrize("blend", ["linear", "cosine"])
    def test_blending_copies_tile_insides_bit_for_bit(self, rng, overlap, blend):
        """execute_plan's blender (inside copied, ramps weighed) gives exactly the full weighted sum."""
        from blurwise.routing.execute import add_weighted, tile_weights

        sig = _blob_map(rng, (40, 52))
        kw = dict(scale=2, threshold=1.0, patch=4, overlap=overlap, context=1, max_tile=16, margin=0, inset=False)
        p = plan_routes(sig, **kw)
        assert (p.route_grid == LIGHT).any()
        ref, got = torch.zeros(1, 3, 80, 104), torch.zeros(1, 3, 80, 104)
        for t in p.tiles:
            oy0, oy1, ox0, ox1 = t.out
            y = torch.rand(1, 3, (oy1 - oy0) * 2, (ox1 - ox0) * 2)
            ref[:, :, oy0 * 2 : oy1 * 2, ox0 * 2 : ox1 * 2] += y * tile_weights(
                t, p.shape, scale=2, overlap=overlap, blend=blend
            )
            add_weighted(got, y, t, scale=2, overlap=overlap, blend=blend)
        assert torch.equal(ref, got)

    @pytest.mark.parametrize("overlap", [1, 2])
    @pytest.mark.parametrize("blend", ["linear", "cosine"])
    @pytest.mark.parametrize(("scale", "routes"), [(2, 2), (4, 2), (4, 3)])
    def test_inset_blend_weights_and_blender(self, rng, overlap, blend, scale, routes):
        """With heavy bands inside the cores, the base route takes what the other tiles leave: every route's weight
        in [0, 1], summing to 1, the base never below its own tiles' weights; the blender gives that sum."""
        from blurwise.routing.execute import add_weighted, route_weights

        sig = _blob_map(rng, (40, 52)) * np.where(np.arange(52) < 26, 1.0, 2.0)[None].astype(np.float32)
        th = 1.0 if routes == 2 else (1.0, 4.5)
        p = plan_routes(sig, scale=scale, threshold=th, routes=routes, patch=4, overlap=overlap, context=1,
                        max_tile=16, margin=0, fallback=False, light_macs=1e3)  # fmt: skip
        assert p.has_inset and p.base_route == LIGHT
        assert routes == 2 or p.tiles_of(BICUBIC)
        rw, own = route_weights(p, blend=blend), route_weights(p, blend=blend, base=False)
        assert rw.min() >= -1e-6 and rw.max() <= 1 + 1e-6  # float32 tile weights
        np.testing.assert_allclose(rw.sum(0), 1.0, atol=1e-9)
        assert (rw[LIGHT] >= own[LIGHT] - 1e-6).all() and (own.sum(0) < 1 - 1e-3).any()  # the bands it fills
        h, w = 40 * scale, 52 * scale
        ys = torch.rand(routes, 3, h, w, dtype=torch.float64)
        ref = (ys * torch.from_numpy(rw)[:, None]).sum(0, keepdim=True).float()
        base = ys[LIGHT : LIGHT + 1].float()
        got = base.clone()
        for t in p.tiles:
            if t.route != LIGHT:
                oy0, oy1, ox0, ox1 = (v * scale for v in t.out)
                add_weighted(got, ys[t.route : t.route + 1, :, oy0:oy1, ox0:ox1].float(), t, scale=scale,
                             overlap=overlap, blend=blend, base=base)  # fmt: skip
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)

    def test_merge_rectangles_exact_cover(self, rng):
        m = rng.random((30, 40)) > 0.4
        rects = merge_rectangles(m, (5, 7))
        cover = np.zeros(m.shape, int)
        for r0, r1, c0, c1 in rects:
            assert r1 - r0 <= 5 and c1 - c0 <= 7
            cover[r0:r1, c0:c1] += 1
        assert np.array_equal(cover, m.astype(int))

    @pytest.mark.parametrize("cap", [None, (3, 2), (1, 1), (50, 50)])
    def test_merge_rectangles_stacks_runs(self, rng, cap):
        # blocky masks (runs that repeat over rows) and edge cases: every True cell exactly once, caps kept,
        # stacked runs (fewer rectangles than row runs), listed by end row
        m = np.kron(rng.random((8, 10)) > 0.5, np.ones((3, 4), bool))
        for mask in (m, np.zeros((4, 5), bool), np.ones((7, 9), bool), m[:, :1]):
            rects = merge_rectangles(mask, cap)
            cover = np.zeros(mask.shape, int)
            for r0, r1, c0, c1 in rects:
                assert r0 < r1 and c0 < c1
                if cap:
                    assert r1 - r0 <= cap[0] and c1 - c0 <= cap[1]
                cover[r0:r1, c0:c1] += 1
            assert np.array_equal(cover, mask.astype(int))
            assert [r[1] for r in rects] == sorted(r[1] for r in rects)
        if cap is None:  # 3-row blocks stack into one rectangle per run
            runs = int((np.diff(np.pad(m.astype(np.int8), ((0, 0), (1, 1))), axis=1) == 1).sum())
            assert len(merge_rectangles(m)) <= runs // 3

    def test_guillotine_cover_merges_blobs(self):
        m = np.zeros((20, 20), bool)
        m[5:15, 5:15] = True
        m[9, 9] = False  # a hole: cheaper to compute it than to cut around it
        rects = guillotine_cover(m, lambda r0, r1, c0, c1: (r1 - r0 + 2) * (c1 - c0 + 2) + 4)
        assert rects == [(5, 15, 5, 15)]
        m2 = np.zeros((20, 40), bool)
        m2[2:6, 2:6] = m2[14:18, 34:38] = True  # far apart: two tiles
        assert len(guillotine_cover(m2, lambda r0, r1, c0, c1: (r1 - r0 + 2) * (c1 - c0 + 2) + 4)) == 2

    def test_flops_accounting(self):
        sig = two_region_map()
        p = plan_routes(sig, scale=2, threshold=1.0, patch=8, heavy_macs=100.0, light_macs=5.0, map_macs=77.0)
        m = p.macs()
        heavy_px = sum(t.window_pixels for t in {t.window: t for t in p.tiles_of(HEAVY)}.values())
        assert m["heavy"] == pytest.approx(100.0 * heavy_px)
        assert m["map"] == 77.0
        assert p.full_heavy_macs == 48 * 64 * 100.0
        assert p.macs_fraction == pytest.approx(sum(m.values()) / p.full_heavy_macs)
        assert 0.4 < p.macs_fraction < 1.0

    @pytest.mark.parametrize("budget", [0.3, 0.6, 0.9])
    def test_budget_is_met(self, rng, budget):
        sig = (rng.random((64, 80)) * 3).astype(np.float32)
        from scipy import ndimage

        sig = ndimage.gaussian_filter(sig, 6) * 3 - 3.0
        p = plan_routes(sig, scale=4, budget=budget, patch=8, heavy_macs=100.0, light_macs=3.0)
        assert p.extra["budget_met"]
        assert p.macs_fraction <= budget + 1e-9
        looser = plan_routes(sig, scale=4, budget=min(1.0, budget + 0.3), patch=8, heavy_macs=100.0, light_macs=3.0)
        assert looser.fractions()["heavy"] >= p.fractions()["heavy"]

    def test_default_threshold(self):
        assert default_threshold(4) == pytest.approx(default_threshold(2) / 2)
        p = plan_routes(np.zeros((16, 16)), scale=4)
        assert p.thresholds == (default_threshold(4),)

    def test_usage_errors(self):
        sig = np.zeros((16, 16))
        with pytest.raises(UsageError, match="either a threshold or a budget"):
            plan_routes(sig, scale=2, threshold=1.0, budget=0.5)
        with pytest.raises(UsageError, match="routes must be 2 or 3"):
            plan_routes(sig, scale=2, routes=4)
        with pytest.raises(UsageError, match="budget"):
            plan_routes(sig, scale=2, budget=1.5)
        with pytest.raises(UsageError, match="needs a threshold or a budget"):
            plan_routes(scores=np.zeros((2, 2)), shape=(16, 16), patch=8, scale=2, scorer="texture")
        for bad in (-0.1, 1.0):
            with pytest.raises(UsageError, match="min_saving"):
                plan_routes(sig, scale=2, threshold=1.0, min_saving=bad)
        with pytest.raises(UsageError, match="blur sigma in LR pixels"):
            plan_routes(sig, scale=2, threshold=-1.0)
        with pytest.raises(UsageError, match="finite"):
            plan_routes(scores=np.zeros((2, 2)), shape=(16, 16), patch=8, scale=2, scorer="texture", threshold=np.inf)

    def test_min_saving_small_savings_run_all_heavy(self):
        scores = np.zeros((16, 16), np.float32)
        scores[:6, :6] = 1  # a corner of 36 of 256 patches light: less than a 15% saving
        kw = dict(scores=scores, shape=(64, 64), scale=2, threshold=0.5, patch=4, heavy_macs=1e6, light_macs=3e4)
        routed = plan_routes(**kw)  # min_saving 0 (the function's default): any saving routes
        assert (routed.route_grid == LIGHT).any() and "fallback" not in routed.extra
        every = plan_routes(**kw, min_saving=0.15)
        assert (every.route_grid == HEAVY).all() and [t.route for t in every.tiles] == [HEAVY]
        assert "less than 15%" in every.extra["fallback"] and every.thresholds == (0.5,)
        scores[:, :8] = 1  # half the image light: saves far more than 15%
        assert (plan_routes(**kw, min_saving=0.15).route_grid == LIGHT).any()

    @pytest.mark.parametrize("seed", range(6))
    def test_min_saving_holds_for_every_plan(self, seed):
        # whatever the decisions (scattered, blobby), a plan either saves min_saving or is all heavy
        g = np.random.default_rng(seed)
        from scipy import ndimage

        scores = ndimage.gaussian_filter(g.random((20, 24)), seed % 3).astype(np.float32)
        for thr in np.quantile(scores, [0.5, 0.7, 0.8, 0.9, 0.95]):
            p = plan_routes(scores=scores, shape=(80, 96), scale=4, threshold=float(thr), map_macs=1e6, min_saving=0.2)
            floor = 1.0 + p.map_macs / p.full_heavy_macs
            assert (p.route_grid == HEAVY).all() or p.macs_fraction <= floor - 0.2 + 1e-9

    def test_min_saving_not_applied_to_a_budget(self):
        sig = np.zeros((64, 64), np.float32)
        sig[:, :6] = 2.0  # a thin defocused strip: a 0.97 budget is met by a small saving
        p = plan_routes(sig, scale=2, budget=0.97, patch=4, min_saving=0.5)
        assert (p.route_grid == LIGHT).any() and p.extra["budget_met"]

    def test_side_context_only_where_heavy_meets_cheaper_routes(self):
        # a heavy 2x2-cell block in the middle of a light sea, and a heavy column on the left edge
        sig = np.full((48, 48), 3.0, np.float32)
        sig[16:24, 16:24] = 0.0
        sig[:, :4] = 0.0
        kw = dict(scale=2, threshold=1.0, patch=4, overlap=1, context=3, min_light_cells=1, fallback=False, inset=False)
        full = plan_routes(sig, side_context=None, **kw)
        thin = plan_routes(sig, side_context=0, **kw)
        np.testing.assert_array_equal(full.route_grid, thin.route_grid)
        block = [t for t in thin.tiles_of(HEAVY) if t.core[2] > 8]
        assert len(block) == 1
        y0, y1, x0, x1 = block[0].core
        assert block[0].window == (y0 - 1, y1 + 1, x0 - 1, x1 + 1)  # overlap only: all its neighbours are light
        assert [t.window for t in full.tiles_of(HEAVY) if t.core[2] > 8] == [(y0 - 4, y1 + 4, x0 - 4, x1 + 4)]
        assert thin.macs()["heavy"] < full.macs()["heavy"]
        assert all(t.out == f.out for t, f in zip(thin.tiles, full.tiles, strict=True))  # same blend bands

    def test_side_context_kept_where_heavy_tiles_meet(self):
        sig = np.full((32, 64), 3.0, np.float32)
        sig[8:16, :] = 0.0  # a heavy band wider than max_tile: split into tiles that touch
        p = plan_routes(
            sig,
            scale=2,
            threshold=1.0,
            patch=4,
            overlap=1,
            context=2,
            max_tile=16,
            side_context=0,
            min_light_cells=1,
            fallback=False,
            allow_full=False,
            inset=False,
        )
        tiles = sorted(p.tiles_of(HEAVY), key=lambda t: t.core[2])
        assert len(tiles) >= 2
        for a, b in zip(tiles, tiles[1:], strict=False):
            assert a.window[3] == min(a.core[3] + 3, 64) and b.window[2] == max(b.core[2] - 3, 0)  # full context
        assert all(t.window[0] == t.core[0] - 1 and t.window[1] == t.core[1] + 1 for t in tiles)  # light above/below

    def test_negative_side_context_is_a_usage_error(self):
        with pytest.raises(UsageError, match="side_context"):
            plan_routes(np.zeros((16, 16), np.float32), scale=2, threshold=1.0, side_context=-1)

    def test_inset_moves_the_band_inside_heavy_cores(self):
        # a heavy block in a light sea, a heavy column on the left edge, a heavy strip one patch wide
        sig = np.full((48, 64), 3.0, np.float32)
        sig[16:32, 20:36] = 0.0
        sig[:, :4] = 0.0
        sig[8:40, 52:56] = 0.0
        kw = dict(scale=2, threshold=1.0, patch=4, overlap=1, context=3, side_context=1, margin=0, fallback=False)
        inset, std = plan_routes(sig, **kw), plan_routes(sig, inset=False, **kw)
        np.testing.assert_array_equal(inset.route_grid, std.route_grid)
        tiles = {t.core: t for t in inset.tiles_of(HEAVY)}
        block = tiles[(16, 32, 20, 36)]
        assert block.inset == (1, 1, 1, 1) and block.out == block.core  # no band outside the core
        assert block.window == (15, 33, 19, 37)  # side_context only
        assert block.blend_core == (17, 31, 21, 35)
        edge = tiles[(0, 48, 0, 4)]  # no band on the image border
        assert edge.inset == (0, 0, 0, 1) and edge.out == edge.core and edge.window == (0, 48, 0, 5)
        assert tiles[(8, 40, 52, 56)].inset == (1, 1, 1, 1)
        # overlap 2: an inset on both sides of a 4 px strip would leave no full-weight column, so that
        # axis keeps its bands outside the core (and their context)
        wide = {t.core: t for t in plan_routes(sig, **{**kw, "overlap": 2}).tiles_of(HEAVY)}
        strip = wide[(8, 40, 52, 56)]
        assert strip.inset == (2, 2, 0, 0) and strip.out == (8, 40, 50, 58) and strip.window == (7, 41, 49, 59)
        assert inset.full_image[LIGHT] and inset.base_route == LIGHT
        assert inset.macs()["heavy"] < std.macs()["heavy"] and inset.total_macs < std.total_macs
        assert not std.has_inset

    def test_inset_not_taken_where_it_costs_more(self):
        # a light band along one side of a heavy image: the light model on the whole image would cost more than
        # the heavy column the inset saves, so the standard layout (light tiles only) is kept
        sig = np.zeros((128, 128), np.float32)
        sig[:, 104:] = 3.0
        p = plan_routes(sig, scale=2, threshold=1.0, patch=4, margin=0, fallback=False, heavy_macs=1e6, light_macs=1e5)
        assert (p.route_grid == LIGHT).any()
        assert not p.has_inset and not p.full_image.get(LIGHT, False)
        cheap = plan_routes(sig, scale=2, threshold=1.0, patch=4, margin=0, fallback=False, light_macs=1e3)
        assert cheap.has_inset and cheap.base_route == LIGHT

    def test_no_inset_without_the_light_model_on_the_whole_image(self):
        sig = np.full((48, 48), 3.0, np.float32)
        sig[16:32, 16:32] = 0.0
        kw = dict(scale=2, threshold=1.0, patch=4, margin=0, fallback=False)
        assert not plan_routes(sig, light_whole=False, **kw).has_inset
        assert not plan_routes(sig, overlap=0, **kw).has_inset


def _blob_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A sigma map of in-focus (0) and defocused (3 px) blobs: many route boundaries of every orientation."""
    from scipy import ndimage

    blobs = ndimage.gaussian_filter(rng.random(shape), 3)
    return np.where(blobs > np.median(blobs), 3.0, 0.0).astype(np.float32)


# ---------------------------------------------------------------------- execute
class TestExecute:
    def test_both_routes_heavy_equals_whole_image(self):
        heavy = TinySR(2, 3, seed=1)
        lr = rgb(50, 70, seed=1)
        sig = two_region_map(50, 70)
        # context 3 >= the stand-in's receptive field (3 convs): exact up to float rounding
        p = plan_routes(
            sig, scale=2, threshold=1.0, patch=8, overlap=1, context=3, max_tile=24, allow_full=False, side_context=None
        )
        assert len(p.tiles) >= 6
        sr, _ = execute_plan(lr, p, {HEAVY: heavy, LIGHT: heavy}, sig, clamp=False)
        with torch.no_grad():
            ref = heavy(torch.from_numpy(lr.transpose(2, 0, 1))[None])[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(sr, ref, atol=1e-5)

    @pytest.mark.parametrize("routes", [2, 3])
    def test_blend_on_a_whole_image_route_equals_the_weighted_sum(self, pair, routes):
        """When a route runs once on the whole image, the blend starts from its output and adds the other
        tiles as differences: the same image as every tile's output weighed onto zeros."""
        from blurwise.routing.execute import tile_weights

        (h, _), (lm, _) = pair
        lr, sig = rgb(48, 64), two_region_map()
        sig[:, 48:] = 9.0  # a third, very blurred region for the bicubic route
        th = (1.0, 4.0) if routes == 3 else 1.0
        p = plan_routes(sig, scale=2, threshold=th, routes=routes, patch=8, max_tile=16, fallback=False)
        p.full_image[LIGHT] = True
        assert p.tiles_of(HEAVY) and p.tiles_of(LIGHT)
        got, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig, clamp=False)
        x = torch.from_numpy(lr.transpose(2, 0, 1))[None]
        with torch.no_grad():
            light_full = lm(torch.cat([x, torch.from_numpy(sig)[None, None]], 1))
        ref = torch.zeros(1, 3, 96, 128)
        for t in p.tiles:
            oy0, oy1, ox0, ox1 = t.out
            if t.route == HEAVY:
                wy0, _, wx0, _ = t.window
                with torch.no_grad():
                    yw = h(x[:, :, t.window[0] : t.window[1], t.window[2] : t.window[3]])
                y = yw[:, :, (oy0 - wy0) * 2 : (oy1 - wy0) * 2, (ox0 - wx0) * 2 : (ox1 - wx0) * 2]
            elif t.route == LIGHT:
                y = light_full[:, :, oy0 * 2 : oy1 * 2, ox0 * 2 : ox1 * 2]
            else:
                from blurwise.metrics.imresize import imresize

                up = torch.from_numpy(imresize(lr, scale=2).astype(np.float32).transpose(2, 0, 1))[None]
                y = up[:, :, oy0 * 2 : oy1 * 2, ox0 * 2 : ox1 * 2]
            ref[:, :, oy0 * 2 : oy1 * 2, ox0 * 2 : ox1 * 2] += y * tile_weights(t, p.shape, scale=2, overlap=p.overlap)
        np.testing.assert_allclose(got, ref[0].permute(1, 2, 0).numpy(), atol=2e-6)

    def test_batch_size_does_not_change_output(self, pair):
        (h, _), (lm, _) = pair
        lr, sig = rgb(48, 64), two_region_map()
        p = plan_routes(sig, scale=2, threshold=1.0, patch=8, max_tile=16, allow_full=False)
        a, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig, batch=1)
        b, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig, batch=7)
        c, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig, batch=None)
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-6)

    def test_bf16_on_cpu_is_close_to_fp32(self, pair):
        (h, _), (lm, _) = pair
        lr, sig = rgb(48, 64), two_region_map()
        p = plan_routes(sig, scale=2, threshold=1.0, patch=8, max_tile=16, allow_full=False)
        a, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig)
        b, _ = execute_plan(lr, p, {HEAVY: h, LIGHT: lm}, sig, half="bf16")
        assert b.dtype == np.float32 and np.isfinite(b).all()
        assert 0 < np.abs(a - b).max() < 0.05  # really ran in bf16 (8-bit mantissa), and only rounding apart

    def test_light_route_gets_the_sigma_channel(self):
        heavy = TinySR(2, 3)
        sig = np.zeros((32, 64), np.float32)
        sig[:, 32:] = 0.75
        lr = rgb(32, 64)
        p = plan_routes(sig, scale=2, threshold=0.5, patch=8, overlap=1, context=1)
        sr, _ = execute_plan(lr, p, {HEAVY: heavy, LIGHT: SigmaEcho(2)}, sig)
        np.testing.assert_allclose(sr[:, 2 * 44 :], 0.75, atol=1e-6)  # well inside the light region

    def test_bicubic_route_matches_imresize(self):
        from blurwise.metrics.imresize import imresize

        sig = np.full((24, 40), 9.0, np.float32)
        lr = rgb(24, 40)
        p = plan_routes(sig, scale=2, threshold=(1.0, 4.0), routes=3, patch=8)
        assert (p.route_grid == BICUBIC).all()
        sr, t = execute_plan(lr, p, {HEAVY: TinySR(2), LIGHT: TinySR(2, 4)}, sig)
        np.testing.assert_allclose(sr, np.clip(imresize(lr, scale=2), 0, 1), atol=1e-5)
        assert "bicubic" in t and "blend" in t

    def test_four_channel_model_without_map(self):
        p = plan_routes(np.full((16, 16), 5.0), scale=2, threshold=1.0, patch=8)
        with pytest.raises(UsageError, match="sigma map"):
            execute_plan(rgb(16, 16), p, {HEAVY: TinySR(2), LIGHT: TinySR(2, 4)}, None)


# ---------------------------------------------------------------------- upscale_routed
class TestUpscaleRouted:
    def test_eight_bit_input_equals_unit_float(self, pair):
        # an 8-bit array (as read from a file) is scaled to [0, 1], not run as values up to 255
        img8 = np.round(rgb() * 255).astype(np.uint8)
        kw = dict(heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=1.0)
        a, ra = upscale_routed(img8, **kw)
        b, rb = upscale_routed(img8.astype(np.float32) / 255, **kw)
        np.testing.assert_array_equal(a, b)
        assert ra.fractions == rb.fractions

    @pytest.mark.parametrize(
        ("img", "exc", "match"),
        [
            (np.full((16, 16, 3), 200.0, np.float32), UsageError, r"in \[0, 1\]"),
            (np.full((16, 16, 3), 7, np.int32), InputError, "pixel type"),
            (np.full((16, 16, 3), np.nan, np.float32), UsageError, "NaN"),
        ],
    )
    def test_bad_values_are_clear_errors(self, pair, img, exc, match):
        with pytest.raises(exc, match=match):
            upscale_routed(img, heavy=pair[0], light=pair[1], sigma_lr=np.zeros((16, 16), np.float32), threshold=1.0)

    def test_report(self, pair):
        sr, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=1.0)
        assert sr.shape == (96, 128, 3) and sr.dtype == np.float32
        assert 0.0 <= sr.min() and sr.max() <= 1.0
        assert sum(rep.fractions.values()) == pytest.approx(1.0)
        assert 0 < rep.fractions["light"] < 1
        assert rep.flops_fraction == pytest.approx(rep.total_macs / rep.full_heavy_macs)
        assert {"plan", "heavy", "light", "blend", "total"} <= set(rep.timings)
        line = rep.summary()
        assert "FLOPs" in line and "heavy" in line and "\n" not in line
        assert rep.to_dict()["scale"] == 2

    def test_min_saving_default_and_override(self, pair):
        sig = np.zeros((48, 64), np.float32)
        sig[:24, :24] = 2.0  # a defocused corner: routing it saves ~10%, under the default minimum
        _, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=1.0)
        assert rep.fractions["heavy"] == 1.0 and "less than 20%" in rep.plan.extra["fallback"]
        assert "(all heavy: routing would save less than 20% of the FLOPs)" in rep.summary()
        _, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=1.0, min_saving=0)
        assert rep.fractions["light"] > 0 and "fallback" not in rep.plan.extra

    def test_unreachable_budget_is_a_note(self, pair):
        _, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), budget=0.01)
        assert rep.plan.extra["budget_met"] is False and rep.flops_fraction > 0.01
        note = f"budget 0.01 not reachable: the plan uses {100 * rep.flops_fraction:.1f}% of the heavy FLOPs"
        assert rep.notes[0].startswith(note) and note in rep.summary() and rep.to_dict()["notes"] == rep.notes
        _, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), budget=0.8)
        assert rep.notes == [] and "|" not in rep.summary().split("s (")[-1]

    def test_summary_of_a_plan_costing_a_little_more_than_heavy(self):
        from blurwise.routing import RouteReport

        rep = RouteReport({"heavy": 1.0}, {"heavy": 100.0, "map": 0.3}, 100.0, {"total": 1.0}, (1.0,), scale=2)
        assert "FLOPs 100% of heavy (no cut)" in rep.summary()  # was "(cut -0%)"
        rep.macs["heavy"] = 50.0
        assert "(cut 50%)" in rep.summary()

    @pytest.mark.parametrize("scorer", ["texture", "random"])
    def test_other_scorers_with_budget(self, pair, scorer):
        _, rep = upscale_routed(
            rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), budget=0.8, scorer=scorer
        )
        assert rep.scorer == scorer and rep.flops_fraction <= 0.8 + 1e-9

    def test_missing_ebmsr_for_heavy(self, pair):
        with pytest.raises(ModelError, match="no EBM-SR is registered for heavy model 'tiny-heavy'") as exc:
            upscale_routed(rgb(), heavy=pair[0], sigma_lr=two_region_map())
        assert "give a light model (--light / light=)" in str(exc.value) and "\n" not in str(exc.value)

    def test_teacher_mismatch(self, pair):
        lm = TinySR(2, 4, feats=2)
        other = (lm, info(lm, "other-light", task="ebmsr", teacher="someone-else"))
        with pytest.raises(ModelError, match="distilled from 'someone-else'"):
            upscale_routed(rgb(), heavy=pair[0], light=other, sigma_lr=two_region_map())

    def test_teacher_matched_by_weights_not_name(self, pair):
        from dataclasses import replace

        from blurwise.models import weights_fingerprint

        hm, hi = pair[0]
        lm = TinySR(2, 4, feats=2)
        li = info(lm, "my-light", task="ebmsr", teacher="my_heavy.pth")  # the teacher as typed at distillation
        ok = replace(li, metadata={"teacher_fingerprint": weights_fingerprint(hm)})
        sr, _ = upscale_routed(rgb(), heavy=pair[0], light=(lm, ok), sigma_lr=two_region_map())
        assert sr.shape == (96, 128, 3)  # the heavy model is called 'tiny-heavy' here, yet it is the teacher
        with torch.no_grad():
            next(hm.parameters()).add_(0.01)  # other weights under the same name: no longer its teacher
        with pytest.raises(ModelError, match="not from these heavy weights"):
            upscale_routed(rgb(), heavy=pair[0], light=(lm, ok), sigma_lr=two_region_map())

    def test_scale_mismatch(self, pair):
        lm = TinySR(4, 4, feats=2)
        x4 = (lm, info(lm, "tiny-light", task="ebmsr", scale=4, teacher="tiny-heavy"))
        with pytest.raises(ModelError, match="scale mismatch: heavy model 'tiny-heavy' is x2, light model"):
            upscale_routed(rgb(), heavy=pair[0], light=x4, sigma_lr=two_region_map())
        with pytest.raises(ModelError, match="scale mismatch: heavy model 'tiny-heavy' is x2, asked for x4"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], scale=4, sigma_lr=two_region_map())

    def test_map_of_wrong_size(self, pair):
        with pytest.raises(UsageError, match="sigma map is 96x128 but the LR image is 48x64"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=np.zeros((96, 128), np.float32))

    def test_bad_thresholds(self, pair):
        with pytest.raises(UsageError, match="blur sigma in LR pixels"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=-0.5)
        with pytest.raises(UsageError, match="blur sigma in LR pixels"):
            upscale_routed(
                rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=(-1.0, 2.0), routes=3
            )
        with pytest.raises(UsageError, match="finite"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=float("nan"))
        # texture scores live on their own (log) scale: a negative threshold is meaningful there
        upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=-3.0, scorer="texture")

    def test_bad_scorer_and_image(self, pair):
        with pytest.raises(UsageError, match="scorer"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), scorer="magic")
        with pytest.raises(UsageError, match="RGB"):
            upscale_routed(rgb()[..., 0], heavy=pair[0], light=pair[1], sigma_lr=two_region_map())

    def test_learned_router_with_depth_is_a_usage_error(self, pair):
        with pytest.raises(UsageError, match="learned router takes no depth map"):
            upscale_routed(rgb(), heavy=pair[0], light=pair[1], scorer="learned", depth=np.ones((48, 64), np.float32))

    def test_registered_pair_untrained(self):
        from blurwise.models import list_variants

        if not any(v.name == "ebmsr-x2" for v in list_variants()):
            pytest.skip("ebmsr-x2 is not registered yet")
        sr, rep = upscale_routed(
            rgb(24, 32), heavy="edsr-s-x2", sigma_lr=two_region_map(24, 32), allow_untrained=True, threshold=1.0
        )
        assert sr.shape == (48, 64, 3) and rep.light == "ebmsr-x2"

    def test_overlay(self, pair):
        _, rep = upscale_routed(rgb(), heavy=pair[0], light=pair[1], sigma_lr=two_region_map(), threshold=1.0)
        ov = routing_overlay(np.zeros((48, 64, 3), np.float32), rep.plan, zoom=2)
        assert ov.shape == (96, 128, 3) and ov.dtype == np.float32
        assert ov[40, 10, 0] > ov[40, 10, 1]  # heavy region tinted red
        assert ov[10, 110, 1] > ov[10, 110, 0]  # light region tinted green


# ---------------------------------------------------------------------- seamless on real images
def _set_images(name: str, limit: int | None = None) -> list[np.ndarray]:
    from PIL import Image

    from blurwise.data.paths import data_path

    files = sorted(data_path("sr", "test", name).glob("*.png"))[:limit]
    if not files:
        pytest.skip(f"shared data {name} not available")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _psnr_y(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    from blurwise.metrics import psnr

    return psnr(a, b, crop=crop)


@pytest.mark.data
def test_seamless_both_heavy_set5_tiny_model():
    """Both routes = the heavy model: routed output equals the whole-image output (context >= receptive field)."""
    from blurwise.metrics.imresize import imresize

    heavy = TinySR(2, 3, seed=5)
    for hr in _set_images("Set5", limit=2):
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
        lr = np.clip(imresize(hr, scale=0.5), 0, 255).round().astype(np.float32)[:96, :96] / 255
        sig = np.zeros(lr.shape[:2], np.float32)
        sig[::17, :] = 3.0  # stripes of "defocus": many route boundaries
        sig[:, 40:] = 3.0
        p = plan_routes(
            sig, scale=2, threshold=1.0, patch=4, overlap=1, context=3, max_tile=32, allow_full=False, side_context=None
        )
        sr, _ = execute_plan(lr, p, {HEAVY: heavy, LIGHT: heavy}, sig)
        with torch.no_grad():
            ref = heavy(torch.from_numpy(lr.transpose(2, 0, 1))[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        assert np.abs(sr - ref).max() < 1e-5


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_seamless_shipped_heavy_default_settings(name):
    """Acceptance: both routes = the shipped heavy x4 model, default grid: within 0.01 dB of the whole image.

    The light route is the heavy network with a light model's *declared* cost (3% of the MACs), so the
    plan is a real routed plan (tiles, context, blend bands) rather than the all-heavy fallback.
    """
    import dataclasses

    from scipy import ndimage

    from blurwise.metrics.imresize import imresize
    from blurwise.models import get_variant, load_model
    from blurwise.models.registry import is_shipped

    if not is_shipped(get_variant("edsr-s-x4")):
        pytest.skip("edsr-s-x4 weights not shipped yet")
    model, inf = load_model("edsr-s-x4")
    standin = dataclasses.replace(inf, name="standin", macs_per_pixel=0.03 * inf.macs_per_pixel)
    to8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    routed, whole, light = [], [], []
    for hr in _set_images(name):
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr = np.clip(imresize(hr, scale=0.25), 0, 255).round().astype(np.float32) / 255
        blobs = ndimage.gaussian_filter(np.random.default_rng(0).random(lr.shape[:2]), 10)
        sig = (blobs > np.median(blobs)).astype(np.float32)  # half "defocused", in blobs: many route boundaries
        sr, rep = upscale_routed(  # min_saving 0: a routed plan even where the blobs' context eats the saving
            lr, heavy=(model, inf), light=(model, standin), sigma_lr=sig, check_teacher=False, min_saving=0
        )
        light.append(rep.fractions["light"])
        with torch.no_grad():
            ref = model(torch.from_numpy(lr.transpose(2, 0, 1))[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        routed.append(_psnr_y(to8(sr), hr, 4))
        whole.append(_psnr_y(to8(ref), hr, 4))
    assert np.mean(light) > 0.1  # really routed
    assert abs(np.mean(routed) - np.mean(whole)) <= 0.01


def test_guillotine_finds_cuts_that_pay_off_one_level_deeper():
    from blurwise.routing.plan import guillotine_cover

    frame = np.zeros((20, 20), bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True  # a ring: no single cut pays

    def cost(r0, r1, c0, c1):
        return (np.asarray(r1) - r0) * (np.asarray(c1) - c0) + 2

    boxes = guillotine_cover(frame, cost)
    covered = np.zeros_like(frame)
    for r0, r1, c0, c1 in boxes:
        assert not covered[r0:r1, c0:c1].any()  # disjoint
        covered[r0:r1, c0:c1] = True
    assert covered[frame].all() and covered.sum() == 76  # the ring itself, not its 400-cell box
    assert sum(cost(*b) for b in boxes) < cost(0, 20, 0, 20)


def test_guillotine_settled_boxes_are_taken_whole():
    """``settled(box, empty_cells)`` stops the search: a settled box is one rectangle, holes promoted."""
    from blurwise.routing.plan import guillotine_cover

    m = np.zeros((12, 12), bool)
    m[:, :4] = m[:, 8:] = True  # two bars: cutting between them pays under this cost

    def cost(r0, r1, c0, c1):
        return (np.asarray(r1) - r0 + 2) * (np.asarray(c1) - c0 + 2) + 1

    assert len(guillotine_cover(m, cost)) == 2
    seen = []

    def settled(box, empty):
        seen.append((box, empty))
        return True

    assert guillotine_cover(m, cost, settled=settled) == [(0, 12, 0, 12)]
    assert seen == [((0, 12, 0, 12), 48)]  # the tight box and its 4 x 12 empty cells


def test_planner_settles_boxes_whose_holes_cannot_pay_for_a_cut():
    """The planner's rule (plan.SETTLE): two light patches inside a large heavy block are promoted (their pixels
    are fewer than the context a cut would add); a wide light band is not."""
    sig = np.zeros((64, 64), np.float32)
    sig[28:32, 28:36] = 1.0  # two 4x4 LR patches of defocus in an in-focus image
    p = plan_routes(sig, scale=4, threshold=0.25, heavy_macs=1e6, light_macs=3e4, fallback=False, stat="max")
    assert len(p.tiles_of(HEAVY)) == 1 and p.fractions()["light"] == 0.0
    sig[:, 16:48] = 1.0  # a 32 px band: worth its own route
    p = plan_routes(sig, scale=4, threshold=0.25, heavy_macs=1e6, light_macs=3e4, fallback=False)
    assert p.fractions()["light"] >= 0.3


@pytest.mark.parametrize("width", [4, 8, 12, 16])
def test_in_focus_frame_around_a_defocused_centre_routes_the_centre_light(width):
    """A frame-shaped heavy region has no single cut that pays; the cover must still find its four sides
    instead of running the heavy model on the whole image (or peeling the frame row by row)."""
    sig = np.zeros((128, 128), np.float32)
    sig[width:-width, width:-width] = 1.0
    p = plan_routes(sig, scale=4, threshold=0.25, heavy_macs=1e6, light_macs=3e4)
    light = p.fractions()["light"]
    assert light >= ((128 - 2 * width - 8) / 128) ** 2  # the centre, less the patch at its edge (min stat)
    assert p.macs_fraction <= 1.4 * (1 - light) + 0.05  # the frame and its context, not the whole image
    assert len(p.tiles_of(HEAVY)) <= 4


def test_lr_map_kwargs_per_scale_defaults(monkeypatch):
    """The per-scale estimator default applies only when its model ships; explicit settings win."""
    import blurwise.defocus.learned as learned
    import blurwise.routing as routing

    monkeypatch.setattr(routing, "LR_MAP_DEFAULTS", {4: {"method": "learned", "segmenter": "none"}})
    monkeypatch.setattr(learned, "scale_model_available", lambda s: s == 4)
    assert routing.lr_map_kwargs(4) == {"method": "learned", "segmenter": "none"}
    assert routing.lr_map_kwargs(4, method="edge") == {"method": "edge"}
    assert routing.lr_map_kwargs(4, segmenter="slic") == {"method": "learned", "segmenter": "slic"}
    assert routing.lr_map_kwargs(2) == {}
    assert routing.lr_map_kwargs(4, depth=True) == {}  # a depth map: the depth-guided estimator
    monkeypatch.setattr(routing, "LR_MAP_THRESHOLD_HR", {4: 0.5})
    assert routing.default_threshold_hr(4) == 0.5
    assert routing.default_threshold_hr(4, {"method": "edge"}) == routing.DEFAULT_THRESHOLD_HR
    assert routing.default_threshold_hr(4, depth=True) == routing.DEFAULT_THRESHOLD_HR
    assert routing.default_threshold_hr(2) == routing.DEFAULT_THRESHOLD_HR
    monkeypatch.setattr(routing, "LR_MAP_STAT", {4: 20.0})
    assert routing.default_stat(4) == 20.0
    assert routing.default_stat(4, {"method": "edge"}) == "min"  # another estimator: the conservative minimum
    assert routing.default_stat(4, depth=True) == "min"
    assert routing.default_stat(2) == "min"
    monkeypatch.setattr(routing, "LR_MAP_SMOOTH", {4: 1.5})
    assert routing.default_smooth(4) == 1.5
    assert routing.default_smooth(4, {"method": "edge"}) is None and routing.default_smooth(4, depth=True) is None
    assert routing.default_smooth(2) is None
    monkeypatch.setattr(routing, "LR_MAP_EDGES", {4: -0.25})
    assert routing.default_edges(4) == -0.25
    assert routing.default_edges(4, {"method": "edge"}) is None and routing.default_edges(2) is None
    monkeypatch.setattr(learned, "scale_model_available", lambda s: False)
    assert routing.lr_map_kwargs(4) == {}
    assert routing.map_macs((10, 10), "learned", "none") > routing.map_macs((10, 10), "edge")


def test_budget_on_a_flat_map_is_met_finely_smoothest_first(pair):
    """A calibrated map is flat over large areas; a budget must still be met, flat texture going light first."""
    rng = np.random.default_rng(0)
    lr = np.full((64, 64, 3), 0.5, np.float32)
    lr[:, :32] += rng.normal(0, 0.1, (64, 32, 3)).astype(np.float32)  # textured left half
    sig = np.full((64, 64), 0.5, np.float32)  # every patch equally blurred
    _, rep = upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, budget=0.6)
    assert 0.4 <= rep.flops_fraction <= 0.6  # without the tie-break: all light or all heavy
    rm = rep.plan.route_map()
    assert (rm[:, 32:] == LIGHT).mean() > (rm[:, :32] == LIGHT).mean()


def test_smooth_patches_go_light_only_when_asked(pair):
    """``smooth``: flat content goes light although the map calls it in focus; textured content stays heavy."""
    rng = np.random.default_rng(0)
    lr = np.full((64, 64, 3), 0.5, np.float32)
    lr[:, :32] += rng.normal(0, 0.1, (64, 32, 3)).astype(np.float32)  # textured left half, flat right half
    sig = np.zeros((64, 64), np.float32)  # the map sees no blur anywhere
    _, plain = upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=0.5)
    assert (plain.plan.route_map() == HEAVY).all() and plain.smooth_share == 0.0
    _, rep = upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=0.5, smooth=3.0)
    rm = rep.plan.route_map()
    assert (rm[:, :28] == HEAVY).all() and (rm[:, 36:] == LIGHT).all()
    assert 0.3 < rep.smooth_share < 0.6 and "smooth" in rep.summary()
    with pytest.raises(UsageError, match="smooth"):
        upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, budget=0.5, smooth=3.0)
    with pytest.raises(UsageError, match="light_floor"):
        plan_routes(sig, scale=2, threshold=0.5, light_floor=np.ones((3, 3), bool))


def test_strong_edges_stay_heavy_only_when_asked(pair):
    """``edges``: patches with strong edges stay heavy although the map calls everything defocused."""
    lr = np.full((64, 64, 3), 0.5, np.float32)
    lr[:, :32] = np.where((np.arange(32) // 2) % 2 == 0, 0.05, 0.95)[None, :, None]  # stripes: strong edges
    sig = np.full((64, 64), 0.5, np.float32)  # the map sees blur everywhere
    _, plain = upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=0.25)
    assert (plain.plan.route_map() == LIGHT).all() and plain.edge_share == 0.0
    _, rep = upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, threshold=0.25, edges=0.0)
    rm = rep.plan.route_map()
    assert (rm[:, :28] == HEAVY).all() and (rm[:, 36:] == LIGHT).all()
    assert 0.3 < rep.edge_share < 0.6 and "edges kept heavy" in rep.summary()
    with pytest.raises(UsageError, match="edges"):
        upscale_routed(lr, heavy=pair[0], light=pair[1], sigma_lr=sig, budget=0.5, edges=0.0)


def test_keep_heavy_wins_over_score_and_light_floor():
    sig = np.full((16, 16), 1.0, np.float32)
    keep = np.zeros((4, 4), bool)
    keep[:2] = True
    p = plan_routes(sig, scale=2, threshold=0.5, keep_heavy=keep, light_floor=np.ones((4, 4), bool), min_light_cells=1)
    assert (p.route_grid[:2] == HEAVY).all() and (p.route_grid[2:] == LIGHT).all()
    assert p.extra["kept_share"] == 0.5 and p.extra["floor_share"] == 0.0
    with pytest.raises(UsageError, match="keep_heavy"):
        plan_routes(sig, scale=2, threshold=0.5, keep_heavy=np.ones((3, 3), bool))


def test_heavy_sides_one_box_and_arrays_agree_with_a_direct_count():
    """The tile cover prices a heavy box's window by which of its four sides touch other heavy cells (corners
    included); the one-box path and the vectorised path must both say what a direct look at the grid says."""
    from blurwise.routing.plan import _heavy_sides

    rng = np.random.default_rng(3)
    grid = np.where(rng.random((9, 11)) < 0.35, HEAVY, 1).astype(np.int8)
    pad, cheap = 3, 1
    sides = _heavy_sides(grid, pad, cheap)
    boxes = [(r0, r1, c0, c1) for r0 in range(9) for r1 in range(r0 + 1, 10) for c0 in range(11) for c1 in (c0 + 1, 11)]
    g = np.pad(grid == HEAVY, 1)  # outside the image: no heavy cells

    def direct(r0, r1, c0, c1):  # padded coordinates: cells [r0, r1) x [c0, c1) are at [r0 + 1, r1 + 1)
        strips = (g[r0, c0 : c1 + 2], g[r1 + 1, c0 : c1 + 2], g[r0 : r1 + 2, c0], g[r0 : r1 + 2, c1 + 1])
        return tuple(pad if s.any() else cheap for s in strips)

    want = [direct(*b) for b in boxes]
    assert [tuple(sides(*b)) for b in boxes] == want
    arrays = sides(*(np.array(v) for v in zip(*boxes, strict=True)))
    assert [tuple(int(a[i]) for a in arrays) for i in range(len(boxes))] == want
    assert len({w for w in want}) > 4  # the grid exercises several side patterns


def test_route_fractions_count_the_pixels_of_the_route_map():
    """``RoutePlan.fractions`` (from patch areas) equals the shares of the per-pixel route map, uneven edge
    patches included."""
    rng = np.random.default_rng(5)
    sig = rng.random((37, 50)).astype(np.float32)
    for routes in (2, 3):
        p = plan_routes(sig, scale=4, threshold=(0.3, 0.8) if routes == 3 else 0.3, routes=routes, fallback=False)
        rm = p.route_map()
        assert p.fractions() == {ROUTE_NAMES[r]: float(np.mean(rm == r)) for r in range(routes)}


def test_numpy_filters_of_the_routing_path_equal_scipy_ndimage():
    """The routing path's neighbourhood filters are numpy (no scipy import in a routing process); they must give
    scipy.ndimage's numbers exactly, on 8-bit-like luma, arbitrary floats and thin or one-pixel planes."""
    from scipy import ndimage

    from blurwise.routing.plan import _fill_small_light, _grad_energy, _laplace, _running

    rng = np.random.default_rng(11)
    shapes = [(1, 1), (1, 7), (9, 1), (2, 2), (13, 17), (40, 33)]
    for i, (h, w) in enumerate(shapes * 3):
        if i % 3 == 0:  # luma of an 8-bit RGB image, as the router computes it
            rgb = np.round(rng.random((h, w, 3)) * 255).astype(np.float32) / 255
            v = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        else:
            v = (rng.random((h, w)) ** (1 + i % 2) * (1 + 20 * (i % 3 == 2))).astype(np.float32)
        for m in (1, 2):
            for op, ref in ((np.minimum, ndimage.minimum_filter1d), (np.maximum, ndimage.maximum_filter1d)):
                for axis in (0, 1):
                    assert np.array_equal(_running(v, m, axis, op), ref(v, 2 * m + 1, axis=axis, mode="nearest"))
        assert np.array_equal(_laplace(v), ndimage.laplace(v, mode="reflect"))
        gx, gy = ndimage.sobel(v, axis=1, mode="reflect"), ndimage.sobel(v, axis=0, mode="reflect")
        assert np.array_equal(_grad_energy(v), gx * gx + gy * gy)
        grid = np.where(rng.random((h, w)) < 0.5, HEAVY, LIGHT).astype(np.int8)
        labels, n = ndimage.label(grid != HEAVY)
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        want = grid.copy()
        want[np.isin(labels, np.flatnonzero(sizes < 2) + 1)] = HEAVY
        assert np.array_equal(_fill_small_light(grid, 2), want)
        small3 = np.isin(labels, np.flatnonzero(sizes < 3) + 1)
        assert np.array_equal(_fill_small_light(grid, 3) == HEAVY, (grid == HEAVY) | small3)


def test_routing_does_not_import_scipy():
    """Routed SR with the learned map and router must not pay scipy's import (~0.25 s per process)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from blurwise.routing import upscale_routed\n"
        "lr = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)\n"
        "upscale_routed(lr, heavy='edsr-s-x4', device='cpu')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'skimage')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cpu_bf16_detection_reads_the_cpu_flags():
    """bf16 is picked by default only on CPUs that multiply it in hardware (elsewhere it is emulated, slower)."""
    from blurwise.tiling import cpu_has_fast_bf16

    assert cpu_has_fast_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert cpu_has_fast_bf16({"avx512f", "avx512_bf16"})
    assert not cpu_has_fast_bf16({"avx2", "avx512f", "avx512bw"})
    assert not cpu_has_fast_bf16(frozenset())
    assert isinstance(cpu_has_fast_bf16(), bool)  # this machine's flags (False where /proc/cpuinfo is missing)


def test_map_precision_default_and_choices(monkeypatch):
    """auto: bf16 on a CPU with bf16 units, fp32 on other CPUs, the models' half on a GPU; explicit wins."""
    import blurwise.tiling as tiling
    from blurwise.routing import map_precision

    monkeypatch.setattr(tiling, "cpu_has_fast_bf16", lambda flags=None: True)
    assert map_precision(None, False, "cpu") == "bf16"
    assert map_precision(None, False, torch.device("cpu")) == "bf16"
    monkeypatch.setattr(tiling, "cpu_has_fast_bf16", lambda flags=None: False)
    assert map_precision(None, False, "cpu") is False
    assert map_precision(None, True, "cpu") is False  # CPU: only where it is native, whatever the models do
    assert map_precision(None, "fp16", torch.device("cuda")) == "fp16"
    assert map_precision(None, "bf16", torch.device("cuda")) == "bf16"  # bf16 models: a bf16 map, not fp16
    assert map_precision(None, False, torch.device("cuda")) is False
    assert map_precision("fp32", "fp16", torch.device("cuda")) is False
    assert map_precision("bf16", False, "cpu") == "bf16"
    with pytest.raises(UsageError, match="map precision"):
        map_precision("int8", False, "cpu")


def test_bf16_map_is_close_and_fp32_map_is_the_default_estimate():
    """A bf16 map decides nearly the same routes; map_half='fp32' reproduces estimate_lr_map exactly."""
    from blurwise.routing import estimate_lr_map, lr_map_kwargs

    if lr_map_kwargs(4).get("method") != "learned":
        pytest.skip("the learned x4 map is not shipped")
    lr = rgb(48, 64)
    for _ in range(6):  # right half defocused: repeated [1, 2, 1] / 4 smoothing
        for ax in (0, 1):
            lr[:, 32:] = (np.roll(lr[:, 32:], 1, ax) + 2 * lr[:, 32:] + np.roll(lr[:, 32:], -1, ax)) / 4
    ref = estimate_lr_map(lr, 4)
    low = estimate_lr_map(lr, 4, half="bf16")
    assert low.dtype == np.float32 and low.shape == ref.shape
    assert np.median(np.abs(low - ref)) < 0.02 and np.abs(low - ref).max() < 0.5  # LR px of sigma
    _, rep = upscale_routed(lr, heavy="edsr-s-x4", device="cpu", map_half="fp32")
    np.testing.assert_array_equal(rep.sigma_lr, ref)
    _, rep = upscale_routed(lr, heavy="edsr-s-x4", device="cpu", map_half="bf16")
    np.testing.assert_array_equal(rep.sigma_lr, low)
    with pytest.raises(UsageError, match="map precision"):
        upscale_routed(lr, heavy="edsr-s-x4", device="cpu", map_half="int8")


def test_the_map_runs_on_the_heavy_models_device_in_the_asked_precision(pair, monkeypatch):
    """The estimated map gets the heavy model's device and the resolved precision (on a GPU the map used to
    run on the CPU); a given map is used as is."""
    import blurwise.defocus

    seen: list[dict] = []

    def fake(im, depth=None, **k):
        seen.append(k)
        return two_region_map(*im.shape[:2])

    monkeypatch.setattr(blurwise.defocus, "estimate_defocus", fake)
    heavy, light = pair
    upscale_routed(rgb(), heavy=heavy, light=light, threshold=0.5, map_half="bf16")
    upscale_routed(rgb(), heavy=heavy, light=light, threshold=0.5, map_half="fp32")
    assert [(k["device"], k["half"]) for k in seen] == [("cpu", "bf16"), ("cpu", False)]
    upscale_routed(rgb(), heavy=heavy, light=light, threshold=0.5, sigma_lr=two_region_map(), map_half="bf16")
    assert len(seen) == 2
