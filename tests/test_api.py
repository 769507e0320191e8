"""Python API: type/dtype round trips, gray and alpha handling, routing fallbacks, errors, doctests."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from conftest import synth_image
from PIL import Image as PILImage

import blurwise
from blurwise import api
from blurwise.errors import InputError, ModelError, UsageError


@pytest.fixture
def untrained(monkeypatch):
    monkeypatch.setenv("BLURWISE_ALLOW_UNTRAINED", "1")


def test_doctests():
    res = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 3 and res.failed == 0


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, blurwise; assert 'torch' not in sys.modules; blurwise.upscale; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- kinds in = kinds out


class TestKinds:
    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
    @pytest.mark.parametrize("c", [0, 1, 3, 4])
    def test_numpy_same_dtype_and_layout(self, dtype, c):
        img = synth_image(6, 5, c, dtype)
        out = blurwise.upscale(img, scale=2, model="bicubic")
        assert out.dtype == img.dtype
        assert out.shape == (12, 10) + img.shape[2:]

    @pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16", "P"])
    def test_pil_same_kind(self, mode):
        base = PILImage.fromarray(synth_image(6, 5, 4), "RGBA")
        if mode == "I;16":
            im = PILImage.fromarray(synth_image(6, 5, 0, np.uint16))
        elif mode == "P":
            im = base.convert("RGB").convert("P")
        else:
            im = base.convert(mode)
        out = blurwise.upscale(im, scale=2, model="bicubic")
        assert isinstance(out, PILImage.Image) and out.size == (10, 12)
        assert out.mode == {"P": "RGB"}.get(mode, mode)

    def test_pil_32bit_integer_keeps_mode_and_values(self):
        """Mode "I" comes back as "I" with its values (it came back 8-bit "L" before)."""
        im = PILImage.fromarray(np.full((6, 5), 40001, np.int32))
        assert im.mode == "I"
        out = blurwise.upscale(im, scale=2, model="bicubic")
        assert out.mode == "I" and out.size == (10, 12) and np.asarray(out).max() == np.asarray(out).min() == 40001

    def test_values_bicubic_exact(self):
        from blurwise.metrics.imresize import imresize

        img = synth_image(8, 8, 3, np.float32)
        np.testing.assert_allclose(
            blurwise.upscale(img, 2, model="bicubic"), np.clip(imresize(img.astype(np.float64), 2), 0, 1), atol=1e-6
        )

    def test_alpha_resized_bicubic(self):
        from blurwise.metrics.imresize import imresize

        img = synth_image(8, 10, 4, np.float32)
        out = blurwise.upscale(img, 3, model="bicubic")
        np.testing.assert_allclose(out[..., 3], np.clip(imresize(img[..., 3].astype(np.float64), 3), 0, 1), atol=1e-6)

    def test_bad_inputs(self):
        with pytest.raises(InputError, match="HW or HWC"):
            blurwise.upscale(np.zeros((2, 2, 2, 2), np.uint8), model="bicubic")
        with pytest.raises(InputError, match="pixel type"):
            blurwise.upscale(np.zeros((4, 4), np.int32), model="bicubic")
        with pytest.raises(InputError, match="zero-size"):
            blurwise.upscale(np.zeros((0, 4, 3), np.uint8), model="bicubic")
        with pytest.raises(InputError, match="channels"):
            blurwise.upscale(np.zeros((4, 4, 5), np.uint8), model="bicubic")

    @pytest.mark.parametrize(
        ("value", "match"), [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (200.0, "reaches 200")]
    )
    def test_bad_float_values(self, value, match):
        # every entry point refuses them the same way (0-255 data in a float array would otherwise run as an
        # image 255 times too bright, and NaN would come back as NaN), without touching a model
        img = synth_image(16, 16, 3, np.float32)
        img[3, 4, 1] = value
        for call in (
            lambda: blurwise.upscale(img, 2, model="bicubic"),
            lambda: blurwise.deblur(img, model="identity"),
            lambda: blurwise.defocus_map(img),
        ):
            with pytest.raises(InputError, match=match):
                call()
        ok = np.clip(img, 0, 1.2)  # a slight overshoot (sharpening, colour conversion) is kept
        ok[3, 4, 1] = 1.2
        assert blurwise.upscale(ok, 2, model="bicubic").shape == (32, 32, 3)

    @pytest.mark.parametrize(
        ("pixels", "alpha", "match"),
        [
            (synth_image(8, 8, 3), None, "float32 HWC"),  # uint8: would run as a white image
            (synth_image(8, 8, 3, np.float32) * 255, None, "reaches"),  # 0-255 floats
            (np.full((8, 8, 3), np.nan, np.float32), None, "NaN"),
            (synth_image(8, 8, 0, np.float32), None, "float32 HWC"),  # HW: an IndexError before
            (synth_image(8, 8, 4, np.float32), None, "1 or 3 channels"),
            (synth_image(8, 8, 3, np.float32), np.ones((4, 4), np.float32), "alpha.*size"),  # resized silently before
            (synth_image(8, 8, 3, np.float32), np.full((8, 8), 255.0, np.float32), "alpha plane"),
        ],
    )
    def test_classes_check_their_input(self, pixels, alpha, match):
        """Upscaler and Deblurrer (public, also called by the batch pipeline) refuse what would run wrong."""
        for run in (api.Upscaler(2, model="bicubic"), api.Deblurrer(model="identity")):
            with pytest.raises(InputError, match=match):
                run(pixels, alpha)


# --------------------------------------------------------------------------- models


class TestModels:
    def test_upscale_model_gray_and_alpha(self, untrained):
        img = synth_image(8, 8, 2, np.uint8)  # gray + alpha
        out, rep = blurwise.upscale(img, 2, model="edsr-s-x2", route="off", device="cpu", tile=32, return_report=True)
        assert out.shape == (16, 16, 2) and out.dtype == np.uint8
        assert rep.route == "off" and rep.model == "edsr-s-x2" and rep.seconds > 0

    def test_wrong_scale_and_task(self, untrained):
        with pytest.raises(ModelError, match="x2.*x4"):
            blurwise.upscale(synth_image(8, 8), 4, model="edsr-s-x2", device="cpu")
        with pytest.raises(ModelError, match="not super-resolution"):
            blurwise.upscale(synth_image(8, 8), 1, model="lprn", device="cpu")
        with pytest.raises(ModelError, match="not deblurring"):
            blurwise.deblur(synth_image(8, 8), model="edsr-s-x2", device="cpu")

    def test_unknown_model(self):
        with pytest.raises(ModelError, match="unknown model"):
            blurwise.upscale(synth_image(8, 8), 2, model="no-such", device="cpu")

    def test_untrained_refused_without_switch(self, monkeypatch):
        monkeypatch.delenv("BLURWISE_ALLOW_UNTRAINED", raising=False)
        api.clear_cache()
        from blurwise.models.registry import get_variant, is_shipped

        if is_shipped(get_variant("edsr-s-x2")):
            pytest.skip("edsr-s-x2 weights are shipped")
        with pytest.raises(ModelError, match="not shipped"):
            blurwise.upscale(synth_image(8, 8), 2, model="edsr-s-x2", device="cpu")

    def test_cache_reuses_model(self, untrained):
        a = api.get_model("edsr-s-x2", device="cpu")
        b = api.get_model("edsr-s-x2", device="cpu")
        assert a[0] is b[0]

    def test_option_checks(self, untrained):
        img = synth_image(8, 8)
        with pytest.raises(UsageError, match="route"):
            blurwise.upscale(img, 2, model="edsr-s-x2", route="maybe", device="cpu")
        with pytest.raises(UsageError, match="budget"):
            blurwise.upscale(img, 2, model="edsr-s-x2", budget=2.0, device="cpu")
        with pytest.raises(UsageError, match="routes"):
            blurwise.upscale(img, 2, model="edsr-s-x2", routes=4, device="cpu")
        with pytest.raises(UsageError, match="half"):
            blurwise.upscale(img, 2, model="edsr-s-x2", half="fp8", device="cpu")
        with pytest.raises(UsageError, match="map precision"):
            blurwise.upscale(img, 2, model="edsr-s-x2", map_precision="int8", device="cpu")
        with pytest.raises(UsageError, match=r"threshold is a blur sigma.*router 'map' \(--router map\)"):
            blurwise.upscale(img, 2, model="edsr-s-x2", router="learned", threshold=0.5, device="cpu")
        api.Upscaler(2, model="edsr-s-x2", router="map", threshold=0.5, device="cpu")  # the sigma's own router
        api.Upscaler(2, model="edsr-s-x2", router="learned", budget=0.5, device="cpu")
        for scale in (2.5, 0, "2", True):  # 2.5 ran as x2 before
            with pytest.raises(UsageError, match="scale must be a positive integer"):
                blurwise.upscale(img, scale, model="bicubic")
            with pytest.raises(UsageError, match="scale must be a positive integer"):
                api.Upscaler(scale, model="bicubic")
        assert blurwise.upscale(img, np.int64(2), model="bicubic").shape == (16, 16, 3)
        assert blurwise.upscale(img, 2.0, model="bicubic").shape == (16, 16, 3)

    def test_devices(self):
        import torch

        assert api.resolve_device("cpu").type == "cpu"
        assert api.resolve_device("auto").type in ("cpu", "cuda", "mps")
        if not torch.cuda.is_available():
            with pytest.raises(UsageError, match="CUDA"):
                api.resolve_device("cuda")

    def test_deblur(self, untrained):
        img = synth_image(12, 12, 3, np.uint16)
        out = blurwise.deblur(img, stages=2, device="cpu", tile=32)
        assert out.shape == img.shape and out.dtype == np.uint16
        np.testing.assert_array_equal(blurwise.deblur(img, model="identity"), img)
        for k in (0, 7):  # the shipped lprn was trained with 6 shared stages: 1..6 is the dial
            with pytest.raises(UsageError, match="from 1 to 6 for 'lprn'"):
                blurwise.deblur(img, stages=k, device="cpu")
        with pytest.raises(UsageError, match="identity baseline has no stages"):
            blurwise.deblur(img, model="identity", stages=2)

    @pytest.mark.parametrize(
        "kw, match",
        [
            ({"stages": 2.5}, "whole number"),  # int(2.5) would have run 2 stages without a word
            ({"stages": True}, "whole number"),
            ({"tile": -1}, ">= 0"),  # a negative tile was read as 'automatic'
            ({"tile_pad": -4}, ">= 0"),
            ({"device": "meta"}, "unsupported device"),  # failed per image, not up front
        ],
    )
    def test_deblurrer_bad_settings(self, kw, match):
        with pytest.raises(UsageError, match=match):
            api.Deblurrer(**kw)

    def test_deblur_tiles_match_untiled(self):
        # the shipped lprn pools over the whole image: its tiled output must still equal the untiled one
        img = synth_image(40, 56, 3, np.float32)
        whole = blurwise.deblur(img, device="cpu", stages=2)
        tiled = blurwise.deblur(img, device="cpu", stages=2, tile=16, tile_pad=4)
        assert np.abs(tiled - whole).max() < 1e-5


# --------------------------------------------------------------------------- routing


class TestRouting:
    def test_routed_with_stub_map(self, untrained, monkeypatch):
        """A constant, very blurred map sends everything to the light model (route 'routed')."""
        import blurwise.defocus

        monkeypatch.setattr(
            blurwise.defocus, "estimate_defocus", lambda im, d=None, **k: np.full(im.shape[:2], 3.0, np.float32)
        )
        img = synth_image(32, 32, 3)
        out, rep = blurwise.upscale(img, 2, model="edsr-s-x2", device="cpu", return_report=True)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert rep.route == "routed" and rep.light == "ebmsr-x2"
        assert rep.routing.fractions.get("light", 0) > 0.5
        assert "FLOPs" in rep.summary()

    def test_bf16_reaches_the_routed_models_as_bf16(self, untrained, monkeypatch):
        """half="bf16" is passed through as "bf16" (True would mean fp16 on CUDA), to the models and the map."""
        import blurwise.defocus
        import blurwise.routing.execute as execute

        monkeypatch.setattr(
            blurwise.defocus, "estimate_defocus", lambda im, d=None, **k: np.full(im.shape[:2], 3.0, np.float32)
        )
        seen = []
        monkeypatch.setattr(execute, "half_dtype", lambda half, device: seen.append(half))  # None: runs in fp32
        up = api.Upscaler(2, model="edsr-s-x2", device="cpu", half="bf16", min_saving=0)
        _, _, rep = up(synth_image(32, 32, 3, np.float32))
        assert rep.route == "routed" and seen and set(seen) == {"bf16"}

    def test_tile_bounds_every_routed_tile(self, untrained, monkeypatch):
        """tile (-t) bounds routing's tiles as it bounds route off's: no route runs on the whole image then."""
        import blurwise.defocus

        sig = np.zeros((48, 64), np.float32)
        sig[:, 32:] = 3.0  # left half in focus (heavy), right half blurred (light)
        monkeypatch.setattr(blurwise.defocus, "estimate_defocus", lambda im, d=None, **k: sig)
        img = synth_image(48, 64, 3, np.float32)
        plans = {}
        for tile in (0, 16):
            up = api.Upscaler(2, model="edsr-s-x2", device="cpu", tile=tile, router="map", threshold=1.0, min_saving=0)
            out, _, rep = up(img)
            plans[tile] = rep.routing.plan
            assert out.shape == (96, 128, 3)

        def side(p):
            return max(max(t.core[1] - t.core[0], t.core[3] - t.core[2]) for t in p.tiles)

        assert side(plans[0]) > 16  # the in-focus half is one heavy tile by default
        assert side(plans[16]) <= 16 and not any(plans[16].full_image.get(r) for r in (0, 1))

    def test_unreachable_budget_is_reported(self, untrained, monkeypatch):
        import blurwise.defocus

        monkeypatch.setattr(
            blurwise.defocus, "estimate_defocus", lambda im, d=None, **k: np.zeros(im.shape[:2], np.float32)
        )
        img = synth_image(32, 32, 3)
        _, rep = blurwise.upscale(img, 2, model="edsr-s-x2", device="cpu", budget=0.01, return_report=True)
        assert rep.route == "routed" and rep.notes and rep.notes[0].startswith("budget 0.01 not reachable")
        assert rep.summary().count("budget 0.01 not reachable") == 1

    def test_depth_with_the_learned_router(self, untrained, monkeypatch):
        """router="auto" with a depth map routes by the map; router="learned" with one is a UsageError."""
        import blurwise.defocus
        from blurwise.routing import router_for

        if router_for(2, "edsr-s-x2") is None:
            pytest.skip("no learned router ships for edsr-s-x2")
        monkeypatch.setattr(
            blurwise.defocus, "estimate_defocus", lambda im, d=None, **k: np.full(im.shape[:2], 3.0, np.float32)
        )
        img, depth = synth_image(32, 32, 3), np.ones((32, 32), np.float32)
        kw = dict(model="edsr-s-x2", device="cpu", return_report=True)
        assert blurwise.upscale(img, 2, **kw)[1].routing.scorer == "learned"
        assert blurwise.upscale(img, 2, depth=depth, **kw)[1].routing.scorer == "defocus"
        for route in ("auto", "on"):  # auto ran the heavy model everywhere with "defocus map unavailable" before
            with pytest.raises(UsageError, match=r"learned router takes no depth map; router 'map' \(--router map\)"):
                blurwise.upscale(img, 2, router="learned", route=route, depth=depth, **kw)

    def test_auto_falls_back_without_map(self, untrained, monkeypatch):
        from blurwise.errors import NotAvailableError

        def unavailable(*a, **k):
            raise NotAvailableError("no estimator")

        import blurwise.defocus

        monkeypatch.setattr(blurwise.defocus, "estimate_defocus", unavailable)
        img = synth_image(16, 16, 3, np.float32)
        out, rep = blurwise.upscale(img, 2, model="edsr-s-x2", device="cpu", tile=32, return_report=True)
        assert out.shape == (32, 32, 3) and rep.route == "off" and rep.notes
        with pytest.raises(NotAvailableError):
            up = api.Upscaler(2, model="edsr-s-x2", route="on", device="cpu")
            up(img)

    def test_auto_without_light_model(self, untrained):
        up = api.Upscaler(3, model="edsr-s-x3", route="auto", device="cpu", tile=32)  # no EBM-SR at x3
        assert not up.routed and up.notes
        with pytest.raises(ModelError):
            api.Upscaler(3, model="edsr-s-x3", route="on", device="cpu")

    def test_depth_resized_to_image(self, untrained, monkeypatch):
        import blurwise.defocus

        seen = {}

        def fake(im, depth=None, **k):
            seen["depth"] = None if depth is None else depth.shape
            return np.zeros(im.shape[:2], np.float32)

        monkeypatch.setattr(blurwise.defocus, "estimate_defocus", fake)
        img = synth_image(16, 20, 3)
        blurwise.upscale(img, 2, model="edsr-s-x2", device="cpu", depth=np.ones((32, 40), np.float32))
        assert seen["depth"] == (16, 20)

    def test_depth_array_of_another_aspect_is_refused_as_a_file_is(self, tmp_path):
        """Arrays get read_depth's rule: another resolution is resized, another aspect ratio (> 2%) refused."""
        img = synth_image(16, 20, 3, np.float32)
        wrong = np.ones((16, 16), np.float32)  # 1.25 -> 1.0: a map of another image (stretched before)
        np.save(tmp_path / "d.npy", wrong)
        for depth in (wrong, tmp_path / "d.npy"):
            with pytest.raises(InputError, match="aspect ratios differ by 20%"):
                blurwise.upscale(img, 2, model="bicubic", depth=depth)
            with pytest.raises(InputError, match="aspect ratios differ"):
                api.Upscaler(2, model="bicubic")(img, depth=depth)
            with pytest.raises(InputError, match="aspect ratios differ"):
                blurwise.defocus_map(img, depth)
        with pytest.raises(InputError, match="2-D"):
            blurwise.upscale(img, 2, model="bicubic", depth=np.ones((2, 16, 20, 1), np.float32))
        assert blurwise.upscale(img, 2, model="bicubic", depth=np.ones((33, 41), np.float32)).shape == (32, 40, 3)


# --------------------------------------------------------------------------- defocus map


class TestDefocusMap:
    def test_stub_estimator_gets_rgb_float(self, monkeypatch, tmp_path):
        import blurwise.defocus

        seen = {}

        def fake(im, depth=None, **k):
            seen.update(shape=im.shape, dtype=im.dtype, depth=None if depth is None else depth.shape, kw=k)
            return np.ones(im.shape[:2])

        monkeypatch.setattr(blurwise.defocus, "estimate_defocus", fake)
        np.save(tmp_path / "d.npy", np.ones((20, 30), np.float32))
        out = blurwise.defocus_map(synth_image(10, 15, 0), tmp_path / "d.npy", method="edge", segmenter="slic")
        assert out.shape == (10, 15) and out.dtype == np.float32
        assert seen["shape"] == (10, 15, 3) and seen["dtype"] == np.float32 and seen["depth"] == (10, 15)
        assert seen["kw"] == {"method": "edge", "segmenter": "slic"}

    def test_real_estimator_smoke(self):
        pytest.importorskip("blurwise.defocus")
        from blurwise import defocus

        if not hasattr(defocus, "estimate_defocus"):
            pytest.skip("estimator not there yet")
        out = blurwise.defocus_map(synth_image(32, 32, 3), method="edge", segmenter="none")
        assert out.shape == (32, 32) and out.dtype == np.float32 and np.isfinite(out).all()

    def test_overlay(self):
        ov = api.defocus_overlay(synth_image(8, 8, 3, np.float32), np.linspace(0, 2, 64).reshape(8, 8))
        assert ov.shape == (8, 8, 3) and ov.min() >= 0 and ov.max() <= 1


def test_docs_api_examples():
    """The examples in docs/api.md run as written."""
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "api.md"
    res = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 10 and res.failed == 0


def test_tiny_image_runs_heavy_everywhere_with_auto_routing():
    """An image smaller than the defocus map's minimum is upscaled, not refused, unless routing is forced."""
    import numpy as np

    import blurwise
    from blurwise.errors import InputError

    img = np.full((5, 7, 3), 128, np.uint8)
    out, rep = blurwise.upscale(img, scale=4, return_report=True)
    assert out.shape == (20, 28, 3) and rep.route == "off" and "too small to route" in rep.notes[0]
    with pytest.raises(InputError, match="too small"):
        blurwise.upscale(img, scale=4, route="on")


def test_defocus_overlay_checks_the_map():
    from blurwise.api import defocus_overlay

    img = synth_image(10, 12, 3, np.float32)
    s = np.linspace(0, 3, 120, dtype=np.float32).reshape(10, 12)
    s[0, 0] = np.nan  # a pixel without an estimate
    out = defocus_overlay(img, s)
    assert out.shape == (10, 12, 3) and np.isfinite(out).all()
    with pytest.raises(InputError, match="does not match the image"):
        defocus_overlay(img, s[:, :10])
