"""Bad input fails at once, with a short message naming the call, the argument or the stage
and leaf path, and the tree at fault; and it loses nothing (the state passed in is left as
it was). The bad hyperparameters come from the registry (``Entry.bad``)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.registry import ENTRIES


def _shown(v) -> str:
    """An argument in a test id: functions and transformations by name (their reprs carry
    addresses, which differ between pytest-xdist workers)."""
    return getattr(v, "__name__", None) or (type(v).__name__ if callable(v) or hasattr(v, "update") else repr(v))


BAD = [pytest.param(e, bad, id=f"{e.name}({','.join(f'{k}={_shown(v)}' for k, v in bad.kwargs.items())})")
       for e in ENTRIES for bad in e.bad]


@pytest.mark.parametrize("entry, bad", BAD)
def test_bad_hyperparameter_fails_at_construction_naming_call_and_argument(entry, bad):
    """Reference: the registry row's error type and message, exactly:
    ``gradtx.<call>(<arg>=<value>): <rule>``, naming the argument that is wrong."""
    with pytest.raises(bad.error) as info:
        entry.obj(**bad.kwargs)
    message = str(info.value)
    wrong = [k for k in bad.kwargs if f"({k}=" in message]
    assert len(wrong) == 1, message
    assert message == f"gradtx.{entry.name}({wrong[0]}={bad.kwargs[wrong[0]]!r}): {bad.message}"


def test_messages_read_like_the_design_examples():
    with pytest.raises(ValueError, match=r"^gradtx\.adam\(b1=1\.5\): b1 must be in \[0, 1\)$"):
        gradtx.adam(1e-3, b1=1.5)
    with pytest.raises(TypeError, match=r"^gradtx\.adam\(learning_rate='1e-3'\): learning_rate must be a "
                                        r"number, an array or a schedule, got str$"):
        gradtx.adam("1e-3")


def test_validation_happens_once_naming_the_call_the_user_made():
    """The stages an optimizer builds are not checked again: the error names ``rmsprop``
    and its argument, not ``scale_by_rms(decay=...)``."""
    with pytest.raises(ValueError, match=r"^gradtx\.rmsprop\(decay=2\.0\)"):
        gradtx.rmsprop(1e-3, decay=2.0)
    with pytest.raises(ValueError, match=r"^gradtx\.scale_by_rms\(decay=2\.0\)"):
        gradtx.scale_by_rms(decay=2.0)


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


PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
CENTERED = dict(learning_rate=1e-3, centered=True, momentum=0.9)


def update_fails(tx, grads, state, params, error=gradtx.TreeMismatchError, jit=False) -> str:
    """Call ``tx.update`` (jitted or not) expecting ``error``; the state passed in must be
    untouched afterwards. Returns the message."""
    before = jax.tree.map(np.array, state)
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(error) as info:
        update(grads, state, params)
    jax.tree.map(np.testing.assert_array_equal, state, before)  # nothing lost
    message = str(info.value)
    assert len(message) < 250 and message.count("\n") <= 1, message  # one or two lines
    return message


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("grads, params_for_state, expected", [
    pytest.param({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}, PARAMS,
                 "gradtx.rmsprop > scale_by_stddev: the gradients at leaf path ['w'] have shape (3, 2), "
                 "the params and state have (2, 3)", id="gradient-shape"),
    pytest.param({"w": jnp.zeros((2, 3))}, PARAMS,
                 "gradtx.rmsprop > scale_by_stddev: the gradients lack leaf path ['b'] that the params and "
                 "state have", id="gradient-missing-leaf"),
    pytest.param({**PARAMS, "c": jnp.zeros(1)}, PARAMS,
                 "gradtx.rmsprop > scale_by_stddev: the gradients have leaf path ['c'] that the params and "
                 "state lack", id="gradient-extra-leaf"),
    pytest.param(PARAMS, {"w": jnp.zeros((2, 3)), "extra": jnp.zeros(4)},
                 "gradtx.rmsprop > scale_by_stddev: state field `mu` lacks leaf path ['b'] that the params "
                 "and gradients have; call init(params) on the tree you pass to update()", id="state-other-tree"),
])
def test_tree_mismatch_names_call_stage_leaf_path_and_the_tree_at_fault(grads, params_for_state, expected, jit):
    tx = gradtx.rmsprop(**CENTERED)
    assert update_fails(tx, grads, tx.init(params_for_state), PARAMS, jit=jit) == expected


def test_params_at_fault_are_named():
    tx = gradtx.adamw(1e-3)
    message = update_fails(tx, PARAMS, tx.init(PARAMS), {"w": jnp.zeros((2, 3))})
    assert message == ("gradtx.adamw > adam_direction: the params lack leaf path ['b'] that the state and "
                       "gradients have")


def test_state_of_another_optimizer_is_refused():
    message = update_fails(gradtx.adam(1e-3), PARAMS, gradtx.sgd(0.1, momentum=0.9).init(PARAMS), PARAMS)
    assert message == ("gradtx.adam: the state is SgdState(trace), not the AdamState(count, mu, nu) that this "
                       "transformation's init(params) returns: pass its own state")


def test_optax_state_is_refused():
    message = update_fails(gradtx.adam(1e-3), PARAMS, optax.adam(1e-3).init(PARAMS), PARAMS)
    assert message.startswith("gradtx.adam: the state is a tuple, not the AdamState(count, mu, nu)")


def test_update_before_init():
    message = update_fails(gradtx.adam(1e-3), PARAMS, None, PARAMS, error=gradtx.UpdateError)
    assert message == ("gradtx.adam: update() got no state (None): pass the AdamState(count, mu, nu) that "
                       "init(params) returns (call init before the first update)")


def test_a_user_chain_is_named_chain_and_its_stage():
    tx = gradtx.chain(gradtx.clip(1.0), gradtx.trace(0.9))
    message = update_fails(tx, PARAMS, tx.init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}), None)
    assert message.startswith("gradtx.chain > trace: ")


def test_missing_params_name_the_optimizer_and_stage():
    tx = gradtx.adamw(1e-3, weight_decay=1e-4)
    message = update_fails(tx, PARAMS, tx.init(PARAMS), None, error=gradtx.UpdateError)
    assert message == "gradtx.adamw > add_decayed_weights: update() needs params (call update(updates, state, params))"


def test_named_chain_state_with_other_keys():
    tx = gradtx.named_chain(("a", gradtx.trace(0.9)))
    with pytest.raises(gradtx.TreeMismatchError, match=re.escape("not the {a} that")):
        tx.update(PARAMS, {"b": gradtx.EmptyState()})


def test_leaf_shape_mismatch_in_a_deep_stage_names_the_optimizers_stage():
    """The shape error of a field kept three stages down (``second_moment`` inside
    ``adam_direction`` inside ``adam``) names the call and its stage only."""
    tx = gradtx.adam(1e-3)
    state = tx.init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)})
    message = update_fails(tx, PARAMS, state, PARAMS)
    assert message.startswith("gradtx.adam > adam_direction: state field `mu` at leaf path ['w'] has shape (3, 2)")
