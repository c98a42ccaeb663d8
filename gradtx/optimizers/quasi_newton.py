"""Quasi-Newton methods: a direction preconditioned by an inverse-Hessian approximation
built from past steps, scaled by a line search."""

from __future__ import annotations

from typing import Optional

from gradtx.base import GradientTransformation
from gradtx.combine import chain, identity
from gradtx.hyperparams import LearningRate
from gradtx.linesearch import scale_by_zoom_linesearch
from gradtx.quasi_newton import MemorySize, scale_by_lbfgs
from gradtx.scaling import scale, scale_by_learning_rate
from gradtx.transform import Transformation, declare

DEFAULT_LINESEARCH = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
"""optax's default: the zoom search, at most 20 evaluations, each search starting from 1."""


@declare
def lbfgs(
    learning_rate: Optional[LearningRate] = None,
    memory_size: MemorySize = 10,
    scale_init_precond: bool = True,
    linesearch: Optional[GradientTransformation] = DEFAULT_LINESEARCH,
) -> Transformation:
    """L-BFGS (Liu and Nocedal 1989, "On the limited memory BFGS method for large scale
    optimization", https://doi.org/10.1007/BF01589116; Nocedal and Wright, Numerical
    Optimization, Algorithms 7.4 and 7.5)::

        s_i = p_{i+1} - p_i,  y_i = g_{i+1} - g_i,  rho_i = 1 / <y_i, s_i>   (the last m pairs)
        H = V_{k-1}^T ... V_{k-m}^T (gamma I) V_{k-m} ... V_{k-1} + sum_i rho_i s_i s_i^T,  V_i = I - rho_i y_i s_i^T
        gamma = <s_{k-1}, y_{k-1}> / ||y_{k-1}||^2   (1 with scale_init_precond=False; min(1, 1/||g||) at k = 0)
        d = -lr H g                                   (lr = 1 without a learning_rate)
        p = p - lr * eta H g                          (eta from the line search, 1 without one)

    ``H g`` is the two-loop recursion (``scale_by_lbfgs``); the default line search is the
    zoom search for the strong Wolfe conditions (``scale_by_zoom_linesearch``, at most 20
    evaluations, starting from 1 at every step), so that ``update`` takes the objective::

        value, grad = optax.value_and_grad_from_state(f)(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)

    (the state keeps ``value`` and ``grad`` at the accepted point, where optax looks for
    them). ``linesearch=None`` makes it a plain gradient transformation.

    Chain: ``scale_by_lbfgs(memory_size, scale_init_precond) -> scale(-1)`` (or
    ``scale_by_learning_rate(learning_rate)``) ``-> linesearch``. State: ``count, params,
    updates, diff_params_memory, diff_updates_memory, weights_memory, learning_rate, value,
    grad, num_linesearch_steps, decrease_error, curvature_error`` (optax's names; from
    ``learning_rate`` on, the line search's).

    >>> import jax.numpy as jnp, optax, gradtx
    >>> f = lambda x: jnp.sum(x**2)
    >>> opt, params = gradtx.lbfgs(), jnp.array([1.0, 2.0, 3.0])
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     value, grad = optax.value_and_grad_from_state(f)(params, state=state)
    ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    ...     params = gradtx.apply_updates(params, updates)
    >>> print(f"{f(params):.1e}")  # the quadratic's minimum, in two steps
    7.5e-14
    """
    direction = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        direction,
        identity() if linesearch is None else linesearch,
    )
