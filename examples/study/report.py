"""The study's outputs: figures (PNG), the Markdown report, CSV tables and a JSON record.

``write_all(out, study, page=None)`` writes under ``out``: ``report.md``, one figure per
section, ``<sweep>.csv`` (every setting's metrics per epoch) and ``study.json`` (the
configuration, times, settings and the facts behind the findings); with
``page``, the report goes to that path instead, its figure links relative to it (the
documentation page: ``--out docs/study --page docs/study.md``).

The findings table sets each claim of the optimizer tutorials next to what this run
measured; its verdicts follow the rules written in its rows, so a rerun states whatever
the new numbers show.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import platform
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import gradtx
from examples.mnist.train import OPTIMIZERS
from examples.study import ewa
from examples.study.study import QUICK, Study
from examples.study.training import Run, finite_or_inf

SHORT = {"learning_rate": "lr", "decay": "rho", "momentum": "momentum", "beta": "beta"}
WITHIN = 0.10  # "close to the best": a best held-out loss within 10% of the best
PAIR_STEPS = 100  # the averaged / heavy-ball pairs are compared step by step over the first steps
WORKS = 0.50  # a momentum that "works" at a rate: a best held-out loss within 50% of the grid's best
CHANCE = math.log(10)  # the loss of a uniform guess over the 10 classes
FIGURES = ("ewa.png", "sgd_lr.png", "momentum.png", "lr_momentum.png", "averaged_vs_heavy_ball.png",
           "nesterov.png", "adaptive.png", "cyclic.png")


# ----------------------------------------------------------------------------- helpers

def num(v: Any) -> str:
    """A hyperparameter value, compactly (0.001, 0.5, 1)."""
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def hyper(run: Run, i: int) -> str:
    values = {**run.fixed, **run.settings[i]}
    return ", ".join(f"{SHORT.get(k, k)} {num(v)}" for k, v in values.items() if k != "nesterov")


def md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def loss_cell(v: float) -> str:
    return f"{v:.4f}" if np.isfinite(v) else "diverged"


def best(run: Run, i: int) -> tuple[float, int, float]:
    """Setting ``i``'s lowest held-out loss, the epoch of it (from 1) and the held-out
    accuracy then."""
    losses = finite_or_inf(run.epochs["held_out_loss"][i])
    e = int(np.argmin(losses))
    return float(losses[e]), e + 1, float(run.epochs["held_out_accuracy"][i, e])


def best_losses(run: Run, metric: str = "held_out_loss") -> np.ndarray:
    return finite_or_inf(run.epochs[metric]).min(axis=1)


def best_setting(run: Run, where: Optional[Callable[[dict], bool]] = None) -> int:
    losses = best_losses(run)
    if where is not None:
        losses = np.where([where(s) for s in run.settings], losses, np.inf)
    return int(np.argmin(losses))


def edge(values: Sequence[float], value: float) -> str:
    """"top" or "bottom" when ``value`` is the largest or smallest of ``values``, else ""."""
    return "top" if value == max(values) else "bottom" if value == min(values) else ""


def tutorial(run: Run, setting: dict) -> str:
    """The best held-out loss of ``setting`` in ``run``, or "not swept"."""
    try:
        return loss_cell(best_losses(run)[run.index(**setting)])
    except KeyError:
        return "not swept"


def stable(run: Run, i: int) -> bool:
    """Training stayed finite and its last epoch's loss is below its first's."""
    loss = run.epochs["train_loss"][i]
    return bool(np.all(np.isfinite(loss)) and loss[-1] < loss[0])


def pivot_md(run: Run, index: str, columns: str, metric: str = "held_out_loss") -> str:
    """``SweepTable.pivot`` of the metric's minimum over the epochs, each row's minimum in
    bold, a diverged setting as "diverged"."""
    table = run.sweep.table({metric: finite_or_inf(run.epochs[metric])})
    text = table.pivot(index, columns, metric, reduce="min").markdown(fmt=".4g")
    text = text.replace("**inf**", "diverged").replace("| inf", "| diverged")
    return text.replace(f"| {index} \\ {columns} |", f"| {SHORT.get(index, index)} \\ {SHORT.get(columns, columns)} |")


def values_of(run: Run, name: str) -> list:
    return list(dict.fromkeys(s[name] for s in run.settings))


def grid_of(run: Run, index: str, columns: str, values: np.ndarray) -> tuple[list, list, np.ndarray]:
    rows, cols = values_of(run, index), values_of(run, columns)
    out = np.full((len(rows), len(cols)), np.inf)
    for i, s in enumerate(run.settings):
        out[rows.index(s[index]), cols.index(s[columns])] = values[i]
    return rows, cols, out


def _fig(*size: float) -> Figure:
    return Figure(figsize=size, dpi=110)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def heatmap(ax: Any, run: Run, index: str, columns: str, title: str, metric: str = "held_out_loss",
            vmin: Optional[float] = None, vmax: Optional[float] = None) -> None:
    """Best ``metric`` over the grid (log color scale, gray: diverged), each row's minimum boxed."""
    rows, cols, values = grid_of(run, index, columns, best_losses(run, metric))
    cmap = matplotlib.colormaps["viridis_r"].with_extremes(bad="0.8")
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (finite.min() if finite.size else 0.1)
    hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
    lo, hi = math.log10(lo), math.log10(max(min(hi, CHANCE), lo * 1.01))  # worse than chance: the darkest
    ax.imshow(np.ma.masked_invalid(np.log10(values)), cmap=cmap, aspect="auto", vmin=lo, vmax=hi)
    for r in range(len(rows)):
        best_c = int(np.argmin(values[r])) if np.isfinite(values[r]).any() else -1
        for c in range(len(cols)):
            v = values[r, c]
            dark = np.isfinite(v) and (math.log10(v) - lo) / (hi - lo) > 0.55
            ax.text(c, r, f"{v:.3g}" if np.isfinite(v) else "div.", ha="center", va="center", fontsize=7.5,
                    color="white" if dark else "black", fontweight="bold" if c == best_c else "normal")
            if c == best_c:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=1.8,
                                                          edgecolor="red"))
    ax.set_xticks(range(len(cols)), [num(c) for c in cols])
    ax.set_yticks(range(len(rows)), [num(r) for r in rows])
    ax.set(xlabel=SHORT.get(columns, columns), ylabel=SHORT.get(index, index), title=title)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def epochs_axis(run: Run) -> np.ndarray:
    return np.arange(1, run.epochs["train_loss"].shape[1] + 1)


def running_epoch_mean(losses: np.ndarray, window: int) -> np.ndarray:
    """The mean of the last ``window`` step losses at each step (fewer at the start)."""
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(losses, np.float64))])
    t = np.arange(1, len(losses) + 1)
    start = np.maximum(t - window, 0)
    return (csum[t] - csum[start]) / (t - start)


# ----------------------------------------------------------------------------- sections

def section_ewa(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    data = study.ewa
    ewa.figure(out / "ewa.png", data)
    b = max(ewa.BETAS)
    gap = np.abs(data["corrected"][b] - data["plain"][b])
    agree = int(np.argmax(gap < 0.1)) + 1
    facts = {"first_day_plain": float(data["plain"][b][0]), "first_day": float(data["series"][0]),
             "first_day_corrected": float(data["corrected"][b][0]), "agree_day": agree, "beta": b}
    text = f"""## 1. The exponentially weighted average

A year of seeded, temperature-like daily values (a seasonal sine plus noise,
`ewa.temperatures(seed={study.config.seed})`) fed one day at a time to
`gradtx.scale_by_ema(beta)`, and to `gradtx.chain(gradtx.scale_by_ema(beta), gradtx.bias_correct(beta))`.

![EWA of a temperature series]({link("ewa.png")})

{ewa.table(data)}

Without correction the average starts at zero and climbs: on day 1 it is
`(1 - beta) x_1` ({facts['first_day_plain']:.2f} at beta {b}, against a temperature of {facts['first_day']:.2f});
divided by `1 - beta^t` it is `x_1` itself ({facts['first_day_corrected']:.2f}). At beta {b} the two curves
come within 0.1 degree of each other from day {agree} on, the correction's weight `1 - beta^t` having
reached 1. A larger beta averages over more days (about `1 / (1 - beta)`): smoother and later.
"""
    return text, facts


def section_sgd(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    run = study.runs["sgd"]
    lrs = [s["learning_rate"] for s in run.settings]
    fig = _fig(11, 4)
    left, right = fig.subplots(1, 2)
    for i, lr in enumerate(lrs):
        left.semilogy(epochs_axis(run), run.epochs["train_loss"][i], marker=".", label=f"lr {num(lr)}")
    left.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="SGD: training loss")
    left.legend(fontsize=7, ncol=2)
    right.loglog(lrs, best_losses(run, "train_loss"), "o-", label="best training loss")
    right.loglog(lrs, best_losses(run), "s-", label="best held-out loss")
    right.set(xlabel="learning rate", ylabel="loss", title="SGD: best loss per rate")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, out / "sgd_lr.png")
    rows = []
    for i, lr in enumerate(lrs):
        loss, epoch, acc = best(run, i)
        rows.append([num(lr), loss_cell(best_losses(run, "train_loss")[i]), loss_cell(loss), epoch, f"{acc:.2%}",
                     f"{run.epochs['held_out_accuracy'][i, -1]:.2%}"])
    i = best_setting(run)
    facts = {"best_lr": lrs[i], "best_loss": best(run, i)[0], "edge": i == len(lrs) - 1 or i == 0}
    edge = (" It is the largest rate swept: the best SGD rate may lie above the range." if i == len(lrs) - 1
            else " It is the smallest rate swept." if i == 0 else "")
    text = f"""## 2. SGD: the learning rate

`gradtx.sgd(learning_rate)` over {len(lrs)} rates from {num(lrs[0])} to {num(lrs[-1])} (log scale), one program.

![SGD learning-rate sweep]({link("sgd_lr.png")})

{md(["lr", "best training loss", "best held-out loss", "epoch of it", "held-out accuracy then",
     "held-out accuracy, last epoch"], rows)}

The best held-out loss is at lr {num(lrs[i])}.{edge}
"""
    return text, facts


def section_momentum(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    run = study.runs["momentum"]
    lr = study.config.momentum_lr
    steps = study.problem.steps_per_epoch
    momenta = [s["momentum"] for s in run.settings]
    fig = _fig(11, 7.5)
    axes = fig.subplots(2, 2).ravel()
    x = epochs_axis(run)
    for i, m in enumerate(momenta):
        color = f"C{i}"
        axes[0].semilogy(x, run.epochs["train_loss"][i], color=color, marker=".", label=f"momentum {num(m)}")
        axes[0].semilogy(x, finite_or_inf(run.epochs["held_out_loss"][i]), color=color, ls="--")
        osc = run.steps["oscillation"][i]
        window = max(1, steps // 4)
        axes[1].plot(np.arange(window, len(osc) + 1) / steps, smooth(osc, window), color=color, lw=1)
        axes[2].semilogy(x, run.epochs["update_size"][i], color=color, marker=".")
        axes[3].semilogy(x, run.epochs["distance"][i], color=color, marker=".")
    axes[0].set(xlabel="epoch", ylabel="loss", title="training (solid) and held-out (dashed) loss")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="epoch", ylabel="share of weights", ylim=(0, None),
                title=f"oscillation: update sign flips (moving mean over {max(1, steps // 4)} steps)")
    axes[2].set(xlabel="epoch", ylabel="||u|| / sqrt(n)", title="mean update size (epoch mean)")
    axes[3].set(xlabel="epoch", ylabel="||p_end - p_start||", title="distance travelled in the epoch")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"SGD with heavy-ball momentum, lr {num(lr)}")
    _save(fig, out / "momentum.png")
    e = run.epochs
    rows = []
    for i, m in enumerate(momenta):
        loss, epoch, _acc = best(run, i)
        rows.append([num(m), loss_cell(best_losses(run, "train_loss")[i]), f"{loss_cell(loss)} ({epoch})",
                     f"{np.nanmean(e['oscillation'][i]):.3f}", f"{e['oscillation'][i, -1]:.3f}",
                     f"{np.nanmean(e['update_size'][i]):.2e}", f"{e['distance'][i, 0]:.3g}",
                     f"{e['distance'][i, -1]:.3g}", f"{np.nanmean(e['path_length'][i]):.3g}"])
    osc = [float(np.nanmean(e["oscillation"][i])) for i in range(len(momenta))]
    dist = [float(np.nanmean(e["distance"][i])) for i in range(len(momenta))]
    facts = {"momenta": momenta, "oscillation": osc, "distance": dist,
             "update_size": [float(np.nanmean(e["update_size"][i])) for i in range(len(momenta))],
             "best_loss": [best(run, i)[0] for i in range(len(momenta))]}
    text = f"""## 3. Momentum at a fixed rate

`gradtx.sgd({num(lr)}, momentum=m)` for m in {{{", ".join(num(m) for m in momenta)}}}, one program, with
`gradtx.training_diagnostics(reset_every={steps})` chained after it and returned by the `lax.scan` at every
step: the oscillation (the share of weights whose update changed sign since the previous step), the mean
update size (`||u|| / sqrt(n)`, a weight's RMS step, n = {study.problem.n_params:,} weights), and the
distance the weights travelled in each epoch (`||p_end - p_start||`; the path length is the sum of the
step norms).

![momentum: losses and diagnostics]({link("momentum.png")})

The oscillation counts reversals from one step to the next. The heavy ball's velocity turns slowly when the
momentum is high, so its updates rarely flip sign even when the weights swing back and forth over many steps:
read the flip fraction next to the loss and the distance travelled.

{md(["momentum", "best training loss", "best held-out loss (epoch)", "oscillation, mean",
     "oscillation, last epoch", "mean update size", "distance, epoch 1", "distance, last epoch",
     "path length per epoch"], rows)}
"""
    return text, facts


def section_grid(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    run = study.runs["heavy_ball"]
    fig = _fig(11, 4.3)
    left, right = fig.subplots(1, 2)
    heatmap(left, run, "learning_rate", "momentum", "best training loss", "train_loss")
    heatmap(right, run, "learning_rate", "momentum", "best held-out loss")
    _save(fig, out / "lr_momentum.png")
    lrs, momenta = values_of(run, "learning_rate"), values_of(run, "momentum")
    held = best_losses(run)
    target = float(held.min()) * (1 + WORKS)
    rows, ranges = [], {}
    for lr in lrs:
        idx = [run.index(learning_rate=lr, momentum=m) for m in momenta]
        ok = [momenta[k] for k, i in enumerate(idx) if stable(run, i)]
        good = [momenta[k] for k, i in enumerate(idx) if held[i] <= target]
        bad = [momenta[k] for k, i in enumerate(idx) if not np.all(np.isfinite(run.epochs["train_loss"][i]))]
        ranges[lr] = {"stable": ok, "works": good, "diverged": bad}
        rows.append([num(lr), ", ".join(map(num, ok)) or "none", ", ".join(map(num, good)) or "none",
                     ", ".join(map(num, bad)) or "none",
                     num(momenta[int(np.argmin([held[i] for i in idx]))])])
    facts = {"ranges": ranges, "lrs": lrs}
    text = f"""## 4. The learning rate x momentum grid

`gradtx.sgd(lr, momentum=m)` over {len(lrs)} rates x {len(momenta)} momenta, {len(run.settings)} settings in
one program. Best training loss (the epoch mean of the minibatch losses) and best held-out loss over the
{study.config.epochs} epochs; each row's minimum in bold (`SweepTable.pivot(...).markdown()`).

![learning rate x momentum heatmaps]({link("lr_momentum.png")})

Best training loss:

{pivot_md(run, "learning_rate", "momentum", "train_loss")}

Best held-out loss:

{pivot_md(run, "learning_rate", "momentum")}

Which momenta work at each rate: *stable* = the training loss stays finite and its last epoch is below its
first; *works* = a best held-out loss within {WORKS:.0%} of the grid's best ({held.min():.4f}, so at most
{target:.4f}). The heavy ball's step is about `lr / (1 - mu)` once the velocity has built up, so a larger rate
leaves room for less momentum; a smaller one, within a fixed budget of epochs, needs more.

{md(["lr", "stable momenta", "momenta that work", "diverged", "best momentum"], rows)}
"""
    return text, facts


def section_averaged(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    heavy, avg = study.runs["heavy_ball"], study.runs["averaged"]
    both = np.concatenate([best_losses(heavy), best_losses(avg)])
    finite = both[np.isfinite(both)]
    fig = _fig(11, 4.3)
    left, right = fig.subplots(1, 2)
    heatmap(left, heavy, "learning_rate", "momentum", "heavy-ball: best held-out loss", vmin=finite.min(),
            vmax=finite.max())
    heatmap(right, avg, "learning_rate", "beta", "averaged: best held-out loss", vmin=finite.min(),
            vmax=finite.max())
    _save(fig, out / "averaged_vs_heavy_ball.png")
    # averaged(lr, beta) takes the path of heavy-ball(lr * (1 - beta), beta): the pairs in the grid
    pairs = []
    for i, s in enumerate(avg.settings):
        lr, beta = s["learning_rate"], s["beta"]
        for j, h in enumerate(heavy.settings):
            if beta > 0 and math.isclose(h["learning_rate"], lr * (1 - beta), rel_tol=1e-6) and h["momentum"] == beta:
                a, b = avg.steps["loss"][i], heavy.steps["loss"][j]
                rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
                pairs.append([f"lr {num(lr)}, beta {num(beta)}", f"lr {num(h['learning_rate'])}, momentum {num(beta)}",
                              f"{np.max(rel[:PAIR_STEPS]):.1e}", f"{np.max(rel):.1e}",
                              loss_cell(best_losses(avg)[i]), loss_cell(best_losses(heavy)[j])])
    cmp_rows, wins = [], 0
    for i, s in enumerate(avg.settings):
        if s["beta"] == 0:
            continue
        j = heavy.index(learning_rate=s["learning_rate"], momentum=s["beta"])
        a, h = best_losses(avg)[i], best_losses(heavy)[j]
        wins += int(a < h)
        cmp_rows.append([num(s["learning_rate"]), num(s["beta"]), loss_cell(h), loss_cell(a)])
    i_a, i_h = best_setting(avg), best_setting(heavy)
    facts = {"pairs": pairs, "averaged_better": wins, "compared": len(cmp_rows),
             "max_pair_diff": max((float(p[2]) for p in pairs), default=float("nan")),
             "max_pair_diff_all": max((float(p[3]) for p in pairs), default=float("nan")),
             "best_avg": best(avg, i_a)[0], "best_heavy": best(heavy, i_h)[0]}
    text = f"""## 5. Averaged against heavy-ball momentum

The averaged form `v = beta v + (1 - beta) g ; p -= lr v` is `gradtx.averaged_momentum(lr, beta)`
(`scale_by_ema(beta)` without bias correction, then the rate); the heavy-ball form `v = mu v + g ; p -= lr v`
is `gradtx.sgd(lr, momentum=mu)`. Both over the same grid (beta = mu), one program each.

![averaged against heavy-ball]({link("averaged_vs_heavy_ball.png")})

Best held-out loss of the averaged form:

{pivot_md(avg, "learning_rate", "beta")}

At the same (lr, beta) the averaged form is better in {wins} of {len(cmp_rows)} settings; its best over the
grid is {loss_cell(facts['best_avg'])} ({hyper(avg, i_a)}), the heavy ball's {loss_cell(facts['best_heavy'])}
({hyper(heavy, i_h)}). The averaged step is the heavy-ball step scaled by `1 - beta`, so the two take the same
path when the averaged form's rate is `1 / (1 - beta)` times larger. The grid holds such pairs. Their minibatch
losses agree to float32 rounding at first (largest relative difference over the first {PAIR_STEPS} steps); the
two compute the step in a different order (`lr (1 - beta) v` against `lr v'`), and training amplifies
those rounding differences over the run, as it would any perturbation of the weights:

{md(["averaged", "heavy-ball", f"max relative difference, first {PAIR_STEPS} steps", "over the whole run",
     "best held-out loss, averaged", "heavy-ball"], pairs) if pairs else "(no such pair in this grid)"}

Best held-out loss at each setting, side by side:

{md(["lr", "beta = momentum", "heavy-ball", "averaged"], cmp_rows)}
"""
    return text, facts


def convergence_ratio(momentum_losses: np.ndarray, nesterov_losses: np.ndarray, steps: int,
                      epoch: int) -> float:
    """Epochs Nesterov needs for its training loss (the mean over the last epoch's steps) to
    reach momentum's after ``epoch`` epochs, divided by ``epoch`` (inf: not within the run)."""
    target = float(np.mean(momentum_losses[(epoch - 1) * steps: epoch * steps]))
    if not np.isfinite(target):
        return float("nan")
    running = running_epoch_mean(nesterov_losses, steps)
    reached = np.flatnonzero(running <= target)
    return float((reached[0] + 1) / steps / epoch) if reached.size else float("inf")


def section_nesterov(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    heavy, nest = study.runs["heavy_ball"], study.runs["nesterov"]
    steps, epochs = study.problem.steps_per_epoch, study.config.epochs
    checkpoints = sorted({e for e in (1, 2, 5, 10, 20, 50, epochs) if e <= epochs})
    rows, finals = [], []
    for i, s in enumerate(nest.settings):
        j = heavy.index(learning_rate=s["learning_rate"], momentum=s["momentum"])
        ratios = [convergence_ratio(heavy.steps["loss"][j], nest.steps["loss"][i], steps, e) for e in checkpoints]
        finals.append(ratios[-1])
        cells = ["momentum diverged" if np.isnan(r) else f"> {epochs / e:.2g}" if np.isinf(r) else f"{r:.2f}"
                 for r, e in zip(ratios, checkpoints)]
        rows.append([num(s["learning_rate"]), num(s["momentum"]), *cells])
    lr = study.config.momentum_lr
    fig = _fig(11, 4)
    left, right = fig.subplots(1, 2)
    for k, m in enumerate(values_of(nest, "momentum")):
        i, j = nest.index(learning_rate=lr, momentum=m), heavy.index(learning_rate=lr, momentum=m)
        left.semilogy(epochs_axis(nest), heavy.epochs["train_loss"][j], color=f"C{k}", ls="--")
        left.semilogy(epochs_axis(nest), nest.epochs["train_loss"][i], color=f"C{k}", marker=".",
                      label=f"momentum {num(m)}")
    left.set(xlabel="epoch", ylabel="training loss", title=f"lr {num(lr)}: Nesterov (solid), heavy-ball (dashed)")
    left.legend(fontsize=7)
    heatmap(right, nest, "learning_rate", "momentum", "Nesterov: best held-out loss")
    for ax in (left,):
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, out / "nesterov.png")
    finite = np.asarray([r for r in finals if np.isfinite(r)])
    facts = {"final_ratios": finals, "median": float(np.median(finite)) if finite.size else float("nan"),
             "faster": int(np.sum(finite < 1)), "slower": int(np.sum(finite > 1)) + int(np.sum(np.isinf(finals))),
             "compared": int(np.sum(~np.isnan(finals)))}
    text = f"""## 6. Nesterov against momentum: the convergence ratio

`gradtx.sgd(lr, momentum=mu, nesterov=True)` over the grid of section 4 (mu > 0), one program. The
*convergence ratio* at E epochs: the epochs Nesterov needs for its training loss (the mean over the last
epoch's worth of steps, measured at every step) to reach the loss heavy-ball momentum has after E epochs,
divided by E. Below 1: Nesterov is faster. "> x": not reached within the {epochs} epochs. Ratios near 0
mark settings where the heavy ball hardly trains (a large `lr / (1 - mu)`) and Nesterov's look-ahead does.

![Nesterov against momentum]({link("nesterov.png")})

{md(["lr", "momentum", *[f"E = {e}" for e in checkpoints]], rows)}

Best held-out loss of Nesterov:

{pivot_md(nest, "learning_rate", "momentum")}
"""
    return text, facts


def section_adaptive(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    runs = study.runs
    rms, adam, betas, adagrad, adadelta, sgd = (runs[k] for k in ("rmsprop", "adam_lr", "adam_betas", "adagrad",
                                                                  "adadelta", "sgd"))
    fig = _fig(15, 4.5)
    a, b, c = fig.subplots(1, 3)
    heatmap(a, rms, "learning_rate", "decay", "RMSprop: best held-out loss")

    def curve(run: Run, label: str, marker: str) -> None:
        lrs = values_of(run, "learning_rate")
        losses = [min(best_losses(run)[i] for i, s in enumerate(run.settings) if s["learning_rate"] == lr)
                  for lr in lrs]
        b.loglog(lrs, np.where(np.isfinite(losses), losses, np.nan), marker + "-", label=label)

    curve(sgd, "SGD", "o")
    curve(study.runs["heavy_ball"], "momentum (best mu)", "^")
    curve(rms, "RMSprop (best rho)", "s")
    curve(adam, "Adam", "D")
    curve(adagrad, "Adagrad", "v")
    b.set(xlabel="learning rate", ylabel="best held-out loss", title="the rate sweeps side by side",
          ylim=(None, 1.3 * CHANCE))
    b.axhline(CHANCE, color="0.5", lw=0.8, ls=":")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=8)
    heatmap(c, betas, "b1", "b2", f"Adam lr {num(study.config.adam_betas_lr)}: best held-out loss")
    _save(fig, out / "adaptive.png")

    def sweep_table(run: Run, name: str) -> str:
        rows = []
        for i, s in enumerate(run.settings):
            loss, epoch, acc = best(run, i)
            rows.append([num(s[name]), loss_cell(best_losses(run, "train_loss")[i]), loss_cell(loss), epoch,
                         f"{acc:.2%}", f"{np.nanmean(run.epochs['update_size'][i, :1]):.2e}",
                         f"{run.epochs['update_size'][i, -1]:.2e}"])
        return md([SHORT.get(name, name), "best training loss", "best held-out loss", "epoch of it",
                   "held-out accuracy then", "update size, epoch 1", "update size, last epoch"], rows)

    i_r, i_s = best_setting(rms), best_setting(sgd)
    i_a, i_b = best_setting(adam), best_setting(betas)
    i_g, i_d = best_setting(adagrad), best_setting(adadelta)
    default = betas.index(b1=0.9, b2=0.999) if any(s == {"b1": 0.9, "b2": 0.999} for s in betas.settings) else None
    rms_lrs = values_of(rms, "learning_rate")
    facts = {
        "rms_lr": rms.settings[i_r]["learning_rate"], "rms_rho": rms.settings[i_r]["decay"],
        "rms_edge": edge(rms_lrs, rms.settings[i_r]["learning_rate"]),
        "sgd_lr": sgd.settings[i_s]["learning_rate"],
        "sgd_edge": edge(values_of(sgd, "learning_rate"), sgd.settings[i_s]["learning_rate"]),
        "tutorial_sgd": tutorial(sgd, {"learning_rate": OPTIMIZERS["sgd"].learning_rate}),
        "tutorial_rms": tutorial(rms, {"learning_rate": OPTIMIZERS["rmsprop"].learning_rate, "decay": 0.9}),
        "adam_lr": adam.settings[i_a]["learning_rate"], "adam_best": best(adam, i_a)[0],
        "betas": betas.settings[i_b], "betas_best": best(betas, i_b)[0],
        "betas_default": None if default is None else best(betas, default)[0],
        "adagrad_lr": adagrad.settings[i_g]["learning_rate"],
        "adagrad_decay": float(adagrad.epochs["update_size"][i_g, -1] / adagrad.epochs["update_size"][i_g, 0]),
        "adadelta_rho": adadelta.settings[i_d]["rho"],
        "adadelta_best": best(adadelta, i_d)[0],
    }
    text = f"""## 7. RMSprop, Adam, Adagrad, Adadelta

Each grid one program: `gradtx.rmsprop(lr, decay=rho)` over {len(rms_lrs)} rates x
{len(values_of(rms, "decay"))} values of rho; `gradtx.adam(lr)` over {len(adam.settings)} rates from
{num(values_of(adam, "learning_rate")[0])} to {num(values_of(adam, "learning_rate")[-1])}, and
`gradtx.adam({num(study.config.adam_betas_lr)}, b1, b2)` over b1 x b2; `gradtx.adagrad(lr)`;
`gradtx.adadelta({num(study.config.adadelta_lr)}, rho)`.

![RMSprop, the rate sweeps, Adam's betas]({link("adaptive.png")})

**RMSprop**, best held-out loss (rows: lr, columns: rho):

{pivot_md(rms, "learning_rate", "decay")}

Best training loss:

{pivot_md(rms, "learning_rate", "decay", "train_loss")}

**Adam**, the learning rate (b1 0.9, b2 0.999):

{sweep_table(adam, "learning_rate")}

**Adam**, b1 x b2 at lr {num(study.config.adam_betas_lr)}, best held-out loss:

{pivot_md(betas, "b1", "b2")}

**Adagrad**, the learning rate (its steps shrink as the squared gradients accumulate: compare the update
sizes of the first and last epochs):

{sweep_table(adagrad, "learning_rate")}

**Adadelta** (lr {num(study.config.adadelta_lr)}), rho:

{sweep_table(adadelta, "rho")}
"""
    return text, facts


def section_cyclic(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    run, sgd = study.runs["cyclic"], study.runs["sgd"]
    steps, epochs = study.problem.steps_per_epoch, study.config.epochs
    k = sgd.index(learning_rate=study.best_constant_lr)
    const_loss, const_epoch, const_acc = best(sgd, k)
    const_final_acc = float(sgd.epochs["held_out_accuracy"][k, -1])

    def epochs_to(accuracy_curve: np.ndarray, target: float) -> str:
        hit = np.flatnonzero(accuracy_curve >= target)
        return str(int(hit[0]) + 1) if hit.size else f"> {epochs}"

    rows = []
    for i, s in enumerate(run.settings):
        loss, epoch, acc = best(run, i)
        rows.append([s["mode"], num(s["base_lr"]), num(s["max_lr"]), loss_cell(loss), epoch, f"{acc:.2%}",
                     f"{run.epochs['held_out_accuracy'][i, -1]:.2%}",
                     epochs_to(run.epochs["held_out_accuracy"][i], const_final_acc)])
    rows.append(["constant", num(study.best_constant_lr), num(study.best_constant_lr), loss_cell(const_loss),
                 const_epoch, f"{const_acc:.2%}", f"{const_final_acc:.2%}",
                 epochs_to(sgd.epochs["held_out_accuracy"][k], const_final_acc)])
    fig = _fig(11, 4)
    left, right = fig.subplots(1, 2)
    t = np.arange(epochs * steps)
    picks = {mode: best_setting(run, lambda s, mode=mode: s["mode"] == mode) for mode in ("triangular", "triangular2")}
    for n, (mode, i) in enumerate(picks.items()):
        s = run.settings[i]
        lr = np.asarray(gradtx.cyclic_schedule(s["base_lr"], s["max_lr"], study.cyclic_step_size, mode=mode)(t))
        left.plot(t / steps, lr, color=f"C{n}", label=f"{mode} ({num(s['base_lr'])} .. {num(s['max_lr'])})")
        right.semilogy(epochs_axis(run), finite_or_inf(run.epochs["held_out_loss"][i]), color=f"C{n}", marker=".",
                       label=mode)
    left.axhline(study.best_constant_lr, color="k", ls="--", label=f"constant {num(study.best_constant_lr)}")
    right.semilogy(epochs_axis(sgd), sgd.epochs["held_out_loss"][k], "k--", label="best constant")
    left.set(xlabel="epoch", ylabel="learning rate", title="the best cyclical rates")
    right.set(xlabel="epoch", ylabel="held-out loss", title="held-out loss")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, out / "cyclic.png")
    i = best_setting(run)
    facts = {"best": best(run, i), "best_setting": run.settings[i], "constant": (const_loss, const_epoch, const_acc),
             "by_mode": {mode: best(run, i) for mode, i in picks.items()}}
    text = f"""## 8. The cyclical learning rate

`gradtx.sgd(gradtx.cyclic_schedule(base_lr, max_lr, step_size={study.cyclic_step_size}, mode=mode))`: a
triangle wave of half-period {study.cyclic_step_size} steps ({study.cyclic_step_size / steps:.2g} epochs;
{study.config.cyclic_cycles} cycles in the run), `triangular` at full height throughout, `triangular2` halving it
every cycle; base_lr and max_lr multiples of the best constant SGD rate of section 2
({num(study.best_constant_lr)}). The two modes are two programs (a string is structural), the rates vary inside
each. Last column: the first epoch whose held-out accuracy reaches the best constant rate's final accuracy
({const_final_acc:.2%}).

![cyclical learning rate]({link("cyclic.png")})

{md(["mode", "base_lr", "max_lr", "best held-out loss", "epoch of it", "held-out accuracy then",
     "held-out accuracy, last epoch", "epochs to the constant's final accuracy"], rows)}
"""
    return text, facts


SUMMARY = (  # (label, sweeps, which settings)
    ("SGD", ("sgd",), None),
    ("momentum (heavy ball)", ("heavy_ball", "momentum"), lambda s: s.get("momentum", 0) > 0),
    ("momentum (averaged)", ("averaged",), lambda s: s.get("beta", 0) > 0),
    ("Nesterov", ("nesterov",), None),
    ("RMSprop", ("rmsprop",), None),
    ("Adam", ("adam_lr", "adam_betas"), None),
    ("Adagrad", ("adagrad",), None),
    ("Adadelta", ("adadelta",), None),
    ("cyclical (triangular)", ("cyclic",), lambda s: s["mode"] == "triangular"),
    ("cyclical (triangular2)", ("cyclic",), lambda s: s["mode"] == "triangular2"),
)


def section_summary(study: Study) -> tuple[str, dict]:
    rows, facts = [], {}
    for label, names, where in SUMMARY:
        candidates = []
        for name in names:
            run = study.runs[name]
            i = best_setting(run, where)
            candidates.append((best(run, i), run, i))
        (loss, epoch, acc), run, i = min(candidates, key=lambda c: c[0][0])
        facts[label] = {"loss": loss, "epoch": epoch, "accuracy": acc, "hyperparameters": hyper(run, i)}
        rows.append([label, loss_cell(loss), f"{acc:.2%}", hyper(run, i), epoch])
    order = sorted(range(len(rows)), key=lambda k: rows[k][1] if rows[k][1] != "diverged" else "z")
    rows = [rows[k] for k in order]
    seq = study.sequential
    n = seq["settings"]
    setting_steps = n * study.problem.steps_per_epoch
    settings_total = sum(len(r.settings) for r in study.runs.values())
    programs = sum(len(r.sweep.groups) for r in study.runs.values())
    compile_total = sum(r.compile_seconds for r in study.runs.values())
    speedup = seq["sequential_epoch_s"] / seq["sweep_epoch_s"]
    facts["speedup"] = speedup
    verdict = "On a CPU the gain is modest at best" if speedup >= 1 else "Here the sweep lost"
    text = f"""## 9. Summary

Each optimizer's best held-out loss over its sweeps and epochs, the held-out accuracy at that epoch, its
hyperparameters and the epoch of the minimum, best first:

{md(["optimizer", "best held-out loss", "held-out accuracy then", "hyperparameters", "epoch of the minimum"],
    rows)}

The whole study took **{study.seconds / 60:.1f} minutes** ({study.seconds:.0f} s: {settings_total} settings in
{len(study.runs)} sweeps and {programs} compiled programs, {compile_total:.0f} s of it compiling; data loading
and the EWA included, the report not).

Sweep against one after another, on the {n} settings of the learning rate x momentum grid (diagnostics and
held-out evaluation included), one epoch of {study.problem.steps_per_epoch} steps each, the faster of
{seq['rounds']} interleaved round{'s' * (seq['rounds'] > 1)} (the machine's load average then: {seq['load']:.1f}
on {os.cpu_count()} CPUs):

{md(["how", "seconds per epoch of all settings", "setting-steps per second", "compile (s)"],
    [["sweep: one program, the model vmapped", f"{seq['sweep_epoch_s']:.2f}",
      f"{setting_steps / seq['sweep_epoch_s']:.0f}", f"{seq['sweep_compile_s']:.1f}"],
     ["one compiled single-setting epoch, reused", f"{seq['sequential_epoch_s']:.2f}",
      f"{setting_steps / seq['sequential_epoch_s']:.0f}", f"{seq['sequential_compile_s']:.1f}"]])}

The sweep is **{speedup:.2f}x** the speed of the same settings one after another here
(`python -m benchmarks.sweeps` measures 1 to 128 settings without the diagnostics).
{verdict}: one setting's weights, gradients and state (about 1.2 MiB; 3.2 MiB with the diagnostics' copies of
the weights) stay in cache from step to step, while {n} settings' stream through memory. The sweep's larger
operations are also spread over the cores, and on this machine shared with other work (a load average above
its core count) we have seen them slowed more than the one-setting programs: the ratio moves with the load.
"""
    return text, facts


# ----------------------------------------------------------------------------- findings

def findings(study: Study, f: dict) -> str:
    rows = []
    epochs = study.config.epochs

    e = f["ewa"]
    rows.append(["Bias correction fixes the EWA's start, and matters only there.",
                 (f"Day 1 at beta {e['beta']}: plain {e['first_day_plain']:.2f}, "
                  f"corrected {e['first_day_corrected']:.2f} (value {e['first_day']:.2f}); "
                  f"the two within 0.1 degree from day {e['agree_day']} on."),
                 "holds"])

    g = f["grid"]["ranges"]
    lrs = f["grid"]["lrs"]
    n_stable = [len(g[lr]["stable"]) for lr in lrs]
    top = [max(g[lr]["works"]) if g[lr]["works"] else -1 for lr in lrs]
    shrinks = all(a >= b for a, b in itertools.pairwise(n_stable)) and n_stable[-1] < n_stable[0]
    top_falls = all(a >= b for a, b in itertools.pairwise(top)) and top[-1] < top[0]
    verdict = ("holds" if shrinks and top_falls else
               "partly" if shrinks or top_falls else "does not hold here")
    works = "; ".join(f"lr {num(lr)}: {', '.join(map(num, g[lr]['works'])) or 'none'}" for lr in lrs)
    moves = any(min(g[lr]["works"], default=0) > 0 for lr in lrs[:2])
    rows.append(["The range of momentum that works shrinks as the learning rate grows.",
                 "Momenta that train stably: "
                 + ", ".join(f"{k} of {len(f['momentum']['momenta'])} at lr {num(lr)}" for lr, k in zip(lrs, n_stable))
                 + f". Momenta within {WORKS:.0%} of the grid's best held-out loss: {works}; the largest of them "
                 + ("falls as the rate grows" if top_falls else "does not fall steadily as the rate grows")
                 + ("; at small rates low momenta are too slow for the budget, so the range moves down as it "
                    "shrinks." if moves else "."),
                 verdict])

    m = f["momentum"]
    osc = m["oscillation"]
    falls = all(a >= b for a, b in itertools.pairwise(osc))
    lower = [o < osc[0] for o in osc[1:]]
    verdict = ("holds" if falls and osc[-1] < osc[0] else "partly" if any(lower) else "does not hold here")
    # the momentum with the fewest flips, when it is far from the best loss: slow, wide swings
    k = int(np.argmin(osc))
    swings = ""
    if m["best_loss"][k] > 1.5 * min(m["best_loss"]):
        swings = (f" At {num(m['momenta'][k])} the flips are rarest, yet its best held-out loss "
                  f"({m['best_loss'][k]:.3f}) is {m['best_loss'][k] / min(m['best_loss']):.1f}x the best momentum's "
                  f"and its weights travel {m['distance'][k]:.3g} per epoch: slow, wide swings that a count of "
                  "step-to-step reversals does not see.")
    rows.append(["Momentum reduces oscillation.",
                 f"Mean share of update sign flips per step at lr {num(study.config.momentum_lr)}: "
                 + ", ".join(f"{num(mu)}: {o:.3f}" for mu, o in zip(m["momenta"], osc)) + "." + swings,
                 verdict + (" (step to step)" if swings and verdict == "holds" else "")])
    dist = m["distance"]
    rows.append(["Momentum moves the weights farther, faster.",
                 "Mean distance travelled per epoch: " + ", ".join(f"{num(mu)}: {d:.3g}"
                                                                  for mu, d in zip(m["momenta"], dist)) + ".",
                 "holds" if all(a <= b for a, b in itertools.pairwise(dist)) else
                 "partly" if dist[-1] > dist[0] else "does not hold here"])

    a = f["adaptive"]
    ratio = a["sgd_lr"] / a["rms_lr"]
    # a best rate at the edge of its range bounds the ratio: SGD's at the top or RMSprop's at the bottom make
    # the true ratio at least this; SGD's at the bottom or RMSprop's at the top, at most this
    at_least = a["sgd_edge"] == "top" or a["rms_edge"] == "bottom"
    at_most = a["sgd_edge"] == "bottom" or a["rms_edge"] == "top"
    edges = [f"{name}'s best rate is the {edge} of its range" for name, edge in
             (("SGD", a["sgd_edge"]), ("RMSprop", a["rms_edge"])) if edge]
    if at_least and at_most:
        verdict, bound = "undetermined (both best rates at an edge of their ranges)", ""
    elif at_least:
        verdict, bound = ("does not hold here: the gap is larger" if ratio > 30 else "undetermined"), "at least "
    elif at_most:
        verdict, bound = ("does not hold here: the gap is smaller" if ratio < 3 else "undetermined"), "at most "
    else:
        verdict, bound = ("holds" if 3 <= ratio <= 30 else "does not hold here"), ""
    rows.append(["RMSprop needs a ~10x smaller learning rate than SGD.",
                 f"Best rate by held-out loss: SGD {num(a['sgd_lr'])}, RMSprop {num(a['rms_lr'])} (rho "
                 f"{num(a['rms_rho'])}): {bound}{ratio:.3g}x smaller" + (f" ({'; '.join(edges)})" if edges else "")
                 + f". At the tutorials' rates (SGD {num(OPTIMIZERS['sgd'].learning_rate)}, RMSprop "
                 f"{num(OPTIMIZERS['rmsprop'].learning_rate)} with rho 0.9) the best held-out losses are "
                 f"{a['tutorial_sgd']} and {a['tutorial_rms']}.", verdict])

    n = f["nesterov"]
    verdict = ("holds" if n["faster"] > n["slower"] and n["median"] < 1 else
               "does not hold here" if n["faster"] < n["slower"] else "mixed")
    rows.append(["Nesterov converges faster than momentum (convergence ratio < 1).",
                 (f"Ratio at E = {epochs}: median {n['median']:.2f}; Nesterov faster at {n['faster']}, slower at "
                 f"{n['slower']} of {n['compared']} settings."), verdict])

    av = f["averaged"]
    rows.append(["The averaged form is heavy-ball momentum with the rate scaled by 1 - beta.",
                 (f"{len(av['pairs'])} (lr, beta) pairs of the grid matched: their step losses differ by at most "
                 f"{av['max_pair_diff']:.1e} (relative) over the first {PAIR_STEPS} steps, by up to "
                 f"{av['max_pair_diff_all']:.1e} over the run (rounding, amplified by training). At equal (lr, beta) "
                 f"the averaged form was better in {av['averaged_better']} of {av['compared']} settings."),
                 "holds" if av["pairs"] and av["max_pair_diff"] < 1e-4 else "not checked (no pair)"
                 if not av["pairs"] else "does not hold"])

    if a["betas_default"] is not None:
        close = a["betas_default"] <= a["betas_best"] * (1 + WITHIN)
        rows.append(["Adam's defaults (b1 0.9, b2 0.999) are a good choice.",
                     (f"b1 0.9, b2 0.999: {a['betas_default']:.4f}; best b1 {num(a['betas']['b1'])}, b2 "
                     f"{num(a['betas']['b2'])}: {a['betas_best']:.4f} (lr {num(study.config.adam_betas_lr)})."),
                     "holds" if close else "does not hold here"])
    rows.append(["Adam's usual rate 1e-3 is near the best.",
                 f"Best Adam rate {num(a['adam_lr'])} (held-out {a['adam_best']:.4f}) of 1e-4 .. 1.",
                 "holds" if 3e-4 <= a["adam_lr"] <= 3e-3 else "does not hold here"])
    rows.append(["Adagrad's steps shrink as its accumulator grows.",
                 (f"At its best rate ({num(a['adagrad_lr'])}), the mean update size of the last epoch is "
                 f"{a['adagrad_decay']:.2f}x that of the first."),
                 "holds" if a["adagrad_decay"] < 1 else "does not hold here"])

    c = f["cyclic"]
    cl, ce, ca = c["constant"]
    bl, be, ba = c["best"]
    rows.append(["A cyclical rate beats the best constant rate.",
                 (f"Best cyclical: held-out loss {bl:.4f} at epoch {be} ({ba:.2%}; {c['best_setting']['mode']}); "
                 f"best constant rate {num(study.best_constant_lr)}: {cl:.4f} at epoch {ce} ({ca:.2%})."),
                 "holds" if bl < cl else "does not hold here"])
    return md(["claim (tutorials)", "measured here", "verdict"], rows)


# ----------------------------------------------------------------------------- outputs

def write_csvs(out: Path, study: Study) -> list[Path]:
    paths = []
    for name, run in study.runs.items():
        path = out / f"{name}.csv"
        metrics = list(run.epochs)
        names = list(run.fixed) + list(run.sweep.names)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow([*names, "epoch", *metrics])
            for i, s in enumerate(run.settings):
                values = {**run.fixed, **s}
                for e in range(run.epochs["train_loss"].shape[1]):
                    writer.writerow([values[n] for n in names] + [e + 1]
                                    + [f"{float(run.epochs[m][i, e]):.6g}" for m in metrics])
        paths.append(path)
    return paths


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


def write_json(path: Path, study: Study, facts: dict) -> None:
    record = {
        "config": dataclasses.asdict(study.config), "source": study.source, "model": study.problem.model,
        "steps_per_epoch": study.problem.steps_per_epoch, "n_params": study.problem.n_params,
        "seconds": study.seconds, "sequential": study.sequential,
        "runs": {name: {"fixed": run.fixed, "settings": list(run.settings), "programs": len(run.sweep.groups),
                        "compile_s": run.compile_seconds, "seconds": run.seconds, "per_epoch": f"{name}.csv"}
                 for name, run in study.runs.items()},
        "facts": facts,
    }
    path.write_text(json.dumps(_plain(record), indent=1))


def report(study: Study, out: Path, link: Callable[[str], str]) -> tuple[str, dict]:
    """The report's Markdown (figures written under ``out``) and the facts behind its findings."""
    sections, facts = [], {}
    for key, fn in (("ewa", section_ewa), ("sgd", section_sgd), ("momentum", section_momentum),
                    ("grid", section_grid), ("averaged", section_averaged), ("nesterov", section_nesterov),
                    ("adaptive", section_adaptive), ("cyclic", section_cyclic)):
        text, facts[key] = fn(study, out, link)
        sections.append(text)
    summary, facts["summary"] = section_summary(study)
    p, c = study.problem, study.config
    head = f"""# The optimizer study

The experiments of the optimizer tutorials, redone on MNIST with gradtx: every grid below is one
`gradtx.sweep`, trained as one compiled program (the model vmapped over the settings, a `lax.scan` over each
epoch's steps), with `gradtx.training_diagnostics` recorded at every step. Generated by
`python -m examples.study` (`examples/study/`); every number on this page comes from that one run.

```bash
make study                        # this page: python -m examples.study --out docs/study --page docs/study.md
python -m examples.study          # the same into results/study/ (report.md, figures, CSV, study.json)
python -m examples.study --quick  # every grid, {QUICK.epochs} epochs on {QUICK.limit:,} images (under 2 minutes)
python -m examples.study --model cnn --epochs 3 --limit 2000 --batch-size 32   # the CNN (slow on a CPU)
```

Setup: the MNIST example's {p.model.upper()} ({p.n_params:,} weights), {int(p.train_y.shape[0]):,} training and
{int(p.held_y.shape[0]):,} held-out images ({_source(study.source)}), batches of {c.batch_size}
({p.steps_per_epoch} steps per epoch), {c.epochs} epochs, seed {c.seed}: every setting starts from the same
weights and sees the same batches. "Training loss" is the epoch's mean minibatch loss; "held-out loss" and
accuracy are measured after each epoch; "best" is the minimum over the epochs. Machine: {os.cpu_count()} CPUs
(JAX backend {jax.default_backend()}), jax {jax.__version__}, {platform.python_implementation()}
{platform.python_version()}. The whole study took {study.seconds / 60:.1f} minutes{_load(study)}.

## Findings

The claims the tutorials make, next to what this run measured. Verdicts follow the rule in each row: "holds"
where the numbers agree with the claim on this network, data and budget, and not otherwise; other networks,
budgets and seeds may differ.
"""
    return "\n".join([head, findings(study, facts), "", *sections, summary]), facts


def write_all(out: Path, study: Study, page: Optional[Path] = None) -> dict[str, Path]:
    """Figures, the CSVs, ``study.json`` and ``report.md`` under ``out``; with ``page``, the
    report goes to that page instead, its figure links relative to it."""
    out.mkdir(parents=True, exist_ok=True)
    text, facts = report(study, out, lambda name: name)
    paths = {}
    if page is None:
        paths["report.md"] = out / "report.md"
        paths["report.md"].write_text(text)
    for name in FIGURES:
        paths[name] = out / name
    for path in write_csvs(out, study):
        paths[path.name] = path
    paths["study.json"] = out / "study.json"
    write_json(paths["study.json"], study, facts)
    if page is not None:
        prefix = Path(os.path.relpath(out.resolve(), page.resolve().parent)).as_posix()
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(_relink(text, prefix))
        paths["page"] = page
    return paths


def _source(source: str) -> str:
    """The data's description without the machine's paths or the TFDS fallback note."""
    return re.sub(r"IDX files in \S+ \(", "IDX files (", source.split(" [")[0])


def _load(study: Study) -> str:
    if not study.load:
        return ""
    return (f" (load average {study.load[0]:.1f} at the start, {study.load[1]:.1f} at the end, on "
            f"{os.cpu_count()} CPUs shared with other work)")


def _relink(text: str, prefix: str) -> str:
    """The report's figure links (``![...](name.png)``) relative to another directory."""
    return re.sub(r"(!\[[^\]]*\]\()([^)/]+\.png\))", lambda m: f"{m.group(1)}{prefix}/{m.group(2)}", text)
