"""Kronecker-factored statistics, their inverse p-th roots and eigenbases: one home, used by
Shampoo and SOAP (``gradtx.optimizers.preconditioned``).

A gradient ``G`` of ``n`` axes is preconditioned axis by axis. Axis ``i`` keeps a factor,
the statistic of ``G`` unfolded along it (``G_(i)``: axis ``i`` first, the others flattened)::

    L_i = decay * L_i + weight * G_(i) G_(i)^H                           (factor_ema)

Shampoo multiplies ``G`` by ``L_i^(-1/p)`` along every axis (``inverse_root``); SOAP rotates
``G`` into the eigenbases ``Q_i`` of the factors (``eigenbasis``, refreshed by one QR power
iteration, ``refresh_eigenbasis``), runs Adam there and rotates back. Both are products
along the axes, ``x -> x x_1 M_1^H ... x_n M_n^H`` (``rotate``): axis ``i`` becomes the last,
so that after ``n`` of them the axes are back in order. Shampoo's blocking splits each axis
into blocks of ``block_size`` (``split_blocks``, ``merge_blocks``), each block with its own
factors.

Matrix products here run at ``Precision.HIGHEST``; factors of bfloat16 / float16 params are
kept in float32 (``factor_dtype``): ``eigh`` and ``qr`` have no half-precision kernels.
"""

from __future__ import annotations

import functools
import itertools
from typing import Annotated, Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from gradtx.base import TreeMismatchError
from gradtx.hyperparams import Decay, Interval, NonNegative
from gradtx.numerics import safe_increment
from gradtx.sharding import matrix_region
from gradtx.transform import Field, Transformation, declare, primitive

__all__ = ["scale_by_kronecker_roots"]

HIGHEST = jax.lax.Precision.HIGHEST

AtLeastOne = Annotated[int, Interval(1.0)]
"""An integer >= 1 (a frequency, a block size, a dimension bound)."""
NonNegativeInt = Annotated[int, Interval(0.0)]
"""An integer >= 0 (an exponent override, 0 for none)."""


def when(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any) -> Any:
    """``true_fn(*operands) if pred else false_fn(*operands)``: ``lax.cond`` on a traced
    ``pred`` (under ``jit``), a Python branch on a concrete one (eagerly, where ``lax.cond``
    would compile both branches at every call). The outputs have one structure either way."""
    if isinstance(pred, jax.core.Tracer):
        return jax.lax.cond(pred, true_fn, false_fn, *operands)
    return true_fn(*operands) if bool(pred) else false_fn(*operands)


def per_leaf(params: Any, fn: Callable[[Any], Any]) -> tuple:
    """``(fn(leaf) for each leaf)``: a state field with one entry per leaf (a tuple of
    matrices), in the order of ``jax.tree.leaves(params)``: not shaped like the params, so
    that params containers (Flax's ``Variable``, which holds one array) do not wrap it."""
    return tuple(fn(leaf) for leaf in jax.tree.leaves(params))


def leaves_of(updates: Any, field: str, entries: tuple, expected: Callable[[tuple], list]) -> tuple[list, Callable]:
    """The leaves of ``updates`` (in the order of ``per_leaf``'s entries) and the function that
    builds a tree like ``updates`` from a list of leaves; a ``TreeMismatchError`` naming the
    first leaf path whose entry of the state ``field`` does not have the matrix shapes
    ``expected(leaf shape)`` (``None`` for an axis without one)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
    if len(entries) != len(with_paths):
        raise TreeMismatchError(
            f"the gradients have {len(with_paths)} leaves, state field `{field}` has {len(entries)}; "
            "call init(params) on the tree you pass to update()"
        )
    shapes = lambda entry: [None if m is None else tuple(m.shape) for m in entry]  # noqa: E731
    for (path, leaf), entry in zip(with_paths, entries):
        if shapes(entry) != expected(tuple(leaf.shape)):
            raise TreeMismatchError(
                f"the gradients at leaf path {jax.tree_util.keystr(path)} have shape {tuple(leaf.shape)}, "
                f"state field `{field}` was built for another; call init(params) on the tree you pass to update()"
            )
    return [leaf for _, leaf in with_paths], functools.partial(jax.tree.unflatten, treedef)


def factor_dtype(dtype: Any) -> jnp.dtype:
    """The dtype of a leaf's factors: the leaf's, at least float32 (complex64 for complex)."""
    return jnp.promote_types(dtype, jnp.float32)


def unfolded_statistic(g: jax.Array, axis: int) -> jax.Array:
    """``G_(i) G_(i)^H``: the product of ``g`` with itself over every axis but ``axis``."""
    others = [a for a in range(g.ndim) if a != axis]
    return jnp.tensordot(g, jnp.conj(g), axes=(others, others), precision=HIGHEST)


def factor_ema(stat: jax.Array, g: jax.Array, axis: int, decay, weight) -> jax.Array:
    """``L = decay * L + weight * G_(i) G_(i)^H`` (``weight = 1 - decay``: an EMA; ``1``: a sum)."""
    return decay * stat + weight * unfolded_statistic(g.astype(stat.dtype), axis)


def eigenbasis(stat: jax.Array) -> jax.Array:
    """``Q``: the eigenvectors of ``L + 1e-30 I`` by descending eigenvalue (``eigh``, flipped,
    as the SOAP reference does)."""
    _, q = jnp.linalg.eigh(stat + 1e-30 * jnp.eye(stat.shape[0], dtype=stat.dtype))
    return q[:, ::-1]


def refresh_eigenbasis(stat: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``Q' = qr(L Q P)``: one step of power iteration, ``P`` sorting the columns by the
    Rayleigh quotients ``diag(Q^H L Q)``, descending. Returns ``Q'`` and the order ``P``
    (SOAP permutes its second moment with it)."""
    product = jnp.matmul(stat, q, precision=HIGHEST)
    estimate = jnp.real(jnp.sum(jnp.conj(q) * product, axis=0))
    order = jnp.argsort(estimate, descending=True)
    q_new, _ = jnp.linalg.qr(product[:, order])
    return q_new, order


def inverse_root(stat: jax.Array, p) -> jax.Array:
    """``L^(-1/p) = U diag(|lambda|^(-1/p)) U^H`` from ``L = U diag(lambda) U^H`` (``|lambda|``:
    the singular values of the Hermitian ``L``, as the reference's SVD takes them)."""
    w, u = jnp.linalg.eigh(stat)
    return jnp.matmul(u * (jnp.abs(w) ** (-1.0 / p)).astype(u.dtype), jnp.conj(u).T, precision=HIGHEST)


def rotate(x: jax.Array, matrices: Sequence[Optional[jax.Array]]) -> jax.Array:
    """``x -> x x_1 M_1^H ... x_n M_n^H``: ``M_i^H`` applied along each axis in turn (``None``:
    the identity). Into an eigenbasis (``M = Q``), or Shampoo's preconditioning (``M = L^(-1/p)``,
    Hermitian)."""
    for m in matrices:
        x = jnp.moveaxis(x, 0, -1) if m is None else jnp.tensordot(x, jnp.conj(m), axes=([0], [0]), precision=HIGHEST)
    return x


def unrotate(x: jax.Array, bases: Sequence[Optional[jax.Array]]) -> jax.Array:
    """``x -> x x_1 Q_1 ... x_n Q_n``: back out of the eigenbases (the inverse of ``rotate``)."""
    for q in bases:
        x = jnp.moveaxis(x, 0, -1) if q is None else jnp.tensordot(x, q, axes=([0], [1]), precision=HIGHEST)
    return x


def block_sizes(dim: int, block_size: int) -> list[int]:
    """An axis of ``dim`` split into blocks of ``block_size``, the last one smaller."""
    if block_size >= dim:
        return [dim]
    n = (dim - 1) // block_size
    return [block_size] * n + [dim - n * block_size]


def split_blocks(x: jax.Array, block_size: int) -> list[jax.Array]:
    """The blocks of ``x``, axis 0 outermost (the reference's order)."""
    blocks = [x]
    for axis, dim in enumerate(x.shape):
        bounds = list(itertools.accumulate(block_sizes(dim, block_size)))[:-1]
        blocks = [piece for b in blocks for piece in jnp.split(b, bounds, axis=axis)]
    return blocks


def merge_blocks(blocks: list[jax.Array], shape: tuple[int, ...], block_size: int) -> jax.Array:
    """The inverse of ``split_blocks``."""
    for axis in reversed(range(len(shape))):
        n = len(block_sizes(shape[axis], block_size))
        blocks = [jnp.concatenate(blocks[i : i + n], axis=axis) for i in range(0, len(blocks), n)]
    return blocks[0]


def block_shapes(shape: tuple[int, ...], block_size: int) -> list[tuple[int, ...]]:
    """The shapes of ``split_blocks``' blocks, in its order."""
    return list(itertools.product(*(block_sizes(d, block_size) for d in shape)))


def _has_factors(shape: tuple[int, ...], max_precondition_dim: int) -> bool:
    """Shampoo preconditions leaves of two axes or more, none longer than the bound."""
    return len(shape) >= 2 and all(d <= max_precondition_dim for d in shape)


@declare
def scale_by_kronecker_roots(
    b2: Decay = 0.999,
    block_size: AtLeastOne = 512,
    precondition_frequency: AtLeastOne = 1000,
    matrix_eps: NonNegative = 1e-6,
    inverse_exponent_override: NonNegativeInt = 0,
    max_precondition_dim: AtLeastOne = 8192,
) -> Transformation:
    """``L_i = b2 L_i + w G_(i) G_(i)^H ; every k steps P_i = L_i^(-1/p) ; u -> u x_1 P_1 ... x_n P_n``
    (per block): Shampoo's preconditioner (Gupta et al. 2018, https://arxiv.org/abs/1802.09568;
    blocked as in Anil et al. 2020, https://arxiv.org/abs/2002.09018).

    Each leaf of ``n >= 2`` axes, none longer than ``max_precondition_dim``, is split into
    blocks of ``block_size`` along every axis; each block keeps one factor per axis,
    ``L_i = matrix_eps * I`` at first, updated every step (``w = 1 - b2``; ``w = 1`` for
    ``b2 = 1``, Shampoo's sums), and its inverse root ``P_i`` (the identity at first),
    recomputed when ``t`` is a multiple of ``k = precondition_frequency``, before it is
    used. ``p = 2 n`` (``inverse_exponent_override`` when > 0). Other leaves pass unchanged.
    As ``pytorch_optimizer`` 4.1.0's ``ScalableShampoo`` preconditioner with
    ``use_svd=True, shape_interpretation=False, statistics_compute_steps=1``.

    State: ``count, kronecker_factors, inverse_roots`` (one tuple per leaf, in leaf order,
    of one matrix per block and axis).
    """
    # 1 - b2, or 1 for b2 = 1 (a Python number stays one: no float32 rounding of 1 - b2)
    weight = (1.0 if b2 == 1 else 1 - b2) if isinstance(b2, (int, float)) else jnp.where(b2 == 1, 1.0, 1 - b2)

    def exponent(ndim: int) -> int:
        return inverse_exponent_override if inverse_exponent_override > 0 else 2 * ndim

    def sizes(shape: tuple[int, ...]) -> list:
        """A leaf's factor shapes: one per block and axis."""
        if not _has_factors(shape, max_precondition_dim):
            return []
        return [(d, d) for block in block_shapes(shape, block_size) for d in block]

    def matrices(params, scale: Any) -> tuple:
        eye = lambda d, p: scale * jnp.eye(d[0], dtype=factor_dtype(p.dtype))  # noqa: E731
        return per_leaf(params, lambda p: tuple(eye(d, p) for d in sizes(p.shape)))

    def leaf_step(g, leaf_stats, leaf_roots, refresh):
        """One preconditioned leaf: its factors, maybe its roots, its blocks preconditioned."""
        n = g.ndim
        blocks = split_blocks(g.astype(leaf_stats[0].dtype), block_size)
        stats = tuple(
            factor_ema(leaf_stats[j * n + i], b, i, b2, weight) for j, b in enumerate(blocks) for i in range(n)
        )
        roots = when(refresh, lambda s: tuple(inverse_root(x, exponent(n)) for x in s), lambda s: leaf_roots, stats)
        out = [rotate(b, roots[j * n : (j + 1) * n]) for j, b in enumerate(blocks)]
        return merge_blocks(out, g.shape, block_size).astype(g.dtype), stats, roots

    def apply(updates, state, step):
        stats, roots = state["kronecker_factors"], state["inverse_roots"]
        leaves, unflatten = leaves_of(updates, "kronecker_factors", stats, sizes)
        refresh = safe_increment(step.count) % precondition_frequency == 0
        outs: list = []
        new_stats: list = []
        new_roots: list = []
        for g, leaf_stats, leaf_roots in zip(leaves, stats, roots):
            if leaf_stats:  # on Explicit mesh axes, the leaf's matrix math runs on Auto ones
                out, s, r = matrix_region(leaf_step, like=(0, 1, 2))(g, leaf_stats, leaf_roots, refresh)
            else:
                out, s, r = g, (), ()
            outs.append(out)
            new_stats.append(s)
            new_roots.append(r)
        return unflatten(outs), {"kronecker_factors": tuple(new_stats), "inverse_roots": tuple(new_roots)}

    return primitive(
        apply,
        {
            "kronecker_factors": Field(lambda params: matrices(params, matrix_eps), like_params=False),
            "inverse_roots": Field(lambda params: matrices(params, 1.0), like_params=False),
        },
        uses_count=True,
    )
