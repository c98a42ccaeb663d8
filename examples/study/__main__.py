"""Command line: run the optimizer study and write its report, figures and tables.

    python -m examples.study                       # the full study (results/study/)
    python -m examples.study --quick               # 3 epochs on 2,000 images: under 2 minutes
    python -m examples.study --out docs/study --page docs/study.md   # the documentation page
    python -m examples.study --model cnn --epochs 3 --limit 2000     # the CNN (slow on a CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from examples.mnist import data as data_lib
from examples.mnist.models import MODELS
from examples.study import report
from examples.study.study import FULL, QUICK, Study, run_study
from examples.study.training import make_problem


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/study"),
                   help="directory of the report, figures, CSV and JSON (default: results/study)")
    p.add_argument("--page", type=Path, default=None,
                   help="write the report to this Markdown page (instead of OUT/report.md), its figure links "
                        "relative to it")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK.epochs} epochs on the first {QUICK.limit} images (the same grids)")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per setting (default {FULL.epochs})")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and held-out images (default: all)")
    p.add_argument("--batch-size", type=int, default=FULL.batch_size)
    p.add_argument("--seed", type=int, default=FULL.seed)
    p.add_argument("--source", choices=["auto", "tfds", "idx"], default="idx",
                   help="idx (default): the IDX files, here the 10,000-image official test set split 8,000 / "
                        "2,000 (the budget of the full study is set for it); tfds or auto: 60,000 training "
                        "images, 7.5x longer unless --limit")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"directory of the IDX files (default: ${data_lib.ENV_DIR}, then {data_lib.SHARED_DIR})")
    args = p.parse_args(argv)
    if (args.epochs is not None and args.epochs < 1) or (args.limit is not None and args.limit < 1) \
            or args.batch_size < 1:
        p.error("--epochs, --limit and --batch-size must be positive")
    return args


def main(argv=None) -> int:
    try:
        run(parse_args(argv))
    except data_lib.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> tuple[Study, dict[str, Path]]:
    """The study as ``args`` asks, its outputs written; returns it and the paths written."""
    start, load = time.perf_counter(), os.getloadavg()[0]
    config = QUICK if args.quick else FULL
    changes = {"batch_size": args.batch_size, "seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.limit is not None:
        changes["limit"] = args.limit
    config = dataclasses.replace(config, **changes)
    dataset = data_lib.load(args.source, args.data_dir, limit=config.limit)
    problem = make_problem(dataset, args.model, config.batch_size, config.seed)
    print(f"data: {dataset.source}")
    print(f"model: {args.model} ({problem.n_params:,} weights), {len(dataset.train.labels)} training / "
          f"{len(dataset.held_out.labels)} held-out images, batch {config.batch_size}, {config.epochs} epochs, "
          f"seed {config.seed}", flush=True)
    study = run_study(config, problem, dataset.source, log=lambda line: print(line, flush=True))
    study.seconds = time.perf_counter() - start
    study.load = (load, os.getloadavg()[0])
    paths = report.write_all(args.out, study, args.page)
    print(f"wrote {len(paths)} files under {args.out}" + (f" and {args.page}" if args.page else ""))
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return study, paths


if __name__ == "__main__":
    sys.exit(main())
