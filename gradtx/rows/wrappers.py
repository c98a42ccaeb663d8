"""The registry rows of ``gradtx/wrappers.py``: injected hyperparameters, gradient
accumulation, skipping non-finite or large updates, conditional transformations,
flattening. The wrappers take inner transformations, so they have no parity grid: their own
test file runs them against optax's (``TEST_FILE``)."""

from __future__ import annotations

from gradtx.combine import identity
from gradtx.rows._entry import Entry, bad_args
from gradtx.scaling import scale

SECTION = "Wrappers"
TEST_FILE = "tests/test_wrappers.py"
_INNER = identity()  # an inner transformation for the bad-argument rows (builds closures only)
_NOT_TRANSFORMATION = "must be a gradient transformation (init, update), got int"
_F64 = "float64, 100 steps, params, updates and every state field"


def _row(name: str, kind: str, optax: str | None, reference: str, bad=()) -> Entry:
    return Entry(name, kind, SECTION, optax=optax, reference=f"{reference} ({TEST_FILE})", bad=tuple(bad))


def _inject_bad() -> tuple:
    return (
        bad_args(
            message="static_args must name arguments of scale; it has no 'lr' (its arguments: step_size)",
            inner_factory=scale,
            static_args="lr",
        ),
        bad_args(
            TypeError,
            "inner_factory must be a function returning a gradient transformation, got int",
            inner_factory=3,
        ),
        bad_args(
            TypeError,
            "hyperparam_dtype must be a floating or complex dtype",
            inner_factory=scale,
            hyperparam_dtype="not a dtype",
        ),
    )


def _multi_steps_bad() -> tuple:
    return (
        bad_args(message="every_k_schedule must be >= 1", opt=_INNER, every_k_schedule=0),
        bad_args(message="every_k_schedule must be >= 1", opt=_INNER, every_k_schedule=-2),
        bad_args(
            TypeError, "every_k_schedule must be an integer or a schedule, got float", opt=_INNER, every_k_schedule=2.5
        ),
        bad_args(TypeError, f"opt {_NOT_TRANSFORMATION}", opt=3, every_k_schedule=2),
        bad_args(
            TypeError,
            "should_skip_update_fn must be a function, got int",
            opt=_INNER,
            every_k_schedule=2,
            should_skip_update_fn=1,
        ),
    )


def _condition_bad() -> tuple:
    return (
        bad_args(TypeError, "should_transform_fn must be a function, got int", inner=_INNER, should_transform_fn=3),
        bad_args(TypeError, f"inner {_NOT_TRANSFORMATION}", inner=3, should_transform_fn=bool),
    )


ROWS: list[Entry] = [
    _row(
        "inject_hyperparams",
        "wrapper",
        "inject_hyperparams",
        f"optax.inject_hyperparams(optax.adam), {_F64}; gradtx's unwrapped adam and adamw bit for bit; "
        "float32 hyperparameters for bfloat16 params",
        bad=_inject_bad(),
    ),
    _row(
        "inject_stateful_hyperparams",
        "wrapper",
        "inject_stateful_hyperparams",
        f"optax.inject_hyperparams(optax.adam) (whose state it keeps), {_F64}",
        bad=_inject_bad(),
    ),
    _row("WrappedSchedule", "utility", "WrappedSchedule", "optax's hyperparams_states in inject_stateful_hyperparams"),
    _row(
        "MultiSteps",
        "wrapper",
        "MultiSteps",
        f"optax.MultiSteps (accumulator float64), {_F64}; the inner optimizer on the mean of k gradients "
        "(1e-12); the bytes of the state and of the compiled step's temporaries",
        bad=_multi_steps_bad(),
    ),
    _row(
        "multi_steps",
        "wrapper",
        None,
        "gradtx.MultiSteps(...).gradient_transformation() (the same transformation), against optax.MultiSteps",
        bad=_multi_steps_bad(),
    ),
    _row(
        "apply_every",
        "wrapper",
        "apply_every",
        f"optax.apply_every after optax.adam, {_F64} (gradtx's count is the step count, optax's count % k)",
        bad=(
            bad_args(message="k must be >= 1", k=0),
            bad_args(TypeError, "k must be an integer, got float", k=1.5),
        ),
    ),
    _row(
        "apply_if_finite",
        "wrapper",
        "apply_if_finite",
        f"optax.apply_if_finite with isolated NaN gradients, {_F64}; the count after it gives up by hand "
        "(where optax differs)",
        bad=(
            bad_args(message="max_consecutive_errors must be >= 0", inner=_INNER, max_consecutive_errors=-1),
            bad_args(
                TypeError,
                "max_consecutive_errors must be an integer, got float",
                inner=_INNER,
                max_consecutive_errors=1.5,
            ),
            bad_args(TypeError, f"inner {_NOT_TRANSFORMATION}", inner=3, max_consecutive_errors=1),
        ),
    ),
    _row(
        "conditionally_transform",
        "wrapper",
        "conditionally_transform",
        f"optax.conditionally_transform, {_F64}; forward_extra_args",
        bad=_condition_bad(),
    ),
    _row(
        "conditionally_mask",
        "wrapper",
        "conditionally_mask",
        f"optax.conditionally_mask, {_F64}; forward_extra_args",
        bad=_condition_bad(),
    ),
    _row(
        "flatten",
        "wrapper",
        "flatten",
        f"optax.flatten(optax.adam), {_F64}",
        bad=(bad_args(TypeError, f"inner {_NOT_TRANSFORMATION}", inner=3),),
    ),
    _row("skip_not_finite", "utility", "skip_not_finite", "optax.skip_not_finite on the same trees; MultiSteps"),
    _row("skip_large_updates", "utility", "skip_large_updates", "optax.skip_large_updates on the same trees"),
    _row("ShouldSkipUpdateFunction", "contract", "ShouldSkipUpdateFunction", "the type of skip_not_finite"),
    _row("ConditionFn", "contract", None, "optax.transforms.ConditionFn: the type of should_transform_fn"),
    _row("InjectHyperparamsState", "contract", "InjectHyperparamsState", "the record of gradtx.inject_hyperparams"),
    _row(
        "InjectStatefulHyperparamsState",
        "contract",
        "InjectStatefulHyperparamsState",
        "the record of gradtx.inject_stateful_hyperparams",
    ),
    _row("MultiStepsState", "contract", "MultiStepsState", "the record of gradtx.multi_steps and MultiSteps"),
    _row("ApplyIfFiniteState", "contract", "ApplyIfFiniteState", "the record of gradtx.apply_if_finite"),
    _row(
        "ConditionallyTransformState",
        "contract",
        "ConditionallyTransformState",
        "the record of gradtx.conditionally_transform",
    ),
    _row("ConditionallyMaskState", "contract", "ConditionallyMaskState", "the record of gradtx.conditionally_mask"),
    _row(
        "microbatch",
        "wrapper",
        "microbatch",
        "optax.microbatch on the same functions and batches: sum, mean, running mean, concatenation, "
        "trees of rules, num_real_microbatches",
        bad=(
            bad_args(message="microbatch_size must be an int >= 1", fun=abs, argnums=0, microbatch_size=0),
            bad_args(
                message="accumulator must be an AccumulationType or one of 'mean', 'sum', 'running_mean', 'concat'",
                fun=abs,
                argnums=0,
                microbatch_size=2,
                accumulator="median",
            ),
        ),
    ),
    _row("micro_vmap", "wrapper", None, "optax.microbatching.micro_vmap and jax.vmap on the same functions"),
    _row("reshape_batch_axis", "utility", None, "optax.microbatching.reshape_batch_axis on the same trees"),
    _row("AccumulationType", "contract", None, "optax.microbatching.AccumulationType: microbatch's accumulator"),
]
