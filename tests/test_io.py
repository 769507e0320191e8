"""Image and depth I/O: round trips, metadata, orientation, atomic writes, every bad-input case."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from conftest import png_header_only, synth_image
from PIL import Image as PILImage

from blurwise.errors import InputError, OutputError
from blurwise.io import (
    Image,
    merge_alpha,
    png16,
    read_depth,
    read_image,
    resize_plane,
    split_alpha,
    write_image,
)


def _scale(dtype) -> float:
    return 255.0 if dtype == np.uint8 else 65535.0


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- round trips


class TestRoundTrip:
    @pytest.mark.parametrize("ext", ["png", "tif"])
    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
    @pytest.mark.parametrize("c", [1, 2, 3, 4])
    def test_lossless_exact(self, tmp_path, ext, dtype, c):
        arr = synth_image(20, 30, c, dtype)
        p = write_image(tmp_path / f"x.{ext}", arr)
        img = read_image(p)
        assert img.bit_depth == (8 if dtype == np.uint8 else 16)
        assert img.channels == (1 if c in (1, 2) else 3)
        assert (img.alpha is not None) == (c in (2, 4))
        assert img.pixels.dtype == np.float32
        np.testing.assert_array_equal(np.rint(img.to_array() * _scale(dtype)).astype(dtype), arr)

    @pytest.mark.parametrize("ext", ["bmp", "webp"])
    def test_8bit_formats(self, tmp_path, ext):
        arr = synth_image(20, 30, 3)
        img = read_image(write_image(tmp_path / f"x.{ext}", arr))
        assert img.bit_depth == 8 and img.pixels.shape == (20, 30, 3)
        # WebP is lossy at quality 95, BMP exact.
        assert np.abs(img.pixels * 255 - arr).max() <= (0 if ext == "bmp" else 40)

    def test_jpeg_close_and_8bit(self, tmp_path):
        arr = synth_image(32, 32, 3, np.uint16)
        img = read_image(write_image(tmp_path / "x.jpg", arr))
        assert img.bit_depth == 8 and img.format == "JPEG"
        assert np.abs(img.pixels - arr / 65535.0).mean() < 0.02

    def test_float_tiff_kept_float(self, tmp_path):
        arr = synth_image(16, 16, 3, np.float32)
        img = read_image(write_image(tmp_path / "f.tif", arr))
        assert img.bit_depth == 32
        np.testing.assert_array_equal(img.pixels, arr)

    def test_16bit_tiff_from_tifffile(self, tmp_path):
        import tifffile

        arr = synth_image(12, 18, 3, np.uint16)
        tifffile.imwrite(tmp_path / "t.tiff", arr, photometric="rgb")
        img = read_image(tmp_path / "t.tiff")
        assert img.bit_depth == 16
        np.testing.assert_array_equal(np.rint(img.pixels * 65535).astype(np.uint16), arr)

    def test_16bit_gray_png_via_pillow(self, tmp_path):
        arr = synth_image(10, 14, 0, np.uint16)
        PILImage.fromarray(arr).save(tmp_path / "g.png")
        img = read_image(tmp_path / "g.png")
        assert img.bit_depth == 16 and img.channels == 1
        np.testing.assert_array_equal(np.rint(img.pixels[:, :, 0] * 65535).astype(np.uint16), arr)

    def test_avif_read(self, tmp_path):
        from PIL import features

        if not features.check("avif"):
            pytest.skip("Pillow built without AVIF")
        PILImage.fromarray(synth_image(16, 16, 3)).save(tmp_path / "x.avif")
        assert read_image(tmp_path / "x.avif").pixels.shape == (16, 16, 3)

    def test_heic_needs_pillow_heif(self, tmp_path, monkeypatch):
        import sys

        from blurwise.errors import NotAvailableError

        monkeypatch.setitem(sys.modules, "pillow_heif", None)
        (tmp_path / "x.heic").write_bytes(b"....ftypheic")
        with pytest.raises(NotAvailableError, match="pillow-heif"):
            read_image(tmp_path / "x.heic")

    def test_palette_converted(self, tmp_path):
        pal = PILImage.fromarray(synth_image(16, 16, 3)).convert("P", palette=PILImage.Palette.ADAPTIVE)
        pal.save(tmp_path / "p.png")
        img = read_image(tmp_path / "p.png")
        assert img.channels == 3 and img.alpha is None
        ref = np.asarray(pal.convert("RGB")) / 255.0
        np.testing.assert_allclose(img.pixels, ref, atol=1e-6)

    def test_palette_with_transparency_gets_alpha(self, tmp_path):
        pal = PILImage.fromarray(synth_image(16, 16, 3)).convert("P", palette=PILImage.Palette.ADAPTIVE)
        pal.save(tmp_path / "pa.png", transparency=int(np.asarray(pal)[0, 0]))
        img = read_image(tmp_path / "pa.png")
        assert img.alpha is not None and img.alpha[0, 0] == 0 and img.alpha.max() == 1

    def test_write_image_object_keeps_bit_depth(self, tmp_path):
        img = Image(synth_image(8, 8, 3, np.float32), bit_depth=16)
        out = read_image(write_image(tmp_path / "o.png", img))
        assert out.bit_depth == 16

    def test_bit_depth_override_and_cap(self, tmp_path):
        arr = synth_image(8, 8, 3, np.uint16)
        assert read_image(write_image(tmp_path / "a.png", arr, bit_depth=8)).bit_depth == 8
        assert read_image(write_image(tmp_path / "b.webp", arr)).bit_depth == 8  # capped by format

    def test_jpeg_drops_alpha(self, tmp_path):
        img = read_image(write_image(tmp_path / "x.jpg", synth_image(8, 8, 4)))
        assert img.alpha is None and img.channels == 3

    def test_output_permissions_not_private(self, tmp_path):
        p = write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        assert os.stat(p).st_mode & 0o044  # readable by group/others under the usual umask


# --------------------------------------------------------------------------- 16-bit PNG codec


class TestPng16:
    def test_codec_round_trip(self):
        arr = synth_image(33, 17, 4, np.uint16)
        out, info = png16.decode(png16.encode(arr, icc=b"profile"))
        np.testing.assert_array_equal(out, arr)
        assert info["icc"] == b"profile"

    @pytest.mark.parametrize("mode,c", [("RGB", 3), ("RGBA", 4), ("L", 1)])
    def test_decodes_pillow_adaptive_filters(self, mode, c):
        # Pillow picks Paeth/Sub/... per row: exercises every unfilter path.
        arr = synth_image(40, 50, c)
        buf = io.BytesIO()
        PILImage.fromarray(arr[:, :, 0] if c == 1 else arr, mode).save(buf, "PNG")
        out, _ = png16.decode(buf.getvalue())
        np.testing.assert_array_equal(out, arr)

    def test_non_contiguous_input(self):
        arr = np.ascontiguousarray(synth_image(12, 10, 3, np.uint16).transpose(1, 0, 2)).transpose(1, 0, 2)
        out, _ = png16.decode(png16.encode(arr))
        np.testing.assert_array_equal(out, arr)

    def test_decompression_bomb_stays_small(self):
        # a 1x1 16-bit RGB PNG whose image data inflates to 64 MB: only the 7 bytes the header asks for are made
        import tracemalloc
        import zlib

        good = png16.encode(np.full((1, 1, 3), 1234, np.uint16))
        data = bytearray(good[: good.index(b"IDAT") - 4])  # signature + IHDR
        body = zlib.compress(b"\x00" + bytes(6) + bytes(64 << 20), 9)
        data += len(body).to_bytes(4, "big") + b"IDAT" + body + zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
        data += good[good.index(b"IEND") - 4 :]
        tracemalloc.start()
        out, _ = png16.decode(bytes(data))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert out.shape == (1, 1, 3) and peak < 8 << 20

    def test_pillow_reads_our_16bit_gray(self):
        arr = synth_image(9, 11, 1, np.uint16)
        im = PILImage.open(io.BytesIO(png16.encode(arr)))
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), arr[:, :, 0])


# --------------------------------------------------------------------------- metadata


class TestMetadata:
    @pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
    def test_icc_carried(self, tmp_path, srgb_icc, ext):
        img = Image(synth_image(8, 8, 3, np.float32), icc=srgb_icc)
        out = read_image(write_image(tmp_path / f"x.{ext}", img))
        assert out.icc == srgb_icc

    def test_cmyk_becomes_rgb_without_cmyk_profile(self, tmp_path):
        PILImage.fromarray(synth_image(16, 16, 3)).convert("CMYK").save(tmp_path / "c.jpg")
        img = read_image(tmp_path / "c.jpg")
        assert img.channels == 3 and img.icc is None

    def test_icc_carried_16bit_png(self, tmp_path, srgb_icc):
        img = Image(synth_image(8, 8, 3, np.float32), bit_depth=16, icc=srgb_icc)
        assert read_image(write_image(tmp_path / "x.png", img)).icc == srgb_icc

    @pytest.mark.parametrize("orientation", [3, 6, 8])
    def test_exif_orientation_applied_and_reset(self, tmp_path, orientation):
        arr = synth_image(20, 30, 3)
        ex = PILImage.Exif()
        ex[0x0112] = orientation
        ex[0x010F] = "blurwise-test"  # Make: must survive
        PILImage.fromarray(arr).save(tmp_path / "o.png", exif=ex.tobytes())
        img = read_image(tmp_path / "o.png")
        expect = {3: np.rot90(arr, 2), 6: np.rot90(arr, -1), 8: np.rot90(arr, 1)}[orientation]
        assert img.pixels.shape[:2] == expect.shape[:2]
        np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), expect)
        # written output: orientation 1, other tags kept
        out = read_image(write_image(tmp_path / "w.jpg", img))
        back = PILImage.open(tmp_path / "w.jpg").getexif()
        assert back.get(0x0112) == 1 and back.get(0x010F) == "blurwise-test"
        assert out.pixels.shape[:2] == expect.shape[:2]

    def test_exif_pixel_dimensions_follow_output(self, tmp_path):
        ex = PILImage.Exif()
        ex.get_ifd(0x8769).update({0xA002: 30, 0xA003: 20})
        PILImage.fromarray(synth_image(20, 30, 3)).save(tmp_path / "s.jpg", exif=ex.tobytes())
        img = read_image(tmp_path / "s.jpg")
        big = img.with_pixels(np.repeat(np.repeat(img.pixels, 2, 0), 2, 1))
        write_image(tmp_path / "b.jpg", big)
        sub = PILImage.open(tmp_path / "b.jpg").getexif().get_ifd(0x8769)
        assert (sub[0xA002], sub[0xA003]) == (60, 40)

    def test_exif_orientation_jpeg(self, tmp_path):
        arr = synth_image(20, 30, 3)
        ex = PILImage.Exif()
        ex[0x0112] = 6
        PILImage.fromarray(arr).save(tmp_path / "o.jpg", exif=ex.tobytes(), quality=98)
        assert read_image(tmp_path / "o.jpg").pixels.shape[:2] == (30, 20)

    def test_exif_orientation_16bit_png(self, tmp_path):
        arr = synth_image(10, 14, 3, np.uint16)
        ex = PILImage.Exif()
        ex[0x0112] = 6
        (tmp_path / "o.png").write_bytes(png16.encode(arr, exif=ex.tobytes()))
        img = read_image(tmp_path / "o.png")
        np.testing.assert_array_equal(np.rint(img.pixels * 65535).astype(np.uint16), np.rot90(arr, -1))

    def test_tiff_orientation(self, tmp_path):
        import tifffile

        arr = synth_image(10, 14, 3)
        tifffile.imwrite(tmp_path / "o.tif", arr, photometric="rgb", extratags=[(274, "H", 1, 8, True)])
        img = read_image(tmp_path / "o.tif")
        np.testing.assert_array_equal(np.rint(img.pixels * 255).astype(np.uint8), np.rot90(arr, 1))


# --------------------------------------------------------------------------- TIFF colour spaces, codecs, EXIF


def _u8(a: np.ndarray) -> np.ndarray:
    return np.rint(a * 255).astype(np.uint8)


def _no_tifffile(monkeypatch) -> None:
    """Send TIFFs to the Pillow fallback, as a compression tifffile cannot decode would."""
    import blurwise.io.image as mod

    def fail(*a, **k):
        raise ValueError("compression requires a codec")

    monkeypatch.setattr(mod, "_read_tiff", fail)


class TestTiff:
    def test_palette_16bit_colormap(self, tmp_path):
        import tifffile

        rng = np.random.default_rng(1)
        idx = rng.integers(0, 256, (6, 7), dtype=np.uint8)
        cmap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
        img = read_image(tmp_path / "p.tif")
        assert img.channels == 3 and img.bit_depth == 16 and img.alpha is None
        np.testing.assert_array_equal(np.rint(img.pixels * 65535).astype(np.uint16), cmap[:, idx].transpose(1, 2, 0))

    def test_palette_8bit_colormap(self, tmp_path):
        import tifffile

        rng = np.random.default_rng(2)
        idx = rng.integers(0, 256, (6, 7), dtype=np.uint8)
        cmap = rng.integers(0, 256, (3, 256)).astype(np.uint16) * 257
        tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
        img = read_image(tmp_path / "p.tif")
        assert img.bit_depth == 8
        np.testing.assert_array_equal(_u8(img.pixels), np.asarray(PILImage.open(tmp_path / "p.tif").convert("RGB")))

    def test_miniswhite_inverted(self, tmp_path):
        import tifffile

        gray = synth_image(6, 7, 0)
        tifffile.imwrite(tmp_path / "w.tif", gray, photometric="miniswhite")
        tifffile.imwrite(tmp_path / "b.tif", gray > 128, photometric="miniswhite")  # 1-bit bilevel
        np.testing.assert_array_equal(_u8(read_image(tmp_path / "w.tif").pixels)[:, :, 0], 255 - gray)
        np.testing.assert_array_equal(read_image(tmp_path / "b.tif").pixels[:, :, 0], gray <= 128)

    def test_4bit_gray_scaled_to_full_range(self, tmp_path):
        import tifffile

        gray = synth_image(6, 7, 0) >> 4
        tifffile.imwrite(tmp_path / "g.tif", gray, photometric="minisblack", bitspersample=4)
        img = read_image(tmp_path / "g.tif")
        assert img.bit_depth == 8
        np.testing.assert_array_equal(_u8(img.pixels)[:, :, 0], gray * 17)

    def test_cmyk_becomes_rgb(self, tmp_path):
        import tifffile

        cmyk = np.random.default_rng(3).integers(0, 256, (6, 7, 4), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
        img = read_image(tmp_path / "c.tif")
        assert img.channels == 3 and img.alpha is None and img.icc is None  # K is not alpha
        expect = np.asarray(PILImage.fromarray(cmyk, "CMYK").convert("RGB")).astype(int)
        assert np.abs(_u8(img.pixels).astype(int) - expect).max() <= 1

    def test_cmyk_with_a_profile_it_does_not_fit(self, tmp_path, srgb_icc):
        import tifffile

        cmyk = np.random.default_rng(3).integers(0, 256, (6, 7, 4), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated", iccprofile=srgb_icc)
        img = read_image(tmp_path / "c.tif")
        assert img.channels == 3 and img.icc is None  # plain conversion; the embedded profile is not carried
        expect = np.asarray(PILImage.fromarray(cmyk, "CMYK").convert("RGB"))
        np.testing.assert_array_equal(_u8(img.pixels), expect)

    def test_cmyk_16bit_with_alpha(self, tmp_path):
        import tifffile

        data = np.random.default_rng(4).integers(0, 65536, (6, 7, 5), dtype=np.uint16)
        tifffile.imwrite(tmp_path / "c.tif", data, photometric="separated", extrasamples=[2], planarconfig="contig")
        img = read_image(tmp_path / "c.tif")
        c = data.astype(np.float64) / 65535
        expect = (1 - c[:, :, :3]) * (1 - c[:, :, 3:4])
        assert img.bit_depth == 16 and img.channels == 3
        np.testing.assert_allclose(img.pixels, expect, atol=1e-5)
        np.testing.assert_array_equal(np.rint(img.alpha * 65535).astype(np.uint16), data[:, :, 4])

    def test_associated_alpha_unpremultiplied(self, tmp_path):
        import tifffile

        rng = np.random.default_rng(5)
        rgb = synth_image(6, 7, 3).astype(np.float64)
        a = np.where(rng.random((6, 7)) < 0.5, 255.0, 128.0)
        premultiplied = np.dstack([np.rint(rgb * a[:, :, None] / 255), a]).astype(np.uint8)
        tifffile.imwrite(tmp_path / "a.tif", premultiplied, photometric="rgb", extrasamples=[1])
        img = read_image(tmp_path / "a.tif")
        np.testing.assert_array_equal(_u8(img.alpha), a)
        err = np.abs(img.pixels * 255 - rgb)
        assert err[a == 255].max() < 1e-3 and err.max() <= 1.0  # premultiplied rounding at alpha 128: < 1 level

    def test_unspecified_extra_sample_is_not_alpha(self, tmp_path):
        import tifffile

        rgbx = synth_image(6, 7, 5)
        tifffile.imwrite(tmp_path / "u.tif", rgbx[:, :, :4], photometric="rgb", extrasamples=[0])
        tifffile.imwrite(tmp_path / "v.tif", rgbx, photometric="rgb", extrasamples=[0, 2], planarconfig="contig")
        img = read_image(tmp_path / "u.tif")
        assert img.alpha is None and img.channels == 3
        np.testing.assert_array_equal(_u8(img.pixels), rgbx[:, :, :3])
        np.testing.assert_array_equal(_u8(read_image(tmp_path / "v.tif").alpha), rgbx[:, :, 4])  # the alpha one

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
    @pytest.mark.parametrize("c", [1, 3, 4])
    def test_lzw_bit_exact(self, tmp_path, dtype, c):
        import tifffile

        arr = synth_image(9, 11, c, dtype)
        photometric = "rgb" if c >= 3 else "minisblack"
        tifffile.imwrite(tmp_path / "l.tif", arr[..., 0] if c == 1 else arr, photometric=photometric, compression="lzw")
        img = read_image(tmp_path / "l.tif")
        assert img.bit_depth == {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]
        scale = 1.0 if dtype == np.float32 else _scale(dtype)
        np.testing.assert_array_equal(img.to_array(), arr.astype(np.float32) / np.float32(scale))

    def test_jpeg_ycbcr_tiff_is_rgb(self, tmp_path):
        import tifffile

        arr = synth_image(32, 32, 3)
        tifffile.imwrite(tmp_path / "j.tif", arr, photometric="rgb", compression="jpeg")
        with tifffile.TiffFile(tmp_path / "j.tif") as tif:
            assert int(tif.pages[0].photometric) == 6  # stored as YCbCr
        got = _u8(read_image(tmp_path / "j.tif").pixels).astype(int)
        assert np.abs(got - np.asarray(PILImage.open(tmp_path / "j.tif").convert("RGB"))).max() <= 2
        assert np.abs(got - arr).mean() < 6  # 4:2:0 chroma loses the test image's colour noise; YCbCr would be far off

    def test_uncompressed_ycbcr_tiff_is_rgb(self, tmp_path):
        PILImage.fromarray(synth_image(8, 8, 3)).convert("YCbCr").save(tmp_path / "y.tif")
        img = read_image(tmp_path / "y.tif")
        expect = np.asarray(PILImage.open(tmp_path / "y.tif").convert("RGB"))
        np.testing.assert_array_equal(_u8(img.pixels), expect)

    def test_pillow_fallback_warns_when_16bit_becomes_8bit(self, tmp_path, monkeypatch, caplog):
        import tifffile

        tifffile.imwrite(tmp_path / "s.tif", synth_image(6, 7, 3, np.uint16), photometric="rgb")
        _no_tifffile(monkeypatch)
        img = read_image(tmp_path / "s.tif")
        assert img.bit_depth == 8 and "16-bit TIFF read at 8 bits" in caplog.text

    @pytest.mark.parametrize("reader", ["tifffile", "pillow"])
    def test_exif_is_the_exif_ifd_not_the_tiff_layout(self, tmp_path, monkeypatch, reader):
        ex = PILImage.Exif()
        ex[0x010F] = "blurwise-cam"  # Make
        ex.get_ifd(0x8769).update({0x829A: (1, 250), 0x9003: "2024:01:02 03:04:05"})
        PILImage.fromarray(synth_image(12, 13, 3)).save(tmp_path / "e.tif", exif=ex.tobytes())
        if reader == "pillow":
            _no_tifffile(monkeypatch)
        img = read_image(tmp_path / "e.tif")
        write_image(tmp_path / "e.jpg", img.with_pixels(np.repeat(img.pixels, 2, axis=0)))
        back = PILImage.open(tmp_path / "e.jpg").getexif()
        assert not {256, 257, 258, 259, 262, 273, 277, 278, 279} & set(back)  # no TIFF layout tags
        assert back[0x010F] == "blurwise-cam" and back.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"

    def test_tiff_without_exif_carries_none(self, tmp_path):
        import tifffile

        tifffile.imwrite(tmp_path / "n.tif", synth_image(6, 7, 3), photometric="rgb")  # has description, software
        assert read_image(tmp_path / "n.tif").exif is None


# --------------------------------------------------------------------------- bad inputs


class TestBadInput:
    def test_missing(self, tmp_path):
        with pytest.raises(InputError, match="file not found"):
            read_image(tmp_path / "nope.png")

    def test_folder(self, tmp_path):
        with pytest.raises(InputError, match="is a folder"):
            read_image(tmp_path)

    def test_empty_file(self, tmp_path):
        (tmp_path / "e.png").write_bytes(b"")
        with pytest.raises(InputError, match="empty file"):
            read_image(tmp_path / "e.png")

    def test_not_an_image(self, tmp_path):
        (tmp_path / "t.png").write_text("hello, not a picture")
        with pytest.raises(InputError, match="not an image"):
            read_image(tmp_path / "t.png")

    @pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
    def test_truncated(self, tmp_path, ext):
        p = write_image(tmp_path / f"ok.{ext}", synth_image(64, 64, 3))
        data = p.read_bytes()
        (tmp_path / f"t.{ext}").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="truncated|corrupt"):
            read_image(tmp_path / f"t.{ext}")

    def test_truncated_16bit(self, tmp_path):
        data = write_image(tmp_path / "ok.png", synth_image(64, 64, 3, np.uint16)).read_bytes()
        (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match="truncated"):
            read_image(tmp_path / "t.png")

    def test_corrupt_data(self, tmp_path):
        data = bytearray(write_image(tmp_path / "ok.png", synth_image(64, 64, 3)).read_bytes())
        data[100:160] = b"x" * 60
        (tmp_path / "c.png").write_bytes(bytes(data))
        with pytest.raises(InputError, match="corrupt"):
            read_image(tmp_path / "c.png")

    def test_zero_size(self, tmp_path):
        (tmp_path / "z.png").write_bytes(png_header_only(0, 10))
        with pytest.raises(InputError, match="zero-size"):
            read_image(tmp_path / "z.png")

    def test_absurd_size(self, tmp_path):
        (tmp_path / "h.png").write_bytes(png_header_only(30000, 30000))
        with pytest.raises(InputError, match="too large"):
            read_image(tmp_path / "h.png")

    @pytest.mark.parametrize("ext", ["gif", "png", "webp"])
    def test_animation_refused(self, tmp_path, ext):
        from PIL import Image as PILImage

        frames = [PILImage.new("RGB", (16, 12), (60 * i, 20, 200 - 60 * i)) for i in range(3)]
        frames[0].save(tmp_path / f"a.{ext}", save_all=True, append_images=frames[1:])
        with pytest.raises(InputError, match=r"animated .*\(3 frames\)"):
            read_image(tmp_path / f"a.{ext}")
        frames[0].save(tmp_path / f"still.{ext}")  # one frame of the same format reads as a still image
        assert read_image(tmp_path / f"still.{ext}").pixels.shape == (12, 16, 3)

    def test_messages_are_one_line(self, tmp_path):
        (tmp_path / "t.png").write_text("x")
        with pytest.raises(InputError) as ei:
            read_image(tmp_path / "t.png")
        assert "\n" not in str(ei.value)


class TestFormatDetails:
    @pytest.mark.parametrize("mode", ["L", "RGB"])
    def test_png_colour_key_transparency_becomes_alpha(self, tmp_path, mode):
        arr = synth_image(6, 7, 1 if mode == "L" else 3)
        key = int(arr[2, 3, 0]) if mode == "L" else tuple(int(v) for v in arr[2, 3])
        PILImage.fromarray(arr[:, :, 0] if mode == "L" else arr, mode).save(tmp_path / "k.png", transparency=key)
        img = read_image(tmp_path / "k.png")
        assert img.alpha is not None and img.alpha[2, 3] == 0.0 and img.alpha.max() == 1.0

    def test_lossless_webp_stays_lossless(self, tmp_path):
        arr = synth_image(16, 16, 3)
        PILImage.fromarray(arr).save(tmp_path / "l.webp", lossless=True)
        img = read_image(tmp_path / "l.webp")
        assert img.lossless
        out = read_image(write_image(tmp_path / "o.webp", img.with_pixels(img.pixels)))
        np.testing.assert_array_equal(np.round(out.pixels * 255), arr)
        PILImage.fromarray(arr).save(tmp_path / "q.webp", quality=80)
        assert not read_image(tmp_path / "q.webp").lossless

    def test_exif_too_long_for_jpeg_is_left_out(self, tmp_path, caplog):
        exif = PILImage.Exif()
        exif[0x927C] = b"x" * 70000  # a MakerNote larger than a JPEG segment
        img = Image(synth_image(8, 8, 3, np.float32), exif=b"Exif\x00\x00" + exif.tobytes())
        with caplog.at_level("WARNING"):
            out = read_image(write_image(tmp_path / "x.jpg", img))
        assert out.pixels.shape == (8, 8, 3) and "EXIF" in caplog.text

    @pytest.mark.parametrize(
        ("arr", "match"),
        [
            (np.zeros((3, 16, 16), np.float32), "channels first"),
            (np.full((4, 4, 3), 200.0, np.float32), "reaches 200"),
            (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        ],
    )
    def test_write_refuses_arrays_it_would_garble(self, tmp_path, arr, match):
        with pytest.raises(OutputError, match=match):
            write_image(tmp_path / "x.png", arr)
        assert list(tmp_path.iterdir()) == []

    def test_unreadable_file(self, tmp_path, monkeypatch):
        import builtins

        p = write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        real_open = builtins.open

        def deny(file, *a, **k):
            if str(file) == str(p):
                raise PermissionError(13, "Permission denied")
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", deny)
        with pytest.raises(InputError, match="cannot read .*Permission denied"):
            read_image(p)


class TestWriteSafety:
    def test_no_overwrite_by_default(self, tmp_path):
        p = write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        before = p.read_bytes()
        with pytest.raises(OutputError, match="exists.*--overwrite"):
            write_image(p, synth_image(4, 4, 3, seed=9))
        assert p.read_bytes() == before
        assert _leftovers(tmp_path) == []

    def test_overwrite(self, tmp_path):
        p = write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        write_image(p, synth_image(4, 4, 3, seed=9), overwrite=True)
        assert _leftovers(tmp_path) == []

    def test_unknown_extension(self, tmp_path):
        with pytest.raises(OutputError, match="unsupported output extension"):
            write_image(tmp_path / "x.gif", synth_image(4, 4, 3))

    @pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
    def test_unwritable_folder(self, tmp_path):
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                write_image(ro / "x.png", synth_image(4, 4, 3))
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o700)

    def test_unwritable_folder_simulated(self, tmp_path, monkeypatch):
        # Works as root too (root ignores permission bits): the OS refusal is simulated.
        import blurwise.io.image as mod

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(mod.tempfile, "mkstemp", refuse)
        with pytest.raises(OutputError, match="not writable.*Permission denied"):
            write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        assert list(tmp_path.iterdir()) == []

    def test_parent_is_a_file(self, tmp_path):
        (tmp_path / "f").write_text("x")
        with pytest.raises(OutputError, match="cannot create output folder .*f is a file"):
            write_image(tmp_path / "f" / "x.png", synth_image(4, 4, 3))
        with pytest.raises(OutputError, match="cannot create output folder .*f is a file"):
            write_image(tmp_path / "f" / "sub" / "x.png", synth_image(4, 4, 3))

    @pytest.mark.parametrize("name", ["n" * 251 + ".png", "é" * 125 + ".png", "e" * 240 + " ünï 😀.png"])
    def test_longest_names_fit_their_temp_file(self, tmp_path, name):
        # a valid name (<= 255 bytes) must not fail because the hidden temp file's name would be longer
        assert len(os.fsencode(name)) <= 255
        p = write_image(tmp_path / name, synth_image(4, 4, 3))
        assert read_image(p).width == 4 and _leftovers(tmp_path) == []

    def test_name_too_long_is_one_output_error(self, tmp_path):
        for p in (tmp_path / ("n" * 300 + ".png"), tmp_path / ("n" * 300) / "x.png"):
            with pytest.raises(OutputError, match="cannot write"):
                write_image(p, synth_image(4, 4, 3), overwrite=True)
        assert list(tmp_path.iterdir()) == []

    def test_disk_full_keeps_the_old_file(self, tmp_path, monkeypatch):
        import blurwise.io.image as mod

        p = write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        before = p.read_bytes()

        def full(img, fmt, bits, quality, f, path=None):
            f.write(b"half")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(mod, "_encode", full)
        with pytest.raises(OutputError, match=r"^cannot write .*x\.png: No space left on device$"):
            write_image(p, synth_image(4, 4, 3, seed=3), overwrite=True)
        assert p.read_bytes() == before and _leftovers(tmp_path) == []

    def test_write_images_all_or_none(self, tmp_path, monkeypatch):
        import blurwise.io.image as mod
        from blurwise.io.image import write_images

        a = write_image(tmp_path / "a.png", synth_image(4, 4, 3))
        before = a.read_bytes()
        real, calls = mod._encode, []

        def second_fails(img, fmt, bits, quality, f, path=None):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            real(img, fmt, bits, quality, f, path)

        monkeypatch.setattr(mod, "_encode", second_fails)
        items = [(a, synth_image(4, 4, 3, seed=5)), (tmp_path / "b.tiff", synth_image(4, 4, 1, np.float32))]
        with pytest.raises(OutputError, match="No space left"):
            write_images(items, overwrite=True)
        # the first image was complete, but nothing is renamed into place before all are: a.png is the old one
        assert a.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
        monkeypatch.setattr(mod, "_encode", real)
        assert write_images(items, overwrite=True) == [a, tmp_path / "b.tiff"]
        assert a.read_bytes() != before and _leftovers(tmp_path) == []

    def test_stale_temps_of_killed_runs_removed(self, tmp_path):
        from blurwise.io.image import is_temp_of, remove_stale_temps, temp_prefix

        old = tmp_path / f"{temp_prefix('x.png')}abcd1234.tmp"  # what a SIGKILL mid-write leaves
        young = tmp_path / f"{temp_prefix('x.png')}efgh5678.tmp"  # perhaps another process's write in progress
        other = tmp_path / f"{temp_prefix('y.png')}abcd1234.tmp"  # not a temp of an output asked about
        for f in (old, young, other):
            f.write_bytes(b"partial")
        os.utime(old, (0, 0))
        os.utime(other, (0, 0))
        assert is_temp_of(old.name, "x.png") and not is_temp_of(other.name, "x.png")
        assert remove_stale_temps([tmp_path / "x.png"]) == [old]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, other.name])

    def test_alpha_dropped_warning_names_the_file(self, tmp_path, caplog):
        with caplog.at_level("WARNING", logger="blurwise.io.image"):
            write_image(tmp_path / "x.jpg", synth_image(4, 4, 4))
        assert "JPEG cannot store alpha" in caplog.text and "x.jpg" in caplog.text

    def test_failed_encode_leaves_nothing(self, tmp_path, monkeypatch):
        import blurwise.io.image as mod

        def boom(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(mod, "_encode", boom)
        with pytest.raises(OutputError, match="No space left"):
            write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        assert list(tmp_path.iterdir()) == []

    def test_interrupt_leaves_nothing(self, tmp_path, monkeypatch):
        import blurwise.io.image as mod

        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(mod, "_encode", interrupted)
        with pytest.raises(KeyboardInterrupt):
            write_image(tmp_path / "x.png", synth_image(4, 4, 3))
        assert list(tmp_path.iterdir()) == []

    def test_creates_parent_folders(self, tmp_path):
        assert write_image(tmp_path / "a" / "b" / "x.png", synth_image(4, 4, 3)).is_file()


# --------------------------------------------------------------------------- alpha helpers


class TestAlpha:
    def test_split_merge(self):
        arr = synth_image(8, 10, 4, np.float32)
        rgb, a = split_alpha(arr)
        assert rgb.shape == (8, 10, 3) and a.shape == (8, 10)
        np.testing.assert_array_equal(merge_alpha(rgb, a), arr)
        assert split_alpha(arr[:, :, :3])[1] is None
        assert split_alpha(arr[:, :, 0])[0].shape == (8, 10, 1)

    def test_merge_upscales_alpha_bicubic(self):
        from blurwise.metrics.imresize import imresize

        a = synth_image(8, 10, 0, np.float32)
        out = merge_alpha(np.zeros((32, 40, 3), np.float32), a)
        assert out.shape == (32, 40, 4)
        np.testing.assert_allclose(out[:, :, 3], np.clip(imresize(a.astype(np.float64), 4), 0, 1), atol=1e-6)

    def test_large_alpha_uses_fast_path(self):
        a = np.ones((10, 700), np.float32)
        out = resize_plane(a, (40, 2800))
        assert out.shape == (40, 2800) and np.allclose(out, 1.0, atol=1e-5)


# --------------------------------------------------------------------------- depth


class TestDepth:
    def test_npy_and_resize(self, tmp_path):
        d = np.linspace(1, 5, 20 * 30, dtype=np.float32).reshape(20, 30)
        np.save(tmp_path / "d.npy", d)
        out = read_depth(tmp_path / "d.npy", shape=(40, 60))
        assert out.shape == (40, 60) and out.dtype == np.float32
        assert 1.0 <= out.min() and out.max() <= 5.0
        np.testing.assert_array_equal(read_depth(tmp_path / "d.npy"), d)

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
    def test_png_gray(self, tmp_path, dtype):
        d = synth_image(20, 30, 0, dtype)
        PILImage.fromarray(d).save(tmp_path / "d.png")
        np.testing.assert_array_equal(read_depth(tmp_path / "d.png"), d.astype(np.float32))

    def test_tiff_float(self, tmp_path):
        import tifffile

        d = synth_image(20, 30, 0, np.float32) * 10
        tifffile.imwrite(tmp_path / "d.tif", d)
        np.testing.assert_array_equal(read_depth(tmp_path / "d.tif"), d)

    def test_gray_stored_as_rgb_ok(self, tmp_path):
        d = synth_image(20, 30, 0)
        PILImage.fromarray(np.stack([d] * 3, 2)).save(tmp_path / "d.png")
        assert read_depth(tmp_path / "d.png").shape == (20, 30)

    def test_rgb_refused(self, tmp_path):
        PILImage.fromarray(synth_image(20, 30, 3)).save(tmp_path / "rgb.png")
        with pytest.raises(InputError, match="3 distinct channels"):
            read_depth(tmp_path / "rgb.png")

    def test_nan_filled_all_nan_refused(self, tmp_path):
        d = np.ones((10, 10), np.float32)
        d[2:4, 2:4] = np.nan
        np.save(tmp_path / "d.npy", d)
        assert np.isfinite(read_depth(tmp_path / "d.npy")).all()
        np.save(tmp_path / "n.npy", np.full((10, 10), np.nan, np.float32))
        with pytest.raises(InputError, match="no valid values"):
            read_depth(tmp_path / "n.npy")

    def test_aspect_mismatch(self, tmp_path):
        np.save(tmp_path / "d.npy", np.ones((20, 30), np.float32))
        read_depth(tmp_path / "d.npy", shape=(40, 61))  # 1.6% off: fine
        with pytest.raises(InputError, match="aspect ratios differ"):
            read_depth(tmp_path / "d.npy", shape=(40, 40))

    def test_missing_and_garbage(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            read_depth(tmp_path / "x.npy")
        (tmp_path / "g.png").write_text("garbage")
        with pytest.raises(InputError, match="not an image"):
            read_depth(tmp_path / "g.png")

    def test_sintel_dpt(self, tmp_path):
        d = np.arange(12, dtype="<f4").reshape(3, 4)
        raw = np.array([202021.25], "<f4").tobytes() + np.array([4, 3], "<i4").tobytes() + d.tobytes()
        (tmp_path / "d.dpt").write_bytes(raw)
        np.testing.assert_array_equal(read_depth(tmp_path / "d.dpt"), d)

    def test_heic_depth_goes_to_pillow_heif(self, tmp_path, monkeypatch):
        import builtins

        from blurwise.errors import NotAvailableError

        real_import = builtins.__import__

        def no_heif(name, *a, **k):
            if name == "pillow_heif":
                raise ImportError(name)
            return real_import(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", no_heif)
        (tmp_path / "p.heic").write_bytes(b"....ftypheic")
        with pytest.raises(NotAvailableError, match="pillow-heif"):
            read_depth(tmp_path / "p.heic")
