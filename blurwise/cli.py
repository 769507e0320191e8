"""The ``blurwise`` command: argument parsing and error reporting only; the work is in api/batch/io.

Subcommands: upscale, deblur, defocus-map, evaluate, bench, models, train, export, data. Errors a
user can cause print one line (``blurwise: error: ...``) and return the error's exit code (2 for
usage, 1 for failures); Ctrl-C stops after the current image and returns 130; unexpected errors
print one line too (the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blurwise import __version__, argtypes
from blurwise.errors import BlurwiseError, NotAvailableError, OutputError, UsageError, first_line
from blurwise.limits import MAX_PIXELS

PROG = "blurwise"
log = logging.getLogger("blurwise")


# --------------------------------------------------------------------------- helpers


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _need(module: str, attr: str, feature: str) -> Any:
    """``module.attr``, or a NotAvailableError saying the feature is not available yet."""
    import importlib

    try:
        mod = importlib.import_module(module)
        return getattr(mod, attr)
    except (ImportError, AttributeError) as exc:
        raise NotAvailableError(f"{feature} is not available yet ({module}.{attr}: {first_line(exc)})") from None


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with only the keyword arguments it accepts (the backends are still growing)."""
    params = inspect.signature(fn).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        dropped = [k for k in kwargs if k not in params]
        for k in dropped:
            if kwargs[k] not in (None, False):
                log.debug("%s does not take %s; ignored", getattr(fn, "__name__", fn), k)
            kwargs.pop(k)
    return fn(*args, **kwargs)


def _json(obj: Any) -> str:
    """``obj`` as one line of valid JSON: non-finite numbers (the PSNR of an image identical to its
    reference is infinite) are written as null, never as the invalid ``Infinity`` / ``NaN``."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, list | tuple) else v

    return json.dumps(clean(obj), allow_nan=False)


def _half(args: argparse.Namespace) -> Any:
    if getattr(args, "fp32", False):
        if getattr(args, "half", None):
            raise UsageError(f"--fp32 and --half {args.half} contradict each other; give one")
        return None
    return getattr(args, "half", None) or "auto"


# --------------------------------------------------------------------------- parser


def _parents() -> dict[str, argparse.ArgumentParser]:
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    base.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    io = argparse.ArgumentParser(add_help=False)  # the image commands; only they have per-image lines (-v)
    io.add_argument("-v", "--verbose", action="store_true", help="one line per image (model, routes, FLOPs, time)")
    g = io.add_argument_group("input and output")
    g.add_argument(
        "-i", "--input", action="extend", nargs="+", required=True, metavar="PATH", help="image files and/or folders"
    )
    g.add_argument(
        "-o", "--output", default="results", help="output folder, or a file name for one input (default: results)"
    )
    g.add_argument(
        "--suffix", help="appended to output names as _SUFFIX (default: out; defocus-map: defocus; '' for none)"
    )
    g.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "tif", "bmp", "webp"], help="output format")
    g.add_argument("--recursive", action="store_true", help="also process sub-folders (the tree is mirrored)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--skip-existing", action="store_true", help="skip images whose output exists")
    g.add_argument("--dry-run", action="store_true", help="show what would be done; read and write nothing")
    g.add_argument(
        "--allow-large",
        action="store_true",
        help=f"read images above {MAX_PIXELS // 1_000_000} megapixels "
        "(refused by default: memory grows with the output)",
    )

    model = argparse.ArgumentParser(add_help=False)
    g = model.add_argument_group("model and device")
    g.add_argument("-m", "--model", help="registered model name or a .safetensors file (see 'blurwise models')")
    g.add_argument("-t", "--tile", type=argtypes.nonneg, default=0, help="tile size in input pixels (0 = automatic)")
    g.add_argument("--tile-pad", type=argtypes.nonneg, default=16, help="tile overlap in input pixels (default 16)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, MPS, CPU)")
    g.add_argument("--fp32", action="store_true", help="full precision on GPU (default there: half)")
    g.add_argument(
        "--half",
        choices=["fp16", "bf16"],
        help="half precision: fp16 (GPU default) or bf16; on a CPU only bf16 (fast on CPUs with AMX)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster on big jobs)")
    g.add_argument("--trust-pickle", action="store_true", help="allow pickled .pth weights (read weights_only)")

    route = argparse.ArgumentParser(add_help=False)
    g = route.add_argument_group("defocus-aware routing")
    g.add_argument("--route", choices=["auto", "on", "off"], default="auto", help="route defocused patches (auto)")
    g.add_argument(
        "--threshold", type=argtypes.sigma, metavar="SIGMA", help="blur (LR px sigma) above which patches go light"
    )
    g.add_argument(
        "--budget", type=argtypes.fraction, metavar="FRAC", help="FLOPs budget as a fraction of the heavy model"
    )
    g.add_argument("--routes", type=int, choices=[2, 3], help="3 adds a bicubic route for heavy blur (default 2)")
    g.add_argument(
        "--router",
        choices=["auto", "learned", "map"],
        default="auto",
        help="what decides the routes: learned (predicted quality loss from map + texture; its own calibrated "
        "threshold, no --threshold or --depth), map (blur vs --threshold), auto (learned where it ships, unless "
        "--threshold or --depth is given)",
    )
    g.add_argument("--light", metavar="MODEL", help="light (EBM-SR) model; default: the one distilled from -m")
    g.add_argument(
        "--min-saving",
        type=argtypes.saving,
        metavar="FRAC",
        help="run the heavy model everywhere when routing would save less than this share of its FLOPs "
        "(default 0.2; 0: route whatever it saves)",
    )
    g.add_argument(
        "--map-precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="arithmetic of the defocus map that decides the routes: auto (bf16 on CPUs with bf16 units, 2x "
        "faster; on a GPU as the models), fp32 (the same routes on every machine), bf16, fp16 (GPU)",
    )
    ray = argparse.ArgumentParser(add_help=False)
    g = ray.add_argument_group("scale-out with Ray Data (pip install 'blurwise[ray]'; see docs/ray.md)")
    g.add_argument("--ray", action="store_true", help="run on a Ray cluster (one model load per actor)")
    g.add_argument("--ray-address", metavar="ADDR", help="cluster to join (default: $RAY_ADDRESS or a local one)")
    g.add_argument(
        "--actors", type=argtypes.positive, metavar="N", help="most actors (default: what the cluster allows)"
    )
    g.add_argument("--gpus-per-actor", type=float, metavar="F", help="GPUs per actor (default 1 if there are GPUs)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="F", help="CPUs (torch threads) per actor")
    g.add_argument(
        "--batch-size", type=argtypes.positive, default=1, metavar="N", help="images per actor call (default 1)"
    )
    return {"base": base, "io": io, "model": model, "route": route, "ray": ray}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    p = _parents()
    ap = argtypes.OneLineParser(
        prog=PROG,
        description="Blur-aware image restoration: defocus-aware super-resolution and fast deblurring.",
        epilog="Run 'blurwise COMMAND -h' for a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    ap.add_argument("--debug", action="store_true", default=False, help="show tracebacks of unexpected errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, parents: list[str], func: Callable, epilog: str = "") -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[p[k] for k in parents],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(func=func, command_parser=sp)  # its usage errors name the command (see main)
        return sp

    sp = add(
        "upscale",
        "super-resolve images, sending defocused regions to a cheap model",
        ["base", "io", "model", "route", "ray"],
        _cmd_upscale,
        "example: blurwise upscale -i photos/ -o big/ -s 4 --recursive",
    )
    sp.add_argument("-s", "--scale", type=argtypes.positive, default=4, help="upscaling factor (default 4)")
    sp.add_argument(
        "--save-map",
        action="store_true",
        help="also write the routes and the defocus map (LR px) beside each output: "
        "NAME_out_routes.png, NAME_out_defocus.tiff and .png",
    )
    sp.add_argument("--depth", metavar="PATH", help="depth map file (one input) or folder of maps named like inputs")

    sp = add(
        "deblur",
        "remove motion / camera-shake blur",
        ["base", "io", "model", "ray"],
        _cmd_deblur,
        "example: blurwise deblur -i shaky.jpg -o sharp.png",
    )
    sp.add_argument("--stages", type=argtypes.positive, metavar="K", help="LPRN stages to run (fewer = faster)")

    sp = add(
        "defocus-map",
        "estimate per-pixel defocus blur: NAME_defocus.tiff (float32 sigma in px) + NAME_defocus.png preview",
        ["base", "io"],
        _cmd_defocus_map,
        "example: blurwise defocus-map -i photo.jpg -o maps/ --overlay\n"
        "writes maps/photo_defocus.tiff, maps/photo_defocus.png (colour bar) and maps/photo_defocus_overlay.png",
    )
    sp.add_argument("--depth", metavar="PATH", help="depth map file (one input) or folder of maps named like inputs")
    sp.add_argument("--method", default="auto", choices=["auto", "edge", "learned"], help="estimator")
    sp.add_argument(
        "--segmenter",
        default="auto",
        choices=["auto", "slic", "felzenszwalb", "depth", "color+depth", "sam", "none"],
        help="how sparse estimates are spread over regions",
    )
    sp.add_argument("--sam-checkpoint", metavar="PATH", help="Segment Anything checkpoint (with --segmenter sam)")
    sp.add_argument("--overlay", action="store_true", help="also write NAME_defocus_overlay.png (map over the image)")
    sp.add_argument("--no-preview", action="store_true", help="write only the float TIFF, no colourised PNG")
    sp.add_argument(
        "--vmax",
        type=argtypes.checked(float, lambda v: math.isfinite(v) and v > 0, "a blur sigma in px > 0"),
        metavar="SIGMA",
        help="top of the colour scale in px (default: 99th pct.)",
    )
    sp.add_argument("--device", default="auto", help="device for learned parts (auto | cpu | cuda | mps)")

    sp = add(
        "evaluate",
        "PSNR/SSIM of a model on a folder of test images",
        ["base"],
        _cmd_evaluate,
        "example: blurwise evaluate --task sr --data ../shared/data/sr/test/Set5 -s 4 -m bicubic --json",
    )
    sp.add_argument("--task", choices=["sr", "deblur"], default="sr")
    sp.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="HR images (sr) or blur/ + sharp/ folders (deblur), or a set written by 'data make-eval'",
    )
    sp.add_argument("-s", "--scale", type=argtypes.positive, default=4)
    sp.add_argument("-m", "--model", help="model name/path, or bicubic / identity (default: the shipped default)")
    sp.add_argument(
        "--route",
        choices=["auto", "on", "off"],
        default="off",
        help="routed SR (sr only; default off): auto runs the heavy model where it cannot route, on refuses",
    )
    sp.add_argument("--threshold", type=argtypes.sigma, metavar="SIGMA")
    sp.add_argument("--budget", type=argtypes.fraction, metavar="FRAC")
    sp.add_argument("--routes", type=int, choices=[2, 3])
    sp.add_argument("--stages", type=argtypes.positive, metavar="K", help="--task deblur with LPRN: stages to run")
    sp.add_argument("--limit", type=argtypes.positive, help="first N images only")
    sp.add_argument("-t", "--tile", type=argtypes.nonneg, default=0)
    sp.add_argument("--tile-pad", type=argtypes.nonneg, default=16)
    sp.add_argument("--device", default="auto")
    sp.add_argument("--half", choices=["fp16", "bf16"], help="half precision (GPU; bf16 on a CPU)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")

    sp = add(
        "bench",
        "time a model (median of N runs) and count its MACs/FLOPs at an image size",
        ["base"],
        _cmd_bench,
        "example: blurwise bench -m edsr-s-x4 --size 1280x720 --runs 5",
    )
    sp.add_argument("-m", "--model", help="model name/path (default: the default model for --task/--scale)")
    sp.add_argument("--task", choices=["sr", "deblur"], help="picks the default model (default sr)")
    sp.add_argument("-s", "--scale", type=argtypes.positive, help="picks the default SR model (default 4)")
    sp.add_argument(
        "--size", type=argtypes.size, default=(1280, 720), metavar="WxH", help="OUTPUT size (default 1280x720)"
    )
    sp.add_argument("--runs", type=argtypes.positive, default=5, help="timed runs (median reported)")
    sp.add_argument("--warmup", type=argtypes.nonneg, default=1)
    sp.add_argument("-t", "--tile", type=argtypes.nonneg, default=0)
    sp.add_argument("--device", default="auto")
    sp.add_argument("--half", choices=["fp16", "bf16"])
    sp.add_argument("--trust-pickle", action="store_true")
    sp.add_argument("--json", action="store_true")

    sp = add("models", "list registered models (and which have shipped weights)", ["base"], _cmd_models)
    sp.add_argument(
        "--json", action="store_true", help='JSON list of {"name","task","scale","params","shipped","default"}'
    )
    sp.add_argument("--task", choices=["sr", "ebmsr", "deblur", "defocus", "router"], help="only this task")
    sp.add_argument("-s", "--scale", type=argtypes.positive, help="only models of this scale (1: no upscaling)")

    sp = add(
        "train",
        "train or distill a model from a TOML config",
        ["base"],
        _cmd_train,
        "examples: blurwise train sr_edsr-s_x4\n"
        "          blurwise train sr --config sr_edsr-s_x2 --set optim.iterations=2000\n"
        "          blurwise train distill --teacher my_edsr.pth --trust-pickle\n"
        "The run folder ($BLURWISE_RUNS/NAME) keeps last.pt, log.csv, curve.png and the exported weights;\n"
        "the same command resumes there. Ctrl-C stops after the current step and saves a checkpoint.\n"
        "A plain run never replaces the shipped weights; --ship does (maintainers, in a source checkout).\n"
        f"The shipped configs, found by name (copy one to change it): {Path(__file__).resolve().parent / 'configs'}",
    )
    sp.add_argument(
        "config",
        nargs="*",
        help="TOML config (path, the name of a shipped config, or a task: sr, distill, deblur, defocus = its shipped "
        "model's config); several: one shared batch stream. With --config: the task the files must be for",
    )
    sp.add_argument("--config", dest="config_files", action="append", metavar="FILE", help="TOML config (repeatable)")
    sp.add_argument("--smoke", action="store_true", help="tiny deterministic run (seconds on a CPU)")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, MPS, CPU)")
    sp.add_argument("--teacher", metavar="PATH", help="distill: the heavy model to match (name or weights file)")
    sp.add_argument("--trust-pickle", action="store_true", help="allow a pickled .pth teacher")
    sp.add_argument("--no-resume", action="store_true", help="start fresh even if the run folder has a checkpoint")
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable (optim.lr=1e-3, data.roots='[\"sr/train/T91\"]', model.cfg.n_feats=32)",
    )
    sp.add_argument(
        "--ship",
        action="store_true",
        help="maintainers, in a source checkout: export to the config's output.export even in the package's shipped "
        "weights (which otherwise stay untouched: the export goes to the run folder) and copy the curve to "
        "docs/results/training",
    )

    sp = add(
        "export",
        "export a model to ONNX (dynamic batch, height and width)",
        ["base"],
        _cmd_export,
        "example: blurwise export -m edsr-s-x4 -o edsr.onnx",
    )
    sp.add_argument("-m", "--model", required=True, help="model name or weights file")
    sp.add_argument("-o", "--output", required=True, help="output .onnx file")
    sp.add_argument(
        "--opset",
        type=argtypes.checked(int, lambda v: True, "an integer"),
        default=17,
        help="ONNX opset 11-20 (default 17)",
    )
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sp.add_argument("--trust-pickle", action="store_true", help="allow pickled .pth weights (read weights_only)")

    sp = add("data", "make evaluation sets and other data", ["base"], _cmd_data)
    dsub = sp.add_subparsers(dest="data_command", metavar="ACTION")
    mk = dsub.add_parser(
        "make-eval", help="write the synthetic evaluation sets", description="write the synthetic evaluation sets"
    )
    mk.add_argument("--out", required=True, metavar="DIR", help="output folder")
    mk.add_argument("--small", action="store_true", help="a few images per set (tests, CI)")
    mk.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite sets blurwise wrote before (a set folder holding other files is still refused)",
    )
    # the base flags again, after the action too; SUPPRESS keeps 'data -q make-eval' from being reset here
    mk.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no summary")
    mk.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="one line per item")
    mk.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sp.set_defaults(data_parser=sp)
    return ap


# --------------------------------------------------------------------------- image commands


def _depth_finder(depth: str | None, jobs: list) -> Callable[[Any], Path | None]:
    """Which depth file belongs to which job: one file for one input, or a folder of maps by name."""
    if depth is None:
        return lambda job: None
    d = Path(depth)
    if d.is_dir():
        from blurwise.io.depth import DEPTH_EXTS

        def find(job: Any) -> Path | None:
            for base in (d / job.rel.parent, d):
                for e in DEPTH_EXTS:
                    cand = base / f"{job.rel.stem}{e}"
                    if cand.is_file() and not (job.src.exists() and os.path.samefile(cand, job.src)):  # not itself
                        return cand
            raise UsageError(f"no depth map for {job.rel} in {d} (looked for {job.rel.stem}.npy/.png/.tif/...)")

        return find
    if len(jobs) > 1:
        raise UsageError("--depth names one file but there are several inputs; give a folder of depth maps")
    return lambda job: d


def _finish(res: Any, args: argparse.Namespace) -> int:
    """Print the run's summary table (to stdout for a dry run) and return the exit code. A single image that
    failed gets its one error line only: the table would only repeat it."""
    done, skipped = (len(x) if isinstance(x, list | set) else int(x) for x in (res.done, res.skipped))
    lone_failure = len(res.failed) == 1 and not done and not skipped and not res.interrupted
    if res.dry_run or not (args.quiet or lone_failure):
        print(res.table(), file=sys.stdout if res.dry_run else sys.stderr)
    return res.exit_code


def _plan(args: argparse.Namespace, default_ext: str | None = None, default_suffix: str = "out") -> list:
    from blurwise.batch import plan_jobs

    if args.suffix is None:  # per-command default (a shared parent parser cannot hold one per command)
        args.suffix = default_suffix

    return plan_jobs(
        args.input, args.output, suffix=args.suffix, ext=args.ext, default_ext=default_ext, recursive=args.recursive
    )


def _side_path(dst: Path, tag: str, ext: str = ".png") -> Path:
    return dst.with_name(f"{dst.stem}_{tag}{ext}")


def _run_ray(task: str, args: argparse.Namespace, options: dict[str, Any], depth_of: Any = None) -> int:
    """``--ray``: the same work through :func:`blurwise.ray_data.process` (one model load per actor)."""
    from blurwise.ray_data import process

    res = process(
        task,
        args.input,
        args.output,
        options,
        suffix=args.suffix,
        ext=args.ext,
        recursive=args.recursive,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        depth_of=depth_of,
        address=args.ray_address,
        actors=args.actors,
        num_gpus=args.gpus_per_actor,
        num_cpus=args.cpus_per_actor,
        batch_size=args.batch_size,
        progress=not args.quiet,
        say=_say,
        allow_large=args.allow_large,
    )
    return _finish(res, args)


def _batch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The input/output flags shared by the image commands, as keyword arguments of ``batch.run_batch``."""
    return dict(
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        quiet=args.quiet,
        say=_say,
        read_kwargs={"allow_large": args.allow_large},
    )


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model/device flags shared by upscale and deblur, as keyword arguments of the API classes."""
    return dict(
        model=args.model,
        tile=args.tile,
        tile_pad=args.tile_pad,
        device=args.device,
        half=_half(args),
        compile=args.compile,
        trust_pickle=args.trust_pickle,
    )


def _cmd_upscale(args: argparse.Namespace) -> int:
    import numpy as np

    from blurwise.api import Upscaler
    from blurwise.batch import run_batch
    from blurwise.io import Image, read_depth

    given = [f"--{k}" for k in ("threshold", "budget", "routes") if getattr(args, k) is not None]
    no_routing = "--route off" if args.route == "off" else "-m bicubic" if args.model == "bicubic" else None
    if no_routing and given:
        raise UsageError(f"{'/'.join(given)} set the routing, but {no_routing} routes nothing")
    if no_routing and args.save_map:
        raise UsageError(f"--save-map saves the defocus map and the routes, but {no_routing} routes nothing")
    if args.depth and args.router == "learned":
        from blurwise.routing import LEARNED_NO_DEPTH

        raise UsageError(LEARNED_NO_DEPTH)
    jobs = _plan(args)
    common = _batch_options(args)
    if args.dry_run:
        return _finish(run_batch(jobs, None, dry_run=True, **common), args)  # type: ignore[arg-type]
    depth_of = _depth_finder(args.depth, jobs)
    options = dict(
        scale=args.scale,
        light=args.light,
        route=args.route,
        threshold=args.threshold,
        budget=args.budget,
        routes=args.routes or 2,
        router=args.router,
        min_saving=args.min_saving,
        map_precision=args.map_precision,
        **_model_options(args),
    )
    if args.ray:
        if args.save_map:
            raise UsageError("--save-map is not available with --ray")
        return _run_ray("upscale", args, options, depth_of)
    up = Upscaler(options.pop("scale"), **options, progress=not args.quiet and len(jobs) == 1)
    if up.notes and not args.quiet:
        _say(f"note: {'; '.join(up.notes)}")

    def process(img: Image, job: Any) -> list:
        dpath = depth_of(job)
        depth = read_depth(dpath, (img.height, img.width)) if dpath is not None else None
        out, alpha, rep = up(img.pixels, img.alpha, depth=depth)
        outputs = [(job.dst, img.with_pixels(out, alpha))]
        if args.save_map and rep.routing is not None and getattr(rep.routing, "plan", None) is not None:
            from blurwise.routing import routing_overlay

            rgb = img.pixels if img.channels == 3 else img.pixels.repeat(3, axis=2)
            zoom = max(1, min(args.scale, 4))
            outputs.append((_side_path(job.dst, "routes"), Image(routing_overlay(rgb, rep.routing.plan, zoom=zoom))))
            sigma = getattr(rep.routing, "sigma_lr", None)
            if sigma is not None:  # the defocus map that steered the routes (LR px), exact and as a preview
                from blurwise.defocus import colorize

                sig = np.asarray(sigma, dtype=np.float32)[:, :, None]
                outputs.append((_side_path(job.dst, "defocus").with_suffix(".tiff"), Image(sig, bit_depth=32)))
                outputs.append((_side_path(job.dst, "defocus").with_suffix(".png"), colorize(sigma)))
        if args.verbose:
            _say(f"{job.rel}: {rep.summary()}")
        return outputs

    return _finish(run_batch(jobs, process, **common), args)


def _cmd_deblur(args: argparse.Namespace) -> int:
    from blurwise.api import Deblurrer
    from blurwise.batch import run_batch

    jobs = _plan(args)
    common = _batch_options(args)
    if args.dry_run:
        return _finish(run_batch(jobs, None, dry_run=True, **common), args)  # type: ignore[arg-type]
    options = dict(
        stages=args.stages,
        **_model_options(args),
    )
    if args.ray:
        return _run_ray("deblur", args, options)
    run = Deblurrer(**options, progress=not args.quiet and len(jobs) == 1)

    def process(img: Any, job: Any) -> list:
        out, alpha, rep = run(img.pixels, img.alpha)
        if args.verbose:
            _say(f"{job.rel}: {rep.summary()}")
        return [(job.dst, img.with_pixels(out, alpha))]

    return _finish(run_batch(jobs, process, **common), args)


def _cmd_defocus_map(args: argparse.Namespace) -> int:
    import numpy as np

    from blurwise.api import defocus_map
    from blurwise.batch import run_batch
    from blurwise.io import Image, read_depth

    if args.segmenter == "sam" and not args.sam_checkpoint:
        raise UsageError("--segmenter sam needs --sam-checkpoint PATH")
    if args.sam_checkpoint and args.segmenter != "sam":
        raise UsageError("--sam-checkpoint is for --segmenter sam")
    if args.segmenter in ("depth", "color+depth") and not args.depth:
        raise UsageError(f"--segmenter {args.segmenter} needs --depth FILE|DIR")
    if args.no_preview and args.ext not in ("auto", "tif"):
        raise UsageError(f"--no-preview leaves only the float TIFF, but --ext {args.ext} writes only the preview")
    if args.device != "auto":
        from blurwise.api import resolve_device

        resolve_device(args.device)  # one usage line for a device that is not there, before any image
    jobs = _plan(args, default_ext="tiff", default_suffix="defocus")
    common = _batch_options(args)
    if args.dry_run:
        return _finish(run_batch(jobs, None, dry_run=True, **common), args)  # type: ignore[arg-type]
    _need("blurwise.defocus", "estimate_defocus", "defocus map estimation")
    depth_of = _depth_finder(args.depth, jobs)
    extra: dict[str, Any] = {}
    if args.sam_checkpoint:
        extra["sam_checkpoint"] = args.sam_checkpoint
    if args.device != "auto":
        extra["device"] = args.device

    from blurwise.defocus import colorize, overlay

    def side(job: Any, path: Path) -> Path:
        if path.absolute() == job.src.absolute():
            raise OutputError(f"preview {path} would replace its input; use another -o folder or a --suffix")
        return path

    def process(img: Image, job: Any) -> list:
        dpath = depth_of(job)
        depth = read_depth(dpath, (img.height, img.width)) if dpath is not None else None
        sigma = defocus_map(img.pixels, depth, method=args.method, segmenter=args.segmenter, **extra)
        preview = colorize(sigma, vmax=args.vmax)  # uint8 RGB with a labelled colour bar
        if job.dst.suffix.lower() in (".tif", ".tiff"):
            outputs: list = [(job.dst, Image(sigma[:, :, None].astype(np.float32), bit_depth=32))]  # exact sigma
            if not args.no_preview:
                outputs.append((side(job, job.dst.with_suffix(".png")), preview))
        else:  # --ext png/jpg/...: only the viewable map (the exact values need TIFF)
            outputs = [(job.dst, preview)]
        if args.overlay:
            outputs.append((side(job, _side_path(job.dst, "overlay")), overlay(img.pixels, sigma, vmax=args.vmax)))
        if args.verbose:
            _say(f"{job.rel}: sigma median {np.median(sigma):.2f} px, max {sigma.max():.2f} px")
        return outputs

    return _finish(run_batch(jobs, process, **common), args)


# --------------------------------------------------------------------------- other commands


def _cmd_models(args: argparse.Namespace) -> int:
    from blurwise.models.registry import count_params, create_model, default_variant, is_shipped, list_variants

    rows = []
    for v in list_variants():
        if (args.task and v.task != args.task) or (args.scale and max(1, int(v.scale)) != args.scale):
            continue
        try:
            params = count_params(create_model(v.name))
        except Exception as exc:  # noqa: BLE001 - one broken entry must not hide the others
            log.debug("cannot build %s: %s", v.name, exc)
            params = None
        try:
            is_default = default_variant(v.task, v.scale).name == v.name
        except BlurwiseError:
            is_default = False
        rows.append(
            {
                "name": v.name,
                "task": v.task,
                "scale": v.scale,
                "params": params,
                "shipped": is_shipped(v),
                "default": is_default,
                "description": v.description,
            }
        )
    if args.json:
        keys = ("name", "task", "scale", "params", "shipped", "default")
        print(json.dumps([{k: r[k] for k in keys} for r in rows], indent=1))
        return 0
    print(f"{'name':<22} {'task':<8} {'scale':>5} {'params':>9}  {'shipped':<7} {'default':<7} description")
    for r in rows:
        params = "?" if r["params"] is None else f"{r['params'] / 1e3:.1f}K"
        print(
            f"{r['name']:<22} {r['task']:<8} {'x' + str(r['scale']):>5} {params:>9}  "
            f"{'yes' if r['shipped'] else '-':<7} {'*' if r['default'] else '':<7} {r['description']}"
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    evaluate = _need("blurwise.evaluate", "evaluate", "evaluation")
    if not Path(args.data).is_dir():
        raise UsageError(f"--data must be a folder: {args.data}")
    route_kw = {k: getattr(args, k) for k in ("threshold", "budget", "routes") if getattr(args, k) is not None}
    if route_kw and args.route == "off":
        raise UsageError("--threshold/--budget/--routes need --route auto or on")
    if args.stages is not None:
        route_kw["stages"] = args.stages
    res = _call(
        evaluate,
        args.task,
        args.data,
        scale=args.scale,
        model=args.model,
        route=args.route,
        device=args.device,
        limit=args.limit,
        tile=args.tile,
        tile_pad=args.tile_pad,
        half=args.half or False,
        progress=not (args.quiet or args.json),
        **route_kw,
    )
    if args.json:
        print(_json(res))
        return 0
    per = res.get("per_image", [])
    cols = [k for k in ("psnr", "ssim", "psnr_y", "ssim_y") if k in res]
    mean = f"mean ({res.get('n_images', len(per))} images)"
    wn = max([28, len(mean)] + [len(str(row.get("name", "?"))) for row in per])
    print(f"{'image':<{wn}} " + " ".join(f"{c:>8}" for c in cols))
    for row in per:
        print(f"{str(row.get('name', '?')):<{wn}} " + " ".join(f"{row.get(c, float('nan')):>8.4f}" for c in cols))
    print(f"{mean:<{wn}} " + " ".join(f"{res[c]:>8.4f}" for c in cols))
    stages = f", {res['stages']} stages" if "stages" in res else ""
    print(f"task {res.get('task')}, model {res.get('model')}{stages}, x{res.get('scale')}")
    rt = res.get("routing")
    if rt:
        ff = rt.get("flops_fraction")
        cost = f", {ff:.1%} of the heavy model's FLOPs" if ff is not None else ""
        notes = "".join(f"; {n}" for n in rt.get("notes", []))
        print(f"routed {rt.get('routed_images')} of {res.get('n_images')} images{cost}{notes}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import statistics
    import time

    import torch

    from blurwise.api import _half_mode, get_model, resolve_device
    from blurwise.metrics.flops import compute
    from blurwise.models import default_variant
    from blurwise.tiling import run_tiled

    if args.model in ("bicubic", "identity"):
        raise UsageError(f"{args.model} is a baseline, not a model: bench times registered or saved models")
    task = args.task or "sr"
    if task != "sr" and args.scale is not None:
        raise UsageError(f"-s/--scale picks an SR model; --task {task} has no scale")
    dev = resolve_device(args.device)
    name = args.model or default_variant(task, args.scale or 4 if task == "sr" else 1).name
    model, info = get_model(name, device=dev, trust_pickle=args.trust_pickle, allow_untrained=True)
    if info.task == "router":
        raise UsageError(
            f"{info.name} is a patch router (it reads routing features, not an image): bench times image models"
        )
    if args.task is not None and args.task != info.task and not (args.task == "sr" and info.task == "ebmsr"):
        raise UsageError(f"{info.name} is for task {info.task}, not --task {args.task}")
    if args.scale is not None and args.scale != max(1, int(info.scale)):
        what = f"upscales x{info.scale}" if info.scale > 1 else "does not upscale"
        raise UsageError(f"model {info.name!r} {what}, but the scale asked for is x{args.scale} (-s)")
    half = _half_mode(args.half, dev, info)  # as upscale/deblur read --half (fp16 on a CPU is refused)
    w, h = args.size
    s = max(1, int(info.scale))
    if w % s or h % s:
        raise UsageError(f"--size {w}x{h} is not a multiple of the model's scale x{s}")
    lw, lh = w // s, h // s
    shape = (1, int(info.in_channels), lh, lw)
    counted = compute(model, shape)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))

    def once() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            run_tiled(model, x, scale=s, tile=args.tile, half=half)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        once()
    times = [once() for _ in range(args.runs)]
    med = statistics.median(times)
    res = {
        "model": info.name,
        "task": info.task,
        "scale": s,
        "params": counted.params,
        "input": f"{lw}x{lh}",
        "output": f"{w}x{h}",
        "macs": counted.macs,
        "flops": counted.flops,
        "device": str(dev),
        "half": half or None,
        "runs": args.runs,
        "median_s": med,
        "min_s": min(times),
        "mpix_per_s": (w * h / 1e6) / med if med > 0 else None,
    }
    if args.json:
        print(_json(res))
    else:
        print(
            f"{info.name}: {w}x{h} output from {lw}x{lh} on {dev}: median {med * 1000:.1f} ms over {args.runs} runs "
            f"(min {min(times) * 1000:.1f}), {counted.macs / 1e9:.2f} GMACs = {counted.flops / 1e9:.2f} GFLOPs, "
            f"{counted.params / 1e3:.1f}K params"
        )
    return 0


def _train_configs(
    words: list[str], files: list[str], *, smoke: bool = False, overrides: dict[str, Any] | None = None
) -> list[str]:
    """The configs ``blurwise train`` runs: the positional ones (``train CONFIG...``), or the ``--config`` files, whose
    ``task`` must then be the one positional word if given (``train sr --config FILE``). Every config is read
    (with ``overrides``) now, so a bad one is reported before anything runs."""
    from blurwise.train.config import TASK_CONFIGS, load_config

    if not files:
        if not words:
            raise UsageError("give a config: blurwise train CONFIG.toml, or blurwise train TASK --config FILE.toml")
        files, words = words, []
    elif len(words) > 1 or (words and words[0] not in TASK_CONFIGS):
        raise UsageError(f"with --config, the word before it names the task ({', '.join(TASK_CONFIGS)}), not {words}")
    for f in files:
        task = load_config(f, smoke=smoke, overrides=overrides).task
        if words and task != words[0]:
            raise UsageError(f"{f} is a {task} config, not {words[0]}")
    return files


class _TrainLogFormat(logging.Formatter):
    """``HH:MM:SS message`` for training progress; warnings say so."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{PROG}: {record.levelname.lower()}: {record.message}"


def _cmd_train(args: argparse.Namespace) -> int:
    run = _need("blurwise.train", "run", "training")
    from blurwise.train.config import parse_overrides, run_options

    overrides = parse_overrides(args.set, teacher=args.teacher, trust_pickle=args.trust_pickle)
    configs = _train_configs(args.config, args.config_files or [], smoke=args.smoke, overrides=overrides)
    kw = run_options(args, overrides)
    train_log = logging.getLogger("blurwise.train")  # progress (steps, losses, validation) unless -q
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TrainLogFormat("%(asctime)s %(message)s", "%H:%M:%S"))
    saved = train_log.level, train_log.propagate
    train_log.addHandler(handler)
    train_log.propagate = False
    train_log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        if len(configs) > 1:
            results = _call(_need("blurwise.train.loop", "run_many", "training"), configs, **kw)
        else:
            results = [_call(run, configs[0], **kw)]
    finally:
        train_log.removeHandler(handler)
        train_log.setLevel(saved[0])
        train_log.propagate = saved[1]
    for res in results:
        print(res.summary())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    export_onnx = _need("blurwise.export", "export_onnx", "ONNX export")
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"-o must end in .onnx: {out}")
    path = _call(
        export_onnx, args.model, out, opset=args.opset, trust_pickle=args.trust_pickle, overwrite=args.overwrite
    )
    if not args.quiet:
        _say(f"exported {path or out}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command != "make-eval":
        args.data_parser.print_help(sys.stderr)
        return 2
    make_eval = _need("blurwise.data", "make_eval", "evaluation-set generation")
    progress = _say if getattr(args, "verbose", False) and not args.quiet else None
    res = _call(make_eval, args.out, small=args.small, overwrite=args.overwrite, progress=progress)
    if not args.quiet:
        _say(f"evaluation sets in {args.out}:")
        for name, r in (res or {}).items():
            what = "kept (already there)" if r.get("skipped") else "replaced" if r.get("replaced") else "written"
            took = f", {r['seconds']:.1f} s" if "seconds" in r else ""
            _say(f"  {name}: {what}, {r.get('items', 0)} items, {r.get('bytes', 0) / 1e6:.1f} MB{took}")
        if any(r.get("skipped") for r in (res or {}).values()):
            _say("  (--overwrite rewrites kept sets)")
    return 0


# --------------------------------------------------------------------------- entry point


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the top: what the system said and the path it refused, or, for an
    error without a path (writing stdout redirected to a full disk), that the output could not be written."""
    reason = exc.strerror or first_line(exc)
    if exc.filename is not None:
        return f"{reason}: {exc.filename}"
    return f"cannot write the output: {reason}"


def _quiet_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush of what could not be written fails no more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture): nothing to quiet
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the ``blurwise`` command line; returns the exit code (0 ok, 1 failure, 2 usage, 130 Ctrl-C)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's own parser, so the message points to its help
            getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, argparse usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="blurwise: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a full disk under `> file` is reported here, not lost in the interpreter's last flush
        return code
    except BlurwiseError as exc:
        _say(f"{PROG}: error: {exc}")
        return exc.exit_code
    except NotImplementedError as exc:
        _say(f"{PROG}: error: not available yet: {first_line(exc) if str(exc) else args.command}")
        return 1
    except KeyboardInterrupt as exc:  # training says where its checkpoint is
        _say(f"{PROG}: interrupted" + (f": {exc}" if str(exc) else ""))
        return 130
    except BrokenPipeError:  # stdout closed early (`blurwise models --json | head`): stop quietly, as shell tools do
        _quiet_stdout()
        return 141  # 128 + SIGPIPE
    except OSError as exc:  # a path the system refuses, or stdout (`> file`) on a full disk: one line, no traceback
        if debug:
            traceback.print_exc()
        _say(f"{PROG}: error: {_os_error_line(exc)}")
        if exc.filename is None:  # most likely stdout: the interpreter's last flush must not fail again
            _quiet_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless --debug
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        _say(f"{PROG}: error: unexpected {type(exc).__name__}: {first_line(exc)}{hint}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
