"""Factored and cover-set second moments (Adafactor, SM3), and Adafactor's block-wise
rescalers: update clipping by the block RMS and the step scaled by the parameters' RMS.

These statistics are *not* shaped like the params: a factored matrix keeps one row and
one column vector, an SM3 leaf one accumulator per axis. Their fields are declared with
``Field(init, like_params=False)``; the trees have the params' structure (one array per
leaf) and optax's field names (``v_row, v_col, v``; ``mu``). Statistics are kept in the
params' dtype, as optax keeps them (for complex params the imaginary part stays 0 and
only the real part is read).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import UpdateError
from gradtx.combine import chain, renamed
from gradtx.hyperparams import Decay, Interval, NonNegative, Positive
from gradtx.moments import scale_by_ema
from gradtx.numerics import abs_sq, at_least, ema, plus_eps, root_mean_square, rsqrt_or_zero
from gradtx.sharding import matrix_region
from gradtx.transform import Field, Transformation, declare, elementwise, primitive

DimSize = Annotated[int, Interval(0.0)]
"""A dimension size >= 0 (``min_dim_size_to_factor``)."""


def _map_leaves(fn: Callable[..., tuple], n_out: int, updates: Any, *trees: Any) -> tuple:
    """``fn`` leaf by leaf over ``updates`` and per-leaf state trees of the same structure,
    as ``n_out`` trees (one per output of ``fn``)."""
    treedef: jax.tree_util.PyTreeDef  # jaxlib ships no type stubs for it: this makes it Any
    leaves, treedef = jax.tree.flatten(updates)
    outs = [fn(*args) for args in zip(leaves, *(treedef.flatten_up_to(t) for t in trees))]
    return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(n_out))


def _per_leaf_zeros(shape_of: Callable[[tuple], tuple]) -> Field:
    """A field of zeros in each param's dtype, of the shape ``shape_of(param shape)``."""
    return Field(
        lambda params: jax.tree.map(lambda p: jnp.zeros(shape_of(jnp.shape(p)), jnp.asarray(p).dtype), params),
        like_params=False,
    )


# --- Adafactor's factored second moment --------------------------------------------------


def _decay_rate_pow(i: jax.typing.ArrayLike, exponent: float | jax.Array = 0.8) -> jax.Array:
    """``1 - (i + 1)^(-exponent)``: Adafactor's increasing decay (0 at the first step).

    ``i + 1`` is taken in float32, so that a step count saturated at the int32 maximum
    does not wrap to a negative step (whose power is NaN)."""
    t = jnp.asarray(i, jnp.float32) + 1
    return 1.0 - t ** (-exponent)


def factored_dims(shape: tuple, factored: bool, min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
    """``(d1, d0)``: the second largest and the largest axis of ``shape``, or None when the
    leaf is not factored (``factored=False``, fewer than 2 axes, or the second largest
    smaller than ``min_dim_size_to_factor``). Ties as optax's ``np.argsort``."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _without(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1 :]


def _stat_shapes(shape: tuple, factored: bool, min_dim_size_to_factor: int) -> tuple[tuple, tuple, tuple]:
    """The shapes of ``v_row, v_col, v`` for a leaf: ``(1,)`` where a statistic is unused
    (optax's placeholders, kept so that the two states have one layout)."""
    dims = factored_dims(shape, factored, min_dim_size_to_factor)
    if dims is None:
        return (1,), (1,), shape
    d1, d0 = dims
    return _without(shape, d0), _without(shape, d1), (1,)


def _factored_leaf(g, v_row, v_col, v, decay, dims, epsilon):
    """One leaf of ``scale_by_factored_rms``: the update and the new ``v_row, v_col, v``."""
    g_sq = plus_eps(abs_sq(g), epsilon)
    if dims is None:
        v = ema(g_sq, jnp.real(v), decay).astype(v.dtype)
        return g * jnp.real(v) ** -0.5, v_row, v_col, v
    d1, d0 = dims
    v_row = ema(jnp.mean(g_sq, axis=d0), jnp.real(v_row), decay).astype(v_row.dtype)
    v_col = ema(jnp.mean(g_sq, axis=d1), jnp.real(v_col), decay).astype(v_col.dtype)
    row, col = jnp.real(v_row), jnp.real(v_col)
    row_factor = (row / jnp.mean(row, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)) ** -0.5
    return g * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col**-0.5, d1), v_row, v_col, v


@declare
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: NonNegative = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: DimSize = 128,
    epsilon: NonNegative = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = _decay_rate_pow,
) -> Transformation:
    """``R = ema(mean_d0(|u|^2 + eps)), C = ema(mean_d1(|u|^2 + eps)) ; u -> u / sqrt(R C / mean(R))``.

    Adafactor's factored second moment (Shazeer & Stern 2018,
    https://arxiv.org/abs/1804.04235). For a leaf whose two largest axes ``d0`` (largest)
    and ``d1`` both have at least ``min_dim_size_to_factor`` entries, it keeps the mean of
    ``|u|^2 + epsilon`` over ``d0`` (``v_row``) and over ``d1`` (``v_col``), averaged with
    the decay ``b_t = decay_rate_fn(t - 1 - step_offset, decay_rate)`` (by default
    ``1 - t^(-decay_rate)``, 0 at the first step), and divides by the root of their
    rank-one reconstruction ``v_row v_col / mean(v_row)``: O(rows + cols) memory instead
    of O(rows * cols). Other leaves (vectors, scalars, small matrices, or all with
    ``factored=False``) keep the full ``v = ema(|u|^2 + epsilon, b_t)`` and get
    ``u / sqrt(v)``. Unlike optax, no params are needed.

    Args:
      factored: factor the statistics of the leaves that are large enough.
      decay_rate: the exponent of the default decay schedule.
      step_offset: subtracted from the step count (the first step of a fine-tuning run).
      min_dim_size_to_factor: factor a leaf only if its two largest axes are this long.
      epsilon: added to ``|u|^2``.
      decay_rate_fn: ``(step from 0, decay_rate) -> b_t``.

    State: ``count, v_row, v_col, v`` (optax's layout: one array per leaf, ``(1,)`` where
    a statistic is unused).
    """

    def shapes(i: int) -> Field:
        return _per_leaf_zeros(lambda shape: _stat_shapes(shape, factored, min_dim_size_to_factor)[i])

    def apply(updates, state, step):
        decay = decay_rate_fn(step.count - step_offset, decay_rate)

        def leaf(g, v_row, v_col, v):
            dims = factored_dims(jnp.shape(g), factored, min_dim_size_to_factor)
            return _factored_leaf(g, v_row, v_col, v, decay, dims, epsilon)

        out, v_row, v_col, v = _map_leaves(leaf, 4, updates, state["v_row"], state["v_col"], state["v"])
        return out, {"v_row": v_row, "v_col": v_col, "v": v}

    return primitive(apply, {"v_row": shapes(0), "v_col": shapes(1), "v": shapes(2)}, uses_count=True)


# --- Adafactor's block rescalers ----------------------------------------------------------


@declare
def clip_by_block_rms(threshold: Positive) -> Transformation:
    """``u -> u / max(1, rms(u) / threshold)`` leaf by leaf, ``rms(u) = sqrt(mean(|u|^2))``.

    Adafactor's update clipping: each leaf (a weight vector or matrix, a *block*) is
    scaled down to a root mean square of at most ``threshold``.
    """
    return elementwise(lambda u: u / jnp.maximum(1.0, root_mean_square(u) / threshold))


@declare
def scale_by_param_block_rms(min_scale: NonNegative = 1e-3) -> Transformation:
    """``u -> u * max(rms(p), min_scale)`` leaf by leaf, ``rms(p) = sqrt(mean(|p|^2))``.

    Adafactor's relative step size (``multiply_by_parameter_scale``): each leaf's step is
    scaled by the RMS of its parameters, at least ``min_scale``. Needs the params.
    """

    def apply(updates, state, step):
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")

        return jax.tree.map(lambda u, p: u * at_least(root_mean_square(p), min_scale), updates, step.params), {}

    return primitive(apply)


# --- SM3's cover-set accumulators --------------------------------------------------------


def _cover_sizes(shape: tuple) -> tuple:
    """The cover sets of a leaf, by size: one per index of each axis (a scalar: one set)."""
    return tuple(shape) or (1,)


def _cover_min(mu: jax.Array, shape: tuple) -> jax.Array:
    """``min over the cover sets r that hold i of mu_r``, for every element ``i``: the
    per-axis accumulators (concatenated in ``mu``) broadcast against each other."""
    if not shape:
        return mu[0]
    pieces = jnp.split(mu, np.cumsum(shape)[:-1])
    along = [p.reshape([1] * i + [n] + [1] * (len(shape) - i - 1)) for i, (p, n) in enumerate(zip(pieces, shape))]
    return functools.reduce(jnp.minimum, along)


def _cover_max(nu: jax.Array) -> jax.Array:
    """``max over the elements i of r of nu_i``, for every cover set ``r``, concatenated
    axis by axis (the layout of ``mu``)."""
    if nu.ndim == 0:
        return nu.reshape(1)
    others = lambda axis: tuple(a for a in range(nu.ndim) if a != axis)  # noqa: E731
    return jnp.concatenate([jnp.max(nu, axis=others(axis)) for axis in range(nu.ndim)])


@declare
def scale_by_cover_accumulators(b2: Decay = 1.0, eps: NonNegative = 1e-8) -> Transformation:
    """``nu = |u|^2 + b2 * min_cover(mu) ; mu = max_cover(nu) ; u -> u / sqrt(nu + eps)`` (0 where nu = 0).

    SM3-II's accumulators (Anil et al. 2019, https://arxiv.org/abs/1901.11150), with the
    cover of a leaf by its slices: one set per index of each axis (a matrix: its rows and
    its columns; a scalar: itself). For every element ``i``, ``nu_i`` adds ``|u_i|^2`` to
    the smallest accumulator of the sets that hold ``i``; each set's accumulator becomes
    the largest ``nu`` in it. With ``b2 < 1`` the sum is an average,
    ``nu = (1 - b2) * |u|^2 + b2 * min_cover(mu)`` (optax's convention). On a scalar it is
    Adagrad: ``nu = sum of |u|^2``. Memory: the sum of the axis lengths per leaf.

    Args:
      b2: 1 to sum (SM3), below 1 to average.
      eps: added under the root.

    State: ``mu``, one vector per leaf: the accumulators of the axes, concatenated (length
    the sum of the leaf's axis lengths, 1 for a scalar; optax keeps a list of one vector
    per axis, and none for a scalar, where it fails).
    """

    def accumulate(g_sq, smallest):
        return g_sq + smallest if b2 == 1 else ema(g_sq, smallest, b2)

    def leaf(g, mu):
        nu = accumulate(abs_sq(g), _cover_min(jnp.real(mu), jnp.shape(g)))
        # matrix_region: the axes' maxima, sharded along different mesh axes, are concatenated
        return g * rsqrt_or_zero(nu, eps), matrix_region(_cover_max)(nu).astype(mu.dtype)

    def apply(updates, state, step):
        out, mu = _map_leaves(leaf, 2, updates, state["mu"])
        return out, {"mu": mu}

    return primitive(apply, {"mu": _per_leaf_zeros(lambda shape: (sum(_cover_sizes(shape)),))})


@declare
def scale_by_sm3(b1: Decay = 0.9, b2: Decay = 1.0, eps: NonNegative = 1e-8) -> Transformation:
    """``u -> ema(u / sqrt(nu + eps), b1)`` with ``nu`` SM3's cover-set accumulator.

    Chain: ``scale_by_cover_accumulators(b2, eps) -> scale_by_ema(b1)`` (its average kept
    as ``nu``, optax's name). State: ``mu, nu`` (optax's names: ``mu`` the accumulators,
    ``nu`` the momentum).
    """
    return chain(scale_by_cover_accumulators(b2, eps), renamed(scale_by_ema(b1), mu="nu"))
