"""The registry: one row per public name, the table that drives ``__all__``, the tests and
the docs.

A row says what the name is (``kind``), where the docs list it (``section``), and, for
transformations, what they are tested against: the optax twin (``optax``: the name in
optax, with ``optax_extra`` arguments added to the call), a parity grid of keyword
arguments (each run through both libraries for 200 steps), the state fields of the
first grid point (``state``: the checkpoint format), the fields optax keeps that gradtx
does not (``absent``, each with its reason), the renames between the two
(``renames``: gradtx field -> optax field), the dtype arguments and the fields they
set (``dtypes``: one field, or a tuple of fields where one argument sets several), and
bad arguments with the error they must raise (``bad``).

The core table is below; the families added since keep their rows in
``gradtx/rows/<family>.py`` (``ROWS``), appended in the order of ``rows.FAMILIES``.
Adding an optimizer is its definition (in ``gradtx/optimizers/<family>.py``), its import
in ``gradtx/__init__.py`` and its row; ``tests/test_registry.py`` fails when the three
disagree, and the docs pick the row up.
"""

from __future__ import annotations

import importlib
import itertools
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx.rows import FAMILIES
from gradtx.rows._entry import BF16, Entry, ndim_above_one, parity_schedule
from gradtx.rows._entry import bad_args as _bad
from gradtx.rows._entry import optimizer_row as _optimizer
from gradtx.rows._entry import primitive_row as _primitive


def _rmsprop_grid() -> list[dict]:
    """A pairwise grid over centered x eps_in_sqrt x bias_correction x momentum (none /
    heavy-ball / Nesterov) x initial_scale (0, 0.5): every pair of settings in 8 runs
    instead of the 48 of the full product. Centered + bias_correction starts from 0.5:
    from 0 the variance at t=1 is 0 and rounds to +-1 ulp, which gradtx clamps at 0
    (optax takes the root of the negative ones; ``test_rmsprop_centered_clamp``)."""
    momentum: dict[str, dict[str, Any]] = {
        "none": dict(momentum=None),
        "heavy-ball": dict(momentum=0.9),
        "nesterov": dict(momentum=0.9, nesterov=True),
    }
    rows = [
        (False, True, False, "none", 0.0),
        (False, False, True, "heavy-ball", 0.5),
        (True, True, False, "nesterov", 0.5),
        (True, False, False, "heavy-ball", 0.0),
        (False, True, True, "nesterov", 0.0),
        (True, False, True, "none", 0.5),
        (False, True, False, "heavy-ball", 0.0),
        (False, False, False, "nesterov", 0.0),
    ]
    return [
        dict(
            learning_rate=1e-3,
            decay=0.75,
            eps=1e-3,
            initial_scale=scale,
            eps_in_sqrt=in_sqrt,
            centered=centered,
            bias_correction=bc,
            **momentum[m],
        )
        for centered, in_sqrt, bc, m, scale in rows
    ]


def _rms_grid() -> list[dict]:
    return [
        dict(decay=0.75, eps=1e-3, initial_scale=0.5, eps_in_sqrt=in_sqrt, bias_correction=bc)
        for in_sqrt, bc in itertools.product((True, False), (False, True))
    ]


S = parity_schedule
LEARNING_RATE_BAD = (
    _bad(learning_rate=-0.1, message="learning_rate must be >= 0"),
    _bad(TypeError, "learning_rate must be a number, an array or a schedule, got str", learning_rate="1e-3"),
    _bad(TypeError, "learning_rate must be a number, an array or a schedule, got NoneType", learning_rate=None),
)

OPTIMIZERS = [
    _optimizer(
        "sgd",
        "SGD and momentum",
        [
            dict(learning_rate=0.05),
            dict(learning_rate=0.05, momentum=0.9),
            dict(learning_rate=0.05, momentum=0.9, nesterov=True),
            dict(learning_rate=0.05, momentum=0.9, accumulator_dtype=BF16),
            dict(learning_rate=0.05, momentum=0.9, nesterov=True, accumulator_dtype=BF16),
            dict(learning_rate=S, momentum=0.9),
        ],
        state=(),
        dtypes={"accumulator_dtype": "trace"},
        bad=(
            *LEARNING_RATE_BAD,
            _bad(learning_rate=0.1, momentum=1.5, message="momentum must be in [0, 1]"),
            _bad(learning_rate=0.1, momentum=-0.1, nesterov=True, message="momentum must be in [0, 1]"),
            _bad(learning_rate=0.1, momentum=float("nan"), message="momentum must be in [0, 1]"),
        ),
    ),
    _optimizer(
        "averaged_momentum",
        "SGD and momentum",
        [dict(learning_rate=0.05, beta=0.8)],
        state=("mu",),
        optax=None,
        dtypes={"accumulator_dtype": "mu"},
        reference="heavy-ball sgd with the learning rate scaled by 1 - beta; optax.ema(debias=False)",
        bad=(_bad(learning_rate=0.1, beta=2.0, message="beta must be in [0, 1]"),),
    ),
    _optimizer(
        "rmsprop",
        "Adagrad, RMSprop, Adadelta",
        [*_rmsprop_grid(), dict(learning_rate=S, decay=0.8, eps=1e-3)],
        state=("nu",),
        dtypes={"nu_dtype": "nu"},
        bad=(
            _bad(learning_rate=-1e-3, message="learning_rate must be >= 0"),
            _bad(learning_rate=1e-3, decay=1.1, message="decay must be in [0, 1]"),
            _bad(learning_rate=1e-3, eps=-1e-8, message="eps must be >= 0"),
        ),
    ),
    _optimizer(
        "adagrad",
        "Adagrad, RMSprop, Adadelta",
        [
            dict(learning_rate=0.1),
            dict(learning_rate=0.1, initial_accumulator_value=0.0, eps=1e-3),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=("sum_of_squares",),
        dtypes={"accumulator_dtype": "sum_of_squares"},
        bad=(
            _bad(learning_rate=-1.0, message="learning_rate must be >= 0"),
            _bad(learning_rate=1.0, eps=-1.0, message="eps must be >= 0"),
            _bad(learning_rate=1.0, initial_accumulator_value=-0.1, message="initial_accumulator_value must be >= 0"),
        ),
    ),
    _optimizer(
        "adadelta",
        "Adagrad, RMSprop, Adadelta",
        [
            dict(learning_rate=0.5, rho=0.8, eps=1e-4),
            dict(learning_rate=None, rho=0.8, eps=1e-4),
            dict(learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1),
            dict(learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1, weight_decay_mask=ndim_above_one),
            dict(learning_rate=S, eps=1e-4),
        ],
        state=("e_g", "e_x"),
        dtypes={"accumulator_dtype": ("e_g", "e_x")},
        bad=(_bad(rho=-0.5, message="rho must be in [0, 1]"), _bad(eps=-1e-6, message="eps must be >= 0")),
    ),
    _optimizer(
        "adam",
        "The Adam family",
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4),
            dict(learning_rate=1e-2, eps=1e-3, mu_dtype=BF16),
            dict(learning_rate=1e-2, eps=1e-3, nesterov=True),
            dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, nesterov=True),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=("count", "mu", "nu"),
        dtypes={"mu_dtype": "mu", "nu_dtype": "nu"},
        bad=(
            *LEARNING_RATE_BAD,
            _bad(learning_rate=1e-3, b1=1.5, message="b1 must be in [0, 1)"),
            _bad(learning_rate=1e-3, b2=1.0, message="b2 must be in [0, 1)"),
            _bad(learning_rate=1e-3, eps=-1e-8, message="eps must be >= 0"),
            _bad(TypeError, "mu_dtype must be a floating or complex dtype", learning_rate=1e-3, mu_dtype="fp32"),
            _bad(learning_rate=1e-3, mu_dtype=jnp.int32, message="mu_dtype must be a floating or complex dtype"),
        ),
    ),
    _optimizer(
        "adamw",
        "The Adam family",
        [
            dict(learning_rate=1e-2, eps=1e-3, weight_decay=0.1),
            dict(learning_rate=S, eps=1e-3, weight_decay=0.1, mask=ndim_above_one),
        ],
        state=("count", "mu", "nu"),
        dtypes={"mu_dtype": "mu", "nu_dtype": "nu"},
        bad=(_bad(learning_rate=1e-3, weight_decay=-0.1, message="weight_decay must be >= 0"),),
    ),
    _optimizer(
        "nadam",
        "The Adam family",
        [dict(learning_rate=1e-2, b1=0.8, eps=1e-3)],
        state=("count", "mu", "nu"),
        dtypes={"mu_dtype": "mu", "nu_dtype": "nu"},
        bad=(_bad(learning_rate=1e-3, b1=-0.1, message="b1 must be in [0, 1)"),),
    ),
    _optimizer(
        "amsgrad",
        "The Adam family",
        [
            dict(learning_rate=1e-2, eps=1e-3),
            dict(learning_rate=1e-2, eps=1e-3, eps_root=1e-4, bias_correction_mu=False, bias_correction_nu=False),
        ],
        state=("count", "mu", "nu", "nu_max"),
        dtypes={"mu_dtype": "mu", "nu_dtype": ("nu", "nu_max")},
        absent={"count": "without bias correction nothing reads a step count, and gradtx keeps none"},
        bad=(_bad(learning_rate=1e-3, b2=1.5, message="b2 must be in [0, 1)"),),
    ),
    _optimizer(
        "adamax",
        "The Adam family",
        [dict(learning_rate=1e-2, b2=0.95, eps=1e-3)],
        state=("count", "mu", "nu"),
        bad=(_bad(learning_rate=1e-3, eps=-1.0, message="eps must be >= 0"),),
    ),
    _optimizer(
        "lion",
        "Sign methods",
        [dict(learning_rate=1e-3, b1=0.8, b2=0.95), dict(learning_rate=S, weight_decay=0.1, mask=ndim_above_one)],
        state=("mu",),
        absent={"count": "optax's Lion increments a step count that it never reads"},
        dtypes={"mu_dtype": "mu"},
        bad=(_bad(learning_rate=1e-3, b2=1.5, message="b2 must be in [0, 1]"),),
    ),
]

_MOMENTS = "Running statistics"
_SCALING = "Rescalers and preconditioners"
PRIMITIVES = [
    _primitive(
        "trace",
        _MOMENTS,
        [dict(decay=0.9), dict(decay=0.9, accumulator_dtype=BF16)],
        ("trace",),
        optax="trace",
        dtypes={"accumulator_dtype": "trace"},
        bad=(_bad(decay=-0.9, message="decay must be in [0, 1]"),),
    ),
    _primitive(
        "nesterov_trace",
        _MOMENTS,
        [dict(decay=0.9)],
        ("trace",),
        optax="trace",
        optax_extra={"nesterov": True},
        dtypes={"accumulator_dtype": "trace"},
        bad=(_bad(decay=1.01, message="decay must be in [0, 1]"),),
    ),
    _primitive(
        "scale_by_ema",
        _MOMENTS,
        [dict(decay=0.8)],
        ("mu",),
        optax="ema",
        optax_extra={"debias": False},
        renames={"mu": "ema"},
        dtypes={"accumulator_dtype": "mu"},
        absent={"count": "optax.ema counts steps even when it does not debias"},
        bad=(
            _bad(decay=np.array([0.5, 1.5]), message="decay must be in [0, 1]"),
            _bad(
                decay=0.9, accumulator_dtype=jnp.int32, message="accumulator_dtype must be a floating or complex dtype"
            ),
        ),
    ),
    _primitive(
        "second_moment",
        _MOMENTS,
        [dict(decay=0.8)],
        ("nu",),
        dtypes={"accumulator_dtype": "nu"},
        reference="adam_direction and scale_by_rms, which are built from it, against optax",
    ),
    _primitive(
        "bias_correct",
        _MOMENTS,
        [dict(decay=0.8)],
        ("count",),
        reference="optax.ema(debias=True) as scale_by_ema -> bias_correct",
        bad=(
            _bad(decay=1.0, message="decay must be in [0, 1)"),
            _bad(decay=0.9, step_offset=2, message="step_offset must be one of 0, 1"),
        ),
    ),
    _primitive(
        "running_max",
        _MOMENTS,
        [{}],
        ("nu_max",),
        reference="amsgrad against optax",
        dtypes={"accumulator_dtype": "nu_max"},
    ),
    _primitive("infinity_norm", _MOMENTS, [dict(decay=0.95, eps=1e-3)], ("nu",), reference="adamax against optax"),
    _primitive(
        "interpolated_ema",
        _MOMENTS,
        [dict(b1=0.8, b2=0.95)],
        ("mu",),
        reference="lion against optax",
        dtypes={"accumulator_dtype": "mu"},
    ),
    _primitive(
        "adam_direction",
        _MOMENTS,
        [
            {},
            dict(b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4),
            dict(eps=1e-3, mu_dtype=BF16),
            dict(b1=0.8, b2=0.95, eps=1e-3, nesterov=True),
        ],
        ("count", "mu", "nu"),
        optax="scale_by_adam",
        dtypes={"mu_dtype": "mu", "nu_dtype": "nu"},
    ),
    _primitive("scale", _SCALING, [dict(step_size=0.3)], optax="scale"),
    _primitive(
        "scale_by_learning_rate",
        _SCALING,
        [dict(learning_rate=0.1), dict(learning_rate=0.1, flip_sign=False), dict(learning_rate=S)],
        optax="scale_by_learning_rate",
    ),
    _primitive("scale_by_schedule", _SCALING, [dict(step_size_fn=S)], ("count",), optax="scale_by_schedule"),
    _primitive(
        "sqrt_eps",
        _SCALING,
        [dict(eps=1e-3, eps_root=1e-4)],
        reference="adam_direction against optax",
        bad=(_bad(eps=-1.0, message="eps must be >= 0"),),
    ),
    _primitive(
        "scale_by_rms",
        _SCALING,
        _rms_grid(),
        ("nu",),
        optax="scale_by_rms",
        dtypes={"nu_dtype": "nu"},
        bad=(_bad(decay=0.9, eps=-1.0, message="eps must be >= 0"),),
    ),
    _primitive(
        "scale_by_stddev", _SCALING, _rms_grid(), ("mu", "nu"), optax="scale_by_stddev", dtypes={"nu_dtype": "nu"}
    ),
    _primitive(
        "scale_by_sum_of_squares",
        _SCALING,
        [{}, dict(initial_accumulator_value=0.0, eps=1e-3)],
        ("sum_of_squares",),
        optax="scale_by_rss",
        dtypes={"accumulator_dtype": "sum_of_squares"},
    ),
    _primitive(
        "scale_by_update_rms",
        _SCALING,
        [dict(decay=0.8, eps=1e-4)],
        ("e_x",),
        reference="scale_by_adadelta against optax",
        dtypes={"accumulator_dtype": "e_x"},
    ),
    _primitive(
        "scale_by_adadelta",
        _SCALING,
        [dict(rho=0.8, eps=1e-4)],
        ("e_g", "e_x"),
        optax="scale_by_adadelta",
        dtypes={"accumulator_dtype": ("e_g", "e_x")},
    ),
    _primitive("scale_by_sign", _SCALING, [{}], optax="scale_by_sign"),
    _primitive(
        "add_decayed_weights",
        _SCALING,
        [dict(weight_decay=0.1), dict(weight_decay=0.1, mask=ndim_above_one), dict(weight_decay=S)],
        optax="add_decayed_weights",
        bad=(_bad(weight_decay=-1e-4, message="weight_decay must be >= 0"),),
    ),
    _primitive(
        "clip",
        _SCALING,
        [dict(max_delta=0.5)],
        optax="clip",
        bad=(_bad(max_delta=-1.0, message="max_delta must be >= 0"),),
    ),
    # the gradients' global norm is 3.3 +- 1: some steps are clipped, some are not
    _primitive(
        "clip_by_global_norm",
        _SCALING,
        [dict(max_norm=3.0)],
        optax="clip_by_global_norm",
        bad=(_bad(max_norm=0.0, message="max_norm must be > 0"),),
    ),
    _primitive("identity", "Combinators", [{}], optax="identity"),
]

_CONCEPTS = "Concepts"
OTHERS = [
    *(Entry(n, "combinator", "Combinators") for n in ("chain", "fork", "named_chain", "renamed", "stateless")),
    *(
        Entry(n, "contract", _CONCEPTS)
        for n in (
            "GradientTransformation",
            "Transformation",
            "EmptyState",
            "apply_updates",
            "declare",
            "primitive",
            "Field",
            "Step",
            "UpdateError",
            "TreeMismatchError",
            "OptState",
            "Params",
            "Updates",
            "Schedule",
            "ScalarOrSchedule",
        )
    ),
    Entry("global_norm", "contract", _SCALING),
    *(
        Entry(n, "hyperparameter", "Hyperparameters")
        for n in ("LearningRate", "Decay", "DecayBelowOne", "NonNegative", "Positive", "AccumulatorDtype")
    ),
    *(
        Entry(n, "performance", "Performance")
        for n in ("update_and_apply", "enable_cpu_multi_output_fusion", "fuses_sibling_outputs", "Packing", "LeafSlot")
    ),
]

FAMILY_ROWS: list[Entry] = [row for family in FAMILIES for row in importlib.import_module(f"gradtx.rows.{family}").ROWS]

ENTRIES: tuple[Entry, ...] = (*OPTIMIZERS, *PRIMITIVES, *FAMILY_ROWS, *OTHERS)
BY_NAME = {e.name: e for e in ENTRIES}


def names() -> list[str]:
    """Every public name, in registry order: ``gradtx.__all__``."""
    return [e.name for e in ENTRIES]


def of_kind(*kinds: str) -> list[Entry]:
    return [e for e in ENTRIES if e.kind in kinds]
