"""Tree helpers: structure checks with errors that name the first differing leaf path."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx.base import TreeMismatchError
from gradtx.numerics import real_dtype

_FIX = ("The state was probably built by init() on a different params tree: call "
        "init(params) on the exact tree you pass to update().")


def _paths(tree: Any) -> tuple[list[str], list[Any], Any]:
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in leaves_with_path]
    return paths, [leaf for _, leaf in leaves_with_path], treedef


def check_match(updates: Any, other: Any, *, where: str, what: str) -> None:
    """Raise ``TreeMismatchError`` unless ``other`` has the structure and leaf shapes of
    ``updates``. Runs at trace time only (structure and shapes are static)."""
    u_leaves, u_def = jax.tree.flatten(updates)
    o_leaves, o_def = jax.tree.flatten(other)
    if u_def == o_def and all(jnp.shape(u) == jnp.shape(o) for u, o in zip(u_leaves, o_leaves)):
        return  # the common case: no leaf paths needed
    u_paths, u_leaves, u_def = _paths(updates)
    o_paths, o_leaves, o_def = _paths(other)
    if u_def != o_def:
        for i, (up, op) in enumerate(zip(u_paths, o_paths)):
            if up != op:
                raise TreeMismatchError(
                    f"gradtx.{where}: {what} does not match the updates at leaf path {up} "
                    f"(the {what} has {op} there). {_FIX}")
        if len(u_paths) != len(o_paths):
            longer, name = (u_paths, "updates") if len(u_paths) > len(o_paths) else (o_paths, what)
            raise TreeMismatchError(
                f"gradtx.{where}: {what} does not match the updates: leaf path "
                f"{longer[min(len(u_paths), len(o_paths))]} is only in the {name}. {_FIX}")
        raise TreeMismatchError(
            f"gradtx.{where}: {what} has a different tree structure than the updates "
            f"(same leaf paths, different node types): {o_def} vs {u_def}. {_FIX}")
    for path, u, o in zip(u_paths, u_leaves, o_leaves):
        if jnp.shape(u) != jnp.shape(o):
            raise TreeMismatchError(
                f"gradtx.{where}: {what} does not match the updates at leaf path {path}: "
                f"updates have shape {jnp.shape(u)}, the {what} has {jnp.shape(o)}. {_FIX}")


def zeros_like(tree: Any, dtype=None) -> Any:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def full_like(tree: Any, value, dtype=None) -> Any:
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=dtype), tree)


def real_full_like(tree: Any, value: float = 0.0) -> Any:
    """A tree of arrays shaped like ``tree``, filled with ``value``, in each leaf's real dtype
    (float32 for complex64): the home of every ``|u|^2``-type state."""
    return jax.tree.map(lambda x: jnp.full(jnp.shape(x), value, real_dtype(jnp.asarray(x).dtype)), tree)


def cast(tree: Any, dtype) -> Any:
    """Cast every leaf to ``dtype``; ``dtype=None`` leaves the tree as it is."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def cast_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, y: x.astype(jnp.asarray(y).dtype), tree, like)
