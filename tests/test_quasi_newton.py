"""L-BFGS and the zoom line search against optax 0.2.8, in optax's documented loop.

The registry's parity runner feeds gradient streams without an objective, so these run
here: ``value, grad = optax.value_and_grad_from_state(f)(params, state=state)``, then
``update(grad, state, params, value=value, grad=grad, value_fn=f)``, 50 iterations on
the 2-D and a chained 10-D Rosenbrock function and on a least-squares problem; params,
values and states compared at float64 rtol 1e-10 (every problem and configuration) and
float32 rtol 1e-5 (one of them: ``precision_grid``).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, compare_states, in_precision

import gradtx
from gradtx import linesearch as ls
from gradtx import quasi_newton as qn
from gradtx.linesearch import scale_by_backtracking_linesearch, scale_by_zoom_linesearch
from gradtx.optimizers.quasi_newton import lbfgs
from gradtx.quasi_newton import scale_by_lbfgs
from gradtx.rows._entry import parity_schedule

ITERATIONS = 50


def rosenbrock(x):
    """Chained Rosenbrock: ``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


_RNG = np.random.default_rng(0)
_A, _B = _RNG.normal(size=(20, 5)), _RNG.normal(size=20)


def least_squares(w):
    """``0.5 ||A w - b||^2`` on a dict of params (two leaves: a tree, not one array)."""
    residual = jnp.asarray(_A, w["a"].dtype) @ jnp.concatenate([w["a"], w["b"]]) - jnp.asarray(_B, w["a"].dtype)
    return 0.5 * jnp.sum(residual**2)


PROBLEMS = {
    "rosenbrock-2d": (rosenbrock, lambda dt: jnp.array([-1.2, 1.0], dt)),
    "rosenbrock-10d": (rosenbrock, lambda dt: jnp.asarray(np.tile([-1.2, 1.0], 5), dt)),
    "least-squares": (least_squares, lambda dt: {"a": jnp.zeros(3, dt), "b": jnp.ones(2, dt)}),
}

# Both libraries get the same arguments; the line search is built by each library's factory.
_SEARCH = dict(
    max_linesearch_steps=15,
    max_learning_rate=2.0,
    tol=1e-12,
    increase_factor=1.5,
    slope_rtol=1e-3,
    curv_rtol=0.5,
    approx_dec_rtol=None,
    stepsize_precision=1e-6,
    initial_guess_strategy="keep",
)
CONFIGS = {
    "defaults": lambda lib: lib.lbfgs(),
    "non-default": lambda lib: lib.lbfgs(
        learning_rate=0.8,
        memory_size=3,
        scale_init_precond=False,
        linesearch=lib.scale_by_zoom_linesearch(**_SEARCH),
    ),
}
GRADTX = type("gradtx_names", (), dict(lbfgs=lbfgs, scale_by_zoom_linesearch=scale_by_zoom_linesearch))


def run(opt, fn, params, *, jit: bool, steps: int = ITERATIONS, apply=optax.apply_updates, from_state=True):
    """optax's documented L-BFGS loop: the params and values after each step, and the state
    (``from_state=False``: ``f`` and its gradient from ``jax.value_and_grad``, for a line
    search that keeps no gradient)."""
    value_and_grad = optax.value_and_grad_from_state(fn) if from_state else lambda p, state: jax.value_and_grad(fn)(p)

    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
        return apply(params, updates), state, value

    step = jax.jit(step) if jit else step
    state, trajectory, values = opt.init(params), [], []
    for _ in range(steps):
        params, state, value = step(params, state)
        trajectory.append(params)
        values.append(value)
    return trajectory, jnp.stack(values), state


def _check(got, want, rtol, absent=()):
    (g_params, g_values, g_state), (w_params, w_values, w_state) = got, want
    for i, (g, w) in enumerate(zip(g_params, w_params)):
        assert_trees_close(g, w, rtol, what=f"params after step {i + 1}")
    assert_trees_close(g_values, w_values, rtol, what="values")
    compare_states(g_state, w_state, rtol, absent=absent)


def precision_grid(*axes: list[str], float32_at: tuple[str, ...]) -> list:
    """Every combination of ``axes`` in float64 (rtol 1e-10: the check that tells formulas
    apart), and the one combination ``float32_at`` in float32 too (the dtype handling): each
    case costs two compilations of a while-loop program (~2 s here) whatever it checks."""
    combos = list(itertools.product(*axes))
    return ([pytest.param(*c, "float64", id="-".join((*c, "float64"))) for c in combos]
            + [pytest.param(*float32_at, "float32", id="-".join((*float32_at, "float32")))])


@pytest.mark.parametrize("problem, config, dtype_name", precision_grid(sorted(PROBLEMS), sorted(CONFIGS),
                                                                      float32_at=("rosenbrock-10d", "defaults")))
def test_lbfgs_matches_optax(problem, config, dtype_name):
    """Reference: optax 0.2.8's ``lbfgs`` (same arguments, its zoom line search) in its
    documented loop, jitted, 50 iterations: every iterate, every value and the final
    state by field name, at float64 rtol 1e-10 / float32 rtol 1e-5."""
    fn, start = PROBLEMS[problem]
    with in_precision(dtype_name) as precision:
        got = run(CONFIGS[config](GRADTX), fn, start(precision.dtype), jit=True, apply=gradtx.apply_updates)
        want = run(CONFIGS[config](optax), fn, start(precision.dtype), jit=True)
        _check(got, want, precision.rtol)


def test_lbfgs_matches_optax_eagerly():
    """Reference: optax 0.2.8's ``lbfgs``, both run op by op (the while loop dispatches
    eagerly: 4 iterations, each with line-search trials), 2-D Rosenbrock, float32 rtol 1e-5."""
    fn, start = PROBLEMS["rosenbrock-2d"]
    got = run(lbfgs(), fn, start(jnp.float32), jit=False, steps=4, apply=gradtx.apply_updates)
    want = run(optax.lbfgs(), fn, start(jnp.float32), jit=False, steps=4)
    _check(got, want, 1e-5)


def test_lbfgs_without_linesearch_matches_optax(precision):
    """Reference: optax 0.2.8's ``lbfgs(learning_rate=schedule, linesearch=None)``, a plain
    gradient transformation, on least squares with ``jax.value_and_grad``, 50 steps."""

    def run_plain(opt, apply):
        params = PROBLEMS["least-squares"][1](precision.dtype)
        state = opt.init(params)

        @jax.jit
        def step(params, state):
            updates, state = opt.update(jax.grad(least_squares)(params), state, params)
            return apply(params, updates), state

        for _ in range(ITERATIONS):
            params, state = step(params, state)
        return params, state

    kw = dict(learning_rate=parity_schedule, memory_size=4, linesearch=None)
    got = run_plain(lbfgs(**kw), gradtx.apply_updates)
    want = run_plain(optax.lbfgs(**kw), optax.apply_updates)
    assert_trees_close(got[0], want[0], precision.rtol, what="params")
    compare_states(got[1], want[1], precision.rtol)


def test_zoom_linesearch_after_sgd_matches_optax(precision):
    """Reference: optax 0.2.8's ``chain(sgd(1), scale_by_zoom_linesearch(15))`` on the
    10-D Rosenbrock function (its docstring's use), 50 iterations."""
    fn, start = PROBLEMS["rosenbrock-10d"]
    got = run(gradtx.chain(gradtx.sgd(1.0), scale_by_zoom_linesearch(15)), fn, start(precision.dtype), jit=True)
    want = run(optax.chain(optax.sgd(1.0), optax.scale_by_zoom_linesearch(15)), fn, start(precision.dtype), jit=True)
    _check(got, want, precision.rtol)


def test_optax_value_and_grad_from_state_reads_the_gradtx_state():
    """Reference: ``jax.value_and_grad`` at the accepted point. After a step, optax's
    ``value_and_grad_from_state`` finds ``value`` and ``grad`` in gradtx's flat record
    (each once) and returns f and its gradient at the new params."""
    fn, start = PROBLEMS["least-squares"]
    params, opt = start(jnp.float32), lbfgs()
    state = opt.init(params)
    value, grad = optax.value_and_grad_from_state(fn)(params, state=state)  # inf in the state: computed
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
    params = gradtx.apply_updates(params, updates)
    assert len(optax.tree.get_all_with_path(state, "value")) == 1
    assert len(optax.tree.get_all_with_path(state, "grad")) == 1
    got = optax.value_and_grad_from_state(fn)(params, state=state)
    assert_trees_close(got, jax.value_and_grad(fn)(params), 1e-6)


def test_accepted_step_satisfies_the_strong_wolfe_conditions():
    """Reference: the strong Wolfe conditions in closed form (Nocedal and Wright eq. 3.7),
    in numpy float64, at every accepted step of ``scale(-1) -> scale_by_zoom_linesearch``
    (Armijo only: ``approx_dec_rtol=None``) on the 2-D Rosenbrock function::

        f(p + eta d) <= f(p) + c1 eta <grad f(p), d>,   |<grad f(p + eta d), d>| <= c2 |<grad f(p), d>|
    """
    c1, c2 = 1e-4, 0.9
    fn = rosenbrock
    with jax.enable_x64(True):
        opt = gradtx.chain(gradtx.scale(-1.0), scale_by_zoom_linesearch(30, slope_rtol=c1, curv_rtol=c2,
                                                                         approx_dec_rtol=None))

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(fn)(params)
            return value, grad, *opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)

        params = jnp.array([-1.2, 1.0])
        state = opt.init(params)
        for _ in range(20):
            value, grad, updates, state = step(params, state)
            eta, d = float(state.learning_rate), -np.asarray(grad)
            new = np.asarray(params) + eta * d
            assert eta > 0 and float(state.decrease_error) == 0 and float(state.curvature_error) == 0
            assert fn(new) <= value + c1 * eta * np.dot(grad, d)
            assert abs(np.dot(jax.grad(fn)(new), d)) <= c2 * abs(np.dot(grad, d))
            np.testing.assert_allclose(updates, eta * d, rtol=1e-12)
            params = jnp.asarray(new)


def test_two_loop_is_the_inverse_hessian_of_a_quadratic():
    """Reference: the secant equation (Nocedal and Wright eq. 6.6): the BFGS update of any
    ``gamma I`` by a pair ``(s, y = Q s)`` of a quadratic with Hessian ``Q`` satisfies
    ``H y = s``; ``two_loop`` applied to ``y`` returns ``s`` (numpy float64, rtol 1e-12)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        m = rng.normal(size=(4, 4))
        q = m @ m.T + 4 * np.eye(4)
        s = rng.normal(size=(1, 4))
        y = s @ q
        rho = 1.0 / np.sum(s * y, axis=1)
        out = qn.two_loop(jnp.asarray(y[0]), jnp.asarray(s), jnp.asarray(y), jnp.asarray(rho), 0.5, jnp.asarray(0))
        np.testing.assert_allclose(out, s[0], rtol=1e-12)  # the secant equation H y = s


# --- negative controls: a term changed must fail the comparison at float32 rtol 1e-5 -----


def _inverse_identity_scale(s, y, updates, count):
    """The wrong initial scaling: ``||y||^2 / <s, y>`` (the Hessian's scale, not its inverse's)."""
    gamma = qn._squared_norm(y) / qn.tree_vdot(y, s)
    return jnp.where(count > 0, gamma, jnp.minimum(1.0, 1.0 / qn.global_norm(updates)))


MUTANTS = {
    "lbfgs initial scaling inverted": (qn, "_identity_scale", _inverse_identity_scale),
    "zoom accepting the first step with sufficient decrease": (
        ls.Wolfe,
        "curvature_error",
        lambda self, slope_: jnp.zeros_like(slope_),
    ),
    "zoom by bisection only": (ls, "zoom_trial", lambda search: (search.low.stepsize + search.high.stepsize) / 2.0),
}


@functools.cache
def _optax_lbfgs_rosenbrock_10d():
    fn, start = PROBLEMS["rosenbrock-10d"]
    return run(optax.lbfgs(), fn, start(jnp.float32), jit=True)


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_tolerances_catch_wrong_formulas(mutant, monkeypatch):
    """Negative control: with one term of a primitive changed (``MUTANTS``), gradtx's
    ``lbfgs`` leaves optax 0.2.8's ``lbfgs`` on the 10-D Rosenbrock function beyond
    float32's rtol 1e-5."""
    fn, start = PROBLEMS["rosenbrock-10d"]
    want = _optax_lbfgs_rosenbrock_10d()
    monkeypatch.setattr(*MUTANTS[mutant])
    got = run(lbfgs(), fn, start(jnp.float32), jit=True)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got[0], want[0], 1e-5, what=mutant)


# --- contracts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing,message",
    [
        ("value_fn", "update() needs value_fn=... (the function whose value and gradient the line search evaluates)"),
        ("value", "update() needs value=... (the value of value_fn at the params)"),
        ("grad", "update() needs grad=... (the gradient of value_fn at the params)"),
    ],
)
def test_missing_objective_names_the_argument(missing, message):
    """Reference: the message the brief asks for, naming the call and its stage."""
    params = jnp.ones(2)
    opt = lbfgs()
    kwargs = {"value": rosenbrock(params), "grad": jax.grad(rosenbrock)(params), "value_fn": rosenbrock}
    del kwargs[missing]
    with pytest.raises(gradtx.UpdateError) as err:
        opt.update(kwargs.get("grad", params), opt.init(params), params, **kwargs)
    assert str(err.value) == f"gradtx.lbfgs > scale_by_zoom_linesearch: {message}"


def test_missing_params_and_unused_arguments():
    """Reference: the messages (optax refuses arguments ``value_fn`` does not take)."""
    params, opt = jnp.ones(2), lbfgs()
    with pytest.raises(gradtx.UpdateError, match=r"gradtx.lbfgs > scale_by_lbfgs: update\(\) needs params"):
        opt.update(params, opt.init(params))
    with pytest.raises(gradtx.UpdateError, match=r"value_fn does not take: \['batch'\]"):
        opt.update(params, opt.init(params), params, value=1.0, grad=params, value_fn=rosenbrock, batch=2)


def test_extra_arguments_reach_value_fn():
    """Reference: optax 0.2.8's ``lbfgs`` with the same data passed as ``update``'s extra
    keyword argument ``x`` (its docstring's stochastic use), 5 steps."""

    def fn(w, x):
        return jnp.sum((x @ w - 1.0) ** 2)

    x = jnp.asarray(_A[:, :3], jnp.float32)

    def go(opt, apply):
        @jax.jit
        def step(w, state, x):
            value, grad = jax.value_and_grad(fn)(w, x)
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=fn, x=x)
            return apply(w, updates), state

        w = jnp.zeros(3)
        state = opt.init(w)
        for _ in range(5):
            w, state = step(w, state, x)
        return w

    assert_trees_close(go(lbfgs(), gradtx.apply_updates), go(optax.lbfgs(), optax.apply_updates), 1e-5)


@pytest.mark.parametrize("factory", [lbfgs, scale_by_lbfgs, lambda: scale_by_zoom_linesearch(10)])
def test_state_fields_are_optax_names_once_each(factory):
    """Reference: optax 0.2.8's states (``lbfgs``, ``scale_by_lbfgs``,
    ``scale_by_zoom_linesearch``): ``optax.tree.get`` finds each optax field once in the
    gradtx record, and the record has no more leaves."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    name = getattr(factory, "__name__", "scale_by_zoom_linesearch")
    twin = {"lbfgs": optax.lbfgs, "scale_by_lbfgs": optax.scale_by_lbfgs}.get(
        name, lambda: optax.scale_by_zoom_linesearch(10)
    )
    ours, theirs = factory().init(params), twin().init(params)
    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(theirs))
    from conftest import named_fields

    for field in named_fields(theirs):
        assert len(optax.tree.get_all_with_path(ours, field)) == 1, field
    assert isinstance(factory(), gradtx.Transformation)


# --- the backtracking line search --------------------------------------------------------

BACKTRACKING = {
    "defaults": dict(max_backtracking_steps=30),
    "non-default": dict(
        max_backtracking_steps=25,
        slope_rtol=1e-3,
        decrease_factor=0.6,
        increase_factor=2.0,
        max_learning_rate=0.5,
        atol=1e-9,
        rtol=1e-8,
    ),
}


def _backtracking_run(lib, problem, dtype, kwargs, store_grad):
    """``chain(sgd(1), scale_by_backtracking_linesearch(...))`` in optax's loop (its
    docstring's two uses: ``value_and_grad_from_state`` with ``store_grad``, else
    ``jax.value_and_grad``), jitted, 50 iterations."""
    fn, start = PROBLEMS[problem]
    opt = lib.chain(lib.sgd(1.0), lib.scale_by_backtracking_linesearch(**kwargs, store_grad=store_grad))
    return run(opt, fn, start(dtype), jit=True, from_state=store_grad)


@pytest.mark.parametrize("problem, config, store_grad, dtype_name", precision_grid(
    sorted(PROBLEMS), sorted(BACKTRACKING), ["value", "store_grad"], float32_at=("least-squares", "non-default",
                                                                                "store_grad")))
def test_backtracking_linesearch_after_sgd_matches_optax(problem, config, store_grad, dtype_name):
    """Reference: optax 0.2.8's ``chain(sgd(1), scale_by_backtracking_linesearch(...))``
    (same arguments) in its documented loop, 50 iterations: every iterate, every value and
    the final state by field name (without ``store_grad`` optax keeps ``grad=None``, gradtx
    no field), at float64 rtol 1e-10 / float32 rtol 1e-5."""
    kwargs, store_grad = BACKTRACKING[config], store_grad == "store_grad"
    with in_precision(dtype_name) as precision:
        got = _backtracking_run(gradtx, problem, precision.dtype, kwargs, store_grad)
        want = _backtracking_run(optax, problem, precision.dtype, kwargs, store_grad)
        _check(got, want, precision.rtol, absent=() if store_grad else ("grad",))


def test_backtracking_accepted_step_satisfies_the_armijo_condition():
    """Reference: the sufficient decrease (Armijo) condition in closed form (Nocedal and
    Wright eq. 3.4), in numpy float64, at every accepted step of
    ``scale(-1) -> scale_by_backtracking_linesearch`` on the 2-D Rosenbrock function, and
    the step size is the first of ``eta_0 d^k`` that satisfies it::

        f(p + eta d) <= f(p) + c eta <grad f(p), d>,   eta_0 = min(1.5 eta_prev, 1)
    """
    c, factor = 1e-4, 0.8
    fn = rosenbrock
    with jax.enable_x64(True):
        opt = gradtx.chain(gradtx.scale(-1.0), scale_by_backtracking_linesearch(40, slope_rtol=c))
        params, previous = jnp.array([-1.2, 1.0]), 1.0
        state = opt.init(params)
        for _ in range(20):
            value, grad = jax.value_and_grad(fn)(params)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
            eta, d, slope_0 = float(state.learning_rate), -np.asarray(grad), -float(np.dot(grad, grad))
            new = np.asarray(params) + eta * d
            assert eta > 0 and float(state.decrease_error) == 0
            assert fn(new) <= value + c * eta * slope_0
            k = int(state.num_linesearch_steps) - 1
            np.testing.assert_allclose(eta, min(1.5 * previous, 1.0) * factor**k, rtol=1e-12)
            if k > 0:  # the step before was rejected
                assert fn(np.asarray(params) + eta / factor * d) > value + c * eta / factor * slope_0
            np.testing.assert_allclose(updates, eta * d, rtol=1e-12)
            params, previous = jnp.asarray(new), eta


@pytest.mark.parametrize("store_grad", [False, True])
def test_backtracking_state_fields_are_optax_names_once_each(store_grad):
    """Reference: optax 0.2.8's ``scale_by_backtracking_linesearch`` state: ``optax.tree.get``
    finds each of its fields (``info`` flattened; ``grad`` only with ``store_grad``) once in
    the gradtx record, and the record has no more leaves."""
    from conftest import named_fields

    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    ours = scale_by_backtracking_linesearch(10, store_grad=store_grad).init(params)
    theirs = optax.scale_by_backtracking_linesearch(10, store_grad=store_grad).init(params)
    assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(theirs))
    for field, values in named_fields(theirs).items():
        expected = 0 if values == [None] else 1
        assert len(optax.tree.get_all_with_path(ours, field)) == expected, field


def test_backtracking_tolerances_catch_accepting_the_first_step(monkeypatch):
    """Negative control: with the decrease error read as 0 (the first step ``eta_0``
    always accepted), gradtx's ``chain(sgd(1), scale_by_backtracking_linesearch(30))``
    leaves optax 0.2.8's on the 10-D Rosenbrock function beyond float32's rtol 1e-5."""
    want = _backtracking_run(optax, "rosenbrock-10d", jnp.float32, BACKTRACKING["defaults"], False)
    monkeypatch.setattr(ls, "_violation", jnp.zeros_like)
    got = _backtracking_run(gradtx, "rosenbrock-10d", jnp.float32, BACKTRACKING["defaults"], False)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got[0], want[0], 1e-5, what="first step always")


def test_backtracking_missing_objective_names_the_argument():
    """Reference: the zoom search's messages (the same ``objective`` reads them)."""
    params = jnp.ones(2)
    opt = scale_by_backtracking_linesearch(10)
    with pytest.raises(gradtx.UpdateError, match=r"update\(\) needs value_fn=\.\.\."):
        opt.update(params, opt.init(params), params, value=1.0, grad=params)
    with pytest.raises(gradtx.UpdateError, match=r"value_fn does not take: \['batch'\]"):
        opt.update(params, opt.init(params), params, value=1.0, grad=params, value_fn=rosenbrock, batch=2)
