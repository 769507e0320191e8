"""Exceptions users can cause. Each carries a one-line message; the CLI maps them to exit codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class BlurwiseError(Exception):
    """Base class of every error a user can cause; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(BlurwiseError):
    """Wrong flags or arguments (exit code 2, like argparse)."""

    exit_code = 2


class InputError(BlurwiseError):
    """A missing, unreadable, corrupt, empty or absurd input file or array."""


class OutputError(BlurwiseError):
    """An output that cannot be written (folder not writable, exists without --overwrite)."""


class ModelError(BlurwiseError):
    """Unknown model, wrong scale or task, unsafe or broken weights file."""


class NotAvailableError(BlurwiseError):
    """An optional feature whose extra package or checkpoint is not installed."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): what a one-line error quotes of
    a library's failure, whose message may run over many lines."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_main(prog: str | None, main: Callable[[], Any]) -> int:
    """Run a module's command line (``python -m ...``) the way ``blurwise`` runs its commands: an error a user can
    cause (a :class:`BlurwiseError`, or a path the system refuses) is one line on stderr, ``PROG: error: ...``
    (``error: ...`` without a ``prog``), and a non-zero exit code, not a traceback; Ctrl-C exits with 130."""
    import sys

    head = f"{prog}: " if prog else ""
    try:
        code = main()
    except BlurwiseError as exc:
        print(f"{head}error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"{head}error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # a message (training's: where its checkpoint is) is kept
        print(f"{head}interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    return int(code or 0)
