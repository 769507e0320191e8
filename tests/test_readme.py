"""The README's Python examples run as written (acceptance of the workflow issue)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert _python_blocks(), "README.md should show the Python API"


@pytest.mark.parametrize("i", range(len(_python_blocks())))
def test_readme_python_block_runs(i, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples use repo-relative paths (examples/...)
    code = _python_blocks()[i]
    exec(compile(code, f"README.md[python block {i}]", "exec"), {"__name__": "__readme__"})  # noqa: S102
    assert os.getcwd() == str(ROOT)
