"""Layer-wise trust ratio (LAMB, LARS, NovoGrad, Fromage) and sign methods (signSGD,
Signum): what the registry's parity grids do not say.

- negative controls: wrong formulas (built from gradtx pieces, or a primitive with a term
  changed) fail the float32 rtol 1e-5 comparison with the optax 0.2.8 run of the right one;
- the papers' algorithms in numpy float64 (LARS's Algorithm 1, NovoGrad's Algorithm 1,
  Fromage's Algorithm 1), where optax 0.2.8 departs from them (LARS's denominator with
  weight decay, NovoGrad's weight-decay schedule) and where it does not;
- the trust ratio's edge cases, and its one formula shared with the packed layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, random_grads, random_tree, run_optax, run_steps

import gradtx
from gradtx.layerwise import leaf_norm, trust_ratio
from gradtx.rows._entry import ndim_above_one, parity_schedule
from gradtx.transform import Field

PARAMS = random_tree(0, small=True)
GRADS = random_grads(1, 200, small=True)
RTOL = 1e-5


def _optax_params(name: str, **kwargs):
    return run_optax(getattr(optax, name)(**kwargs), PARAMS, GRADS, jit=True).params


def _leafwise_ratio(ratio_fn):
    """A stateless stage ``u -> u * ratio_fn(||u||, ||p||)`` leaf by leaf (for mutants)."""
    return gradtx.stateless(
        lambda updates, params: jax.tree.map(lambda u, p: u * ratio_fn(leaf_norm(u), leaf_norm(p)), updates, params)
    )


def _global_ratio():
    """The trust ratio over the whole tree instead of per leaf (a mutant)."""

    def scale(updates, params):
        r = gradtx.global_norm(params) / gradtx.global_norm(updates)
        return jax.tree.map(lambda u: u * r, updates)

    return gradtx.stateless(scale)


def _novograd_nu_from_zero(b2: float):
    """``layer_second_moment`` with its first-step initialisation removed (a mutant)."""

    def apply(updates, state, step):
        nu = jax.tree.map(lambda u, n: (1 - b2) * jnp.sum(u**2) + b2 * n, updates, state["nu"])
        return nu, {"nu": nu}

    init = lambda params: jax.tree.map(lambda p: jnp.zeros((), p.dtype), params)  # noqa: E731
    return gradtx.primitive(apply, {"nu": Field(init, like_params=False)})


def _novograd_like(second, momentum, lr=1e-2, eps=1e-6):
    return gradtx.chain(
        gradtx.fork(gradtx.identity(), gradtx.chain(second, gradtx.sqrt_eps(eps)), join=jnp.divide),
        momentum,
        gradtx.scale_by_learning_rate(lr),
    )


LAMB = dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, weight_decay=0.1, mask=ndim_above_one)
LAMB_DIRECTION = lambda: gradtx.adam_direction(0.8, 0.95, 1e-3, 1e-4)  # noqa: E731
LAMB_DECAY = lambda: gradtx.add_decayed_weights(0.1, ndim_above_one)  # noqa: E731
LARS = dict(learning_rate=0.5, trust_coefficient=0.02, eps=1e-3, momentum=0.8)

# (what is wrong, the wrong formula, the optax optimizer and arguments of the right one)
MUTANTS = [
    (
        "lamb trust ratio inverted",
        lambda: gradtx.chain(
            LAMB_DIRECTION(), LAMB_DECAY(), _leafwise_ratio(lambda u, p: u / p), gradtx.scale_by_learning_rate(1e-2)
        ),
        ("lamb", LAMB),
    ),
    (
        "lamb without trust ratio",
        lambda: gradtx.chain(LAMB_DIRECTION(), LAMB_DECAY(), gradtx.scale_by_learning_rate(1e-2)),
        ("lamb", LAMB),
    ),
    (
        "lamb trust ratio over the whole tree",
        lambda: gradtx.chain(LAMB_DIRECTION(), LAMB_DECAY(), _global_ratio(), gradtx.scale_by_learning_rate(1e-2)),
        ("lamb", LAMB),
    ),
    (
        "lamb decay after the trust ratio",
        lambda: gradtx.chain(
            LAMB_DIRECTION(), gradtx.scale_by_trust_ratio(), LAMB_DECAY(), gradtx.scale_by_learning_rate(1e-2)
        ),
        ("lamb", LAMB),
    ),
    (
        "lars without trust ratio",
        lambda: gradtx.chain(gradtx.scale_by_learning_rate(0.5), gradtx.trace(0.8)),
        ("lars", LARS),
    ),
    (
        "lars trust ratio inverted",
        lambda: gradtx.chain(
            _leafwise_ratio(lambda u, p: 0.02 * u / (p + 1e-3)), gradtx.scale_by_learning_rate(0.5), gradtx.trace(0.8)
        ),
        ("lars", LARS),
    ),
    (
        "novograd without per-layer norm (element-wise second moment)",
        lambda: _novograd_like(gradtx.second_moment(0.25), gradtx.trace(0.9)),
        ("novograd", dict(learning_rate=1e-2)),
    ),
    (
        "novograd nu started at 0",
        lambda: _novograd_like(_novograd_nu_from_zero(0.25), gradtx.trace(0.9)),
        ("novograd", dict(learning_rate=1e-2)),
    ),
    (
        "novograd momentum as an average (1 - b1)",
        lambda: _novograd_like(gradtx.layer_second_moment(0.25), gradtx.scale_by_ema(0.9)),
        ("novograd", dict(learning_rate=1e-2)),
    ),
    (
        "fromage without the retraction",
        lambda: gradtx.chain(gradtx.scale_by_trust_ratio(0.5), gradtx.scale_by_learning_rate(0.1)),
        ("fromage", dict(learning_rate=0.1, min_norm=0.5)),
    ),
    (
        "sign_sgd as sgd",
        lambda: gradtx.sgd(0.05),
        ("sign_sgd", dict(learning_rate=0.05)),
    ),
    (
        "signum decay swapped",
        lambda: gradtx.signum(0.05, beta=0.2),
        ("signum", dict(learning_rate=0.05, beta=0.8)),
    ),
]


@pytest.mark.parametrize("what,wrong,right", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_wrong_formulas_fail_the_parity_comparison(what, wrong, right):
    """Negative control. Reference: the optax 0.2.8 run of the right optimizer, 200 jitted
    float32 steps; the wrong formula's params must differ beyond rtol 1e-5."""
    name, kwargs = right
    got = run_steps(wrong(), PARAMS, GRADS, jit=True)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got.params, _optax_params(name, **kwargs), RTOL, what=what)


# --- LARS: the paper's Algorithm 1 ------------------------------------------------------


def _leaves64(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _lars_paper(lr, wd, tc, eps, momentum, steps):
    """You et al. 2017 (https://arxiv.org/abs/1708.03888), Algorithm 1, in float64::

    lambda = tc * ||w|| / (||g|| + wd * ||w|| + eps) ; v = m * v + lr * lambda * (g + wd * w) ; w = w - v
    """
    w = _leaves64(PARAMS)
    v = [np.zeros_like(x) for x in w]
    for grads in GRADS[:steps]:
        for i, g in enumerate(_leaves64(grads)):
            local = tc * np.linalg.norm(w[i]) / (np.linalg.norm(g) + wd * np.linalg.norm(w[i]) + eps)
            v[i] = momentum * v[i] + lr * local * (g + wd * w[i])
            w[i] = w[i] - v[i]
    return jax.tree.unflatten(jax.tree.structure(PARAMS), w)


def test_lars_follows_the_paper_where_optax_does_not():
    """Reference: LARS's Algorithm 1 in numpy float64 (``_lars_paper``), 50 steps, rtol
    1e-5, weight decay and the trust ratio on every leaf. optax 0.2.8 divides by
    ``||g + wd * w||`` instead of ``||g|| + wd * ||w||``: its run differs beyond the
    tolerance (the defect gradtx does not copy)."""
    kw = dict(learning_rate=0.5, weight_decay=0.5, trust_coefficient=0.02, eps=1e-3, momentum=0.8)
    want = _lars_paper(0.5, 0.5, 0.02, 1e-3, 0.8, steps=50)
    got = run_steps(gradtx.lars(**kw), PARAMS, GRADS[:50], jit=True)
    assert_trees_close(got.params, want, RTOL, what="gradtx.lars vs the paper")
    theirs = run_optax(optax.lars(**kw), PARAMS, GRADS[:50], jit=True)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(theirs.params, want, RTOL, what="optax.lars vs the paper")


def test_lars_without_weight_decay_is_the_paper_and_optax():
    """Reference: Algorithm 1 in float64 with ``wd = 0`` (where optax and the paper
    agree), 50 steps, rtol 1e-5."""
    got = run_steps(gradtx.lars(**LARS), PARAMS, GRADS[:50], jit=True)
    assert_trees_close(got.params, _lars_paper(0.5, 0.0, 0.02, 1e-3, 0.8, steps=50), RTOL)


def test_lars_masks_accept_optax_prefix_trees():
    """Reference: the same masks given as a function of the params (the parity grid's)
    and as an optax-style prefix tree (``{"w": ..., "seq": False}``): identical updates."""
    prefix_decay = {"w": True, "seq": False}
    prefix_ratio = {"w": False, "seq": True}
    as_fn = gradtx.lars(0.5, 0.1, ndim_above_one, 0.02, 1e-3, lambda p: jax.tree.map(lambda x: x.ndim <= 1, p))
    as_prefix = gradtx.lars(0.5, 0.1, prefix_decay, 0.02, 1e-3, prefix_ratio)
    a = run_steps(as_fn, PARAMS, GRADS[:5], jit=True)
    b = run_steps(as_prefix, PARAMS, GRADS[:5], jit=True)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- NovoGrad: the paper's Algorithm 1 --------------------------------------------------


def _novograd_paper(lr, b1, b2, eps, wd_of_step, steps):
    """Ginsburg et al. 2019 (https://arxiv.org/abs/1905.11286), Algorithm 1, float64::

    v = ||g||^2 at t=1, then b2 * v + (1 - b2) * ||g||^2 ; m = b1 * m + g / (sqrt(v) + eps) + wd * w
    w = w - lr * m
    """
    w = _leaves64(PARAMS)
    m = [np.zeros_like(x) for x in w]
    v = [0.0] * len(w)
    for t, grads in enumerate(GRADS[:steps]):
        wd = wd_of_step(t)
        for i, g in enumerate(_leaves64(grads)):
            norm_sq = float(np.sum(g**2))
            v[i] = norm_sq if t == 0 else b2 * v[i] + (1 - b2) * norm_sq
            m[i] = b1 * m[i] + g / (np.sqrt(v[i]) + eps) + wd * w[i]
            w[i] = w[i] - lr * m[i]
    return jax.tree.unflatten(jax.tree.structure(PARAMS), w), v


def test_novograd_is_the_paper():
    """Reference: NovoGrad's Algorithm 1 in numpy float64, 50 steps, rtol 1e-5: params and
    the per-leaf second moment ``nu`` (one scalar per leaf)."""
    want, nu = _novograd_paper(1e-2, 0.8, 0.4, 1e-3, lambda t: 0.1, steps=50)
    got = run_steps(gradtx.novograd(1e-2, 0.8, 0.4, 1e-3, weight_decay=0.1), PARAMS, GRADS[:50], jit=True)
    assert_trees_close(got.params, want, RTOL, what="params")
    assert [x.shape for x in jax.tree.leaves(got.state.nu)] == [()] * len(nu)
    np.testing.assert_allclose([float(x) for x in jax.tree.leaves(got.state.nu)], nu, rtol=RTOL)


def test_novograd_weight_decay_schedule_where_optax_fails():
    """Reference: Algorithm 1 in float64 with ``wd_t = schedule(t)``, 50 steps, rtol 1e-5.
    optax 0.2.8 declares ``weight_decay: ScalarOrSchedule`` for ``novograd`` but multiplies
    the function by the params (a TypeError); gradtx takes the schedule."""
    schedule = lambda count: 2.0 * parity_schedule(count)  # noqa: E731
    want, _ = _novograd_paper(1e-2, 0.9, 0.25, 1e-6, lambda t: float(schedule(t)), steps=50)
    got = run_steps(gradtx.novograd(1e-2, weight_decay=schedule), PARAMS, GRADS[:50], jit=True)
    assert_trees_close(got.params, want, RTOL, what="params")
    opt = optax.novograd(1e-2, weight_decay=schedule)
    with pytest.raises(TypeError):
        opt.update(GRADS[0], opt.init(PARAMS), PARAMS)


# --- Fromage: the paper's Algorithm 1 ---------------------------------------------------


def test_fromage_is_the_paper():
    """Reference: Bernstein et al. 2020 (https://arxiv.org/abs/2002.03432), Algorithm 1 in
    float64, ``w = (w - lr * ||w|| / ||g|| * g) / sqrt(1 + lr^2)`` per leaf, 50 steps,
    rtol 1e-5 (``min_norm`` 1e-6 clips nothing here)."""
    lr = 0.1
    w = _leaves64(PARAMS)
    for grads in GRADS[:50]:
        for i, g in enumerate(_leaves64(grads)):
            w[i] = (w[i] - lr * np.linalg.norm(w[i]) / np.linalg.norm(g) * g) / np.sqrt(1 + lr**2)
    got = run_steps(gradtx.fromage(lr), PARAMS, GRADS[:50], jit=True)
    assert_trees_close(got.params, jax.tree.unflatten(jax.tree.structure(PARAMS), w), RTOL)


# --- the trust ratio itself ---------------------------------------------------------------


def test_trust_ratio_closed_form_and_zero_norms():
    """Reference: the closed form ``tc * ||p|| / (||u|| + eps)``; 1 where ``||p|| = 0`` (a
    leaf that would never move) or ``||u|| = 0``; ``min_norm`` clips both norms."""
    params = {"a": jnp.array([3.0, 4.0]), "zero": jnp.zeros(2), "b": jnp.array([1.0, 0.0])}
    updates = {"a": jnp.array([0.0, 2.0]), "zero": jnp.array([1.0, 1.0]), "b": jnp.zeros(2)}
    tx = gradtx.scale_by_trust_ratio(trust_coefficient=0.5, eps=0.5)
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_allclose(out["a"], [0.0, 2.0 * 0.5 * 5.0 / 2.5], rtol=1e-6)
    np.testing.assert_array_equal(out["zero"], [1.0, 1.0])
    np.testing.assert_array_equal(out["b"], [0.0, 0.0])
    np.testing.assert_allclose(trust_ratio(0.0, 0.1, min_norm=0.5), 1.0)  # both clipped to 0.5
    with pytest.raises(gradtx.UpdateError, match="needs params"):
        gradtx.scale_by_trust_ratio().update(updates, tx.init(params))


def test_lars_trust_ratio_closed_form():
    """Reference: eq. 6 of You et al. 2017, ``tc * ||p|| / (||g|| + wd * ||p|| + eps)``, one
    scalar per leaf; 1 on the leaves ``trust_ratio_mask`` leaves out, ``wd = 0`` on those
    ``weight_decay_mask`` leaves out."""
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([6.0, 8.0]), "c": jnp.array([1.0])}
    grads = {"a": jnp.array([0.0, 2.0]), "b": jnp.array([0.0, 2.0]), "c": jnp.array([5.0])}
    tx = gradtx.lars_trust_ratio(0.2, {"a": True, "b": False, "c": True}, 0.1, 0.5, {"a": True, "b": True, "c": False})
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(out["a"], 0.1 * 5 / (2 + 0.2 * 5 + 0.5), rtol=1e-6)
    np.testing.assert_allclose(out["b"], 0.1 * 10 / (2 + 0.5), rtol=1e-6)
    np.testing.assert_array_equal(out["c"], 1.0)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-6), (jnp.float16, 1e-3)])
def test_packed_and_tree_trust_ratio_agree(dtype, rtol):
    """Reference: ``gradtx.scale_by_trust_ratio`` on the tree; ``Packing.scale_by_trust_ratio``
    calls the same formula (``gradtx.layerwise.trust_ratio``) on the packed layout: equal
    to rtol 1e-6 (float16: 1e-3, both computed in float32 and rounded once), with
    ``min_norm``, ``trust_coefficient`` and ``eps`` all set. In float16 with Fromage's
    ``min_norm`` (1e-6) a zero update stays 0 on both layouts (in float16 arithmetic
    ``||p|| / 1e-6`` overflows and ``inf * 0`` is NaN)."""
    params, grads = (jax.tree.map(lambda x: x.astype(dtype), t) for t in (PARAMS, GRADS[0]))
    packing = gradtx.Packing(params)
    for kw, g in ((dict(min_norm=0.5, trust_coefficient=0.3, eps=1e-3), grads),
                  (dict(min_norm=1e-6), jax.tree.map(jnp.zeros_like, grads))):
        tree_tx = gradtx.scale_by_trust_ratio(**kw)
        tree_out, _ = tree_tx.update(g, tree_tx.init(params), params)
        packed_tx = packing.scale_by_trust_ratio(**kw)
        packed_out, _ = packed_tx.update(packing.pack(g), packed_tx.init(None), packing.pack(params))
        assert all(x.dtype == dtype for x in jax.tree.leaves(packing.unpack(packed_out)))
        assert_trees_close(packing.unpack(packed_out), tree_out, rtol)
    assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(packing.unpack(packed_out)) + jax.tree.leaves(tree_out))


def test_signum_first_steps_closed_form():
    """Reference: Signum, Bernstein et al. 2018 (https://arxiv.org/abs/1802.04434),
    Algorithm 3: ``m = beta * m + (1 - beta) * g ; u = -lr * sign(m)``, three steps."""
    lr, beta = 0.05, 0.8
    got = run_steps(gradtx.signum(lr, beta), PARAMS, GRADS[:3], jit=False)
    m = [np.zeros_like(x) for x in _leaves64(PARAMS)]
    for grads in GRADS[:3]:
        m = [beta * mi + (1 - beta) * g for mi, g in zip(m, _leaves64(grads))]
    for u, mi in zip(jax.tree.leaves(got.updates), m):
        np.testing.assert_array_equal(np.asarray(u), (-lr * np.sign(mi)).astype(np.float32))
