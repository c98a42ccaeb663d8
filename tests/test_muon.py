"""Muon and the Newton-Schulz stage (``gradtx/matrix.py``, ``gradtx/optimizers/muon.py``).

References and tolerances, test by test:

- optax.contrib 0.2.8's ``muon`` over the registry grid (``gradtx/rows/muon.py``), jitted,
  200 steps on the parity tree: params, last updates and each label's state, float64 rtol
  1e-10, float32 rtol 1e-5; eagerly 8 steps (optax's eager step retraces its loop);
  ``scale_by_muon`` against ``optax.contrib.scale_by_muon`` on matrices and a conv kernel;
- Newton-Schulz: the singular-value band of optax's coefficients and the polar factor
  ``U V^T`` (numpy's SVD) reached by the cubic iteration ``(1.5, -0.5, 0)``; wrong formulas
  (``MUTANTS``) fail float32 rtol 1e-5 against optax's ``orthogonalize_via_newton_schulz``;
- torch.optim.Muon (torch 2.13) in float64 on 2-D parameters, both ``adjust_lr_fn``;
- bad input: errors that name the leaf path.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close, compare_states, parity_inputs, run_optax, run_steps
from optax.contrib import _muon as optax_muon

import gradtx
from gradtx.matrix import DEFAULT_NS_COEFFS, MuonDimensionNumbers, _ns_step
from gradtx.rows.muon import MUON_GRID

RTOL = {"float32": 1e-5, "float64": 1e-10}


def _x64(dtype_name: str):
    return jax.enable_x64(dtype_name == "float64")


def compare_muon_states(got, want, rtol: float) -> None:
    """Label by label, gradtx's inner record against optax's inner states (by field name);
    optax's ``ns_coeffs`` is a constant gradtx does not keep."""
    for label in ("muon", "adam"):
        compare_states(
            got.inner_states[label].inner_state, want.inner_states[label].inner_state, rtol, absent=("ns_coeffs",)
        )


# --- parity with optax.contrib -------------------------------------------------------------


JITTED = [
    *(pytest.param(kw, d, id=f"grid{i}-{d}") for i, kw in enumerate(MUON_GRID) for d in ("float32", "float64")),
    pytest.param(dict(learning_rate=0.02, mu_dtype=jnp.bfloat16), "float32", id="mu_dtype=bfloat16-float32"),
]


@pytest.mark.parametrize("kwargs, dtype_name", JITTED)
def test_muon_matches_optax_jitted(kwargs, dtype_name):
    """gradtx.muon vs optax.contrib.muon (0.2.8), the same arguments (the registry grid, and
    bfloat16 momenta), 200 jitted steps on the parity tree (a 3x2 matrix for Muon, a vector
    and a scalar for Adam): params, last updates and both labels' states to rtol 1e-10
    (float64; Newton-Schulz as optax computes it, operation for operation) / 1e-5 (float32)."""
    with _x64(dtype_name):
        params, grads = parity_inputs(dtype_name)
        got = run_steps(gradtx.muon(**kwargs), params, grads, jit=True)
        want = run_optax(optax.contrib.muon(**kwargs), params, grads, jit=True)
        assert_trees_close(got.params, want.params, RTOL[dtype_name], what="params")
        assert_trees_close(got.updates, want.updates, RTOL[dtype_name], what="last updates")
        compare_muon_states(got.state, want.state, RTOL[dtype_name])


def test_muon_matches_optax_eagerly():
    """The same, op by op (no jit) at the first grid point, 8 steps, float32 rtol 1e-5."""
    params, grads = parity_inputs("float32")
    got = run_steps(gradtx.muon(**MUON_GRID[0]), params, grads[:8], jit=False)
    want = run_optax(optax.contrib.muon(**MUON_GRID[0]), params, grads[:8], jit=False)
    assert_trees_close(got.params, want.params, 1e-5, what="params")
    compare_muon_states(got.state, want.state, 1e-5)


def matrix_tree(seed: int, dtype) -> dict:
    """Matrices wide, tall and square, and a conv kernel (h, w, c_in, c_out)."""
    rng = np.random.default_rng(seed)
    shapes = {"wide": (3, 5), "tall": (6, 2), "square": (4, 4), "conv": (3, 3, 2, 4)}
    return {k: jnp.asarray(0.3 + rng.normal(size=s), dtype) for k, s in shapes.items()}


CONV_DIMS = {
    "wide": MuonDimensionNumbers(),
    "tall": MuonDimensionNumbers(),
    "square": MuonDimensionNumbers(),
    "conv": MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3),
}
SCALE_BY_MUON = [{}, dict(ns_steps=3, beta=0.8, eps=1e-3, nesterov=False, adaptive=True, preconditioning="aol")]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("kwargs", SCALE_BY_MUON, ids=["defaults", "moved"])
def test_scale_by_muon_matches_optax(kwargs, dtype_name):
    """gradtx.scale_by_muon vs optax.contrib.scale_by_muon with the same dimension numbers
    (a conv kernel as a batch of 9 x ... matrices), 50 jitted steps: updates and ``count, mu``
    to rtol 1e-10 (float64) / 1e-5 (float32)."""
    with _x64(dtype_name):
        dtype = jnp.dtype(dtype_name)
        params, grads = matrix_tree(0, dtype), [matrix_tree(1 + i, dtype) for i in range(50)]
        optax_dims = {k: optax.contrib.MuonDimensionNumbers(*d) for k, d in CONV_DIMS.items()}
        got = run_steps(gradtx.scale_by_muon(**kwargs, weight_dimension_numbers=CONV_DIMS), params, grads, jit=True)
        want = run_optax(optax.contrib.scale_by_muon(**kwargs, weight_dimension_numbers=optax_dims), params, grads,
                         jit=True)
        assert_trees_close(got.updates, want.updates, RTOL[dtype_name], what="updates")
        compare_states(got.state, want.state, RTOL[dtype_name], absent=("ns_coeffs",))


def last_axis_out(params):
    """Dimension numbers: every leaf of rank >= 2 is Muon's, its last axis the output and the
    others the reduction; vectors and scalars are Adam's (None)."""
    return jax.tree.map(
        lambda p: MuonDimensionNumbers(tuple(range(p.ndim - 1)), p.ndim - 1) if p.ndim >= 2 else None, params
    )


def test_none_dimension_numbers_leave_a_leaf_to_adam():
    """optax 0.2.8 documents ``None`` as "not a Muon parameter" but its ``muon`` cannot take
    it (jax flattens a None leaf as an empty node: a pytree structure error at init).
    gradtx's labels: the parity tree with ``last_axis_out`` (None for the vector and the
    scalar) runs exactly as with the default labels (reference: that run, bit for bit)."""
    params, grads = parity_inputs("float32")
    with pytest.raises(ValueError, match="pytree structure error"):
        optax.contrib.muon(0.02, muon_weight_dimension_numbers=last_axis_out).init(params)
    got = run_steps(gradtx.muon(0.02, muon_weight_dimension_numbers=last_axis_out), params, grads[:5], jit=True)
    want = run_steps(gradtx.muon(0.02), params, grads[:5], jit=True)
    assert_trees_close(got.params, want.params, 0.0)


def test_dimension_numbers_are_optax_s():
    """The same record as optax.contrib.MuonDimensionNumbers: fields and defaults."""
    assert MuonDimensionNumbers._fields == optax.contrib.MuonDimensionNumbers._fields
    assert MuonDimensionNumbers() == tuple(optax.contrib.MuonDimensionNumbers())


# --- Newton-Schulz: closed forms ------------------------------------------------------------


def with_singular_values(s: np.ndarray, shape: tuple, seed: int) -> np.ndarray:
    """``U diag(s) V^T`` of ``shape`` with random orthonormal ``U``, ``V``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], len(s))))
    return (u * s) @ v.T


def orthogonalized(x, **kwargs) -> np.ndarray:
    tx = gradtx.newton_schulz(**kwargs)
    return np.asarray(tx.update(jnp.asarray(x), tx.init(jnp.asarray(x)))[0])


SHAPES = [(5, 8), (8, 5), (6, 6)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_newton_schulz_band_and_singular_vectors(shape):
    """optax's coefficients, 5 steps: the singular vectors are kept (``U^T O V`` diagonal to
    1e-12) and the singular values land in the band [0.68, 1.2] for inputs whose singular
    values span 0.05 to 1 of the largest (closed form: the quintic map, float64)."""
    with jax.enable_x64(True):
        s = np.geomspace(1.0, 0.05, min(shape))
        x = with_singular_values(3.0 * s, shape, seed=0)
        out = orthogonalized(x)
        u, _, vt = np.linalg.svd(x, full_matrices=False)
        core = u.T @ out @ vt.T
        np.testing.assert_allclose(core - np.diag(np.diag(core)), 0.0, atol=1e-12)
        assert np.all((np.diag(core) > 0.68) & (np.diag(core) < 1.2)), np.diag(core)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cubic_newton_schulz_reaches_the_polar_factor(shape):
    """With the cubic coefficients ``(1.5, -0.5, 0)`` (the classical iteration, convergent on
    (0, sqrt(3))) and 60 steps, the stage gives the polar factor ``U V^T`` of numpy's SVD to
    rtol 1e-10 (float64)."""
    with jax.enable_x64(True):
        x = with_singular_values(np.geomspace(2.0, 0.1, min(shape)), shape, seed=1)
        u, _, vt = np.linalg.svd(x, full_matrices=False)
        cubic = ((1.5, -0.5, 0.0),) * 60  # one row per step: a loop compiled once, not unrolled
        np.testing.assert_allclose(orthogonalized(x, ns_coeffs=cubic, ns_steps=60), u @ vt, rtol=1e-10, atol=1e-12)


def test_zero_gradients_give_zero_updates():
    """``0 / (0 + eps) = 0``: a zero matrix stays zero, finite (closed form, exact); Muon's
    first step on zero gradients moves nothing but the decay."""
    assert np.all(orthogonalized(np.zeros((3, 4), np.float32)) == 0.0)
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "s": jnp.asarray(1.0)}
    tx = gradtx.muon(0.1)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert all(np.all(np.asarray(u) == 0.0) for u in jax.tree.leaves(updates))


def _no_normalisation(x):
    """NS^5 on X itself (wrong: the iteration diverges outside the unit ball)."""
    c = jnp.asarray(DEFAULT_NS_COEFFS, x.dtype)
    x = x.T if x.shape[0] > x.shape[1] else x
    for _ in range(5):
        x = _ns_step(x, c)
    return x


class Mutant(NamedTuple):
    what: str
    wrong: Callable[[jax.Array], jax.Array]


MUTANTS = [
    Mutant("b and c swapped", lambda x: orthogonalized(x, ns_coeffs=(3.4445, 2.0315, -4.7750))),
    Mutant("cubic coefficients", lambda x: orthogonalized(x, ns_coeffs=(1.5, -0.5, 0.0))),
    Mutant("four steps", lambda x: orthogonalized(x, ns_steps=4)),
    Mutant("no normalisation", lambda x: np.asarray(_no_normalisation(jnp.asarray(x)))),
]
CONTROL = Mutant("optax's formula", orthogonalized)


@pytest.mark.parametrize("mutant", [*MUTANTS, CONTROL], ids=lambda m: m.what)
@pytest.mark.parametrize("shape", [(4, 7), (7, 4)], ids=str)
def test_wrong_newton_schulz_fails_the_tolerance(mutant, shape):
    """Reference: optax.contrib's orthogonalize_via_newton_schulz, float32 rtol 1e-4. Each
    mutant differs beyond it (by 0.36 or more of the largest entry, or NaN); the right
    formula (the control) passes. Five float32 iterations, op by op, amplify the rounding
    of the matrix products: 1.4e-5 relative on 1 of 28 entries measured with XLA:CPU's loop
    emitters (the test suite's, ``conftest.FAST_COMPILE_FLAG``), under 1e-5 with its default."""
    x = np.asarray(with_singular_values(np.geomspace(2.0, 0.1, 4), shape, seed=2), np.float32)
    want = optax_muon.orthogonalize_via_newton_schulz(jnp.asarray(x), jnp.asarray(DEFAULT_NS_COEFFS))
    got = np.asarray(mutant.wrong(x), np.float64)
    if mutant is CONTROL:
        assert_trees_close(got, want, 1e-4)
    else:
        with pytest.raises(AssertionError):
            assert_trees_close(got, want, 1e-4)


def _program(x) -> str:
    """The stage's jaxpr on ``x``, as text (its arrays' types: ``f32[1,4,4]``, a batch of one matrix)."""
    tx = gradtx.newton_schulz()
    return str(jax.make_jaxpr(lambda u: tx.update(u, tx.init(u))[0])(x))


def test_a_tall_matrix_is_transposed():
    """``NS(X^T) = NS(X)^T`` in exact arithmetic, so leaving a tall matrix as it is would be a
    cost, not a formula, error: the stage forms the 4x4 Gram matrix of a 9x4 matrix, never
    the 9x9 one (reference: the jaxpr's dot shapes), and its result is the transpose of
    the wide matrix's, to float32 rtol 1e-5."""
    x = jnp.asarray(with_singular_values(np.geomspace(2.0, 0.1, 4), (9, 4), seed=3), jnp.float32)
    program = _program(x)
    assert "f32[1,4,4]" in program and "9,9]" not in program
    assert_trees_close(orthogonalized(x), orthogonalized(x.T).T, 1e-5)


# --- scale_by_shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dims, rms, factor",
    [
        ((3, 5), MuonDimensionNumbers(), None, np.sqrt(5 / 3)),
        ((5, 3), MuonDimensionNumbers(), None, 1.0),
        ((5, 3), MuonDimensionNumbers(), 0.2, 0.2 * np.sqrt(5)),
        ((3, 3, 2, 4), MuonDimensionNumbers((0, 1, 2), 3), None, 1.0),
        ((3, 3, 2, 40), MuonDimensionNumbers((0, 1, 2), 3), 0.5, 0.5 * np.sqrt(40)),
    ],
)
def test_scale_by_shape_closed_form(shape, dims, rms, factor):
    """``sqrt(max(1, fan_out / fan_in))`` or ``sqrt(max(fan_in, fan_out)) * rms``, fan-in the
    product of the reduction axes (closed form, float32 rtol 1e-6)."""
    tx = gradtx.scale_by_shape({"w": dims}, rms)
    u = {"w": jnp.ones(shape)}
    np.testing.assert_allclose(np.asarray(tx.update(u, tx.init(u))[0]["w"]), factor, rtol=1e-6)


# --- torch.optim.Muon ----------------------------------------------------------------------

TORCH_SHAPES = {"a": (6, 4), "b": (4, 6), "c": (5, 5)}  # JAX layout (in, out): torch's weight is the transpose
TORCH_SETTINGS = [
    dict(adjust_lr_fn="original", nesterov=True, weight_decay=0.1),
    dict(adjust_lr_fn="original", nesterov=False, weight_decay=0.0),
    dict(adjust_lr_fn="match_rms_adamw", nesterov=True, weight_decay=0.0),
    dict(adjust_lr_fn="match_rms_adamw", nesterov=False, weight_decay=0.1),
]


def _torch_ns_in_float64(grad, ns_coefficients, ns_steps, eps):
    """torch 2.13's ``_zeropower_via_newtonschulz`` line for line, without its cast to bfloat16."""
    import torch

    a, b, c = ns_coefficients
    x = grad.T if grad.size(0) > grad.size(1) else grad
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


def torch_muon_run(setting: dict, params, grads, lr: float) -> dict:
    import torch

    weights = {k: torch.tensor(v.T.copy(), dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.Muon(list(weights.values()), lr=lr, momentum=0.9, eps=1e-7, **setting)
    for g in grads:
        for k, w in weights.items():
            w.grad = torch.tensor(np.asarray(g[k]).T.copy(), dtype=torch.float64)
        opt.step()
    return {k: w.detach().numpy().T for k, w in weights.items()}


@pytest.fixture
def torch_ns_in_float64(monkeypatch):
    """torch.optim.Muon with its Newton-Schulz in float64 (torch computes it in bfloat16)."""
    import torch.optim._muon

    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _torch_ns_in_float64)


def _muon_inputs(n: int):
    rng = np.random.default_rng(4)
    params = {k: rng.normal(size=s) for k, s in TORCH_SHAPES.items()}
    grads = [{k: 0.2 + rng.normal(size=s) for k, s in TORCH_SHAPES.items()} for _ in range(n)]
    return params, grads


@pytest.mark.parametrize("setting", TORCH_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_torch_convention_matches_torch_muon(setting, torch_ns_in_float64):
    """gradtx.muon(adjust_lr_fn=...) vs torch.optim.Muon (torch 2.13), 60 steps in float64 on
    2-D parameters (torch's weight ``(out, in)`` is JAX's ``(in, out)``), torch's
    Newton-Schulz run in float64 instead of its bfloat16: params to rtol 1e-10."""
    params, grads = _muon_inputs(60)
    want = torch_muon_run(setting, params, grads, lr=0.02)
    with jax.enable_x64(True):
        tx = gradtx.muon(0.02, beta=0.9, eps=1e-7, **setting)
        got = run_steps(tx, jax.tree.map(jnp.asarray, params), [jax.tree.map(jnp.asarray, g) for g in grads], jit=True)
        assert_trees_close(got.params, want, 1e-10)


def test_torch_muon_computes_newton_schulz_in_bfloat16():
    """Unpatched torch.optim.Muon rounds its Newton-Schulz to bfloat16: gradtx in float64
    agrees with its 20-step displacement to a relative Frobenius error below 5e-2 (bfloat16's
    8 bits), but not below 1e-4."""
    setting = TORCH_SETTINGS[0]
    params, grads = _muon_inputs(20)
    want = torch_muon_run(setting, params, grads, lr=0.02)
    with jax.enable_x64(True):
        tx = gradtx.muon(0.02, beta=0.9, eps=1e-7, **setting)
        got = run_steps(tx, jax.tree.map(jnp.asarray, params), [jax.tree.map(jnp.asarray, g) for g in grads], jit=True)
        for k in params:
            moved, torch_moved = np.asarray(got.params[k]) - params[k], want[k] - params[k]
            error = np.linalg.norm(moved - torch_moved) / np.linalg.norm(torch_moved)
            assert 1e-4 < error < 5e-2, (k, error)


# --- bad input ------------------------------------------------------------------------------

LEAVES = {"w": jnp.ones((3, 2)), "k": jnp.ones((3, 3, 2)), "b": jnp.ones(2)}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: gradtx.scale_by_muon(),
         r"gradtx\.scale_by_muon > newton_schulz: the updates at leaf path \['b'\] have shape \(2,\): Newton-Schulz"),
        (lambda: gradtx.muon(0.1, muon_weight_dimension_numbers={"w": MuonDimensionNumbers(0, 2), "k": None,
                                                                 "b": None}),
         r"leaf path \['w'\] have shape \(3, 2\): the dimension numbers .* name axes outside a rank-2 array"),
        (lambda: gradtx.muon(0.1, muon_weight_dimension_numbers={"w": None, "k": MuonDimensionNumbers((0, 1), 1),
                                                                 "b": None}),
         r"leaf path \['k'\] have shape \(3, 3, 2\): the dimension numbers .* name an axis twice"),
        (lambda: gradtx.muon(0.1, muon_weight_dimension_numbers={"w": None, "k": None,
                                                                 "b": MuonDimensionNumbers()}),
         r"leaf path \['b'\] have shape \(2,\): Newton-Schulz orthogonalizes matrices"),
        (lambda: gradtx.muon(0.1, muon_weight_dimension_numbers={"w": None, "k": True, "b": None}),
         r"the weight dimension numbers at leaf path \['k'\] are True"),
        (lambda: gradtx.muon(0.1, muon_weight_dimension_numbers={"w": None, "b": None}),
         r"the weight dimension numbers have no entry for leaf path \['k'\]"),
    ],
    ids=["rank-1-without-dims", "axis-out-of-range", "axis-twice", "rank-1-with-dims", "not-dims", "missing"],
)
def test_a_leaf_muon_cannot_orthogonalize_is_named(make, message):
    """Reference: the message, which names the leaf path and what is wrong with it (optax
    raises a reshape error, or wraps the axis modulo the rank)."""
    tx = make()
    with pytest.raises(gradtx.UpdateError, match=message):
        tx.update(LEAVES, tx.init(LEAVES), LEAVES)


def test_the_default_labels_leave_non_matrices_to_adam():
    """Without dimension numbers a 3-D kernel, a vector and a scalar are Adam's (optax's
    labelling): the state's Muon part keeps only the matrix (reference: the tree)."""
    tx = gradtx.muon(0.1)
    state = tx.init({**LEAVES, "s": jnp.asarray(1.0)})
    kept = state.inner_states["muon"].inner_state.mu
    assert [k for k, v in kept.items() if not isinstance(v, gradtx.MaskedNode)] == ["w"]
