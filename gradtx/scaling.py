"""Rescalers and preconditioners: learning rate, RMS scaling, Adagrad, Adadelta, clipping,
weight decay."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _checks, _tree
from gradtx.base import (EmptyState, GradientTransformation, ScalarOrSchedule, Updates, identity,
                         init_empty_state)
from gradtx.combine import chain, fork
from gradtx.moments import bias_correct, scale_by_ema, second_moment
from gradtx.numerics import abs_sq, ema, safe_increment, zero_count


def scale(step_size: float) -> GradientTransformation:
    """``u -> step_size * u`` (the result keeps ``u``'s dtype)."""

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return jax.tree.map(lambda g: _times(step_size, g), updates), state

    return GradientTransformation(init_empty_state, update_fn)


def _times(step, g: jax.Array) -> jax.Array:
    """``step * g`` in ``g``'s dtype, whether ``step`` is a Python number or an array."""
    if isinstance(step, (int, float)):
        return step * g
    return jnp.asarray(step, dtype=g.dtype) * g


class ScaleByScheduleState(NamedTuple):
    count: jax.Array  # int32 step count, saturating


def scale_by_schedule(step_size_fn: Callable[[jax.Array], jax.Array]) -> GradientTransformation:
    """``u -> step_size_fn(t) * u`` with ``t`` counting calls from 0."""

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        step = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: _times(step, g), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """``u -> -lr * u`` (``+lr * u`` with ``flip_sign=False``); ``lr`` a number or a
    schedule ``step -> lr``."""
    _checks.non_negative("scale_by_learning_rate", "learning_rate", learning_rate)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def sqrt_eps(eps: float = 0.0, eps_root: float = 0.0) -> GradientTransformation:
    """``u -> sqrt(u + eps_root) + eps``: the denominator of every RMS-style method."""
    _checks.non_negative("sqrt_eps", "eps", eps)
    _checks.non_negative("sqrt_eps", "eps_root", eps_root)

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return jax.tree.map(lambda v: jnp.sqrt(v + eps_root) + eps, updates), state

    return GradientTransformation(init_empty_state, update_fn)


def _rms_eps(eps: float, eps_in_sqrt: bool) -> dict[str, float]:
    """Where ``eps`` goes: ``sqrt(v + eps)`` (optax, Keras) or ``sqrt(v) + eps`` (PyTorch)."""
    return {"eps_root": eps} if eps_in_sqrt else {"eps": eps}


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0,
                 eps_in_sqrt: bool = True, bias_correction: bool = False) -> GradientTransformation:
    """``nu = decay * nu + (1 - decay) * |u|^2 ; u -> u / sqrt(nu + eps)``
    (``u / (sqrt(nu) + eps)`` with ``eps_in_sqrt=False``).

    Built as ``fork(identity, second_moment -> [bias_correct] -> sqrt_eps, join=divide)``.
    """
    _checks.in_interval("scale_by_rms", "decay", decay)
    _checks.non_negative("scale_by_rms", "eps", eps)
    return fork(
        identity(),
        chain(second_moment(decay, initial_scale),
              bias_correct(decay) if bias_correction else identity(),
              sqrt_eps(**_rms_eps(eps, eps_in_sqrt))),
        join=jnp.divide)


def _variance(mean: jax.Array, mean_sq: jax.Array) -> jax.Array:
    """``max(E[|u|^2] - |E[u]|^2, 0)``.

    The clamp is a deliberate difference from optax: the difference can round to a tiny
    negative number (always at t=1 with bias correction, where it is exactly 0), and optax
    then takes the root of it and returns NaN. Wherever optax's value is finite, it is
    unchanged."""
    return jnp.maximum(mean_sq - abs_sq(mean), 0)


def scale_by_stddev(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0,
                    eps_in_sqrt: bool = True, bias_correction: bool = False) -> GradientTransformation:
    """``mu = ema(u), nu = ema(|u|^2) ; u -> u / sqrt(nu - |mu|^2 + eps)`` (centered RMSprop)."""
    _checks.in_interval("scale_by_stddev", "decay", decay)
    _checks.non_negative("scale_by_stddev", "eps", eps)
    unbias = bias_correct(decay) if bias_correction else identity()
    return fork(
        identity(),
        chain(fork(chain(scale_by_ema(decay), unbias),
                   chain(second_moment(decay, initial_scale), unbias),
                   join=_variance),
              sqrt_eps(**_rms_eps(eps, eps_in_sqrt))),
        join=jnp.divide)


class SumOfSquaresState(NamedTuple):
    sum_of_squares: Updates  # s, the running sum of |u|^2


def scale_by_sum_of_squares(initial_accumulator_value: float = 0.1, eps: float = 1e-7) -> GradientTransformation:
    """``s = s + |u|^2 ; u -> u / sqrt(s + eps)`` (0 where ``s == 0``): Adagrad's accumulator."""
    _checks.non_negative("scale_by_sum_of_squares", "initial_accumulator_value", initial_accumulator_value)
    _checks.non_negative("scale_by_sum_of_squares", "eps", eps)

    def init_fn(params):
        return SumOfSquaresState(sum_of_squares=_tree.real_full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.sum_of_squares, where="scale_by_sum_of_squares",
                          what="state field `sum_of_squares`")
        s = jax.tree.map(lambda g, t: (abs_sq(g) + t).astype(t.dtype), updates, state.sum_of_squares)
        updates = jax.tree.map(
            lambda g, t: jnp.where(t > 0, jax.lax.rsqrt(t + eps), 0.0).astype(g.dtype) * g, updates, s)
        return updates, SumOfSquaresState(sum_of_squares=s)

    return GradientTransformation(init_fn, update_fn)


class UpdateRmsState(NamedTuple):
    e_x: Updates  # the moving average of the squared outgoing updates, E[dx^2]


def scale_by_update_rms(decay: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """``d = sqrt(e_x + eps) * u ; e_x = decay * e_x + (1 - decay) * |d|^2 ; u -> d``.

    Rescales by the RMS of its own past outputs: Adadelta's second stage, which gives the
    update the units of the parameters (Zeiler 2012).
    """
    _checks.in_interval("scale_by_update_rms", "decay", decay)
    _checks.non_negative("scale_by_update_rms", "eps", eps)

    def init_fn(params):
        return UpdateRmsState(e_x=_tree.real_full_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.e_x, where="scale_by_update_rms", what="state field `e_x`")
        deltas = jax.tree.map(lambda u, x: jnp.sqrt(x + eps).astype(u.dtype) * u, updates, state.e_x)
        e_x = jax.tree.map(lambda d, x: ema(abs_sq(d), x, decay).astype(x.dtype), deltas, state.e_x)
        return deltas, UpdateRmsState(e_x=e_x)

    return GradientTransformation(init_fn, update_fn)


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> GradientTransformation:
    """``u -> sqrt(e_x + eps) / sqrt(e_g + eps) * u`` with ``e_g = ema(|u|^2)`` and
    ``e_x`` the average of past outputs: ``scale_by_rms(rho, eps) -> scale_by_update_rms(rho, eps)``."""
    return chain(scale_by_rms(decay=rho, eps=eps, eps_in_sqrt=True),
                 scale_by_update_rms(decay=rho, eps=eps))


class WeightDecayScheduleState(NamedTuple):
    count: jax.Array


MaskOrFn = Optional[Union[Any, Callable[[Any], Any]]]


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask: MaskOrFn = None) -> GradientTransformation:
    """``u -> u + weight_decay * p`` (only where ``mask`` is True, when given).

    ``mask`` is a tree shaped like the params whose leaves are bools (or boolean arrays,
    broadcast against the leaf), or a function ``params -> mask``.
    """
    _checks.non_negative("add_decayed_weights", "weight_decay", weight_decay)
    scheduled = callable(weight_decay)

    def init_fn(params):
        del params
        return WeightDecayScheduleState(count=zero_count()) if scheduled else EmptyState()

    def update_fn(updates, state, params=None, **extra):
        del extra
        new_state = WeightDecayScheduleState(safe_increment(state.count)) if scheduled else state
        if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, new_state  # nothing to add: params are not needed
        if params is None:
            raise ValueError("gradtx.add_decayed_weights: update() needs params "
                             "(call update(updates, state, params)).")
        wd = weight_decay(state.count) if scheduled else weight_decay
        _tree.check_match(updates, params, where="add_decayed_weights", what="params")
        decay = lambda g, p: g + _times(wd, p).astype(g.dtype)  # noqa: E731
        if mask is None:
            return jax.tree.map(decay, updates, params), new_state
        m = mask(params) if callable(mask) else mask
        updates = jax.tree.map(lambda g, p, keep: _where_kept(keep, decay(g, p), g), updates, params, m)
        return updates, new_state

    return GradientTransformation(init_fn, update_fn)


def scale_by_sign() -> GradientTransformation:
    """``u -> sign(u)`` element-wise (Lion, signSGD)."""

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return jax.tree.map(jnp.sign, updates), state

    return GradientTransformation(init_empty_state, update_fn)


def _where_kept(keep, kept: jax.Array, other: jax.Array) -> jax.Array:
    """``kept`` where the mask ``keep`` is True: a Python bool picks at trace time, a boolean
    array (e.g. a packed layout's per-element mask) element by element."""
    if isinstance(keep, (bool, np.bool_)):
        return kept if keep else other
    return jnp.where(keep, kept, other)


def clip(max_delta: float) -> GradientTransformation:
    """``u -> clip(u, -max_delta, max_delta)`` element-wise."""
    _checks.non_negative("clip", "max_delta", max_delta)

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state

    return GradientTransformation(init_empty_state, update_fn)


def global_norm(updates: Updates) -> jax.Array:
    """``sqrt(sum over leaves of sum |u|^2)``."""
    return jnp.sqrt(sum(jnp.sum(abs_sq(g)) for g in jax.tree.leaves(updates)))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """``u -> u * max_norm / max(||u||, max_norm)`` with ``||u||`` the norm over all leaves."""
    _checks.positive("clip_by_global_norm", "max_norm", max_norm)

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        norm = global_norm(updates)
        keep = jnp.squeeze(norm < max_norm)
        return jax.tree.map(
            lambda g: jax.lax.select(keep, g, (g / norm.astype(g.dtype)) * max_norm), updates), state

    return GradientTransformation(init_empty_state, update_fn)
