"""Layer-wise trust ratio: each leaf's step is scaled by its own norms (LARS, LAMB,
Fromage) or normalised by its own second moment (NovoGrad)."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.combine import chain, fork
from gradtx.hyperparams import Decay, DecayBelowOne, LearningRate, NonNegative, NonNegativeOrSchedule
from gradtx.layerwise import full_mask, lars_trust_ratio, scale_by_novograd, scale_by_trust_ratio
from gradtx.moments import nesterov_trace, trace
from gradtx.optimizers.adam import adam_direction
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale_by_learning_rate
from gradtx.transform import Transformation, declare


@declare
def lamb(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-6,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> Transformation:
    """LAMB (You et al. 2019, https://arxiv.org/abs/1904.00962, Algorithm 2)::

        m_hat = ema(g, b1) / (1 - b1^t)      v_hat = ema(|g|^2, b2) / (1 - b2^t)
        r = m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p
        p = p - lr * ||p|| / ||r|| * r        (per leaf; ratio 1 where a norm is 0)

    The decay is applied where ``mask`` is True (all leaves by default; a tree of bools,
    a prefix of the params tree, or a function ``params -> tree``); the trust ratio on
    every leaf (``phi`` the identity), as in optax.

    Chain: ``adam_direction(b1, b2, eps, eps_root) -> add_decayed_weights(weight_decay, mask)
    -> scale_by_trust_ratio -> scale_by_learning_rate``. State: ``count, mu, nu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.lamb(0.1)
    >>> params = jnp.array([3.0, 4.0])
    >>> updates, _ = opt.update(jnp.array([1.0, -1.0]), opt.init(params), params)
    >>> updates.round(4)  # the first step: -lr * ||p|| * sign(g) / ||sign(g)||
    Array([-0.3536,  0.3536], dtype=float32)
    """
    return chain(
        adam_direction(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, full_mask(mask)),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@declare
def lars(
    learning_rate: LearningRate,
    weight_decay: NonNegativeOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: NonNegative = 0.001,
    eps: NonNegative = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: Decay = 0.9,
    nesterov: bool = False,
) -> Transformation:
    """LARS (You et al. 2017, https://arxiv.org/abs/1708.03888, Algorithm 1)::

        lambda = trust_coefficient * ||p|| / (||g|| + weight_decay * ||p|| + eps)   (per leaf)
        v = momentum * v + lr * lambda * (g + weight_decay * p)
        p = p - v                               (Nesterov: p - (momentum * v + lr * lambda * (...)))

    ``lambda`` is 1 where a norm is 0 and where ``trust_ratio_mask`` is False; the decay
    applies where ``weight_decay_mask`` is True (masks: ``True``, a tree of bools or a
    function ``params -> tree``, as in optax).

    Differs from optax 0.2.8 where both the decay and the trust ratio apply to a leaf:
    optax's denominator is ``||g + weight_decay * p||``, the paper's (eq. 6, and
    Algorithm 1) is ``||g|| + weight_decay * ||p||``, which gradtx follows. Without weight
    decay the two agree (``tests/test_layerwise.py`` checks both).

    Chain: ``fork(add_decayed_weights(weight_decay, weight_decay_mask),
    lars_trust_ratio(...), join=multiply) -> scale_by_learning_rate -> trace(momentum)``
    (``nesterov_trace`` with ``nesterov``). State: ``trace``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.lars(1.0, trust_coefficient=0.1)
    >>> params = jnp.array([3.0, 4.0])
    >>> updates, _ = opt.update(jnp.array([0.0, 2.0]), opt.init(params), params)
    >>> updates  # -lr * 0.1 * ||p|| / ||g|| * g
    Array([ 0. , -0.5], dtype=float32)
    """
    momentum_stage = nesterov_trace(momentum) if nesterov else trace(momentum)
    return chain(
        fork(
            add_decayed_weights(weight_decay, full_mask(weight_decay_mask)),
            lars_trust_ratio(weight_decay, weight_decay_mask, trust_coefficient, eps, trust_ratio_mask),
            join=jnp.multiply,
        ),
        scale_by_learning_rate(learning_rate),
        momentum_stage,
    )


@declare
def novograd(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.25,
    eps: NonNegative = 1e-6,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegativeOrSchedule = 0.0,
) -> Transformation:
    """NovoGrad (Ginsburg et al. 2019, https://arxiv.org/abs/1905.11286, Algorithm 1)::

        nu = b2 * nu + (1 - b2) * ||g||^2            (per leaf; nu = ||g||^2 at t=1)
        m = b1 * m + g / (sqrt(nu + eps_root) + eps) + weight_decay * p
        p = p - lr * m

    ``weight_decay`` may be a schedule (optax 0.2.8 declares one, and fails on it).

    Chain: ``scale_by_novograd(b1, b2, eps, eps_root, weight_decay) -> scale_by_learning_rate``,
    that is ``fork(identity, layer_second_moment(b2) -> sqrt_eps, join=divide)
    -> add_decayed_weights -> trace(b1) -> scale_by_learning_rate``. State: ``count, nu, mu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.novograd(0.1)
    >>> updates, _ = opt.update(jnp.array([3.0, -4.0]), opt.init(jnp.zeros(2)))
    >>> updates.round(4)  # the first step: -lr * g / ||g||
    Array([-0.06,  0.08], dtype=float32)
    """
    return chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay), scale_by_learning_rate(learning_rate))


def _fromage_rates(learning_rate):
    """Fromage's step size ``lr / sqrt(1 + lr^2)`` and its weight decay ``1 / sqrt(1 + lr^2) - 1``
    (negative: the retraction shrinks the weights), numbers or schedules as ``learning_rate``
    (optax's arithmetic, in its order)."""
    if not callable(learning_rate):
        mult = 1 / (1 + learning_rate**2) ** 0.5
        return learning_rate * mult, mult - 1
    schedule = learning_rate

    def mult_of(count):
        return 1 / (1 + schedule(count) ** 2) ** 0.5

    return (lambda count: mult_of(count) * schedule(count)), (lambda count: mult_of(count) - 1)


@declare
def fromage(learning_rate: LearningRate, min_norm: NonNegative = 1e-6) -> Transformation:
    """Fromage (Bernstein et al. 2020, https://arxiv.org/abs/2002.03432, Algorithm 1)::

        p = (p - lr * ||p|| / ||g|| * g) / sqrt(1 + lr^2)       (per leaf)

    written as an update ``-lr / sqrt(1 + lr^2) * ||p|| / ||g|| * g + (1 / sqrt(1 + lr^2) - 1) * p``;
    both norms are clipped below at ``min_norm`` (as in optax).

    Chain: ``scale_by_trust_ratio(min_norm) -> scale_by_learning_rate(lr / sqrt(1 + lr^2))
    -> add_decayed_weights(1 / sqrt(1 + lr^2) - 1)``. State: none (``count`` with a schedule).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.fromage(0.75)
    >>> params = jnp.array([3.0, 4.0])
    >>> updates, _ = opt.update(jnp.array([0.0, 1.0]), opt.init(params), params)
    >>> [round(float(x), 4) for x in params + updates]  # (p - 0.75 * 5 * g) / 1.25
    [2.4, 0.2]
    """
    step_size, decay = _fromage_rates(learning_rate)
    return chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(step_size), add_decayed_weights(decay))
