"""Training and evaluation: the whole epoch is one jitted ``jax.lax.scan`` over train steps.

The model and its ``nnx.Optimizer`` (holding a gradtx transformation) travel through the
scan as one ``nnx.State``; each step merges them, takes a gradient and calls
``optimizer.update(model, grads)``. Batches are drawn by a ``jax.random.permutation`` with
one key per epoch, so a run is the same on every call on the same machine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

import gradtx
from examples.mnist import checkpoints
from examples.mnist.data import Dataset
from examples.mnist.models import MODELS


class OptimizerSpec(NamedTuple):
    build: Callable[[gradtx.ScalarOrSchedule], gradtx.GradientTransformation]  # learning rate -> tx
    learning_rate: float
    hyperparameters: str
    # what ``update`` needs besides the gradients, from the batch's loss and the objective
    # ``params -> loss`` on this batch (MoMo's ``value``, Sophia's ``obj_fn``)
    update_kwargs: Optional[Callable[[jax.Array, Callable], dict]] = None
    # the params to evaluate from ``(opt_state, params)`` (schedule-free: the average x)
    eval_params: Optional[Callable] = None


def _loss_value(loss, objective):
    return {"value": loss}


def _schedule_free_eval(opt_state, params):
    return gradtx.schedule_free_eval_params(opt_state, params)


# The tutorials' settings.
OPTIMIZERS = {
    "sgd": OptimizerSpec(gradtx.sgd, 1e-2, "lr 1e-2"),
    "momentum": OptimizerSpec(lambda lr: gradtx.sgd(lr, momentum=0.9), 1e-2, "lr 1e-2, momentum 0.9"),
    "nesterov": OptimizerSpec(lambda lr: gradtx.sgd(lr, momentum=0.9, nesterov=True), 1e-2,
                              "lr 1e-2, momentum 0.9, Nesterov"),
    "rmsprop": OptimizerSpec(lambda lr: gradtx.rmsprop(lr, decay=0.9), 1e-3, "lr 1e-3, decay 0.9"),
    "adagrad": OptimizerSpec(gradtx.adagrad, 1e-2, "lr 1e-2"),
    "adadelta": OptimizerSpec(gradtx.adadelta, 1.0, "lr 1.0, rho 0.9"),
    "adam": OptimizerSpec(gradtx.adam, 1e-3, "lr 1e-3, b1 0.9, b2 0.999"),
}
CLASSIC = tuple(OPTIMIZERS)

# The recent methods (docs/optimizers/recent-methods.md), at the settings their papers or
# optax.contrib recommend; the learning-rate-free ones at their nominal 1.0.
OPTIMIZERS.update({
    "muon": OptimizerSpec(lambda lr: gradtx.muon(lr, adam_learning_rate=1e-3), 2e-2,
                          "lr 2e-2 (matrices), Adam 1e-3 (vectors), beta 0.95, Nesterov"),
    "adopt": OptimizerSpec(gradtx.adopt, 1e-3, "lr 1e-3, b1 0.9, b2 0.9999"),
    "ademamix": OptimizerSpec(gradtx.ademamix, 1e-3, "lr 1e-3, b3 0.9999, alpha 5"),
    "simplified_ademamix": OptimizerSpec(gradtx.simplified_ademamix, 1e-5,
                                         "lr 1e-5 (a sum of gradients, not an average), b1 0.99"),
    "madgrad": OptimizerSpec(gradtx.madgrad, 1e-2, "lr 1e-2, momentum 0.9"),
    "acprop": OptimizerSpec(lambda lr: gradtx.acprop(lr, eps=1e-8, eps_root=1e-8), 1e-3, "lr 1e-3, eps 1e-8"),
    "cautious_adamw": OptimizerSpec(lambda lr: gradtx.cautious(gradtx.adamw(lr)), 1e-3, "cautious(adamw(1e-3))"),
    "schedule_free_sgd": OptimizerSpec(gradtx.schedule_free_sgd, 1e-1, "lr 1e-1, b1 0.9",
                                       eval_params=_schedule_free_eval),
    "schedule_free_adamw": OptimizerSpec(gradtx.schedule_free_adamw, 2.5e-3, "lr 2.5e-3, b1 0.9",
                                         eval_params=_schedule_free_eval),
    "prodigy": OptimizerSpec(gradtx.prodigy, 1.0, "lr 1.0 (learning-rate free)"),
    "dadapt_adamw": OptimizerSpec(gradtx.dadapt_adamw, 1.0, "lr 1.0 (learning-rate free)"),
    "dog": OptimizerSpec(gradtx.dog, 1.0, "lr 1.0 (learning-rate free)"),
    "dowg": OptimizerSpec(gradtx.dowg, 1.0, "lr 1.0 (learning-rate free)"),
    "cocob": OptimizerSpec(gradtx.cocob, 1.0, "alpha 100 (learning-rate free)"),
    "mechanize": OptimizerSpec(lambda lr: gradtx.mechanize(gradtx.adam(lr)), 1e-3, "mechanize(adam(1e-3))"),
    "momo": OptimizerSpec(gradtx.momo, 1.0, "lr 1.0, beta 0.9 (Polyak-type, reads the loss)",
                          update_kwargs=_loss_value),
    "momo_adam": OptimizerSpec(gradtx.momo_adam, 1e-2, "lr 1e-2 (Polyak-type, reads the loss)",
                               update_kwargs=_loss_value),
    "sophia": OptimizerSpec(gradtx.sophia, 1e-3, "lr 1e-3, Hessian estimate every 10 steps",
                            update_kwargs=lambda loss, objective: {"obj_fn": objective}),
    "sam": OptimizerSpec(lambda lr: gradtx.sam(gradtx.adam(lr), gradtx.chain(gradtx.normalize(), gradtx.sgd(5e-2))),
                         1e-3, "adam(1e-3), rho 0.05 (two gradients per step)"),
    "galore": OptimizerSpec(lambda lr: gradtx.galore(lr, rank=32, update_proj_gap=200), 1e-3,
                            "lr 1e-3, rank 32, projection every 200 steps"),
    "soap": OptimizerSpec(gradtx.soap, 3e-3, "lr 3e-3, eigenbasis every 10 steps"),
    "shampoo": OptimizerSpec(gradtx.shampoo, 1e-3, "lr 1e-3"),
    "reduce_on_plateau": OptimizerSpec(
        lambda lr: gradtx.chain(gradtx.adam(lr), gradtx.reduce_on_plateau(patience=50, accumulation_size=25)),
        1e-3, "adam(1e-3), lr x0.1 after 50 stalled steps", update_kwargs=_loss_value),
})
LR_SCHEDULES = ("constant", "cosine")


class RunResult(NamedTuple):
    model: str
    optimizer: str
    hyperparameters: str
    step_losses: np.ndarray  # (epochs * steps_per_epoch,) training loss of every step
    epoch_losses: list[float]  # mean training loss of each epoch
    accuracies: list[float]  # held-out accuracy after each epoch
    epoch_seconds: list[float]  # wall time of each epoch (training + evaluation)
    compile_seconds: float
    final_state: Any = None  # the model and optimizer after the last epoch (one nnx.State)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean of ``-log softmax(logits)[label]``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def make_functions(graphdef: nnx.GraphDef, batch_size: int, eval_chunk: int = 1000,
                   spec: Optional[OptimizerSpec] = None):
    """``train_epoch(state, images, labels, key) -> (state, step_losses)`` and
    ``accuracy(state, images, labels) -> fraction correct``, both jitted; ``spec`` says
    what else the optimizer's update reads and which params to evaluate."""
    update_kwargs = spec.update_kwargs if spec is not None else None
    eval_params = spec.eval_params if spec is not None else None

    def train_step(carry, batch_indices):
        state, images, labels = carry
        model, optimizer = nnx.merge(graphdef, state)
        x, y = images[batch_indices], labels[batch_indices]
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
        kwargs = {}
        if update_kwargs is not None:
            model_def, _, rest = nnx.split(model, nnx.Param, ...)

            def objective(params):
                return cross_entropy(nnx.merge(model_def, params, rest)(x), y)

            kwargs = update_kwargs(loss, objective)
        optimizer.update(model, grads, **kwargs)
        return (nnx.state((model, optimizer)), images, labels), loss

    @jax.jit
    def train_epoch(state, images, labels, key):
        steps = images.shape[0] // batch_size  # the last partial batch is dropped
        order = jax.random.permutation(key, images.shape[0])[: steps * batch_size]
        (state, _, _), losses = jax.lax.scan(train_step, (state, images, labels),
                                             order.reshape(steps, batch_size))
        return state, losses

    @jax.jit
    def accuracy(state, images, labels):
        model, optimizer = nnx.merge(graphdef, state)
        if eval_params is not None:
            values = lambda tree: jax.tree.map(lambda v: v[...], tree,  # noqa: E731
                                               is_leaf=lambda v: isinstance(v, nnx.Variable))
            nnx.update(model, eval_params(values(optimizer.opt_state), values(nnx.state(model, nnx.Param))))
        n = images.shape[0]
        chunks = -(-n // eval_chunk)
        pad = chunks * eval_chunk - n
        x = jnp.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(chunks, eval_chunk, *images.shape[1:])
        y = jnp.pad(labels, (0, pad), constant_values=-1).reshape(chunks, eval_chunk)
        correct = jax.lax.map(lambda b: jnp.sum(jnp.argmax(model(b[0]), axis=-1) == b[1]), (x, y))
        return jnp.sum(correct) / n

    return train_epoch, accuracy


def train(model_name: str, optimizer_name: str, data: Dataset, *, epochs: int, batch_size: int = 64,
          seed: int = 0, progress: bool = True, lr_schedule: str = "constant",
          checkpoint_dir: Optional[Path] = None, resume: bool = False) -> RunResult:
    """Train ``model_name`` with the named optimizer; every run starts from the same
    initial parameters and sees the same batches (both from ``seed``).

    ``lr_schedule="cosine"`` decays the optimizer's learning rate to 0 over the run
    (``gradtx.cosine_decay_schedule``); "constant" keeps the tutorials' fixed rate.
    ``checkpoint_dir``: a checkpoint after each epoch, ``resume``: go on from the latest
    one there (``examples/mnist/checkpoints.py``); SIGTERM raises ``checkpoints.Preempted``
    where the CLI installs the handler."""
    spec = OPTIMIZERS[optimizer_name]
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"train(lr_schedule={lr_schedule!r}): choose from {LR_SCHEDULES}")
    total_steps = epochs * (len(data.train.labels) // batch_size)
    learning_rate = spec.learning_rate if lr_schedule == "constant" else \
        gradtx.cosine_decay_schedule(spec.learning_rate, max(total_steps, 1))
    hyperparameters = spec.hyperparameters + ("" if lr_schedule == "constant" else ", cosine decay")
    if len(data.train.labels) < batch_size:
        raise ValueError(f"train: {len(data.train.labels)} training images, fewer than one batch "
                         f"of {batch_size}")
    model = MODELS[model_name](rngs=nnx.Rngs(seed))
    tx = spec.build(learning_rate)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    params = nnx.state(model, nnx.Param)  # what the checkpoints are checked against
    images, labels = jnp.asarray(data.train.images), jnp.asarray(data.train.labels)
    held_images, held_labels = jnp.asarray(data.held_out.images), jnp.asarray(data.held_out.labels)
    key = jax.random.key(seed)
    name = f"{model_name}/{optimizer_name}"
    # what a checkpoint must agree with to be resumed by this run
    run = dict(model=model_name, optimizer=optimizer_name, epochs=epochs, batch_size=batch_size, seed=seed,
               lr_schedule=lr_schedule, train_images=len(data.train.labels))
    directory = None if checkpoint_dir is None else checkpoints.run_dir(checkpoint_dir, model_name, optimizer_name)
    done, last_saved = 0, None  # the last epoch finished (with its checkpoint, when there are checkpoints)
    try:
        train_epoch, accuracy = make_functions(graphdef, batch_size, spec=spec)
        start = time.perf_counter()
        train_epoch = train_epoch.lower(state, images, labels, key).compile()
        accuracy = accuracy.lower(state, held_images, held_labels).compile()
        result = RunResult(model_name, optimizer_name, hyperparameters, np.zeros(0, np.float32),
                           [], [], [], time.perf_counter() - start)
        step_losses: list[np.ndarray] = []
        if directory is not None and resume:
            found = checkpoints.latest(directory)
            if found is None:
                tqdm.write(f"{name:<14} no checkpoint in {directory}: starting from epoch 1")
            else:
                done, last_saved = found
                state = _resume(last_saved, run, state, tx, params, result, step_losses)
                tqdm.write(f"{name:<14} resumed from {last_saved} (epoch {done}/{epochs})")
        # disable=None: the bar shows on a terminal and stays silent without one (CI, pipes).
        bar = tqdm(range(done + 1, epochs + 1), desc=name, unit="epoch", disable=None if progress else True,
                   leave=False)
        for epoch in bar:
            start = time.perf_counter()
            next_state, losses = train_epoch(state, images, labels, jax.random.fold_in(key, epoch))
            checkpoints.hold_if_asked(epoch, epochs)
            acc = float(accuracy(next_state, held_images, held_labels))
            losses = np.asarray(losses)
            seconds = time.perf_counter() - start
            state = next_state
            step_losses.append(losses)
            result.epoch_losses.append(float(losses.mean()))
            result.accuracies.append(acc)
            result.epoch_seconds.append(seconds)
            bar.set_postfix(loss=f"{losses.mean():.4f}", acc=f"{acc:.2%}")
            tqdm.write(f"{name:<14} epoch {epoch:>2}/{epochs}: train loss {losses.mean():.4f}, "
                       f"held-out accuracy {acc:.2%}, {seconds:.2f} s")
            if directory is not None:
                info = dict(run=run, step_losses=np.concatenate(step_losses).tolist(),
                            epoch_losses=result.epoch_losses, accuracies=result.accuracies,
                            epoch_seconds=result.epoch_seconds)
                last_saved, done = checkpoints.save(directory, epoch, state, tx=tx, params=params, info=info), epoch
                tqdm.write(f"{name:<14} checkpoint: wrote {last_saved}")
                checkpoints.raise_if_stopped()
            done = epoch
        bar.close()
    except checkpoints.Preempted:
        raise checkpoints.Preempted(done + 1, last_saved, name) from None
    return result._replace(step_losses=np.concatenate(step_losses), final_state=state)


def _resume(path: Path, run: dict, state, tx, params, result: RunResult, step_losses: list) -> Any:
    """The state saved in ``path``, after checking that this run wrote it; the results of
    its epochs go back into ``result`` and ``step_losses``."""
    info = gradtx.checkpoint_info(path)
    if info.get("run") != run:
        raise checkpoints.ResumeError(f"--resume: {path} was written by the run {info.get('run')}, "
                                      f"not by this one {run}")
    state = gradtx.restore_checkpoint(path, state, tx=tx, params=params)
    step_losses.append(np.asarray(info["step_losses"], np.float32))
    result.epoch_losses.extend(info["epoch_losses"])
    result.accuracies.extend(info["accuracies"])
    result.epoch_seconds.extend(info["epoch_seconds"])
    return state
