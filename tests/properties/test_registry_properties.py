"""Every optimizer and primitive of the registry, with random valid hyperparameters, on
random trees: the invariants of ``invariants.check_invariants`` (updates shaped and typed
like the gradients, a state that keeps its type across ``update``, ``eval_shape(init)``,
the dtypes asked for, finite steps, and jitted / eager / device runs that agree).

One test per entry and variant, so that every entry runs whatever hypothesis draws: each
gets ``PER_ENTRY`` examples, the profile's ``max_examples`` shared out and rounded up (ci:
2 per entry, the first on a tree with every dtype, ``strategies.mixed_spec``; deep: about
15). Which entries run, and the domain of the few that
take something other than gradients of any rank and dtype, are named in ``strategies``
(``EXCLUDED``, ``MATRIX_ONLY``, ``REAL_ONLY``, ``SECOND_MOMENT_INPUT``, ``REAL_STATISTIC``,
``LEAF_STATISTIC``).
"""

from __future__ import annotations

import math

import chex
from absl.testing import parameterized
from hypothesis import given, settings

from gradtx.registry import Entry

from .invariants import check_invariants, x64_if
from .strategies import TRANSFORMATIONS, Case, cases, hyperparameters

PER_ENTRY = math.ceil(settings.default.max_examples / len(TRANSFORMATIONS))


class RegistryProperties(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True, with_device=True)
    @parameterized.named_parameters((e.name, e) for e in TRANSFORMATIONS)
    def test_invariants(self, entry: Entry):
        """Reference: the eager run on device arrays, and the gradients' and the initial
        state's shapes and dtypes (exact). Two steps of the entry keep every invariant; the
        variant's run (jitted, eager on numpy inputs, eager after device_put) agrees with
        the eager one within the problem's tolerance."""

        @settings(max_examples=PER_ENTRY)
        @given(case=cases(hyperparameters(entry)))
        def invariants_hold(case: Case):
            with x64_if(case.x64):
                check_invariants(self.variant, case)

        invariants_hold()
