"""Sharding the optimizer state: ``state_sharding``, ``sharded_init``, ``fsdp_sharding``, ``zero1``.

The multi-device checks run once, in a subprocess with 8 simulated CPU devices
(``tests/sharding_worker.py``: this process has already started JAX with one device), and
each is reported here as its own test:

- every optimizer and primitive of the registry (first grid point, its ``update_extra``),
  on a 2 x 4 mesh with ``Auto`` and with ``Explicit`` axes: abstract init from sharded
  ``ShapeDtypeStruct``\\ s (the same shapes and dtypes as ``init``); ``jax.jit(tx.init,
  out_shardings=state_sharding(...))`` lays every leaf out as ``state_sharding`` says; two
  jitted steps with those in/out shardings keep every leaf's sharding and give the
  single-device run's params and state (float32 rtol 1e-5; SOAP one-sided and in float64,
  ``ROW_ARGS`` in the worker says why); the eager ``init`` on sharded params lays the
  params-shaped fields out like the params;
- ``matrix_region`` (per-leaf matrix math on Explicit axes) against one device;
- ``zero1`` and FSDP on an 8-device data axis (an MLP, 3 steps): the single-device
  trajectory (float32 rtol 1e-5), MaxText's layout, per-device state bytes 1/8, the
  collectives of the compiled step; and a negative control: the layout check fails for
  optax's way, ``jax.jit(tx.init)``, which puts the state on one device.

Here, on one device: the matching rule against hand-written layouts (exact), the data-axis
rule against MaxText's rule written out (exact), ``zero1`` on an axis of size 1 against the
bare optimizer (bit for bit), and bad input (exact messages).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import random_grads, random_tree, run_steps
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from sharding_worker import EXPLICIT_UNSUPPORTED, OWN_INPUTS, registry_rows

import gradtx
from gradtx.registry import of_kind
from gradtx.sharding import _first_divisible

ROOT = pathlib.Path(__file__).resolve().parents[1]
# One worker runs this module, so that the 8-device subprocess (the module fixture) runs once
# (``make test`` distributes with ``--dist loadgroup``).
pytestmark = pytest.mark.xdist_group("sharding")
ROWS = registry_rows()  # every optimizer and primitive with a grid, less OWN_INPUTS
MODES = ("Auto", "Explicit")
INNERS = ("adam", "clip+adamw", "adafactor")


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    """The worker's results: ``{case: {check: None or the error}}`` (one subprocess)."""
    # the worker adds the 8 devices to this process's flags (conftest's compile flag kept)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharding_worker.py"), "registry", "zero1", "region", "diagnostics"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def _passed(results: dict, *keys: str) -> None:
    failed = {k: results.get(k, "not run") for k in keys if results.get(k, "not run") is not None}
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())


# --- registry-wide, on 8 devices ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [e.name for e in ROWS])
def test_sharded_init_and_steps_on_8_devices(eight_devices, name, mode):
    """Reference: ``state_sharding``'s layout (``is_equivalent_to``) before and after two jitted
    steps, and the single-device run's params and state (float32 rtol 1e-5, atol 1e-7).

    The rows of ``EXPLICIT_UNSUPPORTED`` init on Explicit axes, and their step stops at the
    ShardingTypeError that the docs list (checked: not another error)."""
    results = eight_devices["registry"]
    if mode == "Explicit" and name in EXPLICIT_UNSUPPORTED:
        _passed(results, f"{name}|single device", *(f"{name}|{mode}|{c}" for c in ("abstract init", "jitted init")))
        assert str(results[f"{name}|{mode}|jitted steps"]).startswith("ShardingTypeError"), results
        return
    checks = ("abstract init", "jitted init", "jitted steps")
    _passed(results, f"{name}|single device", *(f"{name}|{mode}|{c}" for c in checks))


def test_the_rows_left_out_are_the_ones_with_their_own_inputs():
    """Every optimizer and primitive with a grid runs here but for ``OWN_INPUTS``, each with
    its reason; and each name listed exists in the registry (no stale exception)."""
    names = {e.name for e in of_kind("optimizer", "primitive") if e.grid}
    assert set(OWN_INPUTS) <= names and set(EXPLICIT_UNSUPPORTED) <= names
    assert {e.name for e in ROWS} == names - set(OWN_INPUTS)


@pytest.mark.parametrize("name", [e.name for e in ROWS])
def test_eager_init_follows_the_params_on_8_devices(eight_devices, name):
    """Reference: the params' shardings. ``tx.init(sharded params)``, eagerly: every field
    declared ``like_params`` has each param's sharding (optax's state follows the params
    only this way)."""
    _passed(eight_devices["registry"], f"{name}|Auto|eager init")


@pytest.mark.parametrize("check", ["zero1", "fsdp"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("inner", INNERS)
def test_zero1_and_fsdp_on_8_devices(eight_devices, inner, mode, check):
    """Reference: the unsharded optimizer on one device, 3 steps of an MLP (float32 rtol
    1e-5); ZeRO-1's state in MaxText's layout with the params replicated and at most 1/8 of
    the state bytes per device (plus the replicated leaves); FSDP's params in that layout
    and its state in ``state_sharding``'s, kept by the jitted step."""
    _passed(eight_devices["zero1"], f"{inner}|{mode}|{check}")


def test_zero1_eagerly_on_8_devices(eight_devices):
    """Reference: adam on one device (float32 rtol 1e-5); the state stays in MaxText's layout."""
    _passed(eight_devices["zero1"], "adam|Auto|zero1 eager")


@pytest.mark.parametrize("inner", INNERS)
def test_zero1_step_gathers_the_updates(eight_devices, inner):
    """Reference: the compiled step's HLO: the updates computed on the shards are gathered
    (all-gather) for the replicated params; the data-parallel gradient sum is an all-reduce."""
    assert {"all-gather", "all-reduce"} <= set(eight_devices["zero1"][f"{inner}|Auto|zero1 collectives"])


def test_matrix_region_runs_matrix_math_on_explicit_axes(eight_devices):
    """Reference: the same function on one device (float32 rtol 1e-5). ``matrix_region`` runs
    a product over sharded dimensions, an ``eigh`` and a column norm on Explicit axes (eagerly
    and jitted), where the bare function is a ShardingTypeError (negative control); the
    outputs come out laid out like the inputs (the update like ``g``, the ``(8, 8)``
    statistic replicated, the column norms on ``g``'s column axis); on Auto axes the region
    is the function itself (the same jaxpr)."""
    results = eight_devices["region"]
    _passed(results, "Explicit|bare", "Explicit|region eager", "Explicit|region jitted", "Auto|no-op")
    assert results["Explicit|bare error"] == "ShardingTypeError"
    assert results["Auto|same jaxpr"] is True


def test_diagnostics_observe_some_steps_on_8_devices(eight_devices):
    """Reference: the same three steps on one device (float32 rtol 1e-5), the middle one
    unobserved (``observe=False``: the reference point moves without a sum; on Explicit
    axes without the ordering select, whose slice would have to name its layout), under
    Auto and Explicit axes."""
    _passed(eight_devices["diagnostics"], "Explicit|observe some steps", "Auto|observe some steps")


def test_matrix_region_is_the_function_without_a_mesh():
    """Reference: the bare function, bit for bit (no mesh set: the region is a no-op)."""
    from gradtx.sharding import matrix_region

    g = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
    fn = lambda g: (jnp.linalg.qr(g.T)[0], g @ g.T)  # noqa: E731
    chex.assert_trees_all_equal(matrix_region(fn)(g), fn(g))
    assert str(jax.make_jaxpr(matrix_region(fn))(g)) == str(jax.make_jaxpr(fn)(g))


def test_matrix_region_like_names_the_argument_whose_tree_differs():
    """Reference: the message, exactly (an Explicit 1 x 1 mesh: the region runs)."""
    from gradtx.sharding import matrix_region

    mesh = jax.make_mesh((1, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    g = jax.device_put(jnp.ones((2, 3)), NamedSharding(mesh, P("data")))
    message = r"^gradtx\.matrix_region\(like=\.\.\.\): an output is laid out like argument 0, but its tree "
    with jax.set_mesh(mesh), pytest.raises(TypeError, match=message + r"PyTreeDef\(\(\*, \*\)\) is not the argument's"):
        matrix_region(lambda g: (g, (g, g.T)), like=(0, 0))(g)


def test_layout_check_catches_a_state_on_one_device(eight_devices):
    """Negative control: ``jax.jit(tx.init)(sharded params)`` (optax's way) puts ``count`` on
    one device, and the layout check of the tests above fails on it."""
    _passed(eight_devices["zero1"], "control|jit(init) without out_shardings")
    assert "state leaf .count is SingleDeviceSharding" in eight_devices["zero1"]["control|message"]


# --- on one device --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ROWS, ids=lambda e: e.name)
def test_abstract_init(entry):
    """Reference: ``init`` on concrete params. ``jax.eval_shape(tx.init, ShapeDtypeStructs)``
    has its tree, shapes and dtypes (the learning-rate-free methods, which read the params'
    values in ``init``, included)."""
    params = random_tree(0, small=True)
    tx = entry.obj(**entry.grid[0])
    abstract = jax.eval_shape(tx.init, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
    concrete = tx.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(abstract)] == [
        (x.shape, x.dtype) for x in jax.tree.leaves(concrete)
    ]


@pytest.fixture
def mesh():
    """A 1 x 1 mesh: the rule reads axis names, not sizes, so one device shows every layout."""
    return jax.make_mesh((1, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _abstract(mesh, leaves: dict) -> dict:
    return {
        k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=NamedSharding(mesh, P(*axes)))
        for k, (shape, axes) in leaves.items()
    }


def _specs(tree) -> object:
    return jax.tree.map(lambda s: tuple(s.spec), tree)


def test_factored_statistics_keep_their_axes(mesh):
    """Reference: the layouts written out. Adafactor's ``v_row`` keeps a matrix's rows
    (``data``), ``v_col`` its columns (``model``); a square matrix's are ambiguous and
    replicated; the unfactored ``v`` and the params-shaped fields follow the params; ``count``
    and the factored matrices' placeholders are replicated."""
    params = _abstract(mesh, {"w": ((8, 16), ("data", "model")), "sq": ((8, 8), ("data", "model")),
                              "b": ((16,), ("model",))})
    got = _specs(gradtx.state_sharding(gradtx.adafactor(1e-2, min_dim_size_to_factor=4), params))
    assert got.count == ()
    assert got.v_row == {"w": ("data",), "sq": (), "b": ()}
    assert got.v_col == {"w": ("model",), "sq": (), "b": ()}
    assert got.v == {"w": (), "sq": (), "b": ("model",)}
    sgd = _specs(gradtx.state_sharding(gradtx.sgd(0.1, momentum=0.9), params))
    assert sgd.trace == {"w": ("data", "model"), "sq": ("data", "model"), "b": ("model",)}


def test_kept_dimensions_and_nested_states(mesh):
    """Reference: the layouts written out, for a statistic with ``keepdims`` (shape (8, 1):
    the rows' axis), a wrapper's ``inner_state`` and an optax state (both found by the
    params' tree inside them)."""
    params = _abstract(mesh, {"w": ((8, 16), ("data", "model"))})

    def init(p):
        return {"rows": jax.tree.map(lambda x: jnp.zeros((x.shape[0], 1)), p), "key": jax.random.key(0)}

    custom = gradtx.GradientTransformation(init, lambda u, s, p=None: (u, s))
    assert _specs(gradtx.state_sharding(custom, params)) == {"rows": {"w": ("data", None)}, "key": ()}
    wrapped = _specs(gradtx.state_sharding(gradtx.apply_if_finite(gradtx.adam(1e-2), 2), params))
    assert wrapped.inner_state.mu == {"w": ("data", "model")} and wrapped.notfinite_count == ()
    optax_state = _specs(gradtx.state_sharding(optax.adam(1e-2), params))
    assert optax_state[0].nu == {"w": ("data", "model")} and optax_state[0].count == ()


def test_lbfgs_memory_is_split_as_the_params(mesh):
    """Reference: the layouts written out. L-BFGS's memory, ``(memory_size, *param.shape)``
    per leaf, lays each copy out like its param; a vector's square statistics (SOAP's
    ``(n, n)`` factor of an ``(n,)`` leaf) is not a stack and stays replicated."""
    params = _abstract(mesh, {"w": ((8, 16), ("data", "model")), "b": ((16,), ("model",))})
    got = _specs(gradtx.state_sharding(gradtx.lbfgs(memory_size=5), params))
    assert got.diff_params_memory == {"w": (None, "data", "model"), "b": (None, "model")}
    assert got.diff_updates_memory == got.diff_params_memory

    def init(p):
        return {"factor": jax.tree.map(lambda x: jnp.zeros((x.shape[-1], x.shape[-1])), p)}

    square = gradtx.GradientTransformation(init, lambda u, s, p=None: (u, s))
    assert _specs(gradtx.state_sharding(square, {"b": params["b"]})) == {"factor": {"b": ()}}


def test_params_without_a_sharding_are_replicated(mesh):
    """Reference: the documented rule. Params without a ``NamedSharding`` (numpy arrays,
    structs without one) put their state on the one device; beside sharded params, their
    state is replicated (``P()``) on the others' mesh."""
    plain = gradtx.state_sharding(gradtx.adam(1e-2), {"w": np.zeros((4, 2), np.float32)})
    assert all(isinstance(s, SingleDeviceSharding) for s in jax.tree.leaves(plain))
    mixed = {**_abstract(mesh, {"w": ((8, 16), ("data", "model"))}), "b": jax.ShapeDtypeStruct((3,), jnp.float32)}
    got = gradtx.state_sharding(gradtx.adam(1e-2), mixed)
    assert got.mu["b"] == NamedSharding(mesh, P()) and tuple(got.mu["w"].spec) == ("data", "model")


# MaxText's rule written out: (shape, axis size) -> the dimension sharded (None: replicated)
MAXTEXT = [((16, 3), 8, 0), ((3, 16), 8, 1), ((4, 24, 8), 8, 1), ((10,), 8, None), ((4,), 8, None),
           ((), 8, None), ((0, 8), 8, 1), ((16, 3), 1, None)]


def _wrong_last_divisible(shape, size, axis_name):
    """Mutant: the *last* dimension divisible by the axis size."""
    for d in reversed(range(len(shape))):
        if size > 1 and shape[d] >= size and shape[d] % size == 0:
            return P(*(None,) * d, axis_name)
    return P()


def _wrong_any_divisible(shape, size, axis_name):
    """Mutant: the first dimension divisible, even when it is smaller than the axis (0)."""
    for d, n in enumerate(shape):
        if size > 1 and n % size == 0:
            return P(*(None,) * d, axis_name)
    return P()


def _maxtext(shape, dim) -> P:
    return P() if dim is None else P(*(None,) * dim, "data")


@pytest.mark.parametrize("rule", [_first_divisible, _wrong_last_divisible, _wrong_any_divisible],
                         ids=["fsdp_sharding", "mutant-last-dimension", "mutant-zero-size"])
def test_data_axis_rule_is_maxtexts(rule):
    """Reference: MaxText's ``shard_optimizer_over_data`` rule (``MAXTEXT``: the first
    dimension divisible by the axis size; here also at least as long as the axis, so that an
    empty dimension is not sharded), exactly; the two mutants must disagree with it somewhere."""
    agree = all(rule(shape, size, "data") == _maxtext(shape, dim) for shape, size, dim in MAXTEXT)
    assert agree == (rule is _first_divisible)


def test_zero1_on_an_axis_of_size_one_is_the_optimizer(mesh):
    """Reference: ``adam`` itself, 20 jitted steps, bit for bit; every state leaf replicated."""
    params, grads = random_tree(0, small=True), random_grads(1, 20, small=True)
    tx = gradtx.zero1(gradtx.adam(1e-2), mesh, "data")
    got, want = run_steps(tx, params, grads, jit=True), run_steps(gradtx.adam(1e-2), params, grads, jit=True)
    chex.assert_trees_all_equal(got.params, want.params)
    chex.assert_trees_all_equal(got.state.inner_state, want.state)
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(got.state))


def test_sharded_init_is_the_state_in_place(mesh):
    """Reference: ``tx.init`` (exact values) and ``state_sharding``'s layout."""
    params = jax.device_put({"w": jnp.arange(8.0).reshape(4, 2)}, NamedSharding(mesh, P("data")))
    tx = gradtx.adam(1e-2)
    state = gradtx.sharded_init(tx, params)
    chex.assert_trees_all_equal(state, tx.init(params))
    assert _specs(jax.tree.map(lambda x: x.sharding, state)) == _specs(gradtx.state_sharding(tx, params))


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_names_the_call_and_the_argument(mesh):
    """Reference: the messages, exactly."""
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    tx = gradtx.adam(1e-2)
    axes = re.escape("one of the mesh's axes ['data', 'model']")
    with pytest.raises(ValueError, match=rf"^gradtx\.zero1\(axis_name='batch'\): axis_name must be {axes}$"):
        gradtx.zero1(tx, mesh, "batch")
    with pytest.raises(ValueError, match=rf"^gradtx\.fsdp_sharding\(axis_name='batch'\): axis_name must be {axes}$"):
        gradtx.fsdp_sharding(params, mesh, "batch")
    with pytest.raises(TypeError, match=r"^gradtx\.zero1\(mesh=3\): mesh must be a jax\.sharding\.Mesh, got int$"):
        gradtx.zero1(tx, 3, "data")
    with pytest.raises(TypeError, match=r"^gradtx\.zero1\(tx=3\): tx must be a gradient transformation"):
        gradtx.zero1(3, mesh, "data")
    with pytest.raises(TypeError, match=r"^gradtx\.state_sharding\(mesh='data'\): mesh must be a jax\.sharding\."):
        gradtx.state_sharding(tx, params, mesh="data")
    other = jax.make_mesh((1,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    two_meshes = {"w": jax.device_put(params["w"], NamedSharding(mesh, P("data"))),
                  "b": jax.device_put(params["b"], NamedSharding(other, P("batch")))}
    with pytest.raises(ValueError, match=r"^gradtx\.state_sharding\(params=\.\.\.\): the params are on 2 different"):
        gradtx.state_sharding(tx, two_meshes)


OtherState = collections.namedtuple("OtherState", ["count", "mu", "nu"])


@pytest.mark.parametrize("edit, message", [
    (lambda s: s._replace(mu={"w": s.mu["w"]}), r"the shardings lack leaf path \.mu\['b'\] that tx\.init"),
    (lambda s: s._replace(nu={**s.nu, "c": s.nu["b"]}), r"the shardings have leaf path \.nu\['c'\] that tx\.init"),
    (lambda s: OtherState(*s), r"the shardings have the leaf paths of tx\.init\(params\) in other containers"),
], ids=["missing-leaf", "extra-leaf", "other-container"])
def test_a_sharding_tree_that_does_not_match_the_state(edit, message):
    """Reference: the messages, which name the call, the argument and the first leaf path."""
    params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
    tx = gradtx.adam(1e-2)
    shardings = edit(gradtx.state_sharding(tx, params))
    with pytest.raises(ValueError, match=rf"^gradtx\.sharded_init\(shardings=\.\.\.\): {message}"):
        gradtx.sharded_init(tx, params, shardings)


def test_a_sharding_tree_with_a_leaf_that_is_not_a_sharding():
    params = {"w": jnp.zeros((4, 2))}
    tx = gradtx.adam(1e-2)
    shardings = gradtx.state_sharding(tx, params)._replace(count="replicated")
    with pytest.raises(TypeError, match=r"^gradtx\.sharded_init\(shardings=\.\.\.\): the leaf at path \.count is a "):
        gradtx.sharded_init(tx, params, shardings)
