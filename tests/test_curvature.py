"""Sophia and Hutchinson's estimator of the Hessian's diagonal (``gradtx/curvature.py``,
``gradtx/optimizers/curvature.py``).

References: optax.contrib 0.2.8's ``sophia`` and ``hutchinson_estimator_diag_hessian`` in
optax's own usage (``update(..., obj_fn=...)``, the same key); the closed-form Hessian
diagonal of separable and quadratic objectives; a numpy float64 transcription of the
update rule in ``gradtx.sophia``'s docstring. The registry's parity runner cannot run these
rows (update needs ``obj_fn``), so the parity runs are here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close, parity_inputs, run_steps

import gradtx
from gradtx.base import UpdateError
from gradtx.registry import BY_NAME
from gradtx.transform import Field, named, primitive

A_SEED = 5


def objective(params):
    """A non-separable, non-convex objective over the whole tree: ``0.5 x^T A x / n +
    sum(cos x) + 0.05 sum(x^4)``, ``A`` a fixed random PSD matrix (the Hessian has
    off-diagonal terms, so Rademacher probes give noisy estimates, and negative diagonal
    entries where ``cos`` dominates, which Sophia floors at ``eps``)."""
    x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
    b = np.random.default_rng(A_SEED).normal(size=(x.size, x.size))
    a = jnp.asarray(b @ b.T, x.dtype)
    return 0.5 * x @ a @ x / x.size + jnp.sum(jnp.cos(x)) + 0.05 * jnp.sum(x**4)


def key_bits(key):
    """The raw bits of a typed or raw PRNG key (optax's default key is raw, gradtx's typed)."""
    return np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)


SOPHIA_GRID = BY_NAME["sophia"].grid
SOPHIA_CASES = [
    pytest.param(kw, m, id=f"{'-'.join(m)}-{i}")
    for i, kw in enumerate(SOPHIA_GRID)
    for m in [("jit", "float32"), ("jit", "float64"), ("eager", "float32")]
    if m[0] == "jit" or i == 0
]


@pytest.mark.parametrize("kwargs, mode", SOPHIA_CASES, indirect=["mode"])
def test_sophia_matches_optax(kwargs, mode):
    """Reference: ``optax.contrib.sophia(**kw)`` 0.2.8, the same ``obj_fn`` and the default
    key, 200 steps jitted (3 eagerly: each eager step traces the objective's Hessian-vector
    product anew): params, last updates, ``count, mu, nu`` and the
    estimator's key agree to rtol 1e-10 (float64) / 1e-5 (float32)."""
    jit, precision = mode
    params, grads = parity_inputs(jnp.dtype(precision.dtype).name)
    grads = grads if jit else grads[:3]
    extra = {"obj_fn": objective}
    got = run_steps(gradtx.sophia(**kwargs), params, grads, jit=jit, extra=extra)
    want = run_steps(optax.contrib.sophia(**kwargs), params, grads, jit=jit, extra=extra,
                     apply_updates=optax.apply_updates)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    ox = want.state[0]
    assert int(got.state.count) == int(ox.count) == len(grads)
    assert_trees_close(got.state.mu, ox.mu, precision.rtol, what="mu")
    assert_trees_close(got.state.nu, ox.nu, precision.rtol, what="nu")
    np.testing.assert_array_equal(key_bits(got.state.hessian_fn_state.key), key_bits(ox.hessian_fn_state.key))


@pytest.mark.parametrize("seed", [None, 7, "typed", "raw"])
def test_hutchinson_gives_optax_estimates_with_the_same_key(seed, precision):
    """Reference: ``optax.contrib.hutchinson_estimator_diag_hessian`` with the same seed
    (None, an int, a typed key, a raw key): 3 successive estimates agree to rtol 1e-10
    (float64) / 1e-5 (float32), and the keys bit for bit."""
    make = {"typed": lambda: jax.random.key(3), "raw": lambda: jax.random.PRNGKey(3)}
    seed = make[seed]() if seed in make else seed
    params = parity_inputs(jnp.dtype(precision.dtype).name)[0]
    gx = gradtx.hutchinson_estimator_diag_hessian(seed)
    # optax takes no int seed (its key is the int's jax.random.key here); its default is
    # PRNGKey(0), a raw key, whose bits gradtx keeps typed
    ox = optax.contrib.hutchinson_estimator_diag_hessian(jax.random.key(seed) if isinstance(seed, int) else seed)
    g_state, o_state = gx.init(params), ox.init(params)
    for _ in range(3):
        g_out, g_state = gx.update(params, g_state, params, obj_fn=objective)
        o_out, o_state = ox.update(params, o_state, params, obj_fn=objective)
        assert_trees_close(g_out, o_out, precision.rtol)
        np.testing.assert_array_equal(key_bits(g_state.key), key_bits(o_state.key))


def separable(params):
    """``sum_i c_i x_i^2 + sin(x_i)``: a diagonal Hessian ``2 c - sin(x)``."""
    return sum(jnp.sum((1.0 + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)) * x**2 + jnp.sin(x))
               for x in jax.tree.leaves(params))


def separable_diag(params):
    return jax.tree.map(lambda x: 2 * (1.0 + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)) - jnp.sin(x),
                        params)


def gaussian_estimator(seed: int) -> gradtx.Transformation:
    """A wrong Hutchinson estimator (mutant): Gaussian probes ``z ~ N(0, I)``, whose sample
    ``H_ii z_i^2`` is not exact even for a diagonal Hessian (the paper's and Levanter's
    probes are Gaussian: unbiased, noisier)."""

    def apply(updates, state, step):
        key, sample = jax.random.split(state["key"])
        leaves, treedef = jax.tree.flatten(step.params)
        probes = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                              for k, x in zip(jax.random.split(sample, len(leaves)), leaves)])
        hvp = jax.jvp(jax.grad(step.extra["obj_fn"]), (step.params,), (probes,))[1]
        return jax.tree.map(jnp.multiply, hvp, probes), {"key": key}

    key = Field(lambda params: jax.random.key(seed), like_params=False)
    return named("gaussian_estimator", primitive(apply, {"key": key}))


ESTIMATORS = [
    ("rademacher", gradtx.hutchinson_estimator_diag_hessian, True),
    ("gaussian (mutant)", gaussian_estimator, False),
]


@pytest.mark.parametrize("name, make, exact", ESTIMATORS, ids=[e[0] for e in ESTIMATORS])
def test_hutchinson_is_exact_for_a_diagonal_hessian(name, make, exact, precision):
    """Reference: the closed form ``diag(H) = 2 c - sin(x)`` of a separable objective. With
    Rademacher probes (``z_i^2 = 1``) every single estimate equals it, at rtol 1e-10
    (float64) / 1e-5 (float32), for 3 keys; the Gaussian-probe mutant fails that
    tolerance (``H_ii z_i^2``)."""
    params = parity_inputs(jnp.dtype(precision.dtype).name)[0]
    want = separable_diag(params)
    for seed in range(3):
        tx = make(seed)
        got, _ = tx.update(params, tx.init(params), params, obj_fn=separable)
        if exact:
            assert_trees_close(got, want, precision.rtol)
        else:
            with pytest.raises(AssertionError, match="Not equal to tolerance"):
                assert_trees_close(got, want, 1e-5)


def test_hutchinson_mean_converges_to_the_diagonal():
    """Reference: ``diag(A)`` of the quadratic ``0.5 x^T A x`` (a dense Hessian). The mean of
    4000 estimates (float64) is within 4 standard errors of it on every coordinate, the
    standard error from the estimator's closed-form variance ``sum_{j != i} A_ij^2``; and one
    estimate alone is not within 1e-3 (the probes' cross terms are really there)."""
    n, probes = 6, 4000
    b = np.random.default_rng(1).normal(size=(n, n))
    a = b @ b.T
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).normal(size=n))
        tx = gradtx.hutchinson_estimator_diag_hessian()

        def estimate(key):
            return tx.update(x, tx.init(x)._replace(key=key), x, obj_fn=lambda p: 0.5 * p @ jnp.asarray(a) @ p)[0]

        samples = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(0), probes)))
    stderr = np.sqrt((np.sum(a**2, axis=1) - np.diag(a) ** 2) / probes)
    assert np.all(np.abs(samples.mean(0) - np.diag(a)) < 4 * stderr)
    assert np.max(np.abs(samples[0] - np.diag(a))) > 1e-3


# --- Sophia's rule in numpy ---------------------------------------------------------------

RULE = dict(learning_rate=0.05, b1=0.8, b2=0.9, eps=1e-3, weight_decay=0.1, gamma=0.3, clip_threshold=0.5,
            update_interval=3)


def sophia_numpy(params, grads, *, learning_rate, b1, b2, eps, weight_decay, gamma, clip_threshold, update_interval):
    """``gradtx.sophia``'s docstring rule in numpy float64, with the exact Hessian diagonal of
    ``separable`` (which Rademacher probes give exactly): the previous ``h`` divides, the
    refresh happens after, at steps 1, 1 + k, ..."""
    p = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    m = [np.zeros_like(x) for x in p]
    h = [np.zeros_like(x) for x in p]
    for t, step in enumerate(grads, start=1):
        for i, g in enumerate(jax.tree.leaves(step)):
            m[i] = b1 * m[i] + (1 - b1) * np.asarray(g, np.float64)
            u = np.clip(m[i] / (1 - b1**t) / np.maximum(gamma * h[i], eps), -clip_threshold, clip_threshold)
            if (t - 1) % update_interval == 0:
                c = 1.0 + np.arange(p[i].size).reshape(p[i].shape)
                h[i] = b2 * h[i] + (1 - b2) * (2 * c - np.sin(p[i]))
            p[i] = p[i] - learning_rate * (u + weight_decay * p[i])
    return jax.tree.unflatten(jax.tree.structure(params), p)


def _sophia_chain(first_moment, denominator, after_divide, kw=RULE):
    """A Sophia-like chain from gradtx pieces, for the mutants."""
    return gradtx.chain(
        gradtx.fork(first_moment, gradtx.chain(gradtx.hessian_diagonal_ema(kw["b2"], kw["update_interval"]),
                                               denominator), join=jnp.divide),
        *after_divide,
        gradtx.add_decayed_weights(kw["weight_decay"]),
        gradtx.scale_by_learning_rate(kw["learning_rate"]),
    )


def _moment(kw=RULE):
    return gradtx.chain(gradtx.scale_by_ema(kw["b1"]), gradtx.bias_correct(kw["b1"]))


SOPHIA_VARIANTS = [
    ("sophia", lambda: gradtx.sophia(**RULE), True),
    ("the explicit chain", lambda: _sophia_chain(_moment(), gradtx.sophia_denominator(RULE["gamma"], RULE["eps"]),
                                                 [gradtx.clip(RULE["clip_threshold"])]), True),
    ("clip before dividing (mutant)", lambda: _sophia_chain(
        gradtx.chain(_moment(), gradtx.clip(RULE["clip_threshold"])),
        gradtx.sophia_denominator(RULE["gamma"], RULE["eps"]), []), False),
    ("clip at 1, not clip_threshold (mutant)", lambda: _sophia_chain(
        _moment(), gradtx.sophia_denominator(RULE["gamma"], RULE["eps"]), [gradtx.clip(1.0)]), False),
    ("gamma ignored (mutant)", lambda: _sophia_chain(
        _moment(), gradtx.sophia_denominator(1.0, RULE["eps"]), [gradtx.clip(RULE["clip_threshold"])]), False),
    ("no bias correction (mutant: the paper's m)", lambda: _sophia_chain(
        gradtx.scale_by_ema(RULE["b1"]), gradtx.sophia_denominator(RULE["gamma"], RULE["eps"]),
        [gradtx.clip(RULE["clip_threshold"])]), False),
]


@pytest.mark.parametrize("name, make, right", SOPHIA_VARIANTS, ids=[v[0] for v in SOPHIA_VARIANTS])
def test_sophia_rule_in_numpy_and_mutants(name, make, right):
    """Reference: ``sophia_numpy`` (float64) over 30 steps of the parity gradients with the
    separable objective: gradtx's sophia and its explicit chain agree at float32's rtol
    1e-5; the wrong formulas (clip before the division, the clip at 1, ``gamma``
    ignored, no bias correction) fail it. Jitted (the eager path runs in the parity test)."""
    params, grads = parity_inputs("float32")
    got = run_steps(make(), params, grads[:30], jit=True, extra={"obj_fn": separable})
    want = sophia_numpy(params, grads[:30], **RULE)
    if right:
        assert_trees_close(got.params, want, 1e-5)
    else:
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_trees_close(got.params, want, 1e-5, what=name)


def test_sophia_first_step_and_zero_gradients():
    """Closed forms: the first step divides by ``eps`` (``h = 0``), so it is ``-lr *
    clip_threshold * sign(g)``, and ``nu`` becomes ``(1 - b2) diag(H)`` (exact, float32);
    zero gradients then give a zero step (without weight decay) and leave ``mu`` at 0."""
    opt = gradtx.sophia(0.1, b2=0.9, weight_decay=0.0, clip_threshold=0.5)
    p = jnp.array([1.0, -2.0, 0.5])
    u, state = opt.update(jnp.array([3.0, -1e-3, 0.0]), opt.init(p), p, obj_fn=separable)
    np.testing.assert_allclose(np.asarray(u), [-0.05, 0.05, 0.0], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(state.nu), 0.1 * np.asarray(separable_diag(p)), rtol=1e-6)
    zero = gradtx.sophia(0.1, weight_decay=0.0)
    u, state = zero.update(jnp.zeros(3), zero.init(p), p, obj_fn=separable)
    np.testing.assert_array_equal(np.asarray(u), 0.0)
    np.testing.assert_array_equal(np.asarray(state.mu), 0.0)


def test_estimator_runs_only_at_refresh_steps():
    """Reference: the refresh steps ``1, 1 + k, ...``: ``nu`` changes at steps 1 and 4 of 6
    (``update_interval=3``) and at no other, and the key advances only then."""
    tx = gradtx.hessian_diagonal_ema(b2=0.9, update_interval=3)
    p = jnp.array([1.0, 2.0])
    state = tx.init(p)
    changed = []
    update = jax.jit(lambda u, s, p: tx.update(u, s, p, obj_fn=separable))
    for _ in range(6):
        _, new = update(p, state, p)
        changed.append(bool(jnp.any(new.nu != state.nu)))
        assert changed[-1] == bool(jnp.any(key_bits(new.hessian_fn_state.key) != key_bits(state.hessian_fn_state.key)))
        state = new
    assert changed == [True, False, False, True, False, False]


def test_sophia_state_shapes_and_abstract_init():
    """Reference: the params. ``jax.eval_shape(init)`` works (no concrete key needed) and
    ``mu``, ``nu`` are shaped like the params; the state is one flat record."""
    params = parity_inputs("float32")[0]
    opt = gradtx.sophia(1e-2)
    abstract = jax.eval_shape(opt.init, params)
    assert abstract._fields == ("count", "mu", "nu", "hessian_fn_state")
    assert jax.tree.map(lambda x: x.shape, abstract.nu) == jax.tree.map(jnp.shape, params)


@pytest.mark.parametrize("call, message", [
    (lambda opt, g, s, p: opt.update(g, s, p),
     "gradtx.sophia > hessian_diagonal_ema: update() needs the objective as the keyword obj_fn"),
    (lambda opt, g, s, p: opt.update(g, s, obj_fn=separable),
     "gradtx.sophia > hessian_diagonal_ema: update() needs params"),
])
def test_missing_objective_or_params_is_named(call, message):
    """Reference: the messages, naming the optimizer and its stage at fault."""
    opt = gradtx.sophia(1e-2)
    p = jnp.ones(2)
    with pytest.raises(UpdateError) as info:
        call(opt, p, opt.init(p), p)
    assert str(info.value).startswith(message)
