"""Recent first-order methods: ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp, and the cautious wrapper.

optax.contrib 0.2.8's names, arguments and defaults; each optimizer a chain of the
shared primitives and of those of ``gradtx.recent_moments`` (no new math here).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gradtx.base import ScalarOrSchedule
from gradtx.combine import chain, fork, identity, renamed
from gradtx.hyperparams import (
    AccumulatorDtype,
    Decay,
    DecayBelowOne,
    LearningRate,
    NonNegative,
    NonNegativeOrSchedule,
)
from gradtx.moments import bias_correct, scale_by_ema, second_moment, trace
from gradtx.numerics import ema
from gradtx.recent_moments import (
    DecayOrSchedule,
    adopt_normalize,
    asynchronous_belief,
    dual_averaging_point,
    keep_agreeing,
    move_towards,
    quarter_root,
    scheduled_ema,
)
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale, scale_by_learning_rate, scale_by_schedule, sqrt_eps
from gradtx.transform import Field, Transformation, declare, primitive, update_inner
from gradtx.wrappers import Inner

__all__ = [
    "acprop",
    "ademamix",
    "adopt",
    "cautious",
    "madgrad",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_madgrad",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
]


def _scaled_by(factor: ScalarOrSchedule) -> Transformation:
    """``u -> factor * u``, ``factor`` a number or a schedule ``t -> factor``."""
    if callable(factor):
        return scale_by_schedule(factor)  # type: ignore[arg-type]
    return scale(factor)


# --- ADOPT -----------------------------------------------------------------------------


@declare
def scale_by_adopt(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.9999,
    eps: NonNegative = 1e-6,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_root,
) -> Transformation:
    """``u -> m``, ADOPT's direction: ``m = ema(clip(g / max(sqrt(v_prev), eps), c(t)), b1)``.

    Chain: ``adopt_normalize(b2, eps, use_clipping, clip_value_fn) -> scale_by_ema(b1)``;
    with ``nesterov``, ``fork(identity, scale_by_ema(b1), join=ema(., m, b1))`` after the
    normalization (optax's look-ahead). State: ``count, nu, mu`` (optax's ``count, mu, nu``).
    """
    mu = scale_by_ema(b1, accumulator_dtype=mu_dtype)
    first = fork(identity(), mu, join=lambda x, m: ema(x, m, b1)) if nesterov else mu
    return chain(adopt_normalize(b2, eps, use_clipping, clip_value_fn), first)


@declare
def adopt(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.9999,
    eps: NonNegative = 1e-6,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_root,
) -> Transformation:
    """ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2 with
    the Optimal Rate", https://arxiv.org/abs/2411.02853, Algorithm 2)::

        v_0 = g_0^2                                              (t = 0: no step)
        m_t = b1 * m_{t-1} + (1 - b1) * clip(g_t / max(sqrt(v_{t-1}), eps), c_t)
        p_t = p_{t-1} - lr * m_t
        v_t = b2 * v_{t-1} + (1 - b2) * g_t^2

    with ``c_t = clip_value_fn(t) = t^(1/4)`` (no clipping with ``use_clipping=False``);
    ``nesterov`` steps along ``b1 * m_t + (1 - b1) * clip(...)``. The step ``t`` counts the
    updates before this one, as the paper's (the authors' PyTorch code, and
    pytorch_optimizer's, clip at ``(t + 1)^(1/4)``: pass ``lambda t: (t + 1) ** 0.25``).

    Chain: ``adopt_normalize(b2, eps, use_clipping, clip_value_fn) -> scale_by_ema(b1)
    -> scale_by_learning_rate`` (``scale_by_adopt -> scale_by_learning_rate``).
    State: ``count, nu, mu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adopt(0.1)
    >>> params = jnp.zeros(2)
    >>> updates, state = opt.update(jnp.array([2.0, -1.0]), opt.init(params))
    >>> bool((updates == 0).all()), state.nu  # the first step only initialises nu = g^2
    (True, Array([4., 1.], dtype=float32))
    >>> updates, state = opt.update(jnp.array([2.0, -1.0]), state)
    >>> updates  # -lr * (1 - b1) * clip(g / |g|, 1)
    Array([-0.01,  0.01], dtype=float32)
    """
    return chain(
        scale_by_adopt(
            b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping, clip_value_fn=clip_value_fn
        ),
        scale_by_learning_rate(learning_rate),
    )


# --- AdEMAMix --------------------------------------------------------------------------


@declare
def scale_by_ademamix(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    b3: DecayOrSchedule = 0.9999,
    alpha: NonNegativeOrSchedule = 6.0,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``u -> (m1_hat + alpha(t) * m2) / (sqrt(nu_hat + eps_root) + eps)``: AdEMAMix's direction.

    Chain: ``fork(fork(scale_by_ema(b1) -> bias_correct(b1), scheduled_ema(b3) -> scale(alpha),
    join=add), second_moment(b2) -> bias_correct(b2) -> sqrt_eps, join=divide)``.
    State: ``count, m1, m2, nu`` (optax's; optax keeps a second count, ``count_m2``,
    always equal to ``count``). ``mu_dtype`` sets ``m1`` and ``m2``, the first moments;
    optax 0.2.8 stores ``nu`` in it too.
    """
    fast = chain(renamed(scale_by_ema(b1, accumulator_dtype=mu_dtype), mu="m1"), bias_correct(b1))
    slow = chain(renamed(scheduled_ema(b3, accumulator_dtype=mu_dtype), mu="m2"), _scaled_by(alpha))
    second = chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root))
    return fork(fork(fast, slow, join=jnp.add), second, join=jnp.divide)


@declare
def ademamix(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    b3: DecayOrSchedule = 0.9999,
    alpha: NonNegativeOrSchedule = 5.0,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older",
    https://arxiv.org/abs/2409.03137, Algorithm 1)::

        m1 = b1 * m1 + (1 - b1) * g               m1_hat = m1 / (1 - b1^t)
        m2 = b3(t) * m2 + (1 - b3(t)) * g         (the slow average: no debiasing)
        nu = b2 * nu + (1 - b2) * g^2             nu_hat = nu / (1 - b2^t)
        p = p - lr * ((m1_hat + alpha(t) * m2) / (sqrt(nu_hat + eps_root) + eps) + weight_decay * p)

    ``b3`` and ``alpha`` may be schedules of the step (from 0): the paper warms both up
    (``alpha(t) = min(t * alpha / T, alpha)``, ``b3(t)`` from ``b1`` to ``b3``), optax
    leaves the schedules to the caller, and so does gradtx.

    Chain: ``scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype)
    -> add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``.
    State: ``count, m1, m2, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.ademamix(0.1, alpha=2.0)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(5)  # -lr * (1 + alpha * (1 - b3)) * sign(g) at the first step
    Array([-0.10002], dtype=float32)
    """
    return chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@declare
def scale_by_simplified_ademamix(
    b1: Decay = 0.99,
    b2: DecayBelowOne = 0.95,
    alpha: NonNegativeOrSchedule = 0.0,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
) -> Transformation:
    """``u -> (m + alpha(t) * g) / (sqrt(n_hat + eps_root) + eps)``, ``m = b1 * m + g``:
    simplified AdEMAMix's direction.

    Chain: ``fork(fork(trace(b1), scale(alpha), join=add), second_moment(b2)
    -> bias_correct(b2) -> sqrt_eps, join=divide)``. State: ``count, m, n`` (optax
    calls ``count`` ``t``). optax averages ``n`` as ``g^2 + b2 * (n - g^2)``, gradtx as
    ``(1 - b2) * g^2 + b2 * n`` (the same number, rounded otherwise).
    """
    numerator = fork(renamed(trace(b1), trace="m"), _scaled_by(alpha), join=jnp.add)
    second = chain(renamed(second_moment(b2), nu="n"), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root))
    return fork(numerator, second, join=jnp.divide)


@declare
def simplified_ademamix(
    learning_rate: LearningRate,
    b1: Decay = 0.99,
    b2: DecayBelowOne = 0.95,
    alpha: NonNegativeOrSchedule = 0.0,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """Simplified AdEMAMix (Morwani et al. 2025, "Connections between Schedule-Free
    Optimizers, AdEMAMix, and Accelerated SGD Variants", https://arxiv.org/abs/2502.02431)::

        m = b1 * m + g                            (a sum, not an average)
        n = b2 * n + (1 - b2) * g^2               n_hat = n / (1 - b2^t)
        p = p - lr * ((m + alpha(t) * g) / (sqrt(n_hat + eps_root) + eps) + weight_decay * p)

    One momentum buffer where AdEMAMix keeps two; ``alpha = 0`` is Adam with a rescaled
    learning rate and ``b1``.

    Chain: ``scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root)
    -> add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``.
    State: ``count, m, n``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.simplified_ademamix(0.1, alpha=1.0)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)  # -lr * (g + alpha * g) / |g| at the first step
    Array([-0.2], dtype=float32)
    """
    return chain(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# --- MADGRAD ---------------------------------------------------------------------------


@declare
def scale_by_madgrad(learning_rate: LearningRate, momentum: Decay = 0.9, eps: NonNegative = 1e-6) -> Transformation:
    """``u -> (1 - momentum) * (z - p)``, ``z`` MADGRAD's dual-averaging point.

    Chain: ``dual_averaging_point(learning_rate, eps) -> move_towards(momentum)``: the
    output is the whole step (the learning rate is inside the dual average), and it
    needs the params. State: ``count, grad_sum_sq, s, x0`` (optax's).
    """
    return chain(dual_averaging_point(learning_rate, eps), move_towards(momentum))


@declare
def madgrad(
    learning_rate: LearningRate,
    momentum: Decay = 0.9,
    weight_decay: NonNegativeOrSchedule = 0.0,
    eps: NonNegative = 1e-6,
) -> Transformation:
    """MADGRAD (Defazio & Jelassi 2021, "Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization",
    https://arxiv.org/abs/2101.11075, Algorithm 1)::

        g = g + weight_decay * p                  (L2, as in the authors' code)
        l_k = (lr + eps) * sqrt(k + 1)            (k the steps before this one)
        s = s + l_k * g          G = G + l_k * g^2
        z = x0 - s / (cbrt(G) + eps)              (x0 the params at init)
        p = momentum * p + (1 - momentum) * z

    ``sqrt(k + 1)`` is computed in float32 even for float64 params, as optax does (the
    square root of the int32 step count): kept for float64 parity with optax at 1e-10, it
    puts the float64 trajectory 2e-8 (relative, 50 steps) from the paper's exact rule.

    Chain: ``add_decayed_weights(weight_decay) -> dual_averaging_point(learning_rate, eps)
    -> move_towards(momentum)`` (``scale_by_madgrad``). State: ``count, grad_sum_sq, s, x0``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.madgrad(1.0, momentum=0.0, eps=0.0)
    >>> params = jnp.zeros(2)
    >>> updates, _ = opt.update(jnp.array([8.0, -1.0]), opt.init(params), params)
    >>> updates  # z = -g / cbrt(g^2) = -cbrt(g) at the first step
    Array([-2.,  1.], dtype=float32)
    """
    return chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))


# --- ACProp ----------------------------------------------------------------------------


@declare
def scale_by_acprop(
    b1: Decay = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-16,
    eps_root: NonNegative = 1e-16,
) -> Transformation:
    """``u -> g / (sqrt(s_hat_{t-1}) + eps)``, ``s = ema((g - m_t)^2, b2) + eps_root``:
    ACProp's direction (``s_hat_0 = 1``).

    Chain: ``fork(identity, fork(identity, scale_by_ema(b1), join=subtract)
    -> asynchronous_belief(b2, eps_root) -> sqrt_eps(eps), join=divide)``.
    State: ``count, mu, nu`` (optax's).

    Differs from optax 0.2.8, which takes the prediction error against the *previous*
    average, ``g - m_{t-1}`` (``b1`` times larger than the paper's ``g - m_t``): gradtx
    follows the paper and the authors' code. The two agree at ``b1 = 1``, where ``m`` stays 0.
    """
    prediction_error = fork(identity(), scale_by_ema(b1), join=jnp.subtract)
    denominator = chain(prediction_error, asynchronous_belief(b2, eps_root), sqrt_eps(eps=eps))
    return fork(identity(), denominator, join=jnp.divide)


@declare
def acprop(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-16,
    eps_root: NonNegative = 1e-16,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """ACProp (Zhuang et al. 2021, "Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods", https://arxiv.org/abs/2110.05454, Algorithm 2)::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * (g_t - m_t)^2 + eps_root
        p = p - lr * (g_t / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps) + weight_decay * p)

    The denominator is one step late (asynchronous: independent of ``g_t``); at the first
    step it is ``1 + eps`` (optax's; the authors' code divides by 1, the same at the default
    ``eps = 1e-16``). The numerator is the gradient, as in the authors' code
    (juntang-zhuang/ACProp-Optimizer, ``momentum_update=False``) and optax.

    Differs from optax 0.2.8: optax's prediction error is ``g_t - m_{t-1}`` (the average
    before this step), the paper's and the authors' code's ``g_t - m_t``; since
    ``g_t - m_t = b1 * (g_t - m_{t-1})``, optax's ``s`` is ``1 / b1^2`` times too large
    (its own docstring states the paper's rule). gradtx follows the paper; the two agree
    at ``b1 = 1``.

    Chain: ``scale_by_acprop(b1, b2, eps, eps_root) -> add_decayed_weights(weight_decay, mask)
    -> scale_by_learning_rate``. State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.acprop(0.1)
    >>> updates, _ = opt.update(jnp.array([3.0, -0.5]), opt.init(jnp.zeros(2)))
    >>> updates  # the first step divides by 1: -lr * g
    Array([-0.3 ,  0.05], dtype=float32)
    """
    return chain(
        scale_by_acprop(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


# --- the cautious wrapper ----------------------------------------------------------------


@declare
def cautious(inner: Inner) -> Transformation:
    """Cautious ``inner`` (Liang et al. 2024, "Cautious Optimizers: Improving Training with
    One Line of Code", https://arxiv.org/abs/2411.16085, Algorithm 1)::

        u = inner(g)                      (the update that is added to the params)
        phi = (u * g < 0)                 (the step -u descends along g)
        u -> u * phi * n / (sum(phi) + 1) (per leaf, n its number of elements)

    The paper writes the step as ``p - lr * u'`` with ``u'`` a descent direction and keeps
    the components where ``u' * g > 0``; gradtx updates are *added* to the params, so
    ``u = -lr * u'`` and the same components are those where ``u * g < 0``. The rescale
    ``n / (kept + 1)`` is the paper's and the authors' code's (and pytorch_optimizer's
    ``apply_cautious``). ``g`` is the incoming update (the gradient, when ``cautious`` is
    the outermost transformation).

    ``inner`` may be any gradient transformation (gradtx's or optax's); its state is kept
    whole. The paper's C-AdamW (Algorithm 2) masks the Adam direction and not the weight
    decay: build it from the formula itself (``gradtx.recent_moments.keep_agreeing``),
    ``chain(fork(identity(), adam_direction(), join=lambda g, d: keep_agreeing(d, g)),
    add_decayed_weights(wd), scale_by_learning_rate(lr))`` (tested in ``tests/test_recent.py``).

    The formula: ``gradtx.recent_moments.keep_agreeing``, applied to ``-u``.
    State: ``inner_state``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.cautious(gradtx.sgd(1.0))
    >>> updates, _ = opt.update(jnp.array([1.0, -2.0]), opt.init(jnp.zeros(2)))
    >>> updates  # both agree: -g * 2 / (2 + 1)
    Array([-0.6666667,  1.3333334], dtype=float32)
    """

    def apply(updates, state, step):
        out, inner_state = update_inner(inner, updates, state["inner_state"], step)
        out = jax.tree.map(lambda u, g: -keep_agreeing(-u, g), out, updates)
        return out, {"inner_state": inner_state}

    return primitive(apply, {"inner_state": Field(inner.init, like_params=False)})
