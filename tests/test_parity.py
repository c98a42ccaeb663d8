"""Exact parity with optax 0.2.8 (pinned in pyproject): every optimizer and primitive of
the registry that has an optax twin, over its registry grid.

Every case runs the same seeded gradient sequence (200 steps jitted) through ``gradtx`` and
through the optax twin called with the same arguments, then compares the params, the
last updates and every state field of optax's state (by field name; gradtx's state is one
record). Reference: optax 0.2.8. Tolerance: rtol 1e-10 in float64 (inside
``jax.enable_x64(True)`` for the test only), rtol 1e-5 in float32 (see
``conftest.assert_trees_close`` for the atol near zero).

The hyperparameters are chosen so that each term matters at these tolerances: ``eps`` is
large enough that its placement (inside or outside the root) changes the result, decays
are not 0.5 (so ``decay`` and ``1 - decay`` cannot be swapped unnoticed), and the
gradients' leaves range from 0.05 to 2 in scale. ``test_tolerances_catch_wrong_formulas``
checks that the comparison fails for the wrong formulas.

Modes: jitted in float64 at every grid point (rtol 1e-10: the check that tells formulas
apart); at each entry's first grid point also jitted in float32 (the dtype handling) and
eagerly (op by op) in float32 over the first ``N_EAGER_STEPS`` (20) steps (every stage
runs outside jit with optax's eager numbers; the trajectory's length is the jitted runs'
job). Each run costs two XLA compilations (~0.13 s each here) whatever its length, so the
grid's other points in float32 would double the file's time and tell apart no formula
that float64 does not.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    MODES,
    N_STEPS,
    assert_trees_close,
    check_parity,
    compare_states,
    parity_inputs,
    run_optax,
    run_steps,
    schedule,
)

import gradtx
from gradtx.registry import Entry, of_kind


class Case(NamedTuple):
    id: str
    entry: Entry
    kwargs: dict

    def gradtx(self):
        return self.entry.obj(**self.kwargs)

    def optax(self):
        return self.entry.optax_factory(optax)(**self.kwargs)


def case_id(name: str, kwargs: dict) -> str:
    args = ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())
    return f"{name}({args})"


def twin_cases(*kinds: str) -> list[Case]:
    """Every grid point of every registry entry of ``kinds`` with an optax twin."""
    return [Case(case_id(e.name, kw), e, kw) for e in of_kind(*kinds) if e.optax for kw in e.grid]


OPTIMIZERS = twin_cases("optimizer")
PRIMITIVES = twin_cases("primitive")
CASES = {c.id: c for c in OPTIMIZERS + PRIMITIVES}

# Compositions of primitives whose optax twin is one transformation.
COMPOSITIONS = [
    ("scale_by_ema->bias_correct", lambda: gradtx.chain(gradtx.scale_by_ema(0.8), gradtx.bias_correct(0.8)),
     lambda: optax.ema(0.8, debias=True), {"mu": "ema"}),
]


N_EAGER_STEPS = 20


def n_steps(jit: bool) -> int:
    return N_STEPS if jit else N_EAGER_STEPS


@functools.cache
def _optax_run(case_id_: str, dtype_name: str, jit: bool):
    params, grads = parity_inputs(dtype_name)
    return run_optax(CASES[case_id_].optax(), params, grads[: n_steps(jit)], jit=jit)


def check_dtypes_and_parity(gx, want, precision, jit: bool, *, renames, absent) -> None:
    """``conftest.check_parity``, and the params and last updates keep the inputs' dtype."""
    got = check_parity(gx, want, precision, jit, renames=renames, absent=absent, steps=n_steps(jit))
    for leaf in jax.tree.leaves(got.params) + jax.tree.leaves(got.updates):
        assert leaf.dtype == precision.dtype


def case_modes(cases: list[Case]) -> list:
    """Each case jitted in float64; jitted in float32 and eagerly at the first grid point
    of each entry (the dtype handling and the eager path of every stage)."""
    first = {}
    for c in cases:
        first.setdefault(c.entry.name, c.id)
    return [pytest.param(c, m, id=f"{'-'.join(m)}-{c.id}") for c in cases for m in MODES
            if m == ("jit", "float64") or first[c.entry.name] == c.id]


@pytest.mark.parametrize("case, mode", case_modes(OPTIMIZERS + PRIMITIVES), indirect=["mode"])
def test_matches_optax(case, mode):
    """``gradtx.X(**kw)`` vs optax's twin with the same arguments (optax 0.2.8), 200 jitted
    steps (20 eager): params, last updates and optax's state fields by name agree to rtol
    1e-10 (float64) / 1e-5 (float32)."""
    jit, precision = mode
    want = _optax_run(case.id, jnp.dtype(precision.dtype).name, jit)
    check_dtypes_and_parity(case.gradtx(), want, precision, jit, renames=case.entry.renames, absent=case.entry.absent)


@pytest.mark.parametrize("name, gx, ox, renames", COMPOSITIONS, ids=[c[0] for c in COMPOSITIONS])
def test_composition_matches_optax(name, gx, ox, renames, mode):
    """A chain of gradtx primitives vs the one optax transformation of the same math."""
    jit, precision = mode
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    want = run_optax(ox(), params, grads[: n_steps(jit)], jit=jit)
    check_dtypes_and_parity(gx(), want, precision, jit, renames=renames, absent=())


def reference(name: str, **kwargs) -> str:
    """The id of the registry's parity case ``name(**kwargs)`` (which must exist)."""
    (case,) = [c for c in OPTIMIZERS if c.entry.name == name and c.kwargs == kwargs]
    return case.id


RMSPROP = dict(learning_rate=1e-3, decay=0.75, eps=1e-3, initial_scale=0.0, eps_in_sqrt=True, centered=False,
               bias_correction=False, momentum=None)
NESTEROV = reference("sgd", learning_rate=0.05, momentum=0.9, nesterov=True)

# (what is wrong, the wrong formula built from gradtx pieces, the id of the right optax case)
MUTANTS = [
    ("rmsprop eps outside sqrt", lambda: gradtx.rmsprop(**{**RMSPROP, "eps_in_sqrt": False}),
     reference("rmsprop", **RMSPROP)),
    ("rmsprop decay swapped", lambda: gradtx.rmsprop(**{**RMSPROP, "decay": 0.25}), reference("rmsprop", **RMSPROP)),
    ("adam without bias correction", lambda: gradtx.chain(
        gradtx.fork(gradtx.scale_by_ema(0.9), gradtx.chain(gradtx.second_moment(0.999), gradtx.sqrt_eps(1e-8)),
                    join=jnp.divide), gradtx.scale_by_learning_rate(1e-2)), reference("adam", learning_rate=1e-2)),
    # eps=1e-3 in the reference: the default 1e-8 would be invisible at float32's tolerance
    ("adam eps inside sqrt", lambda: gradtx.adam(schedule, eps=0.0, eps_root=1e-3),
     reference("adam", learning_rate=schedule, eps=1e-3)),
    ("sgd heavy-ball for nesterov", lambda: gradtx.sgd(0.05, momentum=0.9), NESTEROV),
    # the look-ahead without the gradient term: u -> decay * v
    ("sgd nesterov without g", lambda: gradtx.chain(gradtx.trace(0.9), gradtx.scale(0.9),
                                                    gradtx.scale_by_learning_rate(0.05)), NESTEROV),
    ("nadam as adam", lambda: gradtx.adam(1e-2, eps=1e-3), reference("adam", learning_rate=1e-2, eps=1e-3,
                                                                     nesterov=True)),
    ("adagrad from 0", lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0),
     reference("adagrad", learning_rate=0.1)),
    ("adadelta without e_x", lambda: gradtx.chain(gradtx.scale_by_rms(0.8, 1e-4), gradtx.scale_by_learning_rate(0.5)),
     reference("adadelta", learning_rate=0.5, rho=0.8, eps=1e-4)),
]


@pytest.mark.parametrize("what,wrong,reference_id", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_tolerances_catch_wrong_formulas(what, wrong, reference_id, jit):
    """Negative control: the params of a wrong formula (``MUTANTS``) differ from the optax
    0.2.8 reference of the right one beyond float32's rtol 1e-5 (the looser of the two)."""
    params, grads = parity_inputs("float32")
    got = run_steps(wrong(), params, grads, jit=jit)
    want = _optax_run(reference_id, "float32", jit)
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
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
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
    # the preconditioner's state (optax's stage 0) does not depend on the clamp
    compare_states(got.state, want.state[0], precision.rtol)
    n_finite = 0
    for u, u_ref in zip(jax.tree.leaves(got.updates), jax.tree.leaves(want.updates)):
        u, u_ref = np.asarray(u), np.asarray(u_ref)
        finite = np.isfinite(u_ref)
        n_finite += finite.sum()
        assert_trees_close(u[finite], u_ref[finite], precision.rtol)
    assert n_finite > 0


@pytest.mark.parametrize("eps_in_sqrt", [False, True], ids=["eps_outside", "eps_in_sqrt"])
def test_stddev_clamps_negative_variance(eps_in_sqrt, precision, jit):
    """``scale_by_stddev`` with ``decay=1`` keeps its state, so a state with
    ``nu < mu^2`` gives a negative variance: gradtx clamps it at 0. Closed form:
    ``u -> g / eps`` (``g / sqrt(eps)`` in the root), rtol 1e-12 / 1e-6."""
    eps = 1e-4
    tx = gradtx.scale_by_stddev(decay=1.0, eps=eps, eps_in_sqrt=eps_in_sqrt)
    g = jnp.asarray([0.5, -2.0, 3.0], precision.dtype)
    state = tx.init(g)._replace(mu=jnp.asarray([1.0, 2.0, -1.0], precision.dtype),
                           nu=jnp.asarray([0.5, 3.0, 0.0], precision.dtype))  # nu - mu^2 = -0.5, -1, -1
    update = jax.jit(tx.update) if jit else tx.update
    out, _ = update(g, state)
    den = np.sqrt(eps) if eps_in_sqrt else eps
    np.testing.assert_allclose(np.asarray(out), np.asarray(g) / den,
                               rtol=1e-12 if precision.dtype == jnp.float64 else 1e-6)
