"""Second-order-flavoured optimizers: Sophia."""

from __future__ import annotations

__all__: list[str] = []
