"""The registry rows of ``gradtx/clipping.py``: adaptive (unit-wise) and per-example
clipping, centralization, normalization, and the small element-wise guards.

The parity run adds the raw gradients (global norm about 3.3, a mean of 0.3) to the params
at every step, so the params grow: AGC's grid keeps ``clipping`` small enough that units
are still clipped late in the run (a quarter of them at ``clipping=0.2``), and its ``eps``
large enough to matter on the scalar leaf, which stays near 0.
"""

from __future__ import annotations

import numpy as np

from gradtx.rows._entry import Entry, bad_args, primitive_row

SECTION = "Clipping and normalization"
BATCH = [np.ones((2, 3))]  # per-example gradients for the bad-argument rows (numpy: no JAX backend at import)
TEST_FILE = "tests/test_clipping.py"


def _utility(name: str, reference: str, bad=()) -> Entry:
    """A function (not a transformation) of this family: tested in ``TEST_FILE``."""
    return Entry(name, "utility", SECTION, reference=f"{reference} ({TEST_FILE})", bad=tuple(bad))


ROWS: list[Entry] = [
    primitive_row(
        "adaptive_grad_clip",
        SECTION,
        [dict(clipping=0.2, eps=0.1), dict(clipping=0.05)],
        optax="adaptive_grad_clip",
        bad=(
            bad_args(clipping=-0.1, message="clipping must be >= 0"),
            bad_args(clipping=0.1, eps=-1e-3, message="eps must be >= 0"),
        ),
    ),
    _utility(
        "unitwise_norm",
        "optax.transforms.unitwise_norm on scalars, vectors, dense, multi-head and 3-d / 4-d / 5-d convolution "
        "kernels, and the closed form",
    ),
    _utility(
        "unitwise_clip",
        "optax.transforms.unitwise_clip and the closed form",
        bad=(
            bad_args(
                g_norm=np.ones(2), max_norm=np.ones(2), grad=np.ones(2), div_eps=-1.0, message="div_eps must be >= 0"
            ),
        ),
    ),
    _utility(
        "per_example_global_norm_clip",
        "optax.per_example_global_norm_clip and Abadi et al. 2016's clipping in numpy",
        bad=(bad_args(grads=BATCH, l2_norm_clip=-1.0, message="l2_norm_clip must be >= 0"),),
    ),
    _utility(
        "per_example_layer_norm_clip",
        "optax.per_example_layer_norm_clip (uniform and not) and the per-layer clip norms in numpy",
        bad=(bad_args(grads=BATCH, global_l2_norm_clip=-1.0, message="global_l2_norm_clip must be >= 0"),),
    ),
    primitive_row("keep_params_nonnegative", SECTION, [{}], optax="keep_params_nonnegative"),
    primitive_row("zero_nans", SECTION, [{}], ("found_nan",), optax="zero_nans"),
    primitive_row("set_to_zero", SECTION, [{}], optax="set_to_zero"),
    primitive_row(
        "centralize",
        SECTION,
        [{}, dict(unit_axis=0)],
        reference=(
            f"optax.centralize() with unit_axis=0 (optax keeps axis 0), and Yong et al. 2020's rule on JAX's "
            f"layouts in numpy for the default unit_axis=-1 ({TEST_FILE})"
        ),
        bad=(bad_args(unit_axis=1, message="unit_axis must be one of -1, 0"),),
    ),
    primitive_row(
        "normalize_by_update_norm",
        SECTION,
        [dict(scale_factor=-0.1, eps=1e-2), dict(scale_factor=2.0, eps=1.0)],
        optax="normalize_by_update_norm",
        bad=(bad_args(eps=-1.0, message="eps must be >= 0"),),
    ),
    primitive_row(
        "scale_by_param_block_norm",
        SECTION,
        [{}, dict(min_scale=2.0)],
        reference=(
            f"optax.scale_by_param_block_norm over this grid, each followed by scale(0.01) ({TEST_FILE}: alone, "
            "the parity run's params grow geometrically)"
        ),
        bad=(bad_args(min_scale=-1.0, message="min_scale must be >= 0"),),
    ),
    _utility(
        "scale_gradient",
        "jax.grad through it against optax.scale_gradient and the closed form, with a traced scale where optax fails",
        bad=(bad_args(TypeError, inputs=1.0, scale="0.5", message="scale must be a number or an array, got str"),),
    ),
]
