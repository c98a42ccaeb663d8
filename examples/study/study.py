"""The study's grids and the order it runs them in (``run_study``).

Each entry of ``Study.runs`` is one ``gradtx.sweep`` trained by ``training.run_sweep``:
one compiled program per group of settings (one for every grid here but the cyclical
rate's, whose two modes are two programs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

import gradtx
from examples.study import ewa
from examples.study.training import Problem, Run, finite_or_inf, run_sweep, sweep_against_sequential

MOMENTA = (0.0, 0.5, 0.9, 0.95, 0.99)


@dataclasses.dataclass(frozen=True)
class Config:
    """What the study sweeps and for how long (the defaults are the full study)."""

    epochs: int = 30
    limit: Optional[int] = None  # the first N training and held-out images (None: all)
    batch_size: int = 64
    seed: int = 0
    sgd_lrs: tuple = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)  # 1e-3 .. 1e-1, log scale
    momenta: tuple = MOMENTA
    momentum_lr: float = 1e-2  # the fixed rate of the momentum section (the tutorials')
    grid_lrs: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the learning rate x momentum grid
    rmsprop_lrs: tuple = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    rmsprop_rhos: tuple = (0.5, 0.9, 0.99, 0.999)
    adam_lrs: tuple = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # 1e-4 .. 1
    adam_b1s: tuple = (0.5, 0.9, 0.95)
    adam_b2s: tuple = (0.9, 0.99, 0.999)
    adam_betas_lr: float = 1e-3
    adagrad_lrs: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    adadelta_rhos: tuple = (0.5, 0.9, 0.95, 0.99, 0.999)
    adadelta_lr: float = 1.0
    cyclic_cycles: int = 4  # triangle periods over the run
    cyclic_max_factors: tuple = (1.0, 2.0, 4.0)  # max_lr = factor x the best constant SGD rate
    cyclic_base_factors: tuple = (0.1, 0.5)  # base_lr = factor x the best constant SGD rate
    timing_rounds: int = 3  # sweep against one after another: interleaved rounds of one epoch each


FULL = Config()
QUICK = dataclasses.replace(FULL, epochs=3, limit=2000, timing_rounds=1)


@dataclasses.dataclass
class Study:
    config: Config
    problem: Problem
    source: str
    runs: dict[str, Run]
    ewa: dict
    cyclic_step_size: int
    best_constant_lr: float
    sequential: dict  # the heavy-ball grid one setting after another: seconds
    seconds: float = 0.0  # the whole study, from loading the data to the report
    load: tuple = ()  # the machine's load average at the start and at the end


def run_study(config: Config, problem: Problem, source: str, log: Callable[[str], None] = print) -> Study:
    """Every sweep of the study, in the order of the report's sections."""
    c, runs = config, {}

    def sweep(name: str, factory: Callable, grid: Any, **kwargs: Any) -> Run:
        runs[name] = run_sweep(problem, name, factory, grid, c.epochs, log=log, **kwargs)
        return runs[name]

    momenta = [m for m in c.momenta if m > 0]
    sgd = sweep("sgd", gradtx.sgd, {"learning_rate": list(c.sgd_lrs)})
    sweep("momentum", gradtx.sgd, {"momentum": list(c.momenta)}, fixed={"learning_rate": c.momentum_lr})
    sweep("heavy_ball", gradtx.sgd, {"learning_rate": list(c.grid_lrs), "momentum": list(c.momenta)})
    sweep("averaged", gradtx.averaged_momentum, {"learning_rate": list(c.grid_lrs), "beta": list(c.momenta)})
    sweep("nesterov", gradtx.sgd, {"learning_rate": list(c.grid_lrs), "momentum": momenta},
          fixed={"nesterov": True})
    sweep("rmsprop", gradtx.rmsprop, {"learning_rate": list(c.rmsprop_lrs), "decay": list(c.rmsprop_rhos)})
    sweep("adam_lr", gradtx.adam, {"learning_rate": list(c.adam_lrs)})
    sweep("adam_betas", gradtx.adam, {"b1": list(c.adam_b1s), "b2": list(c.adam_b2s)},
          fixed={"learning_rate": c.adam_betas_lr})
    sweep("adagrad", gradtx.adagrad, {"learning_rate": list(c.adagrad_lrs)})
    sweep("adadelta", gradtx.adadelta, {"rho": list(c.adadelta_rhos)}, fixed={"learning_rate": c.adadelta_lr})

    best = sgd.settings[int(np.argmin(finite_or_inf(sgd.epochs["held_out_loss"]).min(axis=1)))]
    best_lr = float(best["learning_rate"])
    step_size = max(1, c.epochs * problem.steps_per_epoch // (2 * c.cyclic_cycles))

    def cyclic(base_lr: float, max_lr: float, mode: str) -> gradtx.GradientTransformation:
        return gradtx.sgd(gradtx.cyclic_schedule(base_lr, max_lr, step_size, mode=mode))

    sweep("cyclic", cyclic, {"mode": ["triangular", "triangular2"],
                             "base_lr": [f * best_lr for f in c.cyclic_base_factors],
                             "max_lr": [f * best_lr for f in c.cyclic_max_factors]})

    heavy = runs["heavy_ball"]
    sequential = sweep_against_sequential(problem, heavy, gradtx.sgd, c.timing_rounds)
    log(f"{'sweep vs one by one':<22} one epoch of the {len(heavy.settings)} heavy-ball settings: sweep "
        f"{sequential['sweep_epoch_s']:.2f} s, one after another {sequential['sequential_epoch_s']:.2f} s "
        f"(the faster of {c.timing_rounds} interleaved rounds)")
    return Study(config, problem, source, runs, ewa.curves(config.seed), step_size, best_lr, sequential)
