"""Minimize the Rosenbrock function with each classic optimizer and print a table.

    python examples/rosenbrock.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gradtx


def rosenbrock(xy: jax.Array) -> jax.Array:
    """``(1 - x)^2 + 100 (y - x^2)^2``, minimum 0 at (1, 1)."""
    x, y = xy
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


OPTIMIZERS = {
    "sgd": gradtx.sgd(1e-3),
    "momentum": gradtx.sgd(1e-3, momentum=0.9),
    "averaged_momentum": gradtx.averaged_momentum(1e-2, beta=0.9),
    "nesterov": gradtx.sgd(1e-3, momentum=0.9, nesterov=True),
    "rmsprop": gradtx.rmsprop(1e-3),
    "adagrad": gradtx.adagrad(1e-1),
    "adadelta": gradtx.adadelta(1.0),
    "adam": gradtx.adam(1e-2),
}


def minimize(opt: gradtx.GradientTransformation, steps: int) -> float:
    """Run ``steps`` jitted steps from (-1.5, 2) inside one ``lax.scan``; the final loss."""

    def step(carry, _):
        xy, state = carry
        updates, state = opt.update(jax.grad(rosenbrock)(xy), state, xy)
        return (gradtx.apply_updates(xy, updates), state), None

    xy0 = jnp.array([-1.5, 2.0])
    (xy, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, length=steps))((xy0, opt.init(xy0)))
    return float(rosenbrock(xy))


def main(steps: int = 5000) -> None:
    print(f"Rosenbrock from (-1.5, 2.0), minimum 0 at (1, 1); {steps} steps each\n")
    print(f"| {'optimizer':<18} | {'steps':>6} | {'final loss':>12} |")
    print(f"|{'-' * 20}|{'-' * 8}|{'-' * 14}|")
    for name, opt in OPTIMIZERS.items():
        print(f"| {name:<18} | {steps:>6} | {minimize(opt, steps):>12.4e} |")


if __name__ == "__main__":
    main()
