"""The contract every gradtx transformation follows.

A transformation is a pair of pure functions::

    init(params) -> state
    update(updates, state, params=None, **extra) -> (new_updates, new_state)

``GradientTransformation`` is a two-field NamedTuple ``(init, update)``, the same shape
as optax's, so gradtx transformations drop into ``optax.chain``, Flax's ``TrainState``
and ``nnx.Optimizer``, and optax transformations drop into ``gradtx.chain``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScalarOrSchedule = Union[float, jax.typing.ArrayLike, Schedule]


class TreeMismatchError(ValueError):
    """Updates, state and params do not have the same tree structure or leaf shapes."""


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure gradient transformation: ``init(params) -> state`` and
    ``update(updates, state, params=None, **extra) -> (updates, state)``."""

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def init_empty_state(params: Params) -> EmptyState:
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """``u -> u``: passes updates through unchanged."""

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        return updates, state

    return GradientTransformation(init_empty_state, update_fn)


def stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """``u -> fn(u, params)``: a transformation without state from a function of the
    whole updates tree (and the params, which may be ``None``)."""

    def update_fn(updates, state, params=None, **extra):
        del extra
        return fn(updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``p -> p + u``, each result cast back to its param's dtype; ``None`` leaves stay ``None``."""
    return jax.tree.map(
        lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params,
        updates,
        is_leaf=lambda x: x is None,
    )
