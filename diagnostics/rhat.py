"""Potential scale reduction (R-hat) over draws with leading (chain, draw) axes.

Three estimators, all of the form sqrt(var_plus / W) with, for M chains of N
draws, W the mean within-chain variance, B = N * var(chain means) and
var_plus = (N - 1) / N * W + B / N (Gelman et al., BDA3, eq. 11.3-11.4):

- "rank": rank-normalized split R-hat (Vehtari et al. 2021): split every chain
  in half, replace the values by the normal quantiles of their average ranks
  (Blom offset 3/8), compute R-hat on those z-scores and on the z-scores of
  |x - median(x)|, and return the larger one. Equals arviz `rhat(method="rank")`.
- "split": split R-hat on the raw values (BDA3).
- "classic": R-hat on the raw, unsplit chains (Gelman and Rubin 1992, without
  their (M + 1) / M and degrees-of-freedom corrections).

Variables are processed `chunk_size` at a time (one compiled program for every
chunk, the last one padded), so working memory stays bounded for 10^7 weights;
chunks go round-robin to the local devices. Sorting dominates the cost: ranks
come from one sort of integer keys (see `sorted_ranks`).
Values are computed in the input's floating dtype as JAX holds it (float32
unless x64 is enabled; integers and half precision become float32) and
returned as float64 numpy arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

METHODS = ("rank", "split", "classic")
# Bytes of working memory a chunk may use; 16 chunk-sized buffers is a
# generous count of what sorting, ranking and folding keep alive at once.
CHUNK_BYTES = 32 * 2**20
BUFFERS_PER_VALUE = 16


# ---------------------------------------------------------------- kernels
# Every kernel takes x: (variable, chain, draw) and works along the last axes.

def split_chains(x: jax.Array) -> jax.Array:
    """(V, M, N) -> (V, 2M, N // 2): first and last halves of each chain as
    separate chains; the middle draw of an odd N is dropped (as arviz does)."""
    half = x.shape[-1] // 2
    return jnp.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=-2)


def _tie_average_ranks(sorted_keys: jax.Array, dtype) -> jax.Array:
    """(V, n) sorted rows -> 1-based ranks, tied values sharing their average rank
    (first + last position of the tie, over 2, plus 1)."""
    n = sorted_keys.shape[-1]
    keys = sorted_keys.T  # scans run over n steps of contiguous (V,) rows
    differs = keys[1:] != keys[:-1]
    edge = jnp.ones_like(keys[:1], bool)
    position = jnp.arange(n, dtype=jnp.int32)

    def hold(current, starts_and_position):
        starts, i = starts_and_position
        current = jnp.where(starts, i, current)
        return current, current

    # A sequential scan over 720 rows beats the associative scan behind
    # lax.cummax on CPU.
    start = jnp.zeros(keys.shape[1], jnp.int32)
    _, first = jax.lax.scan(hold, start, (jnp.concatenate([edge, differs]), position))
    _, last = jax.lax.scan(hold, start + n - 1, (jnp.concatenate([differs, edge]), position),
                           reverse=True)
    return ((first + last).astype(dtype) / 2 + 1).T


def order_keys(x: jax.Array) -> jax.Array:
    """Unsigned integers ordered as the floats x (same width; -0.0 and 0.0 share
    a key). XLA sorts integer keys several times faster than floats on CPU."""
    bits = {4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    b = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.zeros_like(x), x), bits)
    sign = b >> (8 * x.dtype.itemsize - 1)
    return jnp.where(sign == 1, ~b, b | (jnp.ones_like(b) << (8 * x.dtype.itemsize - 1)))


def sorted_ranks(flat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """flat: (V, n) -> (permutation that sorts each row (V, n) int32, average ranks
    of the sorted values (V, n)). float32 needs x64 enabled (see `map_chunks`):
    key and draw index are packed into one uint64 so that a single-operand
    sort, XLA's fast path on CPU, also yields the permutation."""
    keys = order_keys(flat)
    index = jnp.broadcast_to(jnp.arange(flat.shape[-1], dtype=jnp.uint32), flat.shape)
    if flat.dtype == jnp.float32:
        packed = (keys.astype(jnp.uint64) << 32) | index.astype(jnp.uint64)
        packed = jax.lax.sort(packed, dimension=1, is_stable=False)
        sorted_keys = (packed >> 32).astype(jnp.uint32)
        perm = (packed & 0xFFFFFFFF).astype(jnp.int32)
    else:
        sorted_keys, perm = jax.lax.sort((keys, index.astype(jnp.int32)), dimension=1,
                                         num_keys=1, is_stable=False)
    return perm, _tie_average_ranks(sorted_keys, flat.dtype)


def ranks_to_z(ranks: jax.Array) -> jax.Array:
    """Normal scores of average ranks out of n values, n the size of the last
    axis: Phi^-1((r - 3/8) / (n + 1/4)) (Blom 1958, as in Vehtari et al. 2021)."""
    return ndtri((ranks - 0.375) / (ranks.shape[-1] + 0.25))


def rank_normalize(x: jax.Array) -> jax.Array:
    """(V, M, N) -> z-scores of the average ranks pooled over chains and draws."""
    v, m, n = x.shape
    perm, ranks = sorted_ranks(x.reshape(v, m * n))
    return _unsort(perm, ranks_to_z(ranks)).reshape(v, m, n)


def _unsort(perm: jax.Array, sorted_values: jax.Array) -> jax.Array:
    """Put values held in sorted order (V, n) back in draw order."""
    v, n = perm.shape
    flat_index = (perm + n * jnp.arange(v, dtype=perm.dtype)[:, None]).ravel()
    out = jnp.zeros(v * n, sorted_values.dtype).at[flat_index].set(
        sorted_values.ravel(), unique_indices=True)  # faster than a vmapped scatter
    return out.reshape(v, n)


def _psrf(chain_mean: jax.Array, chain_var: jax.Array, n: int) -> jax.Array:
    """sqrt(var_plus / W) from per-chain means and variances (V, M), N = n draws
    per chain (BDA3); 0/0 (a constant variable) gives NaN, as in arviz."""
    within = chain_var.mean(axis=-1)
    between = n * chain_mean.var(axis=-1, ddof=1)
    return jnp.sqrt((between / within + n - 1) / n)


def gelman_rubin(x: jax.Array) -> jax.Array:
    """(V, M, N) -> R-hat per variable (BDA3)."""
    return _psrf(x.mean(axis=-1), x.var(axis=-1, ddof=1), x.shape[-1])


def _rank_rhat(x: jax.Array) -> jax.Array:
    split = split_chains(x)
    v, m, n = split.shape
    flat = split.reshape(v, m * n)
    perm, ranks = sorted_ranks(flat)
    bulk = gelman_rubin(_unsort(perm, ranks_to_z(ranks)).reshape(v, m, n))
    half = m * n // 2  # the pooled count 2M * (N // 2) is even
    middle = jnp.take_along_axis(flat, perm[:, half - 1:half + 1], axis=1)
    tail = gelman_rubin(rank_normalize(jnp.abs(split - middle.mean(axis=1)[:, None, None])))
    # Python's max(bulk, tail), as arviz: NaN only when bulk is NaN.
    return jnp.where(tail > bulk, tail, bulk)


_KERNELS = {"rank": _rank_rhat,
            "split": lambda x: gelman_rubin(split_chains(x)),
            "classic": gelman_rubin}


@functools.partial(jax.jit, static_argnames="kernel")
def _run_chunk(chunk: jax.Array, kernel: Callable) -> jax.Array:
    """chunk: (chain, draw, V) -> (V,), NaN for a variable holding any NaN."""
    x = jnp.moveaxis(chunk, -1, 0)
    value = kernel(x)
    return jnp.where(jnp.isnan(x).any(axis=(1, 2)), jnp.nan, value)


# ---------------------------------------------------------------- driver

def _leaves(draws: Any, min_chains: int, min_draws: int = 4):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(draws)
    if not leaves:
        raise ValueError("draws: expected an array or a pytree of arrays with leading "
                         f"(chain, draw) axes, got an empty pytree {draws!r}")
    arrays = []
    for path, leaf in leaves:
        name = "draws" + jax.tree_util.keystr(path)
        shape = np.shape(leaf)
        if len(shape) < 2 or shape[0] < min_chains or shape[1] < min_draws:
            raise ValueError(
                f"{name}: expected shape (chain, draw, ...) with at least {min_chains} "
                f"chain(s) and {min_draws} draws, got shape {tuple(shape)}")
        arrays.append(leaf)
    return arrays, treedef


def _working_dtype(arrays) -> np.dtype:
    dtype = np.result_type(*[np.asarray(a[:0, :0]).dtype for a in arrays], np.float32)
    if not np.issubdtype(dtype, np.floating) or dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def default_chunk_size(num_chains: int, num_draws: int, itemsize: int = 4) -> int:
    """Variables per chunk so that one chunk's working memory is about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (num_chains * num_draws * itemsize * BUFFERS_PER_VALUE))


def map_chunks(draws: Any, kernel: Callable, *, chunk_size: int | None,
               min_chains: int) -> Any:
    """Apply `kernel` ((V, chain, draw) -> (V,)) to every variable of every leaf
    (leaves (chain, draw, ...) with equal chain and draw counts), chunk_size
    variables at a time across leaf boundaries; returns float64 numpy leaves
    shaped like the leaves without their two leading axes."""
    arrays, treedef = _leaves(draws, min_chains)
    chains, num_draws = np.shape(arrays[0])[:2]
    for a in arrays[1:]:
        if np.shape(a)[:2] != (chains, num_draws):
            raise ValueError(f"draws: every leaf needs the same (chain, draw) axes, got "
                             f"{[tuple(np.shape(a)) for a in arrays]}")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
    dtype = _working_dtype(arrays)
    sizes = [int(np.prod(np.shape(a)[2:], dtype=np.int64)) for a in arrays]
    total = sum(sizes)
    out = np.full(total, np.nan)
    if total == 0:
        return _unflatten(out, arrays, sizes, treedef)
    devices = jax.local_devices()
    # One chunk per device in flight plus the one being copied: the budget of
    # CHUNK_BYTES is shared among them.
    in_flight = len(devices) + 1
    size = chunk_size or max(1, default_chunk_size(chains, num_draws, dtype.itemsize)
                             // in_flight)
    size = min(size, total)
    flats = [np.asarray(a).reshape(chains, num_draws, -1) for a in arrays]

    pending: list[tuple[int, jax.Array]] = []

    def collect(first: int, result: jax.Array) -> None:
        out[first:first + size] = np.asarray(result)[:total - first]

    leaf, offset = 0, 0  # read position: leaf index and variable within it
    # x64 only inside this call, for the packed uint64 sort keys of float32
    # draws (`sorted_ranks`); the working dtype was fixed above, outside it.
    with jax.enable_x64(True):
        for number, start in enumerate(range(0, total, size)):
            buffer = np.zeros((chains, num_draws, size), dtype)  # padding is dropped
            filled = 0
            while filled < size and leaf < len(flats):
                take = min(size - filled, sizes[leaf] - offset)
                buffer[:, :, filled:filled + take] = flats[leaf][:, :, offset:offset + take]
                filled += take
                offset += take
                if offset == sizes[leaf]:
                    leaf, offset = leaf + 1, 0
            # Chunks go round-robin to the local devices (CPU devices run
            # concurrently, one core each); waiting on the oldest chunk bounds
            # the host buffers alive at once.
            chunk = jax.device_put(buffer, devices[number % len(devices)])
            pending.append((start, _run_chunk(chunk, kernel)))
            if len(pending) >= in_flight:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)
    return _unflatten(out, arrays, sizes, treedef)


def _unflatten(out, arrays, sizes, treedef):
    bounds = np.cumsum([0] + sizes)
    leaves = [out[lo:hi].reshape(np.shape(a)[2:]) for a, lo, hi in
              zip(arrays, bounds[:-1], bounds[1:])]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# ---------------------------------------------------------------- API

def rhat(draws: Any, *, method: str = "rank", chunk_size: int | None = None) -> Any:
    """R-hat of every variable.

    draws: array or pytree, leaves (chain, draw, ...) with >= 2 chains and >= 4 draws.
    method: "rank" (Vehtari et al. 2021, the default as in arviz), "split" (BDA3)
      or "classic" (Gelman and Rubin 1992, unsplit chains).
    chunk_size: variables per compiled call; None shares about 32 MiB of working memory
      among the chunks in flight (one per local device, plus one).
    Returns the same structure, leaves (...) of float64 numpy values; NaN for a
    variable containing NaN and for a constant variable (as arviz).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return map_chunks(draws, _KERNELS[method], chunk_size=chunk_size, min_chains=2)


def rhat_summary(values: Any, thresholds=(1.1, 1.01),
                 quantiles=(0.5, 0.9, 0.99, 1.0)) -> dict:
    """Pooled summary of R-hat values (a pytree of arrays, e.g. `rhat(...)`).

    Returns {"count", "nan_count", "fraction_below": {threshold: fraction of all
    values strictly below it, NaN counted as not below}, "quantiles": {q: quantile
    of the non-NaN values (NaN if there are none)}}.
    """
    leaves = jax.tree_util.tree_leaves(values)
    pooled = (np.concatenate([np.asarray(v, np.float64).ravel() for v in leaves])
              if leaves else np.zeros(0))
    finite = pooled[~np.isnan(pooled)]
    count = pooled.size
    return {
        "count": int(count),
        "nan_count": int(count - finite.size),
        "fraction_below": {t: (float(np.mean(pooled < t)) if count else float("nan"))
                           for t in thresholds},
        "quantiles": {q: (float(np.quantile(finite, q)) if finite.size else float("nan"))
                      for q in quantiles},
    }
