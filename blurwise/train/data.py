"""Data for the training loop: the task's dataset from :mod:`blurwise.data.datasets`, batches, validation sets.

The dataset classes belong to :mod:`blurwise.data`; this module only builds them from a config
(passing the keyword arguments their constructors accept), turns items into CHW tensors, and makes
the validation sets: Set5 (Y-PSNR, border = scale) for SR, Set5 with uniform Gaussian defocus for
distillation, and held-out *training-side* pairs for deblurring / defocus estimation.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blurwise.errors import InputError, UsageError
from blurwise.train.config import Config

# dataset class, item keys: model input(s), loss target
TASK_DATA = {
    "sr": ("SRDataset", ("lr",), "hr"),
    "distill": ("DefocusSRDataset", ("lr", "sigma_lr"), "hr"),
    "deblur": ("DeblurDataset", ("blur",), "sharp"),
    "defocus": ("DefocusSRDataset", ("lr",), "sigma_lr"),
}
TUPLE_KEYS = {
    "SRDataset": ("lr", "hr"),
    "DefocusSRDataset": ("lr", "hr", "sigma_lr"),
    "DeblurDataset": ("blur", "sharp"),
}


def dataset_name(cfg: Config) -> str:
    """The dataset class used for the config's task (``data.dataset`` or the task default)."""
    return cfg.data.dataset or TASK_DATA[cfg.task][0]


def task_keys(cfg: Config) -> tuple[tuple[str, ...], str]:
    """(input keys concatenated along channels, target key) for the config's task."""
    _, inputs, target = TASK_DATA[cfg.task]
    if cfg.data.input_key:
        inputs = tuple(k.strip() for k in cfg.data.input_key.split("+"))
    return inputs, cfg.data.target_key or target


def to_chw(x: Any) -> torch.Tensor:
    """A numpy HWC/HW array (uint8 or float in [0, 1]) or CHW tensor as a float32 CHW tensor."""
    if isinstance(x, torch.Tensor):
        t = x.float()
        return t[None] if t.ndim == 2 else t
    a = np.asarray(x)
    scale = 255.0 if a.dtype == np.uint8 else 65535.0 if a.dtype == np.uint16 else 1.0
    a = a.astype(np.float32) / scale if scale != 1.0 else a.astype(np.float32, copy=False)
    if a.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(a))[None]
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3, 4):
        a = a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


class ItemAdapter(torch.utils.data.Dataset):
    """Wraps a dataset so every item is ``{key: float CHW tensor, "index": int}``."""

    def __init__(self, dataset: Any, keys: Sequence[str]) -> None:
        self.dataset = dataset
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        if isinstance(item, dict):
            out = {k: to_chw(v) for k, v in item.items() if k in self.keys or k in ("lr", "hr", "sigma_lr")}
        else:
            out = {k: to_chw(v) for k, v in zip(self.keys, item, strict=False)}
        out["index"] = i
        return out


def _accepts(cls: Any) -> tuple[set[str], bool]:
    sig = inspect.signature(cls)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return set(sig.parameters), var_kw


def _data_path(r: str | Path) -> Path:
    from blurwise.data.paths import data_path

    p = Path(os.path.expanduser(str(r)))
    return p if p.is_absolute() else data_path(*p.parts)


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _min_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return min(im.size)


def split_images(cfg: Config, split: str, patch: int) -> list[Path] | None:
    """Image files for ``split``: the roots minus ``data.holdout`` (train) or the holdout files (val).

    ``None`` means "pass the roots unchanged" (no holdout, no ``max_images`` limit).
    """
    d = cfg.data
    if not d.roots or (not d.holdout and not d.max_images and split == "train"):
        return None
    files = []
    for r in d.roots:
        root = _data_path(r)
        if not root.exists():
            raise InputError(f"data root not found: {root} (data.roots are relative to the shared data folder)")
        found = _images(root)
        if not found:
            raise InputError(f"no images under {root} (data.roots)")
        files += found
    held = set()
    for pattern in d.holdout:
        base = _data_path(".")
        held.update(base.glob(pattern) if any(c in pattern for c in "*?[") else [_data_path(pattern)])
    held = {h.resolve() for h in held}
    if split == "train":
        files = [f for f in files if f.resolve() not in held]
    else:
        files = [f for f in files if f.resolve() in held]
    limit = d.max_images if split == "train" else cfg.val.max_images
    if limit:
        files = [f for f in files if _min_side(f) >= patch][:limit]
    if not files:
        why = "data.holdout" + (f"; only images of at least {patch} px are used" if limit else "")
        raise UsageError(f"no {split} images left under {', '.join(d.roots)} (check {why})")
    return files


def frames_view(cfg: Config, split: str) -> Path | None:
    """The frame-sequence folder for ``split``: ``data.frames`` itself, or (with ``data.holdout_frames``)
    a folder of links to the first frames (train) or the last ``holdout_frames`` frames (val) of
    every sequence, so the validation windows never overlap a training window."""
    d = cfg.data
    if not d.frames:
        return None
    root = _data_path(d.frames)
    if not root.is_dir():
        raise InputError(f"data.frames folder not found: {root}")
    if not d.holdout_frames:
        return root
    seqs = sorted(p for p in root.glob("*") if p.is_dir() and any(p.glob("*.png")))
    if not seqs:
        raise InputError(f"no frame sequences (folders of PNG frames) under {root} (data.frames)")
    view = cfg.run_dir() / "frames" / split
    for seq in seqs:
        frames = sorted(seq.glob("*.png"))
        keep = frames[: -d.holdout_frames] if split == "train" else frames[-d.holdout_frames :]
        out = view / seq.name
        out.mkdir(parents=True, exist_ok=True)
        names = {f.name for f in keep}
        for old in out.iterdir():
            if old.name not in names:
                old.unlink()
        for f in keep:
            link = out / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return view


def _dataset_class(name: str) -> Any:
    try:
        from blurwise.data import datasets
    except ImportError as exc:
        raise UsageError(f"blurwise.data.datasets is not available ({exc})") from None
    if not hasattr(datasets, name):
        raise UsageError(f"blurwise.data.datasets has no dataset {name!r}")
    return getattr(datasets, name)


def build_dataset(cfg: Config, *, length: int, split: str = "train", seed_offset: int = 0, patch: int = 0) -> Any:
    """Instantiate the task's dataset class with the config's arguments (those its constructor takes).

    ``data.roots`` go to the class's ``roots`` (or ``sharp_roots``) argument, ``data.frames`` to its
    ``gopro_root``; ``split="val"`` swaps in the held-out images/frames and ``val.kwargs``.
    """
    name = dataset_name(cfg)
    cls = _dataset_class(name)
    names, var_kw = _accepts(cls)
    d = cfg.data
    patch = patch or d.patch
    cand: dict[str, Any] = {
        "scale": d.scale,
        "patch": patch,
        "augment": d.augment if split == "train" else False,
        "seed": d.seed + seed_offset,
        "length": length,
        "split": split,
    }
    files = split_images(cfg, split, patch)
    roots = files if files is not None else [_data_path(r) for r in d.roots]
    if roots:
        cand["roots" if ("roots" in names or var_kw) else "sharp_roots"] = roots
    frames = frames_view(cfg, split)
    if frames is not None:
        cand["gopro_root"] = frames
    if d.cache_dir:
        from blurwise.train.checkpoint import runs_root

        cand["cache_dir"] = runs_root() / "render_cache" if d.cache_dir == "auto" else Path(d.cache_dir).expanduser()
    kwargs = {k: v for k, v in cand.items() if var_kw or k in names}
    extra = dict(d.kwargs)
    if split != "train":
        extra.update(cfg.val.kwargs)
    for k, v in extra.items():
        if isinstance(v, str) and (k.endswith("root") or k.endswith("_dir")):
            extra[k] = str(_data_path(v)) if k.endswith("root") else os.path.expanduser(v)
        elif isinstance(v, list) and k.endswith("roots"):
            extra[k] = [_data_path(x) for x in v]
    kwargs.update(extra)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot build {name}: {str(exc).splitlines()[0]}") from None


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops after the current step and saves."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: torch.utils.data.Dataset, sampler: Any, num_workers: int, device: torch.device):
    """DataLoader over ``sampler``'s index batches (workers seeded from the item index by the dataset)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=_ignore_sigint if num_workers else None,
    )


# --------------------------------------------------------------------------- validation sets


@dataclass
class ValItem:
    """One validation image: model input (CHW float), the reference (uint8 HWC) and a name."""

    name: str
    inputs: torch.Tensor  # 1 x C x h x w
    reference: np.ndarray  # uint8 HWC (or float32 HW for sigma maps)
    teacher_input: torch.Tensor | None = None


def _read_rgb_u8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _centre_crop(img: np.ndarray, size: int, mult: int) -> np.ndarray:
    h, w = img.shape[:2]
    if size > 0:
        th, tw = min(h, size), min(w, size)
        y0, x0 = (h - th) // 2, (w - tw) // 2
        img = img[y0 : y0 + th, x0 : x0 + tw]
    h, w = img.shape[:2]
    return img[: h - h % mult, : w - w % mult]


def _u8_to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()[None] / 255.0


def set5_items(cfg: Config) -> list[ValItem]:
    """Set5 (or ``val.set``) HR images cropped to a multiple of the scale, LR by MATLAB bicubic (uint8)."""
    from blurwise.data.paths import data_path
    from blurwise.metrics.imresize import imresize

    folder = data_path(*Path(cfg.val.set).parts)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".bmp", ".jpg", ".tif"))
    if not files:
        raise InputError(f"validation images not found in {folder}")
    if cfg.val.max_images:
        files = files[: cfg.val.max_images]
    s = cfg.data.scale
    items = []
    for f in files:
        hr = _centre_crop(_read_rgb_u8(f), cfg.val.crop, s)
        lr = imresize(hr, 1 / s)
        items.append(ValItem(f.stem, _u8_to_tensor(lr), hr))
    return items


def set5_defocus_items(cfg: Config) -> list[ValItem]:
    """Set5 with uniform Gaussian defocus at ``val.sigmas`` (HR px): input LR + sigma map, target defocused HR."""
    from scipy.ndimage import gaussian_filter

    from blurwise.metrics.imresize import imresize

    items = []
    s = cfg.data.scale
    for base in set5_items(cfg):
        hr = base.reference
        for sigma in cfg.val.sigmas:
            if sigma > 0:
                f = gaussian_filter(hr.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")
                hr_def = np.clip(np.round(f), 0, 255).astype(np.uint8)
            else:
                hr_def = hr
            lr = _u8_to_tensor(imresize(hr_def, 1 / s))
            smap = torch.full((1, 1, *lr.shape[-2:]), sigma / s)
            items.append(ValItem(f"{base.name}_s{sigma:g}", torch.cat([lr, smap], 1), hr_def, teacher_input=lr))
    return items


def holdout_items(cfg: Config, inputs: tuple[str, ...], target: str) -> list[ValItem]:
    """``val.n`` deterministic pairs from the task's dataset built with ``split="val"`` (training-side data)."""
    n = cfg.val.n
    ds = build_dataset(cfg, length=n, split="val", seed_offset=7919, patch=cfg.val.crop or cfg.data.patch)
    ad = ItemAdapter(ds, TUPLE_KEYS.get(dataset_name(cfg), ()))
    items = []
    for i in range(min(n, len(ad))):
        it = ad[i]
        x = torch.cat([it[k] for k in inputs], 0)[None]
        ref = it[target]
        if ref.shape[0] in (1,) and cfg.task == "defocus":
            refa = ref[0].numpy().astype(np.float32)
        else:
            refa = np.clip(np.round(ref.permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
        items.append(ValItem(f"holdout{i}", x, refa, teacher_input=it["lr"][None] if "lr" in it else None))
    return items


def val_kind(cfg: Config) -> str:
    """The validation used for the task when ``val.kind = "auto"``."""
    if cfg.val.kind != "auto":
        return cfg.val.kind
    return {"sr": "set5", "distill": "set5-defocus", "deblur": "holdout", "defocus": "holdout"}[cfg.task]
