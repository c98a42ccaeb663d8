"""Hyperparameter sweeps: many settings of one optimizer, trained in one compiled program.

``sweep(factory, grid)`` turns an optimizer factory and a grid of hyperparameter values
into batched optimizers over the grid's settings. Each is an ordinary ``(init, update)``
pair whose params, gradients and state carry a leading *settings axis*: the factory is
called inside ``jax.vmap`` with the numeric hyperparameters as traced values (gradtx
factories check concrete values and skip traced ones), so N learning rates are one
program, not N. Vmap the model over the same axis and the whole sweep trains as one::

    >>> import jax, jax.numpy as jnp, gradtx
    >>> sw = gradtx.sweep(gradtx.sgd, {"learning_rate": [0.1, 0.01], "momentum": [0.0, 0.9]})
    >>> sw
    <gradtx.Sweep of gradtx.sgd: 4 settings, 1 program>
    >>> loss = lambda w: jnp.sum((w - 3.0) ** 2)
    >>> def train(group):  # one compiled program per group
    ...     @jax.jit
    ...     def run(w):  # w: every setting's params, the settings first
    ...         def step(carry, _):
    ...             w, state = carry
    ...             values, grads = jax.vmap(jax.value_and_grad(loss))(w)
    ...             updates, state = group.tx.update(grads, state, w)
    ...             return (gradtx.apply_updates(w, updates), state), values
    ...         return jax.lax.scan(step, (w, group.tx.init(w)), length=20)[1].T  # (settings, steps)
    ...     return run(group.replicate(jnp.zeros(2)))
    >>> losses = sw.run(train)
    >>> print(sw.table({"loss": losses}).markdown(reduce="last", fmt=".3g"))
    | learning_rate | momentum | loss |
    |---|---|---|
    | 0.1 | 0 | 0.00374 |
    | 0.1 | 0.9 | 1.76 |
    | 0.01 | 0 | 8.35 |
    | 0.01 | 0.9 | 1.11 |

Which hyperparameters vary inside one program: numbers, when at least one of a name's
values is a float (``learning_rate``, ``momentum``, betas, ``eps``, weight decay, the
parameters of a schedule built inside the factory). The others are *structural*: they
change the program itself (``nesterov``, ``centered``, ``momentum=None`` against a number,
integers such as a number of steps, dtypes, functions) and split the grid into groups,
one batched optimizer and one program for each (``Sweep.groups``; ``Sweep.describe()``
lists them, and the split is logged). ``static=`` makes a numeric name structural.

Grids: a dict of lists is their product (``mode="product"``) or, with ``mode="zip"``, the
lists taken side by side; a list of dicts is the settings themselves. ``fixed=`` gives
the arguments every setting shares. The factory may be any function of keyword arguments
that returns a transformation: ``lambda lr, wd: gradtx.chain(gradtx.clip_by_global_norm(1.0),
gradtx.adamw(lr, weight_decay=wd))`` sweeps a chain, ``lambda peak:
gradtx.sgd(gradtx.cosine_decay_schedule(peak, 1000))`` a schedule's parameter.

``Sweep.run(fn)`` calls ``fn(group)`` for each group and puts the results (trees whose
leaves have the group's settings first) back in the order of ``Sweep.settings``;
``Sweep.table(metrics)`` makes them a ``SweepTable``, one row per setting.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
import numbers
import typing
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import hyperparams
from gradtx.base import GradientTransformation

__all__ = ["Sweep", "SweepGroup", "SweepTable", "sweep"]

logger = logging.getLogger("gradtx.sweeps")


class _Default:
    """A name that a setting of a list-of-dicts grid leaves out: the factory's default applies."""

    def __repr__(self) -> str:
        return "<default>"


_MISSING = _Default()
_TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


def _fail(name: str, value: Any, rule: str, error: type = ValueError) -> typing.NoReturn:
    raise error(f"gradtx.sweep({name}={_shown(value)}): {rule}")


def _shown(value: Any) -> str:
    if inspect.isroutine(value):
        return f"<function {getattr(value, '__name__', 'function')}>"
    return repr(value)


def _call_name(factory: Callable) -> str:
    """``gradtx.adam`` for a gradtx factory, the function's name otherwise."""
    name = getattr(factory, "__name__", type(factory).__name__)
    return f"gradtx.{name}" if getattr(factory, "__module__", "").startswith("gradtx") else name


# --- what a hyperparameter is -------------------------------------------------------------------


def _is_real(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, numbers.Real):
        return True
    return (
        isinstance(x, (np.ndarray, jax.Array))
        and x.ndim == 0
        and jnp.issubdtype(x.dtype, jnp.number)
        and not (jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == bool)
    )


def _is_float(x: Any) -> bool:
    if isinstance(x, (float, np.floating)):
        return True
    return isinstance(x, (np.ndarray, jax.Array)) and jnp.issubdtype(x.dtype, jnp.floating)


def _constraints(factory: Callable) -> dict[str, Any]:
    """The declared constraint of each argument of a gradtx factory (``{}`` for other functions)."""
    try:
        hints = typing.get_type_hints(inspect.unwrap(factory), include_extras=True)
    except Exception:  # noqa: BLE001 - a function without resolvable hints declares nothing
        return {}
    return {name: hyperparams.constraint_of(hint)[0] for name, hint in hints.items()}


_STRUCTURAL_CONSTRAINTS = (
    hyperparams.Integer,
    hyperparams.OneOf,
    hyperparams.InexactDtype,
    hyperparams.IsTransformation,
)


def _numeric(name: str, values: Sequence[Any], constraint: Any, static: Iterable[str]) -> bool:
    """Whether ``name`` varies inside one program: real numbers (or None), at least one a float."""
    if name in static or isinstance(constraint, _STRUCTURAL_CONSTRAINTS):
        return False
    given = [v for v in values if v is not None and v is not _MISSING]
    return bool(given) and all(_is_real(v) for v in given) and any(_is_float(v) for v in given)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return ("value", type(value).__name__, value)


# --- the grid -----------------------------------------------------------------------------------


def _settings(grid: Any, mode: str) -> tuple[dict[str, Any], ...]:
    """The grid's settings, in order (the product's last name varies fastest)."""
    if isinstance(grid, Mapping):
        if not grid:
            _fail("grid", grid, "grid must give at least one setting")
        for name, values in grid.items():
            if not isinstance(name, str):
                _fail("grid", grid, f"grid's names must be strings, got {name!r}", TypeError)
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray, jax.Array)):
                _fail("grid", grid, f"grid[{name!r}] must be a list of values, got {type(values).__name__}", TypeError)
            if len(values) == 0:
                _fail("grid", grid, f"grid must give at least one setting (grid[{name!r}] is empty)")
        names = list(grid)
        lists = [list(grid[n]) for n in names]
        if mode == "zip":
            lengths = {len(v) for v in lists}
            if len(lengths) > 1:
                shown = ", ".join(f"{n}: {len(v)}" for n, v in zip(names, lists))
                _fail("grid", grid, f"grid's lists must have one length with mode='zip', got {shown}")
            rows: Iterable[tuple] = zip(*lists)
        else:
            rows = itertools.product(*lists)
        return tuple(dict(zip(names, row)) for row in rows)
    if isinstance(grid, (list, tuple)) and all(isinstance(s, Mapping) for s in grid):
        if not grid:
            _fail("grid", grid, "grid must give at least one setting")
        for setting in grid:
            bad = next((k for k in setting if not isinstance(k, str)), None)
            if bad is not None:
                _fail("grid", grid, f"grid's names must be strings, got {bad!r}", TypeError)
        return tuple(dict(s) for s in grid)
    _fail(
        "grid",
        grid,
        f"grid must be a dict of lists or a list of dicts (settings), got {type(grid).__name__}",
        TypeError,
    )


def _accepted(factory: Callable) -> Optional[list[str]]:
    """The keyword arguments ``factory`` takes, or None when it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def _check_names(factory: Callable, arg: str, value: Any, names: Iterable[str]) -> None:
    accepted = _accepted(factory)
    if accepted is None:
        return
    unknown = [n for n in names if n not in accepted]
    if unknown:
        _fail(
            arg,
            value,
            f"{arg} names {', '.join(unknown)}, which {_call_name(factory)} does not take "
            f"(it takes {', '.join(accepted)})",
        )


def _check_types(factory: Callable, grid: Any, settings: Sequence[dict], constraints: Mapping[str, Any]) -> None:
    """A value that is not a number for a numeric hyperparameter (an ``Interval``): a TypeError."""
    for setting in settings:
        for name, value in setting.items():
            constraint = constraints.get(name)
            if not isinstance(constraint, hyperparams.Interval) or _is_real(value):
                continue
            if value is None or (constraint.schedule and callable(value)):
                continue  # None where it is optional is the factory's to refuse; a schedule is allowed
            if isinstance(value, (np.ndarray, jax.Array)) and jnp.issubdtype(value.dtype, jnp.number):
                continue  # an array hyperparameter: structural, checked by the factory
            what = "numbers or schedules" if constraint.schedule else "numbers"
            _fail(
                "grid",
                grid,
                f"grid[{name!r}] must hold {what} ({_call_name(factory)}'s {name} is numeric), "
                f"got {type(value).__name__} {_shown(value)}",
                TypeError,
            )


# --- the batched optimizer ------------------------------------------------------------------


def _leading(tree: Any, n: int, what: str, label: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = jnp.shape(leaf)
        if not shape or shape[0] != n:
            raise ValueError(
                f"{label}: the {what} at leaf path {jax.tree_util.keystr(path) or '<root>'} have shape {shape}, "
                f"not the {n} settings first (stack them with group.replicate(tree), or vmap the model)"
            )


def _batched(
    factory: Callable, static: Mapping[str, Any], varied: Mapping[str, np.ndarray], n: int, label: str
) -> GradientTransformation:
    """``factory(**static, **one setting's varied values)`` vmapped over the settings axis."""

    def values() -> dict[str, jax.Array]:
        # weakly typed, as Python floats are: float32 (float64 with jax_enable_x64) that
        # takes the dtype of what it meets, so bfloat16 params keep bfloat16 state
        return {k: jnp.stack([jnp.asarray(float(x)) for x in v]) for k, v in varied.items()}

    def build(h: Mapping[str, Any]) -> GradientTransformation:
        return factory(**static, **h)

    def traced(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _TRACING_ERRORS as e:
            first = str(e).strip().splitlines()[0]
            raise TypeError(
                f"{label}: {_call_name(factory)} cannot take {', '.join(varied)} as traced values ({first}); "
                f"pass the ones it needs as numbers with gradtx.sweep(..., static=[...]): they split the "
                f"grid into groups"
            ) from e

    def init_fn(params):
        _leading(params, n, "params", label)
        return traced(lambda: jax.vmap(lambda h, p: build(h).init(p))(values(), params))

    def update_fn(updates, state, params=None, **extra):
        _leading(updates, n, "updates", label)
        if params is not None:
            _leading(params, n, "params", label)

        # arrays (``value=``: one per setting) are mapped; Python values (``observe=False``)
        # are the same for every setting
        mapped = {k: v for k, v in extra.items() if isinstance(v, (jax.Array, np.ndarray))}
        fixed = {k: v for k, v in extra.items() if k not in mapped}

        def one(h, u, s, p, e):
            return build(h).update(u, s, p, **e, **fixed)

        axes = (0, 0, 0, None if params is None else 0, 0)
        return traced(lambda: jax.vmap(one, in_axes=axes)(values(), updates, state, params, mapped))

    return GradientTransformation(init_fn, update_fn)


# --- the sweep --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class SweepGroup:
    """The settings of a sweep that share their structural hyperparameters: one batched
    optimizer, one compiled program.

    Attributes:
      tx: the batched optimizer: ``init`` and ``update`` take trees whose leaves have the
        group's settings first (``len(group)``), and its state has them first too.
      settings: each setting's hyperparameters, as the grid gave them.
      indices: their positions in ``Sweep.settings``.
      structural: the values the group's settings share and the program is built with
        (``{"nesterov": True}``, ``{"momentum": None}``).
      varied: the hyperparameters that vary inside the program, one value per setting.
    """

    tx: GradientTransformation
    settings: tuple[dict, ...]
    indices: tuple[int, ...]
    structural: dict
    varied: dict

    def __len__(self) -> int:
        return len(self.settings)

    def replicate(self, tree: Any) -> Any:
        """``tree`` with each leaf repeated once per setting on a new first axis (the same
        initial params for every setting)."""
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(self), *jnp.shape(x))), tree)

    def take(self, tree: Any, i: int) -> Any:
        """The ``i``-th setting's slice of a batched tree (its params, its state)."""
        return jax.tree.map(lambda x: x[i], tree)

    def describe(self) -> str:
        fixed = ", ".join(f"{k}={_shown(v)}" for k, v in self.structural.items()) or "no structural values"
        varying = ", ".join(self.varied) or "nothing"
        return f"{fixed}: {len(self)} setting{'s' * (len(self) != 1)}, varying {varying} inside the program"


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """A grid of settings of one optimizer factory, in groups of one program each (``sweep``).

    Attributes:
      factory: the optimizer factory.
      settings: every setting's hyperparameters (the grid's names only), in grid order.
      groups: the groups, each a batched optimizer over some of the settings.
      names: the grid's hyperparameter names.
    """

    factory: Callable
    settings: tuple[dict, ...]
    groups: tuple[SweepGroup, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.settings)

    def __repr__(self) -> str:
        return f"<{self._summary()}>"

    def _summary(self) -> str:
        n = len(self.groups)
        return (
            f"gradtx.Sweep of {_call_name(self.factory)}: {len(self)} setting{'s' * (len(self) != 1)}, "
            f"{n} program{'s' * (n != 1)}"
        )

    def describe(self) -> str:
        """The groups: what each fixes, how many settings it has and what varies in it."""
        lines = [self._summary() + ":"]
        lines += [f"  program {i}: {g.describe()}" for i, g in enumerate(self.groups)]
        return "\n".join(lines)

    def gather(self, per_group: Sequence[Any]) -> Any:
        """Per-group results (trees whose leaves have the group's settings first) as one
        tree of numpy arrays with every setting first, in the order of ``settings``."""
        if len(per_group) != len(self.groups):
            raise ValueError(f"gradtx.Sweep.gather: {len(per_group)} results for {len(self.groups)} groups")
        structure = jax.tree.structure(per_group[0])
        columns = [jax.tree.leaves(r) for r in per_group]
        out = []
        for position, first in enumerate(columns[0]):
            first = np.asarray(first)
            merged = np.empty((len(self), *first.shape[1:]), first.dtype)
            for group, leaves in zip(self.groups, columns):
                merged[list(group.indices)] = np.asarray(leaves[position])
            out.append(merged)
        return jax.tree.unflatten(structure, out)

    def run(self, fn: Callable[[SweepGroup], Any]) -> Any:
        """``fn(group)`` for each group (one compiled program each, when ``fn`` is a jitted
        training run), gathered in the order of ``settings`` (``gather``)."""
        return self.gather([fn(group) for group in self.groups])

    def table(self, metrics: Mapping[str, Any]) -> SweepTable:
        """A ``SweepTable`` of the settings and ``metrics`` (name -> values with every
        setting first, in the order of ``settings``: per epoch, per step or one each)."""
        columns = {}
        for name, values in metrics.items():
            array = np.asarray(values)
            if array.ndim == 0 or array.shape[0] != len(self):
                raise ValueError(
                    f"gradtx.Sweep.table(metrics=...): metrics[{name!r}] has shape {array.shape}, "
                    f"not the {len(self)} settings first"
                )
            columns[name] = array
        rows = tuple(
            {**{n: s.get(n, _MISSING) for n in self.names}, **{m: v[i] for m, v in columns.items()}}
            for i, s in enumerate(self.settings)
        )
        return SweepTable(self.names, tuple(columns), rows)


def sweep(
    factory: Callable[..., GradientTransformation],
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    mode: Literal["product", "zip"] = "product",
    fixed: Optional[Mapping[str, Any]] = None,
    static: Iterable[str] = (),
) -> Sweep:
    """``factory`` over every setting of ``grid``, as batched optimizers: one per group of
    settings that share their structural hyperparameters, one compiled program each.

    See the module docstring (``gradtx.sweeps``) for which hyperparameters vary inside a
    program and which split the grid. Every setting is built once here, so that a bad value
    fails now with the factory's own message.

    Each group's ``tx`` takes params, gradients and the extra keyword arguments of
    ``update`` (a loss ``value``) with the group's settings first, and keeps its state so.

    Args:
      factory: a function of keyword arguments returning a gradient transformation
        (``gradtx.adam``, or a ``lambda`` building a chain).
      grid: a dict ``{name: [values]}``, or a list of settings ``[{name: value}, ...]``.
      mode: ``"product"`` (every combination of the dict's lists) or ``"zip"`` (the lists
        side by side; they must have one length).
      fixed: keyword arguments every setting shares.
      static: names to treat as structural even when their values are numbers.

    Returns:
      A ``Sweep``: its ``settings`` and ``groups`` (each with its batched ``tx``).
    """
    if not callable(factory):
        _fail(
            "factory",
            factory,
            f"factory must be a function returning a transformation, got {type(factory).__name__}",
            TypeError,
        )
    if mode not in ("product", "zip"):
        _fail("mode", mode, "mode must be one of 'product', 'zip'")
    if fixed is not None and not isinstance(fixed, Mapping):
        _fail("fixed", fixed, f"fixed must be a dict of keyword arguments, got {type(fixed).__name__}", TypeError)
    fixed = dict(fixed or {})
    static = (static,) if isinstance(static, str) else tuple(static)
    settings = _settings(grid, mode)
    names = tuple(dict.fromkeys(n for s in settings for n in s))
    _check_names(factory, "grid", grid, names)
    stray = [n for n in static if n not in names]
    if stray:
        _fail("static", list(static), f"static names {', '.join(stray)}, which grid does not vary")
    _check_names(factory, "fixed", fixed, fixed)
    both = [n for n in names if n in fixed]
    if both:
        _fail("fixed", fixed, f"fixed gives {', '.join(both)}, which grid varies")
    constraints = _constraints(factory)
    _check_types(factory, grid, settings, constraints)
    for i, setting in enumerate(settings):
        try:
            built = factory(**fixed, **setting)
        except (ValueError, TypeError) as e:
            e.add_note(f"in gradtx.sweep: setting {i} of {len(settings)}, {setting}")
            raise
        if not (callable(getattr(built, "init", None)) and callable(getattr(built, "update", None))):
            _fail(
                "factory",
                factory,
                f"factory must return a gradient transformation, got {type(built).__name__}",
                TypeError,
            )

    column = {n: [s.get(n, _MISSING) for s in settings] for n in names}
    numeric = {n for n in names if _numeric(n, column[n], constraints.get(n), static)}
    groups = _groups(factory, settings, names, numeric, fixed)
    result = Sweep(factory, settings, groups, names)
    if len(groups) > 1:
        logger.info("%s", result.describe())
    return result


def _key(value: Any, numeric: bool) -> Any:
    """What a value contributes to its setting's group: structural values themselves; for a
    numeric name only whether it is a number or None."""
    if value is _MISSING:
        return ("default",)
    if numeric:
        return ("none",) if value is None else ("number",)
    return _hashable(value)


def _groups(
    factory: Callable, settings: Sequence[dict], names: Sequence[str], numeric: set, fixed: Mapping[str, Any]
) -> tuple[SweepGroup, ...]:
    members: dict[tuple, list[int]] = {}
    for i, s in enumerate(settings):
        key = tuple(_key(s.get(n, _MISSING), n in numeric) for n in names)
        members.setdefault(key, []).append(i)
    groups = []
    for g, indices in enumerate(members.values()):
        first = settings[indices[0]]
        structural, varied = {}, {}
        for n in names:
            value = first.get(n, _MISSING)
            if value is _MISSING:
                continue
            if n in numeric and value is not None:
                varied[n] = np.asarray([float(settings[i][n]) for i in indices], np.float64)
            else:
                structural[n] = value
        label = f"gradtx.sweep({_call_name(factory)}) program {g}"
        tx = _batched(factory, {**fixed, **structural}, varied, len(indices), label)
        groups.append(SweepGroup(tx, tuple(settings[i] for i in indices), tuple(indices), structural, varied))
    return tuple(groups)


# --- results ---------------------------------------------------------------------------------

_REDUCTIONS: dict[str, Callable[[np.ndarray], Any]] = {
    "min": np.min,
    "max": np.max,
    "last": lambda v: v[-1],
    "first": lambda v: v[0],
    "mean": np.mean,
    "argmin": np.argmin,
    "argmax": np.argmax,
}


def _reduced(value: Any, reduce: Optional[str]) -> Any:
    array = np.asarray(value)
    if reduce is None or array.ndim == 0:
        return array
    if reduce not in _REDUCTIONS:
        raise ValueError(
            f"gradtx.SweepTable: reduce must be one of {', '.join(map(repr, _REDUCTIONS))}, got {reduce!r}"
        )
    return _REDUCTIONS[reduce](array.reshape(-1))


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    if isinstance(value, (numbers.Real, np.floating)):
        return format(float(value), fmt)
    if isinstance(value, np.ndarray):
        return " ".join(format(float(v), fmt) for v in value.reshape(-1))
    return getattr(value, "__name__", None) or str(value)


class Pivot(NamedTuple):
    """A metric over two hyperparameters: ``values[i, j]`` at ``row_values[i]``,
    ``column_values[j]`` (NaN where the grid has no such setting)."""

    row_name: str
    column_name: str
    row_values: tuple
    column_values: tuple
    values: np.ndarray

    def markdown(self, fmt: str = ".4g", highlight: Optional[Literal["min", "max"]] = "min") -> str:
        """A Markdown table, each row's minimum (or maximum) in bold."""
        head = f"| {self.row_name} \\ {self.column_name} | " + " | ".join(_cell(c, fmt) for c in self.column_values)
        lines = [head + " |", "|" + "---|" * (len(self.column_values) + 1)]
        for label, row in zip(self.row_values, self.values):
            best = None
            if highlight is not None and np.any(np.isfinite(row)):
                best = int(np.nanargmin(row) if highlight == "min" else np.nanargmax(row))
            cells = [
                "" if np.isnan(v) else (f"**{_cell(v, fmt)}**" if j == best else _cell(v, fmt))
                for j, v in enumerate(row)
            ]
            lines.append(f"| {_cell(label, fmt)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SweepTable:
    """The results of a sweep, one row per setting: its hyperparameters, then the metrics
    the caller recorded (arrays: per epoch, per step, or one value).

    Attributes:
      names: the hyperparameter columns.
      metrics: the metric columns.
      rows: one dict per setting, ``{name: value, ..., metric: array, ...}``.
    """

    names: tuple[str, ...]
    metrics: tuple[str, ...]
    rows: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str, reduce: Optional[str] = None) -> np.ndarray:
        """One column over the rows, each value reduced (``"min"``, ``"max"``, ``"last"``,
        ``"first"``, ``"mean"``, ``"argmin"``, ``"argmax"`` over its epochs) or as it is."""
        return np.asarray([_reduced(row[name], reduce) for row in self.rows])

    def best(self, metric: str, reduce: str = "min", *, largest: bool = False) -> dict:
        """The row whose ``metric`` (reduced over its epochs) is smallest (``largest``: largest)."""
        values = self.column(metric, reduce).astype(float)
        return self.rows[int(np.nanargmax(values) if largest else np.nanargmin(values))]

    def markdown(self, reduce: Optional[str] = "last", fmt: str = ".4g") -> str:
        """A Markdown table: the hyperparameters, then each metric reduced over its epochs
        (``reduce=None``: every value, space-separated)."""
        head = list(self.names) + list(self.metrics)
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [_cell(row[n], fmt) for n in self.names]
            cells += [_cell(_reduced(row[m], reduce), fmt) for m in self.metrics]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def pivot(self, index: str, columns: str, metric: str, reduce: str = "min") -> Pivot:
        """``metric`` (reduced over its epochs) over two hyperparameters, one row per value
        of ``index`` and one column per value of ``columns``, in the order they first appear.
        Where several rows have the same pair (a third hyperparameter), the best of them
        (the smallest) is shown."""
        rows_at = list(dict.fromkeys(_hashable(r[index]) for r in self.rows))
        cols_at = list(dict.fromkeys(_hashable(r[columns]) for r in self.rows))
        labels_i = {_hashable(r[index]): r[index] for r in self.rows}
        labels_j = {_hashable(r[columns]): r[columns] for r in self.rows}
        values = np.full((len(rows_at), len(cols_at)), np.nan)
        for r in self.rows:
            i, j = rows_at.index(_hashable(r[index])), cols_at.index(_hashable(r[columns]))
            v = float(_reduced(r[metric], reduce))
            values[i, j] = v if np.isnan(values[i, j]) else min(values[i, j], v)
        return Pivot(index, columns, tuple(labels_i[k] for k in rows_at), tuple(labels_j[k] for k in cols_at), values)
