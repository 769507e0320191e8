"""ONNX export of blurwise models, verified against PyTorch with onnxruntime.

The graph has one input ``input`` (N, C, H, W) and one output ``output``, with batch, height and
width dynamic. With torch 2.13 the TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used
by default: it handles every blurwise architecture at opset 17 in seconds; the torch.export-based
exporter (``exporter="dynamo"``, needs ``onnxscript``) is slower and at opset 17 emits a ``Split``
that onnxruntime rejects for EBM-SR, so it is opt-in.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blurwise.errors import ModelError, NotAvailableError, OutputError, UsageError, first_line

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
    with torch.no_grad():
        ref = model.float()(x.to(p.device if p is not None else "cpu")).cpu().numpy()
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
    traced one (max abs diff < 1e-3, 2e-2 in fp16), and only then renamed into place.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputError(f"{out_path} exists (use --overwrite)")
    if not out_path.parent.is_dir():
        raise OutputError(f"output folder does not exist: {out_path.parent}")
    if exporter not in ("legacy", "dynamo"):
        raise ModelError(f"unknown exporter {exporter!r} (legacy or dynamo)")
    lo, hi = OPSETS[exporter]
    if not lo <= opset <= hi:  # checked here: torch's own failure is hundreds of lines of graph dump
        raise UsageError(f"opset {opset} is not supported by the {exporter} exporter: use {lo} to {hi}")
    _require(verify)
    if isinstance(name_or_path, nn.Module):
        model = name_or_path
    else:
        from blurwise.models.registry import load_model

        model, _ = load_model(name_or_path, allow_untrained=allow_untrained, trust_pickle=trust_pickle)
    model = model.cpu().eval().float()
    in_ch = int(getattr(model, "in_channels", 3))
    x = _sample_input(in_ch, (24, 20))
    reference = model
    if half:
        import copy

        model = copy.deepcopy(model).half()
        x = x.half()
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        try:
            _export(model, x, tmp, opset, dynamic, exporter)
        except NotAvailableError:
            raise
        except Exception as exc:
            raise ModelError(f"ONNX export failed: {first_line(exc)}") from None
        if verify:
            test = _sample_input(in_ch, (29, 35) if dynamic else (24, 20), batch=2 if dynamic else 1, seed=1)
            if half:
                test = test.half().float()  # same rounded input for both sides
            diff = onnx_max_diff(tmp, reference, test)
            tol = HALF_TOLERANCE if half else TOLERANCE
            if not diff < tol:
                raise ModelError(f"ONNX output differs from PyTorch by {diff:.3g} (> {tol:g}); not written")
            log.info("ONNX export verified: max abs diff %.2e", diff)
        tmp.replace(out_path)
    except OSError as exc:
        raise OutputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
