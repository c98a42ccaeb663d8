"""The registry rows of ``gradtx/utilities.py``: optax's stage names and optax's utilities.

The stages have parity grids against the optax call of the same name (run by
``tests/test_parity.py``), but ``scale_by_distance_over_gradients``: optax 0.2.8 turns a
scalar param's update into shape ``(1,)`` (the parity tree has a scalar leaf), so it is
tested in ``tests/test_utilities.py`` on a tree without one, and against the authors'
L-DoG. The functions are tested there against optax's function of the same name.
"""

from __future__ import annotations

import numpy as np

from gradtx.rows._entry import BF16, Entry, bad_args, primitive_row

_STAGES = "optax's stages"
_UTILITIES = "Utilities"
_ADAM_STATE = ("count", "mu", "nu")
_MOVED = dict(b1=0.8, b2=0.95, eps=1e-3)
_TESTS = "tests/test_utilities.py"


def pull_towards_params(g, p):
    """The parity grid's ``stateless_with_tree_map`` function: ``g + 0.1 * p``."""
    return g + 0.1 * p


def _utility(name: str, reference: str = "", **kw) -> Entry:
    return Entry(name, "utility", _UTILITIES, optax=name, reference=reference or f"optax.{name}, {_TESTS}", **kw)


ROWS: list[Entry] = [
    primitive_row(
        "scale_by_adam",
        _STAGES,
        [{}, dict(**_MOVED, eps_root=1e-4, nesterov=True), dict(eps=1e-3, mu_dtype=BF16)],
        _ADAM_STATE,
        optax="scale_by_adam",
        dtypes={"mu_dtype": "mu"},
        bad=(bad_args(b1=1.0, message="b1 must be in [0, 1)"),),
    ),
    primitive_row(
        "scale_by_adamax",
        _STAGES,
        [{}, _MOVED],
        _ADAM_STATE,
        optax="scale_by_adamax",
        bad=(bad_args(b2=1.5, message="b2 must be in [0, 1]"),),
    ),
    primitive_row(
        "scale_by_amsgrad",
        _STAGES,
        [dict(**_MOVED, eps_root=1e-4), dict(eps=1e-3, bias_correction_mu=False, bias_correction_nu=False)],
        ("count", "mu", "nu", "nu_max"),
        optax="scale_by_amsgrad",
        dtypes={"mu_dtype": "mu", "nu_dtype": ("nu", "nu_max")},
        absent={"count": "without bias correction nothing reads a step count, and gradtx keeps none"},
        bad=(bad_args(eps_root=-1.0, message="eps_root must be >= 0"),),
    ),
    primitive_row(
        "scale_by_lion",
        _STAGES,
        [
            dict(b1=0.8, b2=0.95),
            dict(b1=0.8, b2=0.95, mode="smooth", smooth_beta=2.0),
            dict(b1=0.8, b2=0.95, mode="refined"),
            dict(mu_dtype=BF16),
        ],
        ("mu",),
        optax="scale_by_lion",
        dtypes={"mu_dtype": "mu"},
        absent={"count": "optax's scale_by_lion increments a step count that it never reads"},
        bad=(
            bad_args(mode="soft", message="mode must be one of 'hard', 'smooth', 'refined'"),
            bad_args(mode="smooth", smooth_beta=0.0, message="smooth_beta must be > 0"),
        ),
    ),
    primitive_row(
        "scale_by_rss",
        _STAGES,
        [{}, dict(initial_accumulator_value=0.0, eps=1e-3)],
        ("sum_of_squares",),
        optax="scale_by_rss",
        bad=(bad_args(initial_accumulator_value=-0.1, message="initial_accumulator_value must be >= 0"),),
    ),
    primitive_row(
        "scale_by_distance_over_gradients",
        _STAGES,
        reference=(
            "optax.scale_by_distance_over_gradients on a tree without scalar leaves (100 steps, float64, rtol 1e-10, "
            "every state field); the authors' L-DoG (formll/dog) in numpy float64; " + _TESTS + "; its estimates "
            "are gradtx.lr_free's max_distance and add_sq_norm (mutants of them: tests/test_lr_free.py)"
        ),
        bad=(
            bad_args(reps_rel=0.0, message="reps_rel must be > 0"),
            bad_args(eps=-1e-8, message="eps must be >= 0"),
            bad_args(param_dtype=np.int32, message="param_dtype must be a floating or complex dtype"),
        ),
    ),
    # --- functions of trees and arrays ---------------------------------------------------------
    _utility(
        "update_moment",
        bad=(bad_args(updates=0.0, moments=0.0, decay=1.5, order=1, message="decay must be in [0, 1]"),),
    ),
    _utility("update_moment_per_elem_norm"),
    _utility(
        "update_infinity_moment",
        bad=(bad_args(updates=0.0, moments=0.0, decay=0.9, eps=-1.0, message="eps must be >= 0"),),
    ),
    _utility("bias_correction", bad=(bad_args(moment=0.0, decay=1.0, count=1, message="decay must be in [0, 1)"),)),
    _utility("safe_norm", reference=f"optax.safe_norm and its gradient at 0, {_TESTS}"),
    _utility("safe_root_mean_squares", reference=f"optax.safe_root_mean_squares and its gradient at 0, {_TESTS}"),
    _utility("safe_increment"),
    _utility("safe_int32_increment"),
    _utility("power_iteration", reference=f"optax.power_iteration; the top eigenpair by numpy.linalg.eigh, {_TESTS}"),
    _utility(
        "matrix_inverse_pth_root",
        reference=f"optax.matrix_inverse_pth_root (p = 1, 2, 4, 8); A^(-1/p) by numpy.linalg.eigh (p = 1..8), {_TESTS}",
        bad=(bad_args(matrix=np.eye(2), p=2.5, message="p must be a positive integer (a Python int)"),),
    ),
    _utility("multi_normal", reference=f"optax.multi_normal's samples and log_prob, {_TESTS}"),
    _utility(
        "value_and_grad_from_state",
        reference=f"optax.value_and_grad_from_state on an lbfgs state; jax.value_and_grad, {_TESTS}",
    ),
    _utility("init_empty_state"),
    Entry(
        "stateless_with_tree_map",
        "primitive",
        _UTILITIES,
        optax="stateless_with_tree_map",
        grid=(dict(f=pull_towards_params),),
        state=(),
    ),
    _utility("with_extra_args_support", reference=f"optax.with_extra_args_support's behaviour, {_TESTS}"),
    # --- types -------------------------------------------------------------------------------------
    *(
        Entry(name, "contract", _UTILITIES, optax=name)
        for name in (
            "GradientTransformationExtraArgs",
            "TransformInitFn",
            "TransformUpdateFn",
            "TransformUpdateExtraArgsFn",
            "MaskOrFn",
        )
    ),
]
