"""Ray Data scale-out (blurwise.ray_data): a local Ray cluster gives the same files as the single-process CLI.

Skipped where Ray is absent (``pip install "blurwise[ray]"``). One module-scoped local cluster
(2 CPUs, no dashboard) serves all tests; the model is a tiny EDSR saved to a .safetensors file
so both runs load identical weights.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import synth_image

from blurwise.cli import main
from blurwise.io import read_image, write_image


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster; one retry when its daemons miss Ray's fixed start-up windows.

    (Ray's raylet waits ~20 s for its Python agents and the driver 30 s for the raylet; on a machine
    so loaded that starting a Python process takes longer, the cluster cannot start: skipped then.)
    """
    global ray
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            break
        except Exception as exc:  # Ray raises a bare Exception when the raylet does not register in time
            ray.shutdown()
            if "timed out during startup" not in str(exc):
                raise
            if attempt == 2:
                pytest.skip("the local Ray cluster did not start within Ray's 30 s window (machine overloaded)")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four small images in a tree (8-bit RGB, RGBA, 16-bit, gray) plus one corrupt file."""
    root = tmp_path_factory.mktemp("ray") / "in"
    (root / "sub").mkdir(parents=True)
    write_image(root / "a.png", synth_image(20, 28, 3, seed=1))
    write_image(root / "b_rgba.png", synth_image(16, 24, 4, seed=2))
    write_image(root / "sub" / "c16.png", synth_image(18, 22, 3, np.uint16, seed=3))
    write_image(root / "sub" / "d_gray.png", synth_image(16, 16, 0, seed=4))
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory):
    import torch

    from blurwise.models import create_model, save_weights

    torch.manual_seed(0)
    cfg = {"scale": 2, "n_feats": 8, "n_resblocks": 1}
    model = create_model("edsr", **cfg)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    return save_weights(model, path, arch="edsr", task="sr", scale=2, config=cfg)


ray = None  # imported by the cluster fixture (the tests without a cluster run without Ray)


def outputs(folder) -> dict[str, object]:
    return {p.relative_to(folder).as_posix(): read_image(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_upscale_equals_single_process_cli(cluster, folder, tiny_sr, tmp_path, capsys):
    argv = ["upscale", "-i", str(folder), "--recursive", "-m", str(tiny_sr), "-s", "2", "--route", "off", "-q"]
    assert main([*argv, "-o", str(tmp_path / "single")]) == 1  # the corrupt file fails, the rest is written
    code = main([*argv, "-o", str(tmp_path / "ray"), "--ray", "--actors", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 1 and sum("broken.png" in line for line in err.splitlines()) == 2, err  # once per run
    single, distributed = outputs(tmp_path / "single"), outputs(tmp_path / "ray")
    assert list(distributed) == ["a_out.png", "b_rgba_out.png", "sub/c16_out.png", "sub/d_gray_out.png"]
    assert list(single) == list(distributed)
    for name, a in single.items():
        b = distributed[name]
        assert (a.bit_depth, a.channels, a.pixels.shape) == (b.bit_depth, b.channels, b.pixels.shape), name
        assert np.array_equal(a.pixels, b.pixels), name  # pixel for pixel
        assert (a.alpha is None) == (b.alpha is None) and (a.alpha is None or np.array_equal(a.alpha, b.alpha))
    assert single["a_out.png"].pixels.shape == (40, 56, 3) and single["sub/c16_out.png"].bit_depth == 16
    assert not [p for p in (tmp_path / "ray").rglob(".*")]  # no temp files left
    # a re-run with --skip-existing starts no actor and does nothing
    assert main([*argv, "-o", str(tmp_path / "ray"), "--ray", "--skip-existing", "--actors", "1"]) == 1
    assert "4        0" not in capsys.readouterr().err


def test_read_binary_files_recipe_deblur(cluster, folder, tmp_path, capsys):
    from blurwise.ray_data import ImageMapper

    good = [p for p in folder.rglob("*.png") if p.name != "broken.png"]
    single_argv = ["deblur", "-i", str(folder), "--recursive", "-m", "identity", "-q"]
    assert main([*single_argv, "-o", str(tmp_path / "single")]) == 1
    capsys.readouterr()
    ds = ray.data.read_binary_files([str(p) for p in good], include_paths=True).map_batches(
        ImageMapper,
        fn_constructor_kwargs={
            "task": "deblur",
            "options": {"model": "identity"},
            "input_root": str(folder),
            "output": str(tmp_path / "ray"),
        },
        batch_size=4,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    rows = ds.take_all()
    assert sorted(r["status"] for r in rows) == ["done"] * 4
    single, distributed = outputs(tmp_path / "single"), outputs(tmp_path / "ray")
    assert list(single) == list(distributed)
    for name, a in single.items():
        assert np.array_equal(a.pixels, distributed[name].pixels), name


def test_mapper_in_process_equals_cli(folder, tiny_sr, tmp_path, capsys):
    """What every actor does, without a cluster: same files as the CLI (runs where Ray is absent too)."""
    from blurwise.ray_data import ImageMapper, plan_rows

    argv = ["upscale", "-i", str(folder), "--recursive", "-m", str(tiny_sr), "-s", "2", "--route", "off", "-q"]
    assert main([*argv, "-o", str(tmp_path / "single")]) == 1
    rows, pre = plan_rows("upscale", [folder], tmp_path / "mapped", recursive=True)
    assert len(rows) == 5 and not pre.failed and pre.skipped == 0
    mapper = ImageMapper("upscale", {"scale": 2, "model": str(tiny_sr), "route": "off", "device": "cpu"}, threads=1)
    out = mapper({k: np.array([r[k] for r in rows], dtype=object) for k in ("src", "dst", "depth")})
    assert sorted(out["status"]) == ["done"] * 4 + ["failed"]
    assert "broken.png" in out["src"][list(out["status"]).index("failed")]
    single, mapped = outputs(tmp_path / "single"), outputs(tmp_path / "mapped")
    assert list(single) == list(mapped)
    for name, a in single.items():
        assert np.array_equal(a.pixels, mapped[name].pixels), name
    again = mapper({"src": np.array([rows[0]["src"]]), "dst": np.array([rows[0]["dst"]])})
    assert list(again["status"]) == ["failed"] and "exists" in again["error"][0]  # never overwritten silently


def test_errors_without_cluster(folder, tmp_path):
    from blurwise.errors import UsageError
    from blurwise.ray_data import ImageMapper, build_dataset, plan_rows

    with pytest.raises(UsageError, match="unknown upscale option"):
        build_dataset([], "upscale", {"stages": 3})
    with pytest.raises(UsageError, match="task must be"):
        plan_rows("sharpen", [folder], tmp_path)
    rows, res = plan_rows("deblur", [folder], tmp_path / "o", recursive=True)
    assert len(rows) == 5 and res.done == 0 and not res.failed
    assert rows[0]["dst"].endswith("a_out.png")
    m = ImageMapper("deblur", {"model": "identity"}, threads=1)
    src = np.array([rows[0]["src"], str(folder / "missing.png")])
    out = m({"src": src, "dst": np.array([rows[0]["dst"], str(tmp_path / "x.png")])})
    assert list(out["status"]) == ["done", "failed"] and "missing.png" in out["error"][1]
    assert read_image(rows[0]["dst"]).pixels.shape == (20, 28, 3)
