"""The fused step inside an unmodified Flax NNX train step, on ResNet-50 shapes.

    python -m benchmarks.flax_step            # adam and momentum, 10 interleaved rounds
    python -m benchmarks.flax_step --quick    # adam, 5 rounds (< 20 s)

Candidates, one optimizer step on the 161 ResNet-50 parameter shapes (25.6M floats),
params and state donated, gradients given (the forward and backward passes are the same
in every candidate and would only add noise):

- ``nnx.Optimizer``: the NNX train step as users write it, ``@nnx.jit`` over
  ``optimizer.update(model, grads)``, with ``nnx.Optimizer(model, tx, wrt=nnx.Param)``;
- ``gradtx.flax.Optimizer``: the same train step, only the class swapped;
- ``update_and_apply``: ``jax.jit(gradtx.update_and_apply(tx))`` on the pure arrays;
- ``... on flat leaves``: the split/merge train step compiled once more over the flat
  list of the ``nnx.State``'s arrays (``jax.tree.leaves`` outside, ``unflatten`` inside):
  the same XLA program, without NNX's per-call pytree work on the host (flattening and
  rebuilding ``nnx.State`` and its ``Variable`` nodes, about 1 ms for 485 leaves here).
  It separates what the device does from what Python does around it.

The target: ``gradtx.flax.Optimizer`` within 5% of ``update_and_apply`` (the ratio
printed is taken round by round). XLA:CPU's sibling multi-output fusion is switched on
for the process, as ``update_and_apply`` needs (``nnx.Optimizer`` compiled with it too:
it does not change the plain step's loops).
"""

from __future__ import annotations

import gradtx

gradtx.enable_cpu_multi_output_fusion()

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.steps import count_fusions  # noqa: E402
from benchmarks.timing import Candidate, interleave, ratios  # noqa: E402
from benchmarks.trees import numpy_tree  # noqa: E402
from gradtx.flax import Optimizer  # noqa: E402

OPTIMIZERS = {"adam": lambda: gradtx.adam(1e-3), "momentum": lambda: gradtx.sgd(1e-3, momentum=0.9)}
TREE = "resnet50"
# How the train step is jitted: Flax's recommended fast loop (split once, jax.jit over the
# pure state, merge inside: examples/mnist/train.py), then nnx.jit in tree and graph mode,
# which traverse the model and optimizer in Python on every call.
LOOPS = ("jax.jit + nnx.split/merge", "nnx.jit(graph=False)", "nnx.jit")


class ResNet50Params(nnx.Module):
    """The ResNet-50 parameters as ``nnx.Param`` attributes (``layer1/0/conv1/w`` ->
    ``layer1_0_conv1_w``); no forward pass."""

    def __init__(self, seed: int = 0, scale: float = 1.0):
        for name, value in numpy_tree(TREE, seed, scale).items():
            setattr(self, re.sub(r"\W", "_", name), nnx.Param(jnp.asarray(value)))


def nnx_candidate(optimizer_cls, tx, loop: str, compile_log: dict) -> Candidate:
    """One train step ``optimizer.update(model, grads)`` jitted the way ``loop`` says,
    the model and optimizer state donated."""
    graph = loop != "nnx.jit(graph=False)"
    model = ResNet50Params()
    optimizer = optimizer_cls(model, tx, wrt=nnx.Param, graph=None if graph else False)
    grads = nnx.state(ResNet50Params(seed=1, scale=1e-2), nnx.Param)  # as nnx.grad returns them
    name = f"{loop}: {'nnx' if optimizer_cls is nnx.Optimizer else 'gradtx.flax'}.Optimizer"

    if loop == "jax.jit + nnx.split/merge":
        graphdef, state = nnx.split((model, optimizer))

        def pure_step(state, grads):  # the user's train step, minus the gradient
            model, optimizer = nnx.merge(graphdef, state)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer))

        step = jax.jit(pure_step, donate_argnums=(0,))
        args, box = (state, grads), {"state": state}

        def run():
            box["state"] = step(box["state"], grads)
            jax.block_until_ready(box["state"])
    else:
        @nnx.jit(donate_argnums=(0, 1), graph=None if graph else False)
        def step(model, optimizer, grads):  # the user's train step, minus the gradient
            optimizer.update(model, grads)

        args = (model, optimizer, grads)

        def run():
            step(model, optimizer, grads)
            jax.block_until_ready(nnx.state(model))

    t0 = time.perf_counter()
    hlo = step.lower(*args).compile().as_text()
    compile_log[name] = {"compile_s": time.perf_counter() - t0, "fusions": count_fusions(hlo)}
    return Candidate(name, run)


def flat_leaves_candidate(tx, compile_log: dict) -> Candidate:
    """The ``jax.jit + nnx.split/merge`` step of ``gradtx.flax.Optimizer``, called on the
    flat lists of arrays rather than on ``nnx.State`` trees."""
    model = ResNet50Params()
    graphdef, state = nnx.split((model, Optimizer(model, tx, wrt=nnx.Param)))
    grads = nnx.state(ResNet50Params(seed=1, scale=1e-2), nnx.Param)
    leaves, state_def = jax.tree.flatten(state)
    grad_leaves, grads_def = jax.tree.flatten(grads)

    def flat_step(leaves, grad_leaves):
        model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(state_def, leaves))
        optimizer.update(model, jax.tree.unflatten(grads_def, grad_leaves))
        return jax.tree.leaves(nnx.state((model, optimizer)))

    name = "jax.jit + nnx.split/merge: gradtx.flax.Optimizer, on flat leaves"
    t0 = time.perf_counter()
    compiled = jax.jit(flat_step, donate_argnums=(0,)).lower(leaves, grad_leaves).compile()
    compile_log[name] = {"compile_s": time.perf_counter() - t0, "fusions": count_fusions(compiled.as_text())}
    box = {"leaves": leaves}

    def run():
        box["leaves"] = compiled(box["leaves"], grad_leaves)
        jax.block_until_ready(box["leaves"])

    return Candidate(name, run)


def direct_candidate(tx, compile_log: dict) -> Candidate:
    params = {k: jnp.asarray(v) for k, v in numpy_tree(TREE, 0).items()}
    grads = {k: jnp.asarray(v) for k, v in numpy_tree(TREE, 1, 1e-2).items()}
    step = jax.jit(gradtx.update_and_apply(tx), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    compiled = step.lower(params, tx.init(params), grads).compile()
    compile_log["update_and_apply"] = {"compile_s": time.perf_counter() - t0,
                                       "fusions": count_fusions(compiled.as_text())}
    box = {"p": params, "s": tx.init(params)}

    def run():
        box["p"], box["s"] = compiled(box["p"], box["s"], grads)
        jax.block_until_ready(box["p"])

    return Candidate("update_and_apply", run)


def bench(opt: str, loops: tuple[str, ...], rounds: int) -> list[list]:
    tx, log = OPTIMIZERS[opt](), {}
    cands = [nnx_candidate(cls, tx, loop, log) for loop in loops for cls in (nnx.Optimizer, Optimizer)]
    cands += [flat_leaves_candidate(tx, log), direct_candidate(tx, log)]
    interleave(cands, rounds, too_slow_s=60.0)
    by = {c.name: c for c in cands}
    direct = by["update_and_apply"]
    rows = []
    for c in cands:
        r = ratios(c, direct)
        rows.append([opt, c.name, f"{1e3 * c.median:.1f}", f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})",
                     log[c.name]["fusions"], f"{log[c.name]['compile_s']:.2f}"])
    return rows


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flax_step", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="adam, jax.jit + nnx.split/merge, 5 rounds (< 20 s)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    opts = ("adam",) if args.quick else tuple(OPTIMIZERS)
    loops = LOOPS[:1] if args.quick else LOOPS
    rounds = args.rounds or (5 if args.quick else 10)
    t0 = time.perf_counter()
    rows = [row for opt in opts for row in bench(opt, loops, rounds)]
    print(f"\n### Fused step in an NNX train step: ResNet-50 shapes, {rounds} interleaved rounds, medians "
          f"(sibling fusion: {gradtx.fuses_sibling_outputs()}, {jax.default_backend()})\n")
    print(md_table(["optimizer", "step", "ms/step", "time / update_and_apply (min-max)", "array fusions",
                    "compile s"], rows))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
