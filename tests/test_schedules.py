"""Schedules against their references, 1,000 steps, rtol 1e-6:

- optax 0.2.8, the same call, for every optax schedule (``OPTAX``: several argument sets
  each, with every argument moved off its default somewhere and no two alike, so that a
  swapped argument shows), on an int32 step array: under ``jax.jit`` in float32 (the value's
  dtype float32, as optax's) and eagerly in float64 (x64);
- ``torch.optim.lr_scheduler.CyclicLR`` and ``OneCycleLR`` (``cycle_momentum=False`` on a
  ``torch.optim.SGD``), ``get_last_lr()`` step by step against ``cyclic_schedule`` and
  ``one_cycle_schedule`` in float64;
- the closed form (numpy, float64) of ``warmup_stable_decay_schedule``;
- negative controls: wrong formulas for the cyclic, one-cycle and warmup-stable-decay
  schedules (among them optax's own one-cycle knots) fail the same comparison;
- the steps a schedule takes (Python, numpy and jax integers) and the dtype it returns;
- where optax is wrong (``warmup_constant_schedule`` without warmup,
  ``linear_onecycle_schedule(pct_final=1)``, float32 values under x64) and gradtx is not;
- bad arguments: each registry row's ``bad`` (the exact message).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import gradtx
from gradtx import schedules
from gradtx.rows.schedules import ROWS

N = 1000
STEPS = np.arange(N, dtype=np.int32)
RTOL = 1e-6

# name -> argument sets; a callable builds the arguments from the library (join_schedules takes schedules)
OPTAX: dict[str, list] = {
    "constant_schedule": [dict(value=0.3)],
    "polynomial_schedule": [
        dict(init_value=1.0, end_value=0.01, power=2, transition_steps=300),
        dict(init_value=0.1, end_value=0.5, power=0.5, transition_steps=400, transition_begin=150),
        dict(init_value=0.7, end_value=0.2, power=3, transition_steps=0),  # optax's documented constant
    ],
    "linear_schedule": [
        dict(init_value=1.0, end_value=0.01, transition_steps=700),
        dict(init_value=0.0, end_value=2.0, transition_steps=37, transition_begin=500),
    ],
    "exponential_decay": [
        dict(init_value=1.0, transition_steps=100, decay_rate=0.5),
        dict(init_value=2.0, transition_steps=30, decay_rate=0.9, transition_begin=200, staircase=True, end_value=0.3),
        dict(init_value=0.1, transition_steps=50, decay_rate=1.01, end_value=0.15),  # an upper bound
    ],
    "cosine_decay_schedule": [
        dict(init_value=0.1, decay_steps=800),
        dict(init_value=2.0, decay_steps=37, alpha=0.1, exponent=2.0),
    ],
    "warmup_constant_schedule": [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=100),
        dict(init_value=0.5, peak_value=0.1, warmup_steps=333),
    ],
    "warmup_cosine_decay_schedule": [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=100, decay_steps=900),
        dict(init_value=0.1, peak_value=0.5, warmup_steps=13, decay_steps=600, end_value=0.05, exponent=1.5),
        dict(init_value=0.2, peak_value=0.4, warmup_steps=0, decay_steps=250, end_value=0.01),
    ],
    "warmup_exponential_decay_schedule": [
        dict(init_value=0.0, peak_value=1.0, warmup_steps=50, transition_steps=100, decay_rate=0.5),
        dict(
            init_value=0.2,
            peak_value=1.0,
            warmup_steps=10,
            transition_steps=40,
            decay_rate=0.8,
            transition_begin=100,
            staircase=True,
            end_value=0.1,
        ),
    ],
    "piecewise_constant_schedule": [
        dict(init_value=1.0, boundaries_and_scales={100: 0.1, 400: 0.5}),
        dict(init_value=0.3, boundaries_and_scales={700: 2.0, 50: 0.25, 0: 0.5}),  # unsorted, one at 0
        dict(init_value=0.4),
    ],
    "piecewise_interpolate_schedule": [
        dict(interpolate_type="linear", init_value=1.0, boundaries_and_scales={100: 0.1, 400: 0.5}),
        dict(interpolate_type="cosine", init_value=0.3, boundaries_and_scales={700: 2.0, 50: 0.25, 300: 0.0}),
        dict(interpolate_type="linear", init_value=0.5, boundaries_and_scales={0: 2.0, 500: 0.5}),
    ],
    "linear_onecycle_schedule": [
        dict(transition_steps=800, peak_value=1.0),
        dict(
            transition_steps=999, peak_value=0.5, pct_start=0.2, pct_final=0.6, div_factor=10.0, final_div_factor=100.0
        ),
    ],
    "cosine_onecycle_schedule": [
        dict(transition_steps=800, peak_value=1.0),
        dict(transition_steps=777, peak_value=0.5, pct_start=0.45, div_factor=5.0, final_div_factor=50.0),
    ],
    "sgdr_schedule": [
        dict(
            cosine_kwargs=[
                dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=200),
                dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=300, end_value=0.01),
                dict(init_value=0.0, peak_value=0.2, warmup_steps=50, decay_steps=400, exponent=2.0),
            ]
        )
    ],
    "join_schedules": [
        lambda lib: dict(
            schedules=[
                lib.linear_schedule(0.0, 1.0, 100),
                lib.constant_schedule(1.0),
                lib.cosine_decay_schedule(1.0, 300, alpha=0.2),
            ],
            boundaries=[100, 400],
        )
    ],
}
CASES = [pytest.param(name, i, id=f"{name}-{i}") for name, sets in OPTAX.items() for i in range(len(sets))]


def build(lib, name: str, i: int):
    kwargs = OPTAX[name][i]
    return getattr(lib, name)(**(kwargs(lib) if callable(kwargs) else kwargs))


def values(schedule, *, jit: bool, steps=STEPS) -> np.ndarray:
    """The schedule on the int32 steps 0..N-1 (vmapped: optax's piecewise schedules take a scalar)."""
    batched = jax.vmap(schedule)
    return np.asarray((jax.jit(batched) if jit else batched)(jnp.asarray(steps)))


def test_every_optax_schedule_is_covered():
    names = {n for n in dir(optax.schedules) if n.endswith(("_schedule", "_decay", "_schedules"))}
    assert names - {"_schedule"} == set(OPTAX)
    assert {e.name for e in ROWS if e.optax} == set(OPTAX)


@pytest.mark.parametrize("name, i", CASES)
def test_matches_optax_in_float32_under_jit(name, i):
    """Reference: ``optax.<name>`` with the same arguments, jitted, float32, rtol 1e-6; the
    same dtype (float32)."""
    ours, theirs = values(build(gradtx, name, i), jit=True), values(build(optax, name, i), jit=True)
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=RTOL)


@pytest.mark.parametrize("name, i", CASES)
def test_matches_optax_in_float64_eagerly(name, i):
    """Reference: ``optax.<name>``, eagerly, x64, rtol 1e-6; gradtx's values on int32 steps are
    float64. (optax's are float32 for some schedules, which divide an int32 step in float32:
    ``test_values_are_float64_under_x64_where_optax_gives_float32``; it gets int64 steps here.)"""
    with jax.enable_x64(True):
        ours = values(build(gradtx, name, i), jit=False)
        theirs = values(build(optax, name, i), jit=False, steps=STEPS.astype(np.int64))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=RTOL)


# --- torch's cyclic and one-cycle schedules ---------------------------------------------


def torch_lrs(make_scheduler, n: int) -> np.ndarray:
    """``get_last_lr()`` of the scheduler on a torch SGD, before each of ``n`` steps (float64)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(n):
        lrs.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    return np.asarray(lrs)


def torch_cyclic(kw: dict) -> np.ndarray:
    args = {**kw, "step_size_up": kw["step_size"]}
    del args["step_size"]
    return torch_lrs(lambda opt: torch.optim.lr_scheduler.CyclicLR(opt, **args, cycle_momentum=False), N)


def torch_one_cycle(kw: dict) -> np.ndarray:
    make = lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, **kw, cycle_momentum=False)  # noqa: E731
    return torch_lrs(make, min(kw["total_steps"], N))


def float64(schedule, n: int = N) -> np.ndarray:
    with jax.enable_x64(True):
        return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(n, dtype=jnp.int32)))


CYCLIC = [
    dict(base_lr=0.01, max_lr=0.1, step_size=7),
    dict(base_lr=0.001, max_lr=0.05, step_size=5, step_size_down=13),
    dict(base_lr=0.0, max_lr=1.0, step_size=10, step_size_down=4, mode="triangular2"),
    dict(base_lr=0.1, max_lr=0.3, step_size=20, step_size_down=30, mode="exp_range", gamma=0.998),
    dict(base_lr=0.02, max_lr=0.2, step_size=2.5, step_size_down=6.5, mode="triangular2"),
]
ONE_CYCLE = [
    dict(max_lr=0.1, total_steps=1000),
    dict(max_lr=0.1, total_steps=1000, anneal_strategy="linear"),
    dict(max_lr=1.0, total_steps=1000, pct_start=0.25, three_phase=True),
    dict(
        max_lr=0.5,
        total_steps=900,
        pct_start=0.4,
        anneal_strategy="linear",
        div_factor=10.0,
        final_div_factor=100.0,
        three_phase=True,
    ),
    dict(max_lr=0.3, total_steps=7, pct_start=0.1),  # the first knot, pct_start * 7 - 1, below 0
    dict(max_lr=0.3, total_steps=999, pct_start=0.5, div_factor=4.0, three_phase=True),
]


def _ids(settings: list[dict]) -> list[str]:
    return ["-".join(f"{k}={v}" for k, v in kw.items()) for kw in settings]


@pytest.mark.parametrize("kw", CYCLIC, ids=_ids(CYCLIC))
def test_cyclic_matches_torch(kw):
    """Reference: ``torch.optim.lr_scheduler.CyclicLR(step_size_up=step_size, ...)``, 1,000
    steps, float64, rtol 1e-6."""
    np.testing.assert_allclose(float64(gradtx.cyclic_schedule(**kw)), torch_cyclic(kw), rtol=RTOL)


@pytest.mark.parametrize("kw", ONE_CYCLE, ids=_ids(ONE_CYCLE))
def test_one_cycle_matches_torch(kw):
    """Reference: ``torch.optim.lr_scheduler.OneCycleLR``, each of its ``total_steps`` steps,
    float64, rtol 1e-6; after the last, gradtx holds the final value (torch raises)."""
    want = torch_one_cycle(kw)
    got = float64(gradtx.one_cycle_schedule(**kw), kw["total_steps"] + 5)
    np.testing.assert_allclose(got[: len(want)], want, rtol=RTOL)
    final = kw["max_lr"] / kw.get("div_factor", 25.0) / kw.get("final_div_factor", 1e4)
    np.testing.assert_allclose(got[len(want) :], final, rtol=RTOL)


def test_triangular_schedule_is_the_triangular_mode():
    """Closed form (Smith 2017): base at t = 0, 2s, 4s...; max at t = s, 3s...; linear in
    between; and ``cyclic_schedule``'s triangular mode."""
    sched = gradtx.triangular_schedule(0.1, 0.5, step_size=4)
    got = np.array([sched(t) for t in range(17)])
    expected = 0.1 + 0.4 * np.array([0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0])
    np.testing.assert_allclose(got, expected, rtol=RTOL)
    np.testing.assert_array_equal(values(sched, jit=True), values(gradtx.cyclic_schedule(0.1, 0.5, 4), jit=True))


# --- warmup-stable-decay: its closed form ------------------------------------------------

WSD = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=100, stable_steps=600, decay_steps=200, decay_shape="linear"),
    dict(init_value=0.1, peak_value=0.5, warmup_steps=50, stable_steps=300, decay_steps=450, end_value=0.01,
         decay_shape="cosine"),
    dict(init_value=0.0, peak_value=2.0, warmup_steps=30, stable_steps=700, decay_steps=170, end_value=0.2,
         decay_shape="sqrt"),
    dict(init_value=0.3, peak_value=0.6, warmup_steps=0, stable_steps=0, decay_steps=999, decay_shape="sqrt"),
]  # fmt: skip


def wsd_closed_form(init_value, peak_value, warmup_steps, stable_steps, decay_steps, end_value=0.0,
                    decay_shape="linear", t=STEPS):  # fmt: skip
    """Hägele et al. (2024), eq. of section 3: warmup, constant, cooldown; numpy float64."""
    t = t.astype(np.float64)
    w, s, d = warmup_steps, stable_steps, decay_steps
    p = np.clip((t - w - s) / d, 0.0, 1.0)
    f = {"linear": 1 - p, "cosine": (1 + np.cos(np.pi * p)) / 2, "sqrt": 1 - np.sqrt(p)}[decay_shape]
    warm = init_value + (peak_value - init_value) * t / max(w, 1)
    return np.select([t < w, t < w + s, t < w + s + d], [warm, peak_value, end_value + (peak_value - end_value) * f],
                     end_value)  # fmt: skip


@pytest.mark.parametrize("kw", WSD, ids=[kw["decay_shape"] + str(i) for i, kw in enumerate(WSD)])
def test_warmup_stable_decay_matches_its_closed_form(kw):
    """Reference: the closed form above, float64, rtol 1e-6 (and float32 under jit: rtol 1e-5,
    atol 1e-7 of the peak, for the last steps of a cooldown to 0)."""
    want = wsd_closed_form(**kw)
    np.testing.assert_allclose(float64(gradtx.warmup_stable_decay_schedule(**kw)), want, rtol=RTOL)
    float32 = values(gradtx.warmup_stable_decay_schedule(**kw), jit=True)
    np.testing.assert_allclose(float32, want, rtol=1e-5, atol=1e-7 * kw["peak_value"])


# --- negative controls ------------------------------------------------------------------


def fails(got, want, what: str) -> None:
    """Negative control: ``got`` differs from ``want`` beyond rtol 1e-6."""
    assert not np.allclose(got, want, rtol=RTOL, atol=0), f"the wrong formula ({what}) passes"


def _halved_too_early(kw):
    """triangular2 with the height halved from the first cycle on: 2^-(k+1) for 2^-k."""
    return gradtx.cyclic_schedule(**{**kw, "max_lr": (kw["base_lr"] + kw["max_lr"]) / 2})


def _exp_range_per_cycle(kw):
    """exp_range with gamma^(cycles done) for gamma^t."""
    triangle = gradtx.cyclic_schedule(**{**kw, "mode": "triangular"})
    period = kw["step_size"] + kw["step_size_down"]
    return lambda t: kw["base_lr"] + (triangle(t) - kw["base_lr"]) * kw["gamma"] ** (t // period)


def _late(schedule):
    """The value of the step before (torch's ``last_epoch`` taken for the step to come)."""
    return lambda t: schedule(jnp.maximum(t - 1, 0))


def _late(schedule):
    """The value of the step before."""
    return lambda t: schedule(jnp.maximum(t - 1, 0))


CYCLIC_MUTANTS = [
    ("step_size_down ignored", 1, lambda kw: gradtx.cyclic_schedule(kw["base_lr"], kw["max_lr"], kw["step_size"])),
    ("one step late", 1, lambda kw: _late(gradtx.cyclic_schedule(**kw))),
    ("triangular2 halving one cycle early", 2, _halved_too_early),
    ("exp_range decaying per cycle", 3, _exp_range_per_cycle),
]


@pytest.mark.parametrize("what, setting, wrong", CYCLIC_MUTANTS, ids=[m[0] for m in CYCLIC_MUTANTS])
def test_cyclic_tolerance_catches_wrong_formulas(what, setting, wrong):
    """Negative control against ``torch.optim.lr_scheduler.CyclicLR`` (``CYCLIC[setting]``)."""
    fails(float64(wrong(CYCLIC[setting])), torch_cyclic(CYCLIC[setting]), what)


def _knots_at_pct_start_times_total(kw):
    """Knots at ``pct_start * T`` and ``T`` (no torch ``- 1``): optax's cosine_onecycle_schedule."""
    return optax.cosine_onecycle_schedule(kw["total_steps"], kw["max_lr"], kw.get("pct_start", 0.3))


def _final_over_final_div_only(kw):
    """The final value ``max_lr / final_div_factor`` for ``max_lr / (div_factor * final_div_factor)``."""
    return gradtx.one_cycle_schedule(**{**kw, "final_div_factor": kw.get("final_div_factor", 1e4) / 25.0})


def _linear_for_cos(kw):
    return gradtx.one_cycle_schedule(**{**kw, "anneal_strategy": "linear"})


def _optax_linear_three_phase(kw):
    """optax's linear_onecycle_schedule with the same phases (knots ``int(p T)``, ``int(2 p T)``, ``T``)."""
    p, steps = kw["pct_start"], kw["total_steps"]
    return optax.linear_onecycle_schedule(steps, kw["max_lr"], p, 2 * p, kw["div_factor"], kw["final_div_factor"])


ONE_CYCLE_MUTANTS = [
    ("optax's cosine one-cycle knots", 0, _knots_at_pct_start_times_total),
    ("final value without div_factor", 0, _final_over_final_div_only),
    ("linear annealing for cos", 0, _linear_for_cos),
    ("optax's linear one-cycle knots, three phases", 3, _optax_linear_three_phase),
]


@pytest.mark.parametrize("what, setting, wrong", ONE_CYCLE_MUTANTS, ids=[m[0] for m in ONE_CYCLE_MUTANTS])
def test_one_cycle_tolerance_catches_wrong_formulas(what, setting, wrong):
    """Negative control against ``torch.optim.lr_scheduler.OneCycleLR`` (``ONE_CYCLE[setting]``)."""
    kw = ONE_CYCLE[setting]
    fails(float64(wrong(kw), kw["total_steps"]), torch_one_cycle(kw), what)


def test_warmup_stable_decay_tolerance_catches_a_wrong_cooldown():
    """Negative control against the closed form: the cooldown ``sqrt(1 - p)`` for ``1 - sqrt(p)``."""
    kw = WSD[2]
    w, s, d = kw["warmup_steps"], kw["stable_steps"], kw["decay_steps"]
    knots, vals = (0, w, w + s, w + s + d), (kw["init_value"], kw["peak_value"], kw["peak_value"], kw["end_value"])
    shapes = (schedules._linear, schedules._linear, lambda a, b, p: b + (a - b) * jnp.sqrt(1 - p))
    fails(float64(lambda t: schedules._through_knots(t, knots, vals, shapes)), wsd_closed_form(**kw), "sqrt(1 - p)")


# --- steps and dtypes -------------------------------------------------------------------

# one setting of each optax schedule; each mode or shape of the others
ALL = [*((lambda name=name: build(gradtx, name, 0)) for name in OPTAX),
       *((lambda kw=kw: gradtx.cyclic_schedule(**kw)) for kw in CYCLIC[:4]),
       *((lambda kw=kw: gradtx.one_cycle_schedule(**kw)) for kw in ONE_CYCLE[:4]),
       *((lambda kw=kw: gradtx.warmup_stable_decay_schedule(**kw)) for kw in WSD[:3])]  # fmt: skip


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "x64"])
def test_any_integer_step_gives_one_value_of_the_default_float_dtype(x64):
    """A Python int, numpy int32 / int64 and a jax int32 scalar give the same value, of the
    default float dtype (float32; float64 under x64), for every schedule here."""
    dtype = np.dtype(np.float64 if x64 else np.float32)
    with jax.enable_x64(x64):
        for make in ALL:
            schedule = make()
            got = [jnp.asarray(schedule(t)) for t in (123, np.int32(123), np.int64(123), jnp.int32(123))]
            assert {v.dtype for v in got} == {dtype}, make
            np.testing.assert_array_equal(np.array(got), np.full(4, got[0]))


def test_schedule_drives_the_learning_rate_stage():
    """scale_by_learning_rate with a schedule: step t uses lr(t) (count from 0)."""
    tx = gradtx.sgd(gradtx.triangular_schedule(0.0, 1.0, step_size=2))
    state, got = tx.init(jnp.zeros(1)), []
    for _ in range(5):
        updates, state = tx.update(jnp.ones(1), state)
        got.append(float(updates[0]))
    np.testing.assert_allclose(got, [0.0, -0.5, -1.0, -0.5, 0.0])


# --- where optax is wrong ---------------------------------------------------------------


def test_warmup_constant_without_warmup_is_the_peak():
    """Closed form: no warmup means ``peak_value`` from step 0; optax's stays at ``init_value``."""
    ours, theirs = gradtx.warmup_constant_schedule(0.0, 1.0, 0), optax.warmup_constant_schedule(0.0, 1.0, 0)
    np.testing.assert_array_equal(values(ours, jit=True), 1.0)
    np.testing.assert_array_equal(values(theirs, jit=True), 0.0)


def test_linear_onecycle_with_pct_final_one_returns_to_the_initial_value():
    """Closed form (optax's docstring): phase 2 runs from ``peak_value`` back to ``peak /
    div_factor`` over ``[pct_start T, pct_final T)``; with ``pct_final=1`` optax's dict of
    boundaries holds ``T`` once and loses the return (it heads for the final value instead)."""
    steps, peak, div, final = 800, 1.0, 25.0, 1e4
    t = STEPS[240:800].astype(np.float64)
    want = peak + (peak / div - peak) * (t - 240) / 560
    ours = gradtx.linear_onecycle_schedule(steps, peak, pct_final=1.0, div_factor=div, final_div_factor=final)
    theirs = optax.linear_onecycle_schedule(steps, peak, pct_final=1.0, div_factor=div, final_div_factor=final)
    np.testing.assert_allclose(float64(ours)[240:800], want, rtol=RTOL)
    fails(float64(theirs)[240:800], want, "optax")
    np.testing.assert_allclose(float64(ours)[800:], peak / div / final, rtol=RTOL)


def test_values_are_float64_under_x64_where_optax_gives_float32():
    """Under x64 optax's linear, polynomial and exponential schedules divide an int32 step in
    float32; gradtx's values are float64 (here exactly 2/3)."""
    with jax.enable_x64(True):
        ours = gradtx.linear_schedule(1.0, 0.0, 3)(jnp.int32(1))
        theirs = optax.linear_schedule(1.0, 0.0, 3)(jnp.int32(1))
    assert ours.dtype == np.float64 and theirs.dtype == np.float32
    assert float(ours) == pytest.approx(2 / 3, rel=1e-15) and float(theirs) != pytest.approx(2 / 3, rel=1e-9)


# --- bad arguments ----------------------------------------------------------------------

BAD = [
    pytest.param(e, bad, id=f"{e.name}({','.join(f'{k}={v!r}' for k, v in bad.kwargs.items())})")
    for e in ROWS
    for bad in e.bad
]


@pytest.mark.parametrize("entry, bad", BAD)
def test_bad_arguments_fail_at_construction_naming_the_argument(entry, bad):
    """Reference: the registry row's error and message, exactly: ``gradtx.<call>(<arg>=<value>): <rule>``."""
    with pytest.raises(bad.error) as info:
        entry.obj(**bad.kwargs)
    named = [k for k in bad.kwargs if f"({k}=" in str(info.value)]
    assert (
        len(named) == 1
        and str(info.value) == f"gradtx.{entry.name}({named[0]}={bad.kwargs[named[0]]!r}): {bad.message}"
    )


def test_polynomial_without_transition_steps_is_constant_as_optax_documents():
    for steps in (0, -3):
        assert gradtx.polynomial_schedule(0.7, 0.1, 2, steps)(500) == 0.7
