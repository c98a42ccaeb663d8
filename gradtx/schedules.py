"""Schedules: functions ``step -> value`` (step counted from 0), for any hyperparameter
that accepts a schedule (``learning_rate``, ``weight_decay``)."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.base import Schedule
from gradtx.hyperparams import Decay, NonNegative, Positive, Real
from gradtx.transform import declare


@declare
def constant_schedule(value: Real) -> Schedule:
    """``t -> value``."""
    return lambda count: value


@declare
def cosine_decay_schedule(
    init_value: Real, decay_steps: Positive, alpha: Decay = 0.0, exponent: Real = 1.0
) -> Schedule:
    """``t -> init_value * ((1 - alpha) * c^exponent + alpha)``, with
    ``c = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2`` (Loshchilov & Hutter 2017,
    without restarts); optax's arguments and numbers."""
    # ArrayLike (the hyperparameter types) includes complex and numpy.bool, which declare rejects
    steps = float(decay_steps)  # type: ignore[arg-type]

    def schedule(count):
        count = jnp.minimum(count, steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


@declare
def triangular_schedule(base_value: NonNegative, max_value: NonNegative, step_size: Positive) -> Schedule:
    """``t -> base + (max - base) * max(0, 1 - |t / step_size - 2 k + 1|)``, ``k = floor(1 + t /
    (2 step_size))``: the cyclical learning rate (Smith 2017), a triangle wave from
    ``base_value`` up to ``max_value`` and back every ``2 * step_size`` steps."""
    # ArrayLike (the hyperparameter types) includes complex and numpy.bool, which declare rejects
    if not max_value >= base_value:  # type: ignore[operator]
        raise ValueError(
            f"gradtx.triangular_schedule(max_value={max_value!r}): max_value must be >= base_value ({base_value!r})"
        )

    def schedule(count):
        t = jnp.asarray(count, jnp.float32) / step_size
        cycle = jnp.floor(1 + t / 2)
        # ArrayLike includes numpy.bool, which declare rejects
        return base_value + (max_value - base_value) * jnp.maximum(0.0, 1 - jnp.abs(t - 2 * cycle + 1))  # type: ignore[operator]

    return schedule
