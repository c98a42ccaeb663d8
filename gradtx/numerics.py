"""One home for each formula that more than one transformation uses.

Every transformation that needs an exponential moving average, a bias correction, a
squared magnitude or a saturating step count calls these; none writes them inline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2``, real-valued for complex ``x`` (``x^2`` for real ``x``)."""
    if jnp.iscomplexobj(x):
        return (x.conj() * x).real
    return x**2


def ema(new: jax.Array, old: jax.Array, decay) -> jax.Array:
    """``decay * old + (1 - decay) * new``: one step of an exponential moving average.

    Written in optax's operation order so that both libraries round identically."""
    return (1 - decay) * new + decay * old


def heavy_ball(g: jax.Array, v: jax.Array, decay) -> jax.Array:
    """``g + decay * v``: one step of heavy-ball accumulation."""
    return g + decay * v


def bias_correction(decay, count: jax.Array, dtype) -> jax.Array:
    """``1 - decay^count``, computed in (at least) float32 and then cast to ``dtype``.

    Computing the power in bfloat16 would round it to 1 and divide by zero."""
    return (1 - decay**count).astype(dtype)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping."""
    dtype = jnp.asarray(count).dtype
    max_value = jnp.array(jnp.iinfo(dtype).max, dtype)
    return jnp.where(count < max_value, count + jnp.array(1, dtype), max_value)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def real_dtype(dtype) -> jnp.dtype:
    """The dtype of ``|x|^2`` for an ``x`` of ``dtype`` (float32 for complex64)."""
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)
