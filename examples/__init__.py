"""Runnable examples of gradtx; each subpackage runs on its own (``python -m examples.<name>``)."""
