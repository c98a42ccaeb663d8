"""Matrix formulas: Newton-Schulz orthogonalization (one home, used by Muon and anything else that needs it)."""

from __future__ import annotations

__all__: list[str] = []
