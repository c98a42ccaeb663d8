"""Checkpoints each epoch, resuming, and stopping cleanly on SIGTERM.

``--checkpoint-dir DIR`` writes ``DIR/<model>-<optimizer>/epoch_003`` after each epoch with
``gradtx.save_checkpoint``: the model and its ``nnx.Optimizer`` as one ``nnx.State``, and,
as the checkpoint's info, the run's settings and the losses and accuracies so far. orbax
writes each directory under a temporary name and renames it when complete, so a
directory named ``epoch_NNN`` is always a whole checkpoint. ``--resume`` restores the
latest one (``gradtx.restore_checkpoint`` refuses a checkpoint of another optimizer or
model) and goes on from the next epoch; every epoch's batches come from the seed and the
epoch number, so the resumed run is bit for bit the uninterrupted one.

SIGTERM (a pre-empted job, ``kill``) stops the run where it is: the epoch in progress is
dropped and the process exits with status 143 after saying which checkpoint to resume
from. A SIGTERM that arrives while a checkpoint is being written waits until it is
complete.

Fault injection for tests: with ``GRADTX_MNIST_HOLD_EPOCH=N`` in the environment, the run
prints ``epoch N/E: in progress, holding`` once epoch N's computation is dispatched and
waits there (up to a minute) for a signal, so that a test can send SIGTERM in the middle
of epoch N.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import gradtx

HOLD_ENV = "GRADTX_MNIST_HOLD_EPOCH"
SIGTERM_STATUS = 128 + signal.SIGTERM  # the shell's status of a process stopped by SIGTERM
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


class Preempted(Exception):
    """SIGTERM arrived while ``run`` was in ``epoch``; ``checkpoint`` is its last complete one
    (``None`` if none was written)."""

    def __init__(self, epoch: int = 0, checkpoint: Optional[Path] = None, run: str = ""):
        self.epoch, self.checkpoint, self.run = epoch, checkpoint, run
        super().__init__(self.message())

    def message(self) -> str:
        where = (f"the last checkpoint is {self.checkpoint}: rerun with --resume to go on from there"
                 if self.checkpoint is not None else "no checkpoint was written (see --checkpoint-dir)")
        return f"SIGTERM: stopped {self.run} in epoch {self.epoch}; {where}"


class ResumeError(ValueError):
    """The checkpoint to resume from was written by a run with other settings."""


_writing = False  # a checkpoint is being written: a SIGTERM now waits for it
_pending = False  # a SIGTERM arrived while writing


def _on_sigterm(signum, frame) -> None:
    global _pending
    if _writing:
        _pending = True
    else:
        raise Preempted


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM raises ``Preempted`` in the main thread (the CLI exits with 143)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def raise_if_stopped() -> None:
    """Raise ``Preempted`` if a SIGTERM arrived while a checkpoint was being written."""
    global _pending
    if _pending:
        _pending = False
        raise Preempted


@contextlib.contextmanager
def _deferring_sigterm() -> Iterator[None]:
    """A SIGTERM that arrives inside is kept for ``raise_if_stopped``."""
    global _writing
    _writing = True
    try:
        yield
    finally:
        _writing = False


def run_dir(checkpoint_dir: Path, model_name: str, optimizer_name: str) -> Path:
    return Path(checkpoint_dir) / f"{model_name}-{optimizer_name}"


def epoch_dir(directory: Path, epoch: int) -> Path:
    return directory / f"epoch_{epoch:03d}"


def latest(directory: Path) -> Optional[tuple[int, Path]]:
    """The complete checkpoint of the latest epoch in ``directory`` (orbax's temporary
    directories of an interrupted write have other names), or ``None``."""
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_DIR.match(p.name))]
    return max(found) if found else None


def save(directory: Path, epoch: int, state: Any, *, tx: Any, params: Any, info: dict) -> Path:
    """``epoch_NNN`` in ``directory``, written whole (a SIGTERM meanwhile waits: call
    ``raise_if_stopped`` next)."""
    path = epoch_dir(directory, epoch)
    directory.mkdir(parents=True, exist_ok=True)
    with _deferring_sigterm():
        gradtx.save_checkpoint(path, state, tx=tx, params=params, info=info)
    return path


def hold_if_asked(epoch: int, epochs: int) -> None:
    """Fault injection (``GRADTX_MNIST_HOLD_EPOCH``): wait in epoch ``epoch`` for a signal."""
    if os.environ.get(HOLD_ENV) == str(epoch):
        print(f"epoch {epoch}/{epochs}: in progress, holding", flush=True)
        # short sleeps: a SIGTERM that the kernel hands to another thread (XLA's) only sets
        # a flag that the main thread reads between sleeps; one long sleep would run out
        # first (the test's 60 s wait did, once, on a loaded machine)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
