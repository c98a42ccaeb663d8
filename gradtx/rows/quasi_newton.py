"""Registry rows of this family (see ``gradtx/rows/__init__.py``): L-BFGS's two-loop
recursion, the zoom and the backtracking line searches.

Their ``update`` takes the objective (``value=``, ``grad=``, ``value_fn=``), which the
registry-driven parity runner does not pass: they are tested against optax 0.2.8 in
optax's documented loop in ``tests/test_quasi_newton.py``, and their rows have no grid.
"""

from __future__ import annotations

from gradtx.rows._entry import Entry, bad_args, optimizer_row, primitive_row

_SCALING = "Rescalers and preconditioners"
_LBFGS_STATE = (
    "count",
    "params",
    "updates",
    "diff_params_memory",
    "diff_updates_memory",
    "weights_memory",
    "learning_rate",
    "value",
    "grad",
    "num_linesearch_steps",
    "decrease_error",
    "curvature_error",
)

ROWS: list[Entry] = [
    optimizer_row(
        "lbfgs",
        "Quasi-Newton",
        [{}],
        _LBFGS_STATE,
        optax=None,
        needs_objective=True,
        reference="optax.lbfgs in optax's loop: Rosenbrock (2-D, 10-D), least squares (tests/test_quasi_newton.py)",
        bad=(bad_args(memory_size=0, message="memory_size must be >= 1"),),
    ),
    primitive_row(
        "scale_by_lbfgs",
        _SCALING,
        reference="optax.lbfgs and optax.scale_by_lbfgs in optax's loop (tests/test_quasi_newton.py)",
        bad=(bad_args(memory_size=0, message="memory_size must be >= 1"),),
    ),
    primitive_row(
        "scale_by_zoom_linesearch",
        _SCALING,
        reference="optax.lbfgs and optax.scale_by_zoom_linesearch in optax's loop; the strong Wolfe "
        "conditions in closed form (tests/test_quasi_newton.py)",
        bad=(
            bad_args(max_linesearch_steps=0, message="max_linesearch_steps must be >= 1"),
            bad_args(max_linesearch_steps=10, slope_rtol=1.0, message="slope_rtol must be in [0, 1)"),
            bad_args(max_linesearch_steps=10, curv_rtol=0.0, message="curv_rtol must be > 0"),
            bad_args(max_linesearch_steps=10, increase_factor=0.5, message="increase_factor must be >= 1"),
            bad_args(
                max_linesearch_steps=10,
                initial_guess_strategy="two",
                message="initial_guess_strategy must be one of 'keep', 'one'",
            ),
        ),
    ),
    primitive_row(
        "scale_by_backtracking_linesearch",
        _SCALING,
        needs_objective=True,
        reference="optax.chain(optax.sgd(1), optax.scale_by_backtracking_linesearch) in optax's loop; the "
        "Armijo condition in closed form (tests/test_quasi_newton.py)",
        bad=(
            bad_args(max_backtracking_steps=-1, message="max_backtracking_steps must be >= 0"),
            bad_args(max_backtracking_steps=10, slope_rtol=0.0, message="slope_rtol must be in (0, 1)"),
            bad_args(max_backtracking_steps=10, decrease_factor=1.0, message="decrease_factor must be in (0, 1)"),
            bad_args(max_backtracking_steps=10, increase_factor=0.5, message="increase_factor must be >= 1"),
            bad_args(max_backtracking_steps=10, max_learning_rate=0.0, message="max_learning_rate must be > 0"),
            bad_args(max_backtracking_steps=10, atol=-1.0, message="atol must be >= 0"),
            bad_args(max_backtracking_steps=10, rtol=-1.0, message="rtol must be >= 0"),
        ),
    ),
]
