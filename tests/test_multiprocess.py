"""Two JAX processes x 4 CPU devices on 127.0.0.1 (gloo collectives) compute the
same log-density and gradient as one process on one device."""

from pathlib import Path

import jax
import numpy as np
import pytest

import weightspace as ws

from conftest import cifar_shaped, one_device_mesh
from processes import finish, free_port, start

WORKER = Path(__file__).with_name("multiprocess_worker.py")


def _flat(grad):
    return np.concatenate([np.asarray(g).ravel() for g in jax.tree.leaves(grad)])


def _reference(network, data):
    post = ws.models.posterior(network, data, prior_variance=0.2, mesh=one_device_mesh())
    # Host parameters, as in test_sharding: the same compiled program as its
    # one-device reference, which the persistent compilation cache then shares.
    params = jax.device_get(post.init(jax.random.key(4)))
    value, grad = post.logdensity_and_grad(params)
    return np.asarray(value), _flat(grad)


@pytest.mark.multiprocess
def test_two_processes_equal_one_device(tmp_path, digits):
    port = free_port()
    finish(start([[WORKER, i, port, tmp_path] for i in range(2)], devices=4))

    r0 = np.load(tmp_path / "process0.npz")
    r1 = np.load(tmp_path / "process1.npz")
    # each process held only its own block of the 1437 digits rows (1440 padded)
    assert r0["digits_rows"].tolist() == [0, 720] and r1["digits_rows"].tolist() == [720, 717]
    for name, network, data in (("mlp", ws.models.MLP((256, 256), 10), digits),
                                ("resnet", ws.models.ResNet20FRN(10), cifar_shaped(37))):
        value, grad = _reference(network, data)
        for r in (r0, r1):
            np.testing.assert_allclose(r[f"{name}_value"], value, rtol=1e-5)
            np.testing.assert_allclose(r[f"{name}_grad"], grad, rtol=1e-5,
                                       atol=1e-5 * np.abs(grad).max())
