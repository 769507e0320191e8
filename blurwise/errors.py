"""Exceptions users can cause. Each carries a one-line message; the CLI maps them to exit codes."""

from __future__ import annotations


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
