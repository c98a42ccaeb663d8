"""The optimizer study (``examples/study``): ``--quick`` end to end, on 256 images for 2
epochs, through the command line's ``run``.

Checked: every file written (figures as PNG, the report as a documentation page whose
figure links resolve, a CSV per sweep, the JSON record); every Markdown table complete
(each row as many cells as its header, none empty; each pivot's row minimum in bold); the
grids' sizes and programs (one per grid, two for the cyclical rate's two modes); every
per-step diagnostic within its range (fractions in [0, 1], distances, norms and ratios
>= 0, cosines in [-1, 1]; non-finite only where the setting's loss diverged). References
with exact answers: the averaged form of momentum against the heavy ball at
``lr * (1 - beta)`` (the same path: DESIGN.md's table; float32, rtol 1e-5, every step);
the convergence ratio of a curve against itself shifted by k steps ((E S - k) / E S,
exactly); the running epoch mean against a direct loop.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from examples.study import __main__ as cli
from examples.study import report
from examples.study.report import SUMMARY, convergence_ratio, running_epoch_mean
from examples.study.study import QUICK

EPOCHS = 2
ARGS = ["--quick", "--limit", "256", "--epochs", str(EPOCHS), "--source", "idx"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    out, page = root / "results", root / "docs" / "study.md"
    study, paths = cli.run(cli.parse_args([*ARGS, "--out", str(out), "--page", str(page)]))
    return study, paths, out, page


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``, each a list of rows of cells (the separator dropped)."""
    found, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            found.append([row for row in current if not all(re.fullmatch(r"-+:?", c) for c in row)])
            current = []
    return found


def test_writes_the_report_figures_tables_and_page(quick):
    study, paths, out, page = quick
    assert paths["page"] == page and "report.md" not in paths and not (out / "report.md").exists()
    for name in report.FIGURES:
        assert (out / name).read_bytes()[:8] == PNG, name
    for name in study.runs:
        rows = list((out / f"{name}.csv").read_text().splitlines())
        assert len(rows) == 1 + len(study.runs[name].settings) * EPOCHS, name
    record = json.loads((out / "study.json").read_text())
    assert set(record["runs"]) == set(study.runs) and record["config"]["epochs"] == EPOCHS
    text = page.read_text()
    assert [int(n) for n in re.findall(r"^## (\d)\. ", text, flags=re.M)] == list(range(1, 10))
    # the page: the same report, its figure links relative to the page and resolving
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(report.FIGURES)
    assert all((page.parent / link).is_file() for link in links), links


def test_every_table_is_complete(quick):
    _, _, _, page = quick
    found = tables(page.read_text())
    assert len(found) >= 20
    for table in found:
        header, *rows = table
        assert rows, header
        for row in rows:
            assert len(row) == len(header), (header, row)
            assert all(cell for cell in row), (header, row)
        if "\\" in header[0]:  # a pivot: each row's minimum in bold
            assert all(sum(c.startswith("**") for c in row[1:]) == 1 for row in rows), table
    summary = next(t for t in found if t[0][0] == "optimizer")
    assert sorted(row[0] for row in summary[1:]) == sorted(label for label, _, _ in SUMMARY)


def test_grids_and_programs(quick):
    study, _, _, _ = quick
    c = QUICK
    sizes = {"sgd": len(c.sgd_lrs), "momentum": len(c.momenta), "heavy_ball": len(c.grid_lrs) * len(c.momenta),
             "averaged": len(c.grid_lrs) * len(c.momenta), "nesterov": len(c.grid_lrs) * (len(c.momenta) - 1),
             "rmsprop": len(c.rmsprop_lrs) * len(c.rmsprop_rhos), "adam_lr": len(c.adam_lrs),
             "adam_betas": len(c.adam_b1s) * len(c.adam_b2s), "adagrad": len(c.adagrad_lrs),
             "adadelta": len(c.adadelta_rhos), "cyclic": 2 * len(c.cyclic_base_factors) * len(c.cyclic_max_factors)}
    assert {name: len(run.settings) for name, run in study.runs.items()} == sizes
    assert {name: len(run.sweep.groups) for name, run in study.runs.items()} == {
        name: 2 if name == "cyclic" else 1 for name in sizes}


RANGES = {"oscillation": (0.0, 1.0), "cosine": (-1.0 - 1e-6, 1.0 + 1e-6), "update_norm": (0.0, math.inf),
          "update_ratio": (0.0, math.inf), "distance": (0.0, math.inf)}


@pytest.mark.parametrize("field", sorted(RANGES))
def test_diagnostics_within_their_ranges(quick, field):
    study, _, _, _ = quick
    lo, hi = RANGES[field]
    steps = study.problem.steps_per_epoch * EPOCHS
    for name, run in study.runs.items():
        values, loss = run.steps[field], run.steps["loss"]
        assert values.shape == (len(run.settings), steps), name
        finite = np.isfinite(values)
        assert np.all((values[finite] >= lo) & (values[finite] <= hi)), (name, field)
        diverged = ~np.isfinite(loss).all(axis=1)
        assert np.all(finite[~diverged]), (name, field, "non-finite where the loss stayed finite")
    for name, run in study.runs.items():  # per epoch
        acc = run.epochs["held_out_accuracy"]
        assert acc.shape == (len(run.settings), EPOCHS) and np.all((acc >= 0) & (acc <= 1)), name
        for key in ("distance", "path_length", "update_size"):
            v = run.epochs[key]
            assert np.all(v[np.isfinite(v)] >= 0), (name, key)


def test_averaged_momentum_is_heavy_ball_at_a_scaled_rate(quick):
    """Reference: averaged(lr, beta) takes heavy-ball(lr * (1 - beta), beta)'s path."""
    study, _, _, _ = quick
    avg, heavy = study.runs["averaged"], study.runs["heavy_ball"]
    pairs = 0
    for i, s in enumerate(avg.settings):
        for j, h in enumerate(heavy.settings):
            if s["beta"] > 0 and h["momentum"] == s["beta"] and \
                    math.isclose(h["learning_rate"], s["learning_rate"] * (1 - s["beta"]), rel_tol=1e-6):
                np.testing.assert_allclose(avg.steps["loss"][i], heavy.steps["loss"][j], rtol=1e-5)
                pairs += 1
    assert pairs >= 3


@pytest.mark.parametrize("shift", [0, 1, 5])
def test_convergence_ratio_of_a_shifted_curve(shift):
    """Nesterov's curve = momentum's k steps ahead: it reaches momentum's epoch-E loss after
    E S - k steps, a ratio of (E S - k) / (E S)."""
    steps, epochs = 10, 4
    momentum = 3.0 / (1.0 + 0.1 * np.arange(epochs * steps + shift))  # strictly decreasing
    nesterov = momentum[shift:] - 1e-9  # just below at the step it catches up: no tie to round
    for e in range(2, epochs + 1):
        expected = (e * steps - shift) / (e * steps)
        assert convergence_ratio(momentum, nesterov, steps, e) == pytest.approx(expected, abs=1e-12)


def test_convergence_ratio_not_reached_or_diverged():
    steps = 5
    falling = np.linspace(2.0, 1.0, 20)
    assert convergence_ratio(falling, np.full(20, 1.5), steps, 4) == math.inf
    assert math.isnan(convergence_ratio(np.full(20, np.nan), falling, steps, 2))


def test_running_epoch_mean_against_a_loop():
    losses = np.random.default_rng(0).random(23)
    expected = [losses[max(0, t + 1 - 5): t + 1].mean() for t in range(23)]
    np.testing.assert_allclose(running_epoch_mean(losses, 5), expected, rtol=1e-12)


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--limit", "-1"], ["--model", "resnet"]])
def test_cli_refuses_bad_arguments(argv):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
