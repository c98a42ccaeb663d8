"""Registry rows of this family (see ``gradtx/rows/__init__.py``): SOAP and Shampoo, which
optax does not have, and the Kronecker-factored stages they are built from.

No optax twin: each is tested against ``pytorch_optimizer`` 4.1.0 (installed for the tests
only) in float64 over 50 steps, to rtol 1e-8, in ``tests/test_preconditioned.py``; the grids
here drive the registry's structural suites (state, dtypes, errors, Flax).
"""

from __future__ import annotations

from gradtx.rows._entry import Entry, bad_args, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_METHODS = "Recent methods"
_PRIMITIVES = "Recent primitives"
_TESTS = "tests/test_preconditioned.py"
_SOAP_REFERENCE = (
    "pytorch_optimizer 4.1.0 SOAP (float64, 50 steps, rtol 1e-8; its QR's float32 cast lifted), "
    f"precondition_frequency 1 and 3, one-sided and 1-D; the polar factor in closed form ({_TESTS})"
)
_SHAMPOO_REFERENCE = (
    "pytorch_optimizer 4.1.0 ScalableShampoo(use_svd=True, shape_interpretation=False) (float64, 50 steps, "
    f"rtol 1e-8), blocked, grafted (sgd, rmsprop, sqrtn, none); the polar factor in closed form ({_TESTS})"
)
_FREQUENCY_BAD = bad_args(learning_rate=0.1, precondition_frequency=0, message="precondition_frequency must be >= 1")

ROWS: list[Entry] = [
    optimizer_row(
        "soap",
        _METHODS,
        [
            dict(learning_rate=3e-3),
            dict(
                learning_rate=0.02,
                b1=0.9,
                b2=0.8,
                shampoo_beta=0.7,
                eps=1e-3,
                weight_decay=0.1,
                precondition_frequency=3,
                max_precondition_dim=2,
                precondition_1d=True,
            ),
            dict(learning_rate=S, precondition_frequency=1),
        ],
        ("count", "mu", "nu", "kronecker_factors", "eigenbases"),
        optax=None,
        reference=_SOAP_REFERENCE,
        bad=(
            bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
            bad_args(learning_rate=0.1, b1=1.0, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=0.1, b2=-0.5, message="b2 must be in [0, 1)"),
            bad_args(learning_rate=0.1, shampoo_beta=1.5, message="shampoo_beta must be in [0, 1]"),
            bad_args(learning_rate=0.1, eps=-1e-8, message="eps must be >= 0"),
            bad_args(learning_rate=0.1, weight_decay=-0.1, message="weight_decay must be >= 0"),
            _FREQUENCY_BAD,
            bad_args(learning_rate=0.1, max_precondition_dim=0, message="max_precondition_dim must be >= 1"),
        ),
    ),
    optimizer_row(
        "shampoo",
        _METHODS,
        [
            dict(learning_rate=0.02),
            dict(
                learning_rate=0.02,
                b1=0.8,
                b2=0.95,
                block_size=2,
                precondition_frequency=3,
                start_preconditioning_step=5,
                matrix_eps=1e-3,
                diagonal_eps=1e-3,
                graft_type="rmsprop",
                nesterov=False,
                inverse_exponent_override=2,
                max_precondition_dim=4,
                weight_decay=0.1,
                decoupled_weight_decay=True,
            ),
            dict(learning_rate=S, precondition_frequency=2, start_preconditioning_step=2, graft_type="sqrtn"),
        ],
        ("count", "graft_trace", "kronecker_factors", "inverse_roots", "trace"),
        optax=None,
        reference=_SHAMPOO_REFERENCE,
        bad=(
            bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
            bad_args(learning_rate=0.1, b1=1.5, message="b1 must be in [0, 1]"),
            bad_args(learning_rate=0.1, b2=-0.1, message="b2 must be in [0, 1]"),
            bad_args(learning_rate=0.1, block_size=0, message="block_size must be >= 1"),
            _FREQUENCY_BAD,
            bad_args(
                learning_rate=0.1, start_preconditioning_step=0, message="start_preconditioning_step must be >= 1"
            ),
            bad_args(learning_rate=0.1, matrix_eps=-1.0, message="matrix_eps must be >= 0"),
            bad_args(learning_rate=0.1, diagonal_eps=-1.0, message="diagonal_eps must be >= 0"),
            bad_args(
                learning_rate=0.1,
                graft_type="adam",
                message="graft_type must be one of 'sgd', 'rmsprop', 'sqrtn', 'none'",
            ),
            bad_args(learning_rate=0.1, inverse_exponent_override=-2, message="inverse_exponent_override must be >= 0"),
            bad_args(learning_rate=0.1, weight_decay=-0.1, message="weight_decay must be >= 0"),
        ),
    ),
    primitive_row(
        "scale_by_soap",
        _PRIMITIVES,
        [{}, dict(b1=0.9, b2=0.8, shampoo_beta=0.7, eps=1e-3, precondition_frequency=3, max_precondition_dim=2)],
        ("count", "mu", "nu", "kronecker_factors", "eigenbases"),
        reference=f"soap against pytorch_optimizer 4.1.0 SOAP; its own mutants ({_TESTS})",
        bad=(
            bad_args(b1=1.5, message="b1 must be in [0, 1)"),
            bad_args(precondition_frequency=0, message="precondition_frequency must be >= 1"),
        ),
    ),
    primitive_row(
        "scale_by_shampoo",
        _PRIMITIVES,
        [{}, dict(start_preconditioning_step=1, precondition_frequency=1, block_size=2, graft_type="none")],
        ("count", "graft_trace", "kronecker_factors", "inverse_roots", "trace"),
        reference=f"shampoo against pytorch_optimizer 4.1.0 ScalableShampoo ({_TESTS})",
        bad=(bad_args(start_preconditioning_step=0, message="start_preconditioning_step must be >= 1"),),
    ),
    primitive_row(
        "scale_by_kronecker_roots",
        _PRIMITIVES,
        [{}, dict(b2=0.9, block_size=2, precondition_frequency=2, matrix_eps=1e-3, inverse_exponent_override=2)],
        ("count", "kronecker_factors", "inverse_roots"),
        reference=f"(G G^T)^(-1/4) G (G^T G)^(-1/4) = U V^T in closed form; shampoo against ScalableShampoo ({_TESTS})",
        bad=(
            bad_args(b2=1.5, message="b2 must be in [0, 1]"),
            bad_args(block_size=0, message="block_size must be >= 1"),
            bad_args(precondition_frequency=0, message="precondition_frequency must be >= 1"),
            bad_args(max_precondition_dim=0, message="max_precondition_dim must be >= 1"),
        ),
    ),
    primitive_row(
        "skip_first_step",
        _PRIMITIVES,
        [{}],
        ("count",),
        reference=f"soap's first step against SOAP's; the closed form u -> 0, then u ({_TESTS})",
    ),
    primitive_row(
        "decay_stepped_params",
        _PRIMITIVES,
        [dict(weight_decay=0.1, learning_rate=0.5), dict(weight_decay=0.1, learning_rate=S)],
        reference=f"soap's weight decay against SOAP's; the closed form (p + u) * (1 - lr * wd) - p ({_TESTS})",
        bad=(bad_args(weight_decay=-0.1, message="weight_decay must be >= 0"),),
    ),
    Entry("graft_until", "combinator", _PRIMITIVES, reference=f"shampoo's start_preconditioning_step ({_TESTS})"),
]
