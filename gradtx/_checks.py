"""Hyperparameter checks made when a transformation is built.

Each message names the call and the argument, e.g.
``gradtx.adam(b1=1.5): b1 must be in [0, 1)``. Traced values and schedules are not
checked (their value is unknown when the transformation is built).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value: Any) -> np.ndarray | None:
    """The value as a numpy array, or None when it cannot be known now."""
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not array-like is not checked
        return None


def _fail(where: str, name: str, value: Any, rule: str) -> None:
    raise ValueError(f"gradtx.{where}({name}={value!r}): {name} must be {rule}")


def in_interval(where: str, name: str, value: Any, low: float = 0.0, high: float = 1.0, *,
                high_open: bool = False) -> None:
    """``low <= value <= high`` (``< high`` with ``high_open``)."""
    x = _concrete(value)
    if x is None:
        return
    ok = np.all(x >= low) and (np.all(x < high) if high_open else np.all(x <= high))
    if not ok:
        _fail(where, name, value, f"in [{low:g}, {high:g}{')' if high_open else ']'}")


def non_negative(where: str, name: str, value: Any) -> None:
    x = _concrete(value)
    if x is not None and not np.all(x >= 0):
        _fail(where, name, value, ">= 0")


def positive(where: str, name: str, value: Any) -> None:
    x = _concrete(value)
    if x is not None and not np.all(x > 0):
        _fail(where, name, value, "> 0")


def is_float_dtype(where: str, name: str, value: Any) -> None:
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        _fail(where, name, value, "a floating or complex dtype")
    if not jnp.issubdtype(dtype, jnp.inexact):
        _fail(where, name, value, "a floating or complex dtype")
