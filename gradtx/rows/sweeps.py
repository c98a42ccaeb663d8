"""Registry rows of this family (see ``gradtx/rows/__init__.py``): hyperparameter sweeps in
one compiled program (``gradtx.sweeps``) and the diagnostics that observe training without
changing it (``gradtx.diagnostics``).

The diagnostics have no optax twin: ``tests/test_diagnostics.py`` checks each recorded
value against its formula in numpy (float64) with a wrong-formula mutant that must fail,
and that chaining any one of them after every registry optimizer leaves its updates bit for
bit. ``tests/test_sweeps.py`` runs sweeps against the same settings run one by one.
"""

from __future__ import annotations

from gradtx.optimizers.sgd import sgd
from gradtx.rows._entry import Entry, bad_args, primitive_row

_DIAGNOSTICS = "Diagnostics"
_SWEEPS = "Sweeps"
_DIAGNOSTICS_TESTS = (
    "its formula in numpy float64 over 5 steps of a nested tree, whole and per leaf (float32 rtol 1e-5), "
    "a wrong-formula mutant that must fail; updates bit for bit after every registry optimizer "
    "(tests/test_diagnostics.py)"
)
_PER_LEAF = [{}, dict(per_leaf=True)]
_RESET_BAD = (
    bad_args(reset_every=0, message="reset_every must be >= 1"),
    bad_args(TypeError, "reset_every must be an integer, got float", reset_every=2.5),
)


ROWS: list[Entry] = [
    primitive_row("update_norm", _DIAGNOSTICS, _PER_LEAF, ("update_norm",), reference=_DIAGNOSTICS_TESTS),
    primitive_row("update_ratio", _DIAGNOSTICS, _PER_LEAF, ("update_ratio",), reference=_DIAGNOSTICS_TESTS),
    primitive_row(
        "oscillation", _DIAGNOSTICS, _PER_LEAF, ("previous_sign", "oscillation"), reference=_DIAGNOSTICS_TESTS
    ),
    primitive_row(
        "update_cosine", _DIAGNOSTICS, _PER_LEAF, ("previous_update", "cosine"), reference=_DIAGNOSTICS_TESTS
    ),
    primitive_row(
        "distance_travelled",
        _DIAGNOSTICS,
        [{}, dict(per_leaf=True, reset_every=3)],
        ("count", "origin", "distance"),
        reference=_DIAGNOSTICS_TESTS,
        bad=_RESET_BAD,
    ),
    primitive_row(
        "training_diagnostics",
        _DIAGNOSTICS,
        [{}, dict(per_leaf=True, reset_every=3)],
        (
            "count",
            "previous_update",
            "origin",
            "update_norm",
            "update_ratio",
            "oscillation",
            "cosine",
            "distance",
        ),
        reference="the five diagnostics chained, value for value (float32 rtol 1e-5); " + _DIAGNOSTICS_TESTS,
        bad=_RESET_BAD,
    ),
    Entry(
        "diagnostics_in",
        "utility",
        _DIAGNOSTICS,
        reference="the recorded fields of a chain's, a wrapper's and a sweep's state, returned by a jitted "
        "lax.scan step by step (tests/test_diagnostics.py)",
    ),
    Entry(
        "scan_observing",
        "utility",
        _DIAGNOSTICS,
        reference="lax.scan of the same step with observe = observed_steps(...) given as traced booleans, "
        "step by step (rtol 1e-6), lengths a multiple of every or not; unobserved steps hand the updates on "
        "bit for bit (tests/test_diagnostics.py)",
        bad=(
            bad_args(message="every must be an int >= 1", step=None, init=None, xs=None, every=0),
            bad_args(message="observed must be at most every (2)", step=None, init=None, xs=None, every=2, observed=3),
        ),
    ),
    Entry(
        "observed_steps",
        "utility",
        _DIAGNOSTICS,
        reference="the blocks written out by hand (tests/test_diagnostics.py)",
        bad=(
            bad_args(message="length must be an int >= 0", length=-1, every=2),
            bad_args(message="observed must be an int >= 1", length=4, every=2, observed=0),
        ),
    ),
    Entry(
        "sweep",
        "utility",
        _SWEEPS,
        reference="setting by setting, the same settings run one by one: sgd, momentum, Nesterov (a "
        "structural split), rmsprop, adam, adagrad, adadelta, clip_by_global_norm + adamw, a schedule's "
        "parameter; 100 steps in a lax.scan, float32 rtol 1e-5 (tests/test_sweeps.py)",
        bad=(
            bad_args(message="grid must give at least one setting", factory=sgd, grid={}),
            bad_args(
                message="grid must give at least one setting (grid['learning_rate'] is empty)",
                factory=sgd,
                grid={"learning_rate": []},
            ),
            bad_args(
                message="grid's lists must have one length with mode='zip', got learning_rate: 2, momentum: 1",
                factory=sgd,
                grid={"learning_rate": [0.1, 0.01], "momentum": [0.9]},
                mode="zip",
            ),
            bad_args(
                message="grid names lr, which gradtx.sgd does not take "
                "(it takes learning_rate, momentum, nesterov, accumulator_dtype)",
                factory=sgd,
                grid={"lr": [0.1]},
            ),
            bad_args(
                TypeError,
                "grid['learning_rate'] must hold numbers or schedules (gradtx.sgd's learning_rate is numeric), "
                "got str 'fast'",
                factory=sgd,
                grid={"learning_rate": [0.1, "fast"]},
            ),
            bad_args(mode="cartesian", message="mode must be one of 'product', 'zip'", factory=sgd, grid={}),
        ),
    ),
    Entry("Sweep", "utility", _SWEEPS, reference="tests/test_sweeps.py"),
    Entry("SweepGroup", "utility", _SWEEPS, reference="tests/test_sweeps.py"),
    Entry("SweepTable", "utility", _SWEEPS, reference="tests/test_sweeps.py"),
]
