"""Check gradtx on whatever device JAX finds: the device, a short parity run against
optax, then the quick benchmark.

    python -m benchmarks.device_check              # device, parity, `python -m benchmarks --quick`
    python -m benchmarks.device_check --no-bench   # device and parity only

Parity: a few registry optimizers at their first grid point, against their optax twin
called with the same arguments, ``STEPS`` jitted float32 steps on the default device
(gradients that pull the params to 1 and wobble with the step); and
``gradtx.update_and_apply`` (one loop per leaf where the backend fuses sibling outputs,
as GPUs do) against the plain step. Both within float32 rtol 1e-5 of each leaf's
largest magnitude. Exits non-zero if a check fails or the benchmark does.
"""

from __future__ import annotations

import gradtx

# On CPU, update_and_apply's one-loop form needs XLA's sibling multi-output fusion,
# switched on before JAX starts (GPUs have it already).
gradtx.enable_cpu_multi_output_fusion()

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from gradtx.registry import BY_NAME  # noqa: E402

NAMES = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "lion")
STEPS = 100
RTOL = 1e-5


def describe_devices() -> str:
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (f"JAX {jax.__version__}, backend {jax.default_backend()}: {len(devices)} device(s) "
            f"({', '.join(kinds)}), {jax.process_count()} process(es); "
            f"sibling multi-output fusion: {gradtx.fuses_sibling_outputs()}")


def params_tree() -> dict:
    return {"w": jnp.linspace(-1.0, 1.0, 64 * 32, dtype=jnp.float32).reshape(64, 32),
            "b": jnp.linspace(0.5, 1.5, 32, dtype=jnp.float32), "s": jnp.float32(0.3)}


def grads_at(params: dict, t) -> dict:
    return jax.tree.map(lambda p: (p - 1.0) + 0.1 * jnp.cos(t + jnp.arange(p.size).reshape(p.shape)), params)


def run(tx, fused: bool = False) -> dict:
    """``STEPS`` jitted steps of ``tx`` (``update_and_apply(tx)`` if ``fused``); the final params."""
    params = params_tree()
    state = tx.init(params)
    jitted = jax.jit(gradtx.update_and_apply(tx) if fused else plain(tx))
    for t in range(STEPS):
        params, state = jitted(params, state, grads_at(params, jnp.float32(t)))
    return params


def plain(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step


def worst(a: dict, b: dict) -> float:
    """Largest difference over the leaves, relative to each leaf's largest magnitude."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - y)) / max(float(np.max(np.abs(y))), 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def parity() -> tuple[str, bool]:
    rows, ok = ["| optimizer | vs optax | fused vs plain | |", "|---|---|---|---|"], True
    for name in NAMES:
        entry = BY_NAME[name]
        kwargs = entry.grid[0]
        tx = entry.obj(**kwargs)
        ours = run(tx)
        vs_optax = worst(ours, run(entry.optax_factory(optax)(**kwargs)))
        vs_fused = worst(run(tx, fused=True), ours)
        good = vs_optax <= RTOL and vs_fused <= RTOL
        ok &= good
        rows.append(f"| {name} | {vs_optax:.1e} | {vs_fused:.1e} | {'ok' if good else 'FAIL'} |")
    return "\n".join(rows), ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    parser.add_argument("--no-bench", action="store_true", help="skip `python -m benchmarks --quick`")
    args = parser.parse_args(argv)
    print(describe_devices())
    for d in jax.devices():
        print(f"  {d}")
    table, ok = parity()
    print(f"\n### Parity on {jax.default_backend()}: {STEPS} float32 steps, "
          f"rtol {RTOL:g} of each leaf's largest value\n")
    print(table, flush=True)
    if args.no_bench:
        return 0 if ok else 1
    print("\n### python -m benchmarks --quick\n", flush=True)
    bench = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], check=False)
    return 0 if ok and bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
