"""Learned defocus estimator: training data, training function, calibration and inference.

The network (``blurwise/models/defocus_cnn.py``, registered as ``defocus-cnn``) is trained on defocus
renders of the SR *training* images only (``sr/train/*``, synthetic depth, random focus and blur
strength), at full resolution **and** on LR images made the way routed SR receives them: the
defocused HR downscaled x2/x4 with the project's MATLAB bicubic, target sigma = HR sigma / scale.
After training, a monotone per-scale calibration (predicted -> true sigma, fitted on held-out
training-side renders) is stored in the weights' metadata and applied at inference.

``train_defocus_cnn`` is a plain function so the project training loop (or a script) can call it;
``python -m blurwise.defocus.learned --minutes 20`` runs the whole recipe on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import UsageError

log = logging.getLogger(__name__)

TRAIN_ROOTS = ("sr/train/T91", "sr/train/BSD200", "sr/train/DIV2K6")
CNN_CONFIG = {"in_channels": 3, "channels": [16, 32, 48]}  # stored in the weights of every variant trained here
WEIGHTS_PATH = "blurwise/models/weights"  # where the recipes write (run from the repository root)
SCALES = (1, 2, 4)
SCALE_PROBS = (0.3, 0.3, 0.4)


# --------------------------------------------------------------------------- data


def _list_train_images(roots: tuple[str, ...] = TRAIN_ROOTS) -> list[Path]:
    from blurwise.data.paths import data_path

    files: list[Path] = []
    for r in roots:
        d = data_path(*r.split("/"))
        files += sorted(p for p in d.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    return files


def _load_rgb(path: Path, max_side: int = 1024) -> np.ndarray:
    from PIL import Image

    from blurwise.metrics.imresize import imresize

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    if max(img.shape[:2]) > max_side:
        img = np.clip(imresize(img, scale=max_side / max(img.shape[:2])), 0, 1).astype(np.float32)
    return img


def _save_bank(path: Path, names: list[str], store: dict[str, list[np.ndarray]]) -> None:
    """Write a bank atomically: ragged per-render arrays as object arrays, one entry per render."""
    arrays = {}
    for k, v in store.items():
        arrays[k] = np.empty(len(v), dtype=object)
        arrays[k][:] = v
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, names=np.array(names), **arrays)
    tmp.replace(path)


def make_bank(
    path: str | Path,
    *,
    renders_per_image: int = 1,
    seed: int = 0,
    max_images: int = 0,
    max_side: int = 320,
    n_layers: int = 32,
    save_every: int = 16,
) -> Path:
    """Render the training images into one ``.npz`` bank (saved every ``save_every`` images).

    Each render is stored at full resolution and at LR x2/x4 (the defocused-SR recipe: MATLAB
    bicubic of the uint8 defocused HR, sigma block mean / scale), as uint8 images and float16 sigma
    maps, so training crops are plain slices. Images are first downscaled to ``max_side`` and
    rendered with ``n_layers`` depth layers (sigma steps <= 0.1 px) to keep a CPU build short; the
    partial saves let training start before the bank is complete. Images are visited in a seeded
    random order so a partial bank mixes all training sets.
    """
    from blurwise.defocus.synth import downscale_pair, render_pair

    rng = np.random.default_rng(seed)
    files = _list_train_images()
    files = [files[i] for i in rng.permutation(len(files))]
    if max_images:
        files = files[:max_images]
    store: dict[str, list[np.ndarray]] = {f"{k}_{s}": [] for k in ("images", "sigmas") for s in SCALES}
    names: list[str] = []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        _save_bank(path, names, store)

    for i, f in enumerate(files):
        hr = _load_rgb(f, max_side)
        hr = hr[: hr.shape[0] - hr.shape[0] % 4, : hr.shape[1] - hr.shape[1] % 4]
        for _ in range(renders_per_image):
            img, sig, _ = render_pair(hr, rng, scale=1, n_layers=n_layers)
            for s in SCALES:
                im, sg = downscale_pair(img, sig, s)
                store[f"images_{s}"].append(np.round(im * 255).astype(np.uint8))
                store[f"sigmas_{s}"].append(sg.astype(np.float16))
            names.append(f"{f.parent.name}/{f.name}")
        if (i + 1) % save_every == 0:
            save()
            log.info("bank: %d/%d images", i + 1, len(files))
    save()
    return path


# Training-side images of the per-scale routing estimators. DIV2K6 is left out (its images are in
# defocus-sr) and so are the first ROUTING_CALIB_SKIP BSD200 images (``benchmarks/routed_sr.py
# --calibrate`` checks the routing threshold on them).
ROUTING_ROOTS = ("sr/train/T91", "sr/train/BSD200")
ROUTING_CALIB_SKIP = 12


def make_lr_bank(
    path: str | Path,
    *,
    scale: int = 4,
    renders_per_image: int = 4,
    seed: int = 0,
    max_images: int = 0,
    save_every: int = 32,
) -> Path:
    """Render the routing estimator's bank: LR x``scale`` images exactly as routed SR receives them.

    Each render is ``blurwise.data.datasets.render_item`` (the defocus-sr recipe: synthetic depth,
    random shallow depth of field, 128 layers at the image's native resolution, MATLAB bicubic LR)
    of a training image; stored as uint8 LR and float16 sigma in LR px under the keys of
    :func:`make_bank` (``images_S``/``sigmas_S``), so the same crop sampler and trainer serve both.
    """
    from blurwise.data.datasets import list_images, read_rgb, render_item
    from blurwise.data.paths import data_path

    rng = np.random.default_rng(seed)
    files: list[Path] = []
    for r in ROUTING_ROOTS:
        fs = list_images(data_path(*r.split("/")))
        files += fs[ROUTING_CALIB_SKIP:] if r.endswith("BSD200") else fs
    files = [files[i] for i in rng.permutation(len(files))]
    if max_images:
        files = files[:max_images]
    images: list[np.ndarray] = []
    sigmas: list[np.ndarray] = []
    names: list[str] = []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        _save_bank(path, names, {f"images_{scale}": images, f"sigmas_{scale}": sigmas})

    for i, f in enumerate(files):
        sharp = read_rgb(f)
        for _ in range(renders_per_image):
            r = render_item(sharp, rng, scale=scale)
            images.append(np.asarray(r["lr"], np.uint8))
            sigmas.append(np.asarray(r["sigma_lr"], np.float16))
            names.append(f"{f.parent.name}/{f.name}")
        if (i + 1) % save_every == 0:
            save()
            log.info("lr bank x%d: %d/%d images", scale, i + 1, len(files))
    save()
    return path


def load_bank(path: str | Path) -> dict[str, Any]:
    """The bank written by :func:`make_bank`: ``{"images_S": [...], "sigmas_S": [...], "names": [...]}``."""
    z = np.load(path, allow_pickle=True)  # our own file, written by make_bank
    return {k: list(z[k]) for k in z.files}


def sample_crop(
    bank: dict[str, Any], i: int, rng: np.random.Generator, scale: int, patch: int, augment: bool = True
) -> tuple[np.ndarray, np.ndarray] | None:
    """A random ``patch``-px crop of render ``i`` at LR ``scale`` (image float32 HWC, sigma in LR px).

    None when that render is smaller than the patch at this scale.
    """
    img = bank[f"images_{scale}"][i]
    sig = bank[f"sigmas_{scale}"][i]
    h, w = img.shape[:2]
    if h < patch or w < patch:
        return None
    y = int(rng.integers(0, h - patch + 1))
    x = int(rng.integers(0, w - patch + 1))
    im = img[y : y + patch, x : x + patch].astype(np.float32) / 255.0
    sg = sig[y : y + patch, x : x + patch].astype(np.float32)
    if augment:
        k = int(rng.integers(0, 4))
        im, sg = np.rot90(im, k), np.rot90(sg, k)
        if rng.random() < 0.5:
            im, sg = im[:, ::-1], sg[:, ::-1]
    return np.ascontiguousarray(im), np.ascontiguousarray(sg)


# --------------------------------------------------------------------------- training


def defocus_loss(pred, target, threshold: float | None = None, weight: float = 0.0, tau: float = 0.02):  # type: ignore[no-untyped-def]
    """L1 on sigma plus L1 on log(1 + 4 sigma): the sub-pixel range routing decides on counts too.

    With ``threshold`` (sigma px of the map) and ``weight`` > 0, a logistic term on ``pred - threshold``
    (width ``tau`` px) against ``target >= threshold`` as well: routing only asks which side of its
    threshold a pixel lies on, and at x4 that boundary sits where blur is hardest to see, so the
    regression terms alone leave the two sides squeezed together (they predict a median there).
    """
    import torch
    import torch.nn.functional as F

    l1 = torch.mean(torch.abs(pred - target))
    llog = torch.mean(torch.abs(torch.log1p(4.0 * pred) - torch.log1p(4.0 * target)))
    loss = l1 + 0.5 * llog
    if threshold is not None and weight > 0:
        side = (target >= threshold).to(pred.dtype)
        loss = loss + weight * F.binary_cross_entropy_with_logits((pred - threshold) / tau, side)
    return loss


def train_defocus_cnn(
    bank: str | Path,
    out_dir: str | Path,
    *,
    minutes: float = 20.0,
    iterations: int = 4000,
    batch: int = 12,
    patch: int = 48,
    lr: float = 2e-3,
    threads: int = 1,
    seed: int = 0,
    holdout: float = 0.1,
    checkpoint_every: int = 100,
    resume: bool = True,
    scales: tuple[int, ...] = SCALES,
    scale_probs: tuple[float, ...] = SCALE_PROBS,
    init: str | None = None,
    config: dict[str, Any] | None = None,
    threshold: float | None = None,
    threshold_weight: float = 0.0,
    settings: dict[str, Any] | None = None,
) -> Any:
    """Train DefocusCNN on a render bank for at most ``minutes`` / ``iterations``; returns the model.

    Adam with cosine decay over ``iterations``; checkpoints (model, optimiser, step, RNG) every
    ``checkpoint_every`` steps in ``out_dir/last.pt`` and resumes from it. The last ``holdout``
    fraction of the bank is never trained on (it calibrates the model afterwards). ``init`` names
    weights to start from (e.g. the shipped ``defocus-cnn`` when training a per-scale model);
    ``config`` the architecture (``CNN_CONFIG`` by default): layers the init lacks (a 4th level)
    start from their own initialisation. ``threshold``/``threshold_weight``: the routing-side term of
    :func:`defocus_loss` (sigma in the bank's LR px). The checkpoint records these settings (plus the
    caller's ``settings``), so weights exported from it later say how they were trained.
    """
    import torch

    from blurwise.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bank = Path(bank)
    bk = load_bank(bank)
    bank_mtime = bank.stat().st_mtime
    n_train = max(1, int(len(bk["names"]) * (1.0 - holdout)))
    model = create_model("defocus-cnn", **(config or CNN_CONFIG))
    if init:
        from blurwise.models import load_model

        missing, unexpected = model.load_state_dict(load_model(init)[0].float().state_dict(), strict=False)
        if unexpected:
            raise ValueError(f"{init} has layers the {config} model lacks: {unexpected[:3]}")
        if missing:
            log.info("layers not in %s (fresh): %s", init, ", ".join(sorted({k.split(".")[0] for k in missing})))
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, iterations) / iterations))
    )
    step = 0
    rng = np.random.default_rng(seed)
    ckpt = out_dir / "last.pt"
    if resume and ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)  # our own checkpoint
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step = int(st["step"])
        rng = np.random.default_rng(seed + step)
        log.info("resumed at step %d", step)
    recorded = {
        "init": init, "lr": lr, "minutes": minutes, "iterations": iterations, "lr_patch": patch, "batch": batch,
        "seed": seed, **({"threshold": threshold, "threshold_weight": threshold_weight} if threshold else {}),
        **(settings or {}),
    }  # fmt: skip
    t_end = time.time() + minutes * 60.0
    model.train()
    logf = open(out_dir / "train.log", "a")  # noqa: SIM115 - kept open for the loop
    ema = None
    while step < iterations and time.time() < t_end:
        xs, ys = [], []
        while len(xs) < batch:
            s = int(rng.choice(scales, p=scale_probs))
            crop = sample_crop(bk, int(rng.integers(0, n_train)), rng, s, patch)
            if crop is not None:
                xs.append(crop[0].transpose(2, 0, 1))
                ys.append(crop[1][None])
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        loss = defocus_loss(model(x), y, threshold, threshold_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 10 == 0:
            logf.write(f"{step} {ema:.4f} {sched.get_last_lr()[0]:.2e} {time.strftime('%H:%M:%S')}\n")
            logf.flush()
        if step % 100 == 0 and bank.stat().st_mtime != bank_mtime:  # the bank is still growing
            bk = load_bank(bank)
            bank_mtime = bank.stat().st_mtime
            n_train = max(1, int(len(bk["names"]) * (1.0 - holdout)))
        if step % checkpoint_every == 0 or step >= iterations or time.time() >= t_end:
            tmp = out_dir / "last.pt.tmp"
            torch.save(
                {
                    "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                    "settings": recorded,
                },
                tmp,
            )  # fmt: skip
            tmp.replace(ckpt)
    logf.close()
    return model.eval()


# --------------------------------------------------------------------------- calibration + inference


def predict_sigma(model: Any, image: np.ndarray, device: str | None = None, half: bool | str = False) -> np.ndarray:
    """Raw network output (sigma px, float32 HW) for an HWC float image in [0, 1].

    ``half`` (as in :func:`blurwise.tiling.half_dtype`) runs the network under autocast: routing asks only
    which side of a threshold each patch lies on, and a bf16 map is 2-2.5x faster on CPUs with bf16 units.
    """
    import torch

    from blurwise.tiling import _autocast, half_dtype

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3].transpose(2, 0, 1)))[None]
    if device not in (None, "auto", "cpu"):
        model = model.to(device)
        x = x.to(device)
    with torch.inference_mode(), _autocast(x.device, half_dtype(half, x.device)):
        y = model(x)
    return y[0, 0].float().cpu().numpy().astype(np.float32)


def fit_calibration(
    model: Any, bank: str | Path, *, holdout: float = 0.1, scales: tuple[int, ...] = SCALES
) -> dict[str, Any]:
    """Per-scale monotone map predicted -> true sigma on the bank's held-out renders.

    Returns ``{"1": {"pred": [...], "true": [...]}, ...}``: the median prediction in each bin of
    true sigma, made non-decreasing, to be inverted by linear interpolation at inference.
    """
    from blurwise.defocus.calibrate import fit_monotone

    bk = load_bank(bank)
    n_train = int(len(bk["names"]) * (1.0 - holdout))
    out: dict[str, Any] = {}
    for s in scales:
        pairs = []
        for i in range(n_train, len(bk["names"])):
            im = bk[f"images_{s}"][i].astype(np.float32) / 255.0
            sg = bk[f"sigmas_{s}"][i].astype(np.float32)
            pairs.append(np.stack([sg.ravel(), predict_sigma(model, im).ravel()], 1))
        p = np.concatenate(pairs)
        out[str(s)] = fit_monotone(p[:, 0], p[:, 1])
    return out


def scale_model_available(scale: int) -> bool:
    """Whether a per-scale estimator ``defocus-cnn-x{scale}`` is registered with shipped weights."""
    from blurwise.models.registry import get_variant, is_shipped, list_variants

    name = f"defocus-cnn-x{scale}"
    return any(v.name == name for v in list_variants()) and is_shipped(get_variant(name))


@lru_cache(maxsize=4)
def _cached_model(name: str) -> tuple[Any, dict[str, Any], float]:
    from blurwise.models import load_model

    model, info = load_model(name)
    return model, info.metadata, float(info.macs_per_pixel)


def _resolve(model: str, lr_scale: int) -> str:
    if model == "defocus-cnn" and lr_scale > 1 and scale_model_available(lr_scale):
        return f"defocus-cnn-x{lr_scale}"
    return model


def learned_macs_per_pixel(lr_scale: int = 1, model: str = "defocus-cnn") -> float:
    """MACs per pixel of the network :func:`learned_defocus` runs for ``lr_scale`` (FLOPs accounting)."""
    return _cached_model(_resolve(model, lr_scale))[2]


def learned_defocus(
    image: np.ndarray,
    *,
    lr_scale: int = 1,
    model: str = "defocus-cnn",
    device: str | None = None,
    half: bool | str = False,
) -> np.ndarray:
    """Dense sigma map (float32 HW, px) from the learned estimator, calibrated for ``lr_scale``.

    ``lr_scale`` says the image is an LR input made by an x``lr_scale`` bicubic downscale (routed SR);
    1 means a full-resolution photo. A per-scale model (``defocus-cnn-x4``: trained only on LR x4
    renders, where the HR blur routed SR decides on is a fraction of an LR pixel) replaces the general
    one when shipped. Scales without a stored calibration use the nearest one. ``half``: see
    :func:`predict_sigma`.
    """
    from blurwise.defocus.calibrate import apply_monotone

    net, meta, _ = _cached_model(_resolve(model, lr_scale))
    raw = predict_sigma(net, image, device, half)
    cal = meta.get("calibration") or {}
    if isinstance(cal, str):
        cal = json.loads(cal)
    if cal:
        key = min(cal, key=lambda k: abs(int(k) - lr_scale))
        raw = apply_monotone(raw, cal[key])
    return np.maximum(raw, 0.0).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    """CPU recipe: make the render bank (once), train, calibrate, save the shipped weights."""
    from blurwise.argtypes import OneLineParser, checked, nonneg, positive

    ap = OneLineParser(prog="python -m blurwise.defocus.learned", description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/work/ckpt/defocus")
    ap.add_argument("--minutes", type=checked(float, lambda v: v > 0, "minutes > 0"), default=20.0)
    ap.add_argument("--iterations", type=positive, default=4000)
    ap.add_argument("--threads", type=positive, default=1)
    ap.add_argument("--out", default=None, help="weights file (default: the shipped defocus-cnn[-xS] weights)")
    ap.add_argument("--bank-only", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="calibrate and export the last checkpoint")
    ap.add_argument(
        "--scale", type=nonneg, default=0, help="train the per-scale LR estimator defocus-cnn-xS (from defocus-cnn)"
    )
    ap.add_argument("--renders", type=positive, default=4, help="renders per image of the per-scale bank")
    ap.add_argument("--seed", type=int, default=0, help="seed of the per-scale bank's renders")
    ap.add_argument("--init", default="defocus-cnn", help="per-scale training starts from these weights")
    ap.add_argument("--lr", type=float, default=5e-4, help="per-scale training: peak learning rate")
    ap.add_argument(
        "--channels",
        type=checked(
            lambda t: [int(c) for c in t.split(",")], lambda v: len(v) in (3, 4) and min(v) > 0, "3 or 4 widths"
        ),
        default=[16, 32, 48],
        help="per-scale model: widths per level (3 or 4 levels)",
    )
    ap.add_argument("--patch", type=int, default=40, help="per-scale training: LR crop size")
    ap.add_argument("--batch", type=positive, default=16, help="per-scale training: crops per step")
    ap.add_argument("--run", default=None, help="per-scale training: checkpoint folder (default WORK/xS)")
    ap.add_argument(
        "--threshold-hr",
        type=float,
        default=0.0,
        help="per-scale training: routing threshold (sigma_HR px) of the logistic loss term (0 = none)",
    )
    ap.add_argument("--threshold-weight", type=float, default=0.5, help="weight of that term")
    a = ap.parse_args(argv)
    if not a.bank_only:
        from blurwise.train.config import check_default_out

        check_default_out(a.out, f"defocus-cnn{f'-x{a.scale}' if a.scale else ''} weights")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.scale:
        _main_scale(a)
        return
    work = Path(a.work)
    bank = work / "bank.npz"
    if a.no_train and not (work / "last.pt").is_file():  # before a bank is rendered for nothing
        raise UsageError(f"--no-train exports the last checkpoint, and {work / 'last.pt'} is not there")
    if not bank.is_file():
        make_bank(bank)
    if a.bank_only:
        return
    if a.no_train:
        import torch

        from blurwise.models import create_model

        model = create_model("defocus-cnn")
        model.load_state_dict(torch.load(work / "last.pt", map_location="cpu", weights_only=False)["model"])
        model.eval()
    else:
        model = train_defocus_cnn(bank, work, minutes=a.minutes, iterations=a.iterations, threads=a.threads)
    cal = fit_calibration(model, bank)
    from blurwise.models import save_weights

    out = a.out or f"{WEIGHTS_PATH}/defocus-cnn.safetensors"
    save_weights(
        model,
        out,
        arch="defocus-cnn",
        task="defocus",
        scale=1,
        config=CNN_CONFIG,
        name="defocus-cnn",
        extra={
            "calibration": cal,
            "training": {
                "data": list(TRAIN_ROOTS),
                "scales": list(SCALES),
                "scale_probs": list(SCALE_PROBS),
                "minutes": a.minutes,
                "iterations": a.iterations,
                "renderer": "blurwise.defocus.synth.render_pair",
            },
        },
    )
    log.info("saved %s", out)


def _main_scale(a: argparse.Namespace) -> None:
    """The per-scale recipe: LR bank (defocus-sr renders of training images), fine-tune, calibrate, save."""
    import torch

    from blurwise.models import create_model, save_weights

    s = int(a.scale)
    bank = Path(a.work) / f"x{s}" / f"bank_x{s}.npz"
    work = Path(a.run) if a.run else bank.parent
    cfg = {"in_channels": 3, "channels": list(a.channels)}
    if not bank.is_file():
        make_lr_bank(bank, scale=s, renders_per_image=a.renders, seed=a.seed)
    if a.bank_only:
        return
    kw = {"scales": (s,), "scale_probs": (1.0,), "patch": a.patch, "batch": a.batch}
    thr = {"threshold_hr": a.threshold_hr, "threshold_weight": a.threshold_weight} if a.threshold_hr > 0 else {}
    data = {
        "data": [*ROUTING_ROOTS[:1], f"{ROUTING_ROOTS[1]} (minus the first {ROUTING_CALIB_SKIP})"],
        "renderer": "blurwise.data.datasets.render_item (the defocus-sr recipe)",
    }
    if not a.no_train:
        model = train_defocus_cnn(
            bank,
            work,
            minutes=a.minutes,
            iterations=a.iterations,
            threads=a.threads,
            lr=a.lr,
            init=a.init,
            config=cfg,
            threshold=a.threshold_hr / s if thr else None,
            threshold_weight=a.threshold_weight,
            settings={"renders_per_image": a.renders, "bank_seed": a.seed, **thr},
            **kw,
        )
    # The training metadata is the checkpoint's own record (also under --no-train, where this command
    # line's defaults say nothing about how the checkpoint was trained; the weights come from it too).
    ck = torch.load(work / "last.pt", map_location="cpu", weights_only=False)  # our own checkpoint
    if a.no_train:
        model = create_model("defocus-cnn", **cfg)
        model.load_state_dict(ck["model"])
        model.eval()
    training = {**data, **ck.get("settings", {"settings": "not recorded in the checkpoint"}), "steps": ck["step"]}
    cal = fit_calibration(model, bank, scales=(s,))
    out = a.out or f"{WEIGHTS_PATH}/defocus-cnn-x{s}.safetensors"
    save_weights(
        model,
        out,
        arch="defocus-cnn",
        task="defocus",
        scale=1,
        config=cfg,
        name=f"defocus-cnn-x{s}",
        extra={
            "calibration": cal,
            "lr_scale": s,
            "training": training,
        },
    )
    log.info("saved %s", out)


if __name__ == "__main__":
    from blurwise.errors import run_main

    raise SystemExit(run_main("python -m blurwise.defocus.learned", main))
