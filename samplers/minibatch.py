"""Minibatches drawn without replacement within an epoch, as a pure function of
(key, transition index).

Epoch e = t // steps_per_epoch shuffles the real rows [0, num_data) with
`fold_in(key, e)`; step s = t % steps_per_epoch takes rows
[s * batch_size, (s + 1) * batch_size) of that order. The last
num_data % batch_size rows of each shuffle are left out of that epoch, so every
row is in a given step's batch with probability batch_size / num_data and
num_data / batch_size times the batch sum is an unbiased estimate of the full
sum. Because the batch depends on nothing but (key, t), a resumed run repeats
the batches of an uninterrupted one, and the batches do not depend on how the
data are sharded: a run on 8 devices sees the same rows as on one.

The training arrays stay sharded along the mesh's "data" axis; gathering the
batch compiles to a masked local gather plus an all-reduce of batch_size rows
(not an all-gather of the dataset), and the batch is then constrained to be
sharded along "data" again for the forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def steps_per_epoch(num_data: int, batch_size: int) -> int:
    return num_data // batch_size


def batch_indices(key, t, num_data: int, batch_size: int) -> jax.Array:
    """(batch_size,) int32 row indices of transition t (see module docstring)."""
    per_epoch = steps_per_epoch(num_data, batch_size)
    epoch, step = jnp.divmod(jnp.asarray(t, jnp.int32), per_epoch)
    order = jax.random.permutation(jax.random.fold_in(key, epoch), num_data)
    return jax.lax.dynamic_slice(order, (step * batch_size,), (batch_size,))


def take(arrays, indices, mesh=None):
    """Rows `indices` of every array of the pytree `arrays`, sharded along the
    mesh's "data" axis when a mesh is given and the batch divides over it."""
    batch = jax.tree.map(lambda a: jnp.take(a, indices, axis=0), arrays)
    if mesh is None or indices.shape[0] % mesh.shape["data"]:
        return batch
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.lax.with_sharding_constraint(
        batch, jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec("data")), batch))
