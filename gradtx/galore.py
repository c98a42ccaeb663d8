"""GaLore: gradients projected onto a low-rank subspace for the inner optimizer's state."""

from __future__ import annotations

__all__: list[str] = []
