"""``blurwise evaluate``: PSNR/SSIM of a model (or a baseline) on a folder of test images.

Super-resolution follows the literature's protocol exactly: the HR image (8-bit RGB) is cropped to
a multiple of the scale, the LR image is MATLAB-bicubic ``imresize`` rounded to 8 bits, the output
is rounded to 8 bits, and PSNR/SSIM are taken on BT.601 luma with a border crop equal to the scale.
Deblurring follows its papers: PSNR/SSIM on RGB without border crop (luma figures reported beside).
Baselines always available: ``bicubic`` (SR: imresize up) and ``identity`` (deblur: the blurred input).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import InputError, ModelError, UsageError, first_line
from blurwise.metrics import imresize, psnr, ssim

__all__ = ["evaluate", "BASELINES", "IMAGE_EXTS", "list_images", "find_pairs", "load_rgb8"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BASELINES = {"sr": "bicubic", "deblur": "identity"}


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def load_rgb8(path: Path) -> np.ndarray:
    """An image as uint8 RGB HWC (grey replicated, alpha dropped), the way SR test sets are scored."""
    try:
        from blurwise.io import read_image
    except ImportError:  # pragma: no cover - io is part of the package; Pillow fallback for partial installs
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise InputError(f"cannot read {path.name}: {exc}") from None
    img = read_image(path)
    px = np.asarray(img.pixels, dtype=np.float32)
    if px.ndim == 2:
        px = px[:, :, None]
    if px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    return np.clip(np.round(px[:, :, :3].astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def find_pairs(data_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, blurred, sharp) triples from ``blur/`` + ``sharp/`` folders with the same file names.

    Accepts that layout directly in ``data_dir`` (the shared ``gopro_pairs``) or one level down, one
    sub-folder per sequence (the GoPro test set: ``SEQ/blur``, ``SEQ/sharp``); names are then ``SEQ/file``.
    """
    roots = (
        [data_dir] if (data_dir / "blur").is_dir() else sorted(p for p in data_dir.iterdir() if (p / "blur").is_dir())
    )
    if not roots:
        raise InputError(f"{data_dir} has no blur/ and sharp/ folders (nor sequence folders holding them)")
    pairs = []
    for root in roots:
        sharp_dir = root / "sharp"
        if not sharp_dir.is_dir():
            raise InputError(f"{root} has blur/ but no sharp/ folder")
        for b in list_images(root / "blur"):
            s = sharp_dir / b.name
            if not s.is_file():
                raise InputError(f"no sharp image for {b.name} in {sharp_dir}")
            name = b.name if root == data_dir else f"{root.name}/{b.name}"
            pairs.append((name, b, s))
    return pairs


def _sr_images(data_dir: Path) -> list[tuple[str, Path]]:
    """(name, HR image) of the images in ``data_dir``, else in its ``HR/`` or ``hr/`` folder."""
    files = list_images(data_dir)
    for sub in ("HR", "hr"):
        if not files and (data_dir / sub).is_dir():
            files = list_images(data_dir / sub)
    return [(p.name, p) for p in files]


def _manifest_items(folder: Path, task: str) -> list[tuple[Any, ...]] | None:
    """Items of an evaluation set written by ``blurwise data make-eval`` (``folder/manifest.json``), sorted by id:
    (id, HR image) for SR, (id, blurred, sharp) for deblurring; None when ``folder`` has no manifest."""
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        items = json.loads(mpath.read_text())["items"]
        items = sorted(items, key=lambda it: str(it["id"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{mpath}: not a readable evaluation-set manifest ({first_line(exc)})") from None
    keys = ("hr",) if task == "sr" else ("blur", "sharp")
    if not all(isinstance(it.get(k), str) for it in items for k in keys):
        other = "deblur" if task == "sr" else "sr"
        raise UsageError(
            f"{folder} is not an evaluation set for {task} (no {'/'.join(keys)} images); try --task {other}"
        )
    out = []
    for it in items:
        paths = [folder / it[k] for k in keys]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"{missing[0]} is listed in {mpath} but missing")
        out.append((str(it["id"]), *paths))
    return out


def _round8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _load(model: str | None, task: str, scale: int, device: Any) -> tuple[Any, Any, str]:
    """(model, ModelInfo, name) of the model to evaluate, checked against the task and scale."""
    from blurwise.models import default_variant, load_model

    name = model if model is not None else default_variant(task, scale).name
    net, info = load_model(name, device=device)
    if info.task != task:
        raise ModelError(f"model {info.name!r} is a {info.task} model, not {task}")
    if task == "sr" and info.scale != scale:
        raise ModelError(f"model {info.name!r} is x{info.scale}, asked to evaluate at x{scale}")
    return net, info, str(model) if model is not None else name


def _model_runner(net: Any, info: Any, scale: int, run_kw: dict[str, Any]) -> Callable:
    """uint8 RGB in -> uint8 RGB out through ``run_tiled`` (output rounded to 8 bits)."""
    import torch

    from blurwise.tiling import run_tiled

    if info.in_channels != 3:
        raise ModelError(f"model {info.name!r} takes {info.in_channels} input channels; evaluate needs an RGB model")

    def run(img8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(img8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        y = run_tiled(net, x, scale=scale, **run_kw)
        return _round8(y[0, :3].clamp(0, 1).permute(1, 2, 0).cpu().numpy())

    return run


def _mean(vals: list[float]) -> float:
    return float(np.mean(vals)) if vals else math.nan


def evaluate(
    task: str,
    data_dir: str | Path,
    *,
    scale: int = 4,
    model: str | None = None,
    route: str = "off",
    device: str = "auto",
    limit: int | None = None,
    tile: int = 0,
    tile_pad: int = 16,
    half: bool | str = False,
    progress: bool = False,
    stages: int | None = None,
    **route_kw: Any,
) -> dict[str, Any]:
    """Score ``model`` (registered name, weights path, or a baseline) on the images in ``data_dir``.

    ``task="sr"``: ``data_dir`` holds HR images (or an ``HR/`` or ``hr/`` folder); returns
    ``{"task","model","scale","n_images","psnr_y","ssim_y","per_image":[{"name","psnr_y","ssim_y"}]}``.
    ``task="deblur"``: ``data_dir`` holds ``blur/`` and ``sharp/`` (or sequence folders holding them);
    the result adds ``psnr``/``ssim`` on RGB (no crop) beside ``psnr_y``/``ssim_y``. A set written by
    ``blurwise data make-eval`` (a folder with ``manifest.json``: ``defocus-sr`` for SR, ``deblur-synth``
    and ``deblur-gopro`` for deblurring) is read through its manifest; names are then its item ids. ``model=None``
    evaluates the default model for the task and scale. ``route="auto"`` runs routed SR
    (``blurwise.routing.upscale_routed``, extra keyword arguments passed to it) where it can and, like
    ``blurwise.upscale``, the heavy model everywhere where it cannot (no light model for the heavy one;
    an image too small for a defocus map); ``route="on"`` raises instead. The result then has
    ``routing``: ``{"routed_images", "flops_fraction", "mean_route_fractions", "notes"}``, the figures
    over the routed images (None when none was), the notes saying why others were not. ``stages``: deblurring
    with LPRN, run that many of its stages (as ``blurwise deblur --stages``; the result says so). ``limit`` keeps
    the first N images by name. A ``seconds`` entry gives the total time spent in the model.
    """
    if task not in ("sr", "deblur"):
        raise UsageError(f"unknown task {task!r}; use sr or deblur")
    route = (route or "off").lower()
    if route not in ("off", "auto", "on"):
        raise UsageError(f"--route must be auto, on or off, got {route!r}")
    scale = int(scale) if task == "sr" else 1
    if scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale}")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise InputError(f"data folder not found: {folder}")
    if route != "off" and (task != "sr" or model == BASELINES["sr"]):
        raise UsageError("--route applies only to --task sr with a learned model")
    if route == "off" and route_kw:
        raise UsageError(f"routing options {sorted(route_kw)} need --route auto")
    if stages is not None and task != "deblur":
        raise UsageError("stages (--stages) apply to deblurring (--task deblur) with an LPRN model")
    run_kw = {"tile": tile, "tile_pad": tile_pad, "half": half}
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")

    items: list[Any] | None = _manifest_items(folder, task)
    if items is None:
        sets = sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file())
        if sets:
            pick = next((n for n in sets if n.endswith("-sr") == (task == "sr")), sets[0])
            raise InputError(f"{folder} holds evaluation sets ({', '.join(sets)}); pass one, e.g. {folder / pick}")
        items = _sr_images(folder) if task == "sr" else find_pairs(folder)
    if not items:
        raise InputError(f"no images found in {folder}" if task == "sr" else f"no blur/sharp pairs in {folder}")
    items = items[:limit] if limit else items

    baseline = model is not None and model.lower() == BASELINES[task]
    other = {"sr": "identity", "deblur": "bicubic"}[task]
    if model is not None and model.lower() == other:
        raise UsageError(f"'{other}' is a baseline for the other task; use '{BASELINES[task]}' for {task}")
    runner: Callable[[np.ndarray], np.ndarray]
    routed: list[Any] = []
    notes: list[str] = []
    if baseline:
        if stages is not None:
            raise UsageError(f"the {BASELINES[task]} baseline has no stages; stages (--stages) apply to LPRN models")
        model_name = BASELINES[task]
        runner = (lambda lr: imresize(lr, scale)) if task == "sr" else (lambda blur: blur)
    else:
        from blurwise.tiling import resolve_device

        dev = resolve_device(device)
        net, info, model_name = _load(model, task, scale, dev)
        if stages is not None:
            from blurwise.api import stage_kwargs

            run_kw["extra"] = stage_kwargs(net, info, stages)
        runner = heavy = _model_runner(net, info, scale, run_kw)
        if route != "off":
            from blurwise.api import find_light, routed_or_none

            # auto: None (heavy everywhere) without a light model, as blurwise.upscale does
            light = find_light(info, scale, dev, route, route_kw.pop("light", None), notes=notes, heavy=net)

            def routed_runner(lr: np.ndarray) -> np.ndarray:
                res = None
                if light is not None:
                    rgb = lr.astype(np.float32) / 255.0
                    kw = {"heavy": (net, info), "light": light, "scale": scale, "device": dev, **route_kw}
                    res = routed_or_none(rgb, route, notes, **kw)
                if res is None:  # route auto, image not routable: the heavy model everywhere
                    return heavy(lr)
                routed.append(res[1])
                return _round8(np.clip(res[0], 0, 1))

            runner = routed_runner

    per_image = []
    seconds = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"evaluate {model_name}", unit="img", disable=None)
    try:
        for item in items:
            if task == "sr":
                name, hr = item[0], load_rgb8(item[1])
                h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
                if h <= 2 * scale or w <= 2 * scale:
                    raise InputError(f"{name} is too small ({hr.shape[0]}x{hr.shape[1]}) for x{scale} evaluation")
                hr = hr[:h, :w]
                inp, ref = imresize(hr, 1 / scale), hr
            else:
                name, b, s = item
                inp, ref = load_rgb8(b), load_rgb8(s)
                if inp.shape != ref.shape:
                    raise InputError(f"{name}: blurred {inp.shape[:2]} and sharp {ref.shape[:2]} differ in size")
            t0 = time.perf_counter()
            out = runner(inp)
            seconds += time.perf_counter() - t0
            if out.shape != ref.shape:
                raise ModelError(f"{name}: output is {out.shape[:2]}, expected {ref.shape[:2]}")
            crop = scale if task == "sr" else 0
            rec: dict[str, Any] = {"name": name}
            if task == "deblur":
                rec["psnr"] = psnr(out, ref, y=False)
                rec["ssim"] = ssim(out, ref, y=False)
            rec["psnr_y"] = psnr(out, ref, crop=crop)
            rec["ssim_y"] = ssim(out, ref, crop=crop)
            per_image.append(rec)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    keys = ("psnr", "ssim", "psnr_y", "ssim_y") if task == "deblur" else ("psnr_y", "ssim_y")
    result: dict[str, Any] = {"task": task, "model": model_name, "scale": scale, "n_images": len(per_image)}
    if stages is not None:
        result["stages"] = int(stages)
    for k in keys:
        result[k] = _mean([r[k] for r in per_image])
    if route != "off" and not baseline:
        # over the routed images: FLOPs of the whole routed pipeline over those of the heavy model (summed
        # MACs) and the mean share of each route; the other images ran the heavy model everywhere (notes)
        total = sum(r.total_macs for r in routed)
        full = sum(r.full_heavy_macs for r in routed)
        shares: dict[str, float] = {}
        for r in routed:
            for k, v in r.fractions.items():
                shares[k] = shares.get(k, 0.0) + v / len(routed)
        result["routing"] = {
            "routed_images": len(routed),
            "flops_fraction": total / max(full, 1e-12) if routed else None,
            "mean_route_fractions": shares if routed else None,
            "notes": list(dict.fromkeys(notes)),
        }
    result["seconds"] = seconds
    result["per_image"] = per_image
    return result
