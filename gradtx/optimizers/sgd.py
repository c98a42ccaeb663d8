"""SGD and momentum: heavy-ball, Nesterov, and the averaged form."""

from __future__ import annotations

from typing import Optional

from gradtx.combine import chain, identity
from gradtx.hyperparams import AccumulatorDtype, Decay, LearningRate
from gradtx.moments import nesterov_trace, scale_by_ema, trace
from gradtx.scaling import scale_by_learning_rate
from gradtx.transform import Transformation, declare


def momentum_stage(momentum: Optional[Decay], nesterov: bool, accumulator_dtype=None) -> Transformation:
    """The optional momentum stage: none, heavy-ball ``trace`` or ``nesterov_trace``."""
    if momentum is None:
        return identity()
    return (nesterov_trace if nesterov else trace)(momentum, accumulator_dtype=accumulator_dtype)


@declare
def sgd(
    learning_rate: LearningRate,
    momentum: Optional[Decay] = None,
    nesterov: bool = False,
    accumulator_dtype: AccumulatorDtype = None,
) -> Transformation:
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    Without momentum: ``p = p - lr * g``.
    Heavy-ball (PyTorch's and optax's form): ``v = momentum * v + g ; p = p - lr * v``.
    Nesterov (Sutskever et al. 2013, after the change of variables):
    ``v = momentum * v + g ; p = p - lr * (g + momentum * v)``.

    Chain: ``[trace | nesterov_trace] -> scale_by_learning_rate``.
    State: ``trace`` with momentum, ``count`` with a schedule.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.ones(2)}
    >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params))
    >>> gradtx.apply_updates(params, updates)["w"]
    Array([0.9, 0.9], dtype=float32)
    """
    return chain(momentum_stage(momentum, nesterov, accumulator_dtype), scale_by_learning_rate(learning_rate))


@declare
def averaged_momentum(
    learning_rate: LearningRate, beta: Decay = 0.9, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """Momentum in its averaged form (Ng's course): ``v = beta * v + (1 - beta) * g ;
    p = p - lr * v``.

    The same path as heavy-ball ``sgd(lr * (1 - beta), momentum=beta)``; no bias correction.
    Chain: ``scale_by_ema(beta) -> scale_by_learning_rate``. State: ``mu``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.averaged_momentum(1.0, beta=0.9)
    >>> updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
    >>> updates
    Array([-0.1, -0.1], dtype=float32)
    """
    return chain(scale_by_ema(beta, accumulator_dtype=accumulator_dtype), scale_by_learning_rate(learning_rate))
