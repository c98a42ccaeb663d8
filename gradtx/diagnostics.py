"""Diagnostics: transformations that observe training without changing it.

Each one hands its updates on unchanged, bit for bit, and records one number per step in
its state field, for the whole tree or, with ``per_leaf=True``, one per leaf (a tree
shaped like the params with a scalar at each leaf). Placed after an optimizer they watch
the steps it takes; placed before it, the gradients::

    >>> import jax, jax.numpy as jnp, gradtx
    >>> opt = gradtx.chain(gradtx.sgd(0.1, momentum=0.9), gradtx.update_norm(), gradtx.oscillation())
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> def step(carry, grads):
    ...     params, state = carry
    ...     updates, state = opt.update(grads, state, params)
    ...     return (gradtx.apply_updates(params, updates), state), gradtx.diagnostics_in(state)
    >>> grads = {"w": jnp.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])}
    >>> _, recorded = jax.lax.scan(step, (params, state), grads)
    >>> recorded["update_norm"]
    Array([0.14142136, 0.19026297, 0.2920993 ], dtype=float32)
    >>> recorded["oscillation"]
    Array([0. , 0.5, 0. ], dtype=float32)

The formulas, each written once here (``norm``, ``ratio``, ``inner``, ``flip_fraction``,
``cosine``, ``displacement``) and named at the head of its transformation:

- ``update_norm``: ``||u|| = sqrt(sum |u|^2)``;
- ``update_ratio``: ``||u|| / ||p||`` (0 where ``u = 0``), the step's size relative to the
  weights it moves;
- ``oscillation``: the share of elements whose update points the other way from the
  previous step's, ``Re(u * conj(u_prev)) < 0`` (a sign flip for real numbers);
- ``update_cosine``: ``Re<u, u_prev> / (||u|| ||u_prev||)`` (0 where a norm is 0);
- ``distance_travelled``: ``||p + u - o||``, how far the params after this step are from
  the reference point ``o`` (the params at ``init``, or at the start of every
  ``reset_every`` steps);
- ``training_diagnostics``: the five at once, each leaf read once for all of them.

Recording every step has a cost (on XLA:CPU the sums are loops of their own: see
``docs/guides/sweeps.md``). To record some steps only, pass ``observe=False`` to
``update`` on the others: the diagnostics then hand the updates on and keep their fields
(the reference point still moves every ``reset_every`` steps), and a Python ``False``
compiles to nothing, so the step is the optimizer's alone. ``scan_observing`` runs a scan
that observes the last steps of every block of ``every`` (two consecutive ones, so that
the oscillation and the cosine compare an update with the one before it);
``observed_steps`` says which.

The recorded values are in float32 (float64 for float64 params), whatever the params'
precision; complex params give real values. ``diagnostics_in(state)`` collects them from
any state (a chain's record, a wrapper's ``inner_state``, a sweep's batched state), so that
a jitted ``lax.scan`` can return them step by step. Their cost on an MNIST-sized Adam step
is measured by ``python -m benchmarks.diagnostics`` (``docs/guides/sweeps.md``).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import tree as _tree_utils
from gradtx.base import UpdateError
from gradtx.hyperparams import Integer
from gradtx.numerics import abs_sq, explicit_layout
from gradtx.transform import COUNT, Apply, Field, Transformation, declare, primitive

__all__ = [
    "diagnostics_in",
    "distance_travelled",
    "observed_steps",
    "oscillation",
    "scan_observing",
    "training_diagnostics",
    "update_cosine",
    "update_norm",
    "update_ratio",
]

RECORDED = ("update_norm", "update_ratio", "oscillation", "cosine", "distance")
"""The state fields in which the diagnostics record their values (``diagnostics_in`` reads them)."""

Steps = Optional[Annotated[int, Integer(1)]]

# --- the formulas, each once -----------------------------------------------------------------


def norm(sq_sum: jax.Array) -> jax.Array:
    """``||x|| = sqrt(sum |x|^2)`` from the sum of squares."""
    return jnp.sqrt(sq_sum)


def ratio(u_norm: jax.Array, p_norm: jax.Array) -> jax.Array:
    """``||u|| / ||p||``, 0 where ``||u|| = 0`` (inf where only the params are 0)."""
    return jnp.where(u_norm == 0, jnp.zeros_like(u_norm), u_norm / p_norm)


def inner(u: jax.Array, v: jax.Array) -> jax.Array:
    """``Re(u * conj(v))`` element by element: negative where ``u`` points the other way
    from ``v`` (a sign flip for real numbers, a turn by more than 90 degrees for complex ones)."""
    if jnp.iscomplexobj(v):
        v = jnp.conj(v)
    return jnp.real(u * v)


def displacement(p: jax.Array, u: jax.Array, o: jax.Array) -> jax.Array:
    """``p + u - o``: where the step ``u`` takes the params ``p``, from the reference point ``o``."""
    return p + u - o


def flip_fraction(flips: jax.Array, size: jax.Array) -> jax.Array:
    """``flips / size``: the share of elements whose sign flipped, 0 for no elements."""
    return jnp.where(size == 0, jnp.zeros_like(flips), flips / jnp.maximum(size, 1))


def cosine(dot: jax.Array, sq_a: jax.Array, sq_b: jax.Array) -> jax.Array:
    """``<a, b> / (||a|| ||b||)`` from the inner product and the two sums of squares, 0
    where either norm is 0."""
    zero = (sq_a == 0) | (sq_b == 0)
    return jnp.where(zero, jnp.zeros_like(dot), dot / jnp.where(zero, 1, jnp.sqrt(sq_a) * jnp.sqrt(sq_b)))


# --- shared plumbing -------------------------------------------------------------------------


def _wide(x: Any) -> jax.Array:
    """``x`` in at least float32 (complex64 for complex): the precision the sums are taken in."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _real_wide(dtype: Any) -> Any:
    """The dtype a value about a leaf of ``dtype`` is recorded in: float32, or float64."""
    wide = jnp.promote_types(dtype, jnp.float32)
    return jnp.finfo(wide).dtype if jnp.issubdtype(wide, jnp.complexfloating) else wide


def _sums(*terms: jax.Array) -> tuple[jax.Array, ...]:
    """Each term summed over all its elements, one single-output reduction per term (a
    variadic reduce, all the terms in one pass, runs element by element on XLA:CPU and
    cost more on the MNIST MLP for all it reads each leaf once)."""
    return tuple(_total(t) for t in terms)


def _total(t: jax.Array) -> jax.Array:
    """``sum(t)``. On XLA:CPU a term of two or more axes is summed as a matrix-vector
    product with ones (rows of its last axis), then the rows: XLA:CPU compiles the product
    into one loop with the elementwise work that makes the term, where a reduction reads
    the term from memory after a loop of its own wrote it (``update_norm``: 29% -> 11% of
    the study MLP's training step, ``python -m benchmarks.diagnostics``). Other backends
    fuse reductions with their producers already: a plain sum there."""
    if t.ndim < 2 or t.size == 0 or jax.default_backend() != "cpu" or explicit_layout(t) is not None:
        return jnp.sum(t)  # (on Explicit mesh axes the reshape would have to name its layout)
    rows = t.reshape(-1, t.shape[-1])
    return jnp.sum(jnp.matmul(rows, jnp.ones(t.shape[-1], t.dtype), precision=jax.lax.Precision.HIGHEST))


def _size(x: Any) -> jax.Array:
    return jnp.asarray(jnp.size(x), jnp.int32)


def _recorded(per_leaf: bool) -> Field:
    """The field a diagnostic records into: a scalar per leaf, or one for the whole tree."""

    def init(params):
        leaves, treedef = jax.tree.flatten(params)
        dtypes = [_real_wide(jnp.asarray(p).dtype) for p in leaves]
        if per_leaf:
            return jax.tree.unflatten(treedef, [jnp.zeros((), d) for d in dtypes])
        return jnp.zeros((), jnp.result_type(*dtypes) if dtypes else jnp.float32)

    return Field(init, like_params=False)


def _rows(per_leaf: bool, partials: Sequence[tuple]) -> list[tuple]:
    """The sums per leaf, or one row of their totals over the leaves (none for no leaves)."""
    if per_leaf or not partials:
        return list(partials)
    return [tuple(sum(column[1:], column[0]) for column in zip(*partials))]


def _record(per_leaf: bool, like: Any, rows: Sequence[tuple], formula: Callable[..., jax.Array], old: Any) -> Any:
    """``formula(*row)`` for each leaf's row (a tree shaped like ``like``) or for the one row
    of totals (a scalar), in the dtypes of the field's previous value ``old``."""
    if per_leaf:
        values = [formula(*row).astype(o.dtype) for row, o in zip(rows, jax.tree.leaves(old))]
        return jax.tree.unflatten(jax.tree.structure(like), values)
    return formula(*rows[0]).astype(old.dtype) if rows else jnp.zeros_like(old)


def _combine(per_leaf: bool, like: Any, partials: Sequence[tuple], formula: Callable[..., jax.Array], old: Any) -> Any:
    """``formula`` of each leaf's sums, or of their totals (``_rows``, ``_record``)."""
    return _record(per_leaf, like, _rows(per_leaf, partials), formula, old)


def _params_of(step) -> Any:
    if step.params is None:
        raise UpdateError("update() needs params (call update(updates, state, params))")
    return step.params


def _restarts(count: jax.Array, reset_every: int) -> jax.Array:
    """Whether the reference point moves to the params at this step (``count``: the steps
    taken before it): at the start of every ``reset_every`` steps."""
    return count % reset_every == 0


def _origin(params: Any, origin: Any, count: jax.Array, reset_every: Optional[int]) -> Any:
    """The reference point of this step: ``origin``, or ``params`` at the start of every
    ``reset_every`` steps (a select over the leaves, fused with the sums that read it)."""
    if reset_every is None:
        return origin
    restart = _restarts(count, reset_every)
    return jax.tree.map(lambda p, o: jnp.where(restart, p, o), _as_origin(params, origin), origin)


def _as_origin(params: Any, origin: Any) -> Any:
    """The params as a reference point: in the dtypes of ``origin``."""
    return jax.tree.map(lambda p, o: jnp.asarray(p).astype(o.dtype), params, origin)


def _moved_origin(reset_every: Optional[int]) -> Optional[Callable[[Mapping[str, Any], Any], dict[str, Any]]]:
    """On an unobserved step the reference point still moves at the start of every
    ``reset_every`` steps: a conditional copy of the params, run at those steps only."""
    if reset_every is None:
        return None

    def move(state, step):
        params, origin = _params_of(step), state["origin"]
        restart = _restarts(step.count, reset_every)
        return {"origin": jax.lax.cond(restart, lambda: _as_origin(params, origin), lambda: origin)}

    return move


def _copy(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.array(p, copy=True), params)


def _after(recorded: Any, *trees: Any) -> tuple[Any, ...]:
    """``trees`` unchanged, bit for bit, but computed after the ``recorded`` values.

    Each leaf goes through ``where(never, 0, x)`` with ``never = sum(recorded) > inf``,
    false for any value, NaN included, and not known to XLA as false. The data dependency
    makes XLA read the params and the previous update (or sign) for the sums before the
    step overwrites them in place; without it XLA:CPU copies them first (for
    ``training_diagnostics``: three copies of every leaf per step; ``python -m
    benchmarks.diagnostics``).
    """
    values = jax.tree.leaves(recorded)
    if not values:
        return trees
    never = sum((jnp.sum(v) for v in values[1:]), jnp.sum(values[0])) > jnp.inf
    return tuple(jax.tree.map(lambda x: jnp.where(never, jnp.zeros_like(x), x), t) for t in trees)


def _sign_dtype(dtype: Any) -> Any:
    return dtype if jnp.issubdtype(dtype, jnp.complexfloating) else jnp.int8


# --- observing some steps only -----------------------------------------------------------------


def _observe_flag(extra: Mapping[str, Any]) -> Any:
    """``update(..., observe=...)``: a Python bool (True when not given), or a traced boolean
    scalar (inside a ``lax.scan`` that computes it)."""
    observe = extra.get("observe", True)
    if isinstance(observe, (bool, np.bool_)):
        return bool(observe)
    if isinstance(observe, (jax.Array, np.ndarray)) and observe.shape == () and observe.dtype == np.bool_:
        return observe if isinstance(observe, jax.core.Tracer) else bool(observe)
    shown = f"{type(observe).__name__} {observe!r}"
    raise UpdateError(f"observe must be a bool or a boolean scalar array, got {shown[:80]}")


def _observing(apply: Apply, between: Optional[Callable[[Mapping[str, Any], Any], dict[str, Any]]] = None) -> Apply:
    """``apply`` on the steps the caller observes (``update(..., observe=True)``, the
    default). On the others the updates and the fields pass unchanged: a Python
    ``observe=False`` compiles to nothing at all, so the optimizer's step is the one it
    takes alone; ``between(state, step)`` gives the fields that move on every step all the
    same (the reference point). A traced ``observe`` picks one of the two with
    ``lax.cond``."""

    def observed(updates, state, step):
        observe = _observe_flag(step.extra)
        if observe is True:
            return apply(updates, state, step)

        def unobserved():
            kept = {name: value for name, value in state.items() if name != COUNT}
            if between is None:
                return updates, kept
            moved = between(state, step)
            # the step overwrites the params in place after ``between`` read them (else XLA
            # copies them first, every step): ordered by one element of each moved leaf (not
            # on Explicit mesh axes, where slicing a sharded leaf must name its layout: there
            # XLA may copy, the values are the same)
            firsts = [jnp.ravel(x)[:1] for x in jax.tree.leaves(moved) if explicit_layout(x) is None]
            (handed,) = _after(firsts, updates)
            return handed, {**kept, **moved}

        if observe is False:
            return unobserved()
        return jax.lax.cond(observe, lambda: apply(updates, state, step), unobserved)

    return observed


def observed_steps(length: int, every: int, observed: int = 2) -> np.ndarray:
    """Which of ``length`` steps ``scan_observing`` observes: a boolean array.

    The steps are taken in blocks of ``every`` from the first (the last block may be
    shorter); the last ``observed`` steps of each block are observed (all of a block
    shorter than that), so the last step always is.
    """
    _check_every("observed_steps", every, observed)
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 0:
        raise ValueError(f"gradtx.observed_steps(length={length!r}): length must be an int >= 0")
    i = np.arange(length)
    block_end = np.minimum((i // every + 1) * every, length)
    return block_end - i <= observed


def _check_every(name: str, every: Any, observed: Any) -> None:
    for arg, value in (("every", every), ("observed", observed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"gradtx.{name}({arg}={value!r}): {arg} must be an int >= 1")
    if observed > every:
        raise ValueError(f"gradtx.{name}(observed={observed!r}): observed must be at most every ({every})")


def scan_observing(
    step: Callable[[Any, Any, bool], tuple[Any, Any]], init: Any, xs: Any, *, every: int, observed: int = 2
) -> tuple[Any, Any]:
    """``jax.lax.scan(step, init, xs)``, observing ``observed`` steps in every ``every``.

    ``step(carry, x, observe)`` is the scan's body with one more argument, a Python bool to
    pass on as ``opt.update(..., observe=observe)``: ``True`` on the last ``observed`` steps
    of every block of ``every`` (``observed_steps``), ``False`` on the others. The
    diagnostics record on the observed steps and do nothing at all on the others, so an
    unobserved step compiles to the optimizer's step alone::

        def step(carry, batch, observe):
            params, state = carry
            grads = jax.grad(loss)(params, batch)
            updates, state = opt.update(grads, state, params, observe=observe)
            return (gradtx.apply_updates(params, updates), state), gradtx.diagnostics_in(state)

        carry, per_step = gradtx.scan_observing(step, (params, state), batches, every=10)
        seen = gradtx.observed_steps(len(batches), every=10)  # the rows of per_step recorded

    Two consecutive steps (``observed=2``, the default) let the oscillation and the cosine
    compare an update with the one just before it; ``update_norm``, ``update_ratio`` and
    ``distance_travelled`` need one. The distance's reference point moves every
    ``reset_every`` steps whether they are observed or not. The step is traced once per
    value of ``observe`` (twice more for a last, shorter block). Returns ``(carry, ys)`` as
    ``lax.scan`` does, a row of ``ys`` for every step (on an unobserved step, what ``step``
    returned then: the diagnostics' last recorded values).
    """
    _check_every("scan_observing", every, observed)
    lengths = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(xs)}
    if not lengths or None in lengths or len(lengths) > 1:
        shown = sorted(lengths, key=str) if lengths else "none"
        raise ValueError(
            f"gradtx.scan_observing(xs=...): xs must be arrays with one leading length (the steps), got {shown}"
        )
    length = int(next(iter(lengths)) or 0)
    blocks, rest = divmod(length, every)

    # the steps index into xs (one step's inputs at a time, as lax.scan reads them): slicing
    # xs into blocks would copy them (13% of the MNIST step, python -m benchmarks.diagnostics)
    def at(i: jax.Array) -> Any:
        return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), xs)

    def block(carry: Any, start: Any, size: int) -> tuple[Any, Any]:
        plain = size - min(observed, size)
        ys = []
        for observe, lo, hi in ((False, 0, plain), (True, plain, size)):
            if hi > lo:
                carry, y = jax.lax.scan(
                    functools.partial(_indexed, step, at, observe), carry, start + jnp.arange(lo, hi)
                )
                ys.append(y)
        return carry, _concat(ys)

    carry, ys = init, []
    if blocks:
        carry, y = jax.lax.scan(lambda c, start: block(c, start, every), carry, every * jnp.arange(blocks))
        ys.append(jax.tree.map(lambda v: v.reshape(blocks * every, *v.shape[2:]), y))
    if rest:
        carry, y = block(carry, blocks * every, rest)
        ys.append(y)
    return carry, _concat(ys)


def _indexed(step: Callable, at: Callable, observe: bool, carry: Any, i: jax.Array) -> tuple[Any, Any]:
    return step(carry, at(i), observe)


def _concat(parts: Sequence[Any]) -> Any:
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *v: jnp.concatenate(v), *parts)


# --- the transformations ------------------------------------------------------------------------


@declare
def update_norm(per_leaf: bool = False) -> Transformation:
    """``update_norm = ||u|| = sqrt(sum |u|^2) ; u -> u`` (records the step's size).

    The Euclidean norm of the updates, over the whole tree or, with ``per_leaf``, of each
    leaf. After an optimizer it is the size of the step it takes; before it, the gradients'
    norm. The mean update size per element is ``update_norm / sqrt(n)`` for ``n`` elements.

    Args:
      per_leaf: record one norm per leaf (a tree shaped like the params) instead of one.

    State: ``update_norm``.
    """

    def apply(updates, state, step):
        partials = [_sums(abs_sq(_wide(u))) for u in jax.tree.leaves(updates)]
        return updates, {"update_norm": _combine(per_leaf, updates, partials, norm, state["update_norm"])}

    return primitive(_observing(apply), {"update_norm": _recorded(per_leaf)})


@declare
def update_ratio(per_leaf: bool = False) -> Transformation:
    """``update_ratio = ||u|| / ||p|| ; u -> u`` (0 where ``u = 0``; reads the params).

    The update-to-parameter norm ratio: how large the step is relative to the weights it
    moves (the params before this step), over the whole tree or per leaf. A common rule of
    thumb wants it around 1e-3 per layer.

    Args:
      per_leaf: record one ratio per leaf (a tree shaped like the params) instead of one.

    State: ``update_ratio``.
    """

    def apply(updates, state, step):
        params = jax.tree.leaves(_params_of(step))
        partials = [_sums(abs_sq(_wide(u)), abs_sq(_wide(p))) for u, p in zip(jax.tree.leaves(updates), params)]
        value = _combine(per_leaf, updates, partials, lambda uu, pp: ratio(norm(uu), norm(pp)), state["update_ratio"])
        (updates,) = _after(value, updates)
        return updates, {"update_ratio": value}

    return primitive(_observing(apply), {"update_ratio": _recorded(per_leaf)})


@declare
def oscillation(per_leaf: bool = False) -> Transformation:
    """``oscillation = mean(sign(u) * sign(u_prev) < 0) ; u -> u`` (the share of sign flips).

    The fraction of elements whose update changed sign since the previous step (for
    complex updates: turned by more than 90 degrees, ``Re(u * conj(u_prev)) < 0``), over
    the whole tree or per leaf; 0 at the first step. An element whose update is 0 now or
    was 0 before has not flipped. A high fraction is a step size that makes the weights
    oscillate across a valley.

    Args:
      per_leaf: record one fraction per leaf (a tree shaped like the params) instead of one.

    State: ``previous_sign`` (the last update's sign: int8 for real params, ``u / |u|`` for
    complex ones), ``oscillation``.
    """

    def apply(updates, state, step):
        signs = jax.tree.leaves(state["previous_sign"])
        partials = [(*_sums(_flips(inner(_wide(u), s))), _size(u)) for u, s in zip(jax.tree.leaves(updates), signs)]
        value = _combine(per_leaf, updates, partials, _fraction, state["oscillation"])
        new_signs = jax.tree.map(lambda u, s: jnp.sign(u).astype(s.dtype), updates, state["previous_sign"])
        updates, new_signs = _after(value, updates, new_signs)
        return updates, {"previous_sign": new_signs, "oscillation": value}

    def init_signs(params):
        return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), _sign_dtype(jnp.asarray(p).dtype)), params)

    fields = {"previous_sign": Field(init_signs, like_params=False), "oscillation": _recorded(per_leaf)}
    return primitive(_observing(apply), fields)


def _flips(dot: jax.Array) -> jax.Array:
    """1 where ``dot < 0`` (a flip), else 0, in ``dot``'s real dtype: counted by a float
    sum (XLA:CPU vectorizes it, not an int32 one), exact up to 2^24 elements in float32."""
    return (dot < 0).astype(dot.dtype)


def _fraction(flips: jax.Array, size: jax.Array) -> jax.Array:
    return flip_fraction(flips.astype(jnp.float32), size.astype(jnp.float32))


@declare
def update_cosine(per_leaf: bool = False) -> Transformation:
    """``cosine = <u, u_prev> / (||u|| ||u_prev||) ; u -> u`` (0 where a norm is 0).

    The cosine between this step's update and the previous one's (the real part of the
    inner product for complex updates), over the whole tree or per leaf: near 1 when the
    steps keep their direction, negative when they zig-zag; 0 at the first step.

    Args:
      per_leaf: record one cosine per leaf (a tree shaped like the params) instead of one.

    State: ``previous_update`` (the last update, in the params' dtype), ``cosine``.
    """

    def apply(updates, state, step):
        previous = jax.tree.leaves(state["previous_update"])
        partials = []
        for u, v in zip(jax.tree.leaves(updates), previous):
            uw, vw = _wide(u), _wide(v)
            partials.append(_sums(inner(uw, vw), abs_sq(uw), abs_sq(vw)))
        value = _combine(per_leaf, updates, partials, cosine, state["cosine"])
        kept = jax.tree.map(lambda u, v: u.astype(v.dtype), updates, state["previous_update"])
        updates, kept = _after(value, updates, kept)
        return updates, {"previous_update": kept, "cosine": value}

    return primitive(_observing(apply), {"previous_update": _zeros_like, "cosine": _recorded(per_leaf)})


def _zeros_like(params: Any) -> Any:
    return jax.tree.map(jnp.zeros_like, params)


@declare
def distance_travelled(per_leaf: bool = False, reset_every: Steps = None) -> Transformation:
    """``distance = ||p + u - o|| ; u -> u`` (``o`` the reference point; reads the params).

    How far the params after this step (``p + u``, ``p`` the params passed to ``update``)
    are from the reference point ``o``: the params at ``init``, moved to the params of the
    step at the start of every ``reset_every`` steps (an epoch's length: the value at the
    epoch's last step is the distance the weights travelled in that epoch). Set ``o``
    yourself with ``gradtx.tree.set(state, origin=params)``. Over the whole tree or per leaf.

    Args:
      per_leaf: record one distance per leaf (a tree shaped like the params) instead of one.
      reset_every: move the reference point to the current params every this many steps
        (``None``: never).

    State: ``count``, ``origin`` (the reference point, in the params' dtype), ``distance``.
    """

    def apply(updates, state, step):
        params = _params_of(step)
        origin = _origin(params, state["origin"], step.count, reset_every)
        partials = [
            _sums(abs_sq(displacement(_wide(p), _wide(u), _wide(o))))
            for u, p, o in zip(jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(origin))
        ]
        value = _combine(per_leaf, updates, partials, norm, state["distance"])
        (updates,) = _after(value, updates)
        return updates, {"origin": origin, "distance": value}

    fields: dict[str, Any] = {"origin": _copy, "distance": _recorded(per_leaf)}
    return primitive(_observing(apply, _moved_origin(reset_every)), fields, uses_count=True)


@declare
def training_diagnostics(per_leaf: bool = False, reset_every: Steps = None) -> Transformation:
    """``(update_norm, update_ratio, oscillation, cosine, distance) of u ; u -> u`` (the five at once).

    The five diagnostics of this module at once, with their formulas (``update_norm``,
    ``update_ratio``, ``oscillation``, ``update_cosine``, ``distance_travelled``) and
    their values, for less than the five chained: one previous update kept (the cosine's,
    which the oscillation reads too, where the chain keeps it and the previous signs), one
    reference point, ``|u_prev|^2`` taken from the norm recorded at the previous step, and
    no sum taken twice (the chain takes ``|u|^2`` three times).

    Args:
      per_leaf: record one value of each per leaf (trees shaped like the params).
      reset_every: move the distance's reference point to the current params every this
        many steps (``None``: never).

    State: ``count``, ``previous_update``, ``origin``, ``update_norm``, ``update_ratio``,
    ``oscillation``, ``cosine``, ``distance``.
    """

    def apply(updates, state, step):
        params = _params_of(step)
        origin = _origin(params, state["origin"], step.count, reset_every)
        partials = []
        trees = (updates, params, state["previous_update"], origin)
        for u, p, v, o in zip(*(jax.tree.leaves(t) for t in trees)):
            uw, pw = _wide(u), _wide(p)
            vw = _wide(v)
            dot = inner(uw, vw)
            flips = _flips(dot)
            terms = (abs_sq(uw), abs_sq(pw), dot, flips, abs_sq(displacement(pw, uw, _wide(o))))
            partials.append((*_sums(*terms), _size(u)))
        # |u_prev|^2 is the square of the norm recorded at the previous step (one sum fewer)
        rows = [(*row, n**2) for row, n in zip(_rows(per_leaf, partials), jax.tree.leaves(state["update_norm"]))]

        def record(name, formula):
            return _record(
                per_leaf,
                updates,
                rows,
                lambda uu, pp, dot, flips, dd, size, vv: formula(
                    uu=uu, pp=pp, dot=dot, flips=flips, dd=dd, size=size, vv=vv
                ),
                state[name],
            )

        values = {
            "update_norm": record("update_norm", lambda uu, **_: norm(uu)),
            "update_ratio": record("update_ratio", lambda uu, pp, **_: ratio(norm(uu), norm(pp))),
            "oscillation": record("oscillation", lambda flips, size, **_: _fraction(flips, size)),
            "cosine": record("cosine", lambda dot, uu, vv, **_: cosine(dot, uu, vv)),
            "distance": record("distance", lambda dd, **_: norm(dd)),
        }
        kept = jax.tree.map(lambda u, v: u.astype(v.dtype), updates, state["previous_update"])
        updates, kept = _after(values, updates, kept)
        return updates, {"previous_update": kept, "origin": origin, **values}

    fields: dict[str, Any] = {"previous_update": _zeros_like, "origin": _copy}
    fields.update({name: _recorded(per_leaf) for name in RECORDED})
    return primitive(_observing(apply, _moved_origin(reset_every)), fields, uses_count=True)


def diagnostics_in(state: Any) -> dict[str, Any]:
    """The values the diagnostics recorded in ``state``: ``{"update_norm": ..., ...}``.

    Looks through any nesting of records (a chain's, a wrapper's ``inner_state``, a
    ``named_chain``'s dict) for the fields the diagnostics record into
    (``update_norm``, ``update_ratio``, ``oscillation``, ``cosine``, ``distance``). A
    field found more than once is keyed by its path (``"inner_state.update_norm"``).
    Return it from a ``lax.scan`` body to get the values step by step.
    """
    out: dict[str, Any] = {}
    for name in RECORDED:
        found = _tree_utils.get_all_with_path(state, name)
        if len(found) == 1:
            out[name] = found[0][1]
        else:
            for path, value in found:
                out[".".join(_tree_utils.key_name(k) for k in path)] = value
    return out
