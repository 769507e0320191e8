"""Argument parsing helpers shared by ``blurwise`` and the ``python -m blurwise....`` module tools.

:class:`OneLineParser` reports a usage error as one line, ``PROG: error: MSG (see 'PROG -h')``, instead of
argparse's usage block; the types (:func:`checked` and the ready-made :data:`positive`, :data:`nonneg`,
:data:`fraction`, :data:`saving`, :data:`sigma`, :func:`size`) refuse a bad value by saying what was expected
(``--steps: expected an integer >= 1, not '0'``) rather than argparse's ``invalid parse value: '0'``.

This module imports only the standard library, so building a parser loads no torch, numpy or image code.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

__all__ = ["OneLineParser", "checked", "fraction", "nonneg", "positive", "saving", "sigma", "size"]

T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (what went wrong and where the help is) instead of
    the usage block, which buries the message under a screenful of flags. Exits with status 2, as argparse does.

    Sub-command parsers made with ``add_subparsers().add_parser`` are of this class too (argparse's default)."""

    def error(self, message: str) -> NoReturn:  # argparse's hook for every usage error
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} -h')\n")


def checked(convert: Callable[[str], T], ok: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse ``type``: ``convert`` the text, accept the value when ``ok(value)``; otherwise (also for text
    that does not convert, which argparse would report as "invalid <function name> value") the error says
    ``expected EXPECTED, not 'TEXT'``. ``convert`` signals bad text with ValueError."""

    def parse(text: str) -> T:
        try:
            v: Any = convert(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}")
        return v

    return parse


positive = checked(int, lambda v: v >= 1, "an integer >= 1")
"""A count that must be at least 1 (steps, images, threads, workers)."""

nonneg = checked(int, lambda v: v >= 0, "an integer >= 0")
"""An integer that may be 0 (tile sizes where 0 means automatic, warm-up runs)."""

fraction = checked(float, lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1]")
"""A share in (0, 1], e.g. a FLOPs budget as a fraction of the heavy model."""

saving = checked(float, lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")
"""A share in [0, 1), e.g. the least FLOPs saving worth routing for."""

sigma = checked(float, lambda v: math.isfinite(v) and v >= 0.0, "a blur sigma in LR pixels, a finite number >= 0")
"""A blur sigma in LR pixels: finite and >= 0."""


def size(text: str) -> tuple[int, int]:
    """An argparse ``type`` for ``WIDTHxHEIGHT`` (e.g. ``1280x720``, case-insensitive), both > 0."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720, not {text!r}") from None
    return w, h
