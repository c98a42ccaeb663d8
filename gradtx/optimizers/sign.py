"""Sign methods: the update is the sign of the gradient (signSGD) or of a momentum (Signum, Lion)."""

from __future__ import annotations

from gradtx.combine import chain
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate, NonNegativeOrSchedule
from gradtx.moments import interpolated_ema, scale_by_ema
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale_by_learning_rate, scale_by_sign
from gradtx.transform import Transformation, declare


@declare
def lion(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.99,
    mu_dtype: AccumulatorDtype = None,
    weight_decay: NonNegativeOrSchedule = 1e-3,
    mask: MaskOrFn = None,
) -> Transformation:
    """Lion (Chen et al. 2023)::

        c = sign((1 - b1) * g + b1 * m)
        m = (1 - b2) * g + b2 * m
        p = p - lr * (c + weight_decay * p)

    Chain: ``interpolated_ema(b1, b2) -> scale_by_sign -> add_decayed_weights
    -> scale_by_learning_rate``. State: ``mu`` (optax also keeps a ``count`` that Lion
    never reads; gradtx does not).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.lion(1e-3, weight_decay=0.0)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.2]), opt.init(jnp.zeros(2)))
    >>> updates
    Array([-0.001,  0.001], dtype=float32)
    """
    return chain(
        interpolated_ema(b1, b2, accumulator_dtype=mu_dtype),
        scale_by_sign(),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@declare
def sign_sgd(learning_rate: LearningRate) -> Transformation:
    """signSGD (Bernstein et al. 2018, https://arxiv.org/abs/1802.04434, Algorithm 1)::

        p = p - lr * sign(g)

    Chain: ``scale_by_sign -> scale_by_learning_rate``. State: none (``count`` with a schedule).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.sign_sgd(0.1)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.2, 0.0]), opt.init(jnp.zeros(3)))
    >>> updates
    Array([-0.1,  0.1, -0. ], dtype=float32)
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@declare
def signum(
    learning_rate: LearningRate, beta: Decay = 0.9, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """Signum (Bernstein et al. 2018, https://arxiv.org/abs/1802.04434, Algorithm 3)::

        m = beta * m + (1 - beta) * g
        p = p - lr * sign(m)

    No bias correction: it would not change the sign.

    Chain: ``scale_by_ema(beta, accumulator_dtype) -> scale_by_sign -> scale_by_learning_rate``.
    State: ``mu`` (optax's ``ema``; optax also keeps a ``count`` that nothing reads).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.signum(0.1)
    >>> state = opt.init(jnp.zeros(2))
    >>> _, state = opt.update(jnp.array([1.0, 1.0]), state)
    >>> updates, state = opt.update(jnp.array([-2.0, -0.05]), state)
    >>> updates  # m = 0.9 * 0.1 + 0.1 * g = [-0.11, 0.085]
    Array([ 0.1, -0.1], dtype=float32)
    """
    return chain(
        scale_by_ema(beta, accumulator_dtype=accumulator_dtype), scale_by_sign(), scale_by_learning_rate(learning_rate)
    )
