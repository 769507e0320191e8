"""Tests for blurwise.tiling: grid, feather weights, tiled == untiled, batching, OOM and NaN fallbacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blurwise.errors import InputError, ModelError
from blurwise.tiling import auto_tile, feather_weights, forward_batch, half_dtype, is_oom, run_tiled, tile_grid

torch.set_num_threads(1)


def small_net(scale: int, cin: int = 3, cout: int = 3, seed: int = 0) -> nn.Module:
    """Fully convolutional net with receptive-field radius 3 (three 3x3 convs) and a pixel-shuffle tail."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(cin, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, cout * scale * scale, 3, padding=1),
    ]
    if scale > 1:
        layers.append(nn.PixelShuffle(scale))
    return nn.Sequential(*layers).eval()


def untiled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------- tile_grid


class TestTileGrid:
    @pytest.mark.parametrize("h,w,tile,pad", [(37, 53, 16, 4), (64, 64, 32, 8), (10, 100, 7, 3), (5, 5, 64, 16)])
    def test_cores_partition_image(self, h, w, tile, pad):
        cover = torch.zeros(h, w, dtype=torch.int32)
        tiles = tile_grid(h, w, tile, pad)
        for t in tiles:
            y0, y1, x0, x1 = t.core
            cover[y0:y1, x0:x1] += 1
            assert y1 - y0 <= tile and x1 - x0 <= tile
        assert bool((cover == 1).all())

    def test_windows_same_size_inside_image_and_contain_context(self):
        h, w, tile, pad = 45, 70, 16, 5
        tiles = tile_grid(h, w, tile, pad)
        sizes = {(t.window[1] - t.window[0], t.window[3] - t.window[2]) for t in tiles}
        assert len(sizes) == 1
        for t in tiles:
            wy0, wy1, wx0, wx1 = t.window
            y0, y1, x0, x1 = t.core
            assert 0 <= wy0 and wy1 <= h and 0 <= wx0 and wx1 <= w
            assert wy0 <= max(y0 - pad, 0) and wy1 >= min(y1 + pad, h)
            assert wx0 <= max(x0 - pad, 0) and wx1 >= min(x1 + pad, w)
            # border sides have margin 0, interior sides at least pad
            assert (t.margins[0] == 0) == (y0 == 0) and (t.margins[3] == 0) == (x1 == w)
            assert all(m == 0 or m >= pad for m in t.margins)

    def test_whole_image_when_tile_zero(self):
        (t,) = tile_grid(30, 40, 0, 8)
        assert t.core == t.window == (0, 30, 0, 40) and t.margins == (0, 0, 0, 0)

    def test_empty_image_raises(self):
        with pytest.raises(InputError, match="empty"):
            tile_grid(0, 10, 8, 2)


# --------------------------------------------------------------------------- feather_weights


class TestFeatherWeights:
    @pytest.mark.parametrize("blend", ["cosine", "linear"])
    @pytest.mark.parametrize("h,w,tile,pad,scale", [(37, 53, 16, 4, 1), (50, 31, 12, 6, 3), (20, 20, 5, 8, 2)])
    def test_weights_sum_to_one(self, blend, h, w, tile, pad, scale):
        acc = torch.zeros(h * scale, w * scale, dtype=torch.float64)
        for t in tile_grid(h, w, tile, pad):
            wy0, wy1, wx0, wx1 = (v * scale for v in t.window)
            wt = feather_weights(wy1 - wy0, wx1 - wx0, pad * scale, blend, margins=tuple(m * scale for m in t.margins))
            assert float(wt.min()) >= 0.0
            acc[wy0:wy1, wx0:wx1] += wt.double()
        assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6)

    def test_interior_defaults_and_shape(self):
        wt = feather_weights(40, 30, 8)
        assert wt.shape == (40, 30) and wt.dtype == torch.float32
        assert float(wt[:4, :].max()) == 0.0  # outer half of the context is never used
        assert float(wt[12:28, 12:18].min()) == 1.0  # core interior has full weight
        assert torch.allclose(wt, wt.flip(0)) and torch.allclose(wt, wt.flip(1))

    def test_border_sides_not_feathered(self):
        wt = feather_weights(20, 20, 8, margins=(0, 8, 0, 8))
        assert float(wt[0, 0]) == 1.0 and float(wt[-1, -1]) == 0.0

    def test_bad_blend(self):
        with pytest.raises(ValueError, match="blend"):
            feather_weights(8, 8, 2, "gaussian")


# --------------------------------------------------------------------------- run_tiled


class TestRunTiled:
    @pytest.mark.parametrize("scale", [1, 2, 3, 4])
    @pytest.mark.parametrize("blend", ["cosine", "linear"])
    def test_equals_untiled_when_pad_covers_receptive_field(self, scale, blend):
        model = small_net(scale)
        x = torch.rand(1, 3, 37, 29)
        ref = untiled(model, x)
        out = run_tiled(model, x, scale=scale, tile=12, tile_pad=6, batch=3, blend=blend)
        assert out.shape == ref.shape == (1, 3, 37 * scale, 29 * scale)
        assert float((out - ref).abs().max()) < 1e-5

    def test_odd_sizes_extra_channels_and_other_out_channels(self):
        model = small_net(2, cin=4, cout=1)
        x = torch.rand(2, 4, 23, 41)
        out = run_tiled(model, x, scale=2, tile=9, tile_pad=7, batch=2)
        assert out.shape == (2, 1, 46, 82)
        assert float((out - untiled(model, x)).abs().max()) < 1e-5

    def test_batch_size_does_not_change_output(self):
        model = small_net(2)
        x = torch.rand(1, 3, 40, 33)
        outs = [run_tiled(model, x, scale=2, tile=10, tile_pad=4, batch=b) for b in (1, 3, 100)]
        for o in outs[1:]:
            assert float((o - outs[0]).abs().max()) < 1e-6

    def test_small_pad_gives_feathered_not_exact(self):
        model = small_net(1)
        x = torch.rand(1, 3, 32, 32)
        out = run_tiled(model, x, tile=8, tile_pad=2)
        err = float((out - untiled(model, x)).abs().max())
        assert 0 < err < 0.5

    def test_auto_tile_whole_image_and_small_budget(self):
        model = small_net(2)
        assert auto_tile(model, 32, 32, in_channels=3, scale=2) == 0
        t = auto_tile(model, 512, 512, in_channels=3, scale=2, pad=8, budget=20 << 20)
        assert 16 <= t < 512
        x = torch.rand(1, 3, 30, 20)
        assert float((run_tiled(model, x, scale=2) - untiled(model, x)).abs().max()) < 1e-5

    def test_auto_tile_probes_only_large_images(self):
        model = small_net(2)
        calls = []
        model.register_forward_hook(lambda *a: calls.append(1))
        assert auto_tile(model, 24, 32, in_channels=3, scale=2) == 0
        assert auto_tile(model, 300, 200, in_channels=3, scale=2, budget=1 << 30) == 0
        assert calls == []  # the static width bound decided; no probe forward pass
        x = torch.rand(1, 3, 24, 32)
        run_tiled(model, x, scale=2)
        assert calls == [1]  # the run itself is the only forward
        assert 16 <= auto_tile(model, 4000, 4000, in_channels=3, scale=2, budget=64 << 20) < 4000
        assert calls == [1, 1]  # a large image gets the (exact) probe

    def test_static_estimate_bounds_probe(self):
        from blurwise.tiling import _bytes_per_pixel, _static_bytes_per_pixel

        for scale in (1, 2, 4):
            model = small_net(scale)
            probe = _bytes_per_pixel(model, 3, torch.device("cpu"), None, {})
            assert _static_bytes_per_pixel(model, 3, scale) >= probe
        assert _static_bytes_per_pixel(nn.Identity(), 3, 1) is None

    def test_oom_halves_tile(self, caplog):
        base = small_net(1)

        class Picky(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = base

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                if x.shape[-1] > 40:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
                return self.net(x)

        x = torch.rand(1, 3, 64, 64)
        with caplog.at_level("WARNING", logger="blurwise.tiling"):
            out = run_tiled(Picky(), x, tile=64, tile_pad=6, batch=2)
        assert "out of memory" in caplog.text
        assert float((out - untiled(base, x)).abs().max()) < 1e-5

    def test_oom_gives_up_below_min_tile(self):
        class Hungry(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c = nn.Conv2d(3, 3, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("out of memory")

        with pytest.raises(ModelError, match="out of memory"):
            run_tiled(Hungry(), torch.rand(1, 3, 64, 64), tile=64, tile_pad=2)

    def test_other_errors_propagate(self):
        class Broken(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("shape mismatch")

        with pytest.raises(RuntimeError, match="shape mismatch"):
            run_tiled(Broken(), torch.rand(1, 3, 8, 8), tile=4, tile_pad=1)

    def test_half_nan_falls_back_to_fp32(self, caplog):
        class NaNUnderAutocast(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c = nn.Conv2d(3, 3, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                y = x * 2
                return y * float("nan") if torch.is_autocast_enabled("cpu") else y

        x = torch.rand(1, 3, 20, 20)
        with caplog.at_level("WARNING", logger="blurwise.tiling"):
            out = run_tiled(NaNUnderAutocast(), x, tile=10, tile_pad=2, half="bf16")
        assert "fp32" in caplog.text
        assert torch.allclose(out, x * 2)

    def test_half_close_to_fp32(self):
        model = small_net(2)
        x = torch.rand(1, 3, 24, 24)
        out = run_tiled(model, x, scale=2, tile=12, tile_pad=6, half=True)
        assert out.dtype == torch.float32
        assert float((out - untiled(model, x)).abs().max()) < 0.05

    def test_channels_last_and_progress(self):
        model = small_net(2)
        x = torch.rand(1, 3, 26, 26)
        out = run_tiled(model, x, scale=2, tile=10, tile_pad=6, channels_last=True, progress=True)
        assert float((out - untiled(model, x)).abs().max()) < 1e-5
        out.clamp_(0, 1)  # an ordinary tensor (not an inference tensor): callers may edit it in place

    def test_wrong_scale_is_model_error(self):
        with pytest.raises(ModelError, match="scale"):
            run_tiled(small_net(2), torch.rand(1, 3, 16, 16), scale=4, tile=8, tile_pad=2)

    def test_bad_inputs(self):
        with pytest.raises(InputError):
            run_tiled(small_net(1), torch.rand(3, 16, 16))
        with pytest.raises(InputError, match="empty"):
            run_tiled(small_net(1), torch.rand(1, 3, 0, 16))

    def test_is_oom(self):
        assert is_oom(torch.OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA out of memory"))
        assert not is_oom(RuntimeError("size mismatch")) and not is_oom(ValueError("out of memory"))


class TestHalfPrecision:
    def test_half_dtype_per_device(self):
        cpu, cuda = torch.device("cpu"), torch.device("cuda")
        assert half_dtype(False, cpu) is None and half_dtype("fp32", cpu) is None
        assert half_dtype(True, cpu) is torch.bfloat16 and half_dtype(True, cuda) is torch.float16
        assert half_dtype("bf16", cuda) is torch.bfloat16
        with pytest.raises(ValueError, match="half must be"):
            half_dtype("int8", cpu)

    def test_forward_batch_returns_fp32_close_to_fp32(self):
        torch.manual_seed(0)
        model, x = small_net(1).eval(), torch.rand(2, 3, 16, 16)
        with torch.no_grad():
            ref, y = model(x), forward_batch(model, x, torch.bfloat16)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        assert (y - ref).abs().max() < 0.05


# --------------------------------------------------------------------------- models pooling over the whole image


class _Pooling(nn.Module):
    """A model without tiled_forward whose output depends on the whole image: ``inner`` (keywords passed on, for
    LPRN, which pools by itself) or ``inner(x)`` times x's global average."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.pool = inner, nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor, **kw: object) -> torch.Tensor:
        return self.inner(x, **kw) if kw else self.inner(x) * self.pool(x)


class TestGlobalStatistics:
    @staticmethod
    def _two_tone(h: int = 37, w: int = 45) -> torch.Tensor:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        x[..., w // 2 :] = 0.8 + 0.2 * x[..., w // 2 :]  # tiles with different statistics
        return x

    @pytest.mark.parametrize("cfg", [{}, {"shared": False}, {"recalib": "none"}, {"recalib": "channel"}])
    def test_lprn_tiled_equals_untiled(self, cfg):
        from blurwise.models.lprn import LPRN

        torch.manual_seed(0)
        m = LPRN(stages=3, channels=8, blocks=1, **cfg).eval()
        x = self._two_tone()
        with torch.no_grad():
            ref = m(x, stages=2)
            naive = run_tiled(_Pooling(m), x, tile=16, tile_pad=4, extra={"stages": 2})  # tiles the whole net
        y = run_tiled(m, x, tile=16, tile_pad=4, extra={"stages": 2})
        assert y.shape == x.shape and (y - ref).abs().max() < 1e-5
        if cfg.get("recalib", "both") != "none":  # squeeze-excitation per tile: the bug this guards against
            assert (naive - ref).abs().max() > 1e-2

    def test_tiler_mean_matches_whole_image_mean(self):
        from blurwise.tiling import Tiler

        net, x = small_net(1), torch.rand(1, 3, 29, 41)
        with torch.no_grad():
            ref = net(x).mean((2, 3), keepdim=True)
            got = Tiler(tile=8, pad=6).mean(net, x)  # radius 3 <= pad / 2: exact
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)

    def test_warns_once_when_a_pooling_model_is_tiled(self, caplog, monkeypatch):
        import blurwise.tiling as tiling

        monkeypatch.setattr(tiling, "_WARNED_POOLING", set())
        model = _Pooling(small_net(1))
        with caplog.at_level("WARNING", logger="blurwise.tiling"):
            run_tiled(model, torch.rand(1, 3, 16, 16), tile=0)  # one tile: nothing to say
            assert not caplog.records
            for _ in range(2):
                run_tiled(model, torch.rand(1, 3, 16, 16), tile=8, tile_pad=2)
        assert len(caplog.records) == 1 and "pools over the whole image" in caplog.records[0].message
