"""Kronecker-factored preconditioners: Shampoo and SOAP."""

from __future__ import annotations

__all__: list[str] = []
