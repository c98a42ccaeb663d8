"""The tutorials' equivalences, in float64 (inside ``jax.enable_x64(True)``, per test), on
random trees and hyperparameters, each with a wrong-formula mutant that must fail:

- averaged momentum (``v = b v + (1 - b) g``) is heavy-ball momentum (``v = b v + g``) with
  the learning rate scaled by ``1 - b`` (mutant: the unscaled learning rate);
- Adam with ``b1 = 0`` is RMSprop with bias correction (mutant: without it);
- the bias-corrected EMA of a constant sequence is the constant from the first step
  (mutant: the EMA without the correction).

"Exactly" is float64 to ``RTOL`` (a few ulps, over ``N_STEPS`` steps); the mutants are
off by a factor of ``1 - b``, ``sqrt(1 - b2^t)`` or ``1 - b^t``, with ``b >= 0.05``. These
are statements about the math, run eagerly (chex's ``without_jit`` variant, numpy inputs).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradtx

from .strategies import F64, leaf_kinds, materialize, tree_specs

RTOL = 1e-12
N_STEPS = 3
DECAYS = st.floats(0.05, 0.99)  # away from 0, where the mutants are the right formula
LEARNING_RATES = st.floats(-4, -1).map(lambda e: 10.0**e)
EPS = st.floats(-8, -2).map(lambda e: 10.0**e)
SPECS = tree_specs([(s, d) for s, d in leaf_kinds(x64=True) if d == F64])
SEEDS = st.integers(0, 2**16)


def trajectory(variant: Callable, tx: Any, params: Any, grads: list) -> list:
    """Each step's updates of ``tx`` from ``params`` over ``grads`` (applied to the params
    between steps), the steps run through the chex ``variant``."""

    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gradtx.apply_updates(params, updates), updates, state

    run, state, out = variant(step), tx.init(params), []
    for g in grads:
        params, updates, state = run(params, state, g)
        out.append(updates)
    return out


def assert_equivalent(variant: Callable, tx: Any, reference: Any, params: Any, grads: list) -> None:
    """``tx`` and ``reference`` give the same updates at every step, to ``RTOL`` of each
    leaf's largest magnitude."""
    got, want = trajectory(variant, tx, params, grads), trajectory(variant, reference, params, grads)
    for i, (g, w) in enumerate(zip(got, want)):
        scale = max(float(np.max(np.abs(x), initial=0.0)) for x in jax.tree.leaves(w))
        chex.assert_trees_all_close(g, w, rtol=RTOL, atol=RTOL * scale, custom_message=f"step {i + 1}")


def check_with_mutant(variant: Callable, tx: Any, reference: Any, mutant: Any, params: Any, grads: list) -> None:
    """``tx`` is equivalent to ``reference``, and the wrong formula ``mutant`` is not (so
    the comparison would catch the mistake it stands for)."""
    assert_equivalent(variant, tx, reference, params, grads)
    with pytest.raises(AssertionError):
        assert_equivalent(variant, mutant, reference, params, grads)


def _problem(spec: Any, seed: int) -> tuple[Any, list]:
    return materialize(spec, seed), [materialize(spec, seed + 1 + i) for i in range(N_STEPS)]


class Equivalences(chex.TestCase):
    @chex.variants(without_jit=True)
    @given(spec=SPECS, seed=SEEDS, lr=LEARNING_RATES, b=DECAYS)
    def test_averaged_momentum_is_scaled_heavy_ball(self, spec, seed, lr, b):
        """Reference: ``sgd(lr * (1 - b), momentum=b)`` (heavy-ball). ``averaged_momentum(lr,
        beta=b)`` takes the same steps; the mutant ``sgd(lr, momentum=b)`` does not."""
        with jax.enable_x64(True):
            params, grads = _problem(spec, seed)
            check_with_mutant(
                self.variant,
                gradtx.averaged_momentum(lr, beta=b),
                gradtx.sgd(lr * (1 - b), momentum=b),
                gradtx.sgd(lr, momentum=b),
                params,
                grads,
            )

    @chex.variants(without_jit=True)
    @given(spec=SPECS, seed=SEEDS, lr=LEARNING_RATES, b2=DECAYS, eps=EPS)
    def test_adam_without_momentum_is_bias_corrected_rmsprop(self, spec, seed, lr, b2, eps):
        """Reference: ``rmsprop(lr, decay=b2, eps=eps, eps_in_sqrt=False,
        bias_correction=True)``. ``adam(lr, b1=0, b2=b2, eps=eps)`` takes the same steps; the
        mutant without the bias correction does not."""
        rmsprop = dict(learning_rate=lr, decay=b2, eps=eps, eps_in_sqrt=False)
        with jax.enable_x64(True):
            params, grads = _problem(spec, seed)
            check_with_mutant(
                self.variant,
                gradtx.adam(lr, b1=0.0, b2=b2, eps=eps),
                gradtx.rmsprop(**rmsprop, bias_correction=True),
                gradtx.rmsprop(**rmsprop, bias_correction=False),
                params,
                grads,
            )

    @chex.variants(without_jit=True)
    @given(spec=SPECS, seed=SEEDS, b=DECAYS)
    def test_debiased_ema_of_a_constant_is_the_constant(self, spec, seed, b):
        """Reference: the constant itself (``scale(1.0)`` passes it through). From the first
        step, ``chain(scale_by_ema(b), bias_correct(b))`` and ``ema(b)`` (debiased) give the
        constant; the mutant ``scale_by_ema(b)`` (no correction) does not."""
        with jax.enable_x64(True):
            params, [constant, *_] = _problem(spec, seed)
            grads = [constant] * N_STEPS
            for debiased in (gradtx.chain(gradtx.scale_by_ema(b), gradtx.bias_correct(b)), gradtx.ema(b)):
                check_with_mutant(self.variant, debiased, gradtx.scale(1.0), gradtx.scale_by_ema(b), params, grads)
