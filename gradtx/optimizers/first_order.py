"""Other first-order methods: Rprop, noisy SGD, SGD with the Polyak step size, optimistic
gradient descent and optimistic Adam."""

from __future__ import annotations

from typing import Optional

from gradtx.combine import chain
from gradtx.first_order import (
    EtaMinus,
    EtaPlus,
    Key,
    PolyakVariant,
    add_noise,
    check_step_bounds,
    scale_by_optimistic_gradient,
    scale_by_polyak,
    scale_by_rprop,
)
from gradtx.hyperparams import AccumulatorDtype, DecayBelowOne, LearningRate, NonNegative, Positive, Real
from gradtx.optimizers.adam import adam_direction
from gradtx.scaling import scale, scale_by_learning_rate
from gradtx.transform import Transformation, declare


@declare
def rprop(
    learning_rate: NonNegative,
    eta_minus: EtaMinus = 0.5,
    eta_plus: EtaPlus = 1.2,
    min_step_size: Positive = 1e-6,
    max_step_size: Positive = 50.0,
) -> Transformation:
    """Rprop (Riedmiller & Braun 1993, without weight-backtracking, as ``torch.optim.Rprop``)::

        s = g * g_prev                      (g_prev: the previous gradient, 0 after a sign flip)
        lr_i = clip(lr_i * (eta_plus if s > 0, eta_minus if s < 0, 1 if s == 0), min_step_size, max_step_size)
        p = p - lr_i * sign(g)              (no move, and g_prev = 0, where s < 0)

    Each element has its own step size ``lr_i``, starting at ``learning_rate``; only the
    sign of the gradient is used. Paper: `A direct adaptive method for faster
    backpropagation learning: the RPROP algorithm <https://ieeexplore.ieee.org/document/298623>`_
    (1993; not on arXiv).

    Deliberately not optax's numbers: optax 0.2.8's ``rprop`` applies each step one
    iteration late (its first update is zero, and the step it applies at ``t`` is the one
    computed at ``t - 1``, dropped if the sign flips at ``t``). gradtx follows the paper and
    ``torch.optim.Rprop`` (tested against both); its state holds the values optax's holds.

    Chain: ``scale_by_rprop -> scale(-1)``. State: ``step_sizes, prev_updates``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.rprop(0.1)
    >>> state = opt.init(jnp.zeros(1))
    >>> steps = []
    >>> for g in [1.0, 2.0, 1.0, -1.0, 1.0]:
    ...     updates, state = opt.update(jnp.array([g]), state)
    ...     steps.append(round(float(updates[0]), 6) + 0.0)  # + 0.0: -0.0 reads 0.0
    >>> steps  # grows by eta_plus, shrinks (and waits) at the sign flip
    [-0.1, -0.12, -0.144, 0.0, -0.072]
    """
    check_step_bounds("rprop", min_step_size, max_step_size)
    return chain(scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size), scale(-1.0))


@declare
def noisy_sgd(
    learning_rate: LearningRate, eta: NonNegative = 0.01, gamma: NonNegative = 0.55, key: Key = None
) -> Transformation:
    """SGD with annealed Gaussian gradient noise (Neelakantan et al. 2015)::

        sigma_t^2 = eta / t^gamma           (t the step, from 1)
        p = p - lr * (g + sigma_t * n),     n ~ N(0, 1), drawn from ``key``

    The same ``key`` (a typed key or an int seed; ``None`` is seed 0) gives optax's noise,
    hence optax's numbers. Paper: `Adding Gradient Noise Improves Learning for Very Deep
    Networks <https://arxiv.org/abs/1511.06807>`_.

    Chain: ``add_noise(eta, gamma, key) -> scale_by_learning_rate``. State: ``count, rng_key``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.noisy_sgd(0.1, eta=0.0, key=0)  # no noise: plain SGD
    >>> updates, state = opt.update(jnp.array([1.0, -2.0]), opt.init(jnp.zeros(2)))
    >>> updates, int(state.count)
    (Array([-0.1,  0.2], dtype=float32), 1)
    """
    return chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))


@declare
def polyak_sgd(
    max_learning_rate: NonNegative = 1.0,
    scaling: LearningRate = 1.0,
    f_min: Real = 0.0,
    eps: NonNegative = 0.0,
    variant: PolyakVariant = "sps",
) -> Transformation:
    """SGD with the Polyak step size (Loizou et al. 2021)::

        lr = scaling * min((f(p) - f_min) / (||g||^2 + eps), max_learning_rate)
        p = p - lr * g

    ``variant="sps+"`` (Garrigos et al. 2023) clips the gap ``f(p) - f_min`` at 0.
    ``update`` takes the loss as the keyword argument ``value``: ``update(grads, state,
    params, value=loss)`` (a ``gradtx.UpdateError`` naming ``value`` without it). Paper:
    `Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for Fast Convergence
    <https://arxiv.org/abs/2002.10542>`_.

    Where optax differs: optax 0.2.8 documents this formula but scales the gradient by
    ``scaling`` *before* taking its norm, so that its step is ``min(gap / (scaling *
    ||g||^2 + eps / scaling), scaling * max_learning_rate)``: ``scaling`` divides the
    Polyak step instead of multiplying it. With ``scaling=1`` (the default) the two agree.

    Chain: ``scale_by_polyak(f_min, max_learning_rate, eps, variant) -> scale_by_learning_rate(scaling)``.
    State: none (``count`` with a ``scaling`` schedule).

    >>> import jax, jax.numpy as jnp, gradtx
    >>> f = lambda x: jnp.sum(x**2)
    >>> opt, params = gradtx.polyak_sgd(), jnp.array([1.0, 2.0, 3.0])
    >>> state = opt.init(params)
    >>> value, grads = jax.value_and_grad(f)(params)
    >>> updates, state = opt.update(grads, state, params, value=value)
    >>> f(gradtx.apply_updates(params, updates))  # a quarter of 14: the step is 1/4
    Array(3.5, dtype=float32)
    """
    return chain(scale_by_polyak(f_min, max_learning_rate, eps, variant), scale_by_learning_rate(scaling))


@declare
def optimistic_gradient_descent(
    learning_rate: LearningRate, alpha: NonNegative = 1.0, beta: NonNegative = 1.0
) -> Transformation:
    """Optimistic gradient descent (generalised OGD, Mokhtari et al. 2019)::

        p = p - lr * ((alpha + beta) * g_t - beta * g_{t-1})      (g_0 = g_1: the first step is -lr * alpha * g)

    An approximation of the extra-gradient method that converges in the last iterate on
    min-max games, where gradient descent cycles. Paper: `A Unified Analysis of
    Extra-gradient and Optimistic Gradient Methods for Saddle Point Problems: Proximal
    Point Approach <https://arxiv.org/abs/1901.08511>`_. (optax annotates ``alpha`` and
    ``beta`` as schedules but cannot use one; gradtx takes numbers.)

    Chain: ``scale_by_optimistic_gradient(alpha, beta) -> scale_by_learning_rate``.
    State: ``count, previous_gradient``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.optimistic_gradient_descent(0.1)
    >>> state = opt.init(jnp.zeros(1))
    >>> first, state = opt.update(jnp.array([1.0]), state)
    >>> second, state = opt.update(jnp.array([3.0]), state)
    >>> first, second  # -0.1 * 1, then -0.1 * (2 * 3 - 1)
    (Array([-0.1], dtype=float32), Array([-0.5], dtype=float32))
    """
    return chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))


@declare
def optimistic_adam(
    learning_rate: NonNegative,
    optimism: Optional[NonNegative] = None,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = True,
) -> Transformation:
    """Optimistic Adam (Daskalakis et al. 2017), optax's first interface::

        r_t = m_hat / (sqrt(v_hat + eps_root) + eps)          (Adam's direction; NAdam's with nesterov=True)
        p = p - lr * r_t - optimism * (r_t - r_{t-1})         (r_0 = r_1; optimism defaults to lr)

    ``learning_rate`` is a number (no schedule, as in optax); ``optimistic_adam_v2`` takes
    a schedule. ``nesterov=True`` (optax's default) uses NAdam's direction; the paper's is
    Adam's (``nesterov=False``). Paper: `Training GANs with Optimism
    <https://arxiv.org/abs/1711.00141>`_.

    Chain: ``adam_direction -> scale_by_optimistic_gradient(lr, optimism) -> scale_by_learning_rate(1)``.
    State: ``count, mu, nu, previous_gradient``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.optimistic_adam(1e-2, optimism=0.1, nesterov=False)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.1]), opt.init(jnp.zeros(2)))
    >>> updates.round(6)  # Adam's first direction is sign(g), up to eps and rounding: -lr * sign(g)
    Array([-0.01,  0.01], dtype=float32)
    """
    return chain(
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=learning_rate if optimism is None else optimism),
        scale_by_learning_rate(1.0),
    )


@declare
def optimistic_adam_v2(
    learning_rate: LearningRate,
    *,
    alpha: NonNegative = 1.0,
    beta: NonNegative = 1.0,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    nesterov: bool = True,
) -> Transformation:
    """Optimistic Adam (Daskalakis et al. 2017), optax's second interface::

        r_t = m_hat / (sqrt(v_hat + eps_root) + eps)          (Adam's direction; NAdam's with nesterov=True)
        p = p - lr * ((alpha + beta) * r_t - beta * r_{t-1})   (r_0 = r_1)

    ``learning_rate`` may be a schedule. ``nesterov=True`` (optax's default) uses NAdam's
    direction; the paper's is Adam's (``nesterov=False``). Paper: `Training GANs with
    Optimism <https://arxiv.org/abs/1711.00141>`_.

    Chain: ``adam_direction -> scale_by_optimistic_gradient(alpha, beta) -> scale_by_learning_rate``.
    State: ``count, mu, nu, previous_gradient``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.optimistic_adam_v2(1e-2, alpha=0.5, beta=0.5, nesterov=False)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.1]), opt.init(jnp.zeros(2)))
    >>> updates.round(6)  # Adam's first direction is sign(g): -lr * alpha * sign(g)
    Array([-0.005,  0.005], dtype=float32)
    """
    return chain(
        adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )
