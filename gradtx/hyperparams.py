"""Typed hyperparameters: each argument's type carries its constraint, checked once.

A factory's signature declares what each hyperparameter may be::

    @declare
    def adam(learning_rate: LearningRate, b1: DecayBelowOne = 0.9, ...) -> Transformation:

``LearningRate`` is ``Annotated[ScalarOrSchedule, Interval(0.0, schedule=True)]``: a type
checker sees a number, an array or a schedule, and ``declare`` (in ``gradtx.transform``)
reads the constraint and checks the arguments the user passed, when the factory is
called, once: the stages the factory builds inside it are not checked again. Messages
name the call and the argument::

    gradtx.adam(b1=1.5): b1 must be in [0, 1)                       (ValueError)
    gradtx.adam(learning_rate='1e-3'): learning_rate must be a number, an array or a
        schedule, got str                                           (TypeError)

Traced values (inside ``jax.jit``) and schedules are not checked: their values are not
known when the transformation is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Annotated, Any, NoReturn, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from gradtx.base import ScalarOrSchedule


def _fail(call: str, name: str, value: Any, rule: str, error: type = ValueError) -> NoReturn:
    shown = f"<function {value.__name__}>" if inspect.isroutine(value) else repr(value)  # no address
    raise error(f"gradtx.{call}({name}={shown}): {name} must be {rule}")


def _numeric(call: str, name: str, value: Any, *, schedule: bool) -> np.ndarray | None:
    """``value`` as a numpy array, None when it cannot be known now (traced, a schedule);
    a TypeError naming the argument when it is not a number at all."""
    if isinstance(value, jax.core.Tracer):
        return None
    if callable(value) and not isinstance(value, (np.ndarray, jax.Array)):
        if schedule:
            return None
        _fail(call, name, value, f"a number or an array, got a function ({type(value).__name__})", TypeError)
    what = "a number, an array or a schedule" if schedule else "a number or an array"
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        _fail(call, name, value, f"{what}, got {type(value).__name__}", TypeError)
    if isinstance(value, numbers.Number):
        return np.asarray(value)
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - whatever numpy refuses is not a number
        array = None
    if array is None or not (np.issubdtype(array.dtype, np.number)):
        _fail(call, name, value, f"{what}, got {type(value).__name__}", TypeError)
    return array


@dataclasses.dataclass(frozen=True)
class Interval:
    """``low <= x <= high`` (``<`` where the end is open), element-wise for arrays."""

    low: float
    high: float = float("inf")
    low_open: bool = False
    high_open: bool = False
    schedule: bool = False  # a schedule (``step -> value``) is accepted too

    def check(self, call: str, name: str, value: Any) -> None:
        x = _numeric(call, name, value, schedule=self.schedule)
        if x is None:
            return
        if np.iscomplexobj(x):
            _fail(call, name, value, f"real, got {x.dtype}", TypeError)
        above = np.all(x > self.low) if self.low_open else np.all(x >= self.low)
        below = np.all(x < self.high) if self.high_open else np.all(x <= self.high)
        if not (above and below):  # NaN fails both
            _fail(call, name, value, self.rule())

    def rule(self) -> str:
        if self.low == float("-inf") and self.high == float("inf"):
            return "a number, not NaN"  # the only value that fails an unbounded interval
        if self.high == float("inf"):
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a few allowed values."""

    values: tuple

    def check(self, call: str, name: str, value: Any) -> None:
        if value not in self.values:
            _fail(call, name, value, "one of " + ", ".join(repr(v) for v in self.values))


@dataclasses.dataclass(frozen=True)
class InexactDtype:
    """A floating or complex dtype (``None``: the params' own)."""

    def check(self, call: str, name: str, value: Any) -> None:
        try:
            dtype = jnp.dtype(value)
        except TypeError:
            _fail(call, name, value, "a floating or complex dtype", TypeError)
        if not jnp.issubdtype(dtype, jnp.inexact):
            _fail(call, name, value, "a floating or complex dtype")


@dataclasses.dataclass(frozen=True)
class Integer:
    """An integer ``>= low`` (a Python or numpy integer, or a 0-d integer array; with
    ``schedule``, a function ``step -> integer`` too); a traced value is not checked."""

    low: int
    schedule: bool = False

    def check(self, call: str, name: str, value: Any) -> None:
        if isinstance(value, jax.core.Tracer) or (self.schedule and callable(value)):
            return
        what = "an integer or a schedule" if self.schedule else "an integer"
        shape_ok = np.ndim(value) == 0 if isinstance(value, (np.ndarray, jax.Array)) else True
        integral = isinstance(value, (numbers.Integral, np.integer)) or (
            isinstance(value, (np.ndarray, jax.Array)) and jnp.issubdtype(value.dtype, jnp.integer)
        )
        if isinstance(value, (bool, np.bool_)) or not integral or not shape_ok:
            _fail(call, name, value, f"{what}, got {type(value).__name__}", TypeError)
        if int(value) < self.low:
            _fail(call, name, value, f">= {self.low}")


@dataclasses.dataclass(frozen=True)
class IsTransformation:
    """A gradient transformation: anything with ``init`` and ``update`` (gradtx's or optax's)."""

    def check(self, call: str, name: str, value: Any) -> None:
        if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
            _fail(call, name, value, f"a gradient transformation (init, update), got {type(value).__name__}", TypeError)


Constraint = Any  # Interval | OneOf | InexactDtype: anything with check(call, name, value)

# The hyperparameter types used across gradtx (and by anyone declaring a transformation).
LearningRate = Annotated[ScalarOrSchedule, Interval(0.0, schedule=True)]
"""A learning rate: a number or array >= 0, or a schedule ``step -> lr``."""
NonNegativeOrSchedule = Annotated[ScalarOrSchedule, Interval(0.0, schedule=True)]
"""A number or array >= 0, or a schedule (a weight decay)."""
Decay = Annotated[ArrayLike, Interval(0.0, 1.0)]
"""An averaging factor in [0, 1]."""
DecayBelowOne = Annotated[ArrayLike, Interval(0.0, 1.0, high_open=True)]
"""An averaging factor in [0, 1): one whose bias correction ``1 - decay^t`` is never 0."""
NonNegative = Annotated[ArrayLike, Interval(0.0)]
"""A number or array >= 0 (an ``eps``, an initial value)."""
Positive = Annotated[ArrayLike, Interval(0.0, low_open=True)]
"""A number or array > 0."""
Real = Annotated[ArrayLike, Interval(float("-inf"))]
"""Any real number or array."""
AccumulatorDtype = Annotated[Optional[DTypeLike], InexactDtype()]
"""A floating or complex dtype for a state field, or ``None`` for the params' own."""


def constraint_of(hint: Any) -> tuple[Constraint | None, bool]:
    """The constraint carried by a type hint, and whether ``None`` is allowed
    (``Optional[Decay]``)."""
    optional = False
    args = getattr(hint, "__args__", None)
    origin = getattr(hint, "__origin__", None)
    if origin is not None and args and type(None) in args and not hasattr(hint, "__metadata__"):
        optional = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    for meta in getattr(hint, "__metadata__", ()):
        if hasattr(meta, "check"):
            if isinstance(meta, InexactDtype):
                optional = True  # None means: the params' dtype
            return meta, optional
    return None, optional
