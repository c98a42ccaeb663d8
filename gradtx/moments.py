"""Running statistics of the updates: moving averages, bias correction, momentum traces.

State fields carry optax's names for the same quantity (``mu``, ``nu``, ``trace``,
``nu_max``) so that ``optax.tree.get`` and friends find them in gradtx states; the step
count (``count``) belongs to the whole transformation (``gradtx.transform``).
"""

from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp

from gradtx import _tree
from gradtx.combine import chain, fork
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, NonNegative, OneOf
from gradtx.numerics import abs_sq, debias, ema, heavy_ball, plus_eps, safe_increment
from gradtx.transform import Transformation, declare, primitive


def _ema_stage(decay, accumulator_dtype, output_decay=None) -> Transformation:
    """``mu = ema(u, mu, decay) ; u -> mu``, or with ``output_decay`` given,
    ``u -> ema(u, mu_previous, output_decay)`` (Lion blends the previous average at its own rate)."""

    def apply(updates, state, step):
        mu = jax.tree.map(lambda g, m: ema(g, m, decay), updates, state["mu"])
        out = mu if output_decay is None else jax.tree.map(lambda g, m: ema(g, m, output_decay), updates, state["mu"])
        return _tree.cast_like(out, updates), {"mu": _tree.cast(mu, accumulator_dtype)}

    return primitive(apply, {"mu": lambda params: _tree.zeros_like(params, dtype=accumulator_dtype)})


@declare
def scale_by_ema(decay: Decay, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``mu = decay * mu + (1 - decay) * u ; u -> mu`` (no debiasing).

    Args:
      decay: the averaging factor, in [0, 1].
      accumulator_dtype: dtype of ``mu`` in the state (the output keeps the input's dtype).

    State: ``mu``.
    """
    return _ema_stage(decay, accumulator_dtype)


@declare
def interpolated_ema(b1: Decay = 0.9, b2: Decay = 0.99, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``u -> (1 - b1) * u + b1 * mu ; mu = (1 - b2) * u + b2 * mu`` (Lion's momentum:
    the output blends the *previous* average with ``b1``, the average moves with ``b2``).

    State: ``mu``.
    """
    return _ema_stage(b2, accumulator_dtype, output_decay=b1)


@declare
def second_moment(
    decay: Decay, initial_scale: NonNegative = 0.0, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """``nu = decay * nu + (1 - decay) * |u|^2 ; u -> nu`` (no debiasing).

    ``nu`` starts at ``initial_scale``; it is real-valued for complex updates.

    Args:
      decay: the averaging factor, in [0, 1].
      initial_scale: the value ``nu`` starts at.
      accumulator_dtype: dtype of ``nu`` in the state (float32 for bfloat16 params: in
        bfloat16 the increment ``(1 - decay) * |u|^2`` rounds away once ``nu`` is a few
        hundred times larger; a complex dtype means its real counterpart); the output
        keeps the real dtype of the input.

    State: ``nu``.
    """

    def apply(updates, state, step):
        nu = jax.tree.map(lambda g, n: ema(abs_sq(g), n, decay).astype(n.dtype), updates, state["nu"])
        return _tree.cast_real_like(nu, updates), {"nu": nu}

    return primitive(apply, {"nu": lambda params: _tree.real_state(params, accumulator_dtype, initial_scale)})


@declare
def bias_correct(decay: DecayBelowOne, *, step_offset: Annotated[int, OneOf((0, 1))] = 0) -> Transformation:
    """``u -> u / (1 - decay^(t + step_offset))``, ``t`` the step (from 1).

    Undoes the pull towards zero of a moving average started at zero. ``step_offset=1``
    corrects for the next step's average (NAdam's look-ahead). Reads the transformation's
    one step count; keeps nothing of its own.
    """

    def apply(updates, state, step):
        t = safe_increment(step.count)
        if step_offset:
            t = safe_increment(t)
        return debias(updates, decay, t), {}

    return primitive(apply, uses_count=True)


def _trace_stage(decay, accumulator_dtype, nesterov: bool) -> Transformation:
    def apply(updates, state, step):
        trace = jax.tree.map(lambda g, v: heavy_ball(g, v, decay), updates, state["trace"])
        out = jax.tree.map(lambda g, v: heavy_ball(g, v, decay), updates, trace) if nesterov else trace
        return _tree.cast_like(out, updates), {"trace": _tree.cast(trace, accumulator_dtype)}

    return primitive(apply, {"trace": lambda params: _tree.zeros_like(params, dtype=accumulator_dtype)})


@declare
def trace(decay: Decay, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``v = decay * v + u ; u -> v`` (heavy-ball momentum, PyTorch's and optax's form).

    State: ``trace``.
    """
    return _trace_stage(decay, accumulator_dtype, nesterov=False)


@declare
def nesterov_trace(decay: Decay, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``v = decay * v + u ; u -> u + decay * v`` (Nesterov's look-ahead momentum).

    State: ``trace``.
    """
    return _trace_stage(decay, accumulator_dtype, nesterov=True)


@declare
def running_max(*, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``nu_max = max(nu_max, u) ; u -> nu_max`` (AMSGrad's non-increasing denominator).

    ``accumulator_dtype`` (gradtx's, keyword-only) is the dtype of ``nu_max`` in the state
    (a complex dtype means its real counterpart); the output keeps the input's dtype.

    State: ``nu_max``.
    """

    def apply(updates, state, step):
        nu_max = jax.tree.map(lambda m, u: jnp.maximum(m, u).astype(m.dtype), state["nu_max"], updates)
        return _tree.cast_like(nu_max, updates), {"nu_max": nu_max}

    return primitive(apply, {"nu_max": lambda params: _tree.real_state(params, accumulator_dtype)})


@declare
def infinity_norm(decay: Decay = 0.999, eps: NonNegative = 1e-8) -> Transformation:
    """``nu = max(decay * nu, |u| + eps) ; u -> nu`` (Adamax's denominator).

    A positive ``eps`` is at least the smallest normal number of the dtype
    (``gradtx.numerics.plus_eps``): in float16 ``1e-8`` would round to 0 and ``0 / 0`` is NaN.

    State: ``nu``.
    """

    def apply(updates, state, step):
        nu = jax.tree.map(
            lambda g, n: jnp.maximum(plus_eps(jnp.abs(g), eps), decay * n).astype(n.dtype), updates, state["nu"]
        )
        return nu, {"nu": nu}

    return primitive(apply, {"nu": _tree.real_full_like})


def debiased_first_moment(mu: Transformation, b1, *, nesterov: bool) -> Transformation:
    """``m_hat = mu / (1 - b1^t)``, or with ``nesterov`` NAdam's look-ahead
    ``b1 * mu / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t)``, ``mu`` the given
    ``scale_by_ema(b1)`` stage (passed in, so that a direction can share it)."""
    if not nesterov:
        return chain(mu, bias_correct(b1))
    return fork(chain(mu, bias_correct(b1, step_offset=1)), bias_correct(b1), join=lambda m_next, g: ema(g, m_next, b1))
