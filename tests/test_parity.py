"""Exact parity with optax 0.2.8 (pinned in pyproject): optimizers and primitives.

Every case runs the same seeded gradient sequence (200 steps) through ``gradtx`` and
through the optax transformation of the same math, then compares the params, the last
updates and every state field present in both (by field name). Reference: optax 0.2.8.
Tolerance: rtol 1e-10 in float64 (inside ``jax.enable_x64(True)`` for the test only),
rtol 1e-5 in float32 (see ``conftest.assert_trees_close`` for the atol near zero).

The hyperparameters are chosen so that each term matters at these tolerances: ``eps`` is
large enough that its placement (inside or outside the root) changes the result, decays
are not 0.5 (so ``decay`` and ``1 - decay`` cannot be swapped unnoticed), and the
gradients' leaves range from 0.05 to 2 in scale. ``test_tolerances_catch_wrong_formulas``
checks that the comparison fails for the wrong formulas.

Both libraries run under ``jax.jit`` and eagerly (the ``jit`` fixture), on a nested
dict / list / tuple tree of three leaves (one a scalar): few leaves keep the compile and
dispatch times, which dominate, small.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from conftest import (N_STEPS, assert_close, assert_trees_close, compare_states, random_grads, random_tree,
                      replace_fields, run_optax, run_steps, schedule)

BF16 = jnp.bfloat16


class Case(NamedTuple):
    id: str
    gradtx: Callable[[Any], Any]  # params -> gradtx transformation
    optax: Callable[[Any], Any]  # params -> optax transformation of the same math
    fields: frozenset  # state field names that must be in both states, and equal
    rename: tuple = ()  # (gradtx name, optax name) pairs


def same_call(name: str, fields, rename=(), **kw) -> Case:
    """``gradtx.name(**kw)`` against ``optax.name(**kw)``: identical calls."""
    kw_id = ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items())
    return Case(f"{name}({kw_id})", lambda params: getattr(gradtx, name)(**kw),
                lambda params: getattr(optax, name)(**kw), frozenset(fields), tuple(rename))


def primitive(id_: str, gx: Callable, ox: Callable, fields, rename=()) -> Case:
    return Case(id_, gx, ox, frozenset(fields), tuple(rename))


def ndim_above_one(params):
    """A weight-decay mask: matrices and higher, not vectors or scalars."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _rmsprop_grid() -> list[Case]:
    """The grid centered x eps_in_sqrt x bias_correction x momentum (none / heavy-ball /
    Nesterov), and initial_scale 0 and 0.5. Centered + bias_correction starts from
    initial_scale=0.5: from 0 the variance at t=1 is 0 in exact arithmetic, rounds to
    +-1 ulp, and gradtx deliberately clamps it at 0 (optax takes the root of the negative
    ones); that corner is ``test_rmsprop_centered_clamp``."""
    cases = []
    for centered, eps_in_sqrt, bias_correction, (momentum, nesterov) in itertools.product(
            (False, True), (True, False), (False, True), ((None, False), (0.9, False), (0.9, True))):
        for initial_scale in ((0.5,) if centered and bias_correction else (0.0, 0.5) if momentum is None else (0.0,)):
            fields = {"nu"} | ({"mu"} if centered else set()) | ({"count"} if bias_correction else set()) \
                | ({"trace"} if momentum else set())
            cases.append(same_call("rmsprop", fields, learning_rate=1e-3, decay=0.75, eps=1e-3,
                                   initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt, centered=centered,
                                   momentum=momentum, nesterov=nesterov, bias_correction=bias_correction))
    return cases


ADADELTA = dict(fields={"e_g", "e_x"}, rename=(("nu", "e_g"),))  # gradtx's second moment is optax's e_g
ADAM = dict(fields={"mu", "nu", "count"})  # gradtx has one count per bias correction, optax one

OPTIMIZERS = [
    same_call("sgd", set(), learning_rate=0.05),
    same_call("sgd", {"trace"}, learning_rate=0.05, momentum=0.9),
    same_call("sgd", {"trace"}, learning_rate=0.05, momentum=0.9, nesterov=True),
    same_call("sgd", {"trace"}, learning_rate=0.05, momentum=0.9, accumulator_dtype=BF16),
    same_call("sgd", {"trace"}, learning_rate=0.05, momentum=0.9, nesterov=True, accumulator_dtype=BF16),
    same_call("sgd", {"trace", "count"}, learning_rate=schedule, momentum=0.9),
    *_rmsprop_grid(),
    same_call("rmsprop", {"nu", "count"}, learning_rate=schedule, decay=0.8, eps=1e-3),
    same_call("adagrad", {"sum_of_squares"}, learning_rate=0.1),
    same_call("adagrad", {"sum_of_squares"}, learning_rate=0.1, initial_accumulator_value=0.0, eps=1e-3),
    same_call("adagrad", {"sum_of_squares", "count"}, learning_rate=schedule, eps=1e-3),
    same_call("adadelta", **ADADELTA, learning_rate=0.5, rho=0.8, eps=1e-4),
    same_call("adadelta", **ADADELTA, learning_rate=None, rho=0.8, eps=1e-4),
    same_call("adadelta", **ADADELTA, learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1),
    same_call("adadelta", **ADADELTA, learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1,
              weight_decay_mask=ndim_above_one),
    same_call("adadelta", fields={"e_g", "e_x", "count"}, rename=ADADELTA["rename"], learning_rate=schedule,
              eps=1e-4),
    same_call("adam", **ADAM, learning_rate=1e-2),
    same_call("adam", **ADAM, learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4),
    same_call("adam", **ADAM, learning_rate=1e-2, eps=1e-3, mu_dtype=BF16),
    same_call("adam", **ADAM, learning_rate=1e-2, eps=1e-3, nesterov=True),
    same_call("adam", **ADAM, learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, nesterov=True),
    same_call("adam", **ADAM, learning_rate=schedule, eps=1e-3),
    same_call("adamw", **ADAM, learning_rate=1e-2, eps=1e-3, weight_decay=0.1),
    same_call("adamw", **ADAM, learning_rate=schedule, eps=1e-3, weight_decay=0.1, mask=ndim_above_one),
    same_call("nadam", **ADAM, learning_rate=1e-2, b1=0.8, eps=1e-3),
    same_call("amsgrad", fields={"mu", "nu", "nu_max", "count"}, learning_rate=1e-2, eps=1e-3),
    same_call("amsgrad", fields={"mu", "nu", "nu_max"}, learning_rate=1e-2, eps=1e-3,
              eps_root=1e-4, bias_correction_mu=False, bias_correction_nu=False),
    same_call("adamax", **ADAM, learning_rate=1e-2, b2=0.95, eps=1e-3),
    same_call("lion", {"mu"}, learning_rate=1e-3, b1=0.8, b2=0.95),
    same_call("lion", {"mu", "count"}, learning_rate=schedule, weight_decay=0.1, mask=ndim_above_one),
]


def _rms_primitive_grid(name: str, fields: set) -> list[Case]:
    return [same_call(name, fields | ({"count"} if bc else set()), decay=0.75, eps=1e-3, initial_scale=0.5,
                      eps_in_sqrt=eps_in_sqrt, bias_correction=bc)
            for eps_in_sqrt, bc in itertools.product((True, False), (False, True))]


PRIMITIVES = [
    primitive("trace", lambda p: gradtx.trace(0.9), lambda p: optax.trace(0.9), {"trace"}),
    primitive("trace(bf16)", lambda p: gradtx.trace(0.9, accumulator_dtype=BF16),
              lambda p: optax.trace(0.9, accumulator_dtype=BF16), {"trace"}),
    primitive("nesterov_trace", lambda p: gradtx.nesterov_trace(0.9), lambda p: optax.trace(0.9, nesterov=True),
              {"trace"}),
    primitive("scale_by_ema", lambda p: gradtx.scale_by_ema(0.8), lambda p: optax.ema(0.8, debias=False),
              {"ema"}, (("mu", "ema"),)),
    primitive("scale_by_ema->bias_correct",
              lambda p: gradtx.chain(gradtx.scale_by_ema(0.8), gradtx.bias_correct(0.8)),
              lambda p: optax.ema(0.8, debias=True), {"ema", "count"}, (("mu", "ema"),)),
    *_rms_primitive_grid("scale_by_rms", {"nu"}),
    *_rms_primitive_grid("scale_by_stddev", {"mu", "nu"}),
    primitive("scale_by_sum_of_squares", lambda p: gradtx.scale_by_sum_of_squares(),
              lambda p: optax.scale_by_rss(), {"sum_of_squares"}),
    primitive("scale_by_sum_of_squares(0,1e-3)", lambda p: gradtx.scale_by_sum_of_squares(0.0, 1e-3),
              lambda p: optax.scale_by_rss(0.0, 1e-3), {"sum_of_squares"}),
    primitive("scale_by_adadelta", lambda p: gradtx.scale_by_adadelta(0.8, 1e-4),
              lambda p: optax.scale_by_adadelta(0.8, 1e-4), **ADADELTA),
    primitive("adam_direction", lambda p: gradtx.adam_direction(), lambda p: optax.scale_by_adam(), **ADAM),
    primitive("adam_direction(eps_root)", lambda p: gradtx.adam_direction(0.8, 0.95, 1e-3, 1e-4),
              lambda p: optax.scale_by_adam(0.8, 0.95, 1e-3, 1e-4), **ADAM),
    primitive("adam_direction(mu_dtype)", lambda p: gradtx.adam_direction(eps=1e-3, mu_dtype=BF16),
              lambda p: optax.scale_by_adam(eps=1e-3, mu_dtype=BF16), **ADAM),
    primitive("adam_direction(nesterov)", lambda p: gradtx.adam_direction(0.8, 0.95, 1e-3, nesterov=True),
              lambda p: optax.scale_by_adam(0.8, 0.95, 1e-3, nesterov=True), **ADAM),
    primitive("add_decayed_weights", lambda p: gradtx.add_decayed_weights(0.1),
              lambda p: optax.add_decayed_weights(0.1), set()),
    primitive("add_decayed_weights(mask_fn)", lambda p: gradtx.add_decayed_weights(0.1, ndim_above_one),
              lambda p: optax.add_decayed_weights(0.1, ndim_above_one), set()),
    primitive("add_decayed_weights(mask_tree)", lambda p: gradtx.add_decayed_weights(0.1, ndim_above_one(p)),
              lambda p: optax.add_decayed_weights(0.1, ndim_above_one(p)), set()),
    primitive("add_decayed_weights(schedule)", lambda p: gradtx.add_decayed_weights(schedule),
              lambda p: optax.add_decayed_weights(schedule), {"count"}),
    primitive("clip", lambda p: gradtx.clip(0.5), lambda p: optax.clip(0.5), set()),
    # the gradients' global norm is 3.3 +- 1: some steps are clipped, some are not
    primitive("clip_by_global_norm", lambda p: gradtx.clip_by_global_norm(3.0),
              lambda p: optax.clip_by_global_norm(3.0), set()),
    primitive("scale", lambda p: gradtx.scale(0.3), lambda p: optax.scale(0.3), set()),
    primitive("scale_by_learning_rate", lambda p: gradtx.scale_by_learning_rate(0.1),
              lambda p: optax.scale_by_learning_rate(0.1), set()),
    primitive("scale_by_learning_rate(flip_sign=False)",
              lambda p: gradtx.scale_by_learning_rate(0.1, flip_sign=False),
              lambda p: optax.scale_by_learning_rate(0.1, flip_sign=False), set()),
    primitive("scale_by_learning_rate(schedule)", lambda p: gradtx.scale_by_learning_rate(schedule),
              lambda p: optax.scale_by_learning_rate(schedule), {"count"}),
]


@functools.lru_cache(maxsize=None)
def _inputs(dtype_name: str):
    dtype = jnp.dtype(dtype_name)
    return random_tree(0, dtype, small=True), random_grads(1, N_STEPS, dtype, small=True)


@functools.lru_cache(maxsize=None)
def _optax_run(case: Case, dtype_name: str, jit: bool):
    params, grads = _inputs(dtype_name)
    return run_optax(case.optax(params), params, grads, jit=jit)


def check_parity(case: Case, precision, jit: bool) -> None:
    """Run both sides of ``case``; compare params, last updates and state fields at
    ``precision.rtol``."""
    dtype_name = jnp.dtype(precision.dtype).name
    params, grads = _inputs(dtype_name)
    got = run_steps(case.gradtx(params), params, grads, jit=jit)
    want = _optax_run(case, dtype_name, jit)
    for leaf in jax.tree.leaves(got.params) + jax.tree.leaves(got.updates):
        assert leaf.dtype == precision.dtype
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    compare_states(got.state, want.state, precision.rtol, rename=dict(case.rename), expected=case.fields)


@pytest.mark.parametrize("case", OPTIMIZERS, ids=lambda c: c.id)
def test_optimizer_matches_optax(case, precision, jit):
    """``gradtx.X(**kw)`` vs ``optax.X(**kw)`` (optax 0.2.8), 200 steps: params, last
    updates and state fields by name agree to rtol 1e-10 (float64) / 1e-5 (float32)."""
    check_parity(case, precision, jit)


@pytest.mark.parametrize("case", PRIMITIVES, ids=lambda c: c.id)
def test_primitive_matches_optax(case, precision, jit):
    """Each gradtx primitive vs the optax transformation of the same math (optax 0.2.8),
    200 steps: params, last updates and state fields agree to rtol 1e-10 / 1e-5."""
    check_parity(case, precision, jit)


RMSPROP_REF = ("rmsprop(learning_rate=0.001,decay=0.75,eps=0.001,initial_scale=0.0,eps_in_sqrt=True,"
               "centered=False,momentum=None,nesterov=False,bias_correction=False)")

# (what is wrong, the wrong formula built from gradtx pieces, the id of the right optax case)
MUTANTS = [
    ("rmsprop eps outside sqrt", lambda: gradtx.rmsprop(1e-3, decay=0.75, eps=1e-3, eps_in_sqrt=False),
     RMSPROP_REF),
    ("rmsprop decay swapped", lambda: gradtx.rmsprop(1e-3, decay=0.25, eps=1e-3), RMSPROP_REF),
    ("adam without bias correction", lambda: gradtx.chain(
        gradtx.fork(gradtx.scale_by_ema(0.9), gradtx.chain(gradtx.second_moment(0.999), gradtx.sqrt_eps(1e-8)),
                    join=jnp.divide), gradtx.scale_by_learning_rate(1e-2)), "adam(learning_rate=0.01)"),
    # eps=1e-3 in the reference: the default 1e-8 would be invisible at float32's tolerance
    ("adam eps inside sqrt", lambda: gradtx.adam(schedule, eps=0.0, eps_root=1e-3),
     "adam(learning_rate=schedule,eps=0.001)"),
    ("sgd heavy-ball for nesterov", lambda: gradtx.sgd(0.05, momentum=0.9),
     "sgd(learning_rate=0.05,momentum=0.9,nesterov=True)"),
    # the look-ahead without the gradient term: u -> decay * v
    ("sgd nesterov without g", lambda: gradtx.chain(gradtx.trace(0.9), gradtx.scale(0.9),
                                                    gradtx.scale_by_learning_rate(0.05)),
     "sgd(learning_rate=0.05,momentum=0.9,nesterov=True)"),
    ("nadam as adam", lambda: gradtx.adam(1e-2, eps=1e-3), "adam(learning_rate=0.01,eps=0.001,nesterov=True)"),
    ("adagrad from 0", lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0), "adagrad(learning_rate=0.1)"),
    ("adadelta without e_x", lambda: gradtx.chain(gradtx.scale_by_rms(0.8, 1e-4), gradtx.scale_by_learning_rate(0.5)),
     "adadelta(learning_rate=0.5,rho=0.8,eps=0.0001)"),
]


@pytest.mark.parametrize("what,wrong,reference_id", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_tolerances_catch_wrong_formulas(what, wrong, reference_id, jit):
    """Negative control: the params of a wrong formula (``MUTANTS``) differ from the optax
    0.2.8 reference of the right one beyond float32's rtol 1e-5 (the looser of the two)."""
    (reference,) = [c for c in OPTIMIZERS if c.id == reference_id]
    params, grads = _inputs("float32")
    got = run_steps(wrong(), params, grads, jit=jit)
    want = _optax_run(reference, "float32", jit)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got.params, want.params, 1e-5, what=what)


@pytest.mark.parametrize("eps_in_sqrt", [False, True], ids=["eps_outside", "eps_in_sqrt"])
@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)],
                         ids=["no_momentum", "momentum", "nesterov"])
def test_rmsprop_centered_clamp(momentum, nesterov, eps_in_sqrt, precision, jit):
    """Centered, bias-corrected RMSprop from ``nu = 0``: at t=1 the variance
    ``nu_hat - mu_hat^2`` is 0 in exact arithmetic and rounds to a few ulps of ``g^2``
    either way; gradtx clamps it at 0, optax 0.2.8 takes the root of the negative ones.

    References: at t=1 the closed form ``-lr * (1 [+ momentum if Nesterov]) * g / den``
    with ``den = eps`` (``sqrt(eps)`` in the root), to the rounding of the variance
    (``8 ulp * g^2``); after 200 steps, optax's states (rtol 1e-10 / 1e-5) and optax's
    last updates wherever optax is finite."""
    lr, eps = 1e-3, 0.1
    kw = dict(learning_rate=lr, decay=0.9, eps=eps, eps_in_sqrt=eps_in_sqrt, centered=True, bias_correction=True,
              momentum=momentum, nesterov=nesterov)
    params, grads = _inputs(jnp.dtype(precision.dtype).name)
    gx = gradtx.rmsprop(**kw)

    first = run_steps(gx, params, grads[:1], jit=jit)
    ulp = 8 * float(jnp.finfo(precision.dtype).eps)
    look_ahead = 1 + momentum if nesterov else 1
    for u, g in zip(jax.tree.leaves(first.updates), jax.tree.leaves(grads[0])):
        u, g = np.asarray(u), np.asarray(g)
        if eps_in_sqrt:  # -lr * g / sqrt(v + eps) with 0 <= v <= ulp * g^2
            closed_form, rel = -lr * look_ahead * g / np.sqrt(eps), ulp * g**2 / eps
        else:  # -lr * g / (sqrt(v) + eps)
            closed_form, rel = -lr * look_ahead * g / eps, np.sqrt(ulp) * np.abs(g) / eps
        assert np.all(np.abs(u - closed_form) <= np.abs(closed_form) * (rel + 1e-6)), (u, closed_form)

    got, want = run_steps(gx, params, grads, jit=jit), run_optax(optax.rmsprop(**kw), params, grads, jit=jit)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(got.params))
    # the preconditioner's state (stage 0 of both chains) does not depend on the clamp
    compare_states(got.state[0], want.state[0], precision.rtol, expected={"mu", "nu", "count"})
    n_finite = 0
    for u, u_ref in zip(jax.tree.leaves(got.updates), jax.tree.leaves(want.updates)):
        u, u_ref = np.asarray(u), np.asarray(u_ref)
        finite = np.isfinite(u_ref)
        n_finite += finite.sum()
        assert_close(u[finite], u_ref[finite], precision.rtol)
    assert n_finite > 0


@pytest.mark.parametrize("eps_in_sqrt", [False, True], ids=["eps_outside", "eps_in_sqrt"])
def test_stddev_clamps_negative_variance(eps_in_sqrt, precision, jit):
    """``scale_by_stddev`` with ``decay=1`` keeps its state, so a state with
    ``nu < mu^2`` gives a negative variance: gradtx clamps it at 0. Closed form:
    ``u -> g / eps`` (``g / sqrt(eps)`` in the root), rtol 1e-12 / 1e-6."""
    eps = 1e-4
    tx = gradtx.scale_by_stddev(decay=1.0, eps=eps, eps_in_sqrt=eps_in_sqrt)
    g = jnp.asarray([0.5, -2.0, 3.0], precision.dtype)
    state = replace_fields(tx.init(g), mu=jnp.asarray([1.0, 2.0, -1.0], precision.dtype),
                           nu=jnp.asarray([0.5, 3.0, 0.0], precision.dtype))  # nu - mu^2 = -0.5, -1, -1
    update = jax.jit(tx.update) if jit else tx.update
    out, _ = update(g, state)
    den = np.sqrt(eps) if eps_in_sqrt else eps
    np.testing.assert_allclose(np.asarray(out), np.asarray(g) / den,
                               rtol=1e-12 if precision.dtype == jnp.float64 else 1e-6)
