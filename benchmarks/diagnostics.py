"""What the diagnostics cost: Adam on the MNIST MLP, alone and watched.

    python -m benchmarks.diagnostics            # 150 interleaved rounds (about a minute)
    python -m benchmarks.diagnostics --quick    # 30 rounds (< 20 s)

The network is the MNIST example's MLP (``examples/mnist/models.py``), in two sizes: the
study's (784-200-10, 159,010 params, batch 64: ``examples/study``) and 784-128-10
(101,770 params) at batch 128. Random images and labels (the time does not depend on
them). Variants, each chained after ``gradtx.adam(1e-3)``:

- ``Adam``: the optimizer alone;
- ``+ update_norm``: ``gradtx.update_norm()``;
- ``+ training_diagnostics``: ``gradtx.training_diagnostics(reset_every=R)``, as the study
  chains it (``R``: the study's epoch, 8,000 training images over the batch);
- ``+ the five chained``: ``update_norm``, ``update_ratio``, ``oscillation``,
  ``update_cosine``, ``distance_travelled(reset_every=R)``, one after another;
- ``..., k steps in n``: the same, observing only the last k steps of every n
  (``gradtx.scan_observing(step, ..., every=n, observed=k)``, the other steps call
  ``update(..., observe=False)``): the cost of recording every n-th step (k = 2: the
  oscillation and the cosine compare consecutive updates).

Steps, each a jitted ``lax.scan`` of S = 20 steps (``scan_observing`` for the observed
variants) that returns ``gradtx.diagnostics_in``
of every step (as the study's epoch does), params and state carried from call to call
(donated), so that the reference point moves every R steps as in training:

- ``optimizer step``: ``update`` + ``apply_updates`` on given gradients;
- ``training step``: the forward and backward passes of the MLP on a batch, then the same.

Every candidate of a table runs once per round, in turn (``benchmarks.timing``): the
medians over rounds, in microseconds per step, and each variant's time over Adam's in
the same round (median: the % over Adam). Kernels: the instructions XLA:CPU runs per step
(the top-level instructions of the scan's loop body, fusions counted once; tuple
plumbing and constants left out), for the variants that observe every step.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

import gradtx
from benchmarks.timing import Candidate, interleave

STEPS = 20  # steps per timed call (one lax.scan)
TRAIN_IMAGES = 8_000  # the study's training split (the shipped t10k files): R = 8,000 // batch
CONFIGS = {"784-200-10, batch 64 (the study's)": (200, 64), "784-128-10, batch 128": (128, 128)}


def variants(reset_every: int) -> dict[str, tuple[Callable[[], gradtx.GradientTransformation], int, int]]:
    """``{name: (make the transformation, every, observed)}``: the variant observes the last
    ``observed`` steps of every block of ``every`` (``gradtx.scan_observing``); ``(1, 1)``:
    every step, in a plain ``lax.scan``."""

    def adam() -> gradtx.GradientTransformation:
        return gradtx.adam(1e-3)

    def watched(*diagnostics: Callable[[], gradtx.GradientTransformation]) -> Callable[[], Any]:
        return lambda: gradtx.chain(adam(), *(make() for make in diagnostics))

    def distance() -> gradtx.GradientTransformation:
        return gradtx.distance_travelled(reset_every=reset_every)

    def diagnostics() -> gradtx.GradientTransformation:
        return gradtx.training_diagnostics(reset_every=reset_every)

    five = (gradtx.update_norm, gradtx.update_ratio, gradtx.oscillation, gradtx.update_cosine, distance)
    return {
        "Adam": (adam, 1, 1),
        "+ update_norm": (watched(gradtx.update_norm), 1, 1),
        "+ training_diagnostics": (watched(diagnostics), 1, 1),
        "+ the five chained": (watched(*five), 1, 1),
        "+ update_norm, 1 step in 10": (watched(gradtx.update_norm), 10, 1),
        "+ training_diagnostics, 2 steps in 10": (watched(diagnostics), 10, 2),
        "+ training_diagnostics, 2 steps in 20": (watched(diagnostics), 20, 2),
        "+ update_ratio": (watched(gradtx.update_ratio), 1, 1),
        "+ oscillation": (watched(gradtx.oscillation), 1, 1),
        "+ update_cosine": (watched(gradtx.update_cosine), 1, 1),
        "+ distance_travelled": (watched(distance), 1, 1),
    }


# the tables printed: their variants (each beside Adam, all timed in the same rounds)
TABLES = {
    "Every step": ["+ update_norm", "+ training_diagnostics", "+ the five chained"],
    "Some steps (gradtx.scan_observing)": [
        "+ update_norm, 1 step in 10",
        "+ training_diagnostics, 2 steps in 10",
        "+ training_diagnostics, 2 steps in 20",
    ],
    "Each of the others alone, every step": [
        "+ update_ratio", "+ oscillation", "+ update_cosine", "+ distance_travelled"],
}


def mlp(hidden: int) -> tuple[Any, Any]:
    """The MNIST example's MLP: ``(graphdef, params)`` (params: the ``nnx.Param`` state)."""
    from flax import nnx

    from examples.mnist.models import MLP

    return nnx.split(MLP(rngs=nnx.Rngs(0), hidden=hidden), nnx.Param)


def kernels(hlo: str) -> int:
    """The instructions the scan's loop body runs per step (fusions counted once; params,
    tuples, constants, bitcasts and the loop counter's scalar ops left out)."""
    names = re.findall(r"while\(.*?body=(%?[\w.-]+)", hlo)
    if not names:
        return -1
    start = hlo.index("\n" + names[0] + " ") + 1
    body = hlo[start:hlo.index("\n}", start)]
    skip = ("parameter(", "tuple(", "get-tuple-element(", "constant(", "bitcast(")
    count = 0
    for line in body.splitlines()[1:]:
        if " = " not in line or any(s in line for s in skip):
            continue
        shape = line.split(" = ", 1)[1].split(" ", 1)[0]
        if re.search(r"\[[0-9]", shape) or "fusion(" in line or "custom-call(" in line:
            count += 1
    return count


def candidate(name: str, program: Callable, carry: Any, xs: Any) -> tuple[Candidate, int]:
    """A candidate that runs ``program(carry, xs)`` (S steps), keeping the carry it returns."""
    jitted = jax.jit(program, donate_argnums=(0,))
    compiled = jitted.lower(carry, xs).compile()
    box = {"carry": carry}

    def run() -> None:
        box["carry"], out = compiled(box["carry"], xs)
        jax.block_until_ready(out)

    return Candidate(name, run), kernels(compiled.as_text() or "")


def candidates(hidden: int, batch: int) -> tuple[list[Candidate], dict[str, int]]:
    graphdef, params = mlp(hidden)
    reset_every = TRAIN_IMAGES // batch
    keys = jax.random.split(jax.random.key(0), 4)
    images = jax.random.uniform(keys[0], (STEPS, batch, 28, 28, 1), jnp.float32, -1, 1)
    labels = jax.random.randint(keys[1], (STEPS, batch), 0, 10)
    grads = jax.tree.map(lambda p: 1e-2 * jax.random.normal(keys[2], (STEPS, *p.shape), p.dtype), params)

    from flax import nnx

    from examples.mnist.train import cross_entropy

    def loss(params, x, y):
        return cross_entropy(nnx.merge(graphdef, params)(x), y)

    grad = jax.value_and_grad(loss)
    out, n_kernels = [], {}
    for kind in ("optimizer step", "training step"):
        for variant, (make, every, observed) in variants(reset_every).items():
            tx = make()

            def step(carry, xs, observe, tx=tx, kind=kind):
                p, s = carry
                if kind == "training step":
                    value, g = grad(p, *xs)
                else:
                    value, g = jnp.zeros(()), xs
                u, s = tx.update(g, s, p, observe=observe)
                return (gradtx.apply_updates(p, u), s), {"loss": value, **gradtx.diagnostics_in(s)}

            def program(carry, xs, step=step, every=every, observed=observed):
                if every == 1:
                    return jax.lax.scan(functools.partial(step, observe=True), carry, xs)
                return gradtx.scan_observing(step, carry, xs, every=every, observed=observed)

            xs = (images, labels) if kind == "training step" else grads
            carry = (jax.tree.map(jnp.copy, params), tx.init(params))
            name = f"{kind} / {variant}"
            c, n_kernels[name] = candidate(name, program, carry, xs)
            out.append(c)
    return out, n_kernels


def tables(rounds: int) -> dict[str, str]:
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for label, (hidden, batch) in CONFIGS.items():
        cands, n_kernels = candidates(hidden, batch)
        interleave(cands, rounds, warmup=3, too_slow_s=float("inf"))
        by = {c.name: c for c in cands}
        for kind in ("optimizer step", "training step"):
            base = by[f"{kind} / Adam"]
            row = cells.setdefault((label, kind), {})
            for variant, (_, every, _) in variants(1).items():
                c = by[f"{kind} / {variant}"]
                us = 1e6 * c.median / STEPS
                over = statistics.median(t / b for t, b in zip(c.times, base.times))
                pct = "" if c is base else f" ({100 * (over - 1):+.0f}%)"
                row[variant] = f"{us:,.0f}{pct}" + (f" [{n_kernels[c.name]}]" if every == 1 else "")
    out = {}
    for title, names in TABLES.items():
        header = ["MLP", "step", "Adam", *names]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for (label, kind), row in cells.items():
            lines.append("| " + " | ".join([label, kind, row["Adam"], *(row[n] for n in names)]) + " |")
        out[title] = "\n".join(lines)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnostics", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 rounds (< 20 s)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (30 if args.quick else 150)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    out = tables(rounds)
    print(f"\n### Diagnostics on the MNIST MLP: Adam, {STEPS}-step jitted lax.scan, {rounds} interleaved rounds, "
          f"medians ({jax.default_backend()}, sibling fusion: {gradtx.fuses_sibling_outputs()})\n")
    print("Microseconds per step (% over Adam in the same rounds, median) [kernels per step].")
    for title, text in out.items():
        print(f"\n#### {title}\n\n{text}")
    print(f"\n({time.perf_counter() - t0:.0f} s; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
          f"the end, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
