"""examples/mnist/distributed.py: data-parallel MNIST across two processes.

Reference: the same script on one process with 8 devices, the same global batches (16
steps of 64 images, Adam). Two processes with 4 CPU devices each (``jax.distributed``
on localhost, gloo collectives), each feeding its half of every batch, must end with
the same parameters: float32 rtol 1e-5 (atol 1e-7: a few parameters are near zero; the
all-reduce adds the partial gradients in another order; measured: 3e-7 of a leaf's
largest magnitude), and print the same losses. The three processes run at once; every
one is killed when the test ends, whatever happens.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # the whole test; it takes ~10 s of CPU
ARGS = ["--limit", "1024", "--steps", "16", "--batch-size", "64", "--optimizer", "adam", "--log-every", "4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(devices: int, extra: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-m", "examples.mnist.distributed", *ARGS, *extra], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(output: str) -> list[str]:
    return re.findall(r"step (\d+/\d+ loss \S+)", output)


def test_two_processes_equal_one_process_on_8_devices(tmp_path):
    """Reference: the single-process run on 8 devices; float32 rtol 1e-5, atol 1e-7."""
    port = free_port()
    multi = [launch(4, ["--num-processes", "2", "--process-id", str(i), "--coordinator", f"localhost:{port}",
                        *(["--out", str(tmp_path / "multi.npz")] if i == 0 else [])]) for i in range(2)]
    single = launch(8, ["--out", str(tmp_path / "single.npz")])
    procs = [*multi, single]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "process 1 of 2: 4 local devices, 8 in all" in outputs[1]
    assert "process 0 of 1: 8 local devices, 8 in all" in outputs[2]
    assert losses(outputs[0]) == losses(outputs[1]) and len(losses(outputs[0])) == 4
    multi_params, single_params = np.load(tmp_path / "multi.npz"), np.load(tmp_path / "single.npz")
    assert sorted(multi_params) == sorted(single_params) == [
        "['hidden']['bias']", "['hidden']['kernel']", "['out']['bias']", "['out']['kernel']"]
    for name in single_params:
        np.testing.assert_allclose(multi_params[name], single_params[name], rtol=1e-5, atol=1e-7, err_msg=name)
