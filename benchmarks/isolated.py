"""Adam on one 16M-float leaf, each implementation timed alone and back to back (no
torch in the process), against a donated triad measured the same way:

    python -m benchmarks.isolated

The interleaved runner mixes torch and JAX steps in one round; this one shows what each
JAX step does on an otherwise idle machine. Bytes moved are counted for the ideal step:
read params, grads, mu, nu once, write params, mu, nu once (7 x 4 bytes per float).

XLA:CPU's sibling multi-output fusion is turned on for the process (as in the main
runner); "optax (XLA default)" is compiled without it.
"""

from __future__ import annotations

import statistics
import time

import gradtx

gradtx.enable_cpu_multi_output_fusion()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks.steps import plain_step as plain  # noqa: E402

N = 1 << 24
IDEAL_BYTES = 7 * 4 * N
TRIAD_BYTES = 4 * 4 * N


def _median_seconds(call, state, rounds: int = 12) -> float:
    state = call(state)
    jax.block_until_ready(state)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        state = call(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def triad_seconds() -> float:
    f = jax.jit(lambda a, b, c: a + b + 2.0 * c, donate_argnums=(0,))
    b, c = jnp.ones(N), jnp.full(N, 0.5)
    return _median_seconds(lambda a: f(a, b, c), jnp.zeros(N))


def adam_seconds(step_of_tx, tx, compiler_options=None) -> float:
    grads = jnp.full(N, 0.01)
    f = jax.jit(step_of_tx(tx), donate_argnums=(0, 1), compiler_options=compiler_options)
    params = jnp.ones(N)
    return _median_seconds(lambda ps: f(ps[0], ps[1], grads), (params, tx.init(params)))


def main() -> None:
    triad = triad_seconds()
    bandwidth = TRIAD_BYTES / triad
    print(f"triad: {triad * 1e3:.1f} ms, {bandwidth / 1e9:.1f} GB/s\n")
    print("| Adam, one 16M leaf | ms/step | GB/s (ideal traffic) | % of triad |\n|---|---|---|---|")
    default = {"xla_backend_extra_options": ""}  # this compile without the fusion switch
    cases = [("optax (XLA default)", plain, optax.adam(1e-3), default),
             ("optax (multi-output fusion)", plain, optax.adam(1e-3), None),
             ("gradtx plain step", plain, gradtx.adam(1e-3), None),
             ("gradtx.update_and_apply", gradtx.update_and_apply, gradtx.adam(1e-3), None)]
    for name, step_of_tx, tx, options in cases:
        t = adam_seconds(step_of_tx, tx, options)
        print(f"| {name} | {t * 1e3:.1f} | {IDEAL_BYTES / t / 1e9:.1f} | {IDEAL_BYTES / t / bandwidth:.0%} |")


if __name__ == "__main__":
    main()
