"""Train the learned patch router of routed SR (``router-x4``) on training images only.

Steps (``python -m blurwise.train.router --help``):

1. **bank**: for each training image, two defocus renders (the defocus-sr recipe,
   :func:`blurwise.data.datasets.render_item`) and, for every other image, the image in focus (plain
   bicubic LR); the routing map (:func:`blurwise.routing.estimate_lr_map`), the heavy model's and the
   light model's outputs on the whole image. Train: ``sr/train/BSD200`` without its first 12 images,
   and ``sr/train/T91``. Validation: the first 12 BSD200 images (the routing calibration images of
   ``benchmarks/routed_sr.py``), three renders each and in focus. One ``.npz`` per item.
2. **fit**: per-patch features (:func:`blurwise.routing.features.patch_features`) and targets (the
   light model's mean squared Y error minus the heavy model's on the patch, ``asinh(d / 2)``); a
   :class:`blurwise.models.router.PatchRouter` fitted on random 16x16-patch crops (Huber loss).
   Before fitting, ``debias`` can fold the light model's per-channel gain and offset on the training bank's
   blurred pixels into it (:func:`debias_light`; rebuild the banks afterwards).
3. **calibrate**: the threshold on the prediction is the largest-cut one whose routing (outputs
   composed by route from the cached whole-image outputs) keeps the validation renders within
   ``MEAN_DB`` on average and ``WORST_DB`` on each, and the in-focus images within ``INFOCUS_DB`` --
   the rule the map threshold is calibrated by. Written with the weights (fp16 safetensors, metadata:
   data, seeds, threshold, validation figures). After the light model changed, ``calibrate`` chooses the
   shipped router's threshold again by the same rule on a validation bank of the new pair, weights unchanged
   (:func:`recalibrate`; a light model closer to the heavy one lets the same predictions route more).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import UsageError, run_main

MEAN_DB, WORST_DB, INFOCUS_DB = -0.03, -0.3, -0.02  # as benchmarks/routed_sr.py's calibration rule
N_VAL_IMAGES = 12
VAL_SEEDS = (1000, 2000, 3000)  # benchmarks/routed_sr.py --calibrate-seeds
VAL_DATA = "sr/train/BSD200 first 12, seeds 1000/2000/3000 + in focus"
TRAIN_SEED = 5000
PAIR_FILE = "pair.json"  # in a bank folder: the fingerprints of the heavy and light weights it caches
CROP = 16  # patch cells per training crop side


def _files(split: str) -> list[Path]:
    from blurwise.data.datasets import list_images
    from blurwise.data.paths import data_path

    bsd = list_images(data_path("sr", "train", "BSD200"))
    if split == "val":
        return bsd[:N_VAL_IMAGES]
    return bsd[N_VAL_IMAGES:] + list_images(data_path("sr", "train", "T91"))


def _item(img: np.ndarray, rng: np.random.Generator | None, scale: int, models: dict) -> dict | None:
    """One bank item: a defocus render (``rng`` given) or the image in focus, with map and both SR outputs."""
    import torch

    from blurwise.data.datasets import render_item
    from blurwise.data.sr import make_sr_pair
    from blurwise.routing import estimate_lr_map
    from blurwise.tiling import run_tiled

    if rng is not None:
        r = render_item(img, rng, scale=scale)
        lr8, hr8, gt = r["lr"], r["hr"], r["sigma_lr"]
    else:
        lr8, hr8 = make_sr_pair(img, scale)
        gt = np.zeros(lr8.shape[:2], np.float32)
    if min(lr8.shape[:2]) < 6 * 4:
        return None
    lr = lr8.astype(np.float32) / 255
    est = estimate_lr_map(lr, scale)
    x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        he = run_tiled(models["heavy"], x, scale=scale, tile=0)
        li = models["light"](_light_input(lr8, est))

    def u8(t: Any) -> np.ndarray:
        return (t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return {"lr": lr8, "hr": hr8, "gt": gt, "est": est, "heavy": u8(he), "light": u8(li)}


def make_bank(out: Path, split: str, *, scale: int = 4, limit: int | None = None, renders: int = 2) -> int:
    """Write the ``split`` ("train" | "val") bank into ``out`` (resumable: existing items are kept).

    Train: ``renders`` defocus renders per image (seeds TRAIN_SEED + 1000 k + i) and every other image in focus.
    """
    from blurwise.data.datasets import read_rgb
    from blurwise.models import load_model, weights_fingerprint
    from blurwise.routing import find_light_model

    heavy_name = f"edsr-s-x{scale}"
    models = {"heavy": load_model(heavy_name)[0], "light": load_model(find_light_model(heavy_name, scale))[0]}
    pair = {k: weights_fingerprint(m) for k, m in models.items()}
    made_with = bank_pair(out)
    if made_with is not None and made_with != pair:
        raise UsageError(
            f"bank {out} was made with other weights (heavy {made_with.get('heavy')}, light {made_with.get('light')}; "
            f"now {pair['heavy']}, {pair['light']}): give a new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    if made_with is None:
        (out / PAIR_FILE).write_text(json.dumps(pair) + "\n")
    files = _files(split)[:limit]
    n = 0
    for i, f in enumerate(files):
        if split == "val":
            jobs = [(f"{i:03d}_s{b}", b + i) for b in VAL_SEEDS] + [(f"{i:03d}_sharp", None)]
        else:
            jobs = [(f"{i:03d}_dof" + (str(k + 1) if k else ""), TRAIN_SEED + 1000 * k + i) for k in range(renders)]
            jobs += [(f"{i:03d}_sharp", None)] if i % 2 == 0 else []
        img = None
        for key, seed in jobs:
            path = out / f"{key}.npz"
            if path.exists():
                continue
            img = read_rgb(f) if img is None else img
            item = _item(img, None if seed is None else np.random.default_rng(seed), scale, models)
            if item is None:
                continue
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, src=str(f.name), **item)
            tmp.rename(path)
            n += 1
        print(f"{split} {i + 1}/{len(files)} {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)
    return n


def bank_pair(folder: Path) -> dict | None:
    """The weights fingerprints (``heavy``, ``light``) of the models whose outputs a bank caches, or None for a
    bank without the record (made before it was kept). A router fitted on the bank predicts for this pair only."""
    try:
        return json.loads((Path(folder) / PAIR_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UsageError(f"{Path(folder) / PAIR_FILE}: unreadable ({e})") from None


def load_bank(folder: Path) -> list[dict]:
    """The items of a bank folder, sorted by name, with their name and whether they are in focus."""
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such bank folder (make one with 'bank --split train|val --out DIR')")
    items = []
    for p in sorted(Path(folder).glob("*.npz")):
        if p.name.endswith(".tmp.npz"):
            continue
        z = np.load(p)
        d = {k: z[k] for k in ("lr", "hr", "gt", "est", "heavy", "light")}
        d["name"] = p.stem
        d["sharp"] = p.stem.endswith("_sharp")
        items.append(d)
    return items


def load_items(folder: Path, flag: str) -> list[dict]:
    """:func:`load_bank` for a command's bank flag (``--train`` / ``--val``): a one-line error for an empty bank."""
    items = load_bank(folder)
    if not items:
        raise UsageError(f"{flag} bank {folder} holds no items (make one with 'bank')")
    return items


def _light_input(lr8: np.ndarray, est: np.ndarray) -> Any:
    """The light model's input, as routing feeds it: 8-bit LR RGB scaled to [0, 1] plus the routing map (N4HW)."""
    import torch

    x = np.concatenate([lr8.astype(np.float32) / 255, est[..., None].astype(np.float32)], 2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def light_correction(
    items: list[dict], model: Any, scale: int, min_sigma_hr: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-RGB-channel ``(gain, offset)`` ([0, 1] units) that best map the light model's output onto the HR
    (least squares) over the pixels of the bank's renders whose GT blur is at least ``min_sigma_hr`` (default:
    the routing threshold): how its contrast and level are off where routing uses it. Its own unrounded
    output, recomputed here."""
    import torch

    from blurwise.routing import default_threshold_hr

    thr = default_threshold_hr(scale) if min_sigma_hr is None else float(min_sigma_hr)
    sums = np.zeros((3, 5))  # per channel: n, sum x, sum y, sum xx, sum xy
    for d in items:
        mask = np.kron(d["gt"] * scale >= thr, np.ones((scale, scale), bool))
        if not mask.any():
            continue
        with torch.no_grad():
            out = model(_light_input(d["lr"], d["est"]))[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
        x, y = out[mask], d["hr"].astype(np.float64)[mask] / 255
        sums += np.stack([np.full(3, len(x)), x.sum(0), y.sum(0), (x * x).sum(0), (x * y).sum(0)], 1)
    n, sx, sy, sxx, sxy = sums.T
    if n[0] == 0:
        raise UsageError("no bank pixel is blurred beyond the threshold: nothing to measure the correction on")
    gain = (n * sxy - sx * sy) / np.maximum(n * sxx - sx * sx, 1e-12)
    return gain, (sy - gain * sx) / n


def shipped_light(scale: int) -> tuple[Any, Any, Path]:
    """The shipped light model of the x``scale`` heavy model, its info and its weights file (for the
    tools that adjust it and write it back)."""
    from blurwise.models import load_model
    from blurwise.models.registry import WEIGHTS_DIR
    from blurwise.routing import find_light_model

    name = find_light_model(f"edsr-s-x{scale}", scale)
    src = WEIGHTS_DIR / f"{name}.safetensors"
    if not src.is_file():
        raise UsageError(f"no shipped weights for the light model {name!r} ({src})")
    model, info = load_model(src)
    if not hasattr(model, "set_output_gain"):
        raise UsageError(f"light model {name!r} has no output gain and offset to adjust")
    return model, info, src


def fold_correction(model: Any, renders: list[dict], scale: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Measure the light model's gain and offset on the renders' blurred pixels (:func:`light_correction`)
    and fold them into it; returns them and the model's new output gain (as its config records it)."""
    gain, offset = light_correction(renders, model, scale)
    new_gain = [round(float(v), 6) for v in np.array(model.out_gain or (1.0, 1.0, 1.0)) * gain]  # as the file says
    model.shift_output_((offset / gain).tolist())  # g * (out + b / g) = g * out + b
    model.set_output_gain(new_gain)
    return gain, offset, new_gain


def save_light(model: Any, info: Any, dst: Path, new_gain: list[float], extra: dict) -> None:
    """Write an adjusted light model with the architecture and config of ``info``, its new output gain and (an
    EBM-SR grown or trimmed by the route-aware fine-tune) its number of blocks."""
    from blurwise.models.registry import save_weights

    save_weights(
        model,
        dst,
        arch=info.arch,
        task=info.task,
        scale=info.scale,
        config={**info.config, "out_gain": new_gain, **_block_count(model, info)},
        name=info.name,
        teacher=info.teacher,
        extra=extra,
    )


def _block_count(model: Any, info: Any) -> dict[str, int]:
    """An EBM-SR's ``n_blocks`` as the model has it (a fine-tune may have grown or trimmed it), else nothing."""
    return {"n_blocks": len(model.blocks)} if info.arch == "ebmsr" else {}


def debias_light(bank: Path, scale: int, out: Path | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """Fold the light model's gain and offset on the bank's blurred pixels into it (a new file, the
    shipped one by default); both, and what they were measured on, go into the config and metadata."""
    model, info, src = shipped_light(scale)
    items = [d for d in load_bank(bank) if not d["sharp"]]
    gain, offset, new_gain = fold_correction(model, items, scale)
    extra = {
        **info.metadata,
        "output_correction": {
            "gain": [round(float(v), 6) for v in gain],
            "offset": [round(float(v), 7) for v in offset],
            "data": f"{len(items)} defocus renders of the router's training bank (sr/train BSD200 minus the "
            "first 12, T91), pixels with GT sigma_HR >= the routing threshold; "
            "least squares HR ~ gain x output + offset",
            "command": f"python -m blurwise.train.router debias --train BANK --scale {scale}",
        },
    }
    dst = out or src
    save_light(model, info, dst, new_gain, extra)
    return dst, gain, offset


def patch_targets(d: dict, scale: int, patch: int) -> np.ndarray:
    """Per routing patch: light minus heavy mean squared Y error (8-bit scale), (rows, cols) float64."""
    from blurwise.metrics import rgb_to_y
    from blurwise.routing.plan import _pool

    hr = rgb_to_y(d["hr"])
    dd = (rgb_to_y(d["light"]) - hr) ** 2 - (rgb_to_y(d["heavy"]) - hr) ** 2
    h, w = d["lr"].shape[:2]
    # per LR pixel, then pooled on the routing grid (patch windows without margin)
    per_lr = dd[: h * scale, : w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3))
    return _pool(per_lr, patch, 0, "mean").astype(np.float64)


def features_of(d: dict, scale: int, patch: int) -> np.ndarray:
    """The router's input features of a bank item, (rows, cols, F)."""
    from blurwise.routing.features import patch_features

    return patch_features(d["lr"].astype(np.float32) / 255, d["est"], scale=scale, patch=patch)


def target_transform(delta: np.ndarray) -> np.ndarray:
    """What the router predicts: ``asinh(dMSE / 2)`` (sign kept, heavy tails compressed)."""
    return np.arcsinh(np.asarray(delta) / 2.0)


def fit(
    train: list[dict], *, scale: int, patch: int, steps: int = 3000, seed: int = 0, hidden: int = 32, depth: int = 2
) -> Any:
    """Fit a PatchRouter on the training items (random CROP x CROP cell crops, Huber loss, Adam)."""
    import torch

    from blurwise.models.router import PatchRouter

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    feats = [features_of(d, scale, patch) for d in train]
    targs = [target_transform(patch_targets(d, scale, patch)).astype(np.float32) for d in train]
    allf = np.concatenate([f.reshape(-1, f.shape[-1]) for f in feats])
    model = PatchRouter(in_channels=allf.shape[1], hidden=hidden, depth=depth)
    model.mean.copy_(torch.from_numpy(allf.mean(0)).view(1, -1, 1, 1))
    model.std.copy_(torch.from_numpy(allf.std(0) + 1e-6).view(1, -1, 1, 1))
    ok = [i for i, f in enumerate(feats) if min(f.shape[:2]) >= CROP]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-5)
    batch = 32
    for step in range(steps):
        xs, ys = [], []
        for i in rng.choice(ok, size=batch):
            f, t = feats[i], targs[i]
            r0 = rng.integers(0, f.shape[0] - CROP + 1)
            c0 = rng.integers(0, f.shape[1] - CROP + 1)
            fc, tc = f[r0 : r0 + CROP, c0 : c0 + CROP], t[r0 : r0 + CROP, c0 : c0 + CROP]
            if rng.random() < 0.5:
                fc, tc = fc[:, ::-1], tc[:, ::-1]
            if rng.random() < 0.5:
                fc, tc = fc[::-1], tc[::-1]
            xs.append(np.ascontiguousarray(fc.transpose(2, 0, 1)))
            ys.append(np.ascontiguousarray(tc))
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))[:, None]
        loss = torch.nn.functional.huber_loss(model(x), y, delta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    return model.eval()


def predict(model: Any, d: dict, scale: int, patch: int) -> np.ndarray:
    """The router's prediction for every patch of a bank item, (rows, cols)."""
    import torch

    f = features_of(d, scale, patch)
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None])[0, 0].numpy()


def _compose_figures(items: list[dict], plans: list[Any], scale: int) -> dict:
    """dPSNR (vs the heavy model everywhere) and FLOPs cut per item, the routed output composed by route
    from the cached whole-image outputs (within a few thousandths of a dB of a real routed run)."""
    from blurwise.metrics import psnr
    from blurwise.routing import HEAVY

    dps, cuts = [], []
    for d, p in zip(items, plans, strict=True):
        g = p.route_map().repeat(scale, 0).repeat(scale, 1)
        out = np.where((g == HEAVY)[..., None], d["heavy"], d["light"])
        dps.append(psnr(out, d["hr"], crop=scale) - psnr(d["heavy"], d["hr"], crop=scale))
        cuts.append(1 - p.macs_fraction)
    return {"dpsnr": np.array(dps), "cut": np.array(cuts)}


@functools.lru_cache(maxsize=4)
def _model_macs(scale: int) -> tuple[float, float]:
    """MACs per LR pixel of the heavy model and its EBM-SR (read once, not per item and threshold)."""
    from blurwise.models import load_model
    from blurwise.routing import find_light_model

    heavy_name = f"edsr-s-x{scale}"
    return load_model(heavy_name)[1].macs_per_pixel, load_model(find_light_model(heavy_name, scale))[1].macs_per_pixel


def _plan_kwargs(d: dict, scale: int, patch: int) -> dict:
    from blurwise.routing import DEFAULT_MIN_SAVING, lr_map_macs

    heavy_macs, light_macs = _model_macs(scale)
    h, w = d["lr"].shape[:2]
    return dict(
        scale=scale,
        patch=patch,
        heavy_macs=heavy_macs,
        light_macs=light_macs,
        map_macs=lr_map_macs((h, w), scale, False),
        min_saving=DEFAULT_MIN_SAVING,  # as upscale_routed plans
    )


def routed_figures(items: list[dict], preds: list[np.ndarray], tau: float, scale: int, patch: int) -> dict:
    """Composed routing at prediction threshold ``tau`` (light where pred <= tau): dPSNR and cut per item."""
    from blurwise.routing import plan_routes

    plans = [
        plan_routes(
            scores=(-pr).astype(np.float32),
            shape=d["lr"].shape[:2],
            threshold=-tau,
            scorer="learned",
            **_plan_kwargs(d, scale, patch),
        )
        for d, pr in zip(items, preds, strict=True)
    ]
    return _compose_figures(items, plans, scale)


def map_rule_figures(items: list[dict], scale: int, patch: int) -> dict:
    """The same figures for the map rule with its shipped defaults (threshold, percentile, strong-edge rule)."""
    from blurwise.routing import default_edges, default_stat, default_threshold_hr, plan_routes, texture_scores

    plans = []
    edges = default_edges(scale)
    for d in items:
        keep = None
        if edges is not None:
            keep = texture_scores(d["lr"].astype(np.float32) / 255, patch=patch) < edges
        plans.append(
            plan_routes(
                d["est"],
                threshold=default_threshold_hr(scale) / scale,
                stat=default_stat(scale),
                keep_heavy=keep,
                **_plan_kwargs(d, scale, patch),
            )
        )
    return _compose_figures(items, plans, scale)


def summarise(items: list[dict], r: dict) -> dict:
    """Mean / worst dPSNR and mean cut over the renders, mean dPSNR and cut in focus, and the rule's verdict."""
    sharp = np.array([d["sharp"] for d in items])
    row = {
        "renders_db": float(r["dpsnr"][~sharp].mean()),
        "worst_db": float(r["dpsnr"][~sharp].min()),
        "renders_cut": float(r["cut"][~sharp].mean()),
        "infocus_db": float(r["dpsnr"][sharp].mean()) if sharp.any() else 0.0,
        "infocus_cut": float(r["cut"][sharp].mean()) if sharp.any() else 0.0,
    }
    row["ok"] = row["renders_db"] >= MEAN_DB and row["worst_db"] >= WORST_DB and row["infocus_db"] >= INFOCUS_DB
    return row


def calibrate(model: Any, val: list[dict], scale: int, patch: int, taus: list[float]) -> tuple[float | None, list]:
    """The largest-cut threshold that keeps the validation renders and in-focus images within the rule."""
    preds = [predict(model, d, scale, patch) for d in val]
    rows = []
    best = None
    for tau in taus:
        row = {"tau": tau, **summarise(val, routed_figures(val, preds, tau, scale, patch))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if row["ok"] and (best is None or row["renders_cut"] > best["renders_cut"]):
            best = row
    return (best["tau"] if best else None), rows


def routing_record(tau: float, rows: list) -> dict:
    """The ``routing`` and ``validation`` metadata of a calibrated router (threshold, grid, rule, figures)."""
    from blurwise.routing import DEFAULT_PATCH

    return {
        "routing": {"threshold": tau, "patch": DEFAULT_PATCH, "rule": [MEAN_DB, WORST_DB, INFOCUS_DB]},
        "validation": {"data": VAL_DATA, "rows": rows},
    }


def recalibrate(
    src: str | Path, items: list[dict], pair: dict | None, scale: int, taus: list[float], command: str
) -> tuple:
    """The router ``src`` with its threshold chosen again by the calibration rule on the validation bank
    ``items``, for the (heavy, light) ``pair`` that bank caches (:func:`bank_pair`): a new light model shifts what
    the same predictions cost, so the threshold follows it (refitting is the other way). The weights are unchanged.

    Returns (model, ModelInfo, metadata to write, threshold or None when none meets the rule, rows).
    """
    from blurwise.models import load_model
    from blurwise.routing import DEFAULT_PATCH

    model, info = load_model(str(src))
    if info.task != "router" or info.scale != scale:
        raise UsageError(f"{src} is not an x{scale} router ({info.task}, x{info.scale})")
    training = dict(info.metadata.get("training") or {})
    old_pair = training.get("pair") or {}
    if pair and old_pair.get("heavy") not in (None, pair["heavy"]):
        raise UsageError(f"the --val bank caches another heavy model than {src} predicts for: refit it ('fit')")
    tau, rows = calibrate(model, items, scale, DEFAULT_PATCH, taus)
    was = {"threshold": info.metadata.get("routing", {}).get("threshold"), "light": old_pair.get("light")}
    meta = {
        **info.metadata,
        "training": {**training, **({"pair": pair} if pair else {})},
        **routing_record(tau, rows),
        "recalibrated": [*info.metadata.get("recalibrated", []), {"was": was, "command": command}],
    }
    return model, info, meta, tau, rows


def main(argv: list[str] | None = None) -> int:
    """``python -m blurwise.train.router {bank,fit,calibrate,debias} ...``"""
    from blurwise.argtypes import OneLineParser, checked, positive

    taus = checked(lambda t: [float(v) for v in t.split(",")], lambda v: len(v) > 0, "comma-separated numbers")
    ap = OneLineParser(prog="python -m blurwise.train.router", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bank", help="render the training or validation bank")
    b.add_argument("--split", choices=("train", "val"), required=True)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--scale", type=int, default=4)
    b.add_argument("--limit", type=positive, default=None, help="first N images only")
    b.add_argument("--renders", type=positive, default=2, help="defocus renders per training image (default 2)")
    b.add_argument("--threads", type=positive, default=2)
    f = sub.add_parser("fit", help="fit, calibrate and export the router")
    f.add_argument("--train", required=True, type=Path)
    f.add_argument("--val", required=True, type=Path)
    f.add_argument("--scale", type=int, default=4)
    f.add_argument("--steps", type=positive, default=3000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--hidden", type=positive, default=32)
    f.add_argument("--depth", type=positive, default=2)
    f.add_argument("--taus", type=taus, default=[-0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2])
    f.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped router-xS)")
    f.add_argument("--report", type=Path, default=None, help="also write the validation table (Markdown) here")
    c = sub.add_parser("calibrate", help="choose a router's threshold again on a validation bank of a new pair")
    c.add_argument("--val", required=True, type=Path)
    c.add_argument("--scale", type=int, default=4)
    c.add_argument("--router", default=None, help="router weights (default: the shipped router-xS)")
    c.add_argument("--taus", type=taus, default=[0.9, 1, 1.1, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5, 1.6])
    c.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped router-xS)")
    c.add_argument("--report", type=Path, default=None, help="also write the validation table (Markdown) here")
    g = sub.add_parser("debias", help="fold the light model's gain and offset on blurred bank pixels into it")
    g.add_argument("--train", required=True, type=Path, help="a training bank (not the validation one)")
    g.add_argument("--scale", type=int, default=4)
    g.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped light model)")
    args = ap.parse_args(argv)
    return run_main(None, lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: Any) -> int:
    """One subcommand of :func:`main`, its errors left to the caller."""
    import torch

    from blurwise.routing import DEFAULT_PATCH

    if args.cmd in ("fit", "calibrate") and args.report is not None and args.report.is_dir():
        raise UsageError(f"--report names a folder, not a Markdown file: {args.report}")

    if args.cmd in ("fit", "calibrate", "debias"):
        from blurwise.train.config import check_default_out

        check_default_out(args.out, f"ebmsr-x{args.scale}" if args.cmd == "debias" else f"router-x{args.scale}")
    if args.cmd == "bank":
        torch.set_num_threads(args.threads)
        make_bank(args.out, args.split, scale=args.scale, limit=args.limit, renders=args.renders)
        return 0
    if args.cmd == "debias":
        dst, gain, offset = debias_light(args.train, args.scale, args.out)
        g, b = " ".join(f"{v:.4f}" for v in gain), " ".join(f"{v * 255:+.3f}" for v in offset)
        print(f"wrote {dst} (gain {g}, offset {b} / 255)", file=sys.stderr)
        return 0
    torch.set_num_threads(1)
    if args.cmd == "calibrate":
        return _recalibrate(args, argv)
    t0 = time.time()
    pairs = {name: bank_pair(getattr(args, name[2:])) for name in ("--train", "--val")}
    if None not in pairs.values() and pairs["--train"] != pairs["--val"]:
        raise UsageError("the --train and --val banks were made with different weights: rebuild one of them")
    pair = pairs["--train"] or pairs["--val"]
    train, val = load_items(args.train, "--train"), load_items(args.val, "--val")
    model = fit(
        train,
        scale=args.scale,
        patch=DEFAULT_PATCH,
        steps=args.steps,
        seed=args.seed,
        hidden=args.hidden,
        depth=args.depth,
    )
    tau, rows = calibrate(model, val, args.scale, DEFAULT_PATCH, args.taus)
    if tau is None:
        print("no threshold meets the calibration rule; nothing written", file=sys.stderr)
        return 1
    from blurwise.models.registry import WEIGHTS_DIR, save_weights

    out = args.out or WEIGHTS_DIR / f"router-x{args.scale}.safetensors"
    extra = {
        "training": {
            "data": ["sr/train/BSD200 (minus the first 12)", "sr/train/T91"],
            "renderer": "blurwise.data.datasets.render_item (the defocus-sr recipe)",
            "render_seeds": f"{TRAIN_SEED} + 1000 k + i",
            "items": len(train),
            "steps": args.steps,
            "seed": args.seed,
            "minutes": round((time.time() - t0) / 60, 1),
            "heavy": f"edsr-s-x{args.scale}",
            **({"pair": pair} if pair else {}),  # the weights it predicts for (blurwise.routing.router_for)
        },
        **routing_record(tau, rows),
    }
    save_weights(
        model,
        out,
        arch="patch-router",
        task="router",
        scale=args.scale,
        config={"in_channels": model.in_channels, "hidden": args.hidden, "depth": args.depth},
        name=f"router-x{args.scale}",
        extra=extra,
    )
    print(f"wrote {out} (threshold {tau})", file=sys.stderr)
    if args.report:
        base = {"tau": None, **summarise(val, map_rule_figures(val, args.scale, DEFAULT_PATCH))}
        write_report(args.report, rows, tau, base, len(train), argv, args.scale)
    return 0


def _recalibrate(args: argparse.Namespace, argv: Any) -> int:
    """``calibrate``: the router's threshold chosen again on ``--val``, written with its weights unchanged."""
    from blurwise.models.registry import WEIGHTS_DIR, save_weights
    from blurwise.routing import DEFAULT_PATCH

    name = f"router-x{args.scale}"
    src = args.router or name
    cmd = "python -m blurwise.train.router " + " ".join(argv if argv is not None else sys.argv[1:])
    val = load_items(args.val, "--val")
    model, info, meta, tau, rows = recalibrate(src, val, bank_pair(args.val), args.scale, args.taus, cmd)
    if tau is None:
        print("no threshold meets the calibration rule; nothing written", file=sys.stderr)
        return 1
    out = args.out or WEIGHTS_DIR / f"{name}.safetensors"
    save_weights(
        model, out, arch=info.arch, task=info.task, scale=info.scale, config=info.config, name=info.name, extra=meta
    )
    was = meta["recalibrated"][-1]["was"]
    print(f"wrote {out} (threshold {was['threshold']} -> {tau})", file=sys.stderr)
    if args.report:
        base = {"tau": None, **summarise(val, map_rule_figures(val, args.scale, DEFAULT_PATCH))}
        light = meta["training"].get("pair", {}).get("light")
        note = (
            "calibration only: the router's weights as fitted (`fit`, recorded in its metadata), the threshold "
            f"chosen again for the pair the validation bank caches (light weights {light}); it was "
            f"{was['threshold']} for light weights {was['light']}"
        )
        write_report(args.report, rows, tau, base, meta["training"].get("items", 0), argv, args.scale, note)
    return 0


def write_report(
    path: Path, rows: list[dict], tau: float, base: dict, n_train: int, argv: Any, scale: int, note: str = ""
) -> None:
    """The validation table of a fit or calibration (Markdown, with machine, command and date), written atomically."""
    import datetime
    import platform

    import torch

    from blurwise.routing import default_edges, default_stat, default_threshold_hr

    def line(name: str, r: dict) -> str:
        return (
            f"| {name} | {r['renders_db']:+.4f} | {r['worst_db']:+.3f} | {100 * r['renders_cut']:.1f} | "
            f"{r['infocus_db']:+.4f} | {100 * r['infocus_cut']:.1f} | {'yes' if r['ok'] else 'no'} |"
        )

    cmd = "python -m blurwise.train.router " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [
        f"# Learned patch router x{scale}: validation on training renders",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} (1 thread)",
        f"- command: `{cmd}`; the banks made first by `python -m blurwise.train.router bank --split train --out "
        "TRAIN_DIR` and `... bank --split val --out VAL_DIR` (the heavy model's and EBM-SR's outputs as targets)",
        f"- trained on {n_train} bank items (defocus renders of sr/train BSD200 without its first 12 images and T91, "
        "and every other image in focus); validated on the first 12 BSD200 images: 3 renders each (seeds "
        f"{', '.join(f'{b}+i' for b in VAL_SEEDS)}, as `benchmarks/routed_sr.py --calibrate`) and the same images "
        "in focus. Routed outputs composed by route from the whole-image heavy and EBM-SR outputs; cuts count "
        "the context of every tile and the map's MACs.",
        f"- rule (as for the map threshold): the largest cut with the renders within {-MEAN_DB:g} dB of the heavy "
        f"model on average and {-WORST_DB:g} dB on each, and the in-focus images within {-INFOCUS_DB:g} dB: "
        f"**threshold {tau:g}** (predicted asinh(dMSE / 2)).",
        *([f"- {note}"] if note else []),
        "",
        "| routing | renders dB | worst render dB | renders cut % | in focus dB | in focus cut % | meets the rule |",
        "|---|---|---|---|---|---|---|",
        line(
            f"map rule (defaults: sigma_HR >= {default_threshold_hr(scale):g} px, p{default_stat(scale)}, "
            f"edges {default_edges(scale)})",
            base,
        ),
    ]
    md += [
        line(f"learned router, predicted loss <= {r['tau']:g}" + (" **(pick)**" if r["tau"] == tau else ""), r)
        for r in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(md) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
