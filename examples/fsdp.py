"""Data parallelism with the optimizer state replicated, sharded (ZeRO-1), and with the params
sharded too (FSDP), on a 784-1024-1024-10 MLP over 8 devices.

    python -m examples.fsdp            # 8 simulated CPU devices unless XLA_FLAGS says otherwise
    python -m examples.fsdp --steps 5

For each layout it prints the optimizer state's bytes on one device (from
``addressable_shards``) against its total, the compiled step's ``memory_analysis()`` (bytes
of arguments, outputs and temporaries on one device), the collectives in the compiled HLO,
and the largest difference of the params from the single-device run after the last step
(relative to each leaf's largest value). The three layouts differ in where the state lives, not in the numbers.

The code that matters is three lines per layout:

- replicated: ``state = tx.init(params)`` with replicated params;
- ZeRO-1: ``tx = gradtx.zero1(tx, mesh, "data")``, params replicated;
- FSDP: ``params = jax.device_put(params, gradtx.fsdp_sharding(params, mesh, "data"))`` and
  ``state = gradtx.sharded_init(tx, params)`` (the state placed like the params), with the
  jitted step's in/out shardings from ``gradtx.state_sharding(tx, params)``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from typing import Any, Callable

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx

SIZES = (784, 1024, 1024, 10)
BATCH = 64
EPS = 1e-4  # adam divides by |g| + eps: the default 1e-8 amplifies the rounding of near-zero gradients
COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")


def init_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        f"layer{i}": {"w": (rng.normal(size=(m, n)) / np.sqrt(m)).astype(np.float32), "b": np.zeros(n, np.float32)}
        for i, (m, n) in enumerate(itertools.pairwise(SIZES))
    }


def loss(params, x, y) -> jax.Array:
    for i in range(len(params)):
        x = x @ params[f"layer{i}"]["w"] + params[f"layer{i}"]["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return jnp.mean(cross_entropy(x, y))


def cross_entropy(logits, labels) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def batches(steps: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(BATCH, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], BATCH).astype(np.int32))
        for _ in range(steps)
    ]


def train_step(tx) -> Callable:
    def step(params, state, x, y):
        grads = jax.grad(loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return step


def bytes_on(tree: Any, device) -> int:
    return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards if s.device == device)


def collectives(hlo: str) -> dict[str, int]:
    return {op: n for op in COLLECTIVES if (n := len(re.findall(rf"\b{op}(?:-start)?\(", hlo)))}


def run(layout: str, make_tx: Callable, mesh, data, want) -> dict:
    """Train with one layout; what it costs and how far it is from the single-device run."""
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    params = init_params()
    if layout == "replicated":
        tx = make_tx()
        params = jax.device_put(params, replicated)
        state = tx.init(params)
        step = jax.jit(train_step(tx))
    elif layout == "zero1":
        tx = gradtx.zero1(make_tx(), mesh, "data")
        params = jax.device_put(params, replicated)
        state = tx.init(params)
        step = jax.jit(train_step(tx))
    else:  # fsdp
        tx = make_tx()
        shardings = gradtx.fsdp_sharding(params, mesh, "data")
        params = jax.device_put(params, shardings)
        state = gradtx.sharded_init(tx, params)
        state_shardings = gradtx.state_sharding(tx, params)
        step = jax.jit(
            train_step(tx),
            in_shardings=(shardings, state_shardings, batch, batch),
            out_shardings=(shardings, state_shardings),
        )
    device = jax.devices()[0]
    x0, y0 = (jax.device_put(a, batch) for a in data[0])
    compiled = step.lower(params, state, x0, y0).compile()
    for x, y in data:
        params, state = step(params, state, jax.device_put(x, batch), jax.device_put(y, batch))
    memory = compiled.memory_analysis()
    # the largest difference in each leaf, relative to the leaf's largest value
    diff = max(
        float(np.max(np.abs(np.asarray(a) - b)) / max(float(np.max(np.abs(b))), 1e-30))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want))
    )
    return {
        "layout": layout,
        "state_bytes_device0": bytes_on(state, device),
        "state_bytes_total": sum(x.nbytes for x in jax.tree.leaves(state)),
        "params_bytes_device0": bytes_on(params, device),
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "collectives": collectives(compiled.as_text()),
        "max_rel_diff": diff,
    }


def main(steps: int = 3) -> list[dict]:
    mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    make_tx = lambda: gradtx.adamw(1e-3, eps=EPS, weight_decay=1e-4)  # noqa: E731
    data = batches(steps)
    params, tx = init_params(), make_tx()
    state, single = tx.init(params), jax.jit(train_step(tx))
    for x, y in data:
        params, state = single(params, state, x, y)
    rows = [run(layout, make_tx, mesh, data, params) for layout in ("replicated", "zero1", "fsdp")]
    mib = 2**20
    print(f"{SIZES} MLP, adamw, {len(jax.devices())} devices ({jax.devices()[0].platform}), {steps} steps")
    print(f"{'layout':<11}{'state/dev MiB':>14}{'state MiB':>10}{'params/dev':>11}{'args MiB':>9}{'out MiB':>8}"
          f"{'temp MiB':>9}  {'max rel diff':>12}  collectives")
    for r in rows:
        print(f"{r['layout']:<11}{r['state_bytes_device0'] / mib:>14.2f}{r['state_bytes_total'] / mib:>10.2f}"
              f"{r['params_bytes_device0'] / mib:>11.2f}{r['arguments'] / mib:>9.2f}{r['outputs'] / mib:>8.2f}"
              f"{r['temporaries'] / mib:>9.2f}  {r['max_rel_diff']:>12.1e}  "
              + ", ".join(f"{k} x{n}" for k, n in r["collectives"].items()))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    main(parser.parse_args().steps)
