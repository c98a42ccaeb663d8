"""Kronecker-factored statistics, their inverse roots and eigenbases (one home, used by Shampoo and SOAP)."""

from __future__ import annotations

__all__: list[str] = []
