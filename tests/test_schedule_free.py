"""Schedule-free learning (``gradtx/schedule_free.py``): what the registry's parity grids do
not say.

- the authors' update rules (``SGDScheduleFreeReference`` and ``AdamWScheduleFreeReference``
  of the ``schedulefree`` package, the paper's Algorithm 1) in numpy float64, with warmup,
  weight decay and Adam's bias correction, where optax.contrib 0.2.8 departs from them;
- optax.contrib's ``schedule_free`` wrapper composed with the paper's step size (read one
  step ahead, as optax reads it): the same numbers as gradtx's optimizers and wrapper;
- optax's departures themselves (its warmup is one step late, ``warmup_steps=0`` never
  moves, its AdamW weights the average without the bias correction);
- ``schedule_free_eval_params`` against optax's and the closed form ``x = (y - (1 - b1) z) / b1``;
- wrong interpolation formulas (mutants) that fail float32's rtol 1e-5, and edge cases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close, compare_states, parity_inputs, run_optax, run_steps

import gradtx
from gradtx.base import UpdateError
from gradtx.rows._entry import parity_schedule
from gradtx.schedule_free import _adam_step_size, _warmed_up
from gradtx.transform import Field, primitive

N_STEPS = 200


@pytest.fixture
def x64():
    """float64 for this test only."""
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64


# --- the authors' rules in numpy float64 ---------------------------------------------------


def _schedule(k: int, warmup_steps) -> float:
    """The package's ``sched``: ``(k + 1) / warmup_steps`` during warmup, else 1 (``k`` from 0)."""
    return (k + 1) / warmup_steps if warmup_steps and k < warmup_steps else 1.0


def reference(params, grads, *, adam: bool, lr, warmup_steps=None, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
              weight_lr_power=2.0):
    """``SGDScheduleFreeReference`` (``adam=False``) or ``AdamWScheduleFreeReference``
    (``r = 0``), step by step in numpy float64. Returns the final ``(y, x, z)`` leaf lists."""
    y = [np.asarray(p, np.float64).copy() for p in jax.tree.leaves(params)]
    z, x, v = [a.copy() for a in y], [a.copy() for a in y], [np.zeros_like(a) for a in y]
    lr_max, weight_sum = -1.0, 0.0
    for k, g_tree in enumerate(grads):
        gamma = lr * _schedule(k, warmup_steps) * (np.sqrt(1 - b2 ** (k + 1)) if adam else 1.0)
        lr_max = max(gamma, lr_max)
        weight = lr_max**weight_lr_power
        weight_sum += weight
        c = weight / weight_sum if weight_sum else 0.0
        for i, g in enumerate(jax.tree.leaves(g_tree)):
            g = np.asarray(g, np.float64)
            if adam:
                z[i] -= gamma * weight_decay * y[i]
                v[i] = b2 * v[i] + (1 - b2) * g * g
                z[i] -= gamma * g / (np.sqrt(v[i]) + eps)
            else:
                z[i] -= gamma * (g + weight_decay * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
            y[i] = b1 * x[i] + (1 - b1) * z[i]
    return y, x, z


REFERENCE_CASES = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, warmup_steps=20, b1=0.8, weight_decay=0.1, weight_lr_power=1.0)),
    ("sgd", dict(lr=0.2, warmup_steps=0, b1=0.95)),
    ("adamw", dict(lr=0.01)),
    ("adamw", dict(lr=0.01, warmup_steps=20, b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.1, weight_lr_power=1.0)),
]


def gradtx_of(kind: str, lr, **kw):
    """The gradtx optimizer of a reference case (the reference's argument names)."""
    return gradtx.schedule_free_adamw(lr, **kw) if kind == "adamw" else gradtx.schedule_free_sgd(lr, **kw)


def _ids(cases):
    return [f"{k}({','.join(f'{a}={v}' for a, v in kw.items())})" for k, kw in cases]


@pytest.mark.parametrize("kind, kw", REFERENCE_CASES, ids=_ids(REFERENCE_CASES))
def test_matches_the_authors_reference(kind, kw, x64):
    """Reference: the authors' ``SGDScheduleFreeReference`` / ``AdamWScheduleFreeReference``
    in numpy float64, 200 steps: ``y`` (the params), ``x`` (``schedule_free_eval_params``) and
    ``z`` agree to rtol 1e-10."""
    params, grads = parity_inputs("float64")
    got = run_steps(gradtx_of(kind, **kw), params, grads, jit=True)
    y, x, z = reference(params, grads, adam=kind == "adamw", **kw)
    assert_trees_close(jax.tree.leaves(got.params), y, 1e-10, what="y")
    assert_trees_close(jax.tree.leaves(gradtx.schedule_free_eval_params(got.state, got.params)), x, 1e-10, what="x")
    assert_trees_close(jax.tree.leaves(got.state.z), z, 1e-10, what="z")


# --- optax.contrib.schedule_free with the paper's step size --------------------------------


def _ahead(gamma):
    """``gamma`` for optax's wrapper, which reads its schedule at ``step_count = count + 1``."""
    return (lambda step_count: gamma(step_count - 1)) if callable(gamma) else gamma


def optax_sgd_twin(lr, warmup_steps=None, b1=0.9, weight_decay=None, weight_lr_power=2.0):
    gamma = _warmed_up(lr, warmup_steps)
    base = optax.sgd(gamma)
    if weight_decay is not None:
        base = optax.chain(optax.add_decayed_weights(weight_decay), base)
    return optax.contrib.schedule_free(base, _ahead(gamma), b1=b1, weight_lr_power=weight_lr_power)


def optax_adamw_twin(lr, warmup_steps=None, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, weight_lr_power=2.0):
    gamma = _adam_step_size(lr, warmup_steps, b2)
    base = optax.chain(
        optax.scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=False),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(gamma),
    )
    return optax.contrib.schedule_free(base, _ahead(gamma), b1=b1, weight_lr_power=weight_lr_power)


S = parity_schedule
COMPOSITIONS = [
    ("schedule_free_sgd(warmup,decay)", lambda: gradtx.schedule_free_sgd(0.05, 20, 0.8, 0.1, 1.0),
     lambda: optax_sgd_twin(0.05, 20, 0.8, 0.1, 1.0)),
    ("schedule_free_sgd(warmup_steps=0)", lambda: gradtx.schedule_free_sgd(0.2, 0, 0.95),
     lambda: optax_sgd_twin(0.2, 0, 0.95)),
    ("schedule_free_adamw", lambda: gradtx.schedule_free_adamw(0.01), lambda: optax_adamw_twin(0.01)),
    ("schedule_free_adamw(warmup,decay)", lambda: gradtx.schedule_free_adamw(0.01, 20, 0.8, 0.95, 1e-3, 0.1, 1.0),
     lambda: optax_adamw_twin(0.01, 20, 0.8, 0.95, 1e-3, 0.1, 1.0)),
    ("schedule_free(sgd(schedule))", lambda: gradtx.schedule_free(gradtx.sgd(S), S, b1=0.8),
     lambda: optax.contrib.schedule_free(optax.sgd(S), _ahead(S), b1=0.8)),
    ("schedule_free(adam(b1=0))",
     lambda: gradtx.schedule_free(gradtx.adam(1e-2, b1=0.0, eps=1e-3), 1e-2, weight_lr_power=1.0),
     lambda: optax.contrib.schedule_free(optax.adam(1e-2, b1=0.0, eps=1e-3), 1e-2, weight_lr_power=1.0)),
]


@pytest.mark.parametrize("name, gx, ox", COMPOSITIONS, ids=[c[0] for c in COMPOSITIONS])
def test_matches_optax_schedule_free_with_the_papers_step_size(name, gx, ox, precision):
    """Reference: ``optax.contrib.schedule_free`` (0.2.8) around the optax base of the same
    math, its schedule read one step ahead (optax reads it at ``count + 1``), 200 jitted
    steps: params, last updates and every state field agree to rtol 1e-10 (float64) / 1e-5
    (float32); the wrapper's base state field by field."""
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    got, want = run_steps(gx(), params, grads, jit=True), run_optax(ox(), params, grads, jit=True)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    base = {"mu", "nu", "count"} if "base_optimizer_state" in got.state._fields else set()
    compared = compare_states(got.state, want.state, precision.rtol, absent={"step_count", *base})
    assert {"b1", "weight_sum", "max_lr", "z"} <= set(compared)
    if base:
        compare_states(got.state.base_optimizer_state, want.state.base_optimizer_state, precision.rtol)


# --- where optax departs -------------------------------------------------------------------


def test_optax_warmup_is_one_step_late(x64):
    """Closed form of the first step (``x = z``, so ``y`` moves by ``-gamma_1 g``): gradtx's
    ``-lr / warmup_steps * g`` as the authors' (rtol 1e-12); optax.contrib's
    ``schedule_free_sgd`` steps ``z`` with ``gamma_0 = 0``: its first update is exactly 0; and
    with ``warmup_steps=0`` optax's learning rate stays 0 (20 steps: ``z`` exactly the initial
    params, ``y`` to rtol 1e-12), gradtx's equals no warmup (bitwise)."""
    params, grads = parity_inputs("float64")
    first = run_steps(gradtx.schedule_free_sgd(0.1, warmup_steps=4), params, grads[:1], jit=True).updates
    closed_form = jax.tree.map(lambda g: -0.1 / 4 * g, grads[0])
    assert_trees_close(first, closed_form, 1e-12)
    optax_first = run_optax(optax.contrib.schedule_free_sgd(0.1, warmup_steps=4), params, grads[:1], jit=True)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(optax_first.updates))
    optax_zero = run_optax(optax.contrib.schedule_free_sgd(0.1, warmup_steps=0), params, grads[:20], jit=True)
    assert float(optax_zero.state.max_lr) == 0.0  # z never moves, y only by rounding
    assert all(np.all(np.asarray(z) == np.asarray(p)) for z, p in zip(jax.tree.leaves(optax_zero.state.z),
                                                                     jax.tree.leaves(params)))
    assert_trees_close(optax_zero.params, params, 1e-12)
    zero = run_steps(gradtx.schedule_free_sgd(0.1, warmup_steps=0), params, grads[:20], jit=True)
    none = run_steps(gradtx.schedule_free_sgd(0.1), params, grads[:20], jit=True)
    for a, b in zip(jax.tree.leaves(zero.params), jax.tree.leaves(none.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind, kw", [REFERENCE_CASES[1], REFERENCE_CASES[3], REFERENCE_CASES[4]],
                         ids=_ids([REFERENCE_CASES[1], REFERENCE_CASES[3], REFERENCE_CASES[4]]))
def test_optax_departs_from_the_authors_reference(kind, kw, x64):
    """Reference: the authors' rule in numpy float64 (as above), 200 steps: optax.contrib's
    ``schedule_free_sgd`` with warmup and its ``schedule_free_adamw`` (bias correction
    outside the step size) differ from it by more than rtol 1e-3, where gradtx agrees to 1e-10."""
    params, grads = parity_inputs("float64")
    names = dict(lr="learning_rate")
    factory = optax.contrib.schedule_free_adamw if kind == "adamw" else optax.contrib.schedule_free_sgd
    theirs = run_optax(factory(**{names.get(k, k): v for k, v in kw.items()}), params, grads, jit=True)
    y, _, _ = reference(params, grads, adam=kind == "adamw", **kw)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(jax.tree.leaves(theirs.params), y, 1e-3)


# --- schedule_free_eval_params -------------------------------------------------------------


def test_eval_params_matches_optax_and_the_closed_form(x64):
    """References: ``optax.contrib.schedule_free_eval_params`` on optax's state (rtol 1e-10),
    the closed form ``(y - (1 - b1) z) / b1`` in numpy (rtol 1e-12), and the authors' ``x``
    (rtol 1e-10), after 200 steps of ``schedule_free_sgd(0.05, b1=0.8)``; gradtx's function
    reads optax's state too."""
    params, grads = parity_inputs("float64")
    got = run_steps(gradtx.schedule_free_sgd(0.05, b1=0.8), params, grads, jit=True)
    want = run_optax(optax.contrib.schedule_free_sgd(0.05, b1=0.8), params, grads, jit=True)
    x = gradtx.schedule_free_eval_params(got.state, got.params)
    assert_trees_close(x, optax.contrib.schedule_free_eval_params(want.state, want.params), 1e-10)
    assert_trees_close(gradtx.schedule_free_eval_params(want.state, want.params), x, 1e-10)
    closed = jax.tree.map(lambda y, z: (np.asarray(y) - 0.2 * np.asarray(z)) / 0.8, got.params, got.state.z)
    assert_trees_close(x, closed, 1e-12)
    assert_trees_close(jax.tree.leaves(x), reference(params, grads, adam=False, lr=0.05, b1=0.8)[1], 1e-10)


def test_eval_params_refuses_another_state():
    """Reference: the message (a state without ``b1`` and ``z``)."""
    params = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"^gradtx.schedule_free_eval_params: the state has no b1 and z fields"):
        gradtx.schedule_free_eval_params(gradtx.adam(0.1).init(params), params)


# --- mutants of the interpolation ----------------------------------------------------------


def mutant_interpolation(learning_rate, b1, weight_lr_power, *, swap=False, uniform=False, x_is_y=False):
    """``schedule_free_interpolation`` with one term wrong: ``swap`` puts ``b1`` on ``z`` and
    ``1 - b1`` on ``x``; ``uniform`` averages with ``c = 1 / t`` (no learning-rate weights);
    ``x_is_y`` averages ``z`` into ``y`` instead of the recovered ``x``."""

    def apply(updates, state, step):
        lr = jnp.asarray(learning_rate(step.count), state["max_lr"].dtype)
        max_lr = jnp.maximum(state["max_lr"], lr)
        weight = jnp.ones_like(max_lr) if uniform else max_lr**weight_lr_power
        c = weight / (state["weight_sum"] + weight)
        a = 1 - b1 if swap else b1
        z = jax.tree.map(lambda zi, u: zi + u, state["z"], updates)
        x = jax.tree.map(lambda y, zp, zi: (1 - c) * (y if x_is_y else (y - (1 - a) * zp) / a) + c * zi,
                         step.params, state["z"], z)
        out = jax.tree.map(lambda xi, zi, y: a * xi + (1 - a) * zi - y, x, z, step.params)
        return out, {"weight_sum": state["weight_sum"] + weight, "max_lr": max_lr, "z": z}

    def scalar(params):
        return jnp.zeros([], jax.tree.leaves(params)[0].dtype)

    return primitive(apply, {"weight_sum": Field(scalar, False), "max_lr": Field(scalar, False),
                             "z": Field(lambda p: jax.tree.map(jnp.array, p))}, uses_count=True)


GAMMA = _warmed_up(0.05, 20)
MUTANTS = [
    ("b1 and 1 - b1 swapped", dict(swap=True)),
    ("uniform weights c = 1 / t", dict(uniform=True)),
    ("z averaged into y, not x", dict(x_is_y=True)),
]


@pytest.mark.parametrize("what, mutation", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_wrong_interpolations_fail(what, mutation):
    """Negative control against the authors' SGD rule (numpy float64; warmup 20, ``b1=0.8``,
    ``p=1``), 200 steps in float32: the mutant's params differ beyond rtol 1e-5."""
    params, grads = parity_inputs("float32")
    wrong = gradtx.chain(gradtx.scale_by_learning_rate(GAMMA), mutant_interpolation(GAMMA, 0.8, 1.0, **mutation))
    got = run_steps(wrong, params, grads, jit=True)
    y, _, _ = reference(params, grads, adam=False, lr=0.05, warmup_steps=20, b1=0.8, weight_lr_power=1.0)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(jax.tree.leaves(got.params), y, 1e-5, what=what)


def test_right_interpolation_passes_the_mutants_tolerance():
    """Control for the mutants: ``scale_by_learning_rate -> schedule_free_interpolation``
    with the same settings matches the authors' SGD rule to rtol 1e-5 in float32."""
    params, grads = parity_inputs("float32")
    right = gradtx.chain(gradtx.scale_by_learning_rate(GAMMA), gradtx.schedule_free_interpolation(GAMMA, 0.8, 1.0))
    got = run_steps(right, params, grads, jit=True)
    y, _, _ = reference(params, grads, adam=False, lr=0.05, warmup_steps=20, b1=0.8, weight_lr_power=1.0)
    assert_trees_close(jax.tree.leaves(got.params), y, 1e-5)


# --- edge cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [lambda: gradtx.schedule_free_sgd(0.1), lambda: gradtx.schedule_free_adamw(0.1),
                                     lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1)],
                         ids=["sgd", "adamw", "wrapper(sgd)"])
def test_zero_gradients_leave_a_scalar_param_where_it_is(factory, jit):
    """Closed form: with zero gradients ``z`` stays exactly put on a 0-d param (5 steps), and
    ``y`` and ``x`` up to the rounding of ``x = (y - (1 - b1) z) / b1`` (rtol 1e-6: 2 ulp)."""
    tx, params = factory(), jnp.asarray(1.5)
    got = run_steps(tx, params, [jnp.zeros([])] * 5, jit=jit)
    assert float(got.state.z) == 1.5 and got.params.shape == ()
    np.testing.assert_allclose(float(got.params), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(gradtx.schedule_free_eval_params(got.state, got.params)), 1.5, rtol=1e-6)


def test_zero_learning_rate_is_finite_and_still(jit):
    """Closed form: ``learning_rate=0`` gives weights summing to 0, ``c = 0`` (not NaN): after
    3 steps ``z`` is exactly the initial params, ``y`` too up to the rounding of ``x`` (rtol 1e-6)."""
    params, grads = parity_inputs("float32")
    got = run_steps(gradtx.schedule_free_sgd(0.0), params, grads[:3], jit=jit)
    assert float(got.state.weight_sum) == 0.0
    assert all(np.all(np.asarray(z) == np.asarray(p)) for z, p in zip(jax.tree.leaves(got.state.z),
                                                                     jax.tree.leaves(params)))
    assert_trees_close(got.params, params, 1e-6)


def test_state_dtype_and_abstract_init():
    """Reference: the dtypes asked for. ``state_dtype=bfloat16`` keeps ``z`` in bfloat16 while
    updates keep the gradients' float32 (3 steps); ``jax.eval_shape(init)`` works and has
    the record's fields."""
    params, grads = parity_inputs("float32")
    tx = gradtx.schedule_free_adamw(0.01, state_dtype=jnp.bfloat16)
    got = run_steps(tx, params, grads[:3], jit=True)
    assert {z.dtype for z in jax.tree.leaves(got.state.z)} == {jnp.dtype(jnp.bfloat16)}
    assert {u.dtype for u in jax.tree.leaves(got.updates)} == {jnp.dtype(jnp.float32)}
    shapes = jax.eval_shape(tx.init, params)
    assert shapes._fields == ("count", "nu", "b1", "weight_sum", "max_lr", "z")


def test_update_without_params_names_the_call():
    """Reference: the message: the interpolation needs ``y``."""
    tx = gradtx.schedule_free_sgd(0.1)
    with pytest.raises(UpdateError, match=r"^gradtx.schedule_free_sgd > schedule_free_interpolation: update\(\) "
                                          r"needs the params"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
