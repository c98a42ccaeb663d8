"""Complex params against references: optax 0.2.8 (adam, rmsprop, sgd, adagrad; rtol 1e-5
over 200 steps) and the closed form of Adadelta with ``|g|^2`` (optax squares complex
gradients there, ``g^2``, which is not a magnitude).

That every update leaf keeps its gradient's dtype, params keep theirs and state fields have
the dtypes asked for, over mixed float32 / bfloat16 / float16 / float64 / complex64 trees,
is a property of every registry entry: ``tests/properties/test_registry_properties.py``.
"""

from __future__ import annotations

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

LR = 0.05
C64 = jnp.complex64

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
