"""Degradations (defocus from depth, camera shake, frame averaging, bicubic SR pairs), datasets, eval sets.

Names are imported lazily (``from blurwise.data import render_defocus`` loads only what it needs;
torch is imported only by the dataset classes).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "data_root": "paths",
    "data_path": "paths",
    "render_defocus": "defocus",
    "thin_lens_coc": "defocus",
    "signed_coc": "defocus",
    "coc_to_sigma": "defocus",
    "sigma_to_coc": "defocus",
    "disk_kernel": "defocus",
    "synthetic_depth": "depth",
    "random_dof": "depth",
    "load_depth": "depth",
    "depth_samples": "depth",
    "blurred_fraction": "depth",
    "motion_kernel": "motion",
    "camera_trajectory": "motion",
    "apply_kernel": "motion",
    "frame_average": "motion",
    "add_noise": "motion",
    "jpeg": "motion",
    "levin_kernels": "motion",
    "make_sr_pair": "sr",
    "downscale_sigma": "sr",
    "mod_crop": "sr",
    "random_crop": "sr",
    "augment": "sr",
    "SRDataset": "datasets",
    "DefocusSRDataset": "datasets",
    "DeblurDataset": "datasets",
    "make_eval": "evalsets",
    "read_manifest": "evalsets",
    "load_defocus_item": "evalsets",
    "example_scene": "scene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'blurwise.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"blurwise.data.{mod}"), name)


def __dir__() -> list[str]:
    return __all__
