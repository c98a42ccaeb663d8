"""Differentially private aggregation (DP-SGD), and optax.contrib's
``split_real_and_imaginary``. (optax.contrib's ``normalize`` is in ``gradtx/sam.py``, beside
the SAM that uses it.)"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from gradtx.base import UpdateError
from gradtx.clipping import per_example_global_norm_clip
from gradtx.combine import chain, identity
from gradtx.first_order import canonical_key
from gradtx.hyperparams import Decay, LearningRate, NonNegative, Positive
from gradtx.moments import nesterov_trace, trace
from gradtx.scaling import scale_by_learning_rate
from gradtx.transform import Field, Transformation, declare, finish, primitive, update_inner
from gradtx.wrappers import Inner

__all__ = ["differentially_private_aggregate", "dpsgd", "split_real_and_imaginary"]

Key = Optional[Union[jax.Array, int]]
"""A typed PRNG key (``jax.random.key``) or an int seed; ``None`` is seed 0."""


def _batch_size(updates: Any) -> int:
    """The size of the batch axis that every leaf of per-example gradients has first."""
    shapes = [jnp.shape(g) for g in jax.tree.leaves(updates)]
    sizes = {s[0] if s else None for s in shapes}
    if len(sizes) != 1 or None in sizes:
        paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_flatten_with_path(updates)[0]]
        raise UpdateError(
            "the updates must be per-example gradients, every leaf with the batch axis first, of one size; "
            "got shapes " + ", ".join(f"{path}: {shape}" for path, shape in zip(paths, shapes))
        )
    return shapes[0][0]


@declare
def differentially_private_aggregate(
    l2_norm_clip: Positive, noise_multiplier: NonNegative, key: Key = None
) -> Transformation:
    """``rng_key, k_1..k_n = split(rng_key, n + 1) ; (g_1..g_B) -> (sum_b clip_C(g_b) + C * sigma * N(0, 1)) / B``.

    The Gaussian mechanism of DP-SGD (Abadi et al. 2016, https://arxiv.org/abs/1607.00133,
    Algorithm 1): every leaf of the updates holds the batch's per-example gradients along
    axis 0 (``jax.vmap`` of the gradient); each example's whole gradient is clipped to norm
    ``C = l2_norm_clip`` (``per_example_global_norm_clip``), the clipped gradients are
    summed, Gaussian noise of standard deviation ``C * sigma`` (``sigma =
    noise_multiplier``) is added to each leaf, and the result divided by the batch size
    ``B``. Keep it first in a chain: what follows sees one averaged gradient. Call
    ``update(per_example_grads, state)`` without params: gradtx checks the updates against
    the params' shapes before anything runs, and per-example gradients have a batch axis
    more (optax ignores the params).

    The key is split as optax splits it (into the next key and one key per leaf, in one
    ``split``), so the same key or seed gives optax's noise. (``add_noise`` splits in two
    steps, as optax's ``add_noise`` does, which is other noise.) optax's deprecated ``seed``
    argument is ``key`` here.

    State: ``rng_key`` (one typed key).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.differentially_private_aggregate(l2_norm_clip=1.0, noise_multiplier=0.0)
    >>> per_example = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    >>> [round(float(x), 4) for x in tx.update(per_example, tx.init(jnp.zeros(2)))[0]]  # (g_1 / 5 + g_2) / 2
    [0.45, 0.6]
    """
    noise_std = l2_norm_clip * noise_multiplier

    def apply(updates, state, step):
        leaves, treedef = jax.tree.flatten(updates)
        batch = _batch_size(updates)
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        rng_key, *keys = jax.random.split(state["rng_key"], len(leaves) + 1)
        noised = [
            ((g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch).astype(g.dtype)
            for g, k in zip(clipped, keys)
        ]
        return jax.tree.unflatten(treedef, noised), {"rng_key": rng_key}

    return primitive(apply, {"rng_key": Field(lambda params: canonical_key(key), like_params=False)})


@declare
def dpsgd(
    learning_rate: LearningRate,
    l2_norm_clip: Positive,
    noise_multiplier: NonNegative,
    seed: int,
    momentum: Optional[Decay] = None,
    nesterov: bool = False,
) -> Transformation:
    """DP-SGD (Abadi et al. 2016, https://arxiv.org/abs/1607.00133, Algorithm 1), as optax 0.2.8::

        g = (sum_b g_b * min(1, C / ||g_b||) + C * sigma * N(0, I)) / B
        v = momentum * v + g                     (without momentum: v = g)
        p = p - lr * v                           (Nesterov: p - lr * (g + momentum * v))

    ``C = l2_norm_clip``, ``sigma = noise_multiplier``, ``B`` the batch; the updates are
    per-example gradients (batch axis first, every leaf), passed without params
    (``opt.update(per_example_grads, state)``: see ``differentially_private_aggregate``).
    ``seed`` seeds the noise, as in optax (the same seed gives optax's noise).

    Chain: ``differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed)
    -> trace(momentum)`` (``nesterov_trace``; nothing without momentum)
    ``-> scale_by_learning_rate``, the stages after the aggregation checked against one
    example's shapes. State: ``rng_key`` (and ``trace`` with momentum).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
    >>> per_example = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    >>> [round(float(x), 4) for x in opt.update(per_example, opt.init(jnp.zeros(2)))[0]]  # -lr * (g_1 / 5 + g_2) / 2
    [-0.045, -0.06]
    """
    velocity = identity() if momentum is None else nesterov_trace(momentum) if nesterov else trace(momentum)
    return chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
        after_aggregation(chain(velocity, scale_by_learning_rate(learning_rate))),
    )


def after_aggregation(t: Transformation) -> Transformation:
    """``t`` with its params-shaped fields exempt from the check against the incoming
    updates: after ``differentially_private_aggregate`` they are shaped like one example,
    the incoming per-example updates have a batch axis more."""
    stage = t.stage
    fields = tuple(dataclasses.replace(k, field=k.field._replace(like_params=False)) for k in stage.fields)
    return finish(dataclasses.replace(stage, fields=fields))


class _RealPair(NamedTuple):
    """A complex leaf split in two real ones (optax's ``SplitRealAndImaginaryArrays``)."""

    real: Any
    imaginary: Any


def _split(x: Any) -> Any:
    return _RealPair(x.real, x.imag) if jnp.iscomplexobj(x) else x


def _merge(x: Any) -> Any:
    return jax.lax.complex(x.real, x.imaginary) if isinstance(x, _RealPair) else x


@declare
def split_real_and_imaginary(inner: Inner) -> Transformation:
    """``u -> merge(inner(split(u)))``: a complex leaf ``a + ib`` goes to ``inner`` as two real leaves ``(a, b)``.

    The inner transformation sees each complex parameter as a pair of real ones (its
    ``|g|^2`` statistics per part, not per complex number), and its two real outputs are
    put back together as ``real + i * imaginary``; real leaves pass through as they are.
    optax.contrib's ``split_real_and_imaginary``. (JAX's gradient of a real loss in a
    complex parameter is the conjugate of PyTorch's; see optax's note.)

    State: ``inner_state`` (the inner transformation's, over the split tree).

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.split_real_and_imaginary(gradtx.sign_sgd(0.1))
    >>> p = jnp.array([1.0 + 2.0j])
    >>> tx.update(jnp.array([3.0 - 0.5j]), tx.init(p), p)[0]  # -lr * (sign(3) + i sign(-0.5))
    Array([-0.1+0.1j], dtype=complex64)
    """

    def apply(updates, state, step):
        params = None if step.params is None else jax.tree.map(_split, step.params)
        split = jax.tree.map(_split, updates)
        out, inner_state = update_inner(inner, split, state["inner_state"], step._replace(params=params))
        merged = jax.tree.map(_merge, out, is_leaf=lambda x: isinstance(x, _RealPair))
        return merged, {"inner_state": inner_state}

    init = Field(lambda params: inner.init(jax.tree.map(_split, params)), like_params=False)
    return primitive(apply, {"inner_state": init})
