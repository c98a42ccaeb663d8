"""Schedule-free learning (Defazio et al. 2024): the interpolation primitive, the wrapper and its optimizers.

"The Road Less Scheduled", https://arxiv.org/abs/2405.15682. Three sequences: the base
optimizer steps ``z`` (``z = z + u``, ``u`` its update, e.g. ``-lr * g``), ``x`` is a
weighted average of the ``z``, and the gradient is taken at ``y``, between the two::

    y_t     = (1 - b1) z_t + b1 x_t                 (the params during training)
    z_{t+1} = z_t - gamma_t * d_t                   (d_t from the gradient at y_t)
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}   (evaluate here)
    c_{t+1} = gamma_max^p / sum_{i <= t} gamma_max_i^p,  gamma_max = max_{i <= t} gamma_i

Only ``y`` (the params) and ``z`` are kept; ``x = (y - (1 - b1) z) / b1`` is recomputed,
so ``b1`` must be > 0. ``schedule_free_eval_params(state, params)`` returns ``x``.

Where gradtx differs from optax 0.2.8 (and follows the paper's Algorithm 1 and the
authors' ``schedulefree`` package): the learning rate ``gamma_t`` that weights ``c`` is the
one the base optimizer stepped ``z`` with at the same step (optax evaluates the schedule
one step ahead, at ``step_count = count + 1``: with ``warmup_steps`` optax's first step is
a no-op, its ``z`` steps lag the weights by one warmup step, and ``warmup_steps=0`` keeps its
learning rate at 0 for good); ``schedule_free_adamw`` folds
Adam's bias correction into ``gamma_t = lr * min(1, t / warmup) * sqrt(1 - b2^t)``, which
also scales the weight decay and the averaging weights (optax divides ``v`` by ``1 - b2^t``
instead and weights the average by ``lr`` alone).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx import _tree
from gradtx.base import Params, UpdateError
from gradtx.combine import chain, fork, identity
from gradtx.hyperparams import (
    AccumulatorDtype,
    DecayBelowOne,
    Interval,
    LearningRate,
    NonNegative,
    NonNegativeOrSchedule,
)
from gradtx.moments import second_moment
from gradtx.numerics import real_dtype
from gradtx.scaling import add_decayed_weights, scale_by_learning_rate, sqrt_eps
from gradtx.transform import Field, Step, Transformation, declare, primitive, update_inner
from gradtx.wrappers import Inner, _Integer

__all__ = [
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_interpolation",
    "schedule_free_sgd",
]

InterpolationB1 = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True)]
"""Schedule-free's ``b1`` in (0, 1]: ``x`` is recovered from ``y`` and ``z`` by dividing by it."""
WarmupSteps = Annotated[Optional[int], _Integer(0)]
"""A number of warmup steps >= 0 (``None`` or 0: no warmup)."""
ConstantLearningRate = Annotated[ArrayLike, Interval(0.0)]
"""A learning rate >= 0 (the warmup is the only schedule of ``schedule_free_sgd`` / ``_adamw``)."""


def _scalar_dtype(params: Params) -> Any:
    """The dtype of the scalar fields: the params' lowest real floating dtype (optax's), but
    at least float32 (bfloat16 would round the running weight sum)."""
    dtypes = [real_dtype(jnp.asarray(p).dtype) for p in jax.tree.leaves(params)]
    floating = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)] or [jnp.dtype(jnp.float32)]
    return jnp.promote_types(min(floating, key=lambda d: jnp.finfo(d).bits), jnp.float32)


def _learning_rate_at(learning_rate, count, dtype) -> jax.Array:
    return jnp.asarray(learning_rate(count) if callable(learning_rate) else learning_rate, dtype)


def _recovered_x(y: jax.Array, z: jax.Array, b1) -> jax.Array:
    """``x = (y - (1 - b1) z) / b1``: the average ``x`` from the params ``y`` and ``z``."""
    return (y - (1.0 - b1) * z) / b1


@declare
def schedule_free_interpolation(
    learning_rate: LearningRate,
    b1: InterpolationB1 = 0.9,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``z = z + u ; x = (1 - c) x + c z ; u -> (b1 x + (1 - b1) z) - y``, ``c = lr_max^p / sum lr_max^p``.

    The schedule-free step (Defazio et al. 2024, https://arxiv.org/abs/2405.15682) after a
    base optimizer whose update ``u`` steps ``z``: ``y`` are the params, ``x = (y - (1 - b1)
    z_prev) / b1`` is recomputed from them, ``lr`` is ``learning_rate`` at this step (a
    schedule reads the step count, as the base optimizer's does), ``lr_max`` its running
    maximum and ``p = weight_lr_power``; ``c = 0`` while the weights sum to 0. The output is
    the change of the params, ``y_new - y``.

    Args:
      learning_rate: the base optimizer's learning rate (the averaging weights), or its schedule.
      b1: the interpolation between ``x`` and ``z`` in ``y``, in (0, 1].
      weight_lr_power: the power ``p`` of ``lr_max`` in the averaging weights.
      state_dtype: the dtype of ``z`` (the params' by default).

    State: ``b1, weight_sum, max_lr, z`` (optax's fields), and ``count`` for a schedule.
    """

    def apply(updates, state, step: Step):
        y = step.params
        if y is None:
            raise UpdateError("update() needs the params (y): pass them as update(grads, state, params)")
        lr = _learning_rate_at(learning_rate, step.count, state["max_lr"].dtype)
        max_lr = jnp.maximum(state["max_lr"], lr)
        weight = max_lr**weight_lr_power
        weight_sum = state["weight_sum"] + weight
        # optax's guard: c = 0 while the weights sum to 0 (a zero learning rate), NaN stays NaN
        c = jnp.where(
            jnp.logical_or(jnp.isnan(weight), jnp.isnan(weight_sum)),
            jnp.full(weight.shape, jnp.nan, weight.dtype),
            jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
        )
        z = jax.tree.map(lambda zi, ui: jnp.asarray(zi + ui).astype(zi.dtype), state["z"], updates)
        x = jax.tree.map(lambda yi, zi_prev, zi: (1.0 - c) * _recovered_x(yi, zi_prev, b1) + c * zi, y, state["z"], z)
        new_y = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        out = jax.tree.map(lambda ny, yi: ny - yi, new_y, y)
        new = {"b1": state["b1"], "weight_sum": weight_sum, "max_lr": max_lr, "z": z}
        return _tree.cast_like(out, updates), new

    def scalar(value):
        return Field(lambda params: jnp.asarray(value, _scalar_dtype(params)), like_params=False)

    def init_z(params):
        return _tree.cast(jax.tree.map(lambda p: jnp.array(p, copy=True), params), state_dtype)

    return primitive(
        apply,
        {"b1": scalar(b1), "weight_sum": scalar(0.0), "max_lr": scalar(0.0), "z": Field(init_z)},
        uses_count=callable(learning_rate),
    )


def schedule_free_eval_params(state: Any, params: Params) -> Params:
    """``x = (y - (1 - b1) z) / b1``: the params to evaluate at (the average ``x``) from the
    training params ``y`` and the state's ``z`` and ``b1``.

    Works on the state of ``schedule_free``, ``schedule_free_sgd``, ``schedule_free_adamw``
    and any chain holding ``schedule_free_interpolation``, and on optax's
    ``ScheduleFreeState``.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.schedule_free_sgd(0.5, b1=0.5)
    >>> params = jnp.array([2.0])
    >>> updates, state = tx.update(jnp.array([1.0]), tx.init(params), params)
    >>> params = gradtx.apply_updates(params, updates)  # y = (1 - b1) z + b1 x, x = z = 1.5
    >>> gradtx.schedule_free_eval_params(state, params)
    Array([1.5], dtype=float32)
    """
    b1, z = getattr(state, "b1", None), getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError(
            "gradtx.schedule_free_eval_params: the state has no b1 and z fields: pass the state of "
            f"schedule_free, schedule_free_sgd or schedule_free_adamw, got {type(state).__name__}"
        )
    return jax.tree.map(lambda yi, zi: _recovered_x(yi, zi, b1), params, z)


@declare
def schedule_free(
    base_optimizer: Inner,
    learning_rate: LearningRate,
    b1: InterpolationB1 = 0.9,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Schedule-free ``base_optimizer`` (Defazio et al. 2024, https://arxiv.org/abs/2405.15682)::

        z = z + base_optimizer(g)                           (z_{t+1} = z_t - lr_t d_t)
        x = (1 - c) x + c z,   c = lr_max^p / sum lr_max^p  (x = (y - (1 - b1) z_prev) / b1)
        y = b1 x + (1 - b1) z                               (the new params)

    The base optimizer should have no momentum (``b1`` replaces it) and the same learning
    rate (``learning_rate`` weights the average; a schedule: warmup, no decay). Evaluate at
    ``schedule_free_eval_params(state, params)``. Differs from optax 0.2.8: a
    ``learning_rate`` schedule is read at the step count, where the base optimizer reads its
    own (optax reads it at ``count + 1``, one step ahead of the base optimizer's ``z`` steps).

    Chain: ``base_optimizer (kept whole) -> schedule_free_interpolation(learning_rate, b1,
    weight_lr_power, state_dtype)``. State: ``base_optimizer_state, b1, weight_sum, max_lr,
    z`` (optax's; and ``count`` for a schedule, of which optax's ``step_count`` is ``count + 1``).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.schedule_free(gradtx.sgd(0.1), learning_rate=0.1)
    >>> params = jnp.array([1.0, -2.0])
    >>> updates, state = tx.update(jnp.array([1.0, 1.0]), tx.init(params), params)
    >>> updates.round(6)  # the first step: x = z = y - lr g, so y moves by -lr g
    Array([-0.1, -0.1], dtype=float32)
    """

    def run_base(updates, state, step: Step):
        out, base_state = update_inner(base_optimizer, updates, state["base_optimizer_state"], step)
        return out, {"base_optimizer_state": base_state}

    base = primitive(run_base, {"base_optimizer_state": Field(base_optimizer.init, like_params=False)})
    return chain(base, schedule_free_interpolation(learning_rate, b1, weight_lr_power, state_dtype))


def _step_taken(count) -> jax.Array:
    """``t = count + 1`` in the default float dtype (the ``+ 1`` in float, so that a count
    saturated at the int32 maximum does not wrap to a negative step)."""
    return jnp.asarray(count, jnp.result_type(float)) + 1


def _warmed_up(learning_rate, warmup_steps: Optional[int]):
    """``gamma(count) = lr * min(1, (count + 1) / warmup_steps)``: the paper's linear warmup,
    ``t = count + 1`` the step being taken (``lr`` itself without warmup; a schedule that
    reads the step count for any ``warmup_steps``, 0 included, as optax's)."""
    if warmup_steps is None:
        return learning_rate
    if warmup_steps == 0:
        return lambda count: learning_rate * jnp.ones([], jnp.result_type(float))
    return lambda count: learning_rate * jnp.minimum(1.0, _step_taken(count) / warmup_steps)


def _adam_step_size(learning_rate, warmup_steps: Optional[int], b2):
    """``gamma(count) = lr * min(1, t / warmup_steps) * sqrt(1 - b2^t)``, ``t = count + 1``:
    Schedule-Free AdamW's learning rate with Adam's bias correction folded in (the paper's
    Algorithm 1)."""
    warm = _warmed_up(learning_rate, warmup_steps)

    def gamma(count):
        t = _step_taken(count)  # a float power: one kernel for every step
        return (warm(count) if callable(warm) else warm) * jnp.sqrt(1 - b2**t)

    return gamma


def _over(g: jax.Array, denominator: jax.Array) -> jax.Array:
    """``g / denominator``, computed as ``g * (1 / denominator)``, optax's rounding: the
    update ``y_new - y`` cancels, so one ulp of ``z`` is a large part of it in float32."""
    return g * (1 / denominator)


@declare
def schedule_free_sgd(
    learning_rate: ConstantLearningRate = 1.0,
    warmup_steps: WarmupSteps = None,
    b1: InterpolationB1 = 0.9,
    weight_decay: Optional[NonNegativeOrSchedule] = None,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Schedule-Free SGD (Defazio et al. 2024, https://arxiv.org/abs/2405.15682)::

        gamma_t = lr * min(1, t / warmup_steps)             (t = 1, 2, ...)
        z = z - gamma_t * (g + weight_decay * y)             (g taken at y)
        x = (1 - c) x + c z,   c = gamma_max^p / sum gamma_max^p
        y = b1 x + (1 - b1) z

    As the authors' ``SGDScheduleFree`` (``r = 0``). Differs from optax 0.2.8 with
    ``warmup_steps``: optax's SGD steps ``z`` with ``gamma_{t-1}`` (0 at the first step, a
    no-op) while it weights the average with ``gamma_t``; gradtx uses ``gamma_t`` for both, as
    the paper; and optax's ``warmup_steps=0`` keeps the learning rate at 0 (its
    ``warmup_constant_schedule`` with 0 steps stays at its initial value), gradtx's is no
    warmup. Without warmup the two agree.

    Chain: ``[add_decayed_weights(weight_decay)] -> scale_by_learning_rate(gamma) ->
    schedule_free_interpolation(gamma, b1, weight_lr_power, state_dtype)``.
    State: ``b1, weight_sum, max_lr, z`` (and ``count`` with warmup).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.schedule_free_sgd(0.1, warmup_steps=2)
    >>> params = jnp.array([1.0])
    >>> updates, state = tx.update(jnp.array([1.0]), tx.init(params), params)
    >>> updates.round(6)  # the first step: gamma_1 = lr / 2, x = z
    Array([-0.05], dtype=float32)
    """
    gamma = _warmed_up(learning_rate, warmup_steps)
    return chain(
        *([add_decayed_weights(weight_decay)] if weight_decay is not None else []),
        scale_by_learning_rate(gamma),
        schedule_free_interpolation(gamma, b1, weight_lr_power, state_dtype),
    )


@declare
def schedule_free_adamw(
    learning_rate: ConstantLearningRate = 0.0025,
    warmup_steps: WarmupSteps = None,
    b1: InterpolationB1 = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegativeOrSchedule = 0.0,
    weight_lr_power: NonNegative = 2.0,
    state_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Schedule-Free AdamW (Defazio et al. 2024, https://arxiv.org/abs/2405.15682, Algorithm 1)::

        v = b2 * v + (1 - b2) * |g|^2                       (g taken at y)
        gamma_t = lr * min(1, t / warmup_steps) * sqrt(1 - b2^t)
        z = z - gamma_t * (g / (sqrt(v) + eps) + weight_decay * y)
        x = (1 - c) x + c z,   c = gamma_max^p / sum gamma_max^p
        y = b1 x + (1 - b1) z

    As the paper and the authors' ``AdamWScheduleFree`` (``r = 0``). Differs from optax
    0.2.8, which divides ``v`` by ``1 - b2^t`` and steps with ``lr * min(1, (t - 1) /
    warmup)``: optax's ``eps`` is effectively scaled by ``sqrt(1 - b2^t)``, its weight decay
    and its averaging weights lack the factor ``sqrt(1 - b2^t)`` (so the first, noisiest
    iterates weigh as much as the later ones), and with warmup its first step is a no-op.
    With ``b2 = 0`` and no warmup the two agree.

    Chain: ``fork(identity, second_moment(b2) -> sqrt_eps(eps), join=divide) ->
    add_decayed_weights(weight_decay) -> scale_by_learning_rate(gamma) ->
    schedule_free_interpolation(gamma, b1, weight_lr_power, state_dtype)`` (the division
    as ``g * (1 / d)``, optax's rounding). State: ``count, nu, b1, weight_sum, max_lr, z``.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.schedule_free_adamw(0.1, b2=0.75, eps=0.0)
    >>> params = jnp.array([1.0])
    >>> updates, state = tx.update(jnp.array([3.0]), tx.init(params), params)
    >>> updates.round(6)  # the first step: -lr * sqrt(1 - b2) * g / sqrt((1 - b2) g^2) = -lr
    Array([-0.1], dtype=float32)
    """
    gamma = _adam_step_size(learning_rate, warmup_steps, b2)
    return chain(
        fork(identity(), chain(second_moment(b2), sqrt_eps(eps)), join=_over),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(gamma),
        schedule_free_interpolation(gamma, b1, weight_lr_power, state_dtype),
    )
