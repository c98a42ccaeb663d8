"""Line searches: a step size along the incoming direction, from evaluations of the objective.

A line search is a stage like any other, whose ``update`` also takes the objective:
``update(updates, state, params, value=f(params), grad=grad f(params), value_fn=f)``,
plus whatever keyword arguments ``value_fn`` takes besides the params (a batch), which
are passed on to it. It scales the updates ``u`` by the step size ``eta`` it finds, so
that the new params are ``p + eta u``.

The state keeps the value and gradient at the accepted point under optax's names
(``value``, ``grad``), so that ``optax.value_and_grad_from_state(f)(params, state=state)``
reuses them for the next step instead of evaluating ``f`` again.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.base import UpdateError
from gradtx.hyperparams import DecayBelowOne, Interval, NonNegative, OneOf, Positive
from gradtx.numerics import safe_increment, tree_add_scale, tree_vdot
from gradtx.transform import Field, Transformation, declare, primitive

Steps = Annotated[int, Interval(1.0)]
AtLeastOne = Annotated[ArrayLike, Interval(1.0)]


# --- what every line search reads from update() ------------------------------------------


class Objective(NamedTuple):
    """The objective as ``update`` received it: its value and gradient at the params, and
    ``value_and_grad(p)``, the objective's value and gradient at other params ``p``."""

    params: Any
    value: jax.Array
    grad: Any
    value_and_grad: Callable[[Any], tuple[jax.Array, Any]]
    value_only: Callable[[Any], jax.Array]


def _needs(extra, name: str, what: str):
    if extra.get(name) is None:
        raise UpdateError(f"update() needs {name}=... ({what})")
    return extra[name]


def _function_kwargs(value_fn: Callable, extra) -> dict[str, Any]:
    """The extra arguments of ``update`` that ``value_fn`` takes (by name; all of them
    when it takes ``**kwargs``); any other is an error, as in optax."""
    rest = {k: v for k, v in extra.items() if k not in ("value", "grad", "value_fn")}
    params = inspect.signature(value_fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return rest
    unused = sorted(k for k in rest if k not in params)
    if unused:
        raise UpdateError(f"update() got keyword arguments that value_fn does not take: {unused}")
    return rest


def objective(step) -> Objective:
    """The objective of this ``update`` call (an ``UpdateError`` names what is missing)."""
    if step.params is None:
        raise UpdateError("update() needs params (call update(updates, state, params))")
    value_fn = _needs(step.extra, "value_fn", "the function whose value and gradient the line search evaluates")
    value = _needs(step.extra, "value", "the value of value_fn at the params")
    grad = _needs(step.extra, "grad", "the gradient of value_fn at the params")
    fn = functools.partial(value_fn, **_function_kwargs(value_fn, step.extra))
    return Objective(step.params, value, grad, jax.value_and_grad(fn), fn)


def value_dtype(params) -> jnp.dtype:
    """The dtype of the objective's value: the first param's real dtype."""
    return jnp.real(jnp.empty((), jax.tree.leaves(params)[0].dtype)).dtype


def slope(grad, updates) -> jax.Array:
    """``Re <grad, u>``: the derivative of ``eta -> f(p + eta u)`` at the point of ``grad``."""
    return tree_vdot(jax.tree.map(jnp.conj, grad), updates)


def _scaled(updates, stepsize):
    return jax.tree.map(lambda u: stepsize * u, updates)


def _cast_like(tree, like):
    return jax.tree.map(lambda x, y: x.astype(jnp.asarray(y).dtype), tree, like)


# --- the zoom line search (strong Wolfe conditions) ----------------------------------------


class Wolfe(NamedTuple):
    """The conditions a step size is judged by, and their tolerances."""

    slope_rtol: Any  # c1, sufficient decrease
    curv_rtol: Any  # c2, curvature
    approx_dec_rtol: Any  # Hager and Zhang's approximate decrease (None: Armijo only)
    value_init: jax.Array  # f(p)
    slope_init: jax.Array  # Re <grad f(p), u>

    def decrease_error(self, stepsize, value, slope_) -> jax.Array:
        """``max(0, f(p + eta u) - f(p) - c1 eta slope_0)`` (Armijo, N&W eq. 3.7a), or, when
        ``approx_dec_rtol`` is given and it is smaller, Hager and Zhang's approximate
        decrease (their eq. 23, near a minimum where rounding defeats Armijo):
        ``max(slope - (2 c1 - 1) slope_0, f - f(p) - approx_dec_rtol |f(p)|)``. NaN -> inf."""
        error = value - self.value_init - self.slope_rtol * stepsize * self.slope_init
        if self.approx_dec_rtol is not None:
            approx = slope_ - (2 * self.slope_rtol - 1.0) * self.slope_init
            near = value - self.value_init - self.approx_dec_rtol * jnp.abs(self.value_init)
            error = jnp.minimum(jnp.maximum(approx, near), error)
        return _violation(error)

    def curvature_error(self, slope_) -> jax.Array:
        """``max(0, |slope| - c2 |slope_0|)`` (the strong curvature condition, N&W eq. 3.7b). NaN -> inf."""
        return _violation(jnp.abs(slope_) - self.curv_rtol * jnp.abs(self.slope_init))


def _violation(error: jax.Array) -> jax.Array:
    """``max(error, 0)``, NaN read as an infinite violation."""
    error = jnp.maximum(error, 0.0)
    return jnp.where(jnp.isnan(error), jnp.inf, error)


class Point(NamedTuple):
    """A step size, the objective's value there and its slope along the direction."""

    stepsize: jax.Array
    value: jax.Array
    slope: jax.Array


class Search(NamedTuple):
    """The zoom search's loop state (Nocedal and Wright, Algorithms 3.5 and 3.6)."""

    evaluations: jax.Array
    last: Point  # the last evaluated step size
    grad: Any  # the gradient there
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array  # phase 2 (zoom) once True
    done: jax.Array
    failed: jax.Array
    low: Point  # the bracket: f(low) <= f(high), not low <= high
    high: Point
    cubic_ref: Point  # the third point of the cubic interpolation (its slope is unused)
    safe: Point  # the best step size with sufficient decrease (0: none yet)
    safe_grad: Any


def _pick(condition, if_true, if_false):
    """``if_true`` where ``condition``, else ``if_false``, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def cubic_minimizer(a: Point, b: Point, c: Point) -> jax.Array:
    """The critical point ``a + (-B + sqrt(B^2 - 3 A C)) / (3 A)`` of the cubic
    ``A (x-a)^3 + B (x-a)^2 + C (x-a) + D`` through ``(a, f_a)`` with slope ``f'_a``, ``(b, f_b)``
    and ``(c, f_c)`` (NaN when it has none: the caller then falls back). SciPy's and optax's form."""
    slope_a = a.slope
    db, dc = b.stepsize - a.stepsize, c.stepsize - a.stepsize
    denom = (db * dc) ** 2 * (db - dc)
    d1 = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    rhs = jnp.array([b.value - a.value - slope_a * db, c.value - a.value - slope_a * dc])
    cubic, quadratic = jnp.dot(d1, rhs, precision=jax.lax.Precision.HIGHEST) / denom
    radical = quadratic * quadratic - 3.0 * cubic * slope_a
    return a.stepsize + (-quadratic + jnp.sqrt(radical)) / (3.0 * cubic)


def quadratic_minimizer(a: Point, b: Point) -> jax.Array:
    """The critical point ``a - f'_a / (2 B)`` of the quadratic ``B (x-a)^2 + f'_a (x-a) + f_a``
    through ``(b, f_b)``: ``B = (f_b - f_a - f'_a (b - a)) / (b - a)^2``."""
    db = b.stepsize - a.stepsize
    curvature = (b.value - a.value - a.slope * db) / (db**2)
    return a.stepsize - a.slope / (2.0 * curvature)


def zoom_trial(search: Search) -> jax.Array:
    """The next step size inside the bracket: the cubic's minimizer when it lies in the
    bracket's middle 60%, else the quadratic's when in its middle 80%, else the midpoint."""
    low, high = search.low, search.high
    delta = jnp.abs(high.stepsize - low.stepsize)
    left, right = jnp.minimum(high.stepsize, low.stepsize), jnp.maximum(high.stepsize, low.stepsize)
    cubic = cubic_minimizer(low, high, search.cubic_ref)
    use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
    quadratic = quadratic_minimizer(low, high)
    use_quadratic = ~use_cubic & (quadratic > left + 0.1 * delta) & (quadratic < right - 0.1 * delta)
    bisection = (low.stepsize + high.stepsize) / 2.0
    trial = jnp.where(use_cubic, cubic, search.cubic_ref.stepsize)
    trial = jnp.where(use_quadratic, quadratic, trial)
    return jnp.where(~use_cubic & ~use_quadratic, bisection, trial)


class ZoomSearch(NamedTuple):
    """One zoom search along ``updates`` from ``obj.params``: its settings and the pieces of
    its ``lax.while_loop`` (``start``, ``step``, ``running``)."""

    obj: Objective
    updates: Any
    wolfe: Wolfe
    max_steps: Any
    max_stepsize: Any
    tol: Any
    increase_factor: Any
    stepsize_precision: Any

    def evaluate(self, stepsize) -> tuple[Point, Any]:
        """``f``, its gradient and its slope at ``p + stepsize * u``."""
        value, grad = self.obj.value_and_grad(tree_add_scale(self.obj.params, stepsize, self.updates))
        return Point(stepsize, value, slope(grad, self.updates)), grad

    def start(self, stepsize_guess, dtype) -> tuple[Search, Any]:
        origin = Point(jnp.asarray(0.0, dtype), jnp.asarray(self.obj.value, dtype), self.wolfe.slope_init)
        inf = jnp.asarray(jnp.inf, dtype)
        no = jnp.asarray(False)
        search = Search(
            jnp.asarray(0), origin, self.obj.grad, inf, inf, no, no, no, origin, origin, origin, origin, self.obj.grad
        )
        return search, jnp.asarray(stepsize_guess, dtype)

    def judge(self, point: Point) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The two errors at ``point`` and whether both are within ``tol``."""
        decrease = self.wolfe.decrease_error(point.stepsize, point.value, point.slope)
        curvature = self.wolfe.curvature_error(point.slope)
        return decrease, curvature, jnp.maximum(decrease, curvature) <= self.tol

    def bracket(self, search: Search, stepsize_guess) -> Search:
        """Phase 1 (N&W Algorithm 3.5): try a step ``increase_factor`` times larger (the
        guess first) until the step is good or a bracket ``[low, high]`` holds one."""
        previous = search.last
        trial = jnp.where(search.evaluations == 0, stepsize_guess, self.increase_factor * previous.stepsize)
        at_max = jnp.asarray(False)
        if self.max_stepsize is not None:
            at_max = trial >= self.max_stepsize
            trial = jnp.minimum(trial, self.max_stepsize)
        new, grad = self.evaluate(trial)
        decrease, curvature, good = self.judge(new)
        high_is_new = (decrease > 0.0) | ((new.value >= previous.value) & (search.evaluations > 0))
        low_is_new = (new.slope >= 0.0) & ~high_is_new
        low, high = _pick(low_is_new, (new, previous), (previous, new))
        found = high_is_new | low_is_new | good
        done = good | (at_max & ~found)
        safe, safe_grad = _pick(decrease <= self.tol, (new, grad), (search.safe, search.safe_grad))
        no = jnp.asarray(False)
        return self._next(search, new, grad, decrease, curvature, found, done, no, low, high, low, safe, safe_grad)

    def zoom(self, search: Search) -> Search:
        """Phase 2 (N&W Algorithm 3.6): shrink the bracket around a trial step inside it."""
        low, high = search.low, search.high
        new, grad = self.evaluate(zoom_trial(search))
        decrease, curvature, good = self.judge(new)
        better = (decrease <= self.tol) & (new.value < search.safe.value)
        safe, safe_grad = _pick(better, (new, grad), (search.safe, search.safe_grad))
        high_is_new = (decrease > 0.0) | (new.value >= low.value)
        high_is_low = (new.slope * (high.stepsize - low.stepsize) >= 0.0) & ~high_is_new
        new_high = _pick(high_is_new, new, _pick(high_is_low, low, high))
        new_low = _pick(high_is_new, low, new)
        cubic_ref = _pick(high_is_new | high_is_low, high, low)
        too_small = jnp.abs(high.stepsize - low.stepsize) <= self.stepsize_precision
        stuck = too_small & (safe.stepsize > 0.0)
        return self._next(
            search, new, grad, decrease, curvature, search.interval_found, good, stuck,
            new_low, new_high, cubic_ref, safe, safe_grad,
        )  # fmt: skip

    def _next(self, search, new, grad, decrease, curvature, found, done, stuck, low, high, ref, safe, safe_grad):
        """The next loop state; ``failed`` when the steps run out (or the search is
        ``stuck``) before it is ``done``."""
        out_of_steps = search.evaluations + 1 >= self.max_steps
        failed = (out_of_steps | stuck) & ~done
        return Search(
            safe_increment(search.evaluations), new, grad, decrease, curvature,
            jnp.asarray(found), jnp.asarray(done), jnp.asarray(failed), low, high, ref, safe, safe_grad,
        )  # fmt: skip

    def fall_back(self, search: Search) -> Search:
        """On failure, the safe step (sufficient decrease, if one was found), or it even
        without one when the last step left the objective's domain (inf or NaN)."""
        use_safe = (search.safe.stepsize > 0.0) | jnp.isinf(search.decrease_error)
        last, grad = _pick(use_safe, (search.safe, search.safe_grad), (search.last, search.grad))
        return search._replace(last=search.last._replace(stepsize=last.stepsize, value=last.value), grad=grad)

    def step(self, search: Search, stepsize_guess) -> Search:
        """One evaluation: bracketing until a bracket is found, then zooming."""
        new = jax.lax.cond(search.interval_found, self.zoom, lambda s: self.bracket(s, stepsize_guess), search)
        new = jax.lax.cond(new.failed, self.fall_back, lambda s: s, new)
        return _cast_like(new, search)

    @staticmethod
    def running(search: Search) -> jax.Array:
        return ~(search.done | search.failed)


def _report_failure(search: Search) -> None:
    jax.lax.cond(
        search.failed,
        lambda: jax.debug.print(
            "gradtx.scale_by_zoom_linesearch: no step size satisfies the Wolfe conditions "
            "(decrease error {d}, curvature error {c}); taking step size {s}",
            d=search.decrease_error,
            c=search.curvature_error,
            s=search.last.stepsize,
            ordered=True,
        ),
        lambda: None,
    )


def _scalar(value, dtype):
    return lambda params: jnp.asarray(value, value_dtype(params) if dtype is None else dtype)


@declare
def scale_by_zoom_linesearch(
    max_linesearch_steps: Steps,
    max_learning_rate: Optional[Positive] = None,
    tol: NonNegative = 0.0,
    increase_factor: AtLeastOne = 2.0,
    slope_rtol: DecayBelowOne = 1e-4,
    curv_rtol: Positive = 0.9,
    approx_dec_rtol: Optional[NonNegative] = 1e-6,
    stepsize_precision: NonNegative = 1e-5,
    initial_guess_strategy: Annotated[str, OneOf(("keep", "one"))] = "keep",
    verbose: bool = False,
) -> Transformation:
    """``u -> eta u``, ``eta`` satisfying the strong Wolfe conditions along ``u`` (zoom search).

    The conditions, with ``f`` the objective (``value_fn``), ``p`` the params and
    ``slope_0 = Re <grad f(p), u>`` (``c1 = slope_rtol``, ``c2 = curv_rtol``, up to ``tol``)::

        f(p + eta u) <= f(p) + c1 eta slope_0                    (sufficient decrease)
        |Re <grad f(p + eta u), u>| <= c2 |slope_0|               (curvature)

    Nocedal and Wright's Algorithms 3.5 and 3.6 (Numerical Optimization, 1999), as optax:
    starting from 1 (``initial_guess_strategy="one"``) or the previous step size
    (``"keep"``), the step grows by ``increase_factor`` (up to ``max_learning_rate``)
    until a bracket holds a good step, which the zoom then finds by cubic, else quadratic,
    else bisection interpolation. Near a minimum, where rounding defeats the decrease
    condition, Hager and Zhang's approximate decrease (CG_DESCENT, 2006) is accepted too
    (``approx_dec_rtol``; ``None``: Armijo only). After ``max_linesearch_steps``
    evaluations, or when the bracket is shorter than ``stepsize_precision``, it falls back
    on the best step with sufficient decrease. ``verbose`` prints when it fails.

    ``update`` needs ``params`` and the keyword arguments ``value`` (``f(p)``), ``grad``
    (``grad f(p)``) and ``value_fn`` (``f``; further keyword arguments go to it).

    State: ``learning_rate, value, grad, num_linesearch_steps, decrease_error,
    curvature_error`` (optax's names: the accepted step size, ``f`` and its gradient
    there, for ``optax.value_and_grad_from_state``, and how the last search went: its
    evaluations and by how much the step misses each condition, 0 when it holds; optax
    nests the last three in ``info``).
    """

    def apply(updates, state, step):
        obj = objective(step)
        dtype = value_dtype(obj.params)
        wolfe = Wolfe(slope_rtol, curv_rtol, approx_dec_rtol, obj.value, slope(obj.grad, updates))
        search = ZoomSearch(
            obj, updates, wolfe, max_linesearch_steps, max_learning_rate, tol, increase_factor, stepsize_precision
        )
        guess = 1.0 if initial_guess_strategy == "one" else state["learning_rate"]
        start, guess = search.start(guess, dtype)
        final = jax.lax.while_loop(search.running, lambda s: search.step(s, guess), start)
        if verbose:
            _report_failure(final)
        new = {
            "learning_rate": final.last.stepsize,
            "value": final.last.value,
            "grad": final.grad,
            "num_linesearch_steps": final.evaluations,
            "decrease_error": final.decrease_error,
            "curvature_error": final.curvature_error,
        }
        return _scaled(updates, final.last.stepsize), _cast_like(new, state)

    return primitive(
        apply,
        {
            "learning_rate": Field(_scalar(1.0, None), like_params=False),
            "value": Field(_scalar(jnp.inf, None), like_params=False),
            "grad": lambda params: jax.tree.map(jnp.zeros_like, params),
            "num_linesearch_steps": Field(lambda params: jnp.asarray(0), like_params=False),
            "decrease_error": Field(lambda params: jnp.asarray(jnp.inf), like_params=False),
            "curvature_error": Field(lambda params: jnp.asarray(jnp.inf), like_params=False),
        },
    )


# --- the backtracking line search (Armijo's condition) -------------------------------------

Fraction = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True, high_open=True)]
BacktrackingSteps = Annotated[int, Interval(0.0)]


class Backtrack(NamedTuple):
    """The backtracking search's loop state: the step size tried last, ``f`` there (and
    its gradient, with ``store_grad``), how far it misses the decrease condition, and the
    evaluations so far."""

    stepsize: jax.Array
    value: jax.Array
    grad: Any
    decrease_error: jax.Array
    evaluations: jax.Array


@declare
def scale_by_backtracking_linesearch(
    max_backtracking_steps: BacktrackingSteps,
    slope_rtol: Fraction = 1e-4,
    decrease_factor: Fraction = 0.8,
    increase_factor: AtLeastOne = 1.5,
    max_learning_rate: Positive = 1.0,
    atol: NonNegative = 0.0,
    rtol: NonNegative = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> Transformation:
    """``eta = eta_0 d^k, least k: f(p + eta u) <= (1 + rtol) f(p) + c eta slope_0 + atol; u -> eta u``.

    The sufficient decrease (Armijo) condition, with ``f`` the objective (``value_fn``),
    ``p`` the params, ``slope_0 = Re <grad f(p), u>``, ``c = slope_rtol``,
    ``d = decrease_factor`` and ``eta_0 = min(increase_factor eta_prev, max_learning_rate)``
    (``eta_prev``: the previous step size, 1 at first) (Nocedal and Wright, Numerical
    Optimization, 1999, eq. 3.4 and Algorithm 3.1; Vaswani et al., Painless Stochastic
    Gradient, https://arxiv.org/abs/1905.09997), as optax: starting from the previous
    step size times ``increase_factor`` (at most ``max_learning_rate``), the step shrinks
    by ``decrease_factor`` until the condition holds or ``max_backtracking_steps``
    reductions are spent (then the last one is kept; 0 when ``f`` was inf or NaN there).
    ``u`` must be a descent direction (``slope_0 < 0``), as after ``sgd``. ``verbose``
    prints when it fails.

    ``update`` needs ``params`` and the keyword arguments ``value`` (``f(p)``), ``grad``
    (``grad f(p)``) and ``value_fn`` (``f``; further keyword arguments go to it).

    State: ``learning_rate, value, num_linesearch_steps, decrease_error`` and, with
    ``store_grad``, ``grad`` (optax's names: the accepted step size, ``f`` and its
    gradient there, for ``optax.value_and_grad_from_state``, and how the last search
    went: its evaluations and by how much the step misses the condition, 0 when it holds;
    optax nests the last two in ``info``).
    """

    def decrease_error(stepsize, slope_0, value, new_value):
        return _violation(new_value - (1.0 + rtol) * value - stepsize * slope_rtol * slope_0)

    def apply(updates, state, step):
        obj = objective(step)
        dtype = value_dtype(obj.params)
        slope_0 = slope(obj.grad, updates)

        def body(search: Backtrack) -> Backtrack:
            stepsize = jnp.where(search.evaluations > 0, decrease_factor * search.stepsize, search.stepsize)
            params = tree_add_scale(obj.params, stepsize, updates)
            grad = search.grad
            if store_grad:  # the gradient only at the last evaluation, by transposing f's linearization
                value, linear = jax.linearize(obj.value_only, params)
                error = decrease_error(stepsize, slope_0, obj.value, value)
                last = (error <= atol) | (search.evaluations == max_backtracking_steps)
                grad = jax.lax.cond(
                    last, lambda p: jax.linear_transpose(linear, p)(jnp.ones_like(value))[0], lambda p: grad, params
                )
            else:
                value = obj.value_only(params)
                error = decrease_error(stepsize, slope_0, obj.value, value)
            return _cast_like(Backtrack(stepsize, value, grad, error, search.evaluations + 1), search)

        def running(search: Backtrack) -> jax.Array:
            return ~(search.decrease_error <= atol) & (search.evaluations <= max_backtracking_steps)

        guess = jnp.minimum(increase_factor * state["learning_rate"], max_learning_rate)
        zeros = jax.tree.map(jnp.zeros_like, obj.params) if store_grad else None
        start = Backtrack(guess, jnp.asarray(obj.value), zeros, jnp.asarray(jnp.inf, dtype), jnp.asarray(0))
        final = jax.lax.while_loop(running, body, start)
        if verbose:
            _report_backtracking_failure(final, atol)
        stepsize = jnp.where(jnp.isinf(final.decrease_error), 0.0, final.stepsize)
        new = {
            "learning_rate": stepsize,
            "value": final.value,
            "num_linesearch_steps": final.evaluations,
            "decrease_error": final.decrease_error,
        }
        if store_grad:
            new["grad"] = final.grad
        return _scaled(updates, stepsize), _cast_like(new, state)

    fields: dict[str, Any] = {
        "learning_rate": Field(_scalar(1.0, None), like_params=False),
        "value": Field(_scalar(jnp.inf, None), like_params=False),
        "num_linesearch_steps": Field(lambda params: jnp.asarray(0), like_params=False),
        "decrease_error": Field(_scalar(jnp.inf, None), like_params=False),
    }
    if store_grad:
        fields["grad"] = lambda params: jax.tree.map(jnp.zeros_like, params)
    return primitive(apply, fields)


def _report_backtracking_failure(search: Backtrack, atol) -> None:
    jax.lax.cond(
        search.decrease_error > atol,
        lambda: jax.debug.print(
            "gradtx.scale_by_backtracking_linesearch: no step size ensures sufficient decrease "
            "(decrease error {d}); taking step size {s}",
            d=search.decrease_error,
            s=jnp.where(jnp.isinf(search.decrease_error), 0.0, search.stepsize),
            ordered=True,
        ),
        lambda: None,
    )
