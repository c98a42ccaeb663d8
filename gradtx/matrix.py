"""Matrix formulas: Newton-Schulz orthogonalization (one home, used by Muon and anything else
that needs it), Muon's dimension numbers (how a weight of any rank is read as a batch of
matrices) and its shape scaling.

The quintic Newton-Schulz step, ``A = X X^H``::

    NS(X) = a X + (b A + c A^2) X

maps every singular value ``s`` of ``X`` to ``a s + b s^3 + c s^5`` and keeps the singular
vectors. Started from ``X / ||X||_F`` (singular values in (0, 1]) and repeated ``k`` times
with optax's coefficients ``(3.4445, -4.7750, 2.0315)``, it pushes the singular values into
a band around 1 (about [0.68, 1.13]): ``U S' V^H`` with ``S' ~ I``, an approximation of the
polar factor ``U V^H`` that is cheap (matrix products only) and good enough for Muon.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Annotated, Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import UpdateError
from gradtx.hyperparams import Integer, NonNegative, OneOf, _fail
from gradtx.numerics import plus_eps
from gradtx.sharding import matrix_region
from gradtx.transform import Transformation, declare, primitive

__all__ = ["MuonDimensionNumbers", "newton_schulz", "scale_by_shape"]

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight are the matrix's rows (``reduction_axis``, the fan-in: ``x W =
    y`` reduces over them) and columns (``output_axis``, the fan-out); every other axis is a
    batch axis, each of its matrices orthogonalized on its own (optax.contrib's record, the
    same fields and defaults). A conv kernel ``(h, w, c_in, c_out)`` is
    ``MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)``."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


WeightDimNums = Union[MuonDimensionNumbers, Any, Callable[[Any], Any], None]
"""``None`` (every leaf a matrix, rows then columns), a tree (or a prefix of the params tree)
of ``MuonDimensionNumbers`` and ``None`` (not a matrix), or a function ``params -> such a tree``."""


# --- hyperparameter types ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Coefficients:
    """Newton-Schulz coefficients: ``(a, b, c)``, or one such row per step (shape ``(n, 3)``);
    with ``presets``, also one of their names."""

    presets: tuple[str, ...] = ()

    def check(self, call: str, name: str, value: Any) -> None:
        if isinstance(value, str):
            if value not in self.presets:
                what = "one of " + ", ".join(map(repr, self.presets)) if self.presets else "numbers, not a name"
                _fail(call, name, value, what)
            return
        try:
            shape = np.shape(np.asarray(value, dtype=float))
        except (TypeError, ValueError):
            _fail(call, name, value, f"numbers of shape (3,) or (n, 3), got {type(value).__name__}", TypeError)
        if len(shape) not in (1, 2) or shape[-1] != 3:
            _fail(call, name, value, f"of shape (3,) or (n, 3), got shape {shape}")


NsSteps = Annotated[int, Integer(1)]  # a number of Newton-Schulz iterations
"""A number of Newton-Schulz iterations, an integer >= 1."""
NsCoeffs = Annotated[Any, _Coefficients()]
"""Newton-Schulz coefficients ``(a, b, c)`` or ``((a, b, c), ...)``, one row per step."""
NsCoeffsOrPreset = Annotated[Any, _Coefficients(tuple(NS_COEFFS_PRESETS))]
"""Newton-Schulz coefficients, or a preset's name (``"standard"``, ``"dion"``)."""
Preconditioning = Annotated[str, OneOf(PRECONDITIONINGS)]
"""How ``X`` is brought into the iteration's range before the first step."""


def coefficient_tuple(ns_coeffs: Any) -> tuple:
    """``ns_coeffs`` as a (nested) tuple of floats: hashable, a static argument."""
    values = np.asarray(ns_coeffs, dtype=float).tolist()
    return tuple(tuple(row) for row in values) if isinstance(values[0], list) else tuple(values)


def check_coefficient_rows(call: str, ns_coeffs: Any, ns_steps: Any) -> tuple:
    """``ns_coeffs`` (a preset's name resolved) as a tuple; per-step coefficients ``(n, 3)`` run
    ``n`` steps, and more rows than ``ns_steps`` is an error (optax's rule, raised at ``init``)."""
    coeffs = coefficient_tuple(NS_COEFFS_PRESETS[ns_coeffs] if isinstance(ns_coeffs, str) else ns_coeffs)
    rows = np.shape(coeffs)
    if len(rows) == 2 and not isinstance(ns_steps, jax.core.Tracer) and rows[0] > int(ns_steps):
        raise ValueError(
            f"gradtx.{call}(ns_coeffs={ns_coeffs!r}): ns_coeffs has {rows[0]} rows (one per step), more than "
            f"ns_steps={ns_steps}"
        )
    return coeffs


# --- dimension numbers: a leaf as a batch of matrices --------------------------------------


def _is_dim_nums_leaf(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def dimension_numbers_of(spec: WeightDimNums, tree: Any) -> Callable[[tuple], Optional[MuonDimensionNumbers]]:
    """``leaf path -> its dimension numbers`` (``None``: not a matrix) for the leaves of ``tree``.

    ``spec`` is ``None`` (every leaf ``MuonDimensionNumbers()``), a tree or a prefix of the
    params tree whose leaves are ``MuonDimensionNumbers`` or ``None``, or a function
    ``params -> such a tree`` (called on ``tree``)."""
    if spec is None or isinstance(spec, MuonDimensionNumbers):
        default = MuonDimensionNumbers() if spec is None else spec
        return lambda path: default
    resolved = spec(tree) if callable(spec) else spec
    flat = jax.tree_util.tree_flatten_with_path(resolved, is_leaf=_is_dim_nums_leaf)[0]
    table = {tuple(path): value for path, value in flat}
    for path, value in table.items():
        if not _is_dim_nums_leaf(value):
            raise UpdateError(
                f"the weight dimension numbers at leaf path {jax.tree_util.keystr(path) or '<root>'} are "
                f"{value!r}: each must be a MuonDimensionNumbers or None"
            )

    def lookup(path: tuple) -> Optional[MuonDimensionNumbers]:
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in table:
                return table[tuple(path[:n])]
        raise UpdateError(
            f"the weight dimension numbers have no entry for leaf path {jax.tree_util.keystr(path)}: give one "
            f"(a MuonDimensionNumbers, or None) for every leaf of the params, or for a subtree above it"
        )

    return lookup


def matrix_axes(shape: tuple, dim_nums: MuonDimensionNumbers, path: tuple) -> tuple[tuple[int, ...], ...]:
    """``(batch, reduction, output)`` axes of a leaf of ``shape``; an error naming the leaf path
    when the dimension numbers do not fit its rank."""
    where = f"the updates at leaf path {jax.tree_util.keystr(path) or '<root>'} have shape {shape}"
    if len(shape) < 2:
        raise UpdateError(
            f"{where}: Newton-Schulz orthogonalizes matrices (rank >= 2); leave this leaf to Adam (its "
            f"dimension numbers None)"
        )

    def axes(value: Sequence[int] | int) -> tuple[int, ...]:
        value = (value,) if isinstance(value, int) else tuple(value)
        if not value or any(not -len(shape) <= ax < len(shape) for ax in value):
            raise UpdateError(f"{where}: the dimension numbers {dim_nums} name axes outside a rank-{len(shape)} array")
        return tuple(ax % len(shape) for ax in value)

    reduction, output = axes(dim_nums.reduction_axis), axes(dim_nums.output_axis)
    if set(reduction) & set(output) or len(set(reduction)) < len(reduction) or len(set(output)) < len(output):
        raise UpdateError(f"{where}: the dimension numbers {dim_nums} name an axis twice")
    batch = tuple(sorted(set(range(len(shape))) - set(reduction) - set(output)))
    return batch, reduction, output


def _as_matrices(x: jax.Array, axes: tuple[tuple[int, ...], ...]) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``x`` as a batch of matrices ``(batch, reduction, output)``, and the inverse reshape."""
    order = axes[0] + axes[1] + axes[2]
    inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
    sizes = [tuple(x.shape[ax] for ax in group) for group in axes]
    flat = tuple(math.prod(s) for s in sizes)
    return x.transpose(order).reshape(flat), lambda y: y.reshape(sizes[0] + sizes[1] + sizes[2]).transpose(inverse)


def _default_matrix(ndim: int, dim_nums: MuonDimensionNumbers) -> MuonDimensionNumbers:
    """A 2-D leaf is orthogonalized as it is, whatever its dimension numbers (optax's rule:
    ``NS(X^T) = NS(X)^T``); they still set its fan-in and fan-out (``scale_by_shape``)."""
    return MuonDimensionNumbers() if ndim == 2 else dim_nums


# --- the Newton-Schulz iteration ------------------------------------------------------------


def _ns_step(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    """``a X + (b A + c A^2) X`` with ``A = X X^H`` (optax's operation order)."""
    a = x @ x.T.conj()
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


def _aol_first_step(x: jax.Array, coeffs: jax.Array, eps=1e-8) -> jax.Array:
    """The first step with AOL rescaling (Boissin et al. 2025): ``X -> D X``,
    ``D = diag(1 / sqrt(sum_j |A_ij|))``, then the step."""
    a = x @ x.T.conj()
    s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps)), -1)
    x, a = x * s, a * s * s.transpose(-1, -2)
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


def _schatten_first_step(x: jax.Array, coeffs: jax.Array, eps=1e-8) -> jax.Array:
    """The first step with Schatten-4 rescaling (Grishina et al. 2025): ``X -> X / sqrt(||A||_F)``."""
    a = x @ x.T.conj()
    s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(a, ord="fro", axis=(-2, -1)), min=eps)), (0, -1))
    x, a = x * s, a * s**2
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


_FIRST_STEPS = {"aol": _aol_first_step, "schatten": _schatten_first_step}


def _iterate(i, x: jax.Array, coeffs: jax.Array, preconditioning: str) -> jax.Array:
    first = _FIRST_STEPS.get(preconditioning)
    if first is None:
        return _ns_step(x, coeffs)
    return jax.lax.cond(i == 0, lambda y: first(y, coeffs), lambda y: _ns_step(y, coeffs), x)


def _spectral_norm(x: jax.Array) -> jax.Array:
    """``||X||_2`` in ``X``'s real dtype, computed in float32 at least (LAPACK's SVD has no
    float16 or bfloat16)."""
    return jnp.linalg.norm(x.astype(jnp.promote_types(x.dtype, jnp.float32)), ord=2).astype(jnp.finfo(x.dtype).dtype)


@functools.partial(jax.jit, static_argnames=("ns_coeffs", "ns_steps", "preconditioning", "eps_floor"), inline=True)
def orthogonalize_matrix(
    x: jax.Array, ns_coeffs: tuple, ns_steps: int, preconditioning: str, eps: Any, *, eps_floor: bool = False
) -> jax.Array:
    """``NS^k(X / (||X|| + eps))`` of one matrix, wide (a tall one is transposed, iterated and
    transposed back, as optax and torch do); ``||X||`` the Frobenius norm (the spectral one
    with ``preconditioning="spectral"``, none for "aol" and "schatten", whose first step
    rescales), ``max(||X||, eps)`` with ``eps_floor`` (torch.optim.Muon's).

    Compiled (inlined into a jitted caller), so that an eager step does not retrace the
    loop every time; ``ns_coeffs`` a tuple (``coefficient_tuple``)."""
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    if preconditioning in ("frobenius", "spectral"):
        norm = jnp.linalg.norm(x, ord="fro") if preconditioning == "frobenius" else _spectral_norm(x)
        x /= jnp.maximum(norm, eps) if eps_floor else plus_eps(norm, eps)
    coeffs = jnp.asarray(ns_coeffs).astype(x.dtype)
    if coeffs.ndim == 1:
        x = jax.lax.fori_loop(0, ns_steps, lambda i, y: _iterate(i, y, coeffs, preconditioning), x, unroll=True)
    else:

        def body(carry, row):
            i, y = carry
            return (i + 1, _iterate(i, y, row, preconditioning)), None

        (_, x), _ = jax.lax.scan(body, (jnp.asarray(0, jnp.int32), x), coeffs)
    return x.T if transposed else x


def orthogonalize(
    x: jax.Array,
    ns_coeffs: Any,
    ns_steps: int,
    preconditioning: str,
    eps: Any,
    dim_nums: Optional[MuonDimensionNumbers],
    path: tuple = (),
    *,
    eps_floor: bool = False,
) -> jax.Array:
    """``orthogonalize_matrix`` on every matrix of a leaf (its batch axes by ``jax.vmap``)."""
    if dim_nums is None:
        raise UpdateError(
            f"the updates at leaf path {jax.tree_util.keystr(path) or '<root>'} have dimension numbers None (not a "
            f"matrix): Newton-Schulz needs a MuonDimensionNumbers for every leaf it sees"
        )
    axes = matrix_axes(x.shape, _default_matrix(x.ndim, dim_nums), path)
    matrices, back = _as_matrices(x, axes)
    coeffs = coefficient_tuple(ns_coeffs)
    one = lambda m: orthogonalize_matrix(m, coeffs, int(ns_steps), preconditioning, eps, eps_floor=eps_floor)  # noqa: E731
    return back(jax.vmap(one)(matrices))


@declare
def newton_schulz(
    ns_coeffs: NsCoeffs = DEFAULT_NS_COEFFS,
    ns_steps: NsSteps = 5,
    preconditioning: Preconditioning = "frobenius",
    eps: NonNegative = 1e-8,
    weight_dimension_numbers: WeightDimNums = None,
    *,
    eps_floor: bool = False,
) -> Transformation:
    """``u -> NS^k(u / (||u||_F + eps))``, ``NS(X) = a X + (b A + c A^2) X``, ``A = X X^H``.

    The quintic Newton-Schulz iteration (see the module docstring) on every matrix of every
    leaf: a 2-D leaf is one matrix, a leaf of higher rank a batch of them as its
    ``MuonDimensionNumbers`` say (rows: the reduction axes, columns: the output axes).
    Matches optax.contrib's ``orthogonalize_via_newton_schulz``: the same coefficients and
    steps, a tall matrix transposed so that ``A`` is the smaller Gram matrix.

    Args:
      ns_coeffs: ``(a, b, c)`` for every step, or one row per step (shape ``(n, 3)``: ``n``
        steps, ``ns_steps`` ignored as in optax).
      ns_steps: the number of steps, >= 1.
      preconditioning: "frobenius" (``u / (||u||_F + eps)``), "spectral" (``u / (||u||_2 +
        eps)``), "aol" or "schatten" (no division: the first step rescales, optax's variants).
      eps: added to the norm.
      weight_dimension_numbers: ``None`` (every leaf a matrix), a tree or prefix of
        ``MuonDimensionNumbers``, or a function ``updates -> such a tree``.
      eps_floor: divide by ``max(||u||_F, eps)`` instead (torch.optim.Muon's normalisation).

    A leaf that is not a matrix, or whose dimension numbers do not fit its rank, is an
    error naming its leaf path. State: none.
    """

    ns_coeffs = check_coefficient_rows("newton_schulz", ns_coeffs, ns_steps)

    def apply(updates, state, step):
        dims = dimension_numbers_of(weight_dimension_numbers, updates)

        def leaf(path, u):
            def one(u):
                return orthogonalize(
                    u, ns_coeffs, ns_steps, preconditioning, eps, dims(path), path, eps_floor=eps_floor
                )

            return matrix_region(one, like=0)(u)  # on Explicit mesh axes, the products run on Auto ones

        return jax.tree_util.tree_map_with_path(leaf, updates), {}

    return primitive(apply)


def dual_norm_scale(m: jax.Array, o: jax.Array) -> jax.Array:
    """``<m, o> o``: the orthogonalized direction ``o`` scaled by its inner product with the
    momentum ``m`` it came from (the dual norm of ``m``, Bernstein & Newhouse 2024,
    https://arxiv.org/abs/2409.20325): Muon's ``adaptive`` join."""
    return jnp.sum(m.conj() * o) * o


# --- shape scaling -------------------------------------------------------------------------


def _fans(shape: tuple, dim_nums: MuonDimensionNumbers, path: tuple) -> tuple[int, int]:
    _, reduction, output = matrix_axes(shape, dim_nums, path)
    return math.prod(shape[ax] for ax in reduction), math.prod(shape[ax] for ax in output)


@declare
def scale_by_shape(
    weight_dimension_numbers: WeightDimNums = None, consistent_rms: Optional[NonNegative] = None
) -> Transformation:
    """``u -> sqrt(max(1, fan_out / fan_in)) * u``, or ``sqrt(max(fan_in, fan_out)) * consistent_rms * u``.

    Muon's per-matrix scale: Jordan's width scaling, or with ``consistent_rms`` the
    consistent-RMS scaling of Liu et al. 2025 (https://arxiv.org/abs/2502.16982; 0.2 gives
    an orthogonal update AdamW's RMS). ``fan_in`` is the product of the reduction axes,
    ``fan_out`` of the output axes (``weight_dimension_numbers``, as ``newton_schulz``).
    torch.optim.Muon's ``adjust_lr_fn`` "original" and "match_rms_adamw" are these two for
    a torch weight ``(out, in)``, that is a JAX one ``(in, out)``. State: none.
    """

    def scale(path, u, dims):
        fan_in, fan_out = _fans(u.shape, dims(path), path)
        if consistent_rms is None:
            return jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * u
        return jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms * u

    def apply(updates, state, step):
        dims = dimension_numbers_of(weight_dimension_numbers, updates)
        return jax.tree_util.tree_map_with_path(lambda path, u: scale(path, u, dims), updates), {}

    return primitive(apply)
