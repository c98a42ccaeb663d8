"""Muon: momentum orthogonalized by Newton-Schulz for matrices, Adam for the other leaves."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import jax

from gradtx.combine import chain, fork, identity
from gradtx.hyperparams import AccumulatorDtype, DecayBelowOne, LearningRate, NonNegative, NonNegativeOrSchedule, OneOf
from gradtx.masking import partition
from gradtx.matrix import (
    DEFAULT_NS_COEFFS,
    NsCoeffs,
    NsCoeffsOrPreset,
    NsSteps,
    Preconditioning,
    WeightDimNums,
    check_coefficient_rows,
    dimension_numbers_of,
    dual_norm_scale,
    newton_schulz,
    scale_by_shape,
)
from gradtx.moments import debiased_first_moment, scale_by_ema
from gradtx.numerics import ema
from gradtx.optimizers.adam import adamw
from gradtx.scaling import MaskOrFn, add_decayed_weights, scale_by_learning_rate
from gradtx.transform import Transformation, declare

__all__ = ["muon", "scale_by_muon"]

AdjustLr = Optional[Annotated[Literal["original", "match_rms_adamw"], OneOf(("original", "match_rms_adamw"))]]
"""torch.optim.Muon's ``adjust_lr_fn``: its update rule with that learning-rate adjustment."""


def _momentum(beta, mu_dtype, *, nesterov: bool, torch_convention: bool) -> Transformation:
    """optax: ``m_hat`` bias-corrected (NAdam's look-ahead with ``nesterov``); torch.optim.Muon:
    ``m`` itself, or ``(1 - beta) * g + beta * m`` with ``nesterov``, never bias-corrected."""
    mu = scale_by_ema(beta, accumulator_dtype=mu_dtype)
    if not torch_convention:
        return debiased_first_moment(mu, beta, nesterov=nesterov)
    return fork(mu, identity(), join=lambda m, g: ema(g, m, beta)) if nesterov else mu


def _direction(ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning, dims, torch_convention):
    orthogonalized = newton_schulz(ns_coeffs, ns_steps, preconditioning, eps, dims, eps_floor=torch_convention)
    if adaptive:
        orthogonalized = fork(identity(), orthogonalized, join=dual_norm_scale)
    return chain(_momentum(beta, mu_dtype, nesterov=nesterov, torch_convention=torch_convention), orthogonalized)


@declare
def scale_by_muon(
    ns_coeffs: NsCoeffs = DEFAULT_NS_COEFFS,
    ns_steps: NsSteps = 5,
    beta: DecayBelowOne = 0.95,
    eps: NonNegative = 1e-8,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Preconditioning = "frobenius",
    weight_dimension_numbers: WeightDimNums = None,
) -> Transformation:
    """``u -> NS^k(m_hat / (||m_hat||_F + eps))``, ``m_hat`` the debiased EMA of ``u``: Muon's direction
    (optax.contrib's ``scale_by_muon``)::

        m = beta * m + (1 - beta) * g                 m_hat = m / (1 - beta^t)
            (nesterov: m_hat = beta * m / (1 - beta^(t+1)) + (1 - beta) * g / (1 - beta^t))
        u = NS^k(m_hat / (||m_hat||_F + eps))         (adaptive: <m_hat, u> u)

    ``NS`` is ``gradtx.newton_schulz`` (its docstring has the iteration), on every matrix of
    every leaf: a leaf of rank other than 2 needs its ``MuonDimensionNumbers`` in
    ``weight_dimension_numbers`` (else an error names its leaf path).

    Chain: ``scale_by_ema(beta) -> bias_correct(beta)`` (NAdam's look-ahead ``fork`` with
    ``nesterov``) ``-> newton_schulz`` (inside ``fork(identity, newton_schulz,
    join=dual_norm_scale)`` when ``adaptive``). State: ``count, mu``; optax also keeps
    ``ns_coeffs``, a constant of the call, which gradtx does not put in the state.

    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_muon(ns_steps=10)
    >>> u, _ = tx.update({"w": jnp.array([[3.0, 0.0], [0.0, 0.1]])}, tx.init({"w": jnp.zeros((2, 2))}))
    >>> u["w"].round(1)  # singular values pushed into a band around 1, the vectors kept
    Array([[1.1, 0. ],
           [0. , 0.8]], dtype=float32)
    """
    ns_coeffs = check_coefficient_rows("scale_by_muon", ns_coeffs, ns_steps)
    return _direction(
        ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning, weight_dimension_numbers, False
    )


def _labels(spec: WeightDimNums):
    """``params -> "muon" | "adam"`` per leaf: matrices (or the leaves with dimension numbers)
    to Muon, the others to Adam (optax's labelling)."""

    def labels(params):
        if spec is None:
            return jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", params)
        dims = dimension_numbers_of(spec, params)
        return jax.tree_util.tree_map_with_path(lambda path, x: "adam" if dims(path) is None else "muon", params)

    return labels


@declare
def muon(
    learning_rate: LearningRate,
    ns_coeffs: NsCoeffsOrPreset = DEFAULT_NS_COEFFS,
    ns_steps: NsSteps = 5,
    beta: DecayBelowOne = 0.95,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegativeOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
    mu_dtype: AccumulatorDtype = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Preconditioning = "frobenius",
    adam_b1: DecayBelowOne = 0.9,
    adam_b2: DecayBelowOne = 0.999,
    adam_eps_root: NonNegative = 0.0,
    adam_weight_decay: NonNegativeOrSchedule = 0.0,
    adam_learning_rate: Optional[LearningRate] = None,
    muon_weight_dimension_numbers: WeightDimNums = None,
    consistent_rms: Optional[NonNegative] = None,
    adjust_lr_fn: AdjustLr = None,
) -> Transformation:
    """Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/): momentum
    orthogonalized by Newton-Schulz on the matrices, AdamW on the other leaves::

        matrices:  m = beta * m + (1 - beta) * g            m_hat = m / (1 - beta^t)
                       (nesterov: m_hat = beta * m / (1 - beta^(t+1)) + (1 - beta) * g / (1 - beta^t))
                   O = NS^k(m_hat / (||m_hat||_F + eps))      (adaptive: <m_hat, O> O)
                   p = p - lr * (s * O + weight_decay * p)
                   s = sqrt(max(1, fan_out / fan_in))   (consistent_rms: sqrt(max(fan_in, fan_out)) * consistent_rms)
        others:    p = p - adam_lr * (m_hat / (sqrt(v_hat + adam_eps_root) + eps) + adam_weight_decay * p)
                   (AdamW with adam_b1, adam_b2; NAdam's look-ahead with nesterov)

    Leaves go to Muon when they are 2-D, or, with ``muon_weight_dimension_numbers`` (a tree
    or prefix of ``MuonDimensionNumbers``, ``None`` for Adam, or a function ``params ->
    such a tree``), when their dimension numbers are not ``None``: a conv kernel is then a
    batch of matrices. optax.contrib 0.2.8's arguments, order and defaults; ``ns_coeffs``
    may name a preset ("standard", "dion").

    ``adjust_lr_fn`` ("original" or "match_rms_adamw") gives torch.optim.Muon's numbers
    (torch 2.13) instead of optax's: the momentum is not bias-corrected (``m``, or ``(1 -
    beta) * g + beta * m`` with ``nesterov``), the norm is ``max(||m||_F, eps)``, and ``s``
    is torch's adjustment, "original" ``sqrt(max(1, fan_out / fan_in))`` and
    "match_rms_adamw" ``0.2 * sqrt(max(fan_in, fan_out))`` (torch's weight ``(out, in)`` is
    JAX's ``(in, out)``). Pass torch's defaults explicitly where you want them
    (``weight_decay=0.1, eps=1e-7``). torch computes Newton-Schulz in bfloat16; gradtx in
    the gradients' dtype.

    Differs from optax 0.2.8 where optax fails: a ``None`` in ``muon_weight_dimension_numbers``
    (documented there as "not a Muon parameter") leaves that leaf to Adam, where optax's
    ``init`` raises a pytree structure error; dimension numbers that name an axis outside
    a leaf's rank are an error naming the leaf path (optax wraps the axis modulo the rank).

    Chain: ``partition({"muon": scale_by_muon -> scale_by_shape -> add_decayed_weights ->
    scale_by_learning_rate, "adam": adamw(...)}, labels)``. State: ``inner_states``,
    ``{"muon": MaskedState(inner_state=(count, mu)), "adam": MaskedState(inner_state=(count,
    mu, nu))}``: optax's layout (its ``ns_coeffs``, a constant, is not kept).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.muon(0.1, nesterov=False)
    >>> params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    >>> grads = {"w": jnp.array([[3.0, 0.0], [0.0, 0.1]]), "b": jnp.array([1.0, -1.0])}
    >>> updates, state = opt.update(grads, opt.init(params), params)
    >>> [round(float(x), 4) for x in updates["b"]]  # Adam's first step: -lr * sign(g)
    [-0.1, 0.1]
    >>> updates["w"].round(2)  # -lr * an orthogonal-ish matrix: both directions move
    Array([[-0.07, -0.  ],
           [-0.  , -0.11]], dtype=float32)
    """
    ns_coeffs = check_coefficient_rows("muon", ns_coeffs, ns_steps)
    if adjust_lr_fn is not None and consistent_rms is not None:
        raise ValueError(
            f"gradtx.muon(consistent_rms={consistent_rms!r}): adjust_lr_fn={adjust_lr_fn!r} sets the shape "
            f"scaling; leave consistent_rms None"
        )
    if adjust_lr_fn == "match_rms_adamw":
        consistent_rms = 0.2
    dims = muon_weight_dimension_numbers
    torch_convention = adjust_lr_fn is not None
    matrices = chain(
        _direction(
            ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning, dims, torch_convention
        ),
        scale_by_shape(dims, consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    others = adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1=adam_b1,
        b2=adam_b2,
        eps=eps,
        eps_root=adam_eps_root,
        mu_dtype=mu_dtype,
        weight_decay=adam_weight_decay,
        nesterov=nesterov,
    )
    return partition({"muon": matrices, "adam": others}, _labels(dims))
