"""The multi-device body of ``tests/test_sharding.py``, run in a subprocess with 8 simulated
CPU devices (the pytest process has already started JAX with one device)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharding_worker.py registry zero1

Each case prints nothing but the one JSON object written at the end: ``{case: {check:
error message or None}}``, so that one subprocess start (~3 s of imports) runs every
check, and ``tests/test_sharding.py`` reports each check as its own test.

Cases:

- ``registry``: every optimizer and primitive row at its first grid point (with its
  ``update_extra``; with a quadratic objective for the rows that need one), on a 2 x 4 mesh
  under ``Auto`` and ``Explicit`` axis types: abstract init from sharded
  ``ShapeDtypeStruct``\\ s, ``jax.jit(tx.init, out_shardings=state_sharding(...))``, the
  eager init's params-shaped fields, two jitted steps with in/out shardings that keep
  every state leaf's sharding, and the numbers of a single-device run (float32 rtol 1e-5).
- ``diagnostics``: ``training_diagnostics`` with some steps unobserved, against one device.
- ``zero1``: ``zero1`` and FSDP on an 8-device data axis against the unsharded optimizer
  (float32 rtol 1e-5), per-device state bytes 1/8, the collectives in the compiled step.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import traceback
from functools import partial
from typing import Any, Callable, Optional

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.registry import of_kind

RTOL = 1e-5
STEPS = 2
# (shape, mesh axes): a matrix sharded on both axes, a vector on one, a replicated scalar
LEAVES = {"w": ((8, 16), ("data", "model")), "b": ((16,), ("model",)), "s": ((), ())}


def _values(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (0.3 + rng.normal(size=shape)).astype(np.float32) for k, (shape, _) in LEAVES.items()}


def objective(params) -> jax.Array:
    """For the rows whose update evaluates the objective (L-BFGS, line searches): not a
    quadratic, which L-BFGS would minimise in two steps down to rounding noise."""
    return sum(jnp.sum(jnp.cosh(p) + 0.3 * p) for p in jax.tree.leaves(params))


def _as_numbers(tree: Any) -> list[np.ndarray]:
    def one(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [one(x) for x in jax.tree.leaves(tree)]


def assert_close(actual: Any, desired: Any, what: str) -> None:
    """Leaf by leaf at rtol 1e-5, atol rtol / 10 * max|desired| (as ``conftest.assert_trees_close``)
    but at least 1e-7 (float32 rounding at the params' O(1) scale: L-BFGS's ``value`` of the
    minimised quadratic is ~1e-12 of noise); integer and boolean leaves exactly."""
    assert jax.tree.structure(actual) == jax.tree.structure(desired), f"{what}: other tree structure"
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(desired)[0]]
    for path, a, d in zip(paths, _as_numbers(actual), _as_numbers(desired)):
        if not jnp.issubdtype(d.dtype, jnp.inexact):
            np.testing.assert_array_equal(a, d, err_msg=f"{what}{path}")
            continue
        atol = max(RTOL / 10 * float(np.max(np.abs(d[np.isfinite(d)]), initial=0.0)), 1e-7)
        np.testing.assert_allclose(a, d, rtol=RTOL, atol=atol, err_msg=f"{what}{path}")


def assert_layout(state: Any, shardings: Any, what: str) -> None:
    """Every state leaf is laid out as its sharding says (``is_equivalent_to``)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, leaf), want in zip(flat, jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (
            f"{what}: state leaf {jax.tree_util.keystr(path)} is {leaf.sharding}, expected {want}"
        )


def make_step(tx, entry) -> Callable:
    def step(params, state, grads):
        extra = dict(entry.update_extra)
        if entry.needs_objective:
            value, grads = jax.value_and_grad(objective)(params)
            extra.update(value=value, grad=grads, value_fn=objective)
        updates, state = tx.update(grads, state, params, **extra)
        return gradtx.apply_updates(params, updates), state

    return step


# --- registry ------------------------------------------------------------------------------


# Rows run with arguments beside their first grid point's, or in float64, each with its reason.
# SOAP: its first eigenbasis comes from one gradient, whose (16, 16) factor G^T G has rank 8:
# the eigenvectors of the 8-fold 0 eigenvalue are any basis of G's null space, and rounding
# (a sharded reduction's order, or one ulp of one gradient entry on one device:
# tests/test_preconditioned.py) picks another one, which SOAP's Adam sees (0.15 relative on
# `w` after two steps). With the factor of the 8-axis only (rank 8 of 8, from 16 columns) the
# eigenbasis is unique up to signs, which SOAP does not see; in float32 its eigenvectors are
# only good to ~eps / (relative eigengap, 1/36 here), which SOAP's step passes on (u ~ Q
# sign(Q^H g)): sharded, 3.7e-6 (soap) and 7.1e-6 (scale_by_soap) of a leaf's largest entry,
# past rtol 1e-5 at its small entries. So SOAP runs in float64 here (the same layouts and
# collectives): 4.7e-14 at most.
ROW_ARGS = {name: dict(max_precondition_dim=8) for name in ("soap", "scale_by_soap")}
FLOAT64_ROWS = ("soap", "scale_by_soap")


def make_tx(entry):
    """The row's transformation at its first grid point (with ``ROW_ARGS``)."""
    return entry.obj(**{**entry.grid[0], **ROW_ARGS.get(entry.name, {})})


def row_values(entry, seed: int) -> dict[str, np.ndarray]:
    """``_values(seed)``, in float64 for ``FLOAT64_ROWS``."""
    values = _values(seed)
    return {k: v.astype(np.float64) for k, v in values.items()} if entry.name in FLOAT64_ROWS else values


def single_device_run(entry) -> tuple[Any, Any]:
    """The params and state after ``STEPS`` eager steps on one device (device 0): the reference."""
    tx = make_tx(entry)
    params, step = row_values(entry, 0), make_step(tx, entry)
    state = tx.init(params)
    for i in range(STEPS):
        params, state = step(params, state, row_values(entry, 1 + i))
    return params, state


def _check(results: dict, key: str, fn: Callable[[], Any]) -> Any:
    """Run one check: ``results[key]`` is None when it passed, else the error."""
    try:
        out = fn()
        results[key] = None
        return out
    except Exception as e:  # noqa: BLE001 - each check's failure is reported, the others still run
        results[key] = f"{type(e).__name__}: {str(e).strip()[:600]}"
        return None


def run_row(entry, mesh, reference: tuple[Any, Any], results: dict, prefix: str) -> None:
    """The checks of one row on ``mesh`` against the single-device ``reference`` (params, state),
    each recorded under ``prefix + check``."""
    tx = make_tx(entry)
    spec = {k: NamedSharding(mesh, P(*axes)) for k, (_, axes) in LEAVES.items()}
    params0 = row_values(entry, 0)
    abstract_params = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=spec[k]) for k, v in params0.items()}

    def abstract_init():
        abstract = jax.eval_shape(tx.init, abstract_params)
        want = [(x.shape, x.dtype) for x in jax.tree.leaves(reference[1])]
        assert jax.tree.structure(abstract) == jax.tree.structure(reference[1]), "another tree than init's"
        assert [(x.shape, x.dtype) for x in jax.tree.leaves(abstract)] == want, "other shapes than init's"
        return gradtx.state_sharding(tx, abstract_params)

    shardings = _check(results, prefix + "abstract init", abstract_init)
    if shardings is None:
        return
    params = jax.device_put(params0, spec)

    def jitted_init():
        state = jax.jit(tx.init, out_shardings=shardings)(params)
        assert_layout(state, shardings, "jax.jit(tx.init, out_shardings=state_sharding(...))")
        return state

    def eager_init():
        eager = tx.init(params)
        for name in [k.name for k in tx.stage.fields if k.field.like_params]:
            assert_layout(getattr(eager, name), getattr(shardings, name), f"tx.init(sharded params), field {name}")

    def jitted_steps(state):
        p, step = params, jax.jit(make_step(tx, entry), in_shardings=(spec, shardings, spec),
                                  out_shardings=(spec, shardings))
        for i in range(STEPS):
            p, state = step(p, state, jax.device_put(row_values(entry, 1 + i), spec))
        assert_layout(state, shardings, f"after {STEPS} jitted steps")
        assert_close(p, reference[0], "params")
        assert_close(state, reference[1], "state")

    state = _check(results, prefix + "jitted init", jitted_init)
    if AxisType.Explicit not in mesh.axis_types:  # (on Explicit axes the same code runs)
        _check(results, prefix + "eager init", eager_init)
    if state is not None:
        _check(results, prefix + "jitted steps", lambda: jitted_steps(state))


# Rows whose update needs inputs other than a gradient tree like LEAVES: their own test
# files run them (each reason names what is missing).
OWN_INPUTS = {
    "sophia": "update needs obj_fn (tests/test_curvature.py)",
    "hutchinson_estimator_diag_hessian": "update needs obj_fn (tests/test_curvature.py)",
    "hessian_diagonal_ema": "update needs obj_fn (tests/test_curvature.py)",
    "dpsgd": "update takes per-example gradients (tests/test_privacy.py)",
    "differentially_private_aggregate": "update takes per-example gradients (tests/test_privacy.py)",
    "newton_schulz": "orthogonalizes matrices only; LEAVES has vectors (tests/test_muon.py)",
    "scale_by_muon": "orthogonalizes matrices only; LEAVES has vectors (tests/test_muon.py)",
    "scale_by_shape": "scales matrices only; LEAVES has vectors (tests/test_muon.py)",
}
# Rows whose jitted step stops at a sharding type error on Explicit axes: a contraction
# (dot product, eigh, SVD, concatenation, select) over a sharded dimension needs an
# out_sharding that their formulas do not give yet. On Auto axes they work.
EXPLICIT_UNSUPPORTED: tuple[str, ...] = ()  # none left


def registry_rows() -> list:
    return [e for e in of_kind("optimizer", "primitive") if e.grid and e.name not in OWN_INPUTS]


def registry_case() -> dict[str, Any]:
    results: dict[str, Any] = {}
    meshes = [jax.make_mesh((2, 4), ("data", "model"), axis_types=(t,) * 2) for t in (AxisType.Auto, AxisType.Explicit)]
    only = os.environ.get("GRADTX_SHARDING_ROWS")  # a comma-separated subset, for debugging one row
    for entry in registry_rows():
        if only and entry.name not in only.split(","):
            continue
        with jax.enable_x64(entry.name in FLOAT64_ROWS):
            reference = _check(results, f"{entry.name}|single device", partial(single_device_run, entry))
            for mesh in meshes:
                prefix = f"{entry.name}|{mesh.axis_types[0].name}|"
                if reference is None:
                    results[prefix + "jitted steps"] = "the single-device run failed"
                    continue
                with jax.set_mesh(mesh):
                    run_row(entry, mesh, reference, results, prefix)
    return results


# --- ZeRO-1 and FSDP -------------------------------------------------------------------------

MLP = (16, 32, 32, 10)  # the layers of the test's MLP: 10 outputs, which 8 devices do not divide
BATCH = 32


def mlp_params(sizes=MLP, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        f"layer{i}": {
            "w": (rng.normal(size=(m, n)) / np.sqrt(m)).astype(np.float32),
            "b": np.zeros(n, np.float32),
        }
        for i, (m, n) in enumerate(itertools.pairwise(sizes))
    }


def mlp_loss(params, x, y) -> jax.Array:
    if _is_explicit_tree(params):  # FSDP on Explicit axes: gather each layer's params before use
        params = jax.tree.map(lambda w: jax.sharding.reshard(w, P()), params)
    for i in range(len(params)):
        layer = params[f"layer{i}"]
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return jnp.mean(jnp.sum((x - y) ** 2, axis=-1))


def _is_explicit_tree(tree) -> bool:
    """Whether a leaf is sharded on an Explicit mesh axis (its type says so)."""
    return any(jax.typeof(x).sharding.mesh.explicit_axes and any(jax.typeof(x).sharding.spec)
               for x in jax.tree.leaves(tree))


def batches(n: int, sizes=MLP, batch: int = BATCH, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(batch, sizes[0])).astype(np.float32),
             rng.normal(size=(batch, sizes[-1])).astype(np.float32)) for _ in range(n)]


def train_step(tx) -> Callable:
    def step(params, state, x, y):
        grads = jax.grad(mlp_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return step


def device_bytes(tree: Any, device=None) -> int:
    """Bytes of ``tree`` held on one device (the first by default), from ``addressable_shards``."""
    device = device or jax.devices()[0]
    return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards if s.device == device)


def total_bytes(tree: Any) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def collectives(compiled) -> list[str]:
    """The collective operations in a compiled step's HLO, sorted."""
    text = compiled.as_text()
    ops = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
    return sorted(op for op in ops if f" {op}(" in text or f" {op}-start(" in text)


def single_device_training(tx, params, data) -> Any:
    step = jax.jit(train_step(tx))
    state = tx.init(params)
    for x, y in data:
        params, state = step(params, state, x, y)
    return params


def zero1_run(make: Callable, want: Any, mesh, data: list, params0: dict) -> Optional[list[str]]:
    """``zero1(make())`` in a data-parallel loop on ``mesh``; returns the compiled step's
    collectives (on Auto axes)."""
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    tx = gradtx.zero1(make(), mesh, "data")
    params = jax.device_put(params0, replicated)
    state = tx.init(params)
    rule = gradtx.fsdp_sharding(state, mesh, "data")
    assert_layout(state, rule, "zero1 init")
    step = jax.jit(train_step(tx))
    for x, y in data:
        params, state = step(params, state, jax.device_put(x, batch), jax.device_put(y, batch))
    assert_layout(state, rule, "zero1 after the jitted steps")
    assert_layout(params, jax.tree.map(lambda _: replicated, params), "params")
    assert_close(params, want, "params")
    replicated_leaves = [x for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(rule)) if s.is_fully_replicated]
    assert device_bytes(state) <= total_bytes(make().init(params0)) / 8 + device_bytes(replicated_leaves), (
        "per-device state bytes above 1/8 of the total (plus the replicated leaves)"
    )
    if mesh.axis_types[0] != AxisType.Auto:
        return None
    x, y = data[0]
    found = collectives(step.lower(params, state, jax.device_put(x, batch), jax.device_put(y, batch)).compile())
    assert "all-gather" in found, found
    return found


def fsdp_run(make: Callable, want: Any, mesh, data: list, params0: dict) -> None:
    """``make()`` with the params in ``fsdp_sharding``'s layout and the state in ``state_sharding``'s."""
    tx, batch = make(), NamedSharding(mesh, P("data"))
    shardings = gradtx.fsdp_sharding(params0, mesh, "data")
    params = jax.device_put(params0, shardings)
    state = gradtx.sharded_init(tx, params)
    state_shardings = gradtx.state_sharding(tx, params)
    assert_layout(state, state_shardings, "fsdp init")
    step = jax.jit(train_step(tx), in_shardings=(shardings, state_shardings, batch, batch),
                   out_shardings=(shardings, state_shardings))
    for x, y in data:
        params, state = step(params, state, x, y)
    assert_layout(state, state_shardings, "fsdp state after the jitted steps")
    assert_layout(params, shardings, "fsdp params after the jitted steps")
    assert_close(params, want, "params")


def eager_zero1(want: Any, data: list, params0: dict) -> None:
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    tx = gradtx.zero1(gradtx.adam(1e-2), mesh, "data")
    params = jax.device_put(params0, NamedSharding(mesh, P()))
    state = tx.init(params)
    for x, y in data:
        params, state = train_step(tx)(params, state, x, y)
    assert_close(params, want, "params")
    assert_layout(state, gradtx.fsdp_sharding(state, mesh, "data"), "eager zero1 state")


def control(params0: dict) -> str:
    """Negative control: optax's way, ``jax.jit(tx.init)``, puts the state on one device,
    and the layout check says so (returns its message)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    tx = gradtx.adam(1e-2)
    params = jax.device_put(params0, gradtx.fsdp_sharding(params0, mesh, "data"))
    try:
        assert_layout(jax.jit(tx.init)(params), gradtx.state_sharding(tx, params), "")
    except AssertionError as e:
        return str(e)[:200]
    raise AssertionError("the layout check passed a state that jax.jit(tx.init) put on one device")


INNERS = {
    "adam": lambda: gradtx.adam(1e-2),
    "clip+adamw": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=0.1)),
    "adafactor": lambda: gradtx.adafactor(1e-2, min_dim_size_to_factor=8),
}


def zero1_case() -> dict[str, Any]:
    """zero1 and FSDP on 8 devices against the single-device run (float32 rtol 1e-5)."""
    results: dict[str, Any] = {}
    data, params0 = batches(3), mlp_params()
    wants = {name: single_device_training(make(), params0, data) for name, make in INNERS.items()}
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        with jax.set_mesh(mesh):
            for name, make in INNERS.items():
                prefix, args = f"{name}|{axis_type.name}|", (make, wants[name], mesh, data, params0)
                results[prefix + "zero1 collectives"] = _check(results, prefix + "zero1", partial(zero1_run, *args))
                _check(results, prefix + "fsdp", partial(fsdp_run, *args))
    _check(results, "adam|Auto|zero1 eager", partial(eager_zero1, wants["adam"], data, params0))
    results["control|message"] = _check(results, "control|jit(init) without out_shardings", partial(control, params0))
    return results


# --- matrix_region: matrix math on Explicit axes ---------------------------------------------


def _region_math(g, stats):
    """A Kronecker-style leaf step: a product over both sharded dimensions of ``g``, an ``eigh``,
    a rotation, a column norm: each a ShardingTypeError on Explicit axes without the region."""
    stats = stats + g @ g.T
    q = jnp.linalg.eigh(stats)[1]
    return {"out": q @ (q.T @ g), "stats": stats, "norms": jnp.linalg.norm(g, axis=0)}


def region_case() -> dict[str, Any]:
    """``gradtx.sharding.matrix_region`` on the 2 x 4 mesh against the same math on one device
    (float32 rtol 1e-5): on Explicit axes the bare function is a ShardingTypeError, the region
    runs it (eagerly and jitted) and lays the outputs out like the inputs; on Auto axes the
    region is the function itself (the same jaxpr)."""
    from gradtx.sharding import matrix_region

    results: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    g = rng.normal(size=(8, 16)).astype(np.float32)
    stats = np.eye(8, dtype=np.float32)
    want = jax.device_put(_region_math(g, stats), jax.devices()[0])
    layout = {"out": ("data", "model"), "stats": (), "norms": ("model",)}
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        args = (jax.device_put(g, NamedSharding(mesh, P("data", "model"))),
                jax.device_put(stats, NamedSharding(mesh, P())))
        prefix = f"{axis_type.name}|"

        def bare(args=args):
            try:
                jax.jit(_region_math)(*args)
            except Exception as e:  # noqa: BLE001 - the error's type is the result
                return type(e).__name__
            return "no error"

        def region(jit: bool, args=args, mesh=mesh):
            fn = jax.jit(matrix_region(_region_math)) if jit else matrix_region(_region_math)
            got = fn(*args)
            assert_close(got, want, "matrix_region")
            for k, axes in layout.items():
                assert got[k].sharding.is_equivalent_to(NamedSharding(mesh, P(*axes)), got[k].ndim), (
                    f"{k}: {got[k].sharding.spec}, expected {axes}")

        with jax.set_mesh(mesh):
            if axis_type == AxisType.Explicit:
                results[prefix + "bare error"] = _check(results, prefix + "bare", bare)
                _check(results, prefix + "region eager", partial(region, False))
                _check(results, prefix + "region jitted", partial(region, True))
            else:
                def same(args=args):
                    return str(jax.make_jaxpr(matrix_region(_region_math))(*args)) == str(
                        jax.make_jaxpr(_region_math)(*args))

                results[prefix + "same jaxpr"] = _check(results, prefix + "no-op", same)
    return results


def diagnostics_case() -> dict[str, Any]:
    """``chain(adam, training_diagnostics(per_leaf=True, reset_every=2))`` on the 2 x 4 mesh,
    under ``Auto`` and ``Explicit`` axes, with the middle of three jitted steps unobserved
    (``observe=False``: the reference point still moves): the recorded values, params and
    state against the same steps on one device (float32 rtol 1e-5)."""
    tx = gradtx.chain(gradtx.adam(0.1), gradtx.training_diagnostics(per_leaf=True, reset_every=2))
    params0 = _values(0)
    grads = [_values(s) for s in (1, 2, 3)]

    def run(params, shard):
        state = tx.init(params)
        step = jax.jit(lambda g, s, p, observe: tx.update(g, s, p, observe=observe), static_argnums=3)
        for t, g in enumerate(grads):
            u, state = step(shard(g), state, params, t != 1)
            params = gradtx.apply_updates(params, u)
        return params, state

    device = jax.devices()[0]
    want = run(jax.device_put(params0, device), lambda g: jax.device_put(g, device))
    results: dict[str, Any] = {}
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        shardings = {k: NamedSharding(mesh, P(*axes)) for k, (_, axes) in LEAVES.items()}

        def sharded(mesh=mesh, shardings=shardings):
            with jax.set_mesh(mesh):
                got = run(jax.device_put(params0, shardings), lambda g: jax.device_put(g, shardings))
            assert_close(got, want, "params and state")

        _check(results, f"{axis_type.name}|observe some steps", sharded)
    return results


CASES = {"registry": registry_case, "zero1": zero1_case, "region": region_case, "diagnostics": diagnostics_case}


def run_case(name: str) -> dict[str, Any]:
    try:
        return CASES[name]()
    except Exception:  # noqa: BLE001 - a case that cannot run is reported as such
        return {"case": traceback.format_exc()[-2000:]}


def main(names: list[str]) -> None:
    sys.stdout.write(json.dumps({name: run_case(name) for name in names}))


if __name__ == "__main__":
    main(sys.argv[1:])
