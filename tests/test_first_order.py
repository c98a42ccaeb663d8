"""Other first-order methods (gradtx/first_order.py, gradtx/optimizers/first_order.py): the
tests the registry-driven parity runner cannot do.

References, by test: Riedmiller & Braun's closed form and ``torch.optim.Rprop`` 2.13
(float64, 1e-12) for Rprop (optax 0.2.8's ``rprop`` is one step late); optax 0.2.8 with
the same key for the noise (bit for bit, the key included); optax 0.2.8 with a sequence
of loss values for the Polyak step (the runner passes no ``value``), and optax's own
``scale_by_polyak -> scale_by_learning_rate`` where optax's ``polyak_sgd`` departs from
its documented formula. Negative controls: a wrong formula per new primitive fails the
comparison at float32's rtol 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import N_STEPS, assert_trees_close, random_grads, random_tree, run_optax, run_steps

import gradtx

# --- helpers ---------------------------------------------------------------------------


def inputs(dtype=jnp.float32, n_steps: int = N_STEPS):
    return random_tree(0, dtype, small=True), random_grads(1, n_steps, dtype, small=True)


def values(n_steps: int = N_STEPS) -> list[float]:
    """Loss values for the Polyak step: some below ``f_min = -0.1`` (a negative gap)."""
    return list(np.random.default_rng(2).uniform(-0.5, 3.0, n_steps))


def run_with_values(opt, params, grads_seq, loss_values, *, jit: bool, apply_updates=gradtx.apply_updates):
    """``run_steps`` with the loss passed as ``update(..., value=loss)``."""

    def step(params, state, grads, value):
        updates, state = opt.update(grads, state, params, value=value)
        return apply_updates(params, updates), updates, state

    step = jax.jit(step) if jit else step
    state, updates = opt.init(params), None
    for grads, value in zip(grads_seq, loss_values):
        params, updates, state = step(params, state, grads, jnp.asarray(value, jax.tree.leaves(params)[0].dtype))
    return params, updates, state


def fails_at_float32(got, want, what: str) -> None:
    """Negative control: ``got`` differs from ``want`` beyond float32's rtol 1e-5."""
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(got, want, 1e-5, what=what)


# --- Rprop -----------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_rprop_closed_form(jit):
    """Reference: Riedmiller & Braun 1993 by hand. Gradients 1, 2, 1, -1, 1 with lr 0.1
    (etas 0.5 / 1.2): steps -0.1, -0.12, -0.144, then 0 at the sign flip (the step size
    halves to 0.072), then -0.072 (no comparison with the flipped step)."""
    with jax.enable_x64(True):
        opt = gradtx.rprop(0.1)
        update = jax.jit(opt.update) if jit else opt.update
        state, steps = opt.init(jnp.zeros(1, jnp.float64)), []
        for g in [1.0, 2.0, 1.0, -1.0, 1.0]:
            updates, state = update(jnp.array([g], jnp.float64), state)
            steps.append(float(updates[0]))
        np.testing.assert_allclose(steps, [-0.1, -0.12, -0.144, 0.0, -0.072], rtol=1e-15, atol=0)
        np.testing.assert_allclose(float(state.step_sizes[0]), 0.072, rtol=1e-15)


def rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    """The gradient of ``sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2`` (closed form, numpy)."""
    g = np.zeros_like(x)
    d = x[1:] - x[:-1] ** 2
    g[:-1] = -400 * x[:-1] * d - 2 * (1 - x[:-1])
    g[1:] += 200 * d
    return g


RPROP_SETTINGS = [
    dict(learning_rate=0.01),
    # every hyperparameter off its default; lr above max_step_size: clipped at the first step
    dict(learning_rate=0.1, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-4, max_step_size=0.05),
]


def torch_rprop(kwargs: dict, x0: list[np.ndarray], grad_at, n_steps: int) -> list[list[np.ndarray]]:
    """``torch.optim.Rprop`` in float64; ``grad_at(step, params)`` gives each step's gradients."""
    params = [torch.tensor(np.asarray(x, np.float64)) for x in x0]
    opt = torch.optim.Rprop(
        params,
        lr=kwargs["learning_rate"],
        etas=(kwargs.get("eta_minus", 0.5), kwargs.get("eta_plus", 1.2)),
        step_sizes=(kwargs.get("min_step_size", 1e-6), kwargs.get("max_step_size", 50.0)),
        foreach=False,
    )
    trajectory = []
    for t in range(n_steps):
        for p, g in zip(params, grad_at(t, [p.numpy() for p in params])):
            p.grad = torch.tensor(np.asarray(g, np.float64))
        opt.step()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


def gradtx_rprop(kwargs: dict, x0: list[np.ndarray], grad_at, n_steps: int, jit: bool) -> list[list[np.ndarray]]:
    opt = gradtx.rprop(**kwargs)
    update = jax.jit(opt.update) if jit else opt.update
    params = [jnp.asarray(x, jnp.float64) for x in x0]
    state, trajectory = opt.init(params), []
    for t in range(n_steps):
        grads = [jnp.asarray(g) for g in grad_at(t, [np.asarray(p) for p in params])]
        updates, state = update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
        trajectory.append([np.asarray(p) for p in params])
    return trajectory


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
@pytest.mark.parametrize("kwargs", RPROP_SETTINGS, ids=["defaults", "all-moved"])
def test_rprop_matches_torch_on_rosenbrock(kwargs, jit):
    """Reference: ``torch.optim.Rprop`` (torch 2.13, float64), 100 steps on a 6-dimensional
    Rosenbrock function from (-1.2, 1, ...): the whole trajectory agrees to 1e-12."""
    x0 = [np.array([-1.2, 1.0, -1.2, 1.0, -1.2, 1.0])]
    grad_at = lambda t, ps: [rosenbrock_grad(ps[0])]  # noqa: E731
    with jax.enable_x64(True):
        got = gradtx_rprop(kwargs, x0, grad_at, 100, jit)
    want = torch_rprop(kwargs, x0, grad_at, 100)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-12, atol=1e-12)
    assert not np.allclose(got[-1][0], x0[0]), "the run must move"


@pytest.mark.parametrize("kwargs", RPROP_SETTINGS, ids=["defaults", "all-moved"])
def test_rprop_matches_torch_on_the_parity_gradients(kwargs):
    """Reference: ``torch.optim.Rprop`` (float64) fed the parity suite's 200 gradient trees
    (signs flip often), leaf by leaf: params after every step to 1e-12."""
    with jax.enable_x64(True):
        params, grads = inputs(jnp.float64)
        x0 = [np.asarray(p) for p in jax.tree.leaves(params)]
        seq = [[np.asarray(g) for g in jax.tree.leaves(tree)] for tree in grads]
        got = gradtx_rprop(kwargs, x0, lambda t, ps: seq[t], N_STEPS, True)
    want = torch_rprop(kwargs, x0, lambda t, ps: seq[t], N_STEPS)
    for got_t, want_t in zip(got, want):
        for a, b in zip(got_t, want_t):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_rprop_complex_is_rprop_of_the_real_and_imaginary_parts():
    """Reference: gradtx's real Rprop on (real, imaginary) pairs, which is what
    ``torch.optim.Rprop`` does with complex params (``view_as_real``): equal to the bit."""
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=4) + 1j * rng.normal(size=4) for _ in range(30)]
    opt = gradtx.rprop(0.05)
    state, z = opt.init(jnp.zeros(4, jnp.complex64)), jnp.zeros(4, jnp.complex64)
    state_r, x = opt.init(jnp.zeros(8)), jnp.zeros(8)
    for g in grads:
        u, state = opt.update(jnp.asarray(g, jnp.complex64), state)
        z = gradtx.apply_updates(z, u)
        u, state_r = opt.update(jnp.asarray(np.concatenate([g.real, g.imag]), jnp.float32), state_r)
        x = gradtx.apply_updates(x, u)
    np.testing.assert_array_equal(np.concatenate([np.asarray(z).real, np.asarray(z).imag]), np.asarray(x))


def test_optax_rprop_is_one_step_late_and_keeps_the_same_state():
    """Reference: optax 0.2.8's ``rprop``. Its first update is 0 and its update at step
    ``t`` is gradtx's at ``t - 1`` (0 where the sign flips at ``t``); its state
    (``step_sizes``, ``prev_updates``) equals gradtx's at every step, float64, 200 steps."""
    with jax.enable_x64(True):
        params, grads = inputs(jnp.float64)
        gx, ox = gradtx.rprop(0.01), optax.rprop(0.01)
        gs, os_ = gx.init(params), ox.init(params)
        previous = None
        for t, g in enumerate(grads):
            gu, gs = gx.update(g, gs)
            ou, os_ = ox.update(g, os_)
            if t == 0:
                assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(ou))
            else:
                flipped = jax.tree.map(lambda a, b: np.asarray(a) * np.asarray(b) < 0, g, grads[t - 1])
                late = jax.tree.map(lambda p, f: np.where(f, 0.0, np.asarray(p)), previous, flipped)
                jax.tree.map(np.testing.assert_array_equal, ou, late)
            previous = gu
            jax.tree.map(np.testing.assert_array_equal, gs.step_sizes, os_[0].step_sizes)
            jax.tree.map(np.testing.assert_array_equal, gs.prev_updates, os_[0].prev_updates)


@pytest.mark.parametrize("factory", [gradtx.rprop, gradtx.scale_by_rprop])
def test_rprop_step_size_bounds_are_checked_together(factory):
    """Reference: the message format of the registry's bad rows, for the cross-argument rule."""
    name = factory.__name__
    with pytest.raises(ValueError) as info:
        factory(0.1, min_step_size=0.01, max_step_size=0.001)
    assert str(info.value) == f"gradtx.{name}(max_step_size=0.001): max_step_size must be >= min_step_size (0.01)"
    factory(0.1, min_step_size=0.01, max_step_size=0.01)  # equal bounds are fine


RPROP_MUTANTS = [
    ("optax's one-step-late rprop", lambda: optax.rprop(0.1, 0.3, 1.5, 1e-4, 0.05)),
    ("sign descent with a fixed step", lambda: gradtx.chain(gradtx.scale_by_sign(), gradtx.scale(-0.05))),
    ("etas moved", lambda: gradtx.rprop(0.1, eta_minus=0.35, eta_plus=1.45, min_step_size=1e-4, max_step_size=0.05)),
    ("no wait at a flip", lambda: _rprop_without_wait()),
]


def _rprop_without_wait():
    """Rprop with a term changed: at a sign flip the element moves ``-step * sign(g)``."""
    inner = gradtx.scale_by_rprop(0.1, 0.3, 1.5, 1e-4, 0.05)

    def apply(updates, state, step):
        out, new = inner.stage.apply(updates, state, step)
        moved = jax.tree.map(lambda o, g, z: jnp.where(o == 0, z * jnp.sign(g), o), out, updates, new["step_sizes"])
        return moved, new

    fields = {k.name: k.field for k in inner.stage.fields}
    return gradtx.chain(gradtx.primitive(apply, fields), gradtx.scale(-1.0))


@pytest.mark.parametrize("what, wrong", RPROP_MUTANTS, ids=[m[0] for m in RPROP_MUTANTS])
def test_rprop_tolerance_catches_wrong_formulas(what, wrong):
    """Negative control against ``torch.optim.Rprop`` (float64) on the parity gradients:
    each wrong formula's float32 params differ beyond rtol 1e-5."""
    params, grads = inputs(jnp.float32)
    x0 = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    seq = [[np.asarray(g, np.float64) for g in jax.tree.leaves(tree)] for tree in grads]
    want = torch_rprop(RPROP_SETTINGS[1], x0, lambda t, ps: seq[t], N_STEPS)[-1]
    right = run_steps(gradtx.rprop(**RPROP_SETTINGS[1]), params, grads, jit=True)
    assert_trees_close(jax.tree.leaves(right.params), want, 1e-5)  # the right one passes
    got = run_steps(wrong(), params, grads, jit=True, apply_updates=optax.apply_updates)
    fails_at_float32(jax.tree.leaves(got.params), want, what)


# --- gradient noise --------------------------------------------------------------------

NOISY = [dict(learning_rate=0.05, key=0), dict(learning_rate=0.05, eta=0.03, gamma=0.7, key=3),
         dict(learning_rate=gradtx.registry.parity_schedule, key=1)]


def _key_data(state):
    return np.asarray(jax.random.key_data(state.rng_key))


@pytest.mark.parametrize("kwargs", NOISY, ids=["defaults", "all-moved", "schedule"])
def test_noisy_sgd_matches_optax_with_the_same_key(kwargs, mode):
    """Reference: ``optax.noisy_sgd`` 0.2.8 with the same key, 200 steps: params and last
    updates to rtol 1e-10 / 1e-5, the step count and the key (its data) equal."""
    jit, precision = mode
    params, grads = inputs(precision.dtype)
    got = run_steps(gradtx.noisy_sgd(**kwargs), params, grads, jit=jit)
    want = run_optax(optax.noisy_sgd(**kwargs), params, grads, jit=jit)
    assert_trees_close(got.params, want.params, precision.rtol, what="params")
    assert_trees_close(got.updates, want.updates, precision.rtol, what="last updates")
    assert int(got.state.count) == int(want.state[0].count) == N_STEPS
    np.testing.assert_array_equal(_key_data(got.state), _key_data(want.state[0]))


def test_add_noise_takes_a_typed_key_and_matches_optax(jit):
    """Reference: ``optax.add_noise`` 0.2.8 with the same typed key (``jax.random.key(5)``),
    200 steps: updates to rtol 1e-5 and the key equal; ``key=None`` is seed 0."""
    params, grads = inputs()
    got = run_steps(gradtx.add_noise(0.02, 0.6, jax.random.key(5)), params, grads, jit=jit)
    want = run_optax(optax.add_noise(0.02, 0.6, jax.random.key(5)), params, grads, jit=jit)
    assert_trees_close(got.params, want.params, 1e-5)
    np.testing.assert_array_equal(_key_data(got.state), _key_data(want.state))
    default = gradtx.add_noise(0.02, 0.6).init(params).rng_key
    np.testing.assert_array_equal(jax.random.key_data(default), jax.random.key_data(jax.random.key(0)))


@pytest.mark.parametrize("what, wrong", [
    ("another key", lambda: gradtx.noisy_sgd(0.05, eta=0.03, gamma=0.7, key=4)),
    ("no annealing", lambda: gradtx.noisy_sgd(0.05, eta=0.03, gamma=0.0, key=3)),
    ("noise without the learning rate", lambda: gradtx.chain(
        gradtx.scale_by_learning_rate(0.05), gradtx.add_noise(0.03, 0.7, 3))),
])
def test_noise_tolerance_catches_wrong_formulas(what, wrong, jit):
    """Negative control against ``optax.noisy_sgd(0.05, eta=0.03, gamma=0.7, key=3)``."""
    params, grads = inputs()
    want = run_optax(optax.noisy_sgd(**NOISY[1]), params, grads, jit=jit)
    fails_at_float32(run_steps(wrong(), params, grads, jit=jit).params, want.params, what)


# --- the Polyak step size ----------------------------------------------------------------

POLYAK = [{}, dict(max_learning_rate=0.5, f_min=-0.1, eps=1e-3, variant="sps+"),
          dict(max_learning_rate=0.5, f_min=-0.1, eps=1e-3, variant="sps")]


@pytest.mark.parametrize("kwargs", POLYAK, ids=["defaults", "sps+", "sps"])
def test_polyak_sgd_matches_optax_with_a_value_sequence(kwargs, mode):
    """Reference: ``optax.polyak_sgd`` 0.2.8 (``scaling=1``, where optax follows its
    documented formula) and ``optax.scale_by_polyak``, 200 steps with a sequence of loss
    values passed as ``value``: params and last updates to rtol 1e-10 / 1e-5."""
    jit, precision = mode
    params, grads = inputs(precision.dtype)
    loss = values()
    for gx, ox in [(gradtx.polyak_sgd(**kwargs), optax.polyak_sgd(**kwargs)),
                   (gradtx.scale_by_polyak(**kwargs), optax.scale_by_polyak(**kwargs))]:
        got = run_with_values(gx, params, grads, loss, jit=jit)
        want = run_with_values(ox, params, grads, loss, jit=jit, apply_updates=optax.apply_updates)
        assert_trees_close(got[0], want[0], precision.rtol, what="params")
        assert_trees_close(got[1], want[1], precision.rtol, what="last updates")


@pytest.mark.parametrize("scaling", [0.7, gradtx.registry.parity_schedule], ids=["0.7", "schedule"])
def test_polyak_sgd_scaling_multiplies_the_polyak_step(scaling, jit):
    """Reference: the documented formula ``scaling * min(gap / (||g||^2 + eps), max_lr)``
    built from optax 0.2.8's own pieces, ``scale_by_polyak -> scale_by_learning_rate``
    (200 steps, rtol 1e-5); and optax's ``polyak_sgd`` departs from it (closed form: g=1,
    value=1, scaling=2 gives -2; optax's gives -0.5)."""
    kwargs = dict(max_learning_rate=0.5, f_min=-0.1, eps=1e-3, variant="sps+")
    params, grads = inputs()
    got = run_with_values(gradtx.polyak_sgd(scaling=scaling, **kwargs), params, grads, values(), jit=jit)
    ref = optax.chain(optax.scale_by_polyak(**kwargs), optax.scale_by_learning_rate(scaling))
    want = run_with_values(ref, params, grads, values(), jit=jit, apply_updates=optax.apply_updates)
    assert_trees_close(got[0], want[0], 1e-5)

    one = jnp.ones(1)
    gu, _ = gradtx.polyak_sgd(scaling=2.0).update(one, gradtx.polyak_sgd(scaling=2.0).init(one), value=1.0)
    ou, _ = optax.polyak_sgd(scaling=2.0).update(one, optax.polyak_sgd(scaling=2.0).init(one), value=1.0)
    assert float(gu[0]) == -2.0 and float(ou[0]) == -0.5


def test_polyak_without_value_names_the_missing_argument():
    """Reference: the message itself (a ``gradtx.UpdateError`` naming ``value``)."""
    opt = gradtx.polyak_sgd()
    with pytest.raises(gradtx.UpdateError) as info:
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
    assert str(info.value) == ("gradtx.polyak_sgd > scale_by_polyak: update() needs the loss as the keyword "
                               "argument `value`: call update(grads, state, params, value=loss)")


@pytest.mark.parametrize("what, wrong", [
    ("no cap at max_learning_rate", lambda: gradtx.polyak_sgd(max_learning_rate=1e9, f_min=-0.1, eps=1e-3,
                                                              variant="sps+")),
    ("sps for sps+", lambda: gradtx.polyak_sgd(max_learning_rate=0.5, f_min=-0.1, eps=1e-3)),
    ("eps left out", lambda: gradtx.polyak_sgd(max_learning_rate=0.5, f_min=-0.1, variant="sps+")),
])
def test_polyak_tolerance_catches_wrong_formulas(what, wrong, jit):
    """Negative control against ``optax.polyak_sgd(0.5, f_min=-0.1, eps=1e-3, variant="sps+")``."""
    params, grads = inputs()
    want = run_with_values(optax.polyak_sgd(**POLYAK[1]), params, grads, values(), jit=jit,
                           apply_updates=optax.apply_updates)
    fails_at_float32(run_with_values(wrong(), params, grads, values(), jit=jit)[0], want[0], what)


# --- the optimistic correction -----------------------------------------------------------

OGD = dict(learning_rate=0.05, alpha=0.7, beta=0.3)


@pytest.mark.parametrize("what, wrong", [
    ("alpha and beta swapped", lambda: gradtx.optimistic_gradient_descent(0.05, alpha=0.3, beta=0.7)),
    ("no correction", lambda: gradtx.sgd(0.05 * 0.7)),
    ("correction from zero at the first step", lambda: _ogd_from_zero()),
])
def test_optimistic_tolerance_catches_wrong_formulas(what, wrong, jit):
    """Negative control against ``optax.optimistic_gradient_descent(0.05, 0.7, 0.3)``."""
    params, grads = inputs()
    want = run_optax(optax.optimistic_gradient_descent(**OGD), params, grads, jit=jit)
    fails_at_float32(run_steps(wrong(), params, grads, jit=jit).params, want.params, what)


def _ogd_from_zero():
    """The primitive with a term changed: the first step compares with 0 (not with ``g``)."""
    inner = gradtx.scale_by_optimistic_gradient(0.7, 0.3)

    def apply(updates, state, step):
        return inner.stage.apply(updates, state, step._replace(count=jnp.ones_like(step.count)))

    fields = {k.name: k.field for k in inner.stage.fields}
    return gradtx.chain(gradtx.primitive(apply, fields, uses_count=True), gradtx.scale_by_learning_rate(0.05))


def test_optimistic_adam_takes_no_schedule():
    """Reference: optax 0.2.8, whose ``optimistic_adam`` refuses schedules too (``_v2`` takes them)."""
    with pytest.raises(TypeError, match=r"^gradtx\.optimistic_adam\(learning_rate=<function .*\): learning_rate "
                                        r"must be a number or an array, got a function \(function\)$"):
        gradtx.optimistic_adam(gradtx.registry.parity_schedule)
    with pytest.raises(ValueError, match="does not support learning rate schedules"):
        optax.optimistic_adam(gradtx.registry.parity_schedule)
