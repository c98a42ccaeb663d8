"""Schedule-free learning (Defazio et al. 2024): the interpolation primitive, the wrapper and its optimizers."""

from __future__ import annotations

__all__: list[str] = []
