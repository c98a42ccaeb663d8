"""ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp and the cautious wrapper: what the
registry's parity grids (optax.contrib 0.2.8) do not say.

- the papers' algorithms in numpy float64 (rtol 1e-10, 50 steps): ADOPT's Algorithm 2,
  AdEMAMix's Algorithm 1 with its alpha and b3 schedulers, simplified AdEMAMix, MADGRAD's
  Algorithm 1 (the authors' code), ACProp's Algorithm 2, where optax.contrib departs
  from the paper (ACProp's prediction error) and where it does not;
- the cautious wrapper against the paper's rule in numpy float64 (adamw, sgd with
  momentum, the paper's C-AdamW) and against pytorch_optimizer 4.1.0's ``cautious=True``
  (Lion, ADOPT) in float64;
- negative controls: a wrong formula per new primitive fails the float32 rtol 1e-5
  comparison with the right result, which passes it;
- edge cases: ADOPT's first step, zero gradients, abstract init, missing params.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from conftest import assert_trees_close, random_grads, random_tree, run_optax, run_steps
from pytorch_optimizer import ADOPT, AdEMAMix, Lion

import gradtx
from gradtx.recent_moments import keep_agreeing
from gradtx.rows.recent import alpha_warmup, b3_warmup

N_STEPS = 50
RTOL64, RTOL32 = 1e-10, 1e-5


@pytest.fixture
def x64():
    """float64 for this test only (``jax.enable_x64(True)`` around its body)."""
    with jax.enable_x64(True):
        yield
    assert not jax.config.jax_enable_x64, "float64 leaked out of the test"


def inputs(dtype) -> tuple[Any, list[Any]]:
    """The small seeded tree (a matrix, a vector, a scalar) and 50 gradient trees."""
    return random_tree(0, dtype, small=True), random_grads(1, N_STEPS, dtype, small=True)


def leafwise(reference: Callable[[np.ndarray, list[np.ndarray]], np.ndarray], params, grads) -> Any:
    """The params after ``reference(p0, [g_1, ..., g_T])`` leaf by leaf, in float64."""
    leaves = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    per_step = [[np.asarray(g, np.float64) for g in jax.tree.leaves(gs)] for gs in grads]
    out = [reference(p, [step[i] for step in per_step]) for i, p in enumerate(leaves)]
    return jax.tree.unflatten(jax.tree.structure(params), out)


# --- the papers' algorithms, leaf by leaf, numpy float64 -----------------------------------


def adopt_reference(lr, b1=0.9, b2=0.9999, eps=1e-6, clip: Callable[[int], float] | None = lambda t: t**0.25):
    """ADOPT, Algorithm 2 of arXiv:2411.02853: v_0 = g_0^2, then for t >= 1
    m = b1 m + (1 - b1) clip(g / max(sqrt(v_prev), eps), c_t); p -= lr m; v = b2 v + (1 - b2) g^2."""

    def run(p, gs):
        m, v = np.zeros_like(p), gs[0] ** 2
        for t, g in enumerate(gs[1:], start=1):
            x = g / np.maximum(np.sqrt(v), eps)
            if clip is not None:
                x = np.clip(x, -clip(t), clip(t))
            m = b1 * m + (1 - b1) * x
            p = p - lr * m
            v = b2 * v + (1 - b2) * g**2
        return p

    return run


def np_alpha(k):
    return min(k * 4.0 / 50, 4.0)


def np_b3(k):
    """The paper's b3 scheduler from 0.9 to 0.99 over 50 steps (``rows.recent.b3_warmup``)."""
    f = min(k / 50, 1.0)
    ln1, ln3 = math.log(0.9), math.log(0.99)
    return min(math.exp(ln1 * ln3 / ((1 - f) * ln3 + f * ln1)), 0.99)


def ademamix_reference(lr, b1, b2, b3: Callable[[int], float], alpha: Callable[[int], float], eps, wd):
    """AdEMAMix, Algorithm 1 of arXiv:2409.03137, the schedules read at the steps taken before."""

    def run(p, gs):
        m1, m2, nu = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(gs, start=1):
            m1 = b1 * m1 + (1 - b1) * g
            m2 = b3(t - 1) * m2 + (1 - b3(t - 1)) * g
            nu = b2 * nu + (1 - b2) * g**2
            m1_hat, nu_hat = m1 / (1 - b1**t), nu / (1 - b2**t)
            p = p - lr * ((m1_hat + alpha(t - 1) * m2) / (np.sqrt(nu_hat) + eps) + wd * p)
        return p

    return run


def simplified_ademamix_reference(lr, b1, b2, alpha, eps, wd):
    """Simplified AdEMAMix (arXiv:2502.02431): m = b1 m + g; n = EMA(g^2);
    p -= lr ((m + alpha g) / (sqrt(n / (1 - b2^t)) + eps) + wd p)."""

    def run(p, gs):
        m, n = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(gs, start=1):
            m = b1 * m + g
            n = b2 * n + (1 - b2) * g**2
            p = p - lr * ((m + alpha * g) / (np.sqrt(n / (1 - b2**t)) + eps) + wd * p)
        return p

    return run


def madgrad_reference(lr, momentum=0.9, wd=0.0, eps=1e-6):
    """MADGRAD, Algorithm 1 of arXiv:2101.11075 as the authors' code (lr + eps, L2 decay)."""

    def run(p, gs):
        x0, s, big_g = p, np.zeros_like(p), np.zeros_like(p)
        for k, g in enumerate(gs):
            g = g + wd * p
            lamb = (lr + eps) * math.sqrt(k + 1)
            s, big_g = s + lamb * g, big_g + lamb * g**2
            z = x0 - s / (np.cbrt(big_g) + eps)
            p = momentum * p + (1 - momentum) * z
        return p

    return run


def acprop_reference(lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, optax_error: bool = False):
    """ACProp, Algorithm 2 of arXiv:2110.05454 (the authors' code, ``momentum_update=False``):
    p -= lr g / (sqrt(s_{t-1} / (1 - b2^(t-1))) + eps), p -= lr g / (1 + eps) at t = 1
    (optax's; the authors' code divides by 1), and s = b2 s + (1 - b2) (g - m_t)^2 + eps_root.
    ``optax_error``: optax's g - m_{t-1}."""

    def run(p, gs):
        m, s = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(gs, start=1):
            m_prev, m = m, b1 * m + (1 - b1) * g
            den = (1.0 if t == 1 else np.sqrt(s / (1 - b2 ** (t - 1)))) + eps
            p = p - lr * g / den
            s = b2 * s + (1 - b2) * (g - (m_prev if optax_error else m)) ** 2 + eps_root
        return p

    return run


def cautious_reference(direction: Callable[[np.ndarray, np.ndarray, int, dict], np.ndarray], lr, decay_outside=0.0):
    """The cautious rule (Algorithm 1 of arXiv:2411.16085) on an optimizer's descent
    direction ``d`` (p -= lr d): keep where d g > 0, rescale by n / (kept + 1);
    ``decay_outside``: C-AdamW's decoupled decay, not masked (Algorithm 2)."""

    def run(p, gs):
        memory: dict = {}
        for t, g in enumerate(gs, start=1):
            d = direction(g, p, t, memory)
            phi = (d * g > 0).astype(np.float64)
            p = p - lr * (d * phi * (phi.size / (phi.sum() + 1)) + decay_outside * p)
        return p

    return run


def adamw_direction(b1, b2, eps, wd):
    def direction(g, p, t, mem):
        mem["m"] = b1 * mem.get("m", 0.0) + (1 - b1) * g
        mem["v"] = b2 * mem.get("v", 0.0) + (1 - b2) * g**2
        return (mem["m"] / (1 - b1**t)) / (np.sqrt(mem["v"] / (1 - b2**t)) + eps) + wd * p

    return direction


def momentum_direction(mu):
    def direction(g, p, t, mem):
        mem["v"] = g + mu * mem.get("v", 0.0)
        return mem["v"]

    return direction


def c_adamw(lr, b1, b2, eps, wd) -> gradtx.GradientTransformation:
    """The paper's C-AdamW: the mask on Adam's direction only, then the decay (``gradtx.cautious``'s docstring)."""
    return gradtx.chain(
        gradtx.fork(gradtx.identity(), gradtx.adam_direction(b1, b2, eps), join=lambda g, d: keep_agreeing(d, g)),
        gradtx.add_decayed_weights(wd),
        gradtx.scale_by_learning_rate(lr),
    )


class Paper(NamedTuple):
    id: str
    gradtx: Callable[[], Any]
    reference: Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
    rtol: float = RTOL64


# MADGRAD's weight sqrt(k + 1) is computed in float32 even in float64 runs, as optax does
# (``jnp.sqrt`` of the int32 count; gradtx keeps optax's expression for float64 parity at
# 1e-10): a relative rounding of 6e-8 in lambda, 2e-8 in the params after 50 steps.
MADGRAD_RTOL = 1e-7


PAPERS = [
    Paper("adopt", lambda: gradtx.adopt(1e-2), adopt_reference(1e-2)),
    Paper(
        "adopt(moved,no clipping)",
        lambda: gradtx.adopt(1e-2, 0.8, 0.95, 0.1, use_clipping=False),
        adopt_reference(1e-2, 0.8, 0.95, 0.1, clip=None),
    ),
    Paper(
        "ademamix(paper's schedulers)",
        lambda: gradtx.ademamix(1e-2, 0.8, 0.95, b3_warmup, alpha_warmup, 1e-3, weight_decay=0.1),
        ademamix_reference(1e-2, 0.8, 0.95, np_b3, np_alpha, 1e-3, 0.1),
    ),
    Paper(
        "simplified_ademamix",
        lambda: gradtx.simplified_ademamix(1e-3, 0.8, 0.9, 2.0, 1e-3, weight_decay=0.1),
        simplified_ademamix_reference(1e-3, 0.8, 0.9, 2.0, 1e-3, 0.1),
    ),
    Paper("madgrad", lambda: gradtx.madgrad(1e-2), madgrad_reference(1e-2), MADGRAD_RTOL),
    Paper(
        "madgrad(moved)",
        lambda: gradtx.madgrad(1e-2, 0.8, 0.1, 1e-3),
        madgrad_reference(1e-2, 0.8, 0.1, 1e-3),
        MADGRAD_RTOL,
    ),
    Paper("acprop", lambda: gradtx.acprop(1e-2), acprop_reference(1e-2)),
    Paper(
        "acprop(moved)",
        lambda: gradtx.acprop(1e-2, 0.8, 0.95, 1e-3, 1e-4),
        acprop_reference(1e-2, 0.8, 0.95, 1e-3, 1e-4),
    ),
    Paper(
        "cautious(adamw)",
        lambda: gradtx.cautious(gradtx.adamw(1e-2, 0.8, 0.95, 1e-3, weight_decay=0.1)),
        cautious_reference(adamw_direction(0.8, 0.95, 1e-3, 0.1), 1e-2),
    ),
    Paper(
        "cautious(sgd momentum)",
        lambda: gradtx.cautious(gradtx.sgd(1e-2, momentum=0.9)),
        cautious_reference(momentum_direction(0.9), 1e-2),
    ),
    Paper(
        "C-AdamW (decay outside the mask)",
        lambda: c_adamw(1e-2, 0.8, 0.95, 1e-3, 0.1),
        cautious_reference(adamw_direction(0.8, 0.95, 1e-3, 0.0), 1e-2, decay_outside=0.1),
    ),
]


@pytest.mark.parametrize("case", PAPERS, ids=lambda c: c.id)
def test_matches_the_papers_algorithm(case, x64):
    """Reference: the paper's algorithm in numpy float64 (``PAPERS``), 50 steps, jitted
    float64: the params agree to rtol 1e-10 (MADGRAD: 1e-7, see ``MADGRAD_RTOL``)."""
    params, grads = inputs(jnp.float64)
    got = run_steps(case.gradtx(), params, grads, jit=True)
    assert_trees_close(got.params, leafwise(case.reference, params, grads), case.rtol)


def test_optax_acprop_departs_from_the_paper(x64):
    """optax.contrib.acprop 0.2.8 takes the prediction error against m_{t-1}: its params are
    the numpy float64 rule with that error (rtol 1e-10) and miss the paper's by more than
    rtol 1e-3, where gradtx.acprop matches the paper (``test_matches_the_papers_algorithm``)."""
    params, grads = inputs(jnp.float64)
    theirs = run_optax(optax.contrib.acprop(1e-2), params, grads, jit=True).params
    assert_trees_close(theirs, leafwise(acprop_reference(1e-2, optax_error=True), params, grads), RTOL64)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(theirs, leafwise(acprop_reference(1e-2), params, grads), 1e-3)


# --- against pytorch_optimizer 4.1.0: AdEMAMix's schedulers, cautious -------------------------


def torch_trajectory(make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], params, grads) -> Any:
    """The params after ``make_optimizer``'s steps over ``grads``, in float64."""
    tensors = [torch.tensor(np.asarray(p, np.float64), requires_grad=True) for p in jax.tree.leaves(params)]
    opt = make_optimizer(tensors)
    for step in grads:
        for t, g in zip(tensors, jax.tree.leaves(step)):
            t.grad = torch.tensor(np.asarray(g, np.float64))
        opt.step()
    return jax.tree.unflatten(jax.tree.structure(params), [t.detach().numpy() for t in tensors])


TORCH = [
    (
        "AdEMAMix(t_alpha_beta3)",
        lambda: gradtx.ademamix(
            1e-2,
            0.8,
            0.95,
            b3=gradtx.ademamix_b3_schedule(0.8, 0.99, 30),
            alpha=gradtx.ademamix_alpha_schedule(4.0, 30),
            eps=1e-3,
        ),
        lambda ps: AdEMAMix(ps, lr=1e-2, betas=(0.8, 0.95, 0.99), alpha=4.0, t_alpha_beta3=30, eps=1e-3, foreach=False),
    ),
    (
        "cautious Lion",
        lambda: gradtx.cautious(gradtx.lion(1e-2, 0.8, 0.95, weight_decay=0.0)),
        lambda ps: Lion(ps, lr=1e-2, betas=(0.8, 0.95), cautious=True, foreach=False),
    ),
    # pytorch_optimizer's ADOPT clips at (t + 1)^(1/4) (the authors' code), optax and the paper at t^(1/4)
    (
        "cautious ADOPT",
        lambda: gradtx.cautious(gradtx.adopt(1e-2, 0.8, 0.95, 0.1, clip_value_fn=lambda t: (t + 1) ** 0.25)),
        lambda ps: ADOPT(ps, lr=1e-2, betas=(0.8, 0.95), eps=0.1, cautious=True, foreach=False),
    ),
]


@pytest.mark.parametrize("name, ours, theirs", TORCH, ids=[t[0] for t in TORCH])
def test_matches_pytorch_optimizer(name, ours, theirs, x64):
    """Reference: pytorch_optimizer 4.1.0, float64, 50 steps, rtol 1e-10: its AdEMAMix with
    the paper's schedulers (``t_alpha_beta3``), and its ``cautious=True`` (``apply_cautious``:
    mask ``update * grad > 0``, rescale ``numel / (sum + 1)``) on Lion and ADOPT."""
    params, grads = inputs(jnp.float64)
    got = run_steps(ours(), params, grads, jit=True)
    assert_trees_close(got.params, torch_trajectory(theirs, params, grads), RTOL64)


def test_cautious_edge_cases():
    """Closed forms: zero gradients keep nothing (update 0, no NaN); a scalar that agrees is
    halved (n / (kept + 1) = 1 / 2); the state is ``CautiousState(inner_state)``, whole,
    and ``init`` works on abstract shapes; an optax optimizer can be wrapped."""
    params = {"w": jnp.ones((2, 2)), "s": jnp.asarray(1.0)}
    tx = gradtx.cautious(gradtx.sgd(1.0, momentum=0.5))
    state = tx.init(params)
    assert type(state).__name__ == "CautiousState" and state._fields == ("inner_state",)
    assert jax.eval_shape(tx.init, params).inner_state.trace["w"].shape == (2, 2)
    zeros, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(zeros))
    updates, new = tx.update({"w": jnp.asarray([[1.0, -1.0], [0.0, 2.0]]), "s": jnp.asarray(3.0)}, state, params)
    np.testing.assert_array_equal(np.asarray(updates["s"]), -1.5)  # -lr * g * 1 / (1 + 1)
    np.testing.assert_array_equal(np.asarray(updates["w"]), [[-1.0, 1.0], [0.0, -2.0]])  # 3 kept of 4: 4 / 4
    np.testing.assert_array_equal(np.asarray(new.inner_state.trace["s"]), 3.0)  # the inner state is unmasked
    wrapped = gradtx.cautious(optax.adam(0.1))
    out, _ = wrapped.update(params, wrapped.init(params), params)
    np.testing.assert_allclose(np.asarray(out["s"]), -0.05, rtol=1e-5)  # Adam's first step, halved


# --- negative controls: wrong formulas fail float32's rtol 1e-5 ------------------------------


def _adopt_current_nu():
    """ADOPT normalised by the *updated* second moment (Adam's order; a mutant)."""
    return gradtx.chain(
        gradtx.fork(
            gradtx.identity(), gradtx.chain(gradtx.second_moment(0.95), gradtx.sqrt_eps(0.1)), join=jnp.divide
        ),
        gradtx.clip(1.0),
        gradtx.scale_by_ema(0.8),
        gradtx.scale_by_learning_rate(1e-2),
    )


def _adopt_eps_added(b2=0.95, eps=0.1):
    """``adopt_normalize`` with ``eps`` added to ``sqrt(nu)`` instead of flooring it (a mutant)."""

    def apply(updates, state, step):
        decay, bound = jnp.where(step.count > 0, b2, 0.0), step.count**0.25
        out = jax.tree.map(lambda g, n: jnp.clip(g / (jnp.sqrt(n) + eps), -bound, bound), updates, state["nu"])
        nu = jax.tree.map(lambda g, n: (1 - decay) * g**2 + decay * n, updates, state["nu"])
        return out, {"nu": nu}

    normalize = gradtx.primitive(apply, {"nu": lambda p: jax.tree.map(jnp.zeros_like, p)}, uses_count=True)
    return gradtx.chain(normalize, gradtx.scale_by_ema(0.8), gradtx.scale_by_learning_rate(1e-2))


def _with_initial(tx, **fields):
    """``tx`` whose ``init`` sets ``fields`` (``fn(params)`` each): a mutant's state."""

    def init(params):
        return tx.init(params)._replace(**{name: fn(params) for name, fn in fields.items()})

    return gradtx.GradientTransformation(init, tx.update)


def _acprop_synchronous():
    """ACProp with the denominator of this step, not the previous one (AdaBelief with g on top; a mutant)."""
    error = gradtx.fork(gradtx.identity(), gradtx.scale_by_ema(1.0), join=jnp.subtract)
    den = gradtx.chain(error, gradtx.belief_moment(0.95, 1e-4), gradtx.bias_correct(0.95), gradtx.sqrt_eps(1e-3))
    return gradtx.chain(gradtx.fork(gradtx.identity(), den, join=jnp.divide), gradtx.scale_by_learning_rate(1e-2))


def _masked_with_wrong_sign(inner):
    """The cautious mask with the sign of gradtx's updates taken as the descent direction (a mutant)."""
    return gradtx.chain(gradtx.fork(gradtx.identity(), inner, join=lambda g, u: keep_agreeing(u, g)))


def _masked_without_rescale(inner):
    """The cautious mask without the n / (kept + 1) rescale (a mutant)."""
    return gradtx.chain(gradtx.fork(gradtx.identity(), inner, join=lambda g, u: u * (u * g < 0)))


ADOPT_MOVED = dict(b1=0.8, b2=0.95, eps=0.1)
AD_MIX = dict(b1=0.8, b2=0.95, eps=1e-3)


def _ademamix(b3, alpha):
    return gradtx.ademamix(1e-2, b3=b3, alpha=alpha, **AD_MIX)


def _madgrad(**changed):
    return gradtx.madgrad(**{**dict(learning_rate=1e-2, momentum=0.8, weight_decay=0.0, eps=1e-3), **changed})


def _cautious_adamw():
    return gradtx.cautious(gradtx.adamw(1e-2, 0.8, 0.95, 1e-3, weight_decay=0.1))


_ADAMW = lambda: gradtx.adamw(1e-2, 0.8, 0.95, 1e-3, weight_decay=0.1)  # noqa: E731


class Mutant(NamedTuple):
    what: str
    wrong: Callable[[], Any]
    right: Callable[[], Any]
    reference: Callable[[Any, list[Any]], Any]  # (params, grads) -> the right params (float32 inputs)


def _optax(make):
    return lambda params, grads: run_optax(make(), params, grads, jit=True).params


def _paper(reference):
    return lambda params, grads: leafwise(reference, params, grads)


_ADOPT_OPTAX = _optax(lambda: optax.contrib.adopt(1e-2, **ADOPT_MOVED))
_ADEMAMIX_OPTAX = _optax(lambda: optax.contrib.ademamix(1e-2, b3=b3_warmup, alpha=alpha_warmup, **AD_MIX))
_MADGRAD_OPTAX = _optax(lambda: optax.contrib.madgrad(1e-2, 0.8, 0.0, 1e-3))
_ACPROP_OPTAX = _optax(lambda: optax.contrib.acprop(1e-2, 1.0, 0.95, 1e-3, 1e-4))
_CAUTIOUS_PAPER = _paper(cautious_reference(adamw_direction(0.8, 0.95, 1e-3, 0.1), 1e-2))

MUTANTS = [
    # adopt_normalize
    Mutant("adopt: the current second moment", _adopt_current_nu, lambda: gradtx.adopt(1e-2, **ADOPT_MOVED),
           _ADOPT_OPTAX),
    Mutant("adopt: eps added, not a floor", _adopt_eps_added, lambda: gradtx.adopt(1e-2, **ADOPT_MOVED), _ADOPT_OPTAX),
    # scheduled_ema
    Mutant("ademamix: b3 fixed at its end value", lambda: _ademamix(0.99, alpha_warmup),
           lambda: _ademamix(b3_warmup, alpha_warmup), _ADEMAMIX_OPTAX),
    Mutant("ademamix: alpha fixed at its end value", lambda: _ademamix(b3_warmup, 4.0),
           lambda: _ademamix(b3_warmup, alpha_warmup), _ADEMAMIX_OPTAX),
    # dual_averaging_point
    Mutant("madgrad: x0 = 0, not the initial params",
           lambda: _with_initial(_madgrad(), x0=lambda p: jax.tree.map(jnp.zeros_like, p)), _madgrad, _MADGRAD_OPTAX),
    Mutant("madgrad: no lr guard (lr, not lr + eps)", lambda: _madgrad(eps=0.0), _madgrad, _MADGRAD_OPTAX),
    # move_towards
    Mutant("madgrad: momentum and 1 - momentum swapped", lambda: _madgrad(momentum=0.2), _madgrad, _MADGRAD_OPTAX),
    # asynchronous_belief
    Mutant("acprop: synchronous denominator", _acprop_synchronous, lambda: gradtx.acprop(1e-2, 1.0, 0.95, 1e-3, 1e-4),
           _ACPROP_OPTAX),
    # keep_agreeing
    Mutant("cautious: the mask's sign flipped", lambda: _masked_with_wrong_sign(_ADAMW()), _cautious_adamw,
           _CAUTIOUS_PAPER),
    Mutant("cautious: no rescale", lambda: _masked_without_rescale(_ADAMW()), _cautious_adamw, _CAUTIOUS_PAPER),
]


@pytest.fixture(scope="module")
def inputs32():
    return inputs(jnp.float32)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.what)
def test_wrong_formula_fails_and_right_passes(mutant, inputs32):
    """Negative control, float32, 50 jitted steps: the right formula's params agree with
    the reference (optax.contrib 0.2.8 where it follows the paper, else the paper's rule
    in numpy float64) to rtol 1e-5, the wrong formula's do not."""
    params, grads = inputs32
    want = mutant.reference(params, grads)
    assert_trees_close(run_steps(mutant.right(), params, grads, jit=True).params, want, RTOL32)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_trees_close(run_steps(mutant.wrong(), params, grads, jit=True).params, want, RTOL32, what=mutant.what)


# --- edge cases -------------------------------------------------------------------------------

OPTIMIZERS = {
    "adopt": lambda: gradtx.adopt(1e-2),
    "adopt(nesterov,no clipping)": lambda: gradtx.adopt(1e-2, nesterov=True, use_clipping=False),
    "ademamix": lambda: gradtx.ademamix(1e-2, b3=b3_warmup, alpha=alpha_warmup),
    "simplified_ademamix": lambda: gradtx.simplified_ademamix(1e-3, alpha=1.0),
    "madgrad": lambda: gradtx.madgrad(1e-2),
    "acprop": lambda: gradtx.acprop(1e-2),
    "cautious(adam)": lambda: gradtx.cautious(gradtx.adam(1e-2)),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_zero_gradients_leave_the_params(make):
    """Closed form: 3 steps of zero gradients give zero updates (finite: no 0 / 0), and
    ``init`` works on abstract shapes (``jax.eval_shape``) with the concrete record's fields."""
    params = random_tree(0, small=True)
    tx = make()
    assert jax.eval_shape(tx.init, params)._fields == tx.init(params)._fields
    got = run_steps(tx, params, [jax.tree.map(jnp.zeros_like, params)] * 3, jit=True)
    for u in jax.tree.leaves(got.updates):
        np.testing.assert_array_equal(np.asarray(u), 0.0)


@pytest.mark.parametrize("clipping", [True, False], ids=["clipping", "no_clipping"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_adopt_first_step_only_initialises_nu(clipping, nesterov):
    """Closed form (Algorithm 2's v_0 = g_0^2): the first update is exactly 0 and nu = g^2,
    mu = 0; the second is -lr * (1 - b1) * clip(g_1 / |g_0|, 1) (plain) element-wise."""
    tx = gradtx.adopt(0.1, nesterov=nesterov, use_clipping=clipping)
    g0, g1 = jnp.asarray([2.0, -1.0, 0.0]), jnp.asarray([4.0, -0.5, 1.0])
    u, state = tx.update(g0, tx.init(jnp.zeros(3)))
    np.testing.assert_array_equal(np.asarray(u), 0.0)
    np.testing.assert_array_equal(np.asarray(state.nu), [4.0, 1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(state.mu), 0.0)
    u, _ = tx.update(g1, state)
    x = np.asarray([4.0 / 2.0, -0.5, 1.0 / 1e-6])
    x = np.clip(x, -1.0, 1.0) if clipping else x
    factor = (1 - 0.9) * (1 + 0.9) if nesterov else 1 - 0.9  # b1 m + (1 - b1) x with m = (1 - b1) x
    np.testing.assert_allclose(np.asarray(u), -0.1 * factor * x, rtol=1e-6)


def test_scheduled_ema_at_a_fixed_decay_is_scale_by_ema():
    """Reference: ``scale_by_ema(0.8)``, bitwise, 5 jitted steps (float32)."""
    params, grads = random_tree(0, small=True), random_grads(1, 5, small=True)
    got = run_steps(gradtx.scheduled_ema(0.8), params, grads, jit=True)
    want = run_steps(gradtx.scale_by_ema(0.8), params, grads, jit=True)
    for a, b in zip(jax.tree.leaves(got.updates) + jax.tree.leaves(got.state.mu), jax.tree.leaves(want.updates)
                    + jax.tree.leaves(want.state.mu)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ademamix_mu_dtype_sets_the_first_moments():
    """Reference: the dtypes asked for. ``mu_dtype=bfloat16`` stores m1 and m2 in bfloat16
    (nu keeps the params' float32; optax 0.2.8 stores nu in bfloat16 too), updates stay float32."""
    params, grads = random_tree(0, small=True), random_grads(1, 3, small=True)
    got = run_steps(gradtx.ademamix(1e-2, mu_dtype=jnp.bfloat16), params, grads, jit=True)
    assert {x.dtype for x in jax.tree.leaves(got.state.m1) + jax.tree.leaves(got.state.m2)} == {jnp.dtype("bfloat16")}
    assert {x.dtype for x in jax.tree.leaves(got.state.nu) + jax.tree.leaves(got.updates)} == {jnp.dtype("float32")}


def test_madgrad_without_params_names_the_call_and_stage():
    """Reference: the message. MADGRAD moves towards its point from the params: without
    them, the error names the call and the stage."""
    tx = gradtx.madgrad(1e-2)
    params = jnp.zeros(2)
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx\.madgrad > scale_by_madgrad: update\(\) needs params"):
        tx.update(jnp.ones(2), tx.init(params))
