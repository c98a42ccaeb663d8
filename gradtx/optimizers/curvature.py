"""Second-order-flavoured optimizers: Sophia, a clipped step preconditioned by a running
estimate of the Hessian's diagonal."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from gradtx.combine import chain, fork
from gradtx.curvature import HUTCHINSON, Interval, hessian_diagonal_ema, sophia_denominator
from gradtx.hyperparams import AccumulatorDtype, Decay, DecayBelowOne, LearningRate, NonNegative, Positive
from gradtx.moments import debiased_first_moment, scale_by_ema
from gradtx.scaling import MaskOrFn, add_decayed_weights, clip, scale_by_learning_rate
from gradtx.transform import Transformation, declare, primitive
from gradtx.wrappers import Inner

__all__ = ["sophia"]


def _win_rate_printer(clip_threshold, every) -> Transformation:
    """Prints the fraction of update components below ``clip_threshold`` every ``every``
    steps (Sophia's diagnostic); passes the updates through."""

    def apply(updates, state, step):
        leaves = jax.tree.leaves(updates)
        rate = sum(jnp.sum(jnp.abs(u) < clip_threshold) for u in leaves) / sum(u.size for u in leaves)
        jax.lax.cond(
            (step.count + 1) % every == 0,
            lambda: jax.debug.print("Sophia optimizer win rate: {}", rate),
            lambda: None,
        )
        return updates, {}

    return primitive(apply, uses_count=True)


@declare
def sophia(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.965,
    b2: Decay = 0.99,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegative = 1e-4,
    weight_decay_mask: MaskOrFn = None,
    gamma: Positive = 0.01,
    clip_threshold: Optional[Positive] = 1.0,
    update_interval: Interval = 10,
    hessian_diagonal_fn: Inner = HUTCHINSON,
    mu_dtype: AccumulatorDtype = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> Transformation:
    """Sophia (Liu et al. 2023, https://arxiv.org/abs/2305.14342), as optax 0.2.8::

        m = b1 * m + (1 - b1) * g             m_hat = m / (1 - b1^t)
        u = clip(m_hat / max(gamma * h, eps), -clip_threshold, clip_threshold)
        p = p - lr * (u + weight_decay * p)
        h = b2 * h + (1 - b2) * h_est(p)      at t = 1, 1 + k, 1 + 2k, ... (k = update_interval),
                                              after ``u`` is computed

    ``h_est`` is ``hessian_diagonal_fn``: by default Hutchinson's estimate ``z * (H z)``
    with Rademacher probes, which needs the objective at every update:
    ``opt.update(grads, state, params, obj_fn=lambda p: loss(p, batch))`` (extra keyword
    arguments reach ``hessian_diagonal_fn``). ``clip_threshold=None`` does not clip;
    ``verbose`` prints the fraction of unclipped components every
    ``print_win_rate_every_n_steps`` steps.

    Optax's rule (from Levanter) departs from the paper's Algorithm 3 in three ways, and
    gradtx keeps optax's numbers: the first moment is bias-corrected (the paper's is
    not), a step that refreshes ``h`` divides by the previous ``h`` (the paper by the
    refreshed one; so the first step divides by ``eps`` and is ``+-lr * clip_threshold``),
    and the probes are Rademacher (the paper's Gaussian). The paper's clip is at 1 with
    ``gamma`` (its ``rho``) scaling ``h``, as here.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), hessian_diagonal_ema(b2,
    update_interval, hessian_diagonal_fn) -> sophia_denominator(gamma, eps), join=divide)
    -> clip(clip_threshold) -> add_decayed_weights(weight_decay, weight_decay_mask)
    -> scale_by_learning_rate``. State: ``count, mu, nu, hessian_fn_state``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.sophia(0.1, weight_decay=0.0)
    >>> params = jnp.array([1.0, -2.0])
    >>> obj_fn = lambda p: jnp.sum(p**2)
    >>> updates, state = opt.update(2 * params, opt.init(params), params, obj_fn=obj_fn)
    >>> updates  # the first step divides by eps: -lr * clip_threshold * sign(g)
    Array([-0.1,  0.1], dtype=float32)
    >>> state.nu  # (1 - b2) * diag(H)
    Array([0.02, 0.02], dtype=float32)
    """
    direction = fork(
        debiased_first_moment(scale_by_ema(b1, accumulator_dtype=mu_dtype), b1, nesterov=False),
        chain(hessian_diagonal_ema(b2, update_interval, hessian_diagonal_fn), sophia_denominator(gamma, eps)),
        join=jnp.divide,
    )
    stages = [direction]
    if clip_threshold is not None:
        if verbose:
            stages.append(_win_rate_printer(clip_threshold, print_win_rate_every_n_steps))
        stages.append(clip(clip_threshold))
    return chain(
        *stages,
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
