"""End to end: the MNIST example's MLP (784-200-10, batch 64, Adam 1e-3) trained with its
own jitted ``lax.scan`` epoch, against the same network trained eagerly with torch.optim.

Steady state: whole epochs of each, interleaved (one gradtx epoch, one torch epoch per
round), steps per second from the median round. Time to the first trained epoch counts
everything from building the model to the end of epoch 1, compilation included.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

BATCH = 64
LR = 1e-3


def _gradtx_runner(images: np.ndarray, labels: np.ndarray):
    """``epoch(i) -> seconds`` for the example's jitted epoch, and the first-epoch time."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import gradtx
    from examples.mnist.models import MLP
    from examples.mnist.train import make_functions

    start = time.perf_counter()
    model = MLP(rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, nnx.Optimizer(model, gradtx.adam(LR), wrt=nnx.Param)))
    x, y, key = jnp.asarray(images), jnp.asarray(labels), jax.random.key(0)
    train_epoch, _ = make_functions(graphdef, BATCH)
    box = {"state": state}

    def epoch(i: int) -> float:
        t0 = time.perf_counter()
        box["state"], losses = train_epoch(box["state"], x, y, jax.random.fold_in(key, i))
        jax.block_until_ready(losses)
        box["loss"] = float(losses[-1])
        return time.perf_counter() - t0

    epoch(0)
    return epoch, time.perf_counter() - start, box


def _torch_runner(images: np.ndarray, labels: np.ndarray):
    import torch

    torch.manual_seed(0)
    start = time.perf_counter()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(),
                                torch.nn.Linear(200, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels).long()
    steps = len(images) // BATCH
    generator = torch.Generator().manual_seed(0)
    box = {}

    def epoch(i: int) -> float:
        del i
        t0 = time.perf_counter()
        order = torch.randperm(len(images), generator=generator)[: steps * BATCH].view(steps, BATCH)
        for idx in order:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        box["loss"] = float(loss.detach())
        return time.perf_counter() - t0

    epoch(0)
    return epoch, time.perf_counter() - start, box


def run(quick: bool) -> dict:
    from examples.mnist import data

    dataset = data.load("idx", limit=2048 if quick else None)
    images, labels = dataset.train.images, dataset.train.labels
    steps = len(labels) // BATCH
    gx_epoch, gx_first, gx_box = _gradtx_runner(images, labels)
    th_epoch, th_first, th_box = _torch_runner(images, labels)
    rounds = 3 if quick else 8
    gx_times, th_times = [], []
    for i in range(1, rounds + 1):
        gx_times.append(gx_epoch(i))
        th_times.append(th_epoch(i))
    ratios = sorted(t / g for g, t in zip(gx_times, th_times))
    return {
        "model": "MLP 784-200-10 (examples/mnist), Adam 1e-3, batch 64",
        "epoch_examples": steps * BATCH,
        "gradtx (jit, lax.scan epoch)": {"steps_per_s": steps / statistics.median(gx_times),
                                         "first_epoch_s": gx_first, "final_loss": gx_box["loss"]},
        "torch eager (torch.optim.Adam)": {"steps_per_s": steps / statistics.median(th_times),
                                           "first_epoch_s": th_first, "final_loss": th_box["loss"]},
        "speedup (torch time / gradtx time, per round)": {
            "min": ratios[0], "median": statistics.median(ratios), "max": ratios[-1]},
    }
