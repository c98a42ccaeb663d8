"""optax's stage names (``scale_by_adam``, ...) as gradtx chains, and optax's numerical
utilities (``update_moment``, ``bias_correction``, ``safe_norm``, ...) under their names.

A script ported from optax by replacing ``optax.`` with ``gradtx.`` finds them here. The
stages are the directions of gradtx's optimizers without the learning rate, built from
the same primitives (``scale_by_adam`` is ``adam_direction``; ``scale_by_rss`` is
``scale_by_sum_of_squares``); their records are named after optax's calls
(``ScaleByAdamState(count, mu, nu)``) with optax's field names. The functions call the
one home of each formula in ``gradtx.numerics`` and ``gradtx.moments`` (``ema``,
``debias``, ``safe_increment``, ``root_mean_square``, ``infinity_norm``).

The one new transformation is ``scale_by_distance_over_gradients`` (DoG, Ivgi et al.
2023); ``matrix_inverse_pth_root`` is right for every integer ``p`` where optax 0.2.8's
is right only for 1, 2, 4 and 8.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import _tree
from gradtx import tree as _state_tree
from gradtx.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    TransformInitFn,
    TransformUpdateFn,
    UpdateError,
    Updates,
)
from gradtx.combine import chain, stateless
from gradtx.hyperparams import (
    AccumulatorDtype,
    Decay,
    DecayBelowOne,
    NonNegative,
    OneOf,
    Positive,
    Real,
)
from gradtx.lr_free import add_sq_norm, max_distance
from gradtx.moments import infinity_norm, interpolated_ema
from gradtx.numerics import abs_sq, debias, ema, leaf_norm, real_dtype, root_mean_square, tree_vdot
from gradtx.numerics import safe_increment as _integer_increment
from gradtx.optimizers.adam import adam_direction, scale_by_adamax, scale_by_amsgrad
from gradtx.scaling import MaskOrFn, global_norm, scale_by_sign, scale_by_sum_of_squares
from gradtx.transform import Field, Transformation, _accepts_extra_args, declare, elementwise, primitive

__all__ = [
    "GradientTransformationExtraArgs",
    "MaskOrFn",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "bias_correction",
    "init_empty_state",
    "matrix_inverse_pth_root",
    "multi_normal",
    "power_iteration",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_distance_over_gradients",
    "scale_by_lion",
    "scale_by_rss",
    "stateless_with_tree_map",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "value_and_grad_from_state",
    "with_extra_args_support",
]

# --- optax's stages ------------------------------------------------------------------------


@declare
def scale_by_adam(
    b1: DecayBelowOne = 0.9,
    b2: DecayBelowOne = 0.999,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = False,
) -> Transformation:
    """``u -> m_hat / (sqrt(v_hat + eps_root) + eps)``: optax's name for ``adam_direction``.

    The same arguments, defaults and numbers as ``adam_direction`` (which it calls), with
    its record named after optax's: ``ScaleByAdamState(count, mu, nu)``. ``nesterov=True``
    is NAdam's direction.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adam()
    >>> updates, state = tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))
    >>> type(state).__name__, updates.round(4)  # the first step is sign(g), up to eps
    ('ScaleByAdamState', Array([ 1., -1.], dtype=float32))
    """
    return adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)


LionMode = Annotated[str, OneOf(("hard", "smooth", "refined"))]


def _lion_sign(mode: str, smooth_beta) -> Transformation:
    """Lion's sign of the interpolated momentum ``c``: ``sign(c)`` ('hard'), ``tanh(smooth_beta * c)``
    ('smooth'), or ``c`` where ``|c| < 1`` and ``sign(c)`` elsewhere ('refined')."""
    if mode == "hard":
        return scale_by_sign()
    if mode == "smooth":
        return elementwise(lambda c: jnp.tanh(smooth_beta * c))
    return elementwise(lambda c: jnp.where(jnp.abs(c) < 1.0, c, jnp.sign(c)))


@declare
def scale_by_lion(
    b1: Decay = 0.9,
    b2: Decay = 0.99,
    mu_dtype: AccumulatorDtype = None,
    *,
    mode: LionMode = "hard",
    smooth_beta: Positive = 1.0,
) -> Transformation:
    """``c = (1 - b1) * u + b1 * mu ; mu = (1 - b2) * u + b2 * mu ; u -> sign(c)``: Lion's direction.

    Lion (Chen et al. 2023, https://arxiv.org/abs/2302.06675, Algorithm 2) without its
    learning rate and weight decay. optax 0.2.8's two softer signs are offered under its
    names: ``mode='smooth'`` is ``tanh(smooth_beta * c)``, ``mode='refined'`` keeps ``c``
    where ``|c| < 1`` and takes ``sign(c)`` elsewhere.

    Chain: ``interpolated_ema(b1, b2, mu_dtype) -> scale_by_sign`` (the softer signs in
    its place). State: ``mu`` (optax also keeps a ``count`` that nothing reads; gradtx
    keeps none).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_lion(mode="refined")
    >>> updates, _ = tx.update(jnp.array([5.0, -0.5]), tx.init(jnp.zeros(2)))
    >>> updates  # c = (1 - b1) * g = [0.5, -0.05]: both below 1, kept
    Array([ 0.5 , -0.05], dtype=float32)
    """
    return chain(interpolated_ema(b1, b2, accumulator_dtype=mu_dtype), _lion_sign(mode, smooth_beta))


@declare
def scale_by_rss(initial_accumulator_value: NonNegative = 0.1, eps: NonNegative = 1e-7) -> Transformation:
    """``s = s + |u|^2 ; u -> u / sqrt(s + eps)`` (0 where ``s == 0``): optax's name for ``scale_by_sum_of_squares``.

    Adagrad's accumulator, "the root of the sum of squares": the same arguments and
    numbers as ``scale_by_sum_of_squares`` (which it calls), its record named after
    optax's: ``ScaleByRssState(sum_of_squares)``.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    >>> updates, state = tx.update(jnp.array([3.0, 0.0]), tx.init(jnp.zeros(2)))
    >>> type(state).__name__, updates
    ('ScaleByRssState', Array([1., 0.], dtype=float32))
    """
    return scale_by_sum_of_squares(initial_accumulator_value, eps)


def _scalar_dtype(x) -> jnp.dtype:
    """The dtype of a leaf's scalar statistics: its real dtype, at least float32."""
    return jnp.promote_types(real_dtype(jnp.asarray(x).dtype), jnp.float32)


@declare
def scale_by_distance_over_gradients(
    reps_rel: Positive = 1e-6,
    eps: NonNegative = 1e-8,
    param_dtype: AccumulatorDtype = jnp.float32,
    global_scale: Real = 1.0,
) -> Transformation:
    """``r = max(r, ||p - p_0||) ; G = G + ||u||^2 ; u -> global_scale * r / sqrt(G + eps) * u``, leaf by leaf.

    DoG, "distance over gradients" (Ivgi, Hinder & Carmon 2023, "DoG is SGD's Best
    Friend: A Parameter-Free Dynamic Step Size Schedule", https://arxiv.org/abs/2302.12022),
    in its layer-wise form (L-DoG, one step size per leaf)::

        r_t = max(r_eps, max_{i <= t} ||p_i - p_0||),   r_eps = reps_rel * (1 + ||p_0||)
        eta_t = r_t / sqrt(sum_{i <= t} ||g_i||^2 + eps)
        u -> global_scale * eta_t * g_t

    The two estimates are ``gradtx.lr_free``'s ``max_distance`` and ``add_sq_norm``, taken
    here leaf by leaf (``dog`` and ``dowg`` take them over the whole tree).

    This is the authors' ``LDoG`` (formll/dog) and optax 0.2.8's formula: ``eps`` is
    added once to the sum of squares, and the distance includes the current params (it
    needs ``params``). There is no learning rate: chain ``scale(-1)`` (or pass
    ``global_scale=-1``) to descend. The authors recommend ``reps_rel=1e-4`` for models
    with batch normalization, and averaging the iterates.

    Where optax differs: its sum of squares has shape ``(1,)`` per leaf, so a scalar
    param's update comes out with shape ``(1,)`` and ``apply_updates`` turns the scalar
    into a vector; gradtx keeps a scalar per leaf and every update its gradient's shape.

    State: ``max_dist`` and ``grad_sum_of_squares`` (a scalar per leaf, at least float32)
    and ``init_params`` (the params at ``init``, in ``param_dtype``; ``None``: their own).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0)
    >>> params = jnp.array([3.0, 4.0])  # ||p_0|| = 5: r_eps = 0.1 * (1 + 5) = 0.6
    >>> updates, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)
    >>> updates.round(6)  # 0.6 / sqrt(4) * g
    Array([0. , 0.6], dtype=float32)
    """

    def init_max_dist(params):
        return jax.tree.map(lambda p: (reps_rel * (1 + leaf_norm(p))).astype(_scalar_dtype(p)), params)

    def init_sum_of_squares(params):
        return jax.tree.map(lambda p: jnp.zeros((), _scalar_dtype(p)), params)

    def apply(updates, state, step):
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")
        # the distance-over-gradients estimates' one home (gradtx.lr_free), leaf by leaf
        max_dist = jax.tree.map(max_distance, state["max_dist"], step.params, state["init_params"])
        sos = jax.tree.map(add_sq_norm, state["grad_sum_of_squares"], updates)
        updates = jax.tree.map(
            lambda g, r, s: (global_scale * (r / jnp.sqrt(s + eps))).astype(g.dtype) * g, updates, max_dist, sos
        )
        return updates, {"max_dist": max_dist, "grad_sum_of_squares": sos, "init_params": state["init_params"]}

    return primitive(
        apply,
        {
            "max_dist": Field(init_max_dist, like_params=False),
            "grad_sum_of_squares": Field(init_sum_of_squares, like_params=False),
            "init_params": Field(lambda params: _tree.cast(params, param_dtype)),
        },
    )


# --- the running statistics as functions of trees --------------------------------------------


def _is_none(x) -> bool:
    return x is None


@declare
def update_moment(updates: Updates, moments: Updates, decay: Decay, order: int) -> Updates:
    """``(1 - decay) * u^order + decay * m`` leaf by leaf: one step of the moving average of
    the ``order``-th power (``None`` leaves of ``updates`` stay ``None``).

    optax's ``update_moment``, with ``gradtx.numerics.ema`` (optax's operation order).
    For complex updates ``u^order`` is the power, not the magnitude's: see
    ``update_moment_per_elem_norm``.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.update_moment(jnp.array([2.0]), jnp.array([1.0]), 0.75, 2)  # 0.25 * 4 + 0.75 * 1
    Array([1.75], dtype=float32)
    """
    return jax.tree.map(lambda g, m: None if g is None else ema(g**order, m, decay), updates, moments, is_leaf=_is_none)


def _elem_norm_power(g: jax.Array, order) -> jax.Array:
    """``|g|^order`` element-wise for complex ``g``; ``g^order`` for real ``g`` (optax's convention)."""
    if not jnp.iscomplexobj(g):
        return g**order
    half = order / 2
    return abs_sq(g) ** (int(half) if float(half).is_integer() else half)


@declare
def update_moment_per_elem_norm(updates: Updates, moments: Updates, decay: Decay, order: int) -> Updates:
    """``(1 - decay) * |u|^order + decay * m`` leaf by leaf (``u^order`` for real ``u``, as optax).

    optax's ``update_moment_per_elem_norm``: the moving average of the ``order``-th power
    of each element's magnitude (``order=2``: ``second_moment``'s ``nu``), real-valued for
    complex updates. ``None`` leaves of ``updates`` stay ``None``.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.update_moment_per_elem_norm(jnp.array([3 + 4j]), jnp.array([0.0]), 0.5, 2)  # 0.5 * 25
    Array([12.5], dtype=float32)
    """
    return jax.tree.map(
        lambda g, m: None if g is None else ema(_elem_norm_power(g, order), m, decay),
        updates,
        moments,
        is_leaf=_is_none,
    )


@declare
def update_infinity_moment(updates: Updates, moments: Updates, decay: Decay, eps: NonNegative) -> Updates:
    """``max(decay * m, |u| + eps)`` leaf by leaf: Adamax's infinity norm, one step.

    optax's ``update_infinity_moment``, computed by ``gradtx.infinity_norm`` (the
    formula's home): ``moments`` is its ``nu``, and the result its new ``nu`` (in
    ``moments``' dtype). ``updates`` and ``moments`` have one tree structure.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.update_infinity_moment(jnp.array([-3.0, 0.1]), jnp.array([1.0, 1.0]), 0.5, 0.0)
    Array([3. , 0.5], dtype=float32)
    """
    tx = infinity_norm(decay, eps)
    nu, _ = tx.update(updates, tx.init(moments)._replace(nu=moments))
    return nu


@declare
def bias_correction(moment: Updates, decay: DecayBelowOne, count: jax.typing.ArrayLike) -> Updates:
    """``m / (1 - decay^count)`` leaf by leaf: the bias correction of a moving average started at 0.

    optax's ``bias_correction``, which is ``gradtx.numerics.debias`` (the formula's home;
    ``1 - decay^count`` in at least float32, then cast to each leaf's dtype, so that a
    bfloat16 moment does not divide by zero). ``count`` is the step, from 1.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.bias_correction(jnp.array([0.1]), 0.9, jnp.asarray(1)).round(6)  # 0.1 / (1 - 0.9)
    Array([1.], dtype=float32)
    """
    return debias(moment, decay, count)


# --- numerics ------------------------------------------------------------------------------


def _floored(statistic: Callable[[jax.Array, bool], jax.Array], x, floor, axis, keepdims: bool) -> jax.Array:
    """``max(statistic(x), floor)`` with the gradient 0 where ``statistic(x) <= floor``.

    ``jnp.maximum(statistic(x), floor)`` differentiates both branches, and the norm's
    gradient at 0 is NaN (0 / 0) even where the floor is taken: here the statistic is taken
    of ones wherever it is below the floor, so that the branch not taken stays finite."""
    x = jnp.asarray(x)
    small = statistic(x, True) <= floor
    safe = statistic(jnp.where(small, jnp.ones_like(x), x), keepdims)
    if not keepdims:
        small = jnp.squeeze(small, axis=axis)
    return jnp.where(small, floor, safe)


def safe_norm(
    x: jax.typing.ArrayLike,
    min_norm: jax.typing.ArrayLike,
    ord: Optional[Union[int, float, str]] = None,
    axis: Union[tuple[int, ...], int, None] = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(||x||, min_norm)``, with the gradient 0 (not NaN) where ``||x|| <= min_norm``.

    optax's ``safe_norm``: ``ord``, ``axis`` and ``keepdims`` are ``jnp.linalg.norm``'s.
    The gradient of ``jnp.maximum(jnp.linalg.norm(x), min_norm)`` at ``x = 0`` is NaN,
    because jax differentiates both branches; this one is 0 there.

    >>> import jax, jax.numpy as jnp, gradtx
    >>> float(gradtx.safe_norm(jnp.array([3.0, 4.0]), 1.0)), float(gradtx.safe_norm(jnp.zeros(2), 1.0))
    (5.0, 1.0)
    >>> jax.grad(lambda x: gradtx.safe_norm(x, 0.0))(jnp.zeros(2))
    Array([0., 0.], dtype=float32)
    """
    return _floored(lambda v, keep: jnp.linalg.norm(v, ord=ord, axis=axis, keepdims=keep), x, min_norm, axis, keepdims)


def safe_root_mean_squares(x: jax.typing.ArrayLike, min_rms: jax.typing.ArrayLike) -> jax.Array:
    """``max(sqrt(mean(|x|^2)), min_rms)``, with the gradient 0 (not NaN) where the RMS is at most ``min_rms``.

    optax's ``safe_root_mean_squares``, with ``gradtx.numerics.root_mean_square`` (the
    formula's home) and ``safe_norm``'s floor.

    >>> import jax.numpy as jnp, gradtx
    >>> float(gradtx.safe_root_mean_squares(jnp.array([3.0, 4.0, 0.0, 0.0]), 0.1))
    2.5
    """
    return _floored(lambda v, keep: root_mean_square(v), x, min_rms, None, False)


def safe_increment(count: jax.typing.ArrayLike) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping (integers) or
    passing it (floats).

    optax's ``safe_increment``. Integer counts (the step counts of every gradtx state) go
    to ``gradtx.numerics.safe_increment``, the formula's home; float counts saturate at
    the largest finite float, as in optax. Other dtypes are a ``ValueError``.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.safe_increment(jnp.asarray(2147483647, jnp.int32))
    Array(2147483647, dtype=int32)
    """
    dtype = jnp.asarray(count).dtype
    if jnp.issubdtype(dtype, jnp.integer):
        return _integer_increment(jnp.asarray(count))
    if jnp.issubdtype(dtype, jnp.floating):
        top = jnp.array(jnp.finfo(dtype).max, dtype)
        return jnp.where(count < top, count + jnp.array(1, dtype), top)
    raise ValueError(
        f"gradtx.safe_increment: cannot increment a count of dtype {dtype}: it must be an integer or a float"
    )


safe_int32_increment = safe_increment
"""optax's older name for ``safe_increment`` (one function, two names)."""


def _normalized(tree: Any) -> Any:
    """``v / ||v||`` over the whole tree (``global_norm``), as ``1 / ||v|| * v``."""
    inverse = 1.0 / global_norm(tree)
    return jax.tree.map(lambda x: inverse * x, tree)


def power_iteration(
    matrix: Union[jax.typing.ArrayLike, Callable[[Any], Any]],
    *,
    v0: Optional[Any] = None,
    num_iters: jax.typing.ArrayLike = 100,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: Optional[jax.Array] = None,
) -> tuple[jax.Array, Any]:
    """``v -> A v / ||A v||`` until ``||A v - lambda v|| < error_tolerance * |lambda|``, ``lambda = <v, A v>``.

    optax's ``power_iteration``: the dominant eigenvalue of ``A`` and its (unit)
    eigenvector, as ``(eigenvalue, eigenvector)``. ``matrix`` is a square array or a
    function ``v -> A v`` on trees (then ``v0``, a tree, is required); without ``v0`` the
    start is uniform in [-1, 1] from ``key`` (``PRNGKey(0)`` by default). At most
    ``num_iters`` products. Converges when the dominant eigenvalue is unique (and the
    matrix diagonalizable).

    >>> import jax.numpy as jnp, gradtx
    >>> eig, vec = gradtx.power_iteration(jnp.array([[2.0, 0.0], [0.0, 0.5]]))
    >>> round(float(eig), 4), abs(vec).round(3)
    (2.0, Array([1., 0.], dtype=float32))
    """
    if callable(matrix):
        mvp = matrix
        if v0 is None:
            raise ValueError("gradtx.power_iteration: v0 must be given when matrix is a function (v -> A v)")
    else:
        array = jnp.asarray(matrix)
        mvp = lambda v: jnp.matmul(array, v, precision=precision)  # noqa: E731
        if v0 is None:
            start_key = jax.random.PRNGKey(0) if key is None else key
            v0 = jax.random.uniform(start_key, array.shape[-1:], array.dtype, minval=-1.0, maxval=1.0)
    v0 = _normalized(v0)

    def running(loop):
        vec, product, eig, i = loop
        residual = jax.tree.map(lambda a, v: a - eig * v, product, vec)
        converged = jnp.abs(global_norm(residual) / eig) < error_tolerance
        return ~converged & (i < num_iters)

    def body(loop):
        _, product, _, i = loop
        vec = _normalized(product)
        product = mvp(vec)
        return vec, product, tree_vdot(vec, product), i + 1

    _, product, eig, _ = lax.while_loop(running, body, (v0, mvp(v0), jnp.asarray(0.0), jnp.asarray(0)))
    return eig, _normalized(product)


def _matrix_power(m: jax.Array, p: int, precision) -> jax.Array:
    """``m^p`` by repeated squaring (``m^4 = (m^2)^2``)."""
    result: Optional[jax.Array] = None
    power = m
    while True:
        p, bit = divmod(p, 2)
        if bit:
            result = power if result is None else jnp.matmul(result, power, precision=precision)
        if p == 0:
            assert result is not None  # p >= 1
            return result
        power = jnp.matmul(power, power, precision=precision)


def _positive_int(p: Any) -> int:
    """``p`` as a Python int, if it is a concrete positive integer (else a ``ValueError``)."""
    try:
        value = None if isinstance(p, (bool, str)) else int(p)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        value = None
    if value is None or value < 1 or bool(value != p):
        raise ValueError(f"gradtx.matrix_inverse_pth_root(p={p!r}): p must be a positive integer (a Python int)")
    return value


def matrix_inverse_pth_root(
    matrix: jax.typing.ArrayLike,
    p: int,
    num_iters: jax.typing.ArrayLike = 100,
    ridge_epsilon: jax.typing.ArrayLike = 1e-6,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    """``A -> (A + ridge * I)^(-1/p)`` for a symmetric positive semi-definite ``A`` (coupled Newton iterations).

    optax's ``matrix_inverse_pth_root``, returning ``(root, error)`` with ``error`` the
    last ``max|M - I|``: Higham, "Functions of Matrices" (SIAM 2008), eq. 7.18, the
    coupled iteration ``M_{k+1} = ((1 - a) I + a M_k)^p M_k``, ``H_{k+1} = H_k ((1 - a) I
    + a M_k)`` with ``a = -1/p``, from ``M_0 = z A``, ``H_0 = z^(1/p) I``, ``z = (1 + p) /
    (2 ||A||_F)``; it stops after ``num_iters`` or when ``max|M - I| <= error_tolerance``
    (or when the error grows by more than 1.2x: then the previous ``H``). ``ridge =
    ridge_epsilon * max(lambda_max, 1e-16)``, ``lambda_max`` by ``power_iteration``.

    Where optax differs: optax raises ``M`` to the power ``2^round(log2 p)``, right only for
    ``p`` in 1, 2, 4, 8 (for ``p = 3`` it returns a matrix 16% off ``A^(-1/3)``), and takes
    ``a`` in float32 whatever the matrix's dtype; gradtx takes any positive integer ``p``
    (a Python int) and computes in the matrix's dtype. The two agree for ``p`` in 1, 2, 4, 8.

    >>> import jax.numpy as jnp, gradtx
    >>> root, _ = gradtx.matrix_inverse_pth_root(jnp.diag(jnp.array([4.0, 16.0])), 2, ridge_epsilon=0.0)
    >>> jnp.diag(root).round(4)
    Array([0.5 , 0.25], dtype=float32)
    """
    p = _positive_int(p)
    matrix = jnp.asarray(matrix)
    n = matrix.shape[0]
    alpha = -1.0 / p
    eye = jnp.eye(n, dtype=matrix.dtype)
    max_ev, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = ridge_epsilon * jnp.maximum(max_ev, 1e-16)
    if n == 1:
        return ((matrix + ridge) ** alpha).astype(matrix.dtype), jnp.zeros((), matrix.dtype)

    def running(loop):
        i, _, _, _, error, improving = loop
        return (i < num_iters) & (error > error_tolerance) & improving

    def body(loop):
        i, m, h, _, error, _ = loop
        step = (1 - alpha) * eye + alpha * m
        new_m = jnp.matmul(_matrix_power(step, p, precision), m, precision=precision)
        new_error = jnp.max(jnp.abs(new_m - eye))
        # the error may grow for an iteration before it converges: 1.2 bounds the growth
        return i + 1, new_m, jnp.matmul(h, step, precision=precision), h, new_error, new_error < error * 1.2

    damped = matrix + ridge * eye
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0, h0 = damped * z, eye * jnp.power(z, 1.0 / p)
    start = (0, m0, h0, h0, jnp.max(jnp.abs(m0 - eye)), jnp.asarray(True))
    _, m, h, previous_h, _, improving = lax.while_loop(running, body, start)
    return jnp.where(improving, h, previous_h).astype(matrix.dtype), jnp.max(jnp.abs(m - eye))


class _MultiNormalDiagFromLogScale:
    """A normal distribution with independent coordinates, from its mean and the log of
    its standard deviations (optax's ``MultiNormalDiagFromLogScale``)."""

    def __init__(self, loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike):
        self._log_scale = jnp.asarray(log_scale)
        self._scale = jnp.exp(self._log_scale)
        self._mean = jnp.asarray(loc)
        self._param_shape = jax.lax.broadcast_shapes(self._mean.shape, self._scale.shape)

    def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
        """``mean + scale * N(0, I)``, of shape ``(*shape, *param_shape)``."""
        return jax.random.normal(key, shape=(*shape, *self._param_shape)) * self._scale + self._mean

    def log_prob(self, x: jax.typing.ArrayLike) -> jax.Array:
        """``sum_i log N(x_i; mean_i, scale_i^2)`` over the parameter axes."""
        log_prob = jax.scipy.stats.norm.logpdf(x, loc=self._mean, scale=self._scale)
        return jnp.sum(log_prob, axis=tuple(-(i + 1) for i in range(len(self._param_shape))))

    @property
    def log_scale(self) -> jax.Array:
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        return [self._mean, self._log_scale]


def multi_normal(loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike) -> _MultiNormalDiagFromLogScale:
    """``N(loc, diag(exp(log_scale))^2)``: a normal distribution with independent coordinates.

    optax's ``multi_normal`` (used by Monte Carlo gradient estimators): the object has
    ``sample(shape, key)``, ``log_prob(x)`` (summed over the parameter axes), ``log_scale``
    and ``params`` (``[loc, log_scale]``).

    >>> import jax.numpy as jnp, gradtx
    >>> dist = gradtx.multi_normal(jnp.zeros(2), jnp.zeros(2))
    >>> round(float(dist.log_prob(jnp.zeros(2))), 4)  # 2 * log(1 / sqrt(2 pi))
    -1.8379
    """
    return _MultiNormalDiagFromLogScale(loc=loc, log_scale=log_scale)


def value_and_grad_from_state(value_fn: Callable[..., jax.typing.ArrayLike]) -> Callable[..., tuple[Any, Any]]:
    """``(params, *args, state) -> (value, grad)`` from ``state``, ``jax.value_and_grad(value_fn)`` if not finite.

    optax's ``value_and_grad_from_state``: a line search (``scale_by_zoom_linesearch``,
    ``lbfgs``, ``scale_by_backtracking_linesearch(store_grad=True)``) keeps the value and
    gradient of the objective at the params it accepted, in the fields ``value`` and
    ``grad`` of its state, and the next step reuses them instead of evaluating
    ``value_fn`` again. Before the first step the stored value is ``inf``, and they are
    computed. The fields are found anywhere in the state (``gradtx.tree.get``); none, or
    several, is an error.

    >>> import jax.numpy as jnp, gradtx
    >>> fn = lambda x: jnp.sum(x**2)
    >>> opt, params = gradtx.lbfgs(), jnp.array([1.0, 2.0])
    >>> value, grad = gradtx.value_and_grad_from_state(fn)(params, state=opt.init(params))
    >>> float(value), grad  # computed: the state holds no value yet
    (5.0, Array([2., 4.], dtype=float32))
    """

    def value_and_grad(params: Params, *fn_args: Any, state: OptState, **fn_kwargs: Any) -> tuple[Any, Any]:
        value = _state_tree.get(state, "value")
        grad = _state_tree.get(state, "grad")
        if value is None or grad is None:
            raise ValueError(
                "gradtx.value_and_grad_from_state: the state has no `value` or no `grad` field; use it with a "
                "transformation that stores them (scale_by_zoom_linesearch, lbfgs, "
                "scale_by_backtracking_linesearch(store_grad=True))"
            )
        return lax.cond(
            jnp.isfinite(value),
            lambda *_: (value, grad),
            lambda p, args, kwargs: jax.value_and_grad(value_fn)(p, *args, **kwargs),
            params,
            fn_args,
            fn_kwargs,
        )

    return value_and_grad


# --- building transformations -------------------------------------------------------------

GradientTransformationExtraArgs = GradientTransformation
"""optax's name for a transformation whose ``update`` takes extra keyword arguments: in
gradtx that is every transformation (the contract's ``update(updates, state, params=None,
**extra)``), so the two names are one type."""

TransformUpdateExtraArgsFn = TransformUpdateFn
"""optax's name for an ``update`` that takes extra keyword arguments: gradtx's
``TransformUpdateFn`` already does (one type, two names)."""


def init_empty_state(params: Params) -> EmptyState:
    """``params -> EmptyState()``: the ``init`` of a transformation that keeps nothing (optax's ``init_empty_state``).

    >>> import gradtx
    >>> gradtx.init_empty_state({"w": 1.0})
    EmptyState()
    """
    del params
    return EmptyState()


@declare
def stateless_with_tree_map(f: Callable[[jax.Array, Optional[jax.Array]], jax.Array]) -> Transformation:
    """``u -> f(u, p)`` leaf by leaf (``f(u, None)`` without params): a transformation without state.

    optax's ``stateless_with_tree_map``: ``stateless`` with the tree map done for you.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.stateless_with_tree_map(lambda g, p: g + 0.5 * p)
    >>> updates, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.full(2, 2.0))
    >>> updates, state
    (Array([2., 2.], dtype=float32), EmptyState())
    """

    def leafwise(updates, params):
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates)
        return jax.tree.map(f, updates, params)

    return stateless(leafwise)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with an ``update`` that takes (and ignores) extra keyword arguments (optax's ``with_extra_args_support``).

    Every gradtx transformation takes them already and comes back as it is; so does a
    ``GradientTransformation`` whose ``update`` takes ``**extra``. A foreign (optax)
    transformation whose ``update`` does not comes back wrapped, its extra arguments dropped.

    >>> import gradtx
    >>> plain = gradtx.GradientTransformation(gradtx.init_empty_state, lambda u, s, p=None: (2 * u, s))
    >>> tx = gradtx.with_extra_args_support(plain)
    >>> tx.update(1.0, tx.init(0.0), loss=3.0)
    (2.0, EmptyState())
    """
    if _accepts_extra_args(tx.update):
        return tx if isinstance(tx, GradientTransformation) else GradientTransformation(tx.init, tx.update)

    def update(updates, state, params=None, **extra):
        del extra
        return tx.update(updates, state, params)

    return GradientTransformation(tx.init, update)
