"""Laws of the combinators and wrappers, exact (bit for bit), on random trees with random
registry transformations:

- ``chain()`` is the identity, and so is ``scale(1.0)``;
- ``chain(a, chain(b, c))`` equals ``chain(chain(a, b), c)`` (updates and state);
- ``fork(identity(), t, join=lambda a, b: a)`` is the identity;
- ``masked(t, mask)`` with an all-False mask is the identity;
- ``partition({label: t}, labels)`` with one label equals ``t`` (updates and ``t``'s state);
- a zero gradient leaves the params of momentum and the Adam family unchanged on the first step.

Each law is a function below, named and documented; one hypothesis test draws an example
(three primitives ``a, b, c``, a registry transformation ``t``, a momentum or Adam optimizer,
a tree) and checks every law on it, so that the ci profile's 200 examples are 200 per law.
The trees hold float32, bfloat16, float16 and complex64 leaves, not float64: the laws are
about the combinators, and an example inside ``jax.enable_x64`` compiles every kernel anew.
The laws are identities of the eager computation, so they run eagerly, under chex's
``with_device`` variant (device arrays; numpy inputs are the random chains' variant, and
``jax.jit`` agreement is the registry property's).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import gradtx
from gradtx.registry import BY_NAME

from .invariants import x64_if
from .strategies import Case, Drawn, DrawnChain, cases, chains, drawn_transformations, hyperparameters

# Optimizers whose first step from a zero gradient is zero: momentum, and the Adam family
# without weight decay (which moves the params whatever the gradient).
FIRST_STEP_ZERO = ["sgd", "averaged_momentum", "adam", "nadam", "amsgrad", "adamax"]


class LawDraw(NamedTuple):
    """What one example of the laws draws: the primitives ``a, b, c``, a registry
    transformation ``t`` and a momentum or Adam optimizer."""

    abc: DrawnChain
    t: Drawn
    first_step: Drawn

    @property
    def names(self) -> set[str]:
        return self.abc.names | self.t.names | self.first_step.names

    @property
    def asked(self) -> dict:
        return {**self.abc.asked, **self.t.asked, **self.first_step.asked}


LAW_DRAWS = st.builds(
    LawDraw,
    chains(3, 3),
    drawn_transformations(),
    st.sampled_from([BY_NAME[n] for n in FIRST_STEP_ZERO]).flatmap(hyperparameters),
)


def trajectory(variant: Callable, tx: Any, params: Any, grads: list, extra: dict) -> list[tuple[Any, Any]]:
    """``(updates, state)`` after each step of ``tx`` over ``grads``, the steps run through
    the chex ``variant`` (params held fixed: the laws are about one update at a time)."""
    step = variant(lambda state, g: tx.update(g, state, params, **extra))
    state, out = tx.init(params), []
    for g in grads:
        updates, state = step(state, g)
        out.append((updates, state))
    return out


def assert_identity(got: list, grads: list, law: str) -> None:
    """Each step's updates are the gradients, bit for bit, with their dtypes."""
    for i, ((updates, _), g) in enumerate(zip(got, grads)):
        chex.assert_trees_all_equal(updates, g, strict=False, custom_message=f"{law}, step {i + 1}")
        chex.assert_trees_all_equal_dtypes(updates, g, custom_message=f"{law}, step {i + 1}")


def law_empty_chain(variant, case: Case) -> None:
    """``chain()`` is the identity: updates are the gradients (reference: the gradients)."""
    p = case.problem
    assert_identity(trajectory(variant, gradtx.chain(), p.params, p.grads, {}), p.grads, "chain()")


def law_scale_one(variant, case: Case) -> None:
    """``scale(1.0)`` is the identity (reference: the gradients)."""
    p = case.problem
    assert_identity(trajectory(variant, gradtx.scale(1.0), p.params, p.grads, {}), p.grads, "scale(1.0)")


def law_chain_associative(variant, case: Case) -> None:
    """``chain(a, chain(b, c))`` equals ``chain(chain(a, b), c)``: updates and the whole state
    record after one step, bit for bit (reference: the other bracketing). One step: the
    record compared is the one a second step would read, and three random primitives
    stepped eagerly twice per bracketing are this suite's slowest part."""
    a, b, c = case.drawn.abc.stages()
    p, extra = case.problem, case.drawn.abc.update_extra
    left = trajectory(variant, gradtx.chain(a, gradtx.chain(b, c)), p.params, p.grads[:1], extra)
    right = trajectory(variant, gradtx.chain(gradtx.chain(a, b), c), p.params, p.grads[:1], extra)
    chex.assert_trees_all_equal(left, right, custom_message="chain(a, chain(b, c)) vs chain(chain(a, b), c)")


def law_fork_first_branch(variant, case: Case) -> None:
    """``fork(identity(), t, join=lambda a, b: a)`` is the identity (reference: the gradients)."""
    t, p = case.drawn.t, case.problem
    tx = gradtx.fork(gradtx.identity(), t.build(), join=lambda a, b: a)
    assert_identity(trajectory(variant, tx, p.params, p.grads, t.update_extra), p.grads, f"fork(identity(), {t!r})")


def law_masked_all_false(variant, case: Case) -> None:
    """``masked(t, mask)`` with an all-False mask (a tree, or a function of the params) is
    the identity (reference: the gradients)."""
    t, p = case.drawn.t, case.problem
    falses = jax.tree.map(lambda _: False, p.params)
    for mask in (falses, lambda params: jax.tree.map(lambda _: False, params)):
        tx = gradtx.masked(t.build(), mask)
        assert_identity(trajectory(variant, tx, p.params, p.grads, t.update_extra), p.grads, f"masked({t!r})")


def law_partition_one_label(variant, case: Case) -> None:
    """``partition({"only": t}, labels)`` with every leaf labelled "only" equals ``t``:
    updates and ``t``'s state, bit for bit (reference: ``t`` alone)."""
    t, p = case.drawn.t, case.problem
    labels = jax.tree.map(lambda _: "only", p.params)
    whole = trajectory(variant, gradtx.partition({"only": t.build()}, labels), p.params, p.grads, t.update_extra)
    alone = trajectory(variant, t.build(), p.params, p.grads, t.update_extra)
    for i, ((u, state), (want_u, want_state)) in enumerate(zip(whole, alone)):
        chex.assert_trees_all_equal(u, want_u, custom_message=f"partition({t!r}) updates, step {i + 1}")
        inner = state.inner_states["only"].inner_state
        chex.assert_trees_all_equal(inner, want_state, custom_message=f"partition({t!r}) state, step {i + 1}")


def law_zero_gradient_first_step(variant, case: Case) -> None:
    """A zero gradient leaves the params of momentum and of the Adam family unchanged on
    the first step (reference: the params, bit for bit)."""
    opt, p = case.drawn.first_step, case.problem
    zeros = jax.tree.map(np.zeros_like, p.params)
    [(updates, _)] = trajectory(variant, opt.build(), p.params, [zeros], opt.update_extra)
    chex.assert_trees_all_equal(
        gradtx.apply_updates(p.params, updates), p.params, strict=False, custom_message=f"{opt!r}, zero gradient"
    )


LAWS = [
    law_empty_chain,
    law_scale_one,
    law_chain_associative,
    law_fork_first_branch,
    law_masked_all_false,
    law_partition_one_label,
    law_zero_gradient_first_step,
]


class Laws(chex.TestCase):
    @chex.variants(with_device=True)
    @given(case=cases(LAW_DRAWS, x64=st.just(False)))
    def test_laws(self, case: Case):
        """Every law in ``LAWS`` on the drawn example (each law's docstring names its reference)."""
        with x64_if(case.x64):
            for law in LAWS:
                law(self.variant, case)
