"""The Adam family: a first moment over the root of a second, joined by ``fork``."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.combine import chain, fork, identity
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, LearningRate, NonNegative, NonNegativeOrSchedule
from gradtx.moments import bias_correct, infinity_norm, running_max, scale_by_ema, second_moment
from gradtx.numerics import ema
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
) -> Transformation:
    """``u -> m_hat / (sqrt(v_hat + eps_root) + eps)``, Adam's preconditioned direction::

        m_hat = ema(g, b1) / (1 - b1^t)          (NAdam: b1 * m_hat_next + (1 - b1) * g / (1 - b1^t))
        v_hat = ema(|g|^2, b2) / (1 - b2^t)

    Built with ``fork``: the first moment over the root of the second. State:
    ``count, mu, nu`` (optax's ``scale_by_adam``).
    """
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1))
    if nesterov:
        first = fork(
            chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1, step_offset=1)),
            bias_correct(b1),
            join=lambda m_next, g: ema(g, m_next, b1),
        )
    second = chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root))
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
) -> Transformation:
    """Adam (Kingma & Ba 2014)::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        v = b2 * v + (1 - b2) * |g|^2      v_hat = v / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    ``nesterov=True`` is NAdam (Dozat 2016), as in optax.

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
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov), scale_by_learning_rate(learning_rate)
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
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
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
    return chain(adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=True), scale_by_learning_rate(learning_rate))


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
) -> Transformation:
    """AMSGrad (Reddi et al. 2018): Adam whose denominator never shrinks::

        v_max = max(v_max, v_hat)
        p = p - lr * m_hat / (sqrt(v_max + eps_root) + eps)

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), second_moment(b2) -> bias_correct(b2)
    -> running_max -> sqrt_eps, join=divide) -> scale_by_learning_rate``.
    State: ``count, mu, nu, nu_max`` (no ``count`` without bias correction).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.amsgrad(1e-2)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([-0.01], dtype=float32)
    """
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1) if bias_correction_mu else identity())
    second = chain(
        second_moment(b2),
        bias_correct(b2) if bias_correction_nu else identity(),
        running_max(),
        sqrt_eps(eps=eps, eps_root=eps_root),
    )
    return chain(fork(first, second, join=jnp.divide), scale_by_learning_rate(learning_rate))


@declare
def adamax(
    learning_rate: LearningRate, b1: DecayBelowOne = 0.9, b2: Decay = 0.999, eps: NonNegative = 1e-8
) -> Transformation:
    """Adamax (Kingma & Ba 2014, section 7), Adam with the infinity norm::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        u = max(b2 * u, |g| + eps)
        p = p - lr * m_hat / u

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), infinity_norm(b2, eps), join=divide)
    -> scale_by_learning_rate``. State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamax(1e-2)
    >>> updates, _ = opt.update(jnp.array([-2.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([0.01], dtype=float32)
    """
    first = chain(scale_by_ema(b1), bias_correct(b1))
    return chain(fork(first, infinity_norm(b2, eps), join=jnp.divide), scale_by_learning_rate(learning_rate))
