"""Architectures: shape/scale contracts, fp16/bf16 forward, parameter and FLOP budgets, LPRN stages, EBM-SR loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blurwise.metrics.flops import count_macs
from blurwise.models import create_model
from blurwise.models.ebmsr import EBMSR, BicubicPhases, distill_loss
from blurwise.models.lprn import LPRN
from blurwise.models.registry import count_params

SR_VARIANTS = ["safmn-x2", "safmn-x3", "safmn-x4", "ebmsr-x2", "ebmsr-x4"]
DEBLUR_VARIANTS = [
    "lprn",
    "lprn-t5",
    "lprn-t7",
    "lprn-recal-none",
    "lprn-recal-channel",
    "lprn-recal-spatial",
    "lprn-unrolled",
    "plainres",
    "nafnet16",
]
# small configs of every architecture (fast tests of code paths, not of budgets)
SMALL = {
    "safmn": dict(scale=2, dim=8, n_blocks=1),
    "ebmsr": dict(scale=2, channels=8, n_blocks=1),
    "lprn": dict(stages=2, channels=8, blocks=1),
    "plainres": dict(channels=8, blocks=1),
    "nafnet": dict(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
}


def _input(model: torch.nn.Module, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, model.in_channels, h, w, generator=g)


def _half_dtype() -> torch.dtype:
    """fp16 where CPU convolution supports it, else bf16."""
    try:
        F.conv2d(torch.zeros(1, 1, 3, 3, dtype=torch.float16), torch.zeros(1, 1, 3, 3, dtype=torch.float16))
        return torch.float16
    except RuntimeError:  # pragma: no cover - depends on the torch build
        return torch.bfloat16


# --------------------------------------------------------------------------- shape / scale contract


class TestShapes:
    @pytest.mark.parametrize("name", SR_VARIANTS)
    def test_sr_scale(self, name):
        m = create_model(name).eval()
        x = _input(m, 13, 17)
        with torch.no_grad():
            y = m(x)
        s = m.scale
        assert y.shape == (1, 3, 13 * s, 17 * s)
        assert m.out_channels == 3 and torch.isfinite(y).all()

    @pytest.mark.parametrize("name", DEBLUR_VARIANTS)
    @pytest.mark.parametrize("size", [(17, 23), (1, 9), (16, 16)])
    def test_deblur_same_size(self, name, size):
        m = create_model(name).eval()
        x = _input(m, *size)
        with torch.no_grad():
            y = m(x)
        assert y.shape == x.shape and m.scale == 1

    def test_ebmsr_in_channels(self):
        m = create_model("ebmsr-x4")
        assert m.in_channels == 4
        with pytest.raises(ValueError, match="4 input channels"):
            m(torch.rand(1, 3, 8, 8))

    def test_ebmsr_sigma_clamped_to_training_range(self):
        m = create_model("ebmsr-x4").eval()
        assert m.sigma_max == pytest.approx(6.0 / 4)  # sigma_HR <= 6 px in the training renders
        rgb = torch.rand(1, 3, 8, 8)
        with torch.no_grad():
            at_max = m(torch.cat([rgb, torch.full((1, 1, 8, 8), 1.5)], 1))
            beyond = m(torch.cat([rgb, torch.full((1, 1, 8, 8), 7.0)], 1))
        assert torch.equal(at_max, beyond)  # an over-estimated map cannot push the input out of range

    @pytest.mark.parametrize("scale", [2, 4])
    def test_ebmsr_inference_path_matches_training_path(self, scale):
        # EBM-SR's forward runs in place when no gradient is needed; it must compute the same function
        torch.manual_seed(scale)
        m = create_model(f"ebmsr-x{scale}").eval()
        for p in m.parameters():  # non-trivial SFT and tail weights (the init starts near plain bicubic)
            p.data.normal_(0, 0.2)
        x = torch.rand(2, 4, 13, 10)
        x[:, 3] *= 2
        y_train = m(x)
        with torch.no_grad():
            y_infer = m(x)
        with torch.inference_mode():
            y_mode = m(x)
        assert y_train.requires_grad and not y_infer.requires_grad
        torch.testing.assert_close(y_infer, y_train.detach(), atol=1e-4, rtol=1e-4)  # float rounding order only
        torch.testing.assert_close(y_mode, y_infer, atol=0, rtol=0)

    def test_batch(self):
        m = create_model("safmn", **SMALL["safmn"]).eval()
        x = torch.rand(3, 3, 9, 11)
        with torch.no_grad():
            y = m(x)
            y1 = m(x[1:2])
        torch.testing.assert_close(y[1:2], y1, atol=1e-5, rtol=1e-5)


class TestHalf:
    @pytest.mark.parametrize("arch", sorted(SMALL))
    def test_half_forward_finite(self, arch):
        dt = _half_dtype()
        m = create_model(arch, **SMALL[arch]).eval().to(dt)
        x = _input(m, 15, 18).to(dt)
        with torch.no_grad():
            y = m(x)
        assert y.dtype == dt and torch.isfinite(y.float()).all()

    def test_safmn_layernorm_large_values(self):
        # the layer norm squares deviations in fp32, so large fp16 activations do not overflow
        from blurwise.models.safmn import LayerNorm2d

        x = torch.full((1, 4, 2, 2), 300.0)
        x[:, 0] = -300.0
        y = LayerNorm2d(4).to(_half_dtype())(x.to(_half_dtype()))
        assert torch.isfinite(y.float()).all()


# --------------------------------------------------------------------------- budgets


class TestBudgets:
    @pytest.mark.parametrize("name", ["safmn-x2", "safmn-x3", "safmn-x4"])
    def test_safmn_params(self, name):
        assert 200_000 <= count_params(create_model(name)) <= 700_000

    def test_lprn_params(self):
        assert count_params(create_model("lprn")) <= 120_000

    def test_lprn_params_independent_of_stages(self):
        counts = {count_params(create_model(n)) for n in ("lprn", "lprn-t5", "lprn-t7")}
        assert len(counts) == 1
        assert count_params(LPRN(stages=3)) == count_params(LPRN(stages=9))

    def test_unrolled_same_macs_more_params(self):
        shared, unrolled = create_model("lprn"), create_model("lprn-unrolled")
        assert count_macs(shared, (1, 3, 32, 32)) == count_macs(unrolled, (1, 3, 32, 32))
        assert count_params(unrolled) > 5.5 * count_params(shared)

    def test_plainres_matches_lprn_macs(self):
        a = count_macs(create_model("lprn"), (1, 3, 32, 32))
        b = count_macs(create_model("plainres"), (1, 3, 32, 32))
        assert abs(b - a) / a < 0.05

    @pytest.mark.parametrize("scale", [2, 4])
    def test_ebmsr_flops_fraction(self, scale):
        student = count_macs(create_model(f"ebmsr-x{scale}"), (1, 4, 32, 32))
        teacher = count_macs(create_model(f"edsr-s-x{scale}"), (1, 3, 32, 32))
        assert student <= 0.05 * teacher


# --------------------------------------------------------------------------- LPRN


class TestLPRN:
    def test_return_all_and_stages(self):
        m = LPRN(stages=3, channels=8, blocks=1).eval()
        x = _input(m, 11, 14)
        with torch.no_grad():
            outs = m(x, return_all=True)
            assert len(outs) == 3 and all(o.shape == x.shape for o in outs)
            for k in (1, 2, 3):
                torch.testing.assert_close(m(x, stages=k), outs[k - 1])
            assert m(x, stages=5).shape == x.shape  # shared weights can run more steps

    def test_weights_shared(self):
        m = LPRN(stages=4, channels=8, blocks=1)
        assert len(m.body) == 1
        assert len(LPRN(stages=4, channels=8, blocks=1, shared=False).body) == 4

    def test_stage_errors(self):
        m = LPRN(stages=2, channels=8, blocks=1, shared=False)
        with pytest.raises(ValueError, match="stages"):
            m(torch.rand(1, 3, 8, 8), stages=3)
        with pytest.raises(ValueError, match="stages"):
            m(torch.rand(1, 3, 8, 8), stages=0)

    def test_bad_recalib(self):
        with pytest.raises(ValueError, match="recalib"):
            LPRN(recalib="bogus")

    @pytest.mark.parametrize("unshuffle", [1, 2])
    def test_gradient_every_stage(self, unshuffle):
        m = LPRN(stages=2, channels=8, blocks=1, unshuffle=unshuffle)
        x = torch.rand(2, 3, 9, 10)
        loss = sum(o.abs().mean() for o in m(x, return_all=True))
        loss.backward()
        assert all(p.grad is not None for p in m.parameters())


# --------------------------------------------------------------------------- EBM-SR


class TestEBMSR:
    def test_zero_residual_is_bicubic(self):
        m = EBMSR(scale=2, channels=8, n_blocks=1).eval()
        torch.nn.init.zeros_(m.tail[0].weight)
        x = _input(m, 9, 12)
        with torch.no_grad():
            y = m(x)
        ref = F.interpolate(x[:, :3], scale_factor=2, mode="bicubic", align_corners=False)
        torch.testing.assert_close(y, ref)

    @pytest.mark.parametrize("scale", [2, 3, 4])
    @pytest.mark.parametrize("size", [(1, 1), (2, 5), (7, 9)])
    def test_bicubic_phases_equal_interpolate(self, scale, size):
        # the LR-filter form of bicubic upsampling (+ pixel shuffle) is F.interpolate's, borders included
        x = torch.rand(2, 3, *size, dtype=torch.float64)
        up = BicubicPhases(scale).double()
        y = F.pixel_shuffle(up(x), scale)
        ref = F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False)
        torch.testing.assert_close(y, ref, atol=1e-7, rtol=0)

    def test_bicubic_phases_are_fixed(self):
        m = EBMSR(scale=4, channels=8, n_blocks=1)
        assert not any(k.startswith("bicubic") for k in m.state_dict())  # shipped weights load unchanged
        assert all(not n.startswith("bicubic") for n, _ in m.named_parameters())  # never trained

    def test_sigma_conditions_output(self):
        torch.manual_seed(0)
        m = EBMSR(scale=2, channels=8, n_blocks=1).eval()
        x = _input(m, 9, 12)
        x0, x1 = x.clone(), x.clone()
        x0[:, 3], x1[:, 3] = 0.0, 3.0
        with torch.no_grad():
            assert not torch.allclose(m(x0), m(x1))


class TestDistillLoss:
    def test_zero_when_equal(self):
        y = torch.rand(2, 3, 16, 16)
        sigma = torch.rand(2, 1, 4, 4) * 2
        assert distill_loss(y, y.clone(), y.clone(), sigma).item() == 0.0
        assert distill_loss(y, y, y).item() == 0.0

    def test_positive_and_differentiable(self):
        s = torch.rand(1, 3, 16, 16, requires_grad=True)
        t, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
        loss = distill_loss(s, t, y, torch.rand(1, 4, 4))
        assert loss.item() > 0
        loss.backward()
        assert torch.isfinite(s.grad).all()

    def test_band_term_sees_sharpening(self):
        # oversharpened student vs smooth teacher: band term adds to the plain L1 terms
        t = torch.rand(1, 3, 24, 24)
        s = t + 0.1 * torch.randn(1, 3, 24, 24)
        no_band = distill_loss(s, t, t, weights={"band": 0.0})
        with_band = distill_loss(s, t, t)
        assert with_band > no_band > 0

    def test_weights_override(self):
        s, t = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
        only_target = distill_loss(s, t, s, weights={"teacher": 0.0, "band": 0.0})
        assert only_target.item() == 0.0


def test_lprn_tiled_forward_shipped_weights_odd_size():
    # the shipped lprn through run_tiled, odd size and tiles much smaller than its receptive field: exact
    from blurwise.models import load_model
    from blurwise.tiling import run_tiled

    m = load_model("lprn")[0].eval()
    x = torch.rand(1, 3, 23, 51, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
    assert (run_tiled(m, x, tile=16, tile_pad=2) - ref).abs().max() < 1e-5
