"""The exponentially weighted average on a temperature-like series, with and without bias
correction: ``gradtx.scale_by_ema(beta)`` and ``chain(scale_by_ema(beta), bias_correct(beta))``
fed one day at a time (the "gradient" of day t is its temperature)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import gradtx

BETAS = (0.5, 0.9, 0.98)
DAYS = 365


def temperatures(seed: int = 0, days: int = DAYS) -> np.ndarray:
    """A year of daily temperatures (deg C) from spring to spring: a seasonal sine between
    about 5 and 23 degrees, starting at 14, with seeded day-to-day noise, in float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    season = 14.0 + 9.0 * np.sin(2 * np.pi * t / 365.0)
    return (season + rng.normal(0.0, 3.0, days)).astype(np.float32)


def smooth(series: np.ndarray, beta: float, corrected: bool) -> np.ndarray:
    """``v_t = beta v_{t-1} + (1 - beta) x_t`` over the series (``/ (1 - beta^t)`` when
    ``corrected``), through gradtx's transformations in a ``lax.scan``."""
    tx = gradtx.scale_by_ema(beta)
    if corrected:
        tx = gradtx.chain(tx, gradtx.bias_correct(beta))

    def step(state, x):
        v, state = tx.update(x, state)
        return state, v

    return np.asarray(jax.lax.scan(step, tx.init(jnp.zeros((), jnp.float32)), jnp.asarray(series))[1])


def curves(seed: int = 0) -> dict:
    series = temperatures(seed)
    return {"series": series,
            "plain": {b: smooth(series, b, False) for b in BETAS},
            "corrected": {b: smooth(series, b, True) for b in BETAS}}


def figure(path: Path, data: dict) -> None:
    series = data["series"]
    days = np.arange(1, len(series) + 1)
    colors = dict(zip(BETAS, ("tab:green", "tab:red", "tab:purple")))
    fig = Figure(figsize=(11, 4.2), dpi=110)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    left.plot(days, series, ".", color="0.55", markersize=3, label="daily temperature")
    for b in BETAS:
        left.plot(days, data["plain"][b], color=colors[b], lw=1.5,
                  label=f"beta {b} (~{1 / (1 - b):.0f} days)")
    left.set(xlabel="day", ylabel="deg C", title="scale_by_ema(beta), no bias correction")
    left.legend(fontsize=8)
    first = 40
    right.plot(days[:first], series[:first], ".", color="0.55", markersize=4)
    for b in BETAS:
        right.plot(days[:first], data["plain"][b][:first], color=colors[b], lw=1.2, ls="--")
        right.plot(days[:first], data["corrected"][b][:first], color=colors[b], lw=1.6, label=f"beta {b}")
    right.set(xlabel="day", title=f"first {first} days: dashed plain, solid + bias_correct")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def table(data: dict) -> str:
    """The first days and the last day of each curve: the start-up bias and its correction."""
    series = data["series"]
    days = (1, 2, 5, 10, 30, len(series))
    head = "| curve | " + " | ".join(f"day {d}" for d in days) + " |"
    lines = [head, "|---" * (len(days) + 1) + "|",
             "| temperature | " + " | ".join(f"{series[d - 1]:.1f}" for d in days) + " |"]
    for b in BETAS:
        for kind in ("plain", "corrected"):
            label = f"beta {b}" + (" + bias_correct" if kind == "corrected" else "")
            lines.append(f"| {label} | " + " | ".join(f"{data[kind][b][d - 1]:.1f}" for d in days) + " |")
    return "\n".join(lines)
