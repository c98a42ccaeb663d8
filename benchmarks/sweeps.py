"""A sweep of N settings of the MNIST MLP in one program, against the same settings one
after another.

    python -m benchmarks.sweeps            # N = 1, 8, 32, 128; 50 steps per setting, 3 rounds
    python -m benchmarks.sweeps --quick    # N = 1, 8, 32; 10 steps, 2 rounds (< 1 minute)

The workload: ``gradtx.sgd(lr, momentum=0.9)`` with N learning rates (log-spaced) training
the MNIST example's MLP (784-200-10, 159,010 weights) on batches of 64 from the IDX data,
S steps per setting, every setting from the same initial weights on the same batches
(``examples/study/training.py``'s compiled epoch, without evaluation or diagnostics).
Candidates, timed interleaved (``benchmarks.timing``), median over rounds:

- ``sweep``: ``gradtx.sweep``, the N settings in one jitted ``lax.scan`` of S steps, the
  model vmapped over them;
- ``one after another (scan)``: one compiled single-setting ``lax.scan`` of S steps whose
  hyperparameters are arguments, called N times;
- ``one after another (step)``: one compiled single-setting step, called S times for
  each of the N settings (the loop most people write).

Reported: setting-steps per second (N x S over the time to train all N settings: the
optimizer steps of any setting done per second) and its inverse, milliseconds per
setting-step; each candidate's time over the sweep's in the same rounds. Memory: XLA's
``memory_analysis`` of the compiled program (arguments + outputs + temporaries - aliased
bytes) and the bytes of the params and optimizer state it carries.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradtx
from benchmarks.timing import Candidate, interleave

BATCH = 64
MOMENTUM = 0.9


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _memory(compiled: Any) -> int:
    m = compiled.memory_analysis()
    if m is None:
        return -1
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}" if n >= 0 else "n/a"


def candidates(problem: Any, n: int, steps: int) -> tuple[list[Candidate], dict]:
    from examples.study.training import epoch_program

    lrs = np.geomspace(1e-3, 1e-1, n) if n > 1 else np.array([1e-2])
    key = jax.random.key(0)
    data = problem.data
    info: dict = {}

    # the sweep: one program over the n settings
    group = gradtx.sweep(gradtx.sgd, {"learning_rate": [float(x) for x in lrs]}, fixed={"momentum": MOMENTUM}).groups[0]
    params_n = group.replicate(problem.params)
    state_n = group.tx.init(params_n)
    t0 = time.perf_counter()
    sweep = epoch_program(problem, group.tx, steps=steps, evaluate=False).lower(params_n, state_n, key, data).compile()
    info["sweep"] = {"compile_s": time.perf_counter() - t0, "memory": _memory(sweep),
                     "carried": _bytes((params_n, state_n))}

    def run_sweep() -> None:
        jax.block_until_ready(sweep(params_n, state_n, key, data))

    # one single-setting scan, its learning rate an argument
    @jax.jit
    def scan(lr, params, key, data):
        tx = gradtx.sgd(lr, momentum=MOMENTUM)
        return epoch_program(problem, tx, batched=False, steps=steps, evaluate=False)(params, tx.init(params), key,
                                                                                     data)

    hypers = [jnp.asarray(x, jnp.float32) for x in lrs]
    t0 = time.perf_counter()
    scan_c = scan.lower(hypers[0], problem.params, key, data).compile()
    one_tx = gradtx.sgd(hypers[0], momentum=MOMENTUM)
    info["scan"] = {"compile_s": time.perf_counter() - t0, "memory": _memory(scan_c),
                    "carried": _bytes((problem.params, one_tx.init(problem.params)))}

    def run_scan() -> None:
        out = None
        for h in hypers:
            out = scan_c(h, problem.params, key, data)
        jax.block_until_ready(out)

    # one single-setting step, called steps x n times
    grad = jax.value_and_grad(problem.loss)

    @jax.jit
    def step(lr, params, state, x, y):
        tx = gradtx.sgd(lr, momentum=MOMENTUM)
        loss, grads = grad(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    order = np.asarray(jax.random.permutation(key, problem.train_y.shape[0]))[: steps * BATCH].reshape(steps, BATCH)
    batches = [(problem.train_x[jnp.asarray(i)], problem.train_y[jnp.asarray(i)]) for i in order]
    state0 = one_tx.init(problem.params)
    t0 = time.perf_counter()
    step_c = step.lower(hypers[0], problem.params, state0, *batches[0]).compile()
    info["step"] = {"compile_s": time.perf_counter() - t0, "memory": _memory(step_c),
                    "carried": info["scan"]["carried"]}

    def run_step() -> None:
        out = None
        for h in hypers:
            params, state = problem.params, state0
            for x, y in batches:
                params, state, out = step_c(h, params, state, x, y)
        jax.block_until_ready(out)

    return [Candidate("sweep", run_sweep), Candidate("one after another (scan)", run_scan),
            Candidate("one after another (step)", run_step)], info


def bench(ns: tuple[int, ...], steps: int, rounds: int) -> list[list]:
    from examples.mnist import data as data_lib
    from examples.study.training import make_problem

    problem = make_problem(data_lib.load("idx"), "mlp", BATCH)
    rows = []
    for n in ns:
        cands, info = candidates(problem, n, steps)
        interleave(cands, rounds, warmup=1, too_slow_s=float("inf"))
        by = {c.name: c for c in cands}
        base = by["sweep"].median
        for c in cands:
            key = {"sweep": "sweep", "one after another (scan)": "scan", "one after another (step)": "step"}[c.name]
            rate = n * steps / c.median
            rows.append([n, c.name, f"{rate:.0f}", f"{1e3 / rate:.3f}", f"{c.median / base:.2f}",
                         _mib(info[key]["memory"]), _mib(info[key]["carried"] if key != "sweep" else
                                                         info["sweep"]["carried"]),
                         f"{info[key]['compile_s']:.1f}"])
        print(f"... N = {n}: sweep {base:.3f} s, scans {by['one after another (scan)'].median:.3f} s, "
              f"steps {by['one after another (step)'].median:.3f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[list]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweeps", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 8, 32; 10 steps; 2 rounds (< 1 minute)")
    parser.add_argument("--steps", type=int, default=None, help="steps per setting in each timed run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--n", default=None, help="comma-separated numbers of settings")
    args = parser.parse_args(argv)
    ns = tuple(int(x) for x in args.n.split(",")) if args.n else ((1, 8, 32) if args.quick else (1, 8, 32, 128))
    steps = args.steps or (10 if args.quick else 50)
    rounds = args.rounds or (2 if args.quick else 3)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    rows = bench(ns, steps, rounds)
    print(f"\n### Sweep against one after another: MNIST MLP, sgd(lr, momentum={MOMENTUM}), batch {BATCH}, "
          f"{steps} steps per setting, {rounds} interleaved rounds, medians ({jax.default_backend()})\n")
    print(md_table(["N", "how", "setting-steps/s", "ms per setting-step", "time / sweep", "program memory (MiB)",
                    "params + state (MiB)", "compile s"], rows))
    print("\nprogram memory: XLA's memory_analysis (arguments, incl. the 31 MB of data, + outputs + temporaries "
          "- aliased); params + state: what the program carries (the sweep: all N settings; one after another: "
          "one setting at a time)")
    print(f"\n({time.perf_counter() - t0:.0f} s; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
          f"the end, {os.cpu_count()} CPUs)")
    return rows


if __name__ == "__main__":
    main()
