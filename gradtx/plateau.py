"""Reduce the learning rate when the loss stops improving (optax.contrib.reduce_on_plateau)."""

from __future__ import annotations

from typing import Annotated, Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx import _tree
from gradtx.base import Params, UpdateError
from gradtx.hyperparams import Interval, NonNegative, _fail
from gradtx.numerics import real_dtype, safe_increment, zero_count
from gradtx.transform import Field, Step, Transformation, declare, primitive
from gradtx.wrappers import _Integer

__all__ = ["reduce_on_plateau"]

Factor = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True, high_open=True)]
"""A reduction factor in (0, 1)."""
RelativeTolerance = Annotated[ArrayLike, Interval(0.0, 1.0)]
"""A relative tolerance in [0, 1]."""
Count = Annotated[ArrayLike, _Integer(0)]
"""A number of values >= 0."""
PositiveCount = Annotated[ArrayLike, _Integer(1)]
"""A number of values >= 1."""


def _floating_dtypes(params: Params) -> list[Any]:
    dtypes = [real_dtype(jnp.asarray(p).dtype) for p in jax.tree.leaves(params)]
    return [d for d in dtypes if jnp.issubdtype(d, jnp.floating)] or [jnp.dtype(jnp.float32)]


def _lowest(params: Params) -> Any:
    return min(_floating_dtypes(params), key=lambda d: jnp.finfo(d).bits)


def _highest(params: Params) -> Any:
    return max(_floating_dtypes(params), key=lambda d: jnp.finfo(d).bits)


@declare
def reduce_on_plateau(
    factor: Factor = 0.1,
    patience: Count = 10,
    rtol: RelativeTolerance = 1e-4,
    atol: NonNegative = 0.0,
    cooldown: Count = 0,
    accumulation_size: PositiveCount = 1,
    min_scale: NonNegative = 0.0,
) -> Transformation:
    """``scale = max(factor * scale, min_scale)`` after ``patience`` values without improvement ; ``u -> scale * u``.

    ``update(grads, state, params, value=loss)``: the values are averaged over
    ``accumulation_size`` calls (``avg_value``); each average improves when it is below
    ``(1 - rtol) * best_value - atol`` (then ``best_value = avg``, ``plateau_count = 0``),
    otherwise ``plateau_count`` grows; when it reaches ``patience`` the scale is reduced
    and ``cooldown`` averages follow in which ``plateau_count`` stays 0. Chain it after an
    optimizer to scale its learning rate: ``chain(adam(lr), reduce_on_plateau())``.

    As optax.contrib 0.2.8 (and Keras's ``ReduceLROnPlateau``): ``patience = p`` reduces
    at the ``p``-th average without improvement, where ``torch.optim.lr_scheduler.
    ReduceLROnPlateau(patience=p - 1)`` does; ``threshold_mode="rel"`` is ``rtol =
    threshold, atol = 0``, ``"abs"`` is ``rtol = 0, atol = threshold``. Differs from optax:
    ``patience = 0`` reduces at every average without improvement, as ``patience = 1``
    (optax compares ``plateau_count == patience``, which at 0 holds when the average
    *improves*: optax reduces at every improvement).

    Args:
      factor: the reduction factor, in (0, 1).
      patience: the averages without improvement that trigger a reduction.
      rtol: the relative improvement that counts, in [0, 1] (not 0 together with ``atol``).
      atol: the absolute improvement that counts, >= 0.
      cooldown: the averages after a reduction in which no reduction is counted.
      accumulation_size: the values averaged before each decision (>= 1).
      min_scale: the scale is never reduced below it.

    State: ``scale, best_value, plateau_count, cooldown_count, accumulation_count,
    avg_value`` (optax's; ``accumulation_count`` is optax's ``count``: the values averaged
    so far, not the step count).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.reduce_on_plateau(factor=0.5, patience=2)
    >>> state = tx.init(jnp.zeros(1))
    >>> scales = []
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]:
    ...     _, state = tx.update(jnp.ones(1), state, value=loss)
    ...     scales.append(float(state.scale))
    >>> scales
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    if isinstance(rtol, (int, float)) and isinstance(atol, (int, float)) and rtol == 0 and atol == 0:
        _fail("reduce_on_plateau", "rtol", rtol, "> 0 when atol is 0 (no improvement would ever count)")

    def decide(state: dict) -> dict:
        avg = state["avg_value"]
        improved = avg < (1 - rtol) * state["best_value"] - atol
        best = jnp.where(improved, avg.astype(state["best_value"].dtype), state["best_value"])
        plateau = jnp.where(improved, 0, safe_increment(state["plateau_count"]))
        reduce = jnp.logical_and(jnp.logical_not(improved), plateau >= patience)

        def in_cooldown():
            return jnp.asarray(0, jnp.int32), state["scale"], state["cooldown_count"] - 1

        def not_in_cooldown():
            scale = jnp.maximum(jnp.where(reduce, state["scale"] * factor, state["scale"]), min_scale)
            cooling = jnp.where(reduce, cooldown, 0).astype(jnp.int32)
            return jnp.where(reduce, 0, plateau).astype(jnp.int32), scale.astype(state["scale"].dtype), cooling

        plateau, scale, cooling = jax.lax.cond(state["cooldown_count"] > 0, in_cooldown, not_in_cooldown)
        return {
            "scale": scale,
            "best_value": best,
            "plateau_count": plateau,
            "cooldown_count": cooling,
            "accumulation_count": zero_count(),
            "avg_value": jnp.zeros([], avg.dtype),
        }

    def apply(updates, state, step: Step):
        if "value" not in step.extra:
            raise UpdateError(
                "update() needs the loss as the keyword argument `value`: call update(grads, state, params, value=loss)"
            )
        n = state["accumulation_count"]
        new_n = safe_increment(n)
        avg = (n * state["avg_value"] + jnp.asarray(step.extra["value"]).astype(state["avg_value"].dtype)) / new_n
        new = {**state, "avg_value": avg.astype(state["avg_value"].dtype), "accumulation_count": new_n}
        new = jax.lax.cond(new_n == accumulation_size, decide, lambda s: s, new)
        return _tree.cast_like(jax.tree.map(lambda g: new["scale"] * g, updates), updates), new

    def scalar(value, dtype_of) -> Field:
        return Field(lambda params: jnp.asarray(value, dtype_of(params)), like_params=False)

    count = Field(lambda params: zero_count(), like_params=False)
    return primitive(
        apply,
        {
            "scale": scalar(1.0, _lowest),
            "best_value": scalar(float("inf"), _highest),
            "plateau_count": count,
            "cooldown_count": count,
            "accumulation_count": count,
            "avg_value": scalar(0.0, _highest),
        },
    )
