"""The registry rows of ``gradtx/schedules.py``: every optax 0.2.8 schedule, and the cyclical,
one-cycle (torch's) and warmup-stable-decay schedules. Each is tested in
``tests/test_schedules.py`` (1,000 steps against its reference, rtol 1e-6), not by the
generic parity suite: a schedule has no state."""

from __future__ import annotations

from typing import Any

from gradtx.rows._entry import Entry, bad_args

_SECTION = "Schedules"
_TESTS = "tests/test_schedules.py"
# the schedules handed to join_schedules in its bad rows: builtins, whose repr (the test id) is stable
_THREE = (abs, abs, abs)
_CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=10)
_GT0 = "must be > 0"
_COS_OR_LINEAR = "must be one of 'cos', 'linear'"


def _optax_row(name: str, *bad) -> Entry:
    return Entry(name, "schedule", _SECTION, optax=name, reference=f"optax.{name}, {_TESTS}", bad=bad)


def _row(name: str, reference: str, *bad) -> Entry:
    return Entry(name, "schedule", _SECTION, reference=f"{reference}, {_TESTS}", bad=bad)


_POLY: dict[str, Any] = dict(init_value=1.0, end_value=0.0, transition_steps=10)
_EXP: dict[str, Any] = dict(init_value=1.0, transition_steps=10, decay_rate=0.5)
_WARMUP_EXP: dict[str, Any] = dict(init_value=0.0, peak_value=1.0, warmup_steps=5, transition_steps=10, decay_rate=0.5)
_CYCLIC: dict[str, Any] = dict(base_lr=0.1, max_lr=1.0, step_size=10)
_WSD: dict[str, Any] = dict(init_value=0.0, peak_value=1.0, warmup_steps=10, stable_steps=50, decay_steps=20)

ROWS: list[Entry] = [
    _optax_row("constant_schedule", bad_args(TypeError, "value must be a number or an array, got str", value="0.1")),
    _optax_row(
        "polynomial_schedule",
        bad_args(power=0, message="power must be > 0", **_POLY),
        bad_args(power=2, transition_begin=-1, message="transition_begin must be >= 0", **_POLY),
    ),
    _optax_row("linear_schedule", bad_args(transition_begin=-5, message="transition_begin must be >= 0", **_POLY)),
    _optax_row(
        "exponential_decay",
        bad_args(**{**_EXP, "transition_steps": 0}, message=f"transition_steps {_GT0}"),
        bad_args(**{**_EXP, "decay_rate": 0.0}, message=f"decay_rate {_GT0}"),
        bad_args(**_EXP, transition_begin=-1, message="transition_begin must be >= 0"),
    ),
    _optax_row(
        "cosine_decay_schedule",
        bad_args(init_value=1.0, decay_steps=0, message=f"decay_steps {_GT0}"),
        bad_args(init_value=1.0, decay_steps=10, alpha=2.0, message="alpha must be in [0, 1]"),
    ),
    _optax_row(
        "warmup_constant_schedule",
        bad_args(init_value=0.0, peak_value=1.0, warmup_steps=-1, message="warmup_steps must be >= 0"),
    ),
    _optax_row(
        "warmup_cosine_decay_schedule",
        bad_args(
            init_value=0.0,
            peak_value=1.0,
            warmup_steps=100,
            decay_steps=100,
            message="decay_steps must be > warmup_steps (100): it counts the warmup too",
        ),
        bad_args(init_value=0.0, peak_value=1.0, warmup_steps=-1, decay_steps=100, message="warmup_steps must be >= 0"),
    ),
    _optax_row(
        "warmup_exponential_decay_schedule",
        bad_args(**{**_WARMUP_EXP, "transition_steps": 0}, message=f"transition_steps {_GT0}"),
        bad_args(**{**_WARMUP_EXP, "decay_rate": -0.5}, message=f"decay_rate {_GT0}"),
    ),
    _optax_row(
        "piecewise_constant_schedule",
        bad_args(
            init_value=1.0,
            boundaries_and_scales={10: 0.5, 20: -0.5},
            message="boundaries_and_scales must be a dict {step: scale} of scales >= 0",
        ),
    ),
    _optax_row(
        "piecewise_interpolate_schedule",
        bad_args(interpolate_type="cos", init_value=1.0, message="interpolate_type must be one of 'linear', 'cosine'"),
        bad_args(
            interpolate_type="linear",
            init_value=1.0,
            boundaries_and_scales={-5: 0.5, 10: 0.1},
            message="boundaries_and_scales must be a dict {step: scale} of steps >= 0",
        ),
        bad_args(
            interpolate_type="linear",
            init_value=1.0,
            boundaries_and_scales={10: -0.1},
            message="boundaries_and_scales must be a dict {step: scale} of scales >= 0",
        ),
    ),
    _optax_row(
        "linear_onecycle_schedule",
        bad_args(transition_steps=0, peak_value=1.0, message=f"transition_steps {_GT0}"),
        bad_args(transition_steps=100, peak_value=1.0, pct_start=1.0, message="pct_start must be in (0, 1)"),
        bad_args(transition_steps=100, peak_value=1.0, pct_final=0.2, message="pct_final must be > pct_start (0.3)"),
        bad_args(transition_steps=100, peak_value=1.0, pct_final=1.5, message="pct_final must be in (0, 1]"),
    ),
    _optax_row(
        "cosine_onecycle_schedule",
        bad_args(transition_steps=-1, peak_value=1.0, message=f"transition_steps {_GT0}"),
        bad_args(transition_steps=100, peak_value=1.0, pct_start=0.0, message="pct_start must be in (0, 1)"),
    ),
    _optax_row(
        "sgdr_schedule",
        bad_args(cosine_kwargs=[], message="cosine_kwargs must be a non-empty sequence of dicts"),
        bad_args(
            cosine_kwargs=[{**_CYCLE, "decay_steps": 20}, _CYCLE],
            message="cosine_kwargs must be dicts with 0 <= warmup_steps < decay_steps (cycle 1)",
        ),
    ),
    _optax_row(
        "join_schedules",
        bad_args(schedules=[], boundaries=[], message="schedules must be a non-empty sequence of schedules"),
        bad_args(
            schedules=_THREE, boundaries=[10], message="boundaries must be 2 long: one per schedule after the first"
        ),
        bad_args(schedules=_THREE, boundaries=[200, 100], message="boundaries must be in non-decreasing order"),
    ),
    _row(
        "cyclic_schedule",
        "torch.optim.lr_scheduler.CyclicLR",
        bad_args(**_CYCLIC, mode="triangle", message="mode must be one of 'triangular', 'triangular2', 'exp_range'"),
        bad_args(**{**_CYCLIC, "step_size": 0}, message=f"step_size {_GT0}"),
        bad_args(**_CYCLIC, step_size_down=0, message=f"step_size_down {_GT0}"),
        bad_args(**{**_CYCLIC, "max_lr": 0.05}, message="max_lr must be >= base_lr (0.1)"),
        bad_args(**_CYCLIC, mode="exp_range", gamma=1.5, message="gamma must be in (0, 1]"),
    ),
    _row(
        "triangular_schedule",
        "torch.optim.lr_scheduler.CyclicLR (mode 'triangular'), a closed form",
        bad_args(base_value=0.1, max_value=0.05, step_size=10, message="max_value must be >= base_value (0.1)"),
        bad_args(base_value=0.1, max_value=1.0, step_size=0, message=f"step_size {_GT0}"),
    ),
    _row(
        "one_cycle_schedule",
        "torch.optim.lr_scheduler.OneCycleLR",
        bad_args(max_lr=1.0, total_steps=100, anneal_strategy="cosine", message=f"anneal_strategy {_COS_OR_LINEAR}"),
        bad_args(max_lr=1.0, total_steps=0, message=f"total_steps {_GT0}"),
        bad_args(max_lr=1.0, total_steps=100, pct_start=1.0, message="pct_start must be in (0, 1)"),
        bad_args(
            max_lr=1.0,
            total_steps=100,
            pct_start=0.6,
            three_phase=True,
            message="pct_start must be <= 0.5 with three_phase=True",
        ),
    ),
    _row(
        "warmup_stable_decay_schedule",
        "its closed form",
        bad_args(**_WSD, decay_shape="1-sqrt", message="decay_shape must be one of 'linear', 'cosine', 'sqrt'"),
        bad_args(**{**_WSD, "decay_steps": 0}, message=f"decay_steps {_GT0}"),
        bad_args(**{**_WSD, "stable_steps": -1}, message="stable_steps must be >= 0"),
    ),
]
