"""The Adam variants (nadamw, adamaxw, radam, adabelief, yogi, adan) and their statistics
(``gradtx/adaptive_moments.py``), beyond the registry-driven parity with optax 0.2.8:

- closed forms from the papers: RAdam's rectification switching on at the first step
  where ``rho_t >= threshold`` (Liu et al. 2019), Yogi's ``sign(v - g^2)`` update
  (Zaheer et al. 2018), Adan's gradient difference (Xie et al. 2022);
- the two optax defects gradtx does not copy, each tested against the right reference:
  Adan's ``1 - b2`` weight (the authors' algorithm, in numpy) and Yogi's first moment
  started at 1e-6 (optax with ``m_0 = 0``, the paper's);
- negative controls: a wrong formula per new primitive fails the float32 comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    assert_trees_close,
    check_parity,
    parity_inputs,
    run_optax,
    run_steps,
)

import gradtx
from gradtx.registry import BY_NAME
from gradtx.rows._entry import ndim_above_one, parity_schedule
from gradtx.rows.adam_variants import _ADAN_AT_HALF, _ADAN_MOVED

ADAN_RENAMES = {"count": "t"}


# --- RAdam: the rectification switches on where rho_t >= threshold -------------------------


def radam_closed_form(grads, lr, b1, b2, eps, threshold):
    """Liu et al. 2019, Algorithm 2, in numpy float64 for one leaf: the updates and, for
    each step, whether it was rectified."""
    rho_inf = 2 / (1 - b2) - 1
    m = v = 0.0
    out, rectified = [], []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            out.append(-lr * r * m_hat / (np.sqrt(v_hat) + eps))
        else:
            out.append(-lr * m_hat)
        rectified.append(rho >= threshold)
    return out, rectified


@pytest.mark.parametrize("b2,threshold,first_rectified", [(0.999, 5.0, 6), (0.95, 6.0, 7), (0.9, 4.0, 5)])
def test_radam_rectification_switches_on_where_rho_reaches_the_threshold(b2, threshold, first_rectified, jit):
    """Reference: Algorithm 2 of Liu et al. 2019 (arXiv:1908.03265) in numpy float64, 10
    steps, rtol 1e-9 (``rho_t`` is the difference of two numbers ~300 times larger): SGD
    with momentum, ``-lr * m_hat``, until ``rho_t >= threshold``, then ``-lr * r_t * m_hat
    / (sqrt(v_hat) + eps)``, more than 1% away from the momentum step; with ``b2=0.999``
    the first rectified step is the 6th (``rho_5 = 4.996``, ``rho_6 = 5.994``)."""
    lr, b1, eps = 0.1, 0.9, 1e-3
    grads = np.random.default_rng(0).normal(size=(10, 3)) + 0.3
    want, rectified = radam_closed_form(grads, lr, b1, b2, eps, threshold)
    assert rectified.index(True) + 1 == first_rectified
    with jax.enable_x64(True):
        opt = gradtx.radam(lr, b1, b2, eps, threshold=threshold)
        update = jax.jit(opt.update) if jit else opt.update
        state = opt.init(jnp.zeros(3))
        for t, (g, w) in enumerate(zip(grads, want), start=1):
            u, state = update(jnp.asarray(g), state)
            np.testing.assert_allclose(np.asarray(u), w, rtol=1e-9, err_msg=f"step {t}")
            momentum_step = -lr * np.asarray(state.mu) / (1 - b1**t)
            if t < first_rectified:
                np.testing.assert_allclose(np.asarray(u), momentum_step, rtol=1e-12)
            else:  # rectified: the adaptive step, which is no longer the momentum step
                assert np.all(np.abs(np.asarray(u) / momentum_step - 1) > 1e-2), t


# --- Yogi: the additive second moment, and optax's first moment ----------------------------


def test_yogi_moment_moves_by_sign_of_nu_minus_g_squared(jit):
    """Reference: Zaheer et al. 2018, Algorithm 2, ``v_t = v_{t-1} - (1 - b2) sign(v_{t-1}
    - g_t^2) g_t^2``, by hand: from ``nu = 1`` a gradient of 2 (``g^2 = 4 > nu``) adds
    ``(1 - b2) * 4``, one of 0.5 (``g^2 = 0.25 < nu``) subtracts ``(1 - b2) * 0.25``, one
    with ``g^2 = nu`` leaves ``nu``; ``|g|^2`` for a complex gradient."""
    b2 = 0.9
    tx = gradtx.yogi_moment(b2, initial_accumulator_value=1.0)
    update = jax.jit(tx.update) if jit else tx.update
    out, state = update(jnp.array([2.0, 0.5, -1.0]), tx.init(jnp.zeros(3)))
    np.testing.assert_allclose(np.asarray(state.nu), [1 + 0.1 * 4, 1 - 0.1 * 0.25, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(state.nu))
    # Adam's nu would move by (1 - b2) * (g^2 - nu): 1.3, 0.925, 1; Yogi's far less when nu >> g^2
    out, state = update(jnp.array([0.0 + 0.0j, 3j, 1.0]).astype(jnp.complex64), tx.init(jnp.zeros(3, jnp.complex64)))
    assert state.nu.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(state.nu), [1.0, 1 + 0.1 * 9, 1.0], rtol=1e-6)


def optax_yogi_from_zero(**kwargs) -> optax.GradientTransformation:
    """``optax.yogi`` with its first moment started at 0, as in the paper (Algorithm 2,
    ``m_0 = 0``) and the authors' TensorFlow code (a zeros slot), instead of optax's 1e-6."""
    t = optax.yogi(**kwargs)

    def init(params):
        yogi_state, *rest = t.init(params)
        return (yogi_state._replace(mu=optax.tree.zeros_like(params)), *rest)

    return optax.GradientTransformation(init, t.update)


YOGI_GRID = BY_NAME["yogi"].grid


@pytest.mark.parametrize("kwargs", YOGI_GRID, ids=[str(i) for i in range(len(YOGI_GRID))])
def test_yogi_matches_optax_with_the_papers_first_moment(kwargs, precision, jit):
    """Reference: ``optax.yogi`` (0.2.8) with ``m_0 = 0`` (``optax_yogi_from_zero``), the
    registry's grid, 200 steps, rtol 1e-10 (float64) / 1e-5 (float32): params, last
    updates, every state field."""
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    want = run_optax(optax_yogi_from_zero(**kwargs), params, grads, jit=jit)
    check_parity(gradtx.yogi(**kwargs), want, precision, jit)


def test_optax_yogi_first_moment_bias():
    """The optax defect, against the paper's first step in closed form (Algorithm 2 with
    optax's bias correction, ``m_0 = 0``, ``v_0 = 1e-6``): for gradients of 1e-5, optax's
    first update is off by the ``b1 * 1e-6 / (1 - b1) = 9e-6`` its ``m_0`` adds to
    ``m_hat`` (the +1e-5 coordinate moves 1.9x as far as the -1e-5 one); gradtx's is the
    closed form (rtol 1e-5, float32)."""
    b1, b2, eps, v0 = 0.9, 0.999, 1e-3, 1e-6
    g = np.array([1e-5, -1e-5])
    v1 = v0 - (1 - b2) * np.sign(v0 - g**2) * g**2
    closed_form = g / (np.sqrt(v1 / (1 - b2)) + eps)  # m_hat_1 = g
    ours, _ = gradtx.scale_by_yogi().update(jnp.asarray(g, jnp.float32), gradtx.scale_by_yogi().init(jnp.zeros(2)))
    theirs, _ = optax.scale_by_yogi().update(jnp.asarray(g, jnp.float32), optax.scale_by_yogi().init(jnp.zeros(2)))
    np.testing.assert_allclose(np.asarray(ours), closed_form, rtol=1e-5)
    biased = (g + b1 * v0 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    np.testing.assert_allclose(np.asarray(theirs), biased, rtol=1e-5)
    assert abs(theirs[0] / theirs[1]) > 1.8  # optax: not symmetric in the sign of g


# --- Adan: the authors' algorithm, and optax at b2 = 0.5 -----------------------------------


def adan_reference(params, grads, learning_rate, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8,
                   weight_decay=0.0, mask=None):
    """The authors' Adan (sail-sg/Adan ``adan.py``, ``_single_tensor_adan`` with
    ``no_prox=True``, the decoupled decay optax and gradtx use) in numpy float64, leaf by
    leaf; Algorithm 1 of arXiv:2208.06677 with ``b_i = 1 - beta_i``. ``eps_root`` inside
    the root, as optax defines it. Returns the final params."""
    keep = jax.tree.leaves(mask(params)) if mask else [True] * len(jax.tree.leaves(params))
    ps = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    m, v, n = ([np.zeros_like(p) for p in ps] for _ in range(3))
    prev = [None] * len(ps)
    for t, tree in enumerate(grads, start=1):
        lr = float(learning_rate(t - 1)) if callable(learning_rate) else learning_rate
        for i, g in enumerate(np.asarray(x, np.float64) for x in jax.tree.leaves(tree)):
            diff = np.zeros_like(g) if prev[i] is None else g - prev[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * diff
            n[i] = b3 * n[i] + (1 - b3) * (g + b2 * diff) ** 2
            denom = np.sqrt(n[i] / (1 - b3**t) + eps_root) + eps
            step = (m[i] / (1 - b1**t) + b2 * v[i] / (1 - b2**t)) / denom
            ps[i] = ps[i] - lr * (step + (weight_decay * ps[i] if keep[i] else 0.0))
            prev[i] = g
    return jax.tree.unflatten(jax.tree.structure(params), ps)


ADAN_GRID = BY_NAME["adan"].grid


@pytest.mark.parametrize("kwargs", ADAN_GRID, ids=[str(i) for i in range(len(ADAN_GRID))])
def test_adan_matches_the_authors_algorithm(kwargs, jit):
    """Reference: ``adan_reference`` (the authors' algorithm in numpy float64), the
    registry's grid, 200 steps, float64, rtol 1e-10 on the params."""
    with jax.enable_x64(True):
        params, grads = parity_inputs("float64")
        got = run_steps(gradtx.adan(**kwargs), params, grads, jit=jit)
        assert_trees_close(got.params, adan_reference(params, grads, **kwargs), 1e-10, what="params")


def test_optax_adan_is_not_the_authors_algorithm():
    """The optax defect, against the same reference: ``optax.adan`` (0.2.8) weights the
    gradient difference by ``1 - b2`` (google-deepmind/optax#1715), and its params after
    200 steps at the default ``b2 = 0.92`` miss the authors' algorithm beyond rtol 1e-5
    (float64), where gradtx's match it (``test_adan_matches_the_authors_algorithm``)."""
    with jax.enable_x64(True):
        params, grads = parity_inputs("float64")
        theirs = run_optax(optax.adan(1e-2), params, grads, jit=True)
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_trees_close(theirs.params, adan_reference(params, grads, 1e-2), 1e-5, what="optax.adan")


ADAN_AT_HALF = [
    dict(learning_rate=1e-2, **_ADAN_AT_HALF),
    dict(learning_rate=parity_schedule, **_ADAN_AT_HALF, weight_decay=0.1, mask=ndim_above_one),
]


@pytest.mark.parametrize("kwargs", ADAN_AT_HALF, ids=["constant", "schedule,weight_decay,mask"])
def test_adan_matches_optax_where_its_weight_is_right(kwargs, precision, jit):
    """Reference: ``optax.adan`` (0.2.8) at ``b2 = 0.5``, where its ``1 - b2`` is the
    paper's ``b2``: everything else (moments, bias corrections, eps, decay, schedule)
    agrees to rtol 1e-10 (float64) / 1e-5 (float32), state fields by name (``t`` is
    ``count``; with a schedule optax counts the steps a second time, in ``count``)."""
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    want = run_optax(optax.adan(**kwargs), params, grads, jit=jit)
    absent = ("count",) if callable(kwargs["learning_rate"]) else ()
    check_parity(gradtx.adan(**kwargs), want, precision, jit, renames=ADAN_RENAMES, absent=absent)


def test_gradient_difference_closed_form(jit):
    """Reference: Xie et al. 2022's ``g_k - g_{k-1}`` by hand: 0 at the first step (no
    previous gradient, as in the authors' code), then the difference; ``g`` keeps the last
    gradient."""
    tx = gradtx.gradient_difference()
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(jnp.zeros(2))
    out, state = update(jnp.array([1.0, -2.0]), state)
    np.testing.assert_array_equal(np.asarray(out), [0.0, 0.0])
    out, state = update(jnp.array([1.5, 1.0]), state)
    np.testing.assert_array_equal(np.asarray(out), [0.5, 3.0])
    np.testing.assert_array_equal(np.asarray(state.g), [1.5, 1.0])
    assert int(state.count) == 2


# --- negative controls ----------------------------------------------------------------------

LR = 1e-2
BELIEF = dict(b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4)
YOGI = dict(learning_rate=LR, b1=0.8, b2=0.95, eps=1e-2)


def _adam_like(first, second):
    return gradtx.chain(gradtx.fork(first, second, join=jnp.divide), gradtx.scale_by_learning_rate(LR))


def _m_hat(b1, mu=None):
    return gradtx.chain(mu or gradtx.scale_by_ema(b1), gradtx.bias_correct(b1))


def _belief_eps_root_once():
    """AdaBelief with ``eps_root`` added once under the root, not to ``s`` at every step."""
    b1, b2, eps, eps_root = BELIEF.values()
    mu = gradtx.scale_by_ema(b1)
    error = gradtx.fork(gradtx.identity(), mu, join=jnp.subtract)
    return _adam_like(_m_hat(b1, mu), gradtx.chain(error, gradtx.second_moment(b2), gradtx.bias_correct(b2),
                                                    gradtx.sqrt_eps(eps=eps, eps_root=eps_root)))


def _yogi_step(step):
    """Yogi with its second moment's step ``step(nu, g^2)`` (``nu -> nu - step``)."""
    b2 = YOGI["b2"]

    def apply(updates, state, _):
        nu = jax.tree.map(lambda g, v: v - step(v, g**2), updates, state["nu"])
        return nu, {"nu": nu}

    moment = gradtx.primitive(apply, {"nu": lambda p: jax.tree.map(lambda x: jnp.full_like(x, 1e-6), p)})
    return _adam_like(_m_hat(YOGI["b1"]), gradtx.chain(moment, gradtx.bias_correct(b2), gradtx.sqrt_eps(YOGI["eps"])))


def _adan_with(difference_apply):
    """Adan (b2 = 0.5, ``_ADAN_AT_HALF``) with another gradient difference."""
    b1, b2, b3, eps, eps_root = _ADAN_AT_HALF.values()
    diff = gradtx.primitive(difference_apply, {"g": lambda p: jax.tree.map(jnp.zeros_like, p)}, uses_count=True)
    plus = lambda x, y: x + b2 * y  # noqa: E731
    numerator = gradtx.fork(
        _m_hat(b1, gradtx.renamed(gradtx.scale_by_ema(b1), mu="m")),
        gradtx.chain(diff, gradtx.renamed(gradtx.scale_by_ema(b2), mu="v"), gradtx.bias_correct(b2)), join=plus)
    denominator = gradtx.chain(gradtx.fork(gradtx.identity(), diff, join=plus),
                               gradtx.renamed(gradtx.second_moment(b3), nu="n"), gradtx.bias_correct(b3),
                               gradtx.sqrt_eps(eps=eps, eps_root=eps_root))
    return gradtx.chain(gradtx.fork(numerator, denominator, join=jnp.divide), gradtx.scale_by_learning_rate(LR))


def _no_first_step_zero(updates, state, step):
    return jax.tree.map(jnp.subtract, updates, state["g"]), {"g": updates}


def _reversed_difference(updates, state, step):
    d = jax.tree.map(lambda u, g: jnp.where(step.count == 0, 0.0, g - u), updates, state["g"])
    return d, {"g": updates}


def _second_moment_after(b2, threshold, rectify_b2):
    return gradtx.chain(gradtx.second_moment(b2), gradtx.bias_correct(b2), gradtx.sqrt_eps(1e-8),
                        gradtx.rectification(rectify_b2, threshold))


# (what is wrong, the wrong formula, the right reference: an optax run)
MUTANTS = [
    # rectification
    ("radam as adam", lambda: gradtx.adam(LR), lambda: optax.radam(LR)),
    ("radam never rectified", lambda: gradtx.radam(LR, threshold=1e9), lambda: optax.radam(LR)),
    ("radam rectified with another b2", lambda: _adam_like(_m_hat(0.9), _second_moment_after(0.999, 5.0, 0.99)),
     lambda: optax.radam(LR)),
    # belief_moment
    ("adabelief with the second moment of g", lambda: _adam_like(_m_hat(0.8), gradtx.chain(
        gradtx.second_moment(0.95), gradtx.bias_correct(0.95), gradtx.sqrt_eps(eps=1e-3, eps_root=1e-4))),
     lambda: optax.adabelief(LR, **BELIEF)),
    ("adabelief with eps_root once", _belief_eps_root_once, lambda: optax.adabelief(LR, **BELIEF)),
    # yogi_moment
    ("yogi with adam's second moment", lambda: _yogi_step(lambda v, g2: (1 - YOGI["b2"]) * (v - g2)),
     lambda: optax_yogi_from_zero(**YOGI)),
    ("yogi stepping by nu, not g^2", lambda: _yogi_step(lambda v, g2: (1 - YOGI["b2"]) * jnp.sign(v - g2) * v),
     lambda: optax_yogi_from_zero(**YOGI)),
    # gradient_difference
    ("adan without the first-step zero", lambda: _adan_with(_no_first_step_zero),
     lambda: optax.adan(LR, **_ADAN_AT_HALF)),
    ("adan with g_prev - g", lambda: _adan_with(_reversed_difference), lambda: optax.adan(LR, **_ADAN_AT_HALF)),
    # the Adan weight: optax's 1 - b2 against the paper's b2, at a b2 where they differ
    ("adan with b2 for 1 - b2", lambda: gradtx.adan(LR, **_ADAN_MOVED), lambda: optax.adan(LR, **_ADAN_MOVED)),
]


@pytest.mark.parametrize("what,wrong,right", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_tolerances_catch_wrong_formulas(what, wrong, right):
    """Negative control (jitted, float32): the params of a wrong formula differ from the
    optax 0.2.8 run of the right one (``optax_yogi_from_zero`` for Yogi) beyond rtol 1e-5.
    The last row is the other way round: gradtx's Adan is the paper's, optax's is not, and
    they differ wherever ``b2 != 0.5``."""
    params, grads = parity_inputs("float32")
    got = run_steps(wrong(), params, grads, jit=True)
    want = run_optax(right(), params, grads, jit=True)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got.params, want.params, 1e-5, what=what)


def test_the_controls_are_right_without_the_mutation():
    """The helpers of the controls, unmutated, match their references (rtol 1e-5,
    float32, jitted): ``_yogi_step`` with Yogi's step is ``optax_yogi_from_zero``, and
    ``_adan_with`` the right difference is ``optax.adan`` at b2 = 0.5; so each control
    fails for its mutation only."""
    params, grads = parity_inputs("float32")

    def right_difference(updates, state, step):
        d = jax.tree.map(lambda u, g: jnp.where(step.count == 0, 0.0, u - g), updates, state["g"])
        return d, {"g": updates}

    for gx, ox in [
        (_yogi_step(lambda v, g2: (1 - YOGI["b2"]) * jnp.sign(v - g2) * g2), optax_yogi_from_zero(**YOGI)),
        (_adan_with(right_difference), optax.adan(LR, **_ADAN_AT_HALF)),
    ]:
        got, want = run_steps(gx, params, grads, jit=True), run_optax(ox, params, grads, jit=True)
        assert_trees_close(got.params, want.params, 1e-5)
