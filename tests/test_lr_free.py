"""The learning-rate-free methods (Prodigy, D-Adaptation, DoG, DoWG, COCOB, Mechanic, MoMo):
what the registry's parity grids do not say.

- MoMo and MoMo-Adam (their ``update`` needs the loss) and ``mechanize`` (a wrapper) against
  optax.contrib 0.2.8 with a loss sequence / around three base optimizers;
- the papers' algorithms: DoG, DoWG and COCOB in numpy float64, Prodigy and D-Adaptation
  against pytorch-optimizer 4.1.0 (torch float64), MoMo with weight decay against the
  authors' algorithm in numpy float64, where optax 0.2.8 departs from it;
- negative controls: a wrong formula in each stage (a mutant of the one home of the
  distance-over-gradients estimates, or of a stage) fails the float32 rtol 1e-5 comparison
  with the optax run of the right one, while the right formula passes it;
- ``init`` on abstract params (``jax.eval_shape``), zero gradients on the first steps (no
  NaN; optax's Prodigy and D-Adaptation give NaN), missing params or loss.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from conftest import assert_trees_close, compare_states, random_grads, random_tree
from pytorch_optimizer import DAdaptAdam, Prodigy

import gradtx
from gradtx import lr_free
from gradtx.base import UpdateError
from gradtx.registry import ENTRIES
from gradtx.rows._entry import parity_schedule

N_STEPS = 200
ROWS = {e.name: e for e in ENTRIES}


def inputs(dtype=jnp.float32, n_steps: int = N_STEPS):
    """The small parity tree, ``n_steps`` gradients and a positive loss sequence."""
    values = [jnp.asarray(2.0 + 0.5 * math.sin(0.3 * t), dtype) for t in range(n_steps)]
    return random_tree(0, dtype, small=True), random_grads(1, n_steps, dtype, small=True), values


def run(tx, params, grads, values=None, apply=gradtx.apply_updates):
    """``tx`` over ``grads`` (with the loss ``values`` when given), the step jitted:
    ``(params, last updates, state)``."""

    @jax.jit
    def step(p, s, g, v):
        u, s = tx.update(g, s, p) if v is None else tx.update(g, s, p, value=v)
        return apply(p, u), u, s

    state, updates = tx.init(params), None
    for t, g in enumerate(grads):
        params, updates, state = step(params, state, g, None if values is None else values[t])
    return params, updates, state


def optax_apply(params, updates):
    return optax.apply_updates(params, updates)


# --- MoMo and Mechanic against optax ----------------------------------------------------


MOMO_CASES = [
    pytest.param(name, kw, id=f"{name}-{i}") for name in ("momo", "momo_adam") for i, kw in enumerate(ROWS[name].grid)
]


@pytest.mark.parametrize("name, kwargs", MOMO_CASES)
def test_momo_matches_optax_with_a_loss_sequence(name, kwargs, precision):
    """Reference: optax.contrib.<name> 0.2.8 with the same loss sequence, 200 jitted steps,
    at the registry's grid (no weight decay): params and every optax state field agree to
    rtol 1e-10 (float64) / 1e-5 (float32), the last updates to 1e-10 / 1e-4.

    Why 1e-4 for the last float32 update: MoMo's step size divides
    ``f_bar - gamma + <d, x>`` by ``||d||^2``, and after 200 steps ``|gamma|`` is ~15 times
    ``f_bar`` (the loss and the gradients here are independent): the cancellation
    amplifies one float32 rounding, which XLA places differently in the two fused
    graphs, to ~2e-5 in that one step (float64: below 1e-12)."""
    params, grads, values = inputs(precision.dtype)
    got = run(getattr(gradtx, name)(**kwargs), params, grads, values)
    want = run(getattr(optax.contrib, name)(**kwargs), params, grads, values, optax_apply)
    assert_trees_close(got[0], want[0], precision.rtol, "params")
    assert_trees_close(got[1], want[1], 1e-4 if precision.dtype == jnp.float32 else precision.rtol, "last updates")
    assert compare_states(got[2], want[2], precision.rtol) == sorted(got[2]._fields)


MECHANIZE_CASES = {
    "sgd(momentum)": (lambda: gradtx.sgd(0.1, 0.9), lambda: optax.sgd(0.1, 0.9), {}),
    "adam": (lambda: gradtx.adam(1e-2), lambda: optax.adam(1e-2), dict(weight_decay=0.1, eps=1e-6, num_betas=3)),
    "adam(schedule)": (lambda: gradtx.adam(parity_schedule), lambda: optax.adam(parity_schedule), dict(s_init=1e-4)),
}


@pytest.mark.parametrize("inner", MECHANIZE_CASES.values(), ids=MECHANIZE_CASES.keys())
def test_mechanize_matches_optax(inner, precision):
    """Reference: optax.contrib.mechanize 0.2.8 around the optax twin of the base optimizer,
    200 jitted steps: params, last updates, Mechanic's fields and the base optimizer's
    state agree to rtol 1e-10 (float64) / 1e-5 (float32)."""
    ours, theirs, kwargs = inner
    params, grads, _ = inputs(precision.dtype)
    got = run(gradtx.mechanize(ours(), **kwargs), params, grads)
    want = run(optax.contrib.mechanize(theirs(), **kwargs), params, grads, apply=optax_apply)
    assert_trees_close(got[0], want[0], precision.rtol, "params")
    assert_trees_close(got[1], want[1], precision.rtol, "last updates")
    for field in ("r", "m", "v", "s", "x0"):
        assert_trees_close(getattr(got[2], field), getattr(want[2], field), precision.rtol, field)
    assert int(got[2].count) == int(want[2].count) == N_STEPS
    assert compare_states(got[2].base_optimizer_state, want[2].base_optimizer_state, precision.rtol)


# --- the papers' algorithms ----------------------------------------------------------------


def _leaves64(tree) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _dot(a, b) -> float:
    return float(sum(np.sum(x * y) for x, y in zip(a, b)))


def paper_dog(x, grads, *, r=None, r_eps_rel=1e-6, eps=1e-8, lr=1.0):
    """DoG, Ivgi et al. 2023, Algorithm 1 (global norms): r = max(r, ||x - x_0||),
    G += ||g||^2, x -= lr * r / sqrt(G + eps) * g, r starting at ``r`` when given, else at
    r_eps_rel * (1 + ||x_0||)."""
    x0 = [a.copy() for a in x]
    r, big_g = r_eps_rel * (1 + math.sqrt(_dot(x0, x0))) if r is None else r, 0.0
    for g in grads:
        diff = [a - b for a, b in zip(x, x0)]
        r, big_g = max(r, math.sqrt(_dot(diff, diff))), big_g + _dot(g, g)
        x = [a - lr * r / math.sqrt(big_g + eps) * b for a, b in zip(x, g)]
    return x


def paper_dowg(x, grads, *, r2=1e-4, eps=1e-4, lr=1.0):
    """DoWG, Khaled et al. 2023, Algorithm 1: r^2 = max(r^2, ||x - x_0||^2),
    v += r^2 ||g||^2, x -= lr * r^2 / (sqrt(v) + eps) * g."""
    x0, v = [a.copy() for a in x], 0.0
    for g in grads:
        diff = [a - b for a, b in zip(x, x0)]
        r2 = max(r2, _dot(diff, diff))
        v += r2 * _dot(g, g)
        x = [a - lr * r2 / (math.sqrt(v) + eps) * b for a, b in zip(x, g)]
    return x


def paper_cocob(x, grads, *, alpha=100.0, eps=1e-8):
    """COCOB-Backprop, Orabona & Tommasi 2017, Algorithm 2, per coordinate (with the
    gradient g, where the paper bets on the negative gradient): L = max(L, |g|),
    G += |g|, R = max(R - g (x - x_0), 0), theta -= g, x = x_0 + theta / (L max(G + L, alpha L)) (L + R)."""
    x0 = [a.copy() for a in x]
    big_l = [np.full_like(a, eps) for a in x]
    big_g, reward, theta = ([np.zeros_like(a) for a in x] for _ in range(3))
    for g in grads:
        for i, gi in enumerate(g):
            big_l[i] = np.maximum(big_l[i], np.abs(gi))
            big_g[i] = big_g[i] + np.abs(gi)
            reward[i] = np.maximum(reward[i] - gi * (x[i] - x0[i]), 0)
            theta[i] = theta[i] - gi
            x[i] = x0[i] + theta[i] / (big_l[i] * np.maximum(big_g[i] + big_l[i], alpha * big_l[i])) * (
                big_l[i] + reward[i]
            )
    return x


PAPERS = {
    "dog": (lambda: gradtx.dog(), paper_dog),
    "dog(distance,eps,lr)": (
        lambda: gradtx.dog(0.5, ("distance", 1e-2), eps=1e-3),
        lambda x, grads: paper_dog(x, grads, r=1e-2, eps=1e-3, lr=0.5),
    ),
    "dowg": (lambda: gradtx.dowg(), paper_dowg),
    "cocob": (lambda: gradtx.cocob(), paper_cocob),
}


@pytest.mark.parametrize("make, paper", PAPERS.values(), ids=PAPERS.keys())
def test_the_papers_algorithms(make, paper):
    """Reference: the paper's algorithm in numpy float64 (above), 100 steps, rtol 1e-10 on
    the params (gradtx jitted, float64)."""
    with jax.enable_x64(True):
        params, grads, _ = inputs(jnp.float64, 100)
        got = run(make(), params, grads)[0]
    want = paper(_leaves64(params), [_leaves64(g) for g in grads])
    assert_trees_close(jax.tree.leaves(got), want, 1e-10)


def _torch_run(optimizer_cls, params, grads, **kwargs):
    """A pytorch-optimizer optimizer over ``grads`` (float64 tensors), its params after."""
    tensors = [torch.tensor(np.asarray(p, np.float64), requires_grad=True) for p in jax.tree.leaves(params)]
    opt = optimizer_cls(tensors, **kwargs)
    for g in grads:
        for t, gi in zip(tensors, jax.tree.leaves(g)):
            t.grad = torch.tensor(np.asarray(gi, np.float64))
        opt.step()
    return [t.detach().numpy() for t in tensors]


TORCH = {
    "prodigy": (lambda: gradtx.prodigy(), Prodigy, dict(bias_correction=True)),
    "prodigy(moved)": (
        lambda: gradtx.prodigy(0.5, (0.8, 0.95), 0.7, 1e-3, 1e-3, 0.5, weight_decay=0.1),
        Prodigy,
        dict(
            lr=0.5, betas=(0.8, 0.95), beta3=0.7, eps=1e-3, d0=1e-3, d_coef=0.5, weight_decay=0.1, bias_correction=True
        ),
    ),
    "dadapt_adamw": (lambda: gradtx.dadapt_adamw(), DAdaptAdam, dict(bias_correction=True, weight_decouple=True)),
    "dadapt_adamw(moved)": (
        lambda: gradtx.dadapt_adamw(0.5, (0.8, 0.95), 1e-3, 1e-3, weight_decay=0.1),
        DAdaptAdam,
        dict(
            lr=0.5, betas=(0.8, 0.95), eps=1e-3, d0=1e-3, weight_decay=0.1, bias_correction=True, weight_decouple=True
        ),
    ),
}


@pytest.mark.parametrize("make, torch_cls, kwargs", TORCH.values(), ids=TORCH.keys())
def test_prodigy_and_dadaptation_match_pytorch_optimizer(make, torch_cls, kwargs):
    """Reference: pytorch-optimizer 4.1.0's ``Prodigy`` / ``DAdaptAdam`` (the authors'
    algorithms with bias correction and decoupled decay), torch float64, 50 steps, rtol
    1e-7 on the params: the two libraries sum the inner products and apply the decay in
    other orders, and the running estimate ``d`` carries those roundings (2e-8 seen)."""
    with jax.enable_x64(True):
        params, grads, _ = inputs(jnp.float64, 50)
        got = run(make(), params, grads)[0]
    want = _torch_run(torch_cls, params, grads, **kwargs)
    assert_trees_close(jax.tree.leaves(got), want, 1e-7)


def authors_momo(x, grads, values, *, lr, wd, beta=0.9, adam=False, b2=0.999, eps=1e-8):
    """fabian-sp/MoMo's ``Momo`` (``MomoAdam`` with ``adam``, its proximal weight decay) in
    numpy float64, lower bound 0: ``x = (x - tau * d [/ D]) / (1 + lr * wd)``."""
    d = [np.zeros_like(a) for a in x]
    v = [np.zeros_like(a) for a in x]
    f_bar = gamma = 0.0
    for k, (g, f) in enumerate(zip(grads, values), start=1):
        b = 0.0 if (k == 1 and not adam) else beta
        f_bar = b * f_bar + (1 - b) * f
        gamma = b * gamma + (1 - b) * _dot(x, g)
        d = [b * di + (1 - b) * gi for di, gi in zip(d, g)]
        c1 = 1 - beta**k if adam else 1.0
        if adam:
            v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
            big_d = [np.sqrt(vi / (1 - b2**k)) + eps for vi in v]
        else:
            big_d = [np.ones_like(a) for a in x]
        norm = _dot(d, [di / bd for di, bd in zip(d, big_d)])
        nom = (1 + lr * wd) * (f_bar - c1 * 0.0) + _dot(x, d) - (1 + lr * wd) * gamma
        tau = min(lr / c1, max(nom, 0.0) / norm)
        x = [(a - tau * di / bd) / (1 + lr * wd) for a, di, bd in zip(x, d, big_d)]
    return x


@pytest.mark.parametrize("name, lr", [("momo", 0.5), ("momo_adam", 0.05)])
def test_momo_weight_decay_is_the_authors_and_not_optaxs(name, lr):
    """Reference: the authors' MoMo / MoMo-Adam with weight decay 0.1 in numpy float64
    (``authors_momo``), 50 steps: gradtx agrees to rtol 1e-10. optax 0.2.8 does not divide
    the momentum step by ``1 + lr * wd``: its params differ beyond rtol 1e-3."""
    with jax.enable_x64(True):
        params, grads, values = inputs(jnp.float64, 50)
        got = run(getattr(gradtx, name)(lr, weight_decay=0.1), params, grads, values)[0]
        theirs = run(getattr(optax.contrib, name)(lr, weight_decay=0.1), params, grads, values, optax_apply)[0]
    want = authors_momo(
        _leaves64(params),
        [_leaves64(g) for g in grads],
        [float(v) for v in values],
        lr=lr,
        wd=0.1,
        adam=name == "momo_adam",
    )
    assert_trees_close(jax.tree.leaves(got), want, 1e-10)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(jax.tree.leaves(theirs), want, 1e-3, "optax")


# --- negative controls --------------------------------------------------------------------------


def _cocob_scale_without_running_max():
    """``scale_by_cocob`` with ``L = |g|`` instead of ``L = max(L, |g|)`` (a mutant)."""

    def apply(updates, state, step):
        p0 = state["x0"]
        scale = jax.tree.map(lambda s, g: jnp.abs(g) + 0 * s, state["scale"], updates)
        total = jax.tree.map(lambda s, g: s + jnp.abs(g), state["total"], updates)
        reward = jax.tree.map(
            lambda r, g, p, x0: jnp.maximum(r - g * (p - x0), 0), state["reward"], updates, step.params, p0
        )
        theta = jax.tree.map(lambda c, g: c - g, state["theta"], updates)
        out = jax.tree.map(
            lambda p, x0, c, lo, s, r: -p + (x0 + c / (lo * jnp.maximum(s + lo, 100.0 * lo)) * (lo + r)),
            step.params,
            p0,
            theta,
            scale,
            total,
            reward,
        )
        return out, {"x0": p0, "scale": scale, "total": total, "reward": reward, "theta": theta}

    zeros = lambda p: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
    return gradtx.primitive(
        apply,
        {
            "x0": lambda p: p,
            "scale": lambda p: jax.tree.map(lambda x: jnp.full_like(x, 1e-8), p),
            "total": zeros,
            "reward": zeros,
            "theta": zeros,
        },
    )


MUTANTS = {
    # the distance-over-gradients estimates (their one home)
    "dog: distance from the current point, not x_0": (
        ("max_distance", lambda f: lambda r, p, p0, squared=False: f(r, p, p, squared=squared)),
        lambda: gradtx.dog(),
        ("dog", {}),
    ),
    "dog: r summed, not a running max": (
        ("max_distance", lambda f: lambda r, p, p0, squared=False: r + (f(0 * r, p, p0, squared=squared))),
        lambda: gradtx.dog(),
        ("dog", {}),
    ),
    "dowg: gradient norms not weighted by r^2": (
        ("add_sq_norm", lambda f: lambda total, g, weight=1.0: f(total, g)),
        lambda: gradtx.dowg(),
        ("dowg", {}),
    ),
    "prodigy: ||s||_1^2 in the d estimate (a wrong power)": (
        (
            "raise_estimate",
            lambda f: (
                lambda d, n, s, coef=1.0, scale=1.0: f(
                    d, n, s, coef / jnp.maximum(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(s)), 1e-30), scale
                )
            ),
        ),
        lambda: gradtx.prodigy(estim_lr0=1e-2),
        ("prodigy", dict(estim_lr0=1e-2)),
    ),
    "dadapt_adamw: d may shrink (no running max)": (
        ("raise_estimate", lambda f: lambda d, n, s, coef=1.0, scale=1.0: f(0 * d, n, s, coef, scale)),
        lambda: gradtx.dadapt_adamw(estim_lr0=1e-2),
        ("dadapt_adamw", dict(estim_lr0=1e-2)),
    ),
    "dadapt_adamw: s summed without its decay": (
        ("decayed_sum", lambda f: lambda s, g, decay, weight, divisor=1.0: f(s, g, 1.0, weight, divisor)),
        lambda: gradtx.dadapt_adamw(estim_lr0=1e-2),
        ("dadapt_adamw", dict(estim_lr0=1e-2)),
    ),
    # the other stages
    "cocob: L = |g|, not its running max": (
        None,
        lambda: gradtx.chain(gradtx.add_decayed_weights(0.0), _cocob_scale_without_running_max()),
        ("cocob", {}),
    ),
    "mechanize: no weight decay on the gradients": (
        None,
        lambda: gradtx.mechanize(gradtx.sgd(0.1, 0.9), weight_decay=0.0),
        ("mechanize", dict(base_optimizer=optax.sgd(0.1, 0.9))),
    ),
}


@functools.cache
def _optax_reference(name: str, kwargs: tuple):
    params, grads, values = inputs()
    values = values if name.startswith("momo") else None
    return run(getattr(optax.contrib, name)(**dict(kwargs)), params, grads, values, optax_apply)[0]


MOMO_MUTANTS = {
    "momo: tau = lr (no Polyak step)": ("momo", lambda f: lambda *a, **k: (a[0], f(*a, **k)[1])),
    "momo_adam: tau without bias correction": ("momo_adam", lambda f: lambda *a, bc1: f(*a, bc1=None)),
}


@pytest.mark.parametrize("mutant, make, reference", MUTANTS.values(), ids=MUTANTS.keys())
def test_wrong_formulas_fail_and_the_right_ones_pass(mutant, make, reference, monkeypatch):
    """Negative control: with the mutant in place, the params after 200 jitted float32
    steps differ from optax.contrib 0.2.8's run of the right formula beyond rtol 1e-5;
    without it (the control), they agree to rtol 1e-5."""
    params, grads, _ = inputs()
    want = _optax_reference(reference[0], tuple(reference[1].items()))
    assert_trees_close(run(_right(make, reference), params, grads)[0], want, 1e-5, "control")
    if mutant is not None:
        name, wrong = mutant
        monkeypatch.setattr(lr_free, name, wrong(getattr(lr_free, name)))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(run(make(), params, grads)[0], want, 1e-5, "mutant")


def _right(make, reference):
    """The right formula for a mutant's reference: gradtx's optimizer of the same name."""
    name, kwargs = reference
    if name == "mechanize":
        return gradtx.mechanize(gradtx.sgd(0.1, 0.9))
    return getattr(gradtx, name)(**kwargs)


@pytest.mark.parametrize("name, wrong", MOMO_MUTANTS.values(), ids=MOMO_MUTANTS.keys())
def test_momo_wrong_step_sizes_fail(name, wrong, monkeypatch):
    """Negative control for MoMo's step size (``lr_free._model_step``): against optax 0.2.8
    with the loss sequence, float32, 200 steps, rtol 1e-5: the right one passes
    (``test_momo_matches_optax_with_a_loss_sequence``), the mutant fails."""
    params, grads, values = inputs()
    want = _optax_reference(name, ())
    monkeypatch.setattr(lr_free, "_model_step", wrong(lr_free._model_step))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(run(getattr(gradtx, name)(), params, grads, values)[0], want, 1e-5, "mutant")


# --- abstract params, zero gradients, bad input ------------------------------------------------

ALL = {
    "prodigy": lambda: gradtx.prodigy(),
    "dadapt_adamw": lambda: gradtx.dadapt_adamw(),
    "dog": lambda: gradtx.dog(),
    "dog(learning_rate)": lambda: gradtx.dog(init_step=("learning_rate", 0.1)),
    "dowg": lambda: gradtx.dowg(),
    "cocob": lambda: gradtx.cocob(),
    "scale_by_cocob": lambda: gradtx.scale_by_cocob(),
    "mechanize": lambda: gradtx.mechanize(gradtx.adam(1e-2)),
    "momo": lambda: gradtx.momo(adapt_lower_bound=True),
    "momo_adam": lambda: gradtx.momo_adam(),
}


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_init_works_on_abstract_params(make):
    """Reference: ``init`` on the real params. ``jax.eval_shape(tx.init, params)`` with
    ``jax.ShapeDtypeStruct`` params gives the same record, shapes and dtypes (no value of
    the params is needed to know the state's structure)."""
    params = random_tree(0, small=True)
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    tx = make()
    got, want = jax.eval_shape(tx.init, abstract), tx.init(params)
    assert type(got) is type(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(got)] == [(x.shape, x.dtype) for x in jax.tree.leaves(want)]


OPTAX_NAN_ON_ZERO_GRADIENTS = {"prodigy", "dadapt_adamw"}


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw", "dog", "dowg", "cocob", "momo", "momo_adam"])
def test_zero_gradients_on_the_first_steps_give_no_nan(name):
    """Reference: finiteness, and the params unchanged by the zero steps. Three zero
    gradients, then 20 random ones: gradtx's params stay finite and the zero steps move
    nothing. optax 0.2.8's Prodigy and D-Adaptation divide 0 by ``||s||_1 = 0``: their ``d``
    and every later param are NaN (the authors' implementations skip such a step)."""
    params, grads, values = inputs(n_steps=23)
    zeros = jax.tree.map(jnp.zeros_like, params)
    grads = [zeros] * 3 + grads[3:]
    values = values if name.startswith("momo") else None
    after_zeros = run(getattr(gradtx, name)(), params, grads[:3], values)[0]
    assert_trees_close(after_zeros, params, 1e-7, "after the zero steps")
    ours = run(getattr(gradtx, name)(), params, grads, values)[0]
    theirs = run(getattr(optax.contrib, name)(), params, grads, values, optax_apply)[0]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(ours))
    optax_nan = any(np.any(np.isnan(x)) for x in jax.tree.leaves(theirs))
    assert optax_nan == (name in OPTAX_NAN_ON_ZERO_GRADIENTS)


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_update_without_params_names_the_call(make):
    """Reference: the message. These methods read the params; without them ``update``
    fails naming the call the user made."""
    tx = make()
    call = tx.stage.name
    with pytest.raises(UpdateError, match=rf"^gradtx\.{call}( > \w+)?: update\(\) needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=1.0)


@pytest.mark.parametrize("name", ["momo", "momo_adam"])
def test_momo_without_the_loss_names_the_call(name):
    """Reference: the message: MoMo's update needs ``value=loss``."""
    tx = getattr(gradtx, name)()
    with pytest.raises(UpdateError, match=rf"^gradtx\.{name}: update\(\) needs the loss"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))


def test_scalar_params_keep_their_shape():
    """Reference: the shapes. A tree of one scalar: every update is a scalar (optax's
    DoG and DoWG too; L-DoG's optax twin is not, see tests/test_utilities.py)."""
    params, g = jnp.asarray(1.5), jnp.asarray(0.25)
    for make in ALL.values():
        tx = make()
        updates, _ = tx.update(g, tx.init(params), params, value=1.0)
        assert updates.shape == () and updates.dtype == params.dtype
