"""Micro-batching: a function of a batch evaluated on slices of it, one after another.

``microbatch(fun, argnums, microbatch_size)`` returns a function with ``fun``'s signature
that splits the batch arguments into ``B / microbatch_size`` slices, calls ``fun`` on
each inside one ``lax.fori_loop`` and combines the results (sum, mean, running mean or
concatenation, per output leaf). Peak memory is that of one slice: the way to take the
gradient of a batch that does not fit at once. optax's ``optax.microbatch`` and
``optax.microbatching`` under the same names, arguments and slicing (slice ``i`` holds
rows ``i, i + n, i + 2n, ...`` of ``n`` slices: a reshape in column-major order, which
keeps a sharded batch axis sharded).
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Callable, Sequence, Union, cast

import jax
import jax.numpy as jnp

from gradtx.numerics import running_mean

__all__ = ["AccumulationType", "micro_vmap", "microbatch", "reshape_batch_axis"]


class AccumulationType(enum.Enum):
    """How the results of the slices combine (``microbatch``'s ``accumulator``)."""

    MEAN = enum.auto()
    """The mean over the slices (floating results only)."""
    SUM = enum.auto()
    """The sum over the slices."""
    RUNNING_MEAN = enum.auto()
    """The mean over the slices actually run (``num_real_microbatches``)."""
    CONCAT = enum.auto()
    """The slices' results concatenated along axis 0, in the batch's order."""


Accumulation = Union[AccumulationType, str]


def _kind(value: Any) -> AccumulationType:
    if isinstance(value, AccumulationType):
        return value
    if isinstance(value, str) and value.upper() in AccumulationType.__members__:
        return AccumulationType[value.upper()]
    names = ", ".join(repr(k.lower()) for k in AccumulationType.__members__)
    raise ValueError(
        f"gradtx.microbatch(accumulator={value!r}): accumulator must be an AccumulationType or one of {names}"
    )


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    """Each leaf's batch axis ``B`` at ``axis`` becomes ``(B // microbatch_size,
    microbatch_size)``, in column-major order: slice ``i`` holds rows ``i, i + n, ...``."""

    def reshape(x):
        return x.reshape((*x.shape[:axis], -1, microbatch_size, *x.shape[axis + 1 :]), order="F")

    return jax.tree.map(reshape, tree)


def _combine(kind: AccumulationType, n: int):
    """``(init(value), update(carry, value, i), finalize(carry))`` of one output leaf."""
    if kind is AccumulationType.CONCAT:
        return (
            lambda v: jnp.zeros((n, *v.shape), v.dtype),
            lambda carry, v, i: carry.at[i].set(v),
            lambda carry: carry.reshape(-1, *carry.shape[2:], order="F"),  # the inverse of the slicing
        )
    if kind is AccumulationType.RUNNING_MEAN:
        return (jnp.zeros_like, lambda carry, v, i: running_mean(carry, v, i), lambda carry: carry)
    finish = (lambda carry: carry / n) if kind is AccumulationType.MEAN else (lambda carry: carry)
    return jnp.zeros_like, lambda carry, v, i: carry + v, finish


def _floating_check(kind: AccumulationType, path: str, value: jax.ShapeDtypeStruct) -> None:
    if kind in (AccumulationType.MEAN, AccumulationType.RUNNING_MEAN) and not jnp.issubdtype(value.dtype, jnp.inexact):
        raise TypeError(
            f"gradtx.microbatch: the output at {path or '<root>'} is {value.dtype}; a mean needs a "
            "floating or complex output (use accumulator=AccumulationType.SUM)"
        )


def microbatch(
    fun: Callable[..., Any],
    argnums: Union[int, Sequence[int]],
    microbatch_size: int | None,
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: Union[str, Sequence[str]] = (),
    in_axes: Union[int, Sequence[int]] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``fun(batch) = combine_i fun(batch[slice i])``: ``fun`` evaluated slice by slice.

    Args:
      fun: any function; its batch arguments are split along their batch axis.
      argnums: the positions of the batch arguments.
      microbatch_size: rows per slice; it must divide the batch size. ``None``
        returns ``fun`` itself.
      accumulator: how the slices' results combine: an ``AccumulationType`` (or its
        name, ``"sum"``, ``"mean"``, ``"running_mean"``, ``"concat"``), or a tree of
        them that is a prefix of ``fun``'s output (one rule per output subtree).
      argnames: the names of keyword batch arguments.
      in_axes: the batch axis of each batch argument (``argnums`` then ``argnames``).
      num_real_microbatches: run only this many slices (a traced value does not
        recompile): variable batch sizes padded to one shape.

    >>> import jax.numpy as jnp, gradtx
    >>> fun = lambda x: (x + 1, jnp.sum(3 * x))
    >>> both = ("concat", "sum")
    >>> gradtx.microbatch(fun, argnums=0, microbatch_size=2, accumulator=both)(jnp.arange(4.0))
    (Array([1., 2., 3., 4.], dtype=float32), Array(18., dtype=float32))
    """
    if microbatch_size is None:
        return fun
    if isinstance(microbatch_size, bool) or not isinstance(microbatch_size, int) or microbatch_size < 1:
        raise ValueError(f"gradtx.microbatch(microbatch_size={microbatch_size!r}): microbatch_size must be an int >= 1")
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    argnames = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    n_batch = len(argnums) + len(argnames)
    axes = (in_axes,) * n_batch if isinstance(in_axes, int) else tuple(in_axes)
    if len(axes) != n_batch:
        raise ValueError(
            f"gradtx.microbatch(in_axes={in_axes!r}): in_axes needs one axis per batch argument "
            f"({n_batch}: argnums {argnums} then argnames {argnames})"
        )
    kinds = jax.tree.map(_kind, accumulator, is_leaf=lambda x: isinstance(x, (AccumulationType, str)))

    def microbatched(*args, **kwargs):
        slots: list[tuple[str, Any]] = [("args", i) for i in argnums] + [("kwargs", k) for k in argnames]
        inputs: dict[str, Any] = {"args": list(args), "kwargs": dict(kwargs)}
        sizes = {}
        for (where, key), ax in zip(slots, axes):
            for path, x in jax.tree_util.tree_leaves_with_path(inputs[where][key]):
                sizes[f"{'argument ' + str(key) if where == 'args' else key}{jax.tree_util.keystr(path)}"] = x.shape[ax]
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
            raise ValueError(f"gradtx.microbatch: the batch arguments' batch axes differ in size ({listed})")
        batch = next(iter(sizes.values()))
        if batch % microbatch_size:
            raise ValueError(
                f"gradtx.microbatch: the batch size {batch} is not a multiple of microbatch_size={microbatch_size}"
            )
        n = batch // microbatch_size
        for (where, key), ax in zip(slots, axes):
            inputs[where][key] = reshape_batch_axis(inputs[where][key], microbatch_size, ax)

        def call(i):
            a, k = list(inputs["args"]), dict(inputs["kwargs"])
            for (where, key), ax in zip(slots, axes):
                target: Any = a if where == "args" else k
                target[key] = jax.tree.map(functools.partial(jnp.take, indices=i, axis=ax), target[key])
            return fun(*a, **k)

        shapes = jax.eval_shape(call, 0)
        # one rule per output leaf: the accumulator tree is a prefix of the output tree
        rules = jax.tree.map(lambda kind, sub: jax.tree.map(lambda _: kind, sub), kinds, shapes)
        for (path, value), kind in zip(jax.tree_util.tree_leaves_with_path(shapes), jax.tree.leaves(rules)):
            _floating_check(kind, jax.tree_util.keystr(path), value)
        combine = jax.tree.map(lambda kind: _combine(kind, n), rules, is_leaf=lambda x: isinstance(x, AccumulationType))
        parts = jax.tree.leaves(combine, is_leaf=lambda x: isinstance(x, tuple) and callable(x[0]))
        treedef = jax.tree.structure(shapes)
        carry = [init(v) for (init, _, _), v in zip(parts, jax.tree.leaves(shapes))]

        def body(i, carry):
            values = jax.tree.leaves(call(i))
            return [update(c, v, i) for (_, update, _), c, v in zip(parts, carry, values)]

        stop = n if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(0, stop, body, carry)
        return jax.tree.unflatten(treedef, [finalize(c) for (_, _, finalize), c in zip(parts, carry)])

    return microbatched


def micro_vmap(
    fun: Callable[..., Any],
    in_axes: Union[int, Sequence[int | None]] = 0,
    out_axes: int = 0,
    *,
    microbatch_size: int | None = None,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable[..., Any]:
    """``jax.vmap(fun)`` evaluated ``microbatch_size`` rows at a time (``microbatch``
    over a vmapped ``fun``); with a reducing ``accumulator`` the full batch of outputs is
    never held at once.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.micro_vmap(lambda x: x**2, microbatch_size=2)(jnp.arange(4.0))
    Array([0., 1., 4., 9.], dtype=float32)
    """
    if out_axes != 0:
        raise ValueError(f"gradtx.micro_vmap(out_axes={out_axes!r}): only out_axes=0 is supported")
    axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)
    mapped = [i for i, ax in enumerate(axes) if ax is not None]
    kinds = jax.tree.map(_kind, accumulator, is_leaf=lambda x: isinstance(x, (AccumulationType, str)))

    def reduce_slice(out):
        def one(kind, sub):
            if kind is AccumulationType.SUM:
                return jax.tree.map(lambda x: jnp.sum(x, axis=0), sub)
            if kind is AccumulationType.CONCAT:
                return sub
            return jax.tree.map(lambda x: jnp.mean(x, axis=0), sub)

        return jax.tree.map(one, kinds, out, is_leaf=lambda x: isinstance(x, AccumulationType))

    def vmapped(*args):
        return reduce_slice(jax.vmap(fun, in_axes=axes if len(axes) > 1 else axes[0])(*args))

    return microbatch(
        vmapped,
        argnums=tuple(mapped),
        microbatch_size=microbatch_size,
        accumulator=kinds,
        in_axes=tuple(cast(int, axes[i]) for i in mapped),
        num_real_microbatches=num_real_microbatches,
    )
