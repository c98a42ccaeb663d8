"""Wrappers around a whole optimizer (gradtx/wrappers.py).

References, by test:
- optax 0.2.8's wrapper of the same call (``inject_hyperparams``, ``MultiSteps``,
  ``apply_every``, ``apply_if_finite``, ``conditionally_transform`` / ``_mask``,
  ``flatten``, ``skip_not_finite`` / ``skip_large_updates``) with optax's inner optimizers
  on its side and gradtx's on ours: float64, 100 steps under one ``lax.scan``, params and
  every state field by name at rtol 1e-10;
- gradtx's unwrapped optimizer, bit for bit: ``inject_hyperparams(adam)(...)`` is
  ``adam(...)`` (optax #1532, #583), with a number and with a schedule as learning rate;
- the inner optimizer on the mean of each ``k`` gradients (``MultiSteps``, float64, 1e-12);
  the bytes of the state's leaves and of the compiled step's temporaries (optax #472, #528);
- a Python trace counter (no recompilation when a hyperparameter changes);
- closed-form sequences: ``apply_if_finite`` after it gives up (optax PR #1746, open),
  float32 ``1e-3`` kept exactly for bfloat16 params (optax #1414).
Negative control: ``MultiSteps`` summing where it should average fails the mean reference.
Errors: each message exactly (the construction ones are rows of the registry, run by
``tests/test_errors.py``; those of the injected call and of ``update`` are here).
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, named_fields, random_grads, random_tree

import gradtx

N_STEPS = 100
RTOL = 1e-10
SCHEDULE = gradtx.registry.parity_schedule
NAN_STEPS = (10, 11, 40, 70, 71)  # isolated runs of at most two non-finite gradients


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@functools.cache
def inputs(dtype_name: str = "float64", nan_steps: tuple = ()) -> tuple[Any, Any]:
    """The small params tree and 100 gradient trees stacked on a leading axis (NaN in leaf
    ``w`` at ``nan_steps``)."""
    dtype = jnp.dtype(dtype_name)
    grads = random_grads(1, N_STEPS, dtype, small=True)
    for t in nan_steps:
        grads[t] = {**grads[t], "w": grads[t]["w"].at[0, 0].set(jnp.nan)}
    return random_tree(0, dtype, small=True), jax.tree.map(lambda *xs: jnp.stack(xs), *grads)


def run(tx, params, grads, apply=gradtx.apply_updates) -> tuple[Any, Any, Any]:
    """``tx`` over the stacked ``grads`` in one jitted ``lax.scan``: (params, state, updates of every step)."""

    @jax.jit
    def scan(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (apply(p, u), s), u

        (p, s), us = jax.lax.scan(body, (params, tx.init(params)), grads)
        return p, s, us

    return scan(params, grads)


def run_both(gx, ox, nan_steps: tuple = ()) -> tuple[tuple, tuple]:
    params, grads = inputs("float64", nan_steps)
    return run(gx, params, grads), run(ox, params, grads, optax.apply_updates)


def _is_exact(x) -> bool:
    return not jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)


def _close(a, b, rtol: float, what: str) -> None:
    if all(_is_exact(x) for x in jax.tree.leaves(b)):
        chex.assert_trees_all_equal(a, b, custom_message=what)
    else:
        assert_trees_close(a, b, rtol, what=what)


def _agrees(a, b, rtol: float) -> bool:
    try:
        _close(a, b, rtol, "")
    except AssertionError:
        return False
    return True


def assert_same_fields(gx_state, ox_state, rtol: float = RTOL, absent: dict | None = None) -> list[str]:
    """Every field optax's (nested) state has, by name, equals gradtx's (but those in
    ``absent``, each with its reason). A name optax keeps more often than gradtx (a count per
    nested state) must equal one of gradtx's values under it. Returns the names compared."""
    gx, ox = named_fields(gx_state), named_fields(ox_state)
    for name in sorted(ox):
        if name in (absent or {}):
            continue
        assert name in gx, f"optax's state has field {name!r}, gradtx's {sorted(gx)} has not"
        if len(gx[name]) == len(ox[name]):
            for j, (a, b) in enumerate(zip(gx[name], ox[name])):
                _close(a, b, rtol, f"state field {name} #{j}")
            continue
        for j, b in enumerate(ox[name]):
            assert any(_agrees(a, b, rtol) for a in gx[name]), (
                f"state field {name} (optax #{j}) equals none of gradtx's"
            )
    return sorted(set(ox) - set(absent or {}))


def assert_parity(got, want, *, absent: dict | None = None) -> None:
    assert_trees_close(got[0], want[0], RTOL, what="params")
    assert_trees_close(got[2], want[2], RTOL, what="updates of every step")
    assert_same_fields(got[1], want[1], absent=absent)


def bit_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def ndim_above_one(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# --- inject_hyperparams ----------------------------------------------------------------


def test_inject_keeps_float32_hyperparams_for_bfloat16_params_optax_1414():
    """Reference: float32(1e-3). With bfloat16 params gradtx stores the learning rate as
    float32(1e-3) exactly (optax 0.2.8 stores bfloat16(1e-3) = 0.000999451); an explicit
    ``hyperparam_dtype`` is kept; a jitted step keeps every state dtype."""
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3)
    state = tx.init(params)
    lr = state.hyperparams["learning_rate"]
    assert lr.dtype == jnp.float32 and lr == np.float32(1e-3)
    theirs = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3).init(params).hyperparams["learning_rate"]
    assert theirs.dtype == jnp.bfloat16 and np.float32(theirs) != np.float32(1e-3)
    f16 = gradtx.inject_hyperparams(gradtx.adam, hyperparam_dtype=jnp.float16)(learning_rate=1e-3).init(params)
    assert f16.hyperparams["learning_rate"].dtype == jnp.float16

    updates, new = jax.jit(tx.update)(params, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, state)
    assert new.hyperparams["learning_rate"] == np.float32(1e-3)


BIT_FOR_BIT = {
    "adam-constant": (gradtx.adam, dict(learning_rate=1e-3)),
    "adam-schedule": (gradtx.adam, dict(learning_rate=SCHEDULE, b1=0.8)),
    # a function argument (the mask) is passed as it is, without static_args
    "adamw-mask": (gradtx.adamw, dict(learning_rate=SCHEDULE, weight_decay=0.1, mask=ndim_above_one)),
}


@pytest.mark.parametrize("factory, kwargs", BIT_FOR_BIT.values(), ids=BIT_FOR_BIT)
def test_inject_is_the_unwrapped_optimizer_bit_for_bit_optax_1532_583(factory, kwargs, x64):
    """Reference: gradtx's unwrapped optimizer with the same arguments, float64, 100 steps:
    params, every step's updates and the inner state equal to the bit."""
    params, grads = inputs()
    plain = run(factory(**kwargs), params, grads)
    injected = run(gradtx.inject_hyperparams(factory)(**kwargs), params, grads)
    assert bit_equal(injected[0], plain[0]) and bit_equal(injected[2], plain[2])
    assert bit_equal(injected[1].inner_state, plain[1])
    assert type(injected[1]).__name__ == "InjectHyperparamsState"
    assert injected[1]._fields == ("count", "hyperparams", "inner_state")
    if callable(kwargs["learning_rate"]):  # the value used at the last step (count 99)
        np.testing.assert_allclose(injected[1].hyperparams["learning_rate"], SCHEDULE(N_STEPS - 1), rtol=1e-15)


@pytest.mark.parametrize("which", ["inject_hyperparams", "inject_stateful_hyperparams"])
def test_inject_matches_optax(which, x64):
    """Reference: ``optax.inject_hyperparams(optax.adam)`` (0.2.8) with a scheduled learning
    rate and ``b1=0.8``: params, updates and every field (``hyperparams`` included). gradtx's
    ``inject_hyperparams`` keeps no ``hyperparams_states`` (its schedules read the record's
    count); ``inject_stateful_hyperparams`` keeps optax's whole state."""
    kwargs = dict(learning_rate=SCHEDULE, b1=0.8)
    got, want = run_both(getattr(gradtx, which)(gradtx.adam)(**kwargs), optax.inject_hyperparams(optax.adam)(**kwargs))
    absent = (
        {"hyperparams_states": "gradtx's schedules read the record's count"} if which == "inject_hyperparams" else {}
    )
    assert_parity(got, want, absent=absent)
    if which == "inject_stateful_hyperparams":
        assert int(got[1].hyperparams_states["learning_rate"].count) == N_STEPS


def test_changing_an_injected_hyperparameter_does_not_retrace():
    """Reference: a Python counter of the jitted step's traces (1 for 3 learning rates, set
    in place and through ``_replace``), and ``-lr * g`` for each step's update."""
    traces = []
    tx = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)

    @jax.jit
    def step(state, grads):
        traces.append(1)
        return tx.update(grads, state)

    grads = jnp.ones(3)
    state = tx.init(grads)
    updates, state = step(state, grads)
    state.hyperparams["learning_rate"] = jnp.asarray(0.25, jnp.float32)
    second, state = step(state, grads)
    state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(0.5, jnp.float32)})
    third, state = step(state, grads)
    assert len(traces) == 1
    np.testing.assert_array_equal(np.stack([updates, second, third])[:, 0], np.float32([-0.1, -0.25, -0.5]))


def test_building_the_optimizer_inside_jit_from_a_traced_learning_rate_does_not_retrace():
    """The pattern ``inject_hyperparams``' docstring documents. Reference: a trace counter
    (1 for 3 learning rates) and Adam's first step in closed form, ``p - lr * g / (|g| +
    eps)``, for each value (float32, rtol 1e-5: float32 rounds ``1 - 0.999``)."""
    traces = []

    @jax.jit
    def step(params, state, grads, lr):
        traces.append(1)
        tx = gradtx.adam(lr)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    params, grads = random_tree(0, small=True), random_grads(1, 1, small=True)[0]
    state = gradtx.adam(0.0).init(params)
    for lr in (1e-3, 2e-3, 5e-2):
        got, _ = step(params, state, grads, lr)
        # Adam's first step in closed form: m_hat = g, v_hat = g^2
        want = jax.tree.map(functools.partial(lambda p, g, lr: p - lr * g / (np.abs(g) + 1e-8), lr=lr), params, grads)
        assert_trees_close(got, want, 1e-5)
    assert len(traces) == 1


_STATEFUL = gradtx.WrappedSchedule(SCHEDULE)
INJECT_ERRORS = {
    "unknown-hyperparameter": (
        lambda: gradtx.inject_hyperparams(gradtx.adam)(lr=1e-3),
        TypeError,
        (
            "gradtx.inject_hyperparams(adam)(lr=0.001): adam has no argument 'lr' (its arguments: learning_rate, "
            "b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype)"
        ),
    ),
    "missing-argument": (
        lambda: gradtx.inject_hyperparams(gradtx.adam)(b1=0.9),
        TypeError,
        "gradtx.inject_hyperparams(adam): missing a required argument: 'learning_rate'",
    ),
    "bad-value": (
        lambda: gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3, b1=1.5),
        ValueError,
        "gradtx.adam(b1=1.5): b1 must be in [0, 1)",
    ),
    "stateful-schedule": (
        lambda: gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=_STATEFUL),
        TypeError,
        (
            f"gradtx.inject_hyperparams(sgd)(learning_rate={_STATEFUL!r}): learning_rate is a stateful schedule "
            "(init, update): use gradtx.inject_stateful_hyperparams, whose state keeps the schedules' states"
        ),
    ),
    "static-args": (
        lambda: gradtx.inject_hyperparams(gradtx.sgd, static_args=("momentum", "lr")),
        ValueError,
        (
            "gradtx.inject_hyperparams(static_args=('momentum', 'lr')): static_args must name arguments of sgd; "
            "it has no 'lr' (its arguments: learning_rate, momentum, nesterov, accumulator_dtype)"
        ),
    ),
}


@pytest.mark.parametrize("make, error, message", INJECT_ERRORS.values(), ids=INJECT_ERRORS)
def test_inject_bad_input_names_the_argument(make, error, message):
    """Reference: the messages themselves."""
    with pytest.raises(error) as info:
        make()
    assert str(info.value) == message


def test_inject_refuses_a_state_whose_hyperparameter_keys_changed():
    tx = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
    state = tx.init(jnp.zeros(2))
    state.hyperparams["lr"] = 0.5
    with pytest.raises(gradtx.UpdateError) as info:
        tx.update(jnp.ones(2), state)
    assert str(info.value) == (
        "gradtx.inject_hyperparams: state.hyperparams has the keys ['learning_rate', 'lr'], not the injected "
        "hyperparameters ['learning_rate'] (change values, not keys)"
    )


# --- gradient accumulation --------------------------------------------------------------


def test_multi_steps_keeps_one_accumulator_and_nothing_else_like_the_params_optax_472_528():
    """Reference: the bytes of the leaves. gradtx's state is the params' bytes (the
    accumulator, float32 params) plus the inner optimizer's state plus two int32 counters;
    and its compiled step needs at least one params-sized temporary less than optax's
    ``MultiSteps`` (which runs the inner update at every micro-step and selects)."""
    params = {"w": jnp.zeros((300, 200)), "b": jnp.zeros(200)}
    nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    ours = gradtx.MultiSteps(gradtx.adam(1e-3), 4)
    state = ours.init(params)
    assert nbytes(state) == nbytes(params) + nbytes(gradtx.adam(1e-3).init(params)) + 2 * 4
    assert jax.tree.map(lambda x: x.dtype, state.acc_grads) == jax.tree.map(lambda x: x.dtype, params)

    def temp_bytes(tx, state, apply):
        def step(p, s, g):
            u, s = tx.update(g, s, p)
            return apply(p, u), s

        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    theirs = optax.MultiSteps(optax.adam(1e-3), 4)
    ours_temp = temp_bytes(ours, state, gradtx.apply_updates)
    theirs_temp = temp_bytes(theirs, theirs.init(params), optax.apply_updates)
    assert theirs_temp - ours_temp >= nbytes(params) - 1024, (ours_temp, theirs_temp)  # 1 KiB: scalars


K = 4


MEAN_INNER = dict(learning_rate=0.05, momentum=0.9)  # heavy-ball sgd: the scale of the gradient shows


@functools.cache
def inner_on_the_means() -> tuple[Any, Any]:
    """The reference (float64): ``sgd(momentum)`` stepped once per ``K`` gradients, on their mean."""
    params, grads = inputs()
    means = jax.tree.map(lambda g: g.reshape(N_STEPS // K, K, *g.shape[1:]).mean(axis=1), grads)
    p, s, _ = run(gradtx.sgd(**MEAN_INNER), params, means)
    return p, s


@pytest.mark.parametrize("use_grad_mean", [True, False], ids=["mean", "sum-mutant"])
def test_multi_steps_is_one_step_on_the_mean_gradient(use_grad_mean, x64):
    """Reference: heavy-ball ``sgd`` on the mean of each 4 gradients (25 steps), float64,
    rtol 1e-12: params and the inner ``trace``; the micro-steps return zeros,
    ``has_updated`` is True only at each 4th. Negative control: summing instead of
    averaging fails at rtol 1e-5."""
    params, grads = inputs()
    ms = gradtx.MultiSteps(gradtx.sgd(**MEAN_INNER), K, use_grad_mean=use_grad_mean)
    p, state, updates = run(ms.gradient_transformation(), params, grads)
    want_p, want_s = inner_on_the_means()
    if not use_grad_mean:
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_trees_close(p, want_p, 1e-5)
        return
    assert_trees_close(p, want_p, 1e-12, what="params")
    assert_trees_close(state.inner_opt_state.trace, want_s.trace, 1e-12, what="trace")
    assert int(state.gradient_step) == N_STEPS // K and int(state.mini_step) == 0 and bool(ms.has_updated(state))
    emitted = np.array([any(np.any(np.asarray(u)[t] != 0) for u in jax.tree.leaves(updates)) for t in range(N_STEPS)])
    np.testing.assert_array_equal(emitted, np.arange(N_STEPS) % K == K - 1)
    assert type(state).__name__ == "MultiStepsState" and ms.inner_opt is not None


def test_multi_steps_keeps_complex_gradients():
    """Reference: the mean by hand, ``(g1 + g2) / 2``, for complex64 gradients: gradtx's
    accumulator is complex64 (the params' dtype, at least float32); optax's default float32
    accumulator drops the imaginary part of the first gradient."""
    g1, g2 = jnp.array([1 + 2j, 3 - 1j], jnp.complex64), jnp.array([1 - 2j, 1 + 1j], jnp.complex64)
    ours, theirs = gradtx.MultiSteps(gradtx.sgd(1.0), 2), optax.MultiSteps(optax.sgd(1.0), 2)
    emitted = []
    for ms in (ours, theirs):
        update = jax.jit(ms.update)
        _, state = update(g1, ms.init(jnp.zeros(2, jnp.complex64)))
        emitted.append(update(g2, state)[0])
    np.testing.assert_allclose(emitted[0], -(g1 + g2) / 2, rtol=1e-7)
    assert not np.allclose(emitted[1], -(g1 + g2) / 2)


def every_k(gradient_step):
    """A growing number of micro-steps: 1, 1, 2, 2, 3, 3, ..."""
    return 1 + gradient_step // 2


MULTI_STEPS = {
    "k=3": (dict(every_k_schedule=3), ()),
    "schedule-sum": (dict(every_k_schedule=every_k, use_grad_mean=False), ()),
    "skip-not-finite": (dict(every_k_schedule=2, should_skip_update_fn=gradtx.skip_not_finite), NAN_STEPS),
}


@pytest.mark.parametrize("kwargs, nan_steps", MULTI_STEPS.values(), ids=MULTI_STEPS)
def test_multi_steps_matches_optax(kwargs, nan_steps, x64):
    """Reference: ``optax.MultiSteps(optax.adam(0.05), ..., accumulator_dtype=float64)``:
    params, every step's updates and every state field (``skip_state`` included)."""
    optax_kwargs = {**kwargs, "accumulator_dtype": jnp.float64}
    if "should_skip_update_fn" in kwargs:
        optax_kwargs["should_skip_update_fn"] = optax.skip_not_finite
    got, want = run_both(
        gradtx.MultiSteps(gradtx.adam(0.05), **kwargs).gradient_transformation(),
        optax.MultiSteps(optax.adam(0.05), **optax_kwargs).gradient_transformation(),
        nan_steps,
    )
    assert_parity(got, want)
    assert int(got[1].gradient_step) > 10


def test_multi_steps_refuses_a_skip_function_that_returns_no_bool():
    tx = gradtx.multi_steps(gradtx.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(2), ()))
    with pytest.raises(gradtx.UpdateError) as info:
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    assert str(info.value) == (
        "gradtx.multi_steps: should_skip_update_fn must return a bool scalar first, got an array of dtype "
        "float32 and shape (2,)"
    )


def test_apply_every_matches_optax(x64):
    """Reference: ``optax.apply_every(3)`` after ``adam`` (both libraries' chains): params,
    updates, ``grad_acc`` and the inner fields; gradtx's ``count`` is the chain's one step
    count, of which ``count % k`` is optax's ``count``."""
    got, want = run_both(
        gradtx.chain(gradtx.adam(0.05), gradtx.apply_every(3)), optax.chain(optax.adam(0.05), optax.apply_every(3))
    )
    assert got[1]._fields == ("count", "mu", "nu", "grad_acc")
    assert_parity(got, want, absent={"count": "compared below"})
    assert int(got[1].count) == N_STEPS and int(got[1].count) % 3 == int(want[1][-1].count)


# --- skipping and conditions -------------------------------------------------------------


def test_apply_if_finite_matches_optax_with_isolated_non_finite_gradients(x64):
    """Reference: ``optax.apply_if_finite(optax.adam(0.05), 2)`` with NaN gradients at steps
    10, 11, 40, 70, 71 (never more than 2 in a row: optax's counter is right there):
    params, updates and every field."""
    got, want = run_both(
        gradtx.apply_if_finite(gradtx.adam(0.05), 2), optax.apply_if_finite(optax.adam(0.05), 2), NAN_STEPS
    )
    assert_parity(got, want)
    assert int(got[1].total_notfinite) == len(NAN_STEPS) and int(got[1].inner_state.count) == N_STEPS - 5


def test_apply_if_finite_restarts_its_count_when_it_gives_up_optax_pr_1746():
    """Reference: the rule by hand. With ``max_consecutive_errors=2`` and 7 NaN gradients
    in a row, gradtx rejects 2, applies the 3rd (gives up) and restarts: rejects 2, applies
    the 6th, rejects the 7th. optax 0.2.8 keeps counting after it gives up and applies the
    4th to 7th as well (PR #1746, open)."""
    nans = [jnp.full(1, jnp.nan)] * 7

    def trace(tx):
        state, applied, counts, update = tx.init(jnp.zeros(1)), [], [], jax.jit(tx.update)
        for g in nans:
            updates, state = update(g, state)
            applied.append(bool(jnp.isnan(updates[0])))
            counts.append(int(state.notfinite_count))
        return applied, counts

    assert trace(gradtx.apply_if_finite(gradtx.sgd(0.1), 2)) == (
        [False, False, True, False, False, True, False],
        [1, 2, 0, 1, 2, 0, 1],
    )
    assert trace(optax.apply_if_finite(optax.sgd(0.1), 2)) == (
        [False, False, True, True, True, True, True],
        [1, 2, 3, 4, 5, 6, 7],
    )


def every_third_skipped(step):
    return step % 3 != 2


@pytest.mark.parametrize("name", ["conditionally_transform", "conditionally_mask"])
def test_conditionally_matches_optax(name, x64):
    """Reference: optax's wrapper of the same name around ``optax.adam(0.05)``, the inner
    transformation skipped every third step: params, updates and every field."""
    got, want = run_both(
        getattr(gradtx, name)(gradtx.adam(0.05), every_third_skipped),
        getattr(optax, name)(optax.adam(0.05), every_third_skipped),
    )
    assert_parity(got, want)
    assert got[1]._fields == type(want[1])._fields and int(got[1].inner_state.count) == 67


@pytest.mark.parametrize("name", ["conditionally_transform", "conditionally_mask"])
def test_conditionally_forwards_extra_args(name):
    """Reference: optax's wrapper with ``forward_extra_args=True``, a condition on the loss
    passed as ``value``, 6 steps: the updates equal."""
    cond = lambda step, value: value > 0  # noqa: E731
    gx = getattr(gradtx, name)(gradtx.sgd(0.1), cond, forward_extra_args=True)
    ox = getattr(optax, name)(optax.sgd(0.1), cond, forward_extra_args=True)
    gs, os_ = gx.init(jnp.zeros(2)), ox.init(jnp.zeros(2))
    g_update, o_update = jax.jit(gx.update), jax.jit(ox.update)
    for value in [1.0, -1.0, 2.0, -3.0, 0.5, 0.0]:
        gu, gs = g_update(jnp.ones(2), gs, value=jnp.float32(value))
        ou, os_ = o_update(jnp.ones(2), os_, value=jnp.float32(value))
        np.testing.assert_array_equal(gu, ou)


def test_flatten_matches_optax(x64):
    """Reference: ``optax.flatten(optax.adam(0.05))``: params, updates and the flat ``mu``, ``nu``."""
    got, want = run_both(gradtx.flatten(gradtx.adam(0.05)), optax.flatten(optax.adam(0.05)))
    assert_parity(got, want)
    assert got[1].inner_state.mu.shape == (sum(np.size(p) for p in jax.tree.leaves(inputs()[0])),)


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
def test_skip_functions_match_optax(with_nan):
    """Reference: ``optax.skip_not_finite`` and ``optax.skip_large_updates`` on the same tree."""
    tree = random_grads(3, 1, small=True)[0]
    if with_nan:
        tree = {**tree, "w": tree["w"].at[1, 1].set(jnp.inf)}
    for ours, theirs in [
        (gradtx.skip_not_finite, optax.skip_not_finite),
        (
            functools.partial(gradtx.skip_large_updates, max_squared_norm=3.0),
            functools.partial(optax.skip_large_updates, max_squared_norm=3.0),
        ),
    ]:
        chex.assert_trees_all_close(ours(tree, 0, None), theirs(tree, 0, None), rtol=1e-6)


# --- inside a chain -------------------------------------------------------------------------


def test_wrappers_merge_into_a_chain_and_renamed_resolves_two_of_a_kind():
    """Reference: the record's fields, the collision message, and the two wrappers applied
    one after the other by hand."""
    chained = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.apply_if_finite(gradtx.adam(0.1), 2))
    assert chained.init(jnp.zeros(2))._fields == ("notfinite_count", "last_finite", "total_notfinite", "inner_state")
    first, second = gradtx.apply_if_finite(gradtx.sgd(0.5), 1), gradtx.apply_if_finite(gradtx.adam(0.1), 2)
    with pytest.raises(ValueError, match=r"two stages keep a state field named 'notfinite_count' .*gradtx\.renamed"):
        gradtx.chain(first, second)
    names = dict(notfinite_count="nf_2", last_finite="last_2", total_notfinite="total_2", inner_state="inner_2")
    both = gradtx.chain(first, gradtx.renamed(second, **names))
    state = both.init(jnp.zeros(2))
    assert state._fields == ("notfinite_count", "last_finite", "total_notfinite", "inner_state", *names.values())
    s1, s2 = first.init(jnp.zeros(2)), second.init(jnp.zeros(2))
    update_both, update_first, update_second = (jax.jit(t.update) for t in (both, first, second))
    for g in [jnp.ones(2), jnp.full(2, jnp.nan), jnp.arange(2.0)]:
        got, state = update_both(g, state)
        u, s1 = update_first(g, s1)
        want, s2 = update_second(u, s2)
        np.testing.assert_array_equal(got, want)
    assert bit_equal(state.inner_2, s2.inner_state)
