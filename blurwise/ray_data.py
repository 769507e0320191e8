"""Scale-out with Ray Data: ``upscale`` / ``deblur`` over many images on a Ray cluster (``blurwise[ray]``).

No scheduler of our own: Ray Data streams the images through a pool of actors, and each actor loads
the model once (:class:`ImageMapper`, a ``map_batches`` callable class) and then reads, processes
and writes images with the same :mod:`blurwise.api` / :mod:`blurwise.io` code as the single-process
CLI, so the outputs are the same files (atomic writes, mirrored tree, same names). The recipe::

    import ray
    from blurwise.ray_data import ImageMapper, plan_rows

    ray.init()                                            # or ray.init("auto") on a cluster
    rows, _ = plan_rows("upscale", ["photos/"], "big/", recursive=True, skip_existing=True)
    ds = ray.data.from_items(rows).map_batches(
        ImageMapper,
        fn_constructor_kwargs={"task": "upscale", "options": {"scale": 4}},
        batch_size=4,
        num_gpus=1,                                       # GPU actors; num_cpus=4 for CPU actors
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=8),
    )
    for row in ds.iter_rows():                            # one status row per image
        if row["status"] == "failed":
            print(row["src"], row["error"])

:func:`process` wraps exactly this (and is what ``blurwise upscale --ray`` runs). Inputs can also
come from ``ray.data.read_binary_files(root, include_paths=True)`` (rows with ``bytes`` + ``path``;
give the mapper ``input_root`` and ``output``). Outputs are written by the actors, so ``output``
must be a folder every node can reach (a shared or mounted file system). See docs/ray.md.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.batch import failure_line
from blurwise.errors import BlurwiseError, NotAvailableError, UsageError

log = logging.getLogger(__name__)

__all__ = ["TASKS", "ImageMapper", "RayResult", "plan_rows", "build_dataset", "process"]

TASKS = ("upscale", "deblur")
_UPSCALE_KEYS = (
    "scale model light route threshold budget routes router min_saving map_precision "
    "tile tile_pad device half compile trust_pickle"
).split()
_DEBLUR_KEYS = "model stages tile tile_pad device half compile trust_pickle".split()


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise NotAvailableError('Ray Data is not installed; pip install "blurwise[ray]"') from None
    return ray


def _check_options(task: str, options: dict[str, Any] | None) -> dict[str, Any]:
    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    opts = dict(options or {})
    allowed = _UPSCALE_KEYS if task == "upscale" else _DEBLUR_KEYS
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise UsageError(f"unknown {task} option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return opts


def _make_runner(task: str, options: dict[str, Any]) -> Any:
    from blurwise.api import Deblurrer, Upscaler

    if task == "upscale":
        opts = dict(options)
        return Upscaler(opts.pop("scale", 4), **opts)
    return Deblurrer(**options)


# --------------------------------------------------------------------------- the actor


class ImageMapper:
    """``map_batches`` callable class: loads the model once per actor, then reads, runs and writes images.

    Input rows: ``{"src", "dst"}`` (plus optional ``"depth"``, a depth-map path for routed SR), as
    made by :func:`plan_rows`; or ``{"bytes", "path"}`` from ``ray.data.read_binary_files(...,
    include_paths=True)``, for which ``input_root`` and ``output`` (plus ``suffix`` / ``ext``) name
    the outputs the way the CLI does (tree mirrored under ``output``). Output rows, one per image:
    ``src``, ``dst``, ``status`` ("done" | "skipped" | "failed"), ``error`` (one line or ""),
    ``seconds`` and ``worker`` (host:pid). A bad image fails alone; the batch goes on.

    ``options`` are the keyword arguments of :class:`blurwise.api.Upscaler` (with ``scale``) or
    :class:`blurwise.api.Deblurrer`. ``threads`` sets torch's CPU threads per actor (default: the
    CPUs Ray gave the actor, at least 1). ``allow_large`` reads images above the readers' pixel limit.
    """

    def __init__(
        self,
        task: str = "upscale",
        options: dict[str, Any] | None = None,
        *,
        overwrite: bool = False,
        skip_existing: bool = False,
        input_root: str | None = None,
        output: str | None = None,
        suffix: str = "out",
        ext: str = "auto",
        threads: int | None = None,
        allow_large: bool = False,
    ) -> None:
        opts = _check_options(task, options)
        if threads is None:
            threads = _actor_cpus()
        if threads:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        self.task = task
        self.overwrite, self.skip_existing = overwrite, skip_existing
        self.input_root = Path(input_root) if input_root else None
        self.output = Path(output) if output else None
        self.suffix, self.ext = suffix, ext
        self.allow_large = allow_large
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.run = _make_runner(task, opts)  # the one model load of this actor

    def _dst_for(self, path: str) -> Path:
        from blurwise.batch import output_ext

        if self.output is None or self.input_root is None:
            raise UsageError("rows with 'bytes' need ImageMapper(input_root=..., output=...)")
        p = Path(path)
        root = str(self.input_root).split("://", 1)[-1].rstrip("/")  # read_binary_files drops the scheme
        rel = Path(path[len(root) :].lstrip("/")) if root and path.startswith(root + "/") else Path(p.name)
        tag = f"_{self.suffix}" if self.suffix else ""
        return self.output / rel.parent / f"{rel.stem}{tag}{output_ext(p, self.ext)}"

    def _one(self, src: str, dst: Path, data: Any, depth: str) -> tuple[str, str]:
        from blurwise.io import read_depth, read_image, write_image

        if dst.exists() and self.skip_existing:
            return "skipped", ""
        if data is not None:  # bytes from read_binary_files: decode through a temp file with the same name
            with tempfile.TemporaryDirectory(prefix="blurwise-") as tmp:
                tmp_path = Path(tmp) / Path(src).name
                tmp_path.write_bytes(bytes(data))
                try:
                    img = read_image(tmp_path, allow_large=self.allow_large)
                except BlurwiseError as exc:
                    raise type(exc)(str(exc).replace(str(tmp_path), src)) from None
        else:
            img = read_image(src, allow_large=self.allow_large)
        if self.task == "upscale":
            d = read_depth(depth, (img.height, img.width)) if depth else None
            out, alpha, _ = self.run(img.pixels, img.alpha, depth=d)
        else:
            out, alpha, _ = self.run(img.pixels, img.alpha)
        write_image(dst, img.with_pixels(out, alpha), overwrite=self.overwrite)
        return "done", ""

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Process one batch of rows (numpy batch format); returns one status row per input row."""
        from blurwise.batch import _one_line

        if "src" in batch:
            srcs = [str(s) for s in batch["src"]]
            dsts = [Path(str(d)) for d in batch["dst"]]
            datas: list[Any] = [None] * len(srcs)
        elif "bytes" in batch and "path" in batch:
            srcs = [str(s) for s in batch["path"]]
            dsts = [self._dst_for(s) for s in srcs]
            datas = list(batch["bytes"])
        else:
            raise UsageError(f"rows need 'src' and 'dst' (or 'bytes' and 'path'), got {sorted(batch)}")
        depths = [str(d) if d is not None else "" for d in batch.get("depth", [""] * len(srcs))]
        status, errors, seconds = [], [], []
        for src, dst, data, depth in zip(srcs, dsts, datas, depths, strict=True):
            t0 = time.perf_counter()
            try:
                st, err = self._one(src, dst, data, depth)
            except Exception as exc:  # noqa: BLE001 - one failed image must not stop the others
                st, err = "failed", _one_line(exc)
            status.append(st)
            errors.append(err)
            seconds.append(time.perf_counter() - t0)
        n = len(srcs)
        return {
            "src": np.array(srcs, dtype=object),
            "dst": np.array([str(d) for d in dsts], dtype=object),
            "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object),
            "seconds": np.array(seconds, dtype=np.float64),
            "worker": np.array([self.worker] * n, dtype=object),
        }


def _actor_cpus() -> int:
    """CPUs Ray assigned to this worker (1 outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            ids = ray.get_runtime_context().get_assigned_resources()
            return max(1, int(ids.get("CPU", 1)))
    except Exception:  # noqa: BLE001 - outside an actor or an older Ray: one thread is safe
        pass
    return 1


# --------------------------------------------------------------------------- planning and running


@dataclass
class RayResult:
    """What a Ray run did (counts, not lists: a run may cover millions of images)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: set[str] = field(default_factory=set)
    interrupted: bool = False
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 if any image failed, else 0 (as the single-process CLI)."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        """The CLI's summary table, plus how many Ray workers took part."""
        head = f"{'done':>6} {'skipped':>8} {'failed':>7} {'time':>9} {'images/s':>9} {'workers':>8}"
        row = (
            f"{self.done:>6} {self.skipped:>8} {len(self.failed):>7} "
            f"{self.seconds:>8.1f}s {self.images_per_second:>9.2f} {len(self.workers):>8}"
        )
        return f"{head}\n{row}"


def plan_rows(
    task: str,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    *,
    suffix: str = "out",
    ext: str = "auto",
    recursive: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    depth_of: Callable[[Any], Path | None] | None = None,
) -> tuple[list[dict[str, str]], RayResult]:
    """Rows ``{"src", "dst", "depth"}`` for :class:`ImageMapper`, named exactly as the CLI names outputs.

    Uses :func:`blurwise.batch.plan_jobs` (tree mirrored under ``output``). Jobs that are already
    decided are not rows: existing outputs with ``skip_existing`` count as skipped, existing ones
    without ``overwrite`` and planning errors as failed, in the returned :class:`RayResult`.
    """
    from blurwise.batch import plan_jobs

    if task not in TASKS:
        raise UsageError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    res = RayResult()
    rows: list[dict[str, str]] = []
    for job in plan_jobs(inputs, output, suffix=suffix, ext=ext, recursive=recursive):
        if job.error:
            res.failed.append((str(job.src), job.error))
        elif job.dst.exists() and skip_existing:
            res.skipped += 1
        elif job.dst.exists() and not overwrite:
            res.failed.append((str(job.src), f"output exists (use --overwrite or --skip-existing): {job.dst}"))
        else:
            dpath = depth_of(job) if depth_of is not None else None
            rows.append({"src": str(job.src), "dst": str(job.dst), "depth": str(dpath) if dpath else ""})
    return rows, res


def build_dataset(
    rows: list[dict[str, str]] | Any,
    task: str,
    options: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    actors: int | None = None,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
    batch_size: int = 1,
    allow_large: bool = False,
) -> Any:
    """The lazy Ray Dataset of status rows: ``rows`` (a list, or a Ray Dataset) mapped by :class:`ImageMapper`.

    ``num_gpus`` > 0 makes GPU actors (``device`` defaults to "cuda"); else CPU actors with
    ``num_cpus`` each (torch threads = ``num_cpus``; ``device`` defaults to "cpu"). ``actors`` is the
    largest pool size (default: what the cluster's GPUs or CPUs allow); the pool starts at one actor
    and Ray Data grows it while there is work. Nothing runs until the dataset is consumed. ``allow_large``:
    as in :class:`ImageMapper`.
    """
    opts = _check_options(task, options)
    ray = _ray()
    if num_gpus < 0 or num_cpus <= 0:
        raise UsageError("num_gpus must be >= 0 and num_cpus > 0")
    if opts.get("device", "auto") == "auto":
        opts["device"] = "cuda" if num_gpus > 0 else "cpu"
    if actors is None:
        res = ray.cluster_resources()
        if num_gpus > 0:
            actors = int(res.get("GPU", 0) // num_gpus)
            if actors < 1:
                raise NotAvailableError(f"the Ray cluster has no GPUs for actors with num_gpus={num_gpus}")
        else:
            actors = max(1, int(res.get("CPU", 1) // num_cpus))
    if actors < 1:
        raise UsageError(f"actors must be >= 1, not {actors}")
    ds = rows if hasattr(rows, "map_batches") else ray.data.from_items(list(rows))
    return ds.map_batches(
        ImageMapper,
        fn_constructor_kwargs={
            "task": task,
            "options": opts,
            "overwrite": overwrite,
            "skip_existing": skip_existing,
            "threads": max(1, int(num_cpus)),
            "allow_large": allow_large,
        },
        batch_size=max(1, int(batch_size)),
        batch_format="numpy",
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=int(actors)),
    )


def process(
    task: str,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    options: dict[str, Any] | None = None,
    *,
    suffix: str = "out",
    ext: str = "auto",
    recursive: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    depth_of: Callable[[Any], Path | None] | None = None,
    address: str | None = None,
    actors: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    batch_size: int = 1,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    allow_large: bool = False,
) -> RayResult:
    """Run ``task`` ("upscale" | "deblur") over image files/folders on Ray; outputs as the CLI names them.

    Connects to ``address`` (e.g. "auto" or "ray://head:10001"; default: ``RAY_ADDRESS`` or a new
    local cluster) unless Ray is already initialised, and shuts down only what it started. The
    model options are checked once on the driver (CPU) before any actor starts, so a wrong model
    name or scale is one error, not one per actor. ``num_gpus`` per actor: None = 1 when the
    cluster has GPUs and ``options["device"]`` is "auto"/"cuda", else 0 (CPU actors with
    ``num_cpus`` each). Failures are reported through ``say``. ``allow_large`` reads images above the
    readers' pixel limit (``blurwise.io.image.MAX_PIXELS``).
    """
    opts = _check_options(task, options)
    ray = _ray()
    say = say or (lambda m: log.warning("%s", m))
    t0 = time.perf_counter()
    rows, res = plan_rows(
        task,
        inputs,
        output,
        suffix=suffix,
        ext=ext,
        recursive=recursive,
        overwrite=overwrite,
        skip_existing=skip_existing,
        depth_of=depth_of,
    )
    for src, err in res.failed:
        say(failure_line(src, err))
    if not rows:
        res.seconds = time.perf_counter() - t0
        return res
    _make_runner(task, {**opts, "device": "cpu", "compile": False})  # fail fast on the driver
    started = False
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
        started = True
    try:
        device = str(opts.get("device", "auto"))
        if num_gpus is None:
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            num_gpus = 1.0 if has_gpu and (device == "auto" or device.startswith("cuda")) else 0.0
        if device.startswith("cuda") and not num_gpus:
            raise UsageError("device cuda with Ray needs GPU actors (--gpus-per-actor > 0)")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress)
        ds = build_dataset(
            rows,
            task,
            opts,
            overwrite=overwrite,
            skip_existing=skip_existing,
            actors=actors,
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            batch_size=batch_size,
            allow_large=allow_large,
        )
        try:
            for row in ds.iter_rows():
                res.workers.add(str(row["worker"]))
                if row["status"] == "done":
                    res.done += 1
                elif row["status"] == "skipped":
                    res.skipped += 1
                else:
                    res.failed.append((str(row["src"]), str(row["error"])))
                    say(failure_line(str(row["src"]), str(row["error"])))
        except KeyboardInterrupt:
            res.interrupted = True  # outputs are written atomically: nothing is half-written
        except BlurwiseError:
            raise
        except Exception as exc:  # Ray wraps actor start-up failures; give the cause in one line
            raise BlurwiseError(f"Ray run failed: {_cause(exc)}") from None
    finally:
        if started:
            ray.shutdown()
        res.seconds = time.perf_counter() - t0
    return res


def _cause(exc: BaseException) -> str:
    """The innermost message of a (Ray-wrapped) exception, on one line."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    lines = [ln for ln in str(seen).strip().splitlines() if ln.strip()]
    return f"{type(seen).__name__}: {lines[-1] if lines else ''}".strip()
