"""The registry rows of ``gradtx/masking.py``: masks, partitions and the tree utilities on
states. The wrappers take inner transformations, so they have no parity grid: their own
test file runs them against optax's (``TEST_FILE``)."""

from __future__ import annotations

from gradtx.combine import identity
from gradtx.rows._entry import Entry, bad_args

SECTION = "Masks and partitions"
TEST_FILE = "tests/test_masking.py"
_INNER = identity()  # an inner transformation for the bad-argument rows (builds closures only)
_NOT_BOOL = "not a bool (True: transform the leaf, False: pass it through)"
_NOT_TRANSFORMATION = "must be a gradient transformation (init, update), got int"


def _row(name: str, kind: str, optax: str | None, reference: str, bad=()) -> Entry:
    return Entry(name, kind, SECTION, optax=optax, reference=f"{reference} ({TEST_FILE})", bad=tuple(bad))


ROWS: list[Entry] = [
    _row(
        "masked",
        "wrapper",
        "masked",
        "optax.masked with the optax twins of the inner transformations, float64, 100 steps",
        bad=(
            bad_args(TypeError, f"inner {_NOT_TRANSFORMATION}", inner=3, mask=True),
            bad_args(
                message=f"the mask gives leaf path 'w' the value 'yes', {_NOT_BOOL}", inner=_INNER, mask={"w": "yes"}
            ),
        ),
    ),
    _row(
        "partition",
        "wrapper",
        "partition",
        "optax.partition with the optax twins of the inner transformations, float64, 100 steps",
        bad=(
            bad_args(
                TypeError,
                "transforms must be a mapping from labels to transformations, got list",
                transforms=[],
                param_labels="adam",
            ),
            bad_args(message="transforms must name at least one transformation", transforms={}, param_labels="adam"),
            bad_args(
                TypeError,
                f"transforms['adam'] {_NOT_TRANSFORMATION}",
                transforms={"adam": 3},
                param_labels="adam",
            ),
            bad_args(
                message="the labels give leaf path 'w' the label 'sgd', which names no transform "
                "(the transforms' labels: 'adam')",
                transforms={"adam": _INNER},
                param_labels={"w": "sgd"},
            ),
        ),
    ),
    _row("multi_transform", "wrapper", "multi_transform", "gradtx.partition (the same function)"),
    _row(
        "freeze",
        "wrapper",
        "freeze",
        "optax.freeze, float64, 100 steps",
        bad=(bad_args(message=f"the mask gives leaf path <root> the value 2.0, {_NOT_BOOL}", mask=2.0),),
    ),
    _row(
        "selective_transform",
        "wrapper",
        "selective_transform",
        "optax.selective_transform with the optax twin of the optimizer, float64, 100 steps",
        bad=(
            bad_args(TypeError, f"optimizer {_NOT_TRANSFORMATION}", optimizer=3, freeze_mask=True),
            bad_args(
                message=f"the freeze mask gives leaf path 'w' the value 1, {_NOT_BOOL}",
                optimizer=_INNER,
                freeze_mask={"w": 1},
            ),
        ),
    ),
    _row(
        "by_path",
        "utility",
        None,
        "masked and partition with the same labels as a tree, and optax.masked with them",
        bad=(
            bad_args(
                TypeError,
                "patterns must be a mapping from leaf-path patterns to values, got list",
                patterns=[".*"],
            ),
            bad_args(
                message="pattern '(' is not a regular expression: missing ), unterminated subpattern at position 0",
                patterns={"(": True},
            ),
        ),
    ),
    _row(
        "partition_reset",
        "utility",
        None,
        "a fresh init of the label's masked optimizer; the other labels' states unchanged",
        bad=(
            bad_args(
                TypeError,
                "tx must be the transformation that gradtx.partition returned",
                tx=3,
                state=None,
                params=None,
            ),
        ),
    ),
    _row("tree_map_params", "utility", "tree_map_params", "optax.tree_map_params on the same states"),
    _row("MaskedNode", "contract", "MaskedNode", "the masked-out leaves of masked and partition states"),
    _row("MaskedState", "contract", "MaskedState", "the record of gradtx.masked"),
    _row("PartitionState", "contract", "PartitionState", "the record of gradtx.partition"),
    _row("MultiTransformState", "contract", "MultiTransformState", "gradtx.PartitionState (the same type)"),
]
