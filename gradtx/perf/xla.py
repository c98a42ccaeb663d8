"""The XLA:CPU switch that lets ``update_and_apply`` run a step as one loop per leaf.

XLA:CPU leaves sibling multi-output fusion (merging loops that read the same inputs into
one loop) off by default; GPU backends do it already. ``enable_cpu_multi_output_fusion``
turns it on for the process; ``fuses_sibling_outputs`` says whether a backend does it.
"""

from __future__ import annotations

import functools
import os
import re
from typing import cast

import jax
import jax.numpy as jnp

CPU_MULTI_OUTPUT_FUSION = "xla_cpu_use_multi_output_fusion"
_EXTRA_OPTIONS = "--xla_backend_extra_options="


def enable_cpu_multi_output_fusion() -> None:
    """Turn on XLA:CPU's sibling multi-output fusion for this process.

    Adds ``xla_cpu_use_multi_output_fusion`` to ``--xla_backend_extra_options`` in the
    ``XLA_FLAGS`` environment variable (keeping the flags and extra options already
    there). XLA reads ``XLA_FLAGS`` once, when JAX starts its backends, so call this
    before the first JAX computation; afterwards it raises ``RuntimeError`` rather than
    silently doing nothing. Setting the variable yourself works the same::

        XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion python train.py

    It affects every computation of the process (XLA:CPU leaves it off by default; it
    merges loops that read the same inputs). GPU backends fuse sibling outputs already.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _extra_options_include(flags, CPU_MULTI_OUTPUT_FUSION):
        return
    if _backends_started():
        raise RuntimeError(
            "gradtx.enable_cpu_multi_output_fusion(): JAX has already started its backends, "
            "so XLA_FLAGS is no longer read. Call it before the first JAX computation, or "
            f"start the process with XLA_FLAGS={_EXTRA_OPTIONS}{CPU_MULTI_OUTPUT_FUSION}."
        )
    os.environ["XLA_FLAGS"] = _add_extra_option(flags, CPU_MULTI_OUTPUT_FUSION)


def _extra_options_include(flags: str, option: str) -> bool:
    for flag in flags.split():
        if flag.startswith(_EXTRA_OPTIONS):
            names = [kv.split("=")[0] for kv in flag[len(_EXTRA_OPTIONS) :].split(",")]
            if option in names:
                return True
    return False


def _add_extra_option(flags: str, option: str) -> str:
    """``flags`` with ``option`` added to its (first) ``--xla_backend_extra_options``."""
    parts = flags.split()
    for i, flag in enumerate(parts):
        if flag.startswith(_EXTRA_OPTIONS):
            existing = flag[len(_EXTRA_OPTIONS) :]
            parts[i] = f"{_EXTRA_OPTIONS}{existing},{option}" if existing else f"{_EXTRA_OPTIONS}{option}"
            return " ".join(parts)
    return " ".join([*parts, f"{_EXTRA_OPTIONS}{option}"])


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - a future jax moved it
        return False


@functools.cache
def fuses_sibling_outputs(platform: str | None = None) -> bool:
    """Whether XLA on ``platform`` (default: JAX's default backend) compiles two outputs
    that read the same inputs into one loop. Found by compiling a probe, once per platform."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices(platform)[0])
    x = jax.ShapeDtypeStruct((4096,), jnp.float32, sharding=sharding)
    # as_text() is typed ``str | None`` (None: a backend that cannot print its HLO); every
    # backend gradtx runs on prints it
    hlo = cast(str, jax.jit(lambda a, b: (2.0 * a + b, 3.0 * a + b)).lower(x, x).compile().as_text())
    entry = hlo[hlo.index("ENTRY") :]
    return len(re.findall(r"\bfusion\(", entry)) == 1
