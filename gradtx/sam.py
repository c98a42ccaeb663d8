"""Sharpness-aware minimization (Foret et al. 2021) as a transformation.

SAM (https://arxiv.org/abs/2010.01412) takes the gradient at an adversarial point near
the params and applies it at the params::

    eps = rho * g(w) / ||g(w)||            (the adversarial step: adv_optimizer)
    w   = w - lr * g(w + eps)              (the real step: optimizer, from w)

optax.contrib's ``sam`` wraps both optimizers: ``adv_optimizer`` takes ``sync_period - 1``
adversarial steps (``chain(normalize(), sgd(rho))`` is the paper's), then ``optimizer``
takes one real step from the params cached before them.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Optional

import jax
import jax.numpy as jnp

from gradtx.base import UpdateError, apply_updates
from gradtx.numerics import zero_count
from gradtx.scaling import global_norm
from gradtx.transform import Field, Step, Transformation, declare, primitive
from gradtx.wrappers import Inner, _Integer

__all__ = ["normalize", "sam"]

SyncPeriod = Annotated[int, _Integer(1)]
"""A number of steps >= 1."""
GradFn = Callable[[Any, int], Any]
"""``(params, i) -> gradients``: the gradient at the ``i``-th adversarial point (opaque mode)."""


@declare
def normalize() -> Transformation:
    """``u -> u / ||u||``, ``||u||`` the norm over all leaves (SAM's adversarial direction;
    optax.contrib's ``normalize``); ``u`` where ``||u|| = 0`` (optax: NaN).

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.normalize().update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, ())[0]
    {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
    """

    def apply(updates, state, step):
        norm = global_norm(updates)  # as wide as the widest leaf: each leaf keeps its own dtype
        norm = jnp.where(norm > 0, norm, 1)  # an all-zero update stays zero, not 0 / 0
        return jax.tree.map(lambda g: (g / norm).astype(g.dtype), updates), {}

    return primitive(apply)


def _pick(condition, if_true, if_false):
    """``if_true`` where ``condition`` else ``if_false``, leaf by leaf (optax's ``pick_one``,
    without its ``0 * inf``)."""
    return jax.tree.map(lambda t, f: jnp.where(condition, t, f).astype(jnp.asarray(f).dtype), if_true, if_false)


def _negated(tree):
    return jax.tree.map(lambda x: -x, tree)


@declare
def sam(
    optimizer: Inner,
    adv_optimizer: Inner,
    sync_period: SyncPeriod = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: Optional[str] = None,
) -> Transformation:
    """SAM, sharpness-aware minimization (Foret et al. 2021, https://arxiv.org/abs/2010.01412)::

        w_adv = w + eps_1 + ... + eps_{k-1},  eps_i = -adv_optimizer(g(w_adv_{i-1}))
        w     = w + optimizer(g(w_adv))       (k = sync_period)

    with ``adv_optimizer = chain(normalize(), sgd(rho))`` the paper's ``eps = rho g /
    ||g||`` (``sync_period=2``). Two modes, as optax.contrib's ``sam``:

    - transparent (default): each ``update`` is one step; the first ``sync_period - 1`` of
      each period are adversarial (``u -> -adv_optimizer(g)``, the params they start from
      kept in ``cache``), the last is the real one (``u -> cache - w + optimizer(g)``, run
      from the cached params), after which the adversarial state is reset
      (``reset_state``). The training loop just computes gradients at the params it has.
    - ``opaque_mode=True``: each ``update`` is a whole period: ``update(grads, state,
      params, grad_fn=grad_fn)`` with ``grad_fn(params, i)`` the gradient at the ``i``-th
      adversarial point (``jax.lax.pmean`` over ``batch_axis_name`` when given); the
      params only see the real steps (BatchNorm statistics stay in sync).

    Chain: a wrapper of the two optimizers, each kept whole. State: ``steps_since_sync,
    opt_state, adv_state, cache`` (optax's; ``cache`` only in transparent mode, where
    optax's opaque mode keeps ``None``).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.sam(gradtx.sgd(0.1), gradtx.chain(gradtx.normalize(), gradtx.sgd(0.5)))
    >>> params = jnp.array([3.0, 4.0])
    >>> adv, state = tx.update(params, tx.init(params), params)  # gradient of |w|^2 / 2
    >>> adv  # the adversarial step: +rho g / ||g||
    Array([0.3, 0.4], dtype=float32)
    >>> real, state = tx.update(params + adv, state, params + adv)
    >>> params + adv + real  # w - lr * g(w + eps), from the cached w
    Array([2.67, 3.56], dtype=float32)
    """

    def adversarial_step(updates, adv_state, params):
        adv_updates, adv_state = adv_optimizer.update(updates, adv_state, params)
        return _negated(adv_updates), adv_state

    def transparent(updates, state, step: Step):
        params = step.params
        if params is None:
            raise UpdateError("update() needs the params: pass them as update(grads, state, params)")
        first = state["steps_since_sync"] == 0
        last = state["steps_since_sync"] == sync_period - 1
        adv_updates, adv_state = adversarial_step(updates, state["adv_state"], params)
        opt_updates, opt_state = optimizer.update(updates, state["opt_state"], state["cache"])
        opt_updates = jax.tree.map(lambda c, p, u: c - p + u, state["cache"], params, opt_updates)
        after_sync = adv_optimizer.init(params) if reset_state else state["adv_state"]
        return _pick(last, opt_updates, adv_updates), {
            "steps_since_sync": (state["steps_since_sync"] + 1) % sync_period,
            "opt_state": _pick(last, opt_state, state["opt_state"]),
            "adv_state": _pick(last, after_sync, adv_state),
            "cache": _pick(first, params, state["cache"]),
        }

    def opaque(updates, state, step: Step):
        grad_fn: Optional[GradFn] = step.extra.get("grad_fn")
        if grad_fn is None:
            raise UpdateError(
                "opaque_mode=True: update() needs the keyword argument `grad_fn`, (params, i) -> gradients: "
                "call update(grads, state, params, grad_fn=grad_fn)"
            )
        adv_params, adv_updates, adv_state = step.params, updates, state["adv_state"]
        for i in range(sync_period - 1):
            adv_updates, adv_state = adversarial_step(adv_updates, adv_state, adv_params)
            adv_params = apply_updates(adv_params, adv_updates)
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(step.params)
        out, opt_state = optimizer.update(adv_updates, state["opt_state"], step.params)
        return out, {"steps_since_sync": zero_count(), "opt_state": opt_state, "adv_state": adv_state}

    fields: dict[str, Field] = {
        "steps_since_sync": Field(lambda params: zero_count(), like_params=False),
        "opt_state": Field(optimizer.init, like_params=False),
        "adv_state": Field(adv_optimizer.init, like_params=False),
    }
    if not opaque_mode:
        fields["cache"] = Field(lambda params: jax.tree.map(jnp.asarray, params))
    return primitive(opaque if opaque_mode else transparent, fields)
