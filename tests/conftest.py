"""Shared test fixtures: small procedural images (no data files needed) and one torch thread."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep collection alive
        pass


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares ``w`` x ``h`` pixels and holds none: size checks see it, any decode fails."""
    from blurwise.io import png16

    def chunk(t: bytes, b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    return png16.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def synth_image(h: int = 48, w: int = 64, c: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture test image (HWC, or HW when c == 0) in the given dtype.

    Gradients, a disc edge and mild noise: something every codec and model sees as a natural-ish
    image, different per channel so orientation and channel-order bugs show.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    disc = ((y - h * 0.4) ** 2 + (x - w * 0.6) ** 2 < (min(h, w) * 0.25) ** 2).astype(np.float32)
    chans = []
    for k in range(max(c, 1)):
        base = 0.15 + 0.5 * ((x / max(w - 1, 1)) * (k % 2 == 0) + (y / max(h - 1, 1)) * (k % 2 == 1))
        chans.append(np.clip(base * 0.8 + 0.3 * disc * (k + 1) / max(c, 1) + rng.normal(0, 0.02, (h, w)), 0, 1))
    arr = np.stack(chans, axis=2).astype(np.float32)
    if c == 0:
        arr = arr[:, :, 0]
    if dtype == np.uint8:
        return np.round(arr * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(arr * 65535).astype(np.uint16)
    return arr.astype(dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def make_image():
    """Factory fixture: ``make_image(h, w, c, dtype, seed)`` -> procedural test image."""
    return synth_image


@pytest.fixture
def srgb_icc() -> bytes:
    """A real sRGB ICC profile (made by littleCMS through Pillow)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def image_folder(tmp_path):
    """A small folder tree of mixed images: PNG 8/16-bit, JPEG, TIFF 16-bit, RGBA, gray, in a subfolder."""
    from PIL import Image as PILImage

    from blurwise.io import write_image

    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    write_image(root / "a.png", synth_image(24, 32, 3, seed=1))
    write_image(root / "b16.png", synth_image(24, 32, 3, np.uint16, seed=2))
    PILImage.fromarray(synth_image(24, 32, 3, seed=3)).save(root / "c.jpg", quality=95)
    write_image(root / "sub" / "d.tif", synth_image(20, 28, 3, np.uint16, seed=4))
    write_image(root / "sub" / "e_rgba.png", synth_image(24, 32, 4, seed=5))
    write_image(root / "sub" / "f_gray.png", synth_image(24, 32, 0, seed=6))
    return root
