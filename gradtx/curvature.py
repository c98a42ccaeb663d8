"""Curvature estimates: Hutchinson's estimator of the Hessian's diagonal (Sophia)."""

from __future__ import annotations

__all__: list[str] = []
