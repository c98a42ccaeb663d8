"""The fast layouts give the numbers of the plain step.

References and tolerances:
- ``update_and_apply`` (chunked, fused step) vs ``tx.update`` + ``apply_updates``:
  bitwise equal for every optimizer but Adam. The plain Adam step *recomputes* ``mu``
  and ``nu`` inside the params fusion (where LLVM may contract a multiply-add into an
  FMA, one ulp away from the stored ``mu``); the fused step re-reads the stored values.
  The one-ulp differences grow over 200 steps to ~1e-11 relative: rtol 1e-10 (float64),
  the tolerance of the optax parity tests;
- the packed layout vs the tree: bitwise equal (the same element-wise ops);
- both vs optax over 200 steps in float64: rtol 1e-10, as in the core parity tests;
- per-leaf quantities through the packed view (norms, masks, LAMB's trust ratio) vs
  the same computed on the tree / optax's: rtol 1e-12 (float64; a segment sum adds in
  a different order than ``jnp.sum``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = 200
ADAM_RTOL = 1e-10
CHUNK = 64  # small, so that the test tree has chunked leaves, ragged tails and small leaves

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
    """Leaves that exercise every path: chunked with and without a tail, small, scalar."""
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


def _fused(tx, **kw):
    return jax.jit(gradtx.update_and_apply(tx, chunk_size=CHUNK, **kw), donate_argnums=(0, 1))


def _assert_trees(a, b, rtol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if rtol == 0.0:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=0)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_step_equals_plain_step_and_optax(name):
    make, make_optax = OPTIMIZERS[name]
    params = _params()
    p_plain, s_plain = _run(_plain(make()), params, make().init(params))
    tx = make()
    fresh = jax.tree.map(jnp.copy, params)
    p_fused, s_fused = _run(_fused(tx), fresh, tx.init(fresh))
    _assert_trees(p_fused, p_plain, rtol=ADAM_RTOL if name == "adam" else 0.0)
    _assert_trees(s_fused, s_plain, rtol=ADAM_RTOL if name == "adam" else 0.0)
    p_optax, _ = _run(_plain(make_optax()), params, make_optax().init(params))
    _assert_trees(p_fused, p_optax, rtol=1e-10)


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

    tx = make()
    packed = packing.pack(params)
    p_pf, _ = _run(_fused(tx), packed, tx.init(packed), grad=grad, to_tree=packing.unpack)
    _assert_trees(packing.unpack(p_pf), p_tree, rtol=ADAM_RTOL if name == "adam" else 0.0)

    p_optax, _ = _run(_plain(make_optax()), params, make_optax().init(params))
    _assert_trees(packing.unpack(p_pf), p_optax, rtol=1e-10)


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


def test_fused_refuses_reductions():
    params = _params()
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.sgd(0.1))
    with pytest.raises(gradtx.NotElementwiseError, match="reduce_sum"):
        _fused(tx)(params, tx.init(params), params)
    packing = gradtx.Packing(params)
    lamb_like = gradtx.chain(gradtx.adam(0.01), packing.scale_by_trust_ratio())
    packed = packing.pack(params)
    with pytest.raises(gradtx.NotElementwiseError):
        gradtx.update_and_apply(lamb_like, chunk_size=CHUNK)(packed, lamb_like.init(packed), packed)


def test_no_recompilation_and_no_full_copies():
    params = _params()
    tx = gradtx.adam(0.01)
    step = _fused(tx)
    p, s = _run(step, params, tx.init(params), steps=5)
    assert step._cache_size() == 1
    hlo = step.lower(p, s, p).compile().as_text()
    # No copy of a whole chunked leaf inside the loop (that would mean 2 extra passes).
    assert not re.search(r"= f64\[(576|331)\]\{0\} copy\(", hlo)


def test_chunk_size_is_checked():
    with pytest.raises(ValueError, match="chunk_size"):
        gradtx.update_and_apply(gradtx.sgd(0.1), chunk_size=0)
