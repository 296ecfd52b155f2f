"""Starting and ending the JAX processes of the multi-process tests (127.0.0.1,
gloo): a free port, N processes with N x their CPU devices, a bounded wait
that always kills what is left, and the check that a process other than 0
wrote nothing but its own shards of orbax checkpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


def start(argvs, devices: int = 2, cwd=None) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, *map(str, argv)], env=_env(devices), cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for argv in argvs]


def finish(procs, timeout: float = TIMEOUT_S) -> list[str]:
    """Each process's output once all have exited (at most `timeout` seconds in
    all); every process still running when this returns or raises is killed."""
    deadline = time.monotonic() + timeout
    try:
        outputs = [p.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
                   for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{out[-4000:]}"
    return outputs


def job_options(port: int, process: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(process)]


def assert_only_checkpoint_shards(writes: list, who: str) -> None:
    """`writes` (audit events of a process other than 0) touch nothing but
    orbax checkpoint folders."""
    outside = [w for w in writes if "/checkpoints/" not in w[1]]
    assert not outside, f"{who} wrote outside checkpoints: {outside[:10]}"
