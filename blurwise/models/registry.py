"""Explicit model registry: architectures, named variants, ``create_model`` and a safe loader.

Architectures register a builder (an ``nn.Module`` class or factory) under an architecture name;
named variants (``edsr-x4``, ``lprn`` ...) bind an architecture to a config, a task and, when
trained weights ship in ``blurwise/models/weights/``, to a ``.safetensors`` file whose metadata
holds the JSON config (architecture, scale, training data, metrics). Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blurwise.errors import ModelError, first_line

WEIGHTS_DIR = Path(__file__).parent / "weights"
META_KEY = "blurwise"  # safetensors metadata key holding the JSON config

TASKS = ("sr", "ebmsr", "deblur", "defocus", "router")


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and what callers need to know about it."""

    name: str
    builder: Callable[..., nn.Module]
    task: str
    defaults: dict[str, Any] = field(default_factory=dict)
    supports_half: bool = True
    in_channels: int = 3


@dataclass(frozen=True)
class Variant:
    """A named, ready-to-use configuration of an architecture (possibly with shipped weights)."""

    name: str
    arch: str
    cfg: dict[str, Any]
    task: str
    scale: int = 1
    weights: str | None = None  # file name inside WEIGHTS_DIR
    default: bool = False  # the default model for (task, scale)
    teacher: str | None = None  # EBM-SR: the heavy model it was distilled from
    description: str = ""


@dataclass
class ModelInfo:
    """Everything a caller needs without reading the network (spandrel-style descriptor)."""

    name: str
    arch: str
    task: str
    scale: int
    in_channels: int
    out_channels: int
    params: int
    macs_per_pixel: float  # multiply-accumulates per *input* pixel (conv/linear layers, see layer_macs)
    supports_half: bool
    input_range: tuple[float, float] = (0.0, 1.0)
    teacher: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (used by ``blurwise models --json`` and the weights metadata)."""
        return asdict(self)


_ARCHS: dict[str, ArchSpec] = {}
_VARIANTS: dict[str, Variant] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add an architecture to the registry (called once per architecture file)."""
    if spec.task not in TASKS:
        raise ValueError(f"unknown task {spec.task!r} for architecture {spec.name!r}")
    _ARCHS[spec.name] = spec
    return spec


def register_variant(variant: Variant) -> Variant:
    """Add a named configuration of a registered architecture."""
    if variant.arch not in _ARCHS:
        raise ValueError(f"variant {variant.name!r} names unregistered architecture {variant.arch!r}")
    _VARIANTS[variant.name] = variant
    return variant


def _ensure_loaded() -> None:
    # The architecture files register themselves when blurwise.models is imported.
    import blurwise.models  # noqa: F401


def list_archs() -> list[str]:
    """Names of all registered architectures."""
    _ensure_loaded()
    return sorted(_ARCHS)


def list_variants() -> list[Variant]:
    """All named variants, sorted by task, scale and name."""
    _ensure_loaded()
    return sorted(_VARIANTS.values(), key=lambda v: (v.task, v.scale, v.name))


def get_arch(name: str) -> ArchSpec:
    """The architecture spec of ``name``, or a one-line ModelError."""
    _ensure_loaded()
    if name not in _ARCHS:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(sorted(_ARCHS))}")
    return _ARCHS[name]


def get_variant(name: str) -> Variant:
    """The named variant ``name``, or a one-line ModelError listing the known names."""
    _ensure_loaded()
    if name not in _VARIANTS:
        raise ModelError(f"unknown model {name!r}; run 'blurwise models' to list them")
    return _VARIANTS[name]


def default_variant(task: str, scale: int = 1) -> Variant:
    """The default model for a task and scale (one per pair), preferring shipped weights."""
    _ensure_loaded()
    cands = [v for v in _VARIANTS.values() if v.task == task and v.scale == scale]
    if not cands:
        raise ModelError(f"no model registered for task {task!r} at scale x{scale}")
    for v in cands:
        if v.default:
            return v
    shipped = [v for v in cands if is_shipped(v)]
    return (shipped or cands)[0]


def is_shipped(variant: Variant) -> bool:
    """Whether the variant's trained weights are in the package."""
    return variant.weights is not None and (WEIGHTS_DIR / variant.weights).is_file()


def create_model(name: str, **cfg: Any) -> nn.Module:
    """Build an untrained model by variant or architecture name, ``cfg`` overriding its config."""
    _ensure_loaded()
    if not isinstance(name, str):
        raise ModelError(f"a model name is a string, not {name!r}")
    if name in _VARIANTS:
        v = _VARIANTS[name]
        spec = _ARCHS[v.arch]
        merged = {**spec.defaults, **v.cfg, **cfg}
    elif name in _ARCHS:
        spec = _ARCHS[name]
        merged = {**spec.defaults, **cfg}
    else:
        raise ModelError(f"unknown model {name!r}; run 'blurwise models' to list them")
    try:
        return spec.builder(**merged)
    except (TypeError, ValueError, RuntimeError) as exc:  # unknown keys, impossible sizes or scales
        raise ModelError(f"bad config for {name!r}: {first_line(exc)}") from None


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (shared weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the conv and linear layers in one forward pass on zeros of ``input_shape``.

    Equal to ``blurwise.metrics.flops.count_macs`` for networks whose MACs are all in such layers
    (every blurwise architecture; a test checks it), and much faster to start.
    """
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.modules.conv._ConvNd):
            k = 1
            for d in mod.kernel_size:
                k *= d
            if mod.transposed:
                total += inp[0].numel() * (mod.out_channels // mod.groups) * k
            else:
                total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
    ]
    p = next(iter(model.parameters()), None)
    x = torch.zeros(input_shape, device=p.device if p is not None else "cpu")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def model_info(
    model: nn.Module,
    *,
    name: str,
    arch: str,
    task: str,
    scale: int,
    config: dict[str, Any] | None = None,
    teacher: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelInfo:
    """Describe ``model``: parameter count and MACs per input pixel (conv/linear layers, 32x32 input).

    MACs come from forward hooks (``layer_macs``), which give what ``FlopCounterMode`` counts for
    these networks without its one-off ~5-10 s warm-up on every CLI start.
    """
    spec = _ARCHS.get(arch)
    in_ch = getattr(model, "in_channels", spec.in_channels if spec else 3)
    size = 32
    macs = layer_macs(model, (1, in_ch, size, size))
    return ModelInfo(
        name=name,
        arch=arch,
        task=task,
        scale=scale,
        in_channels=in_ch,
        out_channels=getattr(model, "out_channels", 3),
        params=count_params(model),
        macs_per_pixel=macs / (size * size),
        supports_half=spec.supports_half if spec else True,
        teacher=teacher,
        config=dict(config or {}),
        metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------- weights I/O


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    arch: str,
    task: str,
    scale: int,
    config: dict[str, Any],
    name: str | None = None,
    teacher: str | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = True,
) -> Path:
    """Write ``model``'s weights as ``.safetensors`` with the JSON config in the metadata.

    fp16 by default (what ships); the file is written to a temp name and renamed.
    """
    from safetensors.torch import save_file

    from blurwise.io.image import usual_permissions

    path = Path(path)
    state = {}
    for k, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.half()
        state[k] = t
    meta = {
        "arch": arch,
        "task": task,
        "scale": scale,
        "config": config,
        "name": name or path.stem,
        "teacher": teacher,
        **(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    usual_permissions(tmp)  # safetensors writes 0600
    tmp.replace(path)
    return path


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (parameter versions, fingerprint)


def weights_fingerprint(weights: nn.Module | dict[str, torch.Tensor]) -> str:
    """A short hash of a model's weights (or a state dict) as they ship (fp16, plain layout).

    Names do not identify weights (a model trained from a shipped config carries the shipped name), so this is
    what ties an EBM-SR to the very teacher it was distilled from. Cached per model until its weights change.
    """
    module = weights if isinstance(weights, nn.Module) else None
    state = module.state_dict() if module is not None else weights
    versions = tuple(t._version for t in state.values())
    hit = _FINGERPRINTS.get(module) if module is not None else None
    if hit is not None and hit[0] == versions:
        return hit[1]
    h = hashlib.sha256()
    for k, t in sorted(state.items()):
        t = t.detach().cpu()
        t = t.half() if t.is_floating_point() else t
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())  # C order whatever the tensor's memory format
    fp = h.hexdigest()[:16]
    if module is not None:
        _FINGERPRINTS[module] = (versions, fp)
    return fp


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a blurwise ``.safetensors`` file: (state dict in fp32, metadata dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise ModelError(f"cannot read weights {path.name}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raise ModelError(f"{path.name} has no blurwise metadata (config); cannot tell its architecture")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelError(f"{path.name}: metadata is not valid JSON") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, meta


def _has_blurwise_meta(path: Path) -> bool:
    """Whether a ``.safetensors`` file carries blurwise metadata (False also for unreadable files)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return META_KEY in (f.metadata() or {})
    except Exception:
        return True  # let read_weights report the error


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    allow_untrained: bool = False,
) -> tuple[nn.Module, ModelInfo]:
    """Load a ready model by registered name or weights path; returns (model in eval mode, info).

    blurwise's own architectures come back with channels-last weights (see :func:`_ready`); published
    models read by the foreign loader keep their layout.

    ``.safetensors`` files carry their config; pickled ``.pth``/``.pt`` files are refused unless
    ``trust_pickle`` (then read with ``torch.load(weights_only=True)`` and matched against the
    known published layouts). ``allow_untrained`` builds a registered variant without weights
    (tests and training only).
    """
    _ensure_loaded()
    key = str(name_or_path)
    if key in _VARIANTS:
        v = _VARIANTS[key]
        if is_shipped(v):
            return load_model(WEIGHTS_DIR / v.weights, device=device)  # type: ignore[operator]
        if not allow_untrained:
            shipped = ", ".join(n for n, o in _VARIANTS.items() if o.task == v.task and is_shipped(o)) or "none"
            raise ModelError(
                f"model {key!r} is registered but its weights are not shipped (shipped {v.task} models: {shipped}; "
                "or pass a .safetensors file)"
            )
        model = create_model(key)
        cfg = {**_ARCHS[v.arch].defaults, **v.cfg}
        info = model_info(model, name=key, arch=v.arch, task=v.task, scale=v.scale, config=cfg, teacher=v.teacher)
        return _ready(model, device), info
    path = Path(key)
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        from blurwise.models.foreign import load_foreign

        return load_foreign(path, device=device, trust_pickle=trust_pickle)
    if path.suffix.lower() != ".safetensors":
        if not path.exists():
            raise ModelError(f"unknown model {key!r}; run 'blurwise models' to list them")
        raise ModelError(f"unsupported weights format {path.suffix!r} (use .safetensors)")
    if path.is_file() and not _has_blurwise_meta(path):  # a published model saved as safetensors
        from blurwise.models.foreign import load_foreign

        return load_foreign(path, device=device)
    state, meta = read_weights(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ModelError(f"{path.name}: metadata is not a blurwise config (a JSON object with a 'config' object)")
    arch = meta.get("arch")
    if arch not in _ARCHS:
        raise ModelError(f"{path.name}: unknown architecture {arch!r} in metadata")
    cfg = meta.get("config", {})
    try:
        meta_scale = int(meta.get("scale", 1))
    except (TypeError, ValueError):
        raise ModelError(f"{path.name}: scale {meta.get('scale')!r} in metadata is not an integer") from None
    model = create_model(arch, **cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path.name}: weights do not match {arch}: {str(exc).splitlines()[0]}") from None
    extra = {k: v for k, v in meta.items() if k not in ("arch", "task", "scale", "config", "name", "teacher")}
    info = model_info(
        model,
        name=meta.get("name", path.stem),
        arch=arch,
        task=meta.get("task", _ARCHS[arch].task),
        scale=meta_scale,
        config=cfg,
        teacher=meta.get("teacher"),
        metadata=extra,
    )
    return _ready(model, device), info


def _ready(model: nn.Module, device: str | torch.device) -> nn.Module:
    """The model on ``device`` in eval mode, its weights in channels-last layout.

    With channels-last weights the oneDNN convolutions skip their layout reorders: on the 2-core CPU the
    shipped models run 1.2-1.4x faster (LPRN at 1280x720: 3.6 s -> 1.8 s with 2 threads), with the same
    outputs to float rounding; inputs may stay in the usual contiguous layout.
    """
    return model.to(device=device, memory_format=torch.channels_last).eval()
