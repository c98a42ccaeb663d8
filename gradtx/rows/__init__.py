"""The registry's rows, by family, beside the core table in ``gradtx/registry.py``.

Each module defines ``ROWS``, a list of ``gradtx.registry.Entry``; ``registry.ENTRIES``
is the core table followed by these, in the order of ``FAMILIES``. One table, kept in a
few files so that a family's rows sit in one place."""

FAMILIES = (
    "adam_variants",
    "layerwise",
    "sgd_variants",
    "factored",
    "quasi_newton",
    "muon",
    "recent",
    "schedule_free",
    "lr_free",
    "preconditioned",
    "curvature",
    "sharding",
    "utilities",
    "clipping",
    "wrappers",
    "masking",
    "averaging",
    "schedules",
    "checkpoint",
    "sweeps",
)
