"""Clipping and normalization (``gradtx/clipping.py``; rows in ``gradtx/rows/clipping.py``):
what the registry's parity grids (``test_parity``: AGC, ``normalize_by_update_norm``,
``keep_params_nonnegative``, ``zero_nans``, ``set_to_zero`` against optax over 200 steps)
cannot do.

References, by test:

- optax 0.2.8 (float64, 100 steps, rtol 1e-10) for the calls the generic suite cannot run:
  ``centralize(unit_axis=0)`` (optax's layout), ``scale_by_param_block_norm`` followed by
  ``scale(0.01)``, AGC with ``axis``; optax's functions ``unitwise_norm``, ``unitwise_clip``
  (in ``optax.transforms``), ``per_example_global_norm_clip``,
  ``per_example_layer_norm_clip`` and ``scale_gradient``, on the same inputs (rtol 1e-12);
- the papers' rules in numpy float64: AGC (Brock et al. 2021, eq. 3) unit by unit on dense,
  multi-head and 2-d / 3-d convolution kernels; gradient centralization (Yong et al. 2020,
  eq. 4) on JAX's layouts, where optax 0.2.8's ``centralize`` departs from it; DP-SGD's
  per-example clipping (Abadi et al. 2016) and per-layer clip norms (McMahan et al. 2018);
- closed forms for the guards and for ``scale_gradient``'s gradient (also with a traced
  scale, where optax 0.2.8 fails).

Negative controls: a wrong formula per new formula (``MUTANTS``) fails the float32 rtol
1e-5 comparison with the optax run of the right one, which the right formula passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, random_grads, random_tree, run_optax, run_steps

import gradtx
from gradtx.numerics import leaf_norm, root_mean_square
from gradtx.rows._entry import parity_schedule

N = 100
RTOL64 = 1e-10


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def parity_inputs(dtype=jnp.float32, n: int = N):
    return random_tree(0, dtype, small=True), random_grads(1, n, dtype, small=True)


def check_against_optax(gx, ox, params, grads, rtol=RTOL64) -> None:
    """Both run jitted over ``grads``: params and last updates agree at ``rtol``."""
    got, want = run_steps(gx, params, grads, jit=True), run_optax(ox, params, grads, jit=True)
    assert_trees_close(got.params, want.params, rtol, what="params")
    assert_trees_close(got.updates, want.updates, rtol, what="last updates")


# Leaves of every rank the unit-wise rule knows, with the axes of a unit's norm written out
# (None: the whole leaf), independently of the code under test.
SHAPES = {
    "scalar": ((), None),
    "bias": ((4,), None),
    "row": ((1, 5), None),  # squeezes to a vector: one unit
    "column": ((5, 1), None),
    "dense": ((4, 3), (0,)),  # (in, out)
    "heads": ((4, 2, 3), (0,)),  # (in, heads, size)
    "conv": ((3, 3, 2, 4), (0, 1, 2)),  # HWIO
    "conv3d": ((2, 2, 2, 2, 3), (0, 1, 2, 3)),  # DHWIO
}


def kernels(seed: int, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=shape), dtype) for name, (shape, _) in SHAPES.items()}


def np_unit_norm(x: np.ndarray, axes) -> np.ndarray:
    x = np.asarray(x)
    return np.broadcast_to(np.sqrt(np.sum(np.abs(x) ** 2, axis=axes, keepdims=True)), x.shape)


# --- unit-wise norms ---------------------------------------------------------------------------


def test_unitwise_norm_every_rank_matches_optax_and_the_closed_form(x64):
    """Reference: ``optax.transforms.unitwise_norm`` (rtol 1e-12) and ``sqrt(sum x^2)`` over
    the axes in ``SHAPES`` (a 4-d HWIO kernel: one norm per output channel, over H, W, I),
    in numpy float64; complex leaves use ``|x|^2``; explicit ``axis`` as given."""
    for name, x in kernels(0).items():
        got = gradtx.unitwise_norm(x)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, optax.transforms.unitwise_norm(x), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(got, np_unit_norm(x, SHAPES[name][1]), rtol=1e-12, err_msg=name)
    conv = kernels(0)["conv"]
    per_channel = np.sqrt(np.sum(np.asarray(conv) ** 2, axis=(0, 1, 2)))
    np.testing.assert_allclose(gradtx.unitwise_norm(conv)[1, 2, 0], per_channel, rtol=1e-12)
    for axis in (1, (0, 2), (1, 2, 3)):
        np.testing.assert_allclose(gradtx.unitwise_norm(conv, axis=axis), np_unit_norm(conv, axis), rtol=1e-12)
    z = jnp.asarray([[3.0 + 4.0j, 1.0], [0.0, 1.0j]])
    np.testing.assert_allclose(gradtx.unitwise_norm(z), [[5.0, 2**0.5], [5.0, 2**0.5]], rtol=1e-12)


def test_unitwise_norm_of_a_six_axis_leaf_asks_for_axis():
    with pytest.raises(
        ValueError,
        match=r"^gradtx\.unitwise_norm\(x=\.\.\.\): x has shape \(2, 2, 2, 2, 2, 2\): "
        r"with axis=None .* pass axis$",
    ):
        gradtx.unitwise_norm(jnp.ones((2,) * 6))
    assert gradtx.unitwise_norm(jnp.ones((2,) * 6), axis=(0, 1)).shape == (2,) * 6


def test_unitwise_clip_matches_optax_and_the_closed_form(x64):
    """Reference: ``optax.transforms.unitwise_clip`` (rtol 1e-12) and the closed form
    ``g * max_norm / max(g_norm, div_eps)`` where ``g_norm >= max_norm``, else ``g``."""
    rng = np.random.default_rng(3)
    grad, g_norm, max_norm = rng.normal(size=20), rng.uniform(0, 2, 20), rng.uniform(0, 2, 20)
    g_norm[:3] = [1e-9, 0.5, 0.0]
    max_norm[:3] = [1e-10, 0.5, 0.0]  # below div_eps, equal, both zero
    for div_eps in (1e-6, 0.1):
        got = gradtx.unitwise_clip(g_norm, max_norm, grad, div_eps)
        np.testing.assert_allclose(got, optax.transforms.unitwise_clip(g_norm, max_norm, grad, div_eps), rtol=1e-12)
        want = np.where(g_norm < max_norm, grad, grad * max_norm / np.maximum(g_norm, div_eps))
        np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(
        ValueError,
        match=r"^gradtx\.unitwise_clip\(grad=\.\.\.\): g_norm, max_norm and grad must "
        r"have one shape, got g_norm \(3,\), max_norm \(3,\), grad \(2,\)$",
    ):
        gradtx.unitwise_clip(np.ones(3), np.ones(3), np.ones(2))


# --- adaptive gradient clipping ----------------------------------------------------------------


def np_agc(grads: dict, params: dict, clipping: float, eps: float) -> dict:
    """Brock et al. 2021, eq. 3, unit by unit: ``G_i -> clipping * max(||W_i||, eps) / ||G_i|| * G_i``
    where ``||G_i|| / max(||W_i||, eps) > clipping``."""
    out = {}
    for name, g in grads.items():
        g, w = np.asarray(g), np.asarray(params[name])
        g_norm, w_norm = np_unit_norm(g, SHAPES[name][1]), np.maximum(np_unit_norm(w, SHAPES[name][1]), eps)
        out[name] = np.where(g_norm / w_norm > clipping, clipping * w_norm / g_norm * g, g)
    return out


def test_adaptive_grad_clip_is_the_paper_on_every_kernel_rank(x64):
    """Reference: ``np_agc`` (eq. 3) in float64 on dense, multi-head, 2-d and 3-d convolution
    kernels, vectors and scalars, rtol 1e-12; one dense unit's params are 0, where ``eps``
    sets its clip norm (``clipping * eps``). Some units are clipped, some not."""
    params, grads = kernels(0), kernels(1)
    params["dense"] = params["dense"].at[:, 1].set(0.0)
    for clipping, eps in [(0.5, 1e-3), (1.5, 0.3)]:
        tx = gradtx.adaptive_grad_clip(clipping, eps)
        got, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        want = np_agc(grads, params, clipping, eps)
        assert_trees_close(got, want, 1e-12)
        changed = [not np.allclose(got[k], grads[k]) for k in grads]
        assert any(changed) and not all(changed)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got["dense"])[:, 1]), 1.5 * 0.3, rtol=1e-12)


def test_adaptive_grad_clip_with_axis_matches_optax(x64):
    """Reference: ``optax.adaptive_grad_clip(0.3, 0.1, axis)``, 100 steps on the parity
    tree's matrix leaf (an ``axis`` applies to every leaf: the vector and scalar cannot take
    ``axis=1``), float64, rtol 1e-10."""
    params, grads = parity_inputs(jnp.float64)
    params, grads = {"w": params["w"]}, [{"w": g["w"]} for g in grads]
    for axis in (1, (0, 1)):
        check_against_optax(
            gradtx.adaptive_grad_clip(0.3, 0.1, axis), optax.adaptive_grad_clip(0.3, 0.1, axis), params, grads
        )


def test_adaptive_grad_clip_update_errors():
    params = {"w": jnp.ones((2,) * 6)}
    tx = gradtx.adaptive_grad_clip(0.1)
    with pytest.raises(
        gradtx.UpdateError,
        match=r"^gradtx\.adaptive_grad_clip: the gradients at leaf path \['w'\] "
        r"have shape \(2, 2, 2, 2, 2, 2\): with axis=None .* pass axis$",
    ):
        tx.update(params, tx.init(params), params)
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx\.adaptive_grad_clip: update\(\) needs params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


# --- per-example clipping -------------------------------------------------------------------------


def per_example_grads(seed: int = 4, batch: int = 6) -> dict:
    """Per-example gradients (batch axis first) of a dense layer, a bias and a scalar; example 0
    is all zeros (kept as it is) and the norms spread around 1."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.1, 1.2, batch)
    tree = {
        "w": rng.normal(size=(batch, 3, 2)) * scales[:, None, None],
        "b": rng.normal(size=(batch, 2)) * scales[:, None],
        "s": rng.normal(size=(batch,)) * scales,
    }
    return {
        k: jnp.asarray(np.where(np.arange(batch).reshape((-1,) + (1,) * (v.ndim - 1)) == 0, 0.0, v))
        for k, v in tree.items()
    }


def np_clip_sum(examples: list[np.ndarray], clip: float) -> tuple[np.ndarray, int]:
    """Abadi et al. 2016 (Algorithm 1): ``sum_b g_b / max(1, ||g_b|| / C)``, and how many were
    clipped; ``examples`` are each example's leaves, flattened and concatenated. (Written
    ``C / ||g_b||`` where ``||g_b|| > C``, so that ``C = 0`` and a zero example need no 0 / 0.)"""
    norms = np.array([np.linalg.norm(e) for e in examples])
    factors = np.where(norms > clip, clip / np.where(norms > 0, norms, 1.0), 1.0)
    return np.sum(factors[:, None] * np.stack(examples), axis=0), int(np.sum(norms > clip))


def _flat_examples(tree: dict, names) -> list[np.ndarray]:
    batch = len(tree[names[0]])
    return [np.concatenate([np.asarray(tree[k][b]).ravel() for k in names]) for b in range(batch)]


def test_per_example_global_norm_clip_matches_optax_and_dp_sgd(x64):
    """Reference: optax 0.2.8's ``per_example_global_norm_clip`` (sums rtol 1e-12, counts
    exact) and ``np_clip_sum`` over every leaf together, for clip norms that clip none, some
    and all of the examples (0: every sum is 0); jitted with a traced clip norm too."""
    grads = per_example_grads()
    names = sorted(grads)
    for clip in (np.inf, 0.9, 1e-3, 0.0):
        total, n = gradtx.per_example_global_norm_clip(grads, clip)
        theirs, n_theirs = optax.per_example_global_norm_clip(grads, clip)
        assert_trees_close(total, theirs, 1e-12)
        assert int(n) == int(n_theirs)
        want, n_want = np_clip_sum(_flat_examples(grads, names), clip)
        np.testing.assert_allclose(
            np.concatenate([np.asarray(total[k]).ravel() for k in names]), want, rtol=1e-12, atol=1e-15
        )
        assert int(n) == n_want
    assert 0 < int(gradtx.per_example_global_norm_clip(grads, 0.9)[1]) < 5
    jitted, _ = jax.jit(gradtx.per_example_global_norm_clip)(grads, 0.9)
    assert_trees_close(jitted, gradtx.per_example_global_norm_clip(grads, 0.9)[0], 1e-12)


@pytest.mark.parametrize("uniform", [True, False], ids=["uniform", "by_size"])
def test_per_example_layer_norm_clip_matches_optax_and_the_per_layer_rule(uniform, x64):
    """Reference: optax 0.2.8's ``per_example_layer_norm_clip`` (same tree structure, sums
    rtol 1e-12, counts exact) and ``np_clip_sum`` per layer at ``C_k = C / sqrt(K)`` (uniform)
    or ``C sqrt(D_k / D)`` (McMahan et al. 2018: ``sum_k C_k^2 = C^2``)."""
    grads, clip = per_example_grads(), 1.2
    total, counts = gradtx.per_example_layer_norm_clip(grads, clip, uniform)
    theirs, counts_theirs = optax.per_example_layer_norm_clip(grads, clip, uniform)
    assert jax.tree.structure(total) == jax.tree.structure(theirs) == jax.tree.structure(counts)
    assert_trees_close(total, theirs, 1e-12)
    assert jax.tree.map(int, counts) == jax.tree.map(int, counts_theirs)
    sizes = {k: g[0].size for k, g in grads.items()}
    clips = {k: clip / 3**0.5 if uniform else clip * (sizes[k] / sum(sizes.values())) ** 0.5 for k in grads}
    np.testing.assert_allclose(sum(c**2 for c in clips.values()), clip**2, rtol=1e-12)
    for k in grads:
        want, n_want = np_clip_sum(_flat_examples(grads, [k]), clips[k])
        np.testing.assert_allclose(np.asarray(total[k]).ravel(), want, rtol=1e-12, atol=1e-15)
        assert int(counts[k]) == n_want
    assert sum(jax.tree.leaves(jax.tree.map(int, counts))) > 0


@pytest.mark.parametrize(
    "grads",
    [{"w": np.ones((3, 2)), "b": np.ones((2,))}, {"w": np.ones((3, 2)), "s": np.ones(())}, {}],
    ids=["batch_sizes_differ", "no_batch_axis", "empty"],
)
@pytest.mark.parametrize(
    "fn", [gradtx.per_example_global_norm_clip, gradtx.per_example_layer_norm_clip], ids=lambda f: f.__name__
)
def test_per_example_clipping_needs_the_batch_axis_first(fn, grads):
    with pytest.raises(
        ValueError,
        match=rf"^gradtx\.{fn.__name__}\(grads=\.\.\.\): every leaf must have the batch "
        r"axis first, of one size",
    ):
        fn(grads, 1.0)


# --- the element-wise guards --------------------------------------------------------------------------


def test_keep_params_nonnegative_closed_form_and_needs_params():
    """Reference: ``-p where p + u < 0, else u``: the new params are ``max(p + u, 0)`` for
    params >= 0; a negative param is moved to 0."""
    params = jnp.array([1.0, 0.5, 0.0, -1.0, 2.0])
    updates = jnp.array([-0.5, -2.0, -1.0, 0.5, 1.0])
    tx = gradtx.keep_params_nonnegative()
    out, _ = tx.update(updates, tx.init(params), params)
    np.testing.assert_array_equal(out, [-0.5, -0.5, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(params + out, [0.5, 0.0, 0.0, 0.0, 3.0])
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx\.keep_params_nonnegative: update\(\) needs params"):
        tx.update(updates, tx.init(params))


def test_zero_nans_matches_optax_state_and_updates():
    """Reference: optax 0.2.8's ``zero_nans`` over three steps (NaN in one leaf, in none, in
    the other): updates equal, ``found_nan`` equal leaf by leaf (and False after init)."""
    params = {"a": jnp.zeros(3), "b": [jnp.zeros((2, 2))]}
    nan = jnp.nan
    steps = [
        {"a": jnp.array([1.0, nan, 2.0]), "b": [jnp.ones((2, 2))]},
        {"a": jnp.array([1.0, 3.0, 2.0]), "b": [jnp.ones((2, 2))]},
        {"a": jnp.array([1.0, 3.0, 2.0]), "b": [jnp.array([[nan, 1.0], [nan, -nan]])]},
    ]
    gx, ox = gradtx.zero_nans(), optax.zero_nans()
    s_gx, s_ox = gx.init(params), ox.init(params)
    assert type(s_gx).__name__ == "ZeroNansState" and s_gx._fields == ("found_nan",)
    assert jax.tree.map(bool, s_gx.found_nan) == jax.tree.map(bool, s_ox.found_nan) == {"a": False, "b": [False]}
    for grads, found in zip(steps, [(True, False), (False, False), (False, True)]):
        u_gx, s_gx = jax.jit(gx.update)(grads, s_gx)
        u_ox, s_ox = ox.update(grads, s_ox)
        jax.tree.map(np.testing.assert_array_equal, u_gx, u_ox)
        assert (
            jax.tree.map(bool, s_gx.found_nan) == jax.tree.map(bool, s_ox.found_nan) == {"a": found[0], "b": [found[1]]}
        )
        assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(u_gx))


# --- centralization --------------------------------------------------------------------------------


def np_centralize(x: np.ndarray) -> np.ndarray:
    """Yong et al. 2020, eq. 4, on JAX's layouts: each output unit (an index of the last axis)
    minus the mean of its fan-in (every other axis); vectors and scalars unchanged."""
    x = np.asarray(x)
    return x if x.ndim < 2 else x - x.mean(axis=tuple(range(x.ndim - 1)), keepdims=True)


def test_centralize_is_the_paper_on_jax_layouts_where_optax_is_not(x64):
    """Reference: ``np_centralize`` in float64 (rtol 1e-12): after ``centralize()`` each unit
    of every kernel (dense, multi-head, HWIO, DHWIO) has zero mean over its fan-in. optax
    0.2.8's ``centralize()`` (PyTorch's axis 0 as the units) leaves a dense kernel's unit
    means non-zero: the defect, shown."""
    grads = kernels(5)
    grads = {k: v + 0.5 for k, v in grads.items()}  # a mean to remove
    tx = gradtx.centralize()
    got, _ = tx.update(grads, tx.init(grads))
    assert_trees_close(got, {k: np_centralize(v) for k, v in grads.items()}, 1e-12)
    for name in ("dense", "heads", "conv", "conv3d"):
        fan_in = tuple(range(got[name].ndim - 1))
        np.testing.assert_allclose(np.asarray(got[name]).mean(axis=fan_in), 0.0, atol=1e-14)
    theirs, _ = optax.centralize().update(grads, optax.centralize().init(grads))
    assert np.abs(np.asarray(theirs["dense"]).mean(axis=0)).max() > 0.1


def test_centralize_with_unit_axis_0_matches_optax(x64):
    """Reference: ``optax.centralize()``, 100 steps on the parity tree, float64, rtol 1e-10
    (``unit_axis=0``: optax's layout)."""
    params, grads = parity_inputs(jnp.float64)
    check_against_optax(gradtx.centralize(unit_axis=0), optax.centralize(), params, grads)


# --- normalization and the parameter block norm ----------------------------------------------------------


def test_normalize_by_update_norm_closed_form_and_zero_update():
    """Reference: the closed form ``||out|| = |scale_factor| * ||u|| / (||u|| + eps)`` over the
    whole tree; a zero update with ``eps=0`` gives 0, where optax 0.2.8 gives NaN."""
    u = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}
    tx = gradtx.normalize_by_update_norm(scale_factor=-2.0, eps=1.0)
    out, _ = tx.update(u, tx.init(u))
    np.testing.assert_allclose(out["a"], [-1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [[-4.0 / 3.0]], rtol=1e-6)
    zero = {"a": jnp.zeros(2)}
    tx = gradtx.normalize_by_update_norm(eps=0.0)
    np.testing.assert_array_equal(tx.update(zero, tx.init(zero))[0]["a"], [0.0, 0.0])
    theirs = optax.normalize_by_update_norm(eps=0.0).update(zero, optax.EmptyState())[0]["a"]
    assert np.isnan(np.asarray(theirs)).all()
    # the gradient through the guard is finite at a zero update
    grad = jax.grad(lambda x: jnp.sum(tx.update({"a": x}, tx.init(zero))[0]["a"]))(jnp.ones(2))
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("min_scale", [1e-3, 2.0])
def test_scale_by_param_block_norm_matches_optax(min_scale, x64):
    """Reference: ``optax.chain(optax.scale_by_param_block_norm(min_scale), optax.scale(0.01))``,
    100 steps on the parity tree, float64, rtol 1e-10 (``scale(0.01)`` keeps the params
    finite: ``p + u * ||p||`` alone grows geometrically); ``min_scale=2`` floors some leaves."""
    params, grads = parity_inputs(jnp.float64)
    check_against_optax(
        gradtx.chain(gradtx.scale_by_param_block_norm(min_scale), gradtx.scale(0.01)),
        optax.chain(optax.scale_by_param_block_norm(min_scale), optax.scale(0.01)),
        params,
        grads,
    )


def test_scale_by_param_block_norm_closed_form():
    """Reference: ``u * max(||p||, min_scale)`` per leaf; needs the params."""
    params = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
    u = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([1.0, 2.0])}
    tx = gradtx.scale_by_param_block_norm(0.5)
    out, _ = tx.update(u, tx.init(params), params)
    np.testing.assert_allclose(out["a"], [5.0, -5.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0.5, 1.0], rtol=1e-6)
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx\.scale_by_param_block_norm: update\(\) needs params"):
        tx.update(u, tx.init(params))


# --- scale_gradient -----------------------------------------------------------------------------------


def _loss(scale_gradient, scale):
    def loss(tree):
        y = scale_gradient(jax.tree.map(jnp.sin, tree), scale)
        return sum(jnp.sum(v**2) for v in jax.tree.leaves(y))

    return loss


@pytest.mark.parametrize("scale", [0.5, -1.0, 0.0, 1.0])
def test_scale_gradient_matches_optax_and_the_closed_form(scale, x64):
    """Reference: ``jax.grad`` through ``optax.scale_gradient`` (rtol 1e-12) and the closed
    form ``scale * 2 sin(x) cos(x)``; the forward value is ``sin(x)`` unchanged."""
    tree = {"a": jnp.array([0.3, -1.2]), "b": [jnp.array(2.0)]}
    got = jax.grad(_loss(gradtx.scale_gradient, scale))(tree)
    assert_trees_close(got, jax.grad(_loss(optax.scale_gradient, scale))(tree), 1e-12)
    assert_trees_close(got, jax.tree.map(lambda x: scale * 2 * np.sin(x) * np.cos(x), tree), 1e-12)
    assert _loss(gradtx.scale_gradient, scale)(tree) == _loss(lambda t, s: t, scale)(tree)


def test_scale_gradient_takes_a_traced_scale_where_optax_fails():
    """Reference: the closed form ``scale * 2x`` with ``scale`` an argument of a jitted
    function (a schedule's value); optax 0.2.8 fails there (``if scale == 1.0`` on a tracer).
    ``scale`` gets no gradient, and the gradient keeps the inputs' dtype."""
    x = jnp.array([1.0, -2.0], jnp.float32)

    def grad_of(scale_gradient):
        return jax.jit(jax.grad(lambda x, s: jnp.sum(scale_gradient(x, s) ** 2)))

    for count in (0, 50):
        scale = parity_schedule(jnp.asarray(count)) * 10
        got = grad_of(gradtx.scale_gradient)(x, scale)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, float(scale) * 2 * np.asarray(x), rtol=1e-6)
    with pytest.raises(jax.errors.TracerBoolConversionError):
        grad_of(optax.scale_gradient)(x, jnp.asarray(0.5))
    d_scale = jax.grad(lambda s: jnp.sum(gradtx.scale_gradient(x, s) ** 2))(jnp.asarray(0.5))
    assert float(d_scale) == 0.0


# --- negative controls ------------------------------------------------------------------------------------


def _leafwise(fn):
    """A stateless stage ``u -> fn(u, p)`` leaf by leaf (for mutants)."""
    return gradtx.stateless(lambda updates, params: jax.tree.map(fn, updates, params))


def _agc_inverted(clipping, eps):
    """AGC with the ratio inverted: ``u * ||u_i|| / max_norm`` where clipped."""

    def fn(u, p):
        g_norm = gradtx.unitwise_norm(u)
        max_norm = clipping * jnp.maximum(gradtx.unitwise_norm(p), eps)
        return jnp.where(g_norm < max_norm, u, u * g_norm / max_norm)

    return _leafwise(fn)


def _agc_by_leaf(clipping, eps):
    """AGC with one norm per leaf instead of per unit (the unit-wise norm left out)."""
    return _leafwise(
        lambda u, p: gradtx.unitwise_clip(
            *(jnp.broadcast_to(n, u.shape) for n in (leaf_norm(u), clipping * jnp.maximum(leaf_norm(p), eps))), u
        )
    )


def _centralize_whole_leaf():
    """Centralization over the whole leaf (every axis) instead of each unit's fan-in."""
    return _leafwise(lambda u, p: u - u.mean() if u.ndim > 1 else u)


def _normalize_by_leaf(scale_factor, eps):
    """Normalization by each leaf's norm instead of the whole tree's."""
    return _leafwise(lambda u, p: scale_factor * u / (leaf_norm(u) + eps))


def _block_rms(min_scale):
    """The parameter block RMS instead of its norm."""
    return _leafwise(lambda u, p: u * jnp.maximum(root_mean_square(p), min_scale))


def _nonnegative_zeroed():
    """``keep_params_nonnegative`` that drops the update instead of moving the param to 0."""
    return _leafwise(lambda u, p: jnp.where(p + u < 0, 0.0, u))


def _with_lr(tx):
    return gradtx.chain(tx, gradtx.scale(0.01))


# (what is wrong, the wrong formula, the right one in gradtx, its optax reference)
MUTANTS = [
    (
        "agc ratio inverted",
        lambda: _agc_inverted(0.2, 0.1),
        lambda: gradtx.adaptive_grad_clip(0.2, 0.1),
        lambda: optax.adaptive_grad_clip(0.2, 0.1),
    ),
    (
        "agc per leaf, not per unit",
        lambda: _agc_by_leaf(0.2, 0.1),
        lambda: gradtx.adaptive_grad_clip(0.2, 0.1),
        lambda: optax.adaptive_grad_clip(0.2, 0.1),
    ),
    (
        "centralize over the whole leaf",
        _centralize_whole_leaf,
        lambda: gradtx.centralize(unit_axis=0),
        optax.centralize,
    ),
    (
        "normalize by each leaf's norm",
        lambda: _normalize_by_leaf(-0.1, 1e-2),
        lambda: gradtx.normalize_by_update_norm(-0.1, 1e-2),
        lambda: optax.normalize_by_update_norm(-0.1, 1e-2),
    ),
    (
        "param block rms for its norm",
        lambda: _with_lr(_block_rms(1e-3)),
        lambda: _with_lr(gradtx.scale_by_param_block_norm()),
        lambda: optax.chain(optax.scale_by_param_block_norm(), optax.scale(0.01)),
    ),
    (
        "nonnegative by dropping the step",
        _nonnegative_zeroed,
        gradtx.keep_params_nonnegative,
        optax.keep_params_nonnegative,
    ),
]


@pytest.mark.parametrize("what, wrong, right, reference", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_tolerance_catches_wrong_formulas(what, wrong, right, reference):
    """Negative control: after 100 steps on the parity tree (float32), the params of the wrong
    formula differ from optax's run of the right one beyond rtol 1e-5; gradtx's right one
    agrees (so the tolerance, not the inputs, tells them apart)."""
    params, grads = parity_inputs()
    want = run_optax(reference(), params, grads, jit=True).params
    assert_trees_close(run_steps(right(), params, grads, jit=True).params, want, 1e-5, what=what)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(run_steps(wrong(), params, grads, jit=True).params, want, 1e-5, what=what)


def test_per_example_mutants_fail_the_references(x64):
    """Negative control for the per-example formulas: normalizing every example to ``C``
    (no ``min(1, .)``) fails optax's ``per_example_global_norm_clip``, and the whole ``C`` per
    layer (no ``1 / sqrt(K)``) fails optax's ``per_example_layer_norm_clip``, at rtol 1e-5."""
    grads, clip = per_example_grads(), 0.9
    norms = jax.vmap(gradtx.global_norm)(grads)
    normalized = jax.tree.map(lambda g: jnp.tensordot(jnp.nan_to_num(clip / norms, posinf=1.0), g, axes=1), grads)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(normalized, optax.per_example_global_norm_clip(grads, clip)[0], 1e-5)
    whole_clip = {k: gradtx.per_example_global_norm_clip(g, clip)[0] for k, g in grads.items()}
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(whole_clip, optax.per_example_layer_norm_clip(grads, clip)[0], 1e-5)
