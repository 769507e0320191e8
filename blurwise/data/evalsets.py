"""Write the fixed evaluation sets every benchmark measures on (``blurwise data make-eval --out DIR``).

Sets (each a folder with ``manifest.json``: source, parameters, seed and per-item figures):

* ``defocus-sr``: synthetic shallow depth of field (segment-based synthetic depth, focus on a
  foreground object or the background, max CoC <= 25 px, calibrated so 55-85% of the pixels have
  sigma > 1 px; the manifest holds the histogram of that fraction) on all Set14 (seeds 0-2), B100
  (seeds 0-1), the shared Urban100 subset (seeds 0-1) and the DIV2K samples (seeds 0-1); each item
  is ``hr/ID.png`` (the defocused HR, the SR target; H and W multiples of 12 so x2/x3/x4 LR images
  need no crop) and ``sigma/ID.tif`` (float32 Gaussian-sigma map in HR px). Plus the real defocused
  photos of ``defocus/real`` (focal stack, Karaali's images, the ``_F`` shots; resized with MATLAB
  bicubic to a long side <= 1024) with no map, and the CUHK defocus images of ``defocus/gt_maps``
  with their binary GT mask (``mask/ID.png``, 255 = blurred). The LR input of an item is
  ``make_sr_pair(hr, scale)`` and its LR map ``downscale_sigma(sigma, scale)`` (see
  :func:`load_defocus_item`).
* ``deblur-synth``: Set14 and B100, each blurred (reflective borders, sRGB values, no noise, 8-bit
  rounding) by 8 fixed camera-shake kernels (``kernels/k1..k8.npy``, 11-51 px, seed 0); plus
  Levin et al.'s real set (4 grey images x 8 real kernels, their blurred files copied as shipped).
* ``deblur-gopro``: the 14 real GoPro pairs of ``deblur/gopro_pairs`` (copied), other sequences than
  the training frames.

Size and cost of the full sets (estimated from a measured sample of 9 renders / 48 blurs on this
2-core CPU, 2026-11-26; one process): ``defocus-sr`` 302 renders (111 Mpx) + 13 photos, ~7.5
CPU-minutes, ~125 MB; ``deblur-synth`` 912 blurred images + Levin's 32, ~1.5 CPU-minutes, ~185 MB;
``deblur-gopro`` 14 pairs, seconds, 23 MB. In all ~9 CPU-minutes and ~335 MB; ``--jobs 2`` halves
the wall time on an idle 2-core machine. A render costs ~0.6 s for a B100 image, ~5 s for an
Urban100 one and ~7 s for a 2K DIV2K image. ``small=True`` writes a subset of the same items (same
files, same seeds): 2 renders, 2 real photos, 2 x 2 blurs, 2 Levin and 2 GoPro pairs, ~5 CPU-seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from blurwise.data.paths import data_path, data_root
from blurwise.errors import InputError, OutputError, run_main

log = logging.getLogger(__name__)

SETS = ("defocus-sr", "deblur-synth", "deblur-gopro")
MOD = 12  # HR sizes are multiples of 12: LR for x2, x3 and x4 without cropping
REAL_LONG_SIDE = 1024
SYNTH_SEEDS = {"Set14": (0, 1, 2), "B100": (0, 1), "Urban100": (0, 1), "DIV2K": (0, 1)}
KERNEL_SIZES = (11, 15, 19, 23, 27, 33, 41, 51)
KERNEL_SEED = 0
FORMAT_VERSION = 1


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(data_root().resolve()))
    except ValueError:
        return str(p)


def _item_seed(*parts) -> list[int]:
    """A seed sequence for one item from its identity (independent of order and of other items)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return [int.from_bytes(h[i : i + 4], "little") for i in range(0, 16, 4)]


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(a).save(tmp, compress_level=6)
    tmp.replace(path)


def _write_tiff(path: Path, arr: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tif")
    tifffile.imwrite(tmp, np.asarray(arr, np.float32), compression="zlib")
    tmp.replace(path)


def _histogram(values: list[float]) -> dict:
    counts, edges = np.histogram(np.asarray(values, float), bins=10, range=(0.0, 1.0))
    return {"bins": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def _synthetic_sources(small: bool) -> list[tuple[str, Path, tuple[int, ...]]]:
    """(subset, sharp image, seeds) of the synthetic defocus-sr items."""
    from blurwise.data.datasets import list_images

    roots = {
        "Set14": data_path("sr", "test", "Set14"),
        "B100": data_path("sr", "test", "B100"),
        "Urban100": data_path("sr", "test", "Urban100"),
        "DIV2K": data_path("sr", "train", "DIV2K6"),
    }
    out = []
    for subset, root in roots.items():
        if not root.is_dir():
            raise InputError(f"{root}: evaluation source missing (set BLURWISE_DATA)")
        files = list_images(root)
        seeds = SYNTH_SEEDS[subset]
        if small:
            if subset != "Set14":
                continue
            files, seeds = files[:2], seeds[:1]
        out.extend((subset, f, seeds) for f in files)
    return out


def _real_sources(small: bool) -> list[tuple[str, Path, Path | None]]:
    """(subset, photo, GT mask or None) of the real defocused photos."""
    real = data_path("defocus", "real")
    items: list[tuple[str, Path, Path | None]] = []
    for p in sorted((real / "hifst_focal_stack").glob("*.jpg")):
        items.append(("real-focal-stack", p, None))
    for p in sorted((real / "karaali_tip2018").glob("*.png")):
        items.append(("real-karaali", p, None))
    for p in sorted((real / "kwentar_blur_dataset").glob("*")):
        if p.stem.upper().endswith("_F"):
            items.append(("real-kwentar", p, None))
    gt = data_path("defocus", "gt_maps")
    for p in sorted((gt / "images").glob("out_of_focus*")):
        m = gt / "gt" / f"{p.stem}.png"
        items.append(("real-cuhk", p, m if m.is_file() else None))
    if small:
        items = [it for it in items if it[0] == "real-karaali"][:1] + [it for it in items if it[0] == "real-cuhk"][:1]
    return items


def _resize_long_side(img: np.ndarray, long_side: int, nearest: bool = False) -> np.ndarray:
    from blurwise.metrics.imresize import imresize

    h, w = img.shape[:2]
    if max(h, w) <= long_side:
        return img
    f = long_side / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    if nearest:
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.NEAREST))
    return imresize(img, size=size)


def _synthetic_item(job: tuple[str, Path, int, Path]) -> dict:
    """Render and write one synthetic defocus-sr item; returns its manifest entry (runs in workers too)."""
    from blurwise.data.datasets import read_rgb, render_item
    from blurwise.data.sr import mod_crop

    subset, src, seed, root = job
    t0 = time.process_time()
    img = mod_crop(read_rgb(src), MOD)
    iid = f"{subset}__{src.stem}__s{seed}"
    r = render_item(img, np.random.default_rng(_item_seed("defocus-sr", subset, src.name, seed)), scale=MOD)
    _write_png(root / "hr" / f"{iid}.png", r["hr"])
    _write_tiff(root / "sigma" / f"{iid}.tif", r["sigma_hr"])
    return {
        "id": iid,
        "subset": subset,
        "kind": "synthetic",
        "source": _rel(src),
        "seed": seed,
        "hr": f"hr/{iid}.png",
        "sigma": f"sigma/{iid}.tif",
        "mask": None,
        "size": list(r["hr"].shape[:2]),
        "params": {
            "depth": "synthetic",
            "focus_depth": round(float(r["focus_depth"]), 4),
            "max_coc": round(float(r["max_coc"]), 3),
            "psf": "gaussian",
            "n_layers": 128,
        },
        "blurred_fraction": round(float(r["fraction"]), 4),
        "sigma_mean": round(float(r["sigma_hr"].mean()), 4),
        "cpu_s": round(time.process_time() - t0, 2),
    }


def make_defocus_sr(out: Path, small: bool, progress: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """Write ``out/defocus-sr``; returns its manifest. ``jobs`` > 1 renders in that many processes."""
    from blurwise.data.datasets import read_rgb
    from blurwise.data.sr import mod_crop

    root = out / "defocus-sr"
    work = [(subset, src, seed, root) for subset, src, seeds in _synthetic_sources(small) for seed in seeds]
    items = []
    if jobs > 1 and len(work) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for entry in pool.map(_synthetic_item, work):
                items.append(entry)
                if progress:
                    progress(entry["id"])
    else:
        for job in work:
            items.append(_synthetic_item(job))
            if progress:
                progress(items[-1]["id"])
    for subset, src, mask in _real_sources(small):
        img = mod_crop(_resize_long_side(read_rgb(src), REAL_LONG_SIDE), MOD)
        iid = f"{subset}__{src.stem}"
        _write_png(root / "hr" / f"{iid}.png", img)
        entry = {
            "id": iid,
            "subset": subset,
            "kind": "real",
            "source": _rel(src),
            "seed": None,
            "hr": f"hr/{iid}.png",
            "sigma": None,
            "mask": None,
            "size": list(img.shape[:2]),
            "params": {"resize_long_side": REAL_LONG_SIDE, "resize": "matlab-bicubic"},
            "blurred_fraction": None,
        }
        if mask is not None:
            from blurwise.data.datasets import read_rgb as _rd

            m = _rd(mask)[:, :, 0]
            m = mod_crop(_resize_long_side(m, REAL_LONG_SIDE, nearest=True), MOD)
            m = np.where(m > 127, 255, 0).astype(np.uint8)
            _write_png(root / "mask" / f"{iid}.png", m)
            entry["mask"] = f"mask/{iid}.png"
            entry["blurred_fraction"] = round(float(np.mean(m > 0)), 4)
            entry["mask_source"] = _rel(mask)
        items.append(entry)
        if progress:
            progress(iid)
    synth_fr = [it["blurred_fraction"] for it in items if it["kind"] == "synthetic"]
    return {
        "name": "defocus-sr",
        "items": items,
        "blurred_fraction_histogram": _histogram(synth_fr),
        "blurred_fraction_threshold_px": 1.0,
        "notes": (
            "hr = defocused HR target (8-bit PNG, H and W multiples of 12); sigma = float32 TIFF, Gaussian sigma "
            "in HR px, sigma = max(CoC - 1, 0) / 4 with CoC the thin-lens circle-of-confusion diameter; "
            "LR = blurwise.data.sr.make_sr_pair(hr, scale) (MATLAB bicubic, uint8); LR map = "
            "downscale_sigma(sigma, scale). Real photos have no sigma; CUHK ones have a binary mask (255 = blurred)."
        ),
    }


def fixed_kernels() -> dict[str, np.ndarray]:
    """The 8 fixed camera-shake kernels of ``deblur-synth`` (k1..k8, sizes 11..51, seed 0)."""
    from blurwise.data.motion import motion_kernel

    return {
        f"k{i + 1}": motion_kernel(s, np.random.default_rng(_item_seed("kernel", KERNEL_SEED, i)))
        for i, s in enumerate(KERNEL_SIZES)
    }


def make_deblur_synth(out: Path, small: bool, progress: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """Write ``out/deblur-synth``; returns its manifest."""
    from blurwise.data.color import to_uint8
    from blurwise.data.datasets import list_images, read_rgb
    from blurwise.data.motion import apply_kernel

    root = out / "deblur-synth"
    kernels = fixed_kernels()
    if small:
        kernels = dict(list(kernels.items())[:2])
    for name, k in kernels.items():
        (root / "kernels").mkdir(parents=True, exist_ok=True)
        np.save(root / "kernels" / f"{name}.npy", k)
        _write_png(root / "kernels" / f"{name}.png", to_uint8(k / k.max()))
    items = []
    for subset in ("Set14", "B100"):
        files = list_images(data_path("sr", "test", subset))
        if small:
            if subset != "Set14":
                continue
            files = files[:2]
        for src in files:
            sharp = read_rgb(src)
            sid = f"{subset}__{src.stem}"
            _write_png(root / "sharp" / f"{sid}.png", sharp)
            for kname, k in kernels.items():
                iid = f"{sid}__{kname}"
                _write_png(root / "blur" / f"{iid}.png", to_uint8(apply_kernel(sharp, k)))
                items.append(
                    {
                        "id": iid,
                        "subset": subset,
                        "source": _rel(src),
                        "sharp": f"sharp/{sid}.png",
                        "blur": f"blur/{iid}.png",
                        "kernel": f"kernels/{kname}.npy",
                        "kernel_size": int(k.shape[0]),
                        "params": {"border": "symmetric", "space": "srgb", "noise": 0.0, "quantize": "uint8"},
                    }
                )
                if progress:
                    progress(iid)
    lev = data_path("deblur", "levin")
    lev_sharp = sorted((lev / "sharp").glob("im*.png"))
    lev_k = sorted((lev / "kernels").glob("kernel*.png"))
    if small:
        lev_sharp, lev_k = lev_sharp[:1], lev_k[:2]
    for p in lev_sharp + lev_k:
        dst = root / "levin" / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    for s in lev_sharp:
        for kp in lev_k:
            b = lev / "blurred" / f"{s.stem}_{kp.stem}_img.png"
            if not b.is_file():
                continue
            dst = root / "levin" / "blurred" / b.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(b, dst)
            items.append(
                {
                    "id": f"levin__{s.stem}__{kp.stem}",
                    "subset": "levin",
                    "source": _rel(b),
                    "sharp": f"levin/sharp/{s.name}",
                    "blur": f"levin/blurred/{b.name}",
                    "kernel": f"levin/kernels/{kp.name}",
                    "kernel_size": None,
                    "params": {"real_kernel": True, "grey": True},
                }
            )
    return {
        "name": "deblur-synth",
        "items": items,
        "kernels": {n: {"size": int(k.shape[0]), "file": f"kernels/{n}.npy"} for n, k in kernels.items()},
        "notes": (
            "blur = apply_kernel(sharp, k) (true convolution, symmetric borders, sRGB values, no noise) "
            "rounded to 8 bits; kernels are float32 .npy summing to 1 (PNG previews beside them). "
            "levin/: Levin et al. CVPR 2009 grey images, real kernels (PNG, normalise to sum 1) and blurred "
            "files as shipped."
        ),
    }


def make_deblur_gopro(out: Path, small: bool, progress: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """Write ``out/deblur-gopro`` (copies of the real pairs); returns its manifest."""
    import re

    src = data_path("deblur", "gopro_pairs")
    blurs = sorted((src / "blur").glob("*.png"))
    if not blurs:
        raise InputError(f"{src}: no GoPro pairs found (set BLURWISE_DATA)")
    if small:
        blurs = blurs[:2]
    root = out / "deblur-gopro"
    items = []
    for b in blurs:
        s = src / "sharp" / b.name
        if not s.is_file():
            continue
        for kind, p in (("blur", b), ("sharp", s)):
            dst = root / kind / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)
        m = re.match(r"(.+)_st_frame-(\d+)_n_avg-(\d+)$", b.stem)
        items.append(
            {
                "id": b.stem,
                "sequence": m.group(1) if m else None,
                "st_frame": int(m.group(2)) if m else None,
                "n_avg": int(m.group(3)) if m else None,
                "source": _rel(b),
                "blur": f"blur/{b.name}",
                "sharp": f"sharp/{s.name}",
            }
        )
        if progress:
            progress(b.stem)
    return {
        "name": "deblur-gopro",
        "items": items,
        "notes": "Real 240 fps GoPro pairs: blur = mean of n_avg frames, sharp = frame st+5 (copied as shipped).",
    }


_MAKERS = {"defocus-sr": make_defocus_sr, "deblur-synth": make_deblur_synth, "deblur-gopro": make_deblur_gopro}


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


GENERATOR = "blurwise.data.evalsets.make_eval"
_PATH_KEYS = ("hr", "sigma", "mask", "blur", "sharp", "kernel")


def _files(root: Path) -> list[str]:
    """Relative paths of everything under ``root`` but folders (links count as files: rmtree would drop them)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() or not p.is_dir())


def _listed(manifest: dict) -> set[str]:
    """The files a set's manifest says make_eval wrote (manifests without a ``files`` list: from the items)."""
    if isinstance(manifest.get("files"), list):
        return {"manifest.json", *map(str, manifest["files"])}
    files = {"manifest.json"}
    for it in manifest.get("items") or []:
        if isinstance(it, dict):
            files.update(it[k] for k in _PATH_KEYS if isinstance(it.get(k), str))
    for k in (manifest.get("kernels") or {}).values():
        if isinstance(k, dict) and isinstance(k.get("file"), str):
            files.update((k["file"], k["file"].rsplit(".", 1)[0] + ".png"))  # .npy and its preview
    return files


def _existing_set(root: Path, name: str) -> dict | None:
    """The manifest of the set blurwise wrote at ``root``; None if nothing is there (or only empty folders).

    Anything else raises a one-line OutputError and is left as it is: a file, a folder without a blurwise
    manifest, or a set folder holding files its manifest does not list.
    """
    if not root.exists() and not root.is_symlink():
        return None
    hint = "use another --out or remove it"
    if root.is_symlink() or not root.is_dir():
        raise OutputError(f"{root} exists and is not an evaluation-set folder; {hint}")
    files = _files(root)
    if not files:
        return None
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR or manifest.get("name") != name:
        raise OutputError(f"{root} is not an evaluation set written by blurwise (no blurwise manifest.json); {hint}")
    foreign = [f for f in files if f not in _listed(manifest)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputError(f"{root} holds files blurwise did not write ({', '.join(foreign[:3])}{more}); {hint}")
    return manifest


def _build(out: Path, name: str, small: bool, progress: Callable[[str], None] | None, jobs: int) -> dict:
    """Write set ``name`` in a hidden folder beside ``out/name`` and swap it in when complete; returns its manifest.

    An interrupted or failed build leaves ``out/name`` as it was. Call only once :func:`_existing_set` accepted
    ``out/name``; it is checked again just before the swap.
    """
    root = out / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        manifest = _MAKERS[name](tmp, small, progress, jobs=jobs)
        built = tmp / name
        manifest.update(
            {
                "format_version": FORMAT_VERSION,
                "small": small,
                "generator": GENERATOR,
                "data_root": str(data_root()),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_s": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
                "files": _files(built),
            }
        )
        (built / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _existing_set(root, name)  # raises if something not ours appeared there meanwhile
        if root.exists():
            root.rename(tmp / "old")  # ours (or empty folders only): deleted with tmp below
        built.rename(root)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_eval(
    out_dir: str | Path,
    small: bool = False,
    *,
    sets: list[str] | tuple[str, ...] | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> dict:
    """Write the evaluation sets under ``out_dir`` (one folder + ``manifest.json`` each); returns a summary.

    ``small``: a few items of each set (a subset of the full sets: same ids, same files), for tests and
    CI (< 1 minute on 2 cores). A set already there with the same ``small`` flag and format is kept;
    one of another size or format is replaced only with ``overwrite``. Only folders blurwise wrote are
    replaced: a set folder without a blurwise manifest, or holding files its manifest does not list,
    is refused with a one-line OutputError before anything is written, and nothing is deleted. Each
    set is built in a hidden folder beside its target and moved into place when complete. ``jobs`` > 1
    renders the defocus items in parallel processes (the files are identical: every item's randomness
    comes from its own identity). Summary: {set: {"items", "bytes", "seconds", "skipped", "replaced"}}.
    """
    out = Path(out_dir)
    sets = list(SETS if sets is None else sets)
    unknown = [s for s in sets if s not in _MAKERS]
    if unknown:
        raise InputError(f"unknown evaluation set(s): {', '.join(unknown)} (known: {', '.join(SETS)})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from e
    existing = {name: _existing_set(out / name, name) for name in sets}  # refuse before writing anything
    for name, old in existing.items():
        if old is None or overwrite:
            continue
        if old.get("format_version") != FORMAT_VERSION:
            why = f"was written in format {old.get('format_version')} (this blurwise writes {FORMAT_VERSION})"
        elif old.get("small") != small:
            why = f"holds the {'small' if old.get('small') else 'full'} set"
        else:
            continue
        raise OutputError(f"{out / name} {why}; use --overwrite to replace it, or another --out")
    summary = {}
    for name in sets:
        root, old = out / name, existing[name]
        if old is not None and not overwrite:
            log.info("%s: kept (manifest exists)", name)
            summary[name] = {"items": len(old.get("items", [])), "bytes": _dir_bytes(root), "skipped": True}
            continue
        try:
            manifest = _build(out, name, small, progress, jobs)
        except OSError as e:
            raise OutputError(f"{root}: cannot write the evaluation set ({e.strerror or e})") from e
        summary[name] = {
            "items": len(manifest["items"]),
            "bytes": _dir_bytes(root),
            "seconds": manifest["wall_s"],
            "skipped": False,
            "replaced": old is not None,
        }
        mb = summary[name]["bytes"] / 1e6
        log.info("%s: %d items, %.1f MB, %.1f s", name, len(manifest["items"]), mb, manifest["wall_s"])
    return summary


def read_manifest(root: str | Path, name: str) -> dict:
    """Load ``root/name/manifest.json`` (an evaluation set written by :func:`make_eval`)."""
    p = Path(root) / name / "manifest.json"
    if not p.is_file():
        raise InputError(f"{p}: no evaluation set there (run `blurwise data make-eval --out {root}`)")
    return json.loads(p.read_text())


def load_defocus_item(root: str | Path, item: dict, scale: int | None = None) -> dict:
    """Arrays of one ``defocus-sr`` item: hr uint8, sigma float32 (or None), mask uint8 (or None),
    and with ``scale``: lr uint8 and sigma_lr float32 (LR px), made with the set's convention."""
    import tifffile

    from blurwise.data.datasets import read_rgb
    from blurwise.data.sr import downscale_sigma, make_sr_pair

    base = Path(root) / "defocus-sr"
    out: dict = {"hr": read_rgb(base / item["hr"]), "sigma": None, "mask": None}
    if item.get("sigma"):
        out["sigma"] = tifffile.imread(base / item["sigma"]).astype(np.float32)
    if item.get("mask"):
        out["mask"] = read_rgb(base / item["mask"])[:, :, 0]
    if scale is not None:
        out["lr"], out["hr"] = make_sr_pair(out["hr"], scale)
        if out["sigma"] is not None:
            out["sigma_lr"] = downscale_sigma(out["sigma"], scale)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m blurwise.data.evalsets --out DIR [--small] [--sets a,b] [--overwrite]``."""
    from blurwise.argtypes import OneLineParser, positive

    ap = OneLineParser(prog="python -m blurwise.data.evalsets", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--small", action="store_true", help="a few items per set (tests, CI)")
    ap.add_argument("--sets", default=None, help=f"comma-separated subset of {','.join(SETS)}")
    ap.add_argument("--overwrite", action="store_true", help="rewrite sets that already exist")
    ap.add_argument("--jobs", type=positive, default=1, help="parallel render processes (default 1)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def make() -> None:
        sets = args.sets.split(",") if args.sets else None
        summary = make_eval(args.out, args.small, sets=sets, overwrite=args.overwrite, jobs=args.jobs)
        print(json.dumps(summary, indent=1))

    return run_main(ap.prog, make)


if __name__ == "__main__":
    raise SystemExit(main())
