"""The packed layout gives the numbers of the plain step on the tree.

References and tolerances (``update_and_apply`` on the packed layout: test_fused_step):
- the packed layout vs the tree: bitwise equal (the same element-wise ops), but Adam,
  where XLA may contract a multiply-add into an FMA in one layout and not the other (one
  ulp, grown over 200 steps to ~1e-11 relative: rtol 1e-10, float64);
- vs optax over 200 steps in float64: rtol 1e-10, as in the core parity tests;
- per-leaf quantities through the packed view (norms, masks, LAMB's trust ratio) vs
  the same computed on the tree / optax's: rtol 1e-12 (float64; a segment sum adds in
  a different order than ``jnp.sum``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 200
ADAM_RTOL = 1e-10

OPTIMIZERS = {
    "sgd": (lambda: gradtx.sgd(0.05), lambda: optax.sgd(0.05)),
    "momentum": (lambda: gradtx.sgd(0.05, momentum=0.9), lambda: optax.sgd(0.05, momentum=0.9)),
    "nesterov": (lambda: gradtx.sgd(0.05, momentum=0.9, nesterov=True),
                 lambda: optax.sgd(0.05, momentum=0.9, nesterov=True)),
    "rmsprop": (lambda: gradtx.rmsprop(0.01), lambda: optax.rmsprop(0.01)),
    "adagrad": (lambda: gradtx.adagrad(0.1), lambda: optax.adagrad(0.1)),
    "adadelta": (lambda: gradtx.adadelta(1.0), lambda: optax.adadelta(1.0)),
    "adam": (lambda: gradtx.adam(0.01), lambda: optax.adam(0.01)),
}


def _params():
    """Leaves of several sizes and ranks, and a scalar."""
    rng = np.random.default_rng(0)
    shapes = {"big": (9, 64), "ragged": (331,), "mid": (5, 50), "small": (3, 2), "scalar": ()}
    return {k: jnp.asarray(rng.normal(size=s)) for k, s in shapes.items()}


def _grad(params, t):
    """A deterministic gradient: the quadratic pull to 1 plus a step-dependent wobble."""
    return jax.tree.map(lambda p: (p - 1.0) + 0.1 * jnp.sin(t * (1.0 + p)), params)


def _plain(tx):
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s
    return jax.jit(step)


def _run(step, params, state, steps=STEPS, grad=_grad, to_tree=lambda p: p):
    for t in range(steps):
        params, state = step(params, state, grad(to_tree(params), float(t)))
    return params, state


def _assert_trees(a, b, rtol=0.0):
    """Leaf by leaf (the packed and the tree layouts have other containers): bitwise, or
    to ``rtol``."""
    if rtol == 0.0:
        chex.assert_trees_all_equal(jax.tree.leaves(a), jax.tree.leaves(b))
    else:
        chex.assert_trees_all_close(jax.tree.leaves(a), jax.tree.leaves(b), rtol=rtol, atol=0)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_packed_layout_equals_tree(name):
    make, make_optax = OPTIMIZERS[name]
    params = _params()
    packing = gradtx.Packing(params)
    p_tree, _ = _run(_plain(make()), params, make().init(params))

    grad = lambda tree, t: packing.pack(_grad(tree, t))  # noqa: E731
    packed = packing.pack(params)
    p_packed, _ = _run(_plain(make()), packed, make().init(packed), grad=grad, to_tree=packing.unpack)
    _assert_trees(packing.unpack(p_packed), p_tree, rtol=ADAM_RTOL if name == "adam" else 0.0)

    p_optax, _ = _run(_plain(make_optax()), params, make_optax().init(params))
    _assert_trees(packing.unpack(p_packed), p_optax, rtol=1e-10)


def test_packed_per_leaf_norms_equal_tree_norms():
    params = _params()
    packing = gradtx.Packing(params)
    norms = packing.per_leaf_tree(jax.jit(packing.leaf_norms)(packing.pack(params)))
    expected = jax.tree.map(jnp.linalg.norm, params)
    _assert_trees(norms, expected, rtol=1e-12)


def test_packed_mask_equals_tree_mask():
    params = _params()
    mask = {k: k in ("big", "ragged", "scalar") for k in params}
    packing = gradtx.Packing(params)
    tree_tx = gradtx.chain(gradtx.add_decayed_weights(0.1, mask=mask), gradtx.sgd(0.05, momentum=0.9))
    p_tree, _ = _run(_plain(tree_tx), params, tree_tx.init(params))
    packed_tx = gradtx.chain(packing.masked(gradtx.add_decayed_weights(0.1), mask), gradtx.sgd(0.05, momentum=0.9))
    packed = packing.pack(params)
    p_packed, _ = _run(_plain(packed_tx), packed, packed_tx.init(packed),
                       grad=lambda tree, t: packing.pack(_grad(tree, t)), to_tree=packing.unpack)
    _assert_trees(packing.unpack(p_packed), p_tree)
    # A mask given as a function of the params is the same mask.
    as_fn = packing.mask(lambda p: jax.tree.map(lambda _: True, p))
    assert all(m.all() for m in as_fn.values())


def test_packed_trust_ratio_equals_optax():
    params = _params()
    packing = gradtx.Packing(params)
    updates = _grad(params, 3.0)
    expected, _ = optax.scale_by_trust_ratio().update(updates, optax.EmptyState(), params)
    tx = packing.scale_by_trust_ratio()
    got, _ = jax.jit(tx.update)(packing.pack(updates), tx.init(None), packing.pack(params))
    _assert_trees(packing.unpack(got), expected, rtol=1e-12)
