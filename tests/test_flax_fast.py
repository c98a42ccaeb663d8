"""``gradtx.flax``: the fused step (``update_and_apply``) inside unmodified Flax loops.

References and tolerances:
- ``gradtx.flax.Optimizer`` against ``flax.nnx.Optimizer`` and ``gradtx.flax.TrainState``
  against ``flax.training.train_state.TrainState``, the same gradtx transformation, the
  same batches: float32, 1 and 25 jitted train steps, params and state. In this process
  XLA:CPU does not fuse sibling outputs, so the one-loop form is forced (``form``
  fixture, as in tests/test_fused_step.py) to test its numbers, and the plain fallback
  must be bitwise equal. One-loop form: bitwise for momentum (no moment recomputed from
  another), else within one float32 ulp of the leaf's largest magnitude per step (LLVM
  may contract a multiply-add into an FMA in one loop and not in the other; the train
  step's gradients carry a difference into the next step). Mutants (a step that does not
  write the state back, a step 4 ulps off) must fail that tolerance.
- The state record is the plain class's (same tree structure, NamedTuples included): an
  orbax checkpoint of one class restores into the other and training resumes bit for bit.
- A subprocess with sibling fusion on and 4 CPU devices (``with_fusion_on_4_devices``):
  the optimizer part of the NNX step compiles to as many array loops as calling
  ``update_and_apply`` directly (one per leaf), fewer than ``nnx.Optimizer``'s; params
  sharded over the 4 devices keep every params and state sharding through 20 jitted
  steps and follow the plain class: one ulp after the first step, float32 rtol 1e-5
  (of a leaf's largest magnitude) after 20, where XLA's real fused loops contract FMAs
  on their own and the model carries each difference into the next gradients.
- Bad input: a step function (``update_and_apply(tx)``) or a number where the
  transformation belongs is a TypeError naming the call; mismatched gradients name the
  leaf path (gradtx's tree check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from flax.training import train_state

import gradtx
import gradtx.flax
from gradtx import update_and_apply
from gradtx.flax import Optimizer, TrainState
from gradtx.perf import fused

STEPS = 25
# One ulp per step at most (of a leaf's largest magnitude), growing at most linearly:
# measured: bitwise after the first step (adadelta: 0.002 ulp), at most 5 ulps after 25 (rmsprop).
ULPS_PER_STEP = 1
IN, HIDDEN, OUT, BATCH = 6, 16, 3, 8
OPTIMIZERS = {
    "momentum": lambda: gradtx.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: gradtx.adam(0.01),
    "adamw": lambda: gradtx.adamw(gradtx.cosine_decay_schedule(0.01, STEPS), weight_decay=0.1),
    "rmsprop": lambda: gradtx.rmsprop(0.01, momentum=0.5),
    "adadelta": lambda: gradtx.adadelta(1.0),
    "clip+adam": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.01)),
}
BITWISE = ("momentum",)  # no moment recomputed from another: the same loops, bit for bit
# Every optimizer in the one-loop form; the fallback (the plain step, bit for bit) on two.
CASES = [*((name, "one-loop form") for name in OPTIMIZERS), ("adam", "plain fallback"), ("clip+adam", "plain fallback")]


def ulps_after(name: str, form: str, steps: int) -> int:
    """The tolerance after ``steps`` steps, in float32 ulps of a leaf's largest magnitude."""
    return 0 if name in BITWISE or form == "plain fallback" else ULPS_PER_STEP * steps


@pytest.fixture(params=["one-loop form", "plain fallback"])
def form(request, monkeypatch):
    """Run ``update_and_apply`` in its one-loop form, or in its fallback."""
    monkeypatch.setattr(fused, "fuses_sibling_outputs", lambda platform=None: request.param == "one-loop form")
    return request.param


def batches(steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((steps, BATCH, IN), dtype=np.float32),
            rng.integers(0, OUT, (steps, BATCH)).astype(np.int32))


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def assert_close_in_ulps(actual, expected, ulps: float):
    """Same structure and dtypes; each leaf within ``ulps`` float32 ulps of its largest
    magnitude (0: bit for bit)."""
    chex.assert_trees_all_equal_structs(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype
        if ulps == 0 or not np.issubdtype(e.dtype, np.floating):
            np.testing.assert_array_equal(a, e)
        else:
            np.testing.assert_allclose(a, e, rtol=0, atol=ulps * np.spacing(np.float32(np.abs(e).max())))


# ----------------------------------------------------------------------------- nnx

class NnxMLP(nnx.Module):
    """A small MLP with a scalar parameter (a 0-d leaf)."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, OUT, rngs=rngs)
        self.temperature = nnx.Param(jnp.ones(()))

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x))) * self.temperature


def nnx_run(optimizer_cls, tx, xs, ys):
    """``optimizer_cls(model, tx, wrt=nnx.Param)`` after one jitted train step per batch
    (a train step jitted afresh: the ``form`` fixture changes what it traces); the
    model and optimizer, and their state after the first step."""
    model = NnxMLP(nnx.Rngs(0))
    optimizer = optimizer_cls(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        grads = nnx.grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)

    first = None
    for x, y in zip(xs, ys):
        train_step(model, optimizer, x, y)
        first = nnx.as_pure(nnx.state((model, optimizer))) if first is None else first
    return model, optimizer, first


@pytest.mark.parametrize("name, form", CASES, indirect=["form"])
def test_nnx_optimizer_gives_the_plain_numbers(name, form):
    """Reference: flax.nnx.Optimizer with the same tx and batches; float32, params and
    state after 1 and 25 steps, bitwise or within ``ulps_after`` (1 ulp after one step)."""
    tx, (xs, ys) = OPTIMIZERS[name](), batches()
    (fast_model, fast_opt, fast_first), (plain_model, plain_opt, plain_first) = (
        nnx_run(cls, tx, xs, ys) for cls in (Optimizer, nnx.Optimizer))
    assert_close_in_ulps(fast_first, plain_first, ulps_after(name, form, 1))
    assert_close_in_ulps(nnx.state((fast_model, fast_opt)), nnx.state((plain_model, plain_opt)),
                         ulps_after(name, form, STEPS))
    assert int(fast_opt.step[...]) == STEPS


def stale_state(tx):
    """Mutant: the new params, the old state (a class that forgets to write the state back)."""
    return lambda params, state, grads, **extra: (update_and_apply(tx)(params, state, grads, **extra)[0], state)


def four_ulps_off(tx):
    """Mutant: each step's params 4 ulps too large (a contraction or an order that costs more than one ulp)."""
    def step(params, state, grads, **extra):
        params, state = update_and_apply(tx)(params, state, grads, **extra)
        return jax.tree.map(lambda p: p * jnp.float32(1 + 2**-21), params), state
    return step


@pytest.mark.parametrize("mutant", [stale_state, four_ulps_off])
def test_mutants_fail_the_tolerance(mutant, monkeypatch):
    """Reference: nnx.Optimizer (the control, the real class, passes in
    test_nnx_optimizer_gives_the_plain_numbers); a broken step inside gradtx.flax must
    fail the 25-step comparison at ``ulps_after``."""
    monkeypatch.setattr(fused, "fuses_sibling_outputs", lambda platform=None: True)
    monkeypatch.setattr(gradtx.flax, "update_and_apply", mutant)
    tx, (xs, ys) = OPTIMIZERS["adam"](), batches()
    (fast_model, fast_opt, _), (plain_model, plain_opt, _) = (nnx_run(cls, tx, xs, ys)
                                                              for cls in (Optimizer, nnx.Optimizer))
    with pytest.raises(AssertionError):
        assert_close_in_ulps(nnx.state((fast_model, fast_opt)), nnx.state((plain_model, plain_opt)),
                             ulps_after("adam", "one-loop form", STEPS))


@pytest.mark.parametrize("jitted, form", [(True, "one-loop form"), (True, "plain fallback"), (False, "one-loop form")],
                         ids=["jit", "jit-fallback", "eager"], indirect=["form"])
def test_nnx_update_returns_the_plain_updates(jitted, form):
    """Reference: what nnx.Optimizer.update returns for the same step, bit for bit (the
    updates come from their own copy of tx.update on the old values)."""
    xs, ys = batches(1)
    updates = []
    for cls in (Optimizer, nnx.Optimizer):
        model = NnxMLP(nnx.Rngs(0))
        optimizer = cls(model, gradtx.adam(0.01), wrt=nnx.Param)

        def step(model, optimizer):
            return optimizer.update(model, nnx.grad(lambda m: cross_entropy(m(xs[0]), ys[0]))(model))

        updates.append((nnx.jit(step) if jitted else step)(model, optimizer))
    assert_close_in_ulps(updates[0], updates[1], 0)


@pytest.mark.parametrize("form", ["one-loop form", "plain fallback"], indirect=True)
def test_diagnostics_observe_some_steps_through_the_optimizer(form):
    """Reference: flax's nnx.Optimizer with the same transformation and the same
    ``observe=`` keyword (it passes keywords to ``tx.update`` too): after four jitted steps,
    the middle two unobserved, params and state within the one-loop form's ulps; the
    recorded norm is held on the unobserved steps."""
    xs, ys = batches(4)
    observe = (True, False, False, True)
    results = []
    for cls in (Optimizer, nnx.Optimizer):
        model = NnxMLP(nnx.Rngs(0))
        tx = gradtx.chain(gradtx.adam(0.01), gradtx.training_diagnostics(reset_every=2))
        optimizer = cls(model, tx, wrt=nnx.Param)

        @nnx.jit(static_argnames="observe")
        def train_step(model, optimizer, x, y, observe):
            grads = nnx.grad(lambda m: cross_entropy(m(x), y))(model)
            optimizer.update(model, grads, observe=observe)

        norms = []
        for x, y, o in zip(xs, ys, observe):
            train_step(model, optimizer, x, y, observe=o)
            norms.append(float(gradtx.diagnostics_in(nnx.as_pure(optimizer.opt_state))["update_norm"]))
        assert norms[1] == norms[2] == norms[0] != norms[3]
        results.append(nnx.as_pure(nnx.state((model, optimizer))))
    assert_close_in_ulps(results[0], results[1], ulps_after("adam", form, 4))


@pytest.mark.parametrize("form", ["one-loop form"], indirect=True)
def test_zero_gradients_on_the_first_step(form):
    """Reference: nnx.Optimizer; all-zero gradients (Adam's 0 / (0 + eps) step): params
    unchanged, the same state, bit for bit."""
    states = []
    for cls in (Optimizer, nnx.Optimizer):
        model = NnxMLP(nnx.Rngs(0))
        optimizer = cls(model, gradtx.adam(0.01), wrt=nnx.Param)
        before = nnx.state(model)
        nnx.jit(lambda m, o, g: o.update(m, g))(model, optimizer, jax.tree.map(jnp.zeros_like, nnx.state(model)))
        assert_close_in_ulps(nnx.state(model), before, 0)
        states.append(nnx.state(optimizer))
    assert_close_in_ulps(states[0], states[1], 0)


def orbax_round_trip(tree, path):
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()
        return checkpointer.restore(path, jax.tree.map(ocp.utils.to_shape_dtype_struct, tree))


def test_nnx_checkpoints_are_interchangeable(tmp_path):
    """Reference: nnx.Optimizer, 10 steps straight. 5 steps with gradtx.flax.Optimizer,
    an orbax checkpoint restored into a fresh nnx.Optimizer (the same tree structure,
    NamedTuples included), 5 more steps: bit for bit (the one-loop form is not forced
    here: both classes run the plain step)."""
    xs, ys = batches(10)
    straight_model, straight_opt, _ = nnx_run(nnx.Optimizer, gradtx.adam(0.01), xs, ys)
    model, optimizer, _ = nnx_run(Optimizer, gradtx.adam(0.01), xs[:5], ys[:5])
    fresh_model = NnxMLP(nnx.Rngs(1))
    fresh = nnx.Optimizer(fresh_model, gradtx.adam(0.01), wrt=nnx.Param)
    assert jax.tree.structure(nnx.state(fresh)) == jax.tree.structure(nnx.state(optimizer))
    nnx.update((fresh_model, fresh), orbax_round_trip(nnx.state((model, optimizer)), tmp_path / "ckpt"))

    @nnx.jit
    def train_step(model, optimizer, x, y):
        optimizer.update(model, nnx.grad(lambda m: cross_entropy(m(x), y))(model))

    for x, y in zip(xs[5:], ys[5:]):
        train_step(fresh_model, fresh, x, y)
    assert_close_in_ulps(nnx.state((fresh_model, fresh)), nnx.state((straight_model, straight_opt)), 0)


# ----------------------------------------------------------------------------- linen

class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(OUT)(nn.relu(nn.Dense(HIDDEN)(x)))


LINEN_MODEL = LinenMLP()


def linen_run(state_cls, tx, xs, ys):
    params = LINEN_MODEL.init(jax.random.key(1), jnp.zeros((1, IN)))
    state = state_cls.create(apply_fn=LINEN_MODEL.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state, x, y):
        grads = jax.grad(lambda p: cross_entropy(state.apply_fn(p, x), y))(state.params)
        return state.apply_gradients(grads=grads)

    first = None
    for x, y in zip(xs, ys):
        state = train_step(state, x, y)
        first = state if first is None else first
    return state, first


@pytest.mark.parametrize("name, form", CASES, indirect=["form"])
def test_linen_train_state_gives_the_plain_numbers(name, form):
    """Reference: flax's TrainState with the same tx and batches; float32, params and
    opt_state (the same record) after 1 and 25 steps, bitwise or within ``ulps_after``."""
    tx, (xs, ys) = OPTIMIZERS[name](), batches()
    (fast, fast_first), (plain, plain_first) = (linen_run(cls, tx, xs, ys)
                                                for cls in (TrainState, train_state.TrainState))
    for ours, theirs, steps in ((fast_first, plain_first, 1), (fast, plain, STEPS)):
        assert_close_in_ulps((ours.params, ours.opt_state), (theirs.params, theirs.opt_state),
                             ulps_after(name, form, steps))
    assert int(fast.step) == STEPS


@pytest.mark.parametrize("form", ["one-loop form"], indirect=True)
def test_linen_overwrite_with_gradient_collection(form):
    """Reference: flax's TrainState; fp8's ``_overwrite_with_gradient`` collection is
    copied from the gradients, the ``params`` collection stepped, bit for bit."""
    params = {"params": {"w": jnp.linspace(-1.0, 1.0, 8)}, "_overwrite_with_gradient": {"scale": jnp.ones(())}}
    grads = {"params": {"w": jnp.full(8, 0.5)}, "_overwrite_with_gradient": {"scale": jnp.full((), 3.0)}}
    out = [jax.jit(lambda s: s.apply_gradients(grads=grads))(
        cls.create(apply_fn=None, params=params, tx=gradtx.sgd(0.1, momentum=0.9)))
        for cls in (TrainState, train_state.TrainState)]
    assert_close_in_ulps(out[0].params, out[1].params, 0)
    assert float(out[0].params["_overwrite_with_gradient"]["scale"]) == 3.0


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make", [
    lambda tx: Optimizer(NnxMLP(nnx.Rngs(0)), tx, wrt=nnx.Param),
    lambda tx: TrainState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=tx),
], ids=["nnx", "linen"])
def test_a_step_function_instead_of_a_transformation_is_a_clear_error(make):
    """Reference: the message. ``update_and_apply(tx)`` (what flax.nnx.Optimizer fails on
    with ``AttributeError: 'function' object has no attribute 'init'``) and a number are
    TypeErrors naming the call and telling to pass the transformation."""
    with pytest.raises(TypeError, match=r"gradtx\.flax\..*tx must be a gradient transformation.*"
                                        r"got update_and_apply\.<locals>\.step: .*pass the transformation tx"):
        make(gradtx.update_and_apply(gradtx.adam(0.01)))
    with pytest.raises(TypeError, match=r"tx must be a gradient transformation \(with init and update\), got float$"):
        make(0.01)
    with pytest.raises(AttributeError, match="no attribute 'init'"):  # what gradtx.flax fixes
        nnx.Optimizer(NnxMLP(nnx.Rngs(0)), gradtx.update_and_apply(gradtx.adam(0.01)), wrt=nnx.Param)


@pytest.mark.parametrize("jitted, form", [(True, "one-loop form"), (False, "one-loop form")], ids=["jit", "eager"],
                         indirect=["form"])
def test_mismatched_gradients_name_the_call_and_leaf(jitted, form):
    """Reference: gradtx's tree-mismatch message, raised through the fast class as through
    the plain one: gradients of another shape name the optimizer, stage and leaf path."""
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    optimizer = Optimizer(model, gradtx.adam(0.01), wrt=nnx.Param)
    grads = nnx.state(nnx.Linear(3, 3, rngs=nnx.Rngs(0)))
    update = lambda m, o, g: o.update(m, g)  # noqa: E731
    with pytest.raises(gradtx.TreeMismatchError, match=r"^gradtx\.adam > .*leaf path \['kernel'\] have shape \(3, 3\), "
                                                       r"the params and state have \(2, 3\)"):
        (nnx.jit(update) if jitted else update)(model, optimizer, grads)


# ----------------------------------------------------------------------------- fused, sharded

_CHILD = r"""
import json, sys
import gradtx
gradtx.enable_cpu_multi_output_fusion()
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
sys.path.insert(0, "tests")
from test_flax_fast import OPTIMIZERS, NnxMLP, batches, cross_entropy
from benchmarks.steps import count_fusions
from gradtx.flax import Optimizer

assert gradtx.fuses_sibling_outputs() and jax.device_count() == 4
mesh = jax.make_mesh((4,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
SPECS = {"hidden": {"kernel": P(None, "x"), "bias": P("x")}, "out": {"kernel": P("x", None), "bias": P()},
         "temperature": P()}

def sharded_model():
    model = NnxMLP(nnx.Rngs(0))
    state = nnx.state(model)
    put = lambda spec, v: jax.device_put(v, NamedSharding(mesh, spec))
    nnx.replace_by_pure_dict(state, jax.tree.map(put, SPECS, nnx.to_pure_dict(state),
                                                 is_leaf=lambda x: isinstance(x, P)))
    nnx.update(model, state)
    return model

def same(a, b):
    return all(x.sharding.is_equivalent_to(y.sharding, x.ndim) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

def params_shaped_fields(state, params):
    is_field = lambda x: jax.tree.structure(x) == jax.tree.structure(params)
    return [x for x in jax.tree.leaves(state, is_leaf=is_field) if is_field(x)]

out = {}
for name in ("adam", "clip+adam"):
    tx = OPTIMIZERS[name]()
    # The optimizer part alone: through gradtx.flax.Optimizer, nnx.Optimizer, update_and_apply.
    fusions = {}
    for label, cls in (("fast", Optimizer), ("plain", nnx.Optimizer)):
        model = NnxMLP(nnx.Rngs(0))
        opt = cls(model, tx, wrt=nnx.Param)
        def update(m, o, g):  # the train step's use: the updates are not returned
            o.update(m, g)
        hlo = nnx.jit(update).lower(model, opt, nnx.state(model)).compile().as_text()
        fusions[label] = count_fusions(hlo)
    params = nnx.as_pure(nnx.state(NnxMLP(nnx.Rngs(0)), nnx.Param))
    fusions["direct"] = count_fusions(
        jax.jit(gradtx.update_and_apply(tx)).lower(params, tx.init(params), params).compile().as_text())
    # Sharded params: 20 steps, shardings before and after, numbers against nnx.Optimizer.
    xs, ys = batches(20)
    runs = {}
    for label, cls in (("fast", Optimizer), ("plain", nnx.Optimizer)):
        model = sharded_model()
        opt = cls(model, tx, wrt=nnx.Param)
        params_before = nnx.as_pure(nnx.state(model))
        step = nnx.jit(lambda m, o, x, y: o.update(m, nnx.grad(lambda m: cross_entropy(m(x), y))(m)))
        trace = []
        for x, y in zip(xs, ys):
            step(model, opt, x, y)
            trace.append(nnx.as_pure(nnx.state((model, opt))))
        params = nnx.as_pure(nnx.state(model))
        fields = params_shaped_fields(nnx.as_pure(opt.opt_state), params)
        runs[label] = {"params_kept": same(params_before, params), "steps_kept": same(trace[0], trace[-1]),
                       "fields": len(fields), "fields_like_params": all(same(f, params) for f in fields),
                       "sharded": any("x" in str(v.sharding.spec) for v in jax.tree.leaves(params)),
                       "first": trace[0], "final": trace[-1]}
    fast, plain = runs["fast"], runs["plain"]
    ulps = [max(float(np.max(np.abs(np.float64(a) - b)) / np.spacing(np.float32(np.abs(b).max())))
                for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)) if a.dtype == np.float32)
            for x, y in zip((fast["first"], fast["final"]), (plain.pop("first"), plain["final"]))]
    del fast["first"]
    out[name] = {"fusions": fusions, "ulps": ulps, "same_as_plain": same(fast.pop("final"), plain.pop("final")),
                 "fast": fast, "plain": plain}
print(json.dumps(out))
"""
N_ARRAY_LEAVES = 4  # NnxMLP: two kernels, two biases (and a 0-d temperature, not counted)


@pytest.fixture(scope="module")
def with_fusion_on_4_devices():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["adam", "clip+adam"])
def test_one_loop_per_leaf_and_shardings_kept(name, with_fusion_on_4_devices):
    """References: ``jax.jit(update_and_apply(tx))`` on the same params (array fusions
    counted in the compiled HLO: one per array leaf); the input shardings (every params
    leaf before and after 20 sharded steps, every state leaf after the first and the
    20th, each params-shaped state field against its params, with
    ``Sharding.is_equivalent_to``); nnx.Optimizer on the same sharded model (the same
    shardings; the numbers within one ulp after one step, float32 rtol 1e-5 after 20)."""
    got = with_fusion_on_4_devices[name]
    fusions = got["fusions"]
    assert fusions["fast"] == fusions["direct"]
    if name != "clip+adam":  # whose loops also reduce each leaf to its norm
        assert fusions["fast"] == N_ARRAY_LEAVES
    assert fusions["plain"] > fusions["fast"]
    assert got["fast"] == {**got["plain"], "fields": got["fast"]["fields"]}
    assert got["fast"] == {"params_kept": True, "steps_kept": True, "fields": got["fast"]["fields"],
                           "fields_like_params": True, "sharded": True}
    assert got["fast"]["fields"] >= 1 and got["same_as_plain"]
    first, after_20 = got["ulps"]
    assert first <= ULPS_PER_STEP
    # XLA's real loops contract FMAs on their own and the model feeds each difference
    # back: float32 rtol 1e-5 of the leaf's largest magnitude (measured: 3 ulps; Nesterov 26)
    assert after_20 <= 1e-5 / np.finfo(np.float32).eps
