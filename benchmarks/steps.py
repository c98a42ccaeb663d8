"""The step candidates: the bandwidth triad, jitted JAX steps (optax, gradtx plain, gradtx
fused = ``gradtx.update_and_apply``, gradtx packed) with donated params and state, and
torch.optim (for-loop, foreach, fused).

The runner turns on XLA:CPU's sibling multi-output fusion for the process
(``gradtx.enable_cpu_multi_output_fusion``). "optax" is compiled without it, as optax
users get it (``compiler_options`` can clear the backend's extra options per compile,
not add them); "optax (MOF)" with it."""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import gradtx
from benchmarks.timing import Candidate
from benchmarks.trees import n_floats, numpy_tree

# name -> (gradtx factory, optax factory, torch (class, kwargs) or None, per-element state arrays)
OPTIMIZERS: dict[str, tuple[Callable, Callable, tuple[str, dict] | None, int]] = {
    "sgd": (lambda: gradtx.sgd(1e-3), lambda: optax.sgd(1e-3), ("SGD", {"lr": 1e-3}), 0),
    "momentum": (lambda: gradtx.sgd(1e-3, momentum=0.9), lambda: optax.sgd(1e-3, momentum=0.9),
                 ("SGD", {"lr": 1e-3, "momentum": 0.9}), 1),
    "nesterov": (lambda: gradtx.sgd(1e-3, momentum=0.9, nesterov=True),
                 lambda: optax.sgd(1e-3, momentum=0.9, nesterov=True),
                 ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}), 1),
    "rmsprop": (lambda: gradtx.rmsprop(1e-3), lambda: optax.rmsprop(1e-3),
                ("RMSprop", {"lr": 1e-3, "alpha": 0.9}), 1),
    "adagrad": (lambda: gradtx.adagrad(1e-2), lambda: optax.adagrad(1e-2), ("Adagrad", {"lr": 1e-2}), 1),
    "adadelta": (lambda: gradtx.adadelta(1.0), lambda: optax.adadelta(1.0), ("Adadelta", {"lr": 1.0}), 2),
    "adam": (lambda: gradtx.adam(1e-3), lambda: optax.adam(1e-3), ("Adam", {"lr": 1e-3}), 2),
}


def _same_call(name: str, n_state: int, torch_spec: tuple[str, dict] | None = None):
    return (lambda: getattr(gradtx, name)(1e-3), lambda: getattr(optax, name)(1e-3), torch_spec, n_state)


# The element-wise optimizers of the catalogue, on ResNet-50 shapes (the full run's
# "only"): gradtx and optax called alike (optax's rprop applies its steps one iteration
# late, and optax's yogi and adan differ from the papers: the same work per step).
CATALOGUE: dict[str, tuple[Callable, Callable, tuple[str, dict] | None, int]] = {
    "nadamw": _same_call("nadamw", 2),
    "adamaxw": _same_call("adamaxw", 2),
    "radam": _same_call("radam", 2, ("RAdam", {"lr": 1e-3})),
    "adabelief": _same_call("adabelief", 2),
    "yogi": _same_call("yogi", 2),
    "adan": _same_call("adan", 4),
    "sign_sgd": _same_call("sign_sgd", 0),
    "signum": _same_call("signum", 1),
    "rprop": _same_call("rprop", 2, ("Rprop", {"lr": 1e-3})),
    "optimistic_gradient_descent": _same_call("optimistic_gradient_descent", 1),
    "optimistic_adam": _same_call("optimistic_adam", 3),
}
OPTIMIZERS.update(CATALOGUE)


def step_bytes(tree: str, n_state: int) -> float:
    """Bytes an ideal step moves: read p, g and the state, write p and the state, once."""
    return 4.0 * n_floats(tree) * (3 + 2 * n_state)


def triad(n: int) -> Candidate:
    """``a = a + b + s * c``, jitted, ``a`` donated: 4 arrays moved, the update step's
    access pattern (read and write the same buffer) without its arithmetic."""
    f = jax.jit(lambda a, b, c: a + b + 2.0 * c, donate_argnums=(0,))
    box = {"a": jnp.zeros(n, jnp.float32)}
    b, c = jnp.ones(n, jnp.float32), jnp.full(n, 0.5, jnp.float32)

    def run():
        box["a"] = f(box["a"], b, c)
        box["a"].block_until_ready()

    return Candidate("triad", run, 16.0 * n)


def plain_step(tx) -> Callable:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step


# Per-compile options that drop the process's --xla_backend_extra_options (the
# multi-output fusion switch): XLA's default fusion.
XLA_DEFAULT = {"xla_backend_extra_options": ""}


def jax_candidate(name: str, step: Callable, params: Any, state: Any, grads: Any, nbytes: float,
                  compile_log: dict, compiler_options: dict | None = None) -> Candidate:
    """``step`` jitted with params and state donated; compile time and HLO recorded."""
    jitted = jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options)
    t0 = time.perf_counter()
    compiled = jitted.lower(params, state, grads).compile()
    compile_log[name] = {"compile_s": time.perf_counter() - t0,
                         "fusions": count_fusions(compiled.as_text())}
    box = {"p": params, "s": state}

    def run():
        box["p"], box["s"] = compiled(box["p"], box["s"], grads)
        jax.block_until_ready(box["p"])

    return Candidate(name, run, nbytes)


def count_fusions(hlo: str) -> int:
    """Fusion instructions of the entry computation that output an array or a tuple of
    arrays (scalar index and bias-correction fusions are not counted): each is one pass
    over its operands, however many outputs it writes."""
    entry = hlo[hlo.index("ENTRY"):]
    shapes = [line.split(" fusion(")[0].split(" = ", 1)[-1] for line in entry.splitlines() if " fusion(" in line]
    return sum(bool(re.search(r"f(?:16|32|64)\[[0-9][0-9,]*\]", shape)) for shape in shapes)


def jax_candidates(opt: str, tree: str, impls: tuple[str, ...], compile_log: dict) -> list[Candidate]:
    make_gradtx, make_optax, _, n_state = OPTIMIZERS[opt]
    nbytes = step_bytes(tree, n_state)
    P, G = numpy_tree(tree, 0), numpy_tree(tree, 1, 1e-2)
    fresh = lambda t: jax.tree.map(jnp.asarray, t)  # noqa: E731
    out = []
    for impl in impls:
        if impl in ("optax", "optax (MOF)"):
            tx, params = make_optax(), fresh(P)
            options = XLA_DEFAULT if impl == "optax" else None
            out.append(jax_candidate(impl, plain_step(tx), params, tx.init(params), fresh(G), nbytes, compile_log,
                                     options))
        elif impl == "gradtx":
            tx, params = make_gradtx(), fresh(P)
            out.append(jax_candidate("gradtx", plain_step(tx), params, tx.init(params), fresh(G), nbytes, compile_log))
        elif impl == "gradtx fused":
            tx, params = make_gradtx(), fresh(P)
            out.append(jax_candidate("gradtx fused", gradtx.update_and_apply(tx), params,
                                     tx.init(params), fresh(G), nbytes, compile_log))
        elif impl in ("gradtx packed", "gradtx packed+fused"):
            packing = gradtx.Packing(P)
            tx, params, grads = make_gradtx(), packing.pack(fresh(P)), packing.pack(fresh(G))
            step = plain_step(tx) if impl == "gradtx packed" else gradtx.update_and_apply(tx)
            out.append(jax_candidate(impl, step, params, tx.init(params), grads, nbytes, compile_log))
    return out


def torch_candidates(opt: str, tree: str, modes: tuple[str, ...]) -> list[Candidate]:
    import torch

    _, _, torch_spec, n_state = OPTIMIZERS[opt]
    if torch_spec is None:
        return []  # torch.optim has no such optimizer
    cls_name, kwargs = torch_spec
    cls = getattr(torch.optim, cls_name)
    P, G = numpy_tree(tree, 0), numpy_tree(tree, 1, 1e-2)
    out = []
    for mode in modes:
        flags = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[mode]
        params = [torch.tensor(v, requires_grad=True) for v in P.values()]
        for p, g in zip(params, G.values()):
            p.grad = torch.tensor(g)
        try:
            optimizer = cls(params, **kwargs, **flags)
        except (TypeError, RuntimeError):
            continue  # this optimizer has no such implementation
        out.append(Candidate(f"torch {mode}", optimizer.step, step_bytes(tree, n_state)))
    return out
