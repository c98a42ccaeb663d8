"""Averages of the parameters and lookahead: ema of the params, SWA/EMA model averaging, lookahead's fast and slow weights, and monitoring wrappers.

Three kinds of averages live here, and they are not interchangeable:

- ``ema(decay)`` is a *transformation*: it averages whatever flows through it (the
  gradients, in a chain), starting from zero, and by default divides by ``1 - decay^t``
  (optax's ``ema``);
- ``averaged_params(kind)`` averages the *params* themselves outside the optimizer, as
  ``torch.optim.swa_utils.AveragedModel`` does: the first update copies the params, later
  ones move an equal-weight running mean (SWA) or an exponential average (EMA) towards
  them. Evaluate with the average, train with the params;
- ``incremental_update`` / ``periodic_update`` are one-line rules for a target copy of
  the params (Polyak averaging, target networks), with no state of their own.

``lookahead`` keeps fast and slow params (``LookaheadParams``) and pulls the slow ones
towards the fast ones every ``sync_period`` steps. ``snapshot``, ``monitor`` and
``measure_with_ema`` record measurements of the updates in the state without changing
the updates.
"""  # noqa: E501 - the summary line (the docs' section blurb) is wider than 120 columns

from __future__ import annotations

import keyword
import numbers
from typing import Annotated, Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import _tree
from gradtx.base import GradientTransformation, Params, UpdateError, Updates
from gradtx.hyperparams import AccumulatorDtype, Decay, OneOf
from gradtx.numerics import debias as debias_moments
from gradtx.numerics import ema as ema_step
from gradtx.numerics import real_dtype, safe_increment
from gradtx.transform import Field, Step, Transformation, declare, primitive, record_type, update_inner

__all__ = [
    "LookaheadParams",
    "LookaheadState",
    "averaged_params",
    "ema",
    "incremental_update",
    "lookahead",
    "measure_with_ema",
    "monitor",
    "periodic_update",
    "snapshot",
]


class _IntegerAtLeast:
    """An integer ``>= low`` (a period, a number of steps); a traced value is not checked."""

    def __init__(self, low: int):
        self.low = low

    def check(self, call: str, name: str, value: Any) -> None:
        if _traced(value):
            return
        rule = f"an integer >= {self.low}"
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.ndarray, jax.Array)):
            raise TypeError(f"gradtx.{call}({name}={value!r}): {name} must be {rule}, got {type(value).__name__}")
        if isinstance(value, (np.ndarray, jax.Array)) and (
            np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.integer)
        ):
            raise TypeError(f"gradtx.{call}({name}={value!r}): {name} must be {rule} (a scalar of an integer dtype)")
        if int(value) < self.low:
            raise ValueError(f"gradtx.{call}({name}={value!r}): {name} must be {rule}")


Period = Annotated[int, _IntegerAtLeast(1)]
"""A number of steps >= 1 (lookahead's ``sync_period``, a target network's ``update_period``)."""
Measure = Callable[[Updates], Any]


def _traced(x: Any) -> bool:
    """Whether ``x`` is a value known only when the program runs (inside ``jax.jit``)."""
    return isinstance(x, jax.core.Tracer)


def _zeros_shaped(shapes: Any) -> Any:
    """Zeros of the shapes and dtypes of a tree of ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


# --- ema ---------------------------------------------------------------------------------


def _ema_stage(decay, debias: bool, accumulator_dtype, measure: Optional[Measure] = None) -> Transformation:
    """``ema = ema(x, ema, decay) ; u -> ema / (1 - decay^t)`` (without the division when
    ``debias`` is off), ``x`` the updates or ``measure(updates)``."""

    def init(params):
        if measure is None:
            return _tree.zeros_like(params, dtype=accumulator_dtype)
        # the average's dtype from the first step on (a boolean measurement averages to floats)
        shapes = jax.eval_shape(lambda p: jax.tree.map(lambda m: ema_step(m, m, decay), measure(p)), params)
        return _tree.cast(_zeros_shaped(shapes), accumulator_dtype)

    def apply(updates, state, step):
        values = updates if measure is None else measure(updates)
        new = jax.tree.map(lambda x, m: ema_step(x, m, decay), values, state["ema"])
        out = debias_moments(new, decay, safe_increment(step.count)) if debias else new
        if measure is None:
            out = _tree.cast_like(out, updates)
        return out, {"ema": _tree.cast(new, accumulator_dtype)}

    return primitive(apply, {"ema": Field(init, like_params=measure is None)}, uses_count=True)


def _check_debiased_decay(call: str, decay, debias: bool) -> None:
    """``1 - decay^t`` is 0 for ``decay = 1``: debiasing would divide by zero."""
    if debias and not _traced(decay) and np.any(np.asarray(decay) == 1):
        raise ValueError(f"gradtx.{call}(decay={decay!r}): decay must be in [0, 1) with debias=True")


@declare
def ema(decay: Decay, debias: bool = True, accumulator_dtype: AccumulatorDtype = None) -> Transformation:
    """``ema = decay * ema + (1 - decay) * u ; u -> ema / (1 - decay^t)`` (``t`` from 1;
    ``u -> ema`` with ``debias=False``).

    An exponential moving average of the updates, started at zero, and divided by
    ``1 - decay^t`` so that it is an average from the first step on (optax's ``ema``).
    Applied to the gradients this is momentum in its averaged form; to average the
    *params* for evaluation use ``averaged_params`` (which starts from the params, not
    from zero).

    Args:
      decay: the averaging factor, in [0, 1] ([0, 1) with ``debias=True``: ``1 - 1^t`` is 0).
      debias: divide by ``1 - decay^t``.
      accumulator_dtype: dtype of ``ema`` in the state (the output keeps the input's dtype).

    State: ``count, ema`` (optax's ``EmaState``).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.ema(0.5)
    >>> out, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    >>> float(out[0]), float(state.ema[0])
    (2.0, 1.0)
    """
    _check_debiased_decay("ema", decay, debias)
    return _ema_stage(decay, debias, accumulator_dtype)


# --- lookahead ---------------------------------------------------------------------------


class LookaheadParams(NamedTuple):
    """The params of ``lookahead``: ``fast`` (take the gradients here) and ``slow`` (the
    lookahead weights: evaluate with these). optax's ``LookaheadParams``, field for field."""

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Fast and slow params both equal to ``params`` (the start of training)."""
        return cls(fast=params, slow=params)


LookaheadState = record_type("lookahead", ("fast_state", "steps_since_sync"))
LookaheadState.__doc__ = """The state of ``gradtx.lookahead``: ``fast_state`` (the fast optimizer's whole state)
and ``steps_since_sync`` (fast steps since the last synchronisation, int32), optax's fields."""


class _WithParams(NamedTuple):
    """The gradients and the ``LookaheadParams`` travelling together through the framework's
    ``update`` (which compares the gradients with the params it is given: these differ)."""

    grads: Updates
    params: Any


def _lookahead_params(params: Any) -> Any:
    if not (hasattr(params, "fast") and hasattr(params, "slow")):
        raise UpdateError(
            f"update() needs params=LookaheadParams(fast, slow) (take the gradients at params.fast), "
            f"got {'None' if params is None else type(params).__name__}",
            ("lookahead",),
        )
    return params


def _lookahead_core(
    fast_optimizer: GradientTransformation, sync_period: Period, slow_step_size: Decay, reset_state: bool = False
) -> Transformation:
    """The declared core of ``lookahead``: the hyperparameter checks and the state record."""
    if not (hasattr(fast_optimizer, "init") and hasattr(fast_optimizer, "update")):
        raise TypeError(
            f"gradtx.lookahead(fast_optimizer={fast_optimizer!r}): fast_optimizer must be a GradientTransformation"
        )

    # Python numbers where they are known, so that the int32 count and the params' dtypes stay
    period = sync_period if _traced(sync_period) else int(sync_period)
    scalar = not _traced(slow_step_size) and np.ndim(slow_step_size) == 0
    alpha = float(np.asarray(slow_step_size)) if scalar else slow_step_size

    def init(params):
        return fast_optimizer.init(getattr(params, "fast", params))

    def apply(updates, state, step: Step):
        grads, lp = updates if isinstance(updates, _WithParams) else (updates, step.params)
        lp = _lookahead_params(lp)
        fast_step = step._replace(params=lp.fast)
        fast_updates, fast_state = update_inner(fast_optimizer, grads, state["fast_state"], fast_step)
        sync = state["steps_since_sync"] == period - 1
        # at a sync step the fast params end at fast + u; the slow ones move slow_step_size of
        # the way there, and the fast ones are set to the new slow ones
        gap = jax.tree.map(lambda f, u, s: f + u - s, lp.fast, fast_updates, lp.slow)
        slow_updates = jax.tree.map(lambda d: jnp.where(sync, (alpha * d).astype(d.dtype), jnp.zeros_like(d)), gap)
        fast_updates = jax.tree.map(
            lambda u, d: jnp.where(sync, (u - (1 - alpha) * d).astype(u.dtype), u), fast_updates, gap
        )
        if reset_state:
            # the next inner loop starts from the synchronised params: its state is initialised there
            synced = jax.tree.map(lambda f, u: jnp.asarray(f + u).astype(jnp.asarray(f).dtype), lp.fast, fast_updates)
            fresh = fast_optimizer.init(synced)
            fast_state = jax.tree.map(
                lambda new, kept: jnp.where(sync, jnp.asarray(new).astype(jnp.asarray(kept).dtype), kept),
                fresh,
                fast_state,
            )
        steps = (state["steps_since_sync"] + 1) % period
        return type(lp)(fast=fast_updates, slow=slow_updates), {"fast_state": fast_state, "steps_since_sync": steps}

    fields = {
        "fast_state": Field(init, like_params=False),
        "steps_since_sync": Field(lambda params: jnp.zeros([], jnp.int32), like_params=False),
    }
    return primitive(apply, fields)


# declared under the user's call: its checks, errors and state record say ``lookahead``
_lookahead_core.__name__ = _lookahead_core.__qualname__ = "lookahead"
_lookahead = declare(_lookahead_core)


def lookahead(
    fast_optimizer: GradientTransformation, sync_period: Period, slow_step_size: Decay, reset_state: bool = False
) -> Transformation:
    """Every ``sync_period`` fast steps: ``slow = slow + slow_step_size * (fast - slow) ; fast = slow``.

    Lookahead (Zhang et al. 2019, `k steps forward, 1 step back
    <https://arxiv.org/abs/1907.08610>`_, Algorithm 1 with ``k = sync_period`` and
    ``alpha = slow_step_size``): the fast optimizer takes ``k`` steps from the slow
    weights, then the slow weights move ``alpha`` of the way to where the fast ones ended
    and the fast ones restart from there. As an update rule: the params are
    ``LookaheadParams(fast, slow)``, the gradients are taken at ``params.fast``, and
    ``update`` returns ``LookaheadParams`` of updates for ``apply_updates`` (do not
    transform them further: use lookahead outermost). Evaluate with ``params.slow``.

    ``reset_state=True`` re-initialises the fast optimizer at each synchronisation (the
    paper's "reset" option). Where optax differs: optax calls ``init`` at the fast params
    *before* the last fast step, gradtx at the synchronised params where the next inner
    loop starts (the same for optimizers whose state starts at zeros; not for those that
    start from the params, schedule-free's ``z``); and optax mixes the two states as
    ``(1 - sync) * kept + sync * fresh``, which turns a state holding ``inf`` (a running
    minimum, ``reduce_on_plateau``'s ``best_value``) into NaN, where gradtx selects.
    gradtx also passes ``update``'s extra keyword arguments (``value=loss``) to the fast
    optimizer; optax's lookahead takes none.

    Args:
      fast_optimizer: the inner optimizer (gradtx or optax).
      sync_period: fast steps per synchronisation ``k``, an integer >= 1.
      slow_step_size: ``alpha``, in [0, 1].
      reset_state: re-initialise the fast optimizer's state at each synchronisation.

    State: ``fast_state, steps_since_sync`` (optax's ``LookaheadState``). ``init`` takes
    ``LookaheadParams`` (or the fast params alone).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.lookahead(gradtx.sgd(0.5), sync_period=2, slow_step_size=0.5)
    >>> params = gradtx.LookaheadParams.init_synced(jnp.array([1.0]))
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...     updates, state = opt.update(jnp.array([1.0]), state, params)
    ...     params = gradtx.apply_updates(params, updates)
    >>> float(params.fast[0]), float(params.slow[0])
    (0.5, 0.5)
    """
    core = _lookahead(fast_optimizer, sync_period, slow_step_size, reset_state)

    def update_fn(updates, state, params=None, **extra):
        return core.update(_WithParams(updates, _lookahead_params(params)), state, None, **extra)

    t = Transformation(core.init, update_fn)
    t.stage = core.stage
    return t


# --- target-network rules ------------------------------------------------------------------


@declare
def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Decay) -> Params:
    """``old -> step_size * new + (1 - step_size) * old``, leaf by leaf (Polyak averaging).

    One step of an exponential moving average of the params with weight ``step_size`` on
    the newest: a slowly moving target network (``step_size = 1 - decay``). optax's
    ``incremental_update``; ``averaged_params(kind="ema")`` keeps the same average with
    its own state and copies the params at its first update.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.incremental_update(jnp.array([1.0]), jnp.array([0.0]), step_size=0.25)
    Array([0.25], dtype=float32)
    """
    return jax.tree.map(lambda new, old: ema_step(new, old, 1 - step_size), new_tensors, old_tensors)


@declare
def periodic_update(new_tensors: Params, old_tensors: Params, steps: Any, update_period: Period) -> Params:
    """``old -> new`` when ``steps % update_period == 0``, else ``old`` (a periodic copy).

    The target network of DQN (Mnih et al. 2015) and BYOL (Grill et al. 2020): a copy of
    the online params refreshed every ``update_period`` steps. optax's ``periodic_update``.

    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.periodic_update(jnp.array([1.0]), jnp.array([0.0]), steps=4, update_period=2)
    Array([1.], dtype=float32)
    """
    return jax.lax.cond(jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors)


# --- monitoring ----------------------------------------------------------------------------


def _field_name(call: str, measure_name: Any) -> str:
    if not isinstance(measure_name, str) or not measure_name.isidentifier() or keyword.iskeyword(measure_name):
        raise ValueError(
            f"gradtx.{call}(measure_name={measure_name!r}): measure_name must be a Python identifier "
            f"(it names the state field)"
        )
    if measure_name.startswith("_") or measure_name == "count":
        raise ValueError(
            f"gradtx.{call}(measure_name={measure_name!r}): measure_name must not start with '_' or be 'count' "
            f"(it names the state field)"
        )
    return measure_name


@declare
def snapshot(measure_name: str, measure: Measure) -> Transformation:
    """``u -> u``, keeping ``measure(u)`` in the state field ``measure_name``.

    Records a measurement of the updates at this point of a chain (the norm before
    clipping, say) without changing them; read it with ``state.<measure_name>`` or
    ``optax.tree.get(state, measure_name)``. ``init`` stores ``measure(params)``.

    Where optax differs: optax's state is ``SnapshotState(measurement={measure_name:
    value})``; gradtx keeps the value in a field named ``measure_name``, so that a chain
    can hold several snapshots (their fields differ) and ``optax.tree.get`` finds each.
    ``measure_name`` must therefore be a Python identifier.

    State: ``<measure_name>``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.chain(gradtx.snapshot("before", jnp.sum), gradtx.scale(0.5))
    >>> updates, state = opt.update(jnp.array([1.0, 3.0]), opt.init(jnp.zeros(2)))
    >>> float(state.before)
    4.0
    """
    name = _field_name("snapshot", measure_name)
    if not callable(measure):
        raise TypeError(f"gradtx.snapshot(measure={measure!r}): measure must be a function of the updates")
    return primitive(
        lambda updates, state, step: (updates, {name: measure(updates)}),
        {name: Field(measure, like_params=False)},
    )


@declare
def monitor(measures: dict[str, Union[GradientTransformation, Measure]]) -> Transformation:
    """``u -> u``, keeping ``measurements[name] = m(u)`` for each measure ``m`` (a function of
    the updates, or a transformation whose output is the measurement: ``measure_with_ema``).

    Extends ``snapshot`` to measures with a state of their own; read a measurement with
    ``state.measurements[name]`` or ``optax.tree.get(state, name)``. Extra keyword
    arguments of ``update`` reach the measures that take them.

    Where optax differs: optax's ``init`` leaves ``measurements`` empty (``{}``) and the
    first ``update`` fills it, so the state changes structure and cannot be the carry of
    ``jax.lax.scan``; gradtx's ``init`` fills it with zeros of each measurement's shape and
    dtype (from ``jax.eval_shape`` of the measure on the params).

    State: ``measurements, measure_states`` (optax's ``MonitorState``).

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.monitor({"total": jnp.sum, "avg": gradtx.measure_with_ema(jnp.sum, decay=0.5)})
    >>> updates, state = opt.update(jnp.array([1.0, 3.0]), opt.init(jnp.zeros(2)))
    >>> float(state.measurements["total"]), float(state.measurements["avg"])
    (4.0, 4.0)
    """
    if not isinstance(measures, dict) or not all(isinstance(k, str) for k in measures):
        raise TypeError(f"gradtx.monitor(measures={measures!r}): measures must be a dict from names to measures")
    as_transformations: dict[str, GradientTransformation] = {}
    for name, measure in measures.items():
        if callable(measure):
            as_transformations[name] = _measure_stage(measure)
        elif hasattr(measure, "init") and hasattr(measure, "update"):
            as_transformations[name] = measure
        else:
            raise TypeError(
                f"gradtx.monitor(measures={measures!r}): the measure {name!r} must be a function of the "
                f"updates or a GradientTransformation"
            )
    names = tuple(as_transformations)

    def init_states(params):
        return tuple(as_transformations[n].init(params) for n in names)

    def init_measurements(params):
        def measure_all(p):
            states = init_states(p)
            return {n: as_transformations[n].update(p, s, p)[0] for n, s in zip(names, states)}

        return _zeros_shaped(jax.eval_shape(measure_all, params))

    def apply(updates, state, step):
        measurements, new_states = {}, []
        for n, inner_state in zip(names, state["measure_states"]):
            measurements[n], new_state = update_inner(as_transformations[n], updates, inner_state, step)
            new_states.append(new_state)
        return updates, {"measurements": measurements, "measure_states": tuple(new_states)}

    fields = {
        "measurements": Field(init_measurements, like_params=False),
        "measure_states": Field(init_states, like_params=False),
    }
    return primitive(apply, fields)


def _measure_stage(measure: Measure) -> Transformation:
    """``u -> measure(u)``, no state: a function measure of ``monitor`` as a transformation."""
    return primitive(lambda updates, state, step: (measure(updates), {}))


@declare
def measure_with_ema(
    measure: Measure, decay: Decay, debias: bool = True, accumulator_dtype: AccumulatorDtype = None
) -> Transformation:
    """``ema = decay * ema + (1 - decay) * measure(u) ; u -> ema / (1 - decay^t)``.

    A moving average of a measurement of the updates (``ema`` applied to
    ``measure(u)``), for ``monitor``: how often the gradients were clipped, a smoothed
    norm. Its output is the averaged measurement (not the updates).

    Where optax differs: optax's ``init`` keeps ``ema`` in the measurement's own dtype,
    which for a boolean measurement (``norm > threshold``) is ``bool`` until the first
    update makes it a float (the state changes type, a ``jax.lax.scan`` carry cannot); gradtx
    keeps it in the average's dtype from the start.

    Args:
      measure: a function of the updates tree, returning an array or a tree of arrays.
      decay: the averaging factor, in [0, 1] ([0, 1) with ``debias=True``).
      debias: divide by ``1 - decay^t``.
      accumulator_dtype: dtype of ``ema`` in the state.

    State: ``count, ema``.

    >>> import jax.numpy as jnp, gradtx
    >>> opt = gradtx.measure_with_ema(lambda u: jnp.sum(u) > 1, decay=0.5)
    >>> out, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
    >>> float(out)
    1.0
    """
    if not callable(measure):
        raise TypeError(f"gradtx.measure_with_ema(measure={measure!r}): measure must be a function of the updates")
    _check_debiased_decay("measure_with_ema", decay, debias)
    return _ema_stage(decay, debias, accumulator_dtype, measure=measure)


# --- averaged params (torch.optim.swa_utils.AveragedModel) ---------------------------------

AveragedParamsState = record_type("averaged_params", ("average", "n_averaged"))
AveragedParamsState.__doc__ = """The state of ``gradtx.averaged_params``: ``average`` (shaped like the params)
and ``n_averaged`` (the number of updates so far, int32: torch's ``AveragedModel.n_averaged``)."""


class ParamsAverage(NamedTuple):
    """What ``averaged_params`` returns: ``init(params) -> state`` and
    ``update(params, state) -> state``; the average is ``state.average``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any], Any]


def _running_mean(average: jax.Array, x: jax.Array, n: jax.Array) -> jax.Array:
    """``average + (x - average) / (n + 1)``: the mean of ``n`` values and ``x`` from the
    mean of the ``n`` (SWA, Izmailov et al. 2018, Algorithm 1). The division is done in at
    least float32 (``n + 1`` is not exact in bfloat16 beyond 256)."""
    dtype = jnp.promote_types(real_dtype(average.dtype), jnp.float32)
    return (average + (x - average) / (n + 1).astype(dtype)).astype(average.dtype)


@declare
def averaged_params(
    kind: Annotated[str, OneOf(("swa", "ema"))] = "swa", decay: Optional[Decay] = None
) -> ParamsAverage:
    """``average = params`` at the first update, then ``average + (params - average) / (n + 1)``
    (SWA, ``n`` updates so far) or ``decay * average + (1 - decay) * params`` (EMA).

    An average of the params kept beside the optimizer, for evaluation:
    ``torch.optim.swa_utils.AveragedModel`` as a pure ``(init, update)`` pair.
    ``kind="swa"`` is its default, the equal-weight running mean of Stochastic Weight
    Averaging (Izmailov et al. 2018, `Averaging Weights Leads to Wider Optima
    <https://arxiv.org/abs/1803.05407>`_): call ``update`` with the params at the end of
    each cycle (or every epoch) of a high constant or cyclical learning rate, and
    ``state.average`` is the mean of the params passed so far. ``kind="ema"`` is
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``: an exponential
    average started from the first params, without debiasing. In both the first
    ``update`` copies the params (torch's rule; the paper counts its initial weights as
    the first model: call ``update`` once with them). Updating only some steps under
    ``jit``: ``jax.lax.cond(take, update, lambda p, s: s, params, state)``.

    Use this, not ``ema``, to average params: ``ema`` is a transformation of the
    updates that starts from zero and is debiased; it would give the first params the
    weight ``(1 - decay) decay^(t-1) / (1 - decay^t)`` where ``AveragedModel``'s EMA gives
    ``decay^(t-1)``. (torch's ``use_buffers`` has no counterpart: pass whatever tree you
    want averaged.)

    Args:
      kind: ``"swa"`` (the running mean) or ``"ema"``.
      decay: the EMA's averaging factor, in [0, 1]; required with ``kind="ema"`` only.

    State: ``average, n_averaged``.

    >>> import jax.numpy as jnp, gradtx
    >>> swa = gradtx.averaged_params("swa")
    >>> state = swa.init(jnp.zeros(1))
    >>> for p in (1.0, 2.0, 6.0):
    ...     state = swa.update(jnp.array([p]), state)
    >>> float(state.average[0]), int(state.n_averaged)
    (3.0, 3)
    """
    if kind == "ema" and decay is None:
        raise ValueError("gradtx.averaged_params(decay=None): decay must be given with kind='ema'")
    if kind == "swa" and decay is not None:
        raise ValueError(f"gradtx.averaged_params(decay={decay!r}): decay is for kind='ema' only (SWA weighs equally)")

    def step(average, params, n):
        if kind == "swa":
            return _running_mean(average, params, n)
        return ema_step(params, average, decay).astype(average.dtype)

    def init(params):
        return AveragedParamsState(
            average=jax.tree.map(lambda p: jnp.array(p, copy=True), params), n_averaged=jnp.zeros([], jnp.int32)
        )

    def update(params, state):
        n = state.n_averaged
        average = jax.tree.map(
            lambda a, p: jnp.where(n == 0, jnp.asarray(p).astype(a.dtype), step(a, p, n)), state.average, params
        )
        return AveragedParamsState(average=average, n_averaged=safe_increment(n))

    return ParamsAverage(init, update)
