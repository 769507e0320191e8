"""Checkpoints (atomic save, resume) and weight sources for ``init_from`` / teachers.

A training checkpoint is a ``torch.save`` dict with at least ``model``, ``ema``, ``opt`` and ``step``
(the layout of the bootstrap trainer in /work/ckpt, so those runs resume and fine-tune here too),
plus ``scaler``, ``seconds`` and ``config`` when written by this loop. Only tensors, numbers, strings
and containers are stored, so everything loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blurwise.errors import ModelError, first_line


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk or Ctrl-C mid-write leaves the previous checkpoint, and no temp file
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or the bootstrap trainer) safely."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise ModelError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a checkpoint dict")
    return state


def runs_root() -> Path:
    """Default parent of run folders (``$BLURWISE_RUNS``, /work/ckpt/runs, or ~/.cache/blurwise/runs)."""
    env = os.environ.get("BLURWISE_RUNS")
    if env:
        return Path(env)
    if Path("/work/ckpt").is_dir():
        return Path("/work/ckpt/runs")
    return Path.home() / ".cache" / "blurwise" / "runs"


def state_from_source(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights named by ``source``: a ``.pt``/``.pth`` checkpoint (``ema`` preferred, then ``model``,
    ``params_ema``, ``params``, ``state_dict``), a ``.safetensors`` file, ``run:NAME`` (that run's
    ``last.pt``) or a registered model name with shipped weights. Returns (state dict, metadata).
    """
    from blurwise.models.registry import WEIGHTS_DIR, get_variant, is_shipped, read_weights

    if source.startswith("run:"):
        source = str(runs_root() / source[4:] / "last.pt")
    path = Path(os.path.expanduser(source))
    if not path.exists():
        try:
            v = get_variant(source)
        except ModelError:
            raise ModelError(f"weights not found: {source} (a path, run:NAME or a shipped model name)") from None
        if not is_shipped(v):
            raise ModelError(f"model {source!r} has no shipped weights to start from")
        path = WEIGHTS_DIR / v.weights  # type: ignore[operator]
    if path.suffix.lower() == ".safetensors":
        return read_weights(path)
    ck = load_checkpoint(path)
    meta: dict[str, Any] = {"step": ck.get("step"), "config": ck.get("config")}
    for key in ("ema", "model", "params_ema", "params", "state_dict"):
        if isinstance(ck.get(key), dict):
            return ck[key], meta
    if all(isinstance(v, torch.Tensor) for v in ck.values()):
        return ck, meta
    raise ModelError(f"{path.name}: no state dict found (keys: {', '.join(list(ck)[:6])})")


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], exclude: list[str] | None = None) -> list[str]:
    """Copy every tensor of ``state`` whose key and shape match ``model`` (``exclude``: key prefixes).

    Returns the keys copied. Fine-tuning x4 from x2 keeps the body and skips the upsampler that
    changed shape; a state dict with nothing in common is an error, not a silent no-op.
    """
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    keep = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not any(k.startswith(p) for p in (exclude or []))
    }
    if not keep:
        raise ModelError("init_from: no weights match the model (wrong architecture?)")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in keep.items()}})
    return sorted(keep)
