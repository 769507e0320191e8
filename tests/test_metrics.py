"""Tests for blurwise.metrics: PSNR/SSIM conventions and known values, imresize, FLOPs."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from blurwise.errors import InputError
from blurwise.metrics import imresize, psnr, rgb_to_y, ssim
from blurwise.metrics.imresize import resize_weights

SET5_X4, SET5_X2 = 28.431, 33.682  # measured with the faithful MATLAB port; published 28.42 / 33.66


def rng_image(h: int = 48, w: int = 40, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def set5_bicubic(scale: int) -> tuple[float, float]:
    """Mean Y-PSNR / Y-SSIM of bicubic up-sampling on Set5 with the SR literature's protocol."""
    from PIL import Image

    from blurwise.data.paths import data_path

    folder = data_path("sr", "test", "Set5")
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    ps, ss = [], []
    for f in sorted(folder.glob("*.png")):
        hr = np.asarray(Image.open(f).convert("RGB"))
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        sr = imresize(imresize(hr, 1 / scale), scale)
        ps.append(psnr(sr, hr, crop=scale))
        ss.append(ssim(sr, hr, crop=scale))
    return float(np.mean(ps)), float(np.mean(ss))


# --------------------------------------------------------------------------- rgb_to_y


class TestRgbToY:
    def test_known_values(self):
        img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], dtype=np.uint8)
        y = rgb_to_y(img)
        assert y.dtype == np.float64 and y.shape == (1, 3)
        assert y[0, 0] == pytest.approx(16.0) and y[0, 1] == pytest.approx(235.0)
        assert y[0, 2] == pytest.approx(16 + 65.481)

    def test_dtypes_agree(self):
        img = rng_image()
        y8 = rgb_to_y(img)
        assert np.allclose(rgb_to_y(img.astype(np.float32) / 255), y8, atol=1e-4)
        assert np.allclose(rgb_to_y(img.astype(np.uint16) * 257), y8, atol=1e-9)

    def test_grayscale_passthrough_and_bad_shape(self):
        g = rng_image(c=1)
        assert np.array_equal(rgb_to_y(g), g[:, :, 0].astype(np.float64))
        with pytest.raises(InputError, match="channels"):
            rgb_to_y(np.zeros((4, 4, 2), np.uint8))


# --------------------------------------------------------------------------- psnr


class TestPSNR:
    def test_identical_is_inf(self):
        img = rng_image()
        assert psnr(img, img) == math.inf and psnr(img, img, y=False) == math.inf

    def test_known_value(self):
        a = np.zeros((16, 16), np.uint8)
        b = np.full((16, 16), 10, np.uint8)
        assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
        a3, b3 = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
        b3[..., 0] = 30  # MSE over all channels: 900 / 3
        assert psnr(a3, b3, y=False) == pytest.approx(10 * math.log10(255**2 / 300))

    def test_crop_removes_border(self):
        a = rng_image(32, 32)
        b = a.copy()
        b[:4] = 0
        assert psnr(a, b, crop=4) == math.inf and psnr(a, b, crop=3) < 100

    def test_float_and_uint8_agree(self):
        a, b = rng_image(seed=1), rng_image(seed=2)
        assert psnr(a / 255.0, b / 255.0) == pytest.approx(psnr(a, b), abs=1e-9)
        assert psnr(a.astype(np.float32) / 255, b, y=False) == pytest.approx(psnr(a, b, y=False), abs=1e-4)

    def test_errors(self):
        with pytest.raises(InputError, match="shape"):
            psnr(rng_image(10, 10), rng_image(10, 12))
        with pytest.raises(InputError, match="crop"):
            psnr(rng_image(10, 10), rng_image(10, 10), crop=5)
        with pytest.raises(InputError, match="uint8 or uint16"):
            psnr(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))

    @pytest.mark.parametrize("fn", [psnr, ssim])
    def test_inputs_that_would_give_a_meaningless_number(self, fn):
        a, b = rng_image(16, 16), rng_image(16, 16)
        af, bf = a / 255.0, b / 255.0
        nan = af.copy()
        nan[0, 0, 0] = np.nan
        for x, y, said in (
            (a, b[:, :, 0], "differ in shape"),  # RGB luma vs gray: two scales, silently 11 dB before
            (nan, bf, "NaN"),
            (a.astype(np.float64), b.astype(np.float64), "reaches"),  # 0-255 data in floats
        ):
            with pytest.raises(InputError, match=said):
                fn(x, y)
        for crop in (-1, 2.7):
            with pytest.raises(InputError, match="crop is a number of border pixels"):
                fn(a, b, crop=crop)
        assert fn(a, b, crop=2.0) == fn(a, b, crop=2)

    def test_data_range_must_be_a_positive_peak(self):
        a, b = rng_image(8, 8), rng_image(8, 8)
        for bad in (0.0, -255.0, float("nan")):
            with pytest.raises(InputError, match="data_range"):
                psnr(a, b, data_range=bad)


# --------------------------------------------------------------------------- ssim


class TestSSIM:
    def test_identical_is_one(self):
        img = rng_image()
        assert ssim(img, img) == pytest.approx(1.0) and ssim(img, img, y=False) == pytest.approx(1.0)

    @pytest.mark.parametrize("seed", [0, 1])
    def test_matches_skimage_on_y(self, seed):
        from skimage.metrics import structural_similarity

        a = rng_image(50, 61, seed=seed)
        b = np.clip(a.astype(np.int16) + np.random.default_rng(9).integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
        ya, yb = rgb_to_y(a), rgb_to_y(b)
        ref = structural_similarity(
            ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
        ref_c = structural_similarity(
            ya[4:-4, 4:-4],
            yb[4:-4, 4:-4],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert ssim(a, b, crop=4) == pytest.approx(ref_c, abs=1e-9)

    def test_rgb_is_channel_mean(self):
        from skimage.metrics import structural_similarity

        a, b = rng_image(seed=3), rng_image(seed=4)
        ref = structural_similarity(
            a.astype(np.float64),
            b.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        )
        assert ssim(a, b, y=False) == pytest.approx(ref, abs=1e-9)

    def test_too_small(self):
        with pytest.raises(InputError, match="11x11"):
            ssim(rng_image(12, 12), rng_image(12, 12), crop=1)


# --------------------------------------------------------------------------- known values on Set5


@pytest.mark.data
class TestKnownValues:
    def test_set5_bicubic_x4(self):
        p, s = set5_bicubic(4)
        assert p == pytest.approx(28.42, abs=0.02) and p == pytest.approx(SET5_X4, abs=2e-3)
        assert s == pytest.approx(0.8104, abs=0.002)  # published bicubic x4 Set5 SSIM 0.8104

    def test_set5_bicubic_x2(self):
        p, s = set5_bicubic(2)
        assert p == pytest.approx(33.66, abs=0.03) and p == pytest.approx(SET5_X2, abs=2e-3)
        assert s == pytest.approx(0.9299, abs=0.002)  # published 0.9299


# --------------------------------------------------------------------------- imresize


class TestImresize:
    @pytest.mark.parametrize("h,w,scale", [(48, 40, 1 / 4), (50, 37, 1 / 2), (13, 9, 3), (12, 12, 1 / 3)])
    def test_shape_is_ceil(self, h, w, scale):
        out = imresize(rng_image(h, w), scale)
        assert out.shape == (math.ceil(h * scale), math.ceil(w * scale), 3)

    def test_size_argument_and_grayscale(self):
        out = imresize(rng_image(20, 30, c=1)[:, :, 0], size=(7, 11))
        assert out.shape == (7, 11) and out.dtype == np.uint8

    def test_uint8_rounds_and_float_does_not(self):
        img = rng_image()
        u8 = imresize(img, 1 / 4)
        f = imresize(img.astype(np.float64), 1 / 4)
        assert u8.dtype == np.uint8 and f.dtype == np.float64
        assert np.array_equal(u8, np.clip(np.round(f), 0, 255).astype(np.uint8))
        assert imresize(img.astype(np.uint16) * 257, 1 / 2).dtype == np.uint16

    def test_constant_image_stays_constant(self):
        img = np.full((17, 23, 3), 77, np.uint8)
        assert np.all(imresize(img, 1 / 3) == 77) and np.all(imresize(img, 2) == 77)

    def test_weights_rows_sum_to_one(self):
        for n, m, s in [(40, 10, 0.25), (10, 40, 4.0), (9, 3, 1 / 3)]:
            assert np.allclose(resize_weights(n, m, s).sum(axis=1), 1.0)

    def test_errors(self):
        with pytest.raises(ValueError, match="exactly one"):
            imresize(rng_image(), 0.5, size=(4, 4))
        with pytest.raises(ValueError, match="non-empty"):
            imresize(np.zeros((0, 4, 3), np.uint8), 0.5)
        for scale in (0, -2, float("nan")):  # a ZeroDivisionError or nonsense before
            with pytest.raises(ValueError, match="positive scale"):
                imresize(rng_image(), scale)
        with pytest.raises(ValueError, match="at least 1x1"):
            imresize(rng_image(), size=(0, 5))

    @pytest.mark.parametrize("scale,size", [(1 / 4, None), (3, None), (None, (17, 9))])
    def test_torch_version_equals_numpy(self, scale, size):
        import torch

        from blurwise.metrics import imresize_torch

        imgs = np.stack([rng_image(36, 28, seed=s) for s in range(2)])
        ref = np.stack([imresize(im, scale, size=size) for im in imgs])
        t = torch.from_numpy(imgs).permute(0, 3, 1, 2)
        out8 = imresize_torch(t, scale, size=size).permute(0, 2, 3, 1).numpy()
        assert out8.dtype == np.uint8 and np.array_equal(out8, ref)
        ref_f = np.stack([imresize(im.astype(np.float64) / 255, scale, size=size) for im in imgs])
        out_f = imresize_torch(t.float() / 255, scale, size=size).permute(0, 2, 3, 1).numpy()
        assert np.abs(out_f - ref_f).max() < 1e-5
        out_64 = imresize_torch(t.double() / 255, scale, size=size).permute(0, 2, 3, 1).numpy()
        assert np.abs(out_64 - ref_f).max() < 1e-12

    @pytest.mark.parametrize("scale", [1, 2, 3, 4])
    @pytest.mark.parametrize("size", [(1, 1), (2, 5), (13, 9)])
    def test_phase_filter_upscaling_equals_imresize(self, scale, size):
        # the routed SR's bicubic route: MATLAB's numbers, borders (mirrored, also past a 1-2 px axis) included
        import torch

        from blurwise.metrics.imresize import upscale_bicubic_torch

        imgs = np.stack([rng_image(*size, seed=s) for s in range(2)]).astype(np.float64) / 255
        ref = np.stack([imresize(im, scale) for im in imgs])
        out = upscale_bicubic_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2), scale).permute(0, 2, 3, 1).numpy()
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-12
        out32 = upscale_bicubic_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), scale)
        assert out32.dtype == torch.float32 and np.abs(out32.permute(0, 2, 3, 1).numpy() - ref).max() < 1e-5

    def test_phase_filter_upscaling_errors(self):
        import torch

        from blurwise.metrics.imresize import upscale_bicubic_torch

        with pytest.raises(ValueError, match="integer scale"):
            upscale_bicubic_torch(torch.zeros(1, 3, 4, 4), 1.5)
        with pytest.raises(ValueError, match="float NCHW"):
            upscale_bicubic_torch(torch.zeros(3, 4, 4), 2)


def test_import_does_not_load_scipy():
    # the routed SR path resizes but needs no quality metric: importing the resizer must not pull scipy in
    import subprocess
    import sys

    code = "import sys, blurwise.metrics.imresize, blurwise.models.ebmsr; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- flops


class TestFlops:
    def test_conv_flops_are_twice_analytic_macs(self):
        import torch
        from torch import nn

        from blurwise.metrics import compute, count_flops, count_macs

        conv = nn.Conv2d(3, 16, 3, padding=1)
        macs = 16 * 3 * 3 * 3 * 20 * 24  # out_ch * in_ch * k * k * H * W
        assert count_macs(conv, (1, 3, 20, 24)) == macs
        assert count_flops(conv, (1, 3, 20, 24)) == 2 * macs
        c = compute(conv, (1, 3, 20, 24))
        assert (c.macs, c.flops, c.params, c.input_shape) == (macs, 2 * macs, 16 * 27 + 16, (1, 3, 20, 24))
        assert "GMACs" in str(c)
        assert torch.is_tensor(next(conv.parameters()))


def test_import_does_not_load_torch():
    code = "import sys, blurwise.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
