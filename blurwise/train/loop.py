"""The one training loop for every task: sr, distill (EBM-SR from a teacher), deblur (LPRN), defocus.

``run(config)`` builds the model, data, optimiser (Adam/AdamW, warm-up + cosine), EMA, mixed
precision (CUDA) and DDP (torchrun), then trains for ``optim.iterations`` steps with periodic
validation, atomic checkpoints and a CSV/PNG training curve, resumes from the run folder's
``last.pt`` when one exists, and finally exports the EMA weights as a blurwise ``.safetensors``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blurwise.errors import ModelError, OutputError, UsageError
from blurwise.train import config as tconfig
from blurwise.train import dist
from blurwise.train.checkpoint import load_checkpoint, load_matching, save_checkpoint, state_from_source
from blurwise.train.config import CONFIG_DIR, REPO_ROOT, Config, load_config
from blurwise.train.data import TUPLE_KEYS as _TUPLE_KEYS
from blurwise.train.data import (
    ItemAdapter,
    ValItem,
    build_dataset,
    dataset_name,
    holdout_items,
    make_loader,
    set5_defocus_items,
    set5_items,
    task_keys,
    val_kind,
)
from blurwise.train.ema import EMA
from blurwise.train.losses import distill_fallback, pixel_loss, stage_loss

log = logging.getLogger("blurwise.train")

CSV_FIELDS = ["step", "loss", "lr", "val_psnr", "seconds"]
REGISTRY_TASK = {"sr": "sr", "distill": "ebmsr", "deblur": "deblur", "defocus": "defocus"}


@dataclass
class RunResult:
    """What a run did: steps, logged losses, validation history, where its files are."""

    name: str
    start_step: int
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)
    run_dir: Path | None = None
    checkpoint: Path | None = None
    export: Path | None = None
    seconds: float = 0.0
    val_mae: bool = False  # the validation figures are minus the mean absolute error of a sigma map

    @property
    def final_val(self) -> float | None:
        """The last validation figure (PSNR in dB; negative MAE for sigma maps)."""
        return self.val[-1][1] if self.val else None

    def summary(self) -> str:
        """One line for the command line: steps, last validation, run folder, exported weights."""
        v = self.final_val
        val = "" if v is None else f", val MAE {-v:.3f} px" if self.val_mae else f", val PSNR {v:.3f} dB"
        where = f"run dir {self.run_dir}; weights {self.export or '(not exported: run not finished)'}"
        return f"{self.name}: steps {self.start_step} -> {self.steps}{val}; {where}"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after a step; its message says where the checkpoint that resumes it is."""


class _StopOnSigint:
    """While active (main thread, single process): the first Ctrl-C only asks the loop to stop after the
    current step (so a checkpoint of a consistent state can be written); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

    @contextlib.contextmanager
    def active(self, enabled: bool = True) -> Iterator[_StopOnSigint]:
        """Install the handler for the ``with`` block (a no-op outside the main thread or when not ``enabled``)."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        try:
            previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main interpreter's thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def export_target(cfg: Config, run_dir: Path, *, ship: bool) -> tuple[Path, str | None]:
    """Where a run's weights are exported, and a note when ``output.export`` was not used: the one place that
    decides it (training, ``--export-only``).

    ``output.export`` (a relative path is relative to the source checkout's root) is used as given, except a
    path in the package's shipped-weights folder, which only a ``ship`` run replaces: any other run exports to
    ``<run folder>/NAME.safetensors``, so training from a shipped config never overwrites the shipped model.
    An installed blurwise (no source checkout) has no root for a relative path: that export goes to the run
    folder too, and ``ship`` is refused (site-packages is not rewritten).
    """
    from blurwise.models.registry import WEIGHTS_DIR

    root = tconfig.source_checkout()
    if ship and root is None:
        raise UsageError(
            "--ship replaces the shipped weights of a source checkout; an installed blurwise does not rewrite "
            "its package (without --ship the weights go to the run folder)"
        )
    default = run_dir / f"{cfg.name}.safetensors"
    if not cfg.output.export:
        return default, None
    out = Path(os.path.expanduser(cfg.output.export))
    relative = not out.is_absolute()
    if relative:  # installed: REPO_ROOT is site-packages, so the shipped configs' path still names the package's
        out = (root if root is not None else REPO_ROOT) / out
    if not ship and out.resolve().is_relative_to(WEIGHTS_DIR.resolve()):
        return default, f"the shipped weights {out.name} are kept (--ship replaces them); exporting to {default}"
    if relative and root is None:
        return default, (
            f"output.export {cfg.output.export} is relative to a source checkout, which an installed blurwise "
            f"does not have; exporting to {default}"
        )
    return out, None


def _check_writable(path: Path) -> None:
    """A one-line OutputError now, not after hours of training, when ``path`` cannot be written."""
    if path.is_dir():
        raise OutputError(f"export path is a folder: {path}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the exported weights to {path}: {parent} is not a writable folder")


def lr_at(step: int, cfg: Config, progress: float | None = None) -> float:
    """Learning rate at ``step``: linear warm-up to ``optim.lr``, then cosine down to ``optim.min_lr``.

    ``progress`` (0..1, from a time budget) replaces the step fraction of the cosine part when larger.
    """
    o = cfg.optim
    if o.warmup and step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    t = (step - o.warmup) / max(1, o.iterations - o.warmup)
    if progress is not None:
        t = max(t, progress)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def model_spec(cfg: Config) -> tuple[str, dict[str, Any], str, int, str | None]:
    """(architecture, full model config, registry task, scale, variant teacher) for the config's model."""
    from blurwise.models.registry import get_arch, get_variant

    name = cfg.model.name
    try:
        v = get_variant(name)
        arch, base, task, scale = v.arch, dict(v.cfg), v.task, v.scale
    except ModelError:
        v, arch, base, task, scale = None, name, {}, REGISTRY_TASK[cfg.task], cfg.data.scale
    spec = get_arch(arch)
    full = {**spec.defaults, **base, **cfg.model.cfg}
    scale = int(full.get("scale", scale))
    return arch, full, task, scale, (v.teacher if v else None)


def load_teacher(spec: str, *, trust_pickle: bool, device: torch.device, allow_untrained: bool) -> nn.Module:
    """The frozen teacher: a registered name, a weights file (``.safetensors`` or trusted ``.pth``),
    or ``NAME@CHECKPOINT`` (architecture/variant NAME with weights from a training checkpoint)."""
    from blurwise.models import create_model, load_model

    if "@" in spec and not Path(spec).exists():
        name, src = spec.split("@", 1)
        model = create_model(name)
        state, _ = state_from_source(src)
        load_matching(model, state)
    else:
        model, info = load_model(spec, device="cpu", trust_pickle=trust_pickle, allow_untrained=allow_untrained)
        if info.task != "sr":
            raise ModelError(f"teacher {spec} is a {info.task} model; distillation needs a super-resolution teacher")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _distill_loss_fn(cfg: Config):
    """``f(student, teacher, target, sigma) -> loss``: ``ebmsr.distill_loss`` when present, else the fallback."""
    w = dict(cfg.loss.distill)
    try:
        from blurwise.models.ebmsr import distill_loss
    except ImportError:
        return lambda s, t, y, sig: distill_fallback(
            s, t, y, w_teacher=w.get("teacher", 1.0), w_target=w.get("target", 1.0), w_band=w.get("band", 0.0)
        )
    return lambda s, t, y, sig: distill_loss(s.float(), t.float(), y.float(), sigma=sig, weights=w or None)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_log(csv_path: Path) -> list[dict[str, str]]:
    """The rows of a training CSV (``log.csv``), the file closed once read."""
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot loss (log scale) and validation PSNR against the step from a training CSV (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    if not rows:
        return
    st = [int(r["step"]) for r in rows if r["loss"]]
    ls = [float(r["loss"]) for r in rows if r["loss"]]
    vs = [(int(r["step"]), float(r["val_psnr"])) for r in rows if r.get("val_psnr")]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(st, ls, color="tab:blue", lw=0.8, label="train loss")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="tab:blue")
    if vs:
        ax2 = ax.twinx()
        ax2.plot([v[0] for v in vs], [v[1] for v in vs], "o-", color="tab:red", ms=3, label="val PSNR")
        ax2.set_ylabel("validation PSNR (dB)", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)


class Trainer:
    """State of one run (kept small; :func:`run` is the public entry point)."""

    def __init__(
        self, cfg: Config, info: dist.DistInfo, *, resume: bool, smoke: bool, init: bool = True, ship: bool = False
    ) -> None:
        from blurwise.models import create_model

        self.cfg, self.info, self.smoke, self.ship = cfg, info, smoke, ship
        self.dev = info.device
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if self.dev.type == "cuda":
                torch.backends.cudnn.benchmark = False
        elif self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        _seed_all(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
        self.run_dir = cfg.run_dir()
        self.ckpt_path = self.run_dir / "last.pt"
        self.export_path, self.export_note = export_target(cfg, self.run_dir, ship=ship)
        self.arch, self.model_cfg, self.reg_task, self.scale, self.variant_teacher = model_spec(cfg)
        if cfg.task in ("sr", "distill") and self.scale != cfg.data.scale:
            raise UsageError(f"model {cfg.model.name} upscales x{self.scale} but data.scale is {cfg.data.scale}")
        model = create_model(self.arch, **self.model_cfg)
        self.inputs, self.target = task_keys(cfg)
        self.amp = dist.amp_dtype(cfg.train.amp, self.dev)
        self.memfmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
        self.step, self.seconds = 0, 0.0
        self.wall = 0.0  # wall-clock seconds of the run before this invocation (what train.time_budget counts)
        self.notes: dict[str, Any] = {}
        ck = None
        if resume and self.ckpt_path.is_file():
            try:
                ck = load_checkpoint(self.ckpt_path)
            except ModelError as exc:
                raise ModelError(f"{exc} (--no-resume starts the run over)") from None
        if ck is None and cfg.model.init_from and init:
            state, _ = state_from_source(cfg.model.init_from)
            keys = load_matching(model, state, cfg.model.init_exclude)
            self.notes["init_from"] = cfg.model.init_from
            log.info("init from %s: %d tensors", cfg.model.init_from, len(keys))
        model = model.to(self.dev, memory_format=self.memfmt)
        self.ema = EMA(model, cfg.ema.decay) if cfg.ema.enabled else None
        opt_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = opt_cls(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        if ck is not None:
            try:
                model.load_state_dict(ck["model"])
                if self.ema is not None:
                    self.ema.load_state_dict(ck.get("ema", ck["model"]))
                if ck.get("opt"):
                    self.opt.load_state_dict(ck["opt"])
            except (KeyError, RuntimeError, ValueError) as exc:
                what = "it has no model weights" if isinstance(exc, KeyError) else "it is of another model or optimizer"
                raise ModelError(
                    f"cannot resume from {self.ckpt_path}: {what}; --no-resume starts over there, "
                    "or give the run another name or output.dir"
                ) from None
            if "scaler" in ck and self.scaler.is_enabled():
                self.scaler.load_state_dict(ck["scaler"])
            self.step = int(ck.get("step", 0))
            self.seconds = float(ck.get("seconds", 0.0))
            self.wall = float(ck.get("wall_seconds", ck.get("seconds", 0.0)))
            self.notes.update(ck.get("notes", {}))
            log.info("resumed %s at step %d", self.ckpt_path, self.step)
        self.start_step = self.step
        self.t_start: float | None = None
        self.resume_how = "the same command resumes from it"  # said when Ctrl-C stops the run
        _seed_all(cfg.seed + 1000 * info.rank + self.step)  # per-rank, per-resume stream for anything random
        self.model = dist.wrap_ddp(model, info)
        self.teacher = None
        if cfg.task == "distill":
            self.teacher = load_teacher(
                cfg.distill.teacher, trust_pickle=cfg.distill.trust_pickle, device=self.dev, allow_untrained=smoke
            )
            ts = getattr(self.teacher, "scale", self.scale)
            if ts != self.scale:
                other = f"distill_ebmsr_x{ts}"
                hint = f" (for a x{ts} student: --config {other})" if (CONFIG_DIR / f"{other}.toml").is_file() else ""
                raise UsageError(f"teacher is x{ts} but the student {cfg.model.name} is x{self.scale}{hint}")
            self.distill_loss = _distill_loss_fn(cfg)
        self.teacher_cache: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ data

    def _loader(self):
        cfg, info = self.cfg, self.info
        it = cfg.optim.iterations
        length = cfg.distill.cache if (cfg.task == "distill" and cfg.distill.cache) else cfg.data.length
        length = length or it * cfg.data.batch * info.world_size
        ds = ItemAdapter(build_dataset(cfg, length=length), _TUPLE_KEYS.get(dataset_name(cfg), ()))
        sampler = dist.StepBatchSampler(
            len(ds), cfg.data.batch, seed=cfg.data.seed, start_step=self.step, steps=it, rank=info.rank,
            world=info.world_size,
        )  # fmt: skip
        return make_loader(ds, sampler, cfg.data.num_workers, self.dev)

    def _teacher_out(self, lr: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not self.cfg.distill.cache:
            with torch.no_grad(), dist.autocast(self.amp, self.dev):
                return self.teacher(lr).float()
        idx = index.tolist()
        missing = [k for k, i in enumerate(idx) if i not in self.teacher_cache]
        if missing:
            with torch.no_grad(), dist.autocast(self.amp, self.dev):
                out = self.teacher(lr[missing]).float()
            for k, o in zip(missing, out, strict=True):
                self.teacher_cache[idx[k]] = o.half().cpu()
        return torch.stack([self.teacher_cache[i] for i in idx]).to(self.dev).float()

    # ------------------------------------------------------------------ one step

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        cfg = self.cfg
        x = torch.cat([batch[k] for k in self.inputs], 1).to(self.dev, non_blocking=True)
        y = batch[self.target].to(self.dev, non_blocking=True)
        x = x.contiguous(memory_format=self.memfmt)
        lk = {"kind": cfg.loss.kind, "eps": cfg.loss.eps, "ssim": cfg.loss.ssim, "freq": cfg.loss.freq}
        with dist.autocast(self.amp, self.dev):
            if cfg.task == "distill":
                t = self._teacher_out(batch["lr"].to(self.dev), batch["index"])
                out = self.model(x)
                sig = batch.get("sigma_lr")
                return self.distill_loss(out, t, y, None if sig is None else sig.to(self.dev))
            if cfg.loss.stages:
                outs = self.model(x, return_all=True)
                return stage_loss(list(outs), y, cfg.loss.stage_weights or None, **lk)
            return pixel_loss(self.model(x), y, **lk)

    def wall_seconds(self) -> float:
        """Wall-clock seconds of the run so far, over every invocation (resumes continue the count)."""
        return self.wall + (0.0 if self.t_start is None else time.perf_counter() - self.t_start)

    def progress(self) -> float | None:
        """Fraction of the wall-clock budget used (``None`` without a budget). A resumed run continues from
        the checkpoint's count, so its schedule goes on where it was, not from the start."""
        budget = self.cfg.train.time_budget
        if not budget:
            return None
        return self.wall_seconds() / budget

    def _train_step(self, batch: dict[str, Any]) -> float:
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, self.cfg, self.progress())
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            raise ModelError(f"loss is {loss.item()} at step {self.step}; lower optim.lr or use train.amp = 'off'")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        if self.ema is not None:
            self.ema.update(dist.unwrap(self.model), self.step)
        return float(loss.detach())

    # ------------------------------------------------------------------ validation

    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported (EMA when enabled)."""
        return self.ema.module if self.ema is not None else dist.unwrap(self.model)

    def val_items(self) -> list[ValItem]:
        if not hasattr(self, "_val_items"):
            kind = val_kind(self.cfg)
            if kind == "set5":
                self._val_items = set5_items(self.cfg)
            elif kind == "set5-defocus":
                self._val_items = set5_defocus_items(self.cfg)
            elif kind == "holdout":
                self._val_items = holdout_items(self.cfg, self.inputs, self.target)
            else:
                self._val_items = []
        return self._val_items

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> float | None:
        """Mean PSNR (dB) of ``model`` on the validation items (Y, border = scale for SR; RGB for deblur);
        for sigma-map targets, minus the mean absolute error."""
        from blurwise.metrics import psnr

        items = self.val_items()
        if not items:
            return None
        model = self.eval_model() if model is None else model
        was_training = model.training
        model.eval()
        scores = []
        sr = self.cfg.task in ("sr", "distill")
        for it in items:
            with dist.autocast(self.amp, self.dev):
                out = model(it.inputs.to(self.dev).contiguous(memory_format=self.memfmt)).float()
            if it.reference.dtype != np.uint8:  # sigma map
                scores.append(-float(np.abs(out[0, 0].cpu().numpy() - it.reference).mean()))
                continue
            img = np.clip(np.round(out[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255), 0, 255).astype(np.uint8)
            crop = self.scale if sr else 0
            scores.append(psnr(it.reference, img, crop=crop, y=sr))
        model.train(was_training)
        return float(np.mean(scores))

    @torch.no_grad()
    def teacher_val(self) -> float | None:
        """The teacher's PSNR on the distillation validation set (its reference ceiling)."""
        from blurwise.metrics import psnr

        scores = []
        for it in self.val_items():
            if it.teacher_input is None:
                return None
            out = self.teacher(it.teacher_input.to(self.dev)).float()
            img = np.clip(np.round(out[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255), 0, 255).astype(np.uint8)
            scores.append(psnr(it.reference, img, crop=self.scale, y=True))
        return float(np.mean(scores)) if scores else None

    # ------------------------------------------------------------------ files

    def _csv_path(self) -> Path:
        return self.run_dir / "log.csv"

    def _trim_csv(self) -> list[dict[str, str]]:
        p = self._csv_path()
        rows = read_log(p) if p.is_file() else []
        rows = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
        self._write_csv(rows)
        return rows

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        p = self._csv_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(".log.csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        tmp.replace(p)

    def _append_csv(self, row: dict[str, Any]) -> None:
        p = self._csv_path()
        new = not p.is_file()
        with p.open("a", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def _publish_curve(self) -> None:
        """The training curve: ``curve.png`` in the run folder; a ``--ship`` run also puts the CSV and the
        PNG in the repository's docs/results/training/ (only a checkout has that folder)."""
        if not self.cfg.output.docs:
            return
        title = f"{self.cfg.name} ({self.cfg.task})"
        try:
            write_curve(self._csv_path(), self._csv_path().with_name("curve.png"), title)
            root = tconfig.source_checkout()  # a --ship run has one (export_target refuses it otherwise)
            if self.ship and root is not None:
                out = root / "docs" / "results" / "training"
                out.mkdir(parents=True, exist_ok=True)
                tmp = out / f".{self.cfg.name}.csv.tmp"
                shutil.copyfile(self._csv_path(), tmp)
                tmp.replace(out / f"{self.cfg.name}.csv")
                write_curve(self._csv_path(), out / f"{self.cfg.name}.png", title)
        except Exception as exc:  # a plotting problem must never stop training
            log.warning("training curve not written: %s", exc)

    def save(self) -> None:
        """Atomic checkpoint of everything needed to resume exactly."""
        state = {
            "model": dist.unwrap(self.model).state_dict(),
            "ema": self.eval_model().state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "seconds": self.seconds,
            "wall_seconds": self.wall_seconds(),
            "config": self.cfg.to_dict(),
            "notes": self.notes,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        save_checkpoint(self.ckpt_path, state)

    def export(self, val_psnr: float | None) -> Path:
        """Save the EMA weights as the shipped ``.safetensors`` (fp16 unless it costs >= 0.01 dB)."""
        from blurwise.models import create_model, save_weights

        cfg = self.cfg
        out = self.export_path
        model = self.eval_model()
        half = True
        if val_psnr is not None:  # check the fp16 round trip costs < 0.01 dB
            m16 = create_model(self.arch, **self.model_cfg)
            sd = model.state_dict()
            m16.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in sd.items()})
            p16 = self.validate(m16.to(self.dev))
            half = p16 is not None and val_psnr - p16 < 0.01
            self.notes["val_psnr_fp16"] = p16
        from blurwise.data.paths import data_root

        training = {
            "config_name": cfg.name,
            "config": cfg.raw,
            "task": cfg.task,
            "data": [str(Path(r)) for r in cfg.data.roots] or [dataset_name(cfg)],
            "data_root": str(data_root()),
            "iterations": self.step,
            "batch": cfg.data.batch,
            "patch": cfg.data.patch,
            "train_seconds": round(self.seconds, 1),
            "validation": {"kind": val_kind(cfg), "set": cfg.val.set, "psnr": val_psnr},
            "smoke": self.smoke,
            **{k: v for k, v in self.notes.items() if k != "val_psnr_fp16"},
        }
        extra = {"training": training, "val_psnr": val_psnr, "val_psnr_fp16": self.notes.get("val_psnr_fp16")}
        teacher = cfg.distill.teacher if cfg.task == "distill" else self.variant_teacher
        if cfg.task == "distill" and self.teacher is not None:  # ties the student to these very teacher weights
            from blurwise.models import weights_fingerprint

            extra["teacher_fingerprint"] = weights_fingerprint(self.teacher)
        return save_weights(
            model, out, arch=self.arch, task=self.reg_task, scale=self.scale, config=self.model_cfg,
            name=cfg.output.export_name or None, teacher=teacher, extra=extra, half=half,
        )  # fmt: skip

    # ------------------------------------------------------------------ main loop

    def start(self) -> None:
        """Before the first step: reference figures (teacher, blurred input), the clock of the budget."""
        cfg = self.cfg
        mae = val_kind(cfg) == "holdout" and task_keys(cfg)[1] == "sigma_lr"
        self.res = RunResult(cfg.name, self.start_step, self.step, run_dir=self.run_dir, val_mae=mae)
        self.last_val: float | None = None
        self._acc, self._n_acc = 0.0, 0
        if self.info.is_main:
            if self.export_note:
                log.warning("%s: %s", cfg.name, self.export_note)
            _check_writable(self.export_path)
            self.val_items()  # a bad validation split fails now, not at the first validation step
            self._trim_csv()
            if self.teacher is not None and "teacher_val_psnr" not in self.notes:
                self.notes["teacher_val_psnr"] = self.teacher_val()
            if cfg.task == "deblur" and "input_val_psnr" not in self.notes:
                self.notes["input_val_psnr"] = self.validate(nn.Identity())  # the blurred input's own PSNR
                log.info("validation PSNR of the blurred input: %.3f", self.notes["input_val_psnr"])
        self.model.train()
        self.t_start = time.perf_counter()
        self._t0 = self.t_start
        self.stop = _StopOnSigint()

    def done(self) -> bool:
        """Whether the run has reached its iterations or its time budget."""
        p = self.progress()
        return self.step >= self.cfg.optim.iterations or (p is not None and p >= 1.0)

    def after_step(self, loss: float, final: bool = False) -> None:
        """Bookkeeping after one step: loss log, validation, CSV row, checkpoint (``final``: the last step)."""
        cfg, info, res = self.cfg, self.info, self.res
        main = info.is_main
        self._acc, self._n_acc = self._acc + loss, self._n_acc + 1
        res.losses.append((self.step, loss))
        do_val = self.step % cfg.val.every == 0 or final
        if do_val or self.step % cfg.train.log_every == 0:
            now = time.perf_counter()
            self.seconds += now - self._t0
            mean_loss = dist.mean_across(self._acc / self._n_acc, info)
            self._acc, self._n_acc = 0.0, 0
            v = self.validate() if (do_val and main) else None
            if v is not None:
                self.last_val = v
                res.val.append((self.step, v))
            if main:
                lr = lr_at(self.step - 1, cfg, self.progress())
                vtxt = "" if v is None else f"{v:.4f}"
                row = {"step": self.step, "loss": f"{mean_loss:.6f}", "lr": f"{lr:.3g}", "val_psnr": vtxt}
                row["seconds"] = f"{self.seconds:.1f}"
                self._append_csv(row)
                log.info("%s step %d loss %.5f%s", cfg.name, self.step, mean_loss, "" if v is None else f" val {v:.3f}")
                if do_val:
                    self._publish_curve()
            self._t0 = time.perf_counter()  # validation and logging do not count as training time
        if main and (self.step % cfg.train.checkpoint_every == 0 or final):
            self.save()

    def finish(self, completed: bool) -> RunResult:
        """After the last step: final validation and, when the run is complete, the export."""
        res = self.res
        res.steps = self.step
        res.seconds = self.seconds
        res.checkpoint = self.ckpt_path if self.ckpt_path.is_file() else None
        if self.info.is_main:
            if self.last_val is None:
                self.last_val = self.validate()
                if self.last_val is not None:
                    res.val.append((self.step, self.last_val))
            if completed:
                res.export = self.export(self.last_val)
        dist.barrier(self.info)
        return res

    def interrupted(self) -> TrainingInterrupted:
        """Save a checkpoint after a Ctrl-C (main rank) and say how to resume."""
        if self.info.is_main:
            self.save()
        return TrainingInterrupted(
            f"stopped at step {self.step} of {self.cfg.optim.iterations}; checkpoint {self.ckpt_path} "
            f"({self.resume_how})"
        )

    def fit(self) -> RunResult:
        """Train until the iterations or the time budget are used up, then validate and export.

        Ctrl-C stops after the current step with a checkpoint (:class:`TrainingInterrupted`)."""
        loader = self._loader() if self.step < self.cfg.optim.iterations else None
        self.start()
        if self.step and self.done() and self.info.is_main:
            log.warning(
                "%s: the run in %s is already complete at step %d; exporting it again (--no-resume trains it anew, "
                "a larger optim.iterations or train.time_budget goes on)", self.cfg.name, self.run_dir, self.step
            )  # fmt: skip
        if loader is not None and not self.done():
            with self.stop.active(not self.info.distributed):
                for batch in loader:
                    loss = self._train_step(batch)
                    final = self.done()
                    if self.cfg.train.time_budget and self.info.distributed:  # every rank stops at the same step
                        final = dist.mean_across(float(final), self.info) > 0
                    self.after_step(loss, final=final)
                    if final:
                        break
                    if self.stop.requested:
                        raise self.interrupted()
        return self.finish(self.done())


def _run_config(path: str | Path, smoke: bool, overrides: dict[str, Any] | None) -> tuple[Config, Path | None]:
    """The config of one run, and the temporary run folder made for it: a smoke run gets a fresh one unless
    ``output.dir`` is given."""
    import tempfile

    overrides = dict(overrides or {})
    made = None
    if smoke and not any(k in overrides for k in ("output.dir", "output", "out_dir")):
        made = Path(tempfile.mkdtemp(prefix="blurwise-smoke-"))
        overrides["output.dir"] = str(made)
    try:
        return load_config(path, smoke=smoke, overrides=overrides), made
    except BaseException:  # a config that does not load leaves no empty smoke folder behind
        _drop_unused(made)
        raise


def _drop_unused(made: Path | None) -> None:
    """Remove a smoke run's temporary folder unless it holds a checkpoint (a run that failed before one)."""
    if made is not None and not (made / "last.pt").is_file():
        shutil.rmtree(made, ignore_errors=True)


def run(
    config_path: str | Path | Config,
    *,
    device: str = "auto",
    smoke: bool = False,
    resume: bool = True,
    overrides: dict[str, Any] | None = None,
    ship: bool = False,
) -> RunResult:
    """Train (or resume) the run described by a TOML config and export its EMA weights.

    ``smoke``: a tiny deterministic run (few steps, small crops, a handful of images) in a fresh
    temporary run folder unless ``overrides`` names ``output.dir``; it never writes docs/ or the
    package's weights. ``overrides``: dotted config keys or aliases (``{"teacher": "x.pth"}``).
    ``ship``: the maintainers' run of a shipped model: export to ``output.export`` even when it is in the
    package's weights folder (else such a run exports into its run folder) and copy the training curve to
    docs/results/training/. Ctrl-C stops after the current step with a checkpoint and raises
    :class:`TrainingInterrupted` (a KeyboardInterrupt); the same call resumes from there.
    """
    if isinstance(config_path, Config):
        cfg, made = config_path, None
    else:
        cfg, made = _run_config(config_path, smoke, overrides)
    try:
        info = dist.setup(device)
        try:
            trainer = Trainer(cfg, info, resume=resume, smoke=smoke, ship=ship)
            if made is not None:  # a smoke run's temporary folder: the same command would make a new one
                trainer.resume_how = f"the same command with --set output.dir={made} resumes from it"
            return trainer.fit()
        finally:
            dist.cleanup(info)
    except BaseException:
        _drop_unused(made)
        raise


def run_many(
    config_paths: list[str | Path],
    *,
    device: str = "auto",
    smoke: bool = False,
    resume: bool = True,
    overrides: dict[str, Any] | None = None,
    ship: bool = False,
) -> list[RunResult]:
    """Train several models on one shared stream of batches (ablations): each config keeps its own
    model, optimizer, EMA, schedule, validation and export, but the batches come from the first
    config's data pipeline, so every model sees exactly the same data at the same step and the data
    cost is paid once. The configs must agree on ``[data]``, ``task`` and ``optim.iterations``."""
    made: list[Path | None] = []
    try:
        cfgs = []
        for path in config_paths:
            cfg, folder = _run_config(path, smoke, overrides)
            cfgs.append(cfg)
            made.append(folder)
        return _run_shared(cfgs, device=device, smoke=smoke, resume=resume, ship=ship, made=made)
    except BaseException:
        for folder in made:
            _drop_unused(folder)
        raise


def _run_shared(
    cfgs: list[Config], *, device: str, smoke: bool, resume: bool, ship: bool, made: list[Path | None] | None = None
) -> list[RunResult]:
    """:func:`run_many` after its configs are read (``made``: the smoke runs' temporary folders)."""
    first = cfgs[0]
    for c in cfgs[1:]:
        if c.task != first.task or c.raw.get("data") != first.raw.get("data"):
            raise UsageError(f"{c.name}: shared batches need the same task and [data] as {first.name}")
        if c.optim.iterations != first.optim.iterations or c.train.time_budget != first.train.time_budget:
            raise UsageError(f"{c.name}: shared batches need the same optim.iterations and train.time_budget")
    dirs = [c.run_dir().resolve() for c in cfgs]
    for i, d in enumerate(dirs):
        if d in dirs[:i]:  # one last.pt and log.csv for two models: neither could resume
            raise UsageError(
                f"{cfgs[i].name}: the configs share the run folder {d}; give each its own name or output.dir "
                "($BLURWISE_RUNS sets the folder that holds the run folders)"
            )
    info = dist.setup(device)
    if info.distributed:
        dist.cleanup(info)
        raise UsageError("several configs at once run in one process; launch them without torchrun")
    try:
        trainers = [Trainer(c, info, resume=resume, smoke=smoke, ship=ship) for c in cfgs]
        for t, folder in zip(trainers, made or [None] * len(trainers), strict=True):
            if folder is not None:
                t.resume_how = "smoke runs of several configs start afresh in new temporary folders"
        exports = [t.export_path.resolve() for t in trainers]
        for i, e in enumerate(exports):
            if e in exports[:i]:
                raise UsageError(f"{cfgs[i].name}: the configs export to the same file {e}")
        step0 = {t.step for t in trainers}
        if len(step0) > 1:
            raise UsageError(f"the runs resume at different steps {sorted(step0)}; use --no-resume")
        lead = trainers[0]
        loader = lead._loader() if lead.step < first.optim.iterations else None
        for t in trainers:
            t.start()
        if loader is not None and not lead.done():
            with lead.stop.active():
                for batch in loader:
                    losses = [t._train_step(batch) for t in trainers]
                    final = lead.done()
                    for t, loss in zip(trainers, losses, strict=True):
                        t.after_step(loss, final=final)
                    if final:
                        break
                    if lead.stop.requested:
                        raise TrainingInterrupted("; ".join(str(t.interrupted()) for t in trainers))
        return [t.finish(lead.done()) for t in trainers]
    finally:
        dist.cleanup(info)


def export_checkpoint(
    config_path: str | Path,
    *,
    checkpoint: str | Path | None = None,
    out: str | None = None,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    ship: bool = False,
) -> Path:
    """Validate a checkpoint (this loop's or the bootstrap trainer's) and export its EMA weights with
    the config's metadata, without training. ``iterations`` in the metadata is the checkpoint's step.

    ``out``: the .safetensors to write (default: as a run would, see :func:`export_target`); a path in the
    package's shipped-weights folder needs ``ship``."""
    from blurwise.models.registry import WEIGHTS_DIR

    if out:
        out = os.path.abspath(os.path.expanduser(out))
        if not out.lower().endswith(".safetensors"):
            raise UsageError(f"--out must end in .safetensors: {out}")
        if not ship and Path(out).resolve().is_relative_to(WEIGHTS_DIR.resolve()):
            raise UsageError(f"{out} is in the package's shipped weights; add --ship to replace them")
    overrides = {**(overrides or {}), **({"output.export": out} if out else {})}
    cfg = load_config(config_path, overrides=overrides)
    info = dist.DistInfo(device=dist.resolve_device(device))
    tr = Trainer(cfg, info, resume=False, smoke=False, init=False, ship=ship)
    if tr.export_note:
        log.warning("%s: %s", cfg.name, tr.export_note)
    _check_writable(tr.export_path)
    ck = load_checkpoint(checkpoint or tr.ckpt_path)
    state = ck.get("ema", ck.get("model"))
    try:
        if not isinstance(state, dict):
            raise KeyError("ema")
        tr.eval_model().load_state_dict(state)
    except (KeyError, RuntimeError):
        raise ModelError(f"{checkpoint or tr.ckpt_path} holds no weights of {cfg.model.name}") from None
    tr.step = int(ck.get("step", 0))
    tr.seconds = float(ck.get("seconds", 0.0))
    tr.notes["checkpoint"] = str(checkpoint or tr.ckpt_path)
    log_csv = Path(checkpoint or tr.ckpt_path).with_name("log.csv")
    if cfg.output.docs and log_csv.is_file():
        import_log(log_csv, tr._csv_path() if checkpoint is None else log_csv.with_name("log.blurwise.csv"), tr)
    if tr.teacher is not None:
        tr.notes["teacher_val_psnr"] = tr.teacher_val()
    return tr.export(tr.validate())


def import_log(src: Path, dst: Path, trainer: Trainer) -> None:
    """Convert a training log (this loop's CSV, or the bootstrap trainer's headerless
    ``step,loss,val_psnr,seconds`` rows) into this loop's CSV and publish its curve (:meth:`Trainer._publish_curve`)."""
    rows = []
    for line in src.read_text().splitlines():
        parts = line.strip().split(",")
        if not parts or not parts[0].isdigit():
            continue
        if len(parts) == 4:
            step, loss, val, sec = parts
            lr = ""
        elif len(parts) >= 5:
            step, loss, lr, val, sec = parts[:5]
        else:
            continue
        rows.append({"step": step, "loss": loss, "lr": lr, "val_psnr": val, "seconds": sec})
    if src.resolve() != dst.resolve():
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
    trainer._csv_path = lambda: dst  # type: ignore[method-assign]
    trainer._publish_curve()
