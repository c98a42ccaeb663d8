"""Tree utilities on optimizer states, optax.tree's names: ``get``, ``get_all_with_path``, ``set``, ``map_params``.

A gradtx state is a flat record (``AdamState(count, mu, nu)``); wrappers keep their inner
state whole in one field (``MaskedState(inner_state)``, ``PartitionState(inner_states)``),
and ``named_chain`` keeps a dict of its stages' states. These functions find and replace
values in any such nesting by name: a NamedTuple field (``"mu"``), a dict key (a
``named_chain`` stage, a partition label) or a record's type name (``"AdamState"``), with
optax 0.2.8's semantics, so that code written against ``optax.tree`` works on gradtx states::

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.masked(gradtx.adam(0.1), {"w": True, "b": False})
    >>> state = opt.init({"w": jnp.zeros(2), "b": jnp.zeros(1)})
    >>> int(gradtx.tree.get(state, "count"))
    0
    >>> state = gradtx.tree.set(state, count=jnp.asarray(7))
    >>> int(state.inner_state.count)
    7

``map_params`` maps a function over every params-shaped tree of a state (to build sharding
specs, or cast the moments). Where optax needs ``is_leaf=lambda x: isinstance(x,
optax.MaskedNode)`` for masked states, gradtx's leaves masked-out leaves alone by itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax

__all__ = ["NamedTupleKey", "get", "get_all_with_path", "map_params", "set"]

KeyPath = tuple[Any, ...]
Filtering = Callable[[KeyPath, Any], bool]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry for a field of a record: ``AdamState.mu`` (optax's ``NamedTupleKey``), so
    that a ``filtering(path, value)`` can tell two fields of one name in different records apart."""

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


def _is_record(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _children(path: KeyPath, node: Any) -> tuple[list[tuple[KeyPath, Any]], Any]:
    """The direct children of a pytree node with their paths, and the treedef to rebuild it
    (a record's fields get a ``NamedTupleKey``); ``([], None)`` for a leaf."""
    treedef: Any  # jaxlib ships no type stubs for PyTreeDef
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # node is itself a leaf
        return [], None
    if _is_record(node):
        entries = [(*path, NamedTupleKey(type(node).__name__, f)) for f in node._fields]
        return [(p, child) for p, (_, child) in zip(entries, flat)], treedef
    return [((*path, *key), child) for key, child in flat], treedef


def _key_of(entry: Any) -> Any:
    """The name a path entry is found by: a record field, a dict key; None for the rest."""
    if isinstance(entry, NamedTupleKey):
        return entry.name
    if isinstance(entry, jax.tree_util.DictKey):
        return entry.key
    return None


def key_name(entry: Any) -> str:
    """A path entry as text: a dict key, an attribute's or a record field's name, an index."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _matches(key: Any, wanted: Any) -> bool:
    try:
        return bool(key == wanted)
    except Exception:  # noqa: BLE001 - a key that cannot be compared with a string matches nothing
        return False


def get_all_with_path(tree: Any, key: Any, filtering: Optional[Filtering] = None) -> list[tuple[KeyPath, Any]]:
    """Every ``(path, value)`` in ``tree`` whose field, dict key or record type name is ``key``
    (``optax.tree.get_all_with_path``); ``filtering(path, value)`` keeps some of them.

    Values found inside a found value are listed too (a ``count`` inside a wrapper's
    ``inner_state``).
    """
    found: list[tuple[KeyPath, Any]] = []

    def visit(path: KeyPath, node: Any) -> None:
        if _is_record(node) and type(node).__name__ == key:
            found.append((path, node))
        children, _ = _children(path, node)
        for child_path, child in children:
            if _matches(_key_of(child_path[-1]), key):
                found.append((child_path, child))
        for child_path, child in children:
            visit(child_path, child)

    visit((), tree)
    return [(p, v) for p, v in found if filtering is None or filtering(p, v)]


def get(tree: Any, key: Any, default: Any = None, filtering: Optional[Filtering] = None) -> Any:
    """The one value in ``tree`` named ``key`` (a field, a dict key or a record type name),
    ``default`` when there is none; a ``KeyError`` when there are several
    (``optax.tree.get``): ``gradtx.tree.get(state, "mu")``."""
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = ", ".join(jax.tree_util.keystr(p) or "<root>" for p, _ in found)
        raise KeyError(f"gradtx.tree.get: found {len(found)} values named {key!r} (at {paths}); pass filtering=")
    return found[0][1] if found else default


def set(tree: Any, filtering: Optional[Filtering] = None, /, **values: Any) -> Any:
    """A copy of ``tree`` with the values named by the keywords replaced (``optax.tree.set``):
    ``gradtx.tree.set(state, count=jnp.asarray(0))``. Each name must be found (after
    ``filtering(path, value)``), else ``KeyError``; every place it is found is replaced."""
    for key in values:
        if not get_all_with_path(tree, key, filtering):
            where = " that passes the filtering" if filtering is not None else ""
            raise KeyError(f"gradtx.tree.set: the tree has no value named {key!r}{where}")
    keep = filtering or (lambda path, value: True)

    def rebuild(path: KeyPath, node: Any) -> Any:
        if _is_record(node) and type(node).__name__ in values and keep(path, node):
            return values[type(node).__name__]
        children, treedef = _children(path, node)
        if treedef is None:
            return node
        new = []
        for child_path, child in children:
            name = _key_of(child_path[-1])
            if isinstance(name, str) and name in values and keep(child_path, child):
                new.append(values[name])
            else:
                new.append(rebuild(child_path, child))
        return jax.tree_util.tree_unflatten(treedef, new)

    return rebuild((), tree)


class _ParamsPlaceholder:
    """Stands for the params in ``map_params``: ``init(placeholder)`` puts one wherever the
    state holds a params-shaped tree. A pytree node without children, so that ``jax.tree.map``
    over it (``zeros_like``) returns it. Wrappers pass it through unmasked (``is_placeholder``)."""

    def __repr__(self) -> str:
        return "<params>"


jax.tree_util.register_pytree_node(_ParamsPlaceholder, lambda p: ((), None), lambda aux, children: _ParamsPlaceholder())


def is_placeholder(x: Any) -> bool:
    """Whether ``x`` is the params placeholder of ``gradtx.tree.map_params`` or of
    ``optax.tree.map_params`` (both are classes named ``_ParamsPlaceholder``)."""
    return type(x).__name__ == "_ParamsPlaceholder"


def _is_masked_node(x: Any) -> bool:
    return type(x).__name__ == "MaskedNode" and _is_record(x)


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Optional[Callable[[Any], Any]] = None,
    is_leaf: Optional[Callable[[Any], bool]] = None,
) -> Any:
    """``f`` applied leaf by leaf to every params-shaped tree in ``state`` (with the leaves of
    ``rest``, trees shaped like the params, as further arguments); ``transform_non_params``
    to everything else (``optax.tree.map_params``).

    ``initable`` is the transformation (or its ``init``): ``init`` is called on a placeholder
    to find where the state holds params-shaped trees. Masked-out leaves (``MaskedNode``) are
    left as they are, with no ``is_leaf`` needed.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adam(0.1)
    >>> params = {"w": jnp.ones(2)}
    >>> state = gradtx.tree.map_params(opt, lambda x: x.astype(jnp.bfloat16), opt.init(params))
    >>> state.mu["w"].dtype, state.count.dtype
    (dtype(bfloat16), dtype('int32'))
    """
    init = initable.init if hasattr(initable, "init") else initable
    marked = init(_ParamsPlaceholder())
    stop = (lambda x: _is_masked_node(x) or is_leaf(x)) if is_leaf is not None else _is_masked_node

    def params_leaf(value: Any, *others: Any) -> Any:
        return value if _is_masked_node(value) else f(value, *others)

    def visit(mark: Any, value: Any) -> Any:
        if is_placeholder(mark):
            return jax.tree.map(params_leaf, value, *rest, is_leaf=stop)
        return transform_non_params(value) if transform_non_params is not None else value

    return jax.tree.map(visit, marked, state, is_leaf=is_placeholder)
