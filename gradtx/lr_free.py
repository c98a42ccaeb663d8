"""Learning-rate-free methods' formulas: the distance-over-gradients estimates (one home
for DoG, DoWG, Prodigy, D-Adaptation and L-DoG), COCOB, Mechanic and MoMo.

The distance-over-gradients estimates, each written once here:

    r = max(r, ||x - x_0||)               max_distance (DoG, L-DoG; squared: DoWG)
    G = G + w * ||g||^2                   add_sq_norm (DoG: w = 1; DoWG: w = r^2)
    s = decay * s + w * g                 decayed_sum (Prodigy, D-Adaptation: the weighted gradients,
                                          and their weighted inner products, the numerator)
    d = max(d, coef * n / (c * ||s||_1))  raise_estimate (Prodigy, D-Adaptation; d kept where s = 0)

The stages below are the coupled parts of each method (the estimate of the step size is
read by the step that follows it); the optimizers in ``gradtx/optimizers/lr_free.py``
chain them with the shared primitives (weight decay, learning rate, sign).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx import _tree
from gradtx.base import GradientTransformation, UpdateError
from gradtx.hyperparams import Positive
from gradtx.numerics import abs_sq, ema, in_range_safe_dtype, plus_eps, real_dtype, safe_increment, tree_vdot
from gradtx.transform import Field, Transformation, declare, primitive, update_inner

__all__ = ["scale_by_cocob"]

# --- hyperparameter constraints of this family (checked by ``declare``) -------------------


def _fail(call: str, name: str, value: Any, rule: str, error: type = ValueError):
    raise error(f"gradtx.{call}({name}={value!r}): {name} must be {rule}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class DecayPair:
    """A pair ``(b1, b2)`` of averaging factors, each in [0, 1) (Adam's ``betas``)."""

    def check(self, call: str, name: str, value: Any) -> None:
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            _fail(call, name, value, "a pair (b1, b2)", TypeError)
        if any(isinstance(b, jax.core.Tracer) for b in value):
            return
        if not all(_is_number(b) or hasattr(b, "dtype") for b in value):
            _fail(call, name, value, "a pair of numbers", TypeError)
        if not all(0.0 <= float(b) < 1.0 for b in value):  # NaN fails
            _fail(call, name, value, "a pair of numbers in [0, 1)")


@dataclasses.dataclass(frozen=True)
class DogInitStep:
    """DoG's ``(tag, value)``: tag one of distance, learning_rate, heuristic; value > 0."""

    tags = ("distance", "learning_rate", "heuristic")

    def check(self, call: str, name: str, value: Any) -> None:
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and value[0] in self.tags):
            _fail(call, name, value, "a pair (tag, value) with tag one of 'distance', 'learning_rate', 'heuristic'")
        if isinstance(value[1], jax.core.Tracer):
            return
        if not (_is_number(value[1]) or hasattr(value[1], "dtype")) or not float(value[1]) > 0:
            _fail(call, name, value, "a pair (tag, value) with value > 0")


# --- the one home of the distance-over-gradients estimates --------------------------------


def sq_norm(tree: Any) -> jax.Array:
    """``||x||^2 = sum_leaves sum |x|^2``, the leaf sums added from 0 in leaf order (optax's
    ``tree.norm(squared=True)``, so that both round alike)."""
    return sum((jnp.sum(abs_sq(x)) for x in jax.tree.leaves(tree)), start=jnp.zeros([]))


def max_distance(r: jax.Array, params: Any, init_params: Any, *, squared: bool = False) -> jax.Array:
    """``r = max(r, ||x - x_0||)`` (``max(r, ||x - x_0||^2)`` with ``squared``), in ``r``'s dtype:
    the running maximum distance from the initial point (DoG, L-DoG, DoWG)."""
    dist_sq = sq_norm(jax.tree.map(jnp.subtract, init_params, params))
    return jnp.maximum(r, (dist_sq if squared else jnp.sqrt(dist_sq)).astype(r.dtype))


def add_sq_norm(total: jax.Array, g: Any, weight: Any = 1.0) -> jax.Array:
    """``G = G + w * ||g||^2``, in ``G``'s dtype: the accumulated (weighted) squared gradient
    norms (DoG: ``w = 1``; DoWG: ``w = r^2``)."""
    return (weight * sq_norm(g) + total).astype(total.dtype)


def decayed_sum(s: Any, g: Any, decay: Any, weight: Any, divisor: Any = 1.0) -> Any:
    """``s = decay * s + w * g / c`` leaf by leaf, in ``s``'s dtypes: the weighted sum of the
    gradients and of their inner products (Prodigy, D-Adaptation)."""
    return jax.tree.map(lambda s_, g_: (decay * s_ + weight * g_ / divisor).astype(s_.dtype), s, g)


def raise_estimate(d: jax.Array, numerator: jax.Array, grad_sum: Any, coef: Any = 1.0, scale: Any = 1.0) -> jax.Array:
    """``d = max(d, coef * n / (scale * ||s||_1))``, ``d`` kept where ``||s||_1 = 0``: the lower
    bound on the distance to the solution (Prodigy, D-Adaptation)."""
    l1 = sum((jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(grad_sum)), start=jnp.zeros([]))
    estimate = coef * numerator / (scale * l1)
    return jnp.where(l1 > 0, jnp.maximum(d, estimate), d).astype(d.dtype)


# --- helpers ---------------------------------------------------------------------------


def scalar_dtype(params: Any) -> jnp.dtype:
    """The dtype of a method's scalar statistics: the lowest real dtype of the params, at
    least float32 (optax takes the lowest, which for bfloat16 params rounds the estimates)."""
    dtypes = [real_dtype(x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype) for x in jax.tree.leaves(params)]
    lowest = min(dtypes, key=lambda d: jnp.finfo(d).bits, default=jnp.dtype(jnp.float32))
    return jnp.promote_types(lowest, jnp.float32)


def _scalar(value: Any) -> Callable[[Any], jax.Array]:
    return lambda params: jnp.asarray(value, scalar_dtype(params))


def _params(step) -> Any:
    if step.params is None:
        raise UpdateError("update() needs params (call update(updates, state, params))")
    return step.params


def _value(step) -> jax.Array:
    if step.extra.get("value") is None:
        raise UpdateError("update() needs the loss: call update(updates, state, params, value=loss)")
    return step.extra["value"]


def _rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _like(out: Any, updates: Any) -> Any:
    return _tree.cast_like(out, updates)


def adam_step_correction(b1, b2, t) -> jax.Array:
    """``sqrt(1 - b2^t) / (1 - b1^t)``: Adam's two bias corrections folded into the step size."""
    return ((1 - b2**t) ** 0.5) / (1 - b1**t)


# --- DoG and DoWG ---------------------------------------------------------------------------


def dog_step(init_step: tuple, eps) -> Transformation:
    """``r = max(r, ||x - x_0||) ; G = G + ||g||^2 ; u -> r / sqrt(G + eps) * u`` over the
    whole tree (DoG; ``r`` starts at ``r_eps``; with ``init_step=('learning_rate', eta_0)``
    the first step is ``eta_0 * u``). State: ``init_params, max_dist, sum_sq_norm_grads``,
    and ``count`` with ``'learning_rate'`` (optax's ``is_init_step``)."""
    kind, value = init_step

    def init_max_dist(params):
        dtype = scalar_dtype(params)
        if kind == "heuristic":
            return (value * (1 + jnp.sqrt(sq_norm(params)))).astype(dtype)
        return jnp.asarray(value if kind == "distance" else 0.0, dtype)

    def apply(updates, state, step):
        max_dist = max_distance(state["max_dist"], _params(step), state["init_params"])
        total = add_sq_norm(state["sum_sq_norm_grads"], updates)
        rate = max_dist / jnp.sqrt(total + eps)
        if kind == "learning_rate":
            rate = jnp.where(step.count == 0, value, rate)
        out = jax.tree.map(lambda g: rate.astype(g.dtype) * g, updates)
        return out, {"init_params": state["init_params"], "max_dist": max_dist, "sum_sq_norm_grads": total}

    return primitive(
        apply,
        {
            "init_params": Field(lambda params: params),
            "max_dist": Field(init_max_dist, like_params=False),
            "sum_sq_norm_grads": Field(_scalar(0.0), like_params=False),
        },
        uses_count=kind == "learning_rate",
    )


def dowg_step(init_estim_sq_dist, eps) -> Transformation:
    """``r^2 = max(r^2, ||x - x_0||^2) ; v = v + r^2 * ||g||^2 ; u -> r^2 / (sqrt(v) + eps) * u``
    over the whole tree (DoWG; ``r^2`` starts at ``init_estim_sq_dist``, else ``eps``).
    State: ``init_params, weighted_sq_norm_grads, estim_sq_dist``."""
    start = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def apply(updates, state, step):
        sq_dist = max_distance(state["estim_sq_dist"], _params(step), state["init_params"], squared=True)
        weighted = add_sq_norm(state["weighted_sq_norm_grads"], updates, sq_dist)
        rate = sq_dist / (jnp.sqrt(weighted) + eps)
        out = jax.tree.map(lambda g: rate.astype(g.dtype) * g, updates)
        return out, {"init_params": state["init_params"], "weighted_sq_norm_grads": weighted, "estim_sq_dist": sq_dist}

    return primitive(
        apply,
        {
            "init_params": Field(lambda params: params),
            "weighted_sq_norm_grads": Field(_scalar(0.0), like_params=False),
            "estim_sq_dist": Field(_scalar(start), like_params=False),
        },
    )


# --- Prodigy and D-Adaptation -------------------------------------------------------------


def prodigy_step(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay, safeguard_warmup):
    """``u -> dlr * (m / (sqrt(v) + d' * eps) + wd * p)``, ``dlr = d * lr * sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m = ema(d * g, b1)``, ``v = ema(|d * g|^2, b2)``, ``d' = max(d, coef * n / ||s||_1)`` with
    ``s = b3 * s + (dlr or d) * d * g / d_0``, ``n = b3 * n + d / d_0 * dlr * <g, x_0 - x>`` (Prodigy).

    State: ``count, exp_avg, exp_avg_sq, grad_sum, params0, estim_lr, numerator_weighted``."""
    b1, b2 = betas
    b3 = b2**0.5 if beta3 is None else beta3

    def apply(updates, state, step):
        params = _params(step)
        d = state["estim_lr"]
        correction = adam_step_correction(b1, b2, safe_increment(step.count))
        dlr = jnp.asarray(d * _rate(learning_rate, step.count) * correction, d.dtype)
        dg = jax.tree.map(lambda g: d * g, updates)
        inner = tree_vdot(updates, jax.tree.map(jnp.subtract, state["params0"], params))
        # optax's operation order, which XLA rounds differently from ``ema``'s
        exp_avg = jax.tree.map(lambda m, x: (b1 * m + (1 - b1) * x).astype(m.dtype), state["exp_avg"], dg)
        exp_avg_sq = jax.tree.map(lambda v, x: (b2 * v + (1 - b2) * x * x).astype(v.dtype), state["exp_avg_sq"], dg)
        grad_sum = decayed_sum(state["grad_sum"], dg, b3, d if safeguard_warmup else dlr, estim_lr0)
        numerator = decayed_sum(state["numerator_weighted"], inner, b3, (d / estim_lr0) * dlr)
        new_d = raise_estimate(d, numerator, grad_sum, estim_lr_coef)
        out = jax.tree.map(
            lambda m, v, p: weight_decay * dlr * p + dlr * m / (jnp.sqrt(v) + new_d * eps), exp_avg, exp_avg_sq, params
        )
        return _like(out, updates), {
            "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq,
            "grad_sum": grad_sum,
            "params0": state["params0"],
            "estim_lr": new_d,
            "numerator_weighted": numerator,
        }

    return primitive(
        apply,
        {
            "exp_avg": _tree.zeros_like,
            "exp_avg_sq": _tree.zeros_like,
            "grad_sum": _tree.zeros_like,
            "params0": lambda params: params,
            "estim_lr": Field(_scalar(estim_lr0), like_params=False),
            "numerator_weighted": Field(_scalar(0.0), like_params=False),
        },
        uses_count=True,
    )


def dadapt_adamw_step(learning_rate, betas, eps, estim_lr0, weight_decay):
    """``u -> m / (sqrt(v) + eps) + wd * dlr * p``, ``dlr = d * lr * sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m = ema(dlr * g, b1)``, ``v = ema(|g|^2, b2)``, then ``d = max(d, n / ((1 - sqrt(b2)) ||s||_1))``
    with ``s = sqrt(b2) s + (1 - sqrt(b2)) dlr g``, ``n = sqrt(b2) n + (1 - sqrt(b2)) dlr <g, s / (sqrt(v) + eps)>``
    (D-Adaptation's AdamW; ``s`` and ``v`` of the previous step in ``n``).

    State: ``count, exp_avg, exp_avg_sq, grad_sum, estim_lr, numerator_weighted``."""
    b1, b2 = betas
    sb2 = b2**0.5

    def apply(updates, state, step):
        params = _params(step)
        d = state["estim_lr"]
        correction = adam_step_correction(b1, b2, safe_increment(step.count))
        dlr = (d * _rate(learning_rate, step.count) * correction).astype(d.dtype)
        # plus_eps: in float16 eps = 1e-8 rounds to 0, and 0 / 0 at the first step poisons d for every leaf
        weighted = jax.tree.map(lambda s, v: s / plus_eps(jnp.sqrt(v), eps), state["grad_sum"], state["exp_avg_sq"])
        inner = tree_vdot(updates, weighted)
        exp_avg = jax.tree.map(lambda m, g: ema(dlr * g, m, b1).astype(m.dtype), state["exp_avg"], updates)
        exp_avg_sq = jax.tree.map(lambda v, g: ema(abs_sq(g), v, b2).astype(v.dtype), state["exp_avg_sq"], updates)
        grad_sum = decayed_sum(state["grad_sum"], updates, sb2, (1 - sb2) * dlr)
        numerator = decayed_sum(state["numerator_weighted"], inner, sb2, (1 - sb2) * dlr)
        out = jax.tree.map(
            lambda m, v, p: weight_decay * dlr * p + m / plus_eps(jnp.sqrt(v), eps), exp_avg, exp_avg_sq, params
        )
        return _like(out, updates), {
            "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq,
            "grad_sum": grad_sum,
            "estim_lr": raise_estimate(d, numerator, grad_sum, scale=1 - sb2),
            "numerator_weighted": numerator,
        }

    return primitive(
        apply,
        {
            "exp_avg": _tree.zeros_like,
            "exp_avg_sq": _tree.zeros_like,
            "grad_sum": _tree.zeros_like,
            "estim_lr": Field(_scalar(estim_lr0), like_params=False),
            "numerator_weighted": Field(_scalar(0.0), like_params=False),
        },
        uses_count=True,
    )


# --- COCOB ------------------------------------------------------------------------------------


@declare
def scale_by_cocob(alpha: Positive = 100.0, eps: Positive = 1e-8) -> Transformation:
    """``u -> x_0 + theta / (L * max(G + L, alpha * L)) * (L + R) - x``, ``L = max(L, |g|)``, ``G = G + |g|``, ``R = max(R - g * (x - x_0), 0)``, ``theta = theta - g``.

    COCOB-Backprop (Orabona & Tommasi 2017, "Training Deep Networks without Learning Rates
    Through Coin Betting", https://arxiv.org/abs/1705.07795, Algorithm 2), coordinate by
    coordinate: a coin-betting algorithm that bets a fraction of its wealth ``L + R`` on
    the direction of the summed negative gradients ``theta``. The output is the step to the
    new point (it includes its sign: no learning rate follows it). ``L`` starts at ``eps``.

    Args:
      alpha: the fraction-to-bet parameter (the paper's 100).
      eps: the starting value of ``L``, which keeps the first division finite.

    State: ``init_particles`` (``x_0``), ``cumulative_gradients`` (``theta``), ``scale``
    (``L``), ``subgradients`` (``G``), ``reward`` (``R``): optax's fields.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_cocob()
    >>> params = jnp.zeros(2)
    >>> updates, _ = tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)
    >>> updates  # theta / (L * alpha * L) * L = -g / (alpha |g|)
    Array([-0.01,  0.01], dtype=float32)
    """  # noqa: E501 - the formula line

    def apply(updates, state, step):
        params = _params(step)
        x0 = state["init_particles"]
        scale = jax.tree.map(lambda s, g: jnp.maximum(s, jnp.abs(g)), state["scale"], updates)
        subgradients = jax.tree.map(lambda s, g: s + jnp.abs(g), state["subgradients"], updates)
        reward = jax.tree.map(
            lambda r, g, p, p0: jnp.maximum(r - g * (p - p0), 0), state["reward"], updates, params, x0
        )
        theta = jax.tree.map(lambda c, g: c - g, state["cumulative_gradients"], updates)
        # in float32 for float16 leaves: L^2 alpha underflows float16 for L < 2^-11
        out = jax.tree.map(functools.partial(in_range_safe_dtype, bet), params, x0, theta, scale, subgradients, reward)
        return _like(out, updates), {
            "init_particles": x0,
            "cumulative_gradients": theta,
            "scale": scale,
            "subgradients": subgradients,
            "reward": reward,
        }

    def bet(p, p0, c, lo, s, r):
        return -p + (p0 + c / (lo * jnp.maximum(s + lo, alpha * lo)) * (lo + r))

    return primitive(
        apply,
        {
            "init_particles": lambda params: params,
            "cumulative_gradients": _tree.zeros_like,
            # L starts at eps by the eps rule: 2^-14 in float16, where 1e-8 would be 0
            "scale": lambda params: jax.tree.map(lambda p: plus_eps(jnp.zeros_like(p), eps), params),
            "subgradients": _tree.zeros_like,
            "reward": _tree.zeros_like,
        },
    )


# --- MoMo ---------------------------------------------------------------------------------


def momo_step(learning_rate, beta, lower_bound, weight_decay, adapt_lower_bound) -> Transformation:
    """``u -> tau * d``, ``tau = min(lr, max((1 + lr wd)(f - lb - gamma) + <d, x>, 0) / ||d||^2)``
    (0 where ``d = 0``), ``d = ema(g, beta)``, ``f = ema(loss, beta)``, ``gamma = ema(<g, x>, beta)``,
    each started at its first value (MoMo's model step; the decay and the descent sign follow).

    State: ``count, exp_avg, barf, gamma, lb``."""

    def apply(updates, state, step):
        params, value = _params(step), _value(step)
        bt = jnp.where(step.count == 0, 0.0, beta)
        # optax's operation order (b * old + (1 - b) * new), which XLA rounds differently from ``ema``'s
        barf = bt * state["barf"] + (1 - bt) * jnp.asarray(value, state["barf"].dtype)
        exp_avg = jax.tree.map(lambda m, g: (bt * m + (1 - bt) * g).astype(m.dtype), state["exp_avg"], updates)
        # cast: <g, x> of a mixed-precision tree is as wide as its widest leaf; the state keeps its dtype
        gamma = (bt * state["gamma"] + (1 - bt) * tree_vdot(updates, params)).astype(state["gamma"].dtype)
        norm = sq_norm(exp_avg)
        iprod = tree_vdot(exp_avg, params)
        alpha = _rate(learning_rate, step.count)
        tau, lb = _model_step(
            alpha, weight_decay, barf, gamma, iprod, norm, state["lb"], lower_bound, adapt_lower_bound, bc1=None
        )
        return _like(jax.tree.map(lambda m: tau * m, exp_avg), updates), {
            "exp_avg": exp_avg,
            "barf": barf,
            "gamma": gamma,
            "lb": lb,
        }

    return primitive(
        apply,
        {
            "exp_avg": _tree.zeros_like,
            "barf": Field(_scalar(0.0), like_params=False),
            "gamma": Field(_scalar(0.0), like_params=False),
            "lb": Field(_scalar(lower_bound), like_params=False),
        },
        uses_count=True,
    )


def momo_adam_step(learning_rate, b1, b2, eps, lower_bound, weight_decay, adapt_lower_bound) -> Transformation:
    """``u -> tau * d / D``, ``D = eps + sqrt(v / (1 - b2^t))``, ``tau = min(lr / c1, max((1 + lr wd)
    (f - c1 lb - gamma) + <d, x>, 0) / <d, d / D>)`` (0 where that is 0), ``c1 = 1 - b1^t``,
    ``d = ema(g, b1)``, ``v = ema(|g|^2, b2)``, ``f = ema(loss, b1)``, ``gamma = ema(<g, x>, b1)``
    (MoMo-Adam's model step; the decay and the descent sign follow).

    State: ``count, exp_avg, exp_avg_sq, barf, gamma, lb``."""

    def apply(updates, state, step):
        params, value = _params(step), _value(step)
        t = safe_increment(step.count)
        barf = ema(jnp.asarray(value, state["barf"].dtype), state["barf"], b1)
        exp_avg = jax.tree.map(lambda m, g: ema(g, m, b1), state["exp_avg"], updates)
        exp_avg_sq = jax.tree.map(lambda v, g: ema(abs_sq(g), v, b2), state["exp_avg_sq"], updates)
        bc2 = jnp.asarray(1 - b2**t, barf.dtype)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / bc2), exp_avg_sq)
        norm = tree_vdot(exp_avg, jax.tree.map(jnp.divide, exp_avg, precond))
        gamma = ema(tree_vdot(updates, params), state["gamma"], b1).astype(state["gamma"].dtype)
        iprod = tree_vdot(exp_avg, params)
        alpha = _rate(learning_rate, step.count)
        bc1 = jnp.asarray(1 - b1**t, barf.dtype)
        tau, lb = _model_step(
            alpha, weight_decay, barf, gamma, iprod, norm, state["lb"], lower_bound, adapt_lower_bound, bc1=bc1
        )
        return _like(jax.tree.map(lambda m, d: tau * m / d, exp_avg, precond), updates), {
            "exp_avg": exp_avg,
            "exp_avg_sq": exp_avg_sq,
            "barf": barf,
            "gamma": gamma,
            "lb": lb,
        }

    return primitive(
        apply,
        {
            "exp_avg": _tree.zeros_like,
            "exp_avg_sq": _tree.zeros_like,
            "barf": Field(_scalar(0.0), like_params=False),
            "gamma": Field(_scalar(0.0), like_params=False),
            "lb": Field(_scalar(lower_bound), like_params=False),
        },
        uses_count=True,
    )


def _model_step(alpha, wd, barf, gamma, iprod, norm, lb, lower_bound, adapt: bool, bc1):
    """MoMo's step size on its model of the loss, and the next lower bound:
    ``tau = min(alpha / c1, max(h, 0) / norm)`` (0 where ``norm`` is 0),
    ``h = (1 + alpha wd)(f - c1 lb - gamma) + <d, x>``; ``c1 = bc1 = 1 - b1^t`` for MoMo-Adam,
    1 for MoMo (``bc1=None``: multiplying and dividing by 1.0 is exact, so one formula serves both)."""
    c1 = 1.0 if bc1 is None else bc1
    k = 1 + alpha * wd
    if adapt:  # the paper's online lower bound: reset where the model goes below it
        cap = k * (barf - gamma) + iprod
        lb = jnp.where(cap < k * c1 * lb, jnp.maximum(cap / (2 * c1 * k), lower_bound), lb)
    t1 = jnp.maximum(k * (barf - c1 * lb - gamma) + iprod, 0.0) / norm
    t1 = jnp.where(norm <= jnp.finfo(float).eps, 0.0, t1)
    tau = jnp.minimum(alpha / c1, t1)
    if adapt:
        lb = jnp.maximum(((barf + iprod - gamma) - (1 / 2) * tau * norm) / c1, lower_bound)
    return tau, jnp.asarray(lb).astype(barf.dtype)


# --- Mechanic -------------------------------------------------------------------------------


def mechanic_step(base_optimizer: GradientTransformation, weight_decay, eps, s_init, num_betas: int):
    """``x = x_0 - sum(s) * (Delta - inner(g))``, ``Delta = (x_0 - x) / (sum(s) + eps)``, with per
    beta ``h = <g + wd sum(s) ||g|| / (||x|| + eps) x, Delta>``, ``m = max(beta m, |h| + eps)``,
    ``v = beta^2 v + h^2``, ``r = beta r + clip(h, -m_prev, m_prev) s``,
    ``s = (s_init / n * m + max(r, 0)) / (sqrt(v) + eps)`` (Mechanic's scale of an inner optimizer).

    State: ``count, base_optimizer_state, r, m, v, s, x0`` (``x0`` reset to the params at
    the first step, as optax: a loop that loads pre-trained weights after ``init``)."""
    betas = [1.0 - 0.1**i for i in range(1, num_betas + 1)]

    def vector(value):
        return lambda params: jnp.full([num_betas], value, scalar_dtype(params))

    def apply(updates, state, step):
        params = _params(step)
        inner_updates, inner_state = update_inner(base_optimizer, updates, state["base_optimizer_state"], step)
        x0 = jax.tree.map(lambda p, x: jnp.where(step.count == 0, p, x), params, state["x0"])
        s_sum = jnp.sum(state["s"])
        decay = weight_decay * s_sum * jnp.sqrt(sq_norm(updates)) / (jnp.sqrt(sq_norm(params)) + eps)
        grads = jax.tree.map(lambda g, p: g + decay * p, updates, params)
        delta_prev = jax.tree.map(lambda x, x_0: (x_0 - x) / (s_sum + eps), params, x0)
        delta = jax.tree.map(lambda d, u: d - u, delta_prev, inner_updates)
        h = tree_vdot(grads, delta_prev)
        clipped = jax.lax.clamp(-state["m"], jnp.ones_like(state["m"]) * h, state["m"])
        beta = jnp.asarray(betas, state["s"].dtype)
        m = jnp.maximum(beta * state["m"], jnp.abs(h) + eps)
        v = (beta**2) * state["v"] + h**2
        r = beta * state["r"] + clipped * state["s"]
        s = ((s_init / num_betas) * m + jnp.maximum(0.0, r)) / (jnp.sqrt(v) + eps)
        new_params = jax.tree.map(lambda x_0, d: x_0 - jnp.sum(s) * d, x0, delta)
        out = jax.tree.map(jnp.subtract, new_params, params)
        return _like(out, updates), {
            "base_optimizer_state": inner_state,
            "r": r.astype(state["r"].dtype),
            "m": m.astype(state["m"].dtype),
            "v": v.astype(state["v"].dtype),
            "s": s.astype(state["s"].dtype),
            "x0": x0,
        }

    return primitive(
        apply,
        {
            "base_optimizer_state": Field(base_optimizer.init, like_params=False),
            "r": Field(vector(0.0), like_params=False),
            "m": Field(vector(0.0), like_params=False),
            "v": Field(vector(0.0), like_params=False),
            "s": Field(vector(s_init), like_params=False),
            "x0": lambda params: params,
        },
        uses_count=True,
    )
