"""Rescalers and preconditioners of the other first-order methods: Rprop's per-element step
sizes, the Polyak step size, the optimistic correction, and gradient noise.

State fields carry optax's names (``step_sizes``, ``prev_updates``, ``previous_gradient``,
``rng_key``); the step count (``count``) is the whole transformation's.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gradtx import _tree
from gradtx.base import UpdateError
from gradtx.hyperparams import Interval, NonNegative, OneOf, Positive, Real
from gradtx.numerics import abs_sq, safe_increment
from gradtx.transform import Field, Transformation, declare, primitive

EtaMinus = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True, high_open=True)]
"""Rprop's shrink factor, in (0, 1)."""
EtaPlus = Annotated[ArrayLike, Interval(1.0, low_open=True)]
"""Rprop's growth factor, > 1."""
PolyakVariant = Annotated[str, OneOf(("sps", "sps+"))]
Key = Union[jax.Array, int, None]


# --- Rprop ------------------------------------------------------------------------------


def check_step_bounds(call: str, min_step_size: Any, max_step_size: Any) -> None:
    """``max_step_size >= min_step_size``, a rule across two arguments (skipped for traced values)."""
    if isinstance(min_step_size, jax.core.Tracer) or isinstance(max_step_size, jax.core.Tracer):
        return
    # numpy: inside jit or vmap a jnp comparison of two constants is staged, not known
    if not bool(np.all(np.asarray(max_step_size) >= np.asarray(min_step_size))):
        raise ValueError(
            f"gradtx.{call}(max_step_size={max_step_size!r}): max_step_size must be >= min_step_size "
            f"({min_step_size!r})"
        )


def _per_component(fn: Callable[..., tuple], *leaves: jax.Array) -> tuple:
    """``fn`` of real leaves; for complex leaves, of the real and the imaginary parts apart
    (as ``torch.optim.Rprop`` does with ``view_as_real``), put back together."""
    if not jnp.iscomplexobj(leaves[0]):
        return fn(*leaves)
    real, imag = fn(*(x.real for x in leaves)), fn(*(x.imag for x in leaves))
    return tuple(jax.lax.complex(r, i) for r, i in zip(real, imag))


def _initial_step_sizes(params: Any, learning_rate: Any) -> Any:
    """``learning_rate`` everywhere (in both parts of a complex leaf)."""

    def leaf(p):
        value = learning_rate * (1 + 1j) if jnp.iscomplexobj(p) else learning_rate
        return jnp.full_like(p, value)

    return jax.tree.map(leaf, params)


@declare
def scale_by_rprop(
    learning_rate: NonNegative,
    eta_minus: EtaMinus = 0.5,
    eta_plus: EtaPlus = 1.2,
    min_step_size: Positive = 1e-6,
    max_step_size: Positive = 50.0,
) -> Transformation:
    """``s = u * prev_updates ; step_sizes = clip(step_sizes * eta(s), min_step_size, max_step_size) ;
    u -> prev_updates = where(s < 0, 0, step_sizes * sign(u))``, ``eta(s)`` = ``eta_plus``
    where ``s > 0``, ``eta_minus`` where ``s < 0``, 1 where ``s == 0``.

    Rprop's per-element step sizes (Riedmiller & Braun 1993, without weight-backtracking;
    ``torch.optim.Rprop``): each element moves by its own step size against the sign of its
    gradient; the step size grows while the sign holds and shrinks when it flips, and the
    element does not move on the step where it flips (nor does the next step compare with
    it). The output is the step taken this step, *not* negated (``rprop`` flips the sign).

    optax's ``scale_by_rprop`` returns each step one call late (its first output is zero)
    and does not clip an initial ``learning_rate`` outside the bounds; its state holds the
    same values as this one.

    Args:
      learning_rate: the initial step size of every element.
      eta_minus: the factor of a step size whose gradient's sign flipped, in (0, 1).
      eta_plus: the factor of a step size whose gradient's sign held, > 1.
      min_step_size: the step sizes' lower bound, > 0.
      max_step_size: the step sizes' upper bound, >= ``min_step_size``.

    State: ``step_sizes, prev_updates`` (the last output; complex leaves: a step size per part).
    """
    check_step_bounds("scale_by_rprop", min_step_size, max_step_size)

    def leaf(g, prev, size):
        s = g * prev
        factor = jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1.0))
        size = jnp.clip(size * factor, min_step_size, max_step_size).astype(size.dtype)
        return jnp.where(s < 0, 0, size * jnp.sign(g)).astype(g.dtype), size

    def apply(updates, state, step):
        both = jax.tree.map(
            lambda g, p, z: _per_component(leaf, g, p, z), updates, state["prev_updates"], state["step_sizes"]
        )
        out = jax.tree.map(lambda _, pair: pair[0], updates, both)
        sizes = jax.tree.map(lambda _, pair: pair[1], updates, both)
        return out, {"step_sizes": sizes, "prev_updates": _tree.cast_like(out, state["prev_updates"])}

    return primitive(
        apply,
        {"step_sizes": lambda params: _initial_step_sizes(params, learning_rate), "prev_updates": _tree.zeros_like},
    )


# --- the Polyak step size ----------------------------------------------------------------


def squared_norm(updates: Any) -> jax.Array:
    """``sum over leaves of sum |u|^2`` (optax's ``tree.norm(squared=True)`` order)."""
    return jnp.asarray(sum(jnp.sum(abs_sq(g)) for g in jax.tree.leaves(updates)))


@declare
def scale_by_polyak(
    f_min: Real = 0.0, max_learning_rate: NonNegative = 1.0, eps: NonNegative = 0.0, variant: PolyakVariant = "sps"
) -> Transformation:
    """``u -> min(gap / (||u||^2 + eps), max_learning_rate) * u`` with ``gap = value - f_min``
    (``max(gap, 0)`` for ``"sps+"``).

    The Polyak step size (Loizou et al. 2021, SPS_max; ``"sps+"``: Garrigos et al. 2023),
    ``||u||`` the norm over all leaves. ``update`` takes the loss as the keyword argument
    ``value`` (``update(grads, state, params, value=loss)``), as optax's does. Where
    ``||u||^2 + eps`` is at most float64's machine epsilon the step is 0 (optax's guard).

    Args:
      f_min: a lower bound on the loss (``f*``).
      max_learning_rate: the largest step size.
      eps: added to the squared norm in the denominator.
      variant: ``"sps"`` or ``"sps+"`` (the gap clipped at 0).

    State: none.
    """

    def apply(updates, state, step):
        if "value" not in step.extra:
            raise UpdateError(
                "update() needs the loss as the keyword argument `value`: call update(grads, state, params, value=loss)"
            )
        sq_norm = squared_norm(updates)
        gap = jnp.asarray(step.extra["value"] - f_min).astype(sq_norm.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        size = jnp.where(
            sq_norm + eps <= jnp.finfo(float).eps,
            jnp.array(0.0),
            jnp.minimum(gap / (sq_norm + eps), max_learning_rate),
        )
        return jax.tree.map(lambda g: (size * g).astype(g.dtype), updates), {}

    return primitive(apply)


# --- the optimistic correction ----------------------------------------------------------------


@declare
def scale_by_optimistic_gradient(alpha: NonNegative = 1.0, beta: NonNegative = 1.0) -> Transformation:
    """``u -> (alpha + beta) * u - beta * previous_gradient ; previous_gradient = u``
    (``previous_gradient = u`` at the first step).

    The optimistic (extrapolated) direction of generalised optimistic gradient descent
    (Mokhtari et al. 2019): the current input plus ``beta`` times its change since the
    previous step. At the first step there is no previous input and the output is
    ``alpha * u`` (optax's convention, optax issue 1082). The first step is read from the
    transformation's one step count (optax keeps a flag ``is_initial_step``).

    Args:
      alpha: the coefficient of the current input.
      beta: the coefficient of its change (optimism, or negative momentum).

    State: ``count, previous_gradient`` (the previous input).
    """

    def apply(updates, state, step):
        first = step.count == 0

        def leaf(g, prev):
            prev = jnp.where(first, g, prev)
            return ((alpha + beta) * g - beta * prev).astype(g.dtype)

        out = jax.tree.map(leaf, updates, state["previous_gradient"])
        return out, {"previous_gradient": _tree.cast_like(updates, state["previous_gradient"])}

    return primitive(apply, {"previous_gradient": _tree.zeros_like}, uses_count=True)


# --- gradient noise -------------------------------------------------------------------------


def canonical_key(key: Key) -> jax.Array:
    """A typed PRNG key from a typed key, or from an int seed (``None``: 0), as optax makes it."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.key(0 if key is None else key)


def normal_like(key: jax.Array, tree: Any) -> Any:
    """Standard normal noise shaped like ``tree``, each leaf in its dtype, from ``key``
    split once per leaf in leaf order (optax's ``tree.random_like``)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(g), g.dtype) for k, g in zip(keys, leaves)])


@declare
def add_noise(eta: NonNegative, gamma: NonNegative, key: Key = None) -> Transformation:
    """``rng_key, k = split(rng_key) ; u -> u + sqrt(eta / t^gamma) * N(0, 1)``, ``t`` the step
    (from 1), the noise drawn from ``k``.

    Annealed Gaussian gradient noise (Neelakantan et al. 2015): the variance decays as
    ``eta / t^gamma``. The key is split as optax splits it, so the same key gives optax's
    noise: ``rng_key`` splits into the next ``rng_key`` and a sample key, which splits
    into one key per leaf (in leaf order).

    Args:
      eta: the variance at the first step.
      gamma: the decay exponent of the variance.
      key: a typed PRNG key (``jax.random.key``) or an int seed; ``None`` is seed 0, as
        in optax (whose deprecated ``seed`` argument gradtx does not take).

    State: ``count, rng_key`` (one typed key, not shaped like the params).
    """

    def apply(updates, state, step):
        std = jnp.asarray(jnp.sqrt(eta / safe_increment(step.count) ** gamma))
        rng_key, sample_key = jax.random.split(state["rng_key"])
        noise = normal_like(sample_key, updates)
        return jax.tree.map(lambda g, n: (g + std * n).astype(g.dtype), updates, noise), {"rng_key": rng_key}

    return primitive(apply, {"rng_key": Field(lambda params: canonical_key(key), like_params=False)}, uses_count=True)
