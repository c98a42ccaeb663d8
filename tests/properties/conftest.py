"""Hypothesis profiles of the property tests, chosen by ``GRADTX_HYPOTHESIS_PROFILE``:

- ``ci`` (the default, ``make test``): 200 examples per property, derandomized so that
  every run (and CI) draws the same examples;
- ``deep`` (``make test-deep``): 2,000 examples per property, derandomized too (a fixed
  seed per test: no unseeded randomness), so a failure found there reproduces; its trees
  draw leaves from every shape x dtype (``strategies.LEAF_KINDS``), the ci profile's from
  a few that share compiled kernels.

No deadline (the first example of a test compiles its kernels), no example database
(nothing written into the checkout), and the ``too_slow`` health check off: an example
that compiles an optimizer under ``jax.jit`` takes a few tenths of a second by design.
``differing_executors`` is off because ``chex.variants`` runs one ``@given`` body from a
test-case instance per variant.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile("ci", max_examples=200, **_COMMON)
settings.register_profile("deep", max_examples=2_000, **_COMMON)
PROFILE = os.environ.get("GRADTX_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
