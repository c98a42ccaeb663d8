"""Random chains of 1 to 5 registry primitives (``strategies.chains``: hyperparameters
drawn within their declared constraints, clashing state fields renamed with
``gradtx.renamed``) keep the invariants of ``invariants.check_invariants``: updates shaped
and typed like the gradients, one flat state record that keeps its type across
``update``, ``eval_shape(init)``, the dtypes asked for, finite steps, and an eager run on
numpy inputs that agrees with the one on device arrays.

The chains run under chex's ``without_jit`` variant only: a chain is plain Python over its
links' ``update``s, and each link's agreement under ``jax.jit`` and ``device_put`` is the
registry property's (``test_registry_properties.py``, every entry under all three
variants), so compiling 200 chains as well would double the suite's compile time for no
new code under test.
"""

from __future__ import annotations

import chex
from hypothesis import given

from .invariants import check_invariants, x64_if
from .strategies import Case, cases, chains


class RandomChains(chex.TestCase):
    @chex.variants(without_jit=True)
    @given(case=cases(chains(1, 5)))
    def test_invariants(self, case: Case):
        """Reference: the eager run of the chain on device arrays, and the gradients' and
        the initial state's shapes and dtypes (exact); the variant's run agrees with it
        within the problem's tolerance."""
        with x64_if(case.x64):
            check_invariants(self.variant, case)
