"""Property tests (hypothesis + chex) over the registry: invariants of every optimizer and
primitive, laws of the combinators, random chains, and the tutorials' equivalences.

A package (this file) so that pytest imports ``properties.conftest`` under its own name:
without it this directory's ``conftest.py`` would replace ``tests/conftest.py`` as the
module ``conftest`` that the suites in ``tests/`` import their helpers from.
"""
