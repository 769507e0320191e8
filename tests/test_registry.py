"""Model registry and loaders: create_model, save_weights/load_model round trip, pickle policy, foreign weights."""

from __future__ import annotations

import json

import pytest
import torch

from blurwise.errors import ModelError
from blurwise.models import create_model, list_variants, load_model, save_weights
from blurwise.models.edsr import EDSR
from blurwise.models.foreign import detect_arch, load_foreign
from blurwise.models.registry import get_arch, get_variant, read_weights
from blurwise.models.rrdb import RRDBNet

MY_VARIANTS = {
    "safmn-x2",
    "safmn-x3",
    "safmn-x4",
    "ebmsr-x2",
    "ebmsr-x4",
    "lprn",
    "lprn-t5",
    "lprn-t7",
    "lprn-recal-none",
    "lprn-recal-channel",
    "lprn-recal-spatial",
    "lprn-unrolled",
    "plainres",
    "nafnet16",
}


def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# --------------------------------------------------------------------------- create_model / variants


class TestCreate:
    def test_variants_registered(self):
        names = {v.name for v in list_variants()}
        assert MY_VARIANTS <= names
        for v in list_variants():
            assert get_arch(v.arch).task == v.task or v.task == "ebmsr"

    def test_one_default_per_task_scale(self):
        seen: dict[tuple[str, int], str] = {}
        for v in list_variants():
            if v.default:
                assert (v.task, v.scale) not in seen, f"{v.name} and {seen[(v.task, v.scale)]} both default"
                seen[(v.task, v.scale)] = v.name
        assert seen[("deblur", 1)] == "lprn"

    def test_ebmsr_teacher(self):
        assert get_variant("ebmsr-x4").teacher == "edsr-s-x4"
        assert get_variant("ebmsr-x2").teacher == "edsr-s-x2"
        assert get_arch("ebmsr").in_channels == 4

    def test_unknown_model(self):
        with pytest.raises(ModelError, match="unknown model 'nope'"):
            create_model("nope")
        with pytest.raises(ModelError, match="unknown model"):
            load_model("nope")

    def test_bad_config(self):
        with pytest.raises(ModelError, match="bad config"):
            create_model("lprn", colour=3)

    def test_layer_macs_equal_flop_counter(self):
        # ModelInfo's hook-based MACs must agree with FlopCounterMode for every registered variant
        from blurwise.metrics.flops import count_macs
        from blurwise.models.registry import layer_macs

        for v in list_variants():
            m = create_model(v.name).eval()
            shape = (1, m.in_channels, 16, 16)
            assert layer_macs(m, shape) == count_macs(m, shape), v.name

    def test_override(self):
        assert create_model("lprn", stages=3).stages == 3

    def test_unshipped_needs_allow_untrained(self):
        v = get_variant("lprn-recal-none")
        from blurwise.models.registry import is_shipped

        if is_shipped(v):
            pytest.skip("weights shipped")
        with pytest.raises(ModelError, match="not shipped"):
            load_model("lprn-recal-none")
        model, info = load_model("lprn-recal-none", allow_untrained=True)
        assert info.task == "deblur" and info.params > 0 and not model.training


# --------------------------------------------------------------------------- safetensors round trip


class TestSafetensors:
    @pytest.mark.parametrize(
        "name,cfg",
        [
            ("ebmsr", dict(scale=2, channels=8, n_blocks=1)),
            ("lprn", dict(stages=2, channels=8, blocks=1, recalib="both")),
            ("safmn", dict(scale=3, dim=8, n_blocks=1)),
            ("nafnet", dict(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])),
        ],
    )
    def test_round_trip(self, tmp_path, name, cfg):
        torch.manual_seed(0)
        m = create_model(name, **cfg).eval()
        task = get_arch(name).task
        scale = cfg.get("scale", 1)
        p = save_weights(
            m,
            tmp_path / "m.safetensors",
            arch=name,
            task=task,
            scale=scale,
            config=cfg,
            teacher="edsr-s-x2" if name == "ebmsr" else None,
            extra={"iterations": 7, "val_psnr": 30.5},
            half=False,
        )
        loaded, info = load_model(p)
        x = torch.rand(1, m.in_channels, 9, 10)
        m = m.to(memory_format=torch.channels_last)  # loaded models are channels-last: same layout, same rounding
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=0, rtol=0)
        conv_weights = [q for q in loaded.parameters() if q.dim() == 4]
        assert all(q.is_contiguous(memory_format=torch.channels_last) for q in conv_weights)
        assert info.arch == name and info.task == task and info.scale == scale
        assert info.metadata == {"iterations": 7, "val_psnr": 30.5}
        assert info.in_channels == m.in_channels and info.macs_per_pixel > 0
        if name == "ebmsr":
            assert info.teacher == "edsr-s-x2"
        assert not list(tmp_path.glob(".*tmp"))

    def test_fp16_default(self, tmp_path):
        m = create_model("lprn", stages=2, channels=8, blocks=1)
        p = save_weights(m, tmp_path / "h.safetensors", arch="lprn", task="deblur", scale=1, config={"stages": 2})
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
            meta = json.loads(f.metadata()["blurwise"])
        assert meta["arch"] == "lprn" and meta["config"] == {"stages": 2}
        state, _ = read_weights(p)
        assert all(t.dtype == torch.float32 for t in state.values())

    def test_weights_files_get_the_usual_permissions(self, tmp_path):
        from blurwise.io.image import _umask

        m = create_model("lprn", stages=2, channels=8, blocks=1)
        p = save_weights(m, tmp_path / "p.safetensors", arch="lprn", task="deblur", scale=1, config={})
        assert p.stat().st_mode & 0o777 == 0o666 & ~_umask()  # what open() gives, not safetensors' 0600

    def test_mismatched_weights(self, tmp_path):
        m = create_model("lprn", stages=2, channels=8, blocks=1)
        p = save_weights(m, tmp_path / "x.safetensors", arch="lprn", task="deblur", scale=1, config={"channels": 16})
        with pytest.raises(ModelError, match="do not match"):
            load_model(p)

    def test_corrupt_file(self, tmp_path):
        p = tmp_path / "bad.safetensors"
        p.write_bytes(b"\x00\x01garbage")
        with pytest.raises(ModelError):
            load_model(p)

    def test_missing_file(self, tmp_path):
        with pytest.raises(ModelError, match="not found"):
            load_model(tmp_path / "none.safetensors")


# --------------------------------------------------------------------------- pickle policy and foreign weights


def _small_edsr(scale: int = 4, seed: int = 0) -> EDSR:
    torch.manual_seed(seed)
    m = EDSR(scale=scale, n_feats=8, n_resblocks=2)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # non-zero biases everywhere
    return m.eval()


class TestPickle:
    def test_refused_without_trust(self, tmp_path):
        p = tmp_path / "edsr.pth"
        torch.save(_small_edsr().state_dict(), p)
        with pytest.raises(ModelError, match="refusing to unpickle edsr.pth; pass --trust-pickle"):
            load_model(p)

    def test_code_in_pickle_refused_even_if_trusted(self, tmp_path):
        p = tmp_path / "evil.pth"
        torch.save({"state_dict": _small_edsr()}, p)  # a whole module: needs arbitrary unpickling
        with pytest.raises(ModelError, match="weights_only"):
            load_model(p, trust_pickle=True)

    def test_not_a_state_dict(self, tmp_path):
        p = tmp_path / "list.pt"
        torch.save([1, 2, 3], p)
        with pytest.raises(ModelError, match="state dict"):
            load_model(p, trust_pickle=True)

    def test_unknown_layout(self, tmp_path):
        p = tmp_path / "other.pth"
        torch.save({"foo.weight": torch.zeros(3)}, p)
        with pytest.raises(ModelError, match="unrecognised architecture"):
            load_model(p, trust_pickle=True)


class TestForeignEDSR:
    @pytest.mark.parametrize("scale", [2, 3, 4])
    def test_published_layout_reproduces_output(self, tmp_path, scale):
        m = _small_edsr(scale)
        p = tmp_path / f"edsr_x{scale}.pth"
        torch.save(m.state_dict(), p)
        loaded, info = load_model(p, trust_pickle=True)
        x = torch.rand(1, 3, 7, 9)
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=0, rtol=0)
        assert (info.arch, info.task, info.scale) == ("edsr", "sr", scale)
        assert info.config["n_feats"] == 8 and info.config["n_resblocks"] == 2

    def test_rgb_range_255(self, tmp_path):
        # the official checkpoints work on [0, 255]: every bias is 255x ours; loading must convert exactly
        m = _small_edsr(2)
        state = {k: v * 255 if k.endswith(".bias") else v for k, v in m.state_dict().items()}
        p = tmp_path / "edsr255.pt"
        torch.save({"model": state}, p)
        loaded, _ = load_foreign(p, trust_pickle=True)
        x = torch.rand(1, 3, 6, 5)
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=1e-5, rtol=1e-5)

    def test_basicsr_layout(self, tmp_path):
        m = _small_edsr(4)
        sd = m.state_dict()
        ren = {"head.0": "conv_first", "body.2": "conv_after_body", "tail.0.0": "upsample.0", "tail.0.2": "upsample.2"}
        ren.update({"tail.1": "conv_last"})
        for i in range(2):
            ren[f"body.{i}.body.0"], ren[f"body.{i}.body.2"] = f"body.{i}.conv1", f"body.{i}.conv2"
        bsr = {}
        for k, v in sd.items():
            if "_mean" in k:
                continue
            prefix, leaf = k.rsplit(".", 1)
            bsr[f"{ren[prefix]}.{leaf}"] = v * 255 if leaf == "bias" else v
        assert detect_arch(bsr) == "edsr-basicsr"
        p = tmp_path / "edsr_bsr.pth"
        torch.save({"params": bsr}, p)
        loaded, _ = load_foreign(p, trust_pickle=True)
        x = torch.rand(1, 3, 6, 5)
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=1e-5, rtol=1e-5)

    def test_dataparallel_prefix_and_safetensors(self, tmp_path):
        from safetensors.torch import save_file

        m = _small_edsr(2)
        p = tmp_path / "edsr.safetensors"  # no blurwise metadata: detected like a .pth, no pickle
        save_file({f"module.{k}": v.contiguous() for k, v in m.state_dict().items()}, str(p))
        loaded, info = load_model(p)
        x = torch.rand(1, 3, 5, 5)
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=0, rtol=0)
        assert info.metadata["source"] == "foreign"


def _rrdb_layouts(sd: dict[str, torch.Tensor], nb: int) -> dict[str, dict[str, torch.Tensor]]:
    old, oldest = {}, {}
    ren = {"body.": "RRDB_trunk.", "conv_body.": "trunk_conv.", "conv_up": "upconv", "conv_hr.": "HRconv."}
    seq = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    for k, v in sd.items():
        o = k
        for a, b in ren.items():
            o = o.replace(a, b) if o.startswith(a) or a == "conv_up" else o
        old[o.replace(".rdb", ".RDB")] = v
        prefix, leaf = k.rsplit(".", 1)
        if k.startswith("body."):
            _, n, rdb, conv, _ = k.split(".")
            oldest[f"model.1.sub.{n}.{rdb.upper()}.{conv}.0.{leaf}"] = v
        elif prefix == "conv_body":
            oldest[f"model.1.sub.{nb}.{leaf}"] = v
        else:
            oldest[f"model.{seq[prefix]}.{leaf}"] = v
    return {"basicsr": sd, "esrgan": old, "esrgan-old": oldest}


class TestForeignToSafetensors:
    def test_rrdb_saved_with_metadata_reloads(self, tmp_path):
        torch.manual_seed(3)
        m = RRDBNet(scale=4, nf=8, nb=1, gc=4).eval()
        torch.save(m.state_dict(), tmp_path / "r.pth")
        loaded, info = load_foreign(tmp_path / "r.pth", trust_pickle=True)
        p = save_weights(loaded, tmp_path / "r.safetensors", arch=info.arch, task="sr", scale=4, config=info.config)
        again, info2 = load_model(p)
        x = torch.rand(1, 3, 5, 6)
        torch.testing.assert_close(_out(again, x), _out(m, x), atol=2e-3, rtol=0)  # fp16 weights
        assert info2.arch == "rrdb" and info2.config == info.config


class TestForeignRRDB:
    @pytest.mark.parametrize("layout", ["basicsr", "esrgan", "esrgan-old"])
    def test_layouts_reproduce_output(self, tmp_path, layout):
        torch.manual_seed(1)
        m = RRDBNet(scale=4, nf=8, nb=2, gc=4).eval()
        sd = _rrdb_layouts(m.state_dict(), nb=2)[layout]
        assert detect_arch(sd) == "rrdb"
        p = tmp_path / "rrdb.pth"
        torch.save({"params_ema": sd, "params": {}}, p)
        loaded, info = load_foreign(p, trust_pickle=True)
        x = torch.rand(1, 3, 6, 7)
        torch.testing.assert_close(_out(loaded, x), _out(m, x), atol=0, rtol=0)
        assert info.metadata["layout"] == layout
        assert (info.arch, info.scale, info.config["nb"], info.config["gc"]) == ("rrdb", 4, 2, 4)

    def test_realesrgan_x2_unshuffle(self, tmp_path):
        torch.manual_seed(2)
        m = RRDBNet(scale=2, nf=8, nb=1, gc=4, n_up=2, unshuffle=2).eval()
        p = tmp_path / "x2.pth"
        torch.save(m.state_dict(), p)
        loaded, info = load_foreign(p, trust_pickle=True)
        x = torch.rand(1, 3, 7, 9)  # odd: padded to the unshuffle multiple and cropped
        y = _out(loaded, x)
        assert info.scale == 2 and y.shape == (1, 3, 14, 18)
        torch.testing.assert_close(y, _out(m, x), atol=0, rtol=0)


def test_weights_fingerprint_tells_weights_apart_not_names():
    from blurwise.models import weights_fingerprint
    from blurwise.models.registry import WEIGHTS_DIR
    from blurwise.routing import find_light_model

    shipped, info = load_model("edsr-s-x2")
    copy, _ = load_model(str(WEIGHTS_DIR / "edsr-s-x2.safetensors"))
    assert weights_fingerprint(shipped) == weights_fingerprint(copy)  # layout and dtype do not matter
    assert find_light_model("edsr-s-x2", 2, copy) == "ebmsr-x2"
    with torch.no_grad():
        next(copy.parameters()).mul_(1.01)  # retrained weights under the shipped name
    assert weights_fingerprint(copy) != weights_fingerprint(shipped)  # the cache follows in-place changes
    with pytest.raises(ModelError, match="these weights differ"):
        find_light_model("edsr-s-x2", 2, copy)


def test_bad_configs_and_metadata_are_model_errors(tmp_path):
    for name, cfg in (("edsr", {"n_feats": -1}), ("edsr", {"scale": 5}), (["edsr"], {})):
        with pytest.raises(ModelError):
            create_model(name, **cfg)
    good = tmp_path / "m.safetensors"
    save_weights(create_model("ebmsr-x2"), good, arch="ebmsr", task="ebmsr", scale=2, config={"scale": 2})
    state, _ = read_weights(good)
    from safetensors.torch import save_file

    for meta, said in (("[1, 2]", "not a blurwise config"), ('{"arch": "ebmsr", "config": [1]}', "not a blurwise"),
                       ('{"arch": "ebmsr", "config": {}, "scale": "x4"}', "not an integer")):  # fmt: skip
        bad = tmp_path / "bad.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(bad), metadata={"blurwise": meta})
        with pytest.raises(ModelError, match=said):
            load_model(bad)
