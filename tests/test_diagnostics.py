"""The diagnostics (``gradtx/diagnostics.py``): what they record and that they change nothing.

- each recorded value against its formula written out in numpy float64 (the reference),
  over 5 steps of a nested tree with a scalar leaf, whole tree and per leaf, float32 rtol
  1e-5; complex params against the complex formulas; and for each formula a wrong-formula
  mutant that the same comparison must reject;
- ``training_diagnostics`` against the five chained, value for value;
- the updates of ``chain(opt, diagnostic)`` are ``opt``'s bit for bit, for every registry
  optimizer under one jitted program (reference: ``opt`` alone in the same program);
- ``diagnostics_in`` finds the values in chains, wrappers and sweeps, and a jitted
  ``lax.scan`` returns them step by step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_grads, random_tree

import gradtx
from gradtx import diagnostics
from gradtx.registry import of_kind

STEPS = 5
RTOL = 1e-5


def _leaves(tree):
    return [np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64) for x in jax.tree.leaves(tree)]


# --- the reference: each formula in numpy float64 ------------------------------------------------


def _sq(x):
    return float(np.sum(np.abs(x) ** 2))


def reference(name, params_seq, updates_seq, per_leaf, reset_every=None, observed=None):
    """What ``name`` records at each step, from the params before each step and its updates.

    ``observed``: the steps observed (default all); an unobserved step keeps the last
    recorded value, and "the previous update" is the last observed step's. The reference
    point moves every ``reset_every`` steps, observed or not."""
    n_leaves = len(_leaves(params_seq[0]))
    origin = _leaves(params_seq[0])
    previous = [np.zeros_like(u) for u in _leaves(updates_seq[0])]
    out = []
    for t, (params, updates) in enumerate(zip(params_seq, updates_seq)):
        p, u = _leaves(params), _leaves(updates)
        if reset_every is not None and t % reset_every == 0:
            origin = p
        if observed is not None and not observed[t]:
            out.append(out[-1] if out else [0.0] * (n_leaves if per_leaf else 1))
            continue
        parts = []
        for i in range(n_leaves):
            dot = np.real(u[i] * np.conj(previous[i]))
            parts.append(dict(uu=_sq(u[i]), pp=_sq(p[i]), vv=_sq(previous[i]), dot=float(np.sum(dot)),
                              flips=float(np.sum(dot < 0)), size=float(u[i].size),
                              dd=_sq(p[i] + u[i] - origin[i])))
        groups = [[x] for x in parts] if per_leaf else [parts]

        def value(group):
            s = {k: sum(x[k] for x in group) for k in group[0]}
            if name == "update_norm":
                return np.sqrt(s["uu"])
            if name == "update_ratio":
                return 0.0 if s["uu"] == 0 else np.sqrt(s["uu"]) / np.sqrt(s["pp"])
            if name == "oscillation":
                return s["flips"] / s["size"]
            if name == "cosine":
                return 0.0 if s["uu"] * s["vv"] == 0 else s["dot"] / np.sqrt(s["uu"] * s["vv"])
            assert name == "distance"
            return np.sqrt(s["dd"])

        out.append([value(g) for g in groups])
        previous = u
    return np.asarray(out)


FIVE = ("update_norm", "update_ratio", "oscillation", "update_cosine", "distance_travelled")
# the field each records (training_diagnostics: the distance; its others are the five chained, below)
FIELD = {"update_norm": "update_norm", "update_ratio": "update_ratio", "oscillation": "oscillation",
         "update_cosine": "cosine", "distance_travelled": "distance", "training_diagnostics": "distance"}
CASES = [(n, leaf, None) for n in FIVE for leaf in (False, True)]
CASES += [("distance_travelled", False, 2), ("distance_travelled", True, 3)]


def inputs(dtype=jnp.float32):
    """Params before each step and the updates of each step (the params move by them); the
    small nested tree with a scalar leaf."""
    params = random_tree(0, dtype, small=True)
    updates = [jax.tree.map(lambda g: -0.1 * g, g) for g in random_grads(1, STEPS, dtype, small=True)]
    updates[2] = jax.tree.map(jnp.zeros_like, updates[2])  # a zero step: ratio and cosine are 0
    seq = [params]
    for u in updates[:-1]:
        seq.append(gradtx.apply_updates(seq[-1], u))
    return seq, updates


def recorded(cases, params_seq, updates_seq, observe=None):
    """What each case's transformation records at each step: ``{case: array (steps, values)}``,
    all run in one jitted program (the updates handed on must be the ones given, bit for bit).
    ``observe``: ``update(..., observe=...)`` at each step (Python bools, or traced booleans
    when given as an array); default: not passed."""

    @jax.jit
    def run(params_seq, updates_seq, flags):
        out, handed = [], []
        for name, per_leaf, reset_every in cases:
            kwargs = {} if reset_every is None else dict(reset_every=reset_every)
            tx = getattr(gradtx, name)(per_leaf, **kwargs)
            state, values = tx.init(params_seq[0]), []
            for t, (params, updates) in enumerate(zip(params_seq, updates_seq)):
                extra = {} if observe is None else {"observe": flags[t] if flags is not None else observe[t]}
                new, state = tx.update(updates, state, params, **extra)
                handed.append(new)
                values.append(jnp.stack(jax.tree.leaves(getattr(state, FIELD[name]))).astype(jnp.float32))
            out.append(jnp.stack(values))
        return out, handed

    traced = isinstance(observe, (np.ndarray, jax.Array))
    out, handed = run(params_seq, updates_seq, jnp.asarray(observe) if traced else None)
    given = [u for _ in cases for u in updates_seq]
    for a, b in zip(jax.tree.leaves(handed), jax.tree.leaves(given), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), "the updates handed on changed"
    return {case: np.asarray(v, np.float64) for case, v in zip(cases, out)}


def agree(got, case, params_seq, updates_seq, observed=None) -> bool:
    name, per_leaf, reset_every = case
    want = reference(FIELD[name], params_seq, updates_seq, per_leaf, reset_every, observed)
    return got.shape == want.shape and np.allclose(got, want, rtol=RTOL, atol=RTOL * np.max(np.abs(want)) / 10)


@pytest.fixture(scope="module")
def real_run():
    params_seq, updates_seq = inputs()
    return recorded(CASES, params_seq, updates_seq), params_seq, updates_seq


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'per_leaf' if c[1] else 'tree'}-reset{c[2]}")
def test_each_diagnostic_records_its_formula(real_run, case):
    """Reference: ``reference`` above (numpy float64), float32 rtol 1e-5, every step."""
    got, params_seq, updates_seq = real_run
    assert agree(got[case], case, params_seq, updates_seq)


def test_complex_params_follow_the_complex_formulas():
    """Reference: the same numpy formulas on complex numbers (|u|^2, Re(u conj(v))); the
    values are real; the oscillation counts turns by more than 90 degrees."""
    params_seq, updates_seq = inputs(jnp.complex64)
    cases = [(n, False, None) for n in FIVE]
    got = recorded(cases, params_seq, updates_seq)
    assert [c for c in cases if not agree(got[c], c, params_seq, updates_seq)] == []


# (the formula, a wrong one, the diagnostics that must notice)
MUTANTS = [
    ("norm", lambda sq: sq, ["update_norm", "update_ratio", "distance_travelled"]),
    ("ratio", lambda u, p: jnp.where(u == 0, 0.0, p / u), ["update_ratio"]),
    ("inner", lambda u, v: jnp.abs(jnp.real(u * jnp.conj(v))), ["oscillation", "update_cosine"]),
    ("flip_fraction", lambda flips, size: flips / jnp.maximum(size - 1, 1), ["oscillation"]),
    ("cosine", lambda dot, a, b: jnp.where((a == 0) | (b == 0), 0.0, dot / a), ["update_cosine"]),
    ("displacement", lambda p, u, o: p - o, ["distance_travelled"]),
]


@pytest.mark.parametrize("formula, wrong, caught_by", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_wrong_formulas_fail_the_reference(real_run, monkeypatch, formula, wrong, caught_by):
    _, params_seq, updates_seq = real_run
    monkeypatch.setattr(diagnostics, formula, wrong)
    cases = [(name, False, None) for name in caught_by]
    got = recorded(cases, params_seq, updates_seq)
    assert [c[0] for c in cases if agree(got[c], c, params_seq, updates_seq)] == [], "a mutant went unnoticed"


@pytest.mark.parametrize("per_leaf, reset_every", [(False, None), (True, 2)])
def test_training_diagnostics_is_the_five_chained(real_run, per_leaf, reset_every):
    """Reference: the five transformations chained (float32 rtol 1e-5, every step)."""
    _, params_seq, updates_seq = real_run
    five = gradtx.chain(gradtx.update_norm(per_leaf), gradtx.update_ratio(per_leaf), gradtx.oscillation(per_leaf),
                        gradtx.update_cosine(per_leaf), gradtx.distance_travelled(per_leaf, reset_every))
    one = gradtx.training_diagnostics(per_leaf, reset_every)

    @jax.jit
    def run(params_seq, updates_seq):
        out = []
        for tx in (five, one):
            state, values = tx.init(params_seq[0]), []
            for params, updates in zip(params_seq, updates_seq):
                _, state = tx.update(updates, state, params)
                values.append(gradtx.diagnostics_in(state))
            out.append(values)
        return out

    want, got = run(params_seq, updates_seq)
    for w, g in zip(want, got):
        for name in diagnostics.RECORDED:
            a, b = np.stack(jax.tree.leaves(g[name])), np.stack(jax.tree.leaves(w[name]))
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.max(np.abs(b)) / 10, err_msg=name)


# --- nothing changes ---------------------------------------------------------------------------

OPTIMIZERS = [e for e in of_kind("optimizer") if e.grid and not e.needs_objective
              and e.name not in ("sophia", "dpsgd")]  # update needs obj_fn / per-example gradients
ALL_FIVE = (gradtx.update_norm, gradtx.update_ratio, gradtx.oscillation, gradtx.update_cosine,
            gradtx.distance_travelled)


def _same_updates(opt, observers, params, grads, extra) -> None:
    """The updates of ``opt`` alone and of ``chain(opt, *observers)``, in one jitted
    program over the steps: equal bit for bit."""
    watched = gradtx.chain(opt, *observers)

    def steps(tx):
        state, p, out = tx.init(params), params, []
        for g in grads:
            u, state = tx.update(g, state, p, **extra)
            p = gradtx.apply_updates(p, u)
            out.append(u)
        return out

    alone, with_observers = jax.jit(lambda: (steps(opt), steps(watched)))()
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(with_observers)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "the updates changed"


@pytest.mark.parametrize("entry", OPTIMIZERS, ids=lambda e: e.name)
def test_updates_are_bit_for_bit_those_of_the_optimizer_alone(entry):
    """Reference: the registry optimizer alone (first grid point), compiled in the same
    program as ``chain(opt, training_diagnostics)`` (all five formulas, per leaf, with
    resets): one step's updates equal bit for bit. (XLA fuses the step differently when
    the diagnostics read it; the updates must not change.)"""
    params, grads = random_tree(0, small=True), random_grads(1, 1, small=True)
    extra = {"value": jnp.asarray(1.0)} if "value" in entry.update_extra else {}
    _same_updates(entry.obj(**entry.grid[0]), [gradtx.training_diagnostics(True, 1)], params, grads, extra)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_the_five_chained_change_nothing_either(name):
    """As above, with the five diagnostics chained one by one (whole tree), over 2 steps."""
    entry = next(e for e in OPTIMIZERS if e.name == name)
    params, grads = random_tree(0, small=True), random_grads(1, 2, small=True)
    _same_updates(entry.obj(**entry.grid[0]), [make() for make in ALL_FIVE], params, grads, {})


# --- reading the values --------------------------------------------------------------------------


def test_a_jitted_scan_returns_the_values_step_by_step():
    """Reference: the same steps one by one, each a jitted call (the values equal at rtol 1e-6)."""
    opt = gradtx.chain(gradtx.adam(0.1), gradtx.training_diagnostics(per_leaf=True))
    params = random_tree(0, small=True)
    grads = random_grads(1, 4, small=True)

    def step(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        return (gradtx.apply_updates(p, u), s), gradtx.diagnostics_in(s)

    _, per_step = jax.jit(lambda c, gs: jax.lax.scan(step, c, gs))(
        (params, opt.init(params)), jax.tree.map(lambda *x: jnp.stack(x), *grads))
    assert sorted(per_step) == sorted(diagnostics.RECORDED)
    carry, one_step = (params, opt.init(params)), jax.jit(step)
    for t, g in enumerate(grads):
        carry, values = one_step(carry, g)
        for name, tree in values.items():
            for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(per_step[name])):
                np.testing.assert_allclose(np.asarray(b)[t], np.asarray(a), rtol=1e-6, err_msg=name)
    assert np.all((np.asarray(jax.tree.leaves(per_step["oscillation"])) >= 0)
                  & (np.asarray(jax.tree.leaves(per_step["oscillation"])) <= 1))


def test_diagnostics_in_reads_wrappers_and_keys_repeats_by_path():
    params = {"w": jnp.ones(3)}
    masked = gradtx.masked(gradtx.chain(gradtx.sgd(0.1), gradtx.update_norm()), {"w": True})
    state = masked.init(params)
    assert list(gradtx.diagnostics_in(state)) == ["update_norm"]
    _, state = masked.update({"w": jnp.array([3.0, 0.0, 4.0])}, state, params)
    assert float(gradtx.diagnostics_in(state)["update_norm"]) == pytest.approx(0.5)
    two = gradtx.named_chain(("grads", gradtx.update_norm()), ("sgd", gradtx.sgd(0.1)), ("steps", gradtx.update_norm()))
    _, state = two.update({"w": jnp.array([3.0, 0.0, 4.0])}, two.init(params), params)
    assert {k: float(v) for k, v in gradtx.diagnostics_in(state).items()} == pytest.approx(
        {"grads.update_norm": 5.0, "steps.update_norm": 0.5})


def test_low_precision_params_record_float32_and_complex_real():
    for dtype, want in ((jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float32), (jnp.complex64, jnp.float32)):
        params = {"w": jnp.ones(3, dtype), "b": jnp.ones((), dtype)}
        tx = gradtx.training_diagnostics(per_leaf=True)
        _, state = tx.update(params, tx.init(params), params)
        for name in diagnostics.RECORDED:
            assert all(x.dtype == want for x in jax.tree.leaves(getattr(state, name))), (dtype, name)
        assert state.previous_update["w"].dtype == dtype


def test_ratio_and_distance_need_the_params():
    for tx in (gradtx.update_ratio(), gradtx.distance_travelled(), gradtx.training_diagnostics()):
        params = {"w": jnp.ones(2)}
        with pytest.raises(gradtx.UpdateError, match=r"update\(\) needs params"):
            tx.update(params, tx.init(params))


def test_empty_tree_records_zeros():
    tx = gradtx.training_diagnostics()
    updates, state = tx.update({}, tx.init({}), {})
    assert updates == {} and all(float(getattr(state, n)) == 0.0 for n in diagnostics.RECORDED)


def test_resetting_the_origin_by_hand():
    """``gradtx.tree.set(state, origin=params)`` moves the reference point (closed form:
    after one step of u from there, the distance is ||u||)."""
    tx = gradtx.chain(gradtx.sgd(1.0), gradtx.distance_travelled())
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    for _ in range(3):
        u, state = tx.update({"w": jnp.ones(2)}, state, params)
        params = gradtx.apply_updates(params, u)
    assert float(state.distance) == pytest.approx(3 * np.sqrt(2), rel=1e-6)
    state = gradtx.tree.set(state, origin=params)
    _, state = tx.update({"w": jnp.array([3.0, 4.0])}, state, params)
    assert float(state.distance) == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("name", [*FIVE, "training_diagnostics"])
def test_nan_and_inf_updates_are_handed_on_bit_for_bit(name):
    """The updates go through a select that waits for the recorded values (``_after``):
    its predicate must be false for NaN and inf values too. Reference: the input bytes."""
    params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5]), "b": jnp.ones(())}
    updates = {"w": jnp.array([jnp.nan, jnp.inf, -jnp.inf, -0.0]), "b": jnp.asarray(jnp.nan)}
    tx = getattr(gradtx, name)()

    @jax.jit
    def twice(updates, params):
        new, state = tx.update(updates, tx.init(params), params)
        return new, tx.update(updates, state, params)[0]

    for handed in twice(updates, params):
        for a, b in zip(jax.tree.leaves(handed), jax.tree.leaves(updates), strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# --- observing some steps only -------------------------------------------------------------------

# steps 0, 2 and 4 unobserved: the reference point moves at steps 0 and 2 (reset_every=2)
# without being observed, the oscillation and the cosine at step 3 compare with step 1
OBSERVED = np.array([False, True, False, True, False])
OBSERVED_CASES = [*CASES, ("training_diagnostics", False, 2)]


@pytest.mark.parametrize("traced", [False, True], ids=["python-bools", "traced"])
def test_unobserved_steps_record_nothing_and_change_nothing(traced):
    """Reference: ``reference(..., observed=...)`` (numpy float64, float32 rtol 1e-5): an
    unobserved step keeps the values, the previous update is the last observed one, the
    reference point moves every ``reset_every`` steps all the same; the updates handed
    on are the input bit for bit (``recorded`` checks), with ``observe`` as Python bools
    (nothing compiled on those steps) and as traced booleans (``lax.cond``)."""
    params_seq, updates_seq = inputs()
    observe = OBSERVED if traced else [bool(b) for b in OBSERVED]
    got = recorded(OBSERVED_CASES, params_seq, updates_seq, observe)
    assert [c for c in OBSERVED_CASES if not agree(got[c], c, params_seq, updates_seq, OBSERVED)] == []


def test_an_origin_left_still_on_unobserved_steps_is_caught(monkeypatch):
    """Mutant: the reference point not moved on unobserved steps must fail the reference."""
    monkeypatch.setattr(diagnostics, "_moved_origin", lambda reset_every: None)
    params_seq, updates_seq = inputs()
    cases = [("distance_travelled", False, 2), ("training_diagnostics", False, 2)]
    got = recorded(cases, params_seq, updates_seq, [bool(b) for b in OBSERVED])
    assert [c for c in cases if agree(got[c], c, params_seq, updates_seq, OBSERVED)] == []


def test_observed_steps_are_the_last_of_each_block():
    """Reference: the blocks written out by hand."""
    assert gradtx.observed_steps(11, 4).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    assert gradtx.observed_steps(7, 3, observed=1).tolist() == [0, 0, 1, 0, 0, 1, 1]
    assert gradtx.observed_steps(3, 10).tolist() == [0, 1, 1]
    assert gradtx.observed_steps(4, 2, observed=2).all() and gradtx.observed_steps(0, 5).size == 0


@pytest.mark.parametrize("length, every, observed", [(11, 4, 2), (12, 4, 2), (9, 3, 3), (3, 10, 2), (10, 5, 1)])
def test_scan_observing_is_the_scan_with_those_steps_observed(length, every, observed):
    """Reference: ``lax.scan`` of the same step with ``observe`` the traced booleans of
    ``observed_steps`` (one program; the values at every step and the final params and
    state equal, rtol 1e-6: two programs may contract a multiply-add differently)."""
    opt = gradtx.chain(gradtx.adam(0.1), gradtx.training_diagnostics(per_leaf=True, reset_every=3))
    params = random_tree(0, small=True)
    xs = jax.tree.map(lambda *g: jnp.stack(g), *random_grads(1, length, small=True))

    def step(carry, g, observe):
        p, s = carry
        u, s = opt.update(g, s, p, observe=observe)
        return (gradtx.apply_updates(p, u), s), gradtx.diagnostics_in(s)

    mask = gradtx.observed_steps(length, every, observed)
    init = (params, opt.init(params))
    got = jax.jit(lambda c, xs: gradtx.scan_observing(step, c, xs, every=every, observed=observed))(init, xs)
    want = jax.jit(lambda c, xs: jax.lax.scan(lambda c, x: step(c, x[0], x[1]), c, (xs, jnp.asarray(mask))))(init, xs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_scan_observing_rejects_xs_without_one_length():
    def step(c, x, observe):
        return c, x

    for xs in ({"a": jnp.ones(3), "b": jnp.ones(4)}, {}, jnp.ones(())):
        with pytest.raises(ValueError, match=r"gradtx.scan_observing\(xs=...\): xs must be arrays with one leading"):
            gradtx.scan_observing(step, 0.0, xs, every=2)


NOT_BOOLEANS = ["yes", 1, jnp.ones(2, bool), jnp.asarray(1.0)]


@pytest.mark.parametrize("observe", NOT_BOOLEANS, ids=["str", "int", "vector", "float"])
def test_observe_must_be_a_boolean(observe):
    params = {"w": jnp.ones(2)}
    tx = gradtx.chain(gradtx.sgd(0.1), gradtx.update_norm())
    message = r"gradtx.chain > update_norm: observe must be a bool or a boolean scalar array, got "
    with pytest.raises(gradtx.UpdateError, match=message):
        tx.update(params, tx.init(params), params, observe=observe)


def test_a_sweep_passes_observe_to_every_setting():
    """``observe=False`` reaches every setting of a sweep (a Python value, not mapped): the
    norms stay 0; ``observe=True`` records one per setting."""
    sweep = gradtx.sweep(lambda learning_rate: gradtx.chain(gradtx.sgd(learning_rate), gradtx.update_norm()),
                         {"learning_rate": [0.1, 1.0]})
    params = {"w": jnp.ones((2, 2))}
    (group,) = sweep.groups
    state = group.tx.init(group.replicate(params))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), group.replicate(params))
    _, unobserved = group.tx.update(grads, state, group.replicate(params), observe=False)
    _, seen = group.tx.update(grads, state, group.replicate(params), observe=True)
    assert np.asarray(gradtx.diagnostics_in(unobserved)["update_norm"]).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(gradtx.diagnostics_in(seen)["update_norm"], [0.6, 6.0], rtol=1e-6)
