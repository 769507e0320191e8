"""blurwise as an installed package: what the wheel ships is what the code reads at run time.

Static checks of pyproject.toml against the files on disk (building a wheel takes too long for the suite):
a weights file or config added without a package-data glob works in a checkout and is missing for every
user who installs the wheel.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

import blurwise

PKG = Path(blurwise.__file__).resolve().parent
ROOT = PKG.parent
PYPROJECT = ROOT / "pyproject.toml"
INSTALLED = not PYPROJECT.is_file()
pytestmark = pytest.mark.skipif(INSTALLED, reason="needs the checkout's pyproject.toml (this blurwise is installed)")


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def _shipped_data() -> set[Path]:
    """The package's non-Python files that the wheel carries (pyproject's package-data globs)."""
    globs = _project()["tool"]["setuptools"]["package-data"]["blurwise"]
    found: set[Path] = set()
    for pattern in globs:
        hits = set(PKG.glob(pattern))
        assert hits, f"package-data glob {pattern!r} matches no file"
        found |= hits
    return found


def _data_files() -> set[Path]:
    return {
        p
        for p in PKG.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts and p.name != ".DS_Store"
    }


def test_every_data_file_in_the_package_ships():
    missing = sorted(str(p.relative_to(PKG)) for p in _data_files() - _shipped_data())
    assert not missing, f"in blurwise/ but not in pyproject's package-data (absent from the wheel): {missing}"


def test_what_the_code_loads_at_run_time_ships():
    from blurwise.models.registry import WEIGHTS_DIR, is_shipped, list_variants
    from blurwise.train.config import CONFIG_DIR, TASK_CONFIGS

    shipped = _shipped_data()
    assert WEIGHTS_DIR.is_relative_to(PKG) and CONFIG_DIR.is_relative_to(PKG)
    weights = [WEIGHTS_DIR / v.weights for v in list_variants() if is_shipped(v)]
    assert len(weights) >= 18 and all(p in shipped for p in weights)
    assert set(WEIGHTS_DIR.glob("*.safetensors")) <= shipped  # no weights file that no variant names goes missing
    configs = [CONFIG_DIR / f"{name}.toml" for name in TASK_CONFIGS.values()]
    assert set(CONFIG_DIR.glob("*.toml")) <= shipped and all(p in shipped for p in configs)


def test_no_code_reaches_outside_the_package():
    """An installed blurwise has no checkout around it: only the two modules that fall back when there is none
    (data/paths.py: ../shared/data; train/config.py: source_checkout) may look above the package."""
    allowed = {PKG / "data" / "paths.py", PKG / "train" / "config.py"}
    pattern = re.compile(r"parents\[[2-9]\]|parent\.parent\.parent|REPO_ROOT\s*=")
    offenders = [
        str(p.relative_to(ROOT))
        for p in PKG.rglob("*.py")
        if p not in allowed and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"repo-layout paths in {offenders}: ship the file as package data instead"


def test_metadata():
    project = _project()["project"]
    assert project["scripts"] == {"blurwise": "blurwise.cli:main"}
    assert (ROOT / project["readme"]).is_file()
    assert all((ROOT / f).is_file() for f in project["license-files"])
    assert any(d.startswith("torch>=") for d in project["dependencies"])  # a range: a library pins no torch build
    extras = set(project["optional-dependencies"])
    named = set()
    for p in PKG.rglob("*.py"):
        named |= set(re.findall(r"blurwise\[([a-z0-9-]+)\]", p.read_text(encoding="utf-8")))
    assert named and named <= extras, f"messages name extras pyproject lacks: {sorted(named - extras)}"


def test_installed_tools_do_not_rewrite_the_package(monkeypatch, tmp_path, capsys):
    """Installed (no source checkout), a developer tool's default output would be a file in site-packages: refused
    with one line before any work; an explicit --out is still fine."""
    import blurwise.train.config as config
    from blurwise.defocus import calibrate, learned
    from blurwise.errors import UsageError
    from blurwise.train import light_tune, router

    monkeypatch.setattr(config, "source_checkout", lambda: None)
    empty = str(tmp_path)
    assert router.main(["fit", "--train", empty, "--val", empty]) == 2
    assert router.main(["debias", "--train", empty]) == 2
    assert light_tune.main(["--train", empty]) == 2
    for err in capsys.readouterr().err.strip().splitlines():
        assert "an installed blurwise does not rewrite its shipped" in err
    for tool, argv in ((learned, ["--work", empty]), (learned, ["--scale", "4", "--work", empty]), (calibrate, [])):
        with pytest.raises(UsageError, match="give --out FILE"):
            tool.main(argv)
    assert list(tmp_path.iterdir()) == []
    config.check_default_out(tmp_path / "x.safetensors", "router-x4")  # an explicit --out passes
