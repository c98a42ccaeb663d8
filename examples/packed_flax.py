"""A Flax train step on the packed layout: params and Adam's state live in one contiguous
buffer per dtype; the model sees its usual tree through ``packing.unpack`` (static
slices, free inside jit) and the optimizer runs on the flat buffers with
``gradtx.update_and_apply`` (params and state donated; with XLA:CPU's sibling
multi-output fusion, turned on first thing below, one loop over each buffer per step).

    python examples/packed_flax.py [--steps N]

It trains the same MLP twice, on the tree and packed, and prints the largest difference
between the two sets of params after the first step (zero, or an ulp where XLA orders a
reduction differently) and after the last (float32 training amplifies ulps: Adam divides
by the root of tiny second moments, so expect ~1e-2 after 100 steps; the optimizer
itself gives the same numbers on both layouts to an ulp, see
tests/test_performance_layouts.py and tests/test_fused_step.py).
"""

from __future__ import annotations

import gzip
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


def load(n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` MNIST test images (synthetic ones when the IDX files are missing)."""
    try:
        with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
        with gzip.open(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (n, 784)), rng.integers(0, 10, n)
    return x.astype(np.float32) / 255.0, y.astype(np.int32)


model = MLP()
tx = gradtx.adam(1e-3)


def loss_fn(params_tree, x, y):
    logits = model.apply(params_tree, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_packed_step(packing: gradtx.Packing):
    apply = gradtx.update_and_apply(tx)

    def step(packed, opt_state, x, y):
        # The gradient is taken with respect to the packed buffers: one gradient buffer
        # per dtype, laid out like the params.
        loss, grads = jax.value_and_grad(lambda p: loss_fn(packing.unpack(p), x, y))(packed)
        packed, opt_state = apply(packed, opt_state, grads)
        return packed, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def _tree_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return gradtx.apply_updates(params, updates), opt_state, loss


tree_step = jax.jit(_tree_step, donate_argnums=(0, 1))  # the same step on the usual tree


def _max_diff(packing, packed, tree) -> float:
    return max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(packing.unpack(packed)), jax.tree.leaves(tree)))


def main(steps: int = 100, batch: int = 64) -> None:
    print(f"XLA fuses sibling outputs: {gradtx.fuses_sibling_outputs()}")
    x, y = load()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))
    packing = gradtx.Packing(params)
    print(packing)

    packed = packing.pack(params)
    packed_state = tx.init(packed)
    packed_step = make_packed_step(packing)
    tree_params, tree_state = jax.tree.map(jnp.copy, params), tx.init(params)

    for i in range(steps):
        lo = (i * batch) % (len(x) - batch)
        xb, yb = x[lo:lo + batch], y[lo:lo + batch]
        packed, packed_state, loss = packed_step(packed, packed_state, xb, yb)
        tree_params, tree_state, tree_loss = tree_step(tree_params, tree_state, xb, yb)
        if i == 0:
            print(f"largest |packed - tree| after one step: {_max_diff(packing, packed, tree_params):.3g}")
        if i % 25 == 0 or i == steps - 1:
            print(f"step {i:4d}  loss packed {float(loss):.4f}  tree {float(tree_loss):.4f}")

    print(f"largest |packed - tree| after {steps} steps: {_max_diff(packing, packed, tree_params):.3g}")
    print("per-leaf norms (packed):",
          {jax.tree_util.keystr(k): round(float(v), 3)
           for k, v in jax.tree_util.tree_flatten_with_path(packing.per_leaf_tree(packing.leaf_norms(packed)))[0]})


if __name__ == "__main__":
    import argparse

    gradtx.enable_cpu_multi_output_fusion()  # before JAX's first computation
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    main(parser.parse_args().steps)
