"""Bring-your-own SR weights: load published EDSR and RRDB/ESRGAN state dicts, detected by their keys.

Pickled files (``.pth``/``.pt``/``.ckpt``/``.bin``) are refused unless the caller trusts them, and even
then read with ``torch.load(weights_only=True)`` (tensors and plain containers only, no code).
``.safetensors`` files without blurwise metadata are detected the same way. Supported layouts:

- EDSR, official (``head.0``, ``body.N.body.0``, ``tail.0.K``, ``sub_mean``/``add_mean``) and BasicSR
  (``conv_first``, ``body.N.conv1``, ``conv_after_body``, ``upsample.K``, ``conv_last``); models trained
  on [0, 255] are converted exactly to [0, 1] by dividing every bias by 255 (the network is positively
  homogeneous in its input and biases).
- RRDBNet, BasicSR/Real-ESRGAN (``body.N.rdb1.conv1``), ESRGAN (``RRDB_trunk.N.RDB1.conv1``) and the
  original ESRGAN sequential layout (``model.1.sub.N.RDB1.conv1.0``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blurwise.errors import ModelError, first_line
from blurwise.models.registry import model_info

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator")
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a bare state dict from ``.safetensors`` or (if trusted) a pickled file, unwrapping containers."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as exc:
            raise ModelError(f"cannot read weights {path.name}: {str(exc).splitlines()[0]}") from None
    else:
        if not trust_pickle:
            raise ModelError(f"refusing to unpickle {path.name}; pass --trust-pickle if you trust this file")
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            import pickle

            why = first_line(exc)
            if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in why:
                why = "it holds pickled Python objects (a whole model?), not only tensors; save its state_dict()"
            raise ModelError(f"cannot load {path.name} as plain weights (weights_only=True): {why}") from None
    for _ in range(3):  # e.g. {"params_ema": {...}} or {"model": {"state_dict": {...}}}
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path.name} does not hold a state dict of tensors")
    return {re.sub(r"^(module\.)+", "", k): v.float() if v.is_floating_point() else v for k, v in obj.items()}


# --------------------------------------------------------------------------- EDSR


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    """Number of distinct integers N matching ``pattern`` (a regex with one group) in the keys."""
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def _edsr_from_basicsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    nb = _count(state, r"body\.(\d+)\.conv1\.weight")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        k = re.sub(r"^conv_first\.", "head.0.", k)
        k = re.sub(r"^body\.(\d+)\.conv([12])\.", lambda m: f"body.{m[1]}.body.{2 * (int(m[2]) - 1)}.", k)
        k = re.sub(r"^conv_after_body\.", f"body.{nb}.", k)
        k = re.sub(r"^upsample\.(\d+)\.", r"tail.0.\1.", k)
        k = re.sub(r"^conv_last\.", "tail.1.", k)
        out[k] = v
    mean = torch.tensor(DIV2K_MEAN)  # BasicSR: (x - mean) * 255 -> net -> / 255 + mean
    out["sub_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    out["sub_mean.bias"] = -mean * 255.0
    out["add_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    out["add_mean.bias"] = mean * 255.0
    return out


def _load_edsr(state: dict[str, torch.Tensor], basicsr: bool) -> tuple[nn.Module, dict[str, Any], str]:
    from blurwise.models.edsr import EDSR

    if basicsr:
        state = _edsr_from_basicsr(state)
    n_feats = state["head.0.weight"].shape[0]
    nb = _count(state, r"body\.(\d+)\.body\.0\.weight")
    ups = sorted(int(m[1]) for k in state if (m := re.match(r"tail\.0\.(\d+)\.weight", k)))
    if not ups:
        raise ModelError("EDSR weights without an upsampler (tail.0.*)")
    scale = 3 if state[f"tail.0.{ups[0]}.weight"].shape[0] == 9 * n_feats else 2 ** len(ups)
    cfg = {"scale": scale, "n_feats": n_feats, "n_resblocks": nb, "res_scale": 0.1 if n_feats >= 256 else 1.0}
    rng = 255.0 if "sub_mean.bias" in state and state["sub_mean.bias"].abs().max() > 2.0 else 1.0
    if rng != 1.0:
        state = {k: v / rng if k.endswith(".bias") else v for k, v in state.items()}
    model = EDSR(**cfg)
    if "sub_mean.weight" not in state:
        log.warning("EDSR weights without sub_mean/add_mean; assuming inputs in [0, 1] with the DIV2K mean")
        state = {**state, **{k: v for k, v in model.state_dict().items() if "_mean" in k}}
    return model, {**cfg, "_load": state}, "basicsr" if basicsr else "official"


# --------------------------------------------------------------------------- RRDB


def _rrdb_rename(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Map the ESRGAN key layouts onto BasicSR's names."""
    if "conv_first.weight" in state and any(k.startswith("body.") for k in state):
        return state, "basicsr"
    if "conv_first.weight" in state:  # ESRGAN 2019 layout
        ren = {"RRDB_trunk.": "body.", "trunk_conv.": "conv_body.", "upconv": "conv_up", "HRconv.": "conv_hr."}
        out = {}
        for k, v in state.items():
            for a, b in ren.items():
                k = k.replace(a, b)
            out[re.sub(r"\.RDB(\d)\.", r".rdb\1.", k)] = v
        return out, "esrgan"
    # original sequential layout: model.0 conv_first, model.1.sub.N RRDBs + trunk conv, then convs
    nb = _count(state, r"model\.1\.sub\.(\d+)\.RDB1")
    tops = sorted({int(m[1]) for k in state if (m := re.match(r"model\.(\d+)\.weight", k))} - {0})
    if len(tops) < 3:
        raise ModelError("unrecognised ESRGAN sequential layout")
    names = {tops[-1]: "conv_last", tops[-2]: "conv_hr", **{i: f"conv_up{j + 1}" for j, i in enumerate(tops[:-2])}}
    out = {}
    for k, v in state.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := re.match(rf"model\.1\.sub\.{nb}\.(weight|bias)", k):
            out[f"conv_body.{m[1]}"] = v
        elif m := re.match(r"model\.(\d+)\.(weight|bias)", k):
            out[f"{'conv_first' if m[1] == '0' else names[int(m[1])]}.{m[2]}"] = v
    return out, "esrgan-old"


def _load_rrdb(state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, Any], str]:
    from blurwise.models.rrdb import RRDBNet

    state, layout = _rrdb_rename(state)
    nf, in_ch = state["conv_first.weight"].shape[:2]
    if state["conv_last.weight"].shape[0] != 3 or in_ch not in (3, 12, 48):
        raise ModelError("only RGB RRDB models are supported")
    unshuffle = {3: 1, 12: 2, 48: 4}[in_ch]
    n_up = _count(state, r"conv_up(\d+)\.weight")
    cfg = {
        "scale": 2**n_up // unshuffle,
        "nf": nf,
        "nb": _count(state, r"body\.(\d+)\.rdb1\.conv1\.weight"),
        "gc": state["body.0.rdb1.conv1.weight"].shape[0],
        "n_up": n_up,
        "unshuffle": unshuffle,
    }
    return RRDBNet(**cfg), {**cfg, "_load": state}, layout


def detect_arch(state: dict[str, torch.Tensor]) -> str | None:
    """Which published layout ``state`` follows: ``edsr``, ``edsr-basicsr``, ``rrdb`` or None."""
    keys = set(state)
    if {"head.0.weight", "tail.0.0.weight"} <= keys and any(re.match(r"body\.\d+\.body\.0\.weight", k) for k in keys):
        return "edsr"
    if {"conv_first.weight", "conv_after_body.weight", "body.0.conv1.weight"} <= keys:
        return "edsr-basicsr"
    if any(re.match(r"(body|RRDB_trunk)\.0\.(rdb|RDB)1\.conv1\.weight", k) for k in keys):
        return "rrdb"
    if any(re.match(r"model\.1\.sub\.0\.RDB1\.conv1\.0\.weight", k) for k in keys):
        return "rrdb"
    return None


def load_foreign(path: str | Path, device: str | torch.device = "cpu", trust_pickle: bool = False):
    """Load a user's EDSR or RRDB/ESRGAN weights as a blurwise SR model: (model in eval mode, ModelInfo)."""
    path = Path(path)
    state = read_state_dict(path, trust_pickle=trust_pickle)
    kind = detect_arch(state)
    if kind is None:
        sample = ", ".join(sorted(state)[:3])
        raise ModelError(f"{path.name}: unrecognised architecture (keys {sample}, ...); supported: EDSR, RRDB/ESRGAN")
    if kind.startswith("edsr"):
        model, cfg, layout = _load_edsr(state, basicsr=kind == "edsr-basicsr")
        arch = "edsr"
    else:
        model, cfg, layout = _load_rrdb(state)
        arch = "rrdb"
    loaded = cfg.pop("_load")
    try:
        model.load_state_dict(loaded, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path.name}: weights do not match {arch}: {str(exc).splitlines()[0]}") from None
    meta = {"source": "foreign", "layout": layout, "file": path.name}
    info = model_info(model, name=path.stem, arch=arch, task="sr", scale=cfg["scale"], config=cfg, metadata=meta)
    return model.to(device).eval(), info
