"""A sweep trained on MNIST: each group of settings one compiled program.

``run_sweep(problem, name, factory, grid, epochs)`` builds ``gradtx.sweep(factory, grid)``
with ``gradtx.training_diagnostics`` chained after the optimizer, and trains every group
with one jitted epoch: a ``lax.scan`` over the epoch's steps (the model vmapped over the
settings, every setting seeing the same batches) that returns each step's loss and
diagnostics, then the held-out loss and accuracy of every setting. The program is
compiled once per group and called once per epoch.

The model and data come from the MNIST example (``examples/mnist``): its networks, its
cross-entropy, its loader and its batch order (``jax.random.permutation`` with the key of
the epoch).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import gradtx
from examples.mnist.data import Dataset
from examples.mnist.models import MODELS
from examples.mnist.train import cross_entropy

EVAL_CHUNK = {"mlp": 1000, "cnn": 100}  # held-out images per vmapped forward pass


@dataclasses.dataclass(frozen=True)
class Problem:
    """The network, its initial params (the same for every setting) and the data."""

    model: str
    graphdef: Any
    params: Any  # nnx.State of the nnx.Param variables
    train_x: jax.Array
    train_y: jax.Array
    held_x: jax.Array
    held_y: jax.Array
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return int(self.train_y.shape[0]) // self.batch_size  # the last partial batch is dropped

    @property
    def n_params(self) -> int:
        return sum(math.prod(x.shape) for x in jax.tree.leaves(self.params))

    @property
    def data(self) -> tuple[jax.Array, ...]:
        """``(train_x, train_y, held_x, held_y)``: the compiled epoch's data argument."""
        return self.train_x, self.train_y, self.held_x, self.held_y

    def loss(self, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        """One setting's mean cross-entropy on a batch."""
        return cross_entropy(nnx.merge(self.graphdef, params)(x), y)


def make_problem(dataset: Dataset, model: str = "mlp", batch_size: int = 64, seed: int = 0) -> Problem:
    if len(dataset.train.labels) < batch_size:
        raise ValueError(f"{len(dataset.train.labels)} training images, fewer than one batch of {batch_size}")
    graphdef, params = nnx.split(MODELS[model](rngs=nnx.Rngs(seed)), nnx.Param)
    arrays = (dataset.train.images, dataset.train.labels, dataset.held_out.images, dataset.held_out.labels)
    return Problem(model, graphdef, params, *(jnp.asarray(a) for a in arrays), batch_size, seed)


def _evaluate(problem: Problem, params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One setting's held-out loss and accuracy, in chunks of ``EVAL_CHUNK`` images."""
    chunk = min(EVAL_CHUNK[problem.model], x.shape[0])
    n = x.shape[0]
    chunks = -(-n // chunk)
    pad = chunks * chunk - n
    xs = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(chunks, chunk, *x.shape[1:])
    ys = jnp.pad(y, (0, pad), constant_values=-1).reshape(chunks, chunk)
    model = nnx.merge(problem.graphdef, params)

    def one(batch):
        xb, yb = batch
        log_probs = jax.nn.log_softmax(model(xb))
        valid = yb >= 0
        nll = -jnp.take_along_axis(log_probs, jnp.maximum(yb, 0)[:, None], axis=1)[:, 0]
        return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum((jnp.argmax(log_probs, -1) == yb) & valid)

    nll, correct = jax.lax.map(one, (xs, ys))
    return jnp.sum(nll) / n, jnp.sum(correct) / n


def epoch_program(problem: Problem, tx: gradtx.GradientTransformation, *, batched: bool = True,
                  steps: Optional[int] = None, evaluate: bool = True) -> Callable:
    """``epoch(params, state, key, data) -> (params, state, out)``, jitted (``data``:
    ``problem.data``, an argument rather than a constant of the program).

    ``out``: ``loss`` and the recorded diagnostics (``gradtx.diagnostics_in``) of every
    step, with the settings first (``(settings, steps)``; ``(steps,)`` when not
    ``batched``), and, with ``evaluate``, ``held_out_loss`` and ``held_out_accuracy``
    after the epoch. ``steps``: fewer steps than an epoch (benchmarks)."""
    steps = problem.steps_per_epoch if steps is None else steps
    batch = problem.batch_size
    grad = jax.value_and_grad(problem.loss)
    if batched:
        grad = jax.vmap(grad, in_axes=(0, None, None))

    @jax.jit
    def epoch(params, state, key, data):
        train_x, train_y, held_x, held_y = data

        def step(carry, indices):
            params, state = carry
            losses, grads = grad(params, train_x[indices], train_y[indices])
            updates, state = tx.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), {"loss": losses, **gradtx.diagnostics_in(state)}

        order = jax.random.permutation(key, train_y.shape[0])[: steps * batch].reshape(steps, batch)
        (params, state), out = jax.lax.scan(step, (params, state), order)
        if batched:
            out = {k: v.T for k, v in out.items()}  # (settings, steps)
        if evaluate:
            ev = lambda p: _evaluate(problem, p, held_x, held_y)  # noqa: E731
            out["held_out_loss"], out["held_out_accuracy"] = (jax.vmap(ev) if batched else ev)(params)
        return params, state, out

    return epoch


def with_diagnostics(factory: Callable[..., gradtx.GradientTransformation], steps_per_epoch: int) -> Callable:
    """``factory`` with ``training_diagnostics`` chained after it (the distance's reference
    point moved at the start of every epoch), taking the same keyword arguments."""

    @functools.wraps(factory)  # its signature and hints: the sweep checks the grid's names against them
    def build(**hyperparameters):
        return gradtx.chain(factory(**hyperparameters), gradtx.training_diagnostics(reset_every=steps_per_epoch))

    return build


@dataclasses.dataclass
class Run:
    """One sweep trained: its settings, metrics per epoch and per step, and its times.

    ``epochs``: ``(settings, epochs)`` arrays: ``train_loss`` (the mean of the epoch's
    minibatch losses), ``held_out_loss``, ``held_out_accuracy``, ``oscillation`` (the mean
    over the epoch's steps of the share of weights whose update changed sign),
    ``update_size`` (the mean over the steps of ``||u|| / sqrt(n)``: a weight's RMS step),
    ``distance`` (``||p_end - p_start||`` over the epoch), ``path_length`` (the sum of
    ``||u||`` over the epoch), ``cosine``, ``update_ratio`` (means over the steps).
    ``steps``: ``(settings, epochs * steps_per_epoch)`` arrays: ``loss`` and the
    diagnostics as recorded."""

    name: str
    sweep: gradtx.Sweep
    epochs: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    compile_seconds: float
    seconds: float  # compile and train, all groups
    epoch_seconds: float  # the median over epochs of one epoch of all groups (compiled)
    fixed: dict = dataclasses.field(default_factory=dict)  # the arguments every setting shares
    programs: list = dataclasses.field(default_factory=list, repr=False)  # (compiled, params0, state0) per group

    @property
    def settings(self) -> tuple[dict, ...]:
        return self.sweep.settings

    def table(self) -> gradtx.SweepTable:
        return self.sweep.table(self.epochs)

    def index(self, **hyperparameters: Any) -> int:
        """The position of the setting with these hyperparameters."""
        for i, s in enumerate(self.settings):
            if all(_same(s.get(k), v) for k, v in hyperparameters.items()):
                return i
        raise KeyError(f"{self.name}: no setting {hyperparameters}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def finite_or_inf(values: np.ndarray) -> np.ndarray:
    """Losses with a diverged value (NaN, inf) as +inf, so that minima ignore it."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), values, np.inf)


def _per_epoch(steps: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray], n_params: int,
               epochs: int) -> dict[str, np.ndarray]:
    def by_epoch(v):
        return v.reshape(v.shape[0], epochs, -1)

    loss = by_epoch(steps["loss"])
    norm = by_epoch(steps["update_norm"])
    return {
        "train_loss": loss.mean(-1),
        "held_out_loss": held["held_out_loss"],
        "held_out_accuracy": held["held_out_accuracy"],
        "oscillation": by_epoch(steps["oscillation"]).mean(-1),
        "update_size": norm.mean(-1) / math.sqrt(n_params),
        "distance": by_epoch(steps["distance"])[..., -1],
        "path_length": norm.sum(-1),
        "cosine": by_epoch(steps["cosine"]).mean(-1),
        "update_ratio": by_epoch(steps["update_ratio"]).mean(-1),
    }


def run_sweep(problem: Problem, name: str, factory: Callable[..., gradtx.GradientTransformation],
              grid: Any, epochs: int, *, log: Callable[[str], None] = print, **sweep_kwargs: Any) -> Run:
    """Train ``gradtx.sweep(factory + diagnostics, grid, **sweep_kwargs)`` for ``epochs``
    epochs, one compiled program per group of the sweep."""
    start = time.perf_counter()
    sw = gradtx.sweep(with_diagnostics(factory, problem.steps_per_epoch), grid, **sweep_kwargs)
    key = jax.random.key(problem.seed)
    compile_seconds = 0.0
    epoch_times: list[list[float]] = []
    programs: list = []

    def train(group: gradtx.SweepGroup) -> dict[str, np.ndarray]:
        nonlocal compile_seconds
        params = group.replicate(problem.params)
        state = group.tx.init(params)
        t0 = time.perf_counter()
        compiled = epoch_program(problem, group.tx).lower(params, state, key, problem.data).compile()
        compile_seconds += time.perf_counter() - t0
        programs.append((compiled, params, state))
        outs, times = [], []
        for e in range(1, epochs + 1):
            t0 = time.perf_counter()
            params, state, out = compiled(params, state, jax.random.fold_in(key, e), problem.data)
            outs.append(jax.device_get(out))
            times.append(time.perf_counter() - t0)
        epoch_times.append(times)
        return {k: np.concatenate([o[k] for o in outs], axis=1) if np.ndim(outs[0][k]) == 2
                else np.stack([o[k] for o in outs], axis=1) for k in outs[0]}

    gathered = sw.run(train)
    held = {k: gathered.pop(k) for k in ("held_out_loss", "held_out_accuracy")}
    seconds = time.perf_counter() - start
    per_epoch = float(np.median(np.sum(epoch_times, axis=0)))
    run = Run(name, sw, _per_epoch(gathered, held, problem.n_params, epochs), gathered, compile_seconds, seconds,
              per_epoch, dict(sweep_kwargs.get("fixed") or {}), programs)
    best = finite_or_inf(run.epochs["held_out_loss"]).min(axis=1)
    i = int(np.argmin(best))
    log(f"{name:<22} {len(sw):>3} settings, {len(sw.groups)} program{'s' * (len(sw.groups) > 1)}: "
        f"compile {compile_seconds:5.1f} s, total {seconds:6.1f} s; best held-out loss {best[i]:.4f} at "
        f"{_short(sw.settings[i])}")
    return run


def _short(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())


def sweep_against_sequential(problem: Problem, run: Run, factory: Callable[..., gradtx.GradientTransformation],
                             rounds: int = 2) -> dict[str, float]:
    """One epoch of ``run``'s settings as its sweep (its compiled programs, from the start)
    against the same settings one after another: one compiled single-setting epoch (with
    the diagnostics and the evaluation) whose hyperparameters are its arguments, called
    once per setting. Interleaved rounds; the fastest round of each (seconds)."""
    names = list(run.settings[0])
    build = with_diagnostics(factory, problem.steps_per_epoch)
    key = jax.random.fold_in(jax.random.key(problem.seed), 1)

    @jax.jit
    def epoch(hyper, params, key, data):
        tx = build(**{**run.fixed, **hyper})
        return epoch_program(problem, tx, batched=False)(params, tx.init(params), key, data)[2]

    hyper = [{n: jnp.asarray(float(s[n]), jnp.float32) for n in names} for s in run.settings]
    t0 = time.perf_counter()
    compiled = epoch.lower(hyper[0], problem.params, key, problem.data).compile()
    compile_seconds = time.perf_counter() - t0
    jax.block_until_ready(compiled(hyper[0], problem.params, key, problem.data))  # warm

    def sweep() -> float:
        t0 = time.perf_counter()
        for program, params, state in run.programs:
            jax.block_until_ready(program(params, state, key, problem.data))
        return time.perf_counter() - t0

    def one_by_one() -> float:
        t0 = time.perf_counter()
        for h in hyper:
            jax.block_until_ready(compiled(h, problem.params, key, problem.data))
        return time.perf_counter() - t0

    load = os.getloadavg()[0]
    times = [(sweep(), one_by_one()) for _ in range(rounds)]
    return {"settings": len(run.settings), "rounds": rounds, "sweep_epoch_s": min(t[0] for t in times),
            "sweep_compile_s": run.compile_seconds, "sequential_epoch_s": min(t[1] for t in times),
            "sequential_compile_s": compile_seconds, "load": max(load, os.getloadavg()[0])}
