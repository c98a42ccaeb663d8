"""Layer-wise statistics: one number per leaf (a "layer"), not one per element.

The trust ratio ``||p|| / ||u||`` of LARS, LAMB and Fromage, and NovoGrad's per-layer
second moment ``||g||^2``. A leaf's norm is ``sqrt(sum |x|^2)`` over all its elements
(real for complex leaves). ``trust_ratio`` is the one home of the ratio's formula: the
tree primitives here and the packed layout (``Packing.scale_by_trust_ratio``) call it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.base import UpdateError
from gradtx.combine import chain, fork, identity, renamed
from gradtx.hyperparams import AccumulatorDtype, Decay, NonNegative, NonNegativeOrSchedule
from gradtx.moments import trace
from gradtx.numerics import abs_sq, ema, in_range_safe_dtype, leaf_norm, plus_eps, real_dtype
from gradtx.scaling import MaskOrFn, add_decayed_weights, sqrt_eps
from gradtx.transform import Field, Transformation, declare, primitive


def trust_ratio(param_norm, update_norm, min_norm=0.0, trust_coefficient=1.0, eps=0.0) -> jax.Array:
    """``tc * max(||p||, min_norm) / (max(||u||, min_norm) + eps)``, and 1 where either
    clipped norm is 0 (a leaf that would otherwise never move, or a zero update).

    optax's formula (``scale_by_trust_ratio``), in its operation order; element-wise, so
    that it takes one norm pair or a vector of them (the packed layout's)."""
    p = jnp.maximum(param_norm, min_norm)
    u = jnp.maximum(update_norm, min_norm)
    ratio = trust_coefficient * p / plus_eps(u, eps)
    return jnp.where((p == 0.0) | (u == 0.0), jnp.ones_like(ratio), ratio)


def _params_of(step) -> Any:
    if step.params is None:
        raise UpdateError("update() needs params (call update(updates, state, params))")
    return step.params


@declare
def scale_by_trust_ratio(
    min_norm: NonNegative = 0.0, trust_coefficient: NonNegative = 1.0, eps: NonNegative = 0.0
) -> Transformation:
    """``u -> u * tc * max(||p||, min_norm) / (max(||u||, min_norm) + eps)`` per leaf.

    The ratio is 1 where either clipped norm is 0. The layer-wise trust ratio of LARS,
    LAMB and Fromage (``trust_ratio``), leaf by leaf (You et al. 2017,
    https://arxiv.org/abs/1708.03888); reads the params. optax's ``scale_by_trust_ratio``.

    Args:
      min_norm: lower bound of both norms (0: no clipping).
      trust_coefficient: a multiplier of the ratio.
      eps: added to the update's norm in the denominator.

    State: none.
    """

    def apply(updates, state, step):
        def scaled(u, p):
            ratio = trust_ratio(leaf_norm(p), leaf_norm(u), min_norm, trust_coefficient, eps)
            return u * ratio.astype(real_dtype(u.dtype))

        # in float32 for float16 leaves: a norm of a few hundred elements overflows float16,
        # and ||p|| / min_norm (1e-6) does
        safe = functools.partial(in_range_safe_dtype, scaled)
        return jax.tree.map(safe, updates, _params_of(step)), {}

    return primitive(apply)


def full_mask(mask: MaskOrFn) -> Optional[Callable[[Any], Any]]:
    """optax's mask (``True``; a tree of bools shaped like the params or a prefix of them;
    or a function ``params -> such a tree``) as a function ``params -> a tree of bools
    shaped like the params``; ``None`` for ``True`` or ``None`` (every leaf)."""
    if mask is None or mask is True:
        return None

    def expand(params):
        prefix = mask(params) if callable(mask) else mask
        return jax.tree.map(lambda keep, sub: jax.tree.map(lambda _: keep, sub), prefix, params)

    return expand


def _off(flag) -> bool:
    """A mask leaf that is a Python (or numpy) False: decided when tracing."""
    return isinstance(flag, (bool, np.bool_)) and not flag


def _on(flag) -> bool:
    return isinstance(flag, (bool, np.bool_)) and bool(flag)


def _flags(mask: Optional[Callable[[Any], Any]], params: Any) -> Any:
    return jax.tree.map(lambda _: True, params) if mask is None else mask(params)


@declare
def lars_trust_ratio(
    weight_decay: NonNegativeOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: NonNegative = 0.001,
    eps: NonNegative = 0.0,
    trust_ratio_mask: MaskOrFn = True,
) -> Transformation:
    """``u -> tc * ||p|| / (||u|| + wd * ||p|| + eps)``: one scalar per leaf.

    LARS's local learning rate (You et al. 2017, https://arxiv.org/abs/1708.03888,
    Algorithm 1 and eq. 6), from the gradient *before* the weight decay is added: ``lars``
    multiplies it by ``u + wd * p`` (``fork(add_decayed_weights, lars_trust_ratio,
    join=multiply)``). ``wd`` is 0 on the leaves where ``weight_decay_mask`` is False; the
    ratio is 1 where a norm is 0 or ``trust_ratio_mask`` is False. Masks as optax's: ``True``, a tree of bools (or a
    prefix of the params tree), or a function ``params -> tree``. A schedule
    ``step -> weight_decay`` reads the step count.

    State: none.
    """
    decay_mask, ratio_mask = full_mask(weight_decay_mask), full_mask(trust_ratio_mask)

    def apply(updates, state, step):
        params = _params_of(step)
        wd = weight_decay(step.count) if callable(weight_decay) else weight_decay

        def ratio(u, p, decays, scaled):
            dtype = real_dtype(u.dtype)
            if _off(scaled):
                return jnp.ones((), dtype)
            p_norm, u_norm = leaf_norm(p), leaf_norm(u)
            if not _off(decays):
                u_norm = jnp.where(decays, u_norm + wd * p_norm, u_norm)
            r = trust_ratio(p_norm, u_norm, 0.0, trust_coefficient, eps)
            return (r if _on(scaled) else jnp.where(scaled, r, jnp.ones_like(r))).astype(dtype)

        return jax.tree.map(ratio, updates, params, _flags(decay_mask, params), _flags(ratio_mask, params)), {}

    return primitive(apply, uses_count=callable(weight_decay))


@declare
def layer_second_moment(decay: Decay = 0.25) -> Transformation:
    """``nu = decay * nu + (1 - decay) * ||u||^2 ; u -> nu``: one scalar per leaf, ``||u||^2`` at t=1.

    NovoGrad's per-layer second moment (Ginsburg et al. 2019, Algorithm 1): the squared
    norm of each leaf's gradient, averaged over steps, started at the first gradient's
    instead of at 0 (so there is no bias to correct). Real-valued for complex updates.

    State: ``count, nu`` (``nu`` a scalar per leaf, in the leaf's real dtype).
    """

    def apply(updates, state, step):
        def moment(u, n):
            norm_sq = jnp.sum(abs_sq(u))
            return jnp.where(step.count == 0, norm_sq, ema(norm_sq, n, decay)).astype(n.dtype)

        nu = jax.tree.map(moment, updates, state["nu"])
        return nu, {"nu": nu}

    def init(params):
        return jax.tree.map(lambda p: jnp.zeros((), real_dtype(jnp.asarray(p).dtype)), params)

    return primitive(apply, {"nu": Field(init, like_params=False)}, uses_count=True)


@declare
def scale_by_novograd(
    b1: Decay = 0.9,
    b2: Decay = 0.25,
    eps: NonNegative = 1e-8,
    eps_root: NonNegative = 0.0,
    weight_decay: NonNegativeOrSchedule = 0.0,
    mu_dtype: AccumulatorDtype = None,
) -> Transformation:
    """``mu = b1 * mu + u / (sqrt(nu + eps_root) + eps) + weight_decay * p ; u -> mu``.

    NovoGrad's direction (Ginsburg et al. 2019, Algorithm 1), with ``nu`` from
    ``layer_second_moment(b2)``: each leaf's gradient is divided by the root of its own
    averaged squared norm, weight-decayed, and accumulated as heavy-ball momentum (no
    ``1 - b1`` factor, as in the paper).

    ``weight_decay`` may be a schedule here (optax 0.2.8 declares one but fails on it:
    ``weight_decay * params`` with a function). With ``mu_dtype`` the output is the
    momentum before it is rounded to ``mu_dtype`` (as everywhere in gradtx; optax's
    ``scale_by_novograd`` outputs the rounded one).

    Chain: ``fork(identity, layer_second_moment(b2) -> sqrt_eps(eps, eps_root), join=divide)
    -> add_decayed_weights(weight_decay) -> trace(b1)`` (its ``trace`` named ``mu``).
    State: ``count, nu, mu`` (optax's names).
    """
    return chain(
        fork(identity(), chain(layer_second_moment(b2), sqrt_eps(eps=eps, eps_root=eps_root)), join=jnp.divide),
        add_decayed_weights(weight_decay),
        renamed(trace(b1, accumulator_dtype=mu_dtype), trace="mu"),
    )
