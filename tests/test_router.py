"""The learned patch router: features, model, training helpers and its use by routed SR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blurwise.errors import NotAvailableError, UsageError
from blurwise.models import create_model, load_model
from blurwise.models.registry import WEIGHTS_DIR, get_variant, is_shipped
from blurwise.routing import (
    BICUBIC,
    HEAVY,
    LIGHT,
    defocus_scores,
    grid_shape,
    learned_scores,
    router_for,
    upscale_routed,
)
from blurwise.routing.features import EPS, FEATURES, patch_features
from blurwise.train.router import patch_targets, target_transform

SHIPPED = is_shipped(get_variant("router-x4"))
needs_router = pytest.mark.skipif(not SHIPPED, reason="router-x4 weights are not shipped")


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3)).astype(np.float32)


class TestFeatures:
    def test_shape_order_and_finite(self):
        lr = _texture(37, 50)
        sig = np.full((37, 50), 0.3, np.float32)
        f = patch_features(lr, sig, scale=4)
        assert f.shape == (*grid_shape((37, 50), 4), len(FEATURES)) and f.dtype == np.float32
        assert np.isfinite(f).all()

    def test_map_statistics_match_the_routing_scores(self):
        rng = np.random.default_rng(1)
        sig = rng.random((40, 48)).astype(np.float32)
        f = patch_features(_texture(40, 48), sig, scale=4)
        i = FEATURES.index
        np.testing.assert_allclose(f[..., i("map_min")], 4 * defocus_scores(sig, stat="min"), rtol=1e-6)
        np.testing.assert_allclose(f[..., i("map_p35")], 4 * defocus_scores(sig, stat=35.0), rtol=1e-5)
        assert (f[..., i("map_min")] <= f[..., i("map_mean")] + 1e-6).all()
        assert (f[..., i("map_mean")] <= f[..., i("map_max")] + 1e-6).all()

    def test_flat_image_has_no_texture_energy(self):
        lr = np.full((24, 24, 3), 0.5, np.float32)
        f = patch_features(lr, np.zeros((24, 24), np.float32), scale=4)
        for name in ("grad_mean", "grad_max", "lap_mean", "grad_wide"):
            np.testing.assert_allclose(f[..., FEATURES.index(name)], np.log10(EPS), atol=1e-5)
        np.testing.assert_allclose(f[..., FEATURES.index("y_mean")], 0.5, atol=1e-5)
        np.testing.assert_allclose(f[..., FEATURES.index("y_std")], 0.0, atol=1e-3)

    def test_map_of_the_wrong_size_is_refused(self):
        with pytest.raises(UsageError, match="does not match"):
            patch_features(_texture(20, 20), np.zeros((20, 21), np.float32), scale=4)


class TestModel:
    def test_create_forward_shape(self):
        m = create_model("router-x4")
        y = m(torch.zeros(2, len(FEATURES), 7, 9))
        assert y.shape == (2, 1, 7, 9)

    @needs_router
    def test_shipped_router_metadata(self):
        model, info = load_model("router-x4")
        assert info.task == "router" and info.in_channels == len(FEATURES) and info.scale == 4
        assert "threshold" in info.metadata["routing"]
        assert info.metadata["training"]["heavy"] == "edsr-s-x4"
        assert info.params < 20_000  # tiny next to the SR models


class TestTargets:
    def _item(self, light_err: float) -> dict:
        hr = np.full((32, 32, 3), 120, np.uint8)
        return {"lr": np.zeros((8, 8, 3), np.uint8), "hr": hr, "heavy": hr.copy(), "light": hr + np.uint8(light_err)}

    def test_equal_outputs_cost_nothing(self):
        t = patch_targets(self._item(0), 4, 4)
        assert t.shape == (2, 2) and np.all(t == 0)

    def test_known_loss(self):
        # +10 on every RGB channel moves Y by 10 * (65.481 + 128.553 + 24.966) / 255 = 8.588
        t = patch_targets(self._item(10), 4, 4)
        np.testing.assert_allclose(t, (10 * 219.0 / 255) ** 2, rtol=1e-6)
        assert target_transform(np.array([0.0]))[0] == 0.0 and target_transform(np.array([-4.0]))[0] < 0


@needs_router
class TestRoutedSR:
    heavy = "edsr-s-x4"

    def test_default_uses_the_router_and_a_sigma_threshold_the_map(self):
        lr = _texture(32, 32)
        _, rep = upscale_routed(lr, heavy=self.heavy)
        assert rep.scorer == "learned"
        _, rep = upscale_routed(lr, heavy=self.heavy, threshold=0.2)
        assert rep.scorer == "defocus"
        _, rep = upscale_routed(lr, heavy=self.heavy, sigma_lr=np.zeros((32, 32), np.float32))
        assert rep.scorer == "defocus"  # a given map: the router never saw such maps
        _, rep = upscale_routed(lr, heavy=self.heavy, routes=3)
        assert rep.scorer == "learned"  # the router decides heavy or cheap, the map which cheap route

    def test_router_decisions_follow_texture_and_blur(self):
        from scipy import ndimage

        tex = _texture(48, 96, seed=3)
        lr = tex.copy()
        lr[:, :48] = ndimage.gaussian_filter(tex[:, :48], (3, 3, 0))  # left: strongly defocused
        lr[:, 48:] = tex[:, 48:]  # right: sharp fine texture
        _, rep = upscale_routed(lr, heavy=self.heavy)
        rm = rep.plan.route_map()
        assert np.mean(rm[:, :40] == LIGHT) > 0.8
        assert np.mean(rm[:, 56:] == HEAVY) > 0.8

    def test_three_routes_bicubic_where_the_router_goes_light_and_the_map_sees_strong_blur(self):
        from scipy import ndimage

        tex = _texture(48, 144, seed=3)
        lr = tex.copy()
        lr[:, :48] = ndimage.gaussian_filter(tex[:, :48], (4, 4, 0))  # left: very defocused
        sig = np.zeros((48, 144), np.float32)
        sig[:, :48] = 4.0
        sig[:, 48:96] = 0.5  # middle: mildly blurred (light, but below the bicubic threshold)
        lr[:, 48:96] = ndimage.gaussian_filter(tex[:, 48:96], (0.5, 0.5, 0))
        two, rep2 = upscale_routed(lr, heavy=self.heavy, sigma_lr=sig, scorer="learned")
        three, rep3 = upscale_routed(lr, heavy=self.heavy, sigma_lr=sig, scorer="learned", routes=3)
        g2, g3 = rep2.plan.route_map(), rep3.plan.route_map()
        assert np.array_equal(g2 == HEAVY, g3 == HEAVY)  # the router's heavy patches are the same
        assert np.mean(g3[:, :40] == BICUBIC) > 0.8
        assert not (g3[:, 56:] == BICUBIC).any()  # below 4 px of HR blur: never bicubic
        assert rep3.flops_fraction < rep2.flops_fraction and rep3.fractions["bicubic"] > 0.2
        assert three.shape == two.shape

    def test_scores_threshold_and_cost(self):
        lr = _texture(24, 40)
        sig = np.zeros((24, 40), np.float32)
        scores, thr, macs = learned_scores(lr, sig, "router-x4", scale=4)
        assert scores.shape == grid_shape((24, 40), 4) and np.isfinite(scores).all()
        info = load_model("router-x4")[1]
        assert thr == -info.metadata["routing"]["threshold"]
        assert macs == pytest.approx(info.macs_per_pixel * scores.size)

    def test_bad_combinations(self):
        lr = _texture(16, 16)
        with pytest.raises(UsageError, match="smooth"):
            upscale_routed(lr, heavy=self.heavy, scorer="learned", smooth=1.0)
        with pytest.raises(UsageError, match="scorer"):
            upscale_routed(lr, heavy=self.heavy, scorer="oracle")

    def test_no_router_for_another_heavy_model_or_map(self):
        assert router_for(4, "edsr-s-x4") == "router-x4"
        assert router_for(4, "my-heavy") is None
        assert router_for(4, "edsr-s-x4", {"method": "edge"}) is None
        x2 = "router-x2" if is_shipped(get_variant("router-x2")) else None
        assert router_for(2, "edsr-s-x2") == x2
        assert router_for(3, "edsr-s-x3") is None
        h, lt = load_model("edsr-s-x4")[0], load_model(str(WEIGHTS_DIR / "ebmsr-x4.safetensors"))[0]
        assert router_for(4, "edsr-s-x4", models=(h, lt)) == "router-x4"  # the very pair it learned
        with torch.no_grad():
            next(lt.parameters()).add_(0.01)  # a retrained light model: the router's predictions are not for it
        assert router_for(4, "edsr-s-x4", models=(h, lt)) is None
        with pytest.raises(NotAvailableError, match="no learned router"):
            upscale_routed(_texture(16, 16), heavy=self.heavy, scorer="learned", map_kwargs={"method": "edge"})


@needs_router
def test_api_router_choice():
    import blurwise

    img = (_texture(24, 24) * 255).astype(np.uint8)
    _, rep = blurwise.upscale(img, scale=4, router="map", return_report=True)
    assert rep.routing.scorer == "defocus"
    _, rep = blurwise.upscale(img, scale=4, return_report=True)
    assert rep.routing.scorer == "learned" and "learned router" in rep.routing.summary()
    with pytest.raises(UsageError, match="router must be one of"):
        blurwise.upscale(img, scale=4, router="oracle")


class TestLightCorrection:
    """The light model's gain and offset on blurred bank pixels, folded into it."""

    def _item(self, model, gain: float, shift: float, blurred: bool = True):
        rng = np.random.default_rng(0)
        lr = (rng.random((12, 12, 3)) * 200 + 20).astype(np.uint8)
        est = np.full((12, 12), 0.5, np.float32)
        gt = np.full((12, 12), 1.0 if blurred else 0.0, np.float32)
        gt[:, :6] = 0.0  # half in focus: those pixels must not count
        x = np.concatenate([lr.astype(np.float32) / 255, est[..., None]], 2)
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])[0].permute(1, 2, 0)
        hr = out.numpy().astype(np.float64)
        hr[:, 24:] = gain * hr[:, 24:] + shift  # the blurred half (LR columns 6-11) is off
        hr[:, :24] += 0.2  # the in-focus half is off by far more, and must not count
        hr = np.clip(np.round(hr * 255), 0, 255).astype(np.uint8)
        return {"lr": lr, "hr": hr, "gt": gt, "est": est, "sharp": False}

    @staticmethod
    def _model():
        torch.manual_seed(0)
        return create_model("ebmsr", scale=4).eval()

    def test_shift_and_gain_act_per_channel(self):
        model = self._model()
        x = torch.rand(1, 4, 10, 9)
        with torch.no_grad():
            before = model(x)
            model.shift_output_([0.01, -0.02, 0.003])
            shifted = model(x)
            model.set_output_gain([1.0, 2.0, 0.5])
            scaled = model(x)
        expect = before + torch.tensor([0.01, -0.02, 0.003]).view(1, 3, 1, 1)
        assert torch.allclose(shifted, expect, atol=1e-6)
        assert torch.allclose(scaled, expect * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1), atol=1e-6)
        with torch.enable_grad():  # the training path applies the gain too
            assert torch.allclose(model(x), scaled, atol=1e-6)
        with pytest.raises(ValueError, match="one value per RGB channel"):
            model.shift_output_([0.1])
        with pytest.raises(ValueError, match="one value per RGB channel"):
            model.set_output_gain([1.0, 1.0])
        assert create_model("ebmsr", scale=4, out_gain=[1.0, 2.0, 0.5]).out_gain == (1.0, 2.0, 0.5)
        assert "gain" not in model.state_dict()  # in the config, not the weights

    def test_correction_is_measured_on_blurred_pixels_only_and_removed_by_it(self):
        from blurwise.train.router import light_correction

        model = self._model()
        item = self._item(model, 1.02, -0.01)
        gain, offset = light_correction([item], model, scale=4)
        assert np.allclose(gain, 1.02, atol=0.01) and np.allclose(offset, -0.01, atol=0.005)
        model.shift_output_((offset / gain).tolist())
        model.set_output_gain(gain.tolist())
        gain2, offset2 = light_correction([item], model, scale=4)
        assert np.allclose(gain2, 1.0, atol=1e-3) and np.allclose(offset2, 0.0, atol=1e-3)

    def test_no_blurred_pixel_is_a_clear_error(self):
        from blurwise.train.router import light_correction

        model = self._model()
        with pytest.raises(UsageError, match="no bank pixel is blurred"):
            light_correction([self._item(model, 1.0, 0.01, blurred=False)], model, scale=4)

    def test_debias_writes_a_new_file_with_the_correction_in_its_config(self, tmp_path):
        from blurwise.models.registry import WEIGHTS_DIR, read_weights
        from blurwise.train.router import debias_light, light_correction, load_bank

        shipped, _ = load_model("ebmsr-x4")
        item = self._item(shipped, 1.0, 3.0 / 255)
        bank = tmp_path / "bank"
        bank.mkdir()
        np.savez(bank / "000_dof.npz", heavy=item["hr"], light=item["hr"], **item)
        np.savez(bank / "000_sharp.npz", heavy=item["hr"], light=item["hr"], **item)  # in focus: not used
        dst, gain, offset = debias_light(bank, 4, tmp_path / "light.safetensors")
        assert np.allclose(gain, 1.0, atol=0.01) and np.allclose(offset, 3.0 / 255, atol=0.005)
        _, meta = read_weights(dst)
        base = read_weights(WEIGHTS_DIR / "ebmsr-x4.safetensors")[1]
        assert meta["training"] == base["training"] and meta["name"] == "ebmsr-x4"
        prev = np.array(base["config"].get("out_gain", [1.0] * 3))
        assert np.allclose(meta["config"]["out_gain"], prev * gain, atol=1e-5)
        assert np.allclose(meta["output_correction"]["offset"], offset, atol=1e-6)
        fixed, _ = load_model(dst)
        blurred = [d for d in load_bank(bank) if not d["sharp"]]
        gain2, offset2 = light_correction(blurred, fixed, 4)
        assert np.allclose(gain2, 1.0, atol=2e-3) and np.allclose(offset2, 0.0, atol=2e-3)

    def test_debias_cli_bad_bank_is_a_one_line_error(self, tmp_path, capsys):
        from blurwise.train.router import main

        assert main(["debias", "--train", str(tmp_path / "none"), "--out", str(tmp_path / "w.safetensors")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and err.count("\n") == 0 and "no such bank folder" in err
        (tmp_path / "empty").mkdir()
        assert main(["debias", "--train", str(tmp_path / "empty"), "--out", str(tmp_path / "w.safetensors")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no bank pixel is blurred" in err
        assert not (tmp_path / "w.safetensors").exists()


def test_router_cli_refuses_before_any_work(tmp_path, capsys):
    from blurwise.train.router import main

    (tmp_path / "empty").mkdir()
    fit = ["fit", "--train", str(tmp_path / "empty"), "--val", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]
    assert main(fit) == 2 and "holds no items" in capsys.readouterr().err
    assert main([*fit, "--report", str(tmp_path)]) == 2 and "names a folder" in capsys.readouterr().err
    for bad in (["--taus", "a,b"], ["--steps", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([*fit, *bad])
        assert exc.value.code == 2 and "expected" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_shipped_routers_record_the_shipped_pair():
    """A router predicts one pair's gain: shipping new heavy or light weights without refitting it must show."""
    from blurwise.routing import ROUTER_MODELS, _shipped_fingerprint, find_light_model

    for scale, name in ROUTER_MODELS.items():
        if not is_shipped(get_variant(name)):
            continue
        pair = load_model(name)[1].metadata["training"]["pair"]
        heavy = f"edsr-s-x{scale}"
        assert pair == {
            "heavy": _shipped_fingerprint(heavy),
            "light": _shipped_fingerprint(find_light_model(heavy, scale)),
        }


def test_router_banks_keep_their_pair(tmp_path, capsys):
    import json

    from blurwise.routing import _shipped_fingerprint
    from blurwise.train.router import PAIR_FILE, bank_pair, main, make_bank

    make_bank(tmp_path / "a", "val", limit=0)  # no items, just the record of the weights it would cache
    assert bank_pair(tmp_path / "a") == {
        "heavy": _shipped_fingerprint("edsr-s-x4"),
        "light": _shipped_fingerprint("ebmsr-x4"),
    }
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / PAIR_FILE).write_text(json.dumps({"heavy": "0" * 16, "light": "1" * 16}))
    with pytest.raises(UsageError, match="made with other weights"):
        make_bank(tmp_path / "b", "val", limit=0)  # resuming it would mix outputs of two pairs
    fit = ["fit", "--train", str(tmp_path / "a"), "--val", str(tmp_path / "b"), "--out", str(tmp_path / "r")]
    assert main(fit) == 2 and "different weights" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_calibrate_chooses_the_threshold_again_for_the_banks_pair(tmp_path, capsys):
    """After a new light model: the shipped router's weights kept, the threshold chosen again on a validation bank
    of the new pair, and that pair recorded (so routing uses the router with the new light model)."""
    import json

    from blurwise.models.registry import WEIGHTS_DIR, read_weights
    from blurwise.routing import _shipped_fingerprint
    from blurwise.train.router import PAIR_FILE, main

    rng = np.random.default_rng(0)
    bank = tmp_path / "val"
    bank.mkdir()
    new_pair = {"heavy": _shipped_fingerprint("edsr-s-x4"), "light": "f" * 16}
    (bank / PAIR_FILE).write_text(json.dumps(new_pair))
    for name in ("000_dof", "000_sharp"):
        lr = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        hr = (rng.random((192, 192, 3)) * 255).astype(np.uint8)
        out = np.clip(hr.astype(int) + 3, 0, 255).astype(np.uint8)  # light == heavy: every threshold is safe
        est = np.full((48, 48), 2.0, np.float32)
        np.savez(bank / f"{name}.npz", lr=lr, hr=hr, gt=est, est=est, heavy=out, light=out)
    out_file = tmp_path / "router.safetensors"
    old, base = read_weights(WEIGHTS_DIR / "router-x4.safetensors")
    shipped_tau = base["routing"]["threshold"]
    assert main(["calibrate", "--val", str(bank), "--out", str(out_file), "--taus=-5,0.5,1,5"]) == 0
    said = capsys.readouterr().err
    new, meta = read_weights(out_file)
    rows = meta["validation"]["rows"]
    best = max(rows, key=lambda r: r["renders_cut"])  # every threshold is safe: the largest cut (first of equals)
    assert rows[0]["renders_cut"] < 0 < best["renders_cut"] and f"threshold {shipped_tau} -> {best['tau']}" in said
    assert all(torch.equal(new[k], old[k]) for k in old) and new.keys() == old.keys()
    assert meta["routing"]["threshold"] == best["tau"] and [r["tau"] for r in rows] == [-5, 0.5, 1, 5]
    assert meta["training"]["pair"] == new_pair and meta["training"]["items"] == base["training"]["items"]
    assert meta["recalibrated"][-1]["was"] == {"threshold": shipped_tau, "light": base["training"]["pair"]["light"]}
    assert load_model(out_file)[1].task == "router"
    (bank / PAIR_FILE).write_text(json.dumps({"heavy": "0" * 16, "light": "f" * 16}))
    assert main(["calibrate", "--val", str(bank), "--out", str(tmp_path / "r2.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another heavy model" in err and not (tmp_path / "r2.safetensors").exists()
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", "--val", str(tmp_path / "empty"), "--out", str(tmp_path / "r2.safetensors")]) == 2
    assert "--val bank" in capsys.readouterr().err and not (tmp_path / "r2.safetensors").exists()
