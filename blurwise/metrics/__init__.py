"""Image quality (PSNR/SSIM on Y or RGB), MATLAB-compatible bicubic resizing and compute accounting.

``import blurwise.metrics`` imports neither torch nor scipy: the quality metrics (``psnr``, ``ssim``,
``rgb_to_y``; scipy), the FLOPs helpers (``count_macs``, ``count_flops``, ``compute``) and ``imresize_torch``
are loaded on first use, so a model or the routed SR that only resizes does not pay for them.
"""

from __future__ import annotations

from typing import Any

from blurwise.metrics.imresize import imresize

__all__ = ["psnr", "ssim", "rgb_to_y", "imresize", "imresize_torch", "count_macs", "count_flops", "compute"]

_LAZY = {
    "psnr": "blurwise.metrics.quality",
    "ssim": "blurwise.metrics.quality",
    "rgb_to_y": "blurwise.metrics.quality",
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
