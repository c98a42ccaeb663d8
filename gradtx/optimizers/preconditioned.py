"""Kronecker-factored preconditioners: Shampoo and SOAP.

Their matrix formulas (factor statistics, inverse roots, eigenbases, blocking) live in
``gradtx.kronecker``; here are the stages that use them and the optimizers, each a chain.
The references are ``pytorch_optimizer`` 4.1.0's ``SOAP`` and ``ScalableShampoo``
(``tests/test_preconditioned.py``).
"""

from __future__ import annotations

from typing import Annotated, Optional

import jax
import jax.numpy as jnp

from gradtx._tree import real_full_like
from gradtx.base import GradientTransformation, UpdateError
from gradtx.combine import chain, fork, identity, renamed
from gradtx.hyperparams import (
    Decay,
    DecayBelowOne,
    LearningRate,
    NonNegative,
    OneOf,
)
from gradtx.kronecker import (
    AtLeastOne,
    NonNegativeInt,
    _has_factors,
    eigenbasis,
    factor_dtype,
    factor_ema,
    leaves_of,
    per_leaf,
    refresh_eigenbasis,
    rotate,
    scale_by_kronecker_roots,
    unrotate,
    when,
)
from gradtx.moments import nesterov_trace, second_moment, trace
from gradtx.numerics import abs_sq, ema, leaf_norm, plus_eps, real_dtype, safe_increment
from gradtx.scaling import add_decayed_weights, scale_by_learning_rate, scale_by_sign, sqrt_eps
from gradtx.sharding import matrix_region
from gradtx.transform import Field, Stage, Transformation, declare, finish, merge_fields, primitive, stage_of, view

__all__ = [
    "decay_stepped_params",
    "graft_until",
    "scale_by_shampoo",
    "scale_by_soap",
    "shampoo",
    "skip_first_step",
    "soap",
]

GraftType = Annotated[str, OneOf(("sgd", "rmsprop", "sqrtn", "none"))]


# --- SOAP ---------------------------------------------------------------------------


def _soap_axes(shape: tuple[int, ...], max_precondition_dim: int, precondition_1d: bool) -> list[bool]:
    """Which axes of a leaf keep a factor: every axis up to ``max_precondition_dim`` long;
    a vector's only with ``precondition_1d``; a scalar's none."""
    if len(shape) == 1 and not precondition_1d:
        return [False]
    return [d <= max_precondition_dim for d in shape]


@declare
def scale_by_soap(
    b1: DecayBelowOne = 0.95,
    b2: DecayBelowOne = 0.95,
    shampoo_beta: Optional[Decay] = None,
    eps: NonNegative = 1e-8,
    precondition_frequency: AtLeastOne = 10,
    max_precondition_dim: AtLeastOne = 10000,
    precondition_1d: bool = False,
) -> Transformation:
    """``u -> sqrt(1 - b2^(t-1)) / (1 - b1^(t-1)) * Q (Q^H m / (sqrt(v) + eps))``: Adam in the
    eigenbasis ``Q`` of Shampoo's factors (SOAP, Vyas et al. 2024, Algorithm 1)::

        t = 1:  L_i = ema(G_(i) G_(i)^H, shampoo_beta) ; Q_i = eigh(L_i) ; u -> 0
        t > 1:  G' = G x_1 Q_1^H ... x_n Q_n^H          (rotate into the eigenbasis)
                m = ema(G, b1) ; v = ema(|G'|^2, b2)    (m in the params' basis, v in Q's)
                u -> the rotated-back m' / (sqrt(v) + eps), m' = m rotated, bias-corrected
                L_i = ema(G_(i) G_(i)^H, shampoo_beta)
                when t - 1 is a multiple of precondition_frequency:
                    Q_i, order = qr(L_i Q_i sorted)  ; v permuted along axis i by order

    ``shampoo_beta`` is ``b2`` when None. Axes longer than ``max_precondition_dim`` keep no
    factor (identity: one-sided SOAP); vectors only with ``precondition_1d``; scalars never.
    The first step only builds the eigenbasis (``m`` and ``v`` start at step 2, so the
    bias correction counts ``t - 1``). As ``pytorch_optimizer`` 4.1.0's ``SOAP`` (with
    ``merge_dims=False, normalize_gradient=False, correct_bias=True``).

    State: ``count, mu, nu, kronecker_factors, eigenbases`` (the factors and bases: one tuple
    per leaf, in leaf order, of one matrix per axis, None for the axes without one).
    """
    beta = b2 if shampoo_beta is None else shampoo_beta

    def sizes(shape: tuple[int, ...]) -> list:
        """A leaf's factor shapes: one per axis, None for the axes without one."""
        return [
            (d, d) if keep else None for d, keep in zip(shape, _soap_axes(shape, max_precondition_dim, precondition_1d))
        ]

    def factors(params):
        zeros = lambda d, p: None if d is None else jnp.zeros(d, factor_dtype(p.dtype))  # noqa: E731
        return per_leaf(params, lambda p: tuple(zeros(d, p) for d in sizes(p.shape)))

    def first_step(g, m, v, stats, bases):
        """``t = 1``: the factors and their eigenbases; ``m``, ``v`` untouched, ``u -> 0``."""
        out = jnp.zeros_like(g)
        g = g.astype(factor_dtype(g.dtype))
        stats = tuple(None if s is None else factor_ema(s, g, i, beta, 1 - beta) for i, s in enumerate(stats))
        bases = tuple(None if s is None else eigenbasis(s) for s in stats)
        return out, m, v, stats, bases

    def later_step(count, g, m, v, stats, bases):
        """``t > 1``: Adam in the eigenbasis, then the factors, then (maybe) the refresh."""
        dtypes = (g.dtype, m.dtype, v.dtype)
        work = factor_dtype(g.dtype)
        g = g.astype(work)
        m = ema(g, m.astype(work), b1)
        v = ema(abs_sq(rotate(g, bases)), v.astype(real_dtype(work)), b2)
        direction = unrotate(rotate(m, bases) / (jnp.sqrt(v) + eps), bases)
        c = count.astype(work)
        out = direction * (jnp.sqrt(1 - b2**c) / (1 - b1**c))
        stats = tuple(None if s is None else factor_ema(s, g, i, beta, 1 - beta) for i, s in enumerate(stats))

        def refreshed(v, bases):
            new: list = []
            for i, (s, q) in enumerate(zip(stats, bases)):
                if s is None:
                    new.append(None)
                    continue
                q, order = refresh_eigenbasis(s, q)
                v = jnp.take(v, order, axis=i)
                new.append(q)
            return v, tuple(new)

        v, bases = when(count % precondition_frequency == 0, refreshed, lambda v, b: (v, b), v, bases)
        return out.astype(dtypes[0]), m.astype(dtypes[1]), v.astype(dtypes[2]), stats, bases

    def apply(updates, state, step):
        factors_bases = state["kronecker_factors"], state["eigenbases"]
        leaves, unflatten = leaves_of(updates, "eigenbases", factors_bases[1], sizes)
        mus, nus = jax.tree.leaves(state["mu"]), jax.tree.leaves(state["nu"])  # shaped like the updates
        outs: list = []
        new: list[list] = [[], [], [], []]

        def leaf(count, g, m, v, stats, bases):
            return when(count == 0, first_step, lambda *a: later_step(count, *a), g, m, v, stats, bases)

        for g, m, v, stats, bases in zip(leaves, mus, nus, *factors_bases):
            # on Explicit mesh axes, the leaf's matrix math runs on Auto ones
            out, m, v, stats, bases = matrix_region(leaf, like=(1, 2, 3, 4, 5))(step.count, g, m, v, stats, bases)
            outs.append(out)
            for acc, value in zip(new, (m, v, stats, bases)):
                acc.append(value)
        return unflatten(outs), {
            "mu": unflatten(new[0]),
            "nu": unflatten(new[1]),
            "kronecker_factors": tuple(new[2]),
            "eigenbases": tuple(new[3]),
        }

    return primitive(
        apply,
        {
            "mu": lambda params: jax.tree.map(jnp.zeros_like, params),
            "nu": real_full_like,
            "kronecker_factors": Field(factors, like_params=False),
            "eigenbases": Field(factors, like_params=False),
        },
        uses_count=True,
    )


@declare
def skip_first_step() -> Transformation:
    """``u -> 0`` at ``t = 1``, ``u`` afterwards (SOAP's first step only builds its eigenbasis)."""

    def apply(updates, state, step):
        first = step.count == 0
        return jax.tree.map(lambda u: jnp.where(first, jnp.zeros_like(u), u), updates), {}

    return primitive(apply, uses_count=True)


@declare
def decay_stepped_params(weight_decay: NonNegative = 0.0, learning_rate: LearningRate = 1.0) -> Transformation:
    """``u -> u - lr * weight_decay * (p + u)``: the decoupled decay of the params *after* the
    step, ``p_new = (p + u) * (1 - lr * weight_decay)`` (SOAP's reference and official code).

    ``learning_rate`` may be a schedule (it then reads the step count).
    """

    def apply(updates, state, step):
        if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, {}
        if step.params is None:
            raise UpdateError("update() needs params (call update(updates, state, params))")
        lr = learning_rate(step.count) if callable(learning_rate) else learning_rate
        rate = jnp.asarray(lr) * jnp.asarray(weight_decay)
        return jax.tree.map(lambda u, p: u - (rate * (p + u)).astype(u.dtype), updates, step.params), {}

    return primitive(apply, uses_count=callable(learning_rate))


@declare
def soap(
    learning_rate: LearningRate,
    b1: DecayBelowOne = 0.95,
    b2: DecayBelowOne = 0.95,
    shampoo_beta: Optional[Decay] = None,
    eps: NonNegative = 1e-8,
    weight_decay: NonNegative = 1e-2,
    precondition_frequency: AtLeastOne = 10,
    max_precondition_dim: AtLeastOne = 10000,
    precondition_1d: bool = False,
) -> Transformation:
    """SOAP (Vyas et al. 2024, https://arxiv.org/abs/2409.11321): Adam in the eigenbasis of
    Shampoo's preconditioner, the eigenbasis refreshed every ``precondition_frequency`` steps::

        L_i = shampoo_beta * L_i + (1 - shampoo_beta) * G_(i) G_(i)^H     (every step)
        G' = G x_1 Q_1^H ... x_n Q_n^H
        m = ema(G, b1) ; v = ema(|G'|^2, b2)
        p = (p - lr * sqrt(1 - b2^(t-1)) / (1 - b1^(t-1)) * (m' / (sqrt(v) + eps)) x_1 Q_1 ... x_n Q_n)
            * (1 - lr * weight_decay)                                       (m' = m rotated)

    ``Q_i = eigh(L_i)`` after the first step (which leaves the params alone), then one QR
    power iteration every ``precondition_frequency`` steps (``scale_by_soap``). Axes longer
    than ``max_precondition_dim`` are not rotated (one-sided SOAP); vectors are rotated only
    with ``precondition_1d``. Arguments and defaults are ``pytorch_optimizer`` 4.1.0's
    ``SOAP(lr, betas=(b1, b2), shampoo_beta, weight_decay, precondition_frequency,
    max_precondition_dim, precondition_1d, eps)``, whose float64 trajectory gradtx matches
    (``tests/test_preconditioned.py``; the reference's QR runs in float32 even for float64
    params, the test lifts that cast).

    Where a first factor is rank-deficient by two or more (a vector with ``precondition_1d``;
    a matrix whose first gradient's rank is below its longer side by two or more, as with a
    small batch), its repeated 0 eigenvalue has no unique eigenvectors: ``eigh``
    implementations (LAPACK builds) pick different bases, and so does rounding (one ulp of
    one gradient entry; a sharded step, whose reductions add in another order), and SOAP's
    trajectory depends on the pick (not on the signs, which it does not see). gradtx then
    agrees with the reference, and a sharded run with one device, only up to that choice;
    the tests use factors where it is unique.

    Chain: ``scale_by_soap -> scale_by_learning_rate -> decay_stepped_params(weight_decay, lr)
    -> skip_first_step``. State: ``count, mu, nu, kronecker_factors, eigenbases``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.soap(0.1, weight_decay=0.0)
    >>> params = jnp.ones((2, 2))
    >>> state = opt.init(params)
    >>> u1, state = opt.update(jnp.eye(2), state, params)
    >>> u1  # the first step only builds the eigenbasis
    Array([[0., 0.],
           [0., 0.]], dtype=float32)
    >>> u2, state = opt.update(jnp.eye(2), state, params)
    >>> [round(float(x), 4) for x in u2.ravel()]  # then Adam's first step, -lr * sign, in the eigenbasis
    [-0.1, -0.0, -0.0, -0.1]
    """
    return chain(
        scale_by_soap(b1, b2, shampoo_beta, eps, precondition_frequency, max_precondition_dim, precondition_1d),
        scale_by_learning_rate(learning_rate),
        decay_stepped_params(weight_decay, learning_rate),
        skip_first_step(),
    )


# --- Shampoo ------------------------------------------------------------------------


def graft_until(start_step: int, before: GradientTransformation, after: GradientTransformation) -> Transformation:
    """``u -> before(u)`` while ``t < start_step``, ``after(u)`` from then on.

    Both run at every step (their states move together, as in distributed Shampoo, where
    the preconditioner's statistics and momentum build up while the graft steps); a stage
    used in both (the graft) is one stage with one state.
    """
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 1:
        raise ValueError(f"gradtx.graft_until(start_step={start_step!r}): start_step must be an integer >= 1")
    stages = [stage_of(before), stage_of(after)]
    fields = merge_fields(stages, "graft_until")

    def apply(updates, state, step):
        new: dict = {}
        outs = []
        for stage in stages:
            out, fields_out = stage.apply(updates, view(stage, state), step)
            outs.append(out)
            new.update(fields_out)
        started = safe_increment(step.count) >= start_step
        return jax.tree.map(lambda a, b: jnp.where(started, b, a), *outs), new

    return finish(Stage(fields, True, apply, kind="graft_until"))


def grafted(shampoo: jax.Array, graft: jax.Array, *, preconditioned: bool) -> jax.Array:
    """``s -> s * ||g|| / (||s|| + 1e-16)``: Shampoo's direction ``s`` with the norm of the
    graft's ``g`` (per leaf); a leaf without factors takes the graft's direction."""
    if not preconditioned:
        shampoo = graft
    return shampoo * (leaf_norm(graft) / plus_eps(leaf_norm(shampoo), 1e-16)).astype(shampoo.dtype)


def _graft_direction(graft_type: str, b2, diagonal_eps) -> Transformation:
    """The first-order direction Shampoo is grafted onto: SGD's ``g``, RMSprop's
    ``g / (sqrt(ema(|g|^2, b2)) + diagonal_eps)``, or ``sign(g)`` (``"sqrtn"``)."""
    if graft_type == "rmsprop":
        return fork(identity(), chain(second_moment(b2), sqrt_eps(eps=diagonal_eps)), join=jnp.divide)
    if graft_type == "sqrtn":
        return scale_by_sign()
    return identity()


@declare
def scale_by_shampoo(
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    block_size: AtLeastOne = 512,
    precondition_frequency: AtLeastOne = 1000,
    start_preconditioning_step: AtLeastOne = 25,
    matrix_eps: NonNegative = 1e-6,
    diagonal_eps: NonNegative = 1e-10,
    graft_type: GraftType = "sgd",
    nesterov: bool = True,
    inverse_exponent_override: NonNegativeInt = 0,
    max_precondition_dim: AtLeastOne = 8192,
    weight_decay: NonNegative = 0.0,
    decoupled_weight_decay: bool = False,
) -> Transformation:
    """``u -> momentum(graft_norm(P(u), graft(u)) + wd * p)`` from ``start_preconditioning_step``,
    ``momentum(graft(u) + wd * p)`` before it: distributed Shampoo's direction (before the
    learning rate); see ``shampoo``.

    Chain: ``graft_until(start, graft -> add_decayed_weights -> graft_trace,
    fork(scale_by_kronecker_roots, graft, join=grafted) -> add_decayed_weights -> trace)``,
    ``nesterov_trace`` for ``trace`` with ``nesterov``; the decay after ``graft_until``
    with ``decoupled_weight_decay``. State: ``count, [nu,] graft_trace, kronecker_factors,
    inverse_roots, trace`` (``nu``: the RMSprop graft's).
    """
    momentum = nesterov_trace if nesterov else trace
    graft = _graft_direction(graft_type, b2, diagonal_eps)
    roots = scale_by_kronecker_roots(
        b2, block_size, precondition_frequency, matrix_eps, inverse_exponent_override, max_precondition_dim
    )
    if graft_type == "none":
        preconditioned = roots
    else:

        def join(s, g):
            return grafted(s, g, preconditioned=_has_factors(s.shape, max_precondition_dim))

        preconditioned = fork(roots, graft, join=join)
    coupled = identity() if decoupled_weight_decay else add_decayed_weights(weight_decay)
    direction = graft_until(
        start_preconditioning_step,
        chain(graft, coupled, renamed(momentum(b1), trace="graft_trace")),
        chain(preconditioned, coupled, momentum(b1)),
    )
    return chain(direction, add_decayed_weights(weight_decay) if decoupled_weight_decay else identity())


@declare
def shampoo(
    learning_rate: LearningRate,
    b1: Decay = 0.9,
    b2: Decay = 0.999,
    block_size: AtLeastOne = 512,
    precondition_frequency: AtLeastOne = 1000,
    start_preconditioning_step: AtLeastOne = 25,
    matrix_eps: NonNegative = 1e-6,
    diagonal_eps: NonNegative = 1e-10,
    graft_type: GraftType = "sgd",
    nesterov: bool = True,
    inverse_exponent_override: NonNegativeInt = 0,
    max_precondition_dim: AtLeastOne = 8192,
    weight_decay: NonNegative = 0.0,
    decoupled_weight_decay: bool = False,
) -> Transformation:
    """Shampoo (Gupta et al. 2018, https://arxiv.org/abs/1802.09568) as distributed Shampoo
    practises it (Anil et al. 2020, https://arxiv.org/abs/2002.09018): blocked Kronecker
    factors, inverse p-th roots every ``precondition_frequency`` steps, grafted onto a
    first-order method::

        L_i = b2 L_i + (1 - b2) G_(i) G_(i)^H       (per block of block_size; 1 - b2 -> 1 at b2 = 1)
        P_i = L_i^(-1/p) when t % precondition_frequency == 0       (p = 2 * ndim)
        s = G x_1 P_1 ... x_n P_n ; s = s * ||g_graft|| / (||s|| + 1e-16) + wd * p
        m = b1 * m + s ; step = m (Nesterov: b1 * m + s)           from t = start_preconditioning_step
        m_graft = b1 * m_graft + g_graft + wd * p                  before (g_graft: SGD's g,
                                                                   RMSprop's, or sign(g))
        p = p - lr * step

    Leaves with fewer than two axes, or an axis longer than ``max_precondition_dim``, take
    the graft's direction. With ``decoupled_weight_decay`` the decay is ``- lr * wd * p``
    instead. Arguments are ``pytorch_optimizer`` 4.1.0's ``ScalableShampoo(lr, betas=(b1, b2),
    block_size, preconditioning_compute_steps=precondition_frequency, start_preconditioning_step,
    matrix_eps, diagonal_eps, graft_type, nesterov, inverse_exponent_override,
    no_preconditioning_for_layers_with_dim_gt=max_precondition_dim, weight_decay,
    decoupled_weight_decay)``, tested with ``use_svd=True, shape_interpretation=False``
    (``tests/test_preconditioned.py``).

    Chain: ``scale_by_shampoo -> scale_by_learning_rate``. State: ``count, graft_trace,
    kronecker_factors, inverse_roots, trace`` (and ``nu`` with the RMSprop graft).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.shampoo(0.1, start_preconditioning_step=1, precondition_frequency=1, matrix_eps=0.0)
    >>> g = jnp.array([[2.0, 0.0], [0.0, 0.5]])
    >>> u, _ = opt.update(g, opt.init(jnp.zeros((2, 2))))
    >>> [round(float(x), 4) for x in u.ravel()]  # L^(-1/4) g R^(-1/4) = I, grafted to ||g||, (1 + b1): Nesterov
    [-0.277, -0.0, -0.0, -0.277]
    """
    return chain(
        scale_by_shampoo(
            b1,
            b2,
            block_size,
            precondition_frequency,
            start_preconditioning_step,
            matrix_eps,
            diagonal_eps,
            graft_type,
            nesterov,
            inverse_exponent_override,
            max_precondition_dim,
            weight_decay,
            decoupled_weight_decay,
        ),
        scale_by_learning_rate(learning_rate),
    )
