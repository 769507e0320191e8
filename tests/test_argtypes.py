"""``blurwise.argtypes``: the 'expected X, not y' argparse types, the one-line usage errors, and the module
tools (``python -m blurwise....``) that parse with them."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from blurwise.argtypes import OneLineParser, checked, fraction, nonneg, positive, saving, sigma, size


@pytest.mark.parametrize(
    ("parse", "good", "bad", "said"),
    [
        (positive, [("1", 1), ("30000", 30000)], ["0", "-3", "2.5", "x", ""], "an integer >= 1"),
        (nonneg, [("0", 0), ("16", 16)], ["-1", "1.0", "abc"], "an integer >= 0"),
        (fraction, [("1", 1.0), ("0.25", 0.25)], ["0", "1.5", "nan", "half"], "a fraction in (0, 1]"),
        (saving, [("0", 0.0), ("0.2", 0.2)], ["1", "-0.1", "nan"], "a fraction in [0, 1)"),
        (sigma, [("0", 0.0), ("1.5", 1.5)], ["-1", "inf", "nan", "big"], "a finite number >= 0"),
        (size, [("1280x720", (1280, 720)), ("64X48", (64, 48))], ["1280", "0x720", "axb", "1x2x3"], "WIDTHxHEIGHT"),
    ],
)
def test_types_accept_good_values_and_say_what_they_expected(parse, good, bad, said):
    for text, value in good:
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            parse(text)
        assert said in str(exc.value) and str(exc.value).endswith(f"not {text!r}")


def test_checked_builds_a_type_from_a_conversion_and_a_test():
    widths = checked(lambda t: [int(c) for c in t.split(",")], lambda v: len(v) == 3, "3 widths")
    assert widths("16,32,48") == [16, 32, 48]
    for text in ("16,32", "16,a,48"):  # fails the test / does not convert: the same message
        with pytest.raises(argparse.ArgumentTypeError, match=rf"^expected 3 widths, not '{text}'$"):
            widths(text)


def test_usage_errors_are_one_line_also_in_subcommands(capsys):
    ap = OneLineParser(prog="tool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("--steps", type=positive, default=1)
    assert ap.parse_args(["run"]).steps == 1
    for argv, said in [
        (["run", "--steps", "0"], "tool run: error: argument --steps: expected an integer >= 1, not '0'"),
        (["run", "--frob"], "tool: error: unrecognized arguments: --frob"),  # argparse reports these at the top
        ([], "tool: error: the following arguments are required: cmd (see 'tool -h')"),
    ]:
        with pytest.raises(SystemExit) as exc:
            ap.parse_args(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith(said) and err.endswith("-h')\n") and err.count("\n") == 1


def test_importing_it_loads_no_torch_numpy_or_image_code():
    code = (
        "import sys, blurwise.argtypes, blurwise.limits; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL') "
        "or (m.startswith('blurwise.') and m not in ('blurwise.argtypes', 'blurwise.limits'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


TOOLS = {
    "blurwise.train.router": ["bank", "--split", "train", "--out", "unused", "--limit", "0"],
    "blurwise.train.light_tune": ["--train", "unused", "--steps", "0"],
    "blurwise.train.__main__": ["some.toml", "--frob"],
    "blurwise.defocus.learned": ["--iterations", "0"],
    "blurwise.defocus.calibrate": ["--images", "0"],
    "blurwise.data.evalsets": ["--out", "unused", "--jobs", "0"],
    "blurwise.data.scene": ["--seed", "x"],
}


@pytest.mark.parametrize("module", TOOLS)
def test_module_tools_report_a_usage_error_in_one_line(module, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were it lands here
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main(TOOLS[module])
    out, err = capsys.readouterr()
    prog = "python -m " + module.removesuffix(".__main__")
    assert exc.value.code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(prog) and ": error: " in err and f"(see '{prog}" in err and err.endswith(" -h')\n")
    assert list(tmp_path.iterdir()) == []
