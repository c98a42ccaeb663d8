"""Muon's step: ``gradtx.muon`` against ``optax.contrib.muon``, jitted with params and state
donated, median of interleaved rounds after warm-up (``benchmarks.timing``).

Trees: one 4096 x 4096 matrix (Newton-Schulz dominates), ResNet-50's shapes with optax's
default labels (the 2048 x 1000 classifier is Muon's, convs and BatchNorm Adam's), and
ResNet-50 with every conv kernel as a matrix ``(kh * kw * c_in, c_out)`` (all Muon's).

    python -m benchmarks.muon            # the full table (minutes on a CPU: 4096^3 matrix products)
    python -m benchmarks.muon --quick    # small sizes, < 20 s
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

import gradtx
from benchmarks.steps import jax_candidate, plain_step
from benchmarks.timing import interleave, ratios
from benchmarks.trees import resnet50_shapes


def _fill(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, jax.Array]:
    """Deterministic float32 leaves, different per seed (a cheap pattern, not a PRNG)."""
    out = {}
    for i, (k, shape) in enumerate(shapes.items()):
        n = math.prod(shape)
        base = np.sin(np.arange(n, dtype=np.float32) * (0.37 + 0.01 * seed) + i)
        out[k] = jnp.asarray(base.reshape(shape))
    return out


def trees(quick: bool) -> dict[str, dict[str, tuple[int, ...]]]:
    n = 512 if quick else 4096
    resnet = resnet50_shapes()
    if quick:  # the stem and the first stage only: the same kinds of leaves, 1% of the floats
        resnet = {k: s for k, s in resnet.items() if k.startswith(("conv1", "bn1", "layer1"))}
    as_matrices = {k: (math.prod(s[:-1]), s[-1]) if len(s) == 4 else s for k, s in resnet.items()}
    return {f"{n}x{n}": {"w": (n, n)}, "resnet50 (default labels)": resnet, "resnet50 (convs as matrices)": as_matrices}


def time_tree(name: str, shapes: dict, rounds: int) -> dict:
    params, grads = _fill(shapes, 0), _fill(shapes, 1)
    candidates, log = [], {}
    for label, tx in (("gradtx", gradtx.muon(1e-3)), ("optax", optax.contrib.muon(1e-3))):
        state = tx.init(params)
        candidates.append(jax_candidate(label, plain_step(tx), jax.tree.map(jnp.copy, params), state, grads, 0.0, log))
    interleave(candidates, rounds, warmup=1, too_slow_s=float("inf"))
    gx, ox = candidates
    return {"tree": name, "gradtx_ms": 1e3 * gx.median, "optax_ms": 1e3 * ox.median,
            "ratio": ratios(gx, ox)["median"], "compile_s": sum(v["compile_s"] for v in log.values())}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 20 s)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per tree")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    print("| tree | gradtx ms | optax.contrib ms | gradtx / optax (median of interleaved rounds) |")
    print("|---|---:|---:|---:|")
    for i, (name, shapes) in enumerate(trees(args.quick).items()):
        big = i == 0 and not args.quick  # the 4096 x 4096 step takes seconds on a CPU
        rounds = args.rounds or (2 if big else 5)
        row = time_tree(name, shapes, rounds)
        rows.append(row)
        print(f"| {name} | {row['gradtx_ms']:.2f} | {row['optax_ms']:.2f} | {row['ratio']:.3f} |", flush=True)
    elapsed = time.perf_counter() - t0
    print(f"\n({jax.devices()[0].platform}, ratio = gradtx / optax per round, median; {elapsed:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
