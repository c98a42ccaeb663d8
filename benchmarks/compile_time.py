"""Compile time of Adam on ResNet-50's 161 shapes, gradtx against optax, alternating:

    python -m benchmarks.compile_time [--rounds 5]

Each round builds a fresh optimizer and jitted step for each library and times
``lower`` (trace + StableHLO) and ``compile`` (XLA) apart; medians over rounds, and the
median of the per-round ratios. XLA's default flags (no sibling-fusion switch), as a user
of either library gets them. The main runner times each compile once, in a fixed order;
this one is for the compile-time target.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gradtx
from benchmarks.steps import plain_step
from benchmarks.trees import numpy_tree


def time_compile(make_tx, params, grads) -> tuple[float, float]:
    tx = make_tx()
    state = tx.init(params)
    t0 = time.perf_counter()
    lowered = jax.jit(plain_step(tx), donate_argnums=(0, 1)).lower(params, state, grads)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_time", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    params = jax.tree.map(jnp.asarray, numpy_tree("resnet50", 0))
    grads = jax.tree.map(jnp.asarray, numpy_tree("resnet50", 1, 1e-2))
    libs = {"optax": lambda: optax.adam(1e-3), "gradtx": lambda: gradtx.adam(1e-3)}
    time_compile(libs["optax"], params, grads)  # JAX's own first-use costs, untimed
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in libs}
    for _ in range(args.rounds):
        for name, make in libs.items():
            times[name].append(time_compile(make, params, grads))
    print("| Adam, ResNet-50 shapes | lower s | XLA compile s | total s |\n|---|---|---|---|")
    for name, ts in times.items():
        lower, comp = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        total = statistics.median(sum(t) for t in ts)
        print(f"| {name} | {lower:.3f} | {comp:.3f} | {total:.3f} |")
    ratio = [sum(g) / sum(o) for g, o in zip(times["gradtx"], times["optax"])]
    print(f"\ngradtx / optax total, per round: min {min(ratio):.3f}, median {statistics.median(ratio):.3f}, "
          f"max {max(ratio):.3f} ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
