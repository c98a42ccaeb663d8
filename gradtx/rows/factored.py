"""Registry rows of this family (see ``gradtx/rows/__init__.py``): Adafactor and SM3, and
their primitives.

The parity grids run on the registry's small tree, whose leaves are a (3, 2) matrix, a
vector and a scalar: ``min_dim_size_to_factor=2`` factors the matrix (the default 128
factors nothing there). optax 0.2.8's SM3 raises IndexError on the scalar leaf, so the
SM3 rows carry no optax twin: ``tests/test_factored.py`` runs their grids against optax
on the same tree without the scalar.
"""

from __future__ import annotations

import jax.numpy as jnp

from gradtx.rows._entry import BF16, Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
OPTIMIZERS = "Factored second moments"
RESCALERS = "Rescalers and preconditioners"
SM3_REFERENCE = (
    "optax.{twin} over this grid on the parity tree without its scalar leaf (tests/test_factored.py: optax 0.2.8 "
    "raises IndexError on a 0-d parameter), and on a scalar the closed form (Adagrad)"
)


def capped_decay(step, decay_rate):
    """A second-moment decay schedule capped at 0.95 (Zhai et al. 2021's use of
    ``decay_rate_fn``): ``min(1 - (step + 1)^(-decay_rate), 0.95)``."""
    return jnp.minimum(1.0 - jnp.asarray(step + 1, jnp.float32) ** (-decay_rate), 0.95)


FACTOR = dict(min_dim_size_to_factor=2)
# every hyperparameter off its default (decay_offset < 0: the schedule starts later, at t = 11)
ADAFACTOR_MOVED = dict(
    learning_rate=0.1,
    min_dim_size_to_factor=2,
    decay_rate=0.7,
    decay_offset=-10,
    multiply_by_parameter_scale=False,
    clipping_threshold=0.5,
    momentum=0.8,
    weight_decay_rate=0.01,
    eps=1e-3,
    weight_decay_mask=ndim_above_one,
)

ROWS: list[Entry] = [
    optimizer_row(
        "adafactor",
        OPTIMIZERS,
        [
            # learning_rate=None (the default) multiplies the step by rms(p) alone: the params
            # grow geometrically over the 200 parity steps; it runs with the parameter scale off
            dict(learning_rate=0.05),
            dict(learning_rate=0.05, **FACTOR),
            dict(learning_rate=None, multiply_by_parameter_scale=False, **FACTOR),
            ADAFACTOR_MOVED,
            dict(learning_rate=0.05, factored=False, momentum=0.9, dtype_momentum=BF16, **FACTOR),
            dict(learning_rate=S, weight_decay_rate=S, momentum=0.9, **FACTOR),
        ],
        state=("count", "v_row", "v_col", "v"),
        renames={"mu": "ema"},
        dtypes={"dtype_momentum": "mu"},
        bad=(
            bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
            bad_args(min_dim_size_to_factor=-1, message="min_dim_size_to_factor must be >= 0"),
            bad_args(decay_rate=-0.8, message="decay_rate must be >= 0"),
            bad_args(clipping_threshold=0.0, message="clipping_threshold must be > 0"),
            bad_args(momentum=1.5, message="momentum must be in [0, 1]"),
            bad_args(dtype_momentum=jnp.int32, message="dtype_momentum must be a floating or complex dtype"),
            bad_args(weight_decay_rate=-0.1, message="weight_decay_rate must be >= 0"),
            bad_args(eps=-1e-30, message="eps must be >= 0"),
        ),
    ),
    optimizer_row(
        "sm3",
        OPTIMIZERS,
        [dict(learning_rate=0.1), dict(learning_rate=0.05, momentum=0.8)],
        state=("mu", "nu"),
        optax=None,
        reference=SM3_REFERENCE.format(twin="sm3"),
        bad=(
            bad_args(learning_rate=-0.1, message="learning_rate must be >= 0"),
            bad_args(learning_rate=0.1, momentum=1.5, message="momentum must be in [0, 1]"),
        ),
    ),
    primitive_row(
        "scale_by_factored_rms",
        RESCALERS,
        [
            {},
            FACTOR,
            dict(decay_rate=0.7, step_offset=-10, min_dim_size_to_factor=2, epsilon=1e-3),
            dict(factored=False, decay_rate=0.7, **FACTOR),
            dict(decay_rate_fn=capped_decay, **FACTOR),
        ],
        ("count", "v_row", "v_col", "v"),
        optax="scale_by_factored_rms",
        bad=(
            bad_args(decay_rate=-0.8, message="decay_rate must be >= 0"),
            bad_args(min_dim_size_to_factor=-1, message="min_dim_size_to_factor must be >= 0"),
            bad_args(epsilon=-1.0, message="epsilon must be >= 0"),
        ),
    ),
    # the gradients' leaves have RMS 0.05 to 2: some are clipped, some are not
    primitive_row(
        "clip_by_block_rms",
        RESCALERS,
        [dict(threshold=1.0), dict(threshold=0.5)],
        optax="clip_by_block_rms",
        bad=(bad_args(threshold=0.0, message="threshold must be > 0"),),
    ),
    primitive_row(
        "scale_by_param_block_rms",
        RESCALERS,
        [{}, dict(min_scale=0.8)],
        reference=(
            "optax.scale_by_param_block_rms over this grid, each followed by scale(0.01) (tests/test_factored.py: "
            "alone, the parity run's params grow geometrically); adafactor against optax"
        ),
        bad=(bad_args(min_scale=-1.0, message="min_scale must be >= 0"),),
    ),
    primitive_row(
        "scale_by_cover_accumulators",
        RESCALERS,
        [{}, dict(b2=0.95, eps=1e-3)],
        ("mu",),
        reference=SM3_REFERENCE.format(twin="scale_by_sm3(b1=0)"),
        bad=(bad_args(b2=1.5, message="b2 must be in [0, 1]"),),
    ),
    primitive_row(
        "scale_by_sm3",
        RESCALERS,
        [{}, dict(b1=0.8, b2=0.95, eps=1e-3)],
        ("mu", "nu"),
        reference=SM3_REFERENCE.format(twin="scale_by_sm3"),
        bad=(bad_args(b1=-0.1, message="b1 must be in [0, 1]"),),
    ),
]
