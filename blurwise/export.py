"""ONNX export of blurwise models, verified against PyTorch with onnxruntime.

The graph has one input ``input`` (N, C, H, W) and one output ``output``, with batch, height and
width dynamic. With torch 2.13 the TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used
by default: it handles every blurwise architecture at opset 17 in seconds; the torch.export-based
exporter (``exporter="dynamo"``, needs ``onnxscript``) is slower and at opset 17 emits a ``Split``
that onnxruntime rejects for EBM-SR, so it is opt-in.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blurwise.errors import ModelError, NotAvailableError, OutputError, UsageError, first_line
from blurwise.io.image import TEMP_SUFFIX, output_exists, refuse_existing, temp_prefix, usual_permissions

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # max abs difference accepted between onnxruntime and PyTorch (fp32)
HALF_TOLERANCE = 2e-2


def _sample_input(in_channels: int, size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random image in [0, 1]; a 4th channel (EBM-SR's sigma map) gets values in [0, 3] LR px."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, in_channels, *size, generator=g)
    if in_channels == 4:
        x[:, 3] *= 3.0
    return x


def _require(verify: bool) -> None:
    """The optional packages an export needs, checked before any work: one line naming the extra to install
    (without it, torch's exporter fails with "Module onnx is not installed!")."""
    missing = []
    for module in ("onnx", "onnxruntime") if verify else ("onnx",):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise NotAvailableError(f"ONNX export needs {' and '.join(missing)}: pip install 'blurwise[onnx]'")


def _export(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool, exporter: str) -> None:
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"]}
    if exporter == "legacy":
        axes = {0: "batch", 2: "height", 3: "width"}
        dyn = {"input": axes, "output": {0: "batch", 2: "out_height", 3: "out_width"}} if dynamic else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, dynamic_axes=dyn, **names)
        return
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise NotAvailableError("exporter='dynamo' needs onnxscript: pip install onnxscript") from None
    shapes = None
    if dynamic:
        d = torch.export.Dim
        shapes = ({0: d("batch", max=1024), 2: d("height", max=65536), 3: d("width", max=65536)},)
    torch.onnx.export(
        model, (x,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=shapes, external_data=False, **names
    )


_INPUTS = {
    "ebmsr": "RGB in [0, 1] plus the defocus map (Gaussian sigma in input pixels) as a 4th channel",
    "router": "per-patch routing features, channels in the order of blurwise.routing.features.FEATURES",
}
_OUTPUTS = {
    "sr": "RGB, x{scale} the input size; clip to [0, 1]",
    "ebmsr": "RGB, x{scale} the input size; clip to [0, 1]",
    "deblur": "RGB, the input size; clip to [0, 1]",
    "defocus": "Gaussian defocus sigma in input pixels (>= 0), the input size",
    "router": "predicted asinh(dMSE / 2) of the light route per patch",
}


def _metadata(model: nn.Module, info: Any, layout: str) -> dict[str, str]:
    """What a consumer of the ONNX file needs to feed it: model, task, scale, the channels' meaning, config."""
    import json

    from blurwise import __version__

    task = getattr(info, "task", None)
    if task is None:  # an nn.Module given: the task of the registered architecture it is an instance of
        from blurwise.models.registry import get_arch, list_archs

        task = next((get_arch(a).task for a in list_archs() if get_arch(a).builder is type(model)), None)
    scale = int(getattr(info, "scale", getattr(model, "scale", 1)))
    in_ch = int(getattr(model, "in_channels", 3))
    meta = {
        "blurwise_version": __version__,
        "model": str(getattr(info, "name", type(model).__name__)),
        "scale": str(scale),
        "in_channels": str(in_ch),
        "out_channels": str(int(getattr(model, "out_channels", 3))),
        "layout": layout,
        "input": _INPUTS.get(task or "", "RGB in [0, 1]" if in_ch == 3 else f"{in_ch} channels, image in [0, 1]"),
    }
    if task:
        meta["task"] = task
        meta["output"] = _OUTPUTS[task].format(scale=scale) if task in _OUTPUTS else ""
        if getattr(info, "teacher", None):
            meta["teacher"] = str(info.teacher)
        if getattr(info, "config", None):
            meta["config"] = json.dumps(info.config, sort_keys=True, default=str)
    if hasattr(model, "stages") and isinstance(model.stages, int):  # LPRN: the stages baked into the graph
        meta["stages"] = str(model.stages)
    return {k: v for k, v in meta.items() if v}


def _annotate(path: Path, meta: dict[str, str], out_channels: int | None) -> None:
    """Write ``meta`` into the ONNX file's metadata_props and give the output its static channel count (the
    exporter leaves it symbolic after a crop, e.g. LPRN's ``Sliceoutput_dim_1``). Needs the ``onnx`` package."""
    try:
        import onnx
    except ImportError:
        log.warning("onnx is not installed: the file has no blurwise metadata (pip install 'blurwise[onnx]')")
        return
    m = onnx.load(str(path))
    for out in m.graph.output[:1]:
        dims = out.type.tensor_type.shape.dim
        if out_channels and len(dims) == 4 and not dims[1].dim_value:
            dims[1].dim_value = int(out_channels)
    onnx.helper.set_model_props(m, meta)
    onnx.save(m, str(path))


def onnx_max_diff(path: str | Path, model: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between onnxruntime's output for ``x`` and ``model(x)`` (fp32 reference)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise NotAvailableError("verifying ONNX needs onnxruntime: pip install 'blurwise[onnx]'") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    feed = x.numpy().astype(np.float16 if "float16" in inp.type else np.float32)
    out = sess.run(None, {inp.name: feed})[0].astype(np.float32)
    p = next(iter(model.parameters()), None)
    if any(q.dtype != torch.float32 for q in model.parameters()):  # fp32 reference, the caller's model untouched
        model = copy.deepcopy(model).float()
    with torch.no_grad():
        ref = model(x.to(p.device if p is not None else "cpu")).cpu().numpy()
    if out.shape != ref.shape:
        return float("inf")
    return float(np.abs(out - ref).max())


# Opsets each exporter writes these models at: DepthToSpace with the pixel-shuffle order needs 11; the TorchScript
# exporter stops at 20 (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET), the dynamo one starts at 18.
OPSETS = {"legacy": (11, 20), "dynamo": (18, 23)}


def export_onnx(
    name_or_path: str | Path | nn.Module,
    out_path: str | Path,
    *,
    opset: int = 17,
    dynamic: bool = True,
    half: bool = False,
    verify: bool = True,
    exporter: str = "legacy",
    allow_untrained: bool = False,
    trust_pickle: bool = False,
    overwrite: bool = True,
) -> Path:
    """Export a model (registered name, weights path or ``nn.Module``) to ONNX at ``out_path``.

    Dynamic batch/height/width by default; ``half`` stores fp16 weights and I/O. The file is written
    under a temporary name, checked with onnxruntime on a random image of another size than the
    traced one (max abs diff < 1e-3, 2e-2 in fp16), and only then renamed into place. Its
    metadata_props say what the model takes and gives (``model``, ``task``, ``scale``, ``input``,
    ``output``, ``config``, LPRN's ``stages``, ``blurwise_version``; see :func:`_metadata`).
    """
    out_path = Path(out_path)
    output_exists(out_path)  # a name the system refuses (too long): one OutputError line
    if out_path.parent.exists() and not out_path.parent.is_dir():
        raise OutputError(f"output folder is a file: {out_path.parent}")
    if out_path.is_dir():
        raise OutputError(f"{out_path} is a folder; give the .onnx file's name")
    refuse_existing(out_path, overwrite)
    if not out_path.parent.is_dir():
        raise OutputError(f"output folder does not exist: {out_path.parent}")
    if exporter not in ("legacy", "dynamo"):
        raise ModelError(f"unknown exporter {exporter!r} (legacy or dynamo)")
    lo, hi = OPSETS[exporter]
    if not lo <= opset <= hi:  # checked here: torch's own failure is hundreds of lines of graph dump
        raise UsageError(f"opset {opset} is not supported by the {exporter} exporter: use {lo} to {hi}")
    _require(verify)
    info = None
    if isinstance(name_or_path, nn.Module):
        model = copy.deepcopy(name_or_path)  # .cpu().eval().float() below must not move or switch the caller's
    else:
        from blurwise.api import BASELINES
        from blurwise.models.registry import load_model

        if str(name_or_path) in BASELINES:
            raise ModelError(f"{name_or_path!r} is a baseline without a network: there is nothing to export")
        model, info = load_model(name_or_path, allow_untrained=allow_untrained, trust_pickle=trust_pickle)
    model = model.cpu().eval().float()
    in_ch = int(getattr(model, "in_channels", 3))
    x = _sample_input(in_ch, (24, 20))
    reference = model
    if half:
        model = copy.deepcopy(model).half()
        x = x.half()
    shape = "batch, height and width dynamic" if dynamic else f"static shape {tuple(x.shape)}"
    meta = _metadata(reference, info, f"NCHW {'float16' if half else 'float32'}, {shape}")
    try:  # a hidden temp file of its own beside the target: two exports to one path cannot mix their bytes
        fd, name = tempfile.mkstemp(prefix=temp_prefix(out_path.name), suffix=TEMP_SUFFIX, dir=out_path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            _export(model, x, tmp, opset, dynamic, exporter)
        except NotAvailableError:
            raise
        except OSError as exc:  # the disk filled up (or went away) under the export: not the model's fault
            raise OutputError(f"cannot write {out_path}: {exc.strerror or first_line(exc)}") from None
        except Exception as exc:
            raise ModelError(f"ONNX export failed: {first_line(exc)}") from None
        _annotate(tmp, meta, getattr(reference, "out_channels", None))
        if verify:
            test = _sample_input(in_ch, (29, 35) if dynamic else (24, 20), batch=2 if dynamic else 1, seed=1)
            if half:
                test = test.half().float()  # same rounded input for both sides
            diff = onnx_max_diff(tmp, reference, test)
            tol = HALF_TOLERANCE if half else TOLERANCE
            if not diff < tol:
                raise ModelError(f"ONNX output differs from PyTorch by {diff:.3g} (> {tol:g}); not written")
            log.info("ONNX export verified: max abs diff %.2e", diff)
        usual_permissions(tmp)  # mkstemp makes 0600
        refuse_existing(out_path, overwrite)  # appeared while we were exporting
        tmp.replace(out_path)
    except OSError as exc:
        raise OutputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
