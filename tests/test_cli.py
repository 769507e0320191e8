"""The ``blurwise`` command: help, version, models --json, folder runs, and every bad-input case.

Runs ``blurwise.cli.main`` in-process. Image commands use the ``bicubic``/``identity`` baselines
(no weights needed) except a few that build small untrained registered models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import png_header_only, synth_image

import blurwise
from blurwise.cli import build_parser, main
from blurwise.io import read_image, write_image

SUBCOMMANDS = ["upscale", "deblur", "defocus-map", "evaluate", "bench", "models", "train", "export", "data"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def no_temp(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture
def untrained(monkeypatch):
    monkeypatch.setenv("BLURWISE_ALLOW_UNTRAINED", "1")


# --------------------------------------------------------------------------- help and version


class TestHelp:
    def test_version(self, capsys):
        code, out, _ = run(capsys, "--version")
        assert code == 0 and out.strip() == f"blurwise {blurwise.__version__}"

    def test_top_help_lists_commands(self, capsys):
        code, out, _ = run(capsys, "--help")
        assert code == 0
        for cmd in SUBCOMMANDS:
            assert cmd in out

    @pytest.mark.parametrize("cmd", SUBCOMMANDS)
    def test_subcommand_help(self, capsys, cmd):
        code, out, _ = run(capsys, cmd, "-h")
        assert code == 0 and f"usage: blurwise {cmd}" in out

    def test_data_make_eval_help(self, capsys):
        code, out, _ = run(capsys, "data", "make-eval", "-h")
        assert code == 0 and "--small" in out

    def test_no_command(self, capsys):
        code, _, err = run(capsys)
        assert code == 2 and "usage" in err

    def test_common_flags_present(self):
        sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        opts = {a for act in sub["upscale"]._actions for a in act.option_strings}
        for flag in [
            "-i", "--input", "-o", "--output", "-s", "--scale", "-m", "--model", "-t", "--tile", "--tile-pad",
            "--device", "--fp32", "--half", "--compile", "--suffix", "--ext", "--overwrite", "--skip-existing",
            "--dry-run", "--recursive", "-q", "--quiet", "--trust-pickle", "--route", "--threshold", "--budget",
            "--routes", "--router", "--save-map", "--depth", "--light", "--min-saving",
        ]:  # fmt: skip
            assert flag in opts, flag

    def test_bad_flag_value_is_usage_error(self, capsys, tmp_path):
        code, _, err = run(capsys, "upscale", "-i", tmp_path, "--budget", "3")
        assert code == 2 and "fraction" in err
        code, _, err = run(capsys, "upscale", "-i", tmp_path, "--router", "oracle")
        assert code == 2 and "--router" in err
        code, _, err = run(capsys, "upscale", "-i", tmp_path, "--min-saving", "1")
        assert code == 2 and "--min-saving" in err and "[0, 1)" in err
        code, _, err = run(capsys, "upscale", "-i", tmp_path, "--threshold", "nan")
        assert code == 2 and "--threshold" in err and "finite" in err
        code, _, err = run(capsys, "upscale", "-i", tmp_path, "--map-precision", "int8")
        assert code == 2 and "--map-precision" in err

    @pytest.mark.parametrize(
        "argv",
        [
            ("upscale", "--budget", "3"),  # a bad value
            ("upscale", "-i", "x.png", "--budget", "abc"),  # not a number at all
            ("upscale", "-i", "x.png", "-s", "2.5"),  # not an integer
            ("upscale", "-o", "out"),  # a required flag missing
            ("upscale", "-i", "x.png", "--no-such-flag"),  # an unknown flag
            ("frobnicate",),  # an unknown command
            ("data", "make-eval"),  # a nested command's required flag
        ],
    )
    def test_usage_errors_are_one_line(self, capsys, argv):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith("blurwise") and ": error: " in err and "-h')" in err
        assert "invalid" not in err or "invalid choice" in err  # never argparse's "invalid _fraction value"

    def test_building_the_parser_loads_no_image_code(self):
        import subprocess

        code = (
            "import sys; from blurwise.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL') "
            "or m.startswith('blurwise.io')))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"

    def test_unknown_flag_points_to_the_commands_help(self, capsys):
        code, _, err = run(capsys, "upscale", "-i", "x.png", "--frob")
        said = "blurwise upscale: error: unrecognized arguments: --frob (see 'blurwise upscale -h')\n"
        assert code == 2 and err == said


# --------------------------------------------------------------------------- models


class TestModels:
    def test_json_schema(self, capsys):
        code, out, _ = run(capsys, "models", "--json")
        assert code == 0
        rows = json.loads(out)
        assert rows and isinstance(rows, list)
        for r in rows:
            assert set(r) == {"name", "task", "scale", "params", "shipped", "default"}
            assert isinstance(r["name"], str) and isinstance(r["task"], str)
            assert isinstance(r["scale"], int) and isinstance(r["shipped"], bool) and isinstance(r["default"], bool)
            assert r["params"] is None or (isinstance(r["params"], int) and r["params"] > 0)
        pairs = {(r["task"], r["scale"]) for r in rows}
        for task, scale in pairs:
            assert sum(r["default"] for r in rows if (r["task"], r["scale"]) == (task, scale)) == 1

    def test_table(self, capsys):
        code, out, _ = run(capsys, "models", "--task", "deblur")
        assert code == 0 and out.splitlines()[0].split()[:3] == ["name", "task", "scale"]

    def test_verbose_only_where_it_does_something(self, capsys):
        """-v is the image commands' per-image line; elsewhere it would do nothing, so it is refused, not ignored."""
        code, _, err = run(capsys, "models", "-v")
        assert code == 2 and "unrecognized arguments: -v" in err
        commands = build_parser()._subparsers._group_actions[0].choices
        for cmd, has in {"upscale": 1, "deblur": 1, "defocus-map": 1, "evaluate": 0, "bench": 0, "export": 0}.items():
            assert ("--verbose" in commands[cmd].format_help()) == bool(has), cmd

    def test_scale_filter(self, capsys):
        code, out, _ = run(capsys, "models", "-s", "2", "--json")
        assert code == 0 and {r["scale"] for r in json.loads(out)} == {2}
        code, out, _ = run(capsys, "models", "-s", "1", "--json")
        assert code == 0 and {r["task"] for r in json.loads(out)} == {"deblur", "defocus"}

    def test_closed_pipe_is_quiet(self):
        """`blurwise models --json | head -1`: the reader goes away; no error line, the shell's SIGPIPE status."""
        import subprocess

        code = "import sys, blurwise.cli as c; sys.stdin.readline(); sys.exit(c.main(['models', '--json']))"
        pipes = {k: subprocess.PIPE for k in ("stdin", "stdout", "stderr")}
        p = subprocess.Popen([sys.executable, "-u", "-c", code], **pipes)  # -u: writes reach the pipe at once
        p.stdout.close()  # the reader is gone before the command writes
        p.stdin.write(b"\n")
        p.stdin.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=60) == 141 and err == ""


# --------------------------------------------------------------------------- upscale / deblur folder runs


class TestFolderRun:
    def test_folder_with_one_corrupt(self, capsys, image_folder, tmp_path):
        (image_folder / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        out = tmp_path / "out"
        code, _, err = run(capsys, "upscale", "-i", image_folder, "-o", out, "-s", "2", "-m", "bicubic", "--recursive")
        assert code == 1
        assert files(out) == [
            "a_out.png", "b16_out.png", "c_out.jpg", "sub/d_out.tif", "sub/e_rgba_out.png", "sub/f_gray_out.png",
        ]  # fmt: skip
        assert "corrupt.png" in err and "Traceback" not in err
        summary = err.strip().splitlines()[-2:]
        assert summary[0].split() == ["done", "skipped", "failed", "time", "images/s"]
        assert summary[1].split()[:3] == ["6", "0", "1"]
        assert no_temp(out)
        # outputs keep the kind of their input
        assert read_image(out / "b16_out.png").bit_depth == 16
        rgba = read_image(out / "sub" / "e_rgba_out.png")
        assert rgba.alpha is not None and rgba.pixels.shape == (48, 64, 3)
        assert read_image(out / "sub" / "f_gray_out.png").channels == 1
        assert read_image(out / "sub" / "d_out.tif").pixels.shape == (40, 56, 3)
        # rerun with --skip-existing: nothing written, the corrupt one is reported again
        stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        code, _, err = run(capsys, "upscale", "-i", image_folder, "-o", out, "-s", "2", "-m", "bicubic", "--recursive",
                           "--skip-existing")  # fmt: skip
        assert code == 1 and err.strip().splitlines()[-1].split()[:3] == ["0", "6", "1"]
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    def test_skip_existing_all_good_exit_0(self, capsys, image_folder, tmp_path):
        args = ["upscale", "-i", image_folder, "-o", tmp_path / "o", "-s", "2", "-m", "bicubic", "-q"]
        assert run(capsys, *args)[0] == 0
        code, out, err = run(capsys, *args, "--skip-existing")
        assert code == 0 and out == "" and err == ""

    def test_single_file_to_file(self, capsys, image_folder, tmp_path):
        code, _, _ = run(capsys, "upscale", "-i", image_folder / "a.png", "-o", tmp_path / "big.jpg", "-m", "bicubic")
        assert code == 0 and read_image(tmp_path / "big.jpg").pixels.shape == (96, 128, 3)

    def test_ext_and_suffix(self, capsys, image_folder, tmp_path):
        code, _, _ = run(capsys, "upscale", "-i", image_folder, "-o", tmp_path / "o", "-m", "bicubic", "-s", "2",
                         "--ext", "tif", "--suffix", "")  # fmt: skip
        assert code == 0 and files(tmp_path / "o") == ["a.tif", "b16.tif", "c.tif"]

    def test_dry_run(self, capsys, image_folder, tmp_path):
        code, out, _ = run(capsys, "upscale", "-i", image_folder, "-o", tmp_path / "o", "--dry-run", "-m", "nope")
        assert code == 0 and "would write" in out and not (tmp_path / "o").exists()

    def test_model_path(self, capsys, untrained, tmp_path):
        write_image(tmp_path / "x.png", synth_image(12, 16, 3))
        code, _, err = run(capsys, "upscale", "-i", tmp_path / "x.png", "-o", tmp_path / "o", "-s", "2",
                           "-m", "edsr-s-x2", "--route", "off", "-t", "64", "--device", "cpu", "-v")  # fmt: skip
        assert code == 0, err
        assert read_image(tmp_path / "o" / "x_out.png").pixels.shape == (24, 32, 3)
        assert "edsr-s-x2" in err

    def test_deblur_identity(self, capsys, image_folder, tmp_path):
        code, _, _ = run(capsys, "deblur", "-i", image_folder / "a.png", "-o", tmp_path / "o", "-m", "identity")
        assert code == 0
        np.testing.assert_array_equal(read_image(tmp_path / "o" / "a_out.png").pixels,
                                      read_image(image_folder / "a.png").pixels)  # fmt: skip

    def test_deblur_model_stages(self, capsys, untrained, tmp_path):
        write_image(tmp_path / "x.png", synth_image(16, 16, 0))
        code, _, err = run(capsys, "deblur", "-i", tmp_path / "x.png", "-o", tmp_path / "o", "--stages", "2",
                           "-t", "64", "--device", "cpu")  # fmt: skip
        assert code == 0, err
        assert read_image(tmp_path / "o" / "x_out.png").channels == 1

    @pytest.fixture
    def stub_defocus(self, monkeypatch):
        import blurwise.defocus

        def fake(image, depth=None, **kw):
            sigma = np.full(image.shape[:2], 1.5, np.float32)
            sigma[:, : image.shape[1] // 2] = 4.0
            return sigma

        monkeypatch.setattr(blurwise.defocus, "estimate_defocus", fake, raising=False)

    def test_defocus_map_tiff_preview_overlay(self, capsys, stub_defocus, image_folder, tmp_path):
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "m", "--overlay")
        assert code == 0, err
        assert files(tmp_path / "m") == ["a_defocus.png", "a_defocus.tiff", "a_defocus_overlay.png"]
        m = read_image(tmp_path / "m" / "a_defocus.tiff")
        assert m.bit_depth == 32 and m.channels == 1
        import tifffile

        raw = tifffile.imread(tmp_path / "m" / "a_defocus.tiff")
        assert raw.dtype == np.float32 and raw.shape == (24, 32)
        assert set(np.unique(raw)) == {np.float32(1.5), np.float32(4.0)}
        prev = read_image(tmp_path / "m" / "a_defocus.png")
        assert prev.height == 24 and prev.width > 32 and prev.channels == 3  # map plus a colour bar at the right
        left, right = prev.pixels[:, :8].mean(), prev.pixels[:, 16:30].mean()
        assert left > right  # magma: blurred (4 px) is brighter than 1.5 px
        ov = read_image(tmp_path / "m" / "a_defocus_overlay.png")
        assert (ov.height, ov.width, ov.channels) == (24, 32, 3)
        assert no_temp(tmp_path / "m")

    def test_defocus_map_options(self, capsys, stub_defocus, image_folder, tmp_path):
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "t", "--no-preview")
        assert code == 0, err
        assert files(tmp_path / "t") == ["a_defocus.tiff"]
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "p", "--ext", "png")
        assert code == 0, err
        assert files(tmp_path / "p") == ["a_defocus.png"]
        code, _, err = run(
            capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "one.tif", "--vmax", "8"
        )
        assert code == 0, err
        assert (tmp_path / "one.tif").is_file() and (tmp_path / "one.png").is_file()  # -o FILE: preview beside it
        # re-runs skip; with --suffix '' in the input folder the preview would replace the input: refused
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "t", "--skip-existing")
        assert code == 0, err
        src = tmp_path / "src"
        src.mkdir()
        write_image(src / "x.png", synth_image(16, 16, 3))
        before = (src / "x.png").read_bytes()
        code, _, err = run(capsys, "defocus-map", "-i", src / "x.png", "-o", src, "--suffix", "", "--overwrite")
        assert code == 1 and "would replace its input" in err
        assert (src / "x.png").read_bytes() == before


# --------------------------------------------------------------------------- bad input


class TestBadInput:
    def _up(self, capsys, *args):
        return run(capsys, "upscale", "-m", "bicubic", "-s", "2", *args)

    def test_missing_file(self, capsys, tmp_path):
        code, _, err = self._up(capsys, "-i", tmp_path / "nope.png", "-o", tmp_path / "o")
        assert code == 1 and "file not found" in err and "Traceback" not in err
        assert err.count(str(tmp_path / "nope.png")) == 1  # the path is said once, not again at the end
        assert err.count("\n") == 1  # one image, one failure: its line alone, no summary table
        assert files(tmp_path / "o") == []

    @pytest.mark.parametrize(
        "name,data,msg",
        [
            ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt|not an image"),
            ("text.jpg", b"this is not a jpeg", "not an image"),
            ("empty.png", b"", "empty file"),
        ],
    )
    def test_unreadable(self, capsys, tmp_path, name, data, msg):
        import re

        (tmp_path / name).write_bytes(data)
        code, _, err = self._up(capsys, "-i", tmp_path / name, "-o", tmp_path / "o")
        assert code == 1 and re.search(msg, err) and "Traceback" not in err
        assert files(tmp_path / "o") == []

    def test_absurd_size_and_allow_large(self, capsys, tmp_path):
        from blurwise.io.image import MAX_PIXELS

        helptext = " ".join(run(capsys, "upscale", "-h")[1].split())  # as one line, however argparse wrapped it
        assert f"above {MAX_PIXELS // 1_000_000} megapixels" in helptext  # the flag's help names the reader's limit
        (tmp_path / "huge.png").write_bytes(png_header_only(30000, 30000))
        code, _, err = self._up(capsys, "-i", tmp_path / "huge.png", "-o", tmp_path / "o", "-q")
        assert code == 1 and "too large" in err and "--allow-large" in err and err.count("\n") == 1
        # with the flag the size passes and the (pixel-less) file fails at decoding instead
        code, _, err = self._up(capsys, "-i", tmp_path / "huge.png", "-o", tmp_path / "o", "--allow-large")
        assert code == 1 and "too large" not in err and "corrupt" in err
        assert files(tmp_path / "o") == []

    def test_truncated(self, capsys, tmp_path):
        data = write_image(tmp_path / "ok.png", synth_image(64, 64, 3)).read_bytes()
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "t.png").write_bytes(data[: len(data) // 2])
        code, _, err = self._up(capsys, "-i", tmp_path / "in", "-o", tmp_path / "o")
        assert code == 1 and "truncated" in err
        assert files(tmp_path / "o") == []

    def test_zero_size(self, capsys, tmp_path):
        import struct
        import zlib

        def chunk(t: bytes, b: bytes) -> bytes:
            return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

        hdr = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
        (tmp_path / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", hdr) + chunk(b"IEND", b""))
        code, _, err = self._up(capsys, "-i", tmp_path / "z.png", "-o", tmp_path / "o")
        assert code == 1 and "zero-size" in err

    def test_absurd_size(self, capsys, tmp_path):
        import struct
        import zlib

        def chunk(t: bytes, b: bytes) -> bytes:
            return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

        hdr = struct.pack(">IIBBBBB", 40000, 30000, 8, 2, 0, 0, 0)
        (tmp_path / "h.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", hdr) + chunk(b"IEND", b""))
        code, _, err = self._up(capsys, "-i", tmp_path / "h.png", "-o", tmp_path / "o")
        assert code == 1 and "too large" in err and "1200 MP" in err

    def test_unwritable_output(self, capsys, image_folder, tmp_path):
        (tmp_path / "afile").write_text("x")  # a file where the output folder should be (works as root too)
        code, _, err = self._up(capsys, "-i", image_folder / "a.png", "-o", tmp_path / "afile" / "o")
        assert code == 1 and "cannot create output folder" in err

    def test_output_name_too_long(self, capsys, image_folder, tmp_path):
        for out in (tmp_path / ("n" * 300 + ".png"), tmp_path / ("n" * 300)):
            code, _, err = self._up(capsys, "-i", image_folder / "a.png", "-o", out)
            assert code == 1 and len(err.strip().splitlines()) == 1 and "too long" in err
            assert "unexpected" not in err and "Traceback" not in err
        assert [p.name for p in tmp_path.iterdir()] == [image_folder.name]

    def test_side_outputs_too_long_fail_the_image(self, capsys, image_folder, tmp_path):
        # defocus-map -o NAME.tiff with a NAME that fits but whose _overlay.png does not: was a writer-thread
        # traceback and exit 0, with nothing written
        out = tmp_path / ("m" * 245 + ".tiff")
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", out, "--overlay", "-q")
        assert code == 1 and len(err.strip().splitlines()) == 1 and "_overlay.png: File name too long" in err
        assert [p.name for p in tmp_path.iterdir()] == [image_folder.name]

    def test_unicode_and_spaces_in_output_path(self, capsys, image_folder, tmp_path):
        out = tmp_path / "sp ace" / "ünï 😀"
        code, _, _ = self._up(capsys, "-i", image_folder / "a.png", "-o", out)
        assert code == 0 and files(out) == ["a_out.png"] and no_temp(out)

    def test_unwritable_output_permission(self, capsys, image_folder, tmp_path, monkeypatch):
        import blurwise.io.image as mod

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(mod.tempfile, "mkstemp", refuse)
        (tmp_path / "o").mkdir()
        code, _, err = self._up(capsys, "-i", image_folder / "a.png", "-o", tmp_path / "o")
        assert code == 1 and "not writable" in err and "Permission denied" in err
        assert files(tmp_path / "o") == []

    def test_existing_output_not_overwritten(self, capsys, image_folder, tmp_path):
        dst = tmp_path / "o" / "a_out.png"
        write_image(dst, synth_image(4, 4, 3))
        before = dst.read_bytes()
        code, _, err = self._up(capsys, "-i", image_folder / "a.png", "-o", tmp_path / "o")
        assert code == 1 and "exists" in err and "--overwrite" in err
        assert dst.read_bytes() == before and no_temp(tmp_path / "o")
        code, _, _ = self._up(capsys, "-i", image_folder / "a.png", "-o", tmp_path / "o", "--overwrite")
        assert code == 0 and read_image(dst).pixels.shape == (48, 64, 3)

    def test_unknown_model(self, capsys, image_folder, tmp_path):
        code, _, err = run(capsys, "upscale", "-i", image_folder, "-o", tmp_path / "o", "-m", "no-such-model")
        assert code == 1 and "unknown model 'no-such-model'" in err
        assert err.count("\n") == 1 and not (tmp_path / "o").exists()

    def test_wrong_scale(self, capsys, untrained, image_folder, tmp_path):
        code, _, err = run(capsys, "upscale", "-i", image_folder, "-o", tmp_path / "o", "-m", "edsr-s-x2", "-s", "4")
        assert code == 1 and "x2" in err and "x4" in err and err.count("\n") == 1

    @pytest.mark.parametrize(
        ("flags", "said"),
        [
            (("--route", "off", "--budget", "0.5"), "--budget set the routing, but --route off"),
            (("--route", "off", "--threshold", "0"), "--threshold set the routing"),
            (("--route", "off", "--routes", "3"), "--routes set the routing"),
            (("--route", "off", "--save-map"), "--save-map saves the defocus map"),
            (("-m", "bicubic", "--save-map"), "-m bicubic routes nothing"),
            (("--fp32", "--half", "bf16"), "contradict"),
            (("--half", "fp16", "--device", "cpu"), "needs a GPU; on a CPU use bf16"),
            (("--threshold", "0.3", "--budget", "0.5"), "not both"),
            (("--router", "learned", "--depth", "d.npy"), "the learned router takes no depth map"),
            (("--map-precision", "fp16", "--device", "cpu"), "fp16 map (--map-precision fp16) needs a GPU"),
        ],
    )
    def test_contradicting_flags(self, capsys, image_folder, tmp_path, flags, said):
        code, _, err = run(capsys, "upscale", "-i", image_folder / "a.png", "-o", tmp_path / "o", *flags)
        assert code == 2 and said in err and err.count("\n") == 1 and not (tmp_path / "o").exists()

    def test_negative_sigma_threshold(self, capsys, image_folder, tmp_path):
        # refused with the flags, before any image is read: one line, no per-image failure report
        code, _, err = run(capsys, "upscale", "-i", image_folder / "a.png", "-o", tmp_path / "o", "--threshold", "-1")
        assert code == 2 and "--threshold" in err and "blur sigma in LR pixels" in err and ">= 0" in err
        assert err.count("\n") == 1 and not (tmp_path / "o").exists()

    def test_wrong_task(self, capsys, untrained, image_folder, tmp_path):
        code, _, err = run(capsys, "deblur", "-i", image_folder, "-o", tmp_path / "o", "-m", "edsr-s-x2")
        assert code == 1 and "not deblurring" in err

    def test_pickle_refused(self, capsys, image_folder, tmp_path):
        (tmp_path / "w.pth").write_bytes(b"not really")
        code, _, err = run(capsys, "upscale", "-i", image_folder, "-o", tmp_path / "o", "-m", tmp_path / "w.pth")
        assert code == 1 and "Traceback" not in err and err.count("\n") == 1

    def test_file_output_with_many_inputs(self, capsys, image_folder, tmp_path):
        code, _, err = self._up(capsys, "-i", image_folder, "-o", tmp_path / "x.png")
        assert code == 2 and "names a file" in err

    def test_empty_folder(self, capsys, tmp_path):
        (tmp_path / "empty").mkdir()
        code, _, err = self._up(capsys, "-i", tmp_path / "empty", "-o", tmp_path / "o")
        assert code == 2 and "no input images" in err

    def test_bad_device(self, capsys, image_folder, tmp_path):
        code, _, err = run(capsys, "deblur", "-i", image_folder, "-o", tmp_path / "o", "--device", "tpu")
        assert code == 2 and "device" in err

    def test_unexpected_error_one_line(self, capsys, monkeypatch):
        import blurwise.cli as cli

        def boom(args):
            raise RuntimeError("kaboom\nmore")

        monkeypatch.setattr(cli, "_cmd_models", boom)
        code, _, err = run(capsys, "models")
        assert code == 1 and err.strip() == (
            "blurwise: error: unexpected RuntimeError: kaboom (run with --debug for the traceback)"
        )
        code, _, err = run(capsys, "--debug", "models")
        assert code == 1 and "Traceback" in err

    def test_stdout_on_a_full_disk(self, capsys, monkeypatch):
        # `blurwise models --json > file` on a full disk: one line, exit 1 (was 'unexpected OSError ... --debug')
        class Full:
            def write(self, text):
                raise OSError(28, "No space left on device")

            def flush(self):
                pass

        monkeypatch.setattr(sys, "stdout", Full())
        code, _, err = run(capsys, "models", "--json")
        assert code == 1 and err.strip() == "blurwise: error: cannot write the output: No space left on device"

    def test_keyboard_interrupt_130(self, capsys, monkeypatch):
        import blurwise.cli as cli

        def interrupted(args):
            raise KeyboardInterrupt

        monkeypatch.setattr(cli, "_cmd_models", interrupted)
        assert run(capsys, "models")[0] == 130


# --------------------------------------------------------------------------- forwarding commands


class TestDefocusMapArgs:
    @pytest.mark.parametrize(
        ("flags", "said"),
        [
            (("--device", "bogus"), "unknown device 'bogus'"),
            (("--vmax", "0"), "--vmax: expected a blur sigma in px > 0"),
            (("--vmax", "inf"), "--vmax: expected"),
            (("--segmenter", "depth"), "--segmenter depth needs --depth"),
            (("--sam-checkpoint", "sam.pth"), "--sam-checkpoint is for --segmenter sam"),
            (("--ext", "png", "--no-preview"), "--no-preview leaves only the float TIFF"),
        ],
    )
    def test_refused_before_any_image(self, capsys, image_folder, tmp_path, flags, said):
        code, _, err = run(capsys, "defocus-map", "-i", image_folder / "a.png", "-o", tmp_path / "o", *flags)
        assert code == 2 and said in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


class TestTrainArgs:
    def test_config_forms(self):
        from blurwise.cli import _train_configs
        from blurwise.errors import UsageError

        sr = "sr_edsr-s_x2"
        assert _train_configs(["sr"], []) == ["sr"]  # a task word: its shipped model's config
        assert _train_configs(["sr"], [sr]) == [sr]  # the documented form: train sr --config FILE
        assert _train_configs([], [sr, "sr_edsr-s_x4.toml"]) == [sr, "sr_edsr-s_x4.toml"]
        for words, files, said in (
            (["deblur"], [sr], "is a sr config, not deblur"),
            (["a.toml"], [sr], "names the task"),
            ([], [], "give a config"),
        ):
            with pytest.raises(UsageError, match=said):
                _train_configs(words, files)

    def test_teacher_flag_completes_a_config_without_one(self, tmp_path):
        from blurwise.cli import _train_configs
        from blurwise.train.config import CONFIG_DIR

        text = (CONFIG_DIR / "distill_ebmsr_x2.toml").read_text().replace('teacher = "edsr-s-x2"', "")
        (tmp_path / "d.toml").write_text(text)
        files = [str(tmp_path / "d.toml")]
        assert _train_configs(["distill"], files, overrides={"teacher": "my.pth"}) == files

    def test_ship_is_refused_by_an_installed_blurwise(self, capsys, monkeypatch, tmp_path):
        import blurwise.train.config as tconfig
        from blurwise.models.registry import WEIGHTS_DIR

        monkeypatch.setattr(tconfig, "source_checkout", lambda: None)
        monkeypatch.setenv("BLURWISE_RUNS", str(tmp_path))
        before = {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()}
        code, _, err = run(capsys, "train", "sr", "--smoke", "--ship")
        assert code == 2 and "an installed blurwise does not rewrite its package" in err and err.count("\n") == 1
        assert {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()} == before
        assert list(tmp_path.iterdir()) == []

    def test_typo_in_set_is_one_line_before_anything_runs(self, capsys, monkeypatch):
        import blurwise.train

        monkeypatch.setattr(blurwise.train, "run", lambda *a, **k: pytest.fail("ran"), raising=False)
        code, _, err = run(capsys, "train", "sr", "--smoke", "--set", "optim.lrr=1")
        assert code == 2 and "unknown key 'optim.lrr' (did you mean 'optim.lr'?" in err and err.count("\n") == 1


class TestDepthFolder:
    def test_found_by_name_in_any_readable_format_never_the_image_itself(self, tmp_path):
        from blurwise.batch import plan_jobs
        from blurwise.cli import _depth_finder
        from blurwise.errors import UsageError

        for name in ("a.png", "b.png", "c.png"):
            write_image(tmp_path / name, synth_image(16, 16, 3))
        write_image(tmp_path / "a.jpg", synth_image(16, 16, 1))  # a's depth, as a JPEG
        np.save(tmp_path / "b.npy", np.ones((16, 16), np.float32))
        jobs = {j.src.name: j for j in plan_jobs([tmp_path], tmp_path / "out")}
        find = _depth_finder(str(tmp_path), list(jobs.values()))
        assert find(jobs["a.png"]).name == "a.jpg" and find(jobs["b.png"]).name == "b.npy"
        with pytest.raises(UsageError, match="no depth map for c.png"):  # c.png itself is not its depth
            find(jobs["c.png"])


class TestForwarding:
    def test_evaluate_bicubic_json(self, capsys, tmp_path):
        for k in range(2):
            write_image(tmp_path / f"hr{k}.png", synth_image(32, 32, 3, seed=k))
        args = ["evaluate", "--task", "sr", "--data", tmp_path, "-s", "4", "-m", "bicubic", "--json"]
        code, out, err = run(capsys, *args)
        assert code == 0, err
        res = json.loads(out)
        assert res["n_images"] == 2 and res["model"] == "bicubic" and len(res["per_image"]) == 2
        assert {"task", "model", "scale", "n_images", "psnr_y", "ssim_y", "per_image"} <= set(res)

    def test_evaluate_json_is_valid_for_identical_images(self, capsys, tmp_path):
        for k in range(2):
            img = synth_image(16, 16, 3, seed=k)
            write_image(tmp_path / "sharp" / f"{k}.png", img)
            write_image(tmp_path / "blur" / f"{k}.png", img if k == 0 else synth_image(16, 16, 3, seed=5))
        code, out, err = run(capsys, "evaluate", "--task", "deblur", "--data", tmp_path, "-m", "identity", "--json")
        assert code == 0, err
        res = json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
        assert res["per_image"][0]["psnr"] is None and res["psnr"] is None  # infinite: null
        assert res["per_image"][0]["ssim"] == 1.0 and res["per_image"][1]["psnr"] > 0
        json.dumps(res, allow_nan=False)

    def test_evaluate_says_what_was_routed(self, capsys, monkeypatch, tmp_path):
        import blurwise.evaluate

        def fake(task, data, **kw):
            assert kw["route"] == "auto"
            row = {"name": "a.png", "psnr_y": 30.0, "ssim_y": 0.9}
            rt = {"routed_images": 1, "flops_fraction": 0.5, "notes": ["image too small to route (5x5): heavy"]}
            return {"task": "sr", "model": "m", "scale": 4, "n_images": 2, "psnr_y": 30.0, "ssim_y": 0.9,
                    "per_image": [row, row], "routing": rt}  # fmt: skip

        monkeypatch.setattr(blurwise.evaluate, "evaluate", fake)
        code, out, _ = run(capsys, "evaluate", "--data", tmp_path, "--route", "auto")
        assert code == 0
        assert (
            out.splitlines()[-1]
            == "routed 1 of 2 images, 50.0% of the heavy model's FLOPs; image too small to route (5x5): heavy"
        )

    def test_evaluate_missing_folder(self, capsys, tmp_path):
        code, _, err = run(capsys, "evaluate", "--data", tmp_path / "nope")
        assert code == 2 and "folder" in err

    def test_bench_json(self, capsys, untrained):
        code, out, err = run(capsys, "bench", "-m", "edsr-s-x2", "--size", "32x32", "--runs", "1", "--warmup", "0",
                             "--device", "cpu", "--json")  # fmt: skip
        assert code == 0, err
        res = json.loads(out)
        assert res["input"] == "16x16" and res["output"] == "32x32" and res["flops"] == 2 * res["macs"] > 0
        assert res["median_s"] > 0 and res["params"] > 0

    def test_bench_size_not_multiple(self, capsys, untrained):
        code, _, err = run(capsys, "bench", "-m", "edsr-s-x2", "--size", "33x32", "--device", "cpu")
        assert code == 2 and "multiple" in err

    @pytest.mark.parametrize(
        "flags, msg",
        [
            (["-m", "edsr-s-x4", "-s", "2"], "upscales x4, but the scale asked for is x2"),
            (["-m", "lprn", "-s", "4"], "does not upscale"),
            (["--task", "deblur", "-s", "2"], "has no scale"),
            (["--task", "deblur", "-m", "edsr-s-x4"], "not --task deblur"),
            (["-m", "bicubic"], "baseline"),
            (["-m", "router-x4"], "patch router"),
        ],
    )
    def test_bench_refuses_contradictions(self, capsys, flags, msg):
        code, out, err = run(capsys, "bench", *flags, "--device", "cpu")  # refused before any timing
        assert code == 2 and msg in err and err.count("\n") == 1 and not out

    def test_train_forwards(self, capsys, monkeypatch):
        import blurwise.train
        from blurwise.train.loop import RunResult

        seen = {}

        def fake_run(config, *, device="auto", smoke=False, resume=True, overrides=None):
            seen.update(config=config, device=device, smoke=smoke, resume=resume, overrides=overrides)
            return RunResult("r", 0, 3, val=[(3, 30.5)], run_dir=Path("d"), export=Path("w.safetensors"))

        monkeypatch.setattr(blurwise.train, "run", fake_run, raising=False)
        code, out, _ = run(capsys, "train", "distill", "--teacher", "t.pth", "--smoke", "--set", "optim.lr=0.001")
        assert code == 0 and "steps 0 -> 3" in out
        assert seen["config"] == "distill" and seen["smoke"] is True
        assert seen["overrides"] == {"teacher": "t.pth", "optim.lr": 0.001}

    def test_not_available_yet(self, capsys, monkeypatch, tmp_path):
        monkeypatch.setitem(sys.modules, "blurwise.export", None)  # import fails like a missing module
        code, _, err = run(capsys, "export", "-m", "edsr-s-x4", "-o", tmp_path / "m.onnx")
        assert code == 1 and "not available yet" in err and err.count("\n") == 1

    def test_not_implemented(self, capsys, monkeypatch, tmp_path):
        import blurwise.data

        def make_eval(out_dir, small=False):
            raise NotImplementedError("make_eval")

        monkeypatch.setattr(blurwise.data, "make_eval", make_eval, raising=False)
        code, _, err = run(capsys, "data", "make-eval", "--out", tmp_path / "e", "--small")
        assert code == 1 and "not available yet" in err

    def test_data_forwards(self, capsys, monkeypatch, tmp_path):
        import blurwise.data

        seen = {}

        def make_eval(out, small=False):
            seen.update(out=out, small=small)

        monkeypatch.setattr(blurwise.data, "make_eval", make_eval, raising=False)
        code, _, _ = run(capsys, "data", "make-eval", "--out", tmp_path / "e", "--small")
        assert code == 0 and seen == {"out": str(tmp_path / "e"), "small": True}

    @pytest.mark.parametrize("opset", ["5", "30"])
    def test_export_opset_out_of_range(self, capsys, tmp_path, opset):
        code, _, err = run(capsys, "export", "-m", "ebmsr-x4", "-o", tmp_path / "m.onnx", "--opset", opset)
        assert code == 2 and err.count("\n") == 1 and "use 11 to 20" in err and not (tmp_path / "m.onnx").exists()

    def test_make_eval_overwrite_forwarded(self, capsys, monkeypatch, tmp_path):
        import blurwise.data

        seen = {}

        def make_eval(out, small=False, *, overwrite=False, progress=None):
            seen.update(small=small, overwrite=overwrite)
            return {}

        monkeypatch.setattr(blurwise.data, "make_eval", make_eval, raising=False)
        assert run(capsys, "data", "make-eval", "--out", tmp_path, "--overwrite")[0] == 0
        assert seen == {"small": False, "overwrite": True}

    @pytest.mark.parametrize("flags", [[], ["-v"], ["-q"], ["-v", "-q"], ["data-q"]])
    def test_make_eval_summary_and_verbosity(self, capsys, monkeypatch, tmp_path, flags):
        import blurwise.data

        def make_eval(out, small=False, *, overwrite=False, progress=None):
            if progress:
                progress("Set14__baboon__s0")
            return {
                "defocus-sr": {"items": 4, "bytes": 1_700_000, "seconds": 2.6, "skipped": False, "replaced": False},
                "deblur-synth": {"items": 6, "bytes": 3_200_000, "skipped": True},
                "deblur-gopro": {"items": 2, "bytes": 3_300_000, "seconds": 0.0, "skipped": False, "replaced": True},
            }

        monkeypatch.setattr(blurwise.data, "make_eval", make_eval, raising=False)
        pre, post = (["-q"], []) if flags == ["data-q"] else ([], flags)
        code, out, err = run(capsys, "data", *pre, "make-eval", "--out", tmp_path, *post)
        assert code == 0 and out == ""
        if "-q" in flags or flags == ["data-q"]:
            assert err == ""
            return
        lines = err.splitlines()
        assert ("Set14__baboon__s0" in lines) == ("-v" in flags) and "{" not in err
        assert f"evaluation sets in {tmp_path}:" in lines
        assert "  defocus-sr: written, 4 items, 1.7 MB, 2.6 s" in lines
        assert "  deblur-synth: kept (already there), 6 items, 3.2 MB" in lines
        assert "  deblur-gopro: replaced, 2 items, 3.3 MB, 0.0 s" in lines

    def test_make_eval_refuses_a_folder_it_did_not_write(self, capsys, tmp_path):
        (tmp_path / "defocus-sr").mkdir()
        (tmp_path / "defocus-sr" / "notes.txt").write_text("mine")
        code, _, err = run(capsys, "data", "make-eval", "--small", "--out", tmp_path, "--overwrite")
        assert code == 1 and err.count("\n") == 1 and "defocus-sr" in err and "--out" in err
        assert files(tmp_path) == ["defocus-sr/notes.txt"]

    def test_export_opset_not_a_number(self, capsys, tmp_path):
        code, _, err = run(capsys, "export", "-m", "lprn", "-o", tmp_path / "m.onnx", "--opset", "abc")
        assert code == 2 and err.count("\n") == 1 and "expected an integer, not 'abc'" in err

    def test_export_overwrite(self, capsys, tmp_path):
        pytest.importorskip("onnxruntime")
        target = tmp_path / "m.onnx"
        target.write_bytes(b"old")
        code, _, err = run(capsys, "export", "-m", "lprn", "-o", target, "--overwrite", "-q")
        assert code == 0 and err == "" and target.stat().st_size > 10_000
        assert files(tmp_path) == ["m.onnx"]

    def test_export_existing_output(self, capsys, tmp_path):
        (tmp_path / "m.onnx").write_bytes(b"x")
        code, _, err = run(capsys, "export", "-m", "edsr-s-x4", "-o", tmp_path / "m.onnx")
        assert code == 1 and ("exists" in err or "not available yet" in err)
