"""Sharpness-aware minimization (Foret et al. 2021) as a transformation."""

from __future__ import annotations

__all__: list[str] = []
