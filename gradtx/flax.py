"""The fast step inside an unmodified Flax training loop.

``Optimizer`` is ``flax.nnx.Optimizer`` and ``TrainState`` is
``flax.training.train_state.TrainState``, but their update runs
``gradtx.update_and_apply(tx)`` (the whole step as one loop per leaf, see
``gradtx/perf/fused.py``) instead of ``tx.update`` followed by ``apply_updates``. Swap the
class and nothing else::

    optimizer = gradtx.flax.Optimizer(model, gradtx.adam(1e-3), wrt=nnx.Param)   # was nnx.Optimizer
    state = gradtx.flax.TrainState.create(apply_fn=..., params=..., tx=gradtx.adam(1e-3))

The numbers are those of the plain classes (to an ulp: the fused loop may contract a
multiply-add into an FMA where the plain one does not), and the state is the same record,
so checkpoints written by either class restore into the other. Shardings pass through:
the step's outputs are sharded like its inputs.

The one-loop form needs a backend that fuses sibling outputs: GPU, or XLA:CPU after
``gradtx.enable_cpu_multi_output_fusion()`` (called before JAX starts). Elsewhere, and
outside ``jit``, the update is the plain one.

flax is not a dependency of gradtx: import this module as ``gradtx.flax`` (``from
gradtx.flax import Optimizer``) where flax is installed.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
from flax import nnx
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training import train_state

from gradtx.perf.fused import update_and_apply

__all__ = ["Optimizer", "TrainState"]

M = TypeVar("M")


def _check_transformation(call: str, tx: Any) -> None:
    """``TypeError`` naming ``call`` unless ``tx`` has ``init`` and ``update``; a function
    (``update_and_apply(tx)`` is one) gets a hint to pass the transformation itself."""
    if hasattr(tx, "init") and hasattr(tx, "update"):
        return
    hint = ""
    if callable(tx):
        hint = (
            ": a step function such as gradtx.update_and_apply(tx) cannot be initialised; pass the "
            "transformation tx itself, this class runs update_and_apply(tx) for you"
        )
    got = getattr(tx, "__qualname__", type(tx).__name__)
    raise TypeError(f"{call}: tx must be a gradient transformation (with init and update), got {got}{hint}")


def _traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


class Optimizer(nnx.Optimizer[M]):
    """``flax.nnx.Optimizer`` whose ``update`` is one ``gradtx.update_and_apply`` step.

    The same constructor ``(model, tx, *, wrt, graph=None)``, attributes (``step``,
    ``tx``, ``opt_state``, ``wrt``) and state; ``update(model, grads, **kwargs)`` returns
    the updates as ``nnx.Optimizer.update`` does: under ``jit`` they come from their own
    copy of ``tx.update``, which XLA removes when the train step does not use them.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import gradtx
    >>> from gradtx.flax import Optimizer
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = Optimizer(model, gradtx.adam(0.1), wrt=nnx.Param)
    >>> @nnx.jit
    ... def train_step(model, optimizer, x, y):
    ...     grads = nnx.grad(lambda m: ((m(x) - y) ** 2).mean())(model)
    ...     optimizer.update(model, grads)
    >>> x, y = jnp.ones((4, 2)), jnp.zeros((4, 1))
    >>> for _ in range(3):
    ...     train_step(model, optimizer, x, y)
    >>> int(optimizer.step[...]), type(optimizer.opt_state).__name__
    (3, 'AdamState')
    """

    def __init__(self, model: M, tx: Any, *, wrt: Any, graph: bool | None = None):
        _check_transformation("gradtx.flax.Optimizer(model, tx)", tx)
        super().__init__(model, tx, wrt=wrt, graph=graph)

    def update(self, model: M, grads: Any, /, **kwargs: Any) -> Any:
        """Update the model's ``wrt`` variables and the state from ``grads`` (and
        ``kwargs`` for transformations that take extra arguments); return the updates."""
        params = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        if not _traced(grad_arrays):  # eagerly there is nothing to fuse: the plain step
            return super().update(model, grads, **kwargs)
        opt_state, extra = nnx.as_pure(self.opt_state), nnx.as_pure(kwargs)
        new_params, new_opt_state = update_and_apply(self.tx)(params, opt_state, grad_arrays, **extra)
        updates, _ = self.tx.update(grad_arrays, opt_state, params, **extra)
        nnx.update(model, new_params)
        nnx.update(self.opt_state, nnx.state(new_opt_state, graph=self.graph))
        self.step[...] += 1
        return updates


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` whose ``apply_gradients`` is one
    ``gradtx.update_and_apply`` step (the same fields, the same ``opt_state`` record).

    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import gradtx
    >>> from gradtx.flax import TrainState
    >>> model = nn.Dense(1)
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 2)))
    >>> state = TrainState.create(apply_fn=model.apply, params=params, tx=gradtx.sgd(0.1, momentum=0.9))
    >>> @jax.jit
    ... def train_step(state, x, y):
    ...     grads = jax.grad(lambda p: ((state.apply_fn(p, x) - y) ** 2).mean())(state.params)
    ...     return state.apply_gradients(grads=grads)
    >>> for _ in range(3):
    ...     state = train_step(state, jnp.ones((4, 2)), jnp.zeros((4, 1)))
    >>> int(state.step), type(state.opt_state).__name__
    (3, 'SgdState')
    """

    @classmethod
    def create(cls, *, apply_fn: Any, params: Any, tx: Any, **kwargs: Any) -> TrainState:
        _check_transformation("gradtx.flax.TrainState.create(tx=...)", tx)
        return super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
        """``step + 1``, the params and ``opt_state`` after one step on ``grads``, and
        ``kwargs`` replaced, as ``TrainState.apply_gradients`` (fp8 gradients included)."""
        overwrite = OVERWRITE_WITH_GRADIENT in grads
        params = self.params["params"] if overwrite else self.params
        new_params, new_opt_state = update_and_apply(self.tx)(
            params, self.opt_state, grads["params"] if overwrite else grads
        )
        if overwrite:
            new_params = {"params": new_params, OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT]}
        return self.replace(step=self.step + 1, params=new_params, opt_state=new_opt_state, **kwargs)
