"""Sweeps (``gradtx/sweeps.py``): many settings in one compiled program.

- a sweep trained with the model vmapped over the settings equals, setting by setting, the
  same settings run one by one (reference: each setting's own jitted ``lax.scan`` with
  concrete hyperparameters), 100 steps, float32 rtol 1e-5: params and every state field;
  for sgd / momentum / Nesterov (a structural split), rmsprop, adam, adagrad, adadelta,
  ``chain(clip_by_global_norm, adamw)`` and a schedule's parameter;
- every registry optimizer whose first grid point has float hyperparameters sweeps them
  inside one program (traced: ``jax.eval_shape`` of the batched init and update);
- structural hyperparameters split the grid into the expected groups, listed and logged;
- grids (product, zip, list of settings), results back in grid order, the results table;
- bad input: each a clear error naming the argument (``gradtx.sweep(<arg>=<value>): ...``).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close

import gradtx
from gradtx.registry import BY_NAME, of_kind

STEPS = 100
RTOL = 1e-5
_rng = np.random.default_rng(0)
# a batch of 8 examples per step from a noisy linear model: the gradients stay of the
# noise's size (no step converges to a point where rounding decides a sign)
X = jnp.asarray(_rng.normal(size=(STEPS, 8, 4)), jnp.float32)
Y = jnp.asarray(X @ _rng.normal(size=(4, 3)) + 0.5 * _rng.normal(size=(STEPS, 8, 3)), jnp.float32)
PARAMS = {"w": jnp.asarray(_rng.normal(size=(4, 3)) * 0.5, jnp.float32), "b": jnp.zeros(3, jnp.float32)}


def loss(params, x, y):
    """A linear model's mean squared error on one batch."""
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def train_one(tx, params0=PARAMS):
    """The reference: one setting, its own compiled program (``STEPS`` steps in a scan)."""

    @jax.jit
    def run(params):
        def step(carry, batch):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p, *batch), s, p)
            return (gradtx.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), (X, Y))[0]

    return run(params0)


def train_group(group, params0=PARAMS):
    """The sweep: the group's settings in one program, the model vmapped over them."""

    @jax.jit
    def run(params):
        def step(carry, batch):
            p, s = carry
            u, s = group.tx.update(jax.vmap(jax.grad(loss), in_axes=(0, None, None))(p, *batch), s, p)
            return (gradtx.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, group.tx.init(params)), (X, Y))[0]

    return run(group.replicate(params0))


def clipped_adamw(learning_rate, weight_decay, max_norm):
    return gradtx.chain(gradtx.clip_by_global_norm(max_norm), gradtx.adamw(learning_rate, weight_decay=weight_decay))


def scheduled_momentum(peak, momentum):
    return gradtx.sgd(gradtx.cosine_decay_schedule(peak, STEPS), momentum=momentum)


def cyclic_sgd(base_lr, max_lr, mode):
    return gradtx.sgd(gradtx.cyclic_schedule(base_lr, max_lr, STEPS // 10, mode=mode))


# (id, factory, grid, mode, fixed, programs)
EQUALITY = [
    ("sgd-momentum-nesterov", gradtx.sgd,
     [dict(learning_rate=0.1), dict(learning_rate=0.03), dict(learning_rate=0.05, momentum=0.9),
      dict(learning_rate=0.02, momentum=0.5), dict(learning_rate=0.05, momentum=0.9, nesterov=True)],
     "product", {}, 3),
    ("rmsprop", gradtx.rmsprop, dict(learning_rate=[1e-2, 3e-3, 1e-3], decay=[0.9, 0.99, 0.5]), "zip",
     dict(eps=1e-6), 1),
    ("adam", gradtx.adam, dict(learning_rate=[1e-2, 3e-2], b1=[0.5, 0.9], b2=[0.99]), "product", {}, 1),
    ("adagrad", gradtx.adagrad, dict(learning_rate=[0.1, 0.3], initial_accumulator_value=[0.1, 0.0]), "zip", {}, 1),
    ("adadelta", gradtx.adadelta, dict(learning_rate=[1.0, 0.5], rho=[0.9, 0.95], eps=[1e-6, 1e-4]), "zip", {}, 1),
    ("clip-adamw", clipped_adamw, dict(learning_rate=[1e-2, 3e-3], weight_decay=[0.1, 0.0], max_norm=[0.5, 2.0]),
     "zip", {}, 1),
    ("schedule", scheduled_momentum, dict(peak=[0.1, 0.03]), "product", dict(momentum=0.9), 1),
    ("cyclic", cyclic_sgd, dict(base_lr=[0.01, 0.001], max_lr=[0.1, 0.05], mode=["triangular", "triangular2"]),
     "product", {}, 2),
]


@pytest.mark.parametrize("factory, grid, mode, fixed, programs", [c[1:] for c in EQUALITY],
                         ids=[c[0] for c in EQUALITY])
def test_a_sweep_equals_its_settings_run_one_by_one(factory, grid, mode, fixed, programs):
    """Reference: each setting trained alone (``train_one``), float32 rtol 1e-5 after 100
    steps: the params and every leaf of the state (the state has the settings first)."""
    sw = gradtx.sweep(factory, grid, mode=mode, fixed=fixed)
    assert len(sw.groups) == programs
    for group in sw.groups:
        params, state = train_group(group)
        for i, setting in enumerate(group.settings):
            want_params, want_state = train_one(factory(**fixed, **setting))
            what = f"{setting}: "
            assert_trees_close(group.take(params, i), want_params, RTOL, what=what + "params")
            assert_trees_close(group.take(state, i), want_state, RTOL, what=what + "state")


def test_bfloat16_params_keep_their_dtypes_and_the_numbers_of_one_by_one_runs():
    """The swept values act as Python floats do (weakly typed): bfloat16 params keep
    bfloat16 updates and state, and the numbers are those of the settings run one by one
    (reference: ``train_one`` in bfloat16, 100 steps, equal bit for bit)."""
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    (group,) = gradtx.sweep(gradtx.adam, dict(learning_rate=[1e-2, 3e-3], b1=[0.9, 0.5]), mode="zip").groups
    params, state = train_group(group, bf16)
    assert {x.dtype for x in jax.tree.leaves((params, state.mu, state.nu))} == {jnp.dtype(jnp.bfloat16)}
    for i, setting in enumerate(group.settings):
        want = train_one(gradtx.adam(**setting), bf16)
        for a, b in zip(jax.tree.leaves(group.take((params, state), i)), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_a_sweep_records_diagnostics_per_setting_and_step():
    """``training_diagnostics`` in the factory: ``diagnostics_in`` of the batched state,
    returned by the scan, has (steps, settings); fractions in [0, 1], distances >= 0;
    reference: one setting run alone with the same chain (float32 rtol 1e-5)."""
    def factory(learning_rate, momentum):
        return gradtx.chain(gradtx.sgd(learning_rate, momentum=momentum), gradtx.training_diagnostics(reset_every=4))

    (group,) = gradtx.sweep(factory, dict(learning_rate=[0.05, 0.01], momentum=[0.0, 0.9])).groups

    def run(tx, params, grad):
        def step(carry, batch):
            p, s = carry
            u, s = tx.update(grad(p, *batch), s, p)
            return (gradtx.apply_updates(p, u), s), gradtx.diagnostics_in(s)

        return jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), (X[:12], Y[:12]))[1])(params)

    swept = run(group.tx, group.replicate(PARAMS), jax.vmap(jax.grad(loss), in_axes=(0, None, None)))
    assert all(v.shape == (12, 4) for v in swept.values())
    assert np.all((swept["oscillation"] >= 0) & (swept["oscillation"] <= 1)) and np.all(swept["distance"] >= 0)
    alone = run(factory(**group.settings[3]), PARAMS, jax.grad(loss))
    for name, values in alone.items():
        np.testing.assert_allclose(swept[name][:, 3], values, rtol=RTOL, atol=RTOL * np.max(np.abs(values)) / 10)


# --- every registry optimizer --------------------------------------------------------------

# update needs inputs a generic run does not have: the objective, per-example gradients
OWN_INPUTS = {"sophia", "dpsgd", "lbfgs"}
# known to fail, and why (not the sweep's doing)
def _float_hyperparameters(entry) -> dict:
    return {k: v for k, v in entry.grid[0].items() if isinstance(v, float)}


SWEEPABLE = [e for e in of_kind("optimizer") if e.grid and e.name not in OWN_INPUTS and _float_hyperparameters(e)]


def test_every_registry_optimizer_sweeps_its_numeric_hyperparameters():
    """Each optimizer's float hyperparameters (its first grid point, and 0.9 times them)
    vary inside one program: the batched init and update trace (``jax.eval_shape``), with
    every float argument traced, and the state has the settings first."""
    assert len(SWEEPABLE) >= 40
    failed = {}
    for e in SWEEPABLE:
        numbers = _float_hyperparameters(e)
        grid = {k: [v, 0.9 * v] for k, v in numbers.items()}
        fixed = {k: v for k, v in e.grid[0].items() if k not in numbers}
        sw = gradtx.sweep(e.obj, grid, mode="zip", fixed=fixed)
        (group,) = sw.groups
        assert sorted(group.varied) == sorted(numbers), e.name
        params = group.replicate(PARAMS)
        extra = {k: jnp.full(2, v) for k, v in e.update_extra.items()}
        try:
            state = jax.eval_shape(group.tx.init, params)
            jax.eval_shape(lambda s, p, tx=group.tx, extra=extra: tx.update(p, s, p, **extra), state, params)
        except Exception as error:  # noqa: BLE001 - collected and reported together
            failed[e.name] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        else:
            assert all(x.shape[:1] == (2,) for x in jax.tree.leaves(state)), e.name
    assert not failed, failed


# --- groups ---------------------------------------------------------------------------------


def test_structural_hyperparameters_split_the_grid_and_the_groups_are_listed(caplog):
    grid = dict(learning_rate=[0.1, 0.01], momentum=[None, 0.9], nesterov=[False, True])
    settings = [dict(learning_rate=lr, momentum=m, nesterov=n) for lr in grid["learning_rate"]
                for m in grid["momentum"] for n in grid["nesterov"] if not (m is None and n)]
    with caplog.at_level(logging.INFO, logger="gradtx.sweeps"):
        sw = gradtx.sweep(gradtx.sgd, settings)
    assert [g.structural for g in sw.groups] == [
        dict(momentum=None, nesterov=False), dict(nesterov=False), dict(nesterov=True)]
    assert [g.indices for g in sw.groups] == [(0, 3), (1, 4), (2, 5)]
    assert [sorted(g.varied) for g in sw.groups] == [
        ["learning_rate"], ["learning_rate", "momentum"], ["learning_rate", "momentum"]]
    text = sw.describe()
    assert text == (
        "gradtx.Sweep of gradtx.sgd: 6 settings, 3 programs:\n"
        "  program 0: momentum=None, nesterov=False: 2 settings, varying learning_rate inside the program\n"
        "  program 1: nesterov=False: 2 settings, varying learning_rate, momentum inside the program\n"
        "  program 2: nesterov=True: 2 settings, varying learning_rate, momentum inside the program")
    assert text in caplog.text


def test_integers_and_static_names_are_structural():
    """An integer (a number of steps) changes the program; ``static=`` makes a float one too."""
    def factory(learning_rate, decay_steps):
        return gradtx.sgd(gradtx.exponential_decay(learning_rate, decay_steps, 0.5))

    sw = gradtx.sweep(factory, dict(learning_rate=[0.1, 0.2], decay_steps=[10, 20]))
    assert [g.structural for g in sw.groups] == [dict(decay_steps=10), dict(decay_steps=20)]
    sw = gradtx.sweep(gradtx.adam, dict(learning_rate=[0.1, 0.2], b1=[0.8, 0.9]), mode="zip", static=["b1"])
    assert [g.structural for g in sw.groups] == [dict(b1=0.8), dict(b1=0.9)]
    assert list(sw.groups[0].varied) == ["learning_rate"]


def test_grids_results_and_the_table():
    """Product order (the last name fastest), zip, results gathered back in grid order
    across groups, and the table: rows, reductions, the best row, Markdown, a pivot."""
    sw = gradtx.sweep(gradtx.sgd, dict(learning_rate=[0.1, 0.2], momentum=[None, 0.5]))
    assert sw.settings == (dict(learning_rate=0.1, momentum=None), dict(learning_rate=0.1, momentum=0.5),
                           dict(learning_rate=0.2, momentum=None), dict(learning_rate=0.2, momentum=0.5))
    zipped = gradtx.sweep(gradtx.sgd, dict(learning_rate=[0.1, 0.2], momentum=[0.0, 0.5]), mode="zip")
    assert zipped.settings == (dict(learning_rate=0.1, momentum=0.0), dict(learning_rate=0.2, momentum=0.5))
    listed = gradtx.sweep(gradtx.sgd, [dict(learning_rate=0.1), dict(learning_rate=0.2, momentum=0.5)])
    assert listed.table({"x": np.zeros(2)}).markdown().splitlines()[2:] == [
        "| 0.1 | <default> | 0 |", "| 0.2 | 0.5 | 0 |"]
    # each group returns, per setting, its learning rate and momentum (0 for None) per "epoch"
    per_epoch = sw.run(lambda g: np.stack([[[s["learning_rate"] + (s["momentum"] or 0.0) * e for e in range(3)]
                                            for s in g.settings]])[0])
    np.testing.assert_allclose(per_epoch[:, 1], [0.1, 0.6, 0.2, 0.7])
    table = sw.table({"loss": per_epoch, "final": per_epoch[:, -1]})
    assert len(table) == 4 and table.names == ("learning_rate", "momentum") and table.metrics == ("loss", "final")
    np.testing.assert_allclose(table.column("loss", "max"), [0.1, 1.1, 0.2, 1.2])
    assert table.best("loss", "min") == table.rows[0]
    assert table.best("loss", "last", largest=True) is table.rows[3]
    assert table.markdown(reduce="min", fmt=".2g").splitlines() == [
        "| learning_rate | momentum | loss | final |", "|---|---|---|---|",
        "| 0.1 | None | 0.1 | 0.1 |", "| 0.1 | 0.5 | 0.1 | 1.1 |",
        "| 0.2 | None | 0.2 | 0.2 |", "| 0.2 | 0.5 | 0.2 | 1.2 |"]
    pivot = table.pivot("learning_rate", "momentum", "loss", reduce="last")
    assert pivot.row_values == (0.1, 0.2) and pivot.column_values == (None, 0.5)
    np.testing.assert_allclose(pivot.values, [[0.1, 1.1], [0.2, 1.2]])
    assert pivot.markdown(fmt=".2g").splitlines()[2] == "| 0.1 | **0.1** | 1.1 |"


def test_update_checks_the_settings_axis():
    (group,) = gradtx.sweep(gradtx.adam, dict(learning_rate=[0.1, 0.2])).groups
    state = group.tx.init(group.replicate(PARAMS))
    with pytest.raises(ValueError, match=r"gradtx.sweep\(gradtx.adam\) program 0: the updates at leaf path "
                                         r"\['b'\] have shape \(3,\), not the 2 settings first"):
        group.tx.update(PARAMS, state)


def test_a_factory_that_cannot_trace_a_value_says_which_and_what_to_do():
    def factory(learning_rate):
        return gradtx.sgd(learning_rate, momentum=0.9 if learning_rate > 0.05 else None)

    (group,) = gradtx.sweep(factory, dict(learning_rate=[0.1, 0.01])).groups
    with pytest.raises(TypeError, match=r"factory cannot take learning_rate as traced values .*static=\[\.\.\.\]"):
        group.tx.init(group.replicate(PARAMS))


# --- bad input ----------------------------------------------------------------------------------

REGISTERED_BAD = BY_NAME["sweep"].bad


@pytest.mark.parametrize("bad", REGISTERED_BAD, ids=lambda b: b.message[:40])
def test_bad_grids_fail_naming_the_argument(bad):
    """The registry's bad arguments (also run by tests/test_errors.py): zip lists of
    different lengths, an unknown name, a non-numeric value for a numeric hyperparameter,
    an empty grid, a bad mode; ``gradtx.sweep(<arg>=<value>): <rule>``."""
    with pytest.raises(bad.error) as info:
        gradtx.sweep(**bad.kwargs)
    arg = next(k for k in ("mode", "grid") if k in bad.kwargs and f"({k}=" in str(info.value))
    assert str(info.value) == f"gradtx.sweep({arg}={bad.kwargs[arg]!r}): {bad.message}"


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(grid=[]), ValueError, "gradtx.sweep(grid=[]): grid must give at least one setting"),
    (dict(grid={"learning_rate": 0.1}), TypeError,
     "gradtx.sweep(grid={'learning_rate': 0.1}): grid['learning_rate'] must be a list of values, got float"),
    (dict(grid=3), TypeError,
     "gradtx.sweep(grid=3): grid must be a dict of lists or a list of dicts (settings), got int"),
    (dict(grid={"learning_rate": [0.1]}, fixed={"nesterov": True, "lr": 1}), ValueError,
     ("gradtx.sweep(fixed={'nesterov': True, 'lr': 1}): fixed names lr, which gradtx.sgd does not take "
      "(it takes learning_rate, momentum, nesterov, accumulator_dtype)")),
    (dict(grid={"learning_rate": [0.1]}, static=["momentum"]), ValueError,
     "gradtx.sweep(static=['momentum']): static names momentum, which grid does not vary"),
    (dict(grid={"learning_rate": [0.1]}, fixed={"learning_rate": 0.1}), ValueError,
     "gradtx.sweep(fixed={'learning_rate': 0.1}): fixed gives learning_rate, which grid varies"),
    (dict(grid={"momentum": [0.5, None, "high"]}, fixed={"learning_rate": 0.1}), TypeError,
     ("gradtx.sweep(grid={'momentum': [0.5, None, 'high']}): grid['momentum'] must hold numbers "
      "(gradtx.sgd's momentum is numeric), got str 'high'")),
])
def test_more_bad_input(kwargs, error, message):
    with pytest.raises(error) as info:
        gradtx.sweep(gradtx.sgd, **kwargs)
    assert str(info.value) == message


def test_a_bad_value_fails_with_the_factory_message_and_the_setting():
    with pytest.raises(ValueError, match=r"^gradtx.adam\(b1=1.5\): b1 must be in \[0, 1\)") as info:
        gradtx.sweep(gradtx.adam, dict(learning_rate=[0.1], b1=[0.9, 1.5]))
    assert info.value.__notes__ == ["in gradtx.sweep: setting 1 of 2, {'learning_rate': 0.1, 'b1': 1.5}"]
