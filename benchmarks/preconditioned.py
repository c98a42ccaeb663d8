"""SOAP and Shampoo against Adam: jitted step time and state bytes at the same shapes,
with the preconditioner's refresh shown apart from an ordinary step.

    python -m benchmarks.preconditioned            # a 1024 x 1024 matrix and ResNet-50 shapes
    python -m benchmarks.preconditioned --quick    # a 256 x 256 matrix and smaller ones (< 20 s)

Each step is one compiled ``update`` + ``apply_updates`` on the same inputs, called
repeatedly (warm-up calls first, then the median of the timed ones). The step count in the
state picks the path: an ordinary step, a refresh step (SOAP: one QR power iteration per
factor, ``count % precondition_frequency == 0``; Shampoo: the inverse roots, by ``eigh``,
``(count + 1) % precondition_frequency == 0``) and SOAP's first step (``eigh`` of every
factor). The refresh is a ``lax.cond`` inside the same compiled step, so an ordinary step
does not pay for it. State bytes come from ``jax.eval_shape`` (nothing allocated).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from benchmarks.trees import resnet50_shapes

FREQUENCY = 10
# A few ResNet-50 shapes (HWIO convs, a BatchNorm vector, the classifier): the matrices
# SOAP rotates and Shampoo blocks, and the vectors both leave to the first-order rule.
RESNET_KEYS = ("conv1/w", "layer1/0/conv2/w", "layer3/0/conv2/w", "layer4/0/bn3/scale", "fc/w")
QUICK_RESNET_KEYS = ("layer1/0/conv1/w", "layer1/0/conv2/w", "layer1/0/bn1/scale", "fc/b")


def optimizers() -> dict[str, tuple[Callable[[], Any], dict[str, int]]]:
    """name -> (factory, the step counts of the paths to time)."""
    return {
        "adam": (lambda: gradtx.adam(1e-3), {"ordinary": 1}),
        "soap": (
            lambda: gradtx.soap(3e-3, precondition_frequency=FREQUENCY),
            {"ordinary": 1, "refresh (QR)": FREQUENCY, "first (eigh)": 0},
        ),
        "shampoo": (
            lambda: gradtx.shampoo(1e-3, precondition_frequency=FREQUENCY, start_preconditioning_step=1),
            {"ordinary": 1, "refresh (roots)": FREQUENCY - 1},
        ),
    }


def tree(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for k, s in shapes.items()}


def state_bytes(tx, params) -> int:
    shapes = jax.eval_shape(tx.init, params)
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes))


def median_seconds(fn: Callable[[], Any], rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(shapes: dict[str, tuple[int, ...]], rounds: int, warmup: int) -> list[tuple[str, int, dict[str, float]]]:
    """Per optimizer: state bytes and the median time of each path (seconds)."""
    params, grads = tree(shapes, 0), tree(shapes, 1)
    rows = []
    for name, (make, paths) in optimizers().items():
        tx = make()

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return gradtx.apply_updates(p, u), s

        state = tx.init(params)
        compiled = jax.jit(step).lower(params, state, grads).compile()
        times = {}
        for path, count in paths.items():
            at = state._replace(count=jnp.asarray(count, jnp.int32))
            times[path] = median_seconds(lambda at=at, f=compiled: f(params, at, grads), rounds, warmup)
        rows.append((name, state_bytes(tx, params), times))
    return rows


def table(title: str, shapes: dict[str, tuple[int, ...]], rounds: int, warmup: int) -> str:
    n = sum(math.prod(s) for s in shapes.values())
    rows = measure(shapes, rounds, warmup)
    adam_bytes, adam_ms = rows[0][1], rows[0][2]["ordinary"] * 1e3
    out = [
        f"{title}: {len(shapes)} leaves, {n:,} float32 params ({jax.devices()[0].device_kind})",
        "| optimizer | state bytes | x adam | path | step ms (median) | x adam's step |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name, nbytes, times in rows:
        for i, (path, seconds) in enumerate(times.items()):
            head = f"| {name} | {nbytes:,} | {nbytes / adam_bytes:.2f} |" if i == 0 else "| | | |"
            out.append(f"{head} {path} | {seconds * 1e3:.2f} | {seconds * 1e3 / adam_ms:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preconditioned", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer rounds (< 20 s on a CPU)")
    args = parser.parse_args()
    side, keys, rounds, warmup = (256, QUICK_RESNET_KEYS, 3, 1) if args.quick else (1024, RESNET_KEYS, 3, 1)
    resnet = resnet50_shapes()
    print(f"precondition_frequency={FREQUENCY}; SOAP's and Shampoo's other arguments at their defaults\n")
    print(table(f"one {side} x {side} matrix", {"w": (side, side)}, rounds, warmup))
    print()
    print(table("ResNet-50 shapes", {k: resnet[k] for k in keys}, rounds, warmup))


if __name__ == "__main__":
    main()
