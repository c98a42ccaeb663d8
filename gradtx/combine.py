"""Combinators: run transformations one after another (``chain``) or side by side (``fork``).

``chain(a, b, c)`` hands each stage the previous stage's output::

    u ──► a ──► b ──► c ──► u'

``fork(a, b, join=f)`` hands the *same* updates to every branch and joins the branch
outputs leaf by leaf. Adam divides the first moment by the root of the second, both
taken from the same gradient, and that is not a sequence of stages::

            ┌─► a: scale_by_ema(b1) -> bias_correct(b1) ────────────────────┐
    u ──────┤                                                               ├─► join(a_out, b_out)   (Adam: a_out / b_out)
            └─► b: second_moment(b2) -> bias_correct(b2) -> sqrt_eps(eps) ──┘

Neither shows in the state: the fields of every stage are merged into one flat record
(``count, mu, nu`` for Adam), with one step count that every stage reads. ``renamed``
gives a stage's fields other names (two averages in one chain); ``named_chain`` keeps
each stage's state apart under a name of its own, as optax's does.
"""  # noqa: E501 - the diagram is wider than 120 columns

from __future__ import annotations

from typing import Any, Callable

import jax

from gradtx.base import GradientTransformation
from gradtx.transform import (
    Field,
    Stage,
    Step,
    Transformation,
    _Kept,
    declare,
    finish,
    merge_fields,
    primitive,
    stage_of,
    view,
)


def _merged(stages: list[Stage], fields: tuple, apply: Any, kind: str) -> Transformation:
    """The transformation of ``stages`` run as one (a chain or a fork): it counts steps when
    any stage does, and checks dtypes when all do."""
    checks = all(s.checks_dtypes for s in stages)
    return finish(Stage(fields, any(s.uses_count for s in stages), apply, kind=kind, checks_dtypes=checks))


def chain(*transforms: GradientTransformation) -> Transformation:
    """``u -> t_n(...t_2(t_1(u)))``: apply the transformations one after another.

    The state is one record of every stage's fields. Optax transformations are accepted
    as stages: each keeps its own state in one field named after its factory (extra
    keyword arguments of ``update`` reach only the stages that take them).
    """
    stages = [stage_of(t) for t in transforms]
    fields = merge_fields(stages, "chain")

    def apply(updates, state, step: Step):
        new: dict[str, Any] = {}
        for stage in stages:
            updates, out = stage.apply(updates, view(stage, state), step)
            new.update(out)
        return updates, new

    return _merged(stages, fields, apply, "chain")


def fork(*branches: GradientTransformation, join: Callable[..., jax.Array]) -> Transformation:
    """``u -> join(b_1(u), ..., b_n(u))``, ``join`` applied leaf by leaf.

    Every branch receives the same incoming updates; ``join`` receives one array per
    branch (in order) for each leaf. The branches' fields are merged into one record.

    Example (Adam's direction)::

        fork(chain(scale_by_ema(b1), bias_correct(b1)),
             chain(second_moment(b2), bias_correct(b2), sqrt_eps(eps)),
             join=jnp.divide)
    """
    if len(branches) < 2:
        raise ValueError(f"gradtx.fork: needs at least two branches, got {len(branches)}")
    if not callable(join):
        raise TypeError(f"gradtx.fork(join={join!r}): join must be a function of one array per branch")
    stages = [stage_of(b) for b in branches]
    fields = merge_fields(stages, "fork")

    def apply(updates, state, step: Step):
        new: dict[str, Any] = {}
        outs = []
        for stage in stages:
            out, fields_out = stage.apply(updates, view(stage, state), step)
            outs.append(out)
            new.update(fields_out)
        return jax.tree.map(join, *outs), new

    return _merged(stages, fields, apply, "fork")


def named_chain(*named: tuple[str, GradientTransformation]) -> Transformation:
    """Like ``chain``, with each stage's state kept whole under its name: the state is
    ``{name: that stage's state}`` (optax's ``named_chain``). Each stage keeps its own
    step count."""
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"gradtx.named_chain: stage names must be unique, got {names}")
    fields = tuple(_Kept(name, Field(t.init, like_params=False), (name,)) for name, t in named)

    def apply(updates, state, step: Step):
        new = {}
        for name, t in named:
            updates, new[name] = t.update(updates, state[name], step.params, **step.extra)
        return updates, new

    # each stage's own update checks the dtypes of what it steps
    return finish(Stage(fields, False, apply, kind="named_chain", record=dict, checks_dtypes=False))


def renamed(transform: GradientTransformation, **names: str) -> Transformation:
    """``transform`` with its state fields renamed (``renamed(scale_by_ema(0.99),
    mu="mu_slow")``), so that two stages of one kind can share a chain."""
    inner = stage_of(transform)
    own = {k.name for k in inner.fields}
    unknown = sorted(set(names) - own)
    if unknown:
        raise ValueError(
            f"gradtx.renamed: the transformation keeps no field {unknown[0]!r} "
            f"(its fields: {', '.join(sorted(own)) or 'none'})"
        )
    fields = tuple(_Kept(names.get(k.name, k.name), k.field, k.owners) for k in inner.fields)

    def apply(updates, state, step: Step):
        out, new = inner.apply(updates, {k.name: state[names.get(k.name, k.name)] for k in inner.fields}, step)
        return out, {names.get(name, name): value for name, value in new.items()}

    return finish(
        Stage(fields, inner.uses_count, apply, name=inner.name, kind=inner.kind, checks_dtypes=inner.checks_dtypes)
    )


@declare
def identity() -> Transformation:
    """``u -> u``: passes updates through unchanged."""
    return primitive(lambda updates, state, step: (updates, {}))


@declare
def stateless(fn: Callable[[Any, Any], Any]) -> Transformation:
    """``u -> fn(u, params)``: a transformation without state from a function of the
    whole updates tree (and the params, which may be ``None``)."""
    return primitive(lambda updates, state, step: (fn(updates, step.params), {}))
