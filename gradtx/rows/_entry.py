"""The registry's row type and the helpers that write rows (see ``gradtx/registry.py``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, cast

import jax
import jax.numpy as jnp

BF16 = jnp.bfloat16


def parity_schedule(count):
    """The learning-rate schedule of the parity grids (both libraries get the same one).

    (No ``0.99**count``: eagerly, a float to the power of a concrete integer array compiles
    one kernel per exponent value.)"""
    return 0.05 * jnp.exp(-0.01 * count) + 0.01 * jnp.cos(0.1 * count)


def ndim_above_one(params):
    """A weight-decay mask of the parity grids: matrices and higher, not vectors or scalars."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


@dataclasses.dataclass(frozen=True)
class Bad:
    """Arguments that must fail at construction, the error type, and the exact message."""

    kwargs: dict
    error: type
    message: str


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # optimizer, primitive, combinator, schedule, contract, hyperparameter, performance
    section: str  # the docs page that lists it
    optax: Optional[str] = None  # the twin's name in optax (None: optax has no such thing)
    optax_extra: dict = dataclasses.field(default_factory=dict)
    update_extra: dict = dataclasses.field(default_factory=dict)  # keyword arguments update needs (``value``)
    # update needs the objective itself (``value_fn``, L-BFGS's line search): the generic
    # dtype and Flax runs skip the row, and its own tests run it in optax's loop
    needs_objective: bool = False
    grid: tuple = ()  # parity grid: keyword arguments for both libraries
    state: Optional[tuple] = None  # the state fields at grid[0]
    absent: dict = dataclasses.field(default_factory=dict)  # optax field -> why gradtx keeps none
    renames: dict = dataclasses.field(default_factory=dict)  # gradtx field -> optax field
    # dtype argument -> the state field it sets, or a tuple of the fields (Adadelta's
    # ``accumulator_dtype`` sets ``e_g`` and ``e_x``); ``dtype_fields`` reads it
    dtypes: dict = dataclasses.field(default_factory=dict)
    bad: tuple = ()
    reference: str = ""  # for transformations without an optax twin: what they are tested against

    @property
    def dtype_fields(self) -> dict[str, tuple[str, ...]]:
        """``dtypes`` with every argument's fields as a tuple: dtype argument -> the state
        fields it sets."""
        return {arg: (fields,) if isinstance(fields, str) else tuple(fields) for arg, fields in self.dtypes.items()}

    @property
    def obj(self) -> Any:
        import gradtx

        return getattr(gradtx, self.name)

    def optax_factory(self, optax_module: Any) -> Callable[..., Any]:
        """``kwargs -> the optax twin``, given the optax module (a test dependency)."""
        # asked only of rows with an optax twin; a dotted name reaches into a submodule
        # (``contrib.muon`` is ``optax.contrib.muon``: the caller imports ``optax.contrib``)
        twin = functools.reduce(getattr, cast(str, self.optax).split("."), optax_module)
        return lambda **kwargs: twin(**kwargs, **self.optax_extra)


def optimizer_row(name: str, section: str, grid, state, **kw) -> Entry:
    return Entry(name, "optimizer", section, optax=kw.pop("optax", name), grid=tuple(grid), state=tuple(state), **kw)


def primitive_row(name: str, section: str, grid=(), state=(), **kw) -> Entry:
    return Entry(name, "primitive", section, grid=tuple(grid), state=tuple(state), **kw)


def bad_args(error: type = ValueError, message: str = "", **kwargs) -> Bad:
    return Bad(kwargs, error, message)
