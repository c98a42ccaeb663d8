"""dtypes: updates keep each gradient leaf's dtype, states have the dtypes asked for, and
complex params work.

References: the dtypes themselves (exact); for complex params, optax 0.2.8 (adam, rmsprop,
sgd, adagrad; rtol 1e-5 over 200 steps) and the closed form of Adadelta with ``|g|^2``
(optax squares complex gradients there, ``g^2``, which is not a magnitude).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    assert_trees_close,
    compare_states,
    named_fields,
    random_grads,
    random_tree,
    run_optax,
    run_steps,
)

import gradtx
from gradtx.registry import of_kind

LR = 0.05
BF16, F32, F64, C64 = jnp.bfloat16, jnp.float32, jnp.float64, jnp.complex64

# State fields that hold |g|^2 statistics: real even for complex params.
SECOND_MOMENTS = {"nu", "nu_max", "sum_of_squares", "e_g", "e_x", "n"}
# Where optax's name for a first moment is one gradtx uses elsewhere for |g|^2: SM3's
# accumulators are ``mu`` and its momentum ``nu`` (complex for complex params).
FIRST_MOMENTS = {"sm3": {"nu"}}


class Case(NamedTuple):
    id: str
    make: Callable[[], Any]
    dtypes: dict  # state field -> the dtype asked for (mu_dtype, accumulator_dtype)
    extra: Optional[dict] = None  # keyword arguments of update (a loss value)
    first_moments: frozenset = frozenset()


def _with_rate(entry, kwargs: dict) -> dict:
    """``kwargs`` with the learning rate ``LR`` where the optimizer takes one and the grid
    point does not set it."""
    if "learning_rate" in inspect.signature(entry.obj).parameters:
        return {**kwargs, "learning_rate": kwargs.get("learning_rate", LR)}
    return kwargs


def _cases() -> list[Case]:
    """From the registry: each optimizer at its first grid point, and once per dtype
    argument (``mu_dtype``, ``accumulator_dtype``) in bfloat16 and float32, at the first
    grid point whose state has the field that argument sets."""
    cases = []
    for e in of_kind("optimizer"):
        if e.needs_objective:
            continue  # its update needs value_fn: tests/test_quasi_newton.py runs it
        more = dict(extra=e.update_extra, first_moments=frozenset(FIRST_MOMENTS.get(e.name, ())))
        cases.append(Case(e.name, functools.partial(e.obj, **_with_rate(e, e.grid[0])), {}, **more))
        for arg, field in e.dtypes.items():
            kwargs = next(kw for kw in e.grid if field in e.obj(**kw).init(jnp.zeros(2))._fields)
            for dtype in (BF16, F32):
                kw = {**_with_rate(e, kwargs), arg: dtype}
                cases.append(Case(f"{e.name}({arg}={jnp.dtype(dtype).name})", functools.partial(e.obj, **kw),
                                  {field: dtype}, **more))
    return cases


CASES = _cases()

# Leaf dtypes of the mixed trees: float32 and bfloat16 (default config), plus float64
# (inside jax.enable_x64(True), for that test only).
MIXED = {
    "x32": {"a": {"w": ((3, 2), F32)}, "b": [((4,), BF16), ((), BF16)], "c": (((2,), F32),)},
    "x64": {"a": {"w": ((3, 2), F32)}, "b": [((4,), BF16), ((), F64)], "c": (((2,), F64),)},
}


def _mixed_tree(spec, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 + rng.normal(size=s[0]), s[1]), spec,
                        is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple))


@pytest.fixture(params=sorted(MIXED))
def mixed(request):
    """A params tree and three gradient trees with float32 / bfloat16 (/ float64) leaves."""
    spec = MIXED[request.param]
    if request.param == "x64":
        with jax.enable_x64(True):
            yield _mixed_tree(spec, 0), [_mixed_tree(spec, 1 + i) for i in range(3)]
    else:
        yield _mixed_tree(spec, 0), [_mixed_tree(spec, 1 + i) for i in range(3)]


def check_state_dtypes(case: Case, state, params, *, complex_params: bool = False) -> None:
    """Each field the optimizer declares shaped like the params has, leaf by leaf, the
    dtype asked for, else the param's (its real counterpart for ``|g|^2`` fields); every
    ``count`` is int32. (Fields of other shapes, a PRNG key or Adafactor's row and column
    statistics, are checked by their own tests.)"""
    like_params = {k.name for k in case.make().stage.fields if k.field.like_params}
    for name, value in state._asdict().items():
        if name == "count":
            assert value.dtype == jnp.int32 and value.shape == ()
            continue
        if name not in like_params:
            continue
        assert jax.tree.structure(value) == jax.tree.structure(params), name
        for leaf, p in zip(jax.tree.leaves(value), jax.tree.leaves(params)):
            want = case.dtypes.get(name, p.dtype)
            if name in SECOND_MOMENTS and name not in case.first_moments and complex_params:
                want = jnp.finfo(p.dtype).dtype  # real-valued |g|^2 statistics
            assert leaf.dtype == want, f"state field {name}: {leaf.dtype}, expected {jnp.dtype(want)}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_updates_keep_each_leaf_dtype(case, mixed, jit):
    """Reference: the gradient leaves' dtypes. Over 3 steps every update leaf has its
    gradient's dtype, params keep theirs, and state fields have the dtypes asked for."""
    params, grads = mixed
    got = run_steps(case.make(), params, grads, jit=jit, extra=case.extra)
    for u, g in zip(jax.tree.leaves(got.updates), jax.tree.leaves(grads[-1])):
        assert u.dtype == g.dtype, f"update {u.dtype} for a {g.dtype} gradient"
        assert np.all(np.isfinite(np.asarray(u, np.float64)))
    assert [p.dtype for p in jax.tree.leaves(got.params)] == [p.dtype for p in jax.tree.leaves(params)]
    check_state_dtypes(case, got.state, params)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_complex_params(case, jit):
    """Reference: the dtypes. complex64 params and gradients: 20 finite complex64 updates;
    first-moment states complex64 (or the dtype asked for), ``|g|^2`` states float32."""
    params = random_tree(0, C64, small=True)
    grads = random_grads(1, 20, C64, small=True)
    got = run_steps(case.make(), params, grads, jit=jit, extra=case.extra)
    for tree in (got.updates, got.params):
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype == C64 and np.all(np.isfinite(np.asarray(leaf)))
    check_state_dtypes(case, got.state, params, complex_params=True)


COMPLEX_VS_OPTAX = [
    ("sgd", dict(learning_rate=LR, momentum=0.9, nesterov=True)),
    ("adam", dict(learning_rate=1e-2, eps=1e-3)),
    ("adam", dict(learning_rate=1e-2, eps=1e-3, eps_root=1e-4, nesterov=True)),
    ("rmsprop", dict(learning_rate=1e-3, eps=1e-3, momentum=0.9)),
    ("rmsprop", dict(learning_rate=1e-3, eps=1e-3, eps_in_sqrt=False, bias_correction=True)),
    ("rmsprop", dict(learning_rate=1e-3, eps=1e-3, centered=True, initial_scale=0.5)),
    ("adagrad", dict(learning_rate=0.1)),
]


@pytest.mark.parametrize("name,kw", COMPLEX_VS_OPTAX,
                         ids=[f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in COMPLEX_VS_OPTAX])
def test_complex_matches_optax(name, kw, jit):
    """``gradtx.X(**kw)`` vs ``optax.X(**kw)`` (optax 0.2.8) on complex64 params, 200
    steps, rtol 1e-5: params, last updates, and states by field name (gradtx keeps ``|g|^2``
    statistics real, optax as complex numbers with a zero imaginary part: the values agree)."""
    params = random_tree(0, C64, small=True)
    grads = random_grads(1, 200, C64, small=True)
    got = run_steps(getattr(gradtx, name)(**kw), params, grads, jit=jit)
    want = run_optax(getattr(optax, name)(**kw), params, grads, jit=jit)
    assert_trees_close(got.params, want.params, 1e-5, what="params")
    assert_trees_close(got.updates, want.updates, 1e-5, what="last updates")
    compare_states(got.state, want.state, 1e-5)


def test_complex_adadelta_closed_form(jit):
    """Reference: Zeiler's Adadelta with ``|g|^2``, in numpy complex128, 50 steps, rtol 1e-5::

        e_g = rho e_g + (1 - rho) |g|^2 ; d = sqrt(e_x + eps) / sqrt(e_g + eps) g
        e_x = rho e_x + (1 - rho) |d|^2 ; p = p - lr d
    """
    lr, rho, eps = 0.5, 0.8, 1e-4
    params = random_tree(0, C64, small=True)
    grads = random_grads(1, 50, C64, small=True)
    got = run_steps(gradtx.adadelta(lr, rho, eps), params, grads, jit=jit)

    p = [np.asarray(x, np.complex128) for x in jax.tree.leaves(params)]
    e_g = [np.zeros(x.shape) for x in p]
    e_x = [np.zeros(x.shape) for x in p]
    for step in grads:
        for i, g in enumerate(jax.tree.leaves(step)):
            g = np.asarray(g, np.complex128)
            e_g[i] = rho * e_g[i] + (1 - rho) * np.abs(g) ** 2
            d = np.sqrt(e_x[i] + eps) / np.sqrt(e_g[i] + eps) * g
            e_x[i] = rho * e_x[i] + (1 - rho) * np.abs(d) ** 2
            p[i] = p[i] - lr * d
    assert_trees_close(got.params, jax.tree.unflatten(jax.tree.structure(params), p), 1e-5, what="params")
    fields = named_fields(got.state)
    assert_trees_close(fields["e_g"][0], jax.tree.unflatten(jax.tree.structure(params), e_g), 1e-5, what="e_g")
    assert_trees_close(fields["e_x"][0], jax.tree.unflatten(jax.tree.structure(params), e_x), 1e-5, what="e_x")
