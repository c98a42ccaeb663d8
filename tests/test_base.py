"""The contract: GradientTransformation, identity, stateless, apply_updates, and
structural compatibility with optax (reference: optax 0.2.8)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.registry import of_kind

PARAMS = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([0.5, -1.0, 2.0])}
GRADS = jax.tree.map(lambda p: 0.3 * p - 0.2, PARAMS)


def _close(a, b, rtol=1e-6):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=0)


def test_transformation_is_a_two_field_named_tuple_like_optax():
    tx = gradtx.sgd(0.1)
    init, update = tx  # unpacks like optax's (optax.chain itself does this)
    assert tx._fields == optax.GradientTransformation._fields == ("init", "update")
    assert init is tx.init and update is tx.update


def test_identity_and_stateless():
    updates, state = gradtx.identity().update(GRADS, gradtx.identity().init(PARAMS))
    assert state == gradtx.EmptyState()
    _close(updates, GRADS)
    double_plus_params = gradtx.stateless(lambda u, p: jax.tree.map(lambda g, q: 2 * g + q, u, p))
    updates, _ = double_plus_params.update(GRADS, double_plus_params.init(PARAMS), PARAMS)
    _close(updates, jax.tree.map(lambda g, p: 2 * g + p, GRADS, PARAMS))


def test_apply_updates_keeps_param_dtype_and_passes_none():
    params = {"bf": jnp.ones(3, jnp.bfloat16), "f32": jnp.ones(3), "none": None}
    updates = {"bf": jnp.full(3, 0.5, jnp.float32), "f32": jnp.full(3, 0.25), "none": None}
    new = gradtx.apply_updates(params, updates)
    assert new["bf"].dtype == jnp.bfloat16 and new["f32"].dtype == jnp.float32
    assert new["none"] is None
    np.testing.assert_array_equal(new["f32"], 1.25)


def _run(tx, steps=5):
    state, params = tx.init(PARAMS), PARAMS
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.sin(p + i), params)
        updates, state = tx.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    return params


def test_gradtx_stages_inside_optax_chain():
    """optax.chain(gradtx stages) == optax.adam (reference: optax)."""
    mixed = optax.chain(gradtx.adam_direction(), gradtx.scale_by_learning_rate(1e-2))
    _close(_run(mixed), _run(optax.adam(1e-2)))


def test_optax_stages_inside_gradtx_chain():
    """gradtx.chain(optax stages) == gradtx.adam (reference: gradtx itself, optax parity
    tested elsewhere); plain optax stages get no extra keyword arguments."""
    mixed = gradtx.chain(optax.scale_by_adam(), optax.scale(-1e-2))
    _close(_run(mixed), _run(gradtx.adam(1e-2)))
    updates, _ = mixed.update(GRADS, mixed.init(PARAMS), PARAMS, value=jnp.array(1.0))
    assert jax.tree.structure(updates) == jax.tree.structure(PARAMS)


def test_chain_passes_extra_args_to_stages_that_take_them():
    seen = {}

    def update_fn(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    tx = gradtx.chain(gradtx.GradientTransformation(lambda p: gradtx.EmptyState(), update_fn), gradtx.scale(2.0))
    tx.update(GRADS, tx.init(PARAMS), PARAMS, loss=3.0)
    assert seen == {"loss": 3.0}


def test_optax_tree_utilities_find_gradtx_state_fields():
    """State fields carry optax's names: optax.tree.get finds mu, nu, trace."""
    state = gradtx.adam(1e-3).init(PARAMS)
    for name in ("mu", "nu"):
        assert jax.tree.structure(optax.tree.get(state, name)) == jax.tree.structure(PARAMS)
    # one step count, read by both bias corrections
    assert int(optax.tree.get(state, "count")) == 0
    momentum_state = gradtx.sgd(0.1, momentum=0.9).init(PARAMS)
    _close(optax.tree.get(momentum_state, "trace"), jax.tree.map(jnp.zeros_like, PARAMS))
    as_bf16 = optax.tree.map_params(gradtx.adam(1e-3).init, lambda x: x.astype(jnp.bfloat16), state)
    assert optax.tree.get(as_bf16, "mu")["w"].dtype == jnp.bfloat16


def test_optax_inject_hyperparams_wraps_gradtx_optimizers():
    """inject_hyperparams(gradtx.adam) == inject_hyperparams(optax.adam), learning rate
    changed between steps under jit (reference: optax)."""
    def run(factory):
        tx = optax.inject_hyperparams(factory)(learning_rate=1e-2, b1=0.8)
        state, params = tx.init(PARAMS), PARAMS
        update = jax.jit(tx.update)
        for i in range(10):
            state.hyperparams["learning_rate"] = jnp.asarray(1e-2 / (1 + i))
            updates, state = update(jax.tree.map(jnp.cos, params), state, params)
            params = gradtx.apply_updates(params, updates)
        return params

    _close(run(gradtx.adam), run(optax.adam))


def test_step_counts_saturate_instead_of_wrapping():
    top = jnp.iinfo(jnp.int32).max
    tx = gradtx.adam(1e-3)
    _, state = tx.update(GRADS, tx.init(PARAMS)._replace(count=jnp.asarray(top, jnp.int32)))
    assert int(state.count) == top


PRIMITIVES = [e.obj for e in of_kind("primitive")] + [gradtx.chain, gradtx.fork]
OPTIMIZERS = [e.obj for e in of_kind("optimizer")]


@pytest.mark.parametrize("fn", PRIMITIVES, ids=lambda f: f.__name__)
def test_each_primitive_docstring_opens_with_its_formula(fn):
    first_line = fn.__doc__.strip().splitlines()[0]
    assert first_line.startswith("``") and ("->" in first_line or "=" in first_line), first_line


@pytest.mark.parametrize("fn", OPTIMIZERS, ids=lambda f: f.__name__)
def test_each_optimizer_docstring_has_rule_chain_and_example(fn):
    doc = fn.__doc__
    # the params' update: ``p = ... lr ...``, or, in a paper's own letters, ``x = ...`` /
    # ``p_t = ...`` (the learning-rate-free methods have no ``lr`` in it)
    assert re.search(r"\bp\s+= .*\blr", doc) or re.search(r"^\s+[px](_t)? = ", doc, re.M), "the update rule (p = ...)"
    assert "Chain:" in doc and ">>> " in doc, "the chain it is built from and a runnable example"
