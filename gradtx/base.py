"""The contract every gradtx transformation follows.

A transformation is a pair of pure functions::

    init(params) -> state
    update(updates, state, params=None, **extra) -> (new_updates, new_state)

``GradientTransformation`` is a two-field NamedTuple ``(init, update)``, the same shape
as optax's, so gradtx transformations drop into ``optax.chain``, Flax's ``TrainState``
and ``nnx.Optimizer``, and optax transformations drop into ``gradtx.chain``. The updates
that come out are *added* to the params (``apply_updates``).

Errors: everything gradtx raises while building or running a transformation names the
call the user made (``gradtx.adam(b1=1.5): ...``, ``gradtx.rmsprop > scale_by_stddev:
...``). ``UpdateError`` and its subclass ``TreeMismatchError`` carry the chain of stages
they were raised in, so the message can name the optimizer and the stage at fault.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

PyTree = Any
Params = PyTree
"""The parameters: any pytree of arrays (``None`` leaves pass through)."""
Updates = PyTree
"""Gradients going in, updates coming out: a pytree shaped like the params."""
OptState = PyTree
"""A transformation's state: for gradtx, one record of named fields (``AdamState``)."""
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
"""``step -> value``, the step counted from 0."""
ScalarOrSchedule = Union[float, jax.typing.ArrayLike, Schedule]
"""A number, an array or a schedule (a learning rate, a weight decay)."""


class UpdateError(ValueError):
    """An ``update`` call that cannot run (wrong state, missing params, ...).

    ``stages`` lists the calls it was raised in, outermost first (``("rmsprop",
    "scale_by_stddev", ...)``); the message names the first two: the call the user made
    and its stage at fault."""

    def __init__(self, detail: str, stages: tuple[str, ...] = ()):
        self.detail = detail
        self.stages = tuple(stages)
        super().__init__(self._message())

    def _message(self) -> str:
        if not self.stages:
            return self.detail
        return f"gradtx.{' > '.join(self.stages[:2])}: {self.detail}"

    def within(self, stage: str) -> UpdateError:
        """The same error, raised one stage further out."""
        return type(self)(self.detail, (stage, *self.stages))


class TreeMismatchError(UpdateError):
    """Updates, state and params do not have the same tree structure or leaf shapes, or a
    leaf cannot be stepped: integer params or gradients, a complex gradient for a real param."""


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
    """The state of a transformation that keeps nothing."""


def apply_updates(params: Params, updates: Updates) -> Params:
    """``p -> p + u``, each result cast back to its param's dtype; ``None`` leaves stay ``None``."""
    return jax.tree.map(
        lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params,
        updates,
        is_leaf=lambda x: x is None,
    )
