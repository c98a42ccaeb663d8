"""Each optimizer is literally a chain of the named primitives, and a jitted step compiles once.

(a) Reference: the chain of primitives written out below. The optimizer's state has the
same named fields (one flat record: how the chain is wired does not show) and, after
three steps, the same values as that chain's, and so do the updates: bit for bit (the
same operations).

(b) Reference: a Python side-effect counter in the jitted function and its compilation
cache. A second (and third) call with other gradient values, other params and the new
state does not retrace; nor does a new learning rate set through
``optax.inject_hyperparams``, which must reach the update (halving it halves the step).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import random_grads, random_tree, run_steps, schedule

import gradtx
from gradtx import (
    add_decayed_weights,
    bias_correct,
    chain,
    fork,
    identity,
    nesterov_trace,
    renamed,
    scale_by_ema,
    scale_by_learning_rate,
    scale_by_sum_of_squares,
    scale_by_update_rms,
    second_moment,
    sqrt_eps,
    trace,
)
from gradtx.numerics import ema

LR = 0.05
BF16 = jnp.bfloat16


def ndim_above_one(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def centered_variance(mean, mean_sq):
    """``max(E[g^2] - E[g]^2, 0)`` for real updates."""
    return jnp.maximum(mean_sq - mean**2, 0)


def rms(decay, *, initial_scale=0.0, debias=False, eps=0.0, eps_root=0.0):
    """``scale_by_rms`` written out: ``g / (sqrt(nu_hat + eps_root) + eps)``."""
    return fork(identity(),
                chain(second_moment(decay, initial_scale), bias_correct(decay) if debias else identity(),
                      sqrt_eps(eps=eps, eps_root=eps_root)),
                join=jnp.divide)


def stddev(decay, *, debias=False, eps=0.0, eps_root=0.0):
    """``scale_by_stddev`` written out (the same ``bias_correct`` stage in both branches)."""
    debias_stage = bias_correct(decay) if debias else identity()
    return fork(identity(),
                chain(fork(chain(scale_by_ema(decay), debias_stage), chain(second_moment(decay), debias_stage),
                           join=centered_variance),
                      sqrt_eps(eps=eps, eps_root=eps_root)),
                join=jnp.divide)


def adam_dir(b1, b2, eps, eps_root=0.0, mu_dtype=None, nesterov=False):
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1))
    if nesterov:  # NAdam: b1 * m_hat(t+1) + (1 - b1) * g / (1 - b1^t)
        first = fork(chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1, step_offset=1)),
                     bias_correct(b1), join=lambda m_next, g: ema(g, m_next, b1))
    return fork(first, chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root)),
                join=jnp.divide)


class Built(NamedTuple):
    id: str
    optimizer: Callable[[], Any]
    explicit: Callable[[], Any]


STRUCTURES = [
    Built("sgd", lambda: gradtx.sgd(LR), lambda: chain(identity(), scale_by_learning_rate(LR))),
    Built("sgd(momentum)", lambda: gradtx.sgd(LR, 0.9), lambda: chain(trace(0.9), scale_by_learning_rate(LR))),
    Built("sgd(nesterov)", lambda: gradtx.sgd(LR, 0.9, nesterov=True),
          lambda: chain(nesterov_trace(0.9), scale_by_learning_rate(LR))),
    Built("sgd(accumulator_dtype)", lambda: gradtx.sgd(LR, 0.9, accumulator_dtype=BF16),
          lambda: chain(trace(0.9, accumulator_dtype=BF16), scale_by_learning_rate(LR))),
    Built("sgd(schedule)", lambda: gradtx.sgd(schedule, 0.9),
          lambda: chain(trace(0.9), scale_by_learning_rate(schedule))),
    Built("averaged_momentum", lambda: gradtx.averaged_momentum(LR, 0.8),
          lambda: chain(scale_by_ema(0.8), scale_by_learning_rate(LR))),
    Built("rmsprop", lambda: gradtx.rmsprop(LR, 0.8, 1e-3),
          lambda: chain(rms(0.8, eps_root=1e-3), scale_by_learning_rate(LR), identity())),
    Built("rmsprop(eps_outside,bias_correction,initial_scale,nesterov)",
          lambda: gradtx.rmsprop(LR, 0.8, 1e-3, initial_scale=0.5, eps_in_sqrt=False, momentum=0.9,
                                 nesterov=True, bias_correction=True),
          lambda: chain(rms(0.8, initial_scale=0.5, debias=True, eps=1e-3), scale_by_learning_rate(LR),
                        nesterov_trace(0.9))),
    Built("rmsprop(centered,momentum)", lambda: gradtx.rmsprop(LR, 0.8, 1e-3, centered=True, momentum=0.9),
          lambda: chain(stddev(0.8, eps_root=1e-3), scale_by_learning_rate(LR), trace(0.9))),
    Built("rmsprop(centered,bias_correction)",
          lambda: gradtx.rmsprop(LR, 0.8, 1e-3, centered=True, bias_correction=True, eps_in_sqrt=False),
          lambda: chain(stddev(0.8, debias=True, eps=1e-3), scale_by_learning_rate(LR), identity())),
    Built("adagrad", lambda: gradtx.adagrad(LR, 0.2, 1e-3),
          lambda: chain(scale_by_sum_of_squares(0.2, 1e-3), scale_by_learning_rate(LR))),
    Built("adadelta", lambda: gradtx.adadelta(LR, 0.8, 1e-4),
          lambda: chain(add_decayed_weights(0.0),
                        chain(renamed(rms(0.8, eps_root=1e-4), nu="e_g"), scale_by_update_rms(0.8, 1e-4)),
                        scale_by_learning_rate(LR))),
    Built("adadelta(weight_decay,mask,lr=None)",
          lambda: gradtx.adadelta(None, 0.8, 1e-4, weight_decay=0.1, weight_decay_mask=ndim_above_one),
          lambda: chain(add_decayed_weights(0.1, ndim_above_one),
                        chain(renamed(rms(0.8, eps_root=1e-4), nu="e_g"), scale_by_update_rms(0.8, 1e-4)), identity())),
    # the chain from the brief, verbatim
    Built("adam", lambda: gradtx.adam(LR, 0.8, 0.95, 1e-3),
          lambda: gradtx.chain(
              gradtx.fork(gradtx.chain(gradtx.scale_by_ema(0.8), gradtx.bias_correct(0.8)),
                          gradtx.chain(gradtx.second_moment(0.95), gradtx.bias_correct(0.95), gradtx.sqrt_eps(1e-3)),
                          join=jnp.divide),
              gradtx.scale_by_learning_rate(LR))),
    Built("adam(eps_root,mu_dtype,schedule)", lambda: gradtx.adam(schedule, eps_root=1e-4, mu_dtype=BF16),
          lambda: chain(adam_dir(0.9, 0.999, 1e-8, 1e-4, mu_dtype=BF16), scale_by_learning_rate(schedule))),
    Built("adam(nesterov)", lambda: gradtx.adam(LR, 0.8, 0.95, 1e-3, nesterov=True),
          lambda: chain(adam_dir(0.8, 0.95, 1e-3, nesterov=True), scale_by_learning_rate(LR))),
    Built("adam_direction", lambda: gradtx.adam_direction(0.8, 0.95, 1e-3), lambda: adam_dir(0.8, 0.95, 1e-3)),
    Built("scale_by_rms", lambda: gradtx.scale_by_rms(0.8, 1e-3, bias_correction=True),
          lambda: rms(0.8, debias=True, eps_root=1e-3)),
    Built("scale_by_stddev", lambda: gradtx.scale_by_stddev(0.8, 1e-3, eps_in_sqrt=False),
          lambda: stddev(0.8, eps=1e-3)),
    Built("scale_by_adadelta", lambda: gradtx.scale_by_adadelta(0.8, 1e-4),
          lambda: chain(renamed(rms(0.8, eps_root=1e-4), nu="e_g"), scale_by_update_rms(0.8, 1e-4))),
]


def fields_and_values(state) -> tuple[tuple, list]:
    """A state record's field names and its leaves (not its class: the optimizer's record
    is ``AdamState``, the explicit chain's ``ChainState``)."""
    return state._fields, jax.tree.leaves(state)


@pytest.mark.parametrize("built", STRUCTURES, ids=lambda b: b.id)
def test_optimizer_is_the_chain_of_its_primitives(built, jit):
    """Reference: the explicit chain in ``STRUCTURES``. The same named fields after
    ``init`` and after 3 steps, each field with the params' tree structure (or a scalar
    ``count``); identical (bitwise) updates and state values."""
    params = random_tree(0, small=True)
    grads = random_grads(1, 3, small=True)
    opt, explicit = built.optimizer(), built.explicit()
    assert opt.init(params)._fields == explicit.init(params)._fields
    got, want = run_steps(opt, params, grads, jit=jit), run_steps(explicit, params, grads, jit=jit)
    (got_fields, got_leaves), (want_fields, want_leaves) = fields_and_values(got.state), fields_and_values(want.state)
    assert got_fields == want_fields
    for name, value in got.state._asdict().items():
        want_structure = jax.tree.structure(0) if name == "count" else jax.tree.structure(params)
        assert jax.tree.structure(value) == want_structure, name
    assert jax.tree.structure(got.updates) == jax.tree.structure(want.updates)
    for a, b in zip(jax.tree.leaves(got.updates) + got_leaves, jax.tree.leaves(want.updates) + want_leaves):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- (b) no recompilation ---------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda: gradtx.sgd(LR),
    "sgd(nesterov)": lambda: gradtx.sgd(LR, 0.9, nesterov=True),
    "sgd(schedule,bf16)": lambda: gradtx.sgd(schedule, 0.9, accumulator_dtype=BF16),
    "averaged_momentum": lambda: gradtx.averaged_momentum(LR),
    "rmsprop": lambda: gradtx.rmsprop(LR),
    "rmsprop(centered,bias_correction,momentum)":
        lambda: gradtx.rmsprop(LR, centered=True, bias_correction=True, momentum=0.9),
    "adagrad": lambda: gradtx.adagrad(LR),
    "adadelta(weight_decay,schedule)": lambda: gradtx.adadelta(LR, weight_decay=schedule),
    "adam": lambda: gradtx.adam(LR),
    "adam(nesterov,mu_dtype,schedule)": lambda: gradtx.adam(schedule, nesterov=True, mu_dtype=BF16),
}


def counting_jit(fn: Callable) -> tuple[Callable, list[int]]:
    """``jax.jit(fn)`` and a one-element list counting how often ``fn`` is traced."""
    traces = [0]

    def traced(*args, **kwargs):
        traces[0] += 1
        return fn(*args, **kwargs)

    return jax.jit(traced), traces


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_jitted_update_traces_once(make):
    """Reference: a trace counter and ``jax.jit``'s cache size. Three calls of the jitted
    ``update`` with different gradients, params and states trace and compile once."""
    opt = make()
    params = random_tree(0)
    update, traces = counting_jit(opt.update)
    state = opt.init(params)
    for grads in random_grads(1, 3):
        updates, state = update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    assert traces[0] == 1
    assert update._cache_size() == 1


INJECTED = {
    "adam": lambda: optax.inject_hyperparams(gradtx.adam)(learning_rate=1e-3, b1=0.9),
    "sgd": lambda: optax.inject_hyperparams(gradtx.sgd)(learning_rate=1e-3, momentum=0.9),
    "rmsprop": lambda: optax.inject_hyperparams(gradtx.rmsprop)(learning_rate=1e-3, centered=True),
    "adagrad": lambda: optax.inject_hyperparams(gradtx.adagrad)(learning_rate=1e-3),
    "adadelta": lambda: optax.inject_hyperparams(gradtx.adadelta)(learning_rate=1e-3, weight_decay=0.1),
}


@pytest.mark.parametrize("make", INJECTED.values(), ids=INJECTED.keys())
def test_injected_learning_rate_changes_without_retracing(make):
    """Reference: a trace counter, and the closed form ``update(lr/2) = update(lr) / 2``
    (rtol 1e-6). ``optax.inject_hyperparams(gradtx.X)``: the learning rate in the state is
    changed between calls of the jitted step; it takes effect, and nothing retraces."""
    opt = make()
    params = random_tree(0)
    g1, g2 = random_grads(1, 2)
    update, traces = counting_jit(opt.update)
    updates1, state = update(g1, opt.init(params), params)
    params = gradtx.apply_updates(params, updates1)

    lr = state.hyperparams["learning_rate"]
    halved = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(lr / 2, lr.dtype)})
    full_step, _ = update(g2, state, params)
    half_step, half_state = update(g2, halved, params)
    assert traces[0] == 1
    assert update._cache_size() == 1
    assert float(half_state.hyperparams["learning_rate"]) == pytest.approx(float(lr) / 2)
    for full, half in zip(jax.tree.leaves(full_step), jax.tree.leaves(half_step)):
        np.testing.assert_allclose(np.asarray(half), np.asarray(full) / 2, rtol=1e-6)
