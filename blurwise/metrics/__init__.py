"""Image quality (PSNR/SSIM on Y or RGB), MATLAB-compatible bicubic resizing and compute accounting.

``import blurwise.metrics`` does not import torch: the FLOPs helpers (``count_macs``,
``count_flops``, ``compute``) and ``imresize_torch`` are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from blurwise.metrics.imresize import imresize
from blurwise.metrics.quality import psnr, rgb_to_y, ssim

__all__ = ["psnr", "ssim", "rgb_to_y", "imresize", "imresize_torch", "count_macs", "count_flops", "compute"]

_LAZY = {
    "count_macs": "blurwise.metrics.flops",
    "count_flops": "blurwise.metrics.flops",
    "compute": "blurwise.metrics.flops",
    "Compute": "blurwise.metrics.flops",
    "imresize_torch": "blurwise.metrics.imresize",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blurwise.metrics' has no attribute {name!r}")
