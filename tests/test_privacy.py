"""DP-SGD's aggregation (``differentially_private_aggregate``, ``dpsgd``) and
``split_real_and_imaginary`` (``gradtx/privacy.py``).

References: optax.contrib 0.2.8 with the same seed or key, on per-example gradients (which
the registry's parity runner does not make); Abadi et al. 2016's Algorithm 1 in numpy
float64 (clip each example's whole gradient, sum, add ``N(0, C^2 sigma^2)``, divide by the
batch); the noise's closed-form standard deviation ``C * sigma / B``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close, parity_inputs, random_grads, random_tree, run_steps

import gradtx
from gradtx.base import UpdateError
from gradtx.registry import BY_NAME

BATCH = 5
SHAPES = {"w": (3, 2), "b": (4,), "s": ()}


def per_example(seed: int, dtype, scale: float = 1.0):
    """Per-example gradients: each leaf with a batch axis of ``BATCH`` first; example norms
    from about 0.3 to 3 (some clipped at C = 1, some not)."""
    rng = np.random.default_rng(seed)
    sizes = scale * np.geomspace(0.1, 1.0, BATCH)
    return {k: jnp.asarray(sizes.reshape((BATCH,) + (1,) * len(s)) * (0.3 + rng.normal(size=(BATCH, *s))), dtype)
            for k, s in SHAPES.items()}


def params_like(dtype):
    return {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}


def run_dp(opt, params, grads, *, jit: bool, apply_updates=gradtx.apply_updates):
    """``conftest.run_steps`` without params passed to ``update`` (per-example gradients have
    a batch axis the params lack: gradtx's tree check refuses them with the params)."""

    def step(params, state, g):
        updates, state = opt.update(g, state)
        return apply_updates(params, updates), updates, state

    step = jax.jit(step) if jit else step
    state, updates = opt.init(params), None
    for g in grads:
        params, updates, state = step(params, state, g)
    return params, updates, state


def key_bits(key):
    return np.asarray(jax.random.key_data(key))


DPSGD = [pytest.param(kw, id=f"dpsgd-{i}") for i, kw in enumerate(BY_NAME["dpsgd"].grid)]


@pytest.mark.parametrize("kwargs", DPSGD)
def test_dpsgd_matches_optax_with_the_same_seed(kwargs, mode):
    """Reference: ``optax.contrib.dpsgd(**kw)`` 0.2.8 (the registry's grid), 200 steps
    jitted (5 eagerly) of per-example gradients: params and last updates to rtol 1e-10
    (float64) / 1e-5 (float32), the key bit for bit (the same noise)."""
    jit, precision = mode
    params = params_like(precision.dtype)
    grads = [per_example(i, precision.dtype, scale=3.0) for i in range(200 if jit else 5)]
    got = run_dp(gradtx.dpsgd(**kwargs), params, grads, jit=jit)
    want = run_dp(optax.contrib.dpsgd(**kwargs), params, grads, jit=jit, apply_updates=optax.apply_updates)
    assert_trees_close(got[0], want[0], precision.rtol, what="params")
    assert_trees_close(got[1], want[1], precision.rtol, what="last updates")
    np.testing.assert_array_equal(key_bits(got[2].rng_key), key_bits(want[2][0].rng_key))
    if "momentum" in kwargs:
        assert_trees_close(got[2].trace, want[2][1].trace, precision.rtol, what="trace")


@pytest.mark.parametrize("key", [3, "typed"])
def test_aggregate_matches_optax_with_the_same_key(key, precision):
    """Reference: ``optax.contrib.differentially_private_aggregate`` with the same int seed
    or typed key, 5 steps: outputs to rtol 1e-10 / 1e-5."""
    key = jax.random.key(11) if key == "typed" else key
    gx = gradtx.differentially_private_aggregate(1.0, 0.7, key=key)
    ox = optax.contrib.differentially_private_aggregate(1.0, 0.7, key=key)
    g_state, o_state = gx.init(params_like(precision.dtype)), ox.init(params_like(precision.dtype))
    for i in range(5):
        grads = per_example(i, precision.dtype, scale=3.0)
        g_out, g_state = gx.update(grads, g_state)
        o_out, o_state = ox.update(grads, o_state)
        assert_trees_close(g_out, o_out, precision.rtol)


def dp_numpy(grads, clip: float, *, whole_example: bool = True, noise=None, noise_std: float = 0.0,
             divide_noise: bool = True):
    """Abadi et al.'s Algorithm 1 in numpy float64: clip each example (its whole gradient, or
    each leaf apart with ``whole_example=False``: a mutant) to norm ``clip``, sum, add
    ``noise_std * noise``, divide by the batch (``divide_noise=False``: the noise added after
    the division, a mutant)."""
    g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
    flat = lambda x: x.reshape(BATCH, -1)  # noqa: E731
    if whole_example:
        norms = np.sqrt(sum(np.sum(flat(x) ** 2, axis=1) for x in g.values()))
        factors = {k: np.minimum(1.0, clip / norms) for k in g}
    else:
        factors = {k: np.minimum(1.0, clip / np.sqrt(np.sum(flat(x) ** 2, axis=1))) for k, x in g.items()}
    noise = noise or {k: np.zeros(x.shape[1:]) for k, x in g.items()}
    out = {}
    for k, x in g.items():
        total = np.tensordot(factors[k], x, axes=1)
        out[k] = (total + noise_std * noise[k]) / BATCH if divide_noise else total / BATCH + noise_std * noise[k]
    return out


VARIANTS = [
    ("the paper's rule", {}, True),
    ("each leaf clipped apart (mutant)", dict(whole_example=False), False),
    ("noise added after the division (mutant)", dict(divide_noise=False), False),
]


@pytest.mark.parametrize("what, flags, right", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_aggregate_follows_the_paper(what, flags, right):
    """Reference: ``dp_numpy`` (float64) with the noise gradtx drew (recovered from a run with
    zero gradients and the same key): gradtx agrees at float32's rtol 1e-5; clipping each
    leaf apart, or not dividing the noise by the batch, fails it."""
    clip, sigma, key = 1.0, 0.4, 5
    grads = per_example(0, jnp.float32, scale=3.0)
    tx = gradtx.differentially_private_aggregate(clip, sigma, key=key)
    got, _ = tx.update(grads, tx.init(params_like(jnp.float32)))
    zeros = jax.tree.map(jnp.zeros_like, grads)
    noise_only, _ = tx.update(zeros, tx.init(params_like(jnp.float32)))
    noise = {k: np.asarray(v, np.float64) * BATCH / (clip * sigma) for k, v in noise_only.items()}
    want = dp_numpy(grads, clip, noise=noise, noise_std=clip * sigma, **flags)
    if right:
        assert_trees_close(got, want, 1e-5)
    else:
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_trees_close(got, want, 1e-5, what=what)


def test_noise_has_the_closed_form_standard_deviation():
    """Reference: ``std = C * sigma / B`` of the noise on zero gradients: the sample standard
    deviation of 20000 draws is within 3% of it, and its mean within 4 standard errors of 0."""
    clip, sigma = 0.5, 2.0
    tx = gradtx.differentially_private_aggregate(clip, sigma, key=1)
    out, _ = tx.update({"x": jnp.zeros((BATCH, 20000))}, tx.init({"x": jnp.zeros(20000)}))
    x = np.asarray(out["x"], np.float64)
    std = clip * sigma / BATCH
    assert abs(x.std() / std - 1) < 0.03
    assert abs(x.mean()) < 4 * std / np.sqrt(x.size)


def test_mismatched_batch_axes_are_named():
    """Reference: the message, naming the call and each leaf path's shape."""
    tx = gradtx.dpsgd(0.1, 1.0, 1.0, seed=0)
    grads = {"a": jnp.ones((3, 2)), "b": jnp.ones((4,))}
    with pytest.raises(UpdateError) as info:
        tx.update(grads, tx.init({"a": jnp.ones(2), "b": jnp.ones(())}))
    assert str(info.value).startswith("gradtx.dpsgd > differentially_private_aggregate: the updates must be "
                                      "per-example gradients")
    assert "['a']: (3, 2)" in str(info.value) and "['b']: (4,)" in str(info.value)


SPLIT_INNER = [
    ("adam", lambda mod: mod.adam(1e-2, eps=1e-3)),
    ("sgd nesterov", lambda mod: mod.sgd(0.05, momentum=0.9, nesterov=True)),
]


@pytest.mark.parametrize("name, inner", SPLIT_INNER, ids=[s[0] for s in SPLIT_INNER])
def test_split_real_and_imaginary_matches_optax(name, inner, precision):
    """Reference: ``optax.contrib.split_real_and_imaginary(optax.<inner>)`` 0.2.8 on complex
    params (complex64 / complex128) with a real leaf among them, 200 jitted steps: params,
    last updates and the inner ``mu`` / ``trace`` to rtol 1e-10 / 1e-5."""
    cdtype = jnp.complex128 if precision.dtype == jnp.float64 else jnp.complex64
    params = random_tree(0, cdtype, small=True)
    grads = random_grads(1, 200, cdtype, small=True)
    params["w"], grads = params["w"].real, [{**g, "w": g["w"].real} for g in grads]  # a real leaf
    got = run_steps(gradtx.split_real_and_imaginary(inner(gradtx)), params, grads, jit=True)
    want = run_steps(optax.contrib.split_real_and_imaginary(inner(optax)), params, grads, jit=True,
                     apply_updates=optax.apply_updates)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    field = "mu" if name == "adam" else "trace"
    ox_field = optax.tree.get(want.state.inner_state, field)
    assert_trees_close(jax.tree.leaves(getattr(got.state.inner_state, field)), jax.tree.leaves(ox_field),
                       precision.rtol, what=field)


def test_split_passes_real_leaves_through_and_splits_complex_ones():
    """Closed form with ``sign_sgd``: a complex update becomes ``-lr * (sign(re) + i
    sign(im))``, a real one ``-lr * sign(u)``; the inner state sees the pair of real parts."""
    tx = gradtx.split_real_and_imaginary(gradtx.sign_sgd(0.1))
    p = {"c": jnp.array([1.0 + 1.0j, 2.0j]), "r": jnp.array([1.0, -1.0])}
    u = {"c": jnp.array([2.0 - 3.0j, -1.0 + 0.5j]), "r": jnp.array([0.5, -2.0])}
    out, _ = tx.update(u, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(out["c"]), [-0.1 + 0.1j, 0.1 - 0.1j], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["r"]), [-0.1, 0.1], rtol=1e-6)
    assert out["c"].dtype == jnp.complex64 and out["r"].dtype == jnp.float32
    inner = gradtx.split_real_and_imaginary(gradtx.adam(1e-2)).init(p).inner_state
    assert type(inner.mu["c"]).__name__ == "_RealPair" and inner.mu["r"].dtype == jnp.float32


def test_parity_inputs_have_no_batch_axis():
    """Why the registry's parity runner cannot run DP-SGD (its rows name this file): the
    parity tree's leaves have no common first axis, and DP-SGD refuses them."""
    params, grads = parity_inputs("float32")
    tx = gradtx.dpsgd(0.1, 1.0, 1.0, seed=0)
    with pytest.raises(UpdateError, match="per-example gradients"):
        tx.update(grads[0], tx.init(params))
