"""Quasi-Newton preconditioners: L-BFGS's two-loop recursion over the last ``m`` secant pairs.

State fields carry optax's names (``params``, ``updates``, ``diff_params_memory``,
``diff_updates_memory``, ``weights_memory``); the memories are stacked along a leading
axis of length ``memory_size``, slot ``k % memory_size`` holding the pair of step ``k``.
"""

from __future__ import annotations

from typing import Annotated

import jax
import jax.numpy as jnp

from gradtx.base import UpdateError
from gradtx.hyperparams import Interval
from gradtx.numerics import abs_sq, explicit_layout, tree_add_scale, tree_vdot
from gradtx.scaling import global_norm
from gradtx.transform import Field, Transformation, declare, primitive

MemorySize = Annotated[int, Interval(1.0)]


def _stacked_zeros(memory_size: int):
    """``params -> a tree of zeros with a leading axis of memory_size``."""
    return lambda params: jax.tree.map(lambda p: jnp.zeros((memory_size, *jnp.shape(p)), jnp.asarray(p).dtype), params)


def _curvature_weight(s, y) -> jax.Array:
    """``rho = 1 / <y, s>`` (0 where ``<y, s> = 0``)."""
    ys = tree_vdot(y, s)
    return jnp.where(ys == 0.0, 0.0, 1.0 / ys)


def _squared_norm(tree) -> jax.Array:
    """``||y||^2``, summed leaf by leaf from 0."""
    return jnp.asarray(sum(jnp.sum(abs_sq(x)) for x in jax.tree.leaves(tree)))


def _identity_scale(s, y, updates, count) -> jax.Array:
    """``gamma = <s, y> / ||y||^2`` (1 where ``y = 0``); at the first step, when there is no
    pair yet, ``gamma = min(1, 1 / ||u||)``: the first step has length at most 1."""
    sq = _squared_norm(y)
    gamma = jnp.where(sq > 0.0, tree_vdot(y, s) / sq, 1.0)
    first = jnp.minimum(1.0, 1.0 / global_norm(jax.lax.stop_gradient(updates)))
    return jnp.where(count > 0, gamma, first)


def _slot(memory, i):
    """Pair ``i`` of a stacked memory."""
    return jax.tree.map(lambda x: x[i], memory)


def _cast_like(tree, like):
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def two_loop(updates, s_memory, y_memory, rhos, gamma, oldest: jax.Array):
    """``H u`` by Nocedal and Wright's Algorithm 7.4, ``H = V_k^T ... (gamma I) ... V_k +
    sum rho_i s_i s_i^T`` over the pairs in the memory, the oldest at slot ``oldest``::

        q = u;  for i newest..oldest: alpha_i = rho_i <s_i, q>;  q = q - alpha_i y_i
        r = gamma q;  for i oldest..newest: beta_i = rho_i <y_i, r>;  r = r + (alpha_i - beta_i) s_i
    """
    order = (oldest + jnp.arange(rhos.shape[0])) % rhos.shape[0]

    def backward(q, i):
        alpha = rhos[i] * tree_vdot(_slot(s_memory, i), q)
        return _cast_like(tree_add_scale(q, -alpha, _slot(y_memory, i)), q), alpha

    q, alphas = jax.lax.scan(backward, updates, order, reverse=True)
    r = jax.tree.map(lambda x: gamma * x, q)

    def forward(r, i_alpha):
        i, alpha = i_alpha
        beta = rhos[i] * tree_vdot(_slot(y_memory, i), r)
        return _cast_like(tree_add_scale(r, alpha - beta, _slot(s_memory, i)), r), beta

    r, _ = jax.lax.scan(forward, r, (order, alphas))
    return r


def _remember(memory, slot, pair):
    """``memory[slot] = pair`` on each stacked leaf, laid out as the memory (on Explicit mesh
    axes the write names where its result lives: ``numerics.explicit_layout``)."""
    return jax.tree.map(lambda m, x: m.at[slot].set(x, out_sharding=explicit_layout(m)), memory, pair)


@declare
def scale_by_lbfgs(memory_size: MemorySize = 10, scale_init_precond: bool = True) -> Transformation:
    """``s = p - p_prev, y = u - u_prev, rho = 1 / <y, s> ; u -> H u`` (L-BFGS's two-loop recursion).

    ``H`` is the L-BFGS inverse-Hessian approximation from the last ``memory_size`` pairs
    ``(s, y)`` (``two_loop``), started from ``gamma I`` with ``gamma = <s, y> / ||y||^2``
    of the newest pair (Nocedal and Wright, eq. 7.20), or ``gamma = 1`` with
    ``scale_init_precond=False``. At the first step there is no pair and ``H = gamma I``
    with optax's heuristic ``gamma = min(1, 1 / ||u||)``. The pair of a step enters the
    memory at the next step, when its params and updates are known: chained before a line
    search, the memory only ever holds accepted steps.

    Args:
      memory_size: the number of pairs kept, >= 1.
      scale_init_precond: start the recursion from ``gamma I`` (else from ``I``).

    State: ``count, params, updates, diff_params_memory, diff_updates_memory,
    weights_memory`` (optax's names: the previous params and updates, the stacked ``s``,
    ``y`` and ``rho``).
    """

    def apply(updates, state, step):
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")
        count = step.count
        started = count > 0
        s = jax.tree.map(lambda p, q: jnp.where(started, p - q, 0), step.params, state["params"])
        y = jax.tree.map(lambda u, v: jnp.where(started, u - v, 0), updates, state["updates"])
        rho = jnp.where(started, _curvature_weight(s, y), 0)
        slot = (count - 1) % memory_size
        memory = {
            "diff_params_memory": _remember(state["diff_params_memory"], slot, s),
            "diff_updates_memory": _remember(state["diff_updates_memory"], slot, y),
            "weights_memory": state["weights_memory"].at[slot].set(rho),
        }
        gamma = _identity_scale(s, y, updates, count) if scale_init_precond else 1.0
        direction = two_loop(
            updates,
            memory["diff_params_memory"],
            memory["diff_updates_memory"],
            memory["weights_memory"],
            gamma,
            count % memory_size,
        )
        return direction, {"params": step.params, "updates": updates, **memory}

    stacked = Field(_stacked_zeros(memory_size), like_params=False)
    return primitive(
        apply,
        {
            "params": lambda params: jax.tree.map(jnp.zeros_like, params),
            "updates": lambda params: jax.tree.map(jnp.zeros_like, params),
            "diff_params_memory": stacked,
            "diff_updates_memory": stacked,
            "weights_memory": Field(lambda params: jnp.zeros(memory_size), like_params=False),
        },
        uses_count=True,
    )
