"""Shared fixtures and helpers for the cross-library suites (test_parity, test_structure,
test_dtypes): seeded random trees and gradient sequences, a step runner that works with
and without ``jax.jit``, float64 for one test at a time, and state comparison by field name.

Nothing here is autouse and nothing flips a global switch: float64 is enabled inside a
``jax.enable_x64(True)`` context that the ``precision`` fixture holds only for the test.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradtx

# Compile time is most of the suite's time (two XLA compilations of ~0.13 s for each
# parity run of a few microseconds' work). XLA:CPU's loop emitters compile the suite's
# small programs 2.3x faster than its default fusion emitters (adam's step: 0.062 s
# against 0.145 s here) from the same optimized HLO (the same fusions: the compiled HLO
# text is identical). Set before JAX starts its backend (importing jax starts none), and
# inherited by the subprocesses. The fresh processes that check XLA's own output
# (tests/test_fused_step.py, tests/test_flax_fast.py, tests/test_multiprocess.py) run
# with XLA's defaults, as does ``GRADTX_TEST_XLA_DEFAULTS=1 make test`` for the whole suite.
FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
if os.environ.get("GRADTX_TEST_XLA_DEFAULTS") != "1" and FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip()

# Leaf shapes of the random trees: a nested dict / list / tuple with a scalar leaf.
# Each leaf also has its own gradient scale, so that one run covers gradients much
# smaller and much larger than eps.
FULL_TREE = {
    "dense": {"w": ((5, 4), 1.0), "b": ((4,), 0.1)},
    "blocks": [{"conv": ((3, 3, 2), 3.0)}, (((2,), 0.02), ((), 1.0))],
    "scale": ((), 0.5),
}
# Fewer leaves (still nested dict / list / tuple with a scalar) for the 200-step parity
# runs: eagerly every leaf costs a dispatch per operation per step, and under jit the
# compile time grows with the leaves.
SMALL_TREE = {"w": ((3, 2), 1.0), "seq": [(((4,), 0.05),), ((), 2.0)]}

N_STEPS = 200


def _is_spec(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple) and isinstance(x[1], float)


def _spec(small: bool) -> Any:
    return SMALL_TREE if small else FULL_TREE


def _draw(rng: np.random.Generator, shape: tuple, dtype) -> np.ndarray:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return rng.normal(size=shape) + 1j * rng.normal(size=shape)
    return rng.normal(size=shape)


def random_tree(seed: int, dtype=jnp.float32, *, small: bool = False) -> Any:
    """A seeded random params tree (values ~ N(0, 1)) of ``dtype``."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(_draw(rng, s[0], dtype), dtype),
                        _spec(small), is_leaf=_is_spec)


def random_grads(seed: int, n_steps: int = N_STEPS, dtype=jnp.float32, *, small: bool = False,
                 mean: float = 0.3) -> list[Any]:
    """A seeded sequence of ``n_steps`` gradient trees, each leaf ``scale * (mean + N(0, 1))``.

    The non-zero mean keeps momentum and centered statistics away from the trivial case."""
    rng = np.random.default_rng(seed)
    spec = _spec(small)

    def one_step():
        return jax.tree.map(lambda s: jnp.asarray(s[1] * (mean + _draw(rng, s[0], dtype)), dtype),
                            spec, is_leaf=_is_spec)

    return [one_step() for _ in range(n_steps)]


class Run(NamedTuple):
    params: Any  # params after the last step
    updates: Any  # the last step's updates
    state: Any  # the state after the last step


def make_step(opt, apply_updates: Callable, *, jit: bool, extra: dict | None = None) -> Callable:
    """``(params, state, grads) -> (params, updates, state)``: one optimizer step, jitted or
    not; ``extra`` are keyword arguments of ``update`` (a loss ``value``)."""
    extra = extra or {}

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params, **extra)
        return apply_updates(params, updates), updates, state

    return jax.jit(step) if jit else step


def run_steps(opt, params, grads_seq, *, jit: bool, apply_updates: Callable = gradtx.apply_updates,
              extra: dict | None = None) -> Run:
    """Run ``opt`` over ``grads_seq`` from ``params``: the step under ``jax.jit`` with
    ``jit=True``, op by op otherwise."""
    step = make_step(opt, apply_updates, jit=jit, extra=extra)
    state = opt.init(params)
    updates = None
    for grads in grads_seq:
        params, updates, state = step(params, state, grads)
    return Run(params, updates, state)


def run_optax(opt, params, grads_seq, *, jit: bool) -> Run:
    """The optax reference run, in the same mode as the gradtx run it is compared with
    (XLA may keep bfloat16 intermediates in float32 under jit, so the modes can differ)."""
    return run_steps(opt, params, grads_seq, jit=jit, apply_updates=optax.apply_updates)


# --- comparing trees and states ------------------------------------------------------


def _is_named_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _contains_named_tuple(tree: Any) -> bool:
    return any(_is_named_tuple(x) for x in jax.tree.leaves(tree, is_leaf=_is_named_tuple))


def named_fields(state: Any) -> dict[str, list[Any]]:
    """Every NamedTuple field in ``state`` by name, in depth-first order (optax's states
    nest them; a gradtx state is one record, so each name appears once).

    A field whose value holds further NamedTuples (a wrapper's ``inner_state``) is walked
    into; any other field's value (an array, or a params-shaped tree) is collected."""
    out: dict[str, list[Any]] = collections.defaultdict(list)

    def visit(node):
        if _is_named_tuple(node):
            for name, value in zip(node._fields, node):
                if _contains_named_tuple(value):
                    visit(value)
                else:
                    out[name].append(value)
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(state)
    return dict(out)


def leaf_atol(desired: Any, rtol: float) -> float:
    """``rtol / 10 * max|desired|`` of a leaf: elements more than ten times smaller than
    the leaf's largest (a momentum trace that happens to cross zero, where float32 rounding
    of the larger terms dominates) are held to a tenth of the tolerance at the leaf's scale."""
    desired = np.asarray(desired)
    return rtol / 10 * float(np.max(np.abs(desired))) if desired.size else 0.0


def assert_trees_close(actual: Any, desired: Any, rtol: float, what: str = "") -> None:
    """``chex.assert_trees_all_close`` leaf by leaf at ``rtol``, with each leaf's
    ``atol = leaf_atol(desired leaf)``; every leaf finite; same structure and shapes."""
    chex.assert_trees_all_equal_structs(actual, desired)
    chex.assert_trees_all_equal_shapes(actual, desired)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(desired)[0]]
    for path, a, d in zip(paths, jax.tree.leaves(actual), jax.tree.leaves(desired)):
        assert np.all(np.isfinite(np.asarray(a, np.complex128))), f"{what}{path}: not finite: {a}"
        a64 = np.asarray(a).astype(np.result_type(np.asarray(a), np.float64))
        d64 = np.asarray(d).astype(np.result_type(np.asarray(d), np.float64))
        chex.assert_trees_all_close(a64, d64, rtol=rtol, atol=leaf_atol(d, rtol),
                                    custom_message=f"{what}{path}")


def compare_states(gx_state: Any, ox_state: Any, rtol: float, *, renames: dict[str, str] | None = None,
                   absent: Any = ()) -> list[str]:
    """Compare a gradtx state (one record) with an optax state field by field name.

    Every field of optax's state must be in gradtx's record (after ``renames``: gradtx
    field -> optax field), except those in ``absent``; each optax value under a name (optax
    may keep two ``count``s) must equal gradtx's. Returns the names compared."""
    renames = renames or {}
    gx = {renames.get(name, name): value for name, value in gx_state._asdict().items()}
    ox = named_fields(ox_state)
    compared = []
    for name in sorted(ox):
        if name not in gx:
            assert name in absent, f"optax's state has field {name!r}, gradtx's {sorted(gx)} has not"
            continue
        compared.append(name)
        for j, o in enumerate(ox[name]):
            if jnp.issubdtype(jnp.asarray(jax.tree.leaves(o)[0]).dtype, jnp.integer):
                chex.assert_trees_all_equal(gx[name], o, custom_message=f"state field {name} (optax #{j})")
            else:
                assert_trees_close(gx[name], o, rtol, what=f"state field {name} (optax #{j})")
    return compared


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["jit", "eager"])
def jit(request) -> bool:
    """Run the test body's optimizer steps under ``jax.jit`` and op by op."""
    return request.param


class Precision(NamedTuple):
    dtype: Any
    rtol: float


@contextlib.contextmanager
def in_precision(name: str):
    """``Precision`` of float32 (rtol 1e-5) or float64 (rtol 1e-10, inside
    ``jax.enable_x64(True)`` for the ``with`` block only)."""
    if name == "float64":
        with jax.enable_x64(True):
            yield Precision(jnp.float64, 1e-10)
        assert not jax.config.jax_enable_x64, "float64 leaked out of the test"
    else:
        yield Precision(jnp.float32, 1e-5)


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """float32 (rtol 1e-5) or float64 (rtol 1e-10, inside ``jax.enable_x64(True)`` for this
    test only)."""
    with in_precision(request.param) as p:
        yield p


MODES = [("jit", "float32"), ("jit", "float64"), ("eager", "float32")]


@pytest.fixture(params=MODES, ids="-".join)
def mode(request):
    """(jit, Precision): jitted float32 (rtol 1e-5) / float64 (rtol 1e-10, inside
    ``jax.enable_x64(True)`` for this test only), eager float32: the parity modes."""
    with in_precision(request.param[1]) as p:
        yield request.param[0] == "jit", p


schedule = gradtx.registry.parity_schedule


@functools.cache
def parity_inputs(dtype_name: str) -> tuple[Any, list[Any]]:
    """The parity runs' params and 200 gradient trees (the small tree), per dtype, built once."""
    dtype = jnp.dtype(dtype_name)
    return random_tree(0, dtype, small=True), random_grads(1, N_STEPS, dtype, small=True)


def check_parity(gx, want: Run, precision: Precision, jit: bool, *, renames=None, absent=(),
                 steps: int = N_STEPS) -> Run:
    """Run ``gx`` over the first ``steps`` of ``parity_inputs``; its params, last updates and
    every field of optax's state agree with the optax run ``want`` (over the same steps) at
    ``precision.rtol``. Returns gradtx's run."""
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    got = run_steps(gx, params, grads[:steps], jit=jit)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    compare_states(got.state, want.state, precision.rtol, renames=renames, absent=absent)
    return got
