"""Running statistics of the Adam variants, and the directions built from them.

The new statistics: RAdam's rectification of the denominator, AdaBelief's "belief" (the
average of the squared prediction error ``(g - m)^2``), Yogi's additive second moment,
and Adan's gradient difference. The directions (optax's ``scale_by_radam``,
``scale_by_belief``, ``scale_by_yogi``, ``scale_by_adan``) are ``fork``\\ s of them with
the shared pieces of ``gradtx.moments`` (``scale_by_ema``, ``second_moment``,
``bias_correct``) and ``gradtx.scaling.sqrt_eps``, like ``adam_direction``.

A stage used in two branches keeps one field, read by both (``transform.merge_fields``):
AdaBelief's ``mu`` feeds both the numerator and the prediction error, Adan's previous
gradient ``g`` both the difference moment and the extrapolated gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx import _tree
from gradtx.combine import chain, fork, identity, renamed
from gradtx.hyperparams import Decay, DecayBelowOne, NonNegative, Real
from gradtx.moments import bias_correct, debiased_first_moment, scale_by_ema, second_moment
from gradtx.numerics import abs_sq, ema, heavy_ball, safe_increment
from gradtx.scaling import sqrt_eps
from gradtx.transform import Transformation, declare, primitive

# --- the new statistics ----------------------------------------------------------------


@declare
def rectification(b2: DecayBelowOne = 0.999, threshold: Real = 5.0) -> Transformation:
    """``rho_t = rho_inf - 2 t b2^t / (1 - b2^t) ; d -> d / r_t if rho_t >= threshold else 1``.

    RAdam's rectification of Adam's denominator ``d = sqrt(v_hat + eps_root) + eps``
    (Liu et al. 2019, https://arxiv.org/abs/1908.03265, Algorithm 2), with
    ``rho_inf = 2 / (1 - b2) - 1`` the maximal length of the approximated moving average
    and ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
    While ``rho_t < threshold`` the variance of the adaptive rate is intractable and the
    denominator is 1: ``m_hat / d`` becomes SGD with momentum, ``m_hat``. The paper's
    text says ``rho_t > 4``; ``>= threshold`` with ``threshold=5`` is the authors' code
    and optax's (with ``b2=0.999`` the rectified steps start at ``t = 6``).

    Args:
      b2: the decay of the second moment whose denominator is rectified, in [0, 1).
      threshold: the ``rho_t`` from which the adaptive rate is used.

    Reads the step count; keeps nothing of its own.
    """
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def apply(updates, state, step):
        t = safe_increment(step.count)
        b2t = b2**t
        rho = rho_inf - 2 * t * b2t / (1 - b2t)
        r = jnp.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
        on = rho >= threshold
        return jax.tree.map(lambda d: jnp.where(on, d / r.astype(d.dtype), jnp.ones_like(d)), updates), {}

    return primitive(apply, uses_count=True)


@declare
def belief_moment(decay: Decay = 0.999, eps_root: NonNegative = 1e-16) -> Transformation:
    """``nu = decay * nu + (1 - decay) * |u|^2 + eps_root ; u -> nu``.

    AdaBelief's ``s_t`` (Zhuang et al. 2020, https://arxiv.org/abs/2010.07468,
    Algorithm 2), fed the prediction error ``u = g - m_t``: the "belief" in the
    gradient. ``eps_root`` is added to the state at every step, as in the paper
    (``s_t = b2 s_{t-1} + (1 - b2)(g_t - m_t)^2 + eps``) and optax.

    Args:
      decay: the averaging factor, in [0, 1].
      eps_root: added to ``nu`` at every step.

    State: ``nu`` (real-valued for complex updates).
    """

    def apply(updates, state, step):
        nu = jax.tree.map(lambda e, n: (ema(abs_sq(e), n, decay) + eps_root).astype(n.dtype), updates, state["nu"])
        return nu, {"nu": nu}

    return primitive(apply, {"nu": _tree.real_full_like})


@declare
def yogi_moment(decay: Decay = 0.999, initial_accumulator_value: NonNegative = 1e-6) -> Transformation:
    """``nu = nu - (1 - decay) * sign(nu - |u|^2) * |u|^2 ; u -> nu``.

    Yogi's additive second moment (Zaheer et al. 2018, NeurIPS, "Adaptive Methods for
    Nonconvex Optimization", Algorithm 2): ``nu`` moves towards ``|u|^2`` by
    ``(1 - decay) * |u|^2``, whatever its distance from it, where Adam's moves by
    ``(1 - decay) * (|u|^2 - nu)``: a large ``nu`` shrinks slowly.

    Args:
      decay: the rate, in [0, 1].
      initial_accumulator_value: the value ``nu`` starts at.

    State: ``nu`` (real-valued for complex updates).
    """

    def apply(updates, state, step):
        def move(g, v):
            g2 = abs_sq(g)
            return (v - (1 - decay) * jnp.sign(v - g2) * g2).astype(v.dtype)

        nu = jax.tree.map(move, updates, state["nu"])
        return nu, {"nu": nu}

    return primitive(apply, {"nu": lambda params: _tree.real_full_like(params, initial_accumulator_value)})


@declare
def gradient_difference() -> Transformation:
    """``d = u - g (0 at the first step) ; g = u ; u -> d``.

    Adan's ``g_k - g_{k-1}`` (Xie et al. 2022, https://arxiv.org/abs/2208.06677,
    Algorithm 1); at the first step there is no previous gradient and the difference is
    0, as in the authors' code and optax.

    Reads the step count. State: ``g``, the previous updates.
    """

    def apply(updates, state, step):
        # (u - g) * 0 at the first step: a product, not a jnp.where on a shared predicate,
        # so that update_and_apply's step fuses into one loop per leaf (a select made XLA
        # split the params loop from the state loop and copy every state field)
        later = jnp.minimum(step.count, 1)
        d = jax.tree.map(lambda u, g: (u - g) * later.astype(u.dtype), updates, state["g"])
        return d, {"g": _tree.cast_like(updates, state["g"])}

    return primitive(apply, {"g": _tree.zeros_like}, uses_count=True)


# --- the directions ---------------------------------------------------------------------


@declare
def scale_by_radam(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    threshold: Real = 5.0,
    *,
    nesterov: bool = False,
) -> Transformation:
    """``u -> m_hat / rectification(sqrt(v_hat + eps_root) + eps)``: RAdam's direction.

    ``r_t * m_hat / (sqrt(v_hat + eps_root) + eps)`` once ``rho_t >= threshold``,
    ``m_hat`` before (see ``rectification``); ``nesterov`` takes NAdam's ``m_hat``.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), second_moment(b2) -> bias_correct(b2)
    -> sqrt_eps -> rectification(b2, threshold), join=divide)``. State: ``count, mu, nu``
    (optax's ``scale_by_radam``).
    """
    second = chain(
        second_moment(b2), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root), rectification(b2, threshold)
    )
    return fork(debiased_first_moment(scale_by_ema(b1), b1, nesterov=nesterov), second, join=jnp.divide)


@declare
def scale_by_belief(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-16,
    eps_root: NonNegative = 1e-16,
    *,
    nesterov: bool = False,
) -> Transformation:
    """``u -> m_hat / (sqrt(s_hat) + eps)``, ``s = ema((g - m)^2) + eps_root``: AdaBelief's direction.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), fork(identity, scale_by_ema(b1),
    join=subtract) -> belief_moment(b2, eps_root) -> bias_correct(b2) -> sqrt_eps(eps),
    join=divide)``, one ``scale_by_ema`` stage in both branches. State: ``count, mu, nu``
    (optax's ``scale_by_belief``).
    """
    mu = scale_by_ema(b1)
    prediction_error = fork(identity(), mu, join=jnp.subtract)
    second = chain(prediction_error, belief_moment(b2, eps_root), bias_correct(b2), sqrt_eps(eps=eps))
    return fork(debiased_first_moment(mu, b1, nesterov=nesterov), second, join=jnp.divide)


@declare
def scale_by_yogi(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-3,
    eps_root: NonNegative = 0.0,
    initial_accumulator_value: NonNegative = 1e-6,
) -> Transformation:
    """``u -> m_hat / (sqrt(v_hat + eps_root) + eps)`` with Yogi's ``v``: Yogi's direction.

    ``m`` starts at 0, as in the paper (Algorithm 2, ``m_0 = 0``) and the authors'
    TensorFlow code; optax 0.2.8 starts it at ``initial_accumulator_value`` too, which
    adds ``b1 * iav / (1 - b1)`` (9e-6 by default) to every coordinate of the first
    ``m_hat``: a bias as large as the gradient for gradients of 1e-5. Where
    ``initial_accumulator_value=0`` the two agree.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), yogi_moment(b2,
    initial_accumulator_value) -> bias_correct(b2) -> sqrt_eps, join=divide)``.
    State: ``count, mu, nu`` (optax's ``scale_by_yogi``).
    """
    second = chain(yogi_moment(b2, initial_accumulator_value), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root))
    return fork(debiased_first_moment(scale_by_ema(b1), b1, nesterov=False), second, join=jnp.divide)


@declare
def scale_by_adan(
    b1: DecayBelowOne = 0.98,
    b2: DecayBelowOne = 0.92,
    b3: DecayBelowOne = 0.99,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
) -> Transformation:
    """``u -> (m_hat + b2 * v_hat) / (sqrt(n_hat + eps_root) + eps)``: Adan's direction::

        d = g - g_prev (0 at the first step)
        m = b1 * m + (1 - b1) * g              m_hat = m / (1 - b1^t)
        v = b2 * v + (1 - b2) * d              v_hat = v / (1 - b2^t)
        n = b3 * n + (1 - b3) * |g + b2 * d|^2 n_hat = n / (1 - b3^t)

    This is Algorithm 1 of Xie et al. 2022 (https://arxiv.org/abs/2208.06677) in the
    authors' code's convention (the paper's ``beta_i`` is ``1 - b_i`` here), whose factor
    ``1 - beta_2`` on the difference terms is ``b2``. optax 0.2.8 uses ``1 - b2`` there
    (0.08 instead of 0.92 by default; google-deepmind/optax#1715): gradtx follows the
    paper and the authors' code; the two agree only at ``b2 = 0.5``.

    Chain: ``fork(fork(scale_by_ema(b1) -> bias_correct(b1), gradient_difference ->
    scale_by_ema(b2) -> bias_correct(b2), join=m + b2 v), fork(identity, gradient_difference,
    join=g + b2 d) -> second_moment(b3) -> bias_correct(b3) -> sqrt_eps, join=divide)``,
    one ``gradient_difference`` stage in both branches. State: ``count, m, g, v, n``
    (optax's ``scale_by_adan`` calls ``count`` ``t``).
    """
    difference = gradient_difference()
    plus_b2 = lambda x, y: heavy_ball(x, y, b2)  # noqa: E731 - x + b2 * y
    numerator = fork(
        chain(renamed(scale_by_ema(b1), mu="m"), bias_correct(b1)),
        chain(difference, renamed(scale_by_ema(b2), mu="v"), bias_correct(b2)),
        join=plus_b2,
    )
    denominator = chain(
        fork(identity(), difference, join=plus_b2),
        renamed(second_moment(b3), nu="n"),
        bias_correct(b3),
        sqrt_eps(eps=eps, eps_root=eps_root),
    )
    return fork(numerator, denominator, join=jnp.divide)
