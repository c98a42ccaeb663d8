"""Wrappers around a whole optimizer: injected hyperparameters, gradient accumulation, skipping non-finite or large updates, conditional transformations, flattening.

Each wrapper keeps the inner transformation's state whole in one field with optax's name
(``inner_state``; ``inner_opt_state`` for ``MultiSteps``), beside its own fields, in one
record named after the call (``InjectHyperparamsState(count, hyperparams, inner_state)``),
so that ``optax.tree.get(state, "mu")`` finds the inner fields and optax checkpoints map
field by field. The inner transformation may be a gradtx or an optax one. Where optax falls
short, gradtx does not (each a test in ``tests/test_wrappers.py``):

- ``inject_hyperparams`` keeps its hyperparameters in float32 (or wider) when the params
  are bfloat16 (optax stores them in the params' dtype, #1414), and wrapping does not change
  the trajectory: ``inject_hyperparams(adam)(learning_rate=lr)`` is ``adam(lr)`` bit for bit;
- ``apply_if_finite`` restarts its count of consecutive non-finite updates when it gives up
  and applies one (optax keeps counting, and then applies every non-finite update that
  follows);
- ``MultiSteps`` runs the inner optimizer only at the step that emits (optax runs it at
  every micro-step and selects, which costs the inner update's memory each time, #472), and
  keeps one accumulator, in at least float32.
"""  # noqa: E501 - the summary line is wider than 120 columns

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import numbers
import typing
from typing import Annotated, Any, Callable, Iterable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from gradtx import _tree, hyperparams
from gradtx.base import GradientTransformation, Params, Schedule, UpdateError, Updates
from gradtx.hyperparams import AccumulatorDtype, InexactDtype, _fail, constraint_of
from gradtx.numerics import abs_sq, real_dtype, running_mean, safe_increment, zero_count
from gradtx.transform import (
    _BUILDING,
    Field,
    Step,
    Transformation,
    declare,
    named,
    primitive,
    record_type,
    update_inner,
)

__all__ = [
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "WrappedSchedule",
    "apply_every",
    "apply_if_finite",
    "conditionally_mask",
    "conditionally_transform",
    "flatten",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "multi_steps",
    "skip_large_updates",
    "skip_not_finite",
]


# --- argument types ------------------------------------------------------------------------


_Integer = hyperparams.Integer  # (the names the wrapper modules import)
_IsTransformation = hyperparams.IsTransformation


@dataclasses.dataclass(frozen=True)
class _IsCallable:
    """A function (``None`` allowed where the type says ``Optional``)."""

    def check(self, call: str, name: str, value: Any) -> None:
        if not callable(value):
            _fail(call, name, value, f"a function, got {type(value).__name__}", TypeError)


Inner = Annotated[GradientTransformation, _IsTransformation()]
StepsOrSchedule = Annotated[Union[int, Callable[[jax.Array], Any]], _Integer(1, schedule=True)]
"""A number of steps >= 1, or a schedule ``gradient_step -> steps``."""
PositiveSteps = Annotated[ArrayLike, _Integer(1)]
ErrorCount = Annotated[int, _Integer(0)]


class ShouldSkipUpdateFunction(Protocol):
    """``(updates, gradient_step, params) -> (should_skip, skip_state)``: whether
    ``MultiSteps`` drops this micro-step (a bool scalar), and what to keep in its state's
    ``skip_state`` (debugging info, any pytree). optax's protocol of the same name."""

    def __call__(
        self, updates: Updates, gradient_step: ArrayLike, params: Optional[Params]
    ) -> tuple[ArrayLike, Any]: ...


class ConditionFn(Protocol):
    """``(step, **extra) -> bool``: whether ``conditionally_transform`` / ``conditionally_mask``
    run the inner transformation at this step (``step`` counts the calls before this one)."""

    def __call__(self, step: ArrayLike, **extra_args: Any) -> ArrayLike: ...


# --- shared helpers ------------------------------------------------------------------------


def _zeros(tree: Any) -> Any:
    return jax.tree.map(jnp.zeros_like, tree)


def _keep_dtypes(new: Any, old: Any) -> Any:
    """``new`` with each leaf in ``old``'s dtype: a wrapper's inner state keeps the dtypes
    ``init`` gave it whatever the hyperparameters' dtypes (so that it can be a ``lax.cond``
    branch, a ``lax.scan`` carry, and a jit argument that does not retrace)."""

    def cast(n, o):
        if not (hasattr(n, "dtype") and hasattr(o, "dtype")) or n.dtype == o.dtype:
            return n
        if jnp.issubdtype(o.dtype, jax.dtypes.extended):  # a PRNG key: no astype
            return n
        return jnp.asarray(n).astype(o.dtype)

    try:
        return jax.tree.map(cast, new, old)
    except ValueError:  # another structure: the inner transformation's own business
        return new


def _like_updates(out: Any, updates: Any) -> Any:
    """The inner transformation's output in the incoming updates' dtypes (where it has
    their structure): updates keep the gradients' dtype."""
    try:
        return _tree.cast_like(out, updates)
    except ValueError:
        return out


def _all_finite(updates: Updates) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(updates)]))


def _run_or(
    condition: Any, inner: GradientTransformation, updates, inner_state, step: Step, otherwise: Callable[[], Any]
):
    """``inner(updates)`` when ``condition``, else ``(otherwise(), inner_state)``, as one
    ``lax.cond``; the inner state and the output keep their dtypes, so both branches agree."""

    def run(_):
        out, new = update_inner(inner, updates, inner_state, step)
        return _like_updates(out, updates), _keep_dtypes(new, inner_state)

    return jax.lax.cond(condition, run, lambda _: (otherwise(), inner_state), None)


def _name_of(factory: Any) -> str:
    return getattr(factory, "__name__", type(factory).__name__)


# --- inject_hyperparams ------------------------------------------------------------------


InjectHyperparamsState = record_type("inject_hyperparams", ("count", "hyperparams", "inner_state"))
InjectHyperparamsState.__doc__ = (
    "The state of ``gradtx.inject_hyperparams``: ``count`` (the steps taken), ``hyperparams`` (a dict "
    "name -> value, in the hyperparameter dtype) and ``inner_state``."
)
InjectStatefulHyperparamsState = record_type(
    "inject_stateful_hyperparams", ("count", "hyperparams", "hyperparams_states", "inner_state")
)
InjectStatefulHyperparamsState.__doc__ = (
    "The state of ``gradtx.inject_stateful_hyperparams``: ``count``, ``hyperparams``, "
    "``hyperparams_states`` (each stateful schedule's state) and ``inner_state`` (optax's layout)."
)


class WrappedScheduleState(NamedTuple):
    """The state of a ``WrappedSchedule``: the steps taken."""

    count: Any


class WrappedSchedule:
    """``state -> schedule(state.count)``: a stateless schedule as a stateful one (optax's).

    ``init() -> WrappedScheduleState(count=0)``, ``update(state) -> count + 1`` (saturating);
    ``inject_stateful_hyperparams`` wraps every plain schedule it gets in one.

    >>> import gradtx
    >>> s = gradtx.WrappedSchedule(lambda count: 0.5 ** count)
    >>> state = s.update(s.update(s.init()))
    >>> float(s(state))
    0.25
    """

    def __init__(self, schedule_fn: Schedule):
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=zero_count())

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        return WrappedScheduleState(count=safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> ArrayLike:
        return self.schedule_fn(state.count)


def _is_stateful_schedule(value: Any) -> bool:
    return callable(value) and callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))


def _mentions_callable(hint: Any) -> bool:
    """Whether a type hint says the argument may be a function (``Callable``, ``MaskOrFn``)."""
    if typing.get_origin(hint) is Annotated:
        return _mentions_callable(typing.get_args(hint)[0])
    if typing.get_origin(hint) is collections.abc.Callable:
        return True
    return any(_mentions_callable(a) for a in typing.get_args(hint))


def _argument_kinds(factory: Callable) -> tuple[set[str], set[str]]:
    """The arguments of a gradtx factory that take functions by nature (a mask, a join: a
    function passed there is the argument itself, not a schedule), and those that take
    schedules (a learning rate). For other factories, optax's rule holds: every function
    is a schedule unless ``static_args`` names it, and none is passed on as a schedule."""
    if not getattr(factory, "__module__", "").startswith("gradtx"):
        return set(), set()
    try:
        hints = typing.get_type_hints(factory, include_extras=True)
    except Exception:  # noqa: BLE001 - hints that do not resolve: optax's rule
        return set(), set()
    functions, schedules = set(), set()
    for name, hint in hints.items():
        constraint, _ = constraint_of(hint)
        if constraint is None and _mentions_callable(hint):
            functions.add(name)
        elif getattr(constraint, "schedule", False):
            schedules.add(name)
    return functions, schedules


def _hyperparam_dtype(tree: Any, hyperparam_dtype: Optional[DTypeLike]) -> Any:
    """``hyperparam_dtype``, else the widest real dtype of ``tree``'s floating leaves but at
    least float32 (optax takes the params' dtype, bfloat16 for bfloat16 params: #1414)."""
    if hyperparam_dtype is not None:
        return jnp.dtype(hyperparam_dtype)
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(tree):
        leaf_dtype = jnp.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype
        if jnp.issubdtype(leaf_dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, real_dtype(leaf_dtype))
    return dtype


def _as_hyperparam(value: Any, dtype: Any) -> jax.Array:
    """A numeric hyperparameter as the state keeps it: floats in ``dtype``, the rest as arrays."""
    array = jnp.asarray(value)
    floating = jnp.issubdtype(array.dtype, jnp.floating) and jnp.issubdtype(dtype, jnp.floating)
    return array.astype(dtype) if floating else array


def _is_numeric(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (numbers.Number, np.number, np.ndarray, jax.Array))


class _Split(NamedTuple):
    """The arguments of an injected call, by what the state does with them."""

    numeric: dict[str, Any]  # kept in ``state.hyperparams``, changeable between steps
    schedules: dict[str, Any]  # recomputed at every step (and kept in ``state.hyperparams``)
    static: dict[str, Any]  # passed as they are (bools, strings, functions named static, None)


def _split(
    where: str,
    factory_name: str,
    signature: inspect.Signature,
    static_args: set[str],
    functions: set[str],
    args,
    kwargs,
) -> _Split:
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for name, value in kwargs.items():
        if name not in parameters and not takes_any:
            raise TypeError(
                f"gradtx.{where}({name}={value!r}): {factory_name} has no argument {name!r} "
                f"(its arguments: {', '.join(parameters) or 'none'})"
            )
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"gradtx.{where}: {e}") from None
    bound.apply_defaults()
    split = _Split({}, {}, {})
    for name, value in bound.arguments.items():
        if name in static_args or name in functions or isinstance(value, (bool, np.bool_, str)) or value is None:
            split.static[name] = value
        elif callable(value):
            split.schedules[name] = value
        elif _is_numeric(value):
            split.numeric[name] = value
        else:
            split.static[name] = value
    return split


def _build(factory: Callable, static: dict, hyperparams: dict) -> GradientTransformation:
    """The inner transformation for this step's hyperparameters (checked once, at the
    user's call: not again here, where they are traced or already checked)."""
    token = _BUILDING.set(_BUILDING.get() + 1)
    try:
        return factory(**static, **hyperparams)
    finally:
        _BUILDING.reset(token)


def _injector(call: str, inner_factory: Callable, static_args, hyperparam_dtype, *, stateful: bool) -> Callable:
    if not callable(inner_factory):
        raise TypeError(
            f"gradtx.{call}(inner_factory={inner_factory!r}): inner_factory must be a function returning a "
            f"gradient transformation, got {type(inner_factory).__name__}"
        )
    if hyperparam_dtype is not None:
        InexactDtype().check(call, "hyperparam_dtype", hyperparam_dtype)
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    factory_name = _name_of(inner_factory)
    unknown = sorted(static - set(signature.parameters))
    if unknown:
        raise ValueError(
            f"gradtx.{call}(static_args={static_args!r}): static_args must name arguments of {factory_name}; "
            f"it has no {unknown[0]!r} (its arguments: {', '.join(signature.parameters) or 'none'})"
        )
    functions, takes_schedules = _argument_kinds(inner_factory)
    where = f"{call}({factory_name})"

    @functools.wraps(inner_factory)
    def injected(*args: Any, **kwargs: Any) -> Transformation:
        split = _split(where, factory_name, signature, static, functions, args, kwargs)
        if not stateful:
            for name, value in split.schedules.items():
                if _is_stateful_schedule(value):
                    raise TypeError(
                        f"gradtx.{where}({name}={value!r}): {name} is a stateful schedule (init, update): "
                        f"use gradtx.inject_stateful_hyperparams, whose state keeps the schedules' states"
                    )
        schedules: dict[str, Any] = {
            k: (WrappedSchedule(f) if stateful and not _is_stateful_schedule(f) else f)
            for k, f in split.schedules.items()
        }
        # check the values the user passed now, once (a declared factory checks its arguments;
        # schedules by their first value)
        first = {k: (f(f.init()) if stateful else f(0)) for k, f in schedules.items()}
        inner_factory(**split.static, **split.numeric, **first)

        # a schedule for an argument that takes schedules (a gradtx learning rate) goes to the
        # inner factory as it is: the inner evaluates it where the unwrapped optimizer does, so
        # the numbers are the same to the bit (XLA evaluates exp, cos, ... differently inside
        # and outside a fusion); state.hyperparams shows its value at each step
        passed_on = {} if stateful else {k: f for k, f in schedules.items() if k in takes_schedules}

        def build(hyperparams: dict[str, Any]) -> GradientTransformation:
            values = {k: v for k, v in hyperparams.items() if k not in passed_on}
            return _build(inner_factory, {**split.static, **passed_on}, values)

        def values_at(count, schedule_states, dtype, extra) -> dict[str, jax.Array]:
            if stateful:
                return {k: _as_hyperparam(f(schedule_states[k], **extra), dtype) for k, f in schedules.items()}
            return {k: _as_hyperparam(f(count), dtype) for k, f in schedules.items()}

        def initial_states(params) -> dict[str, Any]:
            return {k: f.init() for k, f in schedules.items()} if stateful else {}

        def initial_hyperparams(params) -> dict[str, jax.Array]:
            dtype = _hyperparam_dtype(params, hyperparam_dtype)
            hyperparams = {k: _as_hyperparam(v, dtype) for k, v in split.numeric.items()}
            hyperparams.update(values_at(zero_count(), initial_states(params), dtype, {}))
            return hyperparams

        def initial_inner_state(params) -> Any:
            return build(initial_hyperparams(params)).init(params)

        def apply(updates, state, step: Step):
            kept = state["hyperparams"]
            if set(kept) != set(split.numeric) | set(schedules):
                raise UpdateError(
                    f"state.hyperparams has the keys {sorted(kept)}, not the injected hyperparameters "
                    f"{sorted(set(split.numeric) | set(schedules))} (change values, not keys)"
                )
            # the dtypes init chose stay (a Python float put in the state gets the default's)
            default = _hyperparam_dtype(updates, hyperparam_dtype)
            dtypes = {k: getattr(v, "dtype", default) for k, v in kept.items()}
            hyperparams = {k: _as_hyperparam(kept[k], dtypes[k]) for k in split.numeric}
            states = state.get("hyperparams_states", {})
            scheduled = values_at(step.count, states, default, step.extra)
            hyperparams.update({k: _as_hyperparam(v, dtypes[k]) for k, v in scheduled.items()})
            inner = build(hyperparams)
            out, inner_state = update_inner(inner, updates, state["inner_state"], step)
            new = {"hyperparams": hyperparams, "inner_state": _keep_dtypes(inner_state, state["inner_state"])}
            if stateful:
                new["hyperparams_states"] = {k: f.update(states[k], **step.extra) for k, f in schedules.items()}
            return _like_updates(out, updates), new

        fields = {"hyperparams": Field(initial_hyperparams, like_params=False)}
        if stateful:
            fields["hyperparams_states"] = Field(initial_states, like_params=False)
        fields["inner_state"] = Field(initial_inner_state, like_params=False)
        return named(call, primitive(apply, fields, uses_count=True))

    injected.__doc__ = f"``{factory_name}`` with its numeric hyperparameters injected (``gradtx.{call}``)."
    return injected


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[DTypeLike] = None,
) -> Callable[..., Transformation]:
    """``factory(**hyperparams)`` rebuilt at every step from ``state.hyperparams``: hyperparameters in the state.

    ``inject_hyperparams(gradtx.adam)(learning_rate=1e-3, b1=schedule)`` is a transformation
    whose state is ``InjectHyperparamsState(count, hyperparams, inner_state)``:
    ``hyperparams`` is a dict of the numeric arguments and of each schedule's value at this
    step (``schedule(count)``), which you can read (log the learning rate) and change between
    steps without recompiling: ``state.hyperparams["learning_rate"] = jnp.asarray(5e-4,
    jnp.float32)`` (a Python float works too, but as a weakly typed scalar it retraces a
    jitted step once), or ``state._replace(hyperparams={**state.hyperparams, ...})``. Bools,
    strings, ``None`` and the arguments named in ``static_args`` are passed as they are;
    other functions are schedules (but a gradtx factory's function arguments, a ``mask``,
    are the functions themselves: optax needs them in ``static_args``). Stateful schedules
    (``init``/``update``) go to ``inject_stateful_hyperparams``.

    Where optax differs: the hyperparameters are kept in ``hyperparam_dtype``, or else in the
    params' widest real dtype but at least float32 (optax keeps them in the params' dtype,
    so bfloat16 params store ``1e-3`` as 0.000999, #1414); the inner state keeps the dtypes
    ``init`` gave it; and wrapping does not change the numbers: ``inject_hyperparams(adam)
    (learning_rate=lr)`` is ``adam(lr)`` bit for bit (#1532, #583). For that, a schedule
    given for an argument that takes schedules (a gradtx learning rate) goes to the inner
    factory as it is, to be evaluated where the unwrapped optimizer evaluates it (XLA
    computes ``exp`` or ``cos`` differently inside and outside a fused loop);
    ``state.hyperparams`` shows its value at each step. As in optax, changing a scheduled
    hyperparameter in the state has no effect.

    A new learning rate without recompiling, without a wrapper: build the optimizer inside
    the jitted step from a traced learning rate. gradtx checks hyperparameters when they are
    concrete and skips traced ones, and the state's structure does not depend on their
    values, so one compiled step serves every value::

        @jax.jit
        def step(params, state, grads, lr):
            tx = gradtx.adam(lr)
            updates, state = tx.update(grads, state, params)
            return gradtx.apply_updates(params, updates), state

    (``state = gradtx.adam(0.0).init(params)`` once, outside.)

    Args:
      inner_factory: a function returning a gradient transformation (``gradtx.adam``, or an
        optax factory).
      static_args: the names of arguments to pass as they are (functions that are not schedules).
      hyperparam_dtype: the dtype of the floating hyperparameters in the state.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
    >>> state = tx.init(jnp.zeros(2))
    >>> state.hyperparams["learning_rate"] = jnp.asarray(0.5, jnp.float32)
    >>> updates, state = tx.update(jnp.ones(2), state)
    >>> updates, type(state).__name__
    (Array([-0.5, -0.5], dtype=float32), 'InjectHyperparamsState')
    """
    return _injector("inject_hyperparams", inner_factory, static_args, hyperparam_dtype, stateful=False)


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[DTypeLike] = None,
) -> Callable[..., Transformation]:
    """``inject_hyperparams`` that takes stateful schedules: ``value = schedule(s, **extra) ; s = schedule.update(s, **extra)``.

    A stateful schedule has ``init() -> s``, ``update(s, **extra) -> s`` and ``__call__(s,
    **extra) -> value``; the extra keyword arguments of ``update`` reach it (a learning rate
    that follows the loss: ``update(grads, state, params, value=loss)``). Plain schedules are
    wrapped in ``WrappedSchedule``. The state is optax's:
    ``InjectStatefulHyperparamsState(count, hyperparams, hyperparams_states, inner_state)``.
    optax 0.2.8 deprecates this name and builds this state in ``inject_hyperparams`` too;
    gradtx keeps the two apart, so that ``inject_hyperparams``' state has no per-schedule
    counts (its schedules read the record's one ``count``).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=lambda count: 0.1 * (count + 1))
    >>> state = tx.init(jnp.zeros(1))
    >>> _, state = tx.update(jnp.ones(1), state)
    >>> updates, state = tx.update(jnp.ones(1), state)
    >>> round(float(updates[0]), 6), int(state.hyperparams_states["learning_rate"].count)
    (-0.2, 2)
    """  # noqa: E501 - the formula line
    return _injector("inject_stateful_hyperparams", inner_factory, static_args, hyperparam_dtype, stateful=True)


# --- gradient accumulation -----------------------------------------------------------------


def skip_not_finite(updates: Updates, gradient_step: ArrayLike, params: Optional[Params]) -> tuple[jax.Array, dict]:
    """``should_skip = (number of inf and NaN in updates) > 0``: a ``ShouldSkipUpdateFunction``.

    Returns ``(should_skip, {"should_skip": ..., "num_not_finite": ...})`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> skip, info = gradtx.skip_not_finite({"w": jnp.array([1.0, jnp.nan])}, 0, None)
    >>> bool(skip), int(info["num_not_finite"])
    (True, 1)
    """
    counts = [jnp.sum(jnp.logical_not(jnp.isfinite(x))) for x in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts))
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Updates, gradient_step: ArrayLike, params: Optional[Params], max_squared_norm: ArrayLike
) -> tuple[jax.Array, dict]:
    """``should_skip = not (||updates||^2 < max_squared_norm)`` (NaN skips): a ``ShouldSkipUpdateFunction``
    once ``max_squared_norm`` is bound (``functools.partial``).

    Returns ``(should_skip, {"should_skip": ..., "norm_squared": ...})`` (optax's; ``|u|^2``
    is real for complex updates, where optax's ``u**2`` is not).

    >>> import functools, jax.numpy as jnp, gradtx
    >>> skip, info = gradtx.skip_large_updates(jnp.array([3.0, 4.0]), 0, None, max_squared_norm=20.0)
    >>> bool(skip), float(info["norm_squared"])
    (True, 25.0)
    """
    norm_sq = jnp.sum(jnp.array([jnp.sum(abs_sq(x)) for x in jax.tree.leaves(updates)]))
    should_skip = jnp.logical_not(norm_sq < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


MultiStepsState = record_type(
    "multi_steps", ("mini_step", "gradient_step", "inner_opt_state", "acc_grads", "skip_state")
)
MultiStepsState.__doc__ = (
    "The state of ``gradtx.multi_steps`` / ``MultiSteps``: ``mini_step`` (micro-steps accumulated, "
    "0 after each emit), ``gradient_step`` (inner steps taken), ``inner_opt_state``, ``acc_grads`` "
    "(the accumulator) and ``skip_state`` (what ``should_skip_update_fn`` returned; ``()`` without one)."
)


def _accumulator(params: Params, accumulator_dtype: Optional[DTypeLike]) -> Any:
    """Zeros shaped like the params, in ``accumulator_dtype`` or else the params' dtype but at
    least float32."""
    if accumulator_dtype is not None:
        return _tree.zeros_like(params, dtype=accumulator_dtype)
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.asarray(p).dtype, jnp.float32)), params)


def _no_skip(updates, gradient_step, params):
    return jnp.array(False), ()


@declare
def multi_steps(
    opt: Inner,
    every_k_schedule: StepsOrSchedule,
    use_grad_mean: bool = True,
    should_skip_update_fn: Optional[Annotated[ShouldSkipUpdateFunction, _IsCallable()]] = None,
    accumulator_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``acc = acc + (g - acc) / (n + 1)`` for ``k`` micro-steps, then ``u -> opt(acc)`` and ``acc = 0``: gradient accumulation.

    The micro-steps return zero updates; every ``k``-th (``k = every_k_schedule(gradient_step)``,
    a number or a schedule: a growing batch) runs the inner optimizer once, on the mean of
    the ``k`` gradients (their sum with ``use_grad_mean=False``), so ``k`` micro-batches of
    size ``B`` take the step one batch of ``k * B`` would. ``should_skip_update_fn`` drops
    a micro-step as if it never happened (``skip_not_finite``; ``functools.partial(
    skip_large_updates, max_squared_norm=...)``). The ``MultiSteps`` class is optax's API
    around this transformation.

    The state is optax's ``MultiStepsState(mini_step, gradient_step, inner_opt_state,
    acc_grads, skip_state)``: one accumulator and nothing else shaped like the params.
    Where optax differs: the inner optimizer runs only at the step that emits (optax runs it
    at every micro-step and keeps its result only at the last, #472); the accumulator is in
    ``accumulator_dtype``, by default the params' dtype but at least float32 (optax's default
    float32 loses float64 gradients and drops the imaginary part of complex ones).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.multi_steps(gradtx.sgd(1.0), every_k_schedule=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> first, state = tx.update(jnp.array([1.0]), state)
    >>> second, state = tx.update(jnp.array([3.0]), state)
    >>> first, second
    (Array([0.], dtype=float32), Array([-2.], dtype=float32))
    """  # noqa: E501 - the formula line
    every_k = every_k_schedule if callable(every_k_schedule) else (lambda gradient_step: every_k_schedule)
    should_skip = should_skip_update_fn if should_skip_update_fn is not None else _no_skip

    def accumulate(g, acc, n):
        return running_mean(acc, g, n) if use_grad_mean else g + acc

    def micro_step(updates, state, step: Step):
        k = every_k(state["gradient_step"])
        n = state["mini_step"]
        acc = jax.tree.map(lambda g, a: accumulate(g, a, n), updates, state["acc_grads"])
        emit = n == k - 1
        out, inner_state = _run_or(
            emit, opt, _tree.cast_like(acc, updates), state["inner_opt_state"], step, lambda: _zeros(updates)
        )
        return out, {
            "mini_step": safe_increment(n) % k,
            "gradient_step": jnp.where(emit, safe_increment(state["gradient_step"]), state["gradient_step"]),
            "inner_opt_state": inner_state,
            "acc_grads": jax.tree.map(lambda a, old: jnp.where(emit, 0, a).astype(old.dtype), acc, state["acc_grads"]),
        }

    def apply(updates, state, step: Step):
        skip, skip_state = should_skip(updates, state["gradient_step"], step.params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise UpdateError(
                f"should_skip_update_fn must return a bool scalar first, got an array of dtype {skip.dtype} "
                f"and shape {skip.shape}"
            )
        if should_skip_update_fn is None:
            out, new = micro_step(updates, state, step)
        else:
            kept = {k: state[k] for k in ("mini_step", "gradient_step", "inner_opt_state", "acc_grads")}
            out, new = jax.lax.cond(
                skip, lambda _: (_zeros(updates), kept), lambda _: micro_step(updates, state, step), None
            )
        return out, {**new, "skip_state": skip_state}

    def init_skip_state(params):
        return should_skip(_tree.zeros_like(params), zero_count(), params)[1]

    return primitive(
        apply,
        {
            "mini_step": Field(lambda params: zero_count(), like_params=False),
            "gradient_step": Field(lambda params: zero_count(), like_params=False),
            "inner_opt_state": Field(opt.init, like_params=False),
            "acc_grads": Field(lambda params: _accumulator(params, accumulator_dtype)),
            "skip_state": Field(init_skip_state, like_params=False),
        },
    )


class MultiSteps:
    """``MultiSteps(opt, every_k_schedule)``: optax's class API around ``gradtx.multi_steps`` (gradient accumulation).

    ``init``, ``update``, ``inner_opt``, ``has_updated(state)`` (whether the last ``update``
    ran the inner optimizer) and ``gradient_transformation()`` (the ``gradtx.multi_steps``
    transformation itself) as in optax; the arguments and the state are ``multi_steps``'
    (see there for the formula and where optax differs).

    >>> import jax.numpy as jnp, gradtx
    >>> ms = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
    >>> state = ms.init(jnp.zeros(1))
    >>> _, state = ms.update(jnp.array([1.0]), state)
    >>> bool(ms.has_updated(state))
    False
    >>> updates, state = ms.update(jnp.array([3.0]), state)
    >>> updates, bool(ms.has_updated(state))
    (Array([-2.], dtype=float32), True)
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: Union[int, Callable[[jax.Array], Any]],
        use_grad_mean: bool = True,
        should_skip_update_fn: Optional[ShouldSkipUpdateFunction] = None,
        accumulator_dtype: Optional[DTypeLike] = None,
    ):
        _IsTransformation().check("MultiSteps", "opt", opt)
        _Integer(1, schedule=True).check("MultiSteps", "every_k_schedule", every_k_schedule)
        if should_skip_update_fn is not None:
            _IsCallable().check("MultiSteps", "should_skip_update_fn", should_skip_update_fn)
        if accumulator_dtype is not None:
            InexactDtype().check("MultiSteps", "accumulator_dtype", accumulator_dtype)
        self._opt = opt
        self._transformation = multi_steps(
            opt, every_k_schedule, use_grad_mean, should_skip_update_fn, accumulator_dtype
        )

    @property
    def inner_opt(self) -> GradientTransformation:
        return self._opt

    def init(self, params: Params) -> Any:
        return self._transformation.init(params)

    def update(self, updates: Updates, state: Any, params: Optional[Params] = None, **extra_args: Any):
        return self._transformation.update(updates, state, params, **extra_args)

    def has_updated(self, state: Any) -> jax.Array:
        """Whether the last ``update`` ran the inner optimizer: ``mini_step == 0`` and ``gradient_step > 0``."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> Transformation:
        return self._transformation


@declare
def apply_every(k: PositiveSteps = 1) -> Transformation:
    """``acc = g + (t % k != 0) * acc ; u -> (t % k == k - 1) * acc``: sum ``k`` updates, emit every ``k``-th step.

    ``t`` counts the steps before this one. The other stages of a chain still run at every
    step (for the step one batch of ``k * B`` would take, wrap the whole optimizer in
    ``multi_steps``). State: ``count, grad_acc`` (optax's ``ApplyEvery``; optax keeps ``count
    % k``, gradtx the transformation's one step count, of which ``count % k`` is optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.apply_every(2)
    >>> state = tx.init(jnp.zeros(1))
    >>> first, state = tx.update(jnp.array([1.0]), state)
    >>> second, state = tx.update(jnp.array([3.0]), state)
    >>> first, second
    (Array([0.], dtype=float32), Array([4.], dtype=float32))
    """

    def apply(updates, state, step: Step):
        c = step.count % k
        grad_acc = jax.tree.map(lambda g, acc: (c != 0) * acc + g, updates, state["grad_acc"])
        emit = c == k - 1
        return jax.tree.map(lambda acc: emit * acc, grad_acc), {"grad_acc": grad_acc}

    return primitive(apply, {"grad_acc": _tree.zeros_like}, uses_count=True)


# --- skipping and conditions ---------------------------------------------------------------

ApplyIfFiniteState = record_type(
    "apply_if_finite", ("notfinite_count", "last_finite", "total_notfinite", "inner_state")
)
ApplyIfFiniteState.__doc__ = (
    "The state of ``gradtx.apply_if_finite``: ``notfinite_count`` (non-finite updates rejected since the last "
    "applied one), ``last_finite``, ``total_notfinite`` (never reset) and ``inner_state``."
)


@declare
def apply_if_finite(
    inner: Inner, max_consecutive_errors: ErrorCount, *, zero_nonfinite: bool = False
) -> Transformation:
    """``u -> inner(u)`` if ``u`` is finite or ``n > max_consecutive_errors`` (then ``n = 0``), else ``u -> 0`` (``zero_nonfinite``: ``u -> inner(where(isfinite(u), u, 0))``) and ``n = n + 1``.

    Rejects updates that contain an inf or a NaN (zero updates, the inner state left as it
    was), up to ``max_consecutive_errors`` in a row; the next non-finite one is applied
    (training gives up waiting), and the count of consecutive rejections ``n``
    (``notfinite_count``) starts again from 0. Where optax differs: optax does not restart
    the count when it gives up, so after the first give-up it applies *every* non-finite
    update that follows until a finite one (optax PR #1746, open); ``max_consecutive_errors``
    must be an integer >= 0 (optax takes anything).

    ``zero_nonfinite=True`` (gradtx's, keyword-only) keeps what is finite of a rejected
    update instead of dropping it all: ``u -> inner(where(isfinite(u), u, 0))``, the inner
    state moving on as for any update (a NaN or an inf component becomes a zero gradient
    there; ``zero_nans`` does it for NaNs only, and lets an inf through). The counts and
    the give-up are the same in both modes.

    State: ``notfinite_count, last_finite, total_notfinite, inner_state`` (optax's).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.apply_if_finite(gradtx.sgd(1.0), max_consecutive_errors=1)
    >>> state = tx.init(jnp.zeros(1))
    >>> steps = []
    >>> for g in [jnp.nan, jnp.nan, jnp.nan]:
    ...     updates, state = tx.update(jnp.array([g]), state)
    ...     steps.append((bool(jnp.isnan(updates[0])), int(state.notfinite_count)))
    >>> steps  # rejected, applied (gave up, count restarts), rejected
    [(False, 1), (True, 0), (False, 1)]
    """  # noqa: E501 - the formula line

    def apply(updates, state, step: Step):
        finite = _all_finite(updates)
        applied = jnp.logical_or(finite, safe_increment(state["notfinite_count"]) > max_consecutive_errors)
        if zero_nonfinite:
            kept = jax.tree.map(lambda u: jnp.where(applied | jnp.isfinite(u), u, jnp.zeros_like(u)), updates)
            out, inner_state = update_inner(inner, kept, state["inner_state"], step)
            out, inner_state = _like_updates(out, updates), _keep_dtypes(inner_state, state["inner_state"])
        else:
            out, inner_state = _run_or(applied, inner, updates, state["inner_state"], step, lambda: _zeros(updates))
        return out, {
            "notfinite_count": jnp.where(applied, jnp.zeros([], jnp.int32), safe_increment(state["notfinite_count"])),
            "last_finite": finite,
            "total_notfinite": jnp.where(finite, state["total_notfinite"], safe_increment(state["total_notfinite"])),
            "inner_state": inner_state,
        }

    return primitive(
        apply,
        {
            "notfinite_count": Field(lambda params: zero_count(), like_params=False),
            "last_finite": Field(lambda params: jnp.array(True, jnp.bool_), like_params=False),
            "total_notfinite": Field(lambda params: zero_count(), like_params=False),
            "inner_state": Field(inner.init, like_params=False),
        },
    )


ConditionallyTransformState = record_type("conditionally_transform", ("inner_state", "step"))
ConditionallyTransformState.__doc__ = (
    "The state of ``gradtx.conditionally_transform``: ``inner_state`` and ``step`` (the calls so far)."
)
ConditionallyMaskState = record_type("conditionally_mask", ("step", "inner_state"))
ConditionallyMaskState.__doc__ = (
    "The state of ``gradtx.conditionally_mask``: ``step`` (the calls so far) and ``inner_state``."
)


def _conditionally(inner, should_transform_fn, forward_extra_args: bool, otherwise, order: tuple[str, str]):
    def apply(updates, state, step: Step):
        condition = should_transform_fn(state["step"], **(step.extra if forward_extra_args else {}))
        out, inner_state = _run_or(condition, inner, updates, state["inner_state"], step, lambda: otherwise(updates))
        return out, {"inner_state": inner_state, "step": safe_increment(state["step"])}

    fields = {
        "step": Field(lambda params: zero_count(), like_params=False),
        "inner_state": Field(inner.init, like_params=False),
    }
    return primitive(apply, {name: fields[name] for name in order})


@declare
def conditionally_transform(
    inner: Inner, should_transform_fn: Annotated[ConditionFn, _IsCallable()], forward_extra_args: bool = False
) -> Transformation:
    """``u -> inner(u)`` when ``should_transform_fn(step)``, else ``u -> u`` (the inner state left as it was).

    ``step`` counts the calls of ``update`` before this one; with ``forward_extra_args`` the
    extra keyword arguments of ``update`` reach ``should_transform_fn`` too. State:
    ``inner_state, step`` (optax's). ``conditionally_mask`` zeroes the updates instead.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.conditionally_transform(gradtx.scale(10.0), lambda step: step % 2 == 1)
    >>> state = tx.init(jnp.zeros(1))
    >>> first, state = tx.update(jnp.ones(1), state)
    >>> second, state = tx.update(jnp.ones(1), state)
    >>> first, second
    (Array([1.], dtype=float32), Array([10.], dtype=float32))
    """
    return _conditionally(inner, should_transform_fn, forward_extra_args, lambda u: u, ("inner_state", "step"))


@declare
def conditionally_mask(
    inner: Inner, should_transform_fn: Annotated[ConditionFn, _IsCallable()], forward_extra_args: bool = False
) -> Transformation:
    """``u -> inner(u)`` when ``should_transform_fn(step)``, else ``u -> 0`` (the inner state left as it was).

    As ``conditionally_transform``, with zero updates where the condition does not hold.
    State: ``step, inner_state`` (optax's order).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.conditionally_mask(gradtx.scale(10.0), lambda step: step % 2 == 1)
    >>> state = tx.init(jnp.zeros(1))
    >>> first, state = tx.update(jnp.ones(1), state)
    >>> second, state = tx.update(jnp.ones(1), state)
    >>> first, second
    (Array([0.], dtype=float32), Array([10.], dtype=float32))
    """
    return _conditionally(inner, should_transform_fn, forward_extra_args, _zeros, ("step", "inner_state"))


# --- layouts -----------------------------------------------------------------------------


def _flat(tree: Any) -> Optional[jax.Array]:
    """Every leaf of ``tree`` raveled and concatenated into one vector (None for None)."""
    if tree is None:
        return None
    leaves = jax.tree.leaves(tree)
    return jnp.concatenate([jnp.reshape(x, [-1]) for x in leaves]) if leaves else jnp.zeros([0])


def _unflat(vector: jax.Array, like: Any) -> Any:
    """``vector`` cut back into the leaves of ``like``, each in its leaf's shape and dtype."""
    leaves, treedef = jax.tree.flatten(like)
    offsets = np.cumsum([np.size(x) for x in leaves])[:-1]
    parts = jnp.split(vector, offsets) if leaves else []
    return jax.tree.unflatten(
        treedef, [jnp.reshape(p, jnp.shape(x)).astype(jnp.asarray(x).dtype) for p, x in zip(parts, leaves)]
    )


@declare
def flatten(inner: Inner) -> Transformation:
    """``u -> unflatten(inner(concat(ravel(u_i))))``: run ``inner`` on one vector of all the leaves.

    Fewer, larger operations for a tree of many small leaves (at the cost of the
    concatenation); the inner state is kept for the vector. State: ``inner_state`` (optax's
    ``flatten`` returns the inner state itself, gradtx keeps it in its record like every
    wrapper, so ``optax.tree.get`` finds its fields by name in both). Each output leaf keeps
    its gradient's dtype (optax's takes the concatenation's widest dtype).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.flatten(gradtx.clip_by_global_norm(1.0))
    >>> params = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    >>> updates, state = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(params))
    >>> updates
    {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    def apply(updates, state, step: Step):
        flat_step = step._replace(params=_flat(step.params))
        out, inner_state = update_inner(inner, _flat(updates), state["inner_state"], flat_step)
        return _unflat(out, updates), {"inner_state": inner_state}

    return primitive(apply, {"inner_state": Field(lambda params: inner.init(_flat(params)), like_params=False)})
