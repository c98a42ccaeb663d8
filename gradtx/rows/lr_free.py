"""Registry rows of the learning-rate-free methods (``gradtx/lr_free.py``,
``gradtx/optimizers/lr_free.py``): Prodigy, D-Adaptation, DoG, DoWG, COCOB, Mechanic, MoMo.

The grids run against optax.contrib 0.2.8 in ``tests/test_parity.py``. MoMo needs the loss
(``value``) in ``update``, which the parity runner does not pass, and ``mechanize`` is a
wrapper: their parity with optax (and the papers' rules where optax departs from them)
is in ``tests/test_lr_free.py``.
"""

from __future__ import annotations

from gradtx.combine import identity
from gradtx.rows._entry import Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_SECTION = "Recent methods"
_PRIMITIVES = "Recent primitives"
_TESTS = "tests/test_lr_free.py"
_TAGS = "'distance', 'learning_rate', 'heuristic'"
_INNER = identity()  # a base optimizer for the bad-argument rows
_LR_BAD = bad_args(learning_rate=-1.0, message="learning_rate must be >= 0")
_BETAS_BAD = bad_args(betas=(0.9, 1.0), message="betas must be a pair of numbers in [0, 1)")
_MOMO_REFERENCE = (
    "optax.contrib.{0} with a loss sequence (200 steps, float64 rtol 1e-10, float32 rtol 1e-5) without weight decay; "
    "with weight decay the authors' algorithm (fabian-sp/MoMo) in numpy float64, where optax departs ({1})"
)

ROWS: list[Entry] = [
    optimizer_row(
        "prodigy",
        _SECTION,
        [
            {},
            dict(
                learning_rate=0.5,
                betas=(0.8, 0.95),
                beta3=0.7,
                eps=1e-3,
                estim_lr0=1e-3,
                estim_lr_coef=0.5,
                weight_decay=0.1,
            ),
            dict(learning_rate=S, estim_lr0=1e-2, safeguard_warmup=True),
        ],
        ("count", "exp_avg", "exp_avg_sq", "grad_sum", "params0", "estim_lr", "numerator_weighted"),
        optax="contrib.prodigy",
        bad=(
            _LR_BAD,
            _BETAS_BAD,
            bad_args(beta3=1.0, message="beta3 must be in [0, 1)"),
            bad_args(estim_lr0=0.0, message="estim_lr0 must be > 0"),
            bad_args(estim_lr_coef=0.0, message="estim_lr_coef must be > 0"),
        ),
    ),
    optimizer_row(
        "dadapt_adamw",
        _SECTION,
        [
            {},
            dict(learning_rate=0.5, betas=(0.8, 0.95), eps=1e-3, estim_lr0=1e-3, weight_decay=0.1),
            dict(learning_rate=S, estim_lr0=1e-2),
        ],
        ("count", "exp_avg", "exp_avg_sq", "grad_sum", "estim_lr", "numerator_weighted"),
        optax="contrib.dadapt_adamw",
        bad=(
            _LR_BAD,
            bad_args(betas=(1.5, 0.9), message="betas must be a pair of numbers in [0, 1)"),
            bad_args(TypeError, "betas must be a pair (b1, b2)", betas=0.9),
            bad_args(estim_lr0=-1e-6, message="estim_lr0 must be > 0"),
        ),
    ),
    optimizer_row(
        "dog",
        _SECTION,
        [
            {},
            dict(learning_rate=0.5, init_step=("distance", 1e-2), eps=1e-3, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, init_step=("learning_rate", 1e-2)),
        ],
        ("init_params", "max_dist", "sum_sq_norm_grads"),
        optax="contrib.dog",
        absent={"is_init_step": "gradtx reads its one step count (count == 0), kept with init_step='learning_rate'"},
        bad=(
            _LR_BAD,
            bad_args(
                init_step=("step", 1e-6),
                message=f"init_step must be a pair (tag, value) with tag one of {_TAGS}",
            ),
            bad_args(init_step=("distance", 0.0), message="init_step must be a pair (tag, value) with value > 0"),
            bad_args(weight_decay=-0.1, message="weight_decay must be >= 0"),
        ),
    ),
    optimizer_row(
        "dowg",
        _SECTION,
        [
            {},
            dict(learning_rate=0.5, init_estim_sq_dist=1e-2, eps=1e-3, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, eps=1e-2),
        ],
        ("init_params", "weighted_sq_norm_grads", "estim_sq_dist"),
        optax="contrib.dowg",
        bad=(
            _LR_BAD,
            bad_args(init_estim_sq_dist=0.0, message="init_estim_sq_dist must be > 0"),
            bad_args(eps=0.0, message="eps must be > 0"),
        ),
    ),
    optimizer_row(
        "cocob",
        _SECTION,
        [
            {},
            dict(learning_rate=0.5, alpha=20.0, eps=1e-3, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S),
        ],
        ("init_particles", "cumulative_gradients", "scale", "subgradients", "reward"),
        optax="contrib.cocob",
        bad=(
            _LR_BAD,
            bad_args(alpha=0.0, message="alpha must be > 0"),
            bad_args(eps=0.0, message="eps must be > 0"),
        ),
    ),
    primitive_row(
        "scale_by_cocob",
        _PRIMITIVES,
        [{}, dict(alpha=20.0, eps=1e-3)],
        ("init_particles", "cumulative_gradients", "scale", "subgradients", "reward"),
        optax="contrib.scale_by_cocob",
        bad=(bad_args(alpha=-1.0, message="alpha must be > 0"),),
    ),
    Entry(
        "mechanize",
        "wrapper",
        _SECTION,
        optax="contrib.mechanize",
        reference=(
            f"optax.contrib.mechanize around sgd, adam and a schedule (200 steps, float64 rtol 1e-10, float32 "
            f"rtol 1e-5, every state field) ({_TESTS})"
        ),
        bad=(
            bad_args(
                TypeError, "base_optimizer must be a gradient transformation (init, update), got int", base_optimizer=3
            ),
            bad_args(TypeError, "num_betas must be an integer, got float", base_optimizer=_INNER, num_betas=2.5),
            bad_args(base_optimizer=_INNER, num_betas=0, message="num_betas must be >= 1"),
        ),
    ),
    optimizer_row(
        "momo",
        _SECTION,
        [{}, dict(learning_rate=0.5, beta=0.8, lower_bound=-0.5, adapt_lower_bound=True), dict(learning_rate=S)],
        ("count", "exp_avg", "barf", "gamma", "lb"),
        optax=None,
        reference=_MOMO_REFERENCE.format("momo", _TESTS),
        update_extra={"value": 2.0},
        bad=(_LR_BAD, bad_args(beta=1.5, message="beta must be in [0, 1]")),
    ),
    optimizer_row(
        "momo_adam",
        _SECTION,
        [{}, dict(learning_rate=0.05, b1=0.8, b2=0.95, eps=1e-3, lower_bound=-0.5, adapt_lower_bound=True)],
        ("count", "exp_avg", "exp_avg_sq", "barf", "gamma", "lb"),
        optax=None,
        reference=_MOMO_REFERENCE.format("momo_adam", _TESTS),
        update_extra={"value": 2.0},
        bad=(_LR_BAD, bad_args(b2=1.0, message="b2 must be in [0, 1)")),
    ),
]
