"""Running statistics of the updates: moving averages, bias correction, momentum traces.

State fields carry optax's names for the same quantity (``mu``, ``nu``, ``trace``,
``count``) so that ``optax.tree.get`` and friends find them in gradtx states.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gradtx import _checks, _tree
from gradtx.base import GradientTransformation, Updates
from gradtx.numerics import abs_sq, debias, ema, heavy_ball, safe_increment, zero_count


class EmaState(NamedTuple):
    mu: Updates  # the moving average of the incoming updates (first moment)


def scale_by_ema(decay: float, accumulator_dtype: Optional[jnp.dtype] = None) -> GradientTransformation:
    """``mu = decay * mu + (1 - decay) * u ; u -> mu`` (no debiasing).

    Args:
      decay: the averaging factor, in [0, 1].
      accumulator_dtype: dtype of ``mu`` in the state (the output keeps the input's dtype).
    """
    _checks.in_interval("scale_by_ema", "decay", decay)
    return _ema("scale_by_ema", decay, accumulator_dtype)


def _ema(name: str, decay: float, accumulator_dtype, output_decay: Optional[float] = None
         ) -> GradientTransformation:
    """``mu = ema(u, mu, decay) ; u -> mu``, or with ``output_decay`` given,
    ``u -> ema(u, mu_previous, output_decay)`` (Lion blends the previous average at its own rate)."""
    _checks.is_float_dtype(name, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return EmaState(mu=_tree.zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.mu, where=name, what="state field `mu`")
        mu = jax.tree.map(lambda g, m: ema(g, m, decay), updates, state.mu)
        out = mu if output_decay is None else jax.tree.map(lambda g, m: ema(g, m, output_decay),
                                                           updates, state.mu)
        return _tree.cast_like(out, updates), EmaState(mu=_tree.cast(mu, accumulator_dtype))

    update_fn.__qualname__ = f"{name}.<locals>.update_fn"  # names the stage in errors
    return GradientTransformation(init_fn, update_fn)


class SecondMomentState(NamedTuple):
    nu: Updates  # the moving average of |u|^2 (real even for complex updates)


def second_moment(decay: float, initial_scale: float = 0.0) -> GradientTransformation:
    """``nu = decay * nu + (1 - decay) * |u|^2 ; u -> nu`` (no debiasing).

    ``nu`` starts at ``initial_scale``; it is real-valued for complex updates.
    """
    _checks.in_interval("second_moment", "decay", decay)
    _checks.non_negative("second_moment", "initial_scale", initial_scale)

    def init_fn(params):
        return SecondMomentState(nu=_tree.real_full_like(params, initial_scale))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.nu, where="second_moment", what="state field `nu`")
        nu = jax.tree.map(lambda g, n: ema(abs_sq(g), n, decay).astype(n.dtype), updates, state.nu)
        return nu, SecondMomentState(nu=nu)

    return GradientTransformation(init_fn, update_fn)


class BiasCorrectState(NamedTuple):
    count: jax.Array  # int32 step count, saturating


def bias_correct(decay: float, *, step_offset: int = 0) -> GradientTransformation:
    """``u -> u / (1 - decay^(t + step_offset))``, with its own step count ``t`` (from 1).

    Undoes the pull towards zero of a moving average started at zero. ``step_offset=1``
    corrects for the next step's average (NAdam's look-ahead).
    """
    _checks.in_interval("bias_correct", "decay", decay, high_open=True)
    if step_offset not in (0, 1):
        raise ValueError(f"gradtx.bias_correct(step_offset={step_offset!r}): step_offset must be 0 or 1")

    def init_fn(params):
        del params
        return BiasCorrectState(count=zero_count())

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        count = safe_increment(state.count)
        t = count if step_offset == 0 else safe_increment(count)
        return debias(updates, decay, t), BiasCorrectState(count=count)

    return GradientTransformation(init_fn, update_fn)


class TraceState(NamedTuple):
    trace: Updates  # the momentum buffer v


def _trace(name: str, decay: float, accumulator_dtype, nesterov: bool) -> GradientTransformation:
    _checks.in_interval(name, "decay", decay)
    _checks.is_float_dtype(name, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return TraceState(trace=_tree.zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.trace, where=name, what="state field `trace`")
        trace = jax.tree.map(lambda g, v: heavy_ball(g, v, decay), updates, state.trace)
        out = jax.tree.map(lambda g, v: heavy_ball(g, v, decay), updates, trace) if nesterov else trace
        return _tree.cast_like(out, updates), TraceState(trace=_tree.cast(trace, accumulator_dtype))

    update_fn.__qualname__ = f"{name}.<locals>.update_fn"  # names the stage in errors
    return GradientTransformation(init_fn, update_fn)


def trace(decay: float, accumulator_dtype: Optional[jnp.dtype] = None) -> GradientTransformation:
    """``v = decay * v + u ; u -> v`` (heavy-ball momentum, PyTorch's and optax's form)."""
    return _trace("trace", decay, accumulator_dtype, nesterov=False)


def nesterov_trace(decay: float, accumulator_dtype: Optional[jnp.dtype] = None) -> GradientTransformation:
    """``v = decay * v + u ; u -> u + decay * v`` (Nesterov's look-ahead momentum)."""
    return _trace("nesterov_trace", decay, accumulator_dtype, nesterov=True)


class MaxState(NamedTuple):
    nu_max: Updates  # the running maximum of the incoming updates


def running_max() -> GradientTransformation:
    """``nu_max = max(nu_max, u) ; u -> nu_max`` (AMSGrad's non-increasing denominator)."""

    def init_fn(params):
        return MaxState(nu_max=_tree.real_full_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.nu_max, where="running_max", what="state field `nu_max`")
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, updates)
        return nu_max, MaxState(nu_max=nu_max)

    return GradientTransformation(init_fn, update_fn)


class InfinityNormState(NamedTuple):
    nu: Updates  # the exponentially weighted infinity norm of the updates


def infinity_norm(decay: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """``nu = max(decay * nu, |u| + eps) ; u -> nu`` (Adamax's denominator)."""
    _checks.in_interval("infinity_norm", "decay", decay)
    _checks.non_negative("infinity_norm", "eps", eps)

    def init_fn(params):
        return InfinityNormState(nu=_tree.real_full_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        _tree.check_match(updates, state.nu, where="infinity_norm", what="state field `nu`")
        nu = jax.tree.map(lambda g, n: jnp.maximum(jnp.abs(g) + eps, decay * n).astype(n.dtype),
                          updates, state.nu)
        return nu, InfinityNormState(nu=nu)

    return GradientTransformation(init_fn, update_fn)


def interpolated_ema(b1: float = 0.9, b2: float = 0.99, accumulator_dtype: Optional[jnp.dtype] = None
                     ) -> GradientTransformation:
    """``u -> (1 - b1) * u + b1 * mu ; mu = (1 - b2) * u + b2 * mu`` (Lion's momentum:
    the output blends the *previous* average with ``b1``, the average moves with ``b2``)."""
    _checks.in_interval("interpolated_ema", "b1", b1)
    _checks.in_interval("interpolated_ema", "b2", b2)
    return _ema("interpolated_ema", b2, accumulator_dtype, output_decay=b1)
