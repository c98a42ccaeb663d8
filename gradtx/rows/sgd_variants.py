"""Registry rows of this family (see ``gradtx/rows/__init__.py``): other first-order methods
(Rprop, noisy SGD, Polyak SGD, optimistic gradient descent and Adam) and their primitives."""

from __future__ import annotations

from gradtx.rows._entry import BF16, Entry, parity_schedule
from gradtx.rows._entry import bad_args as _bad
from gradtx.rows._entry import optimizer_row as _optimizer
from gradtx.rows._entry import primitive_row as _primitive

S = parity_schedule
_SECTION = "Other first-order methods"
_SCALING = "Rescalers and preconditioners"
_TESTS = "tests/test_first_order.py"
_FIRST_STEP = "gradtx reads the one step count (count == 0) for the first step instead of keeping this flag"

_RPROP_BAD = (
    _bad(learning_rate=-0.1, message="learning_rate must be >= 0"),
    _bad(learning_rate=0.1, eta_minus=1.0, message="eta_minus must be in (0, 1)"),
    _bad(learning_rate=0.1, eta_minus=0.0, message="eta_minus must be in (0, 1)"),
    _bad(learning_rate=0.1, eta_plus=1.0, message="eta_plus must be > 1"),
    _bad(learning_rate=0.1, min_step_size=0.0, message="min_step_size must be > 0"),
    _bad(learning_rate=0.1, max_step_size=1e-7, message="max_step_size must be >= min_step_size (1e-06)"),
)
_RPROP_REFERENCE = "torch.optim.Rprop (float64, 1e-12) and Riedmiller & Braun's closed form"
_RPROP_GRID = [
    dict(learning_rate=0.01),
    dict(learning_rate=0.02, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-4, max_step_size=0.05),
]
_POLYAK_GRID = [{}, dict(max_learning_rate=0.5, scaling=0.7, f_min=-0.1, eps=1e-3, variant="sps+")]
_POLYAK_BAD = (
    _bad(max_learning_rate=-1.0, message="max_learning_rate must be >= 0"),
    _bad(eps=-1e-3, message="eps must be >= 0"),
    _bad(variant="sps*", message="variant must be one of 'sps', 'sps+'"),
)
_ADAM_BAD = (
    _bad(learning_rate=1e-2, b1=1.0, message="b1 must be in [0, 1)"),
    _bad(learning_rate=1e-2, b2=-0.1, message="b2 must be in [0, 1)"),
    _bad(learning_rate=1e-2, eps=-1e-8, message="eps must be >= 0"),
)

ROWS: list[Entry] = [
    _optimizer(
        "rprop",
        _SECTION,
        _RPROP_GRID,
        state=("step_sizes", "prev_updates"),
        optax=None,
        reference=_RPROP_REFERENCE,
        bad=_RPROP_BAD,
    ),
    _optimizer(
        "noisy_sgd",
        _SECTION,
        [dict(learning_rate=0.05, key=0), dict(learning_rate=0.05, eta=0.03, gamma=0.7, key=3), dict(learning_rate=S)],
        state=("count", "rng_key"),
        optax=None,
        reference=f"optax.noisy_sgd with the same key, 200 steps ({_TESTS}: its rng_key is one typed key)",
        bad=(
            _bad(learning_rate=-0.1, message="learning_rate must be >= 0"),
            _bad(learning_rate=0.1, eta=-0.01, message="eta must be >= 0"),
            _bad(learning_rate=0.1, gamma=-0.5, message="gamma must be >= 0"),
        ),
    ),
    _optimizer(
        "polyak_sgd",
        _SECTION,
        _POLYAK_GRID,
        state=(),
        optax=None,
        reference=(
            f"optax.polyak_sgd with a value sequence, scaling=1; for scaling != 1 optax's scale_by_polyak -> "
            f"scale_by_learning_rate(scaling), the documented formula ({_TESTS})"
        ),
        bad=(*_POLYAK_BAD, _bad(scaling=-1.0, message="scaling must be >= 0")),
        update_extra={"value": 2.0},
    ),
    _optimizer(
        "optimistic_gradient_descent",
        _SECTION,
        [dict(learning_rate=0.05), dict(learning_rate=0.05, alpha=0.7, beta=0.3), dict(learning_rate=S, beta=0.3)],
        state=("count", "previous_gradient"),
        absent={"is_initial_step": _FIRST_STEP},
        bad=(
            _bad(learning_rate=-0.1, message="learning_rate must be >= 0"),
            _bad(learning_rate=0.1, alpha=-1.0, message="alpha must be >= 0"),
            _bad(learning_rate=0.1, beta=-1.0, message="beta must be >= 0"),
        ),
    ),
    _optimizer(
        "optimistic_adam",
        _SECTION,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, optimism=0.03, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, nesterov=False),
            dict(learning_rate=1e-2, eps=1e-3, mu_dtype=BF16),
        ],
        state=("count", "mu", "nu", "previous_gradient"),
        absent={"is_initial_step": _FIRST_STEP},
        dtypes={"mu_dtype": "mu"},
        bad=(
            *_ADAM_BAD,
            _bad(learning_rate=1e-2, optimism=-0.1, message="optimism must be >= 0"),
        ),
    ),
    _optimizer(
        "optimistic_adam_v2",
        _SECTION,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, alpha=0.7, beta=0.3, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, nesterov=False),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=("count", "mu", "nu", "previous_gradient"),
        absent={"is_initial_step": _FIRST_STEP},
        dtypes={"mu_dtype": "mu"},
        bad=(*_ADAM_BAD, _bad(learning_rate=1e-2, beta=-0.5, message="beta must be >= 0")),
    ),
    _primitive(
        "scale_by_rprop",
        _SCALING,
        _RPROP_GRID,
        ("step_sizes", "prev_updates"),
        reference=_RPROP_REFERENCE + " (through rprop)",
        bad=_RPROP_BAD,
    ),
    _primitive(
        "scale_by_polyak",
        _SCALING,
        [{}, dict(f_min=-0.1, max_learning_rate=0.5, eps=1e-3, variant="sps+")],
        reference=f"optax.scale_by_polyak with a value sequence ({_TESTS}: the parity runner passes no value)",
        bad=_POLYAK_BAD,
        update_extra={"value": 2.0},
    ),
    _primitive(
        "scale_by_optimistic_gradient",
        _SCALING,
        [{}, dict(alpha=0.7, beta=0.3)],
        ("count", "previous_gradient"),
        optax="scale_by_optimistic_gradient",
        absent={"is_initial_step": _FIRST_STEP},
        bad=(_bad(alpha=-0.7, message="alpha must be >= 0"),),
    ),
    _primitive(
        "add_noise",
        _SCALING,
        [dict(eta=0.01, gamma=0.55, key=0)],
        ("count", "rng_key"),
        reference=f"optax.add_noise with the same key ({_TESTS}: its rng_key is one typed key, not params-shaped)",
        bad=(_bad(eta=-0.01, gamma=0.55, message="eta must be >= 0"),),
    ),
]
