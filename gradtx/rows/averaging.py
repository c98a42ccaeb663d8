"""The registry rows of ``gradtx/averaging.py``: ema, lookahead, target-network updates,
monitoring, and the params average of ``torch.optim.swa_utils.AveragedModel``."""

from __future__ import annotations

from typing import Any

from gradtx.base import EmptyState, GradientTransformation
from gradtx.rows._entry import Entry, bad_args, primitive_row

_SECTION = "Averaging and lookahead"
_TESTS = "tests/test_averaging.py"


def _pass_through(updates: Any, state: Any, params: Any = None, **extra: Any) -> tuple[Any, Any]:
    return updates, state


# a stand-in fast optimizer for the bad-argument rows (built at import: it computes nothing)
_PASS_THROUGH = GradientTransformation(lambda params: EmptyState(), _pass_through)
_LOOKAHEAD: dict[str, Any] = dict(fast_optimizer=_PASS_THROUGH, sync_period=2, slow_step_size=0.5)
_TREES: dict[str, Any] = dict(new_tensors=1.0, old_tensors=0.0)
_MEASURE: dict[str, Any] = dict(measure=abs)


def _lookahead_bad(error: type = ValueError, message: str = "", **kwargs: Any):
    return bad_args(error, message, **{**_LOOKAHEAD, **kwargs})


ROWS: list[Entry] = [
    primitive_row(
        "ema",
        _SECTION,
        [dict(decay=0.9), dict(decay=0.7, debias=False), dict(decay=0.0)],
        state=("count", "ema"),
        optax="ema",
        dtypes={"accumulator_dtype": "ema"},
        bad=(
            bad_args(decay=1.5, message="decay must be in [0, 1]"),
            bad_args(decay=-0.1, message="decay must be in [0, 1]"),
            bad_args(decay=1.0, message="decay must be in [0, 1) with debias=True"),
        ),
    ),
    Entry(
        "lookahead",
        "wrapper",
        _SECTION,
        optax="lookahead",
        reference=f"optax.lookahead and Zhang et al. 2019 Algorithm 1 (reset_state), {_TESTS}",
        bad=(
            _lookahead_bad(sync_period=0, message="sync_period must be an integer >= 1"),
            _lookahead_bad(TypeError, "sync_period must be an integer >= 1, got float", sync_period=2.5),
            _lookahead_bad(slow_step_size=1.5, message="slow_step_size must be in [0, 1]"),
            _lookahead_bad(slow_step_size=-0.5, message="slow_step_size must be in [0, 1]"),
            _lookahead_bad(TypeError, "fast_optimizer must be a GradientTransformation", fast_optimizer=None),
        ),
    ),
    Entry("LookaheadParams", "utility", _SECTION, optax="LookaheadParams", reference=f"optax.lookahead, {_TESTS}"),
    Entry("LookaheadState", "utility", _SECTION, optax="LookaheadState", reference=f"optax.lookahead, {_TESTS}"),
    Entry(
        "incremental_update",
        "utility",
        _SECTION,
        optax="incremental_update",
        reference=f"optax.incremental_update, {_TESTS}",
        bad=(bad_args(step_size=1.5, message="step_size must be in [0, 1]", **_TREES),),
    ),
    Entry(
        "periodic_update",
        "utility",
        _SECTION,
        optax="periodic_update",
        reference=f"optax.periodic_update, {_TESTS}",
        bad=(bad_args(update_period=0, message="update_period must be an integer >= 1", steps=0, **_TREES),),
    ),
    Entry(
        "snapshot",
        "primitive",
        _SECTION,
        optax="snapshot",
        reference=f"optax.snapshot (the measurement by name), {_TESTS}",
        bad=(
            bad_args(
                measure_name="norm-before",
                message="measure_name must be a Python identifier (it names the state field)",
                **_MEASURE,
            ),
            bad_args(
                measure_name="count",
                message="measure_name must not start with '_' or be 'count' (it names the state field)",
                **_MEASURE,
            ),
            bad_args(TypeError, "measure must be a function of the updates", measure_name="norm", measure=3),
        ),
    ),
    Entry(
        "monitor",
        "wrapper",
        _SECTION,
        optax="monitor",
        reference=f"optax.monitor, {_TESTS}",
        bad=(
            bad_args(
                TypeError,
                "the measure 'norm' must be a function of the updates or a GradientTransformation",
                measures={"norm": 3},
            ),
        ),
    ),
    Entry(
        "measure_with_ema",
        "primitive",
        _SECTION,
        optax="measure_with_ema",
        reference=f"optax.measure_with_ema, {_TESTS}",
        bad=(
            bad_args(decay=1.5, message="decay must be in [0, 1]", **_MEASURE),
            bad_args(decay=1.0, message="decay must be in [0, 1) with debias=True", **_MEASURE),
        ),
    ),
    Entry(
        "averaged_params",
        "utility",
        _SECTION,
        reference=f"torch.optim.swa_utils.AveragedModel 2.13 (SWA, and EMA via get_ema_multi_avg_fn), {_TESTS}",
        bad=(
            bad_args(kind="polyak", message="kind must be one of 'swa', 'ema'"),
            bad_args(kind="ema", decay=None, message="decay must be given with kind='ema'"),
            bad_args(kind="ema", decay=1.5, message="decay must be in [0, 1]"),
            bad_args(kind="swa", decay=0.9, message="decay is for kind='ema' only (SWA weighs equally)"),
        ),
    ),
]
