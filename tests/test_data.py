"""Tests for blurwise.data: defocus rendering, depth, motion blur, SR pairs, datasets, eval sets, scene."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from blurwise.data import defocus, depth, motion, sr
from blurwise.data.paths import data_path
from blurwise.errors import BlurwiseError, InputError, UsageError

torch.set_num_threads(1)

HAS_DATA = data_path("sr", "test", "Set14").is_dir()
needs_data = pytest.mark.skipif(not HAS_DATA, reason="needs ../shared/data (set BLURWISE_DATA)")


def rand_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, float32 HWC in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 5) * np.cos(y / 7)], axis=2)
    return np.clip(0.7 * base + 0.3 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


def write_pngs(folder, n: int = 3, h: int = 72, w: int = 96, seed: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(np.round(rand_image(h, w, seed + i) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- CoC and sigma


class TestCoc:
    def test_sigma_convention(self):
        assert defocus.coc_to_sigma(1.0) == 0.0
        assert defocus.coc_to_sigma(0.5) == 0.0
        assert defocus.coc_to_sigma(5.0) == pytest.approx(1.0)
        assert defocus.coc_to_sigma(-9.0) == pytest.approx(2.0)  # sign (near/far) does not matter
        c = np.array([1.0, 2.5, 13.0, 25.0], np.float32)
        np.testing.assert_allclose(defocus.sigma_to_coc(defocus.coc_to_sigma(c)), c, rtol=1e-6)

    def test_sigma_to_coc_rejects_negative(self):
        with pytest.raises(InputError, match="non-negative"):
            defocus.sigma_to_coc(-1.0)

    def test_thin_lens_known_value(self):
        # f = 50 mm, N = 2, focus 2 m, point at 4 m, pitch 5 um: c = f^2/(N (zf - f)) * |1 - zf/z| / pitch
        c = defocus.thin_lens_coc(np.array([[4.0, 2.0]]), 2.0, focal_length=50, f_number=2, pixel_pitch=0.005)
        assert c[0, 0] == pytest.approx(2500 / (2 * 1950) * 0.5 / 0.005, rel=1e-5)
        assert c[0, 1] == 0.0
        s = defocus.thin_lens_coc(np.array([[1.0, 4.0]]), 2.0, f_number=2, pixel_pitch=0.005, signed=True)
        assert s[0, 0] < 0 < s[0, 1]  # in front of focus negative, behind positive

    def test_max_coc_mode_scales_to_the_peak(self):
        d = np.linspace(1, 10, 50)[None].repeat(4, 0)
        c = defocus.signed_coc(d, 3.0, max_coc=20.0)
        assert np.abs(c).max() == pytest.approx(20.0)

    def test_errors(self):
        d = np.full((8, 8), 2.0)
        with pytest.raises(UsageError, match="focal length"):
            defocus.thin_lens_coc(d, 0.04, focal_length=50)
        with pytest.raises(UsageError, match="max_coc"):
            defocus.render_defocus(rand_image(8, 8), d, focus_depth=2.0)
        with pytest.raises(InputError, match="positive"):
            defocus.render_defocus(rand_image(8, 8), -d, focus_depth=2.0, max_coc=5)
        with pytest.raises(InputError, match="does not match"):
            defocus.render_defocus(rand_image(8, 9), d, focus_depth=2.0, max_coc=5)
        with pytest.raises(UsageError, match="psf"):
            defocus.render_defocus(rand_image(8, 8), d, focus_depth=2.0, max_coc=5, psf="hexagon")


# --------------------------------------------------------------------------- render_defocus


class TestRenderDefocus:
    @pytest.mark.parametrize("kw", [{"max_coc": 25.0}, {"f_number": 1.4, "focal_length": 85.0}])
    @pytest.mark.parametrize("psf", ["gaussian", "disk"])
    def test_depth_at_focus_leaves_image_unchanged(self, kw, psf):
        img = rand_image()
        out, sigma = defocus.render_defocus(img, np.full(img.shape[:2], 2.5), focus_depth=2.5, psf=psf, **kw)
        assert out.dtype == np.float32 and sigma.dtype == np.float32
        np.testing.assert_allclose(out, img, atol=2e-6)
        assert sigma.max() == 0.0

    def test_uint8_and_gray_inputs(self):
        img = np.round(rand_image() * 255).astype(np.uint8)
        d = np.full(img.shape[:2], 3.0)
        out, _ = defocus.render_defocus(img[:, :, 0], d, focus_depth=3.0, max_coc=4)
        assert out.shape == img.shape[:2]
        np.testing.assert_allclose(out, img[:, :, 0] / 255.0, atol=2e-6)

    @pytest.mark.parametrize("coc", [0.5, 1.5, 4.0, 9.3, 25.0])
    def test_disk_kernel_sums_to_one(self, coc):
        k = defocus.disk_kernel(coc)
        assert k.sum() == pytest.approx(1.0, abs=1e-6)
        assert k.shape[0] % 2 == 1 and np.all(k >= 0)
        np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)  # centred

    def test_disk_psf_preserves_mean_intensity(self):
        img = rand_image(64, 80, seed=3)
        d = np.full(img.shape[:2], 8.0)  # one far plane, CoC 15 px everywhere
        out, sigma = defocus.render_defocus(img, d, focus_depth=2.0, max_coc=15.0, psf="disk", linear=False)
        assert sigma.min() == pytest.approx(3.5)
        assert out.std() < img.std()  # it did blur
        assert out.mean() == pytest.approx(img.mean(), abs=2e-3)
        # in linear light (the default) the mean of linear intensities is kept
        out_l, _ = defocus.render_defocus(img, d, focus_depth=2.0, max_coc=15.0, psf="disk")
        from blurwise.data.color import srgb_to_linear

        assert srgb_to_linear(out_l).mean() == pytest.approx(srgb_to_linear(img).mean(), abs=2e-3)

    def test_sharp_foreground_does_not_halo_into_blurred_background(self):
        h, w = 40, 80
        img = np.zeros((h, w, 3), np.float32)
        img[:, : w // 2] = 1.0  # white foreground object (left), black background (right)
        d = np.full((h, w), 10.0)
        d[:, : w // 2] = 1.0
        for psf in ("gaussian", "disk"):
            out, sigma = defocus.render_defocus(img, d, focus_depth=1.0, max_coc=20.0, psf=psf)
            assert sigma[:, : w // 2].max() == 0.0 and sigma[:, w // 2 :].min() > 4.0
            np.testing.assert_allclose(out[:, : w // 2], 1.0, atol=1e-6)  # the in-focus object stays exact
            assert out[:, w // 2 :].max() < 1e-4  # no white leaks into the blurred background

    def test_blurred_foreground_fades_smoothly_over_sharp_background(self):
        h, w = 40, 96
        img = np.zeros((h, w, 3), np.float32)
        img[:, : w // 2] = 1.0
        d = np.full((h, w), 10.0)
        d[:, : w // 2] = 1.0
        out, sigma = defocus.render_defocus(img, d, focus_depth=10.0, max_coc=20.0)
        r = int(4 * sigma.max()) + 1
        row = out[h // 2, :, 0]
        assert np.all(np.diff(row) <= 1e-6)  # monotonic: no step at the occlusion boundary
        assert row[w // 2 - 1] < 0.95 and row[w // 2] > 0.05  # the edge is blurred on both sides
        np.testing.assert_allclose(out[:, : w // 2 - r], 1.0, atol=1e-5)
        np.testing.assert_allclose(out[:, w // 2 + r :], 0.0, atol=1e-5)

    @pytest.mark.parametrize("max_coc", [10.0, 25.0])
    def test_blur_map_matches_analytic_coc_on_slanted_plane(self, max_coc):
        h, w = 24, 160
        d = np.tile(np.linspace(1.0, 10.0, w)[None], (h, 1))
        _, sigma = defocus.render_defocus(rand_image(h, w), d, focus_depth=3.0, max_coc=max_coc)
        analytic = defocus.coc_to_sigma(defocus.signed_coc(d, 3.0, max_coc=max_coc))
        assert np.abs(sigma - analytic).max() < 0.05

    def test_blur_map_matches_thin_lens(self):
        h, w = 16, 128
        d = np.tile(np.linspace(0.8, 6.0, w)[None], (h, 1))
        cam = dict(f_number=2.0, focal_length=50.0, pixel_pitch=0.04)  # CoC -24 .. +11 px
        _, sigma = defocus.render_defocus(rand_image(h, w), d, focus_depth=2.0, **cam)
        analytic = defocus.coc_to_sigma(defocus.thin_lens_coc(d, 2.0, **cam))
        assert analytic.max() > 2.0
        assert np.abs(sigma - analytic).max() < 0.05

    def test_blur_grows_with_sigma(self):
        img = rand_image(48, 64, seed=5)
        stds = []
        for mc in (3.0, 9.0, 21.0):
            out, _ = defocus.render_defocus(img, np.full(img.shape[:2], 9.0), focus_depth=1.0, max_coc=mc)
            stds.append(float(np.abs(np.diff(out, axis=1)).mean()))
        assert stds[0] > stds[1] > stds[2]


# --------------------------------------------------------------------------- depth


class TestDepth:
    def test_synthetic_depth_deterministic_and_plausible(self):
        img = np.round(rand_image(60, 80, seed=1) * 255).astype(np.uint8)
        d1 = depth.synthetic_depth(img, np.random.default_rng(7))
        d2 = depth.synthetic_depth(img, np.random.default_rng(7))
        np.testing.assert_array_equal(d1, d2)
        assert d1.shape == (60, 80) and d1.dtype == np.float32
        assert d1.min() > 0.3 and d1.max() < 50.0

    def test_random_dof_hits_target_fraction(self):
        img = np.round(rand_image(60, 80, seed=2) * 255).astype(np.uint8)
        for seed in range(4):
            rng = np.random.default_rng(seed)
            d = depth.synthetic_depth(img, rng)
            p = depth.random_dof(d, rng)
            assert 0.0 <= p["max_coc"] <= 25.0 + 1e-6
            _, sigma = defocus.render_defocus(img, d, focus_depth=p["focus_depth"], max_coc=p["max_coc"])
            assert abs(depth.blurred_fraction(sigma) - p["fraction"]) < 0.03
            assert 0.5 <= p["fraction"] <= 0.9

    def test_read_dpt(self, tmp_path):
        d = np.arange(12, dtype="<f4").reshape(3, 4) + 1
        d[0, 0] = 1e11  # sky
        p = tmp_path / "x.dpt"
        p.write_bytes(struct.pack("<fii", 202021.25, 4, 3) + d.tobytes())
        out = depth.load_depth(p)
        assert out.shape == (3, 4) and out[0, 0] == pytest.approx(depth.FAR_CLIP)
        np.testing.assert_array_equal(out[1:], d[1:])
        bad = tmp_path / "bad.dpt"
        bad.write_bytes(b"\0" * 20)
        with pytest.raises(InputError, match="dpt"):
            depth.load_depth(bad)

    @needs_data
    def test_real_depth_samples(self):
        samples = depth.depth_samples()
        names = [s.name for s in samples]
        assert sum(n.startswith("nyuv2_") for n in names) >= 10 and sum(n.startswith("syndof_") for n in names) == 2
        for s in samples:
            if s.name.startswith("nyuv2_") and s is not samples[0]:
                continue
            d = depth.load_depth(s.depth)
            with Image.open(s.image) as im:
                assert d.shape == (im.size[1], im.size[0])
            assert np.isfinite(d).all() and d.min() > 0


# --------------------------------------------------------------------------- motion


class TestMotion:
    def test_kernels_nonnegative_normalised_in_size(self):
        rng = np.random.default_rng(0)
        for _ in range(12):
            s = motion.random_kernel_size(rng)
            assert 7 <= s <= 65 and s % 2 == 1
            k = motion.motion_kernel(s, rng)
            assert k.shape == (s, s) and k.dtype == np.float32
            assert k.min() >= 0.0 and k.sum() == pytest.approx(1.0, abs=1e-5)
            yy, xx = np.mgrid[0:s, 0:s]
            c = (s - 1) / 2
            assert abs((k * yy).sum() - c) < 0.6 and abs((k * xx).sum() - c) < 0.6  # centred on its mass
        for s in (7, 65):
            assert motion.motion_kernel(s, 1).shape == (s, s)

    @pytest.mark.parametrize("size", [5, 8, 67])
    def test_kernel_size_errors(self, size):
        with pytest.raises(UsageError, match="odd"):
            motion.motion_kernel(size, 0)

    def test_kernel_deterministic(self):
        np.testing.assert_array_equal(motion.motion_kernel(31, 5), motion.motion_kernel(31, 5))

    def test_apply_kernel_is_reflective_convolution(self):
        from scipy import ndimage

        x = rand_image(30, 40, seed=4)
        k = motion.motion_kernel(15, 3)
        ref = np.stack([ndimage.convolve(x[:, :, c], k, mode="reflect") for c in range(3)], axis=2)
        np.testing.assert_allclose(motion.apply_kernel(x, k), ref, atol=1e-5)
        delta = np.zeros((9, 9), np.float32)
        delta[4, 4] = 1
        np.testing.assert_allclose(motion.apply_kernel(x, delta), x, atol=1e-5)
        with pytest.raises(InputError, match="non-negative"):
            motion.apply_kernel(x, -delta)

    def test_frame_average_in_linear_light(self):
        a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
        out = motion.frame_average([a, b])
        np.testing.assert_allclose(out, 0.5 ** (1 / 2.2), atol=1e-6)
        np.testing.assert_allclose(motion.frame_average([a, b], gamma=1.0), 0.5, atol=1e-6)
        np.testing.assert_allclose(motion.frame_average([b, b, b]), 1.0)

    def test_noise_and_jpeg(self):
        x = rand_image(32, 32)
        n = motion.add_noise(x, 0.05, 0)
        assert abs(float((n - x).std()) - 0.05) < 0.01
        np.testing.assert_array_equal(n, motion.add_noise(x, 0.05, 0))
        j = motion.jpeg(x, 50)
        assert j.shape == x.shape and 0 < np.abs(j - x).mean() < 0.1

    @needs_data
    def test_levin_kernels(self):
        ks = motion.levin_kernels()
        assert list(ks) == [f"kernel{i}" for i in range(1, 9)]
        assert all(abs(k.sum() - 1) < 1e-5 for k in ks.values())


# --------------------------------------------------------------------------- SR pairs


class TestSR:
    @pytest.mark.parametrize("scale", [2, 3, 4])
    def test_make_sr_pair(self, scale):
        from blurwise.metrics.imresize import imresize

        hr = np.round(rand_image(50, 61) * 255).astype(np.uint8)
        lr, hr2 = sr.make_sr_pair(hr, scale)
        assert hr2.shape == (50 - 50 % scale, 61 - 61 % scale, 3)
        assert lr.dtype == np.uint8 and lr.shape == (hr2.shape[0] // scale, hr2.shape[1] // scale, 3)
        np.testing.assert_array_equal(lr, imresize(hr2, scale=1 / scale))
        lr_f, _ = sr.make_sr_pair(hr.astype(np.float32) / 255, scale)  # float input is rounded to 8 bits first
        np.testing.assert_array_equal(lr_f, lr)

    def test_downscale_sigma(self):
        s = np.full((9, 13), 2.0, np.float32)
        out = sr.downscale_sigma(s, 4)
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out, 0.5)

    def test_crop_alignment_and_augment(self):
        rng = np.random.default_rng(0)
        lr = np.arange(10 * 12).reshape(10, 12)
        hr = np.kron(lr, np.ones((3, 3), int))
        for _ in range(5):
            pl, ph = sr.random_crop([lr, hr], 4, rng, [1, 3])
            np.testing.assert_array_equal(np.kron(pl, np.ones((3, 3), int)), ph)
            al, ah = sr.augment([pl, ph], rng)
            np.testing.assert_array_equal(np.kron(al, np.ones((3, 3), int)), ah)
        with pytest.raises(InputError, match="smaller"):
            sr.random_crop([lr], 11, rng)


# --------------------------------------------------------------------------- datasets


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestDatasets:
    def test_sr_dataset_bit_identical(self, tmp_path):
        from blurwise.data.datasets import SRDataset

        write_pngs(tmp_path / "imgs")
        ds1 = SRDataset([tmp_path / "imgs"], scale=4, patch=32, length=6, seed=3)
        ds2 = SRDataset([tmp_path / "imgs"], scale=4, patch=32, length=6, seed=3)
        items = [ds1[i] for i in range(6)]
        assert items[0]["lr"].shape == (3, 8, 8) and items[0]["hr"].shape == (3, 32, 32)
        assert all(_same(items[i], ds2[i]) for i in reversed(range(6)))  # any order, fresh instance
        ds2.set_epoch(1)
        assert not torch.equal(items[0]["hr"], ds2[0]["hr"])
        assert not torch.equal(items[0]["hr"], SRDataset([tmp_path / "imgs"], scale=4, patch=32, seed=4)[0]["hr"])

    def test_defocus_sr_dataset_bit_identical_and_cached(self, tmp_path):
        from blurwise.data.datasets import DefocusSRDataset

        write_pngs(tmp_path / "imgs", n=2, h=64, w=80)
        kw = dict(scale=2, patch=32, length=4, seed=1, variants=2)
        ds1 = DefocusSRDataset([tmp_path / "imgs"], **kw)
        ds2 = DefocusSRDataset([tmp_path / "imgs"], cache_dir=tmp_path / "cache", **kw)
        it = ds1[1]
        assert it["lr"].shape == (3, 16, 16) and it["hr"].shape == (3, 32, 32)
        assert it["sigma_lr"].shape == (1, 16, 16) and it["sigma_hr"].shape == (1, 32, 32)
        assert float(it["sigma_lr"].min()) >= 0.0
        assert all(_same(ds1[i], ds2[i]) for i in range(4))
        assert len(list((tmp_path / "cache").glob("*.npz"))) >= 1
        ds3 = DefocusSRDataset([tmp_path / "imgs"], cache_dir=tmp_path / "cache", **kw)  # warm disk cache
        assert all(_same(ds1[i], ds3[i]) for i in reversed(range(4)))

    def test_deblur_dataset_bit_identical(self, tmp_path):
        from blurwise.data.datasets import DeblurDataset

        write_pngs(tmp_path / "sharp", n=2, h=64, w=64)
        write_pngs(tmp_path / "frames" / "SEQ", n=14, h=40, w=48, seed=10)
        kw = dict(patch=32, length=8, seed=2, synth_fraction=0.5, kernel_sizes=(7, 15), noise=(0.0, 0.01))
        ds1 = DeblurDataset(tmp_path / "frames", [tmp_path / "sharp"], **kw)
        ds2 = DeblurDataset(tmp_path / "frames", [tmp_path / "sharp"], **kw)
        items = [ds1[i] for i in range(8)]
        assert items[0]["blur"].shape == (3, 32, 32) == items[0]["sharp"].shape
        assert all(_same(items[i], ds2[i]) for i in reversed(range(8)))

    def test_gopro_window_stride_and_gamma(self, tmp_path):
        from blurwise.data.datasets import DeblurDataset, GoProFrames
        from blurwise.data.motion import frame_average

        write_pngs(tmp_path / "frames" / "SEQ", n=14, h=40, w=48, seed=10)
        g = GoProFrames(tmp_path / "frames")
        paths = g.seqs["SEQ"]
        blur, sharp = g.window("SEQ", 1, 4, stride=3, gamma=1.0)  # frames 1, 4, 7, 10; middle = 7
        frames = [g.frame(p) for p in paths[1:11:3]]
        np.testing.assert_allclose(blur, frame_average(frames, 1.0), atol=1e-6)
        np.testing.assert_array_equal(sharp, g.frame(paths[7]))
        with pytest.raises(BlurwiseError, match="stride 5"):
            g.window("SEQ", 1, 4, stride=5)  # would need frame 16 of 14
        kw = dict(patch=32, length=6, seed=2, synth_fraction=0.0, frames=(4, 6), frame_stride=(2, 9), gammas=(1.0,))
        items = [DeblurDataset(tmp_path / "frames", None, **kw)[i] for i in range(6)]  # strides clamped to the clip
        assert all(it["blur"].shape == (3, 32, 32) for it in items)
        with pytest.raises(UsageError, match="strides"):
            DeblurDataset(tmp_path / "frames", None, synth_fraction=0.0, frame_stride=(0, 2))

    def test_test_folders_are_refused(self):
        from blurwise.data.datasets import SRDataset

        with pytest.raises(UsageError, match="test data"):
            SRDataset([data_path("sr", "test", "Set5")])


# --------------------------------------------------------------------------- eval sets


@pytest.mark.slow
@needs_data
def test_make_eval_small(tmp_path):
    from blurwise.data import load_defocus_item, make_eval, read_manifest

    summary = make_eval(tmp_path, small=True)
    assert set(summary) == {"defocus-sr", "deblur-synth", "deblur-gopro"}
    m = read_manifest(tmp_path, "defocus-sr")
    synth = [it for it in m["items"] if it["kind"] == "synthetic"]
    assert synth and any(it["kind"] == "real" for it in m["items"])
    assert sum(m["blurred_fraction_histogram"]["counts"]) == len(synth)
    for it in synth:
        assert 0.5 <= it["blurred_fraction"] <= 0.9
        a = load_defocus_item(tmp_path, it, scale=4)
        assert a["sigma"].dtype == np.float32 and a["sigma"].shape == a["hr"].shape[:2]
        assert a["hr"].shape[0] % 12 == 0 and a["lr"].shape[0] * 4 == a["hr"].shape[0]
        assert a["sigma_lr"].shape == a["lr"].shape[:2]
    for name in ("deblur-synth", "deblur-gopro"):
        man = json.loads((tmp_path / name / "manifest.json").read_text())
        assert man["items"] and all((tmp_path / name / it["blur"]).is_file() for it in man["items"])
    again = make_eval(tmp_path, small=True)  # existing sets are kept
    assert all(v["skipped"] for v in again.values())


@pytest.fixture
def fake_sets(monkeypatch):
    """make_eval with instant makers: each set writes ``img/a.png`` and one item (no shared data needed)."""
    from blurwise.data import evalsets

    def maker(name):
        def make(out, small, progress=None, jobs=1):
            (out / name / "img").mkdir(parents=True)
            (out / name / "img" / "a.png").write_bytes(b"small" if small else b"full")
            if name == "deblur-gopro" and getattr(make, "fail", False):
                raise KeyboardInterrupt  # an interrupted build
            return {"name": name, "items": [{"id": "a", "hr": "img/a.png"}]}

        return make

    makers = {name: maker(name) for name in evalsets.SETS}
    monkeypatch.setattr(evalsets, "_MAKERS", makers)
    return makers


def tree(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_eval_refuses_folders_it_did_not_write(tmp_path, fake_sets):
    from blurwise.data import make_eval
    from blurwise.errors import OutputError

    (tmp_path / "defocus-sr").mkdir()
    (tmp_path / "defocus-sr" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"defocus-sr is not an evaluation set written by blurwise.*--out") as e:
        make_eval(tmp_path, small=True, overwrite=True)
    assert "\n" not in str(e.value)
    assert tree(tmp_path) == {"defocus-sr/notes.txt": b"mine"}  # nothing deleted, nothing else written
    from blurwise.data.evalsets import main

    assert main(["--out", str(tmp_path), "--small"]) == 1  # python -m blurwise.data.evalsets: one line too
    assert tree(tmp_path) == {"defocus-sr/notes.txt": b"mine"}
    (tmp_path / "defocus-sr" / "notes.txt").unlink()
    (tmp_path / "deblur-synth").write_text("a file")
    with pytest.raises(OutputError, match="deblur-synth exists and is not an evaluation-set folder"):
        make_eval(tmp_path, small=True)
    (tmp_path / "deblur-synth").unlink()
    make_eval(tmp_path, small=True)  # an empty folder is used
    assert tree(tmp_path / "defocus-sr").keys() == {"img/a.png", "manifest.json"}


def test_make_eval_replaces_only_its_own_files(tmp_path, fake_sets):
    from blurwise.data import make_eval
    from blurwise.errors import OutputError

    make_eval(tmp_path, small=True)
    before = tree(tmp_path)
    assert all(v["skipped"] for v in make_eval(tmp_path, small=True).values())
    with pytest.raises(OutputError, match="deblur-synth holds the small set; use --overwrite"):
        make_eval(tmp_path, sets=["deblur-synth"])
    (tmp_path / "deblur-gopro" / "img" / "mine.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"deblur-gopro holds files blurwise did not write \(img/mine.png\)"):
        make_eval(tmp_path, overwrite=True)
    assert tree(tmp_path) == {**before, "deblur-gopro/img/mine.png": b"mine"}
    (tmp_path / "deblur-gopro" / "img" / "mine.png").unlink()
    gopro = tree(tmp_path / "deblur-gopro")
    fake_sets["deblur-gopro"].fail = True
    with pytest.raises(KeyboardInterrupt):
        make_eval(tmp_path, overwrite=True)
    assert tree(tmp_path / "deblur-gopro") == gopro  # an interrupted build leaves the set as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deblur-gopro", "deblur-synth", "defocus-sr"]  # no temp
    fake_sets["deblur-gopro"].fail = False
    mpath = tmp_path / "deblur-gopro" / "manifest.json"
    mpath.write_text(json.dumps({k: v for k, v in json.loads(mpath.read_text()).items() if k != "files"}))
    summary = make_eval(tmp_path, overwrite=True)  # a manifest without a file list: its items' files
    assert all(v["replaced"] and not v["skipped"] for v in summary.values())
    assert (tmp_path / "defocus-sr" / "img" / "a.png").read_bytes() == b"full"
    man = json.loads((tmp_path / "defocus-sr" / "manifest.json").read_text())
    assert man["files"] == ["img/a.png"] and man["small"] is False


# --------------------------------------------------------------------------- scene and package


def test_example_scene():
    from blurwise.data.scene import FOCUS_DEPTH, example_scene

    img, d, sigma = example_scene(size=(90, 120))
    assert img.shape == (90, 120, 3) and img.dtype == np.uint8
    assert d.shape == sigma.shape == (90, 120) and d.min() > 1.0
    assert sigma[np.isclose(d, FOCUS_DEPTH)].max() == 0.0 and sigma.max() > 0.5


def test_import_is_light():
    code = "import sys, blurwise.data; from blurwise.data import render_defocus; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_eval_is_a_function():
    import blurwise.data
    import blurwise.data.evalsets  # noqa: F401  (importing the module must not shadow the function)

    assert callable(blurwise.data.make_eval) and blurwise.data.make_eval.__name__ == "make_eval"
