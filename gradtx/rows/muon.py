"""Registry rows of this family (see ``gradtx/rows/__init__.py``): Muon, its direction, the
Newton-Schulz stage, the shape scaling and the dimension numbers.

Muon has an optax twin (``optax.contrib.muon``) but no ``optax=`` here: the registry's
parity suite runs every twin eagerly for 200 steps, and optax's eager Newton-Schulz
retraces its loop at every step (about a second a step on this tree). ``TEST_FILE`` runs
the same grid against optax.contrib: jitted, float32 (rtol 1e-5) and float64 (rtol 1e-10),
200 steps, and eagerly for 8 steps.
"""

from __future__ import annotations

from gradtx.rows._entry import Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_METHODS = "Recent methods"
_PRIMITIVES = "Recent primitives"
TEST_FILE = "tests/test_muon.py"


MUON_GRID = [
    dict(learning_rate=0.02),
    dict(
        learning_rate=S,
        ns_steps=3,
        beta=0.8,
        eps=1e-3,
        weight_decay=0.1,
        nesterov=False,
        adam_b1=0.8,
        adam_b2=0.95,
        adam_eps_root=1e-4,
        adam_weight_decay=0.05,
        adam_learning_rate=0.01,
        consistent_rms=0.3,
    ),
    dict(
        learning_rate=0.02,
        ns_coeffs="dion",
        preconditioning="aol",
        adaptive=True,
        weight_decay=0.1,
        weight_decay_mask=ndim_above_one,
    ),
    dict(learning_rate=0.02, ns_coeffs=((3.0, -3.2, 1.2), (3.4445, -4.775, 2.0315)), preconditioning="schatten"),
    dict(learning_rate=0.02, preconditioning="spectral", eps=1e-3),
]

_NS_BAD = (
    bad_args(ns_steps=0, message="ns_steps must be >= 1"),
    bad_args(TypeError, "ns_steps must be an integer, got float", ns_steps=2.5),
    bad_args(ns_coeffs=(1.0, 2.0), message="ns_coeffs must be of shape (3,) or (n, 3), got shape (2,)"),
    bad_args(eps=-1.0, message="eps must be >= 0"),
    bad_args(
        preconditioning="polar", message="preconditioning must be one of 'frobenius', 'spectral', 'aol', 'schatten'"
    ),
)

ROWS: list[Entry] = [
    optimizer_row(
        "muon",
        _METHODS,
        MUON_GRID,
        state=("inner_states",),
        optax=None,
        reference=f"optax.contrib.muon over this grid, jitted float32 / float64 200 steps and eagerly 8 steps; "
        f"torch.optim.Muon (adjust_lr_fn) in float64 ({TEST_FILE})",
        bad=(
            bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
            bad_args(learning_rate=0.1, beta=1.0, message="beta must be in [0, 1)"),
            bad_args(learning_rate=0.1, ns_steps=0, message="ns_steps must be >= 1"),
            bad_args(learning_rate=0.1, eps=-1e-8, message="eps must be >= 0"),
            bad_args(learning_rate=0.1, ns_coeffs="polar", message="ns_coeffs must be one of 'standard', 'dion'"),
            bad_args(learning_rate=0.1, adam_b2=1.5, message="adam_b2 must be in [0, 1)"),
            bad_args(learning_rate=0.1, weight_decay=-0.1, message="weight_decay must be >= 0"),
            bad_args(learning_rate=0.1, consistent_rms=-0.2, message="consistent_rms must be >= 0"),
            bad_args(
                learning_rate=0.1,
                adjust_lr_fn="torch",
                message="adjust_lr_fn must be one of 'original', 'match_rms_adamw'",
            ),
            bad_args(
                learning_rate=0.1,
                consistent_rms=0.2,
                adjust_lr_fn="original",
                message="adjust_lr_fn='original' sets the shape scaling; leave consistent_rms None",
            ),
            bad_args(
                learning_rate=0.1,
                ns_coeffs="dion",
                ns_steps=3,
                message="ns_coeffs has 5 rows (one per step), more than ns_steps=3",
            ),
        ),
    ),
    primitive_row(
        "scale_by_muon",
        _PRIMITIVES,
        [{}, dict(ns_steps=3, beta=0.8, eps=1e-3, nesterov=False, adaptive=True, preconditioning="aol")],
        ("count", "mu"),
        dtypes={"mu_dtype": "mu"},
        absent={"ns_coeffs": "a constant of the call (the coefficients), not state: gradtx keeps it in the stage"},
        reference=f"optax.contrib.scale_by_muon on trees of matrices and a conv kernel with dimension numbers, "
        f"float64 rtol 1e-10 / float32 rtol 1e-5, 200 steps ({TEST_FILE})",
        bad=(*_NS_BAD, bad_args(beta=1.0, message="beta must be in [0, 1)")),
    ),
    primitive_row(
        "newton_schulz",
        _PRIMITIVES,
        [{}, dict(ns_steps=8, preconditioning="spectral")],
        (),
        reference=f"the singular-value band of optax's coefficients, the polar factor U V^T (numpy SVD) with the "
        f"cubic coefficients (1.5, -0.5, 0), and optax's orthogonalize_via_newton_schulz ({TEST_FILE})",
        bad=_NS_BAD,
    ),
    primitive_row(
        "scale_by_shape",
        _PRIMITIVES,
        [{}, dict(consistent_rms=0.2)],
        (),
        reference=f"the closed forms sqrt(max(1, fan_out / fan_in)) and sqrt(max(fan_in, fan_out)) * rms; muon "
        f"against optax.contrib.muon ({TEST_FILE})",
        bad=(bad_args(consistent_rms=-1.0, message="consistent_rms must be >= 0"),),
    ),
    Entry(
        "MuonDimensionNumbers",
        "contract",
        _PRIMITIVES,
        optax="contrib.MuonDimensionNumbers",
        reference=f"optax.contrib.MuonDimensionNumbers: the same fields and defaults ({TEST_FILE})",
    ),
]
