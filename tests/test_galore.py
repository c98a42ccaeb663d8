"""GaLore (``gradtx/galore.py``) beyond the registry's parity grid: dimension numbers for
3-D and 4-D leaves, other inner optimizers (gradtx's and optax's), the projection in closed
form, and errors naming the leaf path.

References: optax.contrib 0.2.8's ``galore`` / ``scale_by_galore`` (with optax's own
``GaLoreDimensionNumbers``); the rank-r projection ``P P^T G`` / ``G Q Q^T`` from a numpy
float64 SVD.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from conftest import assert_trees_close, run_steps

import gradtx
from gradtx.galore import galore_projector

OX_DIMS = optax.contrib.GaLoreDimensionNumbers
GX_DIMS = gradtx.GaLoreDimensionNumbers
SPEC = {"attn": ((4, 2, 3), 1.0), "conv": ((3, 2, 2, 5), 0.5), "w": ((6, 4), 1.0), "b": ((4,), 0.1)}


def tree(seed: int, dtype, mean: float = 0.0, keys=tuple(SPEC)):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(s * (mean + rng.normal(size=shape)), dtype) for k, (shape, s) in SPEC.items() if k in keys}


def dims(cls):
    """Dimension numbers as a tree: the attention kernel's heads x head_dim are its columns,
    the convolution's two spatial axes its rows; ``w`` the default; ``b`` not projected."""
    return {"attn": cls(0, (1, 2)), "conv": cls((0, 1), (2, 3)), "w": cls(), "b": None}


CASES = {
    "tree of dims": lambda cls: dict(learning_rate=1e-2, rank=2, update_proj_gap=4, weight_dimension_numbers=dims(cls)),
    # one spec for every leaf of rank >= 2: the 2-D ones here, transposed
    "one spec (negative axes)": lambda cls: dict(learning_rate=1e-2, rank=1, update_proj_gap=3, scale=0.5,
                                                 weight_dimension_numbers=cls(-1, (0,))),
    "a function": lambda cls: dict(learning_rate=1e-2, rank=3, update_proj_gap=5, weight_decay=0.1,
                                   weight_dimension_numbers=lambda params: dims(cls)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_dimension_numbers_match_optax(case, precision):
    """Reference: ``optax.contrib.galore`` 0.2.8 with optax's ``GaLoreDimensionNumbers``, 60
    jitted steps: params, last updates, ``mu``, ``nu`` and ``projector`` agree to rtol 1e-10
    (float64; the SVD is float32 in both, the same program) / 1e-5 (float32)."""
    keys = ("w", "b") if case.startswith("one spec") else tuple(SPEC)
    params = tree(0, precision.dtype, keys=keys)
    grads = [tree(1 + i, precision.dtype, mean=0.3, keys=keys) for i in range(60)]
    got = run_steps(gradtx.galore(**CASES[case](GX_DIMS)), params, grads, jit=True)
    want = run_steps(optax.contrib.galore(**CASES[case](OX_DIMS)), params, grads, jit=True,
                     apply_updates=optax.apply_updates)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    ox = want.state[0]
    assert_trees_close(got.state.mu, ox.base_optimizer_state.mu, precision.rtol, what="mu")
    assert_trees_close(got.state.nu, ox.base_optimizer_state.nu, precision.rtol, what="nu")
    projected = [p for p in jax.tree.leaves(ox.projector) if p.size]  # optax's (0, 0) where gradtx has None
    assert_trees_close(jax.tree.leaves(got.state.projector), projected, precision.rtol, what="projector")


INNER = [
    ("lion", lambda: gradtx.scale_by_lion(b1=0.8, b2=0.95), lambda: optax.scale_by_lion(b1=0.8, b2=0.95), ("mu",)),
    ("rms", lambda: gradtx.scale_by_rms(0.8, eps=1e-3), lambda: optax.scale_by_rms(0.8, eps=1e-3), ("nu",)),
    ("optax's adam", lambda: optax.scale_by_adam(b1=0.8), lambda: optax.scale_by_adam(b1=0.8), ("scale_by_adam",)),
]


@pytest.mark.parametrize("name, gx_inner, ox_inner, fields", INNER, ids=[i[0] for i in INNER])
def test_other_inner_optimizers_match_optax(name, gx_inner, ox_inner, fields, jit):
    """Reference: ``optax.contrib.galore(base_optimizer=<optax's>)``, 30 steps (5 eagerly), float32 rtol
    1e-5: gradtx's inner stages keep their fields in the one record (``count, mu,
    projector``), an optax inner keeps its whole state in one field named after it."""
    params = tree(0, jnp.float32)
    grads = [tree(1 + i, jnp.float32, mean=0.3) for i in range(30 if jit else 5)]
    kw = dict(learning_rate=1e-2, rank=2, update_proj_gap=4)
    got = run_steps(gradtx.galore(base_optimizer=gx_inner(), **kw), params, grads, jit=jit)
    want = run_steps(optax.contrib.galore(base_optimizer=ox_inner(), **kw), params, grads, jit=jit,
                     apply_updates=optax.apply_updates)
    assert_trees_close(got.params, want.params, 1e-5, what="params")
    assert got.state._fields == ("count", *fields, "projector")


def projection_numpy(grads, rank: int, gap: int, scale: float, side: str):
    """``scale * P P^T G`` (``side="left"``, ``P = U[:, :r]``) or ``scale * G Q Q^T`` (``Q =
    V[:, :r]``), the projector from the SVD (numpy float64) of the gradient at steps 1, 1 +
    gap, ...: GaLore's step with an identity inner optimizer (sign-free in the singular
    vectors)."""
    out, proj = [], None
    for t, g in enumerate(grads):
        g = np.asarray(g, np.float64)
        if t % gap == 0:
            u, _, vh = np.linalg.svd(g, full_matrices=False)
            proj = u[:, :rank] if side == "left" else vh[:rank].T
        out.append(scale * (proj @ proj.T @ g if side == "left" else g @ proj @ proj.T))
    return out


SIDES = [
    ((6, 4), "left", True),
    ((4, 6), "right", True),
    ((6, 4), "right", False),  # mutant: the short side projected
    ((4, 6), "left", False),  # mutant
]


@pytest.mark.parametrize("shape, side, right", SIDES, ids=[f"{s}-{side}" for s, side, _ in SIDES])
def test_projection_in_closed_form_and_the_wrong_side(shape, side, right):
    """Reference: ``projection_numpy`` (float64 SVD) over 7 steps, ``rank=2``,
    ``update_proj_gap=3``: gradtx's ``scale_by_galore`` with an identity inner optimizer
    agrees at rtol 1e-5 when the projector is on the long side (``U`` for ``m >= n``,
    ``V`` for ``m < n``); projecting the other side fails it."""
    rng = np.random.default_rng(4)
    grads = [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(7)]
    tx = gradtx.scale_by_galore(rank=2, update_proj_gap=3, scale=0.5, base_optimizer=gradtx.identity())
    state, got = tx.init(grads[0]), []
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update(g, state)
        got.append(u)
    want = projection_numpy(grads, 2, 3, 0.5, side)
    if right:
        assert_trees_close(got, want, 1e-5)
    else:
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            assert_trees_close(got, want, 1e-5)


def test_complex_matrix_projects_with_the_conjugate_transpose():
    """Reference: ``P P^H G`` from numpy's complex128 SVD, rtol 1e-5 (optax 0.2.8 drops the
    imaginary part before its SVD and projects with ``P^T``: not a projection)."""
    rng = np.random.default_rng(5)
    g = jnp.asarray(rng.normal(size=(5, 3)) + 1j * rng.normal(size=(5, 3)), jnp.complex64)
    tx = gradtx.scale_by_galore(rank=2, base_optimizer=gradtx.identity())
    got, _ = tx.update(g, tx.init(g))
    u = np.linalg.svd(np.asarray(g, np.complex128), full_matrices=False)[0][:, :2]
    assert_trees_close(got, u @ u.conj().T @ np.asarray(g, np.complex128), 1e-5)


def test_state_shapes_and_abstract_init():
    """Reference: the shapes GaLore promises: ``mu`` is ``(r, n)`` for ``m >= n`` and
    ``(m, r)`` otherwise, the projector ``(m, r)`` / ``(n, r)``, ``None`` for a leaf not
    projected (no empty placeholder); ``jax.eval_shape(init)`` gives the same."""
    params = {"tall": jnp.zeros((6, 4)), "wide": jnp.zeros((3, 8)), "b": jnp.zeros(5)}
    opt = gradtx.galore(1e-2, rank=2)
    state = jax.eval_shape(opt.init, params)
    shapes = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
    assert shapes(state.mu) == {"tall": (2, 4), "wide": (3, 2), "b": (5,)}
    assert shapes(state.projector) == {"tall": (6, 2), "wide": (8, 2), "b": None}
    assert shapes(opt.init(params)) == shapes(state)


BAD_DIMS = [
    ({"b": jnp.zeros(4)}, {"b": GX_DIMS(0, 1)},
     "scale_by_galore: the leaf at ['b'] has shape (4,): GaLore needs rank >= 2"),
    ({"k": jnp.zeros((2, 3, 4))}, {"k": GX_DIMS(0, 1)},
     ("scale_by_galore: the leaf at ['k'] has shape (2, 3, 4): GaLoreDimensionNumbers(reduction_axis=0, "
     "output_axis=1) must name each of its 3 axes once")),
    ({"k": jnp.zeros((2, 3))}, {"k": GX_DIMS(0, 0)}, "the leaf at ['k'] has shape (2, 3)"),
    ({"k": jnp.zeros((2, 3))}, {"other": None}, "weight_dimension_numbers must have the params' tree structure"),
]


@pytest.mark.parametrize("params, dim_nums, message", BAD_DIMS, ids=["vector", "axis left out", "axis twice", "tree"])
def test_bad_dimension_numbers_name_the_leaf_path(params, dim_nums, message):
    """Reference: the messages, naming the leaf path and its shape (raised by ``init``)."""
    with pytest.raises(ValueError, match=r"^gradtx\.scale_by_galore: ") as info:
        gradtx.galore(1e-2, weight_dimension_numbers=dim_nums).init(params)
    assert message in str(info.value)


# --- None params and float16 (issue 12's property tests found both) -------------------------


def _steps(tx, params, grads_seq, *, jit: bool) -> list:
    """Each step's updates, ``tx`` run over ``grads_seq`` from ``params``."""
    update = jax.jit(tx.update) if jit else tx.update
    state, out = tx.init(params), []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
        out.append(updates)
    return out


NONE_CASES = {
    "galore": lambda: gradtx.galore(1e-2, rank=2, update_proj_gap=3, weight_decay=0.1),
    "scale_by_galore": lambda: gradtx.scale_by_galore(rank=2, update_proj_gap=3),
    "scale_by_galore(tree of dims)": lambda: gradtx.scale_by_galore(
        rank=1, update_proj_gap=2, weight_dimension_numbers={"b": None, "c": None, "w": GX_DIMS(), "z": GX_DIMS(1, 0)}
    ),
}


@pytest.mark.parametrize("name", NONE_CASES)
def test_a_none_param_leaves_the_other_leaves_as_without_it(name, jit):
    """Reference: the same params without the ``None`` leaf (optax 0.2.8's galore fails on a
    ``None`` param). A ``None`` between a vector and the matrices (``c``) once shifted the
    projectors onto the wrong leaves; now 6 steps (the projector refreshed twice) give, leaf
    by leaf, the updates of the tree without it (rtol 1e-6), and ``None`` where it is."""
    rng = np.random.default_rng(3)
    shapes = {"b": (4,), "w": (6, 4), "z": (3, 5)}
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.normal(0.3, 1.0, size=s), jnp.float32) for k, s in shapes.items()} for _ in range(6)]
    with_none = lambda t: {**t, "c": None}  # noqa: E731
    tx = NONE_CASES[name]()
    if "tree of dims" in name:  # the dims tree names the None param too; without it, not
        want_tx = gradtx.scale_by_galore(
            rank=1, update_proj_gap=2, weight_dimension_numbers={"b": None, "w": GX_DIMS(), "z": GX_DIMS(1, 0)}
        )
    else:
        want_tx = NONE_CASES[name]()
    got = _steps(tx, with_none(params), [with_none(g) for g in grads], jit=jit)
    want = _steps(want_tx, params, grads, jit=jit)
    for g, w in zip(got, want):
        assert g["c"] is None
        assert_trees_close({k: v for k, v in g.items() if k != "c"}, w, 1e-6)


F16_SHAPES = {"w": (8, 6), "b": (6,)}


def _f16_problem(n_steps: int):
    """float16 params, and ``n_steps`` gradients N(3e-4, 1e-3) rounded to float16 (both runs
    see the same values): below 8e-3, where ``(1 - b2) g^2`` underflows float16."""
    rng = np.random.default_rng(5)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float16) for k, s in F16_SHAPES.items()}
    grads = [
        {k: jnp.asarray(rng.normal(3e-4, 1e-3, size=s), jnp.float16) for k, s in F16_SHAPES.items()}
        for _ in range(n_steps)
    ]
    return params, grads


def _f16_inner_mutant(params, grads, learning_rate: float, rank: int) -> list:
    """Mutant: GaLore on ``w`` with its inner Adam in float16 (the image ``P^T G`` and the
    moments in the params' dtype, as before the fix): ``-lr P adam(P^T G)``, ``P`` from the
    first gradient."""
    p = galore_projector(grads[0]["w"], rank, True)
    inner = gradtx.scale_by_adam()
    state, out = inner.init(jnp.zeros((rank, F16_SHAPES["w"][1]), jnp.float16)), []
    for g in grads:
        r, state = inner.update(p.T @ g["w"], state)
        out.append(-learning_rate * (p @ r))
    return out


def test_float16_inner_statistics_follow_a_float32_run(jit):
    """Reference: the float32 run (params and gradients cast to float32). On float16 params
    with gradients of about 1e-3, GaLore's inner Adam runs in float32 (``range_safe_dtype``):
    its state is float32, the projector and the updates float16, and over 20 steps every
    update is finite and within 1e-2 of the float32 run's (relative to the step's largest).
    Mutant: the inner Adam in float16, where ``(1 - b2) g^2`` underflows to 0 and the step
    becomes ``m / eps``: off by more than 10x."""
    lr, rank = 1e-2, 2
    params, grads = _f16_problem(20)
    tx = gradtx.galore(lr, rank=rank)
    got = _steps(tx, params, grads, jit=jit)
    to32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
    want = _steps(tx, to32(params), [to32(g) for g in grads], jit=jit)
    state = tx.init(params)
    assert state.mu["w"].dtype == state.nu["w"].dtype == state.mu["b"].dtype == jnp.float32
    assert state.projector["w"].dtype == jnp.float16
    for g, w in zip(got, want):
        for k in F16_SHAPES:
            assert g[k].dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(g[k])))
            scale = float(jnp.max(jnp.abs(w[k])))
            assert float(jnp.max(jnp.abs(g[k].astype(jnp.float32) - w[k]))) <= 1e-2 * scale, k
    mutant = _f16_inner_mutant(params, grads, lr, rank)
    gaps = [float(jnp.max(jnp.abs(m.astype(jnp.float32) - w["w"]))) / float(jnp.max(jnp.abs(w["w"]))) for m, w in
            zip(mutant, want)]
    assert not all(np.isfinite(gaps)) or max(gaps) > 10.0, "the float16-inner mutant passed"
