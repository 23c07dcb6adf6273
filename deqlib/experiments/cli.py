"""The command line: ``python -m deqlib.experiments [comparison|run] ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data import DATASETS
from ..train import LOSSES
from .catalog import ALL_MODELS, MODELS, PAPER_DEFAULTS
from .runner import run_experiment
from .tuning import paper_comparison


def _command(argv) -> str:
    return "python -m deqlib.experiments " + shlex.join(argv if argv is not None
                                                        else sys.argv[1:])


def _lr_arg(text: str):
    """``0.05`` or ``square=0.01,cross_entropy=0.05``."""
    if "=" not in text:
        return float(text)
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k: float(v) for k, v in pairs.items()}


def _grid_arg(text: str):
    """``0.01,0.1`` or ``square=0.003:0.01,cross_entropy=0.01:0.1``."""
    if "=" not in text:
        return [float(v) for v in text.split(",")]
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {k: [float(v) for v in vs.split(":")] for k, vs in pairs.items()}


def main(argv: Sequence[str] | None = None) -> None:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0].startswith("-"):
        args_in = ["comparison", *args_in]
    parser = argparse.ArgumentParser(
        prog="python -m deqlib.experiments",
        description="The DELM against the linear model and deep linear networks.")
    sub = parser.add_subparsers(dest="what", required=True)

    def shared(p, dataset):
        p.add_argument("--dataset", default=dataset, choices=DATASETS)
        p.add_argument("--models", nargs="+", default=list(MODELS), choices=ALL_MODELS)
        p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
        p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        p.add_argument("--batch-size", type=int, default=None, help="0 for full batch")
        p.add_argument("--train-size", type=int, default=None)
        p.add_argument("--test-size", type=int, default=None)
        p.add_argument("--gamma", type=float, default=0.8)
        p.add_argument("--delta", type=float, default=1e-6)
        p.add_argument("--device", default="auto")
        p.add_argument("--root", default=None, help="data folder (default $DEQLIB_DATA or "
                       "~/.deqlib/data)")
        p.add_argument("--download", action="store_true", help="fetch a missing dataset")
        p.add_argument("--out", default=None, help="output folder (default results/<dataset>)")
        p.add_argument("--no-progress", action="store_true")

    comp = sub.add_parser("comparison", help="the whole comparison (default)")
    shared(comp, "mnist10k")
    comp.add_argument("--epochs", type=int, default=PAPER_DEFAULTS["epochs"])
    comp.add_argument("--lr", type=_lr_arg, default=PAPER_DEFAULTS["lr"],
                      help="the same rate for all models, e.g. square=0.01,cross_entropy=0.05")
    comp.add_argument("--lr-grid", type=_grid_arg, default=PAPER_DEFAULTS["lr_grid"],
                      help="tuning candidates, e.g. square=0.003:0.01,cross_entropy=0.01:0.1")
    comp.add_argument("--gd-steps", type=int, default=PAPER_DEFAULTS["gd_steps"])
    comp.add_argument("--gd-lr", type=_lr_arg, default=PAPER_DEFAULTS["gd_lr"])

    one = sub.add_parser("run", help="one set of (loss, model, seed) runs")
    shared(one, "digits")
    one.add_argument("--epochs", type=int, default=20)
    one.add_argument("--lr", type=_lr_arg, default=0.05)
    one.add_argument("--no-summary", action="store_true",
                     help="write no summary.csv (e.g. when adding runs to a folder that has one)")

    args = parser.parse_args(args_in)
    out = Path(args.out or f"results/{args.dataset}")
    if args.batch_size is None:
        batch_size = PAPER_DEFAULTS["batch_size"] if args.what == "comparison" else 128
    else:
        batch_size = args.batch_size or None
    common = dict(dataset=args.dataset, models=args.models, losses=args.losses, seeds=args.seeds,
                  epochs=args.epochs, lr=args.lr, batch_size=batch_size,
                  train_size=args.train_size, test_size=args.test_size, gamma=args.gamma,
                  delta=args.delta, device=args.device, root=args.root, download=args.download,
                  progress=not args.no_progress, command=_command(argv))
    if args.what == "run":
        records = run_experiment(out=out, summary=not args.no_summary, **common)
        print(f"{len(records)} runs in {out}" + ("" if args.no_summary
                                                 else f"; summary: {out / 'summary.csv'}"))
        return
    result = paper_comparison(out, lr_grid=args.lr_grid, gd_steps=args.gd_steps,
                              gd_lr=args.gd_lr, **common)
    print(f"tuned learning rates: {result['tuned_lr']}")
    print(f"wall time: {result['wall_time_of_this_call_s']}; results in {out}")
