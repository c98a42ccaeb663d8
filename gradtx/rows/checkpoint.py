"""Registry rows of ``gradtx/checkpoint.py``: checkpoints (orbax and ``flax.serialization``)
that carry gradtx's record of the optimizer, params and format they belong to, and refuse
to load into anything else.

They take an optimizer and params, not hyperparameters, so they have no parity grid;
``tests/test_checkpoints.py`` tests each refusal's exact message and that nothing is
overwritten, ``tests/test_flax.py`` round-trips every optimizer of the registry through
both backends and resumes bit for bit, ``tests/test_mnist_example.py`` kills and resumes
the MNIST example.
"""

from __future__ import annotations

from gradtx.rows._entry import Entry, bad_args

SECTION = "Checkpoints"
_TESTS = "tests/test_checkpoints.py"
_FLAX = "tests/test_flax.py"
_NOT_A_TX = "tx must be a gradient transformation (init, update), got int"

ROWS: list[Entry] = [
    Entry(
        "save_checkpoint",
        "utility",
        SECTION,
        reference=f"every optimizer of the registry in an nnx.Optimizer, and linen TrainStates: the restored "
        f"tree equals the saved one bit for bit (dtypes and NamedTuples included), and training resumed from "
        f"it equals the uninterrupted run bit for bit ({_FLAX}); an existing directory is refused ({_TESTS})",
    ),
    Entry(
        "restore_checkpoint",
        "utility",
        SECTION,
        reference=f"each refusal (no record, format, optimizer, state fields, params, state dtype, target) with "
        f"its exact message, the checkpoint and the target left unchanged ({_TESTS}); the MNIST example "
        f"killed by SIGTERM in epoch 3 and resumed equals the uninterrupted run bit for bit "
        f"(tests/test_mnist_example.py)",
        bad=(bad_args(TypeError, _NOT_A_TX, directory="ckpt", target={}, tx=3, params={}),),
    ),
    Entry(
        "checkpoint_to_bytes",
        "utility",
        SECTION,
        reference=f"as save_checkpoint, through flax.serialization's msgpack, typed PRNG keys included ({_FLAX})",
    ),
    Entry(
        "checkpoint_from_bytes",
        "utility",
        SECTION,
        reference=f"as restore_checkpoint: each refusal's exact message; bytes that are not a checkpoint ({_TESTS})",
    ),
    Entry(
        "checkpoint_info", "utility", SECTION, reference=f"the info saved, from a directory and from bytes ({_TESTS})"
    ),
    Entry(
        "checkpoint_record",
        "utility",
        SECTION,
        reference=f"the record written out for adam, a chain and an optax optimizer ({_TESTS})",
        bad=(bad_args(TypeError, _NOT_A_TX, tx=3, params={}),),
    ),
    Entry(
        "check_checkpoint",
        "utility",
        SECTION,
        reference=f"the refusals of restore_checkpoint, from a record ({_TESTS})",
    ),
    Entry("CheckpointMismatchError", "contract", SECTION),
]
