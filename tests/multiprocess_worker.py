"""One process of the 2-process test (tests/test_multiprocess.py).

usage: python multiprocess_worker.py PROCESS_ID PORT OUT_DIR
Each process loads only its own training rows, builds the sharded posterior
and computes log-density and gradient; process 0 writes them to OUT_DIR.
"""

import sys

import jax
import numpy as np

import weightspace as ws


def flat_grad(grad):
    return np.concatenate([np.asarray(g.addressable_data(0)).ravel()
                           for g in jax.tree.leaves(grad)])


def main(process_id: int, port: int, out_dir: str) -> None:
    ws.sharding.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                           initialization_timeout=120)
    assert jax.process_count() == 2 and jax.device_count() == 8
    mesh = ws.sharding.make_mesh()
    results = {}

    digits = ws.data.load("digits", mesh=mesh)
    assert digits.is_partial and digits.num_train == 1437
    results["digits_rows"] = np.array([digits.train_offset, len(digits.x_train)])
    post = ws.models.posterior(ws.models.MLP((256, 256), 10), digits, prior_variance=0.2,
                               mesh=mesh)
    value, grad = post.logdensity_and_grad(post.init(jax.random.key(4)))
    results["mlp_value"] = np.asarray(value.addressable_data(0))
    results["mlp_grad"] = flat_grad(grad)

    # CIFAR-shaped rows, generated identically everywhere; each process keeps
    # only its own block, as a loader would.
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import cifar_shaped

    full = cifar_shaped(37)
    start, stop = ws.sharding.process_rows(mesh, full.num_train)
    local = ws.data.Dataset(full.name, full.x_train[start:stop], full.y_train[start:stop],
                            full.x_test, full.y_test, 10, num_train=full.num_train,
                            train_offset=start)
    post = ws.models.posterior(ws.models.ResNet20FRN(10), local, prior_variance=0.2,
                               mesh=mesh)
    value, grad = post.logdensity_and_grad(post.init(jax.random.key(4)))
    results["resnet_value"] = np.asarray(value.addressable_data(0))
    results["resnet_grad"] = flat_grad(grad)

    np.savez(f"{out_dir}/process{process_id}.npz", **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
