"""Factored second moments: Adafactor, SM3 and their primitives (``gradtx/factored.py``,
``gradtx/optimizers/factored.py``; registry rows in ``gradtx/rows/factored.py``).

References: optax 0.2.8 where optax works (the registry-driven ``test_parity`` covers the
rows with an optax twin; the SM3 rows and ``scale_by_param_block_rms`` are run against
optax here, see their row's ``reference``), the papers' formulas in numpy (Adafactor's
row/column sums at the first step, SM3-II with explicit cover sets), and the closed form
of SM3 on a scalar (Adagrad), where optax 0.2.8 raises IndexError.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    N_STEPS,
    assert_trees_close,
    compare_states,
    named_fields,
    random_grads,
    random_tree,
    run_optax,
    run_steps,
)

import gradtx
from gradtx.registry import BY_NAME


def _without_scalar(tree):
    """The parity tree ``{"w": (3, 2), "seq": [((4,),), ()]}`` without its scalar leaf."""
    return {"w": tree["w"], "seq": [tree["seq"][0]]}


@functools.cache
def _inputs(dtype_name: str, scalar: bool):
    """test_parity's seeded params and 200 gradients, with or without the scalar leaf."""
    dtype = jnp.dtype(dtype_name)
    params, grads = random_tree(0, dtype, small=True), random_grads(1, N_STEPS, dtype, small=True)
    if scalar:
        return params, grads
    return _without_scalar(params), [_without_scalar(g) for g in grads]


def _sm3_mu_layout(mu, params):
    """optax's SM3 ``mu`` (per leaf, a list of one accumulator per axis) in gradtx's layout
    (per leaf, those accumulators concatenated)."""
    treedef = jax.tree.structure(params)
    return treedef.unflatten([jnp.concatenate(per_axis) for per_axis in treedef.flatten_up_to(mu)])


def check_against_optax(gx, ox, precision, jit, *, scalar: bool, absent=()):
    """200 steps of both: params, last updates and every field of optax's state (by name,
    SM3's ``mu`` in gradtx's layout) agree at ``precision.rtol``."""
    params, grads = _inputs(jnp.dtype(precision.dtype).name, scalar)
    got, want = run_steps(gx, params, grads, jit=jit), run_optax(ox, params, grads, jit=jit)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    theirs = named_fields(want.state)
    if "mu" in theirs and "mu" in got.state._fields:
        theirs["mu"] = [_sm3_mu_layout(mu, params) for mu in theirs["mu"]]
    ours = got.state._asdict()
    for name, values in theirs.items():
        if name in absent:
            continue
        assert name in ours, f"optax's state has field {name!r}, gradtx's {sorted(ours)} has not"
        for value in values:
            assert_trees_close(ours[name], value, precision.rtol, what=f"state field {name}")


# The rows whose optax parity runs here (their row says why), and the optax call of each.
OPTAX_HERE = {
    "sm3": (lambda **kw: optax.sm3(**kw), False),
    "scale_by_sm3": (lambda **kw: optax.scale_by_sm3(**kw), False),
    # the accumulators alone: optax's scale_by_sm3 with no momentum (b1 = 0 passes u through exactly)
    "scale_by_cover_accumulators": (lambda **kw: optax.scale_by_sm3(b1=0.0, **kw), False),
}
CASES = [pytest.param(name, kw, id=f"{name}-{i}") for name in OPTAX_HERE for i, kw in enumerate(BY_NAME[name].grid)]


@pytest.mark.parametrize("name, kwargs", CASES)
def test_sm3_rows_match_optax_without_a_scalar_leaf(name, kwargs, mode):
    """Reference: optax 0.2.8 (``OPTAX_HERE``) over the row's registry grid, 200 steps, on
    the parity tree without its scalar leaf (optax raises IndexError on a 0-d parameter):
    params, last updates, ``mu`` (optax's per-axis list, concatenated) and ``nu``."""
    jit, precision = mode
    make_optax, scalar = OPTAX_HERE[name]
    absent = ("nu",) if name == "scale_by_cover_accumulators" else ()  # optax's b1 = 0 average: the updates
    check_against_optax(BY_NAME[name].obj(**kwargs), make_optax(**kwargs), precision, jit, scalar=scalar,
                        absent=absent)


@pytest.mark.parametrize("kwargs", BY_NAME["scale_by_param_block_rms"].grid, ids=str)
def test_scale_by_param_block_rms_matches_optax(kwargs, mode):
    """Reference: ``optax.chain(optax.scale_by_param_block_rms(**kw), optax.scale(0.01))``,
    200 steps on the parity tree (with its scalar). The ``scale(0.01)`` keeps the params
    finite: ``p + u * rms(p)`` alone grows geometrically."""
    jit, precision = mode
    check_against_optax(gradtx.chain(gradtx.scale_by_param_block_rms(**kwargs), gradtx.scale(0.01)),
                        optax.chain(optax.scale_by_param_block_rms(**kwargs), optax.scale(0.01)),
                        precision, jit, scalar=True)


def test_optax_sm3_fails_where_gradtx_works():
    """The optax 0.2.8 defects gradtx's ``sm3`` does not have (reference: optax itself):
    IndexError on a 0-d parameter, TypeError for the ``momentum=None`` its docstring offers.
    When optax is fixed this fails: the SM3 rows can then take their optax twin."""
    scalar = {"s": jnp.asarray(1.5)}
    with pytest.raises(IndexError):
        optax.sm3(0.1).update(scalar, optax.sm3(0.1).init(scalar))
    with pytest.raises(TypeError):
        tx = optax.sm3(0.1, momentum=None)
        tx.update({"w": jnp.ones((2, 2))}, tx.init({"w": jnp.ones((2, 2))}))
    for tx in (gradtx.sm3(0.1), gradtx.sm3(0.1, momentum=None)):
        updates, _ = tx.update(scalar, tx.init(scalar))
        assert np.isfinite(updates["s"])


@pytest.mark.parametrize("momentum", [0.9, None])
def test_sm3_on_a_scalar_is_adagrad(momentum, precision, jit):
    """Reference: the closed form of SM3 on a scalar (its one cover set is itself), in
    numpy: ``s = s + g^2 ; m = b1 * m + (1 - b1) * g / sqrt(s + 1e-8) ; p = p - lr * m``
    (``m = g / sqrt(s + 1e-8)`` without momentum), 50 steps, rtol 1e-10 / 1e-5."""
    lr, eps = 0.1, 1e-8
    grads = [jnp.asarray(g, precision.dtype) for g in np.random.default_rng(3).normal(0.3, 1.0, 50)]
    got = run_steps(gradtx.sm3(lr, momentum=momentum), jnp.asarray(1.0, precision.dtype), grads, jit=jit)
    p, s, m = 1.0, 0.0, 0.0
    for g in map(float, grads):
        s += g * g
        u = g / np.sqrt(s + eps)
        m = u if momentum is None else momentum * m + (1 - momentum) * u
        p -= lr * m
    np.testing.assert_allclose(float(got.params), p, rtol=precision.rtol)
    np.testing.assert_allclose(float(got.state.mu[0]), s, rtol=precision.rtol)
    # the accumulator on a scalar is Adagrad's, exactly
    ada = run_steps(gradtx.scale_by_sum_of_squares(0.0, eps), jnp.asarray(1.0, precision.dtype), grads, jit=jit)
    cover = run_steps(gradtx.scale_by_cover_accumulators(eps=eps), jnp.asarray(1.0, precision.dtype), grads, jit=jit)
    np.testing.assert_array_equal(np.asarray(cover.params), np.asarray(ada.params))


def test_sm3_with_a_scalar_leaf_matches_optax_on_the_other_leaves():
    """Reference: optax 0.2.8 on the tree without the scalar: the leaves are independent,
    so gradtx's run with the scalar gives optax's numbers on every other leaf (jit, float32)."""
    params, grads = _inputs("float32", True)
    got = run_steps(gradtx.sm3(0.05, momentum=0.8), params, grads, jit=True)
    want = run_optax(optax.sm3(0.05, momentum=0.8), _without_scalar(params), [_without_scalar(g) for g in grads],
                     jit=True)
    assert_trees_close(_without_scalar(got.params), want.params, 1e-5)


def test_sm3_without_momentum_is_optax_with_zero_momentum(jit):
    """Reference: ``optax.sm3(lr, momentum=0.0)`` (an average with weight 0 is the update
    itself), 200 steps on the tree without a scalar: the params agree; the state is ``mu``."""
    params, grads = _inputs("float32", False)
    got = run_steps(gradtx.sm3(0.1, momentum=None), params, grads, jit=jit)
    want = run_optax(optax.sm3(0.1, momentum=0.0), params, grads, jit=jit)
    assert got.state._fields == ("mu",)
    assert_trees_close(got.params, want.params, 1e-5)


def _sm3_paper(grads, eps):
    """SM3-II (Anil et al. 2019, Algorithm 2) on a matrix in numpy, with the cover sets
    written out: the rows and the columns. Returns the preconditioned updates."""
    rows, cols = np.zeros(grads[0].shape[0]), np.zeros(grads[0].shape[1])
    out = []
    for g in grads:
        nu = np.empty_like(g)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                nu[i, j] = min(rows[i], cols[j]) + g[i, j] ** 2
        out.append(np.where(nu > 0, g / np.sqrt(nu + eps), 0.0))
        rows = np.array([max(nu[i, :]) for i in range(g.shape[0])])
        cols = np.array([max(nu[:, j]) for j in range(g.shape[1])])
    return out


def test_cover_accumulators_are_the_papers_sm3_ii():
    """Reference: the paper's SM3-II in numpy (``_sm3_paper``), float64, 20 steps of a
    (4, 3) matrix with a zero gradient entry (0/0 = 0), rtol 1e-12."""
    rng = np.random.default_rng(5)
    grads = [rng.normal(size=(4, 3)) for _ in range(20)]
    grads[0][1, 2] = 0.0
    with jax.enable_x64(True):
        tx = gradtx.scale_by_cover_accumulators(eps=1e-8)
        state = tx.init(jnp.zeros((4, 3)))
        for g, want in zip(grads, _sm3_paper(grads, 1e-8)):
            got, state = tx.update(jnp.asarray(g), state)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)


FACTOR_SHAPES = {"tall": (5, 3), "wide": (3, 5), "square": (4, 4), "cube_a": (2, 5, 3), "cube_b": (3, 2, 5),
                 "small": (1, 6), "vector": (6,), "scalar": ()}


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_factored_rms_on_every_axis_layout_matches_optax(jit, precision):
    """Reference: ``optax.scale_by_factored_rms(min_dim_size_to_factor=2)``, 30 steps on
    leaves whose largest axis comes first, last, in the middle, ties, 3-d leaves (both
    orders of the two largest axes), a too-small matrix, a vector and a scalar."""
    rng = np.random.default_rng(7)
    params = {k: jnp.asarray(rng.normal(size=s), precision.dtype) for k, s in FACTOR_SHAPES.items()}
    grads = [{k: jnp.asarray(rng.normal(0.3, 1.0, size=s), precision.dtype) for k, s in FACTOR_SHAPES.items()}
             for _ in range(30)]
    kw = dict(min_dim_size_to_factor=2, decay_rate=0.7, epsilon=1e-3)
    got = run_steps(gradtx.scale_by_factored_rms(**kw), params, grads, jit=jit)
    want = run_optax(optax.scale_by_factored_rms(**kw), params, grads, jit=jit)
    assert_trees_close(got.params, want.params, precision.rtol)
    compare_states(got.state, want.state, precision.rtol)


def test_factored_rms_first_step_is_the_papers_row_column_formula():
    """Reference: Adafactor (Shazeer & Stern 2018, Algorithm 4) at t=1, where the decay is
    0: with row sums ``R = (G^2) 1`` and column sums ``C = 1^T (G^2)``, the estimate is
    ``V = R C / (1^T R)`` and the update ``G / sqrt(V)``; numpy, float64, rtol 1e-12."""
    g = np.random.default_rng(9).normal(size=(6, 4))
    r, c = (g**2).sum(axis=1, keepdims=True), (g**2).sum(axis=0, keepdims=True)
    with jax.enable_x64(True):
        tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2, epsilon=0.0)
        got, _ = tx.update(jnp.asarray(g), tx.init(jnp.zeros((6, 4))))
    np.testing.assert_allclose(np.asarray(got), g / np.sqrt(r * c / r.sum()), rtol=1e-12)


def _state_bytes(tx, params) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(tx.init, params)))


def test_adafactor_state_is_rows_plus_cols():
    """Reference: the shapes (``jax.eval_shape`` of ``init``) for one 4096 x 4096 float32
    matrix: Adafactor keeps a row and a column vector (and a 1-element placeholder and the
    count), ``(4096 + 4096 + 1) * 4 + 4`` bytes; Adam two full moments and the count."""
    params = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
    factored, adam = _state_bytes(gradtx.adafactor(), params), _state_bytes(gradtx.adam(1e-3), params)
    print(f"state bytes for one 4096 x 4096 float32 matrix: adafactor {factored:,}, adam {adam:,}")
    assert factored == (4096 + 4096 + 1) * 4 + 4
    assert adam == 2 * 4096 * 4096 * 4 + 4
    sm3 = _state_bytes(gradtx.sm3(0.1, momentum=None), params)
    assert sm3 == (4096 + 4096) * 4


def test_block_rescalers_closed_forms():
    """Reference: the closed forms. ``clip_by_block_rms(0.5)`` scales a leaf of RMS 2 by
    1/4 and leaves one of RMS 0.1; ``scale_by_param_block_rms`` multiplies by the
    params' RMS, floored at ``min_scale``; it needs the params."""
    u = {"big": jnp.full((2, 2), 2.0), "small": jnp.full(3, 0.1)}
    out, _ = gradtx.clip_by_block_rms(0.5).update(u, gradtx.clip_by_block_rms(0.5).init(u))
    np.testing.assert_allclose(out["big"], 0.5)
    np.testing.assert_allclose(out["small"], 0.1)
    tx = gradtx.scale_by_param_block_rms(min_scale=0.5)
    params = {"big": jnp.full((2, 2), -3.0), "small": jnp.full(3, 0.01)}
    out, _ = tx.update(u, tx.init(params), params)
    np.testing.assert_allclose(out["big"], 6.0)
    np.testing.assert_allclose(out["small"], 0.05)
    with pytest.raises(gradtx.UpdateError, match=r"scale_by_param_block_rms: update\(\) needs params"):
        tx.update(u, tx.init(params))


def test_sm3_state_fields_are_found_once_by_optax_tree_get():
    """Reference: optax 0.2.8's state on the same params: every field of it (``mu``,
    ``nu``) is found exactly once in gradtx's state by ``optax.tree.get_all_with_path``,
    with no more leaves than optax's."""
    params = _inputs("float32", False)[0]
    ours, theirs = gradtx.sm3(0.1).init(params), optax.sm3(0.1).init(params)
    assert len(jax.tree.leaves(ours)) <= len(jax.tree.leaves(theirs))
    for field in named_fields(theirs):
        assert len(optax.tree.get_all_with_path(ours, field)) == 1, field


# --- negative controls -------------------------------------------------------------------

G = gradtx
ADAFACTOR = dict(learning_rate=0.05, min_dim_size_to_factor=2)


def _adafactor_with(clip=None, param_scale=None, second_moment=None):
    """Adafactor(lr=0.05, min_dim_size_to_factor=2) from its pieces, one of them replaced."""
    return G.chain(
        second_moment or G.scale_by_factored_rms(min_dim_size_to_factor=2),
        clip or G.clip_by_block_rms(1.0),
        G.scale_by_learning_rate(0.05, flip_sign=False),
        param_scale or G.scale_by_param_block_rms(),
        G.scale(-1),
    )


def _sm3_with(direction):
    return G.chain(direction, G.scale_by_learning_rate(0.1))


# (what is wrong, the wrong formula, the right optax reference, with the scalar leaf)
MUTANTS = [
    # scale_by_factored_rms
    ("adafactor: full second moment for the matrix", lambda: G.adafactor(**ADAFACTOR, factored=False),
     lambda: optax.adafactor(**ADAFACTOR), True),
    ("adafactor: constant decay, not 1 - t^-0.8", lambda: _adafactor_with(
        second_moment=G.scale_by_factored_rms(min_dim_size_to_factor=2, decay_rate_fn=lambda t, c: 0.8)),
     lambda: optax.adafactor(**ADAFACTOR), True),
    # clip_by_block_rms
    ("adafactor: no update clipping", lambda: G.adafactor(**ADAFACTOR, clipping_threshold=None),
     lambda: optax.adafactor(**ADAFACTOR), True),
    ("adafactor: clipping element-wise", lambda: _adafactor_with(clip=G.clip(1.0)),
     lambda: optax.adafactor(**ADAFACTOR), True),
    # scale_by_param_block_rms
    ("adafactor: no parameter scale", lambda: G.adafactor(**ADAFACTOR, multiply_by_parameter_scale=False),
     lambda: optax.adafactor(**ADAFACTOR), True),
    ("adafactor: parameter norm, not RMS", lambda: _adafactor_with(
        param_scale=G.stateless(lambda u, p: jax.tree.map(lambda x, y: x * jnp.linalg.norm(y), u, p))),
     lambda: optax.adafactor(**ADAFACTOR), True),
    # scale_by_cover_accumulators
    ("sm3: Adagrad's full accumulator", lambda: _sm3_with(
        G.chain(G.scale_by_sum_of_squares(0.0, 1e-8), G.renamed(G.scale_by_ema(0.9), mu="nu"))),
     lambda: optax.sm3(0.1), False),
    ("sm3: averaged, not summed", lambda: _sm3_with(G.scale_by_sm3(0.9, b2=0.9)), lambda: optax.sm3(0.1), False),
    # scale_by_sm3
    # (a heavy-ball trace scaled by 1 - b1 would be no mutant: it is the same average)
    ("sm3: momentum before the preconditioner", lambda: _sm3_with(
        G.chain(G.renamed(G.scale_by_ema(0.9), mu="nu"), G.scale_by_cover_accumulators())),
     lambda: optax.sm3(0.1), False),
]


@pytest.mark.parametrize("what, wrong, right, scalar", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_tolerances_catch_wrong_formulas(what, wrong, right, scalar, jit):
    """Negative control: the params of a wrong formula differ from the optax 0.2.8 run of
    the right one beyond float32's rtol 1e-5 (the SM3 ones on the tree without a scalar)."""
    params, grads = _inputs("float32", scalar)
    got = run_steps(wrong(), params, grads, jit=jit)
    want = run_optax(right(), params, grads, jit=jit)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got.params, want.params, 1e-5, what=what)
