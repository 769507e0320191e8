"""ONNX export: every architecture round-trips through onnxruntime (max abs diff < 1e-3), dynamic shapes, errors."""

from __future__ import annotations

import pytest
import torch

from blurwise.errors import ModelError, OutputError
from blurwise.models import create_model, list_variants
from blurwise.models.registry import is_shipped

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from blurwise.export import TOLERANCE, export_onnx, onnx_max_diff  # noqa: E402

# small configs covering every architecture and code path (the full variants run under -m slow)
SMALL = {
    "safmn": dict(scale=4, dim=8, n_blocks=1),
    "ebmsr": dict(scale=4, channels=8, n_blocks=1),
    "lprn": dict(stages=2, channels=8, blocks=1),
    "lprn-unrolled": dict(stages=2, channels=8, blocks=1, shared=False),
    "lprn-recal-none": dict(stages=2, channels=8, blocks=1, recalib="none"),
    "plainres": dict(channels=8, blocks=1),
    "nafnet": dict(width=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1)),
    "edsr": dict(scale=3, n_feats=8, n_resblocks=1),
}


def _random_input(model: torch.nn.Module, shape: tuple[int, int], batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(batch, model.in_channels, *shape, generator=g)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_architecture_round_trip(tmp_path, key):
    arch = key.split("-")[0]
    torch.manual_seed(0)
    m = create_model(arch, **SMALL[key]).eval()
    out = export_onnx(m, tmp_path / f"{key}.onnx")
    assert out.is_file() and not list(tmp_path.glob(".*tmp"))
    # dynamic batch/height/width, odd sizes included
    for shape, batch in (((24, 20), 1), ((17, 31), 2)):
        assert onnx_max_diff(out, m, _random_input(m, shape, batch)) < TOLERANCE


def test_rrdb_round_trip(tmp_path):
    from blurwise.models.rrdb import RRDBNet

    m = RRDBNet(scale=2, nf=8, nb=1, gc=4, n_up=2, unshuffle=2).eval()
    out = export_onnx(m, tmp_path / "rrdb.onnx")
    assert onnx_max_diff(out, m, _random_input(m, (13, 9))) < TOLERANCE


def test_graph_io(tmp_path):
    m = create_model("lprn", **SMALL["lprn"])
    model = onnx.load(str(export_onnx(m, tmp_path / "m.onnx")))
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "input" and dims == ["batch", 3, "height", "width"]


def test_static_shape(tmp_path):
    m = create_model("ebmsr", **SMALL["ebmsr"]).eval()
    out = export_onnx(m, tmp_path / "s.onnx", dynamic=False)
    assert onnx_max_diff(out, m, _random_input(m, (24, 20))) < TOLERANCE


def test_half(tmp_path):
    m = create_model("lprn", **SMALL["lprn"]).eval()
    out = export_onnx(m, tmp_path / "h.onnx", half=True)
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert next(m.parameters()).dtype == torch.float32  # the caller's model is left alone


def test_by_name_untrained(tmp_path):
    out = export_onnx("ebmsr-x2", tmp_path / "e.onnx", allow_untrained=True)
    assert out.stat().st_size > 1000


def test_errors(tmp_path):
    m = create_model("lprn", **SMALL["lprn"])
    with pytest.raises(OutputError, match="does not exist"):
        export_onnx(m, tmp_path / "missing" / "m.onnx")
    (tmp_path / "x.onnx").write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        export_onnx(m, tmp_path / "x.onnx", overwrite=False)
    assert (tmp_path / "x.onnx").read_bytes() == b"old"
    with pytest.raises(ModelError, match="unknown model"):
        export_onnx("no-such-model", tmp_path / "y.onnx")


def test_output_folder_and_baselines_refused_before_export(tmp_path, monkeypatch):
    import blurwise.export as ex

    monkeypatch.setattr(ex, "_export", lambda *a, **k: pytest.fail("exported anyway"))
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        export_onnx("lprn", tmp_path / "d.onnx", overwrite=True)
    for name in ("bicubic", "identity"):
        with pytest.raises(ModelError, match="baseline without a network"):
            export_onnx(name, tmp_path / "b.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["d.onnx"]


def test_metadata_and_static_output_channels(tmp_path):
    out = export_onnx("lprn", tmp_path / "l.onnx")
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["model"] == "lprn" and meta["task"] == "deblur" and meta["scale"] == "1" and meta["stages"] == "6"
    assert "float32" in meta["layout"] and "dynamic" in meta["layout"] and "blurwise_version" in meta
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "out_height", "out_width"]  # was the exporter's 'Sliceoutput_dim_1'
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ebmsr_metadata_names_the_sigma_channel(tmp_path):
    m = create_model("ebmsr", **SMALL["ebmsr"])
    meta = {p.key: p.value for p in onnx.load(str(export_onnx(m, tmp_path / "e.onnx"))).metadata_props}
    assert meta["in_channels"] == "4" and "sigma" in meta["input"]


def test_caller_module_left_alone(tmp_path):
    m = create_model("lprn", **SMALL["lprn"]).train()
    export_onnx(m, tmp_path / "t.onnx", half=True)
    assert m.training and next(m.parameters()).dtype == torch.float32


def test_disk_full_is_an_output_error(tmp_path, monkeypatch):
    import blurwise.export as ex

    def full(model, x, path, *a, **k):
        path.write_bytes(b"half an onnx file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_export", full)
    with pytest.raises(OutputError, match=r"cannot write .*m\.onnx: No space left on device"):
        export_onnx(create_model("lprn", **SMALL["lprn"]), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_long_name_and_parent_file(tmp_path):
    m = create_model("lprn", **SMALL["lprn"])
    assert export_onnx(m, tmp_path / ("e" * 250 + ".onnx")).is_file()  # its temp file's name must fit too
    with pytest.raises(OutputError, match="cannot write"):
        export_onnx(m, tmp_path / ("e" * 300 + ".onnx"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="output folder is a file"):
        export_onnx(m, tmp_path / "f" / "m.onnx")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mismatch_not_written(tmp_path, monkeypatch):
    import blurwise.export as ex

    monkeypatch.setattr(ex, "onnx_max_diff", lambda *a, **k: 1.0)
    with pytest.raises(ModelError, match="differs"):
        export_onnx(create_model("lprn", **SMALL["lprn"]), tmp_path / "z.onnx")
    assert not list(tmp_path.iterdir())


SHIPPED = [v.name for v in list_variants() if is_shipped(v)]


@pytest.mark.parametrize("name", SHIPPED or [pytest.param("none", marks=pytest.mark.skip(reason="no shipped weights"))])
def test_shipped_models_match(tmp_path, name):
    # acceptance: every shipped model runs in onnxruntime like in PyTorch (max abs diff < 1e-3)
    export_onnx(name, tmp_path / f"{name}.onnx")


KNOWN: dict[str, str] = {}  # variant name -> reason, for architectures that cannot export yet


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(v.name, marks=pytest.mark.xfail(reason=KNOWN[v.name])) if v.name in KNOWN else v.name
        for v in list_variants()
    ],
)
def test_every_variant_untrained(tmp_path, name):
    export_onnx(name, tmp_path / f"{name}.onnx", allow_untrained=True)


@pytest.mark.parametrize(("hidden", "verify"), [("onnx", False), ("onnxruntime", True)])
def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, hidden, verify):
    import sys

    from blurwise.errors import NotAvailableError

    monkeypatch.setitem(sys.modules, hidden, None)  # as in an install without blurwise[onnx]
    m = create_model("edsr", **SMALL["edsr"])
    with pytest.raises(NotAvailableError, match=rf"needs {hidden}: pip install 'blurwise\[onnx\]'"):
        export_onnx(m, tmp_path / "m.onnx", verify=verify)
    assert not list(tmp_path.iterdir())
