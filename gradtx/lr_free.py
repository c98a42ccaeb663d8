"""Learning-rate-free methods' formulas: the distance-over-gradients estimates (one home for DoG, DoWG, Prodigy, D-Adaptation), COCOB, Mechanic, MoMo."""

from __future__ import annotations

__all__: list[str] = []
