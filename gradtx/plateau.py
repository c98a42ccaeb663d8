"""Reduce the learning rate when the loss stops improving (optax.contrib.reduce_on_plateau)."""

from __future__ import annotations

__all__: list[str] = []
