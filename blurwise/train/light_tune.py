"""Route-aware fine-tuning of the light SR model (EBM-SR) on the router's training bank.

Routed SR only ever shows the light model's output where the router sends a patch light, and the
routing cut is bounded by how much worse than the heavy model it is *there* (a router can rank patches
no better than the light model's own error allows: docs/results/routed_sr_history.md, session 21). So
this fine-tune asks for exactly that: the squared error to the HR image (what PSNR measures) on the
pixels a router would route light (its prediction under ``mask_threshold``, grown by the blend band),
nothing elsewhere. Steps (``python -m blurwise.train.light_tune --help``):

1. masks from the shipped router on every bank item (:func:`route_masks`);
   with ``--blocks N``, the student grown with identity blocks or trimmed to N (:func:`resize_student`);
2. Adam on random LR crops of the bank (renders and in-focus images, ``sharp_frac`` of each batch in
   focus), an exponential moving average of the weights kept (:func:`tune_light`);
3. the average's per-channel gain and offset on the renders' blurred pixels folded in, as ``router
   debias`` does (:func:`blurwise.train.router.light_correction`), and the result written with its
   recipe in the metadata. Rebuild the router's banks and refit it afterwards (``router bank``, ``fit``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from blurwise.errors import UsageError, run_main

CROP = 40  # LR crop side (default)
BATCH = 8  # crops per step (default; the GPU job takes 256, cut by worker processes)
WARMUP = 200


def route_masks(items: list[dict], router: Any, threshold: float, scale: int, patch: int) -> list[np.ndarray]:
    """Per bank item, the LR pixels a routed run would take from the light model: patches whose router
    prediction is at most ``threshold``, grown by 1 LR px (the blend band). Bool (H, W) arrays."""
    from blurwise.routing.plan import _running, cells_to_pixels
    from blurwise.train.router import predict

    out = []
    for d in items:
        light = predict(router, d, scale, patch) <= threshold
        m = cells_to_pixels(light, d["lr"].shape[:2], patch).astype(np.float32)
        out.append(_running(_running(m, 1, 0, np.maximum), 1, 1, np.maximum) > 0)
    return out


def _crop(d: dict, mask: np.ndarray, rng: np.random.Generator, scale: int, crop: int = CROP) -> list[np.ndarray]:
    """One random LR crop of a bank item and what goes with it, flipped / transposed at random (CHW float32:
    LR and HR in [0, 1], the map, the mask at HR)."""
    from blurwise.data.sr import augment, random_crop

    lr, est, hr, m = random_crop([d["lr"], d["est"], d["hr"], mask], crop, rng, [1, 1, scale, 1])
    m = np.kron(m, np.ones((scale, scale), np.float32))
    lr, est, hr, m = augment([lr, est[..., None], hr, m[..., None]], rng)
    return [
        np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32) / k
        for a, k in ((lr, 255), (est, 1), (hr, 255), (m, 1))
    ]


def _batch_stream(draw: Any, seed: int, workers: int, device: str) -> Any:
    """An endless DataLoader of ``draw(rng)`` batches cut in ``workers`` processes, each with its own seed."""
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):  # noqa: ANN204
            info = torch.utils.data.get_worker_info()
            g = np.random.default_rng([seed, 1 + (info.id if info is not None else 0)])
            while True:
                yield draw(g)

    pin = str(device).startswith("cuda")
    return torch.utils.data.DataLoader(
        Stream(), batch_size=None, num_workers=workers, pin_memory=pin, prefetch_factor=4
    )


def masked_error(model: Any, items: list[dict], masks: list[np.ndarray], scale: int) -> float:
    """The fine-tune's loss on whole bank items: 8-bit squared error / 100 to the HR over the masked pixels."""
    import torch

    from blurwise.train.router import _light_input

    total = count = 0.0
    with torch.inference_mode():
        for d, m in zip(items, masks, strict=True):
            out = model(_light_input(d["lr"], d["est"]))[0].clamp(0, 1).numpy().transpose(1, 2, 0)
            se = ((out * 255 - d["hr"].astype(np.float32)) ** 2).mean(2) / 100
            mh = np.kron(m, np.ones((scale, scale), bool))
            total, count = total + float(se[mh].sum()), count + float(mh.sum())
    return total / max(count, 1.0)


def resize_student(
    model: Any, n_blocks: int, items: list[dict], masks: list[np.ndarray], scale: int
) -> tuple[Any, list[int]]:
    """``model`` (an EBM-SR) with ``n_blocks`` SFT blocks, and the indices of the blocks dropped: grown with
    identity blocks (:func:`blurwise.models.ebmsr.grow_blocks`), or trimmed one block at a time, each time
    the one whose loss costs least on these items (a student grown past its MACs budget comes back under it)."""
    from blurwise.models.ebmsr import drop_block, grow_blocks

    if n_blocks >= len(model.blocks):
        return grow_blocks(model, n_blocks), []
    dropped: list[int] = []
    while len(model.blocks) > n_blocks:
        errors = [masked_error(drop_block(model, k).eval(), items, masks, scale) for k in range(len(model.blocks))]
        k = int(np.argmin(errors))
        print(f"drop block {k} of {len(model.blocks)} (loss {errors[k]:.4f})", file=sys.stderr, flush=True)
        model, dropped = drop_block(model, k), [*dropped, k]
    return model, dropped


def tune_light(
    model: Any,
    items: list[dict],
    masks: list[np.ndarray],
    *,
    scale: int,
    steps: int,
    lr: float = 3e-4,
    ema_decay: float = 0.999,
    sharp_frac: float = 0.5,
    seed: int = 0,
    log_every: int = 1000,
    device: str = "cpu",
    batch: int = BATCH,
    crop: int = CROP,
    seconds: float | None = None,
    workers: int = 0,
) -> Any:
    """Fine-tune ``model`` (in place) by the masked squared error to the HR; returns the weight average
    (a copy, in eval mode). ``sharp_frac`` of each batch comes from in-focus items (the rest from renders);
    the learning rate warms up over WARMUP steps and then follows a cosine to zero over ``steps`` or, when
    ``seconds`` is given, over whichever of the two runs out first (a lent GPU's session has a fixed length);
    the average's ``steps_run`` says how many steps ran. ``workers`` > 0 cuts the crops in that many processes
    (a GPU outruns one; other random draws than in-process, which stays reproducible step for step)."""
    import torch

    from blurwise.train.ema import ema_update

    ok = [i for i, d in enumerate(items) if min(d["lr"].shape[:2]) >= crop]
    sharp = [i for i in ok if items[i]["sharp"]]
    renders = [i for i in ok if not items[i]["sharp"]]
    if not sharp or not renders:
        raise UsageError(
            f"the bank needs renders and in-focus items of at least {crop} LR px "
            f"(got {len(renders)} renders, {len(sharp)} in focus)"
        )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = model.to(device=device, memory_format=torch.contiguous_format).train()
    avg = copy.deepcopy(model).eval()
    for p in avg.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    seen: list[float] = []

    def draw(g: np.random.Generator) -> list[np.ndarray]:
        picks = []
        for _ in range(batch):
            pool = sharp if g.random() < sharp_frac else renders
            picks.append(pool[int(g.integers(0, len(pool)))])
        crops = [_crop(items[i], masks[i], g, scale, crop) for i in picks]
        return [np.stack(z) for z in zip(*crops, strict=True)]

    batches = iter(_batch_stream(draw, seed, workers, device)) if workers > 0 else None
    t0, step, done = time.monotonic(), 0, 0.0
    while done < 1.0:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + np.cos(np.pi * done))
        arrays = next(batches) if batches is not None else draw(rng)
        lr_, est, hr, m = (torch.as_tensor(a).to(device, non_blocking=True) for a in arrays)
        out = model(torch.cat([lr_, est], 1))
        se = ((out - hr) ** 2).mean(1, keepdim=True) * (255.0**2 / 100)  # 8-bit squared error / 100
        loss = (se * m).sum() / m.sum().clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(avg, model, ema_decay)  # no warm-up: the average starts from a trained model
        seen.append(loss.item())
        step += 1
        done = step / steps if seconds is None else max(step / steps, (time.monotonic() - t0) / seconds)
        if log_every and (step % log_every == 0 or done >= 1.0):
            print(f"step {step} loss {np.mean(seen[-log_every:]):.4f}", file=sys.stderr, flush=True)
    avg.steps_run = step  # what a time budget allowed, for the recipe
    return avg


def main(argv: list[str] | None = None) -> int:
    """``python -m blurwise.train.light_tune --train BANK [--train BANK ...] --out FILE``"""
    from blurwise.argtypes import OneLineParser, nonneg, positive

    ap = OneLineParser(prog="python -m blurwise.train.light_tune", description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, type=Path, action="append", help="router training bank(s)")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--steps", type=positive, default=30000, help="steps (the most, with --minutes)")
    ap.add_argument("--minutes", type=float, default=None, help="time budget; the schedule follows it")
    ap.add_argument("--batch", type=positive, default=BATCH, help=f"crops per step (default {BATCH})")
    ap.add_argument("--crop", type=int, default=CROP, help=f"LR crop side (default {CROP})")
    ap.add_argument("--workers", type=nonneg, default=0, help="processes cutting crops (default 0: in-process)")
    ap.add_argument("--init", type=Path, default=None, help="light weights to start from (default: the shipped)")
    ap.add_argument(
        "--blocks",
        type=positive,
        default=None,
        help="SFT blocks of the student: more are added as identities, fewer dropped least loss first "
        "(default: as --init)",
    )
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--ema", type=float, default=0.999, help="decay of the weight average (default 0.999)")
    ap.add_argument("--sharp-frac", type=float, default=0.5, help="share of each batch from in-focus items")
    ap.add_argument("--mask-threshold", type=float, default=1.6, help="router prediction up to which a patch counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device of the fine-tune (default cpu)")
    ap.add_argument("--threads", type=positive, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped light model)")
    args = ap.parse_args(argv)
    return run_main(None, lambda: _checked_run(args, argv))


def _checked_run(args: argparse.Namespace, argv: Any) -> None:
    """:func:`_run` after the flags' checks (before any bank is read)."""
    from blurwise.train.config import check_default_out

    check_default_out(args.out, "light model")
    if not 0.0 <= args.sharp_frac <= 1.0:
        raise UsageError(f"--sharp-frac must be in [0, 1], got {args.sharp_frac}")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes}")
    if args.crop < 8:
        raise UsageError(f"--crop must be at least 8, got {args.crop}")
    if not 0.0 <= args.ema < 1.0:
        raise UsageError(f"--ema is a decay in [0, 1), got {args.ema}")
    from blurwise.tiling import resolve_device

    resolve_device(args.device)  # a device that is not there: one line now, not a torch traceback later
    _run(args, argv)


def _run(args: argparse.Namespace, argv: Any) -> None:
    """Masks, fine-tune, debias and export (see the module docstring)."""
    import torch

    from blurwise.models import load_model
    from blurwise.routing import DEFAULT_PATCH
    from blurwise.train.router import fold_correction, load_bank, save_light, shipped_light

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, info, src = shipped_light(args.scale)
    if args.init is not None:
        if not args.init.is_file():
            raise UsageError(f"{args.init}: no such weights file")
        model, info = load_model(args.init)
        if info.arch != "ebmsr" or info.scale != args.scale:
            raise UsageError(f"{args.init}: not an x{args.scale} EBM-SR model ({info.arch}, x{info.scale})")
    router = load_model(f"router-x{args.scale}")[0]
    items = [d for folder in args.train for d in load_bank(folder)]
    masks = route_masks(items, router, args.mask_threshold, args.scale, DEFAULT_PATCH)
    print(f"{len(items)} items, light share {np.mean([m.mean() for m in masks]):.3f}", file=sys.stderr, flush=True)
    blocks_in, dropped = len(model.blocks), []
    if args.blocks is not None and args.blocks != blocks_in:
        model, dropped = resize_student(model, args.blocks, items, masks, args.scale)
    avg = tune_light(
        model,
        items,
        masks,
        scale=args.scale,
        steps=args.steps,
        lr=args.lr,
        ema_decay=args.ema,
        sharp_frac=args.sharp_frac,
        seed=args.seed,
        device=args.device,
        batch=args.batch,
        crop=args.crop,
        seconds=None if args.minutes is None else 60 * args.minutes,
        workers=args.workers,
    ).cpu()
    gain, offset, new_gain = fold_correction(avg, [d for d in items if not d["sharp"]], args.scale)
    cmd = "python -m blurwise.train.light_tune " + " ".join(argv if argv is not None else sys.argv[1:])
    earlier = info.metadata.get("route_tune")
    history = [*info.metadata.get("route_tune_history", []), *([earlier] if earlier else [])]
    extra = {
        **info.metadata,
        **({"route_tune_history": history} if history else {}),
        "route_tune": {
            "data": [str(f) for f in args.train],
            "items": len(items),
            "loss": "squared error to the HR where the router predicts <= mask_threshold (grown by 1 LR px)",
            "router": f"router-x{args.scale}",
            "mask_threshold": args.mask_threshold,
            "steps": avg.steps_run,
            "batch": args.batch,
            "crop_lr": args.crop,
            "workers": args.workers,
            "init": str(args.init or src.name),
            "blocks": {"init": blocks_in, "trained": len(avg.blocks), "dropped": dropped},
            "lr": args.lr,
            "ema": args.ema,
            "sharp_frac": args.sharp_frac,
            "seed": args.seed,
            "minutes": round((time.time() - t0) / 60, 1),
            "output_correction": {
                "gain": [round(float(v), 6) for v in gain],
                "offset": [round(float(v), 7) for v in offset],
            },
            "command": cmd,
        },
    }
    dst = args.out or src
    save_light(avg, info, dst, new_gain, extra)
    print(f"wrote {dst}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
