"""Combinators: run transformations one after another (``chain``) or side by side (``fork``).

``chain(a, b, c)`` hands each stage the previous stage's output::

    u ──► a ──► b ──► c ──► u'

``fork(a, b, join=f)`` hands the *same* updates to every branch and joins the branch
outputs leaf by leaf. Adam divides the first moment by the root of the second, both
taken from the same gradient, and that is not a sequence of stages::

            ┌─► a: scale_by_ema(b1) -> bias_correct(b1) ────────────────────┐
    u ──────┤                                                               ├─► join(a_out, b_out)   (Adam: a_out / b_out)
            └─► b: second_moment(b2) -> bias_correct(b2) -> sqrt_eps(eps) ──┘
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import jax

from gradtx.base import GradientTransformation, TreeMismatchError


def _accepts_extra_args(update_fn: Callable) -> bool:
    """Whether ``update_fn`` takes ``**extra`` (optax's plain transformations do not)."""
    try:
        params = inspect.signature(update_fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def stage_name(transform: GradientTransformation) -> str:
    """The factory that built ``transform``, e.g. ``scale_by_ema``, for error messages."""
    qualname = getattr(transform.update, "__qualname__", type(transform.update).__name__)
    return qualname.split(".<locals>")[0]


def _run_stages(kind: str, transforms: Sequence[GradientTransformation], labels: Sequence[str],
                call: Callable[[int, GradientTransformation], Any]) -> list[Any]:
    """Call ``call(i, t)`` for each stage, prefixing tree-mismatch errors with the stage."""
    results = []
    for i, (label, t) in enumerate(zip(labels, transforms)):
        try:
            results.append(call(i, t))
        except TreeMismatchError as e:
            raise TreeMismatchError(f"{kind} stage {label} ({stage_name(t)}): {e}") from None
    return results


def _check_state(kind: str, state: Any, expected_len: int, container=tuple) -> None:
    if not isinstance(state, container) or len(state) != expected_len:
        got = f"a {type(state).__name__} of length {len(state)}" if hasattr(state, "__len__") \
            else type(state).__name__
        raise TreeMismatchError(
            f"gradtx.{kind}: expected a state with one entry per stage ({expected_len} "
            f"entries), got {got}. Pass the state returned by this {kind}'s own init() "
            f"(or its last update()), not one built by a different optimizer.")


def _stage_updates(transforms: Sequence[GradientTransformation]) -> list[Callable]:
    """Each stage's update as ``f(updates, state, params, extra)``, passing ``extra`` only
    to stages that take it. Decided once, when the combinator is built, not per step."""

    def wrap(update_fn):
        if _accepts_extra_args(update_fn):
            return lambda u, s, p, extra: update_fn(u, s, p, **extra)
        return lambda u, s, p, extra: update_fn(u, s, p)

    return [wrap(t.update) for t in transforms]


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """``u -> t_n(...t_2(t_1(u)))``: apply the transformations one after another.

    The state is a tuple with one entry per stage. Optax transformations are accepted
    as stages (extra keyword arguments are passed only to stages that take them).
    """
    transforms = tuple(transforms)
    labels = [str(i) for i in range(len(transforms))]
    updates_of = _stage_updates(transforms)

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates, state, params=None, **extra):
        _check_state("chain", state, len(transforms))
        new_state = []

        def step(i, t):
            nonlocal updates
            updates, s = updates_of[i](updates, state[i], params, extra)
            new_state.append(s)

        _run_stages("chain", transforms, labels, step)
        return updates, tuple(new_state)

    return GradientTransformation(init_fn, update_fn)


def named_chain(*named: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like ``chain``, with the state a dict keyed by each stage's name."""
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"gradtx.named_chain: stage names must be unique, got {names}")
    transforms = [t for _, t in named]
    updates_of = _stage_updates(transforms)

    def init_fn(params):
        return {name: t.init(params) for name, t in named}

    def update_fn(updates, state, params=None, **extra):
        if not isinstance(state, dict) or set(state) != set(names):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise TreeMismatchError(
                f"gradtx.named_chain: expected a state dict with keys {names}, got {got}. "
                f"Pass the state returned by this named_chain's own init().")
        new_state = {}

        def step(i, t):
            nonlocal updates
            updates, new_state[names[i]] = updates_of[i](updates, state[names[i]], params, extra)

        _run_stages("named_chain", transforms, [repr(n) for n in names], step)
        return updates, new_state

    return GradientTransformation(init_fn, update_fn)


def fork(*branches: GradientTransformation, join: Callable[..., jax.Array]) -> GradientTransformation:
    """``u -> join(b_1(u), ..., b_n(u))``, ``join`` applied leaf by leaf.

    Every branch receives the same incoming updates; ``join`` receives one array per
    branch (in order) for each leaf. The state is a tuple of the branch states.

    Example (Adam's direction)::

        fork(chain(scale_by_ema(b1), bias_correct(b1)),
             chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps)),
             join=jnp.divide)
    """
    if len(branches) < 2:
        raise ValueError(f"gradtx.fork: needs at least two branches, got {len(branches)}")
    if not callable(join):
        raise ValueError(f"gradtx.fork(join={join!r}): join must be a function of one array per branch")
    labels = [str(i) for i in range(len(branches))]
    updates_of = _stage_updates(branches)

    def init_fn(params):
        return tuple(b.init(params) for b in branches)

    def update_fn(updates, state, params=None, **extra):
        _check_state("fork", state, len(branches))
        results = _run_stages(
            "fork", branches, labels,
            lambda i, b: updates_of[i](updates, state[i], params, extra))
        outs = [out for out, _ in results]
        return jax.tree.map(join, *outs), tuple(s for _, s in results)

    return GradientTransformation(init_fn, update_fn)
