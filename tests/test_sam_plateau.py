"""SAM (``gradtx/sam.py``) and ``reduce_on_plateau`` (``gradtx/plateau.py``): what the
registry does not run (both need more than gradients: SAM the gradients at the points it
chooses, ``reduce_on_plateau`` the loss).

- SAM against ``optax.contrib.sam`` 0.2.8 in optax's own loops (transparent: one call per
  gradient; opaque: ``grad_fn``), float64 rtol 1e-10, and against the paper's step in
  closed form; ``normalize`` against a per-leaf mutant;
- ``reduce_on_plateau`` against optax over scripted losses with plateaus (the scale sequence
  exactly), against ``torch.optim.lr_scheduler.ReduceLROnPlateau`` where the conventions
  agree (optax's ``patience = p`` is torch's ``p - 1``; ``rtol``/``atol`` are torch's
  ``"rel"``/``"abs"`` thresholds), and against a numpy statement of the rule whose
  mutants (torch's late trigger, improvement over the last value, no cooldown) differ.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from conftest import assert_trees_close, compare_states, random_tree

import gradtx
from gradtx.base import UpdateError


@pytest.fixture
def x64():
    """float64 for this test only."""
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64


# --- SAM ---------------------------------------------------------------------------------


def loss(params):
    """A smooth non-quadratic loss over the parity tree (its curvature varies, so the
    adversarial point matters)."""
    return sum(jnp.sum(0.5 * (p - 0.3) ** 2 + 0.2 * jnp.sin(3 * p)) for p in jax.tree.leaves(params))


GRAD = jax.grad(loss)


def run_sam(tx, params, n_steps: int, *, opaque: bool, apply_updates):
    """optax's usage loop: the gradient at the params the loop holds, one ``update`` per step
    (with ``grad_fn`` in opaque mode), jitted."""

    @jax.jit
    def step(params, state):
        extra = {"grad_fn": lambda p, i: GRAD(p)} if opaque else {}
        updates, state = tx.update(GRAD(params), state, params, **extra)
        return apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(n_steps):
        params, state = step(params, state)
    return params, state


def _pair(lib, outer: str, rho: float = 0.1):
    """The outer optimizer and the paper's adversarial one, ``chain(normalize(), sgd(rho))``,
    from ``lib`` (gradtx or optax)."""
    normalize = lib.normalize if lib is gradtx else optax.contrib.normalize
    outers = {"sgd": lambda: lib.sgd(0.05), "adam": lambda: lib.adam(1e-2), "momentum": lambda: lib.sgd(0.05, 0.9)}
    return outers[outer](), lib.chain(normalize(), lib.sgd(rho))


SAM_CASES = [
    ("sgd", dict()),
    ("adam", dict(sync_period=3, reset_state=False)),
    ("momentum", dict(sync_period=1)),
]


@pytest.mark.parametrize("opaque", [False, True], ids=["transparent", "opaque"])
@pytest.mark.parametrize("outer, kw", SAM_CASES, ids=[f"{o}-{kw}" for o, kw in SAM_CASES])
def test_sam_matches_optax_in_its_loop(outer, kw, opaque, x64):
    """Reference: ``optax.contrib.sam`` 0.2.8 with the optax optimizers of the same math, in
    the same loop, 30 jitted float64 steps: params and every state field (the inner states
    field by field) agree to rtol 1e-10; ``steps_since_sync`` exactly."""
    params = random_tree(0, jnp.float64, small=True)
    got_params, got = run_sam(gradtx.sam(*_pair(gradtx, outer), **kw, opaque_mode=opaque), params, 30,
                              opaque=opaque, apply_updates=gradtx.apply_updates)
    want_params, want = run_sam(optax.contrib.sam(*_pair(optax, outer), **kw, opaque_mode=opaque), params, 30,
                                opaque=opaque, apply_updates=optax.apply_updates)
    assert_trees_close(got_params, want_params, 1e-10, what="params")
    assert int(got.steps_since_sync) == int(want.steps_since_sync)
    if not opaque:
        assert_trees_close(got.cache, want.cache, 1e-10, what="cache")
    assert got._fields[-1] == ("adv_state" if opaque else "cache")
    compare_states(got.opt_state, want.opt_state, 1e-10)
    compare_states(got.adv_state, want.adv_state, 1e-10)


def test_sam_is_the_papers_step_in_closed_form(x64):
    """Closed form (Foret et al. 2021, eq. 3 with one ascent step), numpy float64 rtol 1e-12:
    after the two calls of a period, ``w = w0 - lr * g(w0 + rho g(w0) / ||g(w0)||)``; the
    mutant that steps from the adversarial point instead (no cache) differs beyond rtol 1e-5."""
    params = random_tree(0, jnp.float64, small=True)
    got, _ = run_sam(gradtx.sam(*_pair(gradtx, "sgd", rho=0.1)), params, 2, opaque=False,
                     apply_updates=gradtx.apply_updates)
    g0 = GRAD(params)
    norm = np.sqrt(sum(np.sum(np.asarray(g) ** 2) for g in jax.tree.leaves(g0)))
    adversarial = jax.tree.map(lambda w, g: np.asarray(w) + 0.1 * np.asarray(g) / norm, params, g0)
    want = jax.tree.map(lambda w, g: np.asarray(w) - 0.05 * np.asarray(g), params, GRAD(adversarial))
    assert_trees_close(got, want, 1e-12)
    from_adversarial = jax.tree.map(lambda w, g: np.asarray(w) - 0.05 * np.asarray(g), adversarial,
                                    GRAD(adversarial))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got, from_adversarial, 1e-5)


def test_normalize_is_over_the_whole_tree():
    """Reference: ``optax.contrib.normalize`` (rtol 1e-6 in float32); the per-leaf mutant
    ``u / ||u_leaf||`` fails rtol 1e-5."""
    updates = random_tree(3, small=True)
    want, _ = optax.contrib.normalize().update(updates, optax.contrib.normalize().init(updates))
    got, _ = gradtx.normalize().update(updates, gradtx.normalize().init(updates))
    assert_trees_close(got, want, 1e-6)
    per_leaf = jax.tree.map(lambda u: u / jnp.sqrt(jnp.sum(u**2)), updates)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(per_leaf, want, 1e-5)


def test_sam_errors_name_the_call():
    """Reference: the messages (opaque mode without ``grad_fn``; transparent mode without params)."""
    params = jnp.zeros(2)
    opaque = gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True)
    with pytest.raises(UpdateError, match=r"^gradtx.sam: opaque_mode=True: update\(\) needs the keyword argument "
                                          r"`grad_fn`"):
        opaque.update(jnp.ones(2), opaque.init(params), params)
    transparent = gradtx.sam(gradtx.sgd(0.1), gradtx.sgd(0.1))
    with pytest.raises(UpdateError, match=r"^gradtx.sam: update\(\) needs the params"):
        transparent.update(jnp.ones(2), transparent.init(params))


# --- reduce_on_plateau ---------------------------------------------------------------------


def scripted_losses() -> np.ndarray:
    """Losses with every case in them: steady descent, long flat plateaus, improvements
    smaller than ``rtol`` (8 -> 7.9995), a rise, recovery, and noise around a plateau."""
    rng = np.random.default_rng(0)
    parts = [
        [10.0, 9.0, 8.0],
        [8.0] * 5 + [7.9995] + [8.0] * 4,
        [5.0] * 12,
        [6.0, 7.0, 4.0],
        4.0 + 0.3 * rng.random(15),
        np.linspace(3.9, 3.0, 6),
        [3.0] * 14,
    ]
    return np.concatenate([np.asarray(p, np.float64) for p in parts])


LOSSES = scripted_losses()
SETTINGS = [
    dict(),
    dict(factor=0.5, patience=2),
    dict(factor=0.5, patience=3, cooldown=2),
    dict(factor=0.3, patience=2, accumulation_size=3, min_scale=0.05),
    dict(factor=0.5, patience=1, rtol=0.0, atol=0.5),
    dict(factor=0.1, patience=4, rtol=0.2, atol=0.1, cooldown=1, min_scale=1e-3),
]


def scales_of(tx, values, dtype=jnp.float32):
    """The scale after each ``update(ones, state, value=v)`` (jitted), and the last state."""
    params = jnp.zeros(3, dtype)
    update = jax.jit(lambda state, v: tx.update(jnp.ones(3, dtype), state, params, value=v))
    state, scales = tx.init(params), []
    for v in values:
        updates, state = update(state, jnp.asarray(v, dtype))
        np.testing.assert_array_equal(np.asarray(updates), np.full(3, np.asarray(state.scale)))
        scales.append(float(state.scale))
    return np.asarray(scales), state


@functools.cache
def gradtx_scales(i: int) -> np.ndarray:
    """gradtx's scale sequence at ``SETTINGS[i]`` over the scripted losses (computed once)."""
    return scales_of(gradtx.reduce_on_plateau(**SETTINGS[i]), LOSSES)[0]


def _id(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults"


@pytest.mark.parametrize("kw", SETTINGS, ids=map(_id, SETTINGS))
def test_plateau_matches_optax_exactly(kw):
    """Reference: ``optax.contrib.reduce_on_plateau`` 0.2.8 over the scripted losses (float32):
    the scale sequence and the updates (``scale * g``) are identical, and so is every state
    field at the end (``accumulation_count`` is optax's ``count``)."""
    got, got_state = scales_of(gradtx.reduce_on_plateau(**kw), LOSSES)
    want, want_state = scales_of(optax.contrib.reduce_on_plateau(**kw), LOSSES)
    np.testing.assert_array_equal(got, want)
    assert len(set(got)) > 1, "the losses must trigger a reduction"
    compare_states(got_state, want_state, 0.0, renames={"accumulation_count": "count"})


TORCH_SETTINGS = [
    (dict(factor=0.5, patience=2), dict(factor=0.5, patience=1, threshold=1e-4, threshold_mode="rel")),
    (dict(factor=0.1, patience=3, cooldown=2, min_scale=1e-3),
     dict(factor=0.1, patience=2, cooldown=2, min_lr=1e-3, threshold=1e-4, threshold_mode="rel")),
    (dict(factor=0.5, patience=1, rtol=0.0, atol=0.5),
     dict(factor=0.5, patience=0, threshold=0.5, threshold_mode="abs")),
]


@pytest.mark.parametrize("kw, torch_kw", TORCH_SETTINGS, ids=[_id(k) for k, _ in TORCH_SETTINGS])
def test_plateau_matches_torch_where_the_conventions_agree(kw, torch_kw, x64):
    """Reference: ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (torch 2.13) on an SGD with
    ``lr = 1``, ``patience`` one less (torch reduces after ``patience`` bad epochs, optax at
    the ``patience``-th), ``threshold_mode="rel"`` for ``rtol`` and ``"abs"`` for ``atol``, and
    ``eps=0`` (torch skips reductions smaller than its ``eps=1e-8``, optax has no such rule):
    gradtx's scales in float64 equal torch's learning rates exactly."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    sgd = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(sgd, mode="min", eps=0.0, **torch_kw)
    want = []
    for v in LOSSES:
        scheduler.step(float(v))
        want.append(sgd.param_groups[0]["lr"])
    got, _ = scales_of(gradtx.reduce_on_plateau(**kw), LOSSES, jnp.float64)
    np.testing.assert_array_equal(got, np.asarray(want))


def test_patience_zero_reduces_at_a_plateau_where_optax_reduces_at_an_improvement():
    """Where gradtx differs from optax 0.2.8 (reference: the scale sequences and the rule in
    numpy): ``patience=0`` reduces at every average without improvement, as ``patience=1``
    (Keras's and torch's ``patience=0``); optax's compares ``plateau_count == 0``, which holds
    when the loss *improves*: its first value (below ``inf``) already halves the scale."""
    got, _ = scales_of(gradtx.reduce_on_plateau(factor=0.5, patience=0), LOSSES)
    one, _ = scales_of(gradtx.reduce_on_plateau(factor=0.5, patience=1), LOSSES)
    theirs, _ = scales_of(optax.contrib.reduce_on_plateau(factor=0.5, patience=0), LOSSES)
    np.testing.assert_array_equal(got, one)
    np.testing.assert_allclose(got, plateau_rule(LOSSES, factor=0.5, patience=0), rtol=1e-6)
    assert got[0] == 1.0 and theirs[0] == 0.5


def plateau_rule(values, factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1,
                 min_scale=0.0, *, mutation=None):
    """The rule as the docstring states it, in numpy float64, with an optional mutation:
    ``"late"`` reduces one average later (torch's ``> patience`` with optax's ``patience``),
    ``"last"`` measures improvement against the last average instead of the best,
    ``"no_cooldown"`` ignores the cooldown."""
    scale, best, last, plateau, cooling, acc, scales = 1.0, np.inf, np.inf, 0, 0, [], []
    for v in values:
        acc.append(v)
        if len(acc) == accumulation_size:
            avg, acc = np.mean(acc), []
            reference = last if mutation == "last" else best
            improved = avg < (1 - rtol) * reference - atol
            best, last = (avg if improved else best), avg
            plateau = 0 if improved else plateau + 1
            if cooling > 0 and mutation != "no_cooldown":
                plateau, cooling = 0, cooling - 1
            elif not improved and plateau >= patience + (mutation == "late"):
                scale, plateau, cooling = max(scale * factor, min_scale), 0, cooldown
        scales.append(scale)
    return np.asarray(scales)


@pytest.mark.parametrize("i", range(len(SETTINGS)), ids=map(_id, SETTINGS))
def test_plateau_is_the_stated_rule(i):
    """Reference: the rule in numpy float64 (``plateau_rule``): gradtx's float32 scales agree
    to rtol 1e-6."""
    np.testing.assert_allclose(gradtx_scales(i), plateau_rule(LOSSES, **SETTINGS[i]), rtol=1e-6)


@pytest.mark.parametrize("mutation", ["late", "last", "no_cooldown"])
def test_wrong_plateau_rules_fail(mutation):
    """Negative control: each mutant of the rule gives, on the scripted losses, a scale
    sequence that differs from gradtx's (beyond rtol 1e-5) for at least one of ``SETTINGS``."""
    differ = [not np.allclose(gradtx_scales(i), plateau_rule(LOSSES, **kw, mutation=mutation), rtol=1e-5)
              for i, kw in enumerate(SETTINGS)]
    assert any(differ)


def test_plateau_in_a_chain_and_its_edge_cases():
    """Closed forms: the first step keeps the scale 1 (updates ``-lr * g``); zero gradients
    give zero updates; in ``chain(sgd, reduce_on_plateau)`` the record has the step ``count``
    and the plateau's ``accumulation_count`` apart; ``update`` without ``value`` names the
    call; ``jax.eval_shape(init)`` works."""
    tx = gradtx.chain(gradtx.sgd(lambda count: 0.1), gradtx.reduce_on_plateau())
    params = jnp.zeros(2)
    state = tx.init(params)
    assert {"count", "accumulation_count", "scale"} <= set(state._fields)
    updates, state = tx.update(jnp.array([1.0, -2.0]), state, params, value=1.0)
    np.testing.assert_allclose(np.asarray(updates), [-0.1, 0.2], rtol=1e-7)
    zero, _ = tx.update(jnp.zeros(2), state, params, value=1.0)
    assert np.all(np.asarray(zero) == 0)
    assert jax.eval_shape(gradtx.reduce_on_plateau().init, params)._fields[0] == "scale"
    with pytest.raises(UpdateError, match=r"^gradtx.reduce_on_plateau: update\(\) needs the loss as the keyword "
                                          r"argument `value`"):
        gradtx.reduce_on_plateau().update(jnp.ones(2), gradtx.reduce_on_plateau().init(params))
