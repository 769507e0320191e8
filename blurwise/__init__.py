"""blurwise: blur-aware image restoration (defocus-aware super-resolution, fast deblurring)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "upscale", "deblur", "defocus_map"]


def __getattr__(name: str):
    # The API is imported lazily so ``import blurwise`` stays cheap (no torch import at import time).
    if name in ("upscale", "deblur", "defocus_map"):
        from blurwise import api

        return getattr(api, name)
    raise AttributeError(f"module 'blurwise' has no attribute {name!r}")
