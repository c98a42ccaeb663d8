"""Sharding the optimizer state: like the params, or over the data-parallel axis (ZeRO-1)."""

from __future__ import annotations

__all__: list[str] = []
