"""Differentially private aggregation (DP-SGD) and optax.contrib's small transformations (normalize, split_real_and_imaginary)."""

from __future__ import annotations

__all__: list[str] = []
