"""Clipping and normalization of updates beyond ``clip`` / ``clip_by_global_norm``: adaptive
(unit-wise) clipping, per-example clipping, centralization, normalization, and the small
element-wise guards.

A *unit* is one output neuron of a layer: in JAX's layouts (a dense kernel ``(in, out)``, a
convolution ``HWIO``) the slice of a leaf at one index of its last axis, whose norm is taken
over the other axes (``unitwise_norm``). Norms are ``sqrt(sum |x|^2)`` (real for complex
leaves): ``gradtx.numerics.leaf_norm`` over a leaf or some of its axes, ``global_norm`` over
a tree.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import UpdateError, Updates
from gradtx.hyperparams import NonNegative, OneOf, Real
from gradtx.numerics import at_least, explicit_layout, leaf_norm, plus_eps, real_dtype
from gradtx.scaling import _times, global_norm
from gradtx.transform import Field, Transformation, declare, elementwise, primitive

__all__ = [
    "adaptive_grad_clip",
    "centralize",
    "keep_params_nonnegative",
    "normalize_by_update_norm",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "scale_by_param_block_norm",
    "scale_gradient",
    "set_to_zero",
    "unitwise_clip",
    "unitwise_norm",
    "zero_nans",
]

Axis = Optional[Union[int, tuple[int, ...]]]
"""The axes a unit's norm is taken over (``None``: chosen from the leaf's rank)."""
UnitAxis = Annotated[int, OneOf((-1, 0))]
"""The axis that indexes a layer's units: -1 (JAX's layouts) or 0 (PyTorch's)."""

_NEEDS_PARAMS = "update() needs params (call update(updates, state, params))"


def _params_of(step) -> Any:
    if step.params is None:
        raise UpdateError(_NEEDS_PARAMS)
    return step.params


# --- unit-wise norms and adaptive gradient clipping -------------------------------------------


def _unit_axes(shape: tuple) -> Optional[tuple[int, ...]]:
    """The axes of a unit's norm for a leaf of ``shape`` (optax's and the NFNets code's rule):
    the whole leaf for a scalar or a vector (also a ``(1, n)`` matrix), axis 0 for a dense
    kernel ``(in, out)`` or a multi-head one ``(in, heads, size)``, every axis but the last for
    a convolution kernel ``HWIO`` or ``DHWIO``; ``None`` for any other rank (ask for ``axis``)."""
    if sum(d != 1 for d in shape) <= 1:
        return ()
    if len(shape) in (2, 3):
        return (0,)
    if len(shape) in (4, 5):
        return tuple(range(len(shape) - 1))
    return None


def _unit_norm(x: jax.Array, axis: Axis) -> jax.Array:
    """``unitwise_norm`` for a leaf whose axes are known to be valid."""
    axes = _unit_axes(jnp.shape(x)) if axis is None else axis
    # laid out as the leaf on Explicit mesh axes (a select with the leaf needs one layout)
    norm = leaf_norm(x, axes or None, keepdims=True)
    return jnp.broadcast_to(norm, jnp.shape(x), out_sharding=explicit_layout(x))


def _rank_rule(shape: tuple) -> str:
    return (
        f"shape {shape}: with axis=None it must be a scalar, a vector or have 2 to 5 axes "
        "(dense, multi-head, convolution kernels); pass axis"
    )


def unitwise_norm(x: jax.typing.ArrayLike, axis: Axis = None) -> jax.Array:
    """``x -> ||x_unit||`` broadcast to ``x``'s shape: each unit's norm ``sqrt(sum |x|^2)``.

    A unit is a slice of ``x`` reduced over ``axis``; with ``axis=None`` the axes follow the
    rank, as in optax and the NFNets code (Brock et al. 2021): a scalar or a vector (or any
    leaf with one axis longer than 1) is one unit; a dense kernel ``(in, out)`` or a
    multi-head kernel ``(in, heads, size)`` has one unit per output, its norm over axis 0; a
    convolution kernel ``HWIO`` (``DHWIO``) one per output channel, over every other axis.
    A 1-d convolution kernel ``WIO`` has 3 axes too, and is taken as multi-head: pass
    ``axis=(0, 1)`` for it.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.unitwise_norm(jnp.array([[3.0, 0.0], [4.0, 1.0]]))
    Array([[5., 1.],
           [5., 1.]], dtype=float32)
    """
    x = jnp.asarray(x)
    if axis is None and _unit_axes(x.shape) is None:
        raise ValueError(f"gradtx.unitwise_norm(x=...): x has {_rank_rule(x.shape)}")
    return _unit_norm(x, axis)


@declare
def unitwise_clip(
    g_norm: jax.typing.ArrayLike,
    max_norm: jax.typing.ArrayLike,
    grad: jax.typing.ArrayLike,
    div_eps: NonNegative = 1e-6,
) -> jax.Array:
    """``grad -> grad * max_norm / max(g_norm, div_eps)`` where ``g_norm >= max_norm``, else ``grad``.

    Element-wise, all three of one shape (``g_norm`` from ``unitwise_norm``). ``div_eps`` only
    keeps the division finite: it matters only where ``max_norm <= g_norm < div_eps``, and
    there the result is scaled below ``max_norm`` (``max_norm / div_eps < max_norm / g_norm``).

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.unitwise_clip(jnp.array([5.0, 1.0]), jnp.array([2.5, 2.5]), jnp.array([4.0, 1.0]))
    Array([2., 1.], dtype=float32)
    """
    shapes = {name: jnp.shape(v) for name, v in (("g_norm", g_norm), ("max_norm", max_norm), ("grad", grad))}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            "gradtx.unitwise_clip(grad=...): g_norm, max_norm and grad must have one shape, got "
            + ", ".join(f"{k} {v}" for k, v in shapes.items())
        )
    g_norm, max_norm, grad = jnp.asarray(g_norm), jnp.asarray(max_norm), jnp.asarray(grad)
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


@declare
def adaptive_grad_clip(clipping: NonNegative, eps: NonNegative = 1e-3, axis: Axis = None) -> Transformation:
    """``u_i -> u_i * min(1, clipping * max(||p_i||, eps) / ||u_i||)`` for every unit ``i`` of every leaf.

    Adaptive gradient clipping (AGC; Brock et al. 2021, https://arxiv.org/abs/2102.06171,
    eq. 3): a unit's update is scaled down where its norm is more than ``clipping`` times its
    parameters' norm, that norm taken at least ``eps`` so that zero-initialised units still
    move. Units and their norms as in ``unitwise_norm`` (``axis`` for other layouts); the
    clipping itself is ``unitwise_clip`` (with its ``div_eps=1e-6``: the NFNets code's).
    The same numbers as optax's ``adaptive_grad_clip``; the paper's NFNets use ``clipping``
    0.01 to 0.16 with large batches. Reads the params.

    Args:
      clipping: the largest ratio ``||u_i|| / max(||p_i||, eps)`` let through (0: every
        update becomes 0).
      eps: the smallest parameter norm.
      axis: the axes of a unit's norm, for every leaf (``None``: from each leaf's rank).

    State: none.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.adaptive_grad_clip(0.1)
    >>> p, g = jnp.array([[3.0], [4.0]]), jnp.array([[6.0], [8.0]])  # ||p|| = 5, ||g|| = 10
    >>> print(tx.update(g, tx.init(p), p)[0].ravel())
    [0.3 0.4]
    """

    def apply(updates, state, step):
        params = _params_of(step)
        if axis is None:
            for path, g in jax.tree_util.tree_leaves_with_path(updates):
                if _unit_axes(jnp.shape(g)) is None:
                    where = jax.tree_util.keystr(path)
                    raise UpdateError(f"the gradients at leaf path {where} have {_rank_rule(g.shape)}")

        def clip_leaf(g, p):
            max_norm = clipping * at_least(_unit_norm(p, axis), eps)
            return unitwise_clip(_unit_norm(g, axis), max_norm.astype(real_dtype(g.dtype)), g)

        return jax.tree.map(clip_leaf, updates, params), {}

    return primitive(apply)


# --- per-example clipping (differential privacy) ------------------------------------------------


def _check_batch(call: str, grads: Any) -> None:
    """Every leaf has the batch axis first, of one size (an error naming ``call`` otherwise)."""
    shapes = [jnp.shape(g) for g in jax.tree.leaves(grads)]
    batch_sizes = {s[0] if s else None for s in shapes}
    if len(batch_sizes) != 1 or None in batch_sizes:
        raise ValueError(
            f"gradtx.{call}(grads=...): every leaf must have the batch axis first, of one size "
            f"(per-example gradients, unlike other transformations), got shapes {shapes}"
        )


@declare
def per_example_global_norm_clip(grads: Updates, l2_norm_clip: NonNegative) -> tuple[Updates, jax.Array]:
    """``(g_1..g_B) -> (sum_b g_b * min(1, C / ||g_b||), #{b : ||g_b|| > C})``, ``||g_b||`` over the whole tree.

    Per-example clipping of DP-SGD (Abadi et al. 2016, https://arxiv.org/abs/1607.00133,
    Algorithm 1: ``g_b / max(1, ||g_b|| / C)``): every leaf of ``grads`` holds the batch's
    per-example gradients along axis 0; each example's gradient (all its leaves together) is
    scaled to a norm of at most ``C = l2_norm_clip``, and the clipped gradients are summed
    over the batch (add the noise and divide by the batch size after). A zero gradient is
    kept as it is (scale 1). Returns the sum and the number of examples that were clipped.
    A function, as in optax, with optax's results.

    >>> import jax.numpy as jnp, gradtx
    >>> grads = [jnp.array([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [4.0, 0.0, 3.0], [3.0, 4.0, 0.0]])]
    >>> total, n = gradtx.per_example_global_norm_clip(grads, 1.25)
    >>> print(total[0], int(n))
    [1.75 1.75 1.75] 3
    """
    _check_batch("per_example_global_norm_clip", grads)
    norms = jax.vmap(global_norm)(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    clipped_sum = jax.tree.map(lambda g: jnp.tensordot(multipliers, g, axes=1), grads)
    return clipped_sum, jnp.sum(multipliers < 1.0)


@declare
def per_example_layer_norm_clip(
    grads: Updates, global_l2_norm_clip: NonNegative, uniform: bool = True
) -> tuple[Updates, Any]:
    """``g^k -> per_example_global_norm_clip(g^k, C_k)`` leaf by leaf, ``C_k = C / sqrt(K)`` or ``C sqrt(D_k / D)``.

    Per-layer clipping (McMahan et al. 2018, https://arxiv.org/abs/1710.06963, sec. 3):
    each of the ``K`` leaves (layers) of the per-example gradients (batch axis first) is
    clipped on its own, to ``C_k`` with ``sum_k C_k^2 = C^2``, so that each example's whole
    gradient has norm at most ``C = global_l2_norm_clip``: ``C / sqrt(K)`` for every layer
    with ``uniform``, else ``C * sqrt(D_k / D)``, ``D_k`` the layer's parameter count and
    ``D`` the model's. Returns two trees shaped like one example's gradient: the sums of the
    clipped gradients, and the number of examples clipped in each layer. A function, as in
    optax, with optax's results.

    >>> import jax.numpy as jnp, gradtx
    >>> grads = {"a": jnp.array([[6.0, 8.0], [1.0, 0.0]]), "b": jnp.array([[1.0], [0.0]])}
    >>> total, n = gradtx.per_example_layer_norm_clip(grads, 5.0 * 2.0**0.5)  # 5 per layer
    >>> print(total["a"], total["b"], int(n["a"]), int(n["b"]))
    [4. 4.] [1.] 1 0
    """
    _check_batch("per_example_layer_norm_clip", grads)
    treedef: jax.tree_util.PyTreeDef  # jaxlib ships no type stubs for it: this makes it Any
    leaves, treedef = jax.tree.flatten(grads)
    if uniform:
        clips = [global_l2_norm_clip * (1.0 / len(leaves)) ** 0.5 for _ in leaves]
    else:
        total = sum(g[0].size for g in leaves)
        clips = [global_l2_norm_clip * (g[0].size / total) ** 0.5 for g in leaves]
    sums, counts = zip(*(per_example_global_norm_clip(g, c) for g, c in zip(leaves, clips)))
    return treedef.unflatten(sums), treedef.unflatten(counts)


# --- element-wise guards ----------------------------------------------------------------------


@declare
def keep_params_nonnegative() -> Transformation:
    """``u -> -p where p + u < 0, else u``: the updated params stay >= 0.

    Put it last in a chain (after the learning rate): it sees the step that is added to the
    params. A param that is already negative is moved to 0. Reads the params. State: none.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.keep_params_nonnegative()
    >>> p = jnp.array([1.0, 0.5])
    >>> print(tx.update(jnp.array([-0.5, -2.0]), tx.init(p), p)[0])
    [-0.5 -0.5]
    """

    def apply(updates, state, step):
        return jax.tree.map(lambda u, p: jnp.where((p + u) < 0.0, -p, u), updates, _params_of(step)), {}

    return primitive(apply)


@declare
def zero_nans() -> Transformation:
    """``u -> 0 where u is NaN, else u ; found_nan = any(isnan(u))`` per leaf.

    State: ``found_nan`` (optax's name), one boolean scalar per leaf: whether that leaf of
    the last update had a NaN (False after ``init``). Nothing reads it: it tells the user.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.zero_nans()
    >>> u, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, tx.init({"w": jnp.zeros(2)}))
    >>> print(u["w"], bool(state.found_nan["w"]))
    [1. 0.] True
    """

    def apply(updates, state, step):
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        return jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates), {"found_nan": found}

    def init(params):
        return jax.tree.map(lambda _: jnp.array(False), params)

    return primitive(apply, {"found_nan": Field(init, like_params=False)})


@declare
def set_to_zero() -> Transformation:
    """``u -> 0``: the params do not move (freeze a part of the tree with ``partition`` or
    ``masked``; under jit the computation of what it drops is dropped too). It takes
    leaves of any dtype (integer counters frozen in a partition, as optax's). State: none."""
    return primitive(lambda updates, state, step: (jax.tree.map(jnp.zeros_like, updates), {}), checks_dtypes=False)


# --- centralization and normalization -----------------------------------------------------------


@declare
def centralize(*, unit_axis: UnitAxis = -1) -> Transformation:
    """``u -> u - mean(u)`` over each unit's fan-in (every axis but ``unit_axis``), on leaves of 2 or more axes.

    Gradient centralization (Yong et al. 2020, https://arxiv.org/abs/2004.01461, eq. 4):
    the gradient of each output unit's weight vector is made to have zero mean. Vectors and
    scalars (biases, scales) are left alone. ``unit_axis`` says which axis indexes the
    units: -1 (default) for JAX's layouts, a dense kernel ``(in, out)`` or a convolution
    ``HWIO``, where a unit's fan-in is every other axis (the paper's ``C_in k1 k2``); 0 for
    PyTorch's ``(out, in)`` and ``OIHW``, the layout of the paper's code.

    optax 0.2.8's ``centralize()`` keeps axis 0 (the paper's PyTorch code, unchanged), so on
    JAX's layouts it centers each *input* row of a dense kernel over the outputs (and each
    row of a convolution kernel's height) instead of each unit over its fan-in: not the
    paper's rule, nor the unit of optax's own ``unitwise_norm``. ``unit_axis=0`` gives
    optax's numbers. State: none.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.centralize()
    >>> print(tx.update(jnp.array([[1.0, 2.0], [3.0, 6.0]]), tx.init(jnp.zeros((2, 2))))[0])
    [[-1. -2.]
     [ 1.  2.]]
    """

    def centered(u):
        if u.ndim < 2:
            return u
        axes = tuple(a for a in range(u.ndim) if a != unit_axis % u.ndim)
        return u - u.mean(axes, keepdims=True)

    return elementwise(centered)


@declare
def normalize_by_update_norm(scale_factor: Real = 1.0, eps: NonNegative = 1e-6) -> Transformation:
    """``u -> scale_factor * u / (||u|| + eps)``, ``||u||`` over the whole tree (0 where ``||u|| + eps = 0``).

    Every step has norm (about) ``|scale_factor|``: normalized gradient descent. optax 0.2.8
    computes ``u / ((||u|| + eps) / scale_factor)``, which is NaN for a zero update with
    ``eps=0`` (and for ``scale_factor=0``); gradtx returns 0 there and optax's numbers
    elsewhere. State: none.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.normalize_by_update_norm(scale_factor=2.0, eps=0.0)
    >>> print(tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))[0])
    [1.2 1.6]
    """

    def apply(updates, state, step):
        denominator = plus_eps(global_norm(updates), eps)
        factor = jnp.where(denominator > 0, scale_factor / jnp.where(denominator > 0, denominator, 1.0), 0.0)
        return jax.tree.map(lambda u: u * factor.astype(real_dtype(u.dtype)), updates), {}

    return primitive(apply)


@declare
def scale_by_param_block_norm(min_scale: NonNegative = 1e-3) -> Transformation:
    """``u -> u * max(||p||, min_scale)`` leaf by leaf, ``||p|| = sqrt(sum |p|^2)``.

    Each leaf's (block's) step is scaled by the norm of its parameters, at least
    ``min_scale``: the norm counterpart of ``scale_by_param_block_rms``. optax's
    ``scale_by_param_block_norm``. Reads the params. State: none.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_param_block_norm()
    >>> p = jnp.array([3.0, 4.0])
    >>> print(tx.update(jnp.array([1.0, -1.0]), tx.init(p), p)[0])
    [ 5. -5.]
    """

    def apply(updates, state, step):
        def scaled(u, p):
            return u * at_least(leaf_norm(p), min_scale).astype(real_dtype(u.dtype))

        return jax.tree.map(scaled, updates, _params_of(step)), {}

    return primitive(apply)


# --- the gradient of a function ------------------------------------------------------------------


@jax.custom_vjp
def _scaled_backward(inputs: Any, scale: jax.Array) -> Any:
    return inputs


def _scaled_backward_fwd(inputs: Any, scale: jax.Array) -> tuple[Any, jax.Array]:
    return inputs, scale


def _scaled_backward_bwd(scale: jax.Array, cotangent: Any) -> tuple[Any, None]:
    return jax.tree.map(lambda g: _times(scale, g), cotangent), None


_scaled_backward.defvjp(_scaled_backward_fwd, _scaled_backward_bwd)


@declare
def scale_gradient(inputs: Any, scale: Real) -> Any:
    """``x -> x`` in the forward pass, ``dL/dx -> scale * dL/dx`` in the backward pass.

    A function on a tree (not a transformation), for inside a loss: it scales the gradient
    that flows back through ``inputs`` (``scale=-1``: gradient reversal, as in domain-
    adversarial training; 0: ``stop_gradient``). ``scale`` gets no gradient. Unlike optax
    0.2.8 (``if scale == 1.0``, which fails on a traced value), ``scale`` may be traced:
    an argument of a jitted function, a schedule's value.

    >>> import jax, jax.numpy as jnp, gradtx
    >>> float(jax.grad(lambda x: gradtx.scale_gradient(x, 0.5) ** 2)(3.0))
    3.0
    """
    if not isinstance(scale, jax.core.Tracer) and np.ndim(scale) == 0:
        value = float(np.asarray(scale))
        if value == 1.0:
            return inputs
        if value == 0.0:
            return jax.lax.stop_gradient(inputs)
    return _scaled_backward(inputs, scale)
