"""Rescalers and preconditioners: learning rate, RMS scaling, Adagrad, Adadelta, clipping,
weight decay."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree
from gradtx.base import UpdateError, Updates
from gradtx.combine import chain, fork, identity, renamed
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate, NonNegative, NonNegativeOrSchedule, Positive
from gradtx.moments import bias_correct, scale_by_ema, second_moment
from gradtx.numerics import abs_sq, ema, plus_eps, rsqrt_or_zero
from gradtx.transform import Transformation, declare, elementwise, primitive

MaskOrFn = Optional[Union[Any, Callable[[Any], Any]]]


def _times(step, g: jax.Array) -> jax.Array:
    """``step * g`` in ``g``'s dtype, whether ``step`` is a Python number or an array."""
    if isinstance(step, (int, float)):
        return step * g
    return jnp.asarray(step, dtype=g.dtype) * g


@declare
def scale(step_size: Any) -> Transformation:
    """``u -> step_size * u`` (the result keeps ``u``'s dtype)."""
    return elementwise(lambda g: _times(step_size, g))


@declare
def scale_by_schedule(step_size_fn: Callable[[jax.Array], jax.Array]) -> Transformation:
    """``u -> step_size_fn(t) * u`` with ``t`` the number of steps taken (from 0)."""

    def apply(updates, state, step):
        size = step_size_fn(step.count)
        return jax.tree.map(lambda g: _times(size, g), updates), {}

    return primitive(apply, uses_count=True)


@declare
def scale_by_learning_rate(learning_rate: LearningRate, *, flip_sign: bool = True) -> Transformation:
    """``u -> -lr * u`` (``+lr * u`` with ``flip_sign=False``); ``lr`` a number or a
    schedule ``step -> lr`` (which reads the step count)."""
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        schedule = learning_rate
        # a Schedule returns an ArrayLike; scale_by_schedule's annotation (which the docs show) says Array
        return scale_by_schedule(lambda count: sign * schedule(count))  # type: ignore[arg-type, return-value]
    return scale(sign * learning_rate)


@declare
def sqrt_eps(eps: NonNegative = 0.0, eps_root: NonNegative = 0.0) -> Transformation:
    """``u -> sqrt(u + eps_root) + eps``: the denominator of every RMS-style method.

    Each positive eps is at least the smallest normal number of ``u``'s dtype, so that it
    never rounds to 0 in float16 (``gradtx.numerics.plus_eps``; float32 and float64 are
    unchanged)."""
    return elementwise(lambda v: plus_eps(jnp.sqrt(plus_eps(v, eps_root)), eps))


def _rms_eps(eps, eps_in_sqrt: bool) -> dict[str, Any]:
    """Where ``eps`` goes: ``sqrt(v + eps)`` (optax, Keras) or ``sqrt(v) + eps`` (PyTorch)."""
    return {"eps_root": eps} if eps_in_sqrt else {"eps": eps}


@declare
def scale_by_rms(
    decay: Decay = 0.9,
    eps: NonNegative = 1e-8,
    initial_scale: NonNegative = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``nu = decay * nu + (1 - decay) * |u|^2 ; u -> u / sqrt(nu + eps)``
    (``u / (sqrt(nu) + eps)`` with ``eps_in_sqrt=False``).

    Built as ``fork(identity, second_moment -> [bias_correct] -> sqrt_eps, join=divide)``.
    ``nu_dtype`` (gradtx's, keyword-only) is the dtype of ``nu`` in the state.
    State: ``nu`` (and ``count`` with ``bias_correction``).
    """
    return fork(
        identity(),
        chain(
            second_moment(decay, initial_scale, accumulator_dtype=nu_dtype),
            bias_correct(decay) if bias_correction else identity(),
            sqrt_eps(**_rms_eps(eps, eps_in_sqrt)),
        ),
        join=jnp.divide,
    )


def _variance(mean: jax.Array, mean_sq: jax.Array) -> jax.Array:
    """``max(E[|u|^2] - |E[u]|^2, 0)``.

    The clamp is a deliberate difference from optax: the difference can round to a tiny
    negative number (always at t=1 with bias correction, where it is exactly 0), and optax
    then takes the root of it and returns NaN. Wherever optax's value is finite, it is
    unchanged."""
    return jnp.maximum(mean_sq - abs_sq(mean), 0)


@declare
def scale_by_stddev(
    decay: Decay = 0.9,
    eps: NonNegative = 1e-8,
    initial_scale: NonNegative = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``mu = ema(u), nu = ema(|u|^2) ; u -> u / sqrt(nu - |mu|^2 + eps)`` (centered RMSprop).

    The variance ``nu - |mu|^2`` is clamped at 0, a deliberate difference from optax: it
    can round below zero (always at t=1 with ``bias_correction``), where optax returns NaN.
    Wherever optax's value is finite, gradtx's is the same. ``nu_dtype`` (gradtx's,
    keyword-only) is the dtype of ``nu`` in the state.

    State: ``mu, nu`` (and ``count`` with ``bias_correction``).
    """
    unbias = bias_correct(decay) if bias_correction else identity()
    return fork(
        identity(),
        chain(
            fork(
                chain(scale_by_ema(decay), unbias),
                chain(second_moment(decay, initial_scale, accumulator_dtype=nu_dtype), unbias),
                join=_variance,
            ),
            sqrt_eps(**_rms_eps(eps, eps_in_sqrt)),
        ),
        join=jnp.divide,
    )


@declare
def scale_by_sum_of_squares(
    initial_accumulator_value: NonNegative = 0.1, eps: NonNegative = 1e-7, *, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """``s = s + |u|^2 ; u -> u / sqrt(s + eps)`` (0 where ``s == 0``): Adagrad's accumulator.

    ``accumulator_dtype`` (gradtx's, keyword-only) is the dtype of ``s`` in the state (a
    complex dtype means its real counterpart); the output keeps the input's dtype.
    State: ``sum_of_squares``.
    """

    def apply(updates, state, step):
        s = jax.tree.map(lambda g, t: (abs_sq(g) + t).astype(t.dtype), updates, state["sum_of_squares"])
        updates = jax.tree.map(lambda g, t: rsqrt_or_zero(t, eps).astype(g.dtype) * g, updates, s)
        return updates, {"sum_of_squares": s}

    def init(params):
        return _tree.real_state(params, accumulator_dtype, initial_accumulator_value)

    return primitive(apply, {"sum_of_squares": init})


@declare
def scale_by_update_rms(
    decay: Decay = 0.9, eps: NonNegative = 1e-6, *, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """``d = sqrt(e_x + eps) * u ; e_x = decay * e_x + (1 - decay) * |d|^2 ; u -> d``.

    Rescales by the RMS of its own past outputs: Adadelta's second stage, which gives the
    update the units of the parameters (Zeiler 2012). A positive ``eps`` is at least the
    dtype's smallest normal number (``gradtx.numerics.plus_eps``). ``accumulator_dtype``
    (gradtx's, keyword-only) is the dtype of ``e_x`` in the state (a complex dtype means its
    real counterpart); the output keeps the input's dtype. State: ``e_x``.
    """

    def apply(updates, state, step):
        # d at the precision of u and e_x together (e_x's float32 for bfloat16 updates): the
        # average is of |d|^2 before d is rounded to the updates' dtype
        deltas = jax.tree.map(lambda u, x: jnp.sqrt(plus_eps(x, eps)) * u, updates, state["e_x"])
        e_x = jax.tree.map(lambda d, x: ema(abs_sq(d), x, decay).astype(x.dtype), deltas, state["e_x"])
        return _tree.cast_like(deltas, updates), {"e_x": e_x}

    return primitive(apply, {"e_x": lambda params: _tree.real_state(params, accumulator_dtype)})


@declare
def scale_by_adadelta(
    rho: Decay = 0.9, eps: NonNegative = 1e-6, *, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """``u -> sqrt(e_x + eps) / sqrt(e_g + eps) * u`` with ``e_g = ema(|u|^2)`` and
    ``e_x`` the average of past outputs: ``scale_by_rms(rho, eps) -> scale_by_update_rms(rho, eps)``.

    ``accumulator_dtype`` (gradtx's, keyword-only; optax has none) is the dtype of both
    ``e_g`` and ``e_x`` in the state (float32 for bfloat16 params); the output keeps the
    input's dtype. State: ``e_g, e_x`` (optax's names; ``e_g`` is ``scale_by_rms``'s ``nu``).
    """
    return chain(
        renamed(scale_by_rms(decay=rho, eps=eps, eps_in_sqrt=True, nu_dtype=accumulator_dtype), nu="e_g"),
        scale_by_update_rms(decay=rho, eps=eps, accumulator_dtype=accumulator_dtype),
    )


@declare
def add_decayed_weights(weight_decay: NonNegativeOrSchedule = 0.0, mask: MaskOrFn = None) -> Transformation:
    """``u -> u + weight_decay * p`` (only where ``mask`` is True, when given).

    ``mask`` is a tree shaped like the params whose leaves are bools (or boolean arrays,
    broadcast against the leaf), or a function ``params -> mask``. A schedule
    ``step -> weight_decay`` reads the step count.
    """
    scheduled = callable(weight_decay)

    def apply(updates, state, step):
        if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, {}  # nothing to add: params are not needed
        params = step.params
        if params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")
        wd = weight_decay(step.count) if callable(weight_decay) else weight_decay
        decay = lambda g, p: g + _times(wd, p).astype(g.dtype)  # noqa: E731
        if mask is None:
            return jax.tree.map(decay, updates, params), {}
        m = mask(params) if callable(mask) else mask
        return jax.tree.map(lambda g, p, keep: _where_kept(keep, decay(g, p), g), updates, params, m), {}

    return primitive(apply, uses_count=scheduled)


@declare
def scale_by_sign() -> Transformation:
    """``u -> sign(u)`` element-wise (Lion, signSGD)."""
    return elementwise(jnp.sign)


def _where_kept(keep, kept: jax.Array, other: jax.Array) -> jax.Array:
    """``kept`` where the mask ``keep`` is True: a Python bool picks at trace time, a boolean
    array (e.g. a packed layout's per-element mask) element by element."""
    if isinstance(keep, (bool, np.bool_)):
        return kept if keep else other
    return jnp.where(keep, kept, other)


@declare
def clip(max_delta: NonNegative) -> Transformation:
    """``u -> clip(u, -max_delta, max_delta)`` element-wise."""
    # ArrayLike (NonNegative) includes numpy.bool, which has no unary minus; declare rejects it
    return elementwise(lambda g: jnp.clip(g, -max_delta, max_delta))  # type: ignore[operator]


def global_norm(updates: Updates) -> jax.Array:
    """``sqrt(sum over leaves of sum |u|^2)``."""
    return jnp.sqrt(sum(jnp.sum(abs_sq(g)) for g in jax.tree.leaves(updates)))


@declare
def clip_by_global_norm(max_norm: Positive) -> Transformation:
    """``u -> u * max_norm / max(||u||, max_norm)`` with ``||u||`` the norm over all leaves."""

    def apply(updates, state, step):
        norm = global_norm(updates)
        keep = jnp.squeeze(norm < max_norm)
        return jax.tree.map(lambda g: jax.lax.select(keep, g, (g / norm.astype(g.dtype)) * max_norm), updates), {}

    return primitive(apply)
