"""SOAP and Shampoo (``gradtx.optimizers.preconditioned``, ``gradtx.kronecker``): optax has
neither, so the registry's parity suite cannot run them. References here:

- ``pytorch_optimizer`` 4.1.0 (installed for the tests only): ``SOAP`` (the port of Vyas et
  al.'s official code) and ``ScalableShampoo(use_svd=True, shape_interpretation=False)``
  (distributed Shampoo: blocks, grafting, inverse roots every k steps). Float64, 50 steps,
  the same precomputed gradients (a small MLP's shapes: two matrices, two biases, a
  scalar) fed to both; the params' displacement agrees to 1e-8 (per leaf, in max norm:
  ``max|x - x_ref| <= 1e-8 * max|x_ref|``), and so do the moments.
- Closed forms: with exact factors (``matrix_eps = 0``, one gradient) the first step of
  both is the polar factor ``U V^T`` of the gradient; on ``f(W) = ||W - C||^2 / 2`` with
  ``C = s Q`` (Q orthogonal) it reaches the minimum in one step.
- Mutants: wrong formulas (eigenbasis never refreshed, wrong root power, factors L and R
  swapped, ...) must fail float32's tolerance (1e-5, same norm) against the reference,
  where the right formula in float32 passes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_optimizer import SOAP, ScalableShampoo
from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

import gradtx
from gradtx import kronecker
from gradtx.optimizers import preconditioned

MLP = {"w1": (6, 5), "b1": (5,), "w2": (5, 4), "b2": (4,), "scale": ()}
# precondition_1d: a vector's first factor g g^T has rank 1, so the eigenvectors of its 0
# eigenvalue are any basis of g's complement, which LAPACK builds choose differently
# (torch's and jaxlib's): SOAP's trajectory depends on that choice. Length-2 vectors have a
# one-dimensional complement, unique up to sign, which SOAP does not see. (The MLP's
# matrices are at most one row longer than wide for the same reason.)
VECTORS_1D = {"w": (3, 2), "b": (2,), "scale": ()}
SQUARE = {"w": (5, 5), "b": (5,), "scale": ()}
STEPS = 50
LR = 0.02


def seeded(shapes: dict, seed: int, mean: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: mean + rng.normal(size=s) for k, s in shapes.items()}


@functools.cache
def gradients(shapes_key: str, n: int) -> tuple:
    """``n`` seeded gradient dicts (numpy float64, mean 0.3)."""
    shapes = TREES[shapes_key]
    rng = np.random.default_rng(1)
    return tuple({k: 0.3 + rng.normal(size=s) for k, s in shapes.items()} for _ in range(n))


TREES = {"mlp": MLP, "vectors_1d": VECTORS_1D, "square": SQUARE}


class SOAPQRInDtype(SOAP):
    """``pytorch_optimizer.SOAP`` with one line changed: its QR power iteration casts to
    float32 (``torch.linalg.qr(power_iter.to(torch.float32))``, for bfloat16's sake), which
    rounds a float64 run's eigenbasis to float32; here it runs in the params' dtype.
    (``test_reference_qr_rounds_float64_to_float32`` shows the difference.)"""

    def get_orthogonal_matrix_qr(self, state, max_precondition_dim=10000, merge_dims=False):
        exp_avg_sq, matrices = state["exp_avg_sq"], []
        for ind, (m, o) in enumerate(zip(state["GG"], state["Q"])):
            if len(m) == 0:
                matrices.append([])
                continue
            product = m @ o
            order = torch.argsort((o * product).sum(dim=0), descending=True)
            exp_avg_sq = exp_avg_sq.index_select(ind, order)
            matrices.append(torch.linalg.qr(product.index_select(1, order))[0])
        state["exp_avg_sq"] = exp_avg_sq
        return matrices


def torch_soap(cls=SOAPQRInDtype, **kw) -> Callable[[list], Any]:
    """``SOAP`` with gradtx's argument names."""
    kw = dict(kw)
    betas = (kw.pop("b1", 0.95), kw.pop("b2", 0.95))
    return lambda params: cls(params, lr=kw.pop("learning_rate"), betas=betas, **kw)


GRAFTS = {"sgd": LayerWiseGrafting.SGD, "rmsprop": LayerWiseGrafting.RMSPROP, "sqrtn": LayerWiseGrafting.SQRTN,
          "none": LayerWiseGrafting.NONE}
SHAMPOO_NAMES = {"precondition_frequency": "preconditioning_compute_steps",
                 "max_precondition_dim": "no_preconditioning_for_layers_with_dim_gt"}


def torch_shampoo(**kw) -> Callable[[list], Any]:
    """``ScalableShampoo(use_svd=True, shape_interpretation=False)`` with gradtx's names."""
    kw = dict(kw)
    betas = (kw.pop("b1", 0.9), kw.pop("b2", 0.999))
    lr = kw.pop("learning_rate")
    if "graft_type" in kw:
        kw["graft_type"] = GRAFTS[kw["graft_type"]]
    kw = {SHAMPOO_NAMES.get(k, k): v for k, v in kw.items()}
    return lambda params: ScalableShampoo(params, lr=lr, betas=betas, use_svd=True, shape_interpretation=False, **kw)


def run_torch(make: Callable[[list], Any], tree: str, n: int) -> tuple[dict, Any, dict]:
    """The reference run in float64: final params, the optimizer, and the torch params."""
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in seeded(TREES[tree], 0).items()}
    opt = make(list(params.values()))
    for g in gradients(tree, n):
        for k, p in params.items():
            p.grad = torch.tensor(g[k], dtype=torch.float64)
        opt.step()
    return {k: p.numpy() for k, p in params.items()}, opt, params


def run_gradtx(tx, tree: str, n: int, dtype=jnp.float64) -> tuple[dict, Any]:
    """gradtx over the same gradients, jitted (call inside ``jax.enable_x64`` for float64;
    the registry's dtype suite runs SOAP and Shampoo eagerly)."""
    cast = lambda t: {k: jnp.asarray(v, dtype) for k, v in t.items()}  # noqa: E731

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gradtx.apply_updates(p, u), s

    step = jax.jit(step)
    params = cast(seeded(TREES[tree], 0))
    state = tx.init(params)
    for g in gradients(tree, n):
        params, state = step(params, state, cast(g))
    return {k: np.asarray(v, np.float64) for k, v in params.items()}, state


@functools.cache
def float64_run(name: str, tree: str, kw_items: tuple) -> tuple[dict, Any]:
    """``gradtx.<name>(LR, **kw)`` in float64 over ``STEPS`` steps, run once per test session."""
    with jax.enable_x64(True):
        params, state = run_gradtx(getattr(gradtx, name)(LR, **dict(kw_items)), tree, STEPS)
        return params, jax.tree.map(lambda x: np.asarray(x), state)


def assert_close(actual: dict, desired: dict, rtol: float, what: str = "") -> None:
    """Per leaf, ``max|a - d| <= rtol * max|d|`` (max norm: an eigenbasis rounds every
    element at the scale of the largest)."""
    for k in desired:
        a, d = np.asarray(actual[k], np.float64), np.asarray(desired[k], np.float64)
        err, scale = np.max(np.abs(a - d)), np.max(np.abs(d))
        assert np.all(np.isfinite(a)) and err <= rtol * scale, f"{what}{k}: max error {err:.3g} > {rtol} * {scale:.3g}"


def displacement(params: dict, tree: str) -> dict:
    """How far the params moved from their start (the trajectory, not the start's digits)."""
    start = seeded(TREES[tree], 0)
    return {k: np.asarray(params[k], np.float64) - start[k] for k in params}


# --- float64 trajectories against pytorch_optimizer 4.1.0 ------------------------------------

SOAP_MOVED = dict(b1=0.9, b2=0.8, shampoo_beta=0.7, eps=1e-3, weight_decay=0.1)
SOAP_CASES = [
    ("frequency=1", "mlp", dict(precondition_frequency=1, **SOAP_MOVED)),
    ("frequency=3", "mlp", dict(precondition_frequency=3, **SOAP_MOVED)),
    ("defaults,frequency=3", "mlp", dict(precondition_frequency=3)),
    ("one-sided,frequency=2", "mlp", dict(precondition_frequency=2, max_precondition_dim=5, **SOAP_MOVED)),
    ("precondition_1d,frequency=1", "vectors_1d", dict(precondition_frequency=1, precondition_1d=True, **SOAP_MOVED)),
]


@pytest.mark.parametrize("tree,kw", [c[1:] for c in SOAP_CASES], ids=[c[0] for c in SOAP_CASES])
def test_soap_matches_pytorch_optimizer(tree, kw):
    """``gradtx.soap`` vs ``pytorch_optimizer.SOAP(lr, betas=(b1, b2), shampoo_beta, eps,
    weight_decay, precondition_frequency, max_precondition_dim, precondition_1d)`` (QR in
    float64, ``SOAPQRInDtype``), float64, 50 steps: the params' displacement, ``mu``
    (``exp_avg``) and ``nu`` (``exp_avg_sq``, in the eigenbasis) to rtol 1e-8."""
    want, opt, torch_params = run_torch(torch_soap(learning_rate=LR, **kw), tree, STEPS)
    got, state = float64_run("soap", tree, tuple(sorted(kw.items())))
    assert_close(displacement(got, tree), displacement(want, tree), 1e-8, "params ")
    for field, name in (("mu", "exp_avg"), ("nu", "exp_avg_sq")):
        ref = {k: opt.state[p][name].numpy() for k, p in torch_params.items()}
        assert_close(getattr(state, field), ref, 1e-8, f"{field} ")


SHAMPOO_CASES = [
    ("blocks,frequency=1", dict(precondition_frequency=1, start_preconditioning_step=1, block_size=4)),
    ("rmsprop,frequency=3", dict(precondition_frequency=3, start_preconditioning_step=5, b1=0.8, b2=0.95,
                                 graft_type="rmsprop", weight_decay=0.1, diagonal_eps=1e-3, matrix_eps=1e-3)),
    ("sqrtn,decoupled,frequency=2", dict(precondition_frequency=2, start_preconditioning_step=3, nesterov=False,
                                         graft_type="sqrtn", inverse_exponent_override=2, max_precondition_dim=5,
                                         weight_decay=0.1, decoupled_weight_decay=True, block_size=3)),
    ("no graft,frequency=2", dict(precondition_frequency=2, start_preconditioning_step=3, graft_type="none", b2=0.99)),
]


@pytest.mark.parametrize("kw", [c[1] for c in SHAMPOO_CASES], ids=[c[0] for c in SHAMPOO_CASES])
def test_shampoo_matches_pytorch_optimizer(kw):
    """``gradtx.shampoo`` vs ``pytorch_optimizer.ScalableShampoo(use_svd=True,
    shape_interpretation=False, lr, betas, block_size, preconditioning_compute_steps,
    start_preconditioning_step, graft_type, nesterov, inverse_exponent_override, matrix_eps,
    diagonal_eps, no_preconditioning_for_layers_with_dim_gt, weight_decay,
    decoupled_weight_decay)``, float64, 50 steps: displacement and ``trace`` (``momentum``)
    to rtol 1e-8."""
    want, opt, torch_params = run_torch(torch_shampoo(learning_rate=LR, **kw), "mlp", STEPS)
    got, state = float64_run("shampoo", "mlp", tuple(sorted(kw.items())))
    assert_close(displacement(got, "mlp"), displacement(want, "mlp"), 1e-8, "params ")
    ref = {k: opt.state[p]["momentum"].numpy() for k, p in torch_params.items()}
    assert_close(state.trace, ref, 1e-8, "trace ")


def test_shampoo_is_gupta_et_al_algorithm_1():
    """Reference: Shampoo as Gupta et al. 2018 (arXiv:1802.09568) Algorithm 1 state it, in
    numpy float64 (``L = eps I + sum G G^T``, ``R = eps I + sum G^T G``,
    ``W -= lr L^(-1/4) G R^(-1/4)``, matrices only; the roots by ``eigh``), 20 steps, rtol
    1e-10: ``gradtx.shampoo`` with ``b2 = 1`` (sums, which pytorch_optimizer's validation
    refuses), no momentum, no graft, roots at every step, one block."""
    eps, n = 1e-3, 20
    kw = dict(b1=0.0, b2=1.0, start_preconditioning_step=1, precondition_frequency=1, matrix_eps=eps,
              graft_type="none", nesterov=False)

    def root(a):
        w, u = np.linalg.eigh(a)
        return (u * w**-0.25) @ u.T

    start = seeded(MLP, 0)
    want = {k: start[k].copy() for k in ("w1", "w2")}
    stats = {k: (eps * np.eye(want[k].shape[0]), eps * np.eye(want[k].shape[1])) for k in want}
    for g in gradients("mlp", n):
        for k in want:
            left, right = stats[k]
            left, right = left + g[k] @ g[k].T, right + g[k].T @ g[k]
            stats[k] = (left, right)
            want[k] = want[k] - LR * root(left) @ g[k] @ root(right)
    with jax.enable_x64(True):
        got, _ = run_gradtx(gradtx.shampoo(LR, **kw), "mlp", n)
    assert_close(displacement({k: got[k] for k in want}, "mlp"), displacement(want, "mlp"), 1e-10)


def test_reference_qr_rounds_float64_to_float32():
    """Where the reference departs: the unmodified ``pytorch_optimizer.SOAP`` rounds its
    refreshed eigenbasis to float32, so its float64 run is off gradtx's (and its own
    float64-QR run's) by more than 1e-10, yet within float32's 1e-5."""
    kw = dict(precondition_frequency=1, **SOAP_MOVED)
    as_published, _, _ = run_torch(torch_soap(SOAP, learning_rate=LR, **kw), "mlp", STEPS)
    got, _ = float64_run("soap", "mlp", tuple(sorted(kw.items())))
    assert_close(displacement(got, "mlp"), displacement(as_published, "mlp"), 1e-5)
    with pytest.raises(AssertionError, match="max error"):
        assert_close(displacement(got, "mlp"), displacement(as_published, "mlp"), 1e-10)


def _second_step_change(run: Callable[[list], np.ndarray]) -> float:
    """How far one ulp more in one entry of the first gradient moves SOAP's second step (its
    first real one), as a fraction of that step (max norm): float32, an (8, 16) leaf."""
    rng = np.random.default_rng(0)
    grads = [(0.3 + rng.normal(size=(8, 16))).astype(np.float32) for _ in range(2)]
    nudged = [g.copy() for g in grads]
    nudged[0][0, 0] = np.nextafter(nudged[0][0, 0], np.float32(np.inf))
    step, other = run(grads), run(nudged)
    return float(np.abs(step - other).max() / np.abs(step).max())


def _soap_second_step(kw: dict, torch_reference: bool) -> Callable[[list], np.ndarray]:
    """SOAP's displacement after two steps from ``W = 0`` (float32; gradtx or the reference)."""

    def run(grads: list) -> np.ndarray:
        if torch_reference:
            p = torch.zeros((8, 16), dtype=torch.float32)
            opt = torch_soap(learning_rate=0.1, weight_decay=0.0, **kw)([p])
            for g in grads:
                p.grad = torch.tensor(g)
                opt.step()
            return p.detach().numpy()
        tx, w = gradtx.soap(0.1, weight_decay=0.0, **kw), jnp.zeros((8, 16))
        state = tx.init(w)
        for g in grads:
            u, state = tx.update(jnp.asarray(g), state, w)
            w = w + u
        return np.asarray(w)

    return run


@pytest.mark.parametrize("torch_reference", [False, True], ids=["gradtx", "pytorch_optimizer"])
def test_rank_deficient_first_factor_is_fixed_by_rounding(torch_reference):
    """Why SOAP's sharded steps differ from one device on an ``(8, 16)`` leaf (issue 14,
    ``tests/sharding_worker.py``), on one device. Reference: ``pytorch_optimizer``'s SOAP,
    which behaves alike. The first eigenbasis comes from one gradient: its ``(16, 16)``
    factor ``G^T G`` has rank 8, the eigenvectors of the 8-fold 0 eigenvalue are any basis
    of ``G``'s null space, and rounding picks one: one ulp more in one entry of the first
    gradient (float32) moves the second step by more than 10% of its size (0.58 in gradtx,
    0.60 in the reference). With the factor of the 8-axis only (``max_precondition_dim=8``:
    rank 8 of 8, eigenvectors unique up to the signs SOAP does not see) by less than 1e-4
    (2e-6 in both: float32 eigenvectors, good to ~eps / eigengap)."""
    assert _second_step_change(_soap_second_step({}, torch_reference)) > 0.1
    assert _second_step_change(_soap_second_step(dict(max_precondition_dim=8), torch_reference)) < 1e-4


# --- closed forms ---------------------------------------------------------------------------


EPS = 1e-3
FIRST_STEPS = {
    # L = G G^T, R = G^T G exactly (b2 = 0: the last gradient's): L^(-1/4) G R^(-1/4) = U V^T
    "shampoo": (lambda lr: gradtx.shampoo(lr, b1=0.0, b2=0.0, start_preconditioning_step=1, precondition_frequency=1,
                                          matrix_eps=0.0, graft_type="none", nesterov=False), 1, 0.0),
    # Q_L = U, Q_R = V: the rotated gradient is diag(s); Adam's first step there is
    # s / (s + eps / sqrt(1 - b2)) (eps > 0: the off-diagonal zeros are rounding noise)
    "soap": (lambda lr: gradtx.soap(lr, eps=EPS, weight_decay=0.0, precondition_frequency=1), 2, EPS / 0.05**0.5),
}


# SOAP on C = 2.5 Q: G G^T = 6.25 I has one eigenvalue, any basis is an eigenbasis, and
# Adam's signs in an arbitrary one are not Q: the preconditioner is exact only for Shampoo
@pytest.mark.parametrize("name,orthogonal", [("shampoo", False), ("shampoo", True), ("soap", False)],
                         ids=["shampoo-random", "shampoo-orthogonal", "soap-random"])
def test_first_step_on_a_quadratic_is_the_polar_factor(name, orthogonal):
    """Closed form, float64, rtol 1e-10: on ``f(W) = ||W - C||^2 / 2`` from ``W = 0`` (the
    gradient ``-C``, ``C = U diag(s) V^T``), Shampoo's first step with exact factors
    (``matrix_eps = 0``, ``p = 4``) is ``lr * U V^T``, the polar factor of ``C``, and SOAP's
    first real step (its second) is ``lr * U diag(s / (s + eps')) V^T``: the factors are the
    gradient's own, so the preconditioner is exact. With ``C = 2.5 Q`` (``Q`` orthogonal)
    and ``lr = 2.5`` Shampoo's one step lands on the minimum."""
    make, n_steps, eps = FIRST_STEPS[name]
    rng = np.random.default_rng(3)
    c = rng.normal(size=(4, 4))
    if orthogonal:
        c = 2.5 * np.linalg.qr(c)[0]
    lr = 2.5 if orthogonal else 0.1
    with jax.enable_x64(True):
        tx = make(lr)
        w = jnp.zeros((4, 4))
        state = tx.init(w)
        for _ in range(n_steps):
            u, state = tx.update(w - c, state, w)
        w = np.asarray(w + u)
    left, s, right = np.linalg.svd(c)
    np.testing.assert_allclose(w, lr * (left * (s / (s + eps))) @ right, rtol=1e-10, atol=1e-12)
    if orthogonal:
        np.testing.assert_allclose(w, c, rtol=1e-10, atol=1e-12)


def test_kronecker_formulas_in_closed_form():
    """``gradtx.kronecker``'s formulas against numpy, float64, rtol 1e-12: the unfolded
    statistics of a 3-axis tensor, ``L^(-1/p)`` (``(L^(-1/p))^p L = I``), the eigenbasis
    (``Q^T L Q`` diagonal, descending), one QR refresh of an exact basis (unchanged up to
    signs), ``rotate``/``unrotate`` inverse to each other, blocks split and merged back."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        g = jnp.asarray(rng.normal(size=(3, 4, 5)))
        stat = kronecker.unfolded_statistic(g, 1)
        np.testing.assert_allclose(stat, np.einsum("ajc,bjc->ab", np.moveaxis(g, 1, 1).transpose(1, 0, 2),
                                                   np.asarray(g).transpose(1, 0, 2)), rtol=1e-12)
        root = np.asarray(kronecker.inverse_root(stat, 3))
        np.testing.assert_allclose(np.linalg.matrix_power(root, 3) @ np.asarray(stat), np.eye(4), atol=1e-10)
        q = np.asarray(kronecker.eigenbasis(stat))
        d = q.T @ np.asarray(stat) @ q
        np.testing.assert_allclose(d, np.diag(np.diag(d)), atol=1e-10)
        assert np.all(np.diff(np.diag(d)) < 0)
        q2, order = kronecker.refresh_eigenbasis(stat, jnp.asarray(q))
        np.testing.assert_array_equal(order, np.arange(4))
        np.testing.assert_allclose(np.abs(np.asarray(q2)), np.abs(q), atol=1e-10)
        bases = [kronecker.eigenbasis(kronecker.unfolded_statistic(g, i)) for i in range(3)]
        bases[1] = None
        np.testing.assert_allclose(kronecker.unrotate(kronecker.rotate(g, bases), bases), g, atol=1e-12)
        blocks = kronecker.split_blocks(g, 2)
        assert [b.shape for b in blocks] == kronecker.block_shapes(g.shape, 2)
        np.testing.assert_array_equal(kronecker.merge_blocks(blocks, g.shape, 2), g)


# --- mutants: wrong formulas fail float32's tolerance ---------------------------------------

MUTANT_STEPS = 12


def _swap_factors(g, axis):
    """``L`` and ``R`` swapped: the statistic of the other axis (square leaves only)."""
    return _unfolded(g, g.ndim - 1 - axis) if g.ndim == 2 else _unfolded(g, axis)


_unfolded = kronecker.unfolded_statistic
_refresh = kronecker.refresh_eigenbasis
SOAP_KW = dict(learning_rate=LR, precondition_frequency=2, **SOAP_MOVED)
SHAMPOO_KW = dict(learning_rate=LR, precondition_frequency=2, start_preconditioning_step=3)


def _soap_chain(*stages):
    """``scale_by_soap`` (``SOAP_KW``'s) followed by ``stages``."""
    return lambda: gradtx.chain(gradtx.scale_by_soap(0.9, 0.8, 0.7, 1e-3, precondition_frequency=2), *stages)


# (id, reference, gradtx factory of the wrong formula, patches: (module, name, replacement))
MUTANTS = [
    ("soap: eigenbasis never refreshed", "soap", lambda: gradtx.soap(**{**SOAP_KW, "precondition_frequency": 10**6}),
     ()),
    ("soap: factors L and R swapped", "soap", lambda: gradtx.soap(**SOAP_KW),
     ((kronecker, "unfolded_statistic", _swap_factors),)),
    ("soap: nu not permuted on refresh", "soap", lambda: gradtx.soap(**SOAP_KW),
     ((preconditioned, "refresh_eigenbasis", lambda s, q: (_refresh(s, q)[0], jnp.arange(q.shape[1]))),)),
    ("soap: first step not skipped", "soap",
     _soap_chain(gradtx.scale_by_learning_rate(LR), gradtx.decay_stepped_params(0.1, LR)), ()),
    ("soap: decay of the params before the step", "soap",
     _soap_chain(gradtx.add_decayed_weights(0.1), gradtx.scale_by_learning_rate(LR), gradtx.skip_first_step()), ()),
    ("shampoo: root power 2 for 4", "shampoo", lambda: gradtx.shampoo(**SHAMPOO_KW, inverse_exponent_override=2), ()),
    ("shampoo: factors L and R swapped", "shampoo", lambda: gradtx.shampoo(**SHAMPOO_KW),
     ((kronecker, "unfolded_statistic", _swap_factors),)),
    ("shampoo: not grafted", "shampoo", lambda: gradtx.shampoo(**SHAMPOO_KW, graft_type="none"), ()),
    ("shampoo: preconditioning one step late", "shampoo",
     lambda: gradtx.shampoo(**{**SHAMPOO_KW, "start_preconditioning_step": 4}), ()),
]
CONTROLS = {"soap": lambda: gradtx.soap(**SOAP_KW), "shampoo": lambda: gradtx.shampoo(**SHAMPOO_KW)}
REFERENCES = {"soap": lambda: torch_soap(**SOAP_KW), "shampoo": lambda: torch_shampoo(**SHAMPOO_KW)}


@functools.cache
def reference_displacement(name: str) -> dict:
    return displacement(run_torch(REFERENCES[name](), "square", MUTANT_STEPS)[0], "square")


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_right_formula_passes_float32(name):
    """Control for the mutants: the right formula in float32 is within rtol 1e-5 of the
    float64 reference (``pytorch_optimizer``) after 12 steps."""
    got, _ = run_gradtx(CONTROLS[name](), "square", MUTANT_STEPS, jnp.float32)
    assert_close(displacement(got, "square"), reference_displacement(name), 1e-5)


@pytest.mark.parametrize("what,name,wrong,patches", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_wrong_formulas_fail(what, name, wrong, patches, monkeypatch):
    """Negative control: each wrong formula (float32, 12 steps) is off the float64
    reference by more than rtol 1e-5 (the control above passes)."""
    for module, attr, replacement in patches:
        monkeypatch.setattr(module, attr, replacement)
    got, _ = run_gradtx(wrong(), "square", MUTANT_STEPS, jnp.float32)
    with pytest.raises(AssertionError, match="max error"):
        assert_close(displacement(got, "square"), reference_displacement(name), 1e-5, what)


# --- edge cases and bad input -------------------------------------------------------------

OPTIMIZERS = {
    "soap": lambda: gradtx.soap(LR, weight_decay=0.0, precondition_frequency=1),
    "shampoo": lambda: gradtx.shampoo(LR, precondition_frequency=1, start_preconditioning_step=1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zero_gradients_and_abstract_init(name):
    """Reference: the closed form. Zero gradients on the MLP tree (matrices, vectors, a
    scalar) for 3 steps give exactly zero updates (SOAP: ``0 / (0 + eps)``; Shampoo: a zero
    direction grafted to a zero norm); ``jax.eval_shape(init)`` has ``init``'s structure."""
    tx = OPTIMIZERS[name]()
    params = {k: jnp.ones(s) for k, s in MLP.items()}
    state = tx.init(params)
    assert jax.tree.structure(jax.eval_shape(tx.init, params)) == jax.tree.structure(state)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):
        u, state = jax.jit(tx.update)(zeros, state)
        for leaf in jax.tree.leaves(u):
            np.testing.assert_array_equal(leaf, 0.0)


def test_skip_first_step_and_decay_stepped_params_closed_form():
    """Closed forms, float32 exact: ``skip_first_step`` gives 0 at ``t = 1``, then ``u``;
    ``decay_stepped_params(wd, lr)`` gives ``u - lr * wd * (p + u)``."""
    u, p = jnp.array([1.0, -2.0]), jnp.array([4.0, 8.0])
    skip = gradtx.skip_first_step()
    state = skip.init(p)
    first, state = skip.update(u, state)
    second, _ = skip.update(u, state)
    np.testing.assert_array_equal(first, [0.0, 0.0])
    np.testing.assert_array_equal(second, u)
    decay = gradtx.decay_stepped_params(0.25, 0.5)
    out, _ = decay.update(u, decay.init(p), p)
    np.testing.assert_allclose(out, u - 0.5 * 0.25 * (p + u), rtol=1e-7)


def test_bad_input_names_the_call_and_the_leaf():
    """Errors (reference: the design's messages): a gradient of the wrong shape names the
    optimizer (or the Kronecker stage, whose factors are not shaped like the params) and the
    leaf path; weight decay without params names the stage; a bad ``graft_until`` start
    names the argument."""
    params = {k: jnp.ones(s) for k, s in MLP.items()}
    tx = gradtx.soap(LR)
    bad = {**params, "w1": jnp.ones((5, 6))}
    with pytest.raises(gradtx.TreeMismatchError, match=r"gradtx\.soap.*\['w1'\]"):
        tx.update(bad, tx.init(params), params)
    with pytest.raises(gradtx.UpdateError, match=r"gradtx\.soap > decay_stepped_params: update\(\) needs params"):
        tx.update(params, tx.init(params))
    roots = gradtx.scale_by_kronecker_roots()
    with pytest.raises(gradtx.TreeMismatchError, match=r"gradtx\.scale_by_kronecker_roots: .* leaf path \['w1'\]"):
        roots.update(bad, roots.init(params))
    with pytest.raises(ValueError, match=r"graft_until\(start_step=0\): start_step must be an integer >= 1"):
        gradtx.graft_until(0, gradtx.identity(), gradtx.identity())
