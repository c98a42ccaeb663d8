"""Masks, partitions and tree utilities on states (gradtx/masking.py, gradtx/tree.py).

References, by test:
- optax 0.2.8's ``masked``, ``partition``, ``freeze``, ``selective_transform`` with the
  optax twins of the inner transformations, called the same way: float64, 100 jitted steps,
  params, last updates and every field of the inner states at rtol 1e-10
  (``MaskedNode``, one class per library, compared as an empty slot);
- inside ``flax.nnx.Optimizer`` (flax 0.12.8), 5 steps of a small MLP, float32 at rtol
  1e-6: ``optax.partition`` / ``optax.masked`` with a label function, the form optax
  handles there, for the label forms where optax raises (optax #1148, flax #5372);
- ``optax.tree.get`` / ``get_all_with_path`` / ``set`` / ``tree_map_params`` on the same
  states (the values found and set);
- ``partition_reset``: a fresh ``init`` of the label, the other labels unchanged (optax #1371).
Negative controls: an inverted mask and swapped labels fail the rtol-1e-10 comparison.
Errors: each message fragment exactly (the construction ones are rows of the registry, run
by ``tests/test_errors.py``; the ones that need the params are here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, named_fields, random_grads, random_tree, run_optax, run_steps
from flax import nnx

import gradtx

N_STEPS = 100
RTOL = 1e-10

# random_tree(small=True): {"w": (3, 2), "seq": [((4,),), ()]}; leaf paths w, seq/0/0, seq/1
MASK = {"w": True, "seq": [(False,), True]}
PREFIX_MASK = {"w": False, "seq": True}
LABELS = {"w": "adam", "seq": [("sgd",), "rms"]}
PREFIX_LABELS = {"w": "adam", "seq": "sgd"}


def ndim_labels(params):
    return jax.tree.map(lambda p: "adam" if p.ndim > 1 else "sgd", params)


def ndim_mask(params):
    return jax.tree.map(lambda p: p.ndim > 0, params)


def three(lib) -> dict:
    """The same three optimizers from gradtx or optax."""
    return {"adam": lib.adam(1e-2), "sgd": lib.sgd(0.05, momentum=0.9), "rms": lib.rmsprop(1e-2)}


def strip(tree: Any) -> Any:
    """``MaskedNode`` (gradtx's or optax's) -> ``None``, so that the two libraries' trees compare."""
    is_masked = lambda x: type(x).__name__ == "MaskedNode"  # noqa: E731
    return jax.tree.map(lambda x: None if is_masked(x) else x, tree, is_leaf=is_masked)


def compare_inner(gx: Any, ox: Any) -> None:
    """Two inner states field by field name (``named_fields``: a gradtx record or an optax
    tuple of records); masked-out parts compared as empty."""
    ours, theirs = named_fields(strip(gx)), named_fields(strip(ox))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        for a, b in zip(ours[name], theirs[name]):
            if jax.tree.leaves(b):
                assert_trees_close(a, b, RTOL, what=f"state field {name}")
            else:
                assert jax.tree.structure(a) == jax.tree.structure(b), name


def compare_wrapper_states(gx: Any, ox: Any) -> None:
    """The inner states, label by label for a partition."""
    if hasattr(gx, "inner_states"):
        assert set(gx.inner_states) == set(ox.inner_states)
        for label in gx.inner_states:
            assert type(gx.inner_states[label]).__name__ == "MaskedState"
            compare_inner(gx.inner_states[label].inner_state, ox.inner_states[label].inner_state)
    elif type(gx).__name__ == "MaskedState":
        compare_inner(gx.inner_state, ox.inner_state)
    else:
        compare_inner(gx, ox)


def run_pair(gx, ox):
    params, grads = random_tree(0, jnp.float64, small=True), random_grads(1, N_STEPS, jnp.float64, small=True)
    return run_steps(gx, params, grads, jit=True), run_optax(ox, params, grads, jit=True)


def assert_same_run(got, want) -> None:
    assert_trees_close(got.params, want.params, RTOL, what="params")
    assert_trees_close(got.updates, want.updates, RTOL, what="last updates")
    compare_wrapper_states(got.state, want.state)


# --- the numbers: the same as optax's for the same call ----------------------------------------

PAIRS = {
    "masked-tree": lambda lib: lib.masked(lib.adam(1e-2), MASK),
    "masked-prefix": lambda lib: lib.masked(lib.sgd(0.05, momentum=0.9), PREFIX_MASK),
    "masked-nested": lambda lib: lib.masked(lib.masked(lib.adam(1e-2), {"w": True, "seq": [(True,), False]}), MASK),
    "masked-fn-in-chain": lambda lib: lib.chain(lib.masked(lib.add_decayed_weights(0.1), ndim_mask), lib.adam(1e-2)),
    "partition-tree": lambda lib: lib.partition(three(lib), LABELS),
    "partition-prefix": lambda lib: lib.partition(three(lib), PREFIX_LABELS),
    "partition-fn": lambda lib: lib.partition(three(lib), ndim_labels),
    "freeze-in-chain": lambda lib: lib.chain(lib.freeze(MASK), lib.adam(1e-2)),
    "selective-transform": lambda lib: lib.selective_transform(lib.adam(1e-2), freeze_mask=PREFIX_MASK),
}
# gradtx-only forms, against optax with the same labels written as a tree
BY_PATH = {
    "masked-by-path": (
        gradtx.masked(gradtx.adam(1e-2), gradtx.by_path({r"seq/0/.*": False, r".*": True})),
        optax.masked(optax.adam(1e-2), MASK),
    ),
    "partition-by-path": (
        gradtx.partition(three(gradtx), gradtx.by_path({"w": "adam", r"seq/0.*": "sgd", r".*": "rms"})),
        optax.partition(three(optax), LABELS),
    ),
    "masked-optax-inner": (gradtx.masked(optax.adam(1e-2), MASK), optax.masked(optax.adam(1e-2), MASK)),
}
CASES = [pytest.param(make(gradtx), make(optax), id=name) for name, make in PAIRS.items()]
CASES += [pytest.param(gx, ox, id=name) for name, (gx, ox) in BY_PATH.items()]


@pytest.mark.parametrize("gx, ox", CASES)
def test_same_numbers_and_state_as_optax(gx, ox):
    """Reference: optax 0.2.8, the same call with optax's inner transformations; float64,
    100 jitted steps, params, last updates and inner states at rtol 1e-10."""
    with jax.enable_x64(True):
        got, want = run_pair(gx, ox)
        assert_same_run(got, want)


@pytest.mark.parametrize(
    "gx, ox",
    [
        pytest.param(
            gradtx.masked(gradtx.adam(1e-2), jax.tree.map(lambda m: not m, MASK)),
            optax.masked(optax.adam(1e-2), MASK),
            id="inverted-mask",
        ),
        pytest.param(
            gradtx.partition(three(gradtx), {"w": "sgd", "seq": [("adam",), "rms"]}),
            optax.partition(three(optax), LABELS),
            id="swapped-labels",
        ),
    ],
)
def test_wrong_mask_fails_the_comparison(gx, ox):
    """Negative control: a mask applied inverted, labels swapped, fail the same comparison."""
    with jax.enable_x64(True):
        got, want = run_pair(gx, ox)
        with pytest.raises(AssertionError):
            assert_trees_close(got.params, want.params, RTOL, what="params")


def test_multi_transform_is_partition():
    assert gradtx.multi_transform is gradtx.partition
    assert gradtx.MultiTransformState is gradtx.PartitionState


def test_state_layout_is_optax_s():
    """``MaskedState(inner_state)``, ``PartitionState(inner_states={label: MaskedState})``:
    ``optax.tree.get`` finds the same fields in both libraries' states."""
    params = random_tree(0, small=True)
    p = gradtx.partition(three(gradtx), LABELS).init(params)
    assert isinstance(p, gradtx.PartitionState) and p._fields == ("inner_states",)
    assert all(isinstance(s, gradtx.MaskedState) for s in p.inner_states.values())
    o = optax.partition(three(optax), LABELS).init(params)
    for field in ("count", "mu", "trace"):
        assert_trees_close(strip(optax.tree.get(p, field)), strip(optax.tree.get(o, field)), 0.0)


# --- masked-out leaves keep no state ---------------------------------------------------------


@pytest.mark.parametrize(
    "make, kept",
    [
        pytest.param(lambda lib: lib.masked(lib.adam(1e-2), MASK), 1 + 2 * 2, id="masked-adam"),
        pytest.param(lambda lib: lib.partition(three(lib), LABELS), (1 + 2 * 1) + 1 + 1, id="partition"),
        pytest.param(lambda lib: lib.freeze(MASK), 0, id="freeze"),
        pytest.param(lambda lib: lib.selective_transform(lib.adam(1e-2), freeze_mask=MASK), 1 + 2, id="selective"),
    ],
)
def test_masked_out_leaves_allocate_no_state(make, kept):
    """Counted: adam keeps count + mu, nu for its leaves only; rmsprop nu, sgd's momentum
    trace for theirs; freeze nothing; never more leaves than optax's state."""
    params = random_tree(0, small=True)
    ours = make(gradtx).init(params)
    assert len(jax.tree.leaves(ours)) == kept
    assert len(jax.tree.leaves(ours)) <= len(jax.tree.leaves(make(optax).init(params)))


# --- the ways to write a mask ------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class CallableTree:
    """A pytree container that is also callable (an Equinox module, optax #913, #1373)."""

    w: Any
    b: Any

    def __call__(self, x):
        return x * self.w + self.b


def test_a_callable_pytree_is_a_tree_not_a_mask_function():
    """Labels in a callable container are used as labels; optax's partition calls them
    (optax #913, #1373). A plain function of the params is called, also when the params'
    container is itself callable."""
    params = CallableTree(w=jnp.ones(2), b=jnp.ones(1))
    grads = CallableTree(w=jnp.ones(2), b=jnp.ones(1))
    labels = CallableTree(w="adam", b="sgd")
    opt = gradtx.partition({"adam": gradtx.adam(0.1), "sgd": gradtx.sgd(0.5)}, labels)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates.b, [-0.5])
    np.testing.assert_allclose(updates.w, [-0.1, -0.1], rtol=1e-5)
    with pytest.raises(TypeError):  # optax 0.2.8 calls the labels: labels(params) = params * "adam" + "sgd"
        optax.partition({"adam": optax.adam(0.1), "sgd": optax.sgd(0.5)}, labels).init(params)

    masked = gradtx.masked(gradtx.sgd(0.5), CallableTree(w=True, b=False))
    updates, _ = masked.update(grads, masked.init(params), params)
    np.testing.assert_allclose(updates.w, [-0.5, -0.5])
    np.testing.assert_allclose(updates.b, [1.0])
    by_fn = gradtx.masked(gradtx.sgd(0.5), lambda p: CallableTree(w=False, b=True))
    updates, _ = by_fn.update(grads, by_fn.init(params), params)
    np.testing.assert_allclose(updates.w, [1.0, 1.0])
    np.testing.assert_allclose(updates.b, [-0.5])


def test_a_dict_masks_a_params_tree_of_another_container_type():
    """Leaf paths, not container types, decide: a dict prefix labels a dataclass's fields."""
    params = CallableTree(w=jnp.ones(2), b=jnp.ones(1))
    opt = gradtx.masked(gradtx.sgd(0.5), {"w": True, "b": False})
    updates, _ = opt.update(params, opt.init(params), params)
    np.testing.assert_allclose(updates.w, [-0.5, -0.5])
    np.testing.assert_allclose(updates.b, [1.0])


def test_no_weight_decay_on_biases_and_norms_in_one_line():
    """The docstring's example, against optax with the mask written out as a tree."""
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "norm": {"scale": jnp.ones(2)}}
    ours = gradtx.masked(gradtx.add_decayed_weights(0.1), gradtx.by_path({r".*(bias|scale)": False, r".*": True}))
    mask = {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}
    theirs = optax.masked(optax.add_decayed_weights(0.1), mask)
    grads = jax.tree.map(jnp.zeros_like, params)
    got, _ = ours.update(grads, ours.init(params), params)
    want, _ = theirs.update(grads, theirs.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_extra_args_shaped_like_the_updates_are_masked_when_asked():
    """Reference: ``optax.masked(..., mask_compatible_extra_args=True)`` with an inner that
    scales each leaf by a per-leaf extra argument."""

    def scale_by_tags() -> optax.GradientTransformationExtraArgs:
        def update(updates, state, params=None, *, tags=None, **extra):
            return jax.tree.map(lambda u, t: u * t, updates, tags), state

        return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)

    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    tags = {"w": jnp.full(2, 3.0), "b": jnp.full(1, 5.0)}
    mask = {"w": True, "b": False}
    ours = gradtx.masked(scale_by_tags(), mask, mask_compatible_extra_args=True)
    theirs = optax.masked(scale_by_tags(), mask, mask_compatible_extra_args=True)
    got, _ = ours.update(params, ours.init(params), params, tags=tags)
    want, _ = theirs.update(params, theirs.init(params), params, tags=tags)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    np.testing.assert_array_equal(got["w"], [3.0, 3.0])


# --- flax.nnx: State params, nnx.Optimizer ---------------------------------------------------------


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(3, 4, rngs=rngs)
        self.l2 = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def nnx_train(tx) -> Any:
    """5 steps of ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; the trained params as arrays."""
    model = MLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x):
        opt.update(model, nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model))

    for _ in range(5):
        step(model, opt, jnp.asarray(X))
    return nnx.as_pure(nnx.state(model, nnx.Param))


PARAM_STATE = nnx.state(MLP(nnx.Rngs(0)), nnx.Param)
BY_NDIM = jax.tree.map(lambda p: "b" if p.ndim == 1 else "w", PARAM_STATE)  # a State of nnx.Param labels
NNX_LABELS = {
    # form: (gradtx's labels, the label function optax gets, whether optax takes the form itself)
    "state-of-params": (BY_NDIM, lambda p: jax.tree.map(lambda x: "b" if x.ndim == 1 else "w", p), False),
    "dict-prefix": (
        {"l1": "w", "l2": "b"},
        lambda p: jax.tree_util.tree_map_with_path(lambda path, _: "w" if path[0].key == "l1" else "b", p),
        False,
    ),
    "by-path": (gradtx.by_path({r".*bias": "b", r".*": "w"}), None, None),
}


def per_label(lib) -> dict:
    return {"w": lib.adam(1e-2), "b": lib.sgd(1e-2, momentum=0.9)}


@pytest.mark.parametrize("form", list(NNX_LABELS))
def test_partition_of_nnx_state_params_in_nnx_optimizer(form):
    """Reference: ``optax.partition`` with a label function (which optax handles in
    nnx.Optimizer), 5 steps, rtol 1e-6. The forms optax cannot take there (a State of
    ``nnx.Param`` labels: flax #5372; a dict prefix: optax #1148) raise in optax."""
    labels, optax_fn, optax_takes_it = NNX_LABELS[form]
    got = nnx_train(gradtx.partition(per_label(gradtx), labels))
    want = nnx_train(optax.partition(per_label(optax), optax_fn or NNX_LABELS["state-of-params"][1]))
    assert_trees_close(got, want, 1e-6)
    if optax_takes_it is False:
        with pytest.raises(ValueError, match="pytree structure error"):
            nnx_train(optax.partition(per_label(optax), labels))


def test_masked_nnx_state_params_in_nnx_optimizer():
    """Reference: ``optax.masked`` with a mask function, 5 steps, rtol 1e-6; optax raises
    for the same mask as a State of ``nnx.Param`` bools (flax #5372)."""
    mask = jax.tree.map(lambda p: p.ndim > 1, PARAM_STATE)
    ours = gradtx.chain(gradtx.masked(gradtx.add_decayed_weights(0.5), mask), gradtx.sgd(1e-2))
    theirs = optax.chain(optax.masked(optax.add_decayed_weights(0.5), ndim_mask_above_one), optax.sgd(1e-2))
    assert_trees_close(nnx_train(ours), nnx_train(theirs), 1e-6)
    with pytest.raises(ValueError, match="pytree structure error"):
        nnx_train(optax.chain(optax.masked(optax.add_decayed_weights(0.5), mask), optax.sgd(1e-2)))


def ndim_mask_above_one(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# --- errors that need the params ---------------------------------------------------------------

PARAMS = {"w": jnp.ones((3, 2)), "seq": [(jnp.ones(4),), jnp.ones(())]}


@pytest.mark.parametrize(
    "build, message",
    [
        pytest.param(
            lambda: gradtx.masked(gradtx.adam(0.1), {"w": True, "seq": [(False,)]}),
            "gradtx.masked(mask=...): the mask has no entry for leaf path 'seq/1' (its entries: 'seq/0/0', 'w')",
            id="masked-missing-leaf",
        ),
        pytest.param(
            lambda: gradtx.masked(gradtx.adam(0.1), {"w": True, "seq": True, "bias": False}),
            "gradtx.masked(mask=...): the mask has leaf path 'bias', which the params lack",
            id="masked-extra-leaf",
        ),
        pytest.param(
            lambda: gradtx.masked(gradtx.sgd(0.1), {"w": {"kernel": True}, "seq": False}),
            "gradtx.masked(mask=...): the mask goes below the params' leaf path 'w': it has 'w/kernel'",
            id="masked-deeper-than-params",
        ),
        pytest.param(
            lambda: gradtx.masked(gradtx.adam(0.1), lambda p: {"w": "yes", "seq": True}),
            "gradtx.masked(mask=...): the mask gives leaf path 'w' the value 'yes', not a bool "
            "(True: transform the leaf, False: pass it through)",
            id="masked-fn-not-bool",
        ),
        pytest.param(
            lambda: gradtx.masked(gradtx.adam(0.1), lambda p: ndim_mask),
            "gradtx.masked(mask=...): the function of the params returned a function",
            id="masked-fn-returns-fn",
        ),
        pytest.param(
            lambda: gradtx.partition(three(gradtx), ndim_labels_with_typo),
            "gradtx.partition(param_labels=...): the labels give leaf path 'w' the label 'adamw', which names no "
            "transform (the transforms' labels: 'adam', 'sgd', 'rms')",
            id="partition-label-names-no-transform",
        ),
        pytest.param(
            lambda: gradtx.partition(three(gradtx), gradtx.by_path({"w": "adam", "seq/0/0": "sgd"})),
            "gradtx.partition(param_labels=...): no pattern matches leaf path 'seq/1' (patterns 'w', 'seq/0/0'); "
            "end with r'.*' for a default",
            id="partition-leaf-unlabeled",
        ),
        pytest.param(
            lambda: gradtx.partition(three(gradtx), lambda p: {"w": ["adam"], "seq": "sgd"}),
            "gradtx.partition(param_labels=...): the labels go below the params' leaf path 'w': they have 'w/0'",
            id="partition-deeper-than-params",
        ),
        pytest.param(
            lambda: gradtx.partition(three(gradtx), lambda p: {"w": {"adam"}, "seq": "sgd"}),
            "gradtx.partition(param_labels=...): the labels give leaf path 'w' the label {'adam'}, which is not "
            "hashable",
            id="partition-unhashable-label",
        ),
        pytest.param(
            lambda: gradtx.selective_transform(gradtx.adam(0.1), freeze_mask=lambda p: {"w": 1, "seq": True}),
            "gradtx.selective_transform(freeze_mask=...): the freeze mask gives a leaf the value 1, not a bool",
            id="selective-fn-not-bool",
        ),
    ],
)
def test_a_mask_that_does_not_fit_is_an_error_naming_the_leaf_path(build, message):
    """optax #271: a nested mask of the wrong structure gives JAX's tree-map error; gradtx
    names the call, the argument and the leaf path, at init (before any state is made)."""
    tx = build()
    with pytest.raises(ValueError) as info:
        tx.init(PARAMS)
    assert str(info.value).startswith(message), str(info.value)


def ndim_labels_with_typo(params):
    return jax.tree.map(lambda p: "adamw" if p.ndim > 1 else "sgd", params)


def test_optax_gives_no_leaf_path_for_the_same_mask():
    """The optax side of the test above (optax #271): its error does not name 'seq/1'."""
    with pytest.raises(ValueError) as info:
        optax.masked(optax.adam(0.1), {"w": True, "seq": [(False,)]}).init(PARAMS)
    assert "seq/1" not in str(info.value)


def test_update_errors_name_the_call():
    """At update (after init on other params, or with a state changed by hand)."""
    opt = gradtx.partition(three(gradtx), LABELS)
    state = opt.init(PARAMS)
    with pytest.raises(gradtx.UpdateError) as info:  # the gradients of other params than init's
        opt.update({"w": jnp.ones((3, 2)), "seq": [jnp.ones(4), jnp.ones(())]}, state, None)
    assert str(info.value) == "gradtx.partition: the labels go below the params' leaf path 'seq/0': they have 'seq/0/0'"
    frozen = gradtx.freeze({"w": {"kernel": True}, "seq": False})  # freeze keeps no state: checked at update
    with pytest.raises(gradtx.UpdateError) as info:
        frozen.update(PARAMS, frozen.init(PARAMS))
    assert str(info.value) == "gradtx.freeze: the mask goes below the params' leaf path 'w': it has 'w/kernel'"
    by_hand = state._replace(inner_states={**state.inner_states, "adam": gradtx.adam(1e-2).init(PARAMS)})
    with pytest.raises(gradtx.UpdateError) as info:
        opt.update(PARAMS, by_hand, PARAMS)
    assert str(info.value) == (
        "gradtx.partition: inner_states['adam'] is not the MaskedState(inner_state) that init(params) makes "
        "(got AdamState); to start one label afresh use gradtx.partition_reset"
    )
    with pytest.raises(gradtx.UpdateError) as info:
        opt.update(PARAMS, state._replace(inner_states={"adam": state.inner_states["adam"]}), PARAMS)
    assert str(info.value) == (
        "gradtx.partition: inner_states has labels [\"'adam'\"], the transforms [\"'adam'\", \"'rms'\", \"'sgd'\"]: "
        "pass the state that init(params) returns"
    )


def test_an_inner_that_changes_the_tree_is_an_error():
    changes = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda u, s, p=None: ({"other": 1.0}, s))
    opt = gradtx.masked(changes, {"w": True, "seq": False})
    with pytest.raises(gradtx.UpdateError, match=r"^gradtx\.masked: the inner transformation returned updates of "):
        opt.update(PARAMS, opt.init(PARAMS), PARAMS)


# --- partition_reset (optax #1371) -------------------------------------------------------------


@pytest.mark.parametrize("in_chain", [False, True], ids=["partition", "in-a-chain"])
def test_partition_reset_starts_one_label_afresh(in_chain):
    """After 3 steps, resetting "sgd" gives its fresh init; "adam" and "rms" unchanged; the
    next update runs (under jit)."""
    part = gradtx.partition(three(gradtx), LABELS)
    opt = gradtx.chain(gradtx.clip_by_global_norm(10.0), part) if in_chain else part
    params, grads = random_tree(0, small=True), random_grads(1, 3, small=True)
    state = opt.init(params)
    for g in grads:
        _, state = opt.update(g, state, params)
    reset = jax.jit(lambda s, p: gradtx.partition_reset(part, s, p, "sgd"))(state, params)
    assert type(reset) is type(state)
    jax.tree.map(np.testing.assert_array_equal, reset.inner_states["sgd"], part.init(params).inner_states["sgd"])
    for label in ("adam", "rms"):
        jax.tree.map(np.testing.assert_array_equal, reset.inner_states[label], state.inner_states[label])
    assert float(jnp.abs(state.inner_states["sgd"].inner_state.trace["seq"][0][0]).sum()) > 0
    opt.update(grads[0], reset, params)


@pytest.mark.parametrize(
    "args, error, message",
    [
        pytest.param((), ValueError, "gradtx.partition_reset(labels=()): name at least one label to reset", id="none"),
        pytest.param(
            ("lamb",),
            ValueError,
            "gradtx.partition_reset(labels=('lamb',)): label 'lamb' names no transform of tx (its labels: 'adam', "
            "'sgd', 'rms')",
            id="unknown",
        ),
    ],
)
def test_partition_reset_errors(args, error, message):
    part = gradtx.partition(three(gradtx), LABELS)
    with pytest.raises(error) as info:
        gradtx.partition_reset(part, part.init(PARAMS), PARAMS, *args)
    assert str(info.value) == message
    with pytest.raises(TypeError) as info:
        gradtx.partition_reset(part, {"inner_states": {}}, PARAMS, "adam")
    assert str(info.value) == (
        "gradtx.partition_reset(state=...): state must be the partition's state (a record with an inner_states "
        "field), got dict"
    )


def test_other_construction_errors():
    """The construction errors beside the registry's bad rows."""
    with pytest.raises(TypeError) as info:
        gradtx.by_path({1: True})
    assert str(info.value) == (
        "gradtx.by_path(patterns={1: True}): patterns must be a mapping from leaf-path patterns to values, "
        "got the key 1"
    )
    with pytest.raises(ValueError) as info:
        gradtx.partition({"a": gradtx.adam(0.1)}, gradtx.by_path({".*": ["a"]}))
    assert str(info.value) == (
        "gradtx.partition(param_labels=gradtx.by_path({'.*': ['a']})): the labels give pattern '.*' the label "
        "['a'], which is not hashable"
    )


# --- tree utilities -------------------------------------------------------------------------


class InjectLikeState(NamedTuple):
    """A record shaped like optax's inject_hyperparams state, wrapping a gradtx state."""

    count: Any
    hyperparams: Any
    inner_state: Any


def tree_states() -> dict[str, Any]:
    params = random_tree(0, small=True)
    named = gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(1.0)), ("opt", gradtx.masked(gradtx.adam(0.1), MASK))
    )
    return {
        "adam": gradtx.adam(0.1).init(params),
        "chain": gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.sgd(0.1, momentum=0.9)).init(params),
        "partition": gradtx.partition(three(gradtx), LABELS).init(params),
        "named-chain": named.init(params),
        "inject-like": InjectLikeState(
            jnp.asarray(3), {"learning_rate": jnp.asarray(0.1)}, gradtx.masked(gradtx.adam(0.1), MASK).init(params)
        ),
    }


KEYS = ["count", "mu", "nu", "trace", "learning_rate", "inner_state", "AdamState", "MaskedState", "opt", "adam"]


@pytest.mark.parametrize("name", list(tree_states()))
def test_tree_get_and_get_all_with_path_find_what_optax_finds(name):
    """Reference: ``optax.tree.get_all_with_path`` on the same state: the same paths and values."""
    state = tree_states()[name]
    for key in KEYS:
        ours = gradtx.tree.get_all_with_path(state, key)
        theirs = optax.tree.get_all_with_path(state, key)
        assert sorted(map(str, (tuple(map(str, p)) for p, _ in ours))) == sorted(
            map(str, (tuple(map(str, p)) for p, _ in theirs))
        ), key
        if len(theirs) == 1:
            jax.tree.map(np.testing.assert_array_equal, gradtx.tree.get(state, key), optax.tree.get(state, key))
        elif len(theirs) > 1:
            with pytest.raises(KeyError, match=f"found {len(theirs)} values named '{key}'"):
                gradtx.tree.get(state, key)
        else:
            assert gradtx.tree.get(state, key, default="none") == "none"


@pytest.mark.parametrize("name", list(tree_states()))
def test_tree_set_sets_what_optax_sets(name):
    """Reference: ``optax.tree.set`` with the same keyword (and with a filtering that keeps
    array values only), for each name found once; a missing name is a ``KeyError``."""
    state = tree_states()[name]
    is_array = lambda path, value: isinstance(value, jax.Array)  # noqa: E731
    compared = 0
    for key in KEYS:
        for filtering in (None, is_array):
            if len(optax.tree.get_all_with_path(state, key, filtering)) != 1:
                continue
            ours = gradtx.tree.set(state, filtering, **{key: jnp.asarray(7.0)})
            theirs = optax.tree.set(state, filtering, **{key: jnp.asarray(7.0)})
            assert jax.tree.structure(ours) == jax.tree.structure(theirs), key
            jax.tree.map(np.testing.assert_array_equal, ours, theirs)
            compared += 1
    assert compared >= 1
    with pytest.raises(KeyError, match=r"gradtx\.tree\.set: the tree has no value named 'zeta'"):
        gradtx.tree.set(state, zeta=1.0)
    with pytest.raises(KeyError, match="that passes the filtering"):
        gradtx.tree.set(state, is_array, inner_state=1.0)


def test_tree_set_replaces_every_value_of_the_name():
    """Where a name is found twice, one nested under a record found by another name (an
    inject_hyperparams-like record's ``count`` and its inner Adam's), gradtx sets both, as
    the documented rule says; optax 0.2.8's ``tree.set`` leaves the nested one as it was
    (its ``_replace`` stops at a record that has none of the names)."""
    state = tree_states()["inject-like"]
    assert len(optax.tree.get_all_with_path(state, "count")) == 2
    ours = gradtx.tree.set(state, count=jnp.asarray(7))
    assert int(ours.count) == 7 and int(ours.inner_state.inner_state.count) == 7
    theirs = optax.tree.set(state, count=jnp.asarray(7))
    assert int(theirs.count) == 7 and int(theirs.inner_state.inner_state.count) == 0  # optax's defect


@pytest.mark.parametrize("name", ["adam", "chain", "partition", "masked", "named-chain"])
def test_tree_map_params_maps_every_params_shaped_tree(name):
    """Reference: ``optax.tree_map_params`` on the same state (with the ``is_leaf`` optax
    needs for masked states; gradtx needs none and leaves MaskedNode alone)."""
    params = random_tree(0, small=True)
    opt = {
        "adam": gradtx.adam(0.1),
        "chain": gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.sgd(0.1, momentum=0.9)),
        "partition": gradtx.partition(three(gradtx), LABELS),
        "masked": gradtx.masked(gradtx.adam(0.1), MASK),
        "named-chain": gradtx.named_chain(("clip", gradtx.clip(1.0)), ("opt", gradtx.masked(gradtx.adam(0.1), MASK))),
    }[name]
    state = opt.init(params)
    specs = jax.tree.map(lambda p: f"spec{p.shape}", params)
    ours = gradtx.tree_map_params(opt, lambda _, s: s, state, specs, transform_non_params=lambda _: "replicated")
    is_masked = lambda x: isinstance(x, gradtx.MaskedNode)  # noqa: E731
    theirs = optax.tree_map_params(
        opt,
        lambda v, s: v if is_masked(v) else s,
        state,
        specs,
        transform_non_params=lambda _: "replicated",
        is_leaf=is_masked,
    )
    assert ours == theirs
    assert gradtx.tree.map_params is gradtx.tree_map_params
    if name in ("partition", "masked", "named-chain"):
        with pytest.raises(ValueError):  # optax without is_leaf: the masked-out leaves break its tree.map
            optax.tree_map_params(opt, lambda _, s: s, state, specs)


INTEGER_LEAF_LEFT_OUT = {
    "masked": lambda lib: lib.masked(lib.adam(1e-2), {"w": True, "n": False}),
    "partition + set_to_zero": lambda lib: lib.partition({"a": lib.adam(1e-2), "z": lib.set_to_zero()},
                                                         {"w": "a", "n": "z"}),
    "chain(masked)": lambda lib: lib.chain(lib.masked(lib.sgd(1e-2, momentum=0.9), {"w": True, "n": False})),
}


@pytest.mark.parametrize("name", INTEGER_LEAF_LEFT_OUT)
def test_integer_leaves_no_stage_steps_are_taken_as_optax_takes_them(name):
    """Reference: optax 0.2.8 with the same call, 3 steps, exactly. gradtx refuses integer
    params in the stages that step them (tests/test_misuse.py); a leaf that ``masked``
    leaves out or ``set_to_zero`` zeroes is stepped by none, and passes as in optax."""
    params = {"w": jnp.linspace(-1.0, 1.0, 3), "n": jnp.array(7, jnp.int32)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0]), "n": jnp.array(0, jnp.int32)}
    got = run_steps(INTEGER_LEAF_LEFT_OUT[name](gradtx), params, [grads] * 3, jit=True)
    want = run_optax(INTEGER_LEAF_LEFT_OUT[name](optax), params, [grads] * 3, jit=True)
    jax.tree.map(np.testing.assert_array_equal, got.params, want.params)
    assert got.params["n"].dtype == jnp.int32 and int(got.params["n"]) == 7
