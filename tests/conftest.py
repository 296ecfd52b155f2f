"""Test-wide set-up: 8 simulated CPU devices (unless the caller chose a count),
so sharded code paths run in every test session."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

# The device count must be set before JAX starts.
import jax
import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    import weightspace as ws

    return ws.data.load("digits")


def cifar_shaped(n, seed=0, num_classes=10):
    """A Dataset of random CIFAR-shaped images and labels (no download)."""
    from weightspace.data import Dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    return Dataset("cifar_shaped", x, y, x[:4], y[:4], num_classes)


def run_command(argv, capsys):
    """(exit status, stdout, stderr) of `weightspace ARGV`, in process, through
    weightspace.cli.main (argparse's own errors exit with status 2)."""
    from weightspace.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_device_mesh():
    import weightspace as ws

    return ws.sharding.make_mesh(devices=jax.devices()[:1])
