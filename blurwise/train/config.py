"""Training configuration: a TOML file read into dataclasses, checked key by key.

One schema serves every task (``sr``, ``distill``, ``deblur``, ``defocus``). Unknown keys, wrong
types and bad values raise a one-line :class:`~blurwise.errors.UsageError` naming the file and key,
so a typo never silently trains the wrong thing. ``overrides`` (from the CLI) use dotted keys
(``{"optim.lr": 1e-3}``) or the short aliases in :data:`ALIASES` (``{"teacher": "x.pth"}``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blurwise.errors import InputError, UsageError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

TASKS = ("sr", "distill", "deblur", "defocus")
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout root; in an installed wheel: site-packages
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the shipped configs, package data


def source_checkout() -> Path | None:
    """The repository root when blurwise runs from a source checkout (editable install, ``PYTHONPATH``);
    ``None`` for an installed wheel, whose :data:`REPO_ROOT` is site-packages. The repo-relative places a run
    writes to (``docs/results/training/``, the shipped weights a config exports to) exist only in a checkout."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else None


def check_default_out(out: Any, shipped: str, flag: str = "--out") -> None:
    """Refuse a developer tool's default output, the package's own ``shipped`` file, outside a source checkout:
    an installed blurwise never rewrites its package (other environments and users share it)."""
    if out is None and source_checkout() is None:
        raise UsageError(f"give {flag} FILE: an installed blurwise does not rewrite its shipped {shipped}")


ALIASES = {
    "teacher": "distill.teacher",
    "iterations": "optim.iterations",
    "init_from": "model.init_from",
    "output": "output.dir",
    "out_dir": "output.dir",
    "export": "output.export",
    "batch": "data.batch",
    "patch": "data.patch",
    "num_workers": "data.num_workers",
    "lr": "optim.lr",
}


@dataclass
class ModelConfig:
    """Which network to train: a registered variant or architecture name plus config overrides."""

    name: str = ""
    cfg: dict[str, Any] = field(default_factory=dict)
    init_from: str = ""  # .pt checkpoint (keys ema/model), .safetensors, registered name, or run:NAME
    init_exclude: list[str] = field(default_factory=list)  # state-dict key prefixes not to copy
    channels_last: bool = False


@dataclass
class DataConfig:
    """Training data: dataset roots (relative to the shared data folder), crops, batches, seed."""

    dataset: str = ""  # class in blurwise.data.datasets ("" = the task's default)
    roots: list[str] = field(default_factory=list)  # image folders/files (relative to the shared data folder)
    frames: str = ""  # deblur: folder of consecutive-frame sequences (GoPro-style), relative to the data folder
    holdout: list[str] = field(default_factory=list)  # images (globs) under roots kept out of training, for val
    holdout_frames: int = 0  # deblur: last N frames of every sequence kept out of training, for val
    scale: int = 1
    patch: int = 96  # target-side (HR / sharp) crop size in pixels
    batch: int = 16
    augment: bool = True
    seed: int = 0
    num_workers: int = 0
    max_images: int = 0  # 0 = all; the smoke mode uses a handful
    length: int = 0  # virtual epoch length; 0 = iterations x batch x world size
    input_key: str = ""  # item key fed to the model ("" = task default)
    target_key: str = ""  # item key the loss compares to ("" = task default)
    cache_dir: str = "auto"  # render cache for datasets that take one ("auto" = <runs>/render_cache, "" = memory)
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed through to the dataset class


@dataclass
class OptimConfig:
    """Adam/AdamW with linear warm-up then cosine decay to ``min_lr`` over ``iterations`` steps."""

    name: str = "adam"  # adam | adamw
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup: int = 0
    min_lr: float = 1e-6
    iterations: int = 1000
    grad_clip: float = 0.0  # max global grad norm; 0 = off


LOSS_KINDS = ("l1", "charbonnier", "l2")


@dataclass
class LossConfig:
    """Pixel loss plus optional SSIM / frequency terms; per-stage weights for multi-stage models."""

    kind: str = "l1"  # l1 | charbonnier | l2 (mean squared error: what PSNR measures, for a last fine-tune)
    eps: float = 1e-3  # Charbonnier epsilon
    ssim: float = 0.0  # weight of (1 - SSIM)
    freq: float = 0.0  # weight of the L1 distance between 2-D FFTs
    stages: bool = False  # model(x, return_all=True) -> list of stage outputs, loss on each
    stage_weights: list[float] = field(default_factory=list)  # [] = equal weights
    distill: dict[str, float] = field(default_factory=dict)  # weights for ebmsr.distill_loss ({} = its defaults)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (what validation and export use)."""

    decay: float = 0.999
    enabled: bool = True


@dataclass
class ValConfig:
    """Periodic validation: Set5 (SR, distill) or held-out training-side pairs (deblur, defocus)."""

    every: int = 250
    kind: str = "auto"  # auto | set5 | set5-defocus | holdout | none
    set: str = "sr/test/Set5"
    max_images: int = 0
    crop: int = 0  # centre-crop the HR/target to this size (0 = full image)
    n: int = 8  # holdout: number of pairs
    sigmas: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0])  # set5-defocus HR sigmas
    kwargs: dict[str, Any] = field(default_factory=dict)  # holdout: extra dataset arguments (e.g. the split)


@dataclass
class TrainConfig:
    """Run mechanics: precision, logging and checkpoint intervals, CPU threads."""

    amp: str = "auto"  # auto | bf16 | fp16 | off (CUDA); on a CPU "bf16" autocasts to bf16, anything else is fp32
    log_every: int = 10
    checkpoint_every: int = 250
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    deterministic: bool = False
    # wall-clock budget of this invocation in seconds (0 = off): the cosine schedule runs over
    # max(step / iterations, elapsed / budget) and the run stops and exports when either reaches 1,
    # so a run on a lent GPU ends on time whatever its speed
    time_budget: float = 0.0


@dataclass
class DistillConfig:
    """Distillation: the frozen teacher (registered name or weights path)."""

    teacher: str = ""
    trust_pickle: bool = False
    cache: int = 0  # > 0: pool of this many crops whose teacher outputs are computed once


@dataclass
class OutputConfig:
    """Where checkpoints, logs and the exported weights go."""

    dir: str = ""  # "" = $BLURWISE_RUNS/NAME, else /work/ckpt/runs/NAME if /work/ckpt exists, else ~/.cache
    # exported .safetensors ("" = <dir>/NAME.safetensors; relative: to the source checkout's root). A path inside
    # the package's shipped-weights folder is written only by a --ship run; other runs export into <dir>
    export: str = ""
    export_name: str = ""  # model name stored in the metadata ("" = export file stem)
    docs: bool = True  # training curve <dir>/curve.png; a --ship run also writes docs/results/training/NAME.{csv,png}


@dataclass
class Config:
    """A whole training run, as read from one TOML file."""

    name: str
    task: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    val: ValConfig = field(default_factory=ValConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    description: str = ""
    smoke: dict[str, Any] = field(default_factory=dict)  # dotted overrides applied by --smoke
    source: str = ""  # the file it came from
    raw: dict[str, Any] = field(default_factory=dict)  # the TOML as read (+ overrides), for metadata

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (stored in checkpoints and in the exported weights' metadata)."""
        d = dataclasses.asdict(self)
        d.pop("raw", None)
        return d

    def run_dir(self) -> Path:
        """The run folder: checkpoints, CSV log; outside the repo unless configured otherwise."""
        if self.output.dir:
            return Path(os.path.expanduser(self.output.dir))
        env = os.environ.get("BLURWISE_RUNS")
        if env:
            return Path(env) / self.name
        if Path("/work/ckpt").is_dir():
            return Path("/work/ckpt/runs") / self.name
        return Path.home() / ".cache" / "blurwise" / "runs" / self.name


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "ema": EMAConfig,
    "val": ValConfig,
    "train": TrainConfig,
    "distill": DistillConfig,
    "output": OutputConfig,
}
TOP_KEYS = {"name": str, "task": str, "seed": int, "description": str, "smoke": dict}

SMOKE_DEFAULTS: dict[str, Any] = {
    "optim.iterations": 24,
    "optim.warmup": 0,
    "data.batch": 4,
    "data.max_images": 4,
    "data.length": 8,  # a tiny subset seen repeatedly, so the loss drops reliably within the few steps
    "data.num_workers": 0,
    "val.every": 12,
    "val.max_images": 1,
    "val.crop": 64,
    "val.n": 2,
    "train.log_every": 1,
    "train.checkpoint_every": 12,
    "train.deterministic": True,
    "data.cache_dir": "",
    "output.docs": False,
    "output.export": "",
}


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float allowed) or raise a one-line UsageError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except UsageError:
                continue
        raise UsageError(f"{where}: {value!r} has the wrong type")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list, got {type(value).__name__}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a table, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UsageError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _unknown(what: str, key: str, known: typing.Iterable[str], label: str = "known", prefix: str = "") -> str:
    """``unknown key 'lrr' (did you mean 'lr'?; known: ...)``: the one-line text of an unknown name."""
    known = sorted(known)
    close = difflib.get_close_matches(key.removeprefix(prefix), known, n=1)
    hint = f"did you mean {prefix + close[0]!r}?; " if close else ""
    return f"unknown {what} {key!r} ({hint}{label}: {', '.join(known)})"


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise UsageError(f"{where}: {_unknown('key', key, names)}")
        kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _table_fields(section: str) -> set[str]:
    """The fields of ``[section]`` that are tables themselves (``model.cfg``, ``data.kwargs``, ...)."""
    hints = typing.get_type_hints(SECTIONS[section])
    return {k for k, t in hints.items() if typing.get_origin(t) is dict}


def check_key(key: str, where: str) -> list[str]:
    """The parts of a dotted override key (aliases resolved), or a one-line UsageError naming the key.

    ``section.key`` (``optim.lr``), a top-level key (``name``, ``seed``), or ``section.table.key`` into a
    table-valued field (``model.cfg.n_feats``, ``data.kwargs.synth_fraction``).
    """
    full = ALIASES.get(key, key)
    parts = full.split(".")
    if len(parts) == 1:
        if parts[0] in SECTIONS:
            raise UsageError(f"{where}: {full!r} is a section; set its keys one by one ({full}.KEY=VALUE)")
        if parts[0] not in TOP_KEYS:
            raise UsageError(f"{where}: {_unknown('key', full, [*TOP_KEYS, *ALIASES], 'top-level keys and aliases')}")
        return parts
    if parts[0] not in SECTIONS:
        raise UsageError(f"{where}: {_unknown('section', parts[0], SECTIONS, 'sections')} in {full!r}")
    names = {f.name for f in dataclasses.fields(SECTIONS[parts[0]])}
    if parts[1] not in names:
        sec = parts[0]
        raise UsageError(f"{where}: {_unknown('key', full, names, f'[{sec}] keys', prefix=f'{sec}.')}")
    if len(parts) == 2 or (len(parts) == 3 and parts[1] in _table_fields(parts[0]) and parts[2]):
        return parts
    raise UsageError(f"{where}: unknown key {full!r} ({parts[0]}.{parts[1]} is not a table)")


def _set_dotted(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = check_key(key, where)
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise UsageError(f"{where}: {part} is not a table")
    table[parts[-1]] = value


def _value(text: str) -> Any:
    """A ``--set`` value: a JSON or TOML literal (``1e-3``, ``true``, ``[0.9, 0.99]``, ``{n_feats = 32}``), or
    else the text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, KeyError):
        return text


CWD_PATH_KEYS = ("output.export", "output.dir")  # relative paths given on the command line: to the current folder


def parse_overrides(
    items: typing.Iterable[str], *, teacher: str | None = None, trust_pickle: bool = False
) -> dict[str, Any]:
    """The command line's ``--set KEY=VALUE`` options as overrides, every key checked (a typo is a one-line
    UsageError naming it, never ignored). ``output.export`` / ``output.dir`` given relative are taken from the
    current folder (in a config file, a relative ``output.export`` is relative to the source checkout's root).
    ``teacher`` / ``trust_pickle``: the ``--teacher`` / ``--trust-pickle`` flags, which win over ``--set``."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-3), got {item!r}")
        full = ".".join(check_key(key, "--set"))
        value = _value(text.strip())
        if value is None:
            raise UsageError(f"--set {key}: null is not a config value")
        if full in CWD_PATH_KEYS and isinstance(value, str) and value:
            value = os.path.abspath(os.path.expanduser(value))
        overrides[key] = value
    if teacher:
        overrides["teacher"] = teacher
    if trust_pickle:
        overrides["distill.trust_pickle"] = True
    return overrides


def run_options(args: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``blurwise.train.run`` / ``run_many`` from the training flags that ``blurwise
    train`` and ``python -m blurwise.train`` both take (``args``: their parsed flags), so a flag means the same
    in both entry points."""
    return {
        "device": args.device,
        "smoke": args.smoke,
        "resume": not args.no_resume,
        "overrides": overrides,
        "ship": args.ship,
    }


TASK_CONFIGS = {"sr": "sr_edsr-s_x4", "distill": "distill_ebmsr_x4", "deblur": "deblur_lprn", "defocus": "defocus"}


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, the name of a shipped config (``blurwise/configs/``, installed with the
    package), or a task name (``sr``, ``distill``, ``deblur``, ``defocus``) meaning that task's shipped-model
    config. ``configs/NAME.toml``, where the shipped configs lived before they became package data, still
    finds them when no such file exists."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_file():
        return p
    if p.is_dir():
        raise InputError(f"{path} is a folder, not a TOML config file")
    if str(path) in TASK_CONFIGS:
        p = Path(TASK_CONFIGS[str(path)])
    if p.parent in (Path("."), Path("configs")):
        for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.toml"):
            if cand.is_file():
                return cand
    raise InputError(f"config file not found: {path}")


def parse_config(
    raw: dict[str, Any], *, source: str = "<config>", smoke: bool = False, overrides: dict[str, Any] | None = None
) -> Config:
    """Build a :class:`Config` from a TOML-like dict, applying ``--smoke`` and CLI overrides."""
    raw = copy.deepcopy(raw)
    where = Path(source).name
    if not raw and not overrides:
        raise UsageError(f"{where}: the config is empty (it needs at least task and [model] name)")
    for key in raw:
        if key not in SECTIONS and key not in TOP_KEYS:
            raise UsageError(f"{where}: {_unknown('section or key', key, [*SECTIONS, *TOP_KEYS])}")
    smoke_table = raw.get("smoke", {})
    if not isinstance(smoke_table, dict):
        raise UsageError(f"{where}: [smoke] must be a table of dotted overrides")
    for key in smoke_table:  # checked on every run, so a typo there does not wait for the next --smoke
        check_key(key, f"{where} [smoke]")
    if smoke:
        for key, value in {**SMOKE_DEFAULTS, **smoke_table}.items():
            _set_dotted(raw, key, value, f"{where} [smoke]")
    for key, value in (overrides or {}).items():
        check_key(key, f"{where} (override)")
        if value is not None:  # None: "not given" (API callers pass e.g. teacher=None)
            _set_dotted(raw, key, value, f"{where} (override)")
    task = raw.get("task")
    if task not in TASKS:
        raise UsageError(f"{where}: task must be one of {', '.join(TASKS)}, got {task!r}")
    if "model" not in raw or not isinstance(raw["model"], dict) or not raw["model"].get("name"):
        raise UsageError(f"{where}: [model] name is required")
    sections = {name: _build(cls, raw.get(name, {}), f"{where} [{name}]") for name, cls in SECTIONS.items()}
    top = {k: _check_type(raw[k], t, f"{where} {k}") for k, t in TOP_KEYS.items() if k in raw}
    top.setdefault("name", Path(source).stem)
    cfg = Config(**top, **sections, source=str(source), raw=raw)
    _validate(cfg, where)
    return cfg


def _validate(cfg: Config, where: str) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise UsageError(f"{where}: {msg}")

    need(cfg.loss.kind in LOSS_KINDS, f"loss.kind must be one of {', '.join(LOSS_KINDS)}, got {cfg.loss.kind!r}")
    need(cfg.optim.name in ("adam", "adamw"), f"optim.name must be adam or adamw, got {cfg.optim.name!r}")
    need(cfg.optim.iterations > 0, "optim.iterations must be > 0")
    need(cfg.optim.lr > 0, "optim.lr must be > 0")
    need(len(cfg.optim.betas) == 2, "optim.betas must hold two numbers")
    need(
        0 <= cfg.optim.warmup < cfg.optim.iterations or cfg.optim.warmup == 0,
        f"optim.warmup ({cfg.optim.warmup}) must be >= 0 and < optim.iterations ({cfg.optim.iterations})",
    )
    need(cfg.optim.min_lr >= 0, "optim.min_lr must be >= 0")
    need(cfg.data.batch > 0 and cfg.data.patch > 0, "data.batch and data.patch must be > 0")
    for key in ("num_workers", "max_images", "length"):
        need(getattr(cfg.data, key) >= 0, f"data.{key} must be >= 0")
    need(cfg.train.threads >= 0, "train.threads must be >= 0")
    need(cfg.train.time_budget >= 0, "train.time_budget must be >= 0 seconds (0 = no budget)")
    need(cfg.train.log_every > 0, "train.log_every must be > 0")
    need(cfg.val.n > 0 and cfg.val.max_images >= 0, "val.n must be > 0 and val.max_images >= 0")
    export = cfg.output.export
    need(not export or export.lower().endswith(".safetensors"), f"output.export must end in .safetensors: {export}")
    need(cfg.data.scale in (1, 2, 3, 4, 8), f"data.scale must be 1, 2, 3, 4 or 8, got {cfg.data.scale}")
    need(0.0 <= cfg.ema.decay < 1.0, "ema.decay must be in [0, 1)")
    need(cfg.train.amp in ("auto", "bf16", "fp16", "off"), "train.amp must be auto, bf16, fp16 or off")
    need(cfg.val.kind in ("auto", "set5", "set5-defocus", "holdout", "none"), f"val.kind {cfg.val.kind!r} unknown")
    need(cfg.val.every > 0 and cfg.train.checkpoint_every > 0, "val.every and train.checkpoint_every must be > 0")
    need(cfg.task != "distill" or bool(cfg.distill.teacher), "distill needs a teacher ([distill] teacher or --teacher)")
    need(cfg.task not in ("sr", "distill") or cfg.data.scale > 1, f"task {cfg.task} needs data.scale > 1")
    if cfg.loss.stage_weights:
        need(all(w >= 0 for w in cfg.loss.stage_weights), "loss.stage_weights must be >= 0")


def load_config(path: str | Path, *, smoke: bool = False, overrides: dict[str, Any] | None = None) -> Config:
    """Read a training config TOML (path, or the name of a shipped config) into a checked :class:`Config`."""
    p = resolve_config_path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p.name}: invalid TOML: {str(exc).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config {p}: {exc.__class__.__name__}") from None
    return parse_config(raw, source=str(p), smoke=smoke, overrides=overrides)
