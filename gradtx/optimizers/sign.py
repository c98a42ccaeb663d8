"""Sign methods: the update is the sign of a momentum (Lion)."""

from __future__ import annotations

from gradtx.combine import chain
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate, NonNegativeOrSchedule
from gradtx.moments import interpolated_ema
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
