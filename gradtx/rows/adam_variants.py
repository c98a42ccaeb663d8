"""Registry rows of this family (see ``gradtx/rows/__init__.py``): the Adam variants
(``gradtx/optimizers/adam.py``) and their statistics (``gradtx/adaptive_moments.py``).

Two rows have no optax twin because optax 0.2.8 is wrong there and gradtx is not (their
references are in ``tests/test_adam_variants.py``): ``adan`` / ``scale_by_adan`` weight
the gradient difference by ``1 - b2`` where the paper's weight is ``b2`` (equal only at
``b2 = 0.5``, where ``scale_by_adan`` keeps an optax twin), and ``yogi`` starts its first
moment at 1e-6 where the paper starts it at 0 (equal when ``scale_by_yogi``'s
``initial_accumulator_value`` is 0).
"""

from __future__ import annotations

import numpy as np

from gradtx.rows._entry import BF16, Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_FAMILY = "The Adam family"
_MOMENTS = "Running statistics"
_ADAM_STATE = ("count", "mu", "nu")
_ADAN_STATE = ("count", "m", "g", "v", "n")
# every hyperparameter off its default (decays not 0.5, eps large enough to matter at float32)
_MOVED = dict(b1=0.8, b2=0.95, eps=1e-3)
_ADAN_MOVED = dict(b1=0.9, b2=0.8, b3=0.95, eps=1e-3, eps_root=1e-4)
# where optax's (1 - b2) equals the paper's b2: everything else of Adan against optax
_ADAN_AT_HALF = dict(b1=0.9, b2=0.5, b3=0.95, eps=1e-3, eps_root=1e-4)

ROWS: list[Entry] = [
    optimizer_row(
        "nadamw",
        _FAMILY,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_MOVED, eps_root=1e-4, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=1e-2, eps=1e-3, mu_dtype=BF16),
            dict(learning_rate=1e-2, eps=1e-3, weight_decay=0.1, nesterov=False),
            dict(learning_rate=S, eps=1e-3, weight_decay=S),
        ],
        state=_ADAM_STATE,
        dtypes={"mu_dtype": "mu", "nu_dtype": "nu"},
        bad=(
            bad_args(learning_rate=-1e-3, message="learning_rate must be >= 0"),
            bad_args(learning_rate=1e-3, weight_decay=-0.1, message="weight_decay must be >= 0"),
            bad_args(learning_rate=1e-3, b2=1.0, message="b2 must be in [0, 1)"),
        ),
    ),
    optimizer_row(
        "adamaxw",
        _FAMILY,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_MOVED, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, eps=1e-3, weight_decay=0.05),
        ],
        state=_ADAM_STATE,
        bad=(
            bad_args(learning_rate=1e-3, b1=1.0, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=1e-3, b2=1.5, message="b2 must be in [0, 1]"),
        ),
    ),
    optimizer_row(
        "radam",
        _FAMILY,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_MOVED, eps_root=1e-4, threshold=6.0),
            dict(learning_rate=1e-2, **_MOVED, eps_root=1e-4, threshold=6.0, nesterov=True),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=_ADAM_STATE,
        bad=(
            bad_args(learning_rate=1e-3, b2=1.0, message="b2 must be in [0, 1)"),
            bad_args(TypeError, "threshold must be a number or an array, got str", learning_rate=1e-3, threshold="5"),
        ),
    ),
    optimizer_row(
        "adabelief",
        _FAMILY,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_MOVED, eps_root=1e-4),
            dict(learning_rate=1e-2, **_MOVED, eps_root=1e-4, nesterov=True),
            dict(learning_rate=S, eps=1e-3, eps_root=1e-4),
        ],
        state=_ADAM_STATE,
        bad=(
            bad_args(learning_rate=1e-3, eps=-1e-16, message="eps must be >= 0"),
            bad_args(learning_rate=1e-3, eps_root=-1.0, message="eps_root must be >= 0"),
        ),
    ),
    optimizer_row(
        "yogi",
        _FAMILY,
        [dict(learning_rate=1e-2), dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-2), dict(learning_rate=S)],
        state=_ADAM_STATE,
        optax=None,
        reference=(
            "optax.yogi with its first moment started at 0 (the paper's m_0 = 0; optax starts it at 1e-6), "
            "200 steps, jit float32/float64 and eager; Yogi's sign(v - g^2) update in closed form"
        ),
        bad=(bad_args(learning_rate=1e-3, b1=1.0, message="b1 must be in [0, 1)"),),
    ),
    optimizer_row(
        "adan",
        _FAMILY,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_ADAN_MOVED, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=_ADAN_STATE,
        optax=None,
        reference=(
            "the authors' algorithm (sail-sg/Adan, Algorithm 1 of arXiv:2208.06677) in numpy float64; "
            "optax.adan at b2 = 0.5, where optax's (1 - b2) weight is the paper's b2"
        ),
        bad=(
            bad_args(learning_rate=1e-3, b3=1.5, message="b3 must be in [0, 1)"),
            bad_args(learning_rate=1e-3, eps_root=-1e-8, message="eps_root must be >= 0"),
        ),
    ),
    # --- the directions -------------------------------------------------------------------
    primitive_row(
        "scale_by_radam",
        _MOMENTS,
        [{}, dict(**_MOVED, eps_root=1e-4, threshold=6.0), dict(**_MOVED, threshold=6.0, nesterov=True)],
        _ADAM_STATE,
        optax="scale_by_radam",
    ),
    primitive_row(
        "scale_by_belief",
        _MOMENTS,
        [{}, dict(**_MOVED, eps_root=1e-4), dict(**_MOVED, eps_root=1e-4, nesterov=True)],
        _ADAM_STATE,
        optax="scale_by_belief",
    ),
    primitive_row(
        "scale_by_yogi",
        _MOMENTS,
        # optax starts mu at initial_accumulator_value, gradtx at 0 (the paper's m_0): equal at 0
        [dict(initial_accumulator_value=0.0), dict(**_MOVED, eps_root=1e-4, initial_accumulator_value=0.0)],
        _ADAM_STATE,
        optax="scale_by_yogi",
        bad=(bad_args(initial_accumulator_value=-1e-6, message="initial_accumulator_value must be >= 0"),),
    ),
    primitive_row(
        "scale_by_adan",
        _MOMENTS,
        [dict(b2=0.5), _ADAN_AT_HALF],
        _ADAN_STATE,
        optax="scale_by_adan",
        renames={"count": "t"},
        bad=(bad_args(b2=np.array([0.9, 1.0]), message="b2 must be in [0, 1)"),),
    ),
    # --- the new statistics -------------------------------------------------------------
    primitive_row(
        "rectification",
        _MOMENTS,
        [dict(b2=0.95, threshold=6.0)],
        ("count",),
        reference="scale_by_radam and radam against optax; the switch at rho_t >= threshold in closed form",
        bad=(bad_args(b2=1.0, message="b2 must be in [0, 1)"),),
    ),
    primitive_row(
        "belief_moment",
        _MOMENTS,
        [dict(decay=0.95, eps_root=1e-4)],
        ("nu",),
        reference="scale_by_belief and adabelief against optax",
        bad=(bad_args(decay=1.5, message="decay must be in [0, 1]"),),
    ),
    primitive_row(
        "yogi_moment",
        _MOMENTS,
        [dict(decay=0.95, initial_accumulator_value=0.5)],
        ("nu",),
        reference="scale_by_yogi against optax; the sign(nu - g^2) update in closed form",
        bad=(bad_args(decay=0.9, initial_accumulator_value=-1.0, message="initial_accumulator_value must be >= 0"),),
    ),
    primitive_row(
        "gradient_difference",
        _MOMENTS,
        [{}],
        ("count", "g"),
        reference="scale_by_adan against optax at b2 = 0.5; g_k - g_{k-1} in closed form",
    ),
]
