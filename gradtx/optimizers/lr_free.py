"""Learning-rate-free optimizers: prodigy, dadapt_adamw, dog, dowg, cocob, mechanize, momo, momo_adam.

Each is a chain of the stages in ``gradtx/lr_free.py`` (where the distance-over-gradients
estimates have their one home) and the shared primitives: weight decay, the learning rate
(a multiplier of the estimated step: 1 or a schedule with 1 as its peak), the descent sign.
Names, arguments, defaults and state fields are optax.contrib 0.2.8's.
"""

from __future__ import annotations

from typing import Annotated, Optional

from gradtx.base import GradientTransformation
from gradtx.combine import chain, identity
from gradtx.hyperparams import (
    Decay,
    DecayBelowOne,
    Integer,
    IsTransformation,
    LearningRate,
    NonNegative,
    Positive,
    Real,
)
from gradtx.lr_free import (
    DecayPair,
    DogInitStep,
    dadapt_adamw_step,
    dog_step,
    dowg_step,
    mechanic_step,
    momo_adam_step,
    momo_step,
    prodigy_step,
    scale_by_cocob,
)
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale, scale_by_learning_rate
from gradtx.transform import Transformation, declare

__all__ = ["cocob", "dadapt_adamw", "dog", "dowg", "mechanize", "momo", "momo_adam", "prodigy"]

Betas = Annotated[tuple, DecayPair()]
InitStep = Annotated[tuple, DogInitStep()]


@declare
def prodigy(
    learning_rate: LearningRate = 1.0,
    betas: Betas = (0.9, 0.999),
    beta3: Optional[DecayBelowOne] = None,
    eps: NonNegative = 1e-8,
    estim_lr0: Positive = 1e-6,
    estim_lr_coef: Positive = 1.0,
    weight_decay: NonNegative = 0.0,
    safeguard_warmup: bool = False,
) -> Transformation:
    """Prodigy (Mishchenko & Defazio 2023, https://arxiv.org/abs/2306.06101, Algorithm 4, as
    the authors' implementation with bias correction), D-Adaptation's AdamW with the
    estimate of the distance to the solution ``d`` weighted towards recent gradients::

        dlr = d * lr_t * sqrt(1 - b2^t) / (1 - b1^t)
        m = b1 * m + (1 - b1) * d * g            v = b2 * v + (1 - b2) * d^2 * g^2
        s = b3 * s + dlr * d * g / d_0           (safeguard_warmup: d * d * g / d_0)
        n = b3 * n + d / d_0 * dlr * <g, x_0 - x>
        d' = max(d, estim_lr_coef * n / ||s||_1)         (b3 = sqrt(b2) by default)
        x = x - dlr * (m / (sqrt(v) + d' * eps) + weight_decay * x)

    ``d`` starts at ``estim_lr0``; ``lr_t`` is the learning rate (1, or a schedule with peak
    1). Differs from optax 0.2.8 where ``||s||_1 = 0`` (zero gradients from the start):
    gradtx keeps ``d``, as the authors' implementation (which skips the step), where optax
    divides 0 by 0 and every later step is NaN.

    Chain: ``prodigy_step -> scale(-1)``. State: ``count, exp_avg, exp_avg_sq, grad_sum,
    params0, estim_lr, numerator_weighted`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.prodigy()
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = opt.update(jnp.array([0.5, 0.5]), opt.init(params), params)
    >>> (updates / 1e-6).round(3)  # the first step: -d_0 * sign(g), d_0 = 1e-6
    Array([-1., -1.], dtype=float32)
    """
    return chain(
        prodigy_step(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay, safeguard_warmup),
        scale(-1.0),
    )


@declare
def dadapt_adamw(
    learning_rate: LearningRate = 1.0,
    betas: Betas = (0.9, 0.999),
    eps: NonNegative = 1e-8,
    estim_lr0: Positive = 1e-6,
    weight_decay: NonNegative = 0.0,
) -> Transformation:
    """D-Adaptation's AdamW (Defazio & Mishchenko 2023, https://arxiv.org/abs/2301.07733,
    Algorithm 5 / the authors' ``DAdaptAdam`` with bias correction and decoupled decay)::

        dlr = d * lr_t * sqrt(1 - b2^t) / (1 - b1^t)
        n = sqrt(b2) n + (1 - sqrt(b2)) dlr <g, s / (sqrt(v) + eps)>       (s, v of the step before)
        m = b1 m + (1 - b1) dlr g      v = b2 v + (1 - b2) g^2     s = sqrt(b2) s + (1 - sqrt(b2)) dlr g
        x = x - m / (sqrt(v) + eps) - weight_decay * dlr * x
        d = max(d, n / ((1 - sqrt(b2)) ||s||_1))

    ``d`` starts at ``estim_lr0``. Differs from optax 0.2.8 where ``||s||_1 = 0`` (zero
    gradients from the start): gradtx keeps ``d``, as the authors' implementation, where
    optax's ``d`` becomes NaN.

    Chain: ``dadapt_adamw_step -> scale(-1)``. State: ``count, exp_avg, exp_avg_sq,
    grad_sum, estim_lr, numerator_weighted`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.dadapt_adamw()
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = opt.update(jnp.array([0.5, -0.5]), opt.init(params), params)
    >>> (updates / 1e-6).round(3)  # the first step: -d_0 * sign(g), d_0 = 1e-6 (d grows after it)
    Array([-1.,  1.], dtype=float32)
    """
    return chain(dadapt_adamw_step(learning_rate, betas, eps, estim_lr0, weight_decay), scale(-1.0))


def _decay(weight_decay, mask) -> Transformation:
    return identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)


@declare
def dog(
    learning_rate: LearningRate = 1.0,
    init_step: InitStep = ("heuristic", 1e-6),
    eps: NonNegative = 1e-8,
    weight_decay: Optional[NonNegative] = None,
    mask: MaskOrFn = None,
) -> Transformation:
    """DoG, "distance over gradients" (Ivgi, Hinder & Carmon 2023,
    https://arxiv.org/abs/2302.12022, Algorithm 1), over the whole tree::

        h = g + weight_decay * x      (h = g without weight_decay)
        r = max(r, ||x - x_0||)       G = G + ||h||^2
        x = x - lr_t * r / sqrt(G + eps) * h

    ``init_step`` starts ``r``: ``('distance', r_eps)``, ``('heuristic', a)`` for
    ``r_eps = a * (1 + ||x_0||)`` (the paper's), or ``('learning_rate', eta_0)`` for
    ``r = 0`` and a first step ``eta_0``. The authors recommend averaging the iterates.
    ``update`` needs the params.

    Chain: ``add_decayed_weights(weight_decay, mask) (without weight_decay: identity)
    -> dog_step(init_step, eps) -> scale_by_learning_rate``. State: ``init_params,
    max_dist, sum_sq_norm_grads`` (optax's; ``count`` with ``'learning_rate'``, for optax's
    ``is_init_step``).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.dog(init_step=("distance", 0.5))
    >>> params = jnp.array([1.0, 2.0])
    >>> updates, _ = opt.update(jnp.array([3.0, 4.0]), opt.init(params), params)
    >>> updates.round(3)  # -r / ||g|| * g
    Array([-0.3, -0.4], dtype=float32)
    """
    return chain(_decay(weight_decay, mask), dog_step(tuple(init_step), eps), scale_by_learning_rate(learning_rate))


@declare
def dowg(
    learning_rate: LearningRate = 1.0,
    init_estim_sq_dist: Optional[Positive] = None,
    eps: Positive = 1e-4,
    weight_decay: Optional[NonNegative] = None,
    mask: MaskOrFn = None,
) -> Transformation:
    """DoWG, "distance over weighted gradients" (Khaled, Mishchenko & Jin 2023,
    https://arxiv.org/abs/2305.16284, Algorithm 1), over the whole tree::

        h = g + weight_decay * x            (h = g without weight_decay)
        r^2 = max(r^2, ||x - x_0||^2)       v = v + r^2 * ||h||^2
        x = x - lr_t * r^2 / (sqrt(v) + eps) * h

    ``r^2`` starts at ``init_estim_sq_dist`` (``eps`` when None).

    Chain: ``add_decayed_weights(weight_decay, mask) (without weight_decay: identity)
    -> dowg_step(init_estim_sq_dist, eps) -> scale_by_learning_rate``. State:
    ``init_params, weighted_sq_norm_grads, estim_sq_dist`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.dowg(init_estim_sq_dist=4.0, eps=1e-12)
    >>> params = jnp.zeros(2)
    >>> updates, _ = opt.update(jnp.array([3.0, 4.0]), opt.init(params), params)
    >>> updates.round(3)  # -r^2 / (r * ||g||) * g = -r * g / ||g||
    Array([-1.2, -1.6], dtype=float32)
    """
    return chain(_decay(weight_decay, mask), dowg_step(init_estim_sq_dist, eps), scale_by_learning_rate(learning_rate))


@declare
def cocob(
    learning_rate: LearningRate = 1.0,
    alpha: Positive = 100.0,
    eps: Positive = 1e-8,
    weight_decay: NonNegative = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """COCOB-Backprop (Orabona & Tommasi 2017, https://arxiv.org/abs/1705.07795,
    Algorithm 2), coordinate by coordinate, on ``h = lr_t * (g + weight_decay * x)``::

        L = max(L, |h|)      G = G + |h|      R = max(R - h * (x - x_0), 0)      theta = theta - h
        x = x_0 + theta / (L * max(G + L, alpha * L)) * (L + R)

    ``learning_rate`` only rescales the gradients (as optax's): the method needs none.

    Chain: ``add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate(lr,
    flip_sign=False) -> scale_by_cocob(alpha, eps)``. State: ``init_particles,
    cumulative_gradients, scale, subgradients, reward`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.cocob()
    >>> params = jnp.ones(2)
    >>> updates, _ = opt.update(jnp.array([2.0, -0.5]), opt.init(params), params)
    >>> updates.round(4)  # -sign(g) / alpha
    Array([-0.01,  0.01], dtype=float32)
    """
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )


@declare
def mechanize(
    base_optimizer: Annotated[GradientTransformation, IsTransformation()],
    weight_decay: NonNegative = 1e-2,
    eps: NonNegative = 1e-8,
    s_init: Positive = 1e-6,
    num_betas: Annotated[int, Integer(1)] = 6,
) -> Transformation:
    """Mechanic (Cutkosky, Defazio & Mehta 2023, https://arxiv.org/abs/2306.00144,
    Algorithm 1, the memory-efficient form, as the authors' optax code): learns the scale
    ``sum(s)`` of the steps ``u_t`` of ``base_optimizer``::

        x = x_0 - sum(s) * Delta,    Delta = Delta - u_t   (Delta = (x_0 - x) / (sum(s) + eps))
        h = <g + weight_decay * sum(s) * ||g|| / (||x|| + eps) * x, Delta_prev>
        for each beta_i = 1 - 0.1^i (i = 1..num_betas):
            m = max(beta m, |h| + eps)     v = beta^2 v + h^2     r = beta r + clip(h, -m_prev, m_prev) s
            s = (s_init / num_betas * m + max(r, 0)) / (sqrt(v) + eps)

    ``x_0`` is the params at the first step (not at ``init``: a loop may load weights in
    between), as optax's.

    Chain: ``mechanic_step(base_optimizer, ...)`` (a wrapper: the base optimizer's state is
    one field). State: ``count, base_optimizer_state, r, m, v, s, x0`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.mechanize(gradtx.sgd(1.0))
    >>> params = jnp.zeros(2)
    >>> updates, state = opt.update(jnp.array([1.0, -1.0]), opt.init(params), params)
    >>> (updates / 1e-6).round(3), state.s.shape  # the first step: -s_init * g
    (Array([-1.,  1.], dtype=float32), (6,))
    """
    return mechanic_step(base_optimizer, weight_decay, eps, s_init, num_betas)


def _proximal_decay(learning_rate, weight_decay) -> Transformation:
    """``u -> -(u + lr_t * wd * x) / (1 + lr_t * wd)``: MoMo's proximal weight decay and the
    descent sign, from the shared primitives."""
    if callable(learning_rate):
        schedule = learning_rate
        return chain(
            add_decayed_weights(lambda count: schedule(count) * weight_decay),
            scale_by_learning_rate(lambda count: 1 / (1 + schedule(count) * weight_decay)),
        )
    return chain(
        add_decayed_weights(learning_rate * weight_decay),
        scale_by_learning_rate(1 / (1 + learning_rate * weight_decay)),
    )


@declare
def momo(
    learning_rate: LearningRate = 1.0,
    beta: Decay = 0.9,
    lower_bound: Real = 0.0,
    weight_decay: NonNegative = 0.0,
    adapt_lower_bound: bool = False,
) -> Transformation:
    """MoMo (Schaipp, Ohana, Eickenberg, Defazio & Gower 2023, https://arxiv.org/abs/2305.07583,
    Algorithm 1): SGD with momentum and a Polyak step size on a model of the loss::

        d = ema(g, beta)      f = ema(loss, beta)      gamma = ema(<g, x>, beta)   (each starts at its first value)
        tau = min(lr_t, max((1 + lr_t wd)(f - lb - gamma) + <d, x>, 0) / ||d||^2)   (0 where d = 0)
        x = (x - tau * d) / (1 + lr_t * wd)

    ``lb`` is ``lower_bound``, or with ``adapt_lower_bound`` the paper's online estimate.
    ``update`` needs the loss: ``update(grads, state, params, value=loss)``.

    Differs from optax 0.2.8 with weight decay: optax's step is
    ``x - tau * d - lr wd / (1 + lr wd) * x`` (the momentum step is not divided by
    ``1 + lr wd``); gradtx's is the paper's and the authors' (``x = (x - tau d) / (1 + lr wd)``).
    Without weight decay the two agree.

    Chain: ``momo_step -> add_decayed_weights(lr * wd) -> scale_by_learning_rate(1 / (1 + lr * wd))``.
    State: ``count, exp_avg, barf, gamma, lb`` (optax's).

    >>> import jax, jax.numpy as jnp, gradtx
    >>> f = lambda x: jnp.sum(x**2)
    >>> opt, params = gradtx.momo(), jnp.array([1.0, 2.0, 3.0])
    >>> value, grad = jax.value_and_grad(f)(params)
    >>> updates, _ = opt.update(grad, opt.init(params), params, value=value)
    >>> f(params + updates)  # tau = min(1, (f + 0) / ||g||^2) = 0.25: half-way
    Array(3.5, dtype=float32)
    """
    return chain(
        momo_step(learning_rate, beta, lower_bound, weight_decay, adapt_lower_bound),
        _proximal_decay(learning_rate, weight_decay),
    )


@declare
def momo_adam(
    learning_rate: LearningRate = 1e-2,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    lower_bound: Real = 0.0,
    weight_decay: NonNegative = 0.0,
    adapt_lower_bound: bool = False,
) -> Transformation:
    """MoMo-Adam (Schaipp et al. 2023, https://arxiv.org/abs/2305.07583, Algorithm 3): Adam with
    a Polyak step size on a model of the loss::

        d = ema(g, b1)    v = ema(g^2, b2)    f = ema(loss, b1)    gamma = ema(<g, x>, b1)
        D = eps + sqrt(v / (1 - b2^t))        c1 = 1 - b1^t
        tau = min(lr_t / c1, max((1 + lr_t wd)(f - c1 lb - gamma) + <d, x>, 0) / <d, d / D>)
        x = (x - tau * d / D) / (1 + lr_t * wd)

    ``update`` needs the loss: ``update(grads, state, params, value=loss)``.

    Differs from optax 0.2.8 with weight decay, as ``momo``: optax does not divide the
    step ``tau * d / D`` by ``1 + lr wd``; gradtx follows the paper and the authors'
    ``MomoAdam`` (its proximal decay). Without weight decay the two agree.

    Chain: ``momo_adam_step -> add_decayed_weights(lr * wd) -> scale_by_learning_rate(1 / (1 + lr * wd))``.
    State: ``count, exp_avg, exp_avg_sq, barf, gamma, lb`` (optax's).

    >>> import jax, jax.numpy as jnp, gradtx
    >>> f = lambda x: jnp.sum(x**2)
    >>> opt, params = gradtx.momo_adam(), jnp.array([1.0, 2.0, 3.0])
    >>> value, grad = jax.value_and_grad(f)(params)
    >>> updates, _ = opt.update(grad, opt.init(params), params, value=value)
    >>> updates.round(4)  # tau = lr / (1 - b1) = 0.1 on d / D = sign(g) / 10
    Array([-0.01, -0.01, -0.01], dtype=float32)
    """
    return chain(
        momo_adam_step(learning_rate, b1, b2, eps, lower_bound, weight_decay, adapt_lower_bound),
        _proximal_decay(learning_rate, weight_decay),
    )
