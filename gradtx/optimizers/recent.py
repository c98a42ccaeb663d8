"""Recent first-order methods: ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp, and the cautious wrapper."""

from __future__ import annotations

__all__: list[str] = []
