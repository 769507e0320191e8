"""Tests of the training loop (blurwise.train): smoke runs per task, determinism, resume, EMA, config errors.

The loop's own tests use tiny synthetic datasets defined here (fast, no disk reads besides one Set5
crop for SR validation); ``test_real_data_smoke`` runs the real ``blurwise.data.datasets`` classes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from blurwise.errors import BlurwiseError, UsageError
from blurwise.train import data as tdata
from blurwise.train.config import CONFIG_DIR, load_config, parse_config, resolve_config_path
from blurwise.train.ema import EMA, ema_update
from blurwise.train.loop import lr_at, run

torch.set_num_threads(1)


# --------------------------------------------------------------------------- tiny private datasets


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(rng.random((size, size, 3)), sigma=(1.5, 1.5, 0))
    img = (img - img.min()) / (np.ptp(img) + 1e-8)
    return img.astype(np.float32)


class _Base:
    def __init__(self, scale: int = 1, patch: int = 16, seed: int = 0, length: int = 64, split: str = "train", **kw):
        self.scale, self.patch, self.seed, self.length = scale, patch, seed, length
        self.split_seed = 0 if split == "train" else 99

    def __len__(self) -> int:
        return self.length

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.split_seed, i))


class TinySR(_Base):
    def __getitem__(self, i):
        from blurwise.metrics.imresize import imresize

        hr = _texture(self.rng(i), self.patch)
        return {"lr": imresize(hr, 1 / self.scale).astype(np.float32), "hr": hr}


class TinyDefocusSR(_Base):
    def __getitem__(self, i):
        from scipy.ndimage import gaussian_filter

        from blurwise.metrics.imresize import imresize

        r = self.rng(i)
        sigma = float(r.uniform(0, 2))
        hr = gaussian_filter(_texture(r, self.patch), sigma=(sigma, sigma, 0)).astype(np.float32)
        lr = imresize(hr, 1 / self.scale).astype(np.float32)
        return {"lr": lr, "hr": hr, "sigma_lr": np.full(lr.shape[:2], sigma / self.scale, np.float32)}


class TinyDeblur(_Base):
    def __getitem__(self, i):
        from scipy.ndimage import uniform_filter1d

        sharp = _texture(self.rng(i), self.patch)
        return {"blur": uniform_filter1d(sharp, 5, axis=1).astype(np.float32), "sharp": sharp}


TINY = {"SRDataset": TinySR, "DefocusSRDataset": TinyDefocusSR, "DeblurDataset": TinyDeblur}


@pytest.fixture
def tiny_data(monkeypatch):
    monkeypatch.setattr(tdata, "_dataset_class", lambda name: TINY[name])


SR_TOML = """
name = "t_sr"
task = "sr"
seed = 3
[model]
name = "edsr"
cfg = {scale = 2, n_feats = 8, n_resblocks = 1}
[data]
scale = 2
patch = 16
batch = 4
[optim]
lr = 3e-3
iterations = 16
[val]
every = 8
crop = 32
max_images = 1
[train]
log_every = 1
checkpoint_every = 8
deterministic = true
[output]
docs = false
"""

DEBLUR_TOML = """
name = "t_deblur"
task = "deblur"
[model]
name = "lprn"
cfg = {stages = 2, channels = 8, blocks = 1, unshuffle = 1}
[data]
patch = 16
batch = 4
[optim]
lr = 3e-3
iterations = 16
[loss]
kind = "charbonnier"
stages = true
freq = 0.05
[val]
every = 8
n = 2
[train]
log_every = 1
deterministic = true
[output]
docs = false
"""

DISTILL_TOML = """
name = "t_distill"
task = "distill"
[model]
name = "ebmsr"
cfg = {scale = 2, channels = 8, n_blocks = 1, cond_channels = 4}
[data]
scale = 2
patch = 16
batch = 4
[optim]
lr = 3e-3
iterations = 16
[val]
every = 16
crop = 32
max_images = 1
sigmas = [0.0, 2.0]
[distill]
teacher = "edsr-s-x2"
[train]
log_every = 1
deterministic = true
[output]
docs = false
"""


def _cfg(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _early_late(res) -> tuple[float, float]:
    losses = [v for _, v in res.losses]
    return float(np.mean(losses[:4])), float(np.mean(losses[-4:]))


# --------------------------------------------------------------------------- smoke runs


class TestSmoke:
    def test_sr_lowers_loss_and_exports(self, tmp_path, tiny_data):
        from blurwise.models import load_model

        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides={"output.dir": str(tmp_path / "run")})
        early, late = _early_late(res)
        assert late < early
        assert res.steps == 16 and res.start_step == 0
        assert [s for s, _ in res.val] == [8, 16]
        assert res.export is not None and res.export.suffix == ".safetensors"
        model, info = load_model(res.export)
        assert info.scale == 2 and info.arch == "edsr"
        assert info.metadata["training"]["iterations"] == 16
        assert math.isclose(info.metadata["val_psnr"], res.final_val)
        assert (tmp_path / "run" / "log.csv").read_text().startswith("step,loss,lr,val_psnr,seconds")

    def test_deblur_stages_lowers_loss(self, tmp_path, tiny_data):
        res = run(_cfg(tmp_path, DEBLUR_TOML), device="cpu", overrides={"output.dir": str(tmp_path / "run")})
        early, late = _early_late(res)
        assert late < early
        assert res.final_val is not None and res.final_val > 10

    def test_cpu_bf16_autocast_trains(self, tmp_path, tiny_data):
        from blurwise.train.dist import amp_dtype

        cpu = torch.device("cpu")
        assert amp_dtype("bf16", cpu) is torch.bfloat16
        assert amp_dtype("auto", cpu) is None and amp_dtype("fp16", cpu) is None  # CPU default stays fp32
        o = {"output.dir": str(tmp_path / "run"), "train.amp": "bf16"}
        res = run(_cfg(tmp_path, DEBLUR_TOML), device="cpu", overrides=o)
        early, late = _early_late(res)
        assert late < early and all(math.isfinite(loss) for _, loss in res.losses)

    def test_distill_lowers_loss(self, tmp_path, tiny_data):
        from blurwise.models import load_model

        res = run(_cfg(tmp_path, DISTILL_TOML), device="cpu", smoke=True, overrides={"output.dir": str(tmp_path / "r")})
        early, late = _early_late(res)
        assert late < early
        _, info = load_model(res.export)
        assert info.teacher == "edsr-s-x2" and info.in_channels == 4
        assert "teacher_val_psnr" in info.metadata["training"]
        from blurwise.models import weights_fingerprint

        assert info.metadata["teacher_fingerprint"] == weights_fingerprint(load_model("edsr-s-x2")[0])

    def test_time_budget_stops_and_exports(self, tmp_path, tiny_data):
        o = {"output.dir": str(tmp_path / "run"), "optim.iterations": 100000, "train.time_budget": 1.5}
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)
        assert 0 < res.steps < 100000 and res.export is not None  # stopped on time, and still exported
        assert res.val and res.val[-1][0] == res.steps  # the last step was validated

    def test_shared_batches_for_ablations(self, tmp_path, tiny_data, monkeypatch):
        from blurwise.train.loop import run_many

        monkeypatch.setenv("BLURWISE_RUNS", str(tmp_path / "runs"))
        a = _cfg(tmp_path, DEBLUR_TOML, "a.toml")
        b_toml = DEBLUR_TOML.replace('name = "lprn"', 'name = "lprn-recal-none"').replace("t_deblur", "t_deblur_b")
        b = _cfg(tmp_path, b_toml, "b.toml")
        with pytest.raises(UsageError, match="share the run folder"):  # one last.pt for two models
            run_many([a, b], device="cpu", overrides={"output.dir": str(tmp_path / "run")})
        res = run_many([a, b], device="cpu")
        assert [r.steps for r in res] == [16, 16] and all(r.export is not None for r in res)
        assert res[0].export != res[1].export and res[0].run_dir != res[1].run_dir
        assert res[0].losses != res[1].losses  # two models ...
        solo = run(a, device="cpu", overrides={"output.dir": str(tmp_path / "solo")})
        assert solo.losses == res[0].losses  # ... each trained exactly as it would be alone
        c = _cfg(tmp_path, DEBLUR_TOML.replace("patch = 16", "patch = 24"), "c.toml")
        with pytest.raises(UsageError, match="same task and"):
            run_many([a, c], device="cpu")

    def test_deterministic(self, tmp_path, tiny_data):
        a = run(_cfg(tmp_path, SR_TOML), device="cpu", smoke=True, overrides={"output.dir": str(tmp_path / "a")})
        b = run(_cfg(tmp_path, SR_TOML), device="cpu", smoke=True, overrides={"output.dir": str(tmp_path / "b")})
        assert a.losses == b.losses and len(a.losses) > 0

    def test_resume_continues_exactly(self, tmp_path, tiny_data, monkeypatch):
        from blurwise.train import loop

        cfg = _cfg(tmp_path, SR_TOML)
        full = run(cfg, device="cpu", overrides={"output.dir": str(tmp_path / "full")})
        orig = loop.Trainer._train_step

        def crash_at_9(self, batch):
            if self.step == 8:
                raise KeyboardInterrupt
            return orig(self, batch)

        monkeypatch.setattr(loop.Trainer, "_train_step", crash_at_9)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, device="cpu", overrides={"output.dir": str(tmp_path / "cut")})
        monkeypatch.setattr(loop.Trainer, "_train_step", orig)
        res = run(cfg, device="cpu", overrides={"output.dir": str(tmp_path / "cut")})
        assert res.start_step == 8 and res.steps == 16
        assert res.losses == full.losses[8:]
        rows = (tmp_path / "cut" / "log.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == list(range(1, 17))

    def test_init_from_checkpoint(self, tmp_path, tiny_data):
        # the bootstrap trainer's layout: {"model", "ema", "opt", "step"}
        from blurwise.models import create_model

        src = create_model("edsr", scale=2, n_feats=8, n_resblocks=1)
        torch.save({"model": src.state_dict(), "ema": src.state_dict(), "opt": {}, "step": 5}, tmp_path / "x.pt")
        ov = {"output.dir": str(tmp_path / "r"), "init_from": str(tmp_path / "x.pt"), "iterations": 1}
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=ov)
        assert res.steps == 1
        from blurwise.models.registry import read_weights

        _, meta = read_weights(res.export)
        assert meta["training"]["init_from"] == str(tmp_path / "x.pt")

    def test_installed_blurwise_writes_into_the_run_folder_not_its_package(self, tmp_path, tiny_data, monkeypatch):
        """A wheel has no checkout around it: a config's repo-relative export (the shipped weights' path, or any
        other) goes into the run folder, the curve is the run folder's curve.png, and --ship is refused with one
        line before any training (site-packages is never rewritten)."""
        from blurwise.models.registry import WEIGHTS_DIR
        from blurwise.train import config as tconfig
        from blurwise.train.loop import export_target

        monkeypatch.setattr(tconfig, "source_checkout", lambda: None)
        before = {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()}
        shipped = "blurwise/models/weights/edsr-s-x2.safetensors"
        ov = {"output.dir": str(tmp_path / "r"), "iterations": 1, "output.export": shipped, "output.docs": True}
        with pytest.raises(UsageError, match="an installed blurwise does not rewrite its package") as ei:
            run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=ov, ship=True)
        assert "\n" not in str(ei.value) and not (tmp_path / "r" / "last.pt").exists()
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=ov)
        assert res.export == tmp_path / "r" / "t_sr.safetensors" and res.export.is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "r"]
        assert (tmp_path / "r" / "curve.png").is_file() and not list((tmp_path / "r").glob("t_sr.[cp]*"))
        assert {p.name: p.stat().st_mtime_ns for p in WEIGHTS_DIR.iterdir()} == before
        cfg = load_config("sr_edsr-s_x4", overrides={"export": "mine/x.safetensors"})
        out, note = export_target(cfg, tmp_path, ship=False)
        assert out == tmp_path / "sr_edsr-s_x4.safetensors" and "installed blurwise" in note

    def test_ship_in_a_checkout_writes_the_export_and_the_docs_curve(self, tmp_path, tiny_data, monkeypatch):
        """In a checkout a relative output.export is the checkout's; --ship also copies the curve and its CSV to
        docs/results/training/ (a plain run keeps them in the run folder)."""
        from blurwise.train import config as tconfig
        from blurwise.train.loop import export_target

        repo = tmp_path / "repo"
        monkeypatch.setattr(tconfig, "source_checkout", lambda: repo)
        cfg = load_config("sr_edsr-s_x4", overrides={"export": "w/x.safetensors"})
        assert export_target(cfg, tmp_path, ship=False) == (repo / "w" / "x.safetensors", None)
        ov = {"output.dir": str(tmp_path / "r"), "iterations": 1, "export": "w/x.safetensors", "output.docs": True}
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=ov)
        assert res.export == repo / "w" / "x.safetensors" and (tmp_path / "r" / "curve.png").is_file()
        assert not (repo / "docs").exists()
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides={**ov, "iterations": 2}, ship=True)
        docs = repo / "docs" / "results" / "training"
        assert sorted(p.name for p in docs.iterdir()) == ["t_sr.csv", "t_sr.png"]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("config", ["sr_edsr-s_x2", "deblur_lprn", "distill_ebmsr_x2"])
def test_real_data_smoke(config, tmp_path):
    pytest.importorskip("blurwise.data.datasets")
    from blurwise.data import datasets

    cls = tdata.TASK_DATA[load_config(config).task][0]
    if not hasattr(datasets, cls):
        pytest.skip(f"blurwise.data.datasets.{cls} not written yet")
    res = run(config, device="cpu", smoke=True, overrides={"output.dir": str(tmp_path)})
    early, late = _early_late(res)
    assert late < early


@pytest.mark.data
@pytest.mark.parametrize("config", sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
def test_shipped_configs_have_a_validation_split(config):
    """Every shipped config loads and its held-out validation images exist (not found at step 250)."""
    cfg = load_config(config)
    if tdata.val_kind(cfg) == "holdout" and cfg.data.roots:
        assert tdata.split_images(cfg, "val", cfg.val.crop or cfg.data.patch)


# --------------------------------------------------------------------------- pieces


class TestEMA:
    def test_update_formula(self):
        a = torch.nn.BatchNorm2d(2)
        b = torch.nn.BatchNorm2d(2)
        with torch.no_grad():
            a.weight.fill_(1.0)
            b.weight.fill_(3.0)
            b.num_batches_tracked.fill_(7)
        ema_update(a, b, 0.9)
        assert torch.allclose(a.weight, torch.full((2,), 1.2))
        assert a.num_batches_tracked.item() == 7

    def test_ema_class_warmup_and_frozen(self):
        m = torch.nn.Linear(2, 2)
        e = EMA(m, decay=0.999)
        assert all(not p.requires_grad for p in e.module.parameters())
        with torch.no_grad():
            m.weight.add_(1.0)
        before = e.module.weight.clone()
        e.update(m, step=0)  # decay warm-up: min(0.999, 1/10) = 0.1
        assert torch.allclose(e.module.weight, 0.1 * before + 0.9 * m.weight)

    def test_lr_schedule(self, tmp_path):
        cfg = parse_config({"task": "deblur", "model": {"name": "lprn"}, "optim": {"lr": 1.0, "min_lr": 0.0,
                           "warmup": 10, "iterations": 110}})  # fmt: skip
        assert lr_at(0, cfg) == pytest.approx(0.1)
        assert lr_at(9, cfg) == pytest.approx(1.0)
        assert lr_at(60, cfg) == pytest.approx(0.5)
        assert lr_at(110, cfg) == pytest.approx(0.0)
        assert lr_at(20, cfg, progress=0.5) == pytest.approx(0.5)  # a time budget half used
        assert lr_at(60, cfg, progress=0.1) == pytest.approx(0.5)  # the larger fraction wins


def test_pixel_loss_kinds():
    """l1 / l2 are the mean absolute / squared error; charbonnier sits just above l1 for errors >> eps."""
    from blurwise.train.losses import pixel_loss

    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    assert pixel_loss(pred, target, kind="l1").item() == pytest.approx(1.5)
    assert pixel_loss(pred, target, kind="l2").item() == pytest.approx(3.5)
    assert 1.5 < pixel_loss(pred, target, kind="charbonnier").item() < 1.51


class TestConfig:
    @pytest.mark.parametrize(
        "text, match",
        [
            ('task = "sr"\n[model]\nname = "edsr"\n[optim]\nlrr = 1\n', "unknown key 'lrr'"),
            ('task = "sr"\n[model]\nname = "edsr"\n[optim]\nlr = "fast"\n', "expected a finite number"),
            ('task = "sr"\n[model\n', "invalid TOML"),
            ('task = "paint"\n[model]\nname = "edsr"\n', "task must be one of"),
            ('task = "sr"\n', "name is required"),
            ('task = "distill"\n[model]\nname = "ebmsr"\n[data]\nscale = 2\n', "needs a teacher"),
            ('task = "sr"\n[model]\nname = "edsr"\n[loss]\nkind = "l3"\n', "loss.kind"),
            ('task = "sr"\n[model]\nname = "edsr"\n[data]\nbatch = true\n', "expected an integer"),
        ],
    )
    def test_errors_are_one_line(self, tmp_path, text, match):
        with pytest.raises(BlurwiseError, match=match) as ei:
            load_config(_cfg(tmp_path, text))
        assert "\n" not in str(ei.value)

    def test_missing_file(self):
        with pytest.raises(BlurwiseError, match="not found"):
            load_config("/nonexistent/x.toml")

    def test_task_name_and_bare_name(self):
        assert load_config("deblur").name == "deblur_lprn"
        assert load_config("sr_edsr-s_x2").task == "sr"

    def test_shipped_configs_are_package_data_found_from_any_folder(self, tmp_path, monkeypatch):
        import blurwise

        assert CONFIG_DIR.parent == Path(blurwise.__file__).resolve().parent  # installs with the wheel
        monkeypatch.chdir(tmp_path)  # an installed user's cwd: no repo around
        for name in ("sr", "sr_edsr-s_x4", "sr_edsr-s_x4.toml", "configs/sr_edsr-s_x4.toml"):
            assert resolve_config_path(name) == CONFIG_DIR / "sr_edsr-s_x4.toml", name
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / "sr_edsr-s_x4.toml").write_text("")
        assert resolve_config_path("configs/sr_edsr-s_x4.toml") == Path("configs/sr_edsr-s_x4.toml")  # a file wins
        for bad in ("nope", "other/sr_edsr-s_x4.toml", str(tmp_path / "x" / "sr_edsr-s_x4.toml")):
            with pytest.raises(BlurwiseError, match="config file not found"):
                resolve_config_path(bad)

    def test_overrides_and_aliases(self, tmp_path):
        p = _cfg(tmp_path, DISTILL_TOML)
        cfg = load_config(p, overrides={"teacher": "my.pth", "optim.lr": 1, "batch": 2})
        assert cfg.distill.teacher == "my.pth" and cfg.optim.lr == 1.0 and cfg.data.batch == 2
        with pytest.raises(UsageError, match="unknown section 'nope'"):
            load_config(p, overrides={"nope.x": 1})

    def test_smoke_defaults(self, tmp_path):
        cfg = load_config(_cfg(tmp_path, SR_TOML), smoke=True)
        assert cfg.optim.iterations <= 32 and cfg.output.docs is False and cfg.output.export == ""

    def test_repo_configs_parse(self):
        configs = sorted(CONFIG_DIR.glob("*.toml"))
        assert len(configs) >= 17  # every shipped model's config, package data since they install with blurwise
        for p in configs:
            cfg = load_config(p, overrides={"teacher": "x"} if "distill" in p.name else None)
            from blurwise.train.loop import model_spec

            model_spec(cfg)  # the model name resolves in the registry

    def test_import_is_lazy(self):
        import subprocess
        import sys

        code = "import sys, blurwise.train; blurwise.train.load_config; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"


def test_cli_bad_config_exit_code(tmp_path, capsys):
    from blurwise.train.__main__ import main

    assert main([str(_cfg(tmp_path, 'task = "x"\n'))]) == 2
    assert "task must be one of" in capsys.readouterr().err


def test_smoke_run_with_a_bad_config_leaves_no_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(UsageError):
        run("sr_edsr-s_x2", device="cpu", smoke=True, overrides={"optim.lr": "abc"})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- what a user runs into


class TestUserFacing:
    def test_set_options_are_checked_key_by_key(self, tmp_path):
        from blurwise.train.config import parse_overrides

        for items, said in (
            (["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'optim.lr'?"),
            (["optimm.lr=1"], "unknown section 'optimm' (did you mean 'optim'?"),
            (["lrr=1"], "unknown key 'lrr' (did you mean 'lr'?"),
            (["optim=3"], "'optim' is a section"),
            (["optim.lr.x=1"], "unknown key 'optim.lr.x'"),
            (["optim.lr=null"], "null is not a config value"),
            (["optim.lr"], "expects KEY=VALUE"),
        ):
            with pytest.raises(UsageError, match=re.escape(said)) as ei:
                parse_overrides(items)
            assert "\n" not in str(ei.value)
        got = parse_overrides(["model.cfg.n_feats=8", "data.kwargs={frames = [7, 9]}", "output.export=w.safetensors"])
        assert got["model.cfg.n_feats"] == 8 and got["data.kwargs"] == {"frames": [7, 9]}
        assert got["output.export"] == str(Path.cwd() / "w.safetensors")  # the command line's paths: from here
        cfg = load_config(_cfg(tmp_path, SR_TOML), overrides=got)
        assert cfg.model.cfg == {"scale": 2, "n_feats": 8, "n_resblocks": 1} and cfg.data.kwargs["frames"] == [7, 9]

    @pytest.mark.parametrize(
        "text, said",
        [
            ("", "the config is empty"),
            ('task = "sr"\n[model]\nname = "edsr"\n[optimizer]\nlr = 1\n', "did you mean 'optim'?"),
            ('task = "sr"\n[model]\nname = "edsr"\n[smoke]\n"optim.lrr" = 1\n', "unknown key 'optim.lrr'"),
            ('task = "sr"\n[model]\nname = "edsr"\n[data]\nscale = 2\n[optim]\nlr = nan\n', "finite number"),
            ('task = "sr"\n[model]\nname = "edsr"\n[data]\nscale = 2\n[train]\nlog_every = 0\n', "log_every"),
            ('task = "sr"\n[model]\nname = "edsr"\n[data]\nscale = 2\n[output]\nexport = "w.pt"\n', ".safetensors"),
            ('task = "sr"\n[model]\nname = "edsr"\n[data]\nscale = 2\n[optim]\nwarmup = 50\niterations = 9\n', "(50)"),
        ],
    )
    def test_config_mistakes_are_one_line(self, tmp_path, text, said):
        with pytest.raises(BlurwiseError, match=re.escape(said)) as ei:
            load_config(_cfg(tmp_path, text))  # not only with --smoke: a [smoke] typo is found on every load
        assert "\n" not in str(ei.value)

    def test_config_folder_is_not_a_config(self, tmp_path):
        with pytest.raises(BlurwiseError, match="is a folder"):
            load_config(tmp_path)

    def test_shipped_config_does_not_replace_the_shipped_weights(self, tmp_path, monkeypatch):
        from blurwise.models import registry
        from blurwise.train.loop import export_target

        cfg = load_config("sr_edsr-s_x4")
        out, note = export_target(cfg, tmp_path, ship=False)
        assert out == tmp_path / "sr_edsr-s_x4.safetensors" and "--ship" in note
        out, note = export_target(cfg, tmp_path, ship=True)
        assert out == registry.WEIGHTS_DIR / "edsr-s-x4.safetensors" and note is None
        mine = tmp_path / "mine.safetensors"  # an explicit path outside the package is used as given
        assert (
            export_target(load_config("sr_edsr-s_x4", overrides={"export": str(mine)}), tmp_path, ship=False)[0] == mine
        )

    def test_export_goes_to_the_run_folder_unless_shipped(self, tmp_path, tiny_data, monkeypatch):
        from blurwise.models import load_model, registry

        weights = tmp_path / "weights"
        weights.mkdir()
        (weights / "x.safetensors").write_bytes(b"shipped")
        monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
        o = {"output.dir": str(tmp_path / "run"), "output.export": str(weights / "x.safetensors"), "iterations": 2}
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)
        assert (weights / "x.safetensors").read_bytes() == b"shipped"
        assert res.export == tmp_path / "run" / "t_sr.safetensors"
        _, info = load_model(res.export)  # what `blurwise upscale -m FILE` loads, with the documented metadata
        training = info.metadata["training"]
        assert training["config"]["model"]["name"] == "edsr" and training["validation"]["psnr"] == res.final_val
        assert {"data", "data_root", "iterations", "batch", "patch"} <= set(training)
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o, ship=True)
        assert res.export == weights / "x.safetensors" and load_model(res.export)[1].arch == "edsr"
        assert not list(weights.glob(".*"))  # no temp file left

    def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(self, tmp_path, tiny_data, monkeypatch, capsys):
        import signal

        from blurwise.cli import main
        from blurwise.train import loop

        cfg = _cfg(tmp_path, SR_TOML)
        full = run(cfg, device="cpu", overrides={"output.dir": str(tmp_path / "full")})
        orig = loop.Trainer._train_step

        def ctrl_c_at_6(self, batch):
            if self.step == 5:
                signal.raise_signal(signal.SIGINT)  # as a terminal's Ctrl-C: the step still finishes
            return orig(self, batch)

        monkeypatch.setattr(loop.Trainer, "_train_step", ctrl_c_at_6)
        code = main(["train", str(cfg), "--device", "cpu", "-q", "--set", f"output.dir={tmp_path / 'cut'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 130 and err[-1].startswith("blurwise: interrupted: stopped at step 6 of 16; checkpoint")
        assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 6  # not the step-8 one
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is gone again
        monkeypatch.setattr(loop.Trainer, "_train_step", orig)
        res = run(cfg, device="cpu", overrides={"output.dir": str(tmp_path / "cut")})
        assert res.start_step == 6 and res.losses == full.losses[6:] and res.final_val == full.final_val

    def test_resumed_time_budget_counts_the_time_already_spent(self, tmp_path, tiny_data):
        o = {"output.dir": str(tmp_path / "run"), "train.time_budget": 1000.0}
        run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)
        spent = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["wall_seconds"]
        assert spent > 0
        o.update({"optim.iterations": 64, "train.time_budget": spent / 2})  # already used up: no more steps
        res = run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)
        assert res.start_step == res.steps == 16 and res.export is not None

    def test_resume_of_another_model_or_a_broken_checkpoint(self, tmp_path, tiny_data):
        o = {"output.dir": str(tmp_path / "run"), "iterations": 2}
        run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)
        with pytest.raises(BlurwiseError, match="cannot resume from .*--no-resume") as ei:
            run(_cfg(tmp_path, SR_TOML), device="cpu", overrides={**o, "model.cfg.n_feats": 16})
        assert "\n" not in str(ei.value)
        run(_cfg(tmp_path, SR_TOML), device="cpu", overrides={**o, "model.cfg.n_feats": 16}, resume=False)
        (tmp_path / "run" / "last.pt").write_bytes(b"")
        with pytest.raises(BlurwiseError, match="cannot read checkpoint .*--no-resume"):
            run(_cfg(tmp_path, SR_TOML), device="cpu", overrides=o)

    def test_missing_data_and_devices(self, tmp_path, monkeypatch):
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with pytest.raises(BlurwiseError, match="data root not found: .*nope"):
            run("sr_edsr-s_x2", device="cpu", smoke=True, overrides={"data.roots": ["nope"]})
        with pytest.raises(BlurwiseError, match="no images under"):
            run("sr_edsr-s_x2", device="cpu", smoke=True, overrides={"data.roots": [str(tmp_path)]})
        with pytest.raises(BlurwiseError, match="data.frames folder not found"):
            run("deblur", device="cpu", smoke=True, overrides={"data.frames": "nope"})
        with pytest.raises(UsageError, match="cuda"):
            run("sr_edsr-s_x2", device="cuda:99", smoke=True)
        assert list(tmp_path.iterdir()) == []  # no empty smoke folders left behind

    def test_model_and_data_scale_must_agree(self, tmp_path, tiny_data):
        with pytest.raises(UsageError, match="upscales x2 but data.scale is 4"):
            run(_cfg(tmp_path, SR_TOML), device="cpu", overrides={"output.dir": str(tmp_path / "r"), "data.scale": 4})

    def test_gpu_index_beyond_the_machine(self, monkeypatch):
        from blurwise.train.dist import resolve_device

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(UsageError, match="no such GPU"):
            resolve_device("cuda:3")

    def test_teacher_must_be_super_resolution(self):
        from blurwise.errors import ModelError
        from blurwise.train.loop import load_teacher

        with pytest.raises(ModelError, match="super-resolution teacher"):
            load_teacher("lprn", trust_pickle=False, device=torch.device("cpu"), allow_untrained=True)

    def test_pickled_whole_model_teacher_is_one_line(self, tmp_path):
        from blurwise.errors import ModelError
        from blurwise.train.loop import load_teacher

        torch.save(torch.nn.Conv2d(3, 3, 1), tmp_path / "whole.pth")
        with pytest.raises(ModelError, match="pickled Python objects") as ei:
            load_teacher(
                str(tmp_path / "whole.pth"), trust_pickle=True, device=torch.device("cpu"), allow_untrained=True
            )
        assert "\n" not in str(ei.value) and "\x1b" not in str(ei.value)

    def test_export_only_never_writes_the_package_without_ship(self, tmp_path):
        from blurwise.models.registry import WEIGHTS_DIR
        from blurwise.train.loop import export_checkpoint

        with pytest.raises(UsageError, match="--ship"):
            export_checkpoint(
                "sr_edsr-s_x4", checkpoint=tmp_path / "x.pt", out=str(WEIGHTS_DIR / "edsr-s-x4.safetensors")
            )

    def test_summary_names_the_figure(self):
        from blurwise.train.loop import RunResult

        assert "val PSNR 30.500 dB" in RunResult("a", 0, 3, val=[(3, 30.5)]).summary()
        assert "val MAE 0.340 px" in RunResult("a", 0, 3, val=[(3, -0.34)], val_mae=True).summary()
