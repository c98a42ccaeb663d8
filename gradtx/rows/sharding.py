"""Registry rows of this family (see ``gradtx/rows/__init__.py``): the optimizer state sharded
like the params (``state_sharding``, ``sharded_init``), over the data-parallel axis
(``fsdp_sharding``, ``zero1``).

They take a mesh, not hyperparameters, so they have no parity grid; ``tests/test_sharding.py``
runs them on 8 simulated CPU devices (a subprocess, ``tests/sharding_worker.py``) against the
single-device run, and checks their bad input.
"""

from __future__ import annotations

from gradtx.combine import identity
from gradtx.rows._entry import Entry, bad_args

SECTION = "Sharding"
_TESTS = "tests/test_sharding.py, 8 simulated CPU devices"
_INNER = identity()  # an inner transformation for the bad-argument rows (builds closures only)
_NOT_A_MESH = "mesh must be a jax.sharding.Mesh, got int"

ROWS: list[Entry] = [
    Entry(
        "state_sharding",
        "utility",
        SECTION,
        reference=f"every optimizer and primitive of the registry on a 2 x 4 mesh (Auto and Explicit axes): "
        f"jitted init and two jitted steps keep its layout and give the single-device numbers (float32 "
        f"rtol 1e-5); Adafactor's factored statistics, wrappers and optax states against layouts written "
        f"out ({_TESTS})",
        bad=(
            bad_args(TypeError, "mesh must be a jax.sharding.Mesh or None, got str", tx=_INNER, params={}, mesh="data"),
        ),
    ),
    Entry(
        "sharded_init",
        "utility",
        SECTION,
        reference=f"tx.init's values exactly, in state_sharding's layout; mismatched sharding trees "
        f"refused with the first leaf path ({_TESTS})",
    ),
    Entry(
        "fsdp_sharding",
        "utility",
        SECTION,
        reference=f"MaxText's shard_optimizer_over_data rule written out (exact), with two wrong-rule "
        f"mutants; FSDP training of an MLP on 8 devices against one device (float32 rtol 1e-5) ({_TESTS})",
        bad=(bad_args(TypeError, _NOT_A_MESH, tree={}, mesh=3, axis_name="data"),),
    ),
    Entry(
        "zero1",
        "wrapper",
        SECTION,
        reference=f"the unsharded optimizer (adam, clip + adamw, adafactor) on one device, float32 rtol "
        f"1e-5, Auto and Explicit axes, eager and jitted; 1/8 of the state bytes per device; bit for bit "
        f"on an axis of size 1 ({_TESTS})",
        bad=(
            bad_args(
                TypeError, "tx must be a gradient transformation (init, update), got int", tx=3, mesh=3, axis_name="x"
            ),
            bad_args(TypeError, _NOT_A_MESH, tx=_INNER, mesh=3, axis_name="data"),
        ),
    ),
]
