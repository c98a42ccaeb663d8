"""Schedules: functions ``step -> value`` (step counted from 0), for any hyperparameter
that accepts a schedule (``learning_rate``, ``weight_decay``).

Every optax 0.2.8 schedule, under its name, with its arguments, defaults and numbers; and the
cyclical learning rate (torch's ``CyclicLR``), torch's one-cycle (``OneCycleLR``) and
warmup-stable-decay. Most are one formula, the piecewise schedule through knots
``(b_i, v_i)``: ``t -> shape(v_i, v_(i+1), (t - b_i) / (b_(i+1) - b_i))`` for
``b_i <= t < b_(i+1)``, ``shape`` a line, a half cosine or ``1 - sqrt``, the last value held
after the last knot. A step may be a Python int, a numpy integer or an int array (the
optimizer's int32 ``count``); the value is float32 (float64 under ``jax_enable_x64``). Bad
arguments fail when the schedule is built, naming the call and the argument, also where
optax takes them silently.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gradtx.base import Schedule
from gradtx.hyperparams import Decay, Interval, NonNegative, OneOf, Positive, Real, _fail
from gradtx.transform import declare

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "one_cycle_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "triangular_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_stable_decay_schedule",
]

Fraction = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True, high_open=True)]
"""A share of the steps, in (0, 1)."""
FractionUpToOne = Annotated[ArrayLike, Interval(0.0, 1.0, low_open=True)]
"""In (0, 1]."""
InterpolateType = Annotated[str, OneOf(("linear", "cosine"))]
CyclicMode = Annotated[str, OneOf(("triangular", "triangular2", "exp_range"))]
AnnealStrategy = Annotated[str, OneOf(("cos", "linear"))]
DecayShape = Annotated[str, OneOf(("linear", "cosine", "sqrt"))]

# The ``type: ignore``s below: ArrayLike (the hyperparameters' type) includes complex numbers
# and numpy.bool, which declare rejects before the factory's body runs.

Shape = Callable[[Any, Any, Any], Any]  # (start value, end value, fraction done) -> value


def _known(*values) -> bool:
    """Whether the values are known when the schedule is built: a traced one (a sweep's
    ``jax.vmap``, a schedule built inside ``jax.jit``) is checked by no comparison."""
    return not any(isinstance(v, jax.core.Tracer) for v in values)


# --- the pieces: one home for each formula ---------------------------------------------


def _as_float(x):
    """``x`` (a Python, numpy or jax number) in the default float dtype: float32, float64 under x64."""
    return jnp.asarray(x, dtype=float)


def _linear(start, end, pct):
    """``start + (end - start) * pct``, written as optax and torch write it."""
    return (end - start) * pct + start


def _cosine(start, end, pct):
    """``end + (start - end) * (1 + cos(pi * pct)) / 2``: from ``start`` to ``end`` along half a cosine."""
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


def _one_minus_sqrt(start, end, pct):
    """``end + (start - end) * (1 - sqrt(pct))``: the "1 - sqrt" cooldown of Hägele et al. (2024)."""
    return end + (start - end) * (1 - jnp.sqrt(pct))


_SHAPES: dict[str, Shape] = {"linear": _linear, "cos": _cosine, "cosine": _cosine, "sqrt": _one_minus_sqrt}


def _through_knots(count, knots: Sequence, values: Sequence, shapes: Shape | Sequence[Shape]):
    """The piecewise schedule through ``(knots[i], values[i])``: segment ``i`` runs from
    ``knots[i]`` to ``knots[i + 1]`` along ``shapes[i]``; the first segment that ends after
    ``count`` is in force, and the last value holds after the last knot. (A segment of length 0
    is never in force; one that ends before it starts, never either: torch's one-cycle knots
    ``pct_start * total_steps - 1`` may fall below 0.)"""
    n = len(knots) - 1
    shapes = [shapes] * n if callable(shapes) else list(shapes)
    value = values[-1]
    for i in reversed(range(n)):
        start, end = knots[i], knots[i + 1]
        width = end - start if end != start else 1
        pct = jnp.clip(_as_float(count - start) / width, 0.0, 1.0)
        value = jnp.where(count < end, shapes[i](values[i], values[i + 1], pct), value)
    return value


def _sorted_scales(call: str, value: Optional[Mapping]) -> tuple[tuple, tuple]:
    """``boundaries_and_scales`` as sorted boundaries and their scales (optax sorts them too);
    a negative scale fails."""
    if not value:
        return (), ()
    boundaries, scales = zip(*sorted(value.items()))
    if not all(s >= 0 for s in scales):
        _fail(call, "boundaries_and_scales", value, "a dict {step: scale} of scales >= 0")
    return boundaries, scales


# --- optax's schedules ------------------------------------------------------------------


@declare
def constant_schedule(value: Real) -> Schedule:
    """``t -> value`` (``value`` itself, of its own type, as optax).

    >>> import gradtx
    >>> gradtx.constant_schedule(0.5)(100)
    0.5
    """
    return lambda count: value


@declare
def polynomial_schedule(
    init_value: Real,
    end_value: Real,
    power: Positive,
    transition_steps: Real,
    transition_begin: NonNegative = 0,
) -> Schedule:
    """``t -> end + (init - end) * (1 - s / transition_steps)^power``, ``s = clip(t - transition_begin,
    0, transition_steps)``: from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

    optax's schedule. As optax documents, ``transition_steps <= 0`` gives the constant
    ``init_value``. Where optax takes a negative ``transition_begin`` as 0 (its docstring says
    it must be positive) and accepts any ``power``, gradtx raises for ``transition_begin < 0``
    and ``power <= 0``.

    >>> import gradtx
    >>> s = gradtx.polynomial_schedule(1.0, 0.0, power=2, transition_steps=4)
    >>> [float(s(t)) for t in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    if not transition_steps > 0:  # type: ignore[operator]
        return lambda count: init_value

    def schedule(count):
        frac = 1 - _as_float(jnp.clip(count - transition_begin, 0, transition_steps)) / transition_steps
        return (init_value - end_value) * frac**power + end_value  # type: ignore[operator]

    return schedule


@declare
def linear_schedule(
    init_value: Real, end_value: Real, transition_steps: Real, transition_begin: NonNegative = 0
) -> Schedule:
    """``polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)``:
    a straight line from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

    optax's schedule (``transition_steps <= 0``: the constant ``init_value``, as optax).

    >>> import gradtx
    >>> s = gradtx.linear_schedule(1.0, 0.0, transition_steps=4, transition_begin=1)
    >>> [float(s(t)) for t in range(7)]
    [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


@declare
def exponential_decay(
    init_value: Real,
    transition_steps: Positive,
    decay_rate: Positive,
    transition_begin: NonNegative = 0,
    staircase: bool = False,
    end_value: Optional[Real] = None,
) -> Schedule:
    """``t -> init_value * decay_rate^((t - transition_begin) / transition_steps)`` after
    ``transition_begin`` (``init_value`` until then), the exponent floored with ``staircase``,
    the value bounded by ``end_value`` (below when ``decay_rate < 1``, above otherwise).

    optax's schedule. optax's docstring says ``transition_steps`` must be positive and
    ``decay_rate`` not zero, but its code returns the constant ``init_value`` for either
    (and takes a negative ``transition_begin`` as 0); gradtx raises for all three, and for a
    negative ``decay_rate`` (whose powers alternate in sign or are NaN).

    >>> import gradtx
    >>> s = gradtx.exponential_decay(1.0, transition_steps=2, decay_rate=0.5, staircase=True)
    >>> [float(s(t)) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    if end_value is not None:
        bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum  # type: ignore[operator]

    def schedule(count):
        elapsed = count - transition_begin
        p = _as_float(elapsed) / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
        return value if end_value is None else bound(value, end_value)

    return schedule


@declare
def cosine_decay_schedule(
    init_value: Real, decay_steps: Positive, alpha: Decay = 0.0, exponent: Real = 1.0
) -> Schedule:
    """``t -> init_value * ((1 - alpha) * c^exponent + alpha)``, with
    ``c = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2`` (Loshchilov & Hutter 2017,
    without restarts); optax's arguments and numbers.

    ``alpha`` (the final value over ``init_value``) must be in [0, 1]; optax takes any.

    >>> import gradtx
    >>> s = gradtx.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.1)
    >>> [round(float(s(t)), 4) for t in range(6)]
    [1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]
    """
    # ArrayLike (the hyperparameter types) includes complex and numpy.bool, which declare rejects
    steps = float(decay_steps)  # type: ignore[arg-type]

    def schedule(count):
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * _as_float(jnp.minimum(count, steps)) / steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


@declare
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """``t -> schedules[i](t - boundaries[i - 1])`` for ``boundaries[i - 1] <= t < boundaries[i]``:
    one schedule after another, each counting its steps from its own start.

    optax's ``join_schedules``. gradtx checks what optax takes silently: one boundary fewer
    than schedules (optax drops the schedules past the last boundary), boundaries in
    non-decreasing order (optax skips the schedules of an out-of-order boundary).

    >>> import gradtx
    >>> s = gradtx.join_schedules([gradtx.constant_schedule(1.0), gradtx.linear_schedule(0.5, 0.0, 2)], [2])
    >>> [float(s(t)) for t in range(5)]
    [1.0, 1.0, 0.5, 0.25, 0.0]
    """
    schedules, boundaries = list(schedules), list(boundaries)
    if not schedules:
        _fail("join_schedules", "schedules", schedules, "a non-empty sequence of schedules")
    if len(boundaries) != len(schedules) - 1:
        rule = f"{len(schedules) - 1} long: one per schedule after the first"
        _fail("join_schedules", "boundaries", boundaries, rule)
    if any(later < earlier for earlier, later in itertools.pairwise(boundaries)):
        _fail("join_schedules", "boundaries", boundaries, "in non-decreasing order")

    def schedule(step):
        value = schedules[0](step)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = jnp.where(step < boundary, value, later(step - boundary))
        return value

    return schedule


@declare
def warmup_constant_schedule(init_value: Real, peak_value: Real, warmup_steps: NonNegative) -> Schedule:
    """``t -> init + (peak - init) * t / warmup_steps`` for ``t < warmup_steps``, then ``peak_value``.

    optax's schedule, but for ``warmup_steps=0``: optax's then stays at ``init_value`` for
    ever (its linear warmup of 0 steps is the constant ``init_value``), gradtx's is
    ``peak_value`` from the start, a schedule without warmup.

    >>> import gradtx
    >>> s = gradtx.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
    >>> [float(s(t)) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    return join_schedules([warmup, constant_schedule(peak_value)], [warmup_steps])  # type: ignore[list-item]


@declare
def warmup_cosine_decay_schedule(
    init_value: Real,
    peak_value: Real,
    warmup_steps: NonNegative,
    decay_steps: Positive,
    end_value: Real = 0.0,
    exponent: Real = 1.0,
) -> Schedule:
    """``join_schedules([linear_schedule(init, peak, warmup_steps), cosine_decay_schedule(peak,
    decay_steps - warmup_steps, end / peak, exponent)], [warmup_steps])``: a linear warmup,
    then a cosine decay to ``end_value``.

    optax's schedule: ``decay_steps`` counts the warmup too, so it must exceed ``warmup_steps``.

    >>> import gradtx
    >>> s = gradtx.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6, end_value=0.1)
    >>> [round(float(s(t)), 4) for t in range(8)]
    [0.0, 0.5, 1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]
    """
    if _known(decay_steps, warmup_steps) and not decay_steps > warmup_steps:  # type: ignore[operator]
        _fail(
            "warmup_cosine_decay_schedule",
            "decay_steps",
            decay_steps,
            f"> warmup_steps ({warmup_steps!r}): it counts the warmup too",
        )
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent)  # type: ignore[operator]
    return join_schedules([warmup, decay], [warmup_steps])  # type: ignore[list-item]


@declare
def warmup_exponential_decay_schedule(
    init_value: Real,
    peak_value: Real,
    warmup_steps: NonNegative,
    transition_steps: Positive,
    decay_rate: Positive,
    transition_begin: NonNegative = 0,
    staircase: bool = False,
    end_value: Optional[Real] = None,
) -> Schedule:
    """``join_schedules([linear_schedule(init, peak, warmup_steps), exponential_decay(peak,
    transition_steps, decay_rate, transition_begin, staircase, end_value)], [warmup_steps])``:
    a linear warmup, then an exponential decay.

    optax's schedule, with ``exponential_decay``'s checks.

    >>> import gradtx
    >>> s = gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 2, transition_steps=1, decay_rate=0.5)
    >>> [float(s(t)) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.25, 0.125]
    """
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value)
    return join_schedules([warmup, decay], [warmup_steps])  # type: ignore[list-item]


@declare
def piecewise_constant_schedule(init_value: Real, boundaries_and_scales: Optional[dict] = None) -> Schedule:
    """``t -> init_value * prod(scale for boundary, scale in boundaries_and_scales.items() if t >= boundary)``.

    optax's schedule; the scales must be >= 0 (as optax).

    >>> import gradtx
    >>> s = gradtx.piecewise_constant_schedule(1.0, {2: 0.5, 4: 0.5})
    >>> [float(s(t)) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    boundaries, scales = _sorted_scales("piecewise_constant_schedule", boundaries_and_scales)

    def schedule(count):
        value = init_value
        for boundary, scale in zip(boundaries, scales):
            value = jnp.where(count < boundary, value, value * scale)
        return value

    return schedule


def _interpolated(interpolate_type: str, init_value, boundaries: Sequence, scales: Sequence) -> Schedule:
    """Through the knots ``(0, init_value)``, ``(b_i, init_value * s_1 * ... * s_i)``."""
    values = [init_value]
    for scale in scales:
        values.append(values[-1] * scale)
    return lambda count: _through_knots(count, (0, *boundaries), values, _SHAPES[interpolate_type])


@declare
def piecewise_interpolate_schedule(
    interpolate_type: InterpolateType, init_value: Real, boundaries_and_scales: Optional[dict] = None
) -> Schedule:
    """``t -> interpolate(v_i, v_(i+1), (t - b_i) / (b_(i+1) - b_i))`` for ``b_i <= t < b_(i+1)``,
    ``b_0 = 0``, ``v_i = init_value * s_1 * ... * s_i`` (the scales up to ``b_i``), ``v_n``
    after the last boundary.

    optax's schedule: ``interpolate_type`` is ``"linear"`` or ``"cosine"``; the scales must
    be >= 0 (as optax) and the boundaries >= 0 (optax takes a negative one and returns
    nonsense).

    >>> import gradtx
    >>> s = gradtx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5})
    >>> [float(s(t)) for t in range(0, 7, 2)]
    [1.0, 0.75, 0.5, 0.5]
    """
    call = "piecewise_interpolate_schedule"
    boundaries, scales = _sorted_scales(call, boundaries_and_scales)
    if boundaries and boundaries[0] < 0:
        _fail(call, "boundaries_and_scales", boundaries_and_scales, "a dict {step: scale} of steps >= 0")
    return _interpolated(interpolate_type, init_value, boundaries, scales)


@declare
def linear_onecycle_schedule(
    transition_steps: Positive,
    peak_value: Real,
    pct_start: Fraction = 0.3,
    pct_final: FractionUpToOne = 0.85,
    div_factor: Positive = 25.0,
    final_div_factor: Positive = 1e4,
) -> Schedule:
    """``piecewise_interpolate_schedule("linear", peak / div_factor, {int(pct_start T): div_factor,
    int(pct_final T): 1 / div_factor, T: 1 / final_div_factor})``, ``T = transition_steps``: up
    from ``peak / div_factor`` to ``peak_value``, back, then down to ``peak / (div_factor *
    final_div_factor)`` (Smith & Topin 2017, https://arxiv.org/abs/1708.07120).

    optax's schedule, with ``0 < pct_start < pct_final <= 1`` checked. optax's boundaries are
    dict keys, so that ``pct_final=1`` (its second boundary is then ``T`` too) loses the
    return to ``peak / div_factor``; gradtx keeps it.

    >>> import gradtx
    >>> s = gradtx.linear_onecycle_schedule(10, 1.0, pct_start=0.2, pct_final=0.6, div_factor=4.0, final_div_factor=2.0)
    >>> [float(s(t)) for t in (0, 2, 6, 10)]
    [0.25, 1.0, 0.25, 0.125]
    """
    if _known(pct_final, pct_start) and not pct_final > pct_start:  # type: ignore[operator]
        _fail("linear_onecycle_schedule", "pct_final", pct_final, f"> pct_start ({pct_start!r})")
    steps = transition_steps
    boundaries = (int(pct_start * steps), int(pct_final * steps), steps)  # type: ignore[arg-type]
    scales = (div_factor, 1.0 / div_factor, 1.0 / final_div_factor)
    return _interpolated("linear", peak_value / div_factor, boundaries, scales)


@declare
def cosine_onecycle_schedule(
    transition_steps: Positive,
    peak_value: Real,
    pct_start: Fraction = 0.3,
    div_factor: Positive = 25.0,
    final_div_factor: Positive = 1e4,
) -> Schedule:
    """``piecewise_interpolate_schedule("cosine", peak / div_factor, {int(pct_start T): div_factor,
    T: 1 / (div_factor * final_div_factor)})``, ``T = transition_steps``: a half cosine up from
    ``peak / div_factor`` to ``peak_value``, another down to ``peak / (div_factor *
    final_div_factor)`` (Smith & Topin 2017, https://arxiv.org/abs/1708.07120).

    optax's schedule, with ``0 < pct_start < 1`` checked. torch's ``OneCycleLR`` puts its
    knots one step earlier: ``one_cycle_schedule``.

    >>> import gradtx
    >>> s = gradtx.cosine_onecycle_schedule(10, 1.0, pct_start=0.2, div_factor=4.0, final_div_factor=2.0)
    >>> [round(float(s(t)), 4) for t in (0, 1, 2, 10)]
    [0.25, 0.625, 1.0, 0.125]
    """
    boundaries = (int(pct_start * transition_steps), transition_steps)  # type: ignore[arg-type]
    scales = (div_factor, 1.0 / (div_factor * final_div_factor))
    return _interpolated("cosine", peak_value / div_factor, boundaries, scales)


@declare
def sgdr_schedule(cosine_kwargs: Iterable[dict]) -> Schedule:
    """``join_schedules([warmup_cosine_decay_schedule(**kw) for kw in cosine_kwargs], [d_1, d_1 + d_2,
    ...])``, ``d_i`` the cycles' ``decay_steps``: SGD with warm restarts (Loshchilov & Hutter
    2017, https://arxiv.org/abs/1608.03983).

    optax's schedule; each cycle needs ``0 <= warmup_steps < decay_steps``.

    >>> import gradtx
    >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
    >>> s = gradtx.sgdr_schedule([cycle, cycle])
    >>> [round(float(s(t)), 4) for t in range(6)]
    [0.0, 1.0, 0.5, 0.0, 1.0, 0.5]
    """
    cycles = [dict(kw) for kw in cosine_kwargs]
    if not cycles:
        _fail("sgdr_schedule", "cosine_kwargs", cycles, "a non-empty sequence of dicts")
    for i, kw in enumerate(cycles):
        if not 0 <= kw.get("warmup_steps", -1) < kw.get("decay_steps", 0):
            _fail("sgdr_schedule", "cosine_kwargs", cycles, f"dicts with 0 <= warmup_steps < decay_steps (cycle {i})")
    ends = [sum(kw["decay_steps"] for kw in cycles[: i + 1]) for i in range(len(cycles))]
    return join_schedules([warmup_cosine_decay_schedule(**kw) for kw in cycles], ends[:-1])


# --- beyond optax -----------------------------------------------------------------------


@declare
def cyclic_schedule(
    base_lr: NonNegative,
    max_lr: NonNegative,
    step_size: Positive,
    step_size_down: Optional[Positive] = None,
    mode: CyclicMode = "triangular",
    gamma: FractionUpToOne = 1.0,
) -> Schedule:
    """``t -> base_lr + (max_lr - base_lr) * w(t mod (up + down)) * a(t)``, ``w`` the triangle
    from 0 up to 1 in ``up = step_size`` steps and back in ``down = step_size_down``; ``a(t)``
    is 1 (``"triangular"``), ``2^-floor(t / (up + down))`` (``"triangular2"``, the height halved
    every cycle) or ``gamma^t`` (``"exp_range"``).

    The cyclical learning rate of Smith (2017), https://arxiv.org/abs/1506.01186, with the
    arguments and numbers of ``torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr,
    step_size_up=step_size, step_size_down, mode, gamma)`` (``step_size`` is the paper's
    name; it has no default here, torch's is 2000). ``step_size_down`` defaults to
    ``step_size``; ``max_lr`` must be >= ``base_lr``, ``gamma`` in (0, 1] (torch takes any).

    >>> import gradtx
    >>> s = gradtx.cyclic_schedule(0.0, 1.0, step_size=2, mode="triangular2")
    >>> [float(s(t)) for t in range(9)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0]
    """
    if _known(max_lr, base_lr) and not max_lr >= base_lr:  # type: ignore[operator]
        _fail("cyclic_schedule", "max_lr", max_lr, f">= base_lr ({base_lr!r})")
    up = step_size
    down = step_size if step_size_down is None else step_size_down
    period = up + down

    def schedule(count):
        wave = _through_knots(jnp.mod(count, period), (0, up, period), (0.0, 1.0, 0.0), _linear)
        if mode == "triangular2":
            wave = wave * 2.0 ** -_as_float(jnp.floor_divide(count, period))
        elif mode == "exp_range":
            wave = wave * gamma ** _as_float(count)
        return base_lr + (max_lr - base_lr) * wave  # type: ignore[operator]

    return schedule


@declare
def triangular_schedule(base_value: NonNegative, max_value: NonNegative, step_size: Positive) -> Schedule:
    """``cyclic_schedule(base_value, max_value, step_size)``: the triangle wave from ``base_value``
    up to ``max_value`` in ``step_size`` steps and back in as many (Smith 2017's "triangular").

    >>> import gradtx
    >>> s = gradtx.triangular_schedule(0.0, 1.0, step_size=2)
    >>> [float(s(t)) for t in range(5)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if _known(max_value, base_value) and not max_value >= base_value:  # type: ignore[operator]
        _fail("triangular_schedule", "max_value", max_value, f">= base_value ({base_value!r})")
    return cyclic_schedule(base_value, max_value, step_size)


@declare
def one_cycle_schedule(
    max_lr: NonNegative,
    total_steps: Positive,
    pct_start: Fraction = 0.3,
    anneal_strategy: AnnealStrategy = "cos",
    div_factor: Positive = 25.0,
    final_div_factor: Positive = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """``t -> anneal(v_i, v_(i+1), pct)`` through the knots ``0, p T - 1, T - 1`` with values
    ``max_lr / div_factor, max_lr, max_lr / (div_factor * final_div_factor)``, ``p = pct_start``,
    ``T = total_steps`` (``three_phase``: knots ``0, p T - 1, 2 p T - 2, T - 1``, values
    ``max / div, max, max / div, max / (div * final_div)``); ``anneal`` a half cosine or a line.

    The one-cycle policy (Smith & Topin 2017, https://arxiv.org/abs/1708.07120) with the
    arguments, defaults and numbers of ``torch.optim.lr_scheduler.OneCycleLR`` (its knots one
    step before optax's ``cosine_onecycle_schedule``'s). Past the last step torch raises;
    gradtx holds the final value. ``pct_start`` must be in (0, 1) (torch takes 0 and 1), and
    at most 0.5 with ``three_phase`` (beyond, torch's second phase outlasts the schedule).

    >>> import gradtx
    >>> s = gradtx.one_cycle_schedule(1.0, total_steps=6, pct_start=0.5, anneal_strategy="linear",
    ...                               div_factor=4.0, final_div_factor=2.0)
    >>> [round(float(s(t)), 4) for t in range(6)]
    [0.25, 0.625, 1.0, 0.7083, 0.4167, 0.125]
    """
    if three_phase and _known(pct_start) and not pct_start <= 0.5:  # type: ignore[operator]
        _fail("one_cycle_schedule", "pct_start", pct_start, "<= 0.5 with three_phase=True")
    start = pct_start * total_steps
    initial = max_lr / div_factor
    final = initial / final_div_factor
    if three_phase:
        knots, values = (0, start - 1, 2 * start - 2, total_steps - 1), (initial, max_lr, initial, final)
    else:
        knots, values = (0, start - 1, total_steps - 1), (initial, max_lr, final)  # type: ignore[assignment]
    return lambda count: _through_knots(count, knots, values, _SHAPES[anneal_strategy])


@declare
def warmup_stable_decay_schedule(
    init_value: Real,
    peak_value: Real,
    warmup_steps: NonNegative,
    stable_steps: NonNegative,
    decay_steps: Positive,
    end_value: Real = 0.0,
    decay_shape: DecayShape = "linear",
) -> Schedule:
    """``t -> init + (peak - init) t / W`` for ``t < W``, ``peak`` until ``W + S``, then
    ``end + (peak - end) f((t - W - S) / D)`` until ``W + S + D`` and ``end`` after, with
    ``W, S, D = warmup_steps, stable_steps, decay_steps`` and ``f(p)`` = ``1 - p``
    (``"linear"``), ``(1 + cos(pi p)) / 2`` (``"cosine"``) or ``1 - sqrt(p)`` (``"sqrt"``).

    Warmup-stable-decay (WSD): a linear warmup, a long constant phase, and a short cooldown,
    so that a run can be extended from any point of the constant phase (MiniCPM, Hu et al.
    2024, https://arxiv.org/abs/2404.06395; Hägele et al. 2024, https://arxiv.org/abs/2405.18392,
    who find ``"sqrt"`` best). Each of ``warmup_steps``, ``stable_steps`` and ``decay_steps``
    is the length of its own phase (where ``warmup_cosine_decay_schedule``'s ``decay_steps``
    is the total).

    >>> import gradtx
    >>> s = gradtx.warmup_stable_decay_schedule(0.0, 1.0, 2, 2, 4, end_value=0.2, decay_shape="sqrt")
    >>> [round(float(s(t)), 4) for t in range(9)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.6, 0.4343, 0.3072, 0.2]
    """
    knots = (0, warmup_steps, warmup_steps + stable_steps, warmup_steps + stable_steps + decay_steps)
    values = (init_value, peak_value, peak_value, end_value)
    shapes = (_linear, _linear, _SHAPES[decay_shape])
    return lambda count: _through_knots(count, knots, values, shapes)
