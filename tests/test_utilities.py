"""optax's stage names and utilities (``gradtx/utilities.py``).

References and tolerances:

- the stages with a parity grid (``scale_by_adam``, ``scale_by_adamax``, ``scale_by_amsgrad``,
  ``scale_by_lion``, ``scale_by_rss``, ``stateless_with_tree_map``) run in ``test_parity.py``
  against optax 0.2.8; here: their records carry optax's names, and the wrong-formula
  mutants of Lion's softer signs fail against optax (float64, 100 steps, rtol 1e-10);
- ``scale_by_distance_over_gradients``: optax 0.2.8 on a tree without scalar leaves
  (float64, 100 steps, rtol 1e-10, every state field) and the authors' L-DoG
  (formll/dog, ``LDoG._update_group_state``) written in numpy float64 (rtol 1e-10), with
  mutants of it that must fail; optax's scalar-leaf defect;
- every function against optax 0.2.8's function of the same name on seeded random
  inputs, float64, rtol 1e-12; ``safe_norm`` / ``safe_root_mean_squares``' gradients at 0
  (0, where the naive ``maximum`` gives NaN); ``power_iteration`` and
  ``matrix_inverse_pth_root`` on an SPD matrix also against ``numpy.linalg.eigh``'s closed
  form (``A^(-1/p) = V diag(w^(-1/p)) V^T``, rtol 1e-12), where optax is wrong for p = 3.

float64 is on inside ``jax.enable_x64(True)`` for each test (the ``f64`` fixture).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, compare_states

import gradtx
from gradtx.base import UpdateError

RTOL = 1e-12
STEPS = 100


@pytest.fixture(autouse=True)
def f64():
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64, "float64 leaked out of the test"


def close(actual, desired, rtol=RTOL, what=""):
    assert_trees_close(actual, desired, rtol, what=what)


def tree(seed: int, *, complex_leaf: bool = False, positive: bool = False):
    """A seeded float64 tree (a matrix, a vector; a complex vector with ``complex_leaf``)."""
    rng = np.random.default_rng(seed)
    draw = (lambda *s: np.abs(rng.normal(size=s)) + 0.1) if positive else (lambda *s: rng.normal(size=s))
    out = {"w": jnp.asarray(draw(3, 2)), "b": [jnp.asarray(draw(4))]}
    if complex_leaf:
        out["z"] = jnp.asarray(rng.normal(size=3) + 1j * rng.normal(size=3))
    return out


def spd(n: int = 6, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T / n + 0.5 * np.eye(n)


def run(tx, params, grads, apply_updates):
    """100 jitted steps of ``tx``: (params, last updates, state)."""

    @jax.jit
    def step(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (apply_updates(p, u), s), u

    (params, state), updates = jax.lax.scan(step, (params, tx.init(params)), grads)
    return params, jax.tree.map(lambda u: u[-1], updates), state


def gradients(seed: int, params, scale: float = 1.0):
    """``STEPS`` gradient trees shaped like ``params``, stacked on a leading axis, ``scale * (0.3 + N(0, 1))``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(scale * (0.3 + rng.normal(size=(STEPS, *p.shape)))), params)


# --- optax's stages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, record, fields",
    [
        ("scale_by_adam", "ScaleByAdamState", ("count", "mu", "nu")),
        ("scale_by_adamax", "ScaleByAdamaxState", ("count", "mu", "nu")),
        ("scale_by_amsgrad", "ScaleByAmsgradState", ("count", "mu", "nu", "nu_max")),
        ("scale_by_lion", "ScaleByLionState", ("mu",)),
        ("scale_by_rss", "ScaleByRssState", ("sum_of_squares",)),
        ("scale_by_distance_over_gradients", "ScaleByDistanceOverGradientsState", None),
    ],
)
def test_records_carry_optax_names(name, record, fields):
    """Reference: optax 0.2.8's state class names and fields (optax's adamax state is its
    ``ScaleByAdamState``; optax's Lion keeps a ``count`` that it never reads)."""
    params = tree(0)
    state = getattr(gradtx, name)().init(params)
    assert type(state).__name__ == record
    theirs = getattr(optax, name)().init(params)
    want = fields if fields is not None else theirs._fields
    assert state._fields == want
    assert set(want) <= set(theirs._fields)


def test_scale_by_adam_is_adam_direction():
    """Reference: ``adam_direction`` with the same arguments, bit for bit."""
    params, grads = tree(0), gradients(1, tree(0))
    kw = dict(b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, nesterov=True)
    got = run(gradtx.scale_by_adam(**kw), params, grads, gradtx.apply_updates)
    want = run(gradtx.adam_direction(**kw), params, grads, gradtx.apply_updates)
    jax.tree.map(np.testing.assert_array_equal, got[:2], want[:2])


LION_MUTANTS = [
    # (what is wrong, the wrong gradtx call, the optax call of the right formula)
    ("smooth sign without smooth_beta", dict(mode="smooth", smooth_beta=1.0), dict(mode="smooth", smooth_beta=2.0)),
    ("refined sign as the hard sign", dict(mode="hard"), dict(mode="refined")),
]


@pytest.mark.parametrize("what, wrong, right", LION_MUTANTS, ids=[m[0] for m in LION_MUTANTS])
def test_lion_sign_mutants_fail_against_optax(what, wrong, right):
    """Negative control for the parity grid's softer signs: a wrong sign differs from optax
    0.2.8's right one beyond rtol 1e-10 (float64, 100 steps); the right one agrees."""
    params = tree(0)
    grads = gradients(1, params, scale=2.0)  # |c| both below and above 1
    want = run(optax.scale_by_lion(b1=0.8, b2=0.95, **right), params, grads, optax.apply_updates)
    close(run(gradtx.scale_by_lion(b1=0.8, b2=0.95, **right), params, grads, gradtx.apply_updates)[0], want[0], 1e-10)
    got = run(gradtx.scale_by_lion(b1=0.8, b2=0.95, **wrong), params, grads, gradtx.apply_updates)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        close(got[0], want[0], 1e-10, what=what)


# --- DoG -----------------------------------------------------------------------------------------------

DOG_SETTINGS = [{}, dict(reps_rel=1e-2, eps=1e-4, param_dtype=None, global_scale=-1.0)]


@pytest.mark.parametrize("kwargs", DOG_SETTINGS, ids=str)
def test_dog_matches_optax(kwargs):
    """Reference: optax 0.2.8, 100 steps, float64, rtol 1e-10: params, last updates, every
    state field (optax's sum of squares has shape (1,) per leaf, gradtx's (): compared as
    scalars). The tree has no scalar leaf (see the next test)."""
    params = tree(0)
    grads = gradients(1, params)
    got = run(gradtx.scale_by_distance_over_gradients(**kwargs), params, grads, gradtx.apply_updates)
    want = run(optax.scale_by_distance_over_gradients(**kwargs), params, grads, optax.apply_updates)
    close(got[0], want[0], 1e-10, "params")
    close(got[1], want[1], 1e-10, "last updates")
    their_state = want[2]._replace(grad_sum_of_squares=jax.tree.map(jnp.squeeze, want[2].grad_sum_of_squares))
    assert compare_states(got[2], their_state, 1e-10) == ["grad_sum_of_squares", "init_params", "max_dist"]


def test_dog_keeps_a_scalar_leaf_scalar_where_optax_does_not():
    """optax 0.2.8 defect: its per-leaf sum of squares has shape (1,), so a scalar param's
    update has shape (1,) (and ``apply_updates`` makes the param a vector). gradtx's update
    has the gradient's shape; its value is optax's."""
    params = {"s": jnp.asarray(1.5), "w": jnp.ones(3)}
    grads = {"s": jnp.asarray(0.5), "w": jnp.arange(3.0)}
    ours, theirs = gradtx.scale_by_distance_over_gradients(), optax.scale_by_distance_over_gradients()
    got, _ = ours.update(grads, ours.init(params), params)
    want, _ = theirs.update(grads, theirs.init(params), params)
    assert got["s"].shape == () and want["s"].shape == (1,)
    close(got["s"], want["s"][0])


def authors_ldog(params, grads, reps_rel, eps, mutant=None):
    """formll/dog's ``LDoG`` (``DoG.step`` with ``LDoG._update_group_state``), in numpy
    float64: per leaf ``rbar = reps_rel * (1 + ||x_0||)``, ``G = ||g_0||^2 + eps`` at the first
    step, then ``rbar = max(rbar, ||x_t - x_0||)``, ``G += ||g_t||^2``; ``x -= rbar / sqrt(G) * g``.
    ``mutant`` is a wrong variant (the negative controls)."""
    x = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    x0 = [p.copy() for p in x]
    rbar, big_g = [], []
    for t, g in enumerate(zip(*[np.asarray(leaf) for leaf in jax.tree.leaves(grads)])):
        for i, gi in enumerate(g):
            if t == 0:
                start = np.linalg.norm(x0[i]) if mutant == "r_eps without 1 +" else 1 + np.linalg.norm(x0[i])
                rbar.append(reps_rel * start)
                big_g.append(np.sum(gi**2) + eps)
            else:
                rbar[i] = max(rbar[i], np.linalg.norm(x[i] - x0[i]))
                big_g[i] = np.sum(gi**2) + eps if mutant == "last gradient only" else big_g[i] + np.sum(gi**2)
            x[i] = x[i] - rbar[i] / np.sqrt(big_g[i]) * gi
    return x


@pytest.mark.parametrize("mutant", [None, "r_eps without 1 +", "last gradient only"])
def test_dog_is_the_authors_ldog(mutant):
    """Reference: the authors' L-DoG in numpy float64 (rtol 1e-10 on the params after 100
    steps); each mutant of it differs beyond that tolerance."""
    params = tree(0)
    grads = gradients(1, params)
    tx = gradtx.scale_by_distance_over_gradients(reps_rel=1e-2, eps=1e-4, param_dtype=None, global_scale=-1.0)
    got = jax.tree.leaves(run(tx, params, grads, gradtx.apply_updates)[0])
    want = authors_ldog(params, grads, 1e-2, 1e-4, mutant)
    if mutant is None:
        close(got, want, 1e-10)
    else:
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            close(got, want, 1e-10, what=mutant)


def test_dog_needs_params():
    tx = gradtx.scale_by_distance_over_gradients()
    with pytest.raises(UpdateError, match=r"^gradtx\.scale_by_distance_over_gradients: update\(\) needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# --- the running statistics as functions ------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["update_moment", "update_moment_per_elem_norm"])
def test_moment_updates_match_optax(name, order):
    """Reference: optax 0.2.8's function on a tree with a complex leaf, rtol 1e-12."""
    updates, moments = tree(0, complex_leaf=True), tree(1, complex_leaf=True)
    if name == "update_moment_per_elem_norm":
        moments["z"] = jnp.abs(moments["z"])  # a real statistic of a complex leaf
    close(getattr(gradtx, name)(updates, moments, 0.8, order), getattr(optax, name)(updates, moments, 0.8, order))


def test_complex_moment_mutant_fails():
    """Negative control: the power ``u^2`` (``update_moment``) is not the squared magnitude
    ``|u|^2`` (``update_moment_per_elem_norm``) for a complex leaf."""
    updates, moments = tree(0, complex_leaf=True), tree(1, complex_leaf=True)
    want = optax.update_moment_per_elem_norm(updates, moments, 0.8, 2)
    with pytest.raises(AssertionError):
        close(gradtx.update_moment(updates, moments, 0.8, 2), want)


def test_none_leaves_stay_none():
    """Reference: optax 0.2.8, which passes ``None`` update leaves through."""
    updates, moments = {"a": None, "b": jnp.ones(2)}, {"a": None, "b": jnp.zeros(2)}
    for name in ("update_moment", "update_moment_per_elem_norm"):
        got, want = getattr(gradtx, name)(updates, moments, 0.9, 2), getattr(optax, name)(updates, moments, 0.9, 2)
        assert got["a"] is None
        close(got["b"], want["b"])


def test_update_infinity_moment_matches_optax():
    updates, moments = tree(0, complex_leaf=True), tree(1, positive=True)
    moments["z"] = jnp.abs(tree(2, complex_leaf=True)["z"])
    close(
        gradtx.update_infinity_moment(updates, moments, 0.9, 1e-3),
        optax.update_infinity_moment(updates, moments, 0.9, 1e-3),
    )


@pytest.mark.parametrize("count", [1, 7, 1000])
def test_bias_correction_matches_optax(count):
    moment, count = tree(0), jnp.asarray(count, jnp.int32)
    close(gradtx.bias_correction(moment, 0.95, count), optax.bias_correction(moment, 0.95, count))


# --- numerics --------------------------------------------------------------------------------------

NORMS = [
    dict(),
    dict(ord=1, axis=0, keepdims=True),
    dict(ord="fro", axis=(0, 1)),
    dict(ord=jnp.inf, axis=1),
    dict(ord="nuc", axis=(0, 1), keepdims=True),
]


FLOORED = [("safe_norm", kw) for kw in NORMS] + [("safe_root_mean_squares", {})]


def value_and_gradient(fn, **kwargs):
    """``(v, floor) -> (fn(v, floor), grad of sum(fn(v, floor)^2))``, compiled."""
    of = lambda v, floor: fn(v, floor, **kwargs)  # noqa: E731
    return jax.jit(lambda v, floor: (of(v, floor), jax.grad(lambda w: jnp.sum(of(w, floor) ** 2))(v)))


@pytest.mark.parametrize("name, kwargs", FLOORED, ids=lambda x: x if isinstance(x, str) else str(x))
def test_floored_statistics_match_optax_with_their_gradients(name, kwargs):
    """Reference: optax 0.2.8's ``safe_norm`` / ``safe_root_mean_squares`` and their
    gradients, at a random matrix (a floor below and one above the statistic) and at 0,
    where the gradient is 0, not NaN."""
    ours, theirs = (
        value_and_gradient(getattr(gradtx, name), **kwargs),
        value_and_gradient(getattr(optax, name), **kwargs),
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    for point, floor in ((x, 0.1), (x, 10.0), (jnp.zeros((4, 3)), 0.0)):
        got = ours(point, floor)
        close(got, theirs(point, floor), what=f"{name} at floor {floor}")
        assert np.all(np.isfinite(got[1]))


def test_the_naive_floor_has_a_nan_gradient_at_zero():
    """Negative control: ``maximum(norm(x), min_norm)`` is what ``safe_norm`` replaces."""
    naive = jax.grad(lambda v: jnp.maximum(jnp.linalg.norm(v), 0.0))(jnp.zeros(3))
    assert np.all(np.isnan(naive)) and np.all(jax.grad(lambda v: gradtx.safe_norm(v, 0.0))(jnp.zeros(3)) == 0)


@pytest.mark.parametrize(
    "count",
    [
        np.int32(5),
        np.int32(np.iinfo(np.int32).max),
        np.int8(127),
        np.int64(np.iinfo(np.int64).max),
        np.float32(2.5),
        np.float32(np.finfo(np.float32).max),
        np.float64(np.inf),
    ],
    ids=repr,
)
def test_safe_increment_matches_optax(count):
    """Reference: optax 0.2.8's ``safe_increment`` (saturating, the dtype kept)."""
    got, want = gradtx.safe_increment(jnp.asarray(count)), optax.safe_increment(jnp.asarray(count))
    assert got.dtype == want.dtype and np.asarray(got) == np.asarray(want)
    assert gradtx.safe_int32_increment is gradtx.safe_increment


def test_safe_increment_refuses_other_dtypes():
    with pytest.raises(ValueError, match=r"gradtx\.safe_increment: cannot increment a count of dtype bool"):
        gradtx.safe_increment(jnp.asarray(True))


def test_power_iteration_matches_optax_and_eigh():
    """Reference: optax 0.2.8 (eigenvalue and eigenvector, rtol 1e-12) and the dominant
    eigenpair of ``numpy.linalg.eigh`` (rtol 1e-8: the iteration stops at error_tolerance)."""
    a = jnp.asarray(spd())
    kw = dict(num_iters=500, error_tolerance=1e-10)
    got, want = gradtx.power_iteration(a, **kw), optax.power_iteration(a, **kw)
    close(got, want)
    w, v = np.linalg.eigh(np.asarray(a))
    np.testing.assert_allclose(float(got[0]), w[-1], rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.asarray(got[1])), np.abs(v[:, -1]), rtol=1e-8)


def test_power_iteration_on_a_tree_operator_matches_optax():
    """A matrix-vector product on a tree (``matrix`` a function, ``v0`` a tree)."""
    a, b = jnp.asarray(spd(3, 1)), jnp.asarray(spd(2, 2))
    mvp = lambda v: {"x": a @ v["x"], "y": b @ v["y"]}  # noqa: E731
    v0 = {"x": jnp.ones(3), "y": jnp.arange(1.0, 3.0)}
    close(gradtx.power_iteration(mvp, v0=v0), optax.power_iteration(mvp, v0=v0))
    with pytest.raises(ValueError, match=r"gradtx\.power_iteration: v0 must be given when matrix is a function"):
        gradtx.power_iteration(mvp)


@pytest.mark.parametrize("p", [2, 8])
def test_matrix_inverse_pth_root_matches_optax(p):
    """Reference: optax 0.2.8 with its defaults (ridge, early stop; root and error), where
    optax is right (p = 1, 2, 4, 8: the closed-form test below checks all four)."""
    a = jnp.asarray(spd())
    close(gradtx.matrix_inverse_pth_root(a, p), optax.matrix_inverse_pth_root(a, p))
    one = jnp.asarray([[2.5]])
    close(gradtx.matrix_inverse_pth_root(one, p)[0], optax.matrix_inverse_pth_root(one, p)[0])


def inverse_root(a: np.ndarray, p: int) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * w ** (-1.0 / p)) @ v.T


def closed_form_error(root_fn, a: np.ndarray, p: int) -> tuple[float, float]:
    """``max|root - A^(-1/p)| / max|A^(-1/p)|`` for ``root_fn`` without ridge, iterated to
    1e-14, and the error it returns."""
    root, error = root_fn(jnp.asarray(a), p, ridge_epsilon=0.0, error_tolerance=1e-14)
    want = inverse_root(a, p)
    return float(np.max(np.abs(np.asarray(root) - want)) / np.max(np.abs(want))), float(error)


@pytest.mark.parametrize("p", range(1, 9))
def test_matrix_inverse_pth_root_is_the_closed_form(p):
    """Reference: ``A^(-1/p)`` by ``numpy.linalg.eigh``, rtol 1e-12 (no ridge, iterated to
    1e-14), and the last error ``max|M - I|`` below 1e-13."""
    off, error = closed_form_error(gradtx.matrix_inverse_pth_root, spd(), p)
    assert off < RTOL and error < 1e-13, (off, error)


def test_optax_inverse_cube_root_is_wrong():
    """optax 0.2.8 defect (and the negative control of the closed form): it raises M to the
    power 2^round(log2 p), so for p = 3 its root is 8% off ``A^(-1/3)`` (right at p = 4)."""
    assert closed_form_error(optax.matrix_inverse_pth_root, spd(), 3)[0] > 1e-2
    assert closed_form_error(optax.matrix_inverse_pth_root, spd(), 4)[0] < RTOL


@pytest.mark.parametrize("p", [0, 2.5, "2", jnp.asarray(1.5)], ids=repr)
def test_matrix_inverse_pth_root_needs_a_positive_integer(p):
    with pytest.raises(ValueError, match=r"p must be a positive integer \(a Python int\)"):
        gradtx.matrix_inverse_pth_root(jnp.eye(2), p)


def test_multi_normal_matches_optax():
    """Reference: optax 0.2.8's ``multi_normal``: samples from one key, ``log_prob``, params."""
    rng = np.random.default_rng(0)
    loc, log_scale = jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(0.3 * rng.normal(size=(2, 3)))
    ours, theirs = gradtx.multi_normal(loc, log_scale), optax.multi_normal(loc, log_scale)
    key = jax.random.PRNGKey(3)
    samples = ours.sample((5,), key)
    close(samples, theirs.sample((5,), key))
    close(ours.log_prob(samples), theirs.log_prob(samples))
    close(ours.params, theirs.params)
    close(ours.log_scale, theirs.log_scale)


def test_value_and_grad_from_state_matches_optax():
    """Reference: optax 0.2.8's function on the same gradtx (lbfgs) state, and
    ``jax.value_and_grad``: computed while the stored value is inf (after ``init``), read
    from the state once it is finite."""

    def fn(x, shift):
        return jnp.sum((x - shift) ** 2) + jnp.sum(x**4)

    params, shift = jnp.asarray([1.0, -2.0, 0.5]), 0.3
    state = gradtx.lbfgs().init(params)
    got = gradtx.value_and_grad_from_state(fn)(params, shift, state=state)
    close(got, optax.value_and_grad_from_state(fn)(params, shift, state=state))
    close(got, jax.value_and_grad(fn)(params, shift))
    stored = state._replace(value=jnp.asarray(7.0), grad=jnp.asarray([1.0, 2.0, 3.0]))  # not fn's: read, not computed
    got = gradtx.value_and_grad_from_state(fn)(params, shift, state=stored)
    close(got, optax.value_and_grad_from_state(fn)(params, shift, state=stored))
    close(got, (stored.value, stored.grad))
    with pytest.raises(ValueError, match=r"gradtx.value_and_grad_from_state: the state has no `value` or no `grad`"):
        gradtx.value_and_grad_from_state(fn)(params, shift, state=gradtx.adam(0.1).init(params))


# --- building transformations ---------------------------------------------------------------------


def test_stateless_with_tree_map_without_params_matches_optax():
    """Reference: optax 0.2.8 (``f(u, None)`` when no params are passed)."""
    f = lambda g, p: 2.0 * g if p is None else g + p  # noqa: E731
    ours, theirs = gradtx.stateless_with_tree_map(f), optax.stateless_with_tree_map(f)
    updates = tree(0)
    got = ours.update(updates, ours.init(updates))
    close(got[0], theirs.update(updates, theirs.init(updates))[0])
    assert got[1] == gradtx.init_empty_state(updates) == gradtx.EmptyState()


def test_with_extra_args_support():
    """Reference: optax 0.2.8's behaviour: a transformation that takes extra arguments comes
    back as it is, one that does not is wrapped to drop them, with the same updates."""
    tx = gradtx.adam(0.1)
    assert gradtx.with_extra_args_support(tx) is tx
    plain = optax.scale(2.0)  # update(updates, state, params=None): no extra arguments
    wrapped = gradtx.with_extra_args_support(plain)
    assert isinstance(wrapped, gradtx.GradientTransformationExtraArgs)
    updates = tree(0)
    got = wrapped.update(updates, wrapped.init(updates), None, loss=1.0)
    close(got[0], optax.with_extra_args_support(plain).update(updates, plain.init(updates), None, loss=1.0)[0])
    with pytest.raises(TypeError):
        plain.update(updates, plain.init(updates), None, loss=1.0)


def test_the_types_are_the_contract():
    """In gradtx every ``update`` takes extra keyword arguments: optax's *ExtraArgs types
    are the contract's types, and every gradtx transformation is one."""
    assert gradtx.GradientTransformationExtraArgs is gradtx.GradientTransformation
    assert gradtx.TransformUpdateExtraArgsFn is gradtx.TransformUpdateFn
    assert isinstance(gradtx.adam(1e-3), gradtx.GradientTransformationExtraArgs)
    assert gradtx.MaskOrFn is gradtx.scaling.MaskOrFn
    assert gradtx.TransformInitFn is gradtx.base.TransformInitFn
