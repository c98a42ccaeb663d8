"""Learning-rate-free optimizers: prodigy, dadapt_adamw, dog, dowg, cocob, mechanize, momo, momo_adam."""

from __future__ import annotations

__all__: list[str] = []
