"""GaLore (Zhao et al. 2024, https://arxiv.org/abs/2403.03507): each matrix's gradient is
projected onto a rank-``r`` subspace from its SVD, an inner optimizer runs there (its state
is ``r`` rows or columns instead of the whole matrix), and its step is projected back.

For a gradient matrix ``G`` of shape ``(m, n)`` and ``P`` its top ``r`` singular vectors on
the longer side::

    m >= n:  P = U[:, :r]        R = P^T G  (r, n)      step = scale * P R'
    m <  n:  P = V[:, :r]        R = G P    (m, r)      step = scale * R' P^T

``R'`` the inner optimizer's output. ``P`` is recomputed every ``update_proj_gap`` steps
(at steps 1, 1 + k, ...), from the SVD of that step's gradient, in float32 as in optax.
Leaves that are not matrices pass through the inner optimizer whole.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from gradtx.combine import chain
from gradtx.hyperparams import LearningRate, NonNegativeOrSchedule, Real
from gradtx.numerics import range_safe_dtype
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale_by_learning_rate
from gradtx.sharding import matrix_region
from gradtx.transform import Field, Step, Transformation, declare, primitive, stage_of
from gradtx.utilities import scale_by_adam
from gradtx.wrappers import Inner, _Integer

__all__ = ["GaLoreDimensionNumbers", "galore", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a leaf form GaLore's matrix: ``reduction_axis`` its rows (the input
    dimension), ``output_axis`` its columns; every axis must be in one of them. An
    attention kernel ``(embed, heads, head_dim)`` is ``GaLoreDimensionNumbers(0, (1, 2))``.
    optax.contrib's type, with its fields and defaults."""

    reduction_axis: Union[Sequence[int], int] = 0
    output_axis: Union[Sequence[int], int] = 1


DimNums = Optional[Union[GaLoreDimensionNumbers, Any, Callable[[Any], Any]]]
"""``None`` (project the 2-D leaves), one ``GaLoreDimensionNumbers`` for every leaf of rank
>= 2, a tree of them (``None`` where a leaf is not projected), or a function ``params ->
such a tree``."""
Rank = Annotated[int, _Integer(1)]
"""An integer >= 1 (a rank, a number of steps)."""


def _is_dim_nums_leaf(x: Any) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def _resolve(dim_nums: DimNums, params: Any) -> Any:
    """The tree of dimension numbers (``None``: not projected), one per leaf of ``params``."""
    if dim_nums is None:
        return jax.tree.map(lambda p: GaLoreDimensionNumbers() if jnp.ndim(p) == 2 else None, params)
    if isinstance(dim_nums, GaLoreDimensionNumbers):
        return jax.tree.map(lambda p: dim_nums if jnp.ndim(p) >= 2 else None, params)
    return dim_nums(params) if callable(dim_nums) else dim_nums


class _Matrix(NamedTuple):
    """A leaf seen as GaLore's ``(m, n)`` matrix: to and from it, and the projector's side."""

    to_matrix: Callable[[jax.Array], jax.Array]
    from_matrix: Callable[[jax.Array], jax.Array]
    m: int
    n: int

    @property
    def left(self) -> bool:
        """``P`` is on the left (``m >= n``: ``U``'s columns), else on the right (``V``'s)."""
        return self.m >= self.n


def _axes(axis: Union[Sequence[int], int], ndim: int) -> tuple[int, ...]:
    return tuple(a % ndim for a in ((axis,) if isinstance(axis, int) else axis))


def _matrix(path: str, shape: tuple, dims: GaLoreDimensionNumbers) -> _Matrix:
    """How the leaf at ``path`` of ``shape`` becomes a matrix; an error naming the leaf path
    when it cannot."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"gradtx.scale_by_galore: the leaf at {path} has shape {shape}: GaLore needs rank >= 2")
    rows, cols = _axes(dims.reduction_axis, ndim), _axes(dims.output_axis, ndim)
    if set(rows) & set(cols) or len(set(rows) | set(cols)) != ndim:
        raise ValueError(
            f"gradtx.scale_by_galore: the leaf at {path} has shape {shape}: {dims} must name each of its "
            f"{ndim} axes once (reduction or output)"
        )
    order = rows + cols
    inverse = tuple(sorted(range(ndim), key=lambda i: order[i]))
    m, n = math.prod(shape[a] for a in rows), math.prod(shape[a] for a in cols)
    moved = tuple(shape[a] for a in order)
    return _Matrix(lambda x: x.transpose(order).reshape(m, n), lambda y: y.reshape(moved).transpose(inverse), m, n)


def _matrices(dim_nums: DimNums, tree: Any) -> list[Optional[_Matrix]]:
    """Each leaf's ``_Matrix`` (``None`` where it is not projected), in leaf order."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    dims = _resolve_checked(dim_nums, tree, treedef)
    return [
        None if d is None else _matrix(jax.tree_util.keystr(path) or "<root>", jnp.shape(x), d)
        for (path, x), d in zip(leaves_with_path, dims)
    ]


def _leaves_up_to(treedef: Any, tree: Any) -> list:
    """``tree``'s subtrees at the leaves of ``treedef`` (``None`` included), in leaf order."""
    return treedef.flatten_up_to(tree)


def _resolve_checked(dim_nums: DimNums, tree: Any, treedef: Any) -> list:
    """The dimension numbers of ``tree``'s leaves, in leaf order: ``treedef`` (the params',
    where a ``None`` param is an empty node) flattens the resolved tree up to its leaves, so
    that a ``None`` param and a ``None`` (not projected) beside it are told apart."""
    resolved = _resolve(dim_nums, tree)
    try:
        dims = _leaves_up_to(treedef, resolved)
    except (ValueError, TypeError):
        dims = None
    if dims is None or not all(map(_is_dim_nums_leaf, dims)):
        raise ValueError(
            "gradtx.scale_by_galore: weight_dimension_numbers must have the params' tree structure "
            f"(a GaLoreDimensionNumbers or None per leaf), got {resolved!r}"
        )
    return dims


def galore_projector(matrix: jax.Array, rank: int, left: bool) -> jax.Array:
    """``U[:, :r]`` (``left``) or ``V[:, :r]`` of ``matrix = U S V^H``, the SVD taken in float32
    (optax's; complex64 for a complex matrix), cast back to the matrix's dtype; ``r = min(rank,
    m, n)``."""
    dtype = jnp.complex64 if jnp.iscomplexobj(matrix) else jnp.float32
    u, _, vh = jnp.linalg.svd(matrix.astype(dtype), full_matrices=False)
    r = min(rank, *matrix.shape)
    return (u[:, :r] if left else vh[:r, :].conj().T).astype(matrix.dtype)


def _projector(x: jax.Array, mat: Optional[_Matrix], rank: int) -> Optional[jax.Array]:
    """Zeros shaped like the leaf's projector, ``(m, r)`` or ``(n, r)``; ``None`` where the leaf
    is not projected (optax keeps a ``(0, 0)`` array there, which orbax cannot save)."""
    if mat is None:
        return None
    return jnp.zeros((mat.m if mat.left else mat.n, min(rank, mat.m, mat.n)), x.dtype)


def _proxy(x: jax.Array, mat: Optional[_Matrix], rank: int) -> jax.Array:
    """Zeros shaped like the leaf's low-rank image (the inner optimizer's params), in the
    dtype the inner optimizer runs in (``range_safe_dtype``: float32 for a float16 leaf)."""
    dtype = range_safe_dtype(jnp.result_type(x))
    if mat is None:
        return jnp.zeros_like(x, dtype=dtype)
    r = min(rank, mat.m, mat.n)
    return jnp.zeros((r, mat.n) if mat.left else (mat.m, r), dtype)


def _image(mat: _Matrix, g: jax.Array, p: jax.Array) -> jax.Array:
    """``P^H G`` (``m >= n``) or ``G P``: the leaf's low-rank image, in the dtype the inner
    optimizer runs in (``range_safe_dtype``: float32 for a float16 leaf)."""
    wide = range_safe_dtype(g.dtype)
    g2, pw = mat.to_matrix(g).astype(wide), p.astype(wide)
    return pw.conj().T @ g2 if mat.left else g2 @ pw


def _back(mat: _Matrix, r: jax.Array, p: jax.Array, g: jax.Array, scale: Any) -> jax.Array:
    """``scale * P R'`` (``m >= n``) or ``scale * R' P^H``, the inner step ``r`` projected back,
    in the leaf's shape and its gradient ``g``'s dtype."""
    pw = p.astype(range_safe_dtype(g.dtype))
    back = mat.from_matrix(pw @ r if mat.left else r @ pw.conj().T)
    return (scale * back).astype(g.dtype)


@declare
def scale_by_galore(
    rank: Rank = 128,
    update_proj_gap: Rank = 200,
    scale: Real = 1.0,
    base_optimizer: Optional[Inner] = None,
    weight_dimension_numbers: DimNums = None,
) -> Transformation:
    """``P = svd_r(G) every k steps ; u -> scale * P inner(P^T G)`` (``G P`` and ``inner(.) P^T`` when ``m < n``).

    GaLore's projected step (see the module docstring), leaf by leaf for the matrices
    chosen by ``weight_dimension_numbers``; other leaves go through ``base_optimizer``
    whole. ``base_optimizer`` (default ``scale_by_adam()``) runs on the low-rank images and
    gets no params: a gradient-only transformation (``scale_by_adam``, ``scale_by_lion``,
    ...; weight decay belongs outside, in ``galore``'s ``weight_decay``).

    State: ``count, projector`` and the inner optimizer's fields in the same record
    (``count, mu, nu, projector`` for the default; one count, read by the inner's bias
    corrections). optax keeps the inner state whole in ``base_optimizer_state``; an optax
    inner is kept whole here too, in one field named after its factory. ``projector`` is
    ``None`` at a leaf that is not projected (optax's is a ``(0, 0)`` array, which orbax
    cannot save); elsewhere it is optax's. On a float16 leaf the inner optimizer runs in
    float32, its state float32 (``gradtx.numerics.range_safe_dtype``: in float16 Adam's
    ``(1 - b2) g^2`` underflows); the projector and the step keep the leaf's dtype.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_galore(rank=1, base_optimizer=gradtx.identity())
    >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> tx.update(g, tx.init(g))[0]  # the rank-1 part of g: P P^T g
    Array([[3., 0.],
           [0., 0.],
           [0., 0.]], dtype=float32)
    """
    inner = stage_of(scale_by_adam() if base_optimizer is None else base_optimizer)

    def proxies(params):
        mats = _matrices(weight_dimension_numbers, params)
        leaves, treedef = jax.tree.flatten(params)
        return jax.tree.unflatten(treedef, [_proxy(x, m, rank) for x, m in zip(leaves, mats)])

    def init_projector(params):
        mats = _matrices(weight_dimension_numbers, params)
        leaves, treedef = jax.tree.flatten(params)
        return jax.tree.unflatten(treedef, [_projector(x, m, rank) for x, m in zip(leaves, mats)])

    def apply(updates, state, step):
        mats = _matrices(weight_dimension_numbers, updates)
        leaves, treedef = jax.tree.flatten(updates)
        refresh = step.count % update_proj_gap == 0
        projectors, low = [], []
        # The projector tree has the updates' nodes (a None param too) and None at the
        # leaves not projected: flattened up to the updates' leaves. Each leaf's matrix math
        # runs in a ``matrix_region`` (on Explicit mesh axes, the SVD and the products over
        # a sharded dimension as on Auto axes), traced values passed in as arguments.
        for g, mat, p in zip(leaves, mats, _leaves_up_to(treedef, state["projector"])):
            if mat is None:
                projectors.append(p)
                low.append(g.astype(range_safe_dtype(g.dtype)))
                continue

            def refreshed(g, p, refresh, mat=mat):
                g2 = mat.to_matrix(g)
                return jax.lax.cond(refresh, lambda: galore_projector(g2, rank, mat.left), lambda: p)

            p = matrix_region(refreshed, like=1)(g, p, refresh)
            projectors.append(p)
            low.append(matrix_region(partial(_image, mat))(g, p))
        inner_state = {k.name: state[k.name] for k in inner.fields}
        out, new = inner.apply(jax.tree.unflatten(treedef, low), inner_state, Step(None, step.count, step.extra))
        full = []
        for r, mat, p, g in zip(jax.tree.leaves(out), mats, projectors, leaves):
            if mat is None:
                full.append(r.astype(g.dtype))
                continue
            full.append(matrix_region(partial(_back, mat), like=2)(r, p, g, scale))
        new["projector"] = jax.tree.unflatten(treedef, projectors)
        return jax.tree.unflatten(treedef, full), new

    def on_proxies(init: Callable[[Any], Any]) -> Field:
        """An inner field, initialised from the low-rank images (not checked against the params)."""
        return Field(lambda params: init(proxies(params)), like_params=False)

    fields = {k.name: on_proxies(k.field.init) for k in inner.fields}
    fields["projector"] = Field(init_projector, like_params=False)
    return primitive(apply, fields, uses_count=True)


@declare
def galore(
    learning_rate: LearningRate,
    rank: Rank = 128,
    update_proj_gap: Rank = 200,
    scale: Real = 1.0,
    base_optimizer: Optional[Inner] = None,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: MaskOrFn = None,
    weight_dimension_numbers: DimNums = None,
) -> Transformation:
    """GaLore (Zhao et al. 2024, https://arxiv.org/abs/2403.03507, Algorithm 2), as optax 0.2.8::

        P = U[:, :r] of svd(G)  at t = 1, 1 + k, 1 + 2k, ...   (V[:, :r] when m < n)
        R = P^T G ;  R' = base_optimizer(R)                   (Adam by default)
        p = p - lr * (scale * P R' + weight_decay * p)

    on each matrix (``weight_dimension_numbers`` picks the axes of higher-rank leaves);
    other leaves take ``base_optimizer``'s step whole. ``r = min(rank, m, n)``, ``k =
    update_proj_gap``; the weight decay applies where ``mask`` is True (all leaves by
    default). The SVD is taken in float32, as optax (float64 runs match optax's numbers
    exactly, with a float32-accurate subspace). Differs from optax 0.2.8 on complex
    matrices: optax casts them to float32 (dropping the imaginary part) and projects with
    ``P^T``; gradtx takes the complex SVD and ``P^H``.

    Chain: ``scale_by_galore(rank, update_proj_gap, scale, base_optimizer,
    weight_dimension_numbers) -> add_decayed_weights(weight_decay, mask) ->
    scale_by_learning_rate``. State: ``count, mu, nu, projector`` (default inner: its
    fields in the one record, beside ``projector``).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.galore(0.1, rank=1)
    >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    >>> grads = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> state.mu["w"].shape, state.projector["w"].shape  # Adam's state is rank x 3
    ((1, 3), (4, 1))
    >>> updates["w"].round(3)[0]  # t=1: -lr * P sign(P^T g), P = (1/2, 1/2, 1/2, 1/2)
    Array([-0.05, -0.05, -0.05], dtype=float32)
    """
    return chain(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
