"""Muon: momentum orthogonalized by Newton-Schulz for matrices, Adam for the other leaves."""

from __future__ import annotations

__all__: list[str] = []
