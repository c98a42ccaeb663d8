"""One home for each formula that more than one transformation uses.

Every transformation that needs an exponential moving average, a bias correction, a
squared magnitude or a saturating step count calls these; none writes them inline.
"""

from __future__ import annotations

import functools
from typing import Any

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


def running_mean(mean: jax.Array, x: jax.Array, n) -> jax.Array:
    """``mean + (x - mean) / (n + 1)``: the mean of ``n + 1`` values from the mean of the
    first ``n`` and the next one (Welford's update; ``n = 0`` gives ``x``)."""
    return mean + (x - mean) / (n + 1)


def heavy_ball(g: jax.Array, v: jax.Array, decay) -> jax.Array:
    """``g + decay * v``: one step of heavy-ball accumulation."""
    return g + decay * v


@functools.partial(jax.jit, inline=True)
def debias(moments, decay, count: jax.Array):
    """``m -> m / (1 - decay^count)`` on every leaf of ``moments``.

    ``1 - decay^count`` is computed in (at least) float32, then cast to each leaf's dtype:
    computing the power in bfloat16 would round it to 1 and divide by zero. Compiled
    (inlined) like optax's ``tree_bias_correction``, because XLA rounds ``decay**count``
    differently in eager and compiled code and gradtx must match optax in both."""
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moments)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping."""
    dtype = jnp.asarray(count).dtype
    max_value = jnp.array(jnp.iinfo(dtype).max, dtype)
    return jnp.where(count < max_value, count + jnp.array(1, dtype), max_value)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def plus_eps(x: jax.Array, eps) -> jax.Array:
    """``x + max(eps, tiny)`` for ``eps > 0`` (``x + eps`` for ``eps = 0``), ``tiny`` the
    smallest normal number of the sum's dtype: the one home of gradtx's eps rule.

    A positive ``eps`` never rounds to 0: in float16 (``tiny = 2^-14 ~ 6.1e-5``) the
    default ``1e-8`` would, and ``0 / (sqrt(0) + 0)`` is NaN (optax's Adam and RMSprop on
    float16 params with a zero gradient). The sum is taken in the dtype JAX promotes ``x``
    and ``eps`` to (a Python ``eps`` takes ``x``'s). In float32, bfloat16 and float64
    ``tiny`` (1.2e-38, 1.2e-38, 2.2e-308) is below every ``eps`` in use, so the sum is
    ``x + eps`` bit for bit, as optax computes it. Every ``eps`` added to a statistic of
    ``|g|^2`` (``sqrt_eps``, Adagrad, Adadelta, Adamax) is added here; see
    ``docs/guides/numerics.md``."""
    if isinstance(eps, (int, float)) and not isinstance(eps, bool):
        if eps == 0:
            return x + eps
        return x + max(eps, float(jnp.finfo(jnp.result_type(x, eps)).tiny))
    eps = jnp.asarray(eps)
    tiny = float(jnp.finfo(jnp.result_type(x, eps)).tiny)  # a Python float: eps keeps its dtype
    return x + jnp.where(eps > 0, jnp.maximum(eps, tiny), eps)


def rsqrt_or_zero(s: jax.Array, eps) -> jax.Array:
    """``1 / sqrt(s + eps)`` where ``s > 0``, 0 where ``s == 0``: the scale of an accumulator
    of ``|g|^2`` (Adagrad, SM3) that has seen nothing yet (``eps`` added by ``plus_eps``)."""
    return jnp.where(s > 0, jax.lax.rsqrt(plus_eps(s, eps)), 0.0)


def real_dtype(dtype) -> jnp.dtype:
    """The dtype of ``|x|^2`` for an ``x`` of ``dtype`` (float32 for complex64)."""
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.dtype(dtype)


def state_dtype(leaf_dtype, asked) -> jnp.dtype:
    """The dtype of a state leaf kept for a leaf of ``leaf_dtype`` when a state dtype
    argument (``mu_dtype``, ``nu_dtype``, ``accumulator_dtype``, Adafactor's
    ``dtype_momentum``, ...) asks for ``asked``; ``None`` asks for the leaf's own dtype.

    A real ``asked`` for a complex leaf means the complex dtype of that precision, at least
    complex64 (no complex bfloat16 or float16 exists): bfloat16, float16, float32 ->
    complex64, float64 -> complex128. The argument chooses a precision, the leaf whether
    the state is complex: a first moment cast to a real dtype would silently drop its
    imaginary part (the momentum of ``g = 1j`` would be 0), and an error would make one
    ``mu_dtype=jnp.bfloat16`` unusable on a model with a single complex leaf. Any other
    ``asked`` (a real leaf; a complex dtype) is taken as it is. The ``|g|^2`` statistics
    (``nu``, ``sum_of_squares``) are real for every leaf and take ``real_dtype(asked)``.
    Every params-shaped state field with a dtype argument is made here (``gradtx._tree``'s
    ``zeros_like`` and ``cast``)."""
    if asked is None:
        return jnp.dtype(leaf_dtype)
    asked = jnp.dtype(asked)
    if jnp.issubdtype(leaf_dtype, jnp.complexfloating) and not jnp.issubdtype(asked, jnp.complexfloating):
        return jnp.promote_types(asked, jnp.complex64)
    return asked


def range_safe_dtype(dtype) -> jnp.dtype:
    """``dtype``, except float32 for float16: the dtype in which to keep a statistic of
    ``|g|^2`` that gradtx keeps on its own (GaLore's inner optimizer on its low-rank images).

    float16's smallest normal number is 2^-14 ~ 6.1e-5 and its smallest subnormal 6e-8:
    ``(1 - b2) |g|^2`` with ``b2 = 0.999`` underflows to 0 for ``|g| < 8e-3``, and the step
    ``m / (sqrt(0) + eps)`` is then ``m / 6.1e-5`` (``plus_eps``) instead of about 1.
    bfloat16 has float32's exponent range, and the other dtypes are kept."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype == jnp.float16 else dtype


def in_range_safe_dtype(fn, *leaves: jax.Array) -> jax.Array:
    """``fn(*leaves)`` with each leaf in its ``range_safe_dtype`` (float16 leaves in
    float32, every other dtype as it is), returned in the first leaf's dtype: a formula
    whose intermediates leave float16's range (COCOB's bet, the trust ratio's norms)."""
    wide = [jnp.asarray(x).astype(range_safe_dtype(jnp.result_type(x))) for x in leaves]
    return fn(*wide).astype(jnp.result_type(leaves[0]))


def root_mean_square(x: jax.Array) -> jax.Array:
    """``sqrt(mean(|x|^2))`` over the whole array: a block's RMS (Adafactor's update
    clipping and parameter scale)."""
    return jnp.sqrt(jnp.mean(abs_sq(x)))


def leaf_norm(x: jax.Array, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> jax.Array:
    """``||x|| = sqrt(sum |x|^2)`` over ``axis`` (every element of the leaf by default),
    real-valued: a layer's norm (the trust ratio, the parameter block norm) and, over some
    axes, a unit's (adaptive gradient clipping)."""
    return jnp.sqrt(jnp.sum(abs_sq(x), axis=axis, keepdims=keepdims))


def at_least(x: jax.Array, floor) -> jax.Array:
    """``max(x, floor)``, written ``floor where x <= floor, else x``: a block statistic with a
    lower bound (Adafactor's parameter scale, the parameter block norm, AGC's parameter norm)."""
    return jnp.where(x <= floor, floor, x)


def tree_vdot(a, b) -> jax.Array:
    """``Re sum_leaves <a, b>``, ``a`` conjugated: the real inner product of two trees
    (summed leaf by leaf from 0, each leaf's product at the highest precision, as optax's
    ``tree.vdot``, so that both round alike)."""
    return jnp.real(sum(_leaf_vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def explicit_layout(x: jax.Array, *, replicated: bool = False) -> Any:
    """The ``out_sharding`` to name for a result laid out like ``x`` (``replicated``: a
    replicated value on ``x``'s mesh, ``P()``) where ``x`` lives on ``Explicit`` mesh axes,
    on which an op whose result's layout cannot be inferred (a contraction over sharded
    dimensions, a write of a differently laid out value, a broadcast meeting the leaf in a
    select) must name it; ``None`` elsewhere (nothing to name, nothing changes)."""
    sharding = jax.typeof(x).sharding
    if not sharding.mesh.explicit_axes:
        return None
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()) if replicated else sharding


def _leaf_vdot(x: jax.Array, y: jax.Array) -> jax.Array:
    x = jnp.conj(x) if jnp.iscomplexobj(x) else x
    # a replicated scalar on Explicit mesh axes (the partial sums all-reduced)
    out = explicit_layout(x, replicated=True) or explicit_layout(y, replicated=True)
    return jnp.tensordot(x, y, x.ndim, precision=jax.lax.Precision.HIGHEST, out_sharding=out)


def tree_add_scale(a, scalar, b):
    """``a + scalar * b`` leaf by leaf."""
    scalar = jnp.asarray(scalar)
    return jax.tree.map(lambda x, y: x + scalar * y, a, b)
