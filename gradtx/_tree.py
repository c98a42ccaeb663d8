"""Tree helpers: state fields shaped like the params."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx.numerics import real_dtype, state_dtype


def zeros_like(tree: Any, dtype=None) -> Any:
    """Zeros shaped like each leaf, in ``numerics.state_dtype(leaf's dtype, dtype)`` (the
    leaf's own for ``dtype=None``; a real ``dtype`` keeps a complex leaf complex)."""
    if dtype is None:
        return jax.tree.map(jnp.zeros_like, tree)
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=state_dtype(jnp.result_type(x), dtype)), tree)


def real_full_like(tree: Any, value: jax.typing.ArrayLike = 0.0) -> Any:
    """A tree of arrays shaped like ``tree``, filled with ``value``, in each leaf's real dtype
    (float32 for complex64): the home of every ``|u|^2``-type state. ``full_like`` keeps a
    sharded leaf's sharding (an eager init on sharded params gives sharded state)."""
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=real_dtype(jnp.asarray(x).dtype)), tree)


def real_state(tree: Any, dtype=None, value: jax.typing.ArrayLike = 0.0) -> Any:
    """A ``|u|^2``-type state field with a dtype argument: ``real_full_like(tree, value)``
    cast to the real counterpart of ``dtype`` (``None``: each leaf's real dtype)."""
    return cast(real_full_like(tree, value), None if dtype is None else real_dtype(dtype))


def cast(tree: Any, dtype) -> Any:
    """Cast every leaf to ``numerics.state_dtype(leaf's dtype, dtype)`` (a real ``dtype``
    keeps a complex leaf complex); ``dtype=None`` leaves the tree as it is."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(state_dtype(x.dtype, dtype)), tree)


def cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: x.astype(jnp.asarray(y).dtype), tree, like)


def cast_real_like(tree: Any, like: Any) -> Any:
    """Cast each leaf of ``tree`` to the real dtype of ``like``'s leaf (float32 for complex64):
    a ``|u|^2`` statistic handed on in the updates' precision."""
    return jax.tree.map(lambda x, y: x.astype(real_dtype(jnp.asarray(y).dtype)), tree, like)
