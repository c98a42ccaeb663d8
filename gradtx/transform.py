"""Declared transformations and the optimizer state they keep.

The state design
----------------
An optimizer's state is one flat record of named fields, named after the math and after
optax where the quantity is the same::

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.adam(1e-3).init({"w": jnp.zeros(2)})
    AdamState(count=Array(0, dtype=int32), mu={'w': Array([0., 0.], dtype=float32)}, nu={'w': Array([0., 0.], dtype=float32)})

How it is wired inside does not show: Adam's direction is ``fork(chain(scale_by_ema,
bias_correct), chain(second_moment, bias_correct, sqrt_eps), join=divide)``, two stages
read the step count, and the state still has one ``count``. Re-wiring an optimizer
leaves its checkpoint format alone.

Stages
------
A transformation is built from *stages*. Each stage declares

- the state fields it keeps (``mu``), each with the function that initialises it from
  the params, and whether it is shaped like the params (then it is checked against the
  gradients before anything is computed);
- whether it reads the step count;
- ``apply(updates, state, step) -> (updates, new_fields)``: pure, ``state`` a mapping of
  its own fields, ``step`` the params, the count and the extra arguments of this call.

``chain`` and ``fork`` (``gradtx.combine``) merge their stages' fields into one record;
two stages that keep a field of the same name are an error when the combinator is built
(``renamed`` or ``named_chain`` resolve it). The step count belongs to the whole
transformation: it is ``count`` in the record, each stage reads the number of steps
taken before this one, and the record stores it incremented (saturating) after every
``update``.

Declared factories
------------------
``@declare`` turns a factory (``adam``, ``scale_by_ema``) into a declared one: its typed
hyperparameters are checked when the user calls it (``gradtx.hyperparams``), once, and
the transformation it returns is *named* after it: the record is ``AdamState``, and
errors raised inside name it and its stage at fault (``gradtx.rmsprop > scale_by_stddev:
the gradients at leaf path ['head'] have shape (2, 4), the params and state have (4,
2)``). Combinators are not named: they are plumbing, and they do not show in messages.

The finished object is a ``Transformation``: a ``GradientTransformation`` (the plain
``(init, update)`` NamedTuple that optax and Flax take) that also carries its stage, so
that ``chain`` can merge it with others.
"""  # noqa: E501 - a doctest output line is wider than 120 columns

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import re
import sys
import typing
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, TypeVar, cast

import jax
import jax.numpy as jnp

from gradtx import hyperparams
from gradtx.base import EmptyState, GradientTransformation, Params, TreeMismatchError, UpdateError, Updates
from gradtx.numerics import safe_increment, zero_count

COUNT = "count"


class Field(NamedTuple):
    """A state field as a stage declares it: ``init(params) -> value``."""

    init: Callable[[Params], Any]
    like_params: bool = True  # a tree shaped like the params (checked against the gradients)


@dataclasses.dataclass(frozen=True)
class _Kept:
    """A field as a transformation keeps it: its name, and the named stages that keep
    it, outermost first (``("adam", "adam_direction", "scale_by_ema")``)."""

    name: str
    field: Field
    owners: tuple[str, ...] = ()


class Step(NamedTuple):
    """What a stage's ``apply`` gets besides the updates and its own fields."""

    params: Any  # the params, or None when the caller passed none
    count: Any  # int32 steps taken before this one (None unless the stage reads it)
    extra: Mapping[str, Any]  # extra keyword arguments of ``update`` (``value=loss``, ...)


Apply = Callable[[Updates, Mapping[str, Any], Step], tuple[Updates, dict[str, Any]]]


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
    """A transformation's description: see the module docstring."""

    fields: tuple[_Kept, ...]
    uses_count: bool
    apply: Apply
    name: Optional[str] = None  # the declared factory; None for combinators
    kind: str = "chain"  # how an unnamed outermost stage is called in messages and records
    record: Optional[Callable[..., Any]] = None  # the state type when outermost (default: a NamedTuple)
    # whether init/update refuse params and gradients that cannot be stepped (integers):
    # False for the routing stages (masked, partition), whose left-out leaves may be
    # anything, for set_to_zero and for foreign stages; a chain or fork checks when all
    # its stages do
    checks_dtypes: bool = True

    @property
    def field_names(self) -> tuple[str, ...]:
        return ((COUNT,) if self.uses_count else ()) + tuple(k.name for k in self.fields)


class Transformation(GradientTransformation):
    """A ``GradientTransformation`` built by gradtx: ``(init, update)``, plus ``stage``,
    its description, which ``chain`` and ``fork`` read to merge state fields."""

    stage: Stage

    def __repr__(self) -> str:
        return f"<gradtx.{self.stage.name or self.stage.kind}: state {', '.join(self.stage.field_names) or '()'}>"


# --- leaf stages ---------------------------------------------------------------------


def primitive(
    apply: Apply,
    fields: Optional[Mapping[str, Field | Callable[[Params], Any]]] = None,
    *,
    uses_count: bool = False,
    checks_dtypes: bool = True,
) -> Transformation:
    """A stage from its ``apply`` and the fields it keeps (``{"mu": init_fn}`` or
    ``{"mu": Field(init_fn, like_params=...)}``). Called inside a ``@declare`` factory,
    which names it. ``checks_dtypes=False``: the stage takes leaves of any dtype, because
    it hands them on to inner transformations that check what they step (``masked``) or
    steps none (``set_to_zero``)."""
    kept = tuple(_Kept(name, f if isinstance(f, Field) else Field(f)) for name, f in (fields or {}).items())
    return finish(Stage(kept, uses_count, apply, kind="primitive", checks_dtypes=checks_dtypes))


def elementwise(fn: Callable[[jax.Array], jax.Array]) -> Transformation:
    """A stateless stage ``u -> fn(u)``, leaf by leaf."""
    return primitive(lambda updates, state, step: (jax.tree.map(fn, updates), {}))


def stage_of(t: GradientTransformation) -> Stage:
    """The stage of a gradtx transformation; a foreign one (optax's) becomes a stage whose
    one field, named after the factory that built it, holds its whole state."""
    if isinstance(t, Transformation):
        return t.stage
    name = foreign_name(t)
    takes_extra = _accepts_extra_args(t.update)

    def apply(updates, state, step):
        extra = step.extra if takes_extra else {}
        out, new = t.update(updates, state[name], step.params, **extra)
        return out, {name: new}

    return Stage((_Kept(name, Field(t.init, like_params=False)),), False, apply, kind=name, checks_dtypes=False)


def foreign_name(t: GradientTransformation) -> str:
    """The factory that built a foreign transformation (``scale_by_adam``)."""
    qualname = getattr(t.update, "__qualname__", type(t.update).__name__)
    return qualname.split(".<locals>")[0].split(".")[-1] or "transformation"


def update_inner(t: GradientTransformation, updates: Updates, state: Any, step: Step) -> tuple[Updates, Any]:
    """``t.update(updates, state, params, **extra)`` for a wrapper's inner transformation:
    the extra keyword arguments of this call reach it only when it takes them."""
    extra = step.extra if step.extra and _accepts_extra_args(t.update) else {}
    return t.update(updates, state, step.params, **extra)


def _accepts_extra_args(update_fn: Callable) -> bool:
    """Whether ``update_fn`` takes ``**extra`` (optax's plain transformations do not)."""
    try:
        params = inspect.signature(update_fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# --- merging fields (used by the combinators) ------------------------------------------


def merge_fields(stages: Sequence[Stage], where: str) -> tuple[_Kept, ...]:
    """The fields of ``stages`` in order; a name kept by two different stages is an error."""
    seen: dict[str, _Kept] = {}
    out = []
    for stage in stages:
        for kept in stage.fields:
            if kept.name in seen:
                if seen[kept.name] is kept:
                    continue  # the same stage used twice (one field, read by both uses)
                first = seen[kept.name].owners[:1] or ("a stage",)
                raise ValueError(
                    f"gradtx.{where}: two stages keep a state field named {kept.name!r} "
                    f"({first[0]} and {(kept.owners[:1] or ('a stage',))[0]}); give one another "
                    f"name with gradtx.renamed(stage, {kept.name}='...') or use gradtx.named_chain"
                )
            seen[kept.name] = kept
            out.append(kept)
    return tuple(out)


def view(stage: Stage, state: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``state`` that ``stage`` keeps."""
    return {k.name: state[k.name] for k in stage.fields}


# --- records ------------------------------------------------------------------------


@functools.cache
def record_type(call: str, fields: tuple[str, ...]) -> type:
    """The NamedTuple of a transformation's state: ``AdamState(count, mu, nu)``.

    One class per (call, fields), kept in this module under a name that encodes both, so
    that states pickle and compare equal across instances (``gradtx.adam(1e-3)`` and
    ``gradtx.adam(1e-2)`` have the same state type)."""
    if not fields:
        return EmptyState
    title = "".join(part[:1].upper() + part[1:] for part in re.split(r"[._]", call)) + "State"
    key = f"{title}__{'__'.join(fields)}"
    cls = typing.NamedTuple(title, [(f, Any) for f in fields])  # type: ignore[misc]
    cls.__qualname__ = key
    cls.__module__ = __name__
    cls.__doc__ = f"The state of ``gradtx.{call}``: {', '.join(fields)}."
    setattr(sys.modules[__name__], key, cls)
    return cls


def __getattr__(name: str) -> type:
    """Unpickling a state finds its type by the name ``record_type`` gave it."""
    title, sep, rest = name.partition("__")
    if not sep or not title.endswith("State"):
        raise AttributeError(name)
    call = "".join("_" + c.lower() if c.isupper() else c for c in title[:-5]).lstrip("_")
    cls = record_type(call, tuple(rest.split("__")))
    if cls.__qualname__ != name:
        raise AttributeError(name)
    return cls


def _describe(state: Any) -> str:
    fields = getattr(state, "_fields", None)
    if fields is not None:
        return f"{type(state).__name__}({', '.join(fields)})"
    if isinstance(state, dict):
        return f"a dict with keys {sorted(state)}"
    return "None" if state is None else f"a {type(state).__name__}"


def _state_values(label: str, stage: Stage, state: Any) -> dict[str, Any]:
    """The record's fields by name, or an error naming what was passed instead."""
    names = stage.field_names
    if isinstance(state, tuple) and getattr(state, "_fields", ()) == names:
        return dict(zip(names, state))
    if isinstance(state, dict) and stage.record is dict and set(state) == set(names):
        return dict(state)
    if not names and (state == () or getattr(state, "_fields", None) == ()):
        return {}
    expected = (
        f"{{{', '.join(names)}}}"
        if stage.record is dict
        else f"{record_type(label, names).__name__}({', '.join(names)})"
    )
    if state is None:
        raise UpdateError(
            f"update() got no state (None): pass the {expected} that init(params) returns "
            f"(call init before the first update)",
            (label,),
        )
    raise TreeMismatchError(
        f"the state is {_describe(state)}, not the {expected} that this "
        f"transformation's init(params) returns: pass its own state",
        (label,),
    )


# --- finishing: a stage becomes an (init, update) pair ------------------------------------


def finish(stage: Stage) -> Transformation:
    """The ``(init, update)`` pair of a stage, with its state as one record."""
    label = stage.name or stage.kind
    names = stage.field_names
    make = stage.record if stage.record is not None else record_type(label, names)

    def init_fn(params):
        like = [k for k in stage.fields if k.field.like_params]
        if like and stage.checks_dtypes:
            check_params_dtypes(label, stage, like, params)
        values = {COUNT: zero_count()} if stage.uses_count else {}
        values.update({k.name: k.field.init(params) for k in stage.fields})
        return make(**values)

    def update_fn(updates, state, params=None, **extra):
        values = _state_values(label, stage, state)
        check_trees(label, stage, updates, values, params)
        count = values.get(COUNT)
        try:
            out, new = stage.apply(updates, values, Step(params, count, extra))
        except UpdateError as e:
            raise (e if stage.name else e.within(label)) from None
        if stage.uses_count:
            new[COUNT] = safe_increment(values[COUNT])
        return out, make(**{name: new[name] for name in names})

    t = Transformation(init_fn, update_fn)
    t.stage = stage
    return t


# --- declared factories -------------------------------------------------------------

_BUILDING: contextvars.ContextVar[int] = contextvars.ContextVar("gradtx_building", default=0)


_Factory = TypeVar("_Factory", bound=Callable[..., Any])


def declare(factory: _Factory) -> _Factory:
    """Make ``factory`` a declared gradtx transformation (see the module docstring):
    check the hyperparameters the user passed against the constraints in its signature's
    types, once, and name the transformation it returns after it. (A factory of
    something else, a schedule, gets the checks only.)"""
    signature = inspect.signature(factory)
    hints = typing.get_type_hints(factory, include_extras=True)
    checks = {}
    for name in signature.parameters:
        constraint, optional = hyperparams.constraint_of(hints.get(name))
        if constraint is not None:
            checks[name] = (constraint, optional)
    call = factory.__name__

    @functools.wraps(factory)
    def declared(*args, **kwargs):
        if _BUILDING.get() == 0:
            for name, value in signature.bind(*args, **kwargs).arguments.items():
                if name in checks and not (value is None and checks[name][1]):
                    checks[name][0].check(call, name, value)
        token = _BUILDING.set(_BUILDING.get() + 1)
        try:
            built = factory(*args, **kwargs)
        finally:
            _BUILDING.reset(token)
        return named(call, built) if isinstance(built, GradientTransformation) else built

    # The factory's own signature, for type checkers (functools.wraps gives it at runtime): the
    # declared factory returns a Transformation where the factory returns a GradientTransformation.
    return cast(_Factory, declared)


def named(call: str, t: GradientTransformation) -> Transformation:
    """``t`` as the transformation of the call ``call``: its record is ``<Call>State`` and
    errors inside it are reported as raised in ``call``."""
    inner = stage_of(t)

    def apply(updates, state, step):
        try:
            return inner.apply(updates, state, step)
        except UpdateError as e:
            raise e.within(call) from None

    fields = tuple(dataclasses.replace(k, owners=(call, *k.owners)) for k in inner.fields)
    return finish(Stage(fields, inner.uses_count, apply, name=call, checks_dtypes=inner.checks_dtypes))


# --- tree checks, before anything is computed ------------------------------------------


def _signature(tree: Any) -> tuple[dict[str, tuple], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(p) or "<root>": jnp.shape(x) for p, x in leaves}, treedef


def _fast_match(updates: Any, trees: Iterator[Any]) -> bool:
    u_def: jax.tree_util.PyTreeDef  # jaxlib ships no type stubs for it: this makes it Any
    u_leaves, u_def = jax.tree.flatten(updates)
    shapes = [jnp.shape(x) for x in u_leaves]
    for tree in trees:
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != u_def or [jnp.shape(x) for x in leaves] != shapes:
            return False
    return True


def check_trees(label: str, stage: Stage, updates: Any, values: Mapping[str, Any], params: Any) -> None:
    """Raise ``TreeMismatchError`` unless the gradients, the params (when given) and the
    params-shaped state fields have one tree structure and the same leaf shapes, and the
    gradients and params dtypes of a kind that can be stepped (``_dtype_problem``); the
    message names the tree at fault, the first leaf path that differs and the stage."""
    like = [k for k in stage.fields if k.field.like_params]
    trees = [values[k.name] for k in like] + ([] if params is None else [params])
    if _fast_match(updates, iter(trees)):
        problem = _dtype_problem(updates, params) if stage.checks_dtypes else None
        if problem is not None:
            raise TreeMismatchError(problem, _crumbs(label, stage, like[0] if like else None))
        return
    parties: list[tuple[str, str, Any, _Kept | None]] = [("the gradients", "gradients", updates, None)]
    parties += [(f"state field `{k.name}`", "state", values[k.name], k) for k in like]
    if params is not None:
        parties.append(("the params", "params", params, None))
    sigs = [_signature(tree) for _, _, tree, _ in parties]
    keys = [(tuple(s.items()), d) for s, d in sigs]
    # the reference is the tree that most of the three (gradients, params, state) agree on;
    # ties go to the params, then the state
    votes = {k: len({parties[i][1] for i in range(len(parties)) if keys[i] == k}) for k in keys}
    priority = {"params": 0, "state": 1, "gradients": 2}
    ref = keys[min(range(len(parties)), key=lambda i: (-votes[keys[i]], priority[parties[i][1]], i))]
    fault = next(i for i in range(len(parties)) if keys[i] != ref)
    agreeing = [
        g
        for g in ("params", "state", "gradients")
        if any(keys[i] == ref and parties[i][1] == g for i in range(len(parties)))
    ]
    others = "the " + " and ".join(agreeing)
    others_have = "has" if agreeing == ["state"] else "have"
    what, group, _, kept = parties[fault]
    (got, got_def), (want, want_def) = sigs[fault], (dict(ref[0]), ref[1])
    have, lack = ("has", "lacks") if group == "state" else ("have", "lack")
    missing = [p for p in want if p not in got]
    extra = [p for p in got if p not in want]
    diff = [p for p in want if p in got and want[p] != got[p]]
    if missing:
        detail = f"{what} {lack} leaf path {missing[0]} that {others} {others_have}"
    elif extra:
        detail = f"{what} {have} leaf path {extra[0]} that {others} {'lacks' if others_have == 'has' else 'lack'}"
    elif diff:
        detail = f"{what} at leaf path {diff[0]} {have} shape {got[diff[0]]}, {others} {others_have} {want[diff[0]]}"
    else:
        detail = (
            f"{what} {have} the leaf paths of {others} in other containers: {_short(got_def)} vs {_short(want_def)}"
        )
    if group == "state":
        detail += "; call init(params) on the tree you pass to update()"
    raise TreeMismatchError(detail, _crumbs(label, stage, kept if kept is not None else (like[0] if like else None)))


def _crumbs(label: str, stage: Stage, kept: _Kept | None) -> tuple[str, ...]:
    """The calls an error names: the transformation and the stage that keeps ``kept``."""
    owners = kept.owners if kept is not None else ()
    return (owners if stage.name else (label, *owners)) or (label,)


# --- dtype checks: gradtx steps floating and complex params with gradients of their kind ---


def _dtype(x: Any) -> Any:
    """A leaf's dtype (a Python number's as JAX takes it); None for a leaf that has none."""
    dtype = getattr(x, "dtype", None)
    if dtype is None and isinstance(x, (bool, int, float, complex)):
        dtype = jnp.result_type(x)
    return dtype


def _steppable(dtype: Any) -> bool:
    return dtype is None or _kind(dtype) != "other"


def _complex(dtype: Any) -> bool:
    return _kind(dtype) == "complex"


@functools.cache
def _kind(dtype: Any) -> str:
    """``complex``, ``real`` (floating) or ``other`` (integer, bool, float0, a PRNG key)."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    return "real" if jnp.issubdtype(dtype, jnp.floating) else "other"


def _name(dtype: Any) -> str:
    return "float0" if dtype == jax.dtypes.float0 else str(getattr(dtype, "name", dtype))


def _at(tree: Any, index: int) -> str:
    path = jax.tree_util.tree_flatten_with_path(tree)[0][index][0]
    return jax.tree_util.keystr(path) or "<root>"


_INTEGER_PARAMS = "gradtx steps floating or complex params (cast them, or leave the leaf out of the tree)"


def _dtype_problem(updates: Any, params: Any) -> str | None:
    """What is wrong with the dtypes of the first leaf that cannot be stepped (integer
    params or gradients, a complex gradient for a real param or the reverse), or None.
    The trees have one structure already; floating precisions may differ (mixed precision)."""
    grads = [_dtype(g) for g in jax.tree.leaves(updates)]
    kinds = [None] * len(grads) if params is None else [_dtype(p) for p in jax.tree.leaves(params)]
    for i, (g, p) in enumerate(zip(grads, kinds)):
        if not _steppable(p):
            return f"the params at leaf path {_at(params, i)} are {_name(p)}: {_INTEGER_PARAMS}"
        if not _steppable(g):
            return f"the gradients at leaf path {_at(updates, i)} are {_name(g)}: gradients must be floating or complex"
        if g is not None and p is not None and _complex(g) != _complex(p):
            kind = "complex" if _complex(p) else "real"
            return (
                f"the gradients at leaf path {_at(updates, i)} are {_name(g)}, the params {_name(p)}: "
                f"a {kind} param takes a {kind} gradient"
            )
    return None


def check_params_dtypes(label: str, stage: Stage, like: Sequence[_Kept], params: Any) -> None:
    """Raise ``TypeError`` in ``init`` when a leaf of the params is not floating or
    complex (an integer), before any state is built from it."""
    dtypes = [_dtype(p) for p in jax.tree.leaves(params)]
    bad = next((i for i, d in enumerate(dtypes) if not _steppable(d)), None)
    if bad is not None:
        crumbs = " > ".join(_crumbs(label, stage, like[0])[:2])
        raise TypeError(
            f"gradtx.{crumbs}: init() got params at leaf path {_at(params, bad)} of dtype {_name(dtypes[bad])}: "
            f"{_INTEGER_PARAMS}"
        )


def _short(treedef: Any, limit: int = 120) -> str:
    text = str(treedef).replace("PyTreeDef", "")
    return text if len(text) <= limit else text[:limit] + "..."
