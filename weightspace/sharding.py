"""Meshes, data placement and multi-process start-up.

A weightspace mesh has two axes: "chain" (independent Markov chains) and
"data" (rows of the training set). Parameters are replicated within a chain;
the dataset is sharded along "data" and replicated along "chain", so the
full-batch log-likelihood of each chain is a sum over "data" shards that XLA
computes from the input shardings (jit + NamedSharding).

Rows are padded up to a multiple of the "data" axis with rows whose mask is
False; the likelihood ignores them, so nothing is silently dropped.
"""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from weightspace.checks import positive_int

CHAIN = "chain"
DATA = "data"

__all__ = ["CHAIN", "DATA", "make_mesh", "data_sharding", "replicated", "replicate",
           "padded_size", "process_rows", "process_rows_fn", "shard_rows", "initialize"]


def make_mesh(num_chains: int = 1, num_data: int | None = None, *, devices=None) -> Mesh:
    """A ("chain", "data") mesh over `devices` (default: all global devices).

    num_data defaults to len(devices) // num_chains; num_chains * num_data must
    not exceed the number of devices (the first ones are used).

    The axes are `AxisType.Auto`: sharding is propagated by the compiler from
    the placement of data and parameters, so any flax network (convolutions,
    embeddings, scans) runs unchanged; Explicit axes would require every op of
    every network to have a sharding rule.
    """
    devices = list(jax.devices() if devices is None else devices)
    num_chains = positive_int("num_chains", num_chains)
    if num_data is not None:
        num_data = positive_int("num_data", num_data)
    if num_data is None:
        num_data = max(len(devices) // num_chains, 1)
    if num_chains * num_data > len(devices):
        raise ValueError(
            f"num_chains={num_chains} x num_data={num_data} needs "
            f"{num_chains * num_data} devices, but only {len(devices)} are available")
    devices = devices[: num_chains * num_data]
    return jax.make_mesh((num_chains, num_data), (CHAIN, DATA),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh) or DATA not in mesh.axis_names:
        raise TypeError(f"mesh must be a jax.sharding.Mesh with a {DATA!r} axis (see "
                        f"ws.sharding.make_mesh), got {mesh!r}")
    return mesh


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split along "data", replicated along every other axis."""
    return NamedSharding(_check_mesh(mesh), P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(_check_mesh(mesh), P())


def replicate(tree, mesh: Mesh):
    """Every array of `tree` (numpy, or jax on any device; PRNG keys too)
    replicated over all devices of `mesh`. In a multi-process job every
    process passes the same values and gets the global arrays (a device_put
    of an array on one local device to devices of other processes is refused)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        local = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, local, local.shape)

    return jax.tree.map(put, tree)


def padded_size(num_rows: int, mesh: Mesh) -> int:
    """Smallest multiple of the "data" axis size that holds `num_rows`."""
    shards = _check_mesh(mesh).shape[DATA]
    return max(math.ceil(num_rows / shards), 1) * shards


def _process_block(mesh: Mesh, num_rows: int) -> tuple[int, int]:
    """Rows [start, stop) of the padded array that this process's devices hold."""
    padded = padded_size(num_rows, mesh)
    index_map = data_sharding(mesh).addressable_devices_indices_map((padded,))
    blocks = {rows.indices(padded)[:2] for (rows,) in index_map.values()}
    start, stop = min(a for a, _ in blocks), max(b for _, b in blocks)
    if sum(b - a for a, b in blocks) != stop - start:
        raise ValueError(
            f"this process's devices hold non-contiguous rows of the {DATA!r} axis of "
            f"mesh {mesh}; build the mesh with ws.sharding.make_mesh so each process "
            f"owns one block of rows")
    return start, stop


def process_rows(mesh: Mesh, num_rows: int) -> tuple[int, int]:
    """Real (unpadded) training rows [start, stop) this process must load."""
    start, stop = _process_block(mesh, num_rows)
    return min(start, num_rows), min(stop, num_rows)


def process_rows_fn(mesh: Mesh):
    """`process_rows` with the mesh bound, in the form `ws.data` loaders take."""
    return lambda num_rows: process_rows(mesh, num_rows)


def shard_rows(mesh: Mesh, arrays, *, num_rows: int | None = None, offset: int = 0):
    """Place host arrays on `mesh`, rows sharded along "data", padded.

    arrays: a tuple of numpy arrays with the same leading length holding the
        global rows [offset, offset + len) of a dataset of `num_rows` rows
        (default: all of them). In a multi-process job each process passes its
        own rows (or all rows, from which it takes its own).
    Returns (placed arrays, mask): global jax.Arrays of `padded_size(num_rows)`
    rows, and a boolean mask that is True on real rows.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    held = len(arrays[0])
    if any(len(a) != held for a in arrays):
        raise ValueError(f"arrays must share their leading length, got "
                         f"{[len(a) for a in arrays]}")
    num_rows = held if num_rows is None else num_rows
    padded = padded_size(num_rows, mesh)
    start, stop = _process_block(mesh, num_rows)
    lo, hi = start, min(stop, num_rows)  # the real rows among those this process holds
    if lo < hi and not (offset <= lo and hi <= offset + held):
        raise ValueError(
            f"this process must place rows [{lo}, {hi}) of {num_rows}, but was given "
            f"rows [{offset}, {offset + held}); load with ws.data.load(..., mesh=mesh) "
            f"or pass all rows")
    sharding = data_sharding(mesh)

    def place(a):
        local = a[lo - offset: hi - offset] if lo < hi else a[:0]
        pad = (stop - start) - len(local)
        if pad:
            local = np.concatenate([local, np.zeros((pad, *a.shape[1:]), a.dtype)])
        return jax.make_array_from_process_local_data(sharding, local,
                                                      (padded, *a.shape[1:]))

    mask = np.arange(start, stop) < num_rows
    placed = tuple(place(a) for a in arrays)
    mask = jax.make_array_from_process_local_data(sharding, mask, (padded,))
    return placed, mask


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, cpu_collectives: str | None = "gloo",
               **kwargs) -> None:
    """Start a multi-process JAX job (TPU pods, multi-GPU hosts, CPU processes).

    Wraps `jax.distributed.initialize`; on TPU pods and SLURM/GKE clusters the
    three arguments are detected. `cpu_collectives` selects the cross-process
    collectives of CPU devices (gloo), which multi-process CPU runs need and
    accelerator runs ignore. Call it once, first, before any JAX computation.
    Calling it again in an initialized process does nothing.
    """
    if jax.distributed.is_initialized():
        return
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               **kwargs)


# Barrier ids are numbered: every process passes the same barriers in the same
# order, and the coordination service may refuse an id it has seen.
_barrier_ids = itertools.count()
BARRIER_TIMEOUT_S = 1800.0  # skews are compile times and file writes: minutes at most


def wait_for_processes(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait until every process of a multi-process job gets here; nothing in a
    one-process run.

    A barrier of JAX's coordination service, not a collective: a collective
    would set up the CPU (gloo) or accelerator communicator, and gloo gives its
    set-up a fixed 30 s, so processes arriving further apart (one was writing
    files or figures the others skip) would fail there. Called before each
    stage of a multi-stage job, it keeps the stage's first collective inside
    that limit. `name` says where, in errors.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the job's client, as orbax's multihost reaches it

    barrier = f"weightspace/{next(_barrier_ids)}/{name}"
    distributed.global_state.client.wait_at_barrier(barrier, int(timeout_s * 1000))
