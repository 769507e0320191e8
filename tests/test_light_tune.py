"""Route-aware fine-tuning of the light model: masks, what trains it, and the CLI's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blurwise.models import create_model, load_model
from blurwise.models.registry import get_variant, is_shipped
from blurwise.train.light_tune import CROP, main, route_masks, tune_light

needs_router = pytest.mark.skipif(not is_shipped(get_variant("router-x4")), reason="router-x4 weights are not shipped")


def _item(seed: int, sharp: bool, h: int = 45, w: int = 50, scale: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (h * scale, w * scale, 3), dtype=np.uint8)
    lr = hr.reshape(h, scale, w, scale, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    est = np.zeros((h, w), np.float32) if sharp else np.full((h, w), 0.5, np.float32)
    return {"lr": lr, "hr": hr, "est": est, "heavy": hr, "light": hr, "gt": est, "sharp": sharp, "name": str(seed)}


@needs_router
def test_masks_follow_the_threshold_and_cover_the_image():
    items = [_item(0, False, 37, 41), _item(1, True)]
    router = load_model("router-x4")[0]
    for d, m in zip(items, route_masks(items, router, float("inf"), 4, 4), strict=True):
        assert m.shape == d["lr"].shape[:2] and m.dtype == bool and m.all()
    for m in route_masks(items, router, -float("inf"), 4, 4):
        assert not m.any()


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_pixels_outside_the_mask_do_not_train_the_model():
    items = [_item(0, False), _item(1, True)]
    model = create_model("ebmsr-x4")
    before = _weights(model)
    masks = [np.zeros(d["lr"].shape[:2], bool) for d in items]
    avg = tune_light(model, items, masks, scale=4, steps=3, ema_decay=0.0, log_every=0)  # average = last weights
    for a, b in zip(_weights(avg), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ones = [~m for m in masks]
    avg = tune_light(create_model("ebmsr-x4"), items, ones, scale=4, steps=3, ema_decay=0.0, log_every=0)
    assert any(not torch.equal(a, b) for a, b in zip(_weights(avg), before, strict=True))


def test_needs_renders_and_in_focus_items_large_enough():
    from blurwise.errors import UsageError

    items = [_item(0, False), _item(1, False)]
    masks = [np.ones(d["lr"].shape[:2], bool) for d in items]
    with pytest.raises(UsageError, match="in focus"):
        tune_light(create_model("ebmsr-x4"), items, masks, scale=4, steps=1)
    small = [_item(2, True, CROP - 1, CROP - 1)]
    with pytest.raises(UsageError, match=f"{CROP} LR px"):
        small_mask = [np.ones((CROP - 1, CROP - 1), bool)]
        tune_light(create_model("ebmsr-x4"), items + small, masks + small_mask, scale=4, steps=1)


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--sharp-frac", "2"], "--sharp-frac"),
        (["--steps", "0"], "--steps"),
        ([], "no such bank folder"),
        (["--minutes", "0"], "--minutes"),
        (["--crop", "4"], "--crop"),
        (["--batch", "0"], "--batch"),
        (["--threads", "0"], "--threads"),
        (["--workers", "-1"], "--workers"),
        (["--ema", "5"], "--ema"),
        (["--device", "bogus"], "unknown device 'bogus'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, msg):
    try:
        rc = main(["--train", str(tmp_path / "missing"), "--out", str(tmp_path / "x.safetensors"), *args])
    except SystemExit as exc:  # a flag's value its type refuses: argparse's exit, one line too (argtypes)
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc != 0 and msg in err and "\n" not in err
    assert not (tmp_path / "x.safetensors").exists()


def _write_bank(folder, kinds=(False, True)):
    """A bank folder as ``router bank`` writes it: one render and/or one in-focus item."""
    folder.mkdir()
    for i, sharp in enumerate(kinds):
        d = _item(i, sharp)
        d["gt"] = np.full(d["lr"].shape[:2], 0.0 if sharp else 0.5, np.float32)  # blurred beyond the threshold
        np.savez(
            folder / f"{i:03d}_{'sharp' if sharp else 'dof'}.npz",
            **{k: d[k] for k in ("lr", "hr", "gt", "est", "heavy", "light")},
        )
    return folder


@needs_router
def test_cli_writes_a_loadable_model_with_its_recipe(tmp_path):
    bank = _write_bank(tmp_path / "bank")
    out = tmp_path / "light.safetensors"
    assert main(["--train", str(bank), "--steps", "2", "--out", str(out)]) == 0
    model, info = load_model(out)
    recipe = info.metadata["route_tune"]
    assert recipe["steps"] == 2 and recipe["items"] == 2 and len(recipe["output_correction"]["gain"]) == 3
    assert info.config["out_gain"] == list(model.out_gain)
    assert model(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 32, 32)


def test_a_time_budget_ends_the_run_and_sets_the_crop_and_batch():
    items = [_item(0, False), _item(1, True)]
    masks = [np.ones(d["lr"].shape[:2], bool) for d in items]
    avg = tune_light(create_model("ebmsr-x4"), items, masks, scale=4, steps=10**6, seconds=0.5, log_every=0)
    assert 1 <= avg.steps_run < 10**6
    avg = tune_light(create_model("ebmsr-x4"), items, masks, scale=4, steps=2, batch=2, crop=16, log_every=0)
    assert avg.steps_run == 2
    avg = tune_light(create_model("ebmsr-x4"), items, masks, scale=4, steps=2, workers=1, log_every=0)  # in a process
    assert avg.steps_run == 2
    from blurwise.errors import UsageError

    with pytest.raises(UsageError, match="at least 46 LR px"):
        tune_light(create_model("ebmsr-x4"), items, masks, scale=4, steps=1, crop=46)


@needs_router
def test_cli_init_must_be_an_ebmsr_model_of_the_scale(tmp_path, capsys):
    bank = _write_bank(tmp_path / "bank", kinds=(False,))
    rc = main(["--train", str(bank), "--init", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.st")])
    assert rc != 0 and "no such weights file" in capsys.readouterr().err
    from blurwise.models.registry import WEIGHTS_DIR

    router = str(WEIGHTS_DIR / "router-x4.safetensors")
    rc = main(["--train", str(bank), "--init", router, "--out", str(tmp_path / "x")])
    assert rc != 0 and "not an x4 EBM-SR model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_grown_blocks_keep_the_output_and_dropping_them_undoes_it():
    from blurwise.models.ebmsr import drop_block, grow_blocks

    torch.manual_seed(0)
    model = create_model("ebmsr-x2", channels=8, n_blocks=2).eval()
    x = torch.rand(1, 4, 12, 12)
    grown = grow_blocks(model, 5).eval()
    assert len(grown.blocks) == 5 and len(model.blocks) == 2  # a copy: the model itself is untouched
    torch.testing.assert_close(grown(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(grown.blocks[0].conv.weight, model.blocks[0].conv.weight)
    new_ones = [k for k, b in enumerate(grown.blocks) if not b.conv.weight.any()]
    assert new_ones == [1, 2, 4]  # spread over the trained blocks: after each, 3 in all
    back = drop_block(drop_block(drop_block(grown, 4), 2), 1).eval()
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="adds blocks"):
        grow_blocks(model, 1)
    with pytest.raises(ValueError, match="no block 2"):
        drop_block(model, 2)
    with pytest.raises(ValueError, match="one must stay"):
        drop_block(drop_block(model, 0), 0)


def test_resize_student_drops_the_block_that_costs_least():
    from blurwise.models.ebmsr import grow_blocks
    from blurwise.train.light_tune import masked_error, resize_student
    from blurwise.train.router import _light_input

    torch.manual_seed(0)
    model = create_model("ebmsr-x4", channels=8, n_blocks=2).eval()
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.add_(0.3 * torch.randn_like(p))  # two blocks that matter
        items = [_item(0, False, 20, 24), _item(1, True, 20, 24)]
        for d in items:  # HR targets the model hits exactly: only dropping a block that matters costs
            out = model(_light_input(d["lr"], d["est"]))[0].clamp(0, 1).numpy().transpose(1, 2, 0)
            d["hr"] = np.round(out * 255).astype(np.uint8)
    masks = [np.ones(d["lr"].shape[:2], bool) for d in items]
    grown = grow_blocks(model, 3).eval()  # and an identity block that does not matter
    identity = [k for k, b in enumerate(grown.blocks) if not b.conv.weight.any()]
    assert len(identity) == 1 and masked_error(grown, items, masks, 4) < 0.01
    trimmed, dropped = resize_student(grown, 2, items, masks, 4)
    assert dropped == identity and len(trimmed.blocks) == 2
    assert masked_error(trimmed.eval(), items, masks, 4) < 0.01
    bigger, dropped = resize_student(model, 4, items, masks, 4)
    assert len(bigger.blocks) == 4 and dropped == []


@needs_router
def test_cli_blocks_resizes_the_student_and_keeps_the_recipes(tmp_path):
    bank = _write_bank(tmp_path / "bank")
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    shipped, shipped_info = load_model("ebmsr-x4")
    n = len(shipped.blocks)
    shipped_recipes = [*shipped_info.metadata.get("route_tune_history", []), shipped_info.metadata["route_tune"]]
    assert main(["--train", str(bank), "--steps", "1", "--blocks", str(n + 2), "--out", str(first)]) == 0
    model, info = load_model(first)
    first_recipe = info.metadata["route_tune"]
    assert info.metadata["route_tune_history"] == shipped_recipes
    assert len(model.blocks) == n + 2 and info.config["n_blocks"] == n + 2
    assert info.metadata["route_tune"]["blocks"] == {"init": n, "trained": n + 2, "dropped": []}
    grown = ["--train", str(bank), "--init", str(first), "--steps", "1", "--blocks", str(n + 1), "--out", str(second)]
    assert main(grown) == 0
    model, info = load_model(second)
    assert len(model.blocks) == n + 1 and info.config["n_blocks"] == n + 1
    assert len(info.metadata["route_tune"]["blocks"]["dropped"]) == 1
    assert info.metadata["route_tune_history"] == [*shipped_recipes, first_recipe]  # every earlier recipe, in order
