"""A small 16-bit PNG codec for what Pillow cannot do: 16-bit RGB, RGBA and gray+alpha.

Pillow decodes 16-bit colour PNGs to 8 bits and cannot write them, so blurwise reads and writes
those files itself: chunks are parsed with ``struct``/``zlib`` and the per-row filters are undone
with numpy. Rows filtered with None/Sub/Up are undone with cumulative sums; Average and Paeth (which
depend on the left neighbour non-linearly) are undone along anti-diagonals, vectorised over all
rows at once, so a 12 MP photo decodes in about a second. Writing uses the Up filter everywhere.
Interlaced (Adam7) files are not handled here (``PngUnsupported``; the caller falls back to Pillow).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


class PngUnsupported(Exception):
    """A valid PNG this codec does not handle (the caller falls back to Pillow)."""


class PngCorrupt(Exception):
    """The file is not a readable PNG (bad signature, CRC, truncated data)."""


@dataclass
class PngHeader:
    """What the IHDR chunk says."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


def read_header(data: bytes) -> PngHeader:
    """Parse the IHDR of PNG bytes (raises PngCorrupt if they are not a PNG)."""
    if not data.startswith(SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        raise PngCorrupt("not a PNG file")
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return PngHeader(w, h, depth, ctype, interlace)


def _chunks(data: bytes):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise PngCorrupt("PNG file is truncated")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise PngCorrupt(f"PNG chunk {ctype.decode('latin-1')} is corrupt (CRC mismatch)")
        yield ctype, body
        if ctype == b"IEND":
            return
        pos = end
    raise PngCorrupt("PNG file is truncated (no IEND chunk)")


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw: np.ndarray, ftypes: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG row filters. ``raw`` is (H, W, bpp) uint8 filtered bytes, ``ftypes`` (H,) the filter per row."""
    h, w, _ = raw.shape
    if np.any(ftypes > 4):
        raise PngCorrupt("PNG has an unknown row filter")
    if np.all(ftypes <= 2):
        out = raw.astype(np.uint32)
        sub = ftypes == 1
        if sub.any():  # Sub: running sum along the row
            out[sub] = np.cumsum(out[sub], axis=1)
        out &= 0xFF
        # Up: each Up row adds the (already decoded) row above; runs of Up rows are cumulative sums.
        for i in np.flatnonzero(ftypes == 2):
            if i > 0:
                out[i] = (out[i] + out[i - 1]) & 0xFF
        return out.astype(np.uint8)
    # General case: anti-diagonal wavefront over all rows. Padded output: row 0 and column 0 are zeros.
    out = np.zeros((h + 1, w + 1, bpp), dtype=np.int32)
    rawi = raw.astype(np.int32)
    ft = ftypes.astype(np.int32)
    for d in range(h + w - 1):
        i0, i1 = max(0, d - w + 1), min(h - 1, d)
        i = np.arange(i0, i1 + 1)
        j = d - i
        a = out[i + 1, j]  # left
        b = out[i, j + 1]  # up
        c = out[i, j]  # up-left
        f = ft[i][:, None]
        pred = np.where(
            f == 1, a, np.where(f == 2, b, np.where(f == 3, (a + b) >> 1, np.where(f == 4, _paeth(a, b, c), 0)))
        )
        out[i + 1, j + 1] = (rawi[i, j] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def decode(data: bytes) -> tuple[np.ndarray, dict]:
    """Decode a non-interlaced 8- or 16-bit gray/RGB/GA/RGBA PNG to (H, W, C) uint8/uint16 and info.

    ``info`` holds ``icc`` (bytes, decompressed iCCP profile) and ``exif`` (bytes, Pillow-style with
    the ``Exif\\0\\0`` prefix) when present.
    """
    hdr = read_header(data)
    if hdr.color_type not in _CHANNELS or hdr.bit_depth not in (8, 16):
        raise PngUnsupported(f"colour type {hdr.color_type} at {hdr.bit_depth} bits")
    if hdr.interlace:
        raise PngUnsupported("interlaced PNG")
    idat = []
    info: dict = {}
    for ctype, body in _chunks(data):
        if ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"iCCP":
            try:
                nul = body.index(b"\x00")
                info["icc"] = zlib.decompress(body[nul + 2 :])
            except (ValueError, zlib.error):
                pass  # a broken profile is dropped, not fatal
        elif ctype == b"eXIf":
            info["exif"] = b"Exif\x00\x00" + body
    ch = _CHANNELS[hdr.color_type]
    bpp = ch * hdr.bit_depth // 8
    stride = hdr.width * bpp + 1
    try:
        # No more than the header's image needs: a small file of highly compressible data (a decompression bomb)
        # cannot make it allocate more.
        raw = zlib.decompressobj().decompress(b"".join(idat), stride * hdr.height)
    except zlib.error as exc:
        raise PngCorrupt(f"PNG image data is corrupt ({exc})") from None
    if len(raw) < stride * hdr.height:
        raise PngCorrupt("PNG image data is truncated")
    rows = np.frombuffer(raw, dtype=np.uint8, count=stride * hdr.height).reshape(hdr.height, stride)
    pix = _unfilter(rows[:, 1:].reshape(hdr.height, hdr.width, bpp), rows[:, 0], bpp)
    if hdr.bit_depth == 16:
        arr = pix.reshape(hdr.height, hdr.width * bpp).view(">u2").astype(np.uint16)
    else:
        arr = pix
    return arr.reshape(hdr.height, hdr.width, ch), info


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def encode(arr: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None, level: int = 6) -> bytes:
    """Encode an (H, W, C) uint8 or uint16 array (C = 1, 2, 3 or 4) as PNG bytes (Up filter)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, ch = arr.shape
    ctype = {1: 0, 3: 2, 2: 4, 4: 6}[ch]
    depth = 16 if arr.dtype == np.uint16 else 8
    data = np.ascontiguousarray(arr, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8)
    data = data.reshape(h, w * ch * depth // 8)
    up = data.copy()
    up[1:] -= data[:-1]  # uint8 wrap-around is the PNG modulo
    rows = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    out = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))]
    if icc:
        out.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out.append(_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)
