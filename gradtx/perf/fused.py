"""``update_and_apply``: one optimizer step (``tx.update`` + ``apply_updates``) that XLA
compiles into one loop per leaf, reading params, gradients and state once and writing
params and state once.

Why the plain step does not: a jitted ``u, s = tx.update(g, s, p); p + u`` has several
outputs per leaf (Adam: ``mu``, ``nu`` and the params), and the params are computed
*from* the new moments. XLA:CPU emits one loop fusion per output, and the params loop
re-reads ``mu`` and ``nu`` after the moment loop wrote them: 10 passes over memory for
Adam where 7 suffice (momentum: 6 where 5 suffice). XLA:CPU can merge loops that read
the same inputs into one multi-output loop ("sibling" multi-output fusion, off by
default, see ``enable_cpu_multi_output_fusion``) but never a loop with one that consumes
its output. So ``update_and_apply`` computes the step as two data-independent siblings::

    new_state   = tx.update(g, s, p).state                  # reads g, s
    new_params  = p + tx.update(g*1, s*1, p).updates         # reads p, g, s
                                   ^^^ the 1 comes through an optimization barrier

Both read the same parameters and neither reads the other's output, so the multi-output
fusion pass merges them into one loop per leaf (7 passes for Adam). The update is
recomputed from the old state rather than read back: the computation happens in
registers and costs no memory traffic. Multiplying by a 1 that XLA cannot see through
keeps its common-subexpression pass from merging the two computations back into the
producer/consumer form; ``x * 1`` is exact, so the numbers are those of the plain step
(up to the contraction of a multiply-add into an FMA, which LLVM may decide differently
in the two loops: one ulp).

Where sibling fusion is off (XLA:CPU's default), ``update_and_apply`` is the plain step:
the split form would then cost 11 passes instead of 10.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gradtx.base import GradientTransformation, apply_updates
from gradtx.perf.xla import fuses_sibling_outputs


def _times_one(tree: Any, one: jax.Array) -> Any:
    """The same values as new XLA values: every floating array times ``one``, a 1 that
    comes out of an optimization barrier (exact: ``x * 1 == x``), so that XLA cannot
    merge a computation on them with the same computation on the originals."""

    def times_one(x):
        if isinstance(x, jax.Array) and x.ndim and jnp.issubdtype(x.dtype, jnp.floating):
            return x * one.astype(x.dtype)
        return x  # complex (x * (1+0j) may flip the sign of a zero), integers, scalars

    return jax.tree.map(times_one, tree)


def _state_groups(state: Any, params: Any) -> list[int]:
    """For each state leaf, the group it is computed in: ``k >= 1`` for the leaves of the
    k-th params-shaped field of the state (``mu``, ``nu``, ``trace``, ...), 0 for the rest
    (step counts, scalars)."""
    p_def: jax.tree_util.PyTreeDef = jax.tree.structure(params)

    def is_field(x):
        return jax.tree.structure(x) == p_def and any(jnp.ndim(v) for v in jax.tree.leaves(x))

    groups, k = [], 0
    for item in jax.tree.leaves(state, is_leaf=is_field):
        n = len(jax.tree.leaves(item))
        if is_field(item):
            k += 1
            groups += [k] * n
        else:
            groups += [0] * n
    return groups


def update_and_apply(tx: GradientTransformation) -> Callable:
    """``(params, state, grads, **extra) -> (new_params, new_state)``: ``tx.update`` and
    ``apply_updates`` written so that XLA can run the whole step as one loop per leaf.

    Gives the numbers of ``u, s = tx.update(grads, state, params);
    apply_updates(params, u)`` (to an ulp, see the module docstring) for any ``tx``. Jit
    it with the params and state donated::

        gradtx.enable_cpu_multi_output_fusion()      # on CPU, before JAX starts
        step = jax.jit(gradtx.update_and_apply(gradtx.adam(1e-3)), donate_argnums=(0, 1))
        params, state = step(params, state, grads)

    The one-loop form is used when the backend fuses sibling outputs
    (``fuses_sibling_outputs()``: GPU, or CPU after ``enable_cpu_multi_output_fusion``)
    and the step is being traced; otherwise this is the plain step. In the one-loop
    form each params-shaped field of the state (Adam's ``mu`` and ``nu``; Adadelta's
    accumulators, one of which depends on the other's new value) and the updates are
    computed by their own copy of ``tx.update`` on their own ``x * 1`` copies of the
    inputs: every output then reads only the step's inputs, never another output. XLA
    removes what each copy does not return. Transformations that reduce over a leaf
    (``clip_by_global_norm``, per-leaf norms) work too; their reductions are computed
    once per copy.
    """

    def step(params, state, grads, **extra):
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(grads))
        if not (traced and fuses_sibling_outputs()):
            updates, new_state = tx.update(grads, state, params, **extra)
            return apply_updates(params, updates), new_state
        groups = _state_groups(state, params)
        n_groups = max(groups, default=0) + 1
        ones = jax.lax.optimization_barrier((jnp.ones((), jnp.float32),) * (n_groups + 1))

        def copy_of_step(k):
            return tx.update(_times_one(grads, ones[k]), _times_one(state, ones[k]), params, **extra)

        state_of_group = [jax.tree.leaves(copy_of_step(k)[1]) for k in range(n_groups)]
        new_state = jax.tree.unflatten(jax.tree.structure(state), [state_of_group[k][i] for i, k in enumerate(groups)])
        updates, _ = copy_of_step(n_groups)
        return apply_updates(params, updates), new_state

    return step
