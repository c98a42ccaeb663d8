"""Flax integration: linen ``TrainState``, ``nnx.Optimizer``, Flax serialization, orbax
checkpoints and resumed training.

References: every optimizer of the registry is compared with its optax twin called with
the same arguments (``averaged_momentum``, which optax lacks, with its definition
``optax.chain(optax.ema(beta, debias=False), optax.scale(-lr))``); parameter
trajectories in float32 must agree to rtol 1e-5 (atol 1e-7 where a parameter crosses
zero). Round trips and resumed runs are compared with themselves and must be exact.
"""

from __future__ import annotations

import threading

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx, serialization
from flax.training import train_state

import gradtx
from gradtx.registry import BY_NAME, of_kind

STEPS = 50
RTOL = 1e-5
ATOL = 1e-7  # for the few entries that pass through zero (params are O(0.1))
IN, HIDDEN, OUT, BATCH = 6, 16, 3, 8


# Where the registry has no optax twin (optax lacks the optimizer, or the parity runner
# cannot compare it): the optax transformation of the same math, on this MLP.
OPTAX_CHAINS = {
    "averaged_momentum": lambda learning_rate, beta: optax.chain(optax.ema(beta, debias=False),
                                                                 optax.scale(-learning_rate)),
    "noisy_sgd": lambda **kw: optax.noisy_sgd(**kw),  # the same key gives the same noise
    "sm3": lambda **kw: optax.sm3(**kw),  # the MLP has no 0-d parameter, where optax's fails
    # the registry row has no twin so that the parity suite skips optax's slow eager Newton-Schulz
    "muon": lambda **kw: optax.contrib.muon(**kw),
}
# Optimizers whose trajectory has no optax reference here (their own test files compare
# them with the right one); they still round-trip through Flax's and orbax's checkpoints.
NO_OPTAX_REFERENCE = {
    "rprop": "optax's rprop is one step late: torch.optim.Rprop in tests/test_first_order.py",
    "yogi": "optax starts Yogi's first moment at 1e-6: tests/test_adam_variants.py",
    "adan": "optax weights Adan's gradient difference by 1 - b2: tests/test_adam_variants.py",
    "soap": "optax has no SOAP: pytorch_optimizer 4.1.0's SOAP in tests/test_preconditioned.py",
    "shampoo": "optax has no Shampoo: pytorch_optimizer 4.1.0's ScalableShampoo in tests/test_preconditioned.py",
}


def registry_case(entry, kwargs, label):
    """``gradtx.<name>(**kwargs)`` against its optax twin (or ``OPTAX_CHAINS``) with the
    same arguments."""
    reference = entry.optax_factory(optax) if entry.optax else OPTAX_CHAINS[entry.name]
    return pytest.param(entry.obj(**kwargs), reference(**kwargs), id=label)


def in_a_train_step(entry) -> bool:
    """Whether ``apply_gradients`` can run it: not if update needs more (a loss value, the
    objective)."""
    return not (entry.update_extra or entry.needs_objective)


def _cases():
    """Every registered optimizer with an optax reference at its first grid point, Nesterov
    and centered RMSprop from their grids, and a user chain."""
    cases = [registry_case(e, e.grid[0], e.name) for e in of_kind("optimizer")
             if in_a_train_step(e) and e.name not in NO_OPTAX_REFERENCE]
    sgd, rmsprop = BY_NAME["sgd"], BY_NAME["rmsprop"]
    cases.append(registry_case(sgd, next(kw for kw in sgd.grid if kw.get("nesterov")), "sgd-nesterov"))
    cases.append(registry_case(rmsprop, next(kw for kw in rmsprop.grid if kw["centered"] and kw.get("nesterov")),
                               "rmsprop-centered-nesterov"))
    cases.append(pytest.param(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-2)),
                              optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), id="chain-clip-adam"))
    return cases


# Transformations are pure, so each is built once and shared by the tests below: the
# jitted steps, whose cache keys include the transformation, then compile once per case.
CASES = _cases()
# linen's TrainState calls tx.update exactly as nnx.Optimizer does: its trajectory runs for
# the first optimizer of each docs family and the three extra cases (nnx runs every case).
_FIRST_OF_FAMILY = {e.section: e.name for e in reversed(of_kind("optimizer"))}.values()
LINEN_CASES = [c for c in CASES if c.id in _FIRST_OF_FAMILY or c.id not in BY_NAME]
ROUND_TRIPS = [pytest.param(e.obj(**e.grid[0]), id=e.name) for e in of_kind("optimizer") if in_a_train_step(e)]
# flax.serialization's msgpack cannot write a typed PRNG key (optax's noisy_sgd state fails
# the same way); orbax, tested below for every optimizer, can.
MSGPACK_ROUND_TRIPS = [p for p in ROUND_TRIPS if p.id != "noisy_sgd"]


def test_every_optimizer_is_covered():
    """Each registered optimizer has a trajectory reference here, or a reason why not."""
    covered = {c.id for c in CASES} | set(NO_OPTAX_REFERENCE)
    missing = [e.name for e in of_kind("optimizer") if in_a_train_step(e) and e.name not in covered]
    assert not missing


def batches(steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stream of classification batches, one per step (numpy: no compilation)."""
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((STEPS, BATCH, IN), dtype=np.float32)
    ys = rng.integers(0, OUT, (STEPS, BATCH)).astype(np.int32)
    return xs[:steps], ys[:steps]


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# Cases whose float32 trajectories round apart faster, with the reason; float64 agrees.
LOOSER_RTOL = {
    # Newton-Schulz's five matrix products per step, fused differently by XLA in gradtx's and
    # optax's steps, amplify float32 rounding along the trajectory (2.5e-6 apart at step 43
    # on weights of scale 0.3); float64 parity is 1e-14 (tests/test_muon.py). (rtol, atol)
    "muon": (2e-4, 1e-5),
}


def assert_trees_close(actual, expected, case: str = ""):
    chex.assert_trees_all_close(actual, expected, rtol=LOOSER_RTOL.get(case, (RTOL, ATOL))[0],
                                atol=LOOSER_RTOL.get(case, (RTOL, ATOL))[1])


def assert_trees_equal(actual, expected):
    """Same tree structure (so NamedTuples are still the same NamedTuples), same dtypes
    and shapes, bit-identical values."""
    chex.assert_trees_all_equal_structs(actual, expected)
    chex.assert_trees_all_equal(actual, expected, strict=True)


# ----------------------------------------------------------------------------- linen

class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(OUT)(nn.relu(nn.Dense(HIDDEN)(x)))


LINEN_MODEL = LinenMLP()  # one instance: apply_fn is part of the TrainState's tree structure


def linen_state(tx: optax.GradientTransformation) -> train_state.TrainState:
    params = LINEN_MODEL.init(jax.random.key(1), jnp.zeros((1, IN)))
    state = train_state.TrainState.create(apply_fn=LINEN_MODEL.apply, params=params, tx=tx)
    # A strongly typed step, as a restored checkpoint has: one compiled linen_step per tx.
    return state.replace(step=jnp.zeros((), jnp.int32))


@jax.jit
def linen_step(state: train_state.TrainState, x, y) -> train_state.TrainState:
    grads = jax.grad(lambda p: cross_entropy(state.apply_fn(p, x), y))(state.params)
    return state.apply_gradients(grads=grads)


def linen_trajectory(tx) -> list:
    """The params after each of ``STEPS`` jitted ``apply_gradients`` calls."""
    state, xs, ys = linen_state(tx), *batches()
    trajectory = []
    for x, y in zip(xs, ys):
        state = linen_step(state, x, y)
        trajectory.append(state.params)
    return trajectory


@pytest.mark.parametrize("gradtx_tx, optax_tx", LINEN_CASES)
def test_linen_train_state_trajectory_matches_optax(gradtx_tx, optax_tx, request):
    """Reference: optax's optimizer of the same name in the same TrainState, rtol 1e-5
    (``LOOSER_RTOL`` for the cases named there)."""
    assert_trees_close(linen_trajectory(gradtx_tx), linen_trajectory(optax_tx), request.node.callspec.id)


# ----------------------------------------------------------------------------- nnx

class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, OUT, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


@nnx.jit
def nnx_step(model: NnxMLP, optimizer: nnx.Optimizer, x, y):
    grads = nnx.grad(lambda m: cross_entropy(m(x), y))(model)
    optimizer.update(model, grads)


def nnx_trajectory(tx) -> list:
    """The params after each of ``STEPS`` ``optimizer.update`` calls, each under ``nnx.jit``."""
    model = NnxMLP(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    xs, ys = batches()
    trajectory = []
    for x, y in zip(xs, ys):
        nnx_step(model, optimizer, x, y)
        trajectory.append(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return trajectory


@pytest.mark.parametrize("gradtx_tx, optax_tx", CASES)
def test_nnx_optimizer_trajectory_matches_optax(gradtx_tx, optax_tx, request):
    """Reference: optax's optimizer of the same name in the same nnx.Optimizer, rtol 1e-5
    (``LOOSER_RTOL`` for the cases named there)."""
    assert_trees_close(nnx_trajectory(gradtx_tx), nnx_trajectory(optax_tx), request.node.callspec.id)


# ----------------------------------------------------------------------------- round trips

def trained_linen_state(tx, steps: int = 3) -> train_state.TrainState:
    """A TrainState a few steps in, so that every count and moment is non-trivial."""
    state = linen_state(tx)
    xs, ys = batches(steps)
    for x, y in zip(xs, ys):
        state = linen_step(state, x, y)
    return state


@pytest.mark.parametrize("gradtx_tx", MSGPACK_ROUND_TRIPS)
def test_flax_serialization_round_trip(gradtx_tx):
    """Reference: the state itself; to_state_dict/from_state_dict and msgpack bytes into a
    freshly initialised state give back the same NamedTuples, dtypes and values."""
    state = trained_linen_state(gradtx_tx)
    template = linen_state(gradtx_tx).opt_state
    restored = serialization.from_state_dict(template, serialization.to_state_dict(state.opt_state))
    assert_trees_equal(restored, state.opt_state)
    assert_trees_equal(serialization.from_bytes(template, serialization.to_bytes(state.opt_state)),
                       state.opt_state)


def orbax_round_trip(tree, path):
    """Save ``tree`` with orbax and restore it against its own abstract structure."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()
        return checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, tree))


def non_daemon_threads() -> set:
    return {t for t in threading.enumerate() if not t.daemon}


@pytest.mark.parametrize("gradtx_tx", ROUND_TRIPS)
def test_orbax_round_trip_and_bit_identical_resume(gradtx_tx, tmp_path):
    """Reference: an uninterrupted run. 20 steps, orbax save/restore (same NamedTuples and
    values), 20 more steps == 40 steps straight, bit for bit; no threads left behind."""
    threads = non_daemon_threads()
    xs, ys = batches(40)
    straight = linen_state(gradtx_tx)
    for x, y in zip(xs, ys):
        straight = linen_step(straight, x, y)

    state = linen_state(gradtx_tx)
    for x, y in zip(xs[:20], ys[:20]):
        state = linen_step(state, x, y)
    restored = orbax_round_trip(state, tmp_path / "step20")
    assert isinstance(restored, train_state.TrainState)
    assert_trees_equal(restored, state)
    for x, y in zip(xs[20:], ys[20:]):
        restored = linen_step(restored, x, y)
    assert_trees_equal(restored, straight)
    assert non_daemon_threads() <= threads


@pytest.mark.parametrize("gradtx_tx", ROUND_TRIPS)
def test_nnx_optimizer_orbax_round_trip(gradtx_tx, tmp_path):
    """Reference: the optimizer's own state; restored into a fresh nnx.Optimizer through
    orbax, its opt_state has the same structure (NamedTuples included) and values."""
    model = NnxMLP(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, gradtx_tx, wrt=nnx.Param)
    xs, ys = batches(3)
    for x, y in zip(xs, ys):
        nnx_step(model, optimizer, x, y)

    fresh = nnx.Optimizer(NnxMLP(nnx.Rngs(2)), gradtx_tx, wrt=nnx.Param)
    nnx.update(fresh, orbax_round_trip(nnx.state(optimizer), tmp_path / "nnx"))
    assert_trees_equal(nnx.state(fresh), nnx.state(optimizer))
    assert jax.tree.structure(fresh.opt_state) == jax.tree.structure(optimizer.opt_state)
