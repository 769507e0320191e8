"""Read and write images: PNG, JPEG, TIFF, BMP, WebP at 8/16 bits (and float TIFF), with metadata.

Everything is decoded to one in-memory form, :class:`Image`: float32 HWC pixels in [0, 1] with one
(gray) or three (RGB) channels, the alpha plane kept apart (models never see it), and what is needed
to write a faithful output: bit depth, ICC profile, EXIF (orientation already applied, tag reset
to 1). Writing is atomic (temp file in the same folder, then ``os.replace``) and never replaces an
existing file unless asked, so a crash or Ctrl-C cannot leave a half-written or clobbered image.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from blurwise.errors import InputError, NotAvailableError, OutputError, first_line
from blurwise.io import png16
from blurwise.limits import MAX_PIXELS

log = logging.getLogger(__name__)

FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}
_MAX_BITS = {"PNG": 16, "TIFF": 32, "JPEG": 8, "BMP": 8, "WEBP": 8}
HEIF_EXTS = (".heic", ".heif", ".hif")
READ_EXTS = (*FORMATS, ".avif", *HEIF_EXTS)  # what folder inputs pick up (HEIC needs pillow-heif)
_ORIENTATION = 0x0112
_pil_lock = threading.Lock()


@dataclass
class Image:
    """A decoded image: ``pixels`` float32 HWC in [0, 1] (C = 1 or 3) plus what writing needs back.

    ``bit_depth`` is 8 or 16 (32 for float TIFF); ``alpha`` is float32 HW or None; ``icc`` and
    ``exif`` are raw bytes (EXIF in Pillow's ``Exif\\0\\0`` form, orientation reset to 1). ``lossless``:
    a lossless WebP, written back losslessly.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    icc: bytes | None = None
    exif: bytes | None = None
    format: str | None = None
    path: Path | None = None
    lossless: bool = False  # the file was stored without loss in a format that also has a lossy mode (WebP)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels of ``pixels`` (1 or 3), alpha not counted."""
        return int(self.pixels.shape[2])

    def with_pixels(self, pixels: np.ndarray, alpha: np.ndarray | None = None) -> Image:
        """A copy with new pixels (and alpha), same metadata: what a model output becomes."""
        return replace(self, pixels=pixels, alpha=alpha)

    def to_array(self) -> np.ndarray:
        """float32 HWC with the alpha channel appended when present (C = 1..4)."""
        if self.alpha is None:
            return self.pixels
        return np.concatenate([self.pixels, self.alpha[:, :, None].astype(np.float32)], axis=2)


# --------------------------------------------------------------------------- conversions

FLOAT_MAX = 1.5  # largest float pixel value taken as [0, 1] data (sharpening, colour conversion overshoot)


def float_pixels_problem(a: np.ndarray) -> str | None:
    """What is wrong with float pixels meant to be in [0, 1], or None: NaN/inf, or values far above 1
    (0-255 data in a float array), which every model would take for an image hundreds of times too bright."""
    if a.size and not np.isfinite(a).all():
        return "the image has NaN or infinite values"
    top = float(a.max()) if a.size else 0.0
    if top > FLOAT_MAX:
        return f"float pixels must be in [0, 1] (8/16-bit images as uint8/uint16); this one reaches {top:g}"
    return None


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16/bool/float array -> float32 in [0, 1] (floats are passed through as float32)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise InputError(f"unsupported pixel type {arr.dtype} (use uint8, uint16 or float)")


def from_float(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """float [0, 1] -> uint8 (8), uint16 (16) rounded and clipped, or float32 (32)."""
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0)
    if bit_depth == 32:
        return arr.astype(np.float32)
    top = 255.0 if bit_depth == 8 else 65535.0
    out = np.clip(np.rint(arr * top), 0, top)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)


def bits_of(dtype: np.dtype) -> int:
    """Bit depth blurwise uses for an array dtype (8, 16, or 32 for floats)."""
    if dtype == np.uint8 or dtype == np.bool_:
        return 8
    if dtype == np.uint16:
        return 16
    return 32


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an HW[C] array so it displays upright."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


def _reset_orientation(exif: bytes | None) -> tuple[bytes | None, int]:
    """(EXIF bytes with orientation set to 1, the original orientation)."""
    if not exif:
        return None, 1
    from PIL import Image as PILImage

    try:
        ex = PILImage.Exif()
        ex.load(exif)
        orient = int(ex.get(_ORIENTATION, 1) or 1)
        if _ORIENTATION in ex:
            ex[_ORIENTATION] = 1
        return ex.tobytes(), orient
    except Exception:  # unreadable EXIF is dropped rather than failing the image
        log.debug("dropping unreadable EXIF block")
        return None, 1


def _exif_for_size(exif: bytes, w: int, h: int) -> bytes | None:
    """EXIF with the pixel dimensions (0xA002/0xA003) set to the written size, when it records them."""
    from PIL import Image as PILImage

    try:
        ex = PILImage.Exif()
        ex.load(exif)
        sub = ex.get_ifd(0x8769)
        if 0xA002 not in sub and 0xA003 not in sub:
            return exif
        sub[0xA002], sub[0xA003] = int(w), int(h)
        return ex.tobytes()
    except Exception:  # unreadable EXIF: write it unchanged rather than fail the image
        return exif


def _split(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """HWC with C in 1..4 -> (pixels HWC C=1|3, alpha HW | None), both float32."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    if c == 2:
        return arr[:, :, :1], arr[:, :, 1]
    if c == 4:
        return arr[:, :, :3], arr[:, :, 3]
    if c in (1, 3):
        return arr, None
    if c > 4:
        return arr[:, :, :3], arr[:, :, 3]  # extra samples beyond alpha are dropped
    raise InputError(f"unsupported channel count {c}")


# --------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"is a folder, not an image: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if size == 0:
        raise InputError(f"empty file (0 bytes): {path}")


def _check_size(path: Path, w: int, h: int, max_pixels: int | None) -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"zero-size image ({w}x{h}): {path}")
    if max_pixels and w * h > max_pixels:
        raise InputError(
            f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP > {max_pixels / 1e6:.0f} MP limit "
            f"(--allow-large, or allow_large=True in Python, reads it anyway): {path}"
        )


# TIFF photometric interpretation -> colour samples per pixel (the samples after them are "extra": alpha or other data)
_TIFF_COLOURS = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3}  # MinIsWhite, MinIsBlack, RGB, Palette, Separated (CMYK), YCbCr
_TIFF_JPEG = (6, 7, 34892)  # JPEG compressions: the decoder turns YCbCr into RGB
# IFD0 tags of a TIFF worth carrying as EXIF (make, model, date, artist, copyright); the others say how that file
# stores its pixels (sizes, strip offsets, compression...) or hold its own metadata (ImageJ, OME or tifffile
# descriptions), stale or wrong in any other file.
_TIFF_EXIF_TAGS = (0x010F, 0x0110, 0x0132, 0x013B, 0x8298)
_EXIF_IFDS = (0x8769, 0x8825)  # EXIF and GPS sub-IFDs


def _read_tiff(path: Path, max_pixels: int | None) -> Image:
    """A TIFF's first page through tifffile, photometric interpretation and extra samples applied.

    Raises InputError for what nothing can read, and other exceptions (a codec or colour space tifffile
    does not handle) for what Pillow may still read.
    """
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        if not tif.pages:
            raise InputError(f"TIFF has no image: {path}")
        page = tif.pages[0]
        axes = page.axes  # e.g. 'YX', 'YXS', 'SYX'
        shape = dict(zip(axes, page.shape, strict=False))
        _check_size(path, shape.get("X", 0), shape.get("Y", 0), max_pixels)
        photometric, name = int(page.photometric), getattr(page.photometric, "name", str(page.photometric))
        if photometric == 8 or (photometric == 6 and int(page.compression) not in _TIFF_JPEG):
            raise NotImplementedError(f"{name} TIFF not JPEG-compressed")  # Pillow converts CIELab and YCbCr
        ncolour = _TIFF_COLOURS.get(photometric)
        if ncolour is None:
            raise InputError(f"unsupported TIFF colour space {name}: {path}")
        extras = [int(e) for e in page.extrasamples]
        if photometric == 5 and (page.tags.valueof(332, 1) != 1 or page.samplesperpixel - len(extras) != 4):
            raise InputError(f"unsupported TIFF ink set (only CMYK separations are read): {path}")
        arr = page.asarray()
        tags = page.tags
        orient = int(tags["Orientation"].value) if "Orientation" in tags else 1
        icc = bytes(tags["InterColorProfile"].value) if "InterColorProfile" in tags else None
        bps, colormap = int(page.bitspersample), page.colormap
        has_exif = any(t in tags for t in (*_TIFF_EXIF_TAGS, *_EXIF_IFDS))
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if axes.startswith("S") and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"unsupported TIFF layout {axes} {arr.shape}: {path}")
    if arr.dtype not in (np.uint8, np.uint16, np.bool_) and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"unsupported TIFF sample type {arr.dtype} (use 8/16-bit or float): {path}")
    arr = _orient(arr, orient)
    if photometric == 3:
        if colormap is None:
            raise InputError(f"palette TIFF without a colormap: {path}")
        rgb = _palette_rgb(arr[:, :, 0], colormap)
        bits, colour, extra = bits_of(rgb.dtype), to_float(rgb), _tiff_float(arr[:, :, 1:], bps, path)
    else:
        bits, data = bits_of(arr.dtype), _tiff_float(arr, bps, path)
        colour, extra = data[:, :, :ncolour], data[:, :, ncolour:]
    # ExtraSamples: 1 = associated (premultiplied) alpha, 2 = unassociated alpha, 0 = unspecified data (dropped)
    at = next((i for i, kind in enumerate(extras) if kind in (1, 2) and i < extra.shape[2]), None)
    alpha = extra[:, :, at] if at is not None else None
    if photometric == 0:
        colour = 1.0 - colour
    elif photometric == 5:
        colour, icc, bits = _cmyk_to_rgb(colour, icc, bits, path)
    if alpha is not None and extras[at] == 1:  # un-premultiply
        a = alpha[:, :, None]
        colour = np.clip(np.divide(colour, a, out=np.zeros_like(colour), where=a > 0), 0.0, 1.0)
    return Image(colour, alpha, bits, icc, _tiff_exif(path) if has_exif else None, "TIFF", path)


def _tiff_float(a: np.ndarray, bps: int, path: Path) -> np.ndarray:
    """TIFF samples -> float32 [0, 1]: 2/4/12-bit... integers by their own maximum, floats with NaN/inf and
    values outside [0, 1] clipped."""
    if a.dtype.kind == "u" and bps not in (8, 16):
        return a.astype(np.float32) / np.float32(2**bps - 1)
    data = to_float(a)
    if a.dtype.kind == "f" and data.size:
        data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=0.0)
        if data.min() < 0 or data.max() > 1:
            log.warning("%s: float TIFF values outside [0, 1] are clipped", path.name)
            data = np.clip(data, 0.0, 1.0)
    return data


def _palette_rgb(index: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """Palette indices -> RGB through a TIFF colormap: uint16, or uint8 when every entry is an 8-bit value * 257."""
    cmap = np.asarray(colormap, dtype=np.uint16).reshape(3, -1).T
    if cmap.max() < 256:  # a colormap written with 8-bit values (libtiff takes it so too)
        cmap = cmap * np.uint16(257)
    rgb = cmap[np.minimum(index.astype(np.intp), len(cmap) - 1)]
    return rgb if (cmap % 257).any() else (rgb // 257).astype(np.uint8)


def _cmyk_to_rgb(cmyk: np.ndarray, icc: bytes | None, bits: int, path: Path) -> tuple[np.ndarray, bytes | None, int]:
    """CMYK float [0, 1] -> (RGB float, profile of the result, bit depth): through the embedded profile as for a
    CMYK JPEG (Pillow's littleCMS, 8 bits), else the plain conversion Pillow makes, (1 - C)(1 - K), at full depth."""
    if not icc:
        return (1 - cmyk[:, :, :3]) * (1 - cmyk[:, :, 3:]), None, bits
    from PIL import Image as PILImage

    if bits != 8:
        log.warning("%s: %d-bit CMYK TIFF is converted to RGB through its profile at 8 bits", path.name, bits)
    rgb, icc = _to_srgb(PILImage.fromarray(from_float(cmyk, 8), "CMYK"), icc)
    return to_float(np.asarray(rgb)), icc, 8


def _exif_of_tiff(ifd0) -> bytes | None:
    """EXIF for a TIFF whose main IFD Pillow read as ``ifd0`` (``getexif()``): make, model, date, artist and
    copyright and the EXIF and GPS sub-IFDs, or None when it has none; never the tags that lay out its pixels."""
    from PIL import Image as PILImage

    keep = {tag: ifd0[tag] for tag in _TIFF_EXIF_TAGS if tag in ifd0}
    # the sub-IFDs, less the interop IFD pointer (0xA005): an offset into the old file
    subs = {tag: {k: v for k, v in ifd0.get_ifd(tag).items() if k != 0xA005} for tag in _EXIF_IFDS}
    subs = {tag: sub for tag, sub in subs.items() if sub}
    if not keep and not subs:
        return None
    out = PILImage.Exif()
    out.update(keep)
    for tag, sub in subs.items():
        out.get_ifd(tag).update(sub)
    return out.tobytes()


def _tiff_exif(path: Path) -> bytes | None:
    """:func:`_exif_of_tiff` of a TIFF file (its header read by Pillow), None when Pillow cannot parse it."""
    try:
        with _open_pil(path, None) as im:
            return _exif_of_tiff(im.getexif())
    except Exception:  # the pixels are read; only the EXIF is lost
        log.debug("%s: TIFF EXIF unreadable, dropped", path.name)
        return None


def _read_png16(path: Path, head: bytes, max_pixels: int | None) -> Image | None:
    """16-bit colour PNGs Pillow would truncate to 8 bits; None when Pillow can do it."""
    try:
        hdr = png16.read_header(head)
    except png16.PngCorrupt:
        return None
    _check_size(path, hdr.width, hdr.height, max_pixels)
    if hdr.bit_depth != 16 or hdr.color_type not in (2, 4, 6):
        return None
    try:
        arr, info = png16.decode(path.read_bytes())
    except png16.PngUnsupported:
        log.warning("%s: interlaced 16-bit PNG is read at 8 bits", path.name)
        return None
    except png16.PngCorrupt as exc:
        raise InputError(f"corrupt or truncated image ({exc}): {path}") from None
    exif, orient = _reset_orientation(info.get("exif"))
    pixels, alpha = _split(to_float(_orient(arr, orient)))
    return Image(pixels, alpha, 16, info.get("icc"), exif, "PNG", path)


# Formats whose multi-frame files are animations (refused). Multi-frame JPEGs (MPO: a camera's preview or depth
# picture beside the photo) and TIFFs (thumbnails, pyramids) hold one image plus extras: their first frame is the image.
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")


def _open_pil(path: Path, max_pixels: int | None):
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    with _pil_lock, warnings.catch_warnings():
        # Our own limit (max_pixels) replaces Pillow's decompression-bomb guard.
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        old = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            im = PILImage.open(path)
        except UnidentifiedImageError:
            raise InputError(f"not an image (unknown or unsupported format): {path}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"corrupt image ({first_line(exc)}): {path}") from None
        finally:
            PILImage.MAX_IMAGE_PIXELS = old
    _check_size(path, im.width, im.height, max_pixels)
    if im.format in ANIMATED_FORMATS and getattr(im, "is_animated", False):
        # Reading the first frame would write a still image and silently drop the rest of the animation.
        n = getattr(im, "n_frames", 0)
        im.close()
        raise InputError(f"animated {im.format} ({n} frames): only still images are supported: {path}")
    return im


def _to_srgb(im, icc: bytes | None):
    """Non-RGB colour spaces (CMYK, Lab...) -> sRGB, through the embedded profile when there is one.

    The returned profile describes the returned pixels (sRGB after a managed conversion, none after a
    plain one), so a CMYK profile is never attached to RGB output.
    """
    from PIL import ImageCms

    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            return out, ImageCms.ImageCmsProfile(dst).tobytes()
        except Exception:  # a broken profile: fall back to the plain conversion
            log.debug("colour-managed conversion failed; plain conversion to RGB")
    return im.convert("RGB"), None


def _register_heif(path: Path) -> None:
    try:
        import pillow_heif
    except ImportError:
        raise NotAvailableError(
            f"reading HEIC/HEIF needs the optional pillow-heif package (pip install 'blurwise[heif]'): {path}"
        ) from None
    pillow_heif.register_heif_opener()


def _pil_to_array(im, path: Path) -> tuple[np.ndarray, int]:
    """Convert a loaded Pillow image to an HWC uint8/uint16/float32 array and its bit depth."""
    mode = im.mode
    if mode in ("P", "L", "RGB") and "transparency" in im.info:  # a palette entry or a colour key marks transparency
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif mode == "La":
        im = im.convert("LA")
    mode = im.mode
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[:, :, None], 16
    if mode == "I":
        a = np.asarray(im)
        if a.min() >= 0 and a.max() <= 65535:
            return a.astype(np.uint16)[:, :, None], 16
        raise InputError(f"unsupported 32-bit integer image: {path}")
    if mode == "F":
        return np.asarray(im, dtype=np.float32)[:, :, None], 32
    if mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    a = np.asarray(im)
    return (a[:, :, None] if a.ndim == 2 else a), 8


def read_image(path: str | os.PathLike, *, allow_large: bool = False, max_pixels: int = MAX_PIXELS) -> Image:
    """Decode an image file into an :class:`Image` (float32 HWC in [0, 1], alpha apart, metadata kept).

    Handles PNG, JPEG, TIFF (8/16-bit and float, via tifffile), BMP and WebP; gray, gray+alpha, RGB,
    RGBA, palette and 16-bit gray. EXIF orientation is applied so the pixels are upright. Every
    failure a user can cause (missing, empty, not an image, corrupt or truncated, zero-size, an animation,
    more than ``max_pixels`` unless ``allow_large``) raises a one-line :class:`InputError`.
    """
    path = Path(path)
    _check_file(path)
    limit = None if allow_large else max_pixels
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or first_line(exc)}") from None
    tiff_problem = None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            return _read_tiff(path, limit)
        except InputError:
            raise
        except Exception as exc:  # a compression or colour space tifffile cannot decode: try Pillow
            tiff_problem = first_line(exc)
            log.debug("tifffile failed on %s (%s); trying Pillow", path.name, tiff_problem)
    if head.startswith(png16.SIGNATURE):
        img = _read_png16(path, head, limit)
        if img is not None:
            return img
    from PIL import ImageOps

    if path.suffix.lower() in HEIF_EXTS:
        _register_heif(path)
    im = _open_pil(path, limit)
    try:
        with im:
            im.load()  # force the full decode: truncated/corrupt data fails here, not later
            fmt = im.format
            icc = im.info.get("icc_profile") or None
            try:
                if fmt == "TIFF":  # getexif() is then the whole main IFD, strip offsets and all
                    exif_raw = _exif_of_tiff(im.getexif())
                else:
                    exif_raw = im.info.get("exif") or (im.getexif().tobytes() if im.getexif() else None)
            except Exception:
                exif_raw = None
            src_bits = int(np.max(im.tag_v2.get(258, 8))) if fmt == "TIFF" else 8  # BitsPerSample
            im = ImageOps.exif_transpose(im) or im
            if im.mode in ("CMYK", "LAB", "YCbCr", "HSV"):
                im, icc = _to_srgb(im, icc)
            arr, bits = _pil_to_array(im, path)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"corrupt or truncated image ({first_line(exc)}): {path}") from None
    if bits < src_bits:
        log.warning("%s: %d-bit TIFF read at %d bits by Pillow (tifffile: %s)", path.name, src_bits, bits, tiff_problem)
    exif, _ = _reset_orientation(exif_raw)
    pixels, alpha = _split(to_float(arr))
    return Image(pixels, alpha, bits, icc, exif, fmt, path, lossless=fmt == "WEBP" and _webp_lossless(head))


def _webp_lossless(head: bytes) -> bool:
    """Whether a WebP file's first bytes say lossless (a VP8L bitstream, alone or as the image of an extended
    file: the VP8X header's 18 bytes come first, then the image chunk; animations are refused before this)."""
    return head[12:16] == b"VP8L" or (head[12:16] == b"VP8X" and head[30:34] == b"VP8L")


# --------------------------------------------------------------------------- writing


def format_of(path: str | os.PathLike) -> str:
    """Output format for a file name by extension (PNG, JPEG, TIFF, BMP, WEBP) or OutputError."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise OutputError(f"unsupported output extension {ext or '(none)'!r}; use one of png, jpg, tif, bmp, webp")
    return FORMATS[ext]


def _as_image(img: Image | np.ndarray) -> Image:
    if isinstance(img, Image):
        return img
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise OutputError(f"cannot write an array of shape {arr.shape} as an image")
    if arr.ndim == 3 and arr.shape[2] > 4:
        hint = " (channels first? give HWC)" if arr.shape[0] <= 4 else ""
        raise OutputError(f"cannot write an array of shape {arr.shape} as an image: 1 to 4 channels last{hint}")
    bits = bits_of(arr.dtype)
    data = to_float(arr)
    problem = float_pixels_problem(data) if np.issubdtype(arr.dtype, np.floating) else None
    if problem:
        raise OutputError(f"cannot write: {problem}")
    pixels, alpha = _split(data)
    return Image(pixels, alpha, bits)


JPEG_EXIF_MAX = 65533  # a JPEG APP1 segment's payload limit, less its length field: larger EXIF cannot be stored


def _encode(img: Image, fmt: str, bits: int, quality: int, f, path: Path | None = None) -> None:
    from PIL import Image as PILImage

    pixels, alpha = img.pixels, img.alpha
    if alpha is not None and fmt in ("JPEG", "BMP"):
        log.warning("%s cannot store alpha; the alpha channel is dropped%s", fmt, f": {path}" if path else "")
        alpha = None
    arr = from_float(pixels, bits)
    if alpha is not None:
        arr = np.concatenate([arr, from_float(alpha, bits)[:, :, None]], axis=2)
    if fmt == "TIFF":
        import tifffile

        extratags = [(34675, 7, len(img.icc), img.icc, True)] if img.icc else []
        photometric = "rgb" if arr.shape[2] >= 3 else "minisblack"
        extrasamples = [2] if alpha is not None else None  # 2 = unassociated alpha
        tifffile.imwrite(
            f,
            arr if arr.shape[2] > 1 else arr[:, :, 0],
            photometric=photometric,
            extrasamples=extrasamples,
            compression="zlib",
            extratags=extratags,
        )
        return
    if fmt == "PNG" and bits == 16:
        f.write(png16.encode(arr, icc=img.icc, exif=img.exif))
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    pil = PILImage.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, mode)
    kw: dict = {}
    if img.icc:
        kw["icc_profile"] = img.icc
    if img.exif and fmt in ("PNG", "JPEG", "WEBP"):
        if fmt == "JPEG" and len(img.exif) > JPEG_EXIF_MAX:
            log.warning(
                "EXIF of %d bytes does not fit a JPEG segment (%d); it is not written", len(img.exif), JPEG_EXIF_MAX
            )
        else:
            kw["exif"] = img.exif
    if fmt == "JPEG":
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2)
        if mode == "LA":
            pil = pil.convert("L")
    elif fmt == "WEBP":
        kw.update({"lossless": True, "quality": 100} if img.lossless else {"quality": quality})
        if mode in ("L", "LA"):
            pil = pil.convert("RGBA" if mode == "LA" else "RGB")

    elif fmt == "PNG":
        kw.update(compress_level=6)
    pil.save(f, format=fmt, **kw)


def write_image(
    path: str | os.PathLike,
    img: Image | np.ndarray,
    *,
    overwrite: bool = False,
    bit_depth: int | None = None,
    quality: int = 95,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Write ``img`` (an :class:`Image`, or an HW/HWC uint8/uint16/float array) to ``path`` atomically.

    The format follows the extension. The bit depth is ``bit_depth``, else the image's, lowered to
    what the format holds (JPEG/BMP/WebP 8, PNG 16, TIFF 16 or float). ``icc``/``exif`` override the
    image's metadata. The data goes to a hidden temp file in the target folder (``.NAME.XXXXXXXX.tmp``)
    that is renamed over the target only when complete; an existing file raises :class:`OutputError`
    unless ``overwrite``. Every failure to write (disk full, read-only or missing folder, a name too
    long) is an :class:`OutputError` with one line, and leaves neither a partial file nor a temp file.
    """
    path = Path(path)
    tmp = stage_image(path, img, overwrite=overwrite, bit_depth=bit_depth, quality=quality, icc=icc, exif=exif)
    commit_staged(tmp, path, overwrite=overwrite)
    return path


def write_images(items: list[tuple[str | os.PathLike, Image | np.ndarray]], *, overwrite: bool = False) -> list[Path]:
    """Write several images (``[(path, image), ...]``, e.g. a map and its preview) all or none.

    Every image is encoded to its temp file first; only when all of them are complete are they renamed
    into place, so a full disk, an error or Ctrl-C while encoding leaves every target as it was (no
    mix of new and old files). Raises :class:`OutputError` like :func:`write_image`.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            staged.append((stage_image(path, data, overwrite=overwrite), Path(path)))
        for _, path in staged:
            refuse_existing(path, overwrite)  # appeared while we were encoding
        done: list[Path] = []
        for tmp, path in staged:
            commit_staged(tmp, path, overwrite=True)
            done.append(path)
        return done
    except BaseException:
        for tmp, _ in staged:
            _unlink(str(tmp))
        raise


def stage_image(
    path: str | os.PathLike,
    img: Image | np.ndarray,
    *,
    overwrite: bool = False,
    bit_depth: int | None = None,
    quality: int = 95,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Encode ``img`` for ``path`` into a hidden temp file beside it and return the temp file's path.

    The first half of :func:`write_image` (same arguments and checks); :func:`commit_staged` renames
    the temp file into place. On any failure the temp file is removed and :class:`OutputError` raised.
    """
    path = Path(path)
    fmt = format_of(path)
    image = _as_image(img)
    if icc is not None or exif is not None:
        image = replace(image, icc=icc if icc is not None else image.icc, exif=exif if exif is not None else image.exif)
    if image.exif:
        image = replace(image, exif=_exif_for_size(image.exif, image.width, image.height))
    bits = int(bit_depth or image.bit_depth or 8)
    if bits not in (8, 16, 32):
        raise OutputError(f"unsupported bit depth {bits} (use 8, 16 or 32)")
    bits = min(bits, _MAX_BITS[fmt])
    refuse_existing(path, overwrite)
    if path.is_dir():
        raise OutputError(f"output is a folder: {path}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _file_in_the_way(folder)
        if blocker is not None:
            raise OutputError(f"cannot create output folder {folder}: {blocker} is a file") from None
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or first_line(exc)}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise OutputError(f"output folder not writable: {folder} ({exc.strerror or first_line(exc)})") from None
    try:
        os.close(fd)
        with open(tmp, "wb") as f:  # a named handle: tifffile wants a file name
            _encode(image, fmt, bits, quality, f, path)
        usual_permissions(tmp)  # mkstemp makes 0600
    except OSError as exc:
        _unlink(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None
    except BaseException:
        _unlink(tmp)
        raise
    return Path(tmp)


def commit_staged(tmp: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Rename a temp file made by :func:`stage_image` over ``path`` (the temp file is removed if that fails)."""
    path = Path(path)
    try:
        refuse_existing(path, overwrite)  # appeared while we were encoding
        os.replace(tmp, path)
    except OutputError:
        _unlink(str(tmp))
        raise
    except OSError as exc:
        _unlink(str(tmp))
        raise OutputError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None
    except BaseException:
        _unlink(str(tmp))
        raise
    return path


# --------------------------------------------------------------------------- temp files

TEMP_SUFFIX = ".tmp"
_NAME_MAX = 255  # bytes in one file name on Linux/macOS file systems
_TEMP_RANDOM = 8  # the characters tempfile.mkstemp adds between prefix and suffix
STALE_TEMP_SECONDS = 3600.0  # a temp file untouched this long is a killed run's leftover


def temp_prefix(name: str) -> str:
    """The prefix of the hidden temp file a write to ``name`` goes through: ``.NAME.``, with NAME cut (at a
    character boundary) so that the whole temp name fits the 255-byte file name limit. A valid output name
    must never fail because its temp file's name would be too long."""
    room = _NAME_MAX - len(TEMP_SUFFIX) - _TEMP_RANDOM - 2
    while len(os.fsencode(name)) > room:  # bytes, not characters: 'é' takes two
        name = name[:-1]
    return f".{name}."


def is_temp_of(entry: str, name: str) -> bool:
    """Whether the file name ``entry`` is a temp file of a write to ``name`` (``.NAME.XXXXXXXX.tmp``)."""
    prefix = temp_prefix(name)
    return (
        entry.startswith(prefix)
        and entry.endswith(TEMP_SUFFIX)
        and len(entry) == len(prefix) + _TEMP_RANDOM + len(TEMP_SUFFIX)
    )


def remove_stale_temps(paths: list[Path] | list[str], older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete the temp files a killed run (SIGKILL, power loss) left beside ``paths`` (output files), if not
    modified for ``older_than`` seconds: a younger one may be another process's write in progress. Returns
    what was deleted; errors (a folder that cannot be listed) are ignored."""
    import time

    by_folder: dict[Path, set[str]] = {}
    for p in map(Path, paths):
        by_folder.setdefault(p.parent, set()).add(p.name)
    now = time.time()
    removed: list[Path] = []
    for folder, names in by_folder.items():
        try:
            entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(TEMP_SUFFIX)]
        except OSError:
            continue
        for e in entries:
            if not any(is_temp_of(e.name, n) for n in names):
                continue
            try:
                if e.is_file(follow_symlinks=False) and now - e.stat(follow_symlinks=False).st_mtime > older_than:
                    os.unlink(e.path)
                    removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """The one-line OutputError every writer gives when ``path`` exists and ``overwrite`` was not asked for (and,
    overwrite or not, for a path the system refuses to look up: :func:`output_exists`)."""
    if output_exists(path) and not overwrite:
        raise OutputError(f"output exists (use --overwrite to replace it): {path}")


def output_exists(path: str | os.PathLike) -> bool:
    """``path.exists()``, but a path the system refuses to look up (a name too long, a folder it may not search)
    is an :class:`OutputError` naming it, not a bare OSError."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) that is not a folder, if any."""
    for p in (folder, *folder.parents):
        try:
            if p.exists():
                return None if p.is_dir() else p
        except OSError:
            return None
    return None


_UMASK: list[int] = []


def usual_permissions(path: str | Path) -> None:
    """Give a file the permissions a plain ``open()`` would have (0666 less the umask): temp-file APIs and
    safetensors create 0600 files, which a colleague or a web server could not read."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    if not _UMASK:
        with _pil_lock:
            mask = os.umask(0o022)
            os.umask(mask)
            _UMASK.append(mask)
    return _UMASK[0]


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
