"""Checkpoints that refuse to load into the wrong optimizer, params or gradtx version.

A checkpoint holds a training state (any pytree: a linen ``TrainState``, an nnx
``State`` of model and optimizer, a dict of params and ``opt_state``) and, beside it,
gradtx's *record* of what that state is, written by ``checkpoint_record(tx, params,
item)``:

- ``format``: the gradtx checkpoint format (``FORMAT``), raised when the state records
  change in a way an old checkpoint cannot follow;
- ``optimizer`` and ``state``: the call that built ``tx`` (``gradtx.adam``) and its state
  record with its fields (``AdamState(count, mu, nu)``), then every leaf of
  ``tx.init(params)`` (leaf path, dtype and shape, computed by ``jax.eval_shape``);
- ``params``: every leaf of the params: leaf path, dtype and shape;
- ``item``: every leaf of the whole saved tree, so that the rest of it (a step counter,
  batch statistics) is checked too.

Restoring compares the record with the optimizer, params and target it is restored into,
before anything is read, in that order, and raises ``CheckpointMismatchError`` naming the
first that differs (and, for trees, the first leaf path)::

    gradtx.restore_checkpoint: the checkpoint /ckpt/epoch_2 holds the state of another
    optimizer: it was saved from gradtx.adam (AdamState(count, mu, nu)), it is restored for
    gradtx.nadam (NadamState(count, mu, nu))

Hyperparameters that do not change the state's leaves (a learning rate, ``b1``) are not
part of the record: a run may resume with another learning rate. Those that do (a
``mu_dtype``, momentum on or off) are refused.

Two backends write the same record: orbax (``save_checkpoint`` / ``restore_checkpoint``,
a standard orbax checkpoint written atomically, the record in its custom metadata) and
``flax.serialization``'s msgpack (``checkpoint_to_bytes`` / ``checkpoint_from_bytes``,
one byte string). Neither orbax nor flax is a dependency of gradtx: each is imported when
its functions are called. ``checkpoint_record`` and ``check_checkpoint`` are the
building blocks for a checkpoint manager of your own.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Annotated, Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import GradientTransformation, Params, PyTree
from gradtx.hyperparams import IsTransformation
from gradtx.transform import Transformation, declare, foreign_name

__all__ = [
    "CheckpointMismatchError",
    "check_checkpoint",
    "checkpoint_from_bytes",
    "checkpoint_info",
    "checkpoint_record",
    "checkpoint_to_bytes",
    "restore_checkpoint",
    "save_checkpoint",
]

FORMAT = 1
"""The gradtx checkpoint format: 1 is the flat state records of gradtx 0.2 (``AdamState(count,
mu, nu)``, one step count per optimizer)."""

Tx = Annotated[GradientTransformation, IsTransformation()]
PathLike = Union[str, "os.PathLike[str]"]
_INIT = "this optimizer's init"
_METADATA_KEY = "gradtx"  # where the record and info live in an orbax checkpoint's custom metadata


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit what it is restored into.

    ``differs`` says what: ``"record"`` (no gradtx record: not written by gradtx),
    ``"format"``, ``"optimizer"``, ``"params"``, ``"state"`` (the optimizer's state leaves:
    a hyperparameter that sets a dtype or shape) or ``"target"`` (the rest of the tree)."""

    def __init__(self, message: str, differs: str):
        super().__init__(message)
        self.differs = differs


# --- the record ------------------------------------------------------------------------------


def _spec(leaf: Any) -> str:
    """``float32[6,16]``: the dtype and shape of a leaf (concrete or abstract)."""
    dtype = getattr(leaf, "dtype", None)
    dtype = jnp.result_type(leaf) if dtype is None else dtype
    return f"{dtype}[{','.join(str(d) for d in jnp.shape(leaf))}]"


def _leaves(tree: Any) -> list[list[str]]:
    """``[[leaf path, spec], ...]`` in flattening order (``None`` leaves are empty subtrees)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(path) or "<root>", _spec(leaf)] for path, leaf in flat]


def _describe_state(state: Any) -> str:
    """``AdamState(count, mu, nu)``; a tuple of records in parentheses; else the type's name."""
    fields = getattr(state, "_fields", None)
    if isinstance(state, tuple) and fields is not None:
        return f"{type(state).__name__}({', '.join(fields)})"
    if isinstance(state, (tuple, list)):
        return "(" + ", ".join(_describe_state(s) for s in state) + ")"
    return type(state).__name__


def _optimizer_name(tx: GradientTransformation) -> str:
    """The call that built ``tx``: ``gradtx.adam``; a gradtx combinator by the calls that keep
    its state (``gradtx.chain(adam)``); a foreign one by its package and factory
    (``optax.chain``)."""
    if isinstance(tx, Transformation):
        stage = tx.stage
        if stage.name:
            return f"gradtx.{stage.name}"
        owners = dict.fromkeys(k.owners[0] if k.owners else k.name for k in stage.fields)
        return f"gradtx.{stage.kind}({', '.join(owners)})"
    package = (getattr(tx.update, "__module__", None) or "").split(".")[0]
    return f"{package}.{foreign_name(tx)}" if package else foreign_name(tx)


@declare
def checkpoint_record(tx: Tx, params: Params, item: Optional[PyTree] = None) -> dict[str, Any]:
    """``(tx, params, item) -> record``: the format, optimizer, params and tree that a
    checkpoint of ``item`` belongs to, kept beside it.

    Restoring compares it with what the checkpoint is restored into (``check_checkpoint``).
    A JSON-ready dict: ``format`` (``gradtx.checkpoint.FORMAT``), ``gradtx`` (the version
    that wrote it), ``optimizer`` (``gradtx.adam``), ``state`` (``AdamState(count, mu,
    nu)``), ``state_leaves`` and ``params`` (``[leaf path, "float32[6,16]"]`` pairs of
    ``tx.init(params)``, computed by ``jax.eval_shape``, and of the params) and ``item``
    (the same for the whole saved tree, or ``None``). Nothing is computed on a device.

    Args:
        tx: the optimizer whose state ``item`` holds.
        params: the params it was initialised for (arrays, or ``jax.ShapeDtypeStruct``).
        item: the whole tree saved (params, optimizer state and anything else), or ``None``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> record = gradtx.checkpoint_record(gradtx.adam(1e-3), {"w": jnp.zeros(2)})
        >>> record["optimizer"], record["state"], record["params"]
        ('gradtx.adam', 'AdamState(count, mu, nu)', [["['w']", 'float32[2]']])
    """
    import gradtx

    state = jax.eval_shape(tx.init, params)
    return {
        "format": FORMAT,
        "gradtx": gradtx.__version__,
        "optimizer": _optimizer_name(tx),
        "state": _describe_state(state),
        "state_leaves": _leaves(state),
        "params": _leaves(params),
        "item": None if item is None else _leaves(item),
    }


def _first_difference(saved: list, current: list) -> Optional[tuple[str, str, str, str]]:
    """The first leaf where two ``[[path, spec], ...]`` lists differ: ``("differs", path,
    saved spec, current spec)``, ``("lacks", path, "", spec)`` (the saved tree lacks a path
    of the current one) or ``("has", path, spec, "")`` (the saved tree has a path the
    current one lacks); ``None`` when they agree."""
    old = dict(saved)
    new = dict(current)
    for path, spec in current:
        if path not in old:
            return ("lacks", path, "", spec)
        if old[path] != spec:
            return ("differs", path, old[path], spec)
    extra = next((path for path, _ in saved if path not in new), None)
    return None if extra is None else ("has", extra, old[extra], "")


def _tree_detail(diff: tuple[str, str, str, str], other: str) -> str:
    how, path, was, now = diff
    has, lacks = ("have", "lack") if other == "the params" else ("has", "lacks")
    if how == "differs":
        return f"at leaf path {path} it has {was}, {other} {now}"
    if how == "lacks":
        return f"it lacks leaf path {path} ({now}) that {other} {has}"
    return f"it has leaf path {path} ({was}) that {other} {lacks}"


def _check(
    call: str, what: str, record: Any, tx: GradientTransformation, params: Params, target: Optional[PyTree]
) -> None:
    """Raise ``CheckpointMismatchError`` naming the first of format, optimizer, params, state
    leaves and target where ``record`` differs from what it is restored into."""
    prefix = f"gradtx.{call}: {what}"
    if not isinstance(record, dict) or "format" not in record:
        raise CheckpointMismatchError(
            f"{prefix} has no gradtx record: it was not written by gradtx.save_checkpoint or "
            f"gradtx.checkpoint_to_bytes, so its optimizer and params cannot be checked",
            "record",
        )
    if record["format"] != FORMAT:
        import gradtx

        raise CheckpointMismatchError(
            f"{prefix} is in gradtx checkpoint format {record['format']} (written by gradtx "
            f"{record.get('gradtx', '?')}); this gradtx {gradtx.__version__} reads format {FORMAT}",
            "format",
        )
    current = checkpoint_record(tx, params)
    saved_as = f"{record['optimizer']} ({record['state']})"
    restored_as = f"{current['optimizer']} ({current['state']})"
    if saved_as != restored_as:
        if record["optimizer"] == current["optimizer"]:
            detail = (
                f"holds {record['optimizer']}'s state {record['state']}, this {current['optimizer']}'s "
                f"init gives {current['state']} (a hyperparameter that changes the state's fields differs)"
            )
        else:
            detail = (
                f"holds the state of another optimizer: it was saved from {saved_as}, it is restored for {restored_as}"
            )
        raise CheckpointMismatchError(f"{prefix} {detail}", "optimizer")
    diff = _first_difference(record["params"], current["params"])
    if diff is not None:
        raise CheckpointMismatchError(
            f"{prefix} was saved for other params: {_tree_detail(diff, 'the params')}", "params"
        )
    diff = _first_difference(record["state_leaves"], current["state_leaves"])
    if diff is not None:
        raise CheckpointMismatchError(
            f"{prefix} holds {current['optimizer']}'s state with other leaves: "
            f"{_tree_detail(diff, _INIT)} (a hyperparameter that sets a dtype or shape differs)",
            "state",
        )
    if target is not None and record.get("item") is not None:
        diff = _first_difference(record["item"], _leaves(target))
        if diff is not None:
            raise CheckpointMismatchError(
                f"{prefix} holds another tree than the target: {_tree_detail(diff, 'the target')}", "target"
            )


@declare
def check_checkpoint(record: Any, tx: Tx, params: Params, target: Optional[PyTree] = None) -> None:
    """Raise ``CheckpointMismatchError`` unless a checkpoint's ``record`` fits ``tx``, ``params``
    and ``target``.

    Checked in this order, the first difference named: the record itself (``None``: not a
    gradtx checkpoint), the format, the optimizer and its state record, the params (the
    first leaf path that differs), the optimizer's state leaves, the target's leaves.

    Args:
        record: the record saved with the checkpoint (``None`` if it had none).
        tx: the optimizer it is restored for.
        params: the params it is restored for (arrays or ``jax.ShapeDtypeStruct``).
        target: the tree it is restored into, or ``None`` to skip that comparison.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> record = gradtx.checkpoint_record(gradtx.adam(1e-3), {"w": jnp.zeros(2)})
        >>> gradtx.check_checkpoint(record, gradtx.adam(1e-2), {"w": jnp.ones(2)})  # fits
        >>> gradtx.check_checkpoint(record, gradtx.adam(1e-3), {"w": jnp.zeros(3)})
        Traceback (most recent call last):
        ...
        gradtx.checkpoint.CheckpointMismatchError: gradtx.check_checkpoint: the checkpoint was saved for other params: at leaf path ['w'] it has float32[2], the params float32[3]
    """  # noqa: E501 - a doctest output line
    _check("check_checkpoint", "the checkpoint", record, tx, params, target)


# --- orbax -----------------------------------------------------------------------------------


def _orbax() -> Any:
    """``orbax.checkpoint``, imported when needed (it is not a dependency of gradtx)."""
    return importlib.import_module("orbax.checkpoint")


def _json_ready(call: str, info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    try:
        return json.loads(json.dumps(info))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"gradtx.{call}(info=...): info must be JSON-serialisable (numbers, strings, lists, dicts): {e}"
        ) from None


@declare
def save_checkpoint(directory: PathLike, item: PyTree, *, tx: Tx, params: Params, info: Optional[dict] = None) -> None:
    """Write ``item`` and gradtx's record of it to ``directory`` with orbax, atomically.

    ``item`` is the whole training state: a linen ``TrainState``, an nnx ``State`` of model
    and optimizer, a dict; the record is ``checkpoint_record(tx, params, item)``. orbax
    writes the directory under a temporary name and renames it when complete, so a process
    killed while saving leaves no partial checkpoint; an existing directory is refused
    (``FileExistsError``), never overwritten. ``info`` (a JSON-ready dict: an epoch, a data
    position) is saved with the record and read back by ``checkpoint_info``. Restore with
    ``restore_checkpoint``.

    Args:
        directory: where to write; must not exist.
        item: the pytree to save.
        tx: the optimizer whose state ``item`` holds.
        params: the params ``tx`` was initialised for (the record keeps their leaf paths,
            dtypes and shapes).
        info: a JSON-ready dict to keep with it, or ``None``.
    """
    ocp = _orbax()
    path = importlib.import_module("etils.epath").Path(directory)
    if path.exists():
        raise FileExistsError(
            f"gradtx.save_checkpoint: {directory} exists; a checkpoint is never overwritten (choose another directory)"
        )
    meta = {"record": checkpoint_record(tx, params, item), "info": _json_ready("save_checkpoint", info)}
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(item), custom_metadata={_METADATA_KEY: meta})


def _read_meta(call: str, directory: PathLike) -> Any:
    """What gradtx saved in the checkpoint's metadata (``None`` if nothing)."""
    ocp = _orbax()
    if not importlib.import_module("etils.epath").Path(directory).exists():
        raise FileNotFoundError(f"gradtx.{call}: no checkpoint at {directory}")
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        return (checkpointer.metadata(directory).custom_metadata or {}).get(_METADATA_KEY)


@declare
def restore_checkpoint(directory: PathLike, target: PyTree, *, tx: Tx, params: Params) -> PyTree:
    """The tree ``save_checkpoint`` wrote to ``directory``, restored like ``target`` once its
    record fits.

    Before any array is read, gradtx's record is compared with ``tx``, ``params`` and
    ``target`` (``check_checkpoint``): a checkpoint without a record, of another gradtx
    format, of another optimizer (or of this one with a differently shaped state), for
    other params, or of another tree raises ``CheckpointMismatchError``, naming which and
    the first leaf path that differs. ``target`` itself is not modified (the restored tree
    is new); the restored arrays are placed on the shardings of ``target``'s leaves,
    committed to their devices.

    Args:
        directory: a checkpoint written by ``save_checkpoint``.
        target: a tree like the saved one (arrays or ``jax.ShapeDtypeStruct``): a freshly
            initialised ``TrainState``, ``nnx.state((model, optimizer))``.
        tx: the optimizer it is restored for.
        params: the params of ``target`` (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
        A tree with ``target``'s structure and the saved values.
    """
    meta = _read_meta("restore_checkpoint", directory)
    record = meta.get("record") if isinstance(meta, dict) else None
    _check("restore_checkpoint", f"the checkpoint {directory}", record, tx, params, target)
    ocp = _orbax()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        return checkpointer.restore(directory, args=ocp.args.StandardRestore(abstract))


def checkpoint_info(checkpoint: Union[PathLike, bytes]) -> dict[str, Any]:
    """The ``info`` dict saved with a checkpoint, ``{}`` if none.

    ``checkpoint`` is an orbax directory from ``save_checkpoint`` or the bytes of
    ``checkpoint_to_bytes``. Reads only the small JSON record, no arrays: use it to find where to resume (an epoch)
    before restoring."""
    if isinstance(checkpoint, bytes):
        payload = _unpack(checkpoint)
        meta = json.loads(payload["gradtx"]) if "gradtx" in payload else None
    else:
        meta = _read_meta("checkpoint_info", checkpoint)
    return dict(meta.get("info") or {}) if isinstance(meta, dict) else {}


# --- flax.serialization (msgpack) ------------------------------------------------------------


def _serialization() -> Any:
    """``flax.serialization``, imported when needed (flax is not a dependency of gradtx)."""
    return importlib.import_module("flax.serialization")


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


@declare
def checkpoint_to_bytes(item: PyTree, *, tx: Tx, params: Params, info: Optional[dict] = None) -> bytes:
    """``item`` and gradtx's record of it as one msgpack byte string (``flax.serialization``).

    Read it back with ``checkpoint_from_bytes``. Every leaf is stored under its leaf path
    (``['params']['Dense_0']['kernel']``), so any pytree works: a linen ``TrainState``, an
    nnx ``State``, a gradtx state record; typed PRNG keys (``noisy_sgd``'s) are stored as
    their key data and implementation.

    Args:
        item: the pytree to save.
        tx: the optimizer whose state ``item`` holds.
        params: the params ``tx`` was initialised for.
        info: a JSON-ready dict to keep with it (``checkpoint_info``), or ``None``.
    """
    meta = {"record": checkpoint_record(tx, params, item), "info": _json_ready("checkpoint_to_bytes", info)}
    leaves: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(item)[0]:
        name = jax.tree_util.keystr(path) or "<root>"
        if _is_key(leaf):
            keys[name] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        leaves[name] = np.asarray(leaf)
    return _serialization().msgpack_serialize({"gradtx": json.dumps(meta), "keys": keys, "leaves": leaves})


def _unpack(data: bytes) -> dict[str, Any]:
    """The msgpack payload, or an empty dict when ``data`` is not a gradtx checkpoint."""
    try:
        payload = _serialization().msgpack_restore(data)
    except (ValueError, TypeError, importlib.import_module("msgpack").exceptions.UnpackException):
        return {}
    return payload if isinstance(payload, dict) else {}


@declare
def checkpoint_from_bytes(target: PyTree, data: bytes, *, tx: Tx, params: Params) -> PyTree:
    """The tree ``checkpoint_to_bytes`` wrote, restored like ``target`` once its record fits.

    As ``restore_checkpoint``: before anything is read, ``CheckpointMismatchError`` names
    the record, format, optimizer, params, state or target leaf that differs.

    Args:
        target: a tree like the saved one (arrays or ``jax.ShapeDtypeStruct``); not modified.
        data: the bytes of ``checkpoint_to_bytes``.
        tx: the optimizer it is restored for.
        params: the params of ``target``.

    Returns:
        A tree with ``target``'s structure and the saved values, placed like ``target``'s
        arrays: on their shardings where they are committed to devices, uncommitted where
        they are not (so a step jitted for ``target`` runs on it without compiling again).
    """
    payload = _unpack(data)
    meta = json.loads(payload["gradtx"]) if isinstance(payload.get("gradtx"), str) else None
    record = meta.get("record") if isinstance(meta, dict) else None
    _check("checkpoint_from_bytes", "the checkpoint", record, tx, params, target)
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    out = []
    for path, leaf in flat:
        name = jax.tree_util.keystr(path) or "<root>"
        value = jnp.asarray(payload["leaves"][name])
        if name in payload["keys"]:
            value = jax.random.wrap_key_data(value, impl=payload["keys"][name])
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None and not (isinstance(leaf, jax.Array) and not leaf.committed):
            value = jax.device_put(value, sharding)  # placed like the target's (committed) array
        out.append(value)
    return jax.tree.unflatten(treedef, out)
