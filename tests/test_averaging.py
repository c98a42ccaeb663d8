"""Averaging, lookahead and monitoring (gradtx/averaging.py).

References, by test (float64 throughout, 100 steps unless said):

- ``ema``, ``lookahead``, ``incremental_update``, ``periodic_update``, ``snapshot``,
  ``monitor``, ``measure_with_ema``: optax 0.2.8's functions of the same name and
  arguments, params/updates and every state field at rtol 1e-10 (lookahead with a gradtx
  fast optimizer against optax's with optax's, and with an optax fast optimizer inside
  gradtx's);
- ``lookahead`` also against Zhang et al. 2019, Algorithm 1, written as its two nested
  loops (``paper_lookahead``), reset of the fast optimizer at the start of each inner
  loop, i.e. at the synchronised params. optax 0.2.8 departs from it with
  ``reset_state=True``: it initialises at the params before the last fast step (shown
  with schedule-free SGD, whose state starts from the params) and mixes states as
  ``(1 - sync) * kept + sync * fresh`` (a state holding ``inf`` becomes NaN);
- ``averaged_params``: ``torch.optim.swa_utils.AveragedModel`` of torch 2.13 (the default
  SWA average, and EMA through ``get_ema_multi_avg_fn`` and ``get_ema_avg_fn``), 50
  updates, rtol 1e-12; the SWA average also against the plain mean of the params passed
  (Izmailov et al. 2018).

Negative controls: a wrong variant of each formula fails the same tolerance (ema without
debiasing, lookahead with the wrong period or weight, the swapped step size, the period
off by one, SWA with a wrong count, optax's zero-start EMA for torch's).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from conftest import assert_trees_close, compare_states, named_fields, random_grads, random_tree

import gradtx

N_STEPS = 100
RTOL = 1e-10


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64, "float64 leaked out of the test"


def stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def inputs(n_steps: int = N_STEPS, seed: int = 1) -> tuple[Any, Any]:
    """The small params tree and ``n_steps`` gradient trees stacked on a leading axis (float64)."""
    return random_tree(0, jnp.float64, small=True), stack(random_grads(seed, n_steps, jnp.float64, small=True))


def values(n_steps: int = N_STEPS) -> jax.Array:
    """Loss values for the optimizers that take ``value=``: noisy, slowly decreasing."""
    rng = np.random.default_rng(3)
    return jnp.asarray(np.linspace(2.0, 1.0, n_steps) + 0.3 * rng.normal(size=n_steps))


CURVATURE = 0.5


def gradient(noise, params):
    """The gradient at ``params`` of ``CURVATURE / 2 |params|^2 + <noise, params>``: it depends on
    where it is taken (lookahead with gradients independent of the params would be linear in
    them, and its period would hardly matter)."""
    return jax.tree.map(lambda g, p: g + CURVATURE * p, noise, params)


def fast_of(params):
    """Where the gradients are taken: the fast params of ``LookaheadParams``, else the params."""
    return params.fast if hasattr(params, "fast") else params


class Run(NamedTuple):
    params: Any
    updates: Any  # the last step's
    state: Any


def scan_run(opt, params, grads, apply=gradtx.apply_updates, *, init_params=None, extra=None) -> Run:
    """``opt`` over the stacked gradient noise ``grads`` in one compiled ``jax.lax.scan`` (the
    gradient taken at the (fast) params); ``extra`` a dict of stacked keyword arguments of
    ``update`` (one value per step)."""
    extra = extra or {}

    def body(carry, xs):
        params, state = carry
        g, kw = xs
        updates, state = opt.update(gradient(g, fast_of(params)), state, params, **kw)
        return (apply(params, updates), state), updates

    state = opt.init(params if init_params is None else init_params)
    (params, state), updates = jax.jit(lambda c, xs: jax.lax.scan(body, c, xs))((params, state), (grads, extra))
    return Run(params, jax.tree.map(lambda u: u[-1], updates), state)


def loop_run(opt, params, grads, apply=gradtx.apply_updates) -> Run:
    """The same with a jitted step in a Python loop (optax's monitor state cannot be a scan carry)."""

    @jax.jit
    def step(params, state, t):
        updates, state = opt.update(gradient(jax.tree.map(lambda g: g[t], grads), params), state, params)
        return apply(params, updates), updates, state

    state, updates = opt.init(params), None
    for t in range(jax.tree.leaves(grads)[0].shape[0]):
        params, updates, state = step(params, state, t)
    return Run(params, updates, state)


def assert_differs(got, want, rtol: float, what: str) -> None:
    """Negative control: ``got`` differs from ``want`` beyond ``rtol``."""
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got, want, rtol, what=what)


def square_norm(tree) -> jax.Array:
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


# --- ema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [dict(decay=0.9), dict(decay=0.7, debias=False), dict(decay=0.9, accumulator_dtype=jnp.float32)]
)
def test_ema_matches_optax(kwargs):
    params, grads = inputs()
    got, want = scan_run(gradtx.ema(**kwargs), params, grads), optax_ema_run(**kwargs)
    assert_trees_close(got.params, want.params, RTOL, what="params")
    assert_trees_close(got.updates, want.updates, RTOL, what="updates")
    assert compare_states(got.state, want.state, RTOL) == ["count", "ema"]
    assert type(got.state).__name__ == "EmaState"


@functools.cache
def optax_ema_run(**kwargs) -> Run:
    return scan_run(optax.ema(**kwargs), *inputs(), optax.apply_updates)


def test_ema_without_debiasing_fails_against_optax():
    params, grads = inputs()
    got, want = scan_run(gradtx.ema(0.9, debias=False), params, grads), optax_ema_run(decay=0.9)
    assert_differs(got.params, want.params, RTOL, "params")


# --- lookahead: optax ----------------------------------------------------------------------


class LookaheadCase(NamedTuple):
    id: str
    fast: Callable[[], Any]  # the gradtx lookahead's fast optimizer
    optax_fast: Callable[[], Any]
    sync_period: int
    slow_step_size: float
    reset_state: bool


LOOKAHEAD_CASES = [
    LookaheadCase("adam", lambda: gradtx.adam(1e-2), lambda: optax.adam(1e-2), 5, 0.5, False),
    LookaheadCase(
        "sgd-momentum-reset",
        lambda: gradtx.sgd(0.05, momentum=0.9),
        lambda: optax.sgd(0.05, momentum=0.9),
        3,
        0.8,
        True,
    ),
    LookaheadCase("optax-fast-reset", lambda: optax.adam(1e-2), lambda: optax.adam(1e-2), 4, 0.3, True),
]


def run_lookahead(lookahead, fast, case: LookaheadCase, apply, params_type, **overrides) -> Run:
    kw = dict(sync_period=case.sync_period, slow_step_size=case.slow_step_size, reset_state=case.reset_state)
    params, grads = inputs()
    return scan_run(lookahead(fast, **{**kw, **overrides}), params_type.init_synced(params), grads, apply)


def run_gradtx_lookahead(case: LookaheadCase, **overrides) -> Run:
    return run_lookahead(gradtx.lookahead, case.fast(), case, gradtx.apply_updates, gradtx.LookaheadParams, **overrides)


@functools.cache
def run_optax_lookahead(case: LookaheadCase) -> Run:
    return run_lookahead(optax.lookahead, case.optax_fast(), case, optax.apply_updates, optax.LookaheadParams)


@pytest.mark.parametrize("case", LOOKAHEAD_CASES, ids=lambda c: c.id)
def test_lookahead_matches_optax(case):
    """Fast and slow params, the last updates, the fast optimizer's state field by field
    and ``steps_since_sync`` (optimizers whose state starts at zeros: optax's reset agrees)."""
    got, want = run_gradtx_lookahead(case), run_optax_lookahead(case)
    assert type(got.state).__name__ == "LookaheadState" and got.state._fields == want.state._fields
    assert_trees_close(tuple(got.params), tuple(want.params), RTOL, what="params (fast, slow)")
    assert_trees_close(tuple(got.updates), tuple(want.updates), RTOL, what="updates (fast, slow)")
    if isinstance(case.fast(), gradtx.Transformation):
        assert compare_states(got.state.fast_state, want.state.fast_state, RTOL)
    else:
        assert_trees_close(got.state.fast_state, want.state.fast_state, RTOL, what="fast_state")
    assert int(got.state.steps_since_sync) == int(want.state.steps_since_sync) == N_STEPS % case.sync_period


@pytest.mark.parametrize("wrong", [dict(sync_period=6), dict(slow_step_size=0.5 + 1e-3)], ids=lambda w: str(w))
def test_lookahead_wrong_period_or_weight_fails_against_optax(wrong):
    case = LOOKAHEAD_CASES[0]
    got, want = run_gradtx_lookahead(case, **wrong), run_optax_lookahead(case)
    assert_differs(got.params.slow, want.params.slow, RTOL, "slow params")


# --- lookahead: the paper ------------------------------------------------------------------


def paper_lookahead(fast_opt, params, grads, k: int, alpha: float, reset: bool, loss_values=None):
    """Zhang et al. 2019, Algorithm 1, as written: ``k`` fast steps from the slow weights
    ``phi``, then ``phi = phi + alpha (theta - phi)``, and the fast weights restart at
    ``phi``; with ``reset``, the fast optimizer is initialised there. Returns (theta, phi,
    fast optimizer state)."""

    @jax.jit
    def fast_step(theta, state, t):
        kw = {} if loss_values is None else {"value": loss_values[t]}
        updates, state = fast_opt.update(gradient(jax.tree.map(lambda g: g[t], grads), theta), state, theta, **kw)
        return gradtx.apply_updates(theta, updates), state

    slow_step = jax.jit(lambda phi, theta: jax.tree.map(lambda p, th: p + alpha * (th - p), phi, theta))
    phi = theta = params
    state = fast_opt.init(phi)
    for t in range(jax.tree.leaves(grads)[0].shape[0]):
        theta, state = fast_step(theta, state, t)
        if (t + 1) % k == 0:
            phi = slow_step(phi, theta)
            theta = phi
            if reset:
                state = fast_opt.init(phi)
    return theta, phi, state


class RunningMin(NamedTuple):
    smallest: Any


def running_min() -> optax.GradientTransformation:
    """``u -> u``, keeping the smallest update seen per element (starts at +inf: a state
    like ``reduce_on_plateau``'s ``best_value``). No extra arguments, so that optax's
    lookahead can run it."""
    return optax.GradientTransformation(
        lambda params: RunningMin(jax.tree.map(lambda p: jnp.full_like(p, jnp.inf), params)),
        lambda updates, state, params=None: (updates, RunningMin(jax.tree.map(jnp.minimum, state.smallest, updates))),
    )


K, ALPHA = 3, 0.6  # N_STEPS % K != 0: the runs end mid-way through an inner loop, fast and slow differ
PAPER_CASES = {
    "adam": (lambda: gradtx.adam(1e-2), False, False),
    # z starts at the params: the reset must start it at the synchronised params
    "schedule_free-reset": (lambda: optax.contrib.schedule_free_sgd(0.05, b1=0.8), True, False),
    # takes value=, and its best_value starts at +inf
    "reduce_on_plateau-reset": (
        lambda: optax.chain(optax.sgd(0.05), optax.contrib.reduce_on_plateau(patience=2, cooldown=1)),
        True,
        True,
    ),
}


@functools.cache
def paper_run(name: str):
    make, reset, with_value = PAPER_CASES[name]
    return paper_lookahead(make(), *inputs(), K, ALPHA, reset, values() if with_value else None)


@pytest.mark.parametrize("name", PAPER_CASES)
def test_lookahead_matches_the_paper(name):
    make, reset, with_value = PAPER_CASES[name]
    params, grads = inputs()
    got = scan_run(
        gradtx.lookahead(make(), K, ALPHA, reset_state=reset),
        gradtx.LookaheadParams.init_synced(params),
        grads,
        extra={"value": values()} if with_value else None,
    )
    theta, phi, state = paper_run(name)
    assert_trees_close(got.params.fast, theta, RTOL, what="fast")
    assert_trees_close(got.params.slow, phi, RTOL, what="slow")
    assert_trees_close(got.state.fast_state, state, RTOL, what="fast_state")


def eager_lookahead_state(lib, fast, params, grads, n_steps: int):
    """The fast optimizer's state after ``n_steps`` op-by-op steps of ``lib.lookahead(fast, K, ALPHA,
    reset_state=True)``."""
    opt = lib.lookahead(fast, K, ALPHA, reset_state=True)
    lp = lib.LookaheadParams.init_synced(params)
    state = opt.init(lp)
    for t in range(n_steps):
        noise = jax.tree.map(lambda g, t=t: g[t], grads)
        updates, state = opt.update(gradient(noise, lp.fast), state, lp)
        lp = lib.apply_updates(lp, updates)
    return state.fast_state


def test_optax_lookahead_reset_departs_from_the_paper():
    """optax 0.2.8's defects with ``reset_state=True``, against the paper's loop (which gradtx
    matches, above): schedule-free's ``z`` is reset at the params before the last fast step,
    not at the synchronised ones; and ``(1 - sync) * kept + sync * fresh`` makes a state
    holding ``inf`` NaN (op by op, in the vector leaves; under jit XLA rewrites the products)."""
    params, grads = inputs()
    fast = optax.contrib.schedule_free_sgd(0.05, b1=0.8)
    ox = scan_run(
        optax.lookahead(fast, K, ALPHA, True), optax.LookaheadParams.init_synced(params), grads, optax.apply_updates
    )
    assert_differs(ox.params.slow, paper_run("schedule_free-reset")[1], RTOL, "optax's slow params")

    fast = optax.chain(optax.sgd(0.05), running_min())
    n_steps = 2 * K + 1
    _, _, want = paper_lookahead(fast, params, jax.tree.map(lambda g: g[:n_steps], grads), K, ALPHA, True)
    ox_state = eager_lookahead_state(optax, fast, params, grads, n_steps)
    assert any(np.isnan(x).any() for x in jax.tree.leaves(ox_state[1].smallest))
    assert_trees_close(eager_lookahead_state(gradtx, fast, params, grads, n_steps), want, RTOL, what="gradtx")


def test_lookahead_update_needs_lookahead_params():
    opt = gradtx.lookahead(gradtx.sgd(0.1), 2, 0.5)
    params = random_tree(0, jnp.float64, small=True)
    state = opt.init(gradtx.LookaheadParams.init_synced(params))
    assert opt.init(params) == state  # init also takes the fast params alone, as optax's
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx.lookahead: update\(\) needs params=LookaheadParams\("):
        opt.update(params, state, params)
    # optax's LookaheadParams work too; the updates come back in the same type
    updates, _ = opt.update(params, state, optax.LookaheadParams.init_synced(params))
    assert isinstance(updates, optax.LookaheadParams)


# --- target-network rules ------------------------------------------------------------------


def param_sequence(n: int) -> Any:
    """``n`` params trees along a random walk, stacked."""
    params, grads = inputs(n, seed=4)
    return jax.tree.map(lambda p, g: p + 0.1 * jnp.cumsum(g, axis=0), params, grads)


def run_target(rule: Callable, sequence: Any) -> list[Any]:
    """The target after each step ``t`` of ``target = rule(params_t, target, t)``, from zeros."""

    def body(target, xs):
        t, params = xs
        target = rule(params, target, t)
        return target, target

    zero = jax.tree.map(lambda x: jnp.zeros_like(x[0]), sequence)
    return jax.jit(lambda s: jax.lax.scan(body, zero, (jnp.arange(N_STEPS), s))[1])(sequence)


TARGET_RULES = {
    "incremental_update": (
        lambda lib: lambda new, old, t: lib.incremental_update(new, old, step_size=0.05),
        lambda new, old, t: gradtx.incremental_update(new, old, step_size=0.95),  # the weights swapped
    ),
    "periodic_update": (
        lambda lib: lambda new, old, t: lib.periodic_update(new, old, t, update_period=7),
        lambda new, old, t: gradtx.periodic_update(new, old, t + 1, update_period=7),  # one step late
    ),
}


@pytest.mark.parametrize("name", TARGET_RULES)
def test_target_rules_match_optax(name):
    """Every step's target, and a wrong variant (negative control) fails."""
    rule, mutant = TARGET_RULES[name]
    sequence = param_sequence(N_STEPS)
    want = run_target(rule(optax), sequence)
    assert_trees_close(run_target(rule(gradtx), sequence), want, RTOL, what=name)
    assert_differs(run_target(mutant, sequence), want, RTOL, name)


# --- monitoring ----------------------------------------------------------------------------


def monitored(lib, debias: bool = True):
    """Momentum, a snapshot and a monitor (a function and two EMAs of measurements), a
    clip and a step: the same chain in either library."""
    return lib.chain(
        lib.trace(0.9),
        lib.snapshot("before_clip", square_norm),
        lib.monitor(
            {
                "norm": square_norm,
                "clipped": lib.measure_with_ema(lambda u: square_norm(u) > 4.0, decay=0.9),
                "smooth_norm": lib.measure_with_ema(square_norm, decay=0.8, debias=debias),
            }
        ),
        lib.clip_by_global_norm(2.0),
        lib.scale(-0.1),
    )


@functools.cache
def optax_monitored_run() -> Run:
    return loop_run(monitored(optax), *inputs(), optax.apply_updates)


def test_snapshot_and_monitor_match_optax():
    params, grads = inputs()
    got, want = loop_run(monitored(gradtx), params, grads), optax_monitored_run()
    assert_trees_close(got.params, want.params, RTOL, what="params")
    assert_trees_close(got.updates, want.updates, RTOL, what="updates")
    # the snapshot and the measures' states are compared by name below
    absent = ("measurement", "measurements", "count", "ema")
    assert compare_states(got.state, want.state, RTOL, absent=absent) == ["measurements", "trace"]
    assert_trees_close(got.state.before_clip, optax.tree.get(want.state, "before_clip"), RTOL, what="snapshot")
    for name in ("norm", "clipped", "smooth_norm"):  # optax.tree.get finds each by name in both
        assert_trees_close(optax.tree.get(got.state, name), optax.tree.get(want.state, name), RTOL, what=name)
    ox_states = optax.tree.get(want.state, "measure_states")
    for i, gx_state in enumerate(got.state.measure_states):
        if gx_state._fields:  # the EMAs: count and ema, by name
            assert compare_states(gx_state, ox_states[i], RTOL) == ["count", "ema"]


def test_measure_with_ema_without_debiasing_fails_against_optax():
    params, grads = inputs()
    got, want = loop_run(monitored(gradtx, debias=False), params, grads), optax_monitored_run()
    assert_differs(got.state.measurements["smooth_norm"], want.state[2].measurements["smooth_norm"], RTOL, "ema")


def test_monitor_state_keeps_its_structure():
    """optax 0.2.8's monitor starts with ``measurements={}`` and its ``measure_with_ema`` of
    a boolean starts with a ``bool`` average: neither state can be a ``scan`` carry. gradtx's
    init has the structure and dtypes of every later state."""
    params, grads = inputs(5)
    with pytest.raises(TypeError, match="carry input and carry output must have the same pytree structure"):
        scan_run(monitored(optax), params, grads, optax.apply_updates)
    opt = monitored(gradtx)
    state = opt.init(params)
    got = scan_run(opt, params, grads)
    assert jax.tree.structure(state) == jax.tree.structure(got.state)
    assert [x.dtype for x in jax.tree.leaves(state)] == [x.dtype for x in jax.tree.leaves(got.state)]
    assert named_fields(optax.measure_with_ema(lambda u: square_norm(u) > 0, 0.9).init(params))["ema"][0].dtype == bool


def test_two_snapshots_in_one_chain():
    """Each keeps a field of its own name (optax's keep one ``measurement`` dict each)."""
    opt = gradtx.chain(gradtx.snapshot("raw", square_norm), gradtx.scale(0.5), gradtx.snapshot("scaled", square_norm))
    _, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    assert state._fields == ("raw", "scaled") and (float(state.raw), float(state.scaled)) == (4.0, 1.0)


def test_monitor_measures_must_be_a_dict():
    with pytest.raises(TypeError, match=r"^gradtx.monitor\(measures=\[.*\]\): measures must be a dict from names"):
        gradtx.monitor([square_norm])


# --- averaged params: torch.optim.swa_utils.AveragedModel ----------------------------------

N_AVERAGED = 50
TORCH_RTOL = 1e-12


def torch_average(sequence: Any, **averaged_model_kwargs) -> tuple[list[np.ndarray], int]:
    """``AveragedModel(model, ...)`` updated with each params tree of ``sequence`` (float64)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(sequence)]
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(x[0])) for x in leaves])
    averaged = torch.optim.swa_utils.AveragedModel(model, **averaged_model_kwargs)
    for t in range(N_AVERAGED):
        with torch.no_grad():
            for p, x in zip(model, leaves):
                p.copy_(torch.tensor(x[t]))
        averaged.update_parameters(model)
    return [p.detach().numpy() for p in averaged.module], int(averaged.n_averaged)


def gradtx_average(averager, sequence: Any, start: Any = None):
    def body(state, params):
        return averager.update(params, state), None

    state = averager.init(jax.tree.map(lambda x: x[0], sequence)) if start is None else start
    return jax.jit(lambda s, seq: jax.lax.scan(body, s, seq)[0])(state, sequence)


AVERAGES = {
    "swa": (dict(kind="swa"), {}),
    "ema-multi_avg_fn": (
        dict(kind="ema", decay=0.9),
        dict(multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)),
    ),
    "ema-avg_fn": (dict(kind="ema", decay=0.75), dict(avg_fn=torch.optim.swa_utils.get_ema_avg_fn(0.75))),
}


@pytest.mark.parametrize("name", AVERAGES)
def test_averaged_params_match_torch(name):
    kwargs, torch_kwargs = AVERAGES[name]
    sequence = param_sequence(N_AVERAGED)
    state = gradtx_average(gradtx.averaged_params(**kwargs), sequence)
    want, n_averaged = torch_average(sequence, **torch_kwargs)
    assert_trees_close(jax.tree.leaves(state.average), want, TORCH_RTOL, what="average")
    assert int(state.n_averaged) == n_averaged == N_AVERAGED
    assert type(state).__name__ == "AveragedParamsState"
    if kwargs["kind"] == "swa":  # Izmailov et al.: the equal-weight mean of the params passed
        assert_trees_close(state.average, jax.tree.map(lambda x: x.mean(axis=0), sequence), TORCH_RTOL, what="mean")


def test_swa_with_a_wrong_count_fails_against_torch():
    """Counting the params at ``init`` as the first model (``n_averaged = 1`` from the start)."""
    sequence = param_sequence(N_AVERAGED)
    swa = gradtx.averaged_params("swa")
    start = swa.init(jax.tree.map(lambda x: x[0], sequence))._replace(n_averaged=jnp.ones([], jnp.int32))
    want, _ = torch_average(sequence)
    assert_differs(jax.tree.leaves(gradtx_average(swa, sequence, start).average), want, TORCH_RTOL, "average")


def test_zero_start_debiased_ema_is_not_averaged_model_ema():
    """``ema`` (optax's, zero-start and debiased) fed the params is not ``AveragedModel``'s
    EMA (which starts from the first params): the reason ``averaged_params`` exists."""
    sequence = param_sequence(N_AVERAGED)
    opt = gradtx.ema(0.9)
    first = jax.tree.map(lambda x: x[0], sequence)

    def body(state, params):
        out, state = opt.update(params, state)
        return state, out

    outs = jax.jit(lambda s, seq: jax.lax.scan(body, s, seq)[1])(opt.init(first), sequence)
    want, _ = torch_average(sequence, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    assert_differs(jax.tree.leaves(jax.tree.map(lambda x: x[-1], outs)), want, TORCH_RTOL, "ema")
