"""``gradtx.microbatch`` / ``micro_vmap`` / ``reshape_batch_axis``.

References: optax 0.2.8's ``optax.microbatch`` and ``optax.microbatching`` called on the
same functions and batches (float32, rtol 1e-6: the same slices summed in the same order),
and the function on the whole batch (``jax.grad`` of the full-batch loss, ``jax.vmap``)
as the closed form of what slicing must not change.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.microbatching import AccumulationType

OPTAX_KIND = {k: getattr(optax.microbatching.AccumulationType, k.name) for k in AccumulationType}
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(12, 3)), jnp.float32)
Y = jnp.asarray(RNG.normal(size=(12,)), jnp.float32)
W = jnp.asarray(RNG.normal(size=(3,)), jnp.float32)


def per_row(x, y):
    """Outputs of every accumulation kind: a per-row prediction, a loss, a count."""
    pred = x @ W
    return {"pred": pred, "loss": jnp.mean((pred - y) ** 2), "sq": jnp.sum(x**2, axis=0)}


@pytest.mark.parametrize("kind", list(AccumulationType), ids=lambda k: k.name)
def test_each_accumulation_matches_optax(kind):
    """Every output leaf under one rule: equal to optax.microbatch with the same rule."""
    got = gradtx.microbatch(per_row, (0, 1), 4, kind)(X, Y)
    want = optax.microbatch(per_row, (0, 1), 4, OPTAX_KIND[kind])(X, Y)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_a_tree_of_rules_is_a_prefix_of_the_output_and_names_work():
    """``{"pred": "concat", "loss": "mean", "sq": "sum"}`` by name; concatenation restores the
    batch's order and the mean of per-slice means is the full-batch mean: the function
    on the whole batch is the reference (rtol 1e-6)."""
    rules = {"pred": "concat", "loss": "mean", "sq": AccumulationType.SUM}
    got = gradtx.microbatch(per_row, (0, 1), 3, rules)(X, Y)
    chex.assert_trees_all_close(got, per_row(X, Y), rtol=1e-6)


def test_keyword_batch_arguments_and_another_batch_axis():
    """``argnames`` and ``in_axes``: ``y`` passed by name, ``x`` batched on axis 1."""
    fun = lambda xt, y: jnp.sum(xt.T @ W - y)  # noqa: E731
    got = gradtx.microbatch(fun, 0, 6, argnames="y", in_axes=(1, 0))(X.T, y=Y)
    want = optax.microbatch(fun, 0, 6, argnames="y", in_axes=(1, 0))(X.T, y=Y)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    chex.assert_trees_all_close(got, fun(X.T, Y), rtol=1e-5)


def test_gradient_of_a_batch_slice_by_slice_equals_the_full_batch_gradient():
    """The use case: the mean of per-slice gradients of a mean loss is the gradient of the
    whole batch's mean loss (jax.grad on the full batch, rtol 1e-5)."""
    loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)  # noqa: E731
    got = jax.jit(gradtx.microbatch(jax.grad(loss), (1, 2), 2, "mean"))(W, X, Y)
    chex.assert_trees_all_close(got, jax.grad(loss)(W, X, Y), rtol=1e-5)


def test_num_real_microbatches_runs_that_many_slices_without_recompiling():
    """Running mean over the first k slices (k traced: one trace for k = 1, 2, 3), equal
    to optax's, and to the mean of those slices' values computed directly."""
    traces = []

    def fun(x):
        traces.append(1)
        return jnp.mean(x)

    run = jax.jit(lambda x, k: gradtx.microbatch(fun, 0, 4, "running_mean", num_real_microbatches=k)(x))
    for k in (1, 2, 3):
        got = run(X, jnp.asarray(k))
        want = optax.microbatch(jnp.mean, 0, 4, OPTAX_KIND[AccumulationType.RUNNING_MEAN], num_real_microbatches=k)(X)
        slices = gradtx.reshape_batch_axis(X, 4)  # slice i is slices[i]: rows i, i + 3, ...

        direct = np.mean([np.mean(slices[i]) for i in range(k)])
        chex.assert_trees_all_close(got, want, rtol=1e-6)
        np.testing.assert_allclose(got, direct, rtol=1e-6)
    assert len(traces) == 2  # the eval_shape probe and the loop body, traced once


def test_reshape_batch_axis_is_column_major_like_optax():
    """Slice ``i`` holds rows ``i, i + n, ...`` (optax's layout, which keeps a sharded batch
    axis sharded); a row-major split (contiguous slices) would be a different layout."""
    x = jnp.arange(24.0).reshape(2, 12)
    got = gradtx.reshape_batch_axis(x, 4, axis=1)
    chex.assert_trees_all_equal(got, optax.microbatching.reshape_batch_axis(x, 4, axis=1))
    assert got.shape == (2, 3, 4) and list(got[0, :, 0]) == [0.0, 1.0, 2.0]
    assert not np.array_equal(got, x.reshape(2, 3, 4))  # the row-major mutant differs


@pytest.mark.parametrize("accumulator", ["concat", "sum", "mean"])
def test_micro_vmap_equals_vmap_and_optax(accumulator):
    """``micro_vmap(f)`` is ``vmap(f)`` reduced by the accumulator (vmap then sum/mean, or
    vmap itself for concat), and optax's micro_vmap (rtol 1e-6)."""
    f = lambda x: jnp.tanh(x) * 2.0  # noqa: E731
    got = gradtx.micro_vmap(f, microbatch_size=3, accumulator=accumulator)(X)
    full = jax.vmap(f)(X)
    reduce = {"concat": lambda a: a, "sum": lambda a: jnp.sum(a, 0), "mean": lambda a: jnp.mean(a, 0)}[accumulator]
    chex.assert_trees_all_close(got, reduce(full), rtol=1e-6)
    want = optax.microbatching.micro_vmap(
        f, microbatch_size=3, accumulator=OPTAX_KIND[AccumulationType[accumulator.upper()]]
    )(X)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_none_size_returns_the_function():
    assert gradtx.microbatch(abs, 0, None) is abs


BAD_CALLS = [
    (lambda: gradtx.microbatch(per_row, (0, 1), 4)(X, Y[:8]), ValueError,
     r"^gradtx\.microbatch: the batch arguments' batch axes differ in size \(argument 0: 12, argument 1: 8\)$"),
    (lambda: gradtx.microbatch(per_row, (0, 1), 5)(X, Y), ValueError,
     r"^gradtx\.microbatch: the batch size 12 is not a multiple of microbatch_size=5$"),
    (lambda: gradtx.microbatch(lambda x: jnp.sum(x > 0), 0, 4, "mean")(X), TypeError,
     r"^gradtx\.microbatch: the output at <root> is int32; a mean needs a floating or complex output"),
    (lambda: gradtx.microbatch(per_row, (0, 1), 4, in_axes=(0,)), ValueError,
     r"^gradtx\.microbatch\(in_axes=\(0,\)\): in_axes needs one axis per batch argument"),
    (lambda: gradtx.micro_vmap(abs, out_axes=1), ValueError, r"^gradtx\.micro_vmap\(out_axes=1\)"),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS, ids=range(len(BAD_CALLS)))
def test_misuse_fails_with_a_message_naming_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        call()
