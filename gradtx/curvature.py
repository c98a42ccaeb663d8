"""Curvature estimates: Hutchinson's estimator of the Hessian's diagonal, and Sophia's stages
that average it and turn it into a denominator (``gradtx.sophia`` is their chain).

Hutchinson's identity: for a random probe ``z`` with ``E[z z^T] = I``, ``E[z * (H z)] =
diag(H)``. With Rademacher probes (``z_i = +-1``) each sample is ``diag(H) + sum_{j != i}
H_ij z_i z_j``: exact when ``H`` is diagonal, which Gaussian probes are not (``H_ii z_i^2``).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

import jax
import jax.numpy as jnp

from gradtx import _tree
from gradtx.base import UpdateError
from gradtx.hyperparams import Decay, NonNegative, Positive
from gradtx.numerics import ema
from gradtx.transform import Field, Transformation, declare, primitive, update_inner
from gradtx.wrappers import Inner, _Integer

__all__ = ["hessian_diagonal_ema", "hutchinson_estimator_diag_hessian", "sophia_denominator"]

Seed = Optional[Union[jax.Array, int]]
"""A PRNG key (typed, ``jax.random.key``, or raw, ``jax.random.PRNGKey``) or an int seed."""
Interval = Annotated[int, _Integer(1)]
"""A number of steps >= 1."""


def as_key(key: Seed) -> jax.Array:
    """A typed PRNG key: a typed key as it is, a raw ``uint32[2]`` key wrapped (the same
    random bits), an int seed through ``jax.random.key``; ``None`` is ``PRNGKey(0)``, optax's
    default."""
    if key is None:
        key = 0
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array) or hasattr(key, "shape"):
        return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    return jax.random.key(key)


def rademacher_like(key: jax.Array, tree: Any) -> Any:
    """``+-1`` with probability 1/2 each, shaped like ``tree``, each leaf in its dtype; ``key``
    split once per leaf in leaf order, drawn in float32 (optax's ``tree.random_like(key,
    params, rademacher, float32)``, then cast)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    signs = [jax.random.rademacher(k, jnp.shape(x), jnp.float32).astype(x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, signs)


@declare
def hutchinson_estimator_diag_hessian(random_seed: Seed = None) -> Transformation:
    """``key, k = split(key) ; u -> z * (H z)``, ``z ~ Rademacher(k)`` like the params, ``H = hessian(obj_fn)``.

    An unbiased estimate of the Hessian's diagonal from one Hessian-vector product
    (Hutchinson 1989; Sophia-H, Liu et al. 2023, https://arxiv.org/abs/2305.14342, eq. 7),
    exact when the Hessian is diagonal. The incoming updates are ignored; ``update`` needs
    the params and ``obj_fn=`` (``params -> scalar loss``) as a keyword argument.

    Rademacher probes as optax 0.2.8 (the paper's and Levanter's are Gaussian); the key is
    split as optax splits it, so the same key gives optax's probes: the state key splits
    into the next key and a sample key, which splits into one key per leaf. Each probe
    has its param's dtype (optax casts all to the lowest dtype among the params).

    Args:
      random_seed: a typed or raw PRNG key or an int seed; ``None`` is ``PRNGKey(0)``.

    State: ``key`` (one typed key, not shaped like the params).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.hutchinson_estimator_diag_hessian()
    >>> p = jnp.array([1.0, 2.0])
    >>> obj_fn = lambda x: jnp.sum(jnp.array([3.0, 5.0]) * x**2)  # diag(H) = 6, 10
    >>> tx.update(p, tx.init(p), p, obj_fn=obj_fn)[0]
    Array([ 6., 10.], dtype=float32)
    """

    def apply(updates, state, step):
        obj_fn = step.extra.get("obj_fn")
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params, obj_fn=...))")
        if obj_fn is None:
            raise UpdateError("update() needs the objective as the keyword obj_fn (params -> scalar loss)")
        key, sample_key = jax.random.split(state["key"])
        probes = rademacher_like(sample_key, step.params)
        hvp = jax.jvp(jax.grad(obj_fn), (step.params,), (probes,))[1]
        return jax.tree.map(lambda h, z: h * z, hvp, probes), {"key": key}

    return primitive(apply, {"key": Field(lambda params: as_key(random_seed), like_params=False)})


HUTCHINSON = hutchinson_estimator_diag_hessian()
"""The default estimator of ``hessian_diagonal_ema`` and ``sophia`` (optax's default, seed 0)."""


@declare
def hessian_diagonal_ema(
    b2: Decay = 0.99,
    update_interval: Interval = 10,
    hessian_diagonal_fn: Inner = HUTCHINSON,
) -> Transformation:
    """``u -> nu ; nu = b2 * nu + (1 - b2) * h`` at steps ``1, 1 + k, 1 + 2k, ...``, ``h = hessian_diagonal_fn(u, p)``.

    Sophia's running estimate of the Hessian's diagonal, refreshed every
    ``k = update_interval`` steps; the output is the estimate *before* this step's
    refresh (optax's order: the step that refreshes it still divides by the previous one).
    ``hessian_diagonal_fn`` is a transformation ``(grads, params, **extra) -> diag(H)``
    (default: ``hutchinson_estimator_diag_hessian()``, as optax), which receives ``update``'s extra
    keyword arguments (``obj_fn``); it runs only at the refresh steps (``lax.cond``).

    State: ``count, nu, hessian_fn_state`` (the estimator's whole state).
    """
    estimator = hessian_diagonal_fn

    def apply(updates, state, step):
        def refresh(fn_state, nu):
            diag, fn_state = update_inner(estimator, updates, fn_state, step)
            return fn_state, jax.tree.map(lambda h, v: ema(h, v, b2).astype(v.dtype), diag, nu)

        fn_state, nu = jax.lax.cond(
            step.count % update_interval == 0,
            refresh,
            lambda fn_state, nu: (fn_state, nu),
            state["hessian_fn_state"],
            state["nu"],
        )
        return _tree.cast_like(state["nu"], updates), {"nu": nu, "hessian_fn_state": fn_state}

    fields = {
        "nu": Field(_tree.zeros_like),
        "hessian_fn_state": Field(estimator.init, like_params=False),
    }
    return primitive(apply, fields, uses_count=True)


@declare
def sophia_denominator(gamma: Positive = 0.01, eps: NonNegative = 1e-8) -> Transformation:
    """``u -> max(gamma * u, eps)`` element-wise.

    Sophia's denominator from the Hessian-diagonal estimate ``u``: a curvature below
    ``eps / gamma`` (or negative) is floored, so that the step it divides is then bounded
    by the clip instead of flipping sign."""

    def apply(updates, state, step):
        return jax.tree.map(lambda h: jnp.maximum(gamma * h, eps).astype(h.dtype), updates), {}

    return primitive(apply)
