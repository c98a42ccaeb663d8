"""MNIST MLP trained data-parallel across processes with ``jax.distributed``.

Two processes with 4 CPU devices each, on one machine (start both; process 0 also runs
the coordinator)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m examples.mnist.distributed \\
        --num-processes 2 --process-id 0 --coordinator localhost:12355 --out params.npz &
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m examples.mnist.distributed \\
        --num-processes 2 --process-id 1 --coordinator localhost:12355

The same global batches on one process with 8 devices (no ``jax.distributed``)::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m examples.mnist.distributed --out params.npz

What it does: every device of every process forms one mesh axis ``data``. The model and
optimizer state are replicated over it; each global batch (the same sequence of batches
whatever the number of processes) is split across the processes, each process feeding
only its own rows (``jax.make_array_from_process_local_data``), and split again across
its devices. The jitted train step is the plain single-device one: XLA inserts the
all-reduce of the gradients. On CPU the collectives go through gloo
(``jax_cpu_collectives_implementation``); on a GPU or TPU cluster through NCCL or the
TPU interconnect, with nothing to set (see docs/guides/flax-and-multiprocess.md).

The optimizer is ``gradtx.flax.Optimizer``: ``nnx.Optimizer`` with the fused step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from examples.mnist import data as data_lib
from examples.mnist.models import MLP
from examples.mnist.train import OPTIMIZERS, cross_entropy
from gradtx.flax import Optimizer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m examples.mnist.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-processes", type=int, default=1, help="1: no jax.distributed (default)")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--coordinator", default="localhost:12355", help="host:port of process 0")
    p.add_argument("--cpu-collectives", default="gloo", help="jax_cpu_collectives_implementation (CPU only)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    p.add_argument("--batch-size", type=int, default=64, help="the global batch, split across all devices")
    p.add_argument("--steps", type=int, default=None, help="default: one epoch")
    p.add_argument("--limit", type=int, default=None, help="keep the first N training images")
    p.add_argument("--data-dir", type=Path, default=None, help="IDX files (default: ../shared/data/mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="process 0 writes the final params here (.npz)")
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def start(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` for more than one process (CPU: gloo collectives)."""
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)


def global_batches(n_images: int, batch_size: int, steps: int, seed: int):
    """The indices of each global batch: a fixed permutation per epoch, the same for any
    number of processes."""
    rng = np.random.default_rng(seed)
    per_epoch = n_images // batch_size
    if per_epoch == 0:
        raise ValueError(f"{n_images} training images, fewer than one global batch of {batch_size}")
    order = np.zeros(0, np.int64)
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(n_images)
        yield order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]


def process_rows(batch_size: int) -> slice:
    """The rows of a global batch that this process feeds: its contiguous share, in
    process order (the mesh below lists the devices process by process)."""
    if batch_size % jax.device_count():
        raise ValueError(f"--batch-size {batch_size} must divide evenly over {jax.device_count()} devices")
    share = batch_size // jax.process_count()
    return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def replicate(tree, sharding: NamedSharding):
    """Every leaf (the same on every process) as one global array replicated on the mesh."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def train(args: argparse.Namespace) -> dict:
    """Train and return the final params (a dict of numpy arrays, from this process)."""
    data = data_lib.load(source="idx", data_dir=args.data_dir, limit=args.limit).train
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    spec = OPTIMIZERS[args.optimizer]
    model = MLP(rngs=nnx.Rngs(args.seed))
    optimizer = Optimizer(model, spec.build(spec.learning_rate), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    state = replicate(state, replicated)

    @jax.jit
    def train_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    steps = args.steps or len(data.labels) // args.batch_size
    rows = process_rows(args.batch_size)
    start_time = time.perf_counter()
    for step, indices in enumerate(global_batches(len(data.labels), args.batch_size, steps, args.seed), 1):
        mine = indices[rows]
        x = jax.make_array_from_process_local_data(split, data.images[mine], (args.batch_size, 28, 28, 1))
        y = jax.make_array_from_process_local_data(split, data.labels[mine], (args.batch_size,))
        state, loss = train_step(state, x, y)
        if step % args.log_every == 0 or step == steps:
            print(f"process {jax.process_index()}: step {step}/{steps} loss {float(loss):.4f} "
                  f"({time.perf_counter() - start_time:.1f} s)", flush=True)
    model, _ = nnx.merge(graphdef, state)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    # Replicated: every process holds the whole value on each of its devices.
    return {jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def main(argv=None) -> None:
    args = parse_args(argv)
    start(args)
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local devices, "
          f"{jax.device_count()} in all ({jax.default_backend()})", flush=True)
    params = train(args)
    if args.out is not None and jax.process_index() == 0:
        np.savez(args.out, **params)
        print(f"params: {args.out}", flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
