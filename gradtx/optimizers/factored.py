"""Factored second moments: Adafactor and SM3, whose statistics take O(rows + cols)
memory per matrix instead of Adam's O(rows * cols)."""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from gradtx.base import GradientTransformation
from gradtx.combine import chain
from gradtx.factored import (
    DimSize,
    clip_by_block_rms,
    scale_by_cover_accumulators,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_sm3,
)
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate, NonNegative, NonNegativeOrSchedule, Positive
from gradtx.moments import scale_by_ema
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale, scale_by_learning_rate
from gradtx.transform import Transformation, declare


@declare
def adafactor(
    learning_rate: Optional[LearningRate] = None,
    min_dim_size_to_factor: DimSize = 128,
    decay_rate: NonNegative = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Optional[Positive] = 1.0,
    momentum: Optional[Decay] = None,
    dtype_momentum: AccumulatorDtype = jnp.float32,
    weight_decay_rate: Optional[NonNegativeOrSchedule] = None,
    eps: NonNegative = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> Transformation:
    """Adafactor (Shazeer & Stern 2018, https://arxiv.org/abs/1804.04235)::

        b_t = 1 - t^(-decay_rate)                              (t = step - decay_offset, step from 1)
        R = b_t * R + (1 - b_t) * mean_d0(g^2 + eps)           (matrices: a row and a column
        C = b_t * C + (1 - b_t) * mean_d1(g^2 + eps)            vector, d0 the largest axis)
        U = g / sqrt(R C / mean(R))                            (other leaves: g / sqrt(ema(g^2 + eps)))
        U = U / max(1, rms(U) / clipping_threshold)            (update clipping)
        p = p - lr * max(rms(p), 1e-3) * U - weight_decay_rate * p

    ``lr`` is 1 when ``learning_rate=None``, the factor ``max(rms(p), 1e-3)`` is there with
    ``multiply_by_parameter_scale``; with ``momentum`` the step ``lr * max(rms(p), 1e-3) * U``
    is averaged first, ``m = momentum * m + (1 - momentum) * step`` (kept in ``dtype_momentum``),
    and ``p = p - m - weight_decay_rate * p``.

    A leaf is factored when its two largest axes are at least ``min_dim_size_to_factor``
    long (``factored=True``): its statistics are one vector per axis, O(rows + cols).
    ``learning_rate=None`` leaves the step at the parameters' scale alone; the paper's
    relative step ``min(1e-2, 1 / sqrt(t))`` can be passed as a schedule. As in optax, the
    weight decay is not scaled by the learning rate. Same arguments and numbers as optax.

    Chain: ``scale_by_factored_rms -> [clip_by_block_rms] -> [scale_by_learning_rate]
    -> [scale_by_param_block_rms] -> [scale_by_ema(momentum)] -> [add_decayed_weights]
    -> scale(-1)``.
    State: ``count, v_row, v_col, v`` (and ``mu`` with momentum).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adafactor(learning_rate=0.1, min_dim_size_to_factor=2)
    >>> params = jnp.ones((2, 3))
    >>> state = opt.init(params)
    >>> state.v_row.shape, state.v_col.shape  # one statistic per row (2) and per column (3)
    ((2,), (3,))
    >>> updates, state = opt.update(jnp.ones((2, 3)), state, params)
    >>> updates  # -lr * rms(p) * g / sqrt(R C / mean(R)) = -0.1 at the first step
    Array([[-0.1, -0.1, -0.1],
           [-0.1, -0.1, -0.1]], dtype=float32)
    """
    stages: list[GradientTransformation] = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        stages.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        stages.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        stages.append(scale_by_param_block_rms())
    if momentum is not None:
        stages.append(scale_by_ema(momentum, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        stages.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    stages.append(scale(-1))
    return chain(*stages)


@declare
def sm3(learning_rate: LearningRate, momentum: Optional[Decay] = 0.9) -> Transformation:
    """SM3 (Anil et al. 2019, https://arxiv.org/abs/1901.11150), SM3-II with the cover of
    each leaf by its slices (a matrix: its rows and its columns)::

        nu_i = min over the slices r through i of mu_r + g_i^2
        mu_r = max over i in r of nu_i                       (one accumulator per slice)
        m = momentum * m + (1 - momentum) * g / sqrt(nu + 1e-8)   (0 where nu = 0)
        p = p - lr * m

    Memory per leaf: the sum of its axis lengths (plus the momentum). On a scalar SM3 is
    Adagrad, ``p = p - lr * ema(g / sqrt(sum of g^2 + 1e-8))``: optax 0.2.8's ``sm3``
    raises IndexError on a 0-d parameter, gradtx's handles it. ``momentum=None`` drops
    the momentum (optax documents this and raises TypeError); optax takes no schedule,
    gradtx does. Elsewhere the numbers are optax's.

    Chain: ``scale_by_sm3(momentum) -> scale_by_learning_rate`` (``momentum=None``:
    ``scale_by_cover_accumulators -> scale_by_learning_rate``).
    State: ``mu, nu`` (optax's names: ``mu`` the accumulators, ``nu`` the momentum).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.sm3(0.1, momentum=None)
    >>> params = jnp.zeros((2, 3))
    >>> state = opt.init(params)
    >>> state.mu.shape  # 2 row and 3 column accumulators
    (5,)
    >>> updates, state = opt.update(jnp.full((2, 3), 2.0), state, params)
    >>> updates.round(6)  # the first step is -lr * g / |g|, up to eps
    Array([[-0.1, -0.1, -0.1],
           [-0.1, -0.1, -0.1]], dtype=float32)
    """
    direction = scale_by_cover_accumulators() if momentum is None else scale_by_sm3(momentum)
    return chain(direction, scale_by_learning_rate(learning_rate))
