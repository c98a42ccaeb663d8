"""Flax integration: linen ``TrainState``, ``nnx.Optimizer``, checkpoints through orbax and
flax.serialization, and resumed training.

References: every optimizer of the registry is compared with its optax twin called with
the same arguments (``averaged_momentum``, which optax lacks, with its definition
``optax.chain(optax.ema(beta, debias=False), optax.scale(-lr))``); parameter
trajectories in float32 must agree to rtol 1e-5 (atol 1e-7 where a parameter crosses
zero). Round trips and resumed runs are compared with the saved state and with the
uninterrupted run, and must be exact.

One run per case: the nnx trajectory of every optimizer is checkpointed half-way through
both backends, restored into a fresh model and optimizer and resumed, all on the one
compiled step of that optimizer (the linen TrainState the same, for noisy_sgd and the
composite cases). The refusals of a checkpoint that does not fit are in
``tests/test_checkpoints.py``.
"""

from __future__ import annotations

import threading

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
    """``gradtx.<name>(**kwargs)`` and its optax twin (or ``OPTAX_CHAINS``) with the same
    arguments; ``None`` for the optimizers of ``NO_OPTAX_REFERENCE``."""
    if entry.name in NO_OPTAX_REFERENCE:
        return pytest.param(entry.obj(**kwargs), None, id=label)
    reference = entry.optax_factory(optax) if entry.optax else OPTAX_CHAINS[entry.name]
    return pytest.param(entry.obj(**kwargs), reference(**kwargs), id=label)


def in_a_train_step(entry) -> bool:
    """Whether ``apply_gradients`` can run it: not if update needs more (a loss value, the
    objective)."""
    return not (entry.update_extra or entry.needs_objective)


def _cases():
    """Every registered optimizer that runs in a train step, at its first grid point,
    Nesterov and centered RMSprop from their grids, and a user chain."""
    cases = [registry_case(e, e.grid[0], e.name) for e in of_kind("optimizer") if in_a_train_step(e)]
    sgd, rmsprop = BY_NAME["sgd"], BY_NAME["rmsprop"]
    cases.append(registry_case(sgd, next(kw for kw in sgd.grid if kw.get("nesterov")), "sgd-nesterov"))
    cases.append(registry_case(rmsprop, next(kw for kw in rmsprop.grid if kw["centered"] and kw.get("nesterov")),
                               "rmsprop-centered-nesterov"))
    cases.append(pytest.param(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-2)),
                              optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), id="chain-clip-adam"))
    return cases


# Transformations are pure, so each is built once and shared by the tests below: the
# jitted steps, whose cache keys include the transformation, then compile once per case
# (and the checkpointed, restored and resumed runs reuse that compilation).
CASES = _cases()
# nnx runs every optimizer of the registry; linen's TrainState calls tx.update exactly as
# nnx.Optimizer does, so it runs (as a trajectory and as what a checkpoint holds) for
# noisy_sgd (a typed PRNG key in the state) and the three cases built from grids and chains
# (Nesterov SGD, centered Nesterov RMSprop, clipping + Adam).
NNX_CASES = [c for c in CASES if c.id in BY_NAME]
LINEN_CASES = [c for c in CASES if c.id == "noisy_sgd" or c.id not in BY_NAME]
# flax.serialization's msgpack cannot write a typed PRNG key (optax's noisy_sgd state fails
# the same way): its plain to_bytes skips it; gradtx.checkpoint_to_bytes writes the key's data.
NO_MSGPACK = {"noisy_sgd"}


def test_every_optimizer_is_covered():
    """Each registered optimizer that runs in a train step has a case here, and a trajectory
    reference or a reason why not."""
    ids = {c.id for c in CASES}
    missing = [e.name for e in of_kind("optimizer") if in_a_train_step(e) and e.name not in ids]
    assert not missing
    assert {c.id for c in CASES if c.values[1] is None} == set(NO_OPTAX_REFERENCE)


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
    # Under the loop emitters that tests/conftest.py selects for XLA:CPU, one hidden weight
    # of ADOPT's trajectory, 0.0034 at step 40 where the weights are O(0.3), lands 1.4e-7
    # from optax's (ADOPT divides by the previous step's root, which carries float32
    # rounding forward); with XLA's defaults (GRADTX_TEST_XLA_DEFAULTS=1) it is within atol 1e-7.
    "adopt": (RTOL, 1e-6),
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


# ----------------------------------------------------------------------------- checkpoints

RESUME_AT = STEPS // 2  # the step at which a run is checkpointed, restored and resumed


def round_trip(item, tx, params, target, target_params, directory):
    """``item`` through orbax (``gradtx.save_checkpoint``) and flax.serialization's msgpack
    (``gradtx.checkpoint_to_bytes``), each restored into ``target`` (a fresh training
    state): both equal ``item`` bit for bit, NamedTuple records and dtypes included. The
    restored trees are returned, orbax's first."""
    gradtx.save_checkpoint(directory, item, tx=tx, params=params)
    data = gradtx.checkpoint_to_bytes(item, tx=tx, params=params)
    from_orbax = gradtx.restore_checkpoint(directory, target, tx=tx, params=target_params)
    from_bytes = gradtx.checkpoint_from_bytes(target, data, tx=tx, params=target_params)
    assert_trees_equal(from_orbax, item)
    assert_trees_equal(from_bytes, item)
    return from_orbax, from_bytes


def non_daemon_threads() -> set:
    return {t for t in threading.enumerate() if not t.daemon}


def threads_left_behind(before: set) -> list:
    """Non-daemon threads started since ``before`` that do not end within 10 s (orbax's
    asyncio workers end a moment after a save or restore returns)."""
    new = non_daemon_threads() - before
    for t in new:
        t.join(timeout=10)
    return [t.name for t in new if t.is_alive()]


@pytest.mark.parametrize("gradtx_tx, optax_tx", LINEN_CASES)
def test_linen_train_state_trajectory_checkpoint_and_resume(gradtx_tx, optax_tx, request, tmp_path):
    """References: optax's optimizer of the same name in the same TrainState, rtol 1e-5
    (``LOOSER_RTOL`` for the cases named there); and the uninterrupted run for the
    TrainState checkpointed at step 25 both ways, restored into a fresh TrainState and
    resumed from orbax's copy for 25 steps: bit for bit, with no thread left behind.
    (orbax restores arrays committed to their device: the step compiles once more.)"""
    threads = non_daemon_threads()
    state, (xs, ys) = linen_state(gradtx_tx), batches()
    trajectory = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i == RESUME_AT:
            fresh = linen_state(gradtx_tx)
            resumed, _ = round_trip(state, gradtx_tx, state.params, fresh, fresh.params, tmp_path / "ckpt")
            assert isinstance(resumed, train_state.TrainState)
        state = linen_step(state, x, y)
        trajectory.append(state.params)
    for x, y in zip(xs[RESUME_AT:], ys[RESUME_AT:]):
        resumed = linen_step(resumed, x, y)
    assert_trees_equal(resumed, state)
    assert threads_left_behind(threads) == []
    assert_trees_close(trajectory, linen_trajectory(optax_tx), request.node.callspec.id)


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


def nnx_params(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def stepper(model, optimizer):
    """``nnx_step`` on this model and optimizer: ``nnx.cached_partial`` walks their graph once,
    not on every call (1 ms a step less; the compiled step is shared by equal graphs)."""
    return nnx.cached_partial(nnx_step, model, optimizer)


def nnx_trajectory(tx) -> list:
    """The params after each of ``STEPS`` ``optimizer.update`` calls, each under ``nnx.jit``."""
    model = NnxMLP(nnx.Rngs(1))
    step = stepper(model, nnx.Optimizer(model, tx, wrt=nnx.Param))
    trajectory = []
    for x, y in zip(*batches()):
        step(x, y)
        trajectory.append(nnx_params(model))
    return trajectory


def plain_record(opt_state):
    """The optimizer's state as ``tx.init`` returns it for a params dict: the record, without
    nnx's Variables and States (flax.serialization knows neither)."""
    values = jax.tree.map(lambda v: v.get_value(), opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    return jax.tree.map(lambda s: s.to_pure_dict() if isinstance(s, nnx.State) else s, values,
                        is_leaf=lambda s: isinstance(s, nnx.State))


@pytest.mark.parametrize("gradtx_tx, optax_tx", NNX_CASES)
def test_nnx_optimizer_trajectory_checkpoint_and_resume(gradtx_tx, optax_tx, request, tmp_path):
    """One run per optimizer of the registry in an nnx.Optimizer, one compilation of its step.

    References: optax's optimizer of the same name in the same nnx.Optimizer, rtol 1e-5
    (``LOOSER_RTOL`` for the cases named there; ``NO_OPTAX_REFERENCE`` says where the
    reference is elsewhere); the state itself for the model and optimizer checkpointed at
    step 25 through orbax and msgpack (and the bare record through flax.serialization's
    ``to_bytes`` / ``from_bytes`` and state dicts) into a fresh model and optimizer; the
    uninterrupted run for those resumed from the msgpack copy for 25 steps: bit for bit
    (its arrays are uncommitted like the fresh ones, so the step does not compile again;
    the linen test resumes from orbax's)."""
    case = request.node.callspec.id
    model = NnxMLP(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, gradtx_tx, wrt=nnx.Param)
    step = stepper(model, optimizer)
    xs, ys = batches()
    trajectory = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if i == RESUME_AT:
            fresh_model = NnxMLP(nnx.Rngs(2))
            fresh = nnx.Optimizer(fresh_model, gradtx_tx, wrt=nnx.Param)
            saved = jax.tree.map(lambda v: v, nnx.state((model, optimizer)))  # a copy: the run goes on
            _, restored = round_trip(saved, gradtx_tx, nnx.state(model, nnx.Param), nnx.state((fresh_model, fresh)),
                                  nnx.state(fresh_model, nnx.Param), tmp_path / "ckpt")
            if case not in NO_MSGPACK:
                record, template = plain_record(optimizer.opt_state), plain_record(fresh.opt_state)
                assert_trees_equal(serialization.from_bytes(template, serialization.to_bytes(record)), record)
                assert_trees_equal(serialization.from_state_dict(template, serialization.to_state_dict(record)),
                                   record)
            nnx.update((fresh_model, fresh), restored)
            assert jax.tree.structure(fresh.opt_state) == jax.tree.structure(optimizer.opt_state)
        step(x, y)
        trajectory.append(nnx_params(model))
    resumed = stepper(fresh_model, fresh)
    for x, y in zip(xs[RESUME_AT:], ys[RESUME_AT:]):
        resumed(x, y)
    assert_trees_equal(nnx.state((fresh_model, fresh)), nnx.state((model, optimizer)))
    if optax_tx is not None:
        assert_trees_close(trajectory, nnx_trajectory(optax_tx), case)
