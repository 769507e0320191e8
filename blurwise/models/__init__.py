"""Model architectures (one file each) and the explicit registry that names them.

Importing this package registers every architecture; nothing else happens at import time.
"""

from __future__ import annotations

# Explicit registry: each import below registers one architecture file's variants.
from blurwise.models import defocus_cnn, ebmsr, edsr, lprn, nafnet, plainres, router, rrdb, safmn  # noqa: F401
from blurwise.models.registry import (
    ModelInfo,
    create_model,
    default_variant,
    get_variant,
    list_variants,
    load_model,
    save_weights,
    weights_fingerprint,
)

__all__ = [
    "ModelInfo",
    "create_model",
    "default_variant",
    "get_variant",
    "list_variants",
    "load_model",
    "save_weights",
    "weights_fingerprint",
]
