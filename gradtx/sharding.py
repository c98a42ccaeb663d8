"""Sharding the optimizer state: like the params, or over the data-parallel axis (ZeRO-1, FSDP).

Three layouts, one rule each:

- ``state_sharding(tx, params)``: every state leaf placed like the param it belongs to.
  A field shaped like the params takes each param's sharding; a statistic that keeps some
  of a param's dimensions (Adafactor's ``v_row`` / ``v_col``, SM3's per-dimension
  accumulators, per-row norms) keeps the mesh axes of those dimensions; scalars (``count``)
  and everything else are replicated (``P()``). Params without a sharding count as
  replicated.
- ``fsdp_sharding(tree, mesh, axis_name)``: MaxText's data-parallel rule, each leaf
  sharded over ``axis_name`` on its first dimension divisible by the axis size, replicated
  when none is. Applied to the params it is FSDP (the state then follows the params through
  ``state_sharding``); applied to the state alone it is ZeRO-1's layout.
- ``zero1(tx, mesh, axis_name)``: ``tx`` with its state in that layout while the params
  stay replicated: the update runs on the shards and its result is gathered for the params.

How a state leaf finds its param: ``jax.eval_shape(tx.init, params)`` gives the state's
shapes; wherever a subtree of the state has the params' tree structure as a prefix (a field
the record declares ``like_params``, a wrapper's ``inner_state.mu``, an optax state's
``nu``), each leaf under a param's position is matched to that param by shape. So the rule
works for gradtx's flat records, for wrappers, and for optax's nested states alike.

optax leaves this to the user: ``jax.jit(tx.init)(sharded_params)`` puts the state on one
device, and ``out_shardings`` must be written by hand with ``optax.tree_map_params``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Optional, TypeVar

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from gradtx.base import GradientTransformation, OptState, Params
from gradtx.hyperparams import _fail
from gradtx.transform import Field, Step, Transformation, declare, primitive, update_inner
from gradtx.wrappers import Inner

__all__ = ["fsdp_sharding", "sharded_init", "state_sharding", "zero1"]

F = TypeVar("F", bound=Callable[..., Any])


# --- matching state leaves to params --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A param's shape and its mesh axes, one entry per dimension (``None``: not sharded)."""

    shape: tuple[int, ...]
    sharding: Optional[NamedSharding]  # None: the param is replicated (it had no NamedSharding)

    @property
    def axes(self) -> tuple:
        spec = tuple(self.sharding.spec) if self.sharding is not None else ()
        return spec + (None,) * (len(self.shape) - len(spec))


def _kept_axes(shape: tuple[int, ...], param: _Placed) -> Optional[tuple]:
    """The mesh axes of a leaf of ``shape`` that keeps some of ``param``'s dimensions, or
    None (replicate). Same rank: a dimension of size 1 is a reduced one (``keepdims``).
    Lower rank: the dimensions kept, in order; where that is ambiguous (a square matrix's
    row and column statistics) and the choices differ, None."""
    if len(shape) == len(param.shape):
        if all(n == p or n == 1 for n, p in zip(shape, param.shape)):
            return tuple(a if n == p else None for n, p, a in zip(shape, param.shape, param.axes))
        return None
    choices = {
        tuple(param.axes[d] for d in dims)
        for dims in itertools.combinations(range(len(param.shape)), len(shape))
        if all(param.shape[d] == n for d, n in zip(dims, shape))
    }
    return choices.pop() if len(choices) == 1 else None


def _stacked(shape: tuple[int, ...], param: _Placed) -> bool:
    """A stack of copies of the param (L-BFGS's memory: ``(memory_size, *param.shape)``),
    whose stacking axis cannot be taken for one of the param's dimensions (a vector's
    ``(n, n)`` factor is not a stack)."""
    return len(shape) == len(param.shape) + 1 and shape[1:] == param.shape and shape[0] not in param.shape


def _leaf_sharding(leaf: Any, param: _Placed, replicated: Sharding) -> Sharding:
    shape = tuple(leaf.shape)
    if not shape or param.sharding is None:
        return replicated
    if shape == param.shape:
        return param.sharding
    if _stacked(shape, param):  # each copy laid out like the param
        axes: Optional[tuple] = (None, *param.axes)
    else:
        axes = _kept_axes(shape, param)
    if axes is None or all(a is None for a in axes):
        return replicated
    return NamedSharding(param.sharding.mesh, PartitionSpec(*axes), memory_kind=param.sharding.memory_kind)


def _replicated(shardings: list[Any], mesh: Optional[Mesh]) -> Sharding:
    """``P()`` on the params' mesh (or ``mesh``); with no mesh, the params' one device (the
    default device when they carry no sharding)."""
    meshes = {s.mesh for s in shardings if isinstance(s, NamedSharding)}
    if mesh is None and len(meshes) > 1:
        raise ValueError(
            f"gradtx.state_sharding(params=...): the params are on {len(meshes)} different meshes; "
            "put them on one, or pass mesh=..."
        )
    found: Any = mesh if mesh is not None else next(iter(meshes), None)
    if found is not None:
        return NamedSharding(found, PartitionSpec())
    devices = {s for s in shardings if isinstance(s, SingleDeviceSharding)}
    return devices.pop() if len(devices) == 1 else SingleDeviceSharding(jax.devices()[0])


def _one_level(node: Any) -> tuple[list[Any], Any]:
    """The children of a pytree node, and the treedef that rebuilds it from them."""
    return jax.tree.flatten(node, is_leaf=lambda x: x is not node)


def state_sharding(tx: GradientTransformation, params: Params, *, mesh: Optional[Mesh] = None) -> OptState:
    """The shardings of ``tx.init(params)``'s state: each leaf placed like its param.

    ``params``: arrays or ``jax.ShapeDtypeStruct``\\ s; those with a ``NamedSharding`` place
    their state, those without (plain numpy arrays, structs without ``sharding``, arrays on
    one device) count as replicated. Returns a tree shaped like the state whose leaves are
    ``NamedSharding``\\ s on the params' mesh (``mesh``, if given):

    - a leaf shaped like its param: the param's sharding (``mu``, ``nu``, a wrapper's
      ``inner_state.mu``);
    - a leaf that keeps some of its param's dimensions: the mesh axes of those dimensions
      (Adafactor's ``v_row`` and ``v_col``, SM3's accumulators); replicated where the kept
      dimensions are ambiguous (a square matrix) and the two choices differ;
    - a stack of copies of its param, ``(k, *param.shape)`` (L-BFGS's memory): each copy
      like the param, ``P(None, *param_spec)``, so the memory is split as the params are;
    - scalars (``count``) and every other leaf (a PRNG key, Shampoo's factors): ``P()``.

    The state is never computed (``jax.eval_shape``), so the result can be passed to
    ``jax.jit(tx.init, out_shardings=...)`` and to a jitted step's ``in_shardings`` and
    ``out_shardings`` (``sharded_init`` does the first). Works for optax transformations too.
    With no mesh anywhere, everything is on the params' one device.

    >>> import jax, jax.numpy as jnp, gradtx
    >>> from jax.sharding import NamedSharding, PartitionSpec as P
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> params = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=NamedSharding(mesh, P("data")))}
    >>> shardings = gradtx.state_sharding(gradtx.adam(1e-3), params)
    >>> shardings.count.spec, shardings.mu["w"].spec
    (P(), P('data',))
    """
    if mesh is not None and not isinstance(mesh, Mesh):
        _fail("state_sharding", "mesh", mesh, f"a jax.sharding.Mesh or None, got {type(mesh).__name__}", TypeError)
    params_def: Any  # jaxlib ships no type stubs for PyTreeDef: this makes it Any
    leaves, params_def = jax.tree.flatten(params)
    shardings = [getattr(p, "sharding", None) for p in leaves]
    replicated = _replicated(shardings, mesh)
    placed = [_Placed(tuple(p.shape), s if isinstance(s, NamedSharding) else None) for p, s in zip(leaves, shardings)]
    abstract = jax.eval_shape(tx.init, params)

    def place(node: Any) -> Any:
        if node is None:
            return None
        if placed:
            try:
                per_param = params_def.flatten_up_to(node)
            except ValueError:
                per_param = None
            if per_param is not None:
                return params_def.unflatten(
                    [
                        jax.tree.map(lambda x, p=p: _leaf_sharding(x, p, replicated), sub)
                        for sub, p in zip(per_param, placed)
                    ]
                )
        if isinstance(node, jax.ShapeDtypeStruct):
            return replicated
        children, treedef = _one_level(node)
        return treedef.unflatten([place(c) for c in children])

    return place(abstract)


def sharded_init(tx: GradientTransformation, params: Params, shardings: Optional[OptState] = None) -> OptState:
    """``jax.jit(tx.init, out_shardings=shardings)(params)``: the state created in place on
    its devices (``shardings``: ``state_sharding(tx, params)`` unless given), inside
    ``jax.set_mesh`` where the mesh's axes are ``Explicit``.

    A ``shardings`` tree that does not match the state is refused before anything runs,
    naming the first leaf path that differs.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.sharded_init(gradtx.sgd(0.1, momentum=0.9), {"w": jnp.zeros(2)}).trace["w"].shape
    (2,)
    """
    if shardings is None:
        shardings = state_sharding(tx, params)
    else:
        _check_matches(shardings, jax.eval_shape(tx.init, params))
    init = jax.jit(tx.init, out_shardings=shardings)
    explicit: list[Any] = [
        s.mesh for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding) and _is_explicit(s.mesh)
    ]
    if explicit:
        with jax.set_mesh(explicit[0]):
            return init(params)
    return init(params)


def _check_matches(shardings: Any, state: Any) -> None:
    got = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
    want = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    where = "gradtx.sharded_init(shardings=...)"
    missing = [p for p in want if p not in got]
    extra = [p for p in got if p not in want]
    if missing:
        raise ValueError(f"{where}: the shardings lack leaf path {missing[0]} that tx.init(params) has")
    if extra:
        raise ValueError(f"{where}: the shardings have leaf path {extra[0]} that tx.init(params) lacks")
    treedefs: list[Any] = [jax.tree.structure(shardings), jax.tree.structure(state)]
    if treedefs[0] != treedefs[1]:
        raise ValueError(f"{where}: the shardings have the leaf paths of tx.init(params) in other containers")
    wrong = [p for p in want if not isinstance(got[p], Sharding)]
    if wrong:
        raise TypeError(f"{where}: the leaf at path {wrong[0]} is a {type(got[wrong[0]]).__name__}, not a Sharding")


# --- matrix math on Explicit mesh axes ---------------------------------------------------------


def _region_spec(shape: tuple[int, ...], inputs: list[tuple[tuple[int, ...], Any]]) -> PartitionSpec:
    """The spec of a region's output of ``shape``: the axes of the first input that it keeps
    dimensions of (the same shape: its spec; fewer dimensions: ``_kept_axes``, as
    ``state_sharding`` places a statistic), else replicated."""
    for in_shape, sharding in inputs:
        if shape == in_shape:
            return sharding.spec
        if not shape or not isinstance(sharding, NamedSharding):
            continue
        axes = _kept_axes(shape, _Placed(in_shape, sharding))
        if axes is not None and any(a is not None for a in axes):
            return PartitionSpec(*axes)
    return PartitionSpec()


def matrix_region(fn: F, *, like: Any = None) -> F:
    """``fn`` run with the context mesh's ``Explicit`` axes switched to ``Auto``: for per-leaf
    matrix math (products over a sharded dimension, ``eigh``, ``qr``, SVD, concatenations of
    sharded blocks) that has no ``out_sharding`` to give on ``Explicit`` axes.

    On ``Explicit`` axes (inside ``jax.set_mesh`` of such a mesh) such an op is a
    ``ShardingTypeError`` unless the caller says how its result is laid out. Inside the
    region the axes are ``Auto`` (``jax.sharding.auto_axes``, as ``zero1`` runs its inner
    transformation): XLA partitions the math as it does on ``Auto`` axes, so the numbers are
    those of the ``Auto`` mesh. Each output leaf leaves the region laid out like an input:

    - ``like``: a prefix of ``fn``'s outputs whose leaves are positions of ``fn``'s arguments:
      that output subtree takes the layout of that argument, leaf by leaf (the same tree).
      ``like=(0, 2)`` for ``fn(g, m, stats) -> (update, new_stats)``: the update like ``g``,
      the statistics like ``stats``.
    - Without ``like``, by shape: an output shaped like an input leaf (arguments and their
      leaves in order; the first that matches) takes that input's ``PartitionSpec``; one that
      keeps some of an input's dimensions takes their axes (``state_sharding``'s rule for
      statistics: the ``(16,)`` column norms of a ``(8, 16)`` leaf on ``("data", "model")``
      are on ``"model"``); every other output (a factor matrix, a scalar) is replicated,
      ``P()``. A square leaf's own factors are shaped like it: give ``like`` there.

    Anywhere else (no mesh set, a mesh with no ``Explicit`` axis: ``Auto`` axes, one device)
    it is ``fn`` itself, so single-device numbers do not change. Pass the arrays positionally,
    and any traced value derived under the mesh too (a refresh flag computed from the step
    count fails closed over: its type carries the Explicit mesh, the region's is Auto);
    Python constants may be closed over. ``fn`` returns a pytree of arrays.
    Use it on one leaf's computation, where the layout of the result is the leaf's::

        def leaf_step(g, stats):  # g: (m, n) sharded on ("data", "model"); stats: (m, m) replicated
            stats = stats + g @ g.T
            return jnp.linalg.eigh(stats)[1].T @ g, stats

        update, stats = matrix_region(leaf_step, like=(0, 1))(g, stats)
    """

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or not mesh.explicit_axes:
            return fn(*args)
        axes = tuple(mesh.explicit_axes)
        spec_of = lambda x: jax.typeof(x).sharding.spec  # noqa: E731
        # the outputs' shapes first (tracing ``fn`` on Auto axes, where it is well typed)
        shapes = jax.eval_shape(jax.sharding.auto_axes(fn, axes=axes, out_sharding=PartitionSpec()), *args)
        if like is None:
            inputs = [(tuple(x.shape), jax.typeof(x).sharding) for x in jax.tree.leaves(args)]
            specs = jax.tree.map(lambda o: _region_spec(tuple(o.shape), inputs), shapes)
        else:

            def like_argument(i: int, out: Any) -> Any:
                trees: list[Any] = [jax.tree.structure(out), jax.tree.structure(args[i])]  # (no stubs for PyTreeDef)
                if trees[0] != trees[1]:
                    raise TypeError(
                        f"gradtx.matrix_region(like=...): an output is laid out like argument {i}, "
                        f"but its tree {trees[0]} is not the argument's {trees[1]}"
                    )
                return jax.tree.map(spec_of, args[i])

            specs = jax.tree.map(like_argument, like, shapes)
        return jax.sharding.auto_axes(fn, axes=axes, out_sharding=specs)(*args)

    return run  # type: ignore[return-value]


# --- the data-parallel rule: ZeRO-1 and FSDP ------------------------------------------------


def _is_explicit(mesh: Any) -> bool:
    return any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def _check_axis(call: str, mesh: Any, axis_name: Any) -> None:
    if not isinstance(mesh, Mesh):
        _fail(call, "mesh", mesh, f"a jax.sharding.Mesh, got {type(mesh).__name__}", TypeError)
    if not isinstance(axis_name, str):
        _fail(call, "axis_name", axis_name, f"a str, got {type(axis_name).__name__}", TypeError)
    if axis_name not in mesh.axis_names:
        _fail(call, "axis_name", axis_name, f"one of the mesh's axes {list(mesh.axis_names)}")


def _first_divisible(shape: tuple[int, ...], size: int, axis_name: str) -> PartitionSpec:
    """MaxText's rule: ``axis_name`` on the first dimension divisible by ``size``."""
    if size == 1:
        return PartitionSpec()
    for d, n in enumerate(shape):
        if n >= size and n % size == 0:
            return PartitionSpec(*(None,) * d, axis_name)
    return PartitionSpec()


def fsdp_sharding(tree: Any, mesh: Mesh, axis_name: str) -> Any:
    """Each leaf of ``tree`` sharded over ``axis_name`` on its first dimension divisible by
    the axis size, replicated (``P()``) when none is (MaxText's ``shard_optimizer_over_data``
    rule; on an axis of size 1, everything replicated).

    ``tree``: arrays or ``jax.ShapeDtypeStruct``\\ s. Give it the params for FSDP (the state
    then follows them: ``state_sharding``), or a state for ZeRO-1's layout (``zero1``).

    >>> import jax, jax.numpy as jnp, gradtx
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> gradtx.fsdp_sharding({"w": jnp.zeros((3, 4))}, mesh, "data")["w"].spec
    P()
    """
    _check_axis("fsdp_sharding", mesh, axis_name)
    size = mesh.shape[axis_name]
    return jax.tree.map(lambda x: NamedSharding(mesh, _first_divisible(tuple(x.shape), size, axis_name)), tree)


def _constrain(tree: Any, shardings: Any) -> Any:
    """``tree`` laid out as ``shardings``: ``with_sharding_constraint`` on ``Auto`` mesh axes,
    ``reshard`` on ``Explicit`` ones."""

    def one(x, s):
        return jax.sharding.reshard(x, s) if _is_explicit(s.mesh) else jax.lax.with_sharding_constraint(x, s)

    return jax.tree.map(one, tree, shardings)


@declare
def zero1(tx: Inner, mesh: Mesh, axis_name: str) -> Transformation:
    """``tx`` with its state sharded over ``axis_name`` (ZeRO stage 1); the updates replicated.

    Every leaf of ``tx``'s state is sharded on its first dimension divisible by the size of
    the mesh axis ``axis_name`` and replicated when none is (``fsdp_sharding``, MaxText's
    rule); the params stay as they are (replicated, data-parallel training). At each update
    the gradients are constrained to the same layout (XLA reduces the data-parallel
    gradient sum straight into the shards: a reduce-scatter), ``tx`` runs on the shards, and
    the updates are gathered (all-gather) for the replicated params. The numbers are
    ``tx``'s; each device keeps about 1/N of the state on an N-device axis. On an axis of
    size 1 everything is replicated, and ``zero1(tx, ...)`` is ``tx``.

    Works eagerly and under ``jax.jit``, on ``Auto`` mesh axes (sharding constraints) and
    ``Explicit`` ones (``jax.sharding.reshard``: call it inside ``jax.set_mesh``).
    optax has no ZeRO-1 option (MaxText writes its own, for Adam's state only).

    State: ``inner_state``, the state of ``tx``, sharded.

    >>> import jax, jax.numpy as jnp, gradtx
    >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    >>> tx = gradtx.zero1(gradtx.adam(1e-2), mesh, "data")
    >>> params = {"w": jnp.ones((8, 2))}
    >>> updates, state = tx.update({"w": jnp.ones((8, 2))}, tx.init(params), params)
    >>> round(float(updates["w"][0, 0]), 4), state.inner_state.mu["w"].sharding.spec
    (-0.01, P())
    """
    _check_axis("zero1", mesh, axis_name)
    replicated = NamedSharding(mesh, PartitionSpec())

    def shard(tree):
        return _constrain(tree, fsdp_sharding(tree, mesh, axis_name))

    def on_shards(updates, inner_state, params, step: Step):
        # Auto axes here: the constraints place the values, XLA partitions the math around them
        def constrain(tree, rule):
            # a bare PartitionSpec inside auto_axes (the mesh of the context), else on ``mesh``
            where = (lambda spec: spec) if _is_explicit(mesh) else (lambda spec: NamedSharding(mesh, spec))
            return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, where(rule(x))), tree)

        def sharded(x):
            return _first_divisible(tuple(x.shape), mesh.shape[axis_name], axis_name)

        out, new = update_inner(
            tx, constrain(updates, sharded), constrain(inner_state, sharded), step._replace(params=params)
        )
        return constrain(out, lambda x: PartitionSpec()), constrain(new, sharded)

    def apply(updates, state, step: Step):
        inner_state = state["inner_state"]
        if _is_explicit(mesh):
            # the inner transformation's math may combine leaves sharded along different
            # dimensions (Adafactor's row and column statistics): on Explicit axes that is a
            # type error, so it runs with the axis switched to Auto, laid out by constraints
            layout = (jax.tree.map(lambda _: replicated, updates), fsdp_sharding(inner_state, mesh, axis_name))
            run = jax.sharding.auto_axes(lambda u, s, p: on_shards(u, s, p, step), axes=axis_name, out_sharding=layout)
            out, new = run(updates, inner_state, step.params)
        else:
            out, new = on_shards(updates, inner_state, step.params, step)
        return out, {"inner_state": new}

    return primitive(apply, {"inner_state": Field(lambda params: shard(tx.init(params)), like_params=False)})
