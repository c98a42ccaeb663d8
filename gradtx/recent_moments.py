"""The moment primitives of the recent first-order methods (ADOPT, AdEMAMix, MADGRAD, AdaBelief-style ACProp) and the cautious mask."""

from __future__ import annotations

__all__: list[str] = []
