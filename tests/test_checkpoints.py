"""Checkpoints refuse what does not fit (``gradtx/checkpoint.py``).

References: the record written out by hand for three optimizers; for each refusal, the
message written out in full and the checkpoint and target compared with copies taken
before the call (nothing overwritten, nothing lost); the saved tree itself for the round
trips (bit for bit). Every optimizer of the registry round-trips and resumes in
``tests/test_flax.py``; the MNIST example is killed and resumed in
``tests/test_mnist_example.py``.
"""

from __future__ import annotations

import pathlib
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import serialization

import gradtx
from gradtx import checkpoint

PARAMS = {"b": jnp.arange(3, dtype=jnp.float32), "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)}


def trained(tx, params=PARAMS, steps: int = 2):
    """``{"params", "opt_state", "step"}`` after a few steps, so that no leaf is trivial."""
    state = tx.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, i=i: jnp.cos(p + i), params)
        updates, state = tx.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    return {"params": params, "opt_state": state, "step": jnp.asarray(steps, jnp.int32)}


def fresh(tx, params=PARAMS):
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def threads_left_behind(before: set) -> list:
    """Non-daemon threads started since ``before`` that do not end within 10 s (orbax's
    asyncio workers end a moment after a save or restore returns)."""
    new = {t for t in threading.enumerate() if not t.daemon} - before
    for t in new:
        t.join(timeout=10)
    return [t.name for t in new if t.is_alive()]


def copy(tree):
    return jax.tree.map(np.array, tree)


def assert_trees_equal(actual, expected):
    chex.assert_trees_all_equal_structs(actual, expected)
    chex.assert_trees_all_equal(actual, expected, strict=True)


# ----------------------------------------------------------------------------- the record


def test_the_record_written_out():
    """Reference: the record of adam, of a chain and of optax's adam, written out."""
    adam_state = [[".count", "int32[]"], [".mu['b']", "float32[3]"], [".mu['w']", "float32[2,3]"],
                  [".nu['b']", "float32[3]"], [".nu['w']", "float32[2,3]"]]
    params = [["['b']", "float32[3]"], ["['w']", "float32[2,3]"]]
    assert gradtx.checkpoint_record(gradtx.adam(1e-3), PARAMS) == {
        "format": 1, "gradtx": gradtx.__version__, "optimizer": "gradtx.adam", "state": "AdamState(count, mu, nu)",
        "state_leaves": adam_state, "params": params, "item": None,
    }
    chained = gradtx.checkpoint_record(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3)), PARAMS)
    assert (chained["optimizer"], chained["state"]) == ("gradtx.chain(adam)", "ChainState(count, mu, nu)")
    theirs = gradtx.checkpoint_record(optax.adam(1e-3), PARAMS, item={"step": jnp.zeros((), jnp.int32)})
    assert (theirs["optimizer"], theirs["state"]) == ("optax.chain", "(ScaleByAdamState(count, mu, nu), EmptyState())")
    assert theirs["item"] == [["['step']", "int32[]"]]


# ----------------------------------------------------------------------------- round trips


def test_orbax_and_bytes_round_trip_with_info(tmp_path):
    """Reference: the saved tree, bit for bit (NamedTuple records, bfloat16 moments), and the
    info saved with it; a new learning rate is not a different optimizer."""
    tx = gradtx.adam(1e-3, mu_dtype=jnp.bfloat16)
    item = trained(tx)
    threads = {t for t in threading.enumerate() if not t.daemon}
    gradtx.save_checkpoint(tmp_path / "ckpt", item, tx=tx, params=item["params"], info={"epoch": 3, "note": "x"})
    data = gradtx.checkpoint_to_bytes(item, tx=tx, params=item["params"], info={"epoch": 3})
    other_lr = gradtx.adam(1e-2, mu_dtype=jnp.bfloat16)
    target = fresh(other_lr)
    assert_trees_equal(gradtx.restore_checkpoint(tmp_path / "ckpt", target, tx=other_lr, params=PARAMS), item)
    assert_trees_equal(gradtx.checkpoint_from_bytes(target, data, tx=other_lr, params=PARAMS), item)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    assert_trees_equal(gradtx.checkpoint_from_bytes(abstract, data, tx=other_lr, params=abstract["params"]), item)
    assert gradtx.checkpoint_info(tmp_path / "ckpt") == {"epoch": 3, "note": "x"}
    assert gradtx.checkpoint_info(data) == {"epoch": 3}
    assert threads_left_behind(threads) == []


def test_an_existing_directory_is_never_overwritten(tmp_path):
    tx = gradtx.sgd(0.1, momentum=0.9)
    gradtx.save_checkpoint(tmp_path / "ckpt", trained(tx), tx=tx, params=PARAMS)
    before = snapshot(tmp_path / "ckpt")
    with pytest.raises(FileExistsError) as info:
        gradtx.save_checkpoint(tmp_path / "ckpt", fresh(tx), tx=tx, params=PARAMS)
    assert str(info.value) == (f"gradtx.save_checkpoint: {tmp_path / 'ckpt'} exists; a checkpoint is never "
                               f"overwritten (choose another directory)")
    assert snapshot(tmp_path / "ckpt") == before


def test_missing_directory_and_info_that_is_not_json(tmp_path):
    tx = gradtx.sgd(0.1)
    with pytest.raises(FileNotFoundError, match=r"^gradtx\.restore_checkpoint: no checkpoint at .*nowhere$"):
        gradtx.restore_checkpoint(tmp_path / "nowhere", fresh(tx), tx=tx, params=PARAMS)
    with pytest.raises(TypeError, match=r"^gradtx\.save_checkpoint\(info=\.\.\.\): info must be JSON-serialisable"):
        gradtx.save_checkpoint(tmp_path / "ckpt", fresh(tx), tx=tx, params=PARAMS, info={"lr": jnp.ones(2)})
    assert not (tmp_path / "ckpt").exists()


# ----------------------------------------------------------------------------- refusals

OTHER_PARAMS = {"b": jnp.zeros(3), "w": jnp.zeros((2, 4))}
MORE_PARAMS = {**PARAMS, "v": jnp.zeros(5)}
FEWER_PARAMS = {"w": PARAMS["w"]}
_ADAM = "gradtx.adam (AdamState(count, mu, nu))"
# name -> (saved with (tx, params), restored for (tx, params), what differs, the message after
# "gradtx.<call>: the checkpoint[ <directory>] ")
REFUSALS = {
    "another-optimizer": (
        (gradtx.adam(1e-3), PARAMS), (gradtx.nadam(1e-3), PARAMS), "optimizer",
        (f"holds the state of another optimizer: it was saved from {_ADAM}, it is restored for "
        f"gradtx.nadam (NadamState(count, mu, nu))"),
    ),
    "a-chain-around-it": (
        (gradtx.adam(1e-3), PARAMS), (gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3)), PARAMS),
        "optimizer",
        (f"holds the state of another optimizer: it was saved from {_ADAM}, it is restored for "
        f"gradtx.chain(adam) (ChainState(count, mu, nu))"),
    ),
    "other-state-fields": (
        (gradtx.sgd(0.1), PARAMS), (gradtx.sgd(0.1, momentum=0.9), PARAMS), "optimizer",
        ("holds gradtx.sgd's state EmptyState(), this gradtx.sgd's init gives SgdState(trace) (a "
        "hyperparameter that changes the state's fields differs)"),
    ),
    "other-param-shape": (
        (gradtx.adam(1e-3), PARAMS), (gradtx.adam(1e-3), OTHER_PARAMS), "params",
        "was saved for other params: at leaf path ['w'] it has float32[2,3], the params float32[2,4]",
    ),
    "a-param-more": (
        (gradtx.adam(1e-3), PARAMS), (gradtx.adam(1e-3), MORE_PARAMS), "params",
        "was saved for other params: it lacks leaf path ['v'] (float32[5]) that the params have",
    ),
    "a-param-fewer": (
        (gradtx.adam(1e-3), PARAMS), (gradtx.adam(1e-3), FEWER_PARAMS), "params",
        "was saved for other params: it has leaf path ['b'] (float32[3]) that the params lack",
    ),
    "other-state-dtype": (
        (gradtx.adam(1e-3, mu_dtype=jnp.bfloat16), PARAMS), (gradtx.adam(1e-3), PARAMS), "state",
        ("holds gradtx.adam's state with other leaves: at leaf path .mu['b'] it has bfloat16[3], this "
        "optimizer's init float32[3] (a hyperparameter that sets a dtype or shape differs)"),
    ),
}


def _save(backend: str, directory: pathlib.Path, item, tx, params):
    """The checkpoint (a directory or bytes) and how to see that it was left alone."""
    if backend == "orbax":
        gradtx.save_checkpoint(directory, item, tx=tx, params=params)
        return directory, lambda: snapshot(directory)
    data = gradtx.checkpoint_to_bytes(item, tx=tx, params=params)
    return data, lambda: data


def _restore(backend: str, checkpoint, target, tx, params):
    if backend == "orbax":
        return gradtx.restore_checkpoint(checkpoint, target, tx=tx, params=params)
    return gradtx.checkpoint_from_bytes(target, checkpoint, tx=tx, params=params)


def _where(backend: str, checkpoint) -> str:
    return (f"gradtx.restore_checkpoint: the checkpoint {checkpoint}" if backend == "orbax"
            else "gradtx.checkpoint_from_bytes: the checkpoint")


def assert_refused(backend, checkpoint, target, tx, params, differs, detail, unchanged):
    """The exact message and ``differs``; the checkpoint and the target as they were (the
    target still usable: its arrays are not deleted or donated)."""
    before, target_before = unchanged(), copy(target)
    with pytest.raises(gradtx.CheckpointMismatchError) as info:
        _restore(backend, checkpoint, target, tx, params)
    assert str(info.value) == f"{_where(backend, checkpoint)} {detail}"
    assert info.value.differs == differs
    assert unchanged() == before
    assert_trees_equal(copy(target), target_before)


@pytest.mark.parametrize("backend", ["orbax", "bytes"])
@pytest.mark.parametrize("case", REFUSALS)
def test_a_checkpoint_that_does_not_fit_is_refused(case, backend, tmp_path):
    """Reference: the message written out in REFUSALS; nothing overwritten."""
    (saved_tx, saved_params), (tx, params), differs, detail = REFUSALS[case]
    checkpoint, unchanged = _save(backend, tmp_path / "ckpt", trained(saved_tx, saved_params), saved_tx,
                                  saved_params)
    assert_refused(backend, checkpoint, fresh(tx, params), tx, params, differs, detail, unchanged)


@pytest.mark.parametrize("backend", ["orbax", "bytes"])
def test_a_checkpoint_of_another_tree_is_refused(backend, tmp_path):
    """Same optimizer and params, but the rest of the saved tree differs (a float step)."""
    tx = gradtx.adam(1e-3)
    checkpoint, unchanged = _save(backend, tmp_path / "ckpt", trained(tx), tx, PARAMS)
    target = {**fresh(tx), "step": jnp.zeros((), jnp.float32)}
    assert_refused(backend, checkpoint, target, tx, PARAMS, "target",
                   "holds another tree than the target: at leaf path ['step'] it has int32[], the target float32[]",
                   unchanged)


@pytest.mark.parametrize("backend", ["orbax", "bytes"])
def test_a_checkpoint_of_another_format_is_refused(backend, tmp_path, monkeypatch):
    """Reference: a checkpoint written as format 0 (``FORMAT`` patched while saving)."""
    tx = gradtx.adam(1e-3)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "FORMAT", 0)
        saved, unchanged = _save(backend, tmp_path / "ckpt", trained(tx), tx, PARAMS)
    v = gradtx.__version__
    assert_refused(backend, saved, fresh(tx), tx, PARAMS, "format",
                   f"is in gradtx checkpoint format 0 (written by gradtx {v}); this gradtx {v} reads format 1",
                   unchanged)


NO_RECORD = ("has no gradtx record: it was not written by gradtx.save_checkpoint or gradtx.checkpoint_to_bytes, "
             "so its optimizer and params cannot be checked")


def test_a_checkpoint_without_a_record_is_refused(tmp_path):
    """Reference: orbax's and flax.serialization's own checkpoints of the same tree, and
    bytes that are not msgpack at all."""
    tx = gradtx.adam(1e-3)
    item = trained(tx)
    with ocp.StandardCheckpointer() as plain:
        plain.save(tmp_path / "plain", item)
    assert_refused("orbax", tmp_path / "plain", fresh(tx), tx, PARAMS, "record", NO_RECORD,
                   lambda: snapshot(tmp_path / "plain"))
    for data in (serialization.to_bytes(item), b"\xc1 not msgpack"):
        assert_refused("bytes", data, fresh(tx), tx, PARAMS, "record", NO_RECORD, lambda data=data: data)


def test_check_checkpoint_from_a_record():
    """The building block: a record checked without a backend."""
    record = gradtx.checkpoint_record(gradtx.adam(1e-3), PARAMS)
    gradtx.check_checkpoint(record, gradtx.adam(1e-2), PARAMS)
    with pytest.raises(gradtx.CheckpointMismatchError) as info:
        gradtx.check_checkpoint(record, gradtx.adamw(1e-3), PARAMS)
    assert str(info.value) == (f"gradtx.check_checkpoint: the checkpoint holds the state of another optimizer: it "
                               f"was saved from {_ADAM}, it is restored for gradtx.adamw (AdamwState(count, mu, nu))")
    with pytest.raises(gradtx.CheckpointMismatchError, match="has no gradtx record") as info:
        gradtx.check_checkpoint(None, gradtx.adam(1e-3), PARAMS)
    assert info.value.differs == "record"


def test_the_guide_shows_each_message():
    """docs/guides/checkpoints.md's table holds each message of this file, word for word."""
    guide = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "checkpoints.md").read_text()
    v = gradtx.__version__
    messages = [detail for *_, detail in REFUSALS.values()] + [
        NO_RECORD, f"is in gradtx checkpoint format 0 (written by gradtx {v}); this gradtx {v} reads format 1",
        "holds another tree than the target: at leaf path ['step'] it has int32[], the target float32[]"]
    assert [m for m in messages if f"| {m} |" not in guide] == []
