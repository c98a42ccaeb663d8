"""The invariants every transformation keeps, checked on one drawn problem.

``check_invariants`` is the body the registry and random-chain properties share. Against
what each check compares:

- ``jax.eval_shape(tx.init, params)``: the state's tree, shapes and dtypes, computed
  without running ``init`` (exact);
- each step's updates against the gradients: tree, shapes, dtypes (exact), finite
  (``FINITE_DTYPES``);
- each step's state against the initial state: tree, shapes, dtypes (exact), and
  ``lax.scan`` / ``lax.cond`` over ``update`` trace (what they and donation need);
- params-shaped state fields against the params: the dtype asked for (``mu_dtype``), else
  the param's, real for ``|g|^2`` statistics of complex params;
- the chex variant's run (eager on numpy inputs or after ``device_put``; ``jax.jit``)
  against the eager run on device arrays, at the ``RTOL`` of the problem's dtypes (under
  ``jax.jit`` the float32 / float64 / complex64 leaves: ``JIT_COMPARED``).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

import gradtx

from .strategies import Case, expected_updates, inputs

# Relative tolerance of a variant's run against the eager one, by the least precise dtype
# in the problem: a transformation couples its leaves (global norms, inner products), and
# under jit XLA keeps float16 / bfloat16 intermediates in float32 and reorders sums, so one
# low-precision leaf moves the others by its rounding (eagerly, a numpy input reduces with
# numpy's summation order where gradtx calls its methods: a few ulps). The absolute
# tolerance is the same fraction of the run's largest magnitude (an update that is the
# difference of two params is exact only to the params' rounding).
RTOL = {
    jnp.dtype(jnp.float64): 1e-10,
    jnp.dtype(jnp.float32): 1e-4,
    jnp.dtype(jnp.complex64): 1e-4,
    jnp.dtype(jnp.float16): 5e-2,
    jnp.dtype(jnp.bfloat16): 5e-2,
}
# The leaves whose values the jitted run is held to. Not float16 / bfloat16 leaves: eager
# rounds them after every operation, jit once per fused chain, and through a cancelling
# formula (scale_by_stddev at decay 0: g^2 - g^2, then 1 / sqrt(. + eps)) the two differ
# by any amount; their shapes and dtypes are still compared.
JIT_COMPARED = {jnp.dtype(d) for d in (jnp.float32, jnp.float64, jnp.complex64)}
# State fields that hold |g|^2 statistics: real even for complex params. SM3's ``nu`` is
# its momentum (a first moment), complex for complex params.
SECOND_MOMENTS = {"nu", "nu_max", "sum_of_squares", "e_g", "e_x", "n"}
FIRST_MOMENTS = {"sm3": {"nu"}, "scale_by_sm3": {"nu"}}


def x64_if(flag: bool):
    """``jax.enable_x64(True)`` for this example only, when it was drawn with ``x64``."""
    return jax.enable_x64(True) if flag else contextlib.nullcontext()


def _paths(tree: Any) -> list[tuple[str, Any]]:
    return [(jax.tree_util.keystr(p) or "<root>", x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def assert_same_signature(actual: Any, desired: Any, what: str) -> None:
    """Same tree structure, and leaf by leaf the same shape and dtype (exact); ``desired``
    may hold arrays or ``jax.ShapeDtypeStruct``s."""
    assert jax.tree.structure(actual) == jax.tree.structure(desired), (
        f"{what}: tree {jax.tree.structure(actual)} != {jax.tree.structure(desired)}"
    )
    for (path, a), d in zip(_paths(actual), jax.tree.leaves(desired)):
        got, want = f"{a.dtype}{list(a.shape)}", f"{d.dtype}{list(d.shape)}"
        assert got == want, f"{what}{path}: {got}, expected {want}"


def _inexact(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]


def tolerance(*trees: Any, dtypes: tuple = ()) -> float:
    """``RTOL`` of the least precise floating dtype among the trees' leaves and ``dtypes``."""
    found = {jnp.dtype(x.dtype) for t in trees for x in _inexact(t)} | {jnp.dtype(d) for d in dtypes}
    return max(RTOL[d] for d in found) if found else 0.0


def assert_close(actual: Any, desired: Any, rtol: float, what: str, compared: Any = None) -> None:
    """Same shapes and dtypes, and leaf by leaf: floating leaves (of the ``compared`` dtypes,
    all by default) within ``rtol``, with ``atol = rtol * (the largest finite magnitude in
    desired)``; other leaves (counts, PRNG keys, flags) equal."""
    assert_same_signature(actual, desired, what)
    finite = [np.abs(x[np.isfinite(x)]).astype(np.float64) for x in _inexact(desired)]
    atol = rtol * max((float(x.max(initial=0.0)) for x in finite), default=0.0)
    for (path, a), d in zip(_paths(actual), jax.tree.leaves(desired)):
        if compared is not None and jnp.issubdtype(d.dtype, jnp.inexact) and jnp.dtype(d.dtype) not in compared:
            continue
        if jnp.issubdtype(d.dtype, jax.dtypes.prng_key):
            a, d = jax.random.key_data(a), jax.random.key_data(d)
        a, d = np.asarray(a), np.asarray(d)
        if not jnp.issubdtype(d.dtype, jnp.inexact):
            np.testing.assert_array_equal(a, d, err_msg=f"{what}{path}")
            continue
        wide = np.complex128 if jnp.issubdtype(d.dtype, jnp.complexfloating) else np.float64
        np.testing.assert_allclose(a.astype(wide), d.astype(wide), rtol=rtol, atol=atol, err_msg=f"{what}{path}")


# Leaves whose steps must be finite: not float16, whose range (6e-5 to 65504) a chain of
# valid stages can leave in two steps (an Adam-like stage divides a gradient of 1e-2 by a
# second moment that underflowed to eps, a params-scaled stage multiplies the result); the
# float16 numerics are tests/test_edge_numerics.py's.
FINITE_DTYPES = {jnp.dtype(d) for d in (jnp.float32, jnp.float64, jnp.bfloat16, jnp.complex64)}


def assert_finite(tree: Any, what: str) -> None:
    for path, x in _paths(tree):
        if jnp.dtype(x.dtype) in FINITE_DTYPES:
            assert np.all(np.isfinite(np.asarray(x))), f"{what}{path}: not finite: {x}"


def state_fields(tx: gradtx.Transformation, state: Any) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """The params-shaped fields of ``tx``'s state: name -> (value, the stages that keep it)."""
    return {k.name: (getattr(state, k.name), k.owners) for k in tx.stage.fields if k.field.like_params}


def _wanted(asked: Any, param: Any, second: bool) -> Any:
    """The dtype of a params-shaped state leaf: the param's, or the one asked for; for a
    complex param, the real counterpart in a ``|g|^2`` statistic (``second``) and else the
    complex dtype of the precision asked for (a real dtype asked for a complex first moment:
    bfloat16 and float32 -> complex64, the imaginary part kept)."""
    p = jnp.dtype(param.dtype)
    if not jnp.issubdtype(p, jnp.complexfloating):
        return jnp.dtype(asked if asked is not None else p)
    if second:
        return jnp.finfo(asked if asked is not None else p).dtype
    if asked is None or jnp.issubdtype(asked, jnp.complexfloating):
        return jnp.dtype(asked if asked is not None else p)
    return jnp.dtype(jnp.complex128 if jnp.dtype(asked) == jnp.float64 else jnp.complex64)


def assert_state_dtypes(tx: gradtx.Transformation, state: Any, params: Any, asked: dict) -> None:
    """The step count is an int32 scalar; each params-shaped state field has, leaf by leaf,
    the dtype asked for, else the param's (``_wanted``: real for the ``|g|^2`` statistics
    of complex params, complex for their other fields)."""
    if tx.stage.uses_count:
        assert (state.count.shape, state.count.dtype) == ((), jnp.int32), f"count: {state.count!r}"
    for name, (value, owners) in state_fields(tx, state).items():
        assert jax.tree.structure(value) == jax.tree.structure(params), f"state field {name}: not shaped like params"
        base = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        second = base in SECOND_MOMENTS and not any(base in FIRST_MOMENTS.get(o, ()) for o in owners)
        for (path, leaf), p in zip(_paths(value), jax.tree.leaves(params)):
            want = _wanted(asked.get(name), p, second)
            assert leaf.dtype == want, f"state field {name}{path}: {leaf.dtype}, expected {want} (param {p.dtype})"


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Reference(NamedTuple):
    """An example's eager run on device arrays, its invariants checked."""

    step: Callable  # (params, state, grads) -> (params, updates, state), the case's transformation
    state0: Any
    steps: list  # (params, updates, state) after each step


def checked_reference(case: Case) -> Reference:
    """Run the case's transformation over its gradients eagerly on device arrays and check
    the invariants of the module docstring on the run (all but the variant's agreement)."""
    tx, extra = case.drawn.build(), case.drawn.update_extra
    host_grads = inputs(case)
    params = jax.tree.map(jnp.asarray, case.problem.params)
    state0 = tx.init(params)
    assert_same_signature(jax.eval_shape(tx.init, params), state0, "eval_shape(init) vs init: state")

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, **extra)
        return gradtx.apply_updates(params, updates), updates, state

    steps = []
    p, state = params, state0
    for g in host_grads:
        p, updates, state = step(p, state, jax.tree.map(jnp.asarray, g))
        assert_same_signature(updates, expected_updates(case, g), "updates vs gradients")
        assert_same_signature(state, state0, "state after update vs init")
        assert_same_signature(p, params, "params after apply_updates")
        assert_finite(updates, "updates")
        steps.append((p, updates, state))
    assert_state_dtypes(tx, state, params, case.drawn.asked)

    # lax.scan and lax.cond need the carried state to keep its type: trace a scan over the
    # steps that skips some with lax.cond (no run)
    def body(state, xs):
        g, take = xs
        return jax.lax.cond(take, lambda: step(params, state, g)[2], lambda: state), None

    takes = jnp.arange(len(host_grads)) % 2 == 0
    jax.eval_shape(lambda s, xs: jax.lax.scan(body, s, xs), state0, (_stack(host_grads), takes))
    return Reference(step, state0, steps)


# Checked references by the example's repr: hypothesis draws the same examples for each
# chex variant of a test (derandomized), and neither the reference nor its checks depend on
# the variant, so they run once per example (a failing one is not kept, and fails again).
_REFERENCES: collections.OrderedDict[str, Reference] = collections.OrderedDict()


def reference(case: Case) -> Reference:
    key = repr(case)
    if key not in _REFERENCES:
        _REFERENCES[key] = checked_reference(case)
        if len(_REFERENCES) > 512:
            _REFERENCES.popitem(last=False)
    return _REFERENCES[key]


def check_invariants(variant: Callable[[Callable], Callable], case: Case) -> None:
    """The invariants of the module docstring on the case's eager run (``reference``), and
    the same steps run through ``variant`` (one of chex's) from the numpy inputs agree
    with it."""
    ref = reference(case)
    run = variant(ref.step)
    jitted = variant.type is chex.ChexVariantType.WITH_JIT
    rtol = tolerance(case.problem.params, dtypes=tuple(case.drawn.asked.values()))
    p, state = case.problem.params, ref.state0
    for i, (g, want) in enumerate(zip(inputs(case), ref.steps)):
        p, updates, state = run(p, state, g)
        what = f"{variant.type.name} step {i + 1}: (params, updates, state)"
        assert_close((p, updates, state), want, rtol, what, compared=JIT_COMPARED if jitted else None)
