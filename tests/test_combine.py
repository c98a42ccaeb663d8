"""chain, named_chain and fork against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

U = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}


def test_empty_chain_is_identity():
    tx = gradtx.chain()
    updates, state = tx.update(U, tx.init(U))
    assert state == gradtx.EmptyState()
    np.testing.assert_array_equal(updates["a"], U["a"])


def test_chain_applies_stages_in_order():
    """scale(2) then add weight decay 1 * p then scale(-1): -(2u + p) (closed form)."""
    params = jax.tree.map(jnp.ones_like, U)
    tx = gradtx.chain(gradtx.scale(2.0), gradtx.add_decayed_weights(1.0), gradtx.scale(-1.0))
    updates, _ = tx.update(U, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], -(2 * U["a"] + 1))


def test_named_chain_keys_state_by_name():
    tx = gradtx.named_chain(("momentum", gradtx.trace(0.5)), ("lr", gradtx.scale(-1.0)))
    state = tx.init(U)
    assert set(state) == {"momentum", "lr"}
    updates, state = tx.update(U, state)
    updates, state = tx.update(U, state)
    np.testing.assert_allclose(updates["a"], -1.5 * U["a"])  # v2 = u + 0.5 u
    np.testing.assert_allclose(state["momentum"].trace["a"], 1.5 * U["a"])


def test_named_chain_rejects_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        gradtx.named_chain(("x", gradtx.identity()), ("x", gradtx.identity()))


def test_fork_feeds_the_same_updates_to_every_branch():
    """fork(scale(2), trace(0.5), scale(3), join=a - b + c) (closed form per step)."""
    tx = gradtx.fork(gradtx.scale(2.0), gradtx.trace(0.5), gradtx.scale(3.0), join=lambda a, b, c: a - b + c)
    state = tx.init(U)
    assert state._fields == ("trace",)  # the branches' fields, merged
    out1, state = tx.update(U, state)
    out2, state = tx.update(U, state)
    np.testing.assert_allclose(out1["a"], 2 * U["a"] - U["a"] + 3 * U["a"])
    np.testing.assert_allclose(out2["a"], 2 * U["a"] - 1.5 * U["a"] + 3 * U["a"])


def test_fork_needs_two_branches_and_a_join_function():
    with pytest.raises(ValueError, match="at least two branches"):
        gradtx.fork(gradtx.identity(), join=jnp.add)
    with pytest.raises(TypeError, match="join"):
        gradtx.fork(gradtx.identity(), gradtx.identity(), join=None)


def test_adam_is_ema_over_root_of_second_moment_closed_form():
    """One Adam step from zero state: m_hat = g, v_hat = g^2, so the direction is
    g / (|g| + eps) (Kingma & Ba, closed form)."""
    g = jnp.array([0.3, -4.0, 1e-3])
    out, _ = gradtx.adam_direction(eps=1e-8).update(g, gradtx.adam_direction().init(g))
    # rtol: float32 rounds b2 = 0.999, so 1 - b2 is 1.3e-5 off 0.001 (optax alike)
    np.testing.assert_allclose(out, g / (jnp.abs(g) + 1e-8), rtol=2e-5)


@pytest.mark.parametrize("as_array", [False, True], ids=["bool-leaves", "array-leaves"])
def test_weight_decay_mask_of_bools_or_boolean_arrays(as_array):
    """u + wd * p where the mask is True (closed form); an array mask acts per element."""
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    grads = jax.tree.map(jnp.zeros_like, params)
    mask = {"w": True, "b": False}
    if as_array:
        mask = {"w": jnp.array([[True, False], [True, True]]), "b": jnp.array(False)}
    tx = gradtx.add_decayed_weights(0.5, mask=mask)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected_w = 0.5 * (np.asarray(mask["w"]) if as_array else np.ones((2, 2)))
    np.testing.assert_array_equal(updates["w"], expected_w)
    np.testing.assert_array_equal(updates["b"], 0.0)


def test_one_step_count_for_every_stage_that_reads_it():
    """Two bias corrections and a schedule in one chain share one ``count`` (closed form:
    at step t the output is ``u / (1 - 0.9^t) / (1 - 0.5^t) * (t - 1)``)."""
    tx = gradtx.chain(gradtx.bias_correct(0.9), gradtx.bias_correct(0.5), gradtx.scale_by_schedule(lambda t: t))
    state = tx.init(U)
    assert state._fields == ("count",)
    for t in range(1, 4):
        out, state = tx.update(U, state)
        np.testing.assert_allclose(out["a"], U["a"] / (1 - 0.9**t) / (1 - 0.5**t) * (t - 1), rtol=1e-6)
    assert int(state.count) == 3


def test_fields_of_one_name_from_two_stages_are_refused_at_build_time():
    with pytest.raises(ValueError, match=r"^gradtx\.chain: two stages keep a state field named 'mu'.*renamed"):
        gradtx.chain(gradtx.scale_by_ema(0.9), gradtx.scale_by_ema(0.5))


def test_renamed_resolves_a_clash():
    """Two averages in one chain (closed form: after one step of u, mu = 0.1 u and
    mu_slow = 0.5 * 0.1 u)."""
    tx = gradtx.chain(gradtx.scale_by_ema(0.9), gradtx.renamed(gradtx.scale_by_ema(0.5), mu="mu_slow"))
    out, state = tx.update(U, tx.init(U))
    assert state._fields == ("mu", "mu_slow")
    np.testing.assert_allclose(state.mu_slow["a"], 0.05 * U["a"], rtol=1e-6)
    np.testing.assert_allclose(out["a"], 0.05 * U["a"], rtol=1e-6)
    with pytest.raises(ValueError, match="keeps no field 'nu'"):
        gradtx.renamed(gradtx.scale_by_ema(0.5), nu="x")


def test_optax_stage_keeps_its_state_in_a_field_named_after_its_factory():
    import optax

    tx = gradtx.chain(gradtx.trace(0.9), optax.scale_by_adam())
    state = tx.init(U)
    assert state._fields == ("trace", "scale_by_adam")
    assert isinstance(state.scale_by_adam, optax.ScaleByAdamState)
