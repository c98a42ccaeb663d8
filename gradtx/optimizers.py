"""The named optimizers. Each is only a chain of primitives: no new math lives here.

Argument names, order and defaults follow optax wherever optax has the same optimizer,
so ``gradtx.X(**kw)`` and ``optax.X(**kw)`` are interchangeable and give the same numbers.
In the formulas ``g`` is the gradient, ``t`` the step (from 1) and ``lr`` the learning rate.
"""

from __future__ import annotations

from typing import Any, Optional

import jax.numpy as jnp

from gradtx import _checks
from gradtx.base import GradientTransformation, ScalarOrSchedule, identity
from gradtx.combine import chain, fork
from gradtx.moments import (bias_correct, infinity_norm, interpolated_ema, nesterov_trace, running_max,
                            scale_by_ema, second_moment, trace)
from gradtx.numerics import ema
from gradtx.scaling import (MaskOrFn, add_decayed_weights, scale_by_adadelta, scale_by_learning_rate,
                            scale_by_rms, scale_by_sign, scale_by_stddev, scale_by_sum_of_squares, sqrt_eps)


def _momentum(where: str, momentum: Optional[float], nesterov: bool, accumulator_dtype=None):
    """The optional momentum stage: none, heavy-ball ``trace`` or ``nesterov_trace``."""
    if momentum is None:
        return identity()
    _checks.in_interval(where, "momentum", momentum)
    return (nesterov_trace if nesterov else trace)(momentum, accumulator_dtype=accumulator_dtype)


def sgd(learning_rate: ScalarOrSchedule, momentum: Optional[float] = None, nesterov: bool = False,
        accumulator_dtype: Optional[Any] = None) -> GradientTransformation:
    """Stochastic gradient descent, with optional heavy-ball or Nesterov momentum.

    Without momentum: ``p = p - lr * g``.
    Heavy-ball (PyTorch's and optax's form): ``v = momentum * v + g ; p = p - lr * v``.
    Nesterov (Sutskever et al. 2013, after the change of variables):
    ``v = momentum * v + g ; p = p - lr * (g + momentum * v)``.

    Chain: ``[trace | nesterov_trace] -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.ones(2)}
    >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params))
    >>> gradtx.apply_updates(params, updates)["w"]
    Array([0.9, 0.9], dtype=float32)
    """
    _checks.non_negative("sgd", "learning_rate", learning_rate)
    return chain(_momentum("sgd", momentum, nesterov, accumulator_dtype),
                 scale_by_learning_rate(learning_rate))


def averaged_momentum(learning_rate: ScalarOrSchedule, beta: float = 0.9,
                      accumulator_dtype: Optional[Any] = None) -> GradientTransformation:
    """Momentum in its averaged form (Ng's course): ``v = beta * v + (1 - beta) * g ;
    p = p - lr * v``.

    The same path as heavy-ball ``sgd(lr * (1 - beta), momentum=beta)``; no bias correction.
    Chain: ``scale_by_ema(beta) -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.averaged_momentum(1.0, beta=0.9)
    >>> updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
    >>> updates
    Array([-0.1, -0.1], dtype=float32)
    """
    _checks.non_negative("averaged_momentum", "learning_rate", learning_rate)
    _checks.in_interval("averaged_momentum", "beta", beta)
    return chain(scale_by_ema(beta, accumulator_dtype=accumulator_dtype), scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8,
            initial_scale: float = 0.0, eps_in_sqrt: bool = True, centered: bool = False,
            momentum: Optional[float] = None, nesterov: bool = False,
            bias_correction: bool = False) -> GradientTransformation:
    """RMSprop (Hinton's lecture 6e): ``s = decay * s + (1 - decay) * g^2 ;
    p = p - lr * g / sqrt(s + eps)``.

    ``eps_in_sqrt=False`` gives PyTorch's ``g / (sqrt(s) + eps)``; ``centered`` divides by
    the standard deviation ``sqrt(s - m^2 + eps)`` with ``m = ema(g)`` (Graves 2013);
    ``momentum`` adds a trace *after* the learning rate, as optax does; ``initial_scale``
    is the value ``s`` starts from (TensorFlow uses 1).

    Chain: ``[scale_by_rms | scale_by_stddev] -> scale_by_learning_rate -> [trace]``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.rmsprop(0.01, decay=0.9)
    >>> updates, _ = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)  # -lr * g / sqrt(0.1 * g^2) = -lr * sqrt(10)
    Array([-0.031623], dtype=float32)
    """
    _checks.non_negative("rmsprop", "learning_rate", learning_rate)
    _checks.in_interval("rmsprop", "decay", decay)
    _checks.non_negative("rmsprop", "eps", eps)
    precondition = scale_by_stddev if centered else scale_by_rms
    return chain(
        precondition(decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt,
                     bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
        _momentum("rmsprop", momentum, nesterov))


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value: float = 0.1,
            eps: float = 1e-7) -> GradientTransformation:
    """Adagrad (Duchi et al. 2011): ``s = s + g^2 ; p = p - lr * g / sqrt(s + eps)``,
    with ``s`` starting at ``initial_accumulator_value`` (optax and TensorFlow: 0.1;
    PyTorch: 0).

    Chain: ``scale_by_sum_of_squares -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates  # the first step is -lr * sign(g)
    Array([-1.], dtype=float32)
    """
    _checks.non_negative("adagrad", "learning_rate", learning_rate)
    return chain(scale_by_sum_of_squares(initial_accumulator_value, eps),
                 scale_by_learning_rate(learning_rate))


def adadelta(learning_rate: Optional[ScalarOrSchedule] = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: ScalarOrSchedule = 0.0, weight_decay_mask: MaskOrFn = None) -> GradientTransformation:
    """Adadelta (Zeiler 2012)::

        e_g = rho * e_g + (1 - rho) * g^2
        d   = sqrt(e_x + eps) / sqrt(e_g + eps) * g
        e_x = rho * e_x + (1 - rho) * d^2
        p   = p - lr * d

    Differs from optax on purpose: optax's default ``learning_rate=None`` skips the
    learning-rate stage, so its update is ``+d`` and climbs the loss. gradtx defaults to
    ``learning_rate=1.0`` (the paper's and PyTorch's), which descends. ``None`` still
    means "no learning-rate stage" for code that relies on optax's behaviour.

    Chain: ``add_decayed_weights -> scale_by_rms(rho, eps) -> scale_by_update_rms(rho, eps)
    -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adadelta()
    >>> updates, _ = opt.update(jnp.array([1.0]), opt.init(jnp.zeros(1)))
    >>> bool(updates[0] < 0)
    True
    """
    _checks.non_negative("adadelta", "learning_rate", learning_rate)
    _checks.in_interval("adadelta", "rho", rho)
    _checks.non_negative("adadelta", "eps", eps)
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        identity() if learning_rate is None else scale_by_learning_rate(learning_rate))


def adam_direction(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
                   mu_dtype: Optional[Any] = None, *, nesterov: bool = False) -> GradientTransformation:
    """``u -> m_hat / (sqrt(v_hat + eps_root) + eps)``, Adam's preconditioned direction::

        m_hat = ema(g, b1) / (1 - b1^t)          (NAdam: b1 * m_hat_next + (1 - b1) * g / (1 - b1^t))
        v_hat = ema(|g|^2, b2) / (1 - b2^t)

    Built with ``fork``: the first moment over the root of the second.
    """
    return _adam_direction("adam_direction", b1, b2, eps, eps_root, mu_dtype, nesterov)


def _adam_direction(where, b1, b2, eps, eps_root, mu_dtype, nesterov) -> GradientTransformation:
    _checks.in_interval(where, "b1", b1, high_open=True)
    _checks.in_interval(where, "b2", b2, high_open=True)
    _checks.non_negative(where, "eps", eps)
    _checks.non_negative(where, "eps_root", eps_root)
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1))
    if nesterov:
        first = fork(chain(scale_by_ema(b1, accumulator_dtype=mu_dtype), bias_correct(b1, step_offset=1)),
                     bias_correct(b1),
                     join=lambda m_next, g: ema(g, m_next, b1))
    second = chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps=eps, eps_root=eps_root))
    return fork(first, second, join=jnp.divide)


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         eps_root: float = 0.0, mu_dtype: Optional[Any] = None, *, nesterov: bool = False) -> GradientTransformation:
    """Adam (Kingma & Ba 2014)::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        v = b2 * v + (1 - b2) * |g|^2      v_hat = v / (1 - b2^t)
        p = p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    ``nesterov=True`` is NAdam (Dozat 2016), as in optax.

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1),
    second_moment(b2) -> bias_correct(b2) -> sqrt_eps, join=divide) -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adam(1e-3)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.1]), opt.init(jnp.zeros(2)))
    >>> updates.round(6)  # the first Adam step is -lr * sign(g), up to eps and rounding
    Array([-0.001,  0.001], dtype=float32)
    """
    _checks.non_negative("adam", "learning_rate", learning_rate)
    return chain(_adam_direction("adam", b1, b2, eps, eps_root, mu_dtype, nesterov),
                 scale_by_learning_rate(learning_rate))


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          eps_root: float = 0.0, mu_dtype: Optional[Any] = None, weight_decay: ScalarOrSchedule = 1e-4,
          mask: MaskOrFn = None, *, nesterov: bool = False) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019), Adam with decoupled weight decay::

        p = p - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * p)

    The decay is applied where ``mask`` is True (all leaves by default) and is scaled by
    the learning rate, as in optax (PyTorch's AdamW does the same).

    Chain: ``adam_direction -> add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamw(0.1, weight_decay=0.5)
    >>> params = jnp.array([2.0])
    >>> updates, _ = opt.update(jnp.array([0.0]), opt.init(params), params)
    >>> updates  # zero gradient: only the decay, -lr * wd * p
    Array([-0.1], dtype=float32)
    """
    _checks.non_negative("adamw", "learning_rate", learning_rate)
    return chain(_adam_direction("adamw", b1, b2, eps, eps_root, mu_dtype, nesterov),
                 add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def nadam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          eps_root: float = 0.0, mu_dtype: Optional[Any] = None) -> GradientTransformation:
    """NAdam (Dozat 2016): Adam with a Nesterov look-ahead on the first moment::

        m_hat = b1 * m / (1 - b1^(t+1)) + (1 - b1) * g / (1 - b1^t)
        p = p - lr * m_hat / (sqrt(v_hat + eps_root) + eps)

    Chain: ``adam_direction(nesterov=True) -> scale_by_learning_rate`` (optax's ``nadam``).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.nadam(1e-2)
    >>> updates, _ = opt.update(jnp.array([1.0]), opt.init(jnp.zeros(1)))
    >>> bool(updates[0] < 0)
    True
    """
    _checks.non_negative("nadam", "learning_rate", learning_rate)
    return chain(_adam_direction("nadam", b1, b2, eps, eps_root, mu_dtype, True),
                 scale_by_learning_rate(learning_rate))


def amsgrad(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
            eps_root: float = 0.0, mu_dtype: Optional[Any] = None, bias_correction_mu: bool = True,
            bias_correction_nu: bool = True) -> GradientTransformation:
    """AMSGrad (Reddi et al. 2018): Adam whose denominator never shrinks::

        v_max = max(v_max, v_hat)
        p = p - lr * m_hat / (sqrt(v_max + eps_root) + eps)

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), second_moment(b2) -> bias_correct(b2)
    -> running_max -> sqrt_eps, join=divide) -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.amsgrad(1e-2)
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([-0.01], dtype=float32)
    """
    _checks.non_negative("amsgrad", "learning_rate", learning_rate)
    _checks.in_interval("amsgrad", "b1", b1, high_open=True)
    _checks.in_interval("amsgrad", "b2", b2, high_open=True)
    first = chain(scale_by_ema(b1, accumulator_dtype=mu_dtype),
                  bias_correct(b1) if bias_correction_mu else identity())
    second = chain(second_moment(b2), bias_correct(b2) if bias_correction_nu else identity(),
                   running_max(), sqrt_eps(eps=eps, eps_root=eps_root))
    return chain(fork(first, second, join=jnp.divide), scale_by_learning_rate(learning_rate))


def adamax(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8) -> GradientTransformation:
    """Adamax (Kingma & Ba 2014, section 7), Adam with the infinity norm::

        m = b1 * m + (1 - b1) * g          m_hat = m / (1 - b1^t)
        u = max(b2 * u, |g| + eps)
        p = p - lr * m_hat / u

    Chain: ``fork(scale_by_ema(b1) -> bias_correct(b1), infinity_norm(b2, eps), join=divide)
    -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.adamax(1e-2)
    >>> updates, _ = opt.update(jnp.array([-2.0]), opt.init(jnp.zeros(1)))
    >>> updates.round(6)
    Array([0.01], dtype=float32)
    """
    _checks.non_negative("adamax", "learning_rate", learning_rate)
    _checks.in_interval("adamax", "b1", b1, high_open=True)
    _checks.in_interval("adamax", "b2", b2)
    first = chain(scale_by_ema(b1), bias_correct(b1))
    return chain(fork(first, infinity_norm(b2, eps), join=jnp.divide), scale_by_learning_rate(learning_rate))


def lion(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99, mu_dtype: Optional[Any] = None,
         weight_decay: ScalarOrSchedule = 1e-3, mask: MaskOrFn = None) -> GradientTransformation:
    """Lion (Chen et al. 2023)::

        c = sign((1 - b1) * g + b1 * m)
        m = (1 - b2) * g + b2 * m
        p = p - lr * (c + weight_decay * p)

    Chain: ``interpolated_ema(b1, b2) -> scale_by_sign -> add_decayed_weights
    -> scale_by_learning_rate``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.lion(1e-3, weight_decay=0.0)
    >>> updates, _ = opt.update(jnp.array([5.0, -0.2]), opt.init(jnp.zeros(2)))
    >>> updates
    Array([-0.001,  0.001], dtype=float32)
    """
    _checks.non_negative("lion", "learning_rate", learning_rate)
    return chain(interpolated_ema(b1, b2, accumulator_dtype=mu_dtype), scale_by_sign(),
                 add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
