"""The registry is the one table of public names, and it is true.

- ``gradtx.__all__`` is the registry's names, every one importable, and nothing public
  is left out of it;
- each transformation row's ``state`` is what ``init`` returns at its first grid point
  (the checkpoint format: a re-wiring that changes it fails here);
- the state design against optax 0.2.8 (reference): for every optimizer optax also has,
  at every grid point, the gradtx state has no more leaves than optax's, and
  ``optax.tree.get(state, field)`` finds each field of optax's state exactly once (but
  the fields the row lists as deliberately absent, with their reason);
- importing gradtx computes nothing (so ``enable_cpu_multi_output_fusion`` still works).
"""

from __future__ import annotations

import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import named_fields, random_tree

import gradtx
from gradtx.registry import ENTRIES, of_kind

PARAMS = random_tree(0, small=True)


def test_all_is_the_registry_and_each_name_is_exported():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names)), "a name is registered twice"
    assert gradtx.__all__ == names
    missing = [n for n in names if not hasattr(gradtx, n)]
    assert not missing, f"registered but not imported in gradtx/__init__.py: {missing}"


def test_nothing_public_is_left_out_of_the_registry():
    public = {n for n, v in vars(gradtx).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - set(gradtx.__all__) == set(), "public in gradtx but not in the registry"


TRANSFORMATIONS = [e for e in ENTRIES if e.grid]


@pytest.mark.parametrize("entry", TRANSFORMATIONS, ids=lambda e: e.name)
def test_registered_state_is_the_state_init_returns(entry):
    """The row's ``state`` is ``init``'s record; ``count`` is an int32 scalar, and every
    field the stage declares shaped like the params has the params' tree structure."""
    tx = entry.obj(**entry.grid[0])
    state = tx.init(PARAMS)
    assert state._fields == entry.state
    like_params = {k.name for k in tx.stage.fields if k.field.like_params}
    for name, value in state._asdict().items():
        if name == "count":
            assert value.dtype == jnp.int32 and value.shape == ()
        elif name in like_params:
            assert jax.tree.structure(value) == jax.tree.structure(PARAMS), name


@pytest.mark.parametrize("entry", TRANSFORMATIONS, ids=lambda e: e.name)
def test_every_transformation_is_declared(entry):
    """Built by ``@declare``: its record is named after the call (``AdamState``), its
    docstring and signature are the factory's."""
    tx = entry.obj(**entry.grid[0])
    assert isinstance(tx, gradtx.Transformation) and tx.stage.name == entry.name
    assert entry.obj.__name__ == entry.name and entry.obj.__doc__


OPTAX_TWINS = [pytest.param(e, kw, id=f"{e.name}-{i}") for e in of_kind("optimizer") if e.optax
               for i, kw in enumerate(e.grid)]


@pytest.mark.parametrize("entry, kwargs", OPTAX_TWINS)
def test_state_has_no_more_leaves_than_optax_and_each_optax_field_once(entry, kwargs):
    ours = entry.obj(**kwargs).init(PARAMS)
    theirs = entry.optax_factory(optax)(**kwargs).init(PARAMS)
    assert len(jax.tree.leaves(ours)) <= len(jax.tree.leaves(theirs))
    renamed = {v: k for k, v in entry.renames.items()}
    for field in named_fields(theirs):
        ours_name = renamed.get(field, field)
        if ours_name not in ours._fields:
            assert field in entry.absent, f"optax's field {field!r} is missing and not registered as absent"
            continue
        found = optax.tree.get_all_with_path(ours, ours_name)
        assert len(found) == 1, f"{field}: found {len(found)} times"
        assert jax.tree.structure(found[0][1]) == jax.tree.structure(getattr(ours, ours_name))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.absent], ids=lambda e: e.name)
def test_each_absent_field_has_its_reason(entry):
    assert all(isinstance(why, str) and len(why) > 20 for why in entry.absent.values())


def test_optax_tree_set_and_map_params_work_on_gradtx_states():
    """optax 0.2.8's tree utilities on the flat record (reference: the values set)."""
    tx = gradtx.adam(1e-3)
    state = tx.init(PARAMS)
    state = optax.tree.set(state, count=jnp.asarray(7, jnp.int32))
    assert int(state.count) == 7
    as_bf16 = optax.tree.map_params(tx.init, lambda x: x.astype(jnp.bfloat16), state)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(as_bf16.mu))


def test_importing_gradtx_starts_no_backend():
    code = ("import gradtx\nfrom jax._src import xla_bridge\n"
            "assert not xla_bridge.backends_are_initialized(), 'importing gradtx computed something'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_state_pickles_across_processes():
    """Reference: the state itself. A pickled ``AdamState`` loads in a fresh process
    (which finds the record type by its name) with the same fields and values."""
    import pickle

    tx = gradtx.adam(1e-3)
    _, state = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    code = ("import pickle, sys, numpy as np\nstate = pickle.loads(sys.stdin.buffer.read())\n"
            "print(type(state).__name__, state._fields, int(state.count), float(np.sum(state.nu['w'])))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(state), capture_output=True, check=True)
    expected = f"AdamState ('count', 'mu', 'nu') 1 {float(jnp.sum(state.nu['w']))}"
    assert out.stdout.decode().strip() == expected
