"""Training: one loop for every task (``sr``, ``distill``, ``deblur``, ``defocus``), configured by TOML.

``blurwise.train.run(config, device=, smoke=, resume=, overrides=)`` is the entry point the CLI
calls; ``python -m blurwise.train CONFIG`` (or ``torchrun ... -m blurwise.train CONFIG``) works too.
Importing this package does not import torch; the loop is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run", "export_checkpoint", "load_config", "RunResult", "Config"]

_LAZY = {
    "run": "blurwise.train.loop",
    "export_checkpoint": "blurwise.train.loop",
    "RunResult": "blurwise.train.loop",
    "load_config": "blurwise.train.config",
    "Config": "blurwise.train.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blurwise.train' has no attribute {name!r}")
