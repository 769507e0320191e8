"""Where the shared data lives: ``$BLURWISE_DATA``, else ``../shared/data`` beside the repo checkout."""

from __future__ import annotations

import os
from pathlib import Path

from blurwise.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root(required: bool = False) -> Path:
    """Root of the shared data folder (it holds ``sr/``, ``deblur/``, ``defocus/``)."""
    env = os.environ.get("BLURWISE_DATA")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if required and not root.is_dir():
        raise InputError(f"shared data not found at {root}; set BLURWISE_DATA")
    return root


def data_path(*parts: str) -> Path:
    """A path inside the shared data folder (need not exist)."""
    return data_root().joinpath(*parts)
