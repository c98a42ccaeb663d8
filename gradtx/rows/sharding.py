"""Registry rows of this family (see ``gradtx/rows/__init__.py``)."""

from __future__ import annotations

from gradtx.rows._entry import Entry

ROWS: list[Entry] = []
