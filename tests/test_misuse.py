"""Misuse fails at once with a short message, and loses nothing: one table, ``MISUSES``,
drives this test and the docs page ``docs/misuse.md`` (``docs/gen_pages.py`` reads it),
so the page shows exactly the code run here and the error it must raise.

Each row is a misuse, the code that commits it (run as written, after ``PREAMBLE``) and
the exact error type and message. A misuse in ``update`` is also committed inside a
jitted training step that donates the params and the state (``donate_argnums``): the
error is raised while tracing, before anything runs, so the caller's arrays are neither
consumed nor changed. ``test_donation_consumes_the_inputs_of_a_good_step`` shows that
the donation is real on this backend (a good step deletes its inputs), so the check has
teeth. Reference: the messages themselves, exactly, in the house style (``gradtx.<call>
(<arg>=<value>): <rule>`` for a construction, ``gradtx.<call> > <stage>: ...`` for an
update); the bad hyperparameters of every registry entry are in ``test_errors.py``."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

import gradtx

PREAMBLE = """\
import jax, jax.numpy as jnp, optax, gradtx
params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
grads = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
"""


class Misuse(NamedTuple):
    """A row: ``what`` the user did wrong, the code that does it and what it must raise.

    ``call`` is a whole statement (a construction or an ``init``); or, for a misuse in
    ``update``, ``tx`` builds the transformation and ``grads``, ``state``, ``params`` are
    the arguments of ``tx.update``."""

    id: str
    what: str
    error: type[Exception]
    message: str
    call: str = ""
    tx: str = ""
    grads: str = "grads"
    state: str = "tx.init(params)"
    params: str = "params"

    @property
    def code(self) -> str:
        if self.call:
            return self.call
        return f"tx = {self.tx}; tx.update({self.grads}, {self.state}, {self.params})"


RMSPROP = "gradtx.rmsprop(1e-3, centered=True, momentum=0.9)"
SHAPE = "the params and state have (2, 3)"

MISUSES = [
    # --- hyperparameters: checked when the factory is called
    Misuse("out-of-range", "a hyperparameter out of its range", ValueError,
           "gradtx.adam(b1=1.5): b1 must be in [0, 1)", call="gradtx.adam(1e-3, b1=1.5)"),
    Misuse("string", "a string where a number is required", TypeError,
           "gradtx.adam(learning_rate='1e-3'): learning_rate must be a number, an array or a schedule, got str",
           call='gradtx.adam("1e-3")'),
    Misuse("none", "`None` where a number is required", TypeError,
           "gradtx.adam(eps=None): eps must be a number or an array, got NoneType",
           call="gradtx.adam(1e-3, eps=None)"),
    Misuse("nan", "a NaN", ValueError,
           "gradtx.rmsprop(decay=nan): decay must be in [0, 1]", call='gradtx.rmsprop(1e-3, decay=float("nan"))'),
    Misuse("nan-unbounded", "a NaN where any real number is allowed", ValueError,
           "gradtx.radam(threshold=nan): threshold must be a number, not NaN",
           call='gradtx.radam(1e-3, threshold=float("nan"))'),
    Misuse("function", "a function where only a number is allowed (not a learning rate)", TypeError,
           "gradtx.adam(b1=<function <lambda>>): b1 must be a number or an array, got a function (function)",
           call="gradtx.adam(1e-3, b1=lambda step: 0.9)"),
    # --- init
    Misuse("integer-params-init", "integer params, given to `init`", TypeError,
           "gradtx.adam > adam_direction: init() got params at leaf path ['w'] of dtype int32: gradtx steps "
           "floating or complex params (cast them, or leave the leaf out of the tree)",
           call='gradtx.adam(1e-3).init({"w": jnp.zeros(3, jnp.int32)})'),
    # --- update: the state
    Misuse("update-before-init", "`update` before `init`", gradtx.UpdateError,
           "gradtx.adam: update() got no state (None): pass the AdamState(count, mu, nu) that init(params) "
           "returns (call init before the first update)", tx="gradtx.adam(1e-3)", state="None"),
    Misuse("other-optimizer-state", "a state from another optimizer", gradtx.TreeMismatchError,
           "gradtx.adam: the state is SgdState(trace), not the AdamState(count, mu, nu) that this "
           "transformation's init(params) returns: pass its own state",
           tx="gradtx.adam(1e-3)", state="gradtx.sgd(0.1, momentum=0.9).init(params)"),
    Misuse("optax-state", "optax's state for gradtx's optimizer", gradtx.TreeMismatchError,
           "gradtx.adam: the state is a tuple, not the AdamState(count, mu, nu) that this "
           "transformation's init(params) returns: pass its own state",
           tx="gradtx.adam(1e-3)", state="optax.adam(1e-3).init(params)"),
    Misuse("named-chain-state", "a `named_chain` state with other names", gradtx.TreeMismatchError,
           "gradtx.named_chain: the state is a dict with keys ['b'], not the {a} that this "
           "transformation's init(params) returns: pass its own state",
           tx='gradtx.named_chain(("a", gradtx.trace(0.9)))', state='{"b": gradtx.EmptyState()}'),
    Misuse("state-other-tree", "a state built for other params", gradtx.TreeMismatchError,
           "gradtx.rmsprop > scale_by_stddev: state field `mu` lacks leaf path ['b'] that the params and "
           "gradients have; call init(params) on the tree you pass to update()",
           tx=RMSPROP, state='tx.init({"w": params["w"]})'),
    Misuse("state-other-shapes", "a state built for params of other shapes", gradtx.TreeMismatchError,
           "gradtx.adam > adam_direction: state field `mu` at leaf path ['w'] has shape (3, 2), the params "
           "and gradients have (2, 3); call init(params) on the tree you pass to update()",
           tx="gradtx.adam(1e-3)", state='tx.init({"w": params["w"].T, "b": params["b"]})'),
    Misuse("user-chain", "a state built for other params, in a user's chain", gradtx.TreeMismatchError,
           "gradtx.chain > trace: state field `trace` lacks leaf path ['b'] that the params and gradients "
           "have; call init(params) on the tree you pass to update()",
           tx="gradtx.chain(gradtx.clip(1.0), gradtx.trace(0.9))", state='tx.init({"w": params["w"]})'),
    # --- update: the gradients
    Misuse("gradient-shape", "gradients of another shape", gradtx.TreeMismatchError,
           f"gradtx.rmsprop > scale_by_stddev: the gradients at leaf path ['w'] have shape (3, 2), {SHAPE}",
           tx=RMSPROP, grads='{"w": grads["w"].T, "b": grads["b"]}'),
    Misuse("gradient-missing-leaf", "gradients missing a leaf", gradtx.TreeMismatchError,
           "gradtx.rmsprop > scale_by_stddev: the gradients lack leaf path ['b'] that the params and state have",
           tx=RMSPROP, grads='{"w": grads["w"]}'),
    Misuse("gradient-extra-leaf", "gradients with a leaf the params lack", gradtx.TreeMismatchError,
           "gradtx.rmsprop > scale_by_stddev: the gradients have leaf path ['c'] that the params and state lack",
           tx=RMSPROP, grads='{**grads, "c": jnp.ones(1)}'),
    Misuse("gradient-integer", "integer gradients", gradtx.TreeMismatchError,
           "gradtx.adam > adam_direction: the gradients at leaf path ['b'] are int32: gradients must be "
           "floating or complex", tx="gradtx.adam(1e-3)", grads='{**grads, "b": jnp.ones(3, jnp.int32)}'),
    Misuse("gradient-complex", "complex gradients for real params", gradtx.TreeMismatchError,
           "gradtx.adam > adam_direction: the gradients at leaf path ['w'] are complex64, the params float32: "
           "a real param takes a real gradient",
           tx="gradtx.adam(1e-3)", grads='{**grads, "w": grads["w"] * 1j}'),
    # --- update: the params
    Misuse("missing-params", "no params where a stage needs them", gradtx.UpdateError,
           "gradtx.adamw > add_decayed_weights: update() needs params (call update(updates, state, params))",
           tx="gradtx.adamw(1e-3)", params="None"),
    Misuse("params-other-tree", "params missing a leaf the state and gradients have", gradtx.TreeMismatchError,
           "gradtx.adamw > adam_direction: the params lack leaf path ['b'] that the state and gradients have",
           tx="gradtx.adamw(1e-3)", params='{"w": params["w"]}'),
    Misuse("integer-params-update", "integer params, given to `update`", gradtx.TreeMismatchError,
           "gradtx.sgd: the params at leaf path ['w'] are int32: gradtx steps floating or complex params "
           "(cast them, or leave the leaf out of the tree)",
           tx="gradtx.sgd(0.1)", params='{**params, "w": jnp.zeros((2, 3), jnp.int32)}'),
]


def namespace() -> dict[str, Any]:
    """The names the rows' code sees: what ``PREAMBLE`` defines."""
    ns: dict[str, Any] = {}
    exec(PREAMBLE, ns)
    return ns


def commit(row: Misuse) -> BaseException:
    """Run the row's code as written; return what it raised."""
    try:
        exec(row.code, namespace())
    except Exception as e:  # noqa: BLE001 - the caller checks what was raised
        return e
    raise AssertionError(f"{row.code} raised nothing")


def train_step(tx: gradtx.GradientTransformation):
    """``(params, state, grads) -> (params, state)``, jitted, donating the params and the state."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in MISUSES])
def test_misuse_raises_its_message_and_loses_nothing(row):
    error = commit(row)
    assert (type(error), str(error)) == (row.error, row.message)
    assert len(row.message) < 250 and "\n" not in row.message  # one or two lines on a terminal
    if row.call:
        return
    # the same update in a jitted step that donates the params and the state
    ns = namespace()
    exec(f"tx = {row.tx}", ns)
    args = [eval(source, ns) for source in (row.params, row.state, row.grads)]
    before = jax.tree.map(np.array, args)
    with pytest.raises(row.error) as info:
        train_step(ns["tx"])(*args)
    assert str(info.value) == row.message
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(args))  # not consumed: readable, and
    jax.tree.map(np.testing.assert_array_equal, args, before)  # unchanged


def test_donation_consumes_the_inputs_of_a_good_step():
    """The check above has teeth: on this backend a step that runs consumes what it donates."""
    ns = namespace()
    tx = gradtx.adam(1e-3)
    params, state = ns["params"], tx.init(ns["params"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_params, new_state = train_step(tx)(params, state, ns["grads"])
    # JAX warns when a backend ignores donation: then the check above would prove nothing
    assert not any("donated" in str(w.message) for w in caught), f"donation is a no-op on {jax.default_backend()}"
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves((params, state)))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves((new_params, new_state)))
    np.testing.assert_allclose(new_params["w"], -1e-3, rtol=1e-5)  # Adam's first step: -lr * sign(g)
