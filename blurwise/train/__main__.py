"""``python -m blurwise.train CONFIG [--smoke] [--device D] [--teacher PATH] [--set key=value ...] [--ship]``.

Also the torchrun entry point: ``torchrun --nproc_per_node 4 -m blurwise.train sr_edsr-s_x4``.
"""

from __future__ import annotations

import logging
import sys

from blurwise.argtypes import OneLineParser
from blurwise.errors import UsageError, run_main


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run (or export) the training, print a one-line summary; returns the exit code.

    Errors a user can cause are one line on stderr and a non-zero exit code; Ctrl-C stops after the
    current step, saves a checkpoint and exits with 130."""
    ap = OneLineParser(prog="python -m blurwise.train", description=__doc__.splitlines()[0])
    ap.add_argument(
        "config", nargs="+", help="TOML config (path, or a shipped config's name); several: one shared batch stream"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny deterministic run (seconds on a CPU)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--teacher", help="distill: teacher model name or weights path")
    ap.add_argument("--trust-pickle", action="store_true", help="allow a pickled .pth teacher")
    ap.add_argument("--no-resume", action="store_true", help="ignore the run folder's last.pt")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=1e-3")
    ap.add_argument(
        "--ship",
        action="store_true",
        help="maintainers, in a source checkout: write output.export even in the package's shipped weights, and "
        "the curve to docs/results/training",
    )
    ap.add_argument("--export-only", action="store_true", help="export the run's (or --checkpoint's) EMA weights")
    ap.add_argument("--checkpoint", help="with --export-only: checkpoint to export")
    ap.add_argument("--out", help="with --export-only: output .safetensors")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    results = []

    def work() -> int:
        from blurwise.train.config import parse_overrides, run_options

        overrides = parse_overrides(args.set, teacher=args.teacher, trust_pickle=args.trust_pickle)
        if args.export_only:
            from blurwise.train.loop import export_checkpoint

            if len(args.config) > 1:
                raise UsageError("--export-only takes one config")
            path = export_checkpoint(
                args.config[0],
                checkpoint=args.checkpoint,
                out=args.out,
                device=args.device,
                overrides=overrides,
                ship=args.ship,
            )
            print(f"exported {path}")
            return 0
        if args.checkpoint or args.out:
            raise UsageError("--checkpoint and --out go with --export-only")
        from blurwise.train.loop import run, run_many

        kw = run_options(args, overrides)
        results.extend(run_many(args.config, **kw) if len(args.config) > 1 else [run(args.config[0], **kw)])
        return 0

    code = run_main(None, work)
    for res in results:
        print(res.summary())
    return code


if __name__ == "__main__":
    sys.exit(main())
