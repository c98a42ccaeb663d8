"""Command line: compare optimizers on MNIST and write the table, CSV and plot.

    python -m examples.mnist --optimizers sgd,momentum,nesterov,rmsprop,adagrad,adadelta,adam --epochs 5
    python -m examples.mnist --model cnn --optimizers adam --epochs 5   # cosine-decayed lr
    python -m examples.mnist --optimizers adam --checkpoint-dir ckpt          # a checkpoint each epoch
    python -m examples.mnist --optimizers adam --checkpoint-dir ckpt --resume # go on from the latest

SIGTERM stops a run cleanly (status 143): the epoch in progress is dropped, the checkpoints
written are whole, and --resume goes on from the last one, bit for bit as if uninterrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gradtx
from examples.mnist import checkpoints, report
from examples.mnist import data as data_lib
from examples.mnist.models import MODELS
from examples.mnist.train import CLASSIC, LR_SCHEDULES, OPTIMIZERS, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.mnist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizers", default=",".join(CLASSIC),
                   help=f"comma-separated, from {','.join(OPTIMIZERS)} (default: the classic {len(CLASSIC)})")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="learning rate over the run (default: constant for the MLP, the tutorials' "
                        "setting; cosine decay to 0 for the CNN)")
    p.add_argument("--source", choices=["auto", "tfds", "idx"], default="auto",
                   help="auto: tensorflow-datasets if it has or can download MNIST, else IDX files")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"directory of the IDX files (default: ${data_lib.ENV_DIR}, "
                        f"then {data_lib.SHARED_DIR} when it exists)")
    p.add_argument("--tfds-data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and held-out images (quick runs)")
    p.add_argument("--out", type=Path, default=Path("results/mnist"))
    p.add_argument("--readme", type=Path, default=None,
                   help="also splice the table and plot into this README's mnist-results block")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help="write a checkpoint after each epoch to DIR/<model>-<optimizer>/epoch_NNN (orbax)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the latest checkpoint in --checkpoint-dir (refused if it is another run's)")
    args = p.parse_args(argv)
    if args.lr_schedule is None:
        args.lr_schedule = "cosine" if args.model == "cnn" else "constant"
    args.optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown or not args.optimizers:
        p.error(f"--optimizers: unknown {unknown or 'empty list'}; choose from {','.join(OPTIMIZERS)}")
    if args.epochs < 1 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        p.error("--epochs, --batch-size and --limit must be positive")
    if args.resume and args.checkpoint_dir is None:
        p.error("--resume needs --checkpoint-dir")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = data_lib.load(args.source, args.data_dir, args.tfds_data_dir, args.limit)
    except data_lib.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_train, n_held = len(dataset.train.labels), len(dataset.held_out.labels)
    print(f"data: {dataset.source}")
    print(f"model: {args.model}, {n_train} training / {n_held} held-out images, batch {args.batch_size}, "
          f"{args.epochs} epochs, seed {args.seed}, {args.lr_schedule} learning rate")
    start = time.perf_counter()
    try:
        with checkpoints.stop_on_sigterm():
            runs = [train(args.model, name, dataset, epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, progress=not args.no_progress, lr_schedule=args.lr_schedule,
                          checkpoint_dir=args.checkpoint_dir, resume=args.resume)
                    for name in args.optimizers]
    except checkpoints.Preempted as e:
        print(e.message(), flush=True)
        return checkpoints.SIGTERM_STATUS
    except (checkpoints.ResumeError, gradtx.CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    title = (f"MNIST {args.model.upper()}, {n_train} training / {n_held} held-out images, "
             f"batch {args.batch_size}, {args.epochs} epochs")
    paths = report.write_all(args.out, runs, title)
    if args.readme is not None:
        report.update_readme(args.readme, paths["results.md"], paths["loss_curves.png"])
    print()
    print(paths["results.md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}"
          + (f"; updated {args.readme}" if args.readme else ""))
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
