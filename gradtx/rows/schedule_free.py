"""Registry rows of this family (see ``gradtx/rows/__init__.py``): schedule-free learning
(``gradtx/schedule_free.py``), SAM (``gradtx/sam.py``) and ``reduce_on_plateau``
(``gradtx/plateau.py``).

The optax twins' parity grids hold the points where optax.contrib 0.2.8 follows the paper
(no warmup; for AdamW ``b2 = 0``, where the bias correction is 1); the paper's rule at the
other points, the wrappers and ``reduce_on_plateau`` (whose update needs the loss) are run
against optax and against the papers' algorithms in their own test files."""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.combine import identity
from gradtx.rows._entry import Entry, bad_args, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_METHODS = "Recent methods"
_PRIMITIVES = "Recent primitives"
_SF_TESTS = "tests/test_schedule_free.py"
_SAM_TESTS = "tests/test_sam_plateau.py"
_INNER = identity()  # an inner transformation for the bad-argument rows
_NOT_TRANSFORMATION = "must be a gradient transformation (init, update), got int"
_STEP_COUNT = "optax's step_count is count + 1: gradtx keeps one step count (count, where a schedule reads it)"
_SF_BAD = (
    bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
    bad_args(learning_rate=0.1, b1=0.0, message="b1 must be in (0, 1]"),
    bad_args(learning_rate=0.1, weight_lr_power=-1.0, message="weight_lr_power must be >= 0"),
    bad_args(learning_rate=0.1, warmup_steps=-1, message="warmup_steps must be >= 0"),
    bad_args(TypeError, "warmup_steps must be an integer, got float", learning_rate=0.1, warmup_steps=2.5),
    bad_args(learning_rate=0.1, state_dtype=jnp.int32, message="state_dtype must be a floating or complex dtype"),
)

ROWS: list[Entry] = [
    primitive_row(
        "schedule_free_interpolation",
        _PRIMITIVES,
        [dict(learning_rate=0.05), dict(learning_rate=S, b1=0.8, weight_lr_power=1.0)],
        ("b1", "weight_sum", "max_lr", "z"),
        dtypes={"state_dtype": "z"},
        reference=(
            f"the authors' SGDScheduleFreeReference / AdamWScheduleFreeReference in numpy float64 and "
            f"optax.contrib.schedule_free (schedule read at count + 1), 200 steps, 1e-10 / 1e-5 ({_SF_TESTS})"
        ),
        bad=(
            bad_args(learning_rate=0.1, b1=0.0, message="b1 must be in (0, 1]"),
            bad_args(learning_rate=0.1, b1=1.5, message="b1 must be in (0, 1]"),
            bad_args(learning_rate=-1.0, message="learning_rate must be >= 0"),
        ),
    ),
    Entry(
        "schedule_free",
        "wrapper",
        _METHODS,
        reference=(
            f"optax.contrib.schedule_free around sgd and adam bases (schedule read at count + 1), 200 steps, "
            f"1e-10 / 1e-5; the paper's closed form ({_SF_TESTS})"
        ),
        bad=(
            bad_args(TypeError, f"base_optimizer {_NOT_TRANSFORMATION}", base_optimizer=3, learning_rate=0.1),
            bad_args(base_optimizer=_INNER, learning_rate=0.1, b1=0.0, message="b1 must be in (0, 1]"),
        ),
    ),
    optimizer_row(
        "schedule_free_sgd",
        _METHODS,
        [
            dict(learning_rate=0.05),
            dict(learning_rate=0.05, b1=0.8, weight_decay=0.1, weight_lr_power=1.0),
        ],
        state=("b1", "weight_sum", "max_lr", "z"),
        optax="contrib.schedule_free_sgd",
        dtypes={"state_dtype": "z"},
        absent={"step_count": _STEP_COUNT},
        reference=f"with warmup: the authors' SGDScheduleFreeReference in numpy float64 ({_SF_TESTS})",
        bad=_SF_BAD,
    ),
    optimizer_row(
        "schedule_free_adamw",
        _METHODS,
        [
            dict(learning_rate=0.01, b2=0.0),
            dict(learning_rate=0.01, b1=0.8, b2=0.0, eps=1e-3, weight_decay=0.1, weight_lr_power=1.0),
        ],
        state=("count", "nu", "b1", "weight_sum", "max_lr", "z"),
        optax="contrib.schedule_free_adamw",
        dtypes={"state_dtype": "z"},
        absent={"step_count": _STEP_COUNT},
        reference=(
            f"b2 > 0 and warmup (where optax departs from the paper): the authors' AdamWScheduleFreeReference "
            f"in numpy float64 and optax.contrib.schedule_free with the paper's step size ({_SF_TESTS})"
        ),
        bad=(*_SF_BAD, bad_args(learning_rate=0.1, b2=1.0, message="b2 must be in [0, 1)")),
    ),
    Entry("schedule_free_eval_params", "utility", _METHODS, reference=f"optax's and the closed form ({_SF_TESTS})"),
    primitive_row("normalize", _PRIMITIVES, [{}], (), optax="contrib.normalize"),
    Entry(
        "sam",
        "wrapper",
        _METHODS,
        reference=f"optax.contrib.sam in its own loops, transparent and opaque, float64 1e-10 ({_SAM_TESTS})",
        bad=(
            bad_args(message="sync_period must be >= 1", optimizer=_INNER, adv_optimizer=_INNER, sync_period=0),
            bad_args(TypeError, f"adv_optimizer {_NOT_TRANSFORMATION}", optimizer=_INNER, adv_optimizer=3),
        ),
    ),
    primitive_row(
        "reduce_on_plateau",
        _PRIMITIVES,
        [{}, dict(factor=0.5, patience=3, rtol=0.0, atol=0.1, cooldown=2, accumulation_size=2, min_scale=0.01)],
        ("scale", "best_value", "plateau_count", "cooldown_count", "accumulation_count", "avg_value"),
        renames={"accumulation_count": "count"},
        update_extra={"value": 2.0},
        reference=(
            f"optax.contrib.reduce_on_plateau over scripted losses with plateaus (the scales exactly) and "
            f"torch.optim.lr_scheduler.ReduceLROnPlateau where the conventions agree ({_SAM_TESTS})"
        ),
        bad=(
            bad_args(factor=1.0, message="factor must be in (0, 1)"),
            bad_args(factor=0.0, message="factor must be in (0, 1)"),
            bad_args(patience=-1, message="patience must be >= 0"),
            bad_args(TypeError, "patience must be an integer, got float", patience=2.5),
            bad_args(rtol=1.5, message="rtol must be in [0, 1]"),
            bad_args(atol=-0.1, message="atol must be >= 0"),
            bad_args(rtol=0.0, atol=0.0, message="rtol must be > 0 when atol is 0 (no improvement would ever count)"),
            bad_args(cooldown=-1, message="cooldown must be >= 0"),
            bad_args(accumulation_size=0, message="accumulation_size must be >= 1"),
            bad_args(min_scale=-1.0, message="min_scale must be >= 0"),
        ),
    ),
]
