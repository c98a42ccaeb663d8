"""Bad input fails at once, with a message naming the call and the argument or the leaf
path, and loses nothing (the state passed in is left as it was)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

# (factory, keyword arguments, the argument the message must name)
BAD_HYPERPARAMETERS = [
    (gradtx.sgd, dict(learning_rate=-0.1), "learning_rate"),
    (gradtx.sgd, dict(learning_rate=0.1, momentum=1.5), "momentum"),
    (gradtx.sgd, dict(learning_rate=0.1, momentum=-0.1, nesterov=True), "momentum"),
    (gradtx.averaged_momentum, dict(learning_rate=0.1, beta=2.0), "beta"),
    (gradtx.rmsprop, dict(learning_rate=-1e-3), "learning_rate"),
    (gradtx.rmsprop, dict(learning_rate=1e-3, decay=1.1), "decay"),
    (gradtx.rmsprop, dict(learning_rate=1e-3, eps=-1e-8), "eps"),
    (gradtx.adagrad, dict(learning_rate=-1.0), "learning_rate"),
    (gradtx.adagrad, dict(learning_rate=1.0, eps=-1.0), "eps"),
    (gradtx.adagrad, dict(learning_rate=1.0, initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (gradtx.adadelta, dict(rho=-0.5), "rho"),
    (gradtx.adadelta, dict(eps=-1e-6), "eps"),
    (gradtx.adam, dict(learning_rate=-1e-3), "learning_rate"),
    (gradtx.adam, dict(learning_rate=1e-3, b1=1.5), "b1"),
    (gradtx.adam, dict(learning_rate=1e-3, b2=1.0), "b2"),
    (gradtx.adam, dict(learning_rate=1e-3, eps=-1e-8), "eps"),
    (gradtx.trace, dict(decay=-0.9), "decay"),
    (gradtx.nesterov_trace, dict(decay=1.01), "decay"),
    (gradtx.scale_by_ema, dict(decay=np.array([0.5, 1.5])), "decay"),
    (gradtx.scale_by_ema, dict(decay=0.9, accumulator_dtype=jnp.int32), "accumulator_dtype"),
    (gradtx.bias_correct, dict(decay=1.0), "decay"),
    (gradtx.scale_by_rms, dict(decay=0.9, eps=-1.0), "eps"),
    (gradtx.clip_by_global_norm, dict(max_norm=0.0), "max_norm"),
    (gradtx.clip, dict(max_delta=-1.0), "max_delta"),
    (gradtx.add_decayed_weights, dict(weight_decay=-1e-4), "weight_decay"),
]


@pytest.mark.parametrize("factory, kwargs, argument", BAD_HYPERPARAMETERS,
                         ids=[f"{f.__name__}-{a}" for f, _, a in BAD_HYPERPARAMETERS])
def test_bad_hyperparameter_fails_at_construction_naming_call_and_argument(factory, kwargs, argument):
    with pytest.raises(ValueError) as info:
        factory(**kwargs)
    message = str(info.value)
    assert message.startswith("gradtx."), message
    assert f"({argument}=" in message and f"{argument} must be" in message, message


def test_message_reads_like_the_design_example():
    with pytest.raises(ValueError, match=r"^gradtx\.adam\(b1=1\.5\): b1 must be in \[0, 1\)$"):
        gradtx.adam(1e-3, b1=1.5)


@pytest.mark.parametrize("factory", [gradtx.sgd, gradtx.adam, gradtx.rmsprop, gradtx.adagrad])
def test_traced_hyperparameters_skip_the_check(factory):
    """Inside jit the value is unknown at construction: no check, the math runs."""
    params = jnp.ones(3)

    @jax.jit
    def step(lr):
        tx = factory(lr)
        updates, _ = tx.update(jnp.ones(3), tx.init(params), params)
        return updates

    assert np.all(np.isfinite(step(jnp.asarray(-0.5))))


def test_schedules_are_not_checked_at_construction():
    gradtx.sgd(lambda count: -0.1 * count)  # a schedule's values are unknown until called


def _other_tree():
    return {"w": jnp.zeros((2, 3)), "extra": jnp.zeros(4)}


PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
OPTIMIZERS = [
    pytest.param(lambda: gradtx.sgd(0.1, momentum=0.9), id="momentum"),
    pytest.param(lambda: gradtx.rmsprop(1e-3, centered=True), id="rmsprop-centered"),
    pytest.param(lambda: gradtx.adagrad(1e-2), id="adagrad"),
    pytest.param(lambda: gradtx.adadelta(), id="adadelta"),
    pytest.param(lambda: gradtx.adam(1e-3), id="adam"),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_state_from_another_tree_names_the_first_mismatching_leaf(make, jit):
    tx = make()
    state = tx.init(_other_tree())
    before = jax.tree.map(np.array, state)
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(gradtx.TreeMismatchError, match=r"leaf path \['b'\].*init\(params\)"):
        update(PARAMS, state, PARAMS)
    jax.tree.map(np.testing.assert_array_equal, state, before)  # nothing lost


def test_leaf_shape_mismatch_names_path_and_shapes():
    tx = gradtx.adam(1e-3)
    state = tx.init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)})
    with pytest.raises(gradtx.TreeMismatchError, match=r"\['w'\].*\(2, 3\).*\(3, 2\)"):
        tx.update(PARAMS, state, PARAMS)


def test_mismatch_error_names_the_chain_stage():
    tx = gradtx.chain(gradtx.clip(1.0), gradtx.trace(0.9))
    with pytest.raises(gradtx.TreeMismatchError, match=r"chain stage 1 \(trace\)"):
        tx.update(PARAMS, tx.init(_other_tree()))


@pytest.mark.parametrize("bad_state", [(), "not a state", (gradtx.EmptyState(),) * 3],
                         ids=["empty", "string", "too-long"])
def test_chain_state_of_wrong_length_says_how_to_fix(bad_state):
    tx = gradtx.chain(gradtx.scale(1.0), gradtx.trace(0.9))
    with pytest.raises(gradtx.TreeMismatchError, match=r"one entry per stage \(2 entries\).*own init\(\)"):
        tx.update(PARAMS, bad_state)


def test_state_of_another_optimizer_is_refused():
    with pytest.raises(gradtx.TreeMismatchError):
        gradtx.adam(1e-3).update(PARAMS, gradtx.sgd(0.1, momentum=0.9).init(PARAMS), PARAMS)


def test_named_chain_state_with_other_keys():
    tx = gradtx.named_chain(("a", gradtx.trace(0.9)))
    with pytest.raises(gradtx.TreeMismatchError, match=r"keys \['a'\]"):
        tx.update(PARAMS, {"b": gradtx.EmptyState()})


def test_weight_decay_without_params_says_what_is_missing():
    tx = gradtx.add_decayed_weights(1e-4)
    with pytest.raises(ValueError, match=r"add_decayed_weights: update\(\) needs params"):
        tx.update(PARAMS, tx.init(PARAMS))
