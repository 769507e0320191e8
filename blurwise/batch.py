"""Folder processing: expand inputs, name outputs, and run a per-image function with overlapped I/O.

A reader thread decodes the next images and a writer thread encodes finished ones while the model
computes on the current image (bounded queues, so memory stays flat). Each image either succeeds,
is skipped (``skip_existing``), or fails with a one-line reason while the others go on. The first
Ctrl-C stops after the current image (outputs are written atomically, so nothing is half-written);
a second one aborts at once. The result is a :class:`BatchResult` with a summary table.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blurwise.errors import BlurwiseError, OutputError, UsageError
from blurwise.io.image import FORMATS, READ_EXTS, Image, output_exists, read_image, remove_stale_temps, write_images

log = logging.getLogger(__name__)

IMAGE_EXTS = tuple(FORMATS)  # writable: .png .jpg .jpeg .tif .tiff .bmp .webp
EXT_CHOICES = ("auto", "png", "jpg", "tif", "bmp", "webp")
Output = tuple[Path, "Image | Any"]  # (path, Image or array) for every file a job writes


@dataclass
class Job:
    """One input image and where its (main) output goes; ``error`` marks a job failed at planning."""

    src: Path
    dst: Path
    rel: Path  # path relative to its input root (for messages and mirrored folders)
    error: str | None = None


@dataclass
class BatchResult:
    """What a batch run did. ``exit_code``: 130 interrupted, 1 if any image failed, else 0."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    planned: list[tuple[Path, Path, str]] = field(default_factory=list)  # dry run: (src, dst, action)
    seconds: float = 0.0
    interrupted: bool = False
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    @property
    def images_per_second(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> str:
        """The summary table printed at the end of a run."""
        if self.dry_run:
            lines = [f"{src} -> {dst}: {action}" for src, dst, action in self.planned]
            n_write = sum(a == "would write" for _, _, a in self.planned)
            return "\n".join([*lines, f"dry run: {n_write} to write, {len(self.planned) - n_write} not; nothing done"])
        head = f"{'done':>6} {'skipped':>8} {'failed':>7} {'time':>9} {'images/s':>9}"
        row = (
            f"{len(self.done):>6} {len(self.skipped):>8} {len(self.failed):>7} "
            f"{self.seconds:>8.1f}s {self.images_per_second:>9.2f}"
        )
        tail = "  (interrupted: stopped after the current image)" if self.interrupted else ""
        return f"{head}\n{row}{tail}"


# --------------------------------------------------------------------------- planning


# Image formats that -o may name but blurwise does not write (read-only, or not images it makes).
NOT_WRITTEN_EXTS = (*(e for e in READ_EXTS if e not in IMAGE_EXTS), ".gif", ".jp2", ".exr", ".dng", ".raw", ".svg")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in READ_EXTS and not p.name.startswith(".")


def _inside(p: Path, folder: Path) -> bool:
    try:
        p.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def expand_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: Path | None = None,
    own_tag: str = "",
) -> list[tuple[Path, Path | None]]:
    """Input files as (file, root folder or None), sorted per input; folders expand to their images.

    Missing paths are kept (they fail later with a clear line); a file named twice (also through a folder)
    is taken once. Re-runs never process their own outputs: where ``exclude`` (the output folder) lies
    inside an input folder, the files under it are left out; where it is the input folder itself, the
    files whose names end with ``own_tag`` (the outputs' ``_suffix``) are. An output folder that holds the
    input folder (``-o .``) excludes nothing.
    """
    out: list[tuple[Path, Path | None]] = []
    seen: set[Path] = set()

    def add(f: Path, root: Path | None) -> None:
        key = f.resolve() if f.exists() else f.absolute()
        if key not in seen:
            seen.add(key)
            out.append((f, root))

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            same = exclude is not None and exclude.exists() and os.path.samefile(exclude, p)
            below = exclude is not None and not same and _inside(exclude, p)
            it = p.rglob("*") if recursive else p.iterdir()
            files = sorted(
                f
                for f in it
                if f.is_file()
                and _is_image(f)
                and not _hidden(f.relative_to(p))
                and not (below and _inside(f, exclude))  # type: ignore[arg-type]
                and not (same and own_tag and f.stem.endswith(own_tag))
            )
            for f in files:
                add(f, p)
        else:
            add(p, None)
    return out


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def output_ext(src: Path, ext: str, default: str | None = None) -> str:
    """Output extension (with dot) for ``src``: ``ext`` unless "auto", else ``default`` or the input's."""
    if ext != "auto":
        e = "." + ext.lower().lstrip(".")
    elif default:
        e = "." + default.lstrip(".")
    else:
        e = src.suffix.lower() if src.suffix.lower() in IMAGE_EXTS else ".png"  # e.g. HEIC/AVIF in -> PNG out
    if e not in IMAGE_EXTS:
        raise UsageError(f"unsupported output extension {e!r}; use one of {', '.join(EXT_CHOICES)}")
    return e


def plan_jobs(
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike | None,
    *,
    suffix: str = "out",
    ext: str = "auto",
    default_ext: str | None = None,
    recursive: bool = False,
) -> list[Job]:
    """Pair every input image with its output path.

    ``output`` is a folder (outputs keep the input names plus ``_suffix``, folder inputs mirror their
    tree under it) or, for a single input file, a file name with an image extension. A job whose
    output would replace its input, or collide with another job's output, gets an ``error``.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(output) if output is not None else Path("results")
    is_file_target = out.suffix.lower() in IMAGE_EXTS and not out.is_dir()
    if not out.is_dir() and out.suffix.lower() in NOT_WRITTEN_EXTS:  # not a folder name: a format we cannot write
        raise UsageError(f"-o {out}: cannot write {out.suffix} images; use one of {', '.join(EXT_CHOICES[1:])}")
    if is_file_target and ext != "auto" and FORMATS[output_ext(out, ext)] != FORMATS[out.suffix.lower()]:
        raise UsageError(f"-o {out} names a {out.suffix} file, but --ext asks for {ext}; give one of them")
    tag = f"_{suffix}" if suffix else ""
    files = expand_inputs(inputs, recursive=recursive, exclude=None if is_file_target else out, own_tag=tag)
    if not files:
        raise UsageError("no input images found (give files or folders with -i)")
    if is_file_target:
        if len(files) != 1 or files[0][1] is not None:
            raise UsageError(f"-o {out} names a file, but there are {len(files)} input images; give a folder")
        src = files[0][0]
        return [Job(src, out, Path(src.name), _self_error(src, out))]
    jobs: list[Job] = []
    seen: dict[Path, Path] = {}
    for src, root in files:
        rel = src.relative_to(root) if root is not None else Path(src.name)
        e = output_ext(src, ext, default_ext)
        dst = out / rel.parent / f"{rel.stem}{tag}{e}"
        key = dst.resolve() if dst.parent.exists() else dst.absolute()
        error = _self_error(src, dst)
        if error is None and key in seen:
            error = f"output {dst} would also be written for {seen[key]}; use --suffix or separate folders"
        seen.setdefault(key, src)
        jobs.append(Job(src, dst, rel, error))
    return jobs


def _self_error(src: Path, dst: Path) -> str | None:
    try:
        same = src.exists() and dst.exists() and os.path.samefile(src, dst)
    except OSError:
        same = False
    if same or src.absolute() == dst.absolute():
        return f"output would replace its input {src}; use another -o folder or a --suffix"
    return None


# --------------------------------------------------------------------------- running


class _StopFlag:
    """First Ctrl-C: stop after the current image. Second: abort (KeyboardInterrupt) now."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.event = threading.Event()
        self.say = say
        self.old: Any = None
        self.installed = False

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self.old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
            self.installed = True
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.say("interrupted: finishing the current image (Ctrl-C again to abort now)")

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.old)

    def is_set(self) -> bool:
        return self.event.is_set()


def failure_line(src: str | Path, msg: str) -> str:
    """The line reporting one image's failure: its path, then the reason. Errors raised for a file usually end
    with the path already (``...: PATH``, so they read well on their own); it is not said twice."""
    tail = f": {src}"
    return f"{src}: {msg[: -len(tail)] if msg.endswith(tail) else msg}"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BlurwiseError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_END = object()


def run_batch(
    jobs: list[Job],
    process: Callable[[Image, Job], list[Output]],
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    dry_run: bool = False,
    quiet: bool = False,
    prefetch: int = 2,
    say: Callable[[str], None] | None = None,
    read_kwargs: dict[str, Any] | None = None,
) -> BatchResult:
    """Run ``process(image, job) -> [(path, image), ...]`` over ``jobs`` with a reader and a writer thread.

    ``say`` receives one-line messages (failures, per-image notes); it defaults to logging. An
    existing output is skipped with ``skip_existing``, replaced with ``overwrite``, else the job
    fails (before any compute). ``dry_run`` only plans. Returns a :class:`BatchResult`.
    """
    say = say or (lambda m: log.warning("%s", m))
    res = BatchResult(dry_run=dry_run)
    todo: list[Job] = []
    for job in jobs:
        exists = False
        if not job.error:
            try:
                exists = output_exists(job.dst)
            except OutputError as exc:  # a name too long, a file where a folder should be: this job fails
                job.error = str(exc)
        if job.error:
            action = "fail"
        elif exists and skip_existing:
            action = "skip"
        elif exists and not overwrite:
            action = "fail"
            job.error = f"output exists (use --overwrite or --skip-existing): {job.dst}"
        else:
            action = "write"
        if dry_run:
            names = {"write": "would write", "skip": "would skip (exists)"}
            res.planned.append((job.src, job.dst, names.get(action, f"would fail: {job.error}")))
        elif action == "skip":
            res.skipped.append(job.src)
        elif action == "fail":
            res.failed.append((job.src, job.error or "failed"))
            say(failure_line(job.src, job.error or "failed"))
        else:
            todo.append(job)
    if dry_run or not todo:
        return res
    # Temp files a killed run (SIGKILL, power loss) left beside these outputs: hidden, never taken for outputs
    # or inputs, and deleted here once an hour old (a younger one may be another process's write in progress).
    for p in remove_stale_temps([job.dst for job in todo]):
        log.debug("removed a stale temp file: %s", p)

    from tqdm import tqdm

    t0 = time.perf_counter()
    lock = threading.Lock()
    bar = tqdm(
        total=len(todo), unit="img", disable=True if quiet else None, dynamic_ncols=True, leave=False, file=sys.stderr
    )

    def report(msg: str) -> None:
        if quiet:
            say(msg)
        else:
            with tqdm.external_write_mode(file=sys.stderr):  # keep the progress bar intact
                say(msg)

    def fail(job: Job, exc: BaseException | str) -> None:
        msg = exc if isinstance(exc, str) else _one_line(exc)
        if not isinstance(exc, str | BlurwiseError):
            log.debug("unexpected error on %s", job.src, exc_info=exc)
        with lock:
            res.failed.append((job.src, msg))
        report(failure_line(job.src, msg))

    stop_read = threading.Event()
    abort_write = threading.Event()
    inq: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    outq: queue.Queue = queue.Queue(maxsize=max(1, prefetch))

    def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        for job in todo:
            if stop_read.is_set():
                break
            try:
                item = (job, read_image(job.src, **(read_kwargs or {})), None)
            except Exception as exc:  # noqa: BLE001 - every failure is reported per image
                item = (job, None, exc)
            if not put(inq, item, stop_read):
                return
        put(inq, _END, stop_read)

    # The writer says when it has ended: Thread.is_alive() cannot be trusted after a join() that a Ctrl-C
    # interrupted (CPython 3.11 may then mark the thread stopped while it is still writing, so the run would
    # return with a temp file still open).
    writer_done = threading.Event()

    def writer() -> None:
        try:
            write_all()
        finally:
            writer_done.set()

    def write_all() -> None:
        while True:
            try:
                item = outq.get(timeout=0.1)
            except queue.Empty:
                if abort_write.is_set():
                    return
                continue
            if item is _END or abort_write.is_set():  # aborted (Ctrl-C while finishing): drop what is left
                return
            job, outputs = item
            # A job's outputs (the image, and a map or preview beside it) are written all or none: an existing one
            # fails the job before anything is written, and all are encoded to temp files before any is renamed
            # into place, so a full disk or a failed encode leaves every target as it was.
            try:
                existed = [Path(path) for path, _ in outputs if output_exists(Path(path))]
                if existed and not overwrite:
                    raise OutputError(f"output exists (use --overwrite or --skip-existing): {existed[0]}")
                write_images(outputs, overwrite=overwrite)
                with lock:
                    res.done.append(job.src)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one job's failure
                fail(job, exc)
            bar.update(1)

    rt = threading.Thread(target=reader, name="blurwise-reader", daemon=True)
    wt = threading.Thread(target=writer, name="blurwise-writer", daemon=True)
    rt.start()
    wt.start()
    try:
        with _StopFlag(report) as stop:
            while True:
                if stop.is_set():
                    res.interrupted = True
                    break
                try:
                    item = inq.get(timeout=0.2)
                except queue.Empty:
                    if not rt.is_alive() and inq.empty():
                        break
                    continue
                if item is _END:
                    break
                job, img, err = item
                if err is not None:
                    fail(job, err)
                    bar.update(1)
                else:
                    try:
                        outputs = process(img, job)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        fail(job, exc)
                        bar.update(1)
                    else:
                        while not writer_done.is_set():  # a dead writer (it should not die) must not hang the run
                            try:
                                outq.put((job, outputs), timeout=0.2)
                                break
                            except queue.Full:
                                continue
    except KeyboardInterrupt:
        res.interrupted = True
        raise
    finally:
        stop_read.set()
        # Images already computed are still written (atomically) before returning, even when interrupted. A Ctrl-C
        # now (the stop flag's handler is gone) drops the ones not started, but the file being written is finished
        # first: leaving the thread mid-write would leave its temp file behind.
        aborted = False
        while True:
            try:
                put(outq, _END, abort_write)
                while not writer_done.wait(timeout=0.2):
                    pass
                break
            except KeyboardInterrupt:
                abort_write.set()
                res.interrupted = aborted = True
        rt.join(timeout=1.0)
        bar.close()
        res.seconds = time.perf_counter() - t0
    if aborted:
        raise KeyboardInterrupt
    return res
