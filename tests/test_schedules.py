"""Schedules against optax (cosine) and closed forms (triangular)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

STEPS = np.arange(0, 250)


@pytest.mark.parametrize("kw", [dict(init_value=0.1, decay_steps=100),
                                dict(init_value=2.0, decay_steps=37, alpha=0.1, exponent=2.0)],
                         ids=["plain", "alpha-exponent"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_cosine_decay_matches_optax(kw, jit):
    ours, ref = gradtx.cosine_decay_schedule(**kw), optax.cosine_decay_schedule(**kw)
    if jit:
        ours, ref = jax.jit(ours), jax.jit(ref)
    np.testing.assert_allclose([ours(jnp.int32(t)) for t in STEPS], [ref(jnp.int32(t)) for t in STEPS],
                               rtol=1e-6)


def test_triangular_schedule_closed_form():
    """Smith (2017): base at t = 0, 2s, 4s...; max at t = s, 3s...; linear in between."""
    sched = gradtx.triangular_schedule(0.1, 0.5, step_size=4)
    values = np.array([sched(t) for t in range(17)])
    expected = 0.1 + 0.4 * np.array([0, .25, .5, .75, 1, .75, .5, .25, 0, .25, .5, .75, 1, .75, .5, .25, 0])
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_schedule_drives_the_learning_rate_stage():
    """scale_by_learning_rate with a schedule: step t uses lr(t) (count from 0)."""
    tx = gradtx.sgd(gradtx.triangular_schedule(0.0, 1.0, step_size=2))
    state, got = tx.init(jnp.zeros(1)), []
    for _ in range(5):
        updates, state = tx.update(jnp.ones(1), state)
        got.append(float(updates[0]))
    np.testing.assert_allclose(got, [0.0, -0.5, -1.0, -0.5, 0.0])


@pytest.mark.parametrize("factory, kwargs, argument", [
    (gradtx.cosine_decay_schedule, dict(init_value=1.0, decay_steps=0), "decay_steps"),
    (gradtx.cosine_decay_schedule, dict(init_value=1.0, decay_steps=10, alpha=2.0), "alpha"),
    (gradtx.triangular_schedule, dict(base_value=0.1, max_value=0.05, step_size=10), "max_value"),
    (gradtx.triangular_schedule, dict(base_value=0.1, max_value=1.0, step_size=0), "step_size"),
])
def test_bad_schedule_arguments_fail_at_construction(factory, kwargs, argument):
    with pytest.raises(ValueError, match=rf"gradtx\.{factory.__name__}\({argument}="):
        factory(**kwargs)
