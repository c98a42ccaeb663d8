"""Per-coordinate step sizes: Adagrad, RMSprop, Adadelta."""

from __future__ import annotations

from typing import Optional

from gradtx.combine import chain, identity
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate, NonNegative, NonNegativeOrSchedule
from gradtx.optimizers.sgd import momentum_stage
from gradtx.scaling import (
    MaskOrFn,
    add_decayed_weights,
    scale_by_adadelta,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_stddev,
    scale_by_sum_of_squares,
)
from gradtx.transform import Transformation, declare


@declare
def rmsprop(
    learning_rate: LearningRate,
    decay: Decay = 0.9,
    eps: NonNegative = 1e-8,
    initial_scale: NonNegative = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Optional[Decay] = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """RMSprop (Hinton's lecture 6e): ``s = decay * s + (1 - decay) * g^2 ;
    p = p - lr * g / sqrt(s + eps)``.

    ``eps_in_sqrt=False`` gives PyTorch's ``g / (sqrt(s) + eps)``; ``centered`` divides by
    the standard deviation ``sqrt(s - m^2 + eps)`` with ``m = ema(g)`` (Graves 2013);
    ``momentum`` adds a trace *after* the learning rate, as optax does; ``initial_scale``
    is the value ``s`` starts from (TensorFlow uses 1); ``nu_dtype`` (gradtx's, keyword-only)
    is the dtype of ``s`` in the state. A positive ``eps`` never rounds to 0 (float16: see
    ``docs/guides/numerics.md``).

    Chain: ``[scale_by_rms | scale_by_stddev] -> scale_by_learning_rate -> [trace]``.
    State: ``nu`` (``mu`` centered, ``trace`` with momentum, ``count`` with bias
    correction or a schedule).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.rmsprop(0.01, decay=0.9)
    >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)  # -lr * g / sqrt(0.1 * g^2) = -lr * sqrt(10)
    Array([-0.031623], dtype=float32)
    """
    precondition = scale_by_stddev if centered else scale_by_rms
    return chain(
        precondition(
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            eps_in_sqrt=eps_in_sqrt,
            bias_correction=bias_correction,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
        momentum_stage(momentum, nesterov),
    )


@declare
def adagrad(
    learning_rate: LearningRate,
    initial_accumulator_value: NonNegative = 0.1,
    eps: NonNegative = 1e-7,
    *,
    accumulator_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Adagrad (Duchi et al. 2011): ``s = s + g^2 ; p = p - lr * g / sqrt(s + eps)``,
    with ``s`` starting at ``initial_accumulator_value`` (optax and TensorFlow: 0.1;
    PyTorch: 0). ``accumulator_dtype`` (gradtx's, keyword-only) is the dtype of ``s`` in
    the state.

    Chain: ``scale_by_sum_of_squares -> scale_by_learning_rate``. State: ``sum_of_squares``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates  # the first step is -lr * sign(g)
    Array([-1.], dtype=float32)
    """
    return chain(
        scale_by_sum_of_squares(initial_accumulator_value, eps, accumulator_dtype=accumulator_dtype),
        scale_by_learning_rate(learning_rate),
    )


@declare
def adadelta(
    learning_rate: Optional[LearningRate] = 1.0,
    rho: Decay = 0.9,
    eps: NonNegative = 1e-6,
    weight_decay: NonNegativeOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
    *,
    accumulator_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Adadelta (Zeiler 2012)::

        e_g = rho * e_g + (1 - rho) * g^2
        d   = sqrt(e_x + eps) / sqrt(e_g + eps) * g
        e_x = rho * e_x + (1 - rho) * d^2
        p   = p - lr * d

    Differs from optax on purpose: optax's default ``learning_rate=None`` skips the
    learning-rate stage, so its update is ``+d`` and climbs the loss. gradtx defaults to
    ``learning_rate=1.0`` (the paper's and PyTorch's), which descends. ``None`` still
    means "no learning-rate stage" for code that relies on optax's behaviour.
    ``accumulator_dtype`` (gradtx's, keyword-only) is the dtype of both ``e_g`` and ``e_x``
    in the state (float32 for bfloat16 params); the updates keep the gradients' dtype.

    Chain: ``add_decayed_weights -> scale_by_adadelta(rho, eps, accumulator_dtype) -> scale_by_learning_rate``.
    State: ``e_g, e_x`` (optax's names).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adadelta()
    >>> updates, _ = opt.update(jnp.array([1.0]), opt.init(jnp.zeros(1)))
    >>> bool(updates[0] < 0)
    True
    """
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps, accumulator_dtype=accumulator_dtype),
        identity() if learning_rate is None else scale_by_learning_rate(learning_rate),
    )
