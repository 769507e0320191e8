"""Tests for blurwise.evaluate: JSON schema, known bicubic values, layouts, models through tiling, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blurwise.errors import BlurwiseError, InputError, ModelError, UsageError
from blurwise.evaluate import evaluate, find_pairs
from blurwise.metrics import imresize, psnr

SR_KEYS = {"task", "model", "scale", "n_images", "psnr_y", "ssim_y", "per_image"}


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return imresize(small, size=(h, w))


@pytest.fixture
def sr_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hr"
    write_png(d / "a.png", smooth_image(50, 43, 0))  # not a multiple of the scale: cropped
    write_png(d / "b.png", smooth_image(40, 48, 1)[:, :, 0])  # grey: replicated to RGB
    write_png(d / "c.png", smooth_image(36, 36, 2))
    return d


@pytest.fixture
def blur_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pairs"
    for i in range(2):
        sharp = smooth_image(32, 40, i)
        blur = imresize(imresize(sharp, 0.5), size=(32, 40))
        write_png(d / "sharp" / f"{i}.png", sharp)
        write_png(d / "blur" / f"{i}.png", blur)
    return d


def tiny_weights(tmp_path: Path, task: str, scale: int = 1, name: str = "tiny") -> Path:
    import torch

    from blurwise.models import create_model, save_weights

    torch.manual_seed(0)
    if task == "sr":
        cfg = {"scale": scale, "n_feats": 8, "n_resblocks": 1}
        model, arch = create_model("edsr", **cfg), "edsr"
    else:
        cfg = {"stages": 2, "channels": 8, "blocks": 1}
        model, arch = create_model("lprn", **cfg), "lprn"
    return save_weights(
        model, tmp_path / f"{name}.safetensors", arch=arch, task=task, scale=scale, config=cfg, half=False
    )


# --------------------------------------------------------------------------- SR


@pytest.mark.data
class TestKnownValues:
    def test_set5_bicubic_x4_schema_and_value(self):
        from blurwise.data.paths import data_path

        folder = data_path("sr", "test", "Set5")
        if not folder.is_dir():
            pytest.skip(f"shared data not found at {folder}")
        r = evaluate("sr", folder, scale=4, model="bicubic")
        assert SR_KEYS <= set(r) and r["task"] == "sr" and r["model"] == "bicubic" and r["scale"] == 4
        assert r["n_images"] == 5 == len(r["per_image"])
        assert set(r["per_image"][0]) == {"name", "psnr_y", "ssim_y"}
        assert r["psnr_y"] == pytest.approx(28.42, abs=0.02) and r["psnr_y"] == pytest.approx(28.431, abs=2e-3)
        assert r["ssim_y"] == pytest.approx(0.8113, abs=1e-3)
        json.dumps(r, allow_nan=False)

    def test_set5_bicubic_x2(self):
        from blurwise.data.paths import data_path

        folder = data_path("sr", "test", "Set5")
        if not folder.is_dir():
            pytest.skip(f"shared data not found at {folder}")
        r = evaluate("sr", folder, scale=2, model="bicubic")
        assert r["psnr_y"] == pytest.approx(33.66, abs=0.03) and r["psnr_y"] == pytest.approx(33.682, abs=2e-3)

    def test_gopro_pairs_identity(self):
        from blurwise.data.paths import data_path

        folder = data_path("deblur", "gopro_pairs")
        if not folder.is_dir():
            pytest.skip(f"shared data not found at {folder}")
        pairs = find_pairs(folder)
        assert len(pairs) >= 10 and all(b.name == s.name for _, b, s in pairs)
        r = evaluate("deblur", folder, model="identity", limit=1)
        assert r["n_images"] == 1 and 15 < r["psnr"] < 45 and 0 < r["ssim"] < 1


class TestSR:
    def test_bicubic_schema_limit_and_protocol(self, sr_dir):
        r = evaluate("sr", sr_dir, scale=4, model="bicubic", limit=2)
        assert SR_KEYS <= set(r) and r["n_images"] == 2
        assert [p["name"] for p in r["per_image"]] == ["a.png", "b.png"]
        hr = np.asarray(Image.open(sr_dir / "a.png"))[:48, :40]
        expected = psnr(imresize(imresize(hr, 1 / 4), 4), hr, crop=4)
        assert r["per_image"][0]["psnr_y"] == pytest.approx(expected, abs=1e-9)
        assert r["psnr_y"] == pytest.approx(np.mean([p["psnr_y"] for p in r["per_image"]]))

    @pytest.mark.parametrize("sub", ["HR", "hr"])
    def test_hr_subfolder(self, sr_dir, tmp_path, sub):
        (tmp_path / "set").mkdir()
        sr_dir.rename(tmp_path / "set" / sub)
        assert evaluate("sr", tmp_path / "set", scale=2, model="bicubic")["n_images"] == 3

    def test_model_through_tiling_matches_direct_run(self, sr_dir, tmp_path):
        import torch

        from blurwise.models import load_model

        path = tiny_weights(tmp_path, "sr", scale=2)
        r = evaluate("sr", sr_dir, scale=2, model=str(path), device="cpu", tile=8, tile_pad=16, limit=1)
        assert r["model"] == str(path) and r["n_images"] == 1 and r["seconds"] >= 0
        net, _ = load_model(path)
        hr = np.asarray(Image.open(sr_dir / "a.png"))[:50, :42]
        lr = imresize(hr, 1 / 2)
        with torch.no_grad():
            y = net(torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)[None])
        sr = np.clip(np.round(y[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64) * 255), 0, 255)
        assert r["psnr_y"] == pytest.approx(psnr(sr.astype(np.uint8), hr, crop=2), abs=1e-3)

    @pytest.fixture
    def fake_routing(self, tmp_path, monkeypatch):
        """A tiny x4 model (weights path) that is its own light model, and a fake upscale_routed recording calls."""
        import blurwise.routing

        calls = []

        class FakeReport:
            fractions = {"heavy": 0.25, "light": 0.75}
            total_macs, full_heavy_macs = 30.0, 100.0

        def fake(lr, *, heavy, light, scale, device, **kw):
            if min(lr.shape[:2]) < 8:
                raise InputError(f"image too small for a defocus map: {lr.shape[1]}x{lr.shape[0]}")
            calls.append((heavy[1].scale, light[1].scale, scale, kw))
            return imresize(lr.astype(np.float64), scale).clip(0, 1), FakeReport()

        path = tiny_weights(tmp_path, "sr", scale=4)
        monkeypatch.setattr(blurwise.routing, "upscale_routed", fake)
        monkeypatch.setattr(blurwise.routing, "find_light_model", lambda name, scale, heavy=None: str(path))
        return str(path), calls

    def test_route_auto_calls_upscale_routed(self, sr_dir, fake_routing):
        path, calls = fake_routing
        r = evaluate("sr", sr_dir, scale=4, model=path, route="auto", device="cpu", threshold=0.7)
        assert len(calls) == 3 and calls[0] == (4, 4, 4, {"threshold": 0.7})
        assert r["routing"] == {
            "routed_images": 3,
            "flops_fraction": pytest.approx(0.3),
            "mean_route_fractions": {"heavy": 0.25, "light": 0.75},
            "notes": [],
        }
        assert r["psnr_y"] == pytest.approx(evaluate("sr", sr_dir, scale=4, model="bicubic")["psnr_y"], abs=0.05)

    def test_route_auto_runs_the_heavy_model_on_an_image_too_small_to_route(self, sr_dir, tmp_path, fake_routing):
        path, calls = fake_routing
        write_png(sr_dir / "tiny.png", smooth_image(28, 28, 3))  # 7x7 LR at x4: no defocus map
        r = evaluate("sr", sr_dir, scale=4, model=path, route="auto", device="cpu")
        off = evaluate("sr", sr_dir, scale=4, model=path, device="cpu")
        assert r["n_images"] == 4 and len(calls) == 3 and r["routing"]["routed_images"] == 3
        assert r["routing"]["notes"] == ["image too small to route (7x7): heavy model everywhere"]
        assert r["per_image"][3] == off["per_image"][3]  # tiny.png: exactly the heavy model's result
        with pytest.raises(InputError, match="too small for a defocus map: 7x7"):
            evaluate("sr", sr_dir, scale=4, model=path, route="on", device="cpu")

    def test_route_auto_without_a_light_model_runs_the_heavy_model(self, sr_dir, tmp_path):
        path = str(tiny_weights(tmp_path, "sr", scale=2))  # no EBM-SR is registered for it
        r = evaluate("sr", sr_dir, scale=2, model=path, route="auto", device="cpu")
        off = evaluate("sr", sr_dir, scale=2, model=path, device="cpu")
        assert r["per_image"] == off["per_image"]
        assert r["routing"] == {
            "routed_images": 0,
            "flops_fraction": None,
            "mean_route_fractions": None,
            "notes": ["no light model: heavy model everywhere"],
        }
        with pytest.raises(ModelError, match="no EBM-SR"):
            evaluate("sr", sr_dir, scale=2, model=path, route="on", device="cpu")

    def test_wrong_scale_model(self, sr_dir, tmp_path):
        path = tiny_weights(tmp_path, "sr", scale=2)
        with pytest.raises(ModelError, match="x2"):
            evaluate("sr", sr_dir, scale=4, model=str(path), device="cpu")

    def test_default_model_resolves_or_says_why(self, sr_dir):
        from blurwise.models import default_variant

        try:
            r = evaluate("sr", sr_dir, scale=4, device="cpu", limit=1)
        except ModelError as exc:
            assert "not shipped" in str(exc) or "no model" in str(exc)
        else:
            assert r["model"] == default_variant("sr", 4).name


# --------------------------------------------------------------------------- deblur


class TestDeblur:
    def test_identity_schema(self, blur_dir):
        r = evaluate("deblur", blur_dir, model="identity")
        assert {"psnr", "ssim", "psnr_y", "ssim_y"} <= set(r) and r["scale"] == 1 and r["n_images"] == 2
        assert set(r["per_image"][0]) == {"name", "psnr", "ssim", "psnr_y", "ssim_y"}
        blur = np.asarray(Image.open(blur_dir / "blur" / "0.png"))
        sharp = np.asarray(Image.open(blur_dir / "sharp" / "0.png"))
        assert r["per_image"][0]["psnr"] == pytest.approx(psnr(blur, sharp, y=False))

    def test_sequence_layout(self, blur_dir, tmp_path):
        root = tmp_path / "gopro_test"
        root.mkdir()
        blur_dir.rename(root / "SEQ1")
        r = evaluate("deblur", root, model="identity")
        assert r["per_image"][0]["name"] == "SEQ1/0.png"

    def test_learned_model(self, blur_dir, tmp_path):
        path = tiny_weights(tmp_path, "deblur")
        r = evaluate("deblur", blur_dir, model=str(path), device="cpu", tile=16, tile_pad=8)
        assert r["n_images"] == 2 and math.isfinite(r["psnr"])

    def test_stages_as_deblur_runs_them(self, blur_dir):
        import blurwise

        r = evaluate("deblur", blur_dir, model="lprn", device="cpu", stages=2)
        assert r["stages"] == 2
        blur = np.asarray(Image.open(blur_dir / "blur" / "0.png"))
        sharp = np.asarray(Image.open(blur_dir / "sharp" / "0.png"))
        out = blurwise.deblur(blur, model="lprn", stages=2, device="cpu")
        assert r["per_image"][0]["psnr"] == pytest.approx(psnr(out, sharp, y=False), abs=1e-6)
        assert "stages" not in evaluate("deblur", blur_dir, model="lprn", device="cpu", limit=1)

    @pytest.mark.parametrize(
        "task, model, stages, match",
        [
            ("sr", None, 2, "apply to deblurring"),
            ("deblur", "identity", 2, "identity baseline has no stages"),
            ("deblur", "nafnet16", 2, "has no stages"),
            ("deblur", "lprn", 7, "from 1 to 6"),
            ("deblur", "lprn", 2.5, "whole number"),
        ],
    )
    def test_stages_refused(self, blur_dir, task, model, stages, match):
        with pytest.raises(UsageError, match=match):
            evaluate(task, blur_dir, model=model, device="cpu", stages=stages)

    def test_missing_sharp(self, blur_dir):
        (blur_dir / "sharp" / "1.png").unlink()
        with pytest.raises(InputError, match="no sharp image"):
            evaluate("deblur", blur_dir, model="identity")


# --------------------------------------------------------------------------- sets written by make-eval


def write_manifest(folder: Path, items: list[dict]) -> None:
    (folder / "manifest.json").write_text(json.dumps({"name": folder.name, "items": items}))


class TestEvalSets:
    def test_deblur_pairs_named_by_the_manifest(self, tmp_path):
        d = tmp_path / "deblur-synth"
        sharp = smooth_image(32, 40, 0)
        write_png(d / "sharp" / "S__a.png", sharp)
        items = []
        for k in ("k1", "k2"):
            write_png(d / "blur" / f"S__a__{k}.png", imresize(imresize(sharp, 0.5), size=(32, 40)))
            items.append({"id": f"S__a__{k}", "blur": f"blur/S__a__{k}.png", "sharp": "sharp/S__a.png"})
        write_manifest(d, items[::-1])
        r = evaluate("deblur", d, model="identity", limit=1)
        assert r["n_images"] == 1 and r["per_image"][0]["name"] == "S__a__k1"  # sorted by id
        assert evaluate("deblur", d, model="identity")["n_images"] == 2
        with pytest.raises(UsageError, match="not an evaluation set for sr.*--task deblur"):
            evaluate("sr", d, model="bicubic")
        (d / "blur" / "S__a__k2.png").unlink()
        with pytest.raises(InputError, match="S__a__k2.png is listed in .*manifest.json but missing"):
            evaluate("deblur", d, model="identity")

    def test_sr_items_from_the_manifest(self, sr_dir, tmp_path):
        d = tmp_path / "defocus-sr"
        d.mkdir()
        sr_dir.rename(d / "hr")
        write_manifest(d, [{"id": p.stem, "hr": f"hr/{p.name}", "sigma": None} for p in sorted((d / "hr").iterdir())])
        r = evaluate("sr", d, scale=2, model="bicubic")
        assert [p["name"] for p in r["per_image"]] == ["a", "b", "c"]
        with pytest.raises(UsageError, match="--task sr"):
            evaluate("deblur", d, model="identity")
        with pytest.raises(InputError, match="holds evaluation sets \\(defocus-sr\\); pass one"):
            evaluate("sr", tmp_path, model="bicubic")
        (d / "manifest.json").write_text("{not json")
        with pytest.raises(InputError, match="not a readable evaluation-set manifest"):
            evaluate("sr", d, model="bicubic")

    @pytest.mark.data
    def test_every_small_set_make_eval_writes(self, tmp_path):
        from blurwise.data import make_eval, read_manifest
        from blurwise.data.paths import data_path

        if not data_path("sr", "test", "Set14").is_dir():
            pytest.skip("shared data not found (set BLURWISE_DATA)")
        sets = make_eval(tmp_path, small=True)
        assert set(sets) == {"defocus-sr", "deblur-synth", "deblur-gopro"}
        for name in sets:
            task = "sr" if name == "defocus-sr" else "deblur"
            r = evaluate(task, tmp_path / name, model="bicubic" if task == "sr" else "identity")
            ids = sorted(it["id"] for it in read_manifest(tmp_path, name)["items"])
            assert [p["name"] for p in r["per_image"]] == ids and r["n_images"] == len(ids) > 0, name
            assert all(10 < p["psnr_y"] < 60 and 0 < p["ssim_y"] < 1 for p in r["per_image"]), name


# --------------------------------------------------------------------------- errors


class TestErrors:
    @pytest.mark.parametrize(
        "kwargs,exc,match",
        [
            ({"task": "denoise"}, UsageError, "unknown task"),
            ({"model": "identity"}, UsageError, "baseline"),
            ({"model": "bicubic", "route": "auto"}, UsageError, "route"),
            ({"model": "bicubic", "threshold": 1.0}, UsageError, "route auto"),
            ({"model": "bicubic", "route": "sometimes"}, UsageError, "route"),
            ({"model": "bicubic", "limit": 0}, UsageError, "limit"),
            ({"model": "no-such-model", "device": "cpu"}, ModelError, "unknown model"),
        ],
    )
    def test_usage_errors(self, sr_dir, kwargs, exc, match):
        args = {"task": "sr", "data_dir": sr_dir, **kwargs}
        with pytest.raises(exc, match=match):
            evaluate(**args)

    def test_missing_and_empty_folders(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            evaluate("sr", tmp_path / "nope", model="bicubic")
        with pytest.raises(InputError, match="no images"):
            evaluate("sr", tmp_path, model="bicubic")
        with pytest.raises(InputError, match="blur/"):
            evaluate("deblur", tmp_path, model="identity")

    def test_corrupt_image_is_one_line_error(self, sr_dir):
        (sr_dir / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        with pytest.raises(BlurwiseError) as info:
            evaluate("sr", sr_dir, model="bicubic")
        assert "\n" not in str(info.value)
