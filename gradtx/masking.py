"""Masks and partitions: apply a transformation to some leaves only (masked, freeze, selective_transform), or a different one per label (partition / multi_transform).

A *mask* gives each leaf of the params True (transform it) or False (pass it through); a
*labelling* gives each leaf a label that names one of several transformations. Both may be
written four ways, resolved leaf by leaf against the params' leaf paths (``"a/b/c"``: dict
keys, sequence indices and attribute names joined by ``/``):

- a tree shaped like the params: ``{"w": True, "b": False}``;
- a *prefix* of it, whose value covers the whole subtree below it:
  ``{"encoder": "frozen", "head": "adam"}`` for a deeper params tree, or ``True`` for all;
- a function ``params -> tree`` (a plain function: a pytree whose container happens to be
  callable, an Equinox module say, is a tree, not a function);
- ``gradtx.by_path({pattern: value, ...})``: regular expressions matched against each
  leaf's path, the first that matches wins.

Containers need not be of the params' type: a plain dict labels the leaves of a
``flax.nnx.State``, and a tree of ``nnx.Param`` holding labels works both where
``nnx.Optimizer`` initialises (Variables) and where it updates (plain arrays). Masked-out
leaves become ``MaskedNode`` (a node without leaves) before the inner transformation sees
them, so they keep no optimizer state. A mask that does not fit the params is an error
naming the first leaf path at fault.
"""  # noqa: E501 - the summary line is wider than 120 columns

from __future__ import annotations

import re
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, UpdateError
from gradtx.clipping import set_to_zero
from gradtx.transform import Field, Step, Transformation, declare, named, primitive, record_type, update_inner
from gradtx.tree import is_placeholder, key_name
from gradtx.tree import map_params as tree_map_params

__all__ = [
    "MaskedNode",
    "MaskedState",
    "MultiTransformState",
    "PartitionState",
    "by_path",
    "freeze",
    "masked",
    "multi_transform",
    "partition",
    "partition_reset",
    "selective_transform",
    "tree_map_params",
]


class MaskedNode(NamedTuple):
    """A masked-out leaf: a pytree node without leaves (optax's ``MaskedNode``).

    The inner transformation of ``masked`` (and of each label of ``partition``) sees one in
    place of every leaf it does not transform, so its state keeps nothing there and
    ``jax.tree.map`` passes over it."""


MaskedState = record_type("masked", ("inner_state",))
MaskedState.__doc__ = "The state of ``gradtx.masked``: ``inner_state``, the inner transformation's state."
PartitionState = record_type("partition", ("inner_states",))
PartitionState.__doc__ = (
    "The state of ``gradtx.partition``: ``inner_states``, a dict ``label -> MaskedState(inner_state)`` "
    "(optax's layout)."
)
MultiTransformState = PartitionState  # optax's older name


# --- leaf paths ------------------------------------------------------------------------

Path = tuple[str, ...]
_VARIABLE_TYPES = ("Variable", "VariableState")


def _is_variable(x: Any) -> bool:
    """A Flax NNX variable (``nnx.Param``): one leaf of the params, whatever it wraps."""
    return any(c.__module__.startswith("flax.") and c.__name__ in _VARIABLE_TYPES for c in type(x).__mro__)


def _unbox(x: Any) -> Any:
    if _is_variable(x):
        return x.get_value() if hasattr(x, "get_value") else x.value
    return x


def _show(path: Path) -> str:
    return f"'{'/'.join(path)}'" if path else "<root>"


def _structure(tree: Any) -> Any:
    """``jax.tree.structure`` (typed ``Any``: jaxlib ships no type stubs for PyTreeDef)."""
    return jax.tree.structure(tree)


def _children(node: Any) -> tuple[list[tuple[str, Any]], Any]:
    """A pytree node's direct children by name, and the treedef that rebuilds it; ``([], None)``
    for a leaf."""
    treedef: Any  # jaxlib ships no type stubs for PyTreeDef
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return [], None
    return [(key_name(path[0]), child) for path, child in flat], treedef


class _At:
    """A mask's or labelling's value where it covers the params (a leaf, or a whole subtree):
    a leaf to JAX whatever the value is (a tuple label stays one label)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"_At({self.value!r})"


class _SpecError(Exception):
    """A mask or labelling that does not fit the params (re-raised naming the call)."""


# --- the four ways to write a mask or labelling ---------------------------------------------


class LeafPatterns:
    """Values by leaf path: ``gradtx.by_path``'s result (see there)."""

    def __init__(self, patterns: Mapping[str, Any]):
        self.patterns = dict(patterns)
        self._compiled = [(re.compile(p), v) for p, v in self.patterns.items()]

    def lookup(self, path: Path) -> Any:
        text = "/".join(path)
        for compiled, value in self._compiled:
            if compiled.fullmatch(text):
                return value
        raise _SpecError(
            f"no pattern matches leaf path {_show(path)} (patterns {', '.join(map(repr, self.patterns))}); "
            f"end with r'.*' for a default"
        )

    def map_values(self, fn: Callable[[Any], Any]) -> LeafPatterns:
        return LeafPatterns({p: fn(v) for p, v in self.patterns.items()})

    def __repr__(self) -> str:
        return f"gradtx.by_path({self.patterns!r})"


def by_path(patterns: Mapping[str, Any]) -> LeafPatterns:
    """Leaf ``a/b/c`` gets the value of the first pattern that ``re.fullmatch``-es ``"a/b/c"``.

    A mask or labelling by leaf path, for ``masked``, ``freeze``, ``partition`` and
    ``selective_transform``: the keys are regular expressions matched, in order, against
    each leaf's path (dict keys, sequence indices and attribute names joined by ``/``; a
    Flax ``nnx.State`` gives ``"layer/kernel"``), and the first that matches the whole path
    gives the leaf its value. A leaf that no pattern matches is an error naming it (end
    with ``r".*"`` for a default). No weight decay on biases and norm scales, in one line::

        gradtx.masked(gradtx.add_decayed_weights(1e-4), gradtx.by_path({r".*(bias|scale)": False, r".*": True}))

    optax has no such form (its masks are trees or functions of the params).

    >>> import jax.numpy as jnp, gradtx
    >>> params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    >>> decay = gradtx.masked(gradtx.add_decayed_weights(0.5), gradtx.by_path({r".*bias": False, r".*": True}))
    >>> updates, _ = decay.update({"dense": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}, decay.init(params), params)
    >>> updates["dense"]["kernel"], updates["dense"]["bias"]
    (Array([0.5, 0.5], dtype=float32), Array([0., 0.], dtype=float32))
    """
    if not isinstance(patterns, Mapping):
        raise TypeError(
            f"gradtx.by_path(patterns={patterns!r}): patterns must be a mapping from leaf-path patterns to "
            f"values, got {type(patterns).__name__}"
        )
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(
                f"gradtx.by_path(patterns={patterns!r}): patterns must be a mapping from leaf-path patterns to "
                f"values, got the key {pattern!r}"
            )
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(
                f"gradtx.by_path(patterns={patterns!r}): pattern {pattern!r} is not a regular expression: {e}"
            ) from None
    return LeafPatterns(patterns)


def _is_function(spec: Any) -> bool:
    """A function of the params: callable, and a leaf to JAX (a callable pytree container, an
    Equinox module say, is a tree of values, not a function: optax #913, #1373)."""
    if not callable(spec) or isinstance(spec, LeafPatterns):
        return False
    treedef = _structure(spec)
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _entries(spec: Any) -> dict[Path, Any]:
    """A tree's values by leaf path (Variables unwrapped)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(spec, is_leaf=_is_variable)
    return {tuple(key_name(k) for k in p): _unbox(x) for p, x in flat}


def _few(paths: Any, limit: int = 4) -> str:
    shown = [_show(p) for p in list(paths)[:limit]]
    return ", ".join(shown) + (", ..." if len(paths) > limit else "")


def _value_tree(spec: Any, tree: Any, what: str) -> Any:
    """``tree`` cut where ``spec`` covers it, with ``_At(value)`` there (a prefix entry covers
    its whole subtree, as in optax); ``None`` and earlier ``MaskedNode`` s are kept as they are."""
    if _is_function(spec):
        spec = spec(tree)
        if _is_function(spec):
            raise _SpecError(f"the function of the params returned a function ({spec!r}), not {what}")
    patterns = spec if isinstance(spec, LeafPatterns) else None
    entries = {} if patterns is not None else _entries(spec)
    visited: set[Path] = set()
    leaves: list[Path] = []
    missing: list[Path] = []

    def cut(path: Path, node: Any) -> Any:
        visited.add(path)
        if node is None or isinstance(node, MaskedNode):
            return node
        if path in entries:
            return _At(entries[path])
        children, treedef = ([], None) if _is_variable(node) else _children(node)
        if treedef is None:
            leaves.append(path)
            if patterns is not None:
                return _At(patterns.lookup(path))
            missing.append(path)
            return node
        return treedef.unflatten([cut((*path, name), child) for name, child in children])

    cut_tree = cut((), tree)
    plural = what.endswith("s")  # "the labels" have, "the mask" has
    has, go, it = ("have", "go", "they have") if plural else ("has", "goes", "it has")
    for path in entries:
        if path not in visited:
            above = next((p for p in leaves if path[: len(p)] == p), None)
            if above is not None:
                raise _SpecError(f"{what} {go} below the params' leaf path {_show(above)}: {it} {_show(path)}")
            raise _SpecError(f"{what} {has} leaf path {_show(path)}, which the params lack")
    if missing:
        its = "their" if plural else "its"
        raise _SpecError(f"{what} {has} no entry for leaf path {_show(missing[0])} ({its} entries: {_few(entries)})")
    return cut_tree


def _values(cut_tree: Any) -> list[tuple[Path, Any]]:
    """``(path, value)`` for every ``_At`` of a cut tree."""
    flat = jax.tree_util.tree_flatten_with_path(cut_tree)[0]
    return [(tuple(key_name(k) for k in p), at.value) for p, at in flat]


def _static_values(spec: Any) -> list[tuple[str, Any]]:
    """``(where, value)`` for every value of a spec that is known before the params are."""
    if isinstance(spec, LeafPatterns):
        return [(f"pattern {p!r}", v) for p, v in spec.patterns.items()]
    if _is_function(spec):
        return []
    return [(f"leaf path {_show(p)}", v) for p, v in _entries(spec).items()]


def _bool_problem(what: str, where: str, value: Any) -> Optional[str]:
    if isinstance(value, (bool, np.bool_)):
        return None
    array = isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer)
    if array and value.shape == () and value.dtype == np.bool_:
        return None
    return f"{what} gives {where} the value {value!r}, not a bool (True: transform the leaf, False: pass it through)"


def _label_problem(what: str, where: str, value: Any, transforms: Mapping) -> Optional[str]:
    try:
        known = value in transforms
    except TypeError:
        return f"{what} give {where} the label {value!r}, which is not hashable"
    if not known:
        return (
            f"{what} give {where} the label {value!r}, which names no transform "
            f"(the transforms' labels: {', '.join(map(repr, transforms))})"
        )
    return None


def _check_spec(call: str, arg: str, spec: Any, problem: Callable[[str, Any], Optional[str]]) -> None:
    for where, value in _static_values(spec):
        detail = problem(where, value)
        if detail is not None:
            raise ValueError(f"gradtx.{call}({arg}={spec!r}): {detail}")


def _check_transformation(call: str, arg: str, t: Any) -> None:
    if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
        raise TypeError(
            f"gradtx.{call}({arg}={t!r}): {arg} must be a gradient transformation (init, update), "
            f"got {type(t).__name__}"
        )


def _at_init(call: str, arg: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _SpecError as e:
        raise ValueError(f"gradtx.{call}({arg}=...): {e}") from None


def _at_update(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _SpecError as e:
        raise UpdateError(str(e)) from None


# --- masking a tree and running an inner transformation on it ------------------------------

KeepFor = Callable[[Any], Any]  # tree -> its cut tree of _At(True / False)


def _mask_keep(mask: Any, what: str) -> KeepFor:
    def keep_for(tree: Any) -> Any:
        cut_tree = _value_tree(mask, tree, what)
        for path, value in _values(cut_tree):
            detail = _bool_problem(what, f"leaf path {_show(path)}", value)
            if detail is not None:
                raise _SpecError(detail)
        return jax.tree.map(lambda at: _At(bool(at.value)), cut_tree)

    return keep_for


def _with_mask(tree: Any, keep: Any) -> Any:
    """``tree`` with a ``MaskedNode`` in place of every leaf or subtree it does not keep."""
    return jax.tree.map(lambda k, sub: sub if k.value else MaskedNode(), keep, tree)


def _pick(keep: Any, kept: Any, other: Any) -> Any:
    """``kept`` where ``keep`` is True, ``other`` elsewhere (subtree by subtree)."""
    return jax.tree.map(lambda k, a, b: a if k.value else b, keep, kept, other)


def _masked_like(tree: Any, updates: Any, keep: Any, keep_for: KeepFor) -> Any:
    """``tree`` (the params, an extra argument) masked as the updates are."""
    if _structure(tree) != _structure(updates):
        keep = _at_update(lambda: keep_for(tree))
    return _with_mask(tree, keep)


def _run_masked(
    inner: GradientTransformation,
    updates: Any,
    keep: Any,
    keep_for: KeepFor,
    inner_state: Any,
    step: Step,
    mask_extra: bool,
) -> tuple[Any, Any]:
    """Run ``inner`` on the kept part of ``updates``: its updates (``MaskedNode`` where not
    kept) and its new state."""
    masked_updates = _with_mask(updates, keep)
    params = None if step.params is None else _masked_like(step.params, updates, keep, keep_for)
    extra = dict(step.extra)
    if mask_extra:
        structure = _structure(updates)
        extra = {k: _with_mask(v, keep) if _structure(v) == structure else v for k, v in extra.items()}
    out, new_state = update_inner(inner, masked_updates, inner_state, Step(params, step.count, extra))
    if _structure(out) != _structure(masked_updates):
        raise UpdateError(
            f"the inner transformation returned updates of structure {_structure(out)}, not the "
            f"{_structure(masked_updates)} it was given"
        )
    return out, new_state


# --- masked ----------------------------------------------------------------------------

Mask = Union[bool, Any, Callable[[Any], Any], LeafPatterns]
"""True / False per leaf: a tree (or prefix) of bools, a function ``params -> tree``, or ``by_path``."""
Labels = Union[Hashable, Any, Callable[[Any], Any], LeafPatterns]
"""A label per leaf: a tree (or prefix) of labels, a function ``params -> tree``, or ``by_path``."""


def _masked(inner: GradientTransformation, mask: Any, call: str, arg: str, mask_extra: bool) -> Transformation:
    keep_for = _mask_keep(mask, "the mask")

    def init(params):
        if is_placeholder(params):  # tree.map_params: the placeholder stands for the whole params
            return inner.init(params)
        return inner.init(_with_mask(params, _at_init(call, arg, lambda: keep_for(params))))

    def apply(updates, state, step):
        keep = _at_update(lambda: keep_for(updates))
        out, inner_state = _run_masked(inner, updates, keep, keep_for, state["inner_state"], step, mask_extra)
        return _pick(keep, out, updates), {"inner_state": inner_state}

    return primitive(apply, {"inner_state": Field(init, like_params=False)}, checks_dtypes=False)


@declare
def masked(inner: GradientTransformation, mask: Mask, *, mask_compatible_extra_args: bool = False) -> Transformation:
    """``u -> inner(u)`` where ``mask`` is True, ``u`` where it is False, leaf by leaf.

    ``inner`` sees only the leaves the mask keeps (the others are ``MaskedNode``), so its
    state has nothing for the masked-out leaves. ``mask`` is a tree of bools shaped like the
    params or a prefix of it (``{"encoder": False, "head": True}``, or ``True``), a function
    ``params -> such a tree`` (called on the updates, as in optax), or ``gradtx.by_path``;
    its containers need not be the params' (a dict masks an ``nnx.State``). No weight decay
    on biases and norm scales::

        gradtx.masked(gradtx.add_decayed_weights(1e-4), gradtx.by_path({r".*(bias|scale)": False, r".*": True}))

    With ``mask_compatible_extra_args``, extra keyword arguments of ``update`` shaped like
    the updates are masked too. State: ``inner_state`` (optax's ``MaskedState``).

    Where optax differs: a mask tree that does not fit the params is an error naming the
    leaf path (optax's is JAX's tree-structure error); a callable pytree (an Equinox
    module of bools) is a tree, not a function (optax #913); a dict or a tree of
    ``nnx.Param`` masks ``nnx.State`` params inside ``nnx.Optimizer`` (optax raises a
    structure error, flax #5372); and ``by_path`` is new.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.masked(gradtx.sgd(0.1, momentum=0.9), {"w": True, "b": False})
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> state = opt.init(params)
    >>> state.inner_state.trace
    {'b': MaskedNode(), 'w': Array([0., 0.], dtype=float32)}
    >>> updates, state = opt.update({"w": jnp.ones(2), "b": jnp.ones(1)}, state, params)
    >>> updates["w"], updates["b"]
    (Array([-0.1, -0.1], dtype=float32), Array([1.], dtype=float32))
    """
    _check_transformation("masked", "inner", inner)
    _check_spec("masked", "mask", mask, lambda where, v: _bool_problem("the mask", where, v))
    return _masked(inner, mask, "masked", "mask", mask_compatible_extra_args)


@declare
def freeze(mask: Mask) -> Transformation:
    """``u -> 0`` where ``mask`` is True, ``u`` where it is False, leaf by leaf: the frozen
    params do not move.

    ``mask`` is written as for ``masked`` (a tree or prefix of bools, ``True`` for all, a
    function of the params, ``gradtx.by_path``). optax's ``freeze`` is ``masked(set_to_zero(),
    mask)`` with state ``MaskedState(inner_state=EmptyState())``; gradtx's keeps no state at
    all (``EmptyState``), and its updates are the same.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.chain(gradtx.freeze({"w": True, "b": False}), gradtx.sgd(0.1))
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> updates, _ = opt.update({"w": jnp.ones(2), "b": jnp.ones(1)}, opt.init(params), params)
    >>> updates["w"], updates["b"]
    (Array([-0., -0.], dtype=float32), Array([-0.1], dtype=float32))
    """
    _check_spec("freeze", "mask", mask, lambda where, v: _bool_problem("the mask", where, v))
    keep_for = _mask_keep(mask, "the mask")

    def apply(updates, state, step):
        keep = _at_update(lambda: keep_for(updates))
        return _pick(keep, jax.tree.map(jnp.zeros_like, updates), updates), {}

    return primitive(apply)


# --- partition -------------------------------------------------------------------------


class _PartitionInfo(NamedTuple):
    """What ``partition_reset`` needs: the transforms and a fresh init of one label."""

    transforms: dict
    init_label: Callable[[Any, Hashable], Any]


def _is_masked_state(x: Any) -> bool:
    return isinstance(x, tuple) and getattr(x, "_fields", None) == ("inner_state",)


def _partition(transforms: dict, labels: Any, call: str, arg: str, mask_extra: bool) -> tuple[Transformation, Any]:
    what = "the labels"

    def keeps_for(tree: Any) -> dict[Hashable, Any]:
        cut_tree = _value_tree(labels, tree, what)
        for path, value in _values(cut_tree):
            detail = _label_problem(what, f"leaf path {_show(path)}", value, transforms)
            if detail is not None:
                raise _SpecError(detail)
        return {label: jax.tree.map(lambda at, lab=label: _At(bool(at.value == lab)), cut_tree) for label in transforms}

    def keep_for(label: Hashable) -> KeepFor:
        return lambda tree: keeps_for(tree)[label]

    def init_label(params: Any, label: Hashable) -> Any:
        if is_placeholder(params):
            return MaskedState(inner_state=transforms[label].init(params))
        keep = _at_init(call, arg, lambda: keep_for(label)(params))
        return MaskedState(inner_state=transforms[label].init(_with_mask(params, keep)))

    def init(params):
        if not is_placeholder(params):
            _at_init(call, arg, lambda: keeps_for(params))  # the whole labelling is checked before any init
        return {label: init_label(params, label) for label in transforms}

    def apply(updates, state, step):
        inner_states = state["inner_states"]
        if not isinstance(inner_states, Mapping) or set(inner_states) != set(transforms):
            got = sorted(map(repr, inner_states)) if isinstance(inner_states, Mapping) else type(inner_states).__name__
            raise UpdateError(
                f"inner_states has labels {got}, the transforms {sorted(map(repr, transforms))}: pass the state "
                f"that init(params) returns"
            )
        keeps = _at_update(lambda: keeps_for(updates))
        merged, new = updates, {}
        for label, t in transforms.items():
            inner = inner_states[label]
            if not _is_masked_state(inner):
                raise UpdateError(
                    f"inner_states[{label!r}] is not the MaskedState(inner_state) that init(params) makes (got "
                    f"{type(inner).__name__}); to start one label afresh use gradtx.partition_reset"
                )
            out, inner_state = _run_masked(
                t, updates, keeps[label], keep_for(label), inner.inner_state, step, mask_extra
            )
            merged = _pick(keeps[label], out, merged)
            new[label] = MaskedState(inner_state=inner_state)
        return merged, {"inner_states": new}

    built = primitive(apply, {"inner_states": Field(init, like_params=False)}, checks_dtypes=False)
    return built, _PartitionInfo(transforms, init_label)


def _check_transforms(call: str, transforms: Any) -> dict:
    if not isinstance(transforms, Mapping):
        raise TypeError(
            f"gradtx.{call}(transforms={transforms!r}): transforms must be a mapping from labels to "
            f"transformations, got {type(transforms).__name__}"
        )
    if not transforms:
        raise ValueError(f"gradtx.{call}(transforms={transforms!r}): transforms must name at least one transformation")
    for label, t in transforms.items():
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(
                f"gradtx.{call}(transforms={transforms!r}): transforms[{label!r}] must be a gradient "
                f"transformation (init, update), got {type(t).__name__}"
            )
    return dict(transforms)


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels,
    *,
    mask_compatible_extra_args: bool = False,
) -> Transformation:
    """``u -> transforms[label(leaf)](u)`` leaf by leaf: each label's transformation sees only
    its own leaves.

    ``param_labels`` gives every leaf a key of ``transforms``: a tree of labels shaped like
    the params or a prefix of it (``{"encoder": "frozen", "head": "adam"}``), a function
    ``params -> such a tree``, or ``gradtx.by_path({pattern: label})``. Each transformation
    is run as ``masked`` on its label's leaves, so it keeps state for those only. State:
    ``inner_states``, a dict ``label -> MaskedState(inner_state)``, optax's layout
    (``multi_transform`` is the same function, its older name). ``gradtx.partition_reset``
    starts one label's state afresh (optax #1371).

    Where optax differs: the labels are checked against ``transforms`` when the call is
    made (a static tree) or at ``init``, and every error names the leaf path; a callable
    pytree of labels is a tree, not a function (optax's ``partition`` calls it: optax
    #913, #1373); a dict or a tree of ``nnx.Param`` labels ``nnx.State`` params inside
    ``nnx.Optimizer`` (optax #1148, flax #5372).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.partition({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.1)}, {"w": "adam", "b": "sgd"})
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> state = opt.init(params)
    >>> state.inner_states["adam"].inner_state.mu
    {'b': MaskedNode(), 'w': Array([0., 0.], dtype=float32)}
    >>> updates, state = opt.update({"w": jnp.ones(2), "b": jnp.ones(1)}, state, params)
    >>> round(float(updates["w"][0]), 4), updates["b"]
    (-0.1, Array([-0.1], dtype=float32))
    """
    checked = _check_transforms("partition", transforms)
    _check_spec(
        "partition",
        "param_labels",
        param_labels,
        lambda where, v: _label_problem("the labels", where, v, checked),
    )
    built, info = _partition(checked, param_labels, "partition", "param_labels", mask_compatible_extra_args)
    t = named("partition", built)
    setattr(t, "_gradtx_partition", info)  # noqa: B010 - Transformation declares no such field: partition_reset reads it
    return t


multi_transform = partition


def partition_reset(tx: GradientTransformation, state: Any, params: Any, *labels: Hashable) -> Any:
    """``inner_states[label] -> a fresh init`` for each of ``labels``; the others unchanged.

    Starts the optimizer of some labels of a ``partition`` afresh (after re-initialising
    their params, say: optax #1371, where replacing ``inner_states[label]`` by hand with the
    inner optimizer's own ``init`` breaks the next ``update``). ``tx`` is the transformation
    ``gradtx.partition`` returned; ``state`` its state, or any record holding its
    ``inner_states`` field (a chain's); ``params`` the params (only their masked part is
    used). Works under ``jax.jit``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.adam(0.1)}, {"w": "a", "v": "b"})
    >>> params = {"w": jnp.ones(2), "v": jnp.ones(2)}
    >>> state = opt.init(params)
    >>> _, state = opt.update({"w": jnp.ones(2), "v": jnp.ones(2)}, state, params)
    >>> state = gradtx.partition_reset(opt, state, params, "b")
    >>> int(state.inner_states["a"].inner_state.count), int(state.inner_states["b"].inner_state.count)
    (1, 0)
    """
    info = getattr(tx, "_gradtx_partition", None)
    if not isinstance(info, _PartitionInfo):
        raise TypeError(
            f"gradtx.partition_reset(tx={tx!r}): tx must be the transformation that gradtx.partition returned"
        )
    if not labels:
        raise ValueError("gradtx.partition_reset(labels=()): name at least one label to reset")
    for label in labels:
        if _label_problem("labels", "the reset", label, info.transforms) is not None:
            raise ValueError(
                f"gradtx.partition_reset(labels={labels!r}): label {label!r} names no transform of tx "
                f"(its labels: {', '.join(map(repr, info.transforms))})"
            )
    inner_states = getattr(state, "inner_states", None)
    if not isinstance(inner_states, Mapping) or not hasattr(state, "_replace"):
        raise TypeError(
            f"gradtx.partition_reset(state=...): state must be the partition's state (a record with an "
            f"inner_states field), got {type(state).__name__}"
        )
    new = dict(inner_states)
    for label in labels:
        new[label] = info.init_label(params, label)
    return state._replace(inner_states=new)


def _freeze_labels(freeze_mask: Any) -> Any:
    """``freeze_mask`` as labels: ``"freeze"`` where True, ``"train"`` where False."""

    def label(value: Any) -> str:
        detail = _bool_problem("the freeze mask", "a leaf", value)
        if detail is not None:
            raise _SpecError(detail)
        return "freeze" if bool(value) else "train"

    def relabel(spec: Any) -> Any:
        if isinstance(spec, LeafPatterns):
            return spec.map_values(label)
        return jax.tree.map(lambda v: label(_unbox(v)), spec, is_leaf=_is_variable)

    if _is_function(freeze_mask):
        return lambda params: relabel(freeze_mask(params))
    return relabel(freeze_mask)


@declare
def selective_transform(optimizer: GradientTransformation, *, freeze_mask: Mask) -> Transformation:
    """``u -> 0`` where ``freeze_mask`` is True, ``optimizer(u)`` elsewhere: only the
    unfrozen params are optimized, and only they have optimizer state.

    ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)`` with the labels
    read off ``freeze_mask`` (written as for ``masked``): optax's definition, and its state
    layout (``inner_states["train"].inner_state`` is the optimizer's state).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.selective_transform(gradtx.adam(0.1), freeze_mask={"w": False, "b": True})
    >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    >>> updates, _ = opt.update({"w": jnp.ones(2), "b": jnp.ones(1)}, opt.init(params), params)
    >>> round(float(updates["w"][0]), 4), updates["b"]
    (-0.1, Array([0.], dtype=float32))
    """
    _check_transformation("selective_transform", "optimizer", optimizer)
    _check_spec(
        "selective_transform", "freeze_mask", freeze_mask, lambda where, v: _bool_problem("the freeze mask", where, v)
    )
    transforms = {"train": optimizer, "freeze": set_to_zero()}
    built, _ = _partition(transforms, _freeze_labels(freeze_mask), "selective_transform", "freeze_mask", False)
    return built
