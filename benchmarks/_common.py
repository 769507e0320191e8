"""Shared helpers of the benchmark scripts: machine description, date, command line, timing, Markdown.

Benchmarks import it as ``from benchmarks._common import ...`` after putting the repository root on
``sys.path`` (they are run as ``python benchmarks/NAME.py``). Nothing here computes image quality:
PSNR/SSIM, ``imresize``, tiling and model loading come from the ``blurwise`` package.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


# ---------------------------------------------------------------------- run description
def now() -> str:
    """UTC date and time of the run (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, relative to the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", f"benchmarks/{Path(script).name}", *args])


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (platform fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_now() -> str:
    """The 1/5/15-minute load average now (timings on a shared machine depend on it)."""
    try:
        return "load average {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
    except OSError:
        return "load average n/a"


def machine() -> str:
    """One line: CPU, cores, torch threads, GPU, load average at the time of the call, versions.

    The load average matters on a shared machine: timings taken under load are slower than the
    same code on an idle CPU, so every results file records it.
    """
    import torch

    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    load = load_now()
    return (
        f"{cpu_name()}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), {gpu}; {load}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )


def set_threads(n: int | None) -> int:
    """Set torch's intra-op threads (None or 0 = all cores); returns the number in use."""
    import torch

    torch.set_num_threads(max(1, int(n)) if n else (os.cpu_count() or 1))
    return torch.get_num_threads()


def header(title: str, script: str, argv: Sequence[str] | None, notes: Sequence[str] = ()) -> list[str]:
    """The standard top of a results file: title, date, machine, command, then ``notes`` as bullets."""
    return [
        f"# {title}",
        "",
        f"- date: {now()}",
        f"- machine: {machine()}",
        f"- command: `{command_line(script, argv)}`",
        *[f"- {n}" for n in notes],
        "",
    ]


# ---------------------------------------------------------------------- timing
def sync(device: Any = None) -> None:
    """Wait for queued GPU work (no-op on CPU), so wall-clock timings are honest."""
    import torch

    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], repeats: int = 3, *, warmup: int = 1, device: Any = None) -> tuple[Any, float]:
    """(last result, median wall-clock seconds) of ``repeats`` calls after ``warmup`` untimed ones.

    All calls run in this process, one after the other, so ratios between methods timed with it in
    the same run are meaningful even on a busy machine.
    """
    out = None
    for _ in range(max(0, warmup)):
        out = fn()
        sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def round_robin(
    fns: dict[Any, Callable[[], Any]], repeats: int = 3, *, device: Any = None
) -> tuple[dict[Any, Any], dict[Any, float]]:
    """(last result, median seconds) per key of ``fns``, each round calling every function once in turn.

    Interleaving the methods round by round makes load drift on a shared machine hit them all alike, so the
    ratios of their medians hold up better than those of methods timed one block after another.
    """
    times: dict[Any, list[float]] = {k: [] for k in fns}
    last: dict[Any, Any] = {}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            last[k] = fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return last, {k: statistics.median(v) for k, v in times.items()}


class Stopwatch:
    """Accumulates named wall-clock intervals (``with sw("name"): ...``) for the runtime summary."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.parts: dict[str, float] = {}

    def __call__(self, name: str) -> _Lap:
        return _Lap(self, name)

    def total(self) -> float:
        return time.perf_counter() - self.t0

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in self.parts.items())
        return f"{self.total():.0f} s in all ({parts})"


class _Lap:
    def __init__(self, sw: Stopwatch, name: str) -> None:
        self.sw, self.name = sw, name

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.sw.parts[self.name] = self.sw.parts.get(self.name, 0.0) + time.perf_counter() - self.t


# ---------------------------------------------------------------------- models
def meta_compute(model: Any, input_shape: tuple[int, ...]) -> Any:
    """``blurwise.metrics.flops.compute`` of ``model`` at ``input_shape`` without running the convolutions.

    A copy of the model on the ``meta`` device goes through ``FlopCounterMode``: shapes and FLOPs are
    exact, no arithmetic is done, so counting at 1280x720 costs nothing.
    """
    from blurwise.metrics.flops import compute

    return compute(copy.deepcopy(model).to("meta"), input_shape)


def variants_for(task: str, scale: int | None = None) -> tuple[list[Any], list[Any]]:
    """(shipped, not shipped) registered variants of ``task`` (and ``scale``), in registry order."""
    from blurwise.models import list_variants
    from blurwise.models.registry import is_shipped

    vs = [v for v in list_variants() if v.task == task and (scale is None or v.scale == scale)]
    return [v for v in vs if is_shipped(v)], [v for v in vs if not is_shipped(v)]


def load_variants(
    shipped: Sequence[Any], missing: Sequence[Any], allow_untrained: bool, only: Sequence[str] | None
) -> tuple[list[tuple[Any, Any, Any, bool]], list[str]]:
    """Load registered variants: ``[(variant, model, info, trained)]`` and the report's skip notes.

    Variants without shipped weights are skipped with a note, or run untrained (a dry run) with
    ``allow_untrained``; ``only`` keeps the named variants.
    """
    from blurwise.models import load_model

    loaded, notes = [], []
    for v in [*shipped, *missing]:
        if only and v.name not in only:
            continue
        trained = v in shipped
        if not trained and not allow_untrained:
            notes.append(f"`{v.name}`: weights not shipped (blurwise/models/weights/{v.weights}); skipped")
            continue
        net, info = load_model(v.name, allow_untrained=True)
        loaded.append((v, net, info, trained))
        if not trained:
            notes.append(f"`{v.name}`: weights not shipped; run UNTRAINED (dry run: its quality means nothing)")
    return loaded, notes


def training_budget(info: Any) -> str:
    """What the weights' metadata says about their training: iterations, batch x patch, data, time, val PSNR."""
    tr = (info.metadata or {}).get("training") or {}
    if not tr:
        return "not recorded"
    bits = []
    if tr.get("iterations") is not None:
        bits.append(f"{tr['iterations']} it")
    if tr.get("batch") and tr.get("patch"):
        bits.append(f"{tr['batch']}x{tr['patch']}px")
    data = tr.get("data") or []
    data = data if isinstance(data, list) else [data]
    cfg = tr.get("config") if isinstance(tr.get("config"), dict) else {}
    frames = (cfg.get("data") or {}).get("frames") if isinstance(cfg.get("data"), dict) else None
    root = str(tr.get("data_root") or "")
    data = [str(d).removeprefix(root).lstrip("/") for d in data] + ([str(frames)] if frames else [])
    if data:
        bits.append(" + ".join(data))
    if tr.get("train_seconds"):
        bits.append(f"{tr['train_seconds'] / 3600:.1f} h")
    val = (tr.get("validation") or {}).get("psnr", info.metadata.get("val_psnr"))
    if val is not None:
        kind = (tr.get("validation") or {}).get("kind") or "val"
        bits.append(f"{kind} {val:.2f} dB")
    if tr.get("smoke"):
        bits.append("SMOKE RUN")
    return ", ".join(bits) or "not recorded"


# ---------------------------------------------------------------------- numbers and Markdown
def to8(x: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding (outputs are scored as saved 8-bit images)."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def mean(values: Sequence[float]) -> float:
    """Mean of finite values, NaN when there are none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def fmt(v: Any, spec: str = ".2f", na: str = "-") -> str:
    """Format a number, ``na`` for None/NaN; strings pass through."""
    if v is None:
        return na
    if isinstance(v, str):
        return v
    try:
        if not math.isfinite(float(v)):
            return "inf" if float(v) > 0 else na
    except (TypeError, ValueError):
        return str(v)
    return format(v, spec)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    """A Markdown table as lines; ``align`` is one char per column (l/r/c), default: first left, rest right."""
    align = align or ("l" + "r" * (len(headers) - 1))
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def check_line(label: str, ok: bool | None, detail: str) -> str:
    """An acceptance bullet: PASS / FAIL / n/a (when it could not be measured)."""
    verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    return f"- {label}: {detail} (**{verdict}**)"


def write_md(path: str | Path, lines: Sequence[str]) -> Path:
    """Write the Markdown report atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(path)
    return path
