"""Argument checks shared by the samplers, run before anything is traced.

Each raises ValueError or TypeError naming the argument, the value received
and what is allowed. The checks of plain numbers and choices are
weightspace.checks' (re-exported here); these are the samplers' own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from weightspace.checks import choice, int_at_least, positive_float, positive_int, probability

__all__ = ["int_at_least", "positive_int", "positive_float", "probability", "choice",
           "prng_key", "chains_fit_mesh", "chain_init", "eval_inputs", "start_positions"]


def prng_key(name: str, value):
    """A typed PRNG key from a typed key, a raw uint32 key or an int seed."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return jax.random.key(int(value))
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got shape {value.shape}")
        return value
    arr = np.asarray(value) if not isinstance(value, jax.Array) else value
    if arr.dtype == np.uint32 and arr.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(arr))
    raise TypeError(f"{name} must be a jax.random.key(...), got {value!r}")


def chains_fit_mesh(num_chains: int, mesh) -> None:
    if mesh is None or "chain" not in mesh.axis_names:
        return
    size = mesh.shape["chain"]
    if num_chains % size:
        raise ValueError(f"num_chains={num_chains} is not allowed on a mesh whose 'chain' "
                         f"axis has {size} devices: use a multiple of {size}")


def chain_init(name: str, init, num_chains: int):
    """Check that every leaf of `init` has a leading num_chains axis."""
    leaves = jax.tree.leaves(init)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    for path, leaf in jax.tree_util.tree_leaves_with_path(init):
        shape = np.shape(leaf)
        if not shape or shape[0] != num_chains:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {shape}: every leaf needs a "
                f"leading axis of num_chains={num_chains} (one starting point per chain)")
        if not np.all(np.isfinite(np.asarray(jax.device_get(leaf)))):
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} holds NaN or inf")
    return jax.tree.map(jnp.asarray, init)


def eval_inputs(name: str, eval_x, target, positions):
    """Check that eval_x can be predicted on; returns it as a (replicated) array."""
    if eval_x is None:
        return None
    if target.predict_of is None:
        raise ValueError(f"{name} was given with a callable target: also give "
                         f"predict_fn(position, eval_x)")
    x = np.asarray(eval_x)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or inf")
    if target.posterior is not None:
        expected = tuple(target.posterior.input_shape)
        if x.ndim < 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{name} has shape {x.shape}: the network takes inputs of "
                             f"shape (n, {', '.join(map(str, expected))})")
    one = jax.tree.map(lambda a: a[0], positions)
    try:
        jax.eval_shape(target.predict_of(target.tree), one, jax.ShapeDtypeStruct(x.shape,
                                                                                x.dtype))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} of shape {x.shape} cannot be predicted on: {err}") from err
    if target.mesh is not None:
        return jax.device_put(x, NamedSharding(target.mesh, PartitionSpec()))
    return jnp.asarray(x)


def start_positions(name: str, init, target, key, num_chains: int):
    """Chains' starting positions: `init` checked (leading num_chains axis), or
    for a Posterior its own initializer with independent keys."""
    if init is None:
        if target.posterior is None:
            raise ValueError(f"{name} is required for a callable target: a pytree whose "
                             f"leaves have a leading num_chains axis")
        return target.init_positions(key, num_chains)
    return chain_init(name, init, num_chains)
