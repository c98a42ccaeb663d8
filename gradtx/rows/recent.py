"""Registry rows of this family (see ``gradtx/rows/__init__.py``): ADOPT, AdEMAMix, simplified
AdEMAMix, MADGRAD, ACProp (optax.contrib 0.2.8's), their primitives, and the cautious wrapper.

Where optax departs from the paper (``acprop``: the prediction error against the previous
average), the parity grid sits where the two agree (``b1 = 1``) and ``tests/test_recent.py``
checks the paper's rule in numpy float64 at every other setting.
"""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.rows._entry import BF16, Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_METHODS = "Recent methods"
_PRIMITIVES = "Recent primitives"
_TESTS = "tests/test_recent.py"
_LR_BAD = bad_args(learning_rate=-0.1, message="learning_rate must be >= 0")
_ALPHA_BAD = bad_args(learning_rate=0.1, alpha=-1.0, message="alpha must be >= 0")


def alpha_warmup(count):
    """AdEMAMix's alpha scheduler, ``min(t * alpha / T, alpha)`` with alpha 4 and T 50 (the
    parity grids' schedule for ``alpha``; arXiv:2409.03137, eq. 3)."""
    return jnp.minimum(count * 4.0 / 50, 4.0)


def b3_warmup(count):
    """AdEMAMix's b3 scheduler from ``b1 = 0.9`` to ``b3 = 0.99`` over 50 steps, the paper's
    ``exp(ln b1 ln b3 / ((1 - t/T) ln b3 + t/T ln b1))`` capped at b3 (arXiv:2409.03137, eq. 3)."""
    frac = jnp.minimum(count / 50.0, 1.0)  # 50.0: the float dtype of the run (float64 under x64)
    ln1, ln3 = jnp.log(0.9), jnp.log(0.99)
    return jnp.minimum(jnp.exp(ln1 * ln3 / ((1 - frac) * ln3 + frac * ln1)), 0.99)


def half_quarter_root(count):
    """A clipping bound for ADOPT's parity grid, ``0.5 * (t + 1)^(1/4)``: tighter than the
    default, so that the clipping binds."""
    return 0.5 * (count + 1) ** 0.25


_ADOPT_MOVED = dict(b1=0.8, b2=0.95, eps=0.1)
_ADEMAMIX_MOVED = dict(b1=0.8, b2=0.95, b3=0.99, alpha=2.0, eps=1e-3, eps_root=1e-4)
_SIMPLIFIED_MOVED = dict(b1=0.8, b2=0.9, alpha=2.0, eps=1e-3, eps_root=1e-4)
# b1 = 1 keeps m at 0: optax's prediction error (against m_{t-1}) is then the paper's (against m_t)
_ACPROP_AT_ONE = dict(b1=1.0, b2=0.95, eps=1e-3, eps_root=1e-4)
_DECAY = dict(weight_decay=0.1, mask=ndim_above_one)
_ACPROP_REFERENCE = (
    f"the paper's Algorithm 2 (the authors' code) in numpy float64 ({_TESTS}); "
    "optax.contrib at b1 = 1, where its prediction error g - m_(t-1) is the paper's g - m_t"
)

ROWS: list[Entry] = [
    # --- the optimizers ----------------------------------------------------------------------
    optimizer_row(
        "adopt",
        _METHODS,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_ADOPT_MOVED, nesterov=True, clip_value_fn=half_quarter_root),
            dict(learning_rate=S, **_ADOPT_MOVED, use_clipping=False),
        ],
        state=("count", "nu", "mu"),
        optax="contrib.adopt",
        dtypes={"mu_dtype": "mu"},
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, b1=1.5, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=0.1, b2=1.0, message="b2 must be in [0, 1)"),
            bad_args(learning_rate=0.1, eps=-1e-6, message="eps must be >= 0"),
        ),
    ),
    optimizer_row(
        "ademamix",
        _METHODS,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, **_ADEMAMIX_MOVED, **_DECAY),
            dict(learning_rate=S, b3=b3_warmup, alpha=alpha_warmup, eps=1e-3, weight_decay=S),
        ],
        state=("count", "m1", "m2", "nu"),
        optax="contrib.ademamix",
        dtypes={"mu_dtype": ("m1", "m2")},
        absent={"count_m2": "optax counts the slow average's steps apart; it always equals count"},
        bad=(
            _LR_BAD,
            _ALPHA_BAD,
            bad_args(learning_rate=0.1, b1=1.0, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=0.1, b3=1.5, message="b3 must be in [0, 1]"),
            bad_args(learning_rate=0.1, eps_root=-1.0, message="eps_root must be >= 0"),
        ),
    ),
    optimizer_row(
        "simplified_ademamix",
        _METHODS,
        [
            dict(learning_rate=1e-3),
            dict(learning_rate=1e-3, **_SIMPLIFIED_MOVED, **_DECAY),
            dict(learning_rate=S, alpha=alpha_warmup, eps=1e-3),
        ],
        state=("count", "m", "n"),
        optax="contrib.simplified_ademamix",
        renames={"count": "t"},
        absent={"count": "optax's learning-rate schedule counts the steps again; gradtx keeps one count, optax's t"},
        bad=(
            _LR_BAD,
            _ALPHA_BAD,
            bad_args(learning_rate=0.1, b1=-0.5, message="b1 must be in [0, 1]"),
            bad_args(learning_rate=0.1, b2=1.0, message="b2 must be in [0, 1)"),
        ),
    ),
    optimizer_row(
        "madgrad",
        _METHODS,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, momentum=0.8, weight_decay=0.1, eps=1e-3),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=("count", "grad_sum_sq", "s", "x0"),
        optax="contrib.madgrad",
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, momentum=1.5, message="momentum must be in [0, 1]"),
            bad_args(learning_rate=0.1, weight_decay=-0.1, message="weight_decay must be >= 0"),
            bad_args(learning_rate=0.1, eps=-1.0, message="eps must be >= 0"),
        ),
    ),
    optimizer_row(
        "acprop",
        _METHODS,
        [
            dict(learning_rate=1e-2, b1=1.0),
            dict(learning_rate=1e-2, **_ACPROP_AT_ONE, **_DECAY),
            dict(learning_rate=S, b1=1.0, eps=1e-3),
        ],
        state=("count", "mu", "nu"),
        optax="contrib.acprop",
        reference=_ACPROP_REFERENCE,
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, b1=1.5, message="b1 must be in [0, 1]"),
            bad_args(learning_rate=0.1, b2=1.0, message="b2 must be in [0, 1)"),
            bad_args(learning_rate=0.1, eps=-1.0, message="eps must be >= 0"),
        ),
    ),
    Entry(
        "cautious",
        "wrapper",
        _METHODS,
        reference=(
            "the paper's Algorithm 1 in numpy float64 on adamw and sgd with momentum, 50 steps, and "
            f"pytorch_optimizer 4.1.0's Lion(cautious=True) and ADOPT(cautious=True) in float64 ({_TESTS})"
        ),
        bad=(bad_args(TypeError, "inner must be a gradient transformation (init, update), got int", inner=3),),
    ),
    # --- the directions (optax.contrib's stages) ------------------------------------------
    primitive_row(
        "scale_by_adopt",
        _PRIMITIVES,
        [{}, dict(**_ADOPT_MOVED, nesterov=True)],
        ("count", "nu", "mu"),
        optax="contrib.scale_by_adopt",
        dtypes={"mu_dtype": "mu"},
        bad=(bad_args(b2=-0.1, message="b2 must be in [0, 1)"),),
    ),
    primitive_row(
        "scale_by_ademamix",
        _PRIMITIVES,
        [dict(alpha=1.0), _ADEMAMIX_MOVED],
        ("count", "m1", "m2", "nu"),
        optax="contrib.scale_by_ademamix",
        dtypes={"mu_dtype": ("m1", "m2")},
        absent={"count_m2": "optax counts the slow average's steps apart; it always equals count"},
        bad=(bad_args(alpha=-2.0, message="alpha must be >= 0"),),
    ),
    primitive_row(
        "scale_by_simplified_ademamix",
        _PRIMITIVES,
        [dict(b1=0.9), _SIMPLIFIED_MOVED],
        ("count", "m", "n"),
        optax="contrib.scale_by_simplified_ademamix",
        renames={"count": "t"},
        bad=(bad_args(eps=-1.0, message="eps must be >= 0"),),
    ),
    primitive_row(
        "scale_by_madgrad",
        _PRIMITIVES,
        [dict(learning_rate=1e-2), dict(learning_rate=S, momentum=0.8, eps=1e-3)],
        ("count", "grad_sum_sq", "s", "x0"),
        optax="contrib.scale_by_madgrad",
        bad=(bad_args(learning_rate=0.1, momentum=-0.1, message="momentum must be in [0, 1]"),),
    ),
    primitive_row(
        "scale_by_acprop",
        _PRIMITIVES,
        [dict(b1=1.0), _ACPROP_AT_ONE],
        ("count", "mu", "nu"),
        optax="contrib.scale_by_acprop",
        reference=_ACPROP_REFERENCE,
        bad=(bad_args(eps_root=-1.0, message="eps_root must be >= 0"),),
    ),
    # --- AdEMAMix's schedulers ---------------------------------------------------------------
    Entry(
        "ademamix_alpha_schedule",
        "schedule",
        _METHODS,
        reference=f"pytorch_optimizer 4.1.0's AdEMAMix(t_alpha_beta3=...) in float64, 50 steps ({_TESTS})",
        bad=(
            bad_args(alpha=-1.0, warmup=10, message="alpha must be >= 0"),
            bad_args(alpha=5.0, warmup=0, message="warmup must be > 0"),
        ),
    ),
    Entry(
        "ademamix_b3_schedule",
        "schedule",
        _METHODS,
        reference=f"pytorch_optimizer 4.1.0's AdEMAMix(t_alpha_beta3=...) in float64, 50 steps ({_TESTS})",
        bad=(
            bad_args(b1=0.0, b3=0.999, warmup=10, message="b1 must be in (0, 1)"),
            bad_args(b1=0.9, b3=1.0, warmup=10, message="b3 must be in (0, 1)"),
            bad_args(b1=0.9, b3=0.999, warmup=-5, message="warmup must be > 0"),
        ),
    ),
    # --- the new formulas -----------------------------------------------------------------
    primitive_row(
        "adopt_normalize",
        _PRIMITIVES,
        [dict(b2=0.95, eps=0.1)],
        ("count", "nu"),
        reference=f"scale_by_adopt and adopt against optax.contrib; the paper's Algorithm 2 in numpy ({_TESTS})",
        bad=(bad_args(b2=1.5, message="b2 must be in [0, 1)"), bad_args(eps=-0.1, message="eps must be >= 0")),
    ),
    primitive_row(
        "scheduled_ema",
        _PRIMITIVES,
        [dict(decay=0.99), dict(decay=b3_warmup)],
        ("mu",),
        reference=f"scale_by_ademamix's m2 against optax.contrib; scale_by_ema at a fixed decay ({_TESTS})",
        dtypes={"accumulator_dtype": "mu"},
        bad=(
            bad_args(decay=1.5, message="decay must be in [0, 1]"),
            bad_args(decay=-0.1, accumulator_dtype=BF16, message="decay must be in [0, 1]"),
        ),
    ),
    primitive_row(
        "dual_averaging_point",
        _PRIMITIVES,
        [dict(learning_rate=1e-2)],
        ("count", "grad_sum_sq", "s", "x0"),
        reference=f"scale_by_madgrad and madgrad against optax.contrib; MADGRAD's Algorithm 1 in numpy ({_TESTS})",
        bad=(bad_args(learning_rate=-1.0, message="learning_rate must be >= 0"),),
    ),
    primitive_row(
        "move_towards",
        _PRIMITIVES,
        [dict(momentum=0.8)],
        (),
        reference=f"scale_by_madgrad against optax.contrib; the closed form (1 - momentum) * (u - p) ({_TESTS})",
        bad=(bad_args(momentum=2.0, message="momentum must be in [0, 1]"),),
    ),
    primitive_row(
        "asynchronous_belief",
        _PRIMITIVES,
        [dict(b2=0.95, eps_root=1e-4)],
        ("count", "nu"),
        reference=f"scale_by_acprop against optax.contrib at b1 = 1; ACProp's Algorithm 2 in numpy ({_TESTS})",
        bad=(bad_args(b2=1.0, message="b2 must be in [0, 1)"),),
    ),
]
