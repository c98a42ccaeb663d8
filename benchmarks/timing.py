"""Interleaved timing: every candidate of a group runs once per round, in turn, so that
the machine's noise hits all of them alike; ratios are taken round by round."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


def minflt() -> int:
    """Minor page faults of this process so far (fresh pages of new buffers)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclass
class Candidate:
    """One implementation of a step. ``run()`` performs one step and blocks until done."""

    name: str
    run: Callable[[], None]
    bytes_per_step: float = 0.0
    times: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)

    def once(self) -> None:
        f0, t0 = minflt(), time.perf_counter()
        self.run()
        self.times.append(time.perf_counter() - t0)
        self.faults.append(minflt() - f0)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def faults_per_step(self) -> float:
        return statistics.median(self.faults) if self.faults else 0.0


def interleave(candidates: list[Candidate], rounds: int, warmup: int = 2,
               too_slow_s: float = 1.0) -> dict[str, float]:
    """``warmup`` untimed rounds, then ``rounds`` timed ones, candidates in turn.

    A candidate whose last warm-up step took longer than ``too_slow_s`` is dropped (it
    would dominate the run); the dropped ones are returned with that time."""
    dropped = {}
    for _ in range(warmup):
        for c in list(candidates):
            t0 = time.perf_counter()
            c.run()
            dt = time.perf_counter() - t0
            if dt > too_slow_s and _ == warmup - 1:
                dropped[c.name] = dt
                candidates.remove(c)
    for _ in range(rounds):
        for c in candidates:
            c.once()
    return dropped


def ratios(a: Candidate, b: Candidate) -> dict[str, float]:
    """min / median / max over rounds of ``time(a) / time(b)`` (same round)."""
    r = [x / y for x, y in zip(a.times, b.times)]
    return {"min": min(r), "median": statistics.median(r), "max": max(r)}
