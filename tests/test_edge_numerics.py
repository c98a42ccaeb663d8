"""Numerics at the edges (issue 12): float16 and eps, bfloat16 params with float32 moments,
step counts at the int32 maximum, zero and non-finite gradients, and a 10,000-step run.

Each test names its reference (optax 0.2.8, a closed form, a float32 run) and its tolerance,
and each new rule or option has a wrong-formula mutant that must fail the same check. The
rules are stated in ``docs/guides/numerics.md``. Runs are ``lax.scan`` loops inside one
``jax.jit``, so that the long ones stay fast.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close

import gradtx
from gradtx import bias_correct, chain, fork, scale_by_ema, scale_by_learning_rate, second_moment, sqrt_eps, stateless
from gradtx.numerics import plus_eps
from gradtx.registry import of_kind

F16, BF16, F32 = jnp.float16, jnp.bfloat16, jnp.float32
INT32_MAX = 2**31 - 1


def scan_run(tx, params, grads, apply_updates: Callable = gradtx.apply_updates, record: Callable = lambda s: ()):
    """``tx`` over the gradient trees stacked in ``grads`` (leading axis: the steps), in one
    jitted ``lax.scan``: the final params and state, each step's updates and ``record(state)``."""

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (apply_updates(p, u), s), (u, record(s))

    @jax.jit
    def run(params, grads):
        (p, s), (us, recorded) = jax.lax.scan(body, (params, tx.init(params)), grads)
        return p, s, us, recorded

    return run(params, grads)


def all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x, np.float64)))) for x in jax.tree.leaves(tree))


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


# --- 1. float16 and eps ---------------------------------------------------------------------

F16_PARAMS = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25], [-3.0, 1.5]], F16), "b": jnp.asarray([0.1, -0.2], F16)}
EPS_USERS = {  # the four optimizers of the issue, at their defaults
    "adam": lambda: gradtx.adam(1e-3),
    "rmsprop": lambda: gradtx.rmsprop(1e-3),
    "adagrad": lambda: gradtx.adagrad(1e-3),
    "adadelta": lambda: gradtx.adadelta(),
    # and those whose float16 zero-gradient run was NaN before their eps went through
    # plus_eps: Adafactor's epsilon = 1e-30 on |g|^2, Muon's ||m|| + 1e-8 before Newton-Schulz
    # (its matrix "w"; "b" takes Adam), Shampoo's graft ||s|| + 1e-16, and
    # normalize_by_update_norm's ||u|| + 1e-6 (a float16 subnormal: 1 / 1e-6 overflowed)
    "adafactor": lambda: gradtx.adafactor(),
    "muon": lambda: gradtx.muon(1e-3),
    "shampoo": lambda: gradtx.shampoo(1e-3),
    "normalize_by_update_norm": lambda: gradtx.normalize_by_update_norm(),
}
# the state dtypes of the float16 run where they are not all float16: Shampoo keeps its
# Kronecker factors and inverse roots in at least float32 (``kronecker.factor_dtype``);
# normalize_by_update_norm keeps no state
ZERO_GRADIENT_STATE_DTYPES = {"shampoo": {jnp.dtype(F16), jnp.dtype(F32)}, "normalize_by_update_norm": set()}


def naive_adam(learning_rate: float, eps: float = 1e-8):
    """Mutant: Adam with ``sqrt(v_hat) + eps`` added in the params' dtype as written (no eps
    rule), built from the same gradtx stages."""
    naive_root = stateless(lambda u, p: jax.tree.map(lambda v: jnp.sqrt(v) + eps, u))
    second = chain(second_moment(0.999), bias_correct(0.999), naive_root)
    first = chain(scale_by_ema(0.9), bias_correct(0.9))
    return chain(fork(first, second, join=jnp.divide), scale_by_learning_rate(learning_rate))


def zero_gradient_run(tx, apply_updates: Callable = gradtx.apply_updates):
    """100 steps of zero gradients on the float16 params."""
    grads = jax.tree.map(lambda p: jnp.zeros((100, *p.shape), p.dtype), F16_PARAMS)
    return scan_run(tx, F16_PARAMS, grads, apply_updates)


@pytest.mark.parametrize("name", sorted(EPS_USERS))
def test_float16_zero_gradients_give_zero_finite_steps(name):
    """Reference: the closed form. With zero gradients every moment is 0 and each step is
    ``0 / (0 + eps) = 0`` (Adam), ``0 / sqrt(0 + eps)`` (RMSprop, Adafactor), 0 (Adagrad,
    Adadelta), ``NS(0 / (0 + eps)) = 0`` (Muon), ``0 * ||g|| / (0 + 1e-16)`` (Shampoo's
    graft), ``0 / (0 + eps)`` (normalize_by_update_norm): over 100 float16 steps every
    update is exactly 0, the params are bit for bit the initial ones, the state is finite
    and stays float16 (Shampoo's factors: float32; normalize_by_update_norm keeps none).
    With ``x + eps`` as written (before the eps rule) the steps of Adam, RMSprop, Adafactor,
    Muon, Shampoo and normalize_by_update_norm were NaN: the eps rounded to 0 (0 / 0), or,
    normalize_by_update_norm's 1e-6, to a subnormal whose reciprocal overflows (0 * inf)."""
    params, state, updates, _ = zero_gradient_run(EPS_USERS[name]())
    assert all_finite(state) and all_finite(updates)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(F16_PARAMS)):
        assert got.dtype == F16 and bool(jnp.all(got == want))
    want_dtypes = ZERO_GRADIENT_STATE_DTYPES.get(name, {jnp.dtype(F16)})
    assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} == want_dtypes


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adafactor", "muon"])
def test_float16_zero_gradients_are_nan_in_optax_and_in_the_naive_formula(name):
    """The edge is real: optax 0.2.8's Adam, RMSprop, Adafactor and Muon, and the naive-eps
    Adam mutant, give NaN on the same float16 zero-gradient run (eps = 1e-8, Adafactor's
    1e-30, rounds to 0 in float16: 0 / 0)."""
    optax_tx = {
        "adam": lambda: optax.adam(1e-3),
        "rmsprop": lambda: optax.rmsprop(1e-3),
        "adafactor": lambda: optax.adafactor(),
        "muon": lambda: optax.contrib.muon(1e-3),
    }[name]()
    params, *_ = zero_gradient_run(optax_tx, optax.apply_updates)
    assert not all_finite(params)
    if name == "adam":
        mutant_params, *_ = zero_gradient_run(naive_adam(1e-3))
        assert not all_finite(mutant_params)


# optimizers whose float16 runs went NaN for a reason other than eps rounding to 0: COCOB's
# starting L (eps = 1e-8 became 0; its bet divides by L^2 alpha, which underflows float16
# even at L = 2^-14) and Fromage's trust ratio (||p|| / 1e-6 overflows float16, times a zero
# gradient)
RANGE_USERS = {
    "cocob": (lambda: gradtx.cocob(), lambda: optax.contrib.cocob()),
    "fromage": (lambda: gradtx.fromage(0.1), lambda: optax.fromage(0.1)),
}


@pytest.mark.parametrize("zero", [True, False], ids=["zero-gradients", "small-gradients"])
@pytest.mark.parametrize("name", sorted(RANGE_USERS))
def test_float16_runs_follow_the_float32_run(name, zero):
    """Reference: the same 100 steps on the float32 copy of the params (rtol 1e-2: float16's
    rounding of the params at each step), with zero gradients and with gradients of 1e-3:
    the float16 run is finite and follows it; its state stays float16. optax 0.2.8's COCOB
    and Fromage give NaN on the zero-gradient run (the negative control)."""
    make, make_optax = RANGE_USERS[name]
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray((0 if zero else 1e-3) * rng.normal(size=(100, *p.shape)), F32),
                         F16_PARAMS)
    params16, state16, _, _ = scan_run(make(), F16_PARAMS, jax.tree.map(lambda g: g.astype(F16), grads))
    params32, _, _, _ = scan_run(make(), jax.tree.map(lambda p: p.astype(F32), F16_PARAMS), grads)
    assert all_finite(params16) and all_finite(state16)
    for got, want in zip(jax.tree.leaves(params16), jax.tree.leaves(params32)):
        assert got.dtype == F16
        np.testing.assert_allclose(f64(got), f64(want), rtol=1e-2, atol=1e-3)
    assert {x.dtype for x in jax.tree.leaves(state16) if jnp.issubdtype(x.dtype, jnp.floating)} <= {jnp.dtype(F16)}
    if zero:
        optax_params, *_ = zero_gradient_run(make_optax(), optax.apply_updates)
        assert not all_finite(optax_params)


@pytest.mark.parametrize("dtype", [F16, BF16, F32, "float64"])
def test_the_eps_rule(dtype):
    """Reference: the rule itself, ``x + max(eps, tiny)`` for ``eps > 0`` (``x + 0`` for
    ``eps = 0``), ``tiny = finfo(dtype).tiny``, bit for bit, for eps from 0 to 1e-3; a
    Python eps and a traced one agree. In float32, bfloat16 and float64 that is ``x + eps``
    exactly (optax's numbers); in float16 an eps below 2^-14 becomes 2^-14. Mutant:
    ``x + eps`` as written, which in float16 rounds an eps below 2^-25 to 0."""
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(jnp.float64 if dtype == "float64" else dtype)
        x = jnp.asarray([0.0, 1e-3, 1.0], dt)
        tiny = float(jnp.finfo(dt).tiny)
        traced_plus_eps = jax.jit(plus_eps)
        for eps in (0.0, 1e-30, 1e-16, 1e-8, 1e-3):
            want = x + (max(eps, tiny) if eps > 0 else 0.0)
            got, traced = plus_eps(x, eps), traced_plus_eps(x, jnp.asarray(eps))
            assert got.dtype == traced.dtype == dt
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            np.testing.assert_array_equal(np.asarray(traced), np.asarray(want))
            if dt != jnp.float16:
                np.testing.assert_array_equal(np.asarray(got), np.asarray(x + eps))  # optax's sum
            if eps > 0:
                assert float(got[0]) > 0  # a positive eps never rounds to 0
            if dt == jnp.float16 and 0 < eps < 2.0**-25:
                assert float((x + eps)[0]) == 0.0  # the mutant loses it


@pytest.mark.parametrize("name", ["adam", "adagrad", "rmsprop"])
def test_the_eps_rule_keeps_optax_numbers_in_float32_and_bfloat16(name):
    """Reference: optax 0.2.8, bit for bit (the same jitted scan), 30 steps of N(0.3, 1)
    gradients scaled by 1e-2 in float32 and bfloat16: where eps does not round to 0 the rule
    changes nothing. Exceptions, the same before the rule: RMSprop in bfloat16, which XLA
    fuses otherwise than optax's one expression (within 1 bfloat16 ulp, 2^-7, of the step's
    largest update); Adadelta, whose chain multiplies in another order than optax's
    ``update_fn`` (1 float32 ulp; ``tests/test_parity.py``)."""
    rng = np.random.default_rng(1)
    for dtype in (F32, BF16):
        params = {k: p.astype(dtype) for k, p in F16_PARAMS.items()}
        grads = {k: jnp.asarray(1e-2 * rng.normal(0.3, 1.0, (30, *p.shape)), dtype) for k, p in params.items()}
        twin = {
            "adam": optax.adam(1e-3),
            "rmsprop": optax.rmsprop(1e-3),
            "adagrad": optax.adagrad(1e-3),
        }[name]
        got = scan_run(EPS_USERS[name](), params, grads)[2]
        want = scan_run(twin, params, grads, optax.apply_updates)[2]
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.dtype == w.dtype == dtype
            if name == "rmsprop" and dtype == BF16:
                scale = np.max(np.abs(f64(w)), axis=tuple(range(1, w.ndim)), keepdims=True)
                assert np.max(np.abs(f64(g) - f64(w)) / scale) <= 2.0**-7
            else:
                np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(w, np.float32), err_msg=f"{dtype}")


# --- 2. bfloat16 params with float32 moments ------------------------------------------------

# name -> (factory taking the moment dtype, the moment fields)
MOMENT_DTYPES: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "adam": (lambda d: gradtx.adam(1e-2, mu_dtype=d, nu_dtype=d), ("mu", "nu")),
    "rmsprop": (lambda d: gradtx.rmsprop(1e-2, nu_dtype=d), ("nu",)),
    "adagrad": (lambda d: gradtx.adagrad(1e-2, accumulator_dtype=d), ("sum_of_squares",)),
    "amsgrad": (lambda d: gradtx.amsgrad(1e-2, mu_dtype=d, nu_dtype=d), ("mu", "nu", "nu_max")),
    # rho = 0.99: e_x averages the squares of Adadelta's own outputs, which are bfloat16 (each
    # rounded to 2^-9); at the default rho = 0.9 an average over ~10 steps keeps those
    # roundings (float32 state 1.6e-2 off the float32 run, the bfloat16 mutant 7e-2), at
    # 0.99 they average out (6e-3) while the bfloat16 mutant's increments round away (0.35)
    "adadelta": (lambda d: gradtx.adadelta(rho=0.99, accumulator_dtype=d), ("e_g", "e_x")),
}
N_LONG = 1000
MOMENT_RTOL = 1e-2
# a bfloat16 update is computed in bfloat16 (stage outputs keep the gradients' dtype): a few
# of its ulps (2^-8) of the step's largest element
UPDATE_RTOL = 2.0**-5


def _moment_gap(got_hist: dict, want_hist: dict) -> float:
    """max over steps and fields of ``max|got - want| / max|want|`` (the step's scale)."""
    gaps = []
    for k in want_hist:
        g, w = f64(got_hist[k]), f64(want_hist[k])
        axes = tuple(range(1, w.ndim))
        gaps.append(np.max(np.max(np.abs(g - w), axis=axes) / np.max(np.abs(w), axis=axes)))
    return float(max(gaps))


def _bf16_gradient_sequence():
    """1,000 gradients N(0.3, 1) of 16 coordinates, rounded to bfloat16 (so that both runs
    see the same values), and the initial params."""
    rng = np.random.default_rng(0)
    grads = jnp.asarray(rng.normal(0.3, 1.0, (N_LONG, 16)), BF16)
    return jnp.asarray(rng.normal(size=16), BF16), grads


@pytest.mark.parametrize("name", sorted(MOMENT_DTYPES))
def test_bfloat16_params_with_float32_moments_follow_a_float32_run(name):
    """Reference: the float32 run (float32 params and moments) over the same 1,000
    bfloat16-representable gradients. With ``float32`` moments, bfloat16 params: the params
    and updates stay bfloat16, the moments float32, and at every step the moments are within
    1e-2 of the reference (relative to the step's largest), the updates within 2^-5.
    Mutant: the moments in bfloat16 (the dtype argument ignored), whose ``(1 - b) g^2``
    increments round away, misses the 1e-2."""
    make, fields = MOMENT_DTYPES[name]
    p0, grads = _bf16_gradient_sequence()
    record = lambda s: {k: getattr(s, k) for k in fields}  # noqa: E731
    _, _, want_u, want_m = scan_run(make(None), p0.astype(F32), grads.astype(F32), record=record)
    params, state, got_u, got_m = scan_run(make(F32), p0, grads, record=record)
    assert params.dtype == BF16 and got_u.dtype == BF16
    assert all(getattr(state, k).dtype == F32 for k in fields)
    assert _moment_gap(got_m, want_m) <= MOMENT_RTOL
    step_scale = np.max(np.abs(f64(want_u)), axis=1, keepdims=True)
    assert np.max(np.abs(f64(got_u) - f64(want_u)) / step_scale) <= UPDATE_RTOL
    _, mutant_state, _, mutant_m = scan_run(make(None), p0, grads, record=record)
    assert all(getattr(mutant_state, k).dtype == BF16 for k in fields)
    assert _moment_gap(mutant_m, want_m) > MOMENT_RTOL, "the bfloat16-moment mutant passed"


TRAIN = {  # a learning rate that converges on the quadratic below in 1,000 steps
    "adam": lambda d: gradtx.adam(gradtx.cosine_decay_schedule(0.1, N_LONG), mu_dtype=d, nu_dtype=d),
    "rmsprop": lambda d: gradtx.rmsprop(gradtx.cosine_decay_schedule(0.1, N_LONG), nu_dtype=d),
    "adagrad": lambda d: gradtx.adagrad(1.0, accumulator_dtype=d),
    # 0.3: AMSGrad's denominator keeps its early maximum, and from 0.1 its last steps fall
    # below half a bfloat16 ulp of the params (1.6e-2 short, whatever the state's dtype)
    "amsgrad": lambda d: gradtx.amsgrad(gradtx.cosine_decay_schedule(0.3, N_LONG), mu_dtype=d, nu_dtype=d),
    "adadelta": lambda d: gradtx.adadelta(1.0, rho=0.99, eps=1e-4, accumulator_dtype=d),
}


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_bfloat16_params_with_float32_moments_train_like_float32(name):
    """Reference: the float32 run. ``0.5 (p - c)^T H (p - c)``, ``H`` with eigenvalues 0.5
    to 2, 1,000 steps from 0: the bfloat16 params (float32 moments) end within 1e-2 of the
    float32 run's, and keep their dtype. (Without float32 master weights bfloat16 params
    cannot take steps below half an ulp, 2^-9 to 2^-8 of their size: the bound is that rounding.)"""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    h = q @ np.diag(np.linspace(0.5, 2.0, 8)) @ q.T
    c = rng.uniform(-1, 1, 8)

    def run(tx, dtype):
        hd, cd = jnp.asarray(h, dtype), jnp.asarray(c, dtype)

        def body(carry, _):
            p, s = carry
            u, s = tx.update(hd @ (p - cd), s, p)
            return (gradtx.apply_updates(p, u), s), None

        p = jnp.zeros(8, dtype)
        return jax.jit(lambda: jax.lax.scan(body, (p, tx.init(p)), None, length=N_LONG)[0])()

    want, _ = run(TRAIN[name](None), F32)
    got, state = run(TRAIN[name](F32), BF16)
    assert got.dtype == BF16
    assert {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(F32)}
    assert np.max(np.abs(f64(got) - f64(want))) <= 1e-2


# --- 2b. a real state dtype on complex params -----------------------------------------------

C64 = jnp.complex64
# every registry optimizer's dtype argument (the row's ``dtypes``) and the fields it sets
STATE_DTYPE_ARGS = [
    pytest.param(e, arg, fields, id=f"{e.name}-{arg}")
    for e in of_kind("optimizer")
    if e.grid and not e.needs_objective
    for arg, fields in e.dtype_fields.items()
]
SECOND_MOMENT_FIELDS = {"nu", "nu_max", "sum_of_squares", "e_g", "e_x"}  # |g|^2 statistics: real


def _complex_problem(n_steps: int = 3):
    """complex64 params and ``n_steps`` gradients N(0.3, 1) + i N(0, 1), stacked."""
    rng = np.random.default_rng(7)
    cplx = lambda shape, mean=0.0: mean + rng.normal(size=shape) + 1j * rng.normal(size=shape)  # noqa: E731
    params = {k: jnp.asarray(cplx(p.shape), C64) for k, p in F16_PARAMS.items()}
    grads = {k: jnp.asarray(cplx((n_steps, *p.shape), 0.3), C64) for k, p in F16_PARAMS.items()}
    return params, grads


def _with_fields(entry, arg: str, fields: tuple, params) -> dict:
    """The first grid point (less ``arg``) whose state has the fields ``arg`` sets (momentum on)."""
    for kwargs in entry.grid:
        kwargs = {k: v for k, v in kwargs.items() if k != arg}
        if set(fields) <= set(jax.eval_shape(entry.obj(**kwargs).init, params)._fields):
            return kwargs
    raise AssertionError(f"{entry.name}: no grid point keeps {fields}")


@pytest.mark.parametrize("entry, arg, fields", STATE_DTYPE_ARGS)
def test_a_real_state_dtype_on_complex_params_keeps_the_imaginary_part(entry, arg, fields):
    """Reference: the same optimizer without the dtype argument on the same complex64 params
    (complex64 first moments, float32 ``|g|^2`` statistics), 3 jitted steps. A real dtype
    asked for a complex leaf's first moment means the complex dtype of that precision
    (``gradtx.numerics.state_dtype``): with ``float32`` and ``bfloat16`` the first moments
    are complex64 (no complex bfloat16 exists) and the ``|g|^2`` statistics the real dtype
    asked for; with ``float32`` the updates are bit for bit the reference's, with
    ``bfloat16`` too where the argument sets only first moments, else within 2^-5 of the
    step's largest (bfloat16 statistics). Before the fix the cast to the real dtype dropped
    the imaginary part of the momentum silently (``test_optax_drops_...``: optax does)."""
    params, grads = _complex_problem()
    kwargs = _with_fields(entry, arg, fields, params)
    _, _, want, _ = scan_run(entry.obj(**kwargs), params, grads)
    for dtype in (F32, BF16):
        _, state, got, _ = scan_run(entry.obj(**kwargs, **{arg: dtype}), params, grads)
        for field in fields:
            expected = jnp.dtype(dtype) if field in SECOND_MOMENT_FIELDS else jnp.dtype(C64)
            assert {x.dtype for x in jax.tree.leaves(getattr(state, field))} == {expected}, (field, dtype)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.dtype == w.dtype == C64
            if dtype == F32 or not set(fields) & SECOND_MOMENT_FIELDS:
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=f"{dtype}")
            else:
                scale = np.max(np.abs(np.asarray(w)), axis=tuple(range(1, w.ndim)), keepdims=True)
                assert np.max(np.abs(np.asarray(g) - np.asarray(w)) / scale) <= 2.0**-5


def test_optax_drops_the_imaginary_part_of_a_real_mu_dtype():
    """The edge is real. Reference: optax 0.2.8's ``adam(1e-2)`` on complex64 params (3
    steps; gradtx's agrees within rtol 1e-5). ``gradtx.adam(1e-2, mu_dtype=bfloat16)`` is
    gradtx's ``adam(1e-2)`` bit for bit, and keeps ``mu`` complex64; optax's
    ``adam(1e-2, mu_dtype=bfloat16)`` casts ``mu`` to bfloat16, dropping its imaginary part
    (what gradtx did before), and its steps are more than 10% off."""
    params, grads = _complex_problem()
    _, _, want, _ = scan_run(optax.adam(1e-2), params, grads, optax.apply_updates)
    _, _, plain, _ = scan_run(gradtx.adam(1e-2), params, grads)
    _, state, got, _ = scan_run(gradtx.adam(1e-2, mu_dtype=BF16), params, grads)
    _, _, mutant, _ = scan_run(optax.adam(1e-2, mu_dtype=BF16), params, grads, optax.apply_updates)
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(C64)}
    assert_trees_close(plain, want, 1e-5)
    for g, p in zip(jax.tree.leaves(got), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(p))
    gap = max(
        float(np.max(np.abs(np.asarray(m) - np.asarray(w))) / np.max(np.abs(np.asarray(w))))
        for m, w in zip(jax.tree.leaves(mutant), jax.tree.leaves(want))
    )
    assert gap > 0.1, "optax's real mu_dtype kept the imaginary part"


# --- 3. step counts at the int32 maximum ----------------------------------------------------


def test_adam_count_saturates_and_bias_correction_is_finite():
    """References: optax 0.2.8 (its ``safe_increment`` saturates too) and the closed form.
    From ``count = 2^31 - 2`` two Adam steps leave ``count = 2^31 - 1`` (no wrap to -2^31);
    there ``1 - b^t`` is 1 in float32, so the update is ``-lr m / (sqrt(v) + eps)`` with the
    new moments uncorrected (rtol 1e-6), and optax's from the same state is the same."""
    p = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, -0.2])}
    g = jax.tree.map(lambda x: 0.3 - x, p)
    tx, twin = gradtx.adam(1e-2), optax.adam(1e-2)
    mu, nu = jax.tree.map(lambda x: 0.1 * x, p), jax.tree.map(lambda x: 0.2 * x * x, p)
    state = tx.init(p)._replace(count=jnp.asarray(INT32_MAX - 1, jnp.int32), mu=mu, nu=nu)
    ox_state = twin.init(p)
    ox_state = (ox_state[0]._replace(count=state.count, mu=mu, nu=nu), *ox_state[1:])
    step, ox_step = jax.jit(tx.update), jax.jit(twin.update)
    for _ in range(2):
        updates, state = step(g, state, p)
        ox_updates, ox_state = ox_step(g, ox_state, p)
        assert int(state.count) == INT32_MAX and int(ox_state[0].count) == INT32_MAX
        want = jax.tree.map(lambda m, v: -1e-2 * m / (jnp.sqrt(v) + 1e-8), state.mu, state.nu)
        for u, w, o in zip(jax.tree.leaves(updates), jax.tree.leaves(want), jax.tree.leaves(ox_updates)):
            assert all_finite(u)
            np.testing.assert_allclose(f64(u), f64(w), rtol=1e-6)
            np.testing.assert_allclose(f64(u), f64(o), rtol=1e-6)


def _with_learning_rate(entry) -> dict:
    kwargs = dict(entry.grid[0])
    if "learning_rate" in inspect.signature(entry.obj).parameters:
        kwargs.setdefault("learning_rate", 0.05)
    return kwargs


COUNTED = [e for e in of_kind("optimizer") if not e.needs_objective and "count" in (e.state or ())]


@pytest.mark.parametrize("entry", COUNTED, ids=lambda e: e.name)
def test_every_counting_optimizer_is_finite_at_the_int32_maximum(entry):
    """Reference: finiteness and saturation. Every registry optimizer whose state has a
    ``count`` (its first grid point), from ``count = 2^31 - 1``: one step keeps the count
    there and gives finite updates and state. (Before the fix Adafactor's decay, MADGRAD's
    ``sqrt(count + 1)`` and Schedule-Free AdamW's warmup and bias correction computed
    ``count + 1`` in int32, which wrapped to -2^31: NaN.)"""
    p = {"w": jnp.asarray([[0.5, -1.0, 0.3], [2.0, 0.25, -0.7]])}
    g = jax.tree.map(lambda x: 0.3 - x, p)
    tx = entry.obj(**_with_learning_rate(entry))
    state = tx.init(p)._replace(count=jnp.asarray(INT32_MAX, jnp.int32))
    updates, state = tx.update(g, state, p, **entry.update_extra)
    assert int(state.count) == INT32_MAX
    assert all_finite(updates), entry.name
    assert all_finite([x for x in jax.tree.leaves(state) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)])


_CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=20, end_value=0.05)
_T = INT32_MAX


def _wave(up: int, down: int) -> float:
    """The triangle wave at ``t = 2^31 - 1``: ``t mod (up + down)`` in Python integers."""
    x = _T % (up + down)
    return x / up if x < up else 1 - (x - up) / down


# name -> (arguments, the closed-form value at step 2^31 - 1)
SCHEDULES_AT_MAX: dict[str, list[tuple[dict, float]]] = {
    "ademamix_alpha_schedule": [(dict(alpha=8.0, warmup=100), 8.0)],
    "ademamix_b3_schedule": [(dict(b1=0.9, b3=0.999, warmup=100), 0.999)],
    "constant_schedule": [(dict(value=0.1), 0.1)],
    "polynomial_schedule": [
        (dict(init_value=1.0, end_value=0.01, power=2, transition_steps=100, transition_begin=10), 0.01)
    ],
    "linear_schedule": [(dict(init_value=1.0, end_value=0.01, transition_steps=100), 0.01)],
    "exponential_decay": [
        (dict(init_value=1.0, transition_steps=10, decay_rate=0.5), 0.0),
        (dict(init_value=1.0, transition_steps=10, decay_rate=0.9, staircase=True, end_value=0.01), 0.01),
        (dict(init_value=1.0, transition_steps=10, decay_rate=2.0, end_value=10.0), 10.0),
    ],
    "cosine_decay_schedule": [(dict(init_value=1.0, decay_steps=100, alpha=0.1), 0.1)],
    "warmup_constant_schedule": [(dict(init_value=0.0, peak_value=1.0, warmup_steps=10), 1.0)],
    "warmup_cosine_decay_schedule": [(_CYCLE, 0.05)],
    "warmup_exponential_decay_schedule": [
        (dict(init_value=0.0, peak_value=1.0, warmup_steps=10, transition_steps=10, decay_rate=0.5), 0.0)
    ],
    "piecewise_constant_schedule": [(dict(init_value=1.0, boundaries_and_scales={10: 0.5, 20: 0.1}), 0.05)],
    "piecewise_interpolate_schedule": [
        (dict(interpolate_type="cosine", init_value=1.0, boundaries_and_scales={10: 0.5, 20: 0.1}), 0.05)
    ],
    "linear_onecycle_schedule": [(dict(transition_steps=100, peak_value=1.0), 1.0 / (25.0 * 1e4))],
    "cosine_onecycle_schedule": [(dict(transition_steps=100, peak_value=1.0), 1.0 / (25.0 * 1e4))],
    "sgdr_schedule": [(dict(cosine_kwargs=[_CYCLE, _CYCLE]), 0.05)],
    "join_schedules": [
        (dict(schedules=[gradtx.constant_schedule(1.0), gradtx.linear_schedule(1.0, 0.5, 10)], boundaries=[5]), 0.5)
    ],
    "cyclic_schedule": [  # t mod period, in Python integers
        (dict(base_lr=0.1, max_lr=1.0, step_size=10), 0.1 + 0.9 * _wave(10, 10)),
        (dict(base_lr=0.1, max_lr=1.0, step_size=7, step_size_down=30), 0.1 + 0.9 * _wave(7, 30)),
        (dict(base_lr=0.1, max_lr=1.0, step_size=10, mode="triangular2"), 0.1),
        (dict(base_lr=0.1, max_lr=1.0, step_size=10, mode="exp_range", gamma=0.99), 0.1),
    ],
    "triangular_schedule": [(dict(base_value=0.0, max_value=1.0, step_size=10), _wave(10, 10))],
    "one_cycle_schedule": [
        (dict(max_lr=1.0, total_steps=100), 1.0 / (25.0 * 1e4)),
        (dict(max_lr=1.0, total_steps=100, three_phase=True, anneal_strategy="linear"), 1.0 / (25.0 * 1e4)),
    ],
    "warmup_stable_decay_schedule": [
        (
            dict(
                init_value=0.0,
                peak_value=1.0,
                warmup_steps=10,
                stable_steps=50,
                decay_steps=20,
                end_value=0.05,
                decay_shape="sqrt",
            ),
            0.05,
        )
    ],
}


def test_every_schedule_is_in_the_int32_table():
    assert sorted(SCHEDULES_AT_MAX) == sorted(e.name for e in of_kind("schedule"))


@pytest.mark.parametrize(
    "name, kwargs, want",
    [(name, kw, want) for name, cases in SCHEDULES_AT_MAX.items() for kw, want in cases],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_every_schedule_is_finite_at_the_int32_maximum(name, kwargs, want):
    """Reference: each schedule's closed form at ``t = 2^31 - 1`` (its final value, or the
    triangle wave at ``t mod period``), rtol 1e-5 (float32), for an int32 step (the
    optimizer's saturated count), eagerly and under jit. A ``count + 1`` computed in int32
    wraps to a negative step and misses it (AdEMAMix's alpha was then -1.7e8)."""
    schedule = getattr(gradtx, name)(**kwargs)
    t = jnp.asarray(INT32_MAX, jnp.int32)
    for value in (schedule(t), jax.jit(schedule)(t)):
        assert np.isfinite(f64(value))
        np.testing.assert_allclose(f64(value), want, rtol=1e-5, atol=1e-12)


# --- 4. zero and non-finite gradients -------------------------------------------------------

TREE = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.asarray([0.1, -0.2, 0.3])}


def test_clip_by_global_norm_of_zero_is_zero():
    """Reference: the closed form (0 scaled by anything is 0) and optax 0.2.8: an all-zero
    gradient comes back as exact zeros, eagerly and under jit, finite. Mutant: the naive
    ``u * max_norm / ||u||``, which is ``0 / 0 = NaN`` there."""
    zeros = jax.tree.map(jnp.zeros_like, TREE)
    tx = gradtx.clip_by_global_norm(1.0)
    for update in (tx.update, jax.jit(tx.update)):
        got, _ = update(zeros, tx.init(TREE))
        assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(got)) and all_finite(got)
    want, _ = optax.clip_by_global_norm(1.0).update(zeros, optax.EmptyState())
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(want))
    norm = gradtx.global_norm(zeros)
    naive = jax.tree.map(lambda u: u * 1.0 / norm, zeros)
    assert not all_finite(naive)


def _nonfinite_grads(n: int = 20):
    """``n`` gradient trees N(0.3, 1), with a NaN in ``w`` at step 5, an inf in ``b`` at
    step 9, and both at steps 14 and 15."""
    rng = np.random.default_rng(3)
    w = rng.normal(0.3, 1.0, (n, 2, 2))
    b = rng.normal(0.3, 1.0, (n, 3))
    w[5, 0, 1] = np.nan
    b[9, 2] = np.inf
    w[14, 1, 1], b[14, 0] = np.nan, -np.inf
    w[15, 0, 0] = np.nan
    return {"w": jnp.asarray(w, F32), "b": jnp.asarray(b, F32)}


def test_apply_if_finite_skips_a_nonfinite_gradient_changing_nothing():
    """Reference: optax 0.2.8's ``apply_if_finite`` and the rule. A gradient with a NaN
    gives a zero update and leaves the inner Adam state bit for bit as it was (so the params
    do not move); the counts record it; optax's update and inner state are the same.
    Mutant: zeroing the NaN and stepping the inner state (``zero_nans -> adam``) changes it."""
    grads = [jax.tree.map(lambda x: x * 0.1 + 0.2, TREE), jax.tree.map(lambda x: x.at[0].set(jnp.nan), TREE)]
    tx, twin = gradtx.apply_if_finite(gradtx.adam(0.1), 2), optax.apply_if_finite(optax.adam(0.1), 2)
    step, ox_step = jax.jit(tx.update), jax.jit(twin.update)
    state, ox_state = step(grads[0], tx.init(TREE), TREE)[1], ox_step(grads[0], twin.init(TREE), TREE)[1]
    updates, new = step(grads[1], state, TREE)
    ox_updates, ox_new = ox_step(grads[1], ox_state, TREE)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new.inner_state, state.inner_state))
    assert (int(new.notfinite_count), bool(new.last_finite), int(new.total_notfinite)) == (1, False, 1)
    np.testing.assert_array_equal(
        np.concatenate([f64(x).ravel() for x in jax.tree.leaves(updates)]),
        np.concatenate([f64(x).ravel() for x in jax.tree.leaves(ox_updates)]),
    )
    assert int(ox_new.notfinite_count) == 1 and int(ox_new.inner_state[0].count) == int(new.inner_state.count)
    mutant = gradtx.chain(gradtx.zero_nans(), gradtx.adam(0.1))
    m_state = mutant.update(grads[1], mutant.update(grads[0], mutant.init(TREE), TREE)[1], TREE)[1]
    assert int(m_state.count) != int(new.inner_state.count)


def _cleaned(grads):
    return jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)


def test_apply_if_finite_zero_nonfinite_is_the_inner_optimizer_on_the_finite_part():
    """Reference: optax 0.2.8's Adam on the gradients with each NaN and inf replaced by 0
    (the documented rule ``u -> inner(where(isfinite(u), u, 0))``), 20 steps, rtol 1e-6
    (and atol 1e-7 of each leaf's largest: XLA fuses the wrapper's select into Adam's loop,
    1 ulp); the counts are those of the skipping mode. Mutants: optax's ``zero_nans ->
    adam`` (an inf gets through: not finite) and the default skipping mode (a whole step
    dropped: off by far more than 1e-6)."""
    grads = _nonfinite_grads()
    want_params, *_ = scan_run(optax.adam(0.1), TREE, _cleaned(grads), optax.apply_updates)
    counts = lambda s: (s.notfinite_count, s.total_notfinite)  # noqa: E731
    tx = gradtx.apply_if_finite(gradtx.adam(0.1), 3, zero_nonfinite=True)
    got_params, got_state, _, got_counts = scan_run(tx, TREE, grads, record=counts)
    assert all_finite(got_params) and all_finite(got_state)
    assert_trees_close(got_params, want_params, rtol=1e-6)
    skip_params, _, _, skip_counts = scan_run(gradtx.apply_if_finite(gradtx.adam(0.1), 3), TREE, grads, record=counts)
    for got, want in zip(got_counts, skip_counts):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.asarray(got_counts[0]).tolist()[14:17] == [1, 2, 0]  # two in a row, then a finite one
    zero_nans_params, *_ = scan_run(optax.chain(optax.zero_nans(), optax.adam(0.1)), TREE, grads, optax.apply_updates)
    assert not all_finite(zero_nans_params)
    gap = max(
        np.max(np.abs(f64(s) - f64(w)) / np.max(np.abs(f64(w))))
        for s, w in zip(jax.tree.leaves(skip_params), jax.tree.leaves(want_params))
    )
    assert gap > 1e-3, "the skipping mode passed as zero_nonfinite"


def test_apply_if_finite_zero_nonfinite_gives_up_like_the_skipping_mode():
    """Reference: the rule. With ``max_consecutive_errors=1`` the second non-finite update in
    a row is applied as it is (the give-up), in both modes: the params become NaN."""
    nan = jax.tree.map(lambda x: x.at[0].set(jnp.nan), TREE)
    for zero in (False, True):
        tx = gradtx.apply_if_finite(gradtx.sgd(0.1), 1, zero_nonfinite=zero)
        state = tx.init(TREE)
        first, state = tx.update(nan, state, TREE)
        second, state = tx.update(nan, state, TREE)
        assert all_finite(first) and not all_finite(second) and int(state.notfinite_count) == 0
        if zero:  # the finite components of the first went through: -lr * g
            np.testing.assert_array_equal(np.asarray(first["b"][1:]), np.asarray(-0.1 * TREE["b"][1:]))


# --- 5. 10,000 float32 Adam steps against optax ---------------------------------------------

ROSENBROCK_STARTS = jnp.asarray([[-1.5, 2.0], [-1.0, -0.5], [0.0, 1.5], [1.8, 1.0]], F32)


def _rosenbrock(p):
    x, y = p[:, 0], p[:, 1]
    return jnp.sum((1 - x) ** 2 + 100.0 * (y - x**2) ** 2)


def _long_run(tx, apply_updates, n: int = 10_000):
    def body(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(_rosenbrock)(p), s, p)
        p = apply_updates(p, u)
        return (p, s), _rosenbrock(p)

    p = ROSENBROCK_STARTS
    (p, _), losses = jax.jit(lambda: jax.lax.scan(body, (p, tx.init(p)), None, length=n))()
    return p, losses


def _adam_from_stages(nu_offset: int = 0, debias_mu: bool = True):
    first = chain(scale_by_ema(0.9), bias_correct(0.9) if debias_mu else gradtx.identity())
    second = chain(second_moment(0.999), bias_correct(0.999, step_offset=nu_offset), sqrt_eps(eps=1e-8))
    return chain(fork(first, second, join=jnp.divide), scale_by_learning_rate(1e-3))


def test_ten_thousand_adam_steps_match_optax():
    """Reference: optax 0.2.8's ``adam(1e-3)``, the same 10,000 jitted steps (one
    ``lax.scan``) on four 2-d Rosenbrock valleys: the params and the loss at every step are
    finite and within rtol 1e-4 (bit for bit in practice). The run is not chaotic (a learning
    rate 2 ulps larger moves the end by 2e-7), so the tolerance is tight; mutants off by a
    formula fail it: ``v`` bias-corrected one step ahead (8e-3), ``m`` not bias-corrected
    (3e-2)."""
    want, want_loss = _long_run(optax.adam(1e-3), optax.apply_updates)
    got, got_loss = _long_run(gradtx.adam(1e-3), gradtx.apply_updates)
    assert all_finite(got) and all_finite(got_loss)
    np.testing.assert_allclose(f64(got), f64(want), rtol=1e-4)
    np.testing.assert_allclose(f64(got_loss), f64(want_loss), rtol=1e-4)
    assert np.max(np.abs(f64(_long_run(_adam_from_stages(), gradtx.apply_updates)[0]) - f64(got))) == 0
    for mutant in (_adam_from_stages(nu_offset=1), _adam_from_stages(debias_mu=False)):
        m, _ = _long_run(mutant, gradtx.apply_updates)
        assert np.max(np.abs(f64(m) - f64(want)) / np.abs(f64(want))) > 1e-4
