"""Sharded full-batch log-density and gradient equal the one-device values."""

import jax
import numpy as np
import pytest

import weightspace as ws

from conftest import cifar_shaped, one_device_mesh


def _assert_close_trees(a, b, rtol):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        # Relative to the leaf's scale: entries near zero carry summation noise.
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(),
                                   err_msg=jax.tree_util.keystr(path))


def _compare_8_to_1(network, data, prior_variance):
    assert jax.device_count() == 8, "run with JAX_NUM_CPU_DEVICES=8 (tests/conftest.py)"
    post1 = ws.models.posterior(network, data, prior_variance=prior_variance,
                                mesh=one_device_mesh())
    post8 = ws.models.posterior(network, data, prior_variance=prior_variance,
                                mesh=ws.sharding.make_mesh(num_chains=1, num_data=8))
    assert len(post8.x.sharding.device_set) == 8
    params = jax.device_get(post1.init(jax.random.key(4)))
    v1, g1 = post1.logdensity_and_grad(params)
    v8, g8 = post8.logdensity_and_grad(params)
    np.testing.assert_allclose(v8, v1, rtol=1e-5)
    _assert_close_trees(g8, g1, rtol=1e-5)
    return post8


def test_mlp_on_digits_8_devices_equals_1_device(digits):
    assert digits.num_train % 8 != 0  # 1437 rows: padding is exercised
    _compare_8_to_1(ws.models.MLP((256, 256), 10), digits, 0.2)


def test_resnet20frn_on_cifar_shaped_data_8_devices_equals_1_device():
    num_rows = 37  # not divisible by 8
    data = cifar_shaped(num_rows)
    post8 = _compare_8_to_1(ws.models.ResNet20FRN(10), data, 0.2)
    assert post8.x.shape[0] == 40 and int(post8.mask.sum()) == num_rows


def test_chain_by_data_mesh_places_rows_along_data_only(digits):
    mesh = ws.sharding.make_mesh(num_chains=2, num_data=4)
    assert dict(mesh.shape) == {"chain": 2, "data": 4}
    (x,), mask = ws.sharding.shard_rows(mesh, (digits.x_train,))
    assert x.shape[0] == ws.sharding.padded_size(1437, mesh) == 1440
    # each device holds a quarter of the rows, replicated over the two chains
    assert {s.data.shape[0] for s in x.addressable_shards} == {360}
    np.testing.assert_array_equal(np.asarray(x)[:1437], digits.x_train)
    assert not np.asarray(mask)[1437:].any()


def test_bad_mesh_sizes_are_rejected():
    with pytest.raises(ValueError, match="num_chains=3 x num_data=4"):
        ws.sharding.make_mesh(num_chains=3, num_data=4)
    with pytest.raises(ValueError, match="num_chains=0"):
        ws.sharding.make_mesh(num_chains=0)
