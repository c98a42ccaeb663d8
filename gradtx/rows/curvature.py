"""Registry rows of this family (see ``gradtx/rows/__init__.py``): Sophia and its Hutchinson
estimator, GaLore, differentially private aggregation (DP-SGD), and optax.contrib's
``split_real_and_imaginary``.

Where the registry's runners cannot run a row (Sophia's update needs the objective,
``obj_fn``; DP-SGD's updates are per-example gradients, a batch axis first on every leaf),
the row has no optax twin here and names its test file, which runs it against optax.contrib
in optax's own usage."""

from __future__ import annotations

from gradtx.rows._entry import Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_METHODS = "Recent methods"
_PRIMITIVES = "Recent primitives"
_CURVATURE = "tests/test_curvature.py"
_GALORE = "tests/test_galore.py"
_PRIVACY = "tests/test_privacy.py"
_LR_BAD = bad_args(learning_rate=-0.1, message="learning_rate must be >= 0")
_NOT_TRANSFORMATION = "must be a gradient transformation (init, update), got int"

_SOPHIA_REFERENCE = (
    f"optax.contrib.sophia 0.2.8 with the same obj_fn and key, 200 steps, float64 rtol 1e-10 / float32 1e-5 "
    f"(update needs obj_fn: {_CURVATURE})"
)
# DP-SGD takes per-example gradients (every leaf with a batch axis first, of one size), which
# the generic dtype and Flax runners do not make: ``needs_objective`` keeps them off the row
# as it does for the rows whose update needs the objective (the registry has no flag of its
# own for per-example updates).
_DP_REFERENCE = (
    f"optax.contrib 0.2.8 with the same seed on per-example gradients, 200 steps, float64 rtol 1e-10 / "
    f"float32 1e-5; the clipping and noise in closed form ({_PRIVACY})"
)

# GaLore's projector is None at the leaves it does not project, where optax keeps a (0, 0)
# array (an empty placeholder, which orbax cannot save): the tree comparison of the parity
# runner cannot compare the two, so the field is kept out of it under another name, and
# tests/test_galore.py compares it leaf by leaf where it exists.
_PROJECTOR = dict(
    renames={"projector": "projector (None where not projected)"},
    absent={"projector": f"None at the leaves GaLore does not project, optax's (0, 0) arrays ({_GALORE})"},
)

ROWS: list[Entry] = [
    optimizer_row(
        "sophia",
        _METHODS,
        [
            dict(learning_rate=1e-2),
            dict(
                learning_rate=1e-2,
                b1=0.8,
                b2=0.9,
                eps=1e-3,
                weight_decay=0.1,
                weight_decay_mask=ndim_above_one,
                gamma=0.05,
                clip_threshold=0.5,
                update_interval=3,
            ),
            dict(learning_rate=S, clip_threshold=None, gamma=0.5, update_interval=1),
        ],
        state=("count", "mu", "nu", "hessian_fn_state"),
        optax=None,
        needs_objective=True,
        dtypes={"mu_dtype": "mu"},
        reference=_SOPHIA_REFERENCE,
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, b1=1.0, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=0.1, b2=1.5, message="b2 must be in [0, 1]"),
            bad_args(learning_rate=0.1, gamma=0.0, message="gamma must be > 0"),
            bad_args(learning_rate=0.1, clip_threshold=-1.0, message="clip_threshold must be > 0"),
            bad_args(learning_rate=0.1, update_interval=0, message="update_interval must be >= 1"),
            bad_args(
                TypeError, "update_interval must be an integer, got float", learning_rate=0.1, update_interval=2.5
            ),
            bad_args(TypeError, f"hessian_diagonal_fn {_NOT_TRANSFORMATION}", learning_rate=0.1, hessian_diagonal_fn=3),
        ),
    ),
    primitive_row(
        "hutchinson_estimator_diag_hessian",
        _PRIMITIVES,
        [dict(random_seed=3)],
        ("key",),
        needs_objective=True,
        reference=f"the closed-form Hessian diagonal (exact for a diagonal Hessian; the mean over many probes "
        f"otherwise); optax's estimate with the same key, rtol 1e-10 ({_CURVATURE})",
    ),
    primitive_row(
        "hessian_diagonal_ema",
        _PRIMITIVES,
        [dict(b2=0.9, update_interval=3)],
        ("count", "nu", "hessian_fn_state"),
        needs_objective=True,
        reference=f"sophia against optax.contrib.sophia; the closed form on a quadratic ({_CURVATURE})",
        bad=(
            bad_args(b2=-0.5, message="b2 must be in [0, 1]"),
            bad_args(update_interval=0, message="update_interval must be >= 1"),
        ),
    ),
    primitive_row(
        "sophia_denominator",
        _PRIMITIVES,
        [dict(gamma=0.05, eps=1e-3)],
        reference=f"sophia against optax.contrib.sophia; the closed form ({_CURVATURE})",
        bad=(bad_args(gamma=0.0, message="gamma must be > 0"), bad_args(eps=-1.0, message="eps must be >= 0")),
    ),
    optimizer_row(
        "galore",
        _METHODS,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, rank=1, update_proj_gap=3, scale=0.5, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, rank=1, update_proj_gap=7, weight_decay=S),
        ],
        state=("count", "mu", "nu", "projector"),
        optax="contrib.galore",
        **_PROJECTOR,
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, rank=0, message="rank must be >= 1"),
            bad_args(TypeError, "rank must be an integer, got float", learning_rate=0.1, rank=2.0),
            bad_args(learning_rate=0.1, update_proj_gap=0, message="update_proj_gap must be >= 1"),
            bad_args(learning_rate=0.1, weight_decay=-1.0, message="weight_decay must be >= 0"),
            bad_args(TypeError, f"base_optimizer {_NOT_TRANSFORMATION}", learning_rate=0.1, base_optimizer=3),
        ),
    ),
    primitive_row(
        "scale_by_galore",
        _PRIMITIVES,
        [dict(rank=1, update_proj_gap=3, scale=0.05)],
        ("count", "mu", "nu", "projector"),
        optax="contrib.scale_by_galore",
        **_PROJECTOR,
        bad=(bad_args(rank=-1, message="rank must be >= 1"),),
    ),
    Entry(
        "GaLoreDimensionNumbers",
        "contract",
        _PRIMITIVES,
        reference=f"galore with 3-D and 4-D leaves against optax.contrib.galore with optax's type ({_GALORE})",
    ),
    primitive_row(
        "differentially_private_aggregate",
        _PRIMITIVES,
        [dict(l2_norm_clip=1.0, noise_multiplier=0.5, key=3)],
        ("rng_key",),
        reference=_DP_REFERENCE,
        bad=(
            bad_args(l2_norm_clip=0.0, noise_multiplier=1.0, message="l2_norm_clip must be > 0"),
            bad_args(l2_norm_clip=1.0, noise_multiplier=-1.0, message="noise_multiplier must be >= 0"),
        ),
    ),
    optimizer_row(
        "dpsgd",
        _METHODS,
        [
            dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.5, seed=3),
            dict(learning_rate=S, l2_norm_clip=0.5, noise_multiplier=1.5, seed=4, momentum=0.8, nesterov=True),
        ],
        state=("rng_key",),
        optax=None,
        needs_objective=True,
        reference=_DP_REFERENCE,
        bad=(
            bad_args(
                learning_rate=-0.1, l2_norm_clip=1.0, noise_multiplier=1.0, seed=0, message="learning_rate must be >= 0"
            ),
            bad_args(
                learning_rate=0.1, l2_norm_clip=-1.0, noise_multiplier=1.0, seed=0, message="l2_norm_clip must be > 0"
            ),
            bad_args(
                learning_rate=0.1,
                l2_norm_clip=1.0,
                noise_multiplier=-0.5,
                seed=0,
                message="noise_multiplier must be >= 0",
            ),
            bad_args(
                learning_rate=0.1,
                l2_norm_clip=1.0,
                noise_multiplier=1.0,
                seed=0,
                momentum=1.5,
                message="momentum must be in [0, 1]",
            ),
        ),
    ),
    Entry(
        "split_real_and_imaginary",
        "wrapper",
        _METHODS,
        optax="contrib.split_real_and_imaginary",
        reference=f"optax.contrib.split_real_and_imaginary(adam) on complex params, 200 steps, float64 rtol 1e-10 "
        f"/ float32 1e-5; a real leaf passes through unchanged ({_PRIVACY})",
        bad=(bad_args(TypeError, f"inner {_NOT_TRANSFORMATION}", inner=3),),
    ),
]
