"""Registry rows of this family (see ``gradtx/rows/__init__.py``): layer-wise trust ratio
(LAMB, LARS, NovoGrad, Fromage), sign methods (signSGD, Signum) and their primitives."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx.rows._entry import BF16, Entry, bad_args, ndim_above_one, optimizer_row, parity_schedule, primitive_row

S = parity_schedule
_LAYERWISE = "Layer-wise trust ratio"
_SIGN = "Sign methods"
_SCALING = "Rescalers and preconditioners"


def ndim_at_most_one(params):
    """The complement of ``ndim_above_one``: vectors and scalars. LARS's parity grid masks
    the trust ratio with it and the decay with ``ndim_above_one``, so that no leaf has
    both (where gradtx follows the paper and optax does not: ``gradtx.lars``)."""
    return jax.tree.map(lambda p: p.ndim <= 1, params)


_LR_BAD = bad_args(learning_rate=-0.1, message="learning_rate must be >= 0")
_LARS_DISJOINT = dict(weight_decay_mask=ndim_above_one, trust_ratio_mask=ndim_at_most_one)

ROWS: list[Entry] = [
    optimizer_row(
        "lamb",
        _LAYERWISE,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-3, eps_root=1e-4, weight_decay=0.1, mask=ndim_above_one),
            dict(learning_rate=S, eps=1e-3, weight_decay=S),
        ],
        state=("count", "mu", "nu"),
        bad=(
            _LR_BAD,
            bad_args(learning_rate=1e-3, b1=1.5, message="b1 must be in [0, 1)"),
            bad_args(learning_rate=1e-3, weight_decay=-0.1, message="weight_decay must be >= 0"),
        ),
    ),
    optimizer_row(
        "lars",
        _LAYERWISE,
        [
            dict(learning_rate=0.05),
            dict(
                learning_rate=0.5,
                weight_decay=0.1,
                trust_coefficient=0.02,
                eps=1e-3,
                momentum=0.8,
                nesterov=True,
                **_LARS_DISJOINT,
            ),
            dict(learning_rate=0.5, trust_coefficient=0.02, eps=1e-3, momentum=0.8),
            dict(learning_rate=S, weight_decay=S, trust_coefficient=0.1, **_LARS_DISJOINT),
        ],
        state=("trace",),
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, momentum=1.5, message="momentum must be in [0, 1]"),
            bad_args(learning_rate=0.1, trust_coefficient=-1.0, message="trust_coefficient must be >= 0"),
            bad_args(learning_rate=0.1, weight_decay=-1.0, message="weight_decay must be >= 0"),
        ),
    ),
    optimizer_row(
        "novograd",
        _LAYERWISE,
        [
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, b1=0.8, b2=0.4, eps=1e-3, eps_root=1e-4, weight_decay=0.1),
            dict(learning_rate=S, eps=1e-3),
        ],
        state=("count", "nu", "mu"),
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, b2=1.5, message="b2 must be in [0, 1]"),
            bad_args(learning_rate=0.1, eps=-1.0, message="eps must be >= 0"),
        ),
    ),
    optimizer_row(
        "fromage",
        _LAYERWISE,
        [dict(learning_rate=1e-2), dict(learning_rate=0.1, min_norm=0.5), dict(learning_rate=S)],
        state=(),
        bad=(_LR_BAD, bad_args(learning_rate=0.1, min_norm=-1.0, message="min_norm must be >= 0")),
    ),
    optimizer_row(
        "sign_sgd",
        _SIGN,
        [dict(learning_rate=0.05), dict(learning_rate=S)],
        state=(),
        bad=(_LR_BAD,),
    ),
    optimizer_row(
        "signum",
        _SIGN,
        [
            dict(learning_rate=0.05),
            dict(learning_rate=0.05, beta=0.8),
            dict(learning_rate=0.05, beta=0.8, accumulator_dtype=BF16),
            dict(learning_rate=S, beta=0.8),
        ],
        state=("mu",),
        renames={"mu": "ema"},
        absent={"count": "optax.ema counts steps even when it does not debias; Signum never reads it"},
        dtypes={"accumulator_dtype": "mu"},
        bad=(
            _LR_BAD,
            bad_args(learning_rate=0.1, beta=1.5, message="beta must be in [0, 1]"),
            bad_args(
                learning_rate=0.1,
                accumulator_dtype=jnp.int32,
                message="accumulator_dtype must be a floating or complex dtype",
            ),
        ),
    ),
    # ratio 1 would double the params' norm at every step: the trust coefficient keeps the
    # 200 parity steps finite
    primitive_row(
        "scale_by_trust_ratio",
        _SCALING,
        [dict(trust_coefficient=0.3), dict(min_norm=0.5, trust_coefficient=0.3, eps=1e-3)],
        optax="scale_by_trust_ratio",
        bad=(
            bad_args(min_norm=-1.0, message="min_norm must be >= 0"),
            bad_args(eps=-1.0, message="eps must be >= 0"),
        ),
    ),
    primitive_row(
        "lars_trust_ratio",
        _SCALING,
        [dict(weight_decay=0.1, trust_coefficient=0.02, eps=1e-3)],
        reference="lars against optax (no leaf with both the decay and the ratio) and against the paper's "
        "Algorithm 1 (tests/test_layerwise.py)",
        bad=(bad_args(trust_coefficient=-0.5, message="trust_coefficient must be >= 0"),),
    ),
    primitive_row(
        "layer_second_moment",
        _SCALING,
        [dict(decay=0.4)],
        ("count", "nu"),
        reference="scale_by_novograd and novograd against optax; the closed form (tests/test_layerwise.py)",
        bad=(bad_args(decay=1.5, message="decay must be in [0, 1]"),),
    ),
    # weight_decay adds to the params at every step (no learning rate here): a small one
    # keeps the growth bounded
    primitive_row(
        "scale_by_novograd",
        _SCALING,
        [{}, dict(b1=0.8, b2=0.4, eps=1e-3, eps_root=1e-4, weight_decay=0.01)],
        ("count", "nu", "mu"),
        optax="scale_by_novograd",
        dtypes={"mu_dtype": "mu"},
        bad=(bad_args(b1=-0.1, message="b1 must be in [0, 1]"),),
    ),
]
