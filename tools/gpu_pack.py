"""Carry the training data to a lent GPU machine and back to PNG there.

The device tool sends at most 64 MiB with the working tree and ``../shared`` does not travel, so
``pack`` writes a compact copy into ``.gpu/data`` (git-ignored): the SR training images as lossless
WebP (pixel-identical), Set5 as PNG (validation), and the 240 fps GoPro frames as JPEG q95 without
chroma subsampling (the frames are themselves decoded video; frame averaging hides the difference).
``unpack`` restores PNG files with the original layout so ``BLURWISE_DATA`` can point there, and
``prerender`` fills the distillation's defocus render cache with all CPU cores.

``python tools/gpu_pack.py pack [--out .gpu/data]`` (here) /
``python3 tools/gpu_pack.py unpack .gpu/data /tmp/data`` and
``python3 tools/gpu_pack.py prerender blurwise/configs/distill_ebmsr_x4.toml`` (there).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

LOSSLESS = ("sr/train",)
AS_IS = ("sr/test/Set5",)
JPEG = ("deblur/gopro_frames",)


def _pack_one(job: tuple[Path, Path, str]) -> int:
    src, dst, kind = job
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        if kind == "webp":
            im.save(dst, lossless=True, quality=100, method=4)
        elif kind == "jpeg":
            im.convert("RGB").save(dst, quality=95, subsampling=0)
        else:
            im.save(dst)
    return dst.stat().st_size


def _ignore(out: Path) -> None:
    """List ``out``'s top folder in ``.git/info/exclude`` (a fresh clone has none), so the copy stays out of
    ``git status`` and travels only when named in the device tool's carry."""
    repo = Path(__file__).resolve().parents[1]
    try:
        rel = out.resolve().relative_to(repo)
    except ValueError:
        return  # outside the repository: nothing to ignore
    entry = f"/{rel.parts[0]}/"
    exclude = repo / ".git" / "info" / "exclude"
    if not (repo / ".git").is_dir():
        return
    exclude.parent.mkdir(exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if entry not in lines:
        exclude.write_text("\n".join([*lines, entry]) + "\n")


def pack(shared: Path, out: Path) -> None:
    """Write the compact copy of the training data under ``out``."""
    _ignore(out)
    jobs = []
    for subs, kind, ext in ((LOSSLESS, "webp", ".webp"), (JPEG, "jpeg", ".jpg"), (AS_IS, "png", ".png")):
        for sub in subs:
            for p in sorted((shared / sub).rglob("*.png")):
                jobs.append((p, (out / p.relative_to(shared)).with_suffix(ext), kind))
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        total = sum(ex.map(_pack_one, jobs, chunksize=4))
    print(f"{len(jobs)} files, {total / 2**20:.1f} MiB under {out}")


def _unpack_one(job: tuple[Path, Path]) -> None:
    src, dst = job
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").save(dst, compress_level=1)


def unpack(src: Path, out: Path) -> None:
    """PNG files with the shared data's layout under ``out``."""
    jobs = [(p, (out / p.relative_to(src)).with_suffix(".png")) for p in sorted(src.rglob("*")) if p.is_file()]
    with ProcessPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(_unpack_one, jobs, chunksize=4))
    print(f"{len(jobs)} files unpacked to {out}")


_DS = None


def _init(config: str) -> None:
    global _DS
    from blurwise.train.config import load_config
    from blurwise.train.data import build_dataset

    _DS = build_dataset(load_config(config), length=1)


def _render(job: tuple[int, int]) -> None:
    _DS.render(*job)


def prerender(config: str, workers: int) -> None:
    """Render every (image, variant) of the config's defocused-SR dataset into its disk cache."""
    _init(config)
    jobs = [(j, v) for j in range(len(_DS.files)) for v in range(_DS.variants)]
    jobs.sort(key=lambda jv: -_DS.files[jv[0]].stat().st_size)  # big images first: better balance
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(config,)) as ex:
        list(ex.map(_render, jobs, chunksize=1))
    print(f"{len(jobs)} renders cached")


def main() -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--out", default=".gpu/data")
    p = sub.add_parser("unpack")
    p.add_argument("src")
    p.add_argument("out")
    p = sub.add_parser("prerender")
    p.add_argument("config")
    p.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(Path(a.shared), Path(a.out))
    elif a.cmd == "unpack":
        unpack(Path(a.src), Path(a.out))
    else:
        prerender(a.config, a.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
