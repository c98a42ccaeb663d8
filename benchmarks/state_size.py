"""Optimizer state size: bytes of every registered optimizer's state for one param, found
with ``jax.eval_shape`` (nothing is allocated), beside the param's own size.

    python -m benchmarks.state_size              # one 4096 x 4096 float32 matrix
    python -m benchmarks.state_size --shape 1024 768

Adam keeps two params-sized moments (2x the param); a factored second moment (Adafactor)
keeps a row and a column vector, O(rows + columns).
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from gradtx.registry import of_kind


def leaf_bytes(x: jax.ShapeDtypeStruct) -> int:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # a typed PRNG key: its raw data
        x = jax.eval_shape(jax.random.key_data, x)
    return math.prod(x.shape) * jnp.dtype(x.dtype).itemsize


def state_bytes(tx, param: jax.ShapeDtypeStruct) -> int:
    return sum(leaf_bytes(x) for x in jax.tree.leaves(jax.eval_shape(tx.init, param)))


def table(shape: tuple[int, ...]) -> str:
    param = jax.ShapeDtypeStruct(shape, jnp.float32)
    param_bytes = math.prod(shape) * 4
    rows = [f"| optimizer | state bytes for one {' x '.join(map(str, shape))} float32 param | x param |",
            "|---|---:|---:|"]
    for entry in of_kind("optimizer"):
        kwargs = entry.grid[0] if entry.grid else {}
        n = state_bytes(entry.obj(**kwargs), param)
        rows.append(f"| {entry.name} | {n:,} | {n / param_bytes:.4f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_size", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4096, 4096])
    print(table(tuple(parser.parse_args().shape)))


if __name__ == "__main__":
    main()
