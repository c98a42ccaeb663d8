"""The Adam family: a first moment over the root of a second, joined by ``fork``."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.adaptive_moments import scale_by_adan, scale_by_belief, scale_by_radam, scale_by_yogi
from gradtx.combine import chain, fork, identity
from gradtx.hyperparams import (
    AccumulatorDtype,
    Decay,
    DecayBelowOne,
    LearningRate,
    NonNegative,
    NonNegativeOrSchedule,
    Real,
)
from gradtx.moments import (
    bias_correct,
    debiased_first_moment,
    infinity_norm,
    running_max,
    scale_by_ema,
    second_moment,
)
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale_by_learning_rate, sqrt_eps
from gradtx.transform import Transformation, declare


@declare
def adam_direction(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = False,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``u -> m_hat / (sqrt(v_hat + eps_root) + eps)``, Adam's preconditioned direction::

        m_hat = ema(g, b1) / (1 - b1^t)          (NAdam: b1 * m_hat_next + (1 - b1) * g / (1 - b1^t))
        v_hat = ema(|g|^2, b2) / (1 - b2^t)

    Built with ``fork``: the first moment over the root of the second. ``mu_dtype`` and
    ``nu_dtype`` (gradtx's; optax has only ``mu_dtype``) are the dtypes of ``mu`` and ``nu``
    in the state. State: ``count, mu, nu`` (optax's ``scale_by_adam``).
    """
    first = debiased_first_moment(scale_by_ema(b1, accumulator_dtype=mu_dtype), b1, nesterov=nesterov)
    second = chain(
        second_moment(b2, accumulator_dtype=nu_dtype), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root)
    )
    return fork(first, second, join=jnp.divide)


@declare
def adam(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = False,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Adam (Kingma & Ba 2014)::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        v = b2 * v + (1 - b2) * |g|^2      v_hat = v / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    ``nesterov=True`` is NAdam (Dozat 2016), as in optax. ``mu_dtype`` / ``nu_dtype`` set the
    dtypes of ``m`` / ``v`` in the state (float32 for bfloat16 params; ``nu_dtype`` is
    gradtx's, keyword-only). A positive ``eps`` never rounds to 0 (float16: see
    ``docs/guides/numerics.md``).

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1),
    second_moment(b2) -> bias_correct(b2) -> sqrt_eps, join=divide) -> scale_by_learning_rate``.
    State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adam(1e-3)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.1]), opt.init(jnp.zeros(2)))
    >>> updates.round(6)  # the first Adam step is -lr * sign(g), up to eps and rounding
    Array([-0.001,  0.001], dtype=float32)
    """
    return chain(
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


@declare
def adamw(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    weight_decay: NonNegativeOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """AdamW (Loshchilov & Hutter 2019), Adam with decoupled weight decay::

        p = p - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p)

    The decay is applied where ``mask`` is True (all leaves by default) and is scaled by
    the learning rate, as in optax (PyTorch's AdamW does the same).

    Chain: ``adam_direction -> add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``.
    State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamw(0.1, weight_decay=0.5)
    >>> params = jnp.array([2.0])
    >>> updates, _ = opt.update(jnp.array([0.0]), opt.init(params), params)
    >>> updates  # zero gradient: only the decay, -lr * wd * p
    Array([-0.1], dtype=float32)
    """
    return chain(
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@declare
def nadam(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """NAdam (Dozat 2016): Adam with a Nesterov look-ahead on the first moment::

        m_hat = b1 * m / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t)
        p = p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    Chain: ``adam_direction(nesterov=True) -> scale_by_learning_rate`` (optax's ``nadam``).
    State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.nadam(1e-2)
    >>> updates, _ = opt.update(jnp.array([1.0]), opt.init(jnp.zeros(1)))
    >>> bool(updates[0] < 0)
    True
    """
    direction = adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=True, nu_dtype=nu_dtype)
    return chain(direction, scale_by_learning_rate(learning_rate))


@declare
def scale_by_adamax(b1: DecayBelowOne = 0.9, b2: Decay = 0.999, eps: NonNegative = 1e-8) -> Transformation:
    """``u -> m_hat / nu``, ``m_hat = ema(u, b1) / (1 - b1^t)``, ``nu = max(b2 * nu, |u| + eps)``: Adamax's direction.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), infinity_norm(b2, eps),
    join=divide)`` (``adamax`` without its learning rate). State: ``count, mu, nu``
    (optax's fields; optax names the record ``ScaleByAdamState``, gradtx
    ``ScaleByAdamaxState``, after the call).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adamax()
    >>> updates, _ = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([-1.], dtype=float32)
    """
    return fork(chain(scale_by_ema(b1), bias_correct(b1)), infinity_norm(b2, eps), join=jnp.divide)


@declare
def scale_by_amsgrad(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``u -> m_hat / (sqrt(nu_max + eps_root) + eps)``, ``nu_max = max(nu_max, v_hat)``: AMSGrad's direction.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), second_moment(b2) -> bias_correct(b2)
    -> running_max -> sqrt_eps, join=divide)`` (``amsgrad`` without its learning rate);
    ``bias_correction_mu`` / ``bias_correction_nu`` drop either correction (the paper has
    none). ``mu_dtype`` (optax's) is the dtype of ``mu``, ``nu_dtype`` (gradtx's,
    keyword-only) of both ``nu`` and ``nu_max`` in the state. State: ``count, mu, nu,
    nu_max`` (no ``count`` without bias correction: nothing reads it).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_amsgrad()
    >>> updates, state = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
    >>> state._fields, updates.round(4)  # the first step is sign(g), up to eps and rounding
    (('count', 'mu', 'nu', 'nu_max'), Array([1.], dtype=float32))
    """
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1) if bias_correction_mu else identity())
    second = chain(
        second_moment(b2, accumulator_dtype=nu_dtype),
        bias_correct(b2) if bias_correction_nu else identity(),
        running_max(accumulator_dtype=nu_dtype),
        sqrt_eps(eps=eps, eps_root=eps_root),
    )
    return fork(first, second, join=jnp.divide)


@declare
def amsgrad(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """AMSGrad (Reddi et al. 2018): Adam whose denominator never shrinks::

        v_max = max(v_max, v_hat)
        p = p - lr * m_hat / (sqrt(v_max + eps_root) + eps)

    ``mu_dtype`` / ``nu_dtype`` set the dtypes of ``m`` / ``v`` and ``v_max`` in the state
    (float32 for bfloat16 params; ``nu_dtype`` is gradtx's, keyword-only).

    Chain: ``scale_by_amsgrad(b1, b2, eps, eps_root, ...) -> scale_by_learning_rate``.
    State: ``count, mu, nu, nu_max`` (no ``count`` without bias correction).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.amsgrad(1e-2)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([-0.01], dtype=float32)
    """
    direction = scale_by_amsgrad(
        b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu, nu_dtype=nu_dtype
    )
    return chain(direction, scale_by_learning_rate(learning_rate))


@declare
def adamax(
    learning_rate: LearningRate, b1: DecayBelowOne = 0.9, b2: Decay = 0.999, eps: NonNegative = 1e-8
) -> Transformation:
    """Adamax (Kingma & Ba 2014, section 7), Adam with the infinity norm::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        u = max(b2 * u, |g| + eps)
        p = p - lr * m_hat / u

    Chain: ``scale_by_adamax(b1, b2, eps) -> scale_by_learning_rate``. State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamax(1e-2)
    >>> updates, _ = opt.update(jnp.array([-2.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([0.01], dtype=float32)
    """
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


@declare
def nadamw(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    weight_decay: NonNegativeOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """NAdamW: NAdam (Dozat 2016) with AdamW's decoupled weight decay (Loshchilov & Hutter
    2019, https://arxiv.org/abs/1711.05101)::

        m_hat = b1 * m / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t)
        p = p - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p)

    optax's ``nadamw`` is ``adamw(nesterov=True)``: the same arguments, ``nesterov``
    defaulting to True. NAdam's paper: https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ.

    Chain: ``adamw(..., nesterov=True)``, that is ``adam_direction(nesterov=True) ->
    add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``. State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.nadamw(0.1, weight_decay=0.5)
    >>> params = jnp.array([2.0])
    >>> updates, _ = opt.update(jnp.array([0.0]), opt.init(params), params)
    >>> updates  # zero gradient: only the decay, -lr * wd * p
    Array([-0.1], dtype=float32)
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov, nu_dtype=nu_dtype
    )


@declare
def adamaxw(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: Decay = 0.999,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegativeOrSchedule = 1e-4,
    mask: MaskOrFn = None,
) -> Transformation:
    """AdamaxW: Adamax (Kingma & Ba 2014, https://arxiv.org/abs/1412.6980, section 7.1)
    with AdamW's decoupled weight decay (Loshchilov & Hutter 2019)::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        u = max(b2 * u, |g| + eps)
        p = p - lr * (m_hat / u + weight_decay * p)

    Chain: ``scale_by_adamax(b1, b2, eps) -> add_decayed_weights(weight_decay, mask)
    -> scale_by_learning_rate``.
    State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamaxw(1e-2, weight_decay=0.0)
    >>> params = jnp.zeros(1)
    >>> updates, _ = opt.update(jnp.array([-2.0]), opt.init(params), params)
    >>> updates.round(6)  # the first step is -lr * sign(g), up to eps
    Array([0.01], dtype=float32)
    """
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@declare
def radam(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    threshold: Real = 5.0,
    *,
    nesterov: bool = False,
) -> Transformation:
    """RAdam, Rectified Adam (Liu et al. 2019, https://arxiv.org/abs/1908.03265)::

        rho_inf = 2 / (1 - b2) - 1         rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p = p - lr * r_t * m_hat / (sqrt(v_hat + eps_root) + eps)     if rho_t >= threshold
        p = p - lr * m_hat                                             otherwise

    While the variance of the adaptive rate is intractable (the first 5 steps with
    ``b2=0.999``) the step is SGD with momentum. ``nesterov=True`` takes NAdam's
    ``m_hat``, as in optax.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), second_moment(b2) -> bias_correct(b2)
    -> sqrt_eps -> rectification(b2, threshold), join=divide) -> scale_by_learning_rate``
    (``scale_by_radam -> scale_by_learning_rate``). State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.radam(0.1)
    >>> updates, _ = opt.update(jnp.array([0.5]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)  # the first step is not rectified: -lr * m_hat = -lr * g
    Array([-0.05], dtype=float32)
    """
    return chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov), scale_by_learning_rate(learning_rate)
    )


@declare
def adabelief(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-16,
    eps_root: NonNegative = 1e-16,
    *,
    nesterov: bool = False,
) -> Transformation:
    """AdaBelief (Zhuang et al. 2020, https://arxiv.org/abs/2010.07468), Adam with the
    variance of the gradient around its prediction ``m`` in the denominator::

        m = b1 * m + (1 - b1) * g                          m_hat = m / (1 - b1^t)
        s = b2 * s + (1 - b2) * |g - m|^2 + eps_root       s_hat = s / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(s_hat) + eps)

    As Algorithm 2 of the paper (``eps_root`` is its ``eps`` inside ``s``, added at every
    step). ``nesterov=True`` takes NAdam's ``m_hat``, as in optax.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), fork(identity, scale_by_ema(b1),
    join=subtract) -> belief_moment(b2, eps_root) -> bias_correct(b2) -> sqrt_eps(eps),
    join=divide) -> scale_by_learning_rate`` (``scale_by_belief -> scale_by_learning_rate``).
    State: ``count, mu, nu`` (``nu`` is ``s``, optax's name).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adabelief(1e-2)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)  # s_hat = (b1 g)^2: the first step is -lr / b1
    Array([-0.011111], dtype=float32)
    """
    return chain(scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov), scale_by_learning_rate(learning_rate))


@declare
def yogi(
    learning_rate: LearningRate, b1: DecayBelowOne = 0.9, b2: DecayBelowOne = 0.999, eps: NonNegative = 1e-3
) -> Transformation:
    """Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS,
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization)::

        m = b1 * m + (1 - b1) * g                              m_hat = m / (1 - b1^t)
        v = v - (1 - b2) * sign(v - |g|^2) * |g|^2, v_0 = 1e-6  v_hat = v / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    The bias correction is optax's (and TensorFlow's ``lr_t``); the paper's Algorithm 2
    has none. ``m`` starts at 0, as in the paper and the authors' code: optax 0.2.8
    starts it at 1e-6 as well, which biases the first steps by ``9e-6`` in every
    coordinate (see ``scale_by_yogi``); gradtx is tested against optax with that one
    value corrected.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), yogi_moment(b2, 1e-6) ->
    bias_correct(b2) -> sqrt_eps(eps), join=divide) -> scale_by_learning_rate``
    (``scale_by_yogi -> scale_by_learning_rate``). State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.yogi(1e-2)
    >>> updates, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    >>> state.nu  # from 1e-6 towards g^2 = 4 by (1 - b2) * g^2
    Array([0.004001], dtype=float32)
    """
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


@declare
def adan(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.98,
    b2: DecayBelowOne = 0.92,
    b3: DecayBelowOne = 0.99,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 1e-8,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """Adan, ADAptive Nesterov momentum (Xie et al. 2022, https://arxiv.org/abs/2208.06677)::

        d = g - g_prev (0 at the first step)
        m = b1 * m + (1 - b1) * g                 m_hat = m / (1 - b1^t)
        v = b2 * v + (1 - b2) * d                 v_hat = v / (1 - b2^t)
        n = b3 * n + (1 - b3) * |g + b2 * d|^2    n_hat = n / (1 - b3^t)
        p = p - lr * ((m_hat + b2 * v_hat) / (sqrt(n_hat + eps_root) + eps) + weight_decay * p)

    Algorithm 1 of the paper in the authors' code's convention (``b_i = 1 - beta_i``):
    the difference terms are weighted by ``b2``, the paper's ``1 - beta_2``. **optax
    0.2.8 weights them by** ``1 - b2`` (0.08 for 0.92 by default; google-deepmind/optax#1715),
    a defect that gradtx does not copy: gradtx is tested against the authors'
    algorithm, and against optax at ``b2 = 0.5``, where the two weights are equal.

    The weight decay is decoupled, ``-lr * weight_decay * p`` (optax's, and the authors'
    ``no_prox=True``); the paper's proximal step divides by ``1 + lr * weight_decay``.

    Chain: ``scale_by_adan(b1, b2, b3, eps, eps_root) -> add_decayed_weights(weight_decay, mask)
    -> scale_by_learning_rate``. State: ``count, m, g, v, n``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adan(1e-2)
    >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)), jnp.zeros(1))
    >>> updates.round(6)  # the first step: d = 0, so -lr * g / |g|
    Array([-0.01], dtype=float32)
    """
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
