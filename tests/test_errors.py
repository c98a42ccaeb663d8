"""Bad hyperparameters fail when the factory is called, with a short message naming the
call and the argument; the bad arguments come from the registry (``Entry.bad``). Traced
values and schedules are not checked. The misuse table (``update`` before ``init``, a
state or gradients that do not fit, integer params, ...) is ``test_misuse.py``."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.registry import ENTRIES


def _shown(v) -> str:
    """An argument in a test id: functions and transformations by name (their reprs carry
    addresses, which differ between pytest-xdist workers)."""
    return getattr(v, "__name__", None) or (type(v).__name__ if callable(v) or hasattr(v, "update") else repr(v))


BAD = [pytest.param(e, bad, id=f"{e.name}({','.join(f'{k}={_shown(v)}' for k, v in bad.kwargs.items())})")
       for e in ENTRIES for bad in e.bad]


@pytest.mark.parametrize("entry, bad", BAD)
def test_bad_hyperparameter_fails_at_construction_naming_call_and_argument(entry, bad):
    """Reference: the registry row's error type and message, exactly:
    ``gradtx.<call>(<arg>=<value>): <rule>``, naming the argument that is wrong."""
    with pytest.raises(bad.error) as info:
        entry.obj(**bad.kwargs)
    message = str(info.value)
    wrong = [k for k in bad.kwargs if f"({k}=" in message]
    assert len(wrong) == 1, message
    assert message == f"gradtx.{entry.name}({wrong[0]}={bad.kwargs[wrong[0]]!r}): {bad.message}"


def test_validation_happens_once_naming_the_call_the_user_made():
    """The stages an optimizer builds are not checked again: the error names ``rmsprop``
    and its argument, not ``scale_by_rms(decay=...)``."""
    with pytest.raises(ValueError, match=r"^gradtx\.rmsprop\(decay=2\.0\)"):
        gradtx.rmsprop(1e-3, decay=2.0)
    with pytest.raises(ValueError, match=r"^gradtx\.scale_by_rms\(decay=2\.0\)"):
        gradtx.scale_by_rms(decay=2.0)


@pytest.mark.parametrize("factory", [gradtx.sgd, gradtx.adam, gradtx.rmsprop, gradtx.adagrad])
def test_traced_hyperparameters_skip_the_check(factory):
    """Inside jit the value is unknown at construction: no check, the math runs."""
    params = jnp.ones(3)

    @jax.jit
    def step(lr):
        tx = factory(lr)
        updates, _ = tx.update(jnp.ones(3), tx.init(params), params)
        return updates

    assert np.all(np.isfinite(step(jnp.asarray(-0.5))))


def test_schedules_are_not_checked_at_construction():
    gradtx.sgd(lambda count: -0.1 * count)  # a schedule's values are unknown until called
