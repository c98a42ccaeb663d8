"""The moment primitives of the recent first-order methods (ADOPT, AdEMAMix, MADGRAD, ACProp) and the cautious mask.

Each new formula of ``gradtx/optimizers/recent.py`` lives here, once:

- ``adopt_normalize``: ADOPT's normalization by the *previous* second moment, clipped;
- ``scheduled_ema``: an average whose decay may follow a schedule (AdEMAMix's slow EMA),
  and AdEMAMix's two schedulers, ``ademamix_alpha_schedule`` and ``ademamix_b3_schedule``;
- ``dual_averaging_point``: MADGRAD's dual-averaging iterate with its cube-root scale;
- ``move_towards``: the step that moves the params part of the way to a point (MADGRAD);
- ``asynchronous_belief``: ACProp's denominator, AdaBelief's moment one step late;
- ``keep_agreeing``: the cautious optimizers' mask and rescale (a helper, leaf by leaf).

The rest of these optimizers is made of the shared pieces (``scale_by_ema``,
``bias_correct``, ``second_moment``, ``belief_moment``, ``trace``, ``sqrt_eps``).
"""

from __future__ import annotations

from typing import Annotated, Callable

import jax
import jax.numpy as jnp

from gradtx import _tree
from gradtx.adaptive_moments import belief_moment
from gradtx.base import ScalarOrSchedule, Schedule, UpdateError
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, Interval, LearningRate, NonNegative, Positive
from gradtx.numerics import abs_sq, debias, ema, plus_eps, real_dtype, safe_increment
from gradtx.transform import Field, Transformation, declare, primitive

__all__ = [
    "ademamix_alpha_schedule",
    "ademamix_b3_schedule",
    "adopt_normalize",
    "asynchronous_belief",
    "dual_averaging_point",
    "move_towards",
    "scheduled_ema",
]

DecayOrSchedule = Annotated[ScalarOrSchedule, Interval(0.0, 1.0, schedule=True)]
"""An averaging factor in [0, 1], or a schedule ``step -> factor`` (AdEMAMix's ``b3``)."""
OpenDecay = Annotated[jax.typing.ArrayLike, Interval(0.0, 1.0, low_open=True, high_open=True)]
"""An averaging factor in (0, 1): one with a logarithm (AdEMAMix's b3 scheduler)."""


def quarter_root(count: jax.Array) -> jax.Array:
    """``t^(1/4)``: ADOPT's default clipping bound at step ``t`` (the steps taken before
    this one: 0 at the step that only initialises ``nu``, 1 at the first update)."""
    return count**0.25


def _clip(x: jax.Array, bound) -> jax.Array:
    """``clip(x, -bound, bound)``; for complex ``x`` the real and imaginary parts apart."""
    if jnp.iscomplexobj(x):
        return jax.lax.complex(jnp.clip(x.real, -bound, bound), jnp.clip(x.imag, -bound, bound))
    return jnp.clip(x, -bound, bound)


@declare
def adopt_normalize(
    b2: DecayBelowOne = 0.9999,
    eps: NonNegative = 1e-6,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = quarter_root,
) -> Transformation:
    """``u -> clip(u / max(sqrt(nu), eps), c(t)) ; nu = b2 * nu + (1 - b2) * |u|^2`` (at t = 0: ``u -> 0, nu = |u|^2``).

    ADOPT's normalization (Taniguchi et al. 2024, https://arxiv.org/abs/2411.02853,
    Algorithm 2): the gradient is divided by the root of the second moment of the
    *previous* steps, so that the two are independent, and clipped to ``c(t) =
    clip_value_fn(t)`` (``t^(1/4)`` by default, ``t`` the steps taken before this one;
    no clipping with ``use_clipping=False``). The first step only initialises
    ``nu = |g_0|^2`` and outputs 0: ADOPT does not move at its first step.

    Args:
      b2: the decay of the second moment, in [0, 1).
      eps: the floor of ``sqrt(nu)`` (``max``, not a sum, as in the paper).
      use_clipping: whether to clip the normalized gradient to ``c(t)``.
      clip_value_fn: ``t -> c(t)``.

    Reads the step count. State: ``nu`` (real-valued for complex updates).
    """

    def apply(updates, state, step):
        count = step.count
        later = count > 0
        decay = jnp.where(later, b2, 0)
        bound = clip_value_fn(count) if use_clipping else None

        def normalize(g, nu):
            x = g / jnp.maximum(jnp.sqrt(nu), eps).astype(nu.dtype)
            x = x if bound is None else _clip(x, bound)
            return jnp.where(later, x, jnp.zeros_like(x)).astype(g.dtype)

        out = jax.tree.map(normalize, updates, state["nu"])
        nu = jax.tree.map(lambda g, n: ema(abs_sq(g), n, decay).astype(n.dtype), updates, state["nu"])
        return out, {"nu": nu}

    return primitive(apply, {"nu": _tree.real_full_like}, uses_count=True)


@declare
def scheduled_ema(decay: DecayOrSchedule, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``mu = d * mu + (1 - d) * u ; u -> mu`` with ``d = decay(t)`` (no debiasing).

    ``scale_by_ema`` with a decay that may follow a schedule ``t -> decay`` (``t`` the
    steps taken before this one): AdEMAMix's slow average, whose ``b3`` warms up from
    ``b1`` (Pagliardini et al. 2024, https://arxiv.org/abs/2409.03137, eq. 3).

    Args:
      decay: the averaging factor in [0, 1], or a schedule of it.
      accumulator_dtype: dtype of ``mu`` in the state (the output keeps the input's dtype).

    Reads the step count when ``decay`` is a schedule. State: ``mu``.
    """
    scheduled = callable(decay)

    def apply(updates, state, step):
        d = decay(step.count) if callable(decay) else decay
        mu = jax.tree.map(lambda g, m: ema(g, m, d), updates, state["mu"])
        return _tree.cast_like(mu, updates), {"mu": _tree.cast(mu, accumulator_dtype)}

    return primitive(
        apply, {"mu": lambda params: _tree.zeros_like(params, dtype=accumulator_dtype)}, uses_count=scheduled
    )


def _paper_step(count: jax.Array) -> jax.Array:
    """The paper's step ``t = count + 1`` (from 1), in the run's float dtype (the ``+ 1`` in
    float: a count saturated at the int32 maximum does not wrap)."""
    return jnp.asarray(count, dtype=float) + 1


@declare
def ademamix_alpha_schedule(alpha: NonNegative, warmup: Positive) -> Schedule:
    """``t -> min(t * alpha / warmup, alpha)``, ``t = count + 1``: AdEMAMix's alpha scheduler.

    Pagliardini et al. 2024 (https://arxiv.org/abs/2409.03137, Algorithm 1's
    ``f_alpha``): the weight of the slow average grows linearly to ``alpha`` over
    ``warmup`` steps (the paper's ``T_alpha``, often the training length). A schedule of
    the steps taken before this one, as every gradtx and optax schedule, evaluated at the
    paper's step ``t`` (from 1): pass it as ``ademamix(alpha=...)``.

    >>> import gradtx
    >>> s = gradtx.ademamix_alpha_schedule(alpha=8.0, warmup=4)
    >>> [float(s(c)) for c in range(5)]
    [2.0, 4.0, 6.0, 8.0, 8.0]
    """

    def schedule(count):
        return jnp.minimum(_paper_step(count) * alpha / warmup, alpha)

    return schedule


@declare
def ademamix_b3_schedule(b1: OpenDecay, b3: OpenDecay, warmup: Positive) -> Schedule:
    """``t -> min(exp(ln(b1) ln(b3) / ((1 - t / warmup) ln(b3) + t / warmup ln(b1))), b3)``, ``t = count + 1``.

    AdEMAMix's b3 scheduler (Pagliardini et al. 2024, https://arxiv.org/abs/2409.03137,
    Algorithm 1's ``f_beta3``): the slow average's decay rises from ``b1`` to ``b3`` over
    ``warmup`` steps so that its half-life grows linearly. Evaluated at the paper's step
    ``t`` (from 1), like ``ademamix_alpha_schedule``: pass it as ``ademamix(b3=...)``.

    >>> import gradtx
    >>> s = gradtx.ademamix_b3_schedule(b1=0.9, b3=0.999, warmup=10)
    >>> [round(float(s(c)), 4) for c in (0, 4, 9, 100)]  # from near b1 (t = 1) to b3 (t = warmup)
    [0.9908, 0.998, 0.999, 0.999]
    """
    ln1, ln3 = jnp.log(b1), jnp.log(b3)

    def schedule(count):
        frac = _paper_step(count) / warmup
        return jnp.minimum(jnp.exp(ln1 * ln3 / ((1 - frac) * ln3 + frac * ln1)), b3)

    return schedule


@declare
def dual_averaging_point(learning_rate: LearningRate, eps: NonNegative = 1e-6) -> Transformation:
    """``l = (lr + eps) sqrt(t) ; G = G + l |u|^2 ; s = s + l u ; u -> x0 - s / (cbrt(G) + eps)``.

    MADGRAD's dual-averaging iterate ``z`` (Defazio & Jelassi 2021,
    https://arxiv.org/abs/2101.11075, Algorithm 1): the weighted sums of the gradients
    ``s`` and of their squares ``G``, with weights ``lambda_k = lr * sqrt(k + 1)``, and the
    point ``x0 - s / G^(1/3)``, ``x0`` the params at ``init``. ``t`` counts from 1;
    ``lr + eps`` is the authors' code's (facebookresearch/madgrad) and optax's guard
    against a zero learning rate. The output is a *point*, not a step: ``move_towards``
    turns it into one.

    Args:
      learning_rate: ``lr``, a number >= 0 or a schedule ``t -> lr`` (``t`` from 0).
      eps: added to the learning rate and to the cube root.

    Reads the step count. State: ``grad_sum_sq, s, x0`` (``grad_sum_sq`` real-valued in
    the params' dtype).
    """

    def apply(updates, state, step):
        count = step.count
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        lamb = (lr + eps) * jnp.sqrt(safe_increment(count))
        grad_sum_sq = jax.tree.map(lambda q, g: q + (lamb * abs_sq(g)).astype(q.dtype), state["grad_sum_sq"], updates)
        s = jax.tree.map(lambda s_, g: s_ + (lamb * g).astype(g.dtype), state["s"], updates)
        z = jax.tree.map(
            lambda x0, s_, q: x0 - s_ / plus_eps(jnp.cbrt(jnp.real(q)), eps).astype(s_.dtype),
            state["x0"],
            s,
            grad_sum_sq,
        )
        return _tree.cast_like(z, updates), {"grad_sum_sq": grad_sum_sq, "s": s, "x0": state["x0"]}

    fields = {
        "grad_sum_sq": _tree.zeros_like,
        "s": _tree.zeros_like,
        "x0": lambda params: jax.tree.map(jnp.asarray, params),
    }
    return primitive(apply, fields, uses_count=True)


@declare
def move_towards(momentum: Decay = 0.9) -> Transformation:
    """``u -> (1 - momentum) * u + momentum * p - p``: the step from the params ``p`` a
    fraction ``1 - momentum`` of the way to the point ``u``.

    MADGRAD's momentum (Defazio & Jelassi 2021, https://arxiv.org/abs/2101.11075,
    Algorithm 1, ``x_{k+1} = (1 - c) x_k + c z_{k+1}`` with ``c = 1 - momentum``), written in
    optax's order of operations so that both round alike. Needs the params.
    """

    def apply(updates, state, step):
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")
        return jax.tree.map(lambda z, p: (1 - momentum) * z + momentum * p - p, updates, step.params), {}

    return primitive(apply)


@declare
def asynchronous_belief(b2: DecayBelowOne = 0.999, eps_root: NonNegative = 1e-16) -> Transformation:
    """``u -> nu_prev / (1 - b2^(t-1))`` (1 at t = 1) ; ``nu = belief_moment(b2, eps_root)(u)``.

    ACProp's asynchronous denominator (Zhuang et al. 2021, https://arxiv.org/abs/2110.05454,
    Algorithm 2): AdaBelief's moment of the prediction error, but the step at ``t`` is
    divided by the moment of the steps *before* it, bias-corrected for ``t - 1`` steps;
    the first step, with no moment yet, by 1. The moment itself is updated by
    ``belief_moment`` (its formula's one home).

    Reads the step count. State: ``nu`` (real-valued for complex updates).
    """
    moment = belief_moment(b2, eps_root).stage

    def apply(updates, state, step):
        _, new = moment.apply(updates, {"nu": state["nu"]}, step)
        initial = step.count == 0
        t = jnp.where(initial, step.count + 1, step.count)
        nu_hat = jax.tree.map(lambda x: jnp.where(initial, 1, x), debias(state["nu"], b2, t))
        return nu_hat, {"nu": new["nu"]}

    return primitive(apply, {"nu": Field(_tree.real_full_like)}, uses_count=True)


def keep_agreeing(direction: jax.Array, grad: jax.Array) -> jax.Array:
    """``phi = (direction * grad > 0) ; direction -> direction * phi * n / (sum(phi) + 1)``, ``n`` the leaf's size.

    The cautious optimizers' rule (Liang et al. 2024, https://arxiv.org/abs/2411.16085,
    Algorithm 1 and the authors' code): keep the components of a descent *direction*
    (the params move by ``-lr * direction``) whose sign agrees with the gradient's, zero
    the others, and rescale the leaf by its size over the number kept plus one. For
    complex leaves, agreement is ``Re(conj(direction) * grad) > 0``.
    """
    agree = jnp.real(jnp.conj(direction) * grad) > 0 if jnp.iscomplexobj(direction) else direction * grad > 0
    phi = agree.astype(real_dtype(direction.dtype))
    return direction * (phi * (phi.size / (jnp.sum(phi) + 1)))
