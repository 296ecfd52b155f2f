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
one worker thread per core takes the next chunk until none is left.
Values are computed in the input's floating dtype, float64 included whether
or not x64 is enabled globally (the worker threads enable it for themselves);
integers and half precision become float32. In a pytree each leaf is computed
in its own dtype. Results are float64 numpy arrays.

Sorting dominates rank R-hat, which ranks each variable's pooled split draws
twice (values, then |values - median|). Those two sorts run on the host, in
the worker threads, with numpy's `np.sort` of rows of packed uint64 (order
key, draw index) (`sort_rows`): numpy >= 2 sorts with x86-simd-sort on AVX2
and AVX-512 and releases the GIL; on the benchmark machine (AVX-512) it sorts
a row of 720 such integers in 1.5 us, where XLA's CPU sort took 24 us.
Everything between the sorts is compiled JAX (`_rank_step`). The folded draws
are sorted again rather than merged from the two sorted runs either side of
the median (|x - m| ascends on both sides): numpy's merge of two runs (its
stable sort) took twice as long as the SIMD sort, and the cross ranks by
vectorized binary search (vmapped `jnp.searchsorted`) over ten times as long.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy.special import ndtri

METHODS = ("rank", "split", "classic")
# Bytes of working memory a chunk may use (one chunk per worker thread in
# flight); 16 chunk-sized buffers is a generous count of what sorting, ranking
# and folding keep alive at once. For 3 x 240 float32 draws that is 364
# variables, whose packed sort rows (2 MiB) are about one core's L2 cache here.
CHUNK_BYTES = 16 * 2**20
BUFFERS_PER_VALUE = 16


# ---------------------------------------------------------------- kernels
# Every kernel takes x: (variable, chain, draw) and works along the last axes.

def split_chains(x: jax.Array) -> jax.Array:
    """(V, M, N) -> (V, 2M, N // 2): first and last halves of each chain as
    separate chains; the middle draw of an odd N is dropped (as arviz does)."""
    half = x.shape[-1] // 2
    return jnp.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=-2)


def tie_bounds(sorted_keys: jax.Array) -> jax.Array:
    """(V, n) sorted rows -> first + last position (0-based, int32) of each
    value's group of ties, so that its average rank is tie_bounds / 2 + 1."""
    keys = sorted_keys.T  # scans run over n steps of contiguous (V,) rows
    n = keys.shape[0]
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
    return (first + last).T


def order_keys(x: jax.Array) -> jax.Array:
    """Unsigned integers ordered as the floats x (same width; -0.0 and 0.0 share
    a key; NaN above +inf or, with the sign bit set, below -inf). Integer keys
    sort several times faster than floats, in XLA and in numpy."""
    bits = {4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
    b = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.zeros_like(x), x), bits)
    sign = b >> (8 * x.dtype.itemsize - 1)
    return jnp.where(sign == 1, ~b, b | (jnp.ones_like(b) << (8 * x.dtype.itemsize - 1)))


def key_values(keys: jax.Array) -> jax.Array:
    """The floats whose `order_keys` are keys (uint32 -> float32, uint64 -> float64)."""
    top = jnp.ones((), keys.dtype) << (8 * keys.dtype.itemsize - 1)
    bits = jnp.where(keys & top == top, keys & ~top, ~keys)
    return jax.lax.bitcast_convert_type(bits, {4: jnp.float32, 8: jnp.float64}[keys.dtype.itemsize])


def sorted_ranks(flat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """flat: (V, n) -> (permutation that sorts each row (V, n) int32, average ranks
    of the sorted values (V, n)), with XLA's sort. float32 needs x64 enabled (see
    `map_chunks`): key and draw index are packed into one uint64 so that a
    single-operand sort, XLA's fast path on CPU, also yields the permutation."""
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
    return perm, tie_bounds(sorted_keys).astype(flat.dtype) / 2 + 1


def ranks_to_z(ranks: jax.Array, n: int | None = None) -> jax.Array:
    """Normal scores of average ranks out of n values (default: the size of the
    last axis): Phi^-1((r - 3/8) / (n + 1/4)) (Blom 1958, as in Vehtari et al. 2021)."""
    n = ranks.shape[-1] if n is None else n
    return ndtri((ranks - 0.375) / (n + 0.25))


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


_KERNELS = {"split": lambda x: gelman_rubin(split_chains(x)),
            "classic": gelman_rubin}


@functools.partial(jax.jit, static_argnames="kernel")
def _run_chunk(chunk: jax.Array, kernel: Callable) -> jax.Array:
    """chunk: (chain, draw, V) -> (V,), NaN for a variable holding any NaN."""
    x = jnp.moveaxis(chunk, -1, 0)
    value = kernel(x)
    return jnp.where(jnp.isnan(x).any(axis=(1, 2)), jnp.nan, value)


def on_device(kernel: Callable) -> Callable:
    """A `map_chunks` chunk function from a JAX kernel (V, chain, draw) -> (V,)."""
    def run(buffer: np.ndarray, device) -> np.ndarray:
        return np.asarray(_run_chunk(jax.device_put(buffer, device), kernel))
    return run


# ---------------------------------------------------------------- rank R-hat
# Two passes, each a host sort (`sort_rows`) and one compiled `_rank_step`:
# the values, then the folded values. A sort operand is a row of packed uint64
# (32-bit key << 32 | draw index), or for 64-bit keys the pair (keys, indices).

def _pack(keys: jax.Array, index: jax.Array):
    if keys.dtype == jnp.uint32:
        return (keys.astype(jnp.uint64) << 32) | index.astype(jnp.uint64)
    return keys, index


def _unpack(operand) -> tuple[jax.Array, jax.Array]:
    if isinstance(operand, tuple):
        return operand
    return (operand >> 32).astype(jnp.uint32), (operand & 0xFFFFFFFF).astype(jnp.int32)


def host_array(shape: tuple, dtype) -> np.ndarray:
    """An uninitialized numpy array whose data is 64-byte aligned: JAX's CPU
    client then aliases it instead of copying it (`jax.device_put`)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def sort_rows(operand):
    """Sort every row of a sort operand (V, n) by key, on the host (see the
    module docstring); 64-byte aligned numpy arrays out."""
    if isinstance(operand, tuple):
        keys, index = (np.asarray(a) for a in operand)
        order = np.argsort(keys, axis=1)
        out = host_array(keys.shape, keys.dtype), host_array(index.shape, index.dtype)
        out[0][...] = np.take_along_axis(keys, order, axis=1)
        out[1][...] = np.take_along_axis(index, order, axis=1)
        return out
    out = host_array(operand.shape, operand.dtype)
    out[...] = operand
    out.sort(axis=1)
    return out


@jax.jit
def _pack_split(chunk: jax.Array):
    """chunk (chain, draw, V) -> sort operand of each variable's pooled split
    draws (V, n), the draw index running over (split chain, draw)."""
    x = split_chains(jnp.moveaxis(chunk, -1, 0))
    v, m, n = x.shape
    flat = x.reshape(v, m * n)
    return _pack(order_keys(flat), jnp.broadcast_to(jnp.arange(m * n, dtype=jnp.int32),
                                                   flat.shape))


def _tie_scores(n: int) -> np.ndarray:
    """Normal scores (float64) of every average rank out of n: entry t is the
    score of rank t / 2 + 1, t = first + last position of a group of ties."""
    ranks = np.arange(2 * n - 1) / 2 + 1
    return scipy.special.ndtri((ranks - 0.375) / (n + 0.25))  # as `ranks_to_z`


def normal_scores(sorted_keys: jax.Array, dtype, paired: bool) -> tuple[jax.Array, jax.Array]:
    """(V, n) sorted rows -> (normal scores of the average ranks (V, n), whether
    they are exact: a scalar bool).

    paired=True assumes that no value is tied more than twice, as happens for
    continuous draws (the folded draws always tie at the median): then a
    value's rank is p + 1, or p + 1/2 (p + 3/2) when it equals its left (right)
    neighbour, and its score is picked from three constant rows; exact tells
    whether the assumption held. paired=False runs the scans of `tie_bounds`.
    """
    scores = _tie_scores(sorted_keys.shape[-1])
    if not paired:
        return jnp.asarray(scores, dtype)[tie_bounds(sorted_keys)], jnp.array(True)
    equal = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    no = jnp.zeros_like(equal[:, :1])
    halves = scores[1::2]  # ranks p + 3/2, p = 0 .. n - 2
    z = jnp.where(jnp.concatenate([equal, no], axis=1),
                  jnp.asarray(np.append(halves, 0.0), dtype),
                  jnp.where(jnp.concatenate([no, equal], axis=1),
                            jnp.asarray(np.insert(halves, 0, 0.0), dtype),
                            jnp.asarray(scores[0::2], dtype)))
    return z, ~jnp.any(sorted_keys[:, 2:] == sorted_keys[:, :-2])


@functools.partial(jax.jit, static_argnames=("num_chains", "paired"))
def _rank_step(sorted_operand, num_chains: int, paired: bool):
    """One rank pass over sorted rows (V, n) of num_chains pooled split chains.

    Returns (R-hat of the normal scores of the average ranks (V,), NaN for a
    variable holding NaN; sort operand of the folded draws |x - median(x)|;
    whether the scores are exact, see `normal_scores`). The tail pass reuses
    this program and drops its folded operand: cheaper than compiling a
    second one."""
    keys, index = _unpack(sorted_operand)
    v, n = keys.shape
    values = key_values(keys)
    z, exact = normal_scores(keys, values.dtype, paired)
    value = gelman_rubin(_unsort(index, z).reshape(v, num_chains, n // num_chains))
    has_nan = ((keys[:, -1] > order_keys(jnp.array(jnp.inf, values.dtype)))
               | (keys[:, 0] < order_keys(jnp.array(-jnp.inf, values.dtype))))
    # The pooled count n = 2M * (N // 2) is even.
    median = (values[:, n // 2 - 1] + values[:, n // 2]) / 2
    folded = _pack(order_keys(jnp.abs(values - median[:, None])), index)
    return jnp.where(has_nan, jnp.nan, value), folded, exact


def _rank_pass(operand, device, num_chains: int):
    sorted_operand = jax.device_put(sort_rows(operand), device)
    value, folded, exact = _rank_step(sorted_operand, num_chains, True)
    if not exact:  # a tie of three or more somewhere in the chunk
        value, folded, _ = _rank_step(sorted_operand, num_chains, False)
    return np.asarray(value), folded


def _rank_rhat_chunk(buffer: np.ndarray, device) -> np.ndarray:
    """buffer (chain, draw, V) on the host -> rank R-hat (V,)."""
    num_chains = 2 * buffer.shape[0]
    bulk, folded = _rank_pass(_pack_split(jax.device_put(buffer, device)), device, num_chains)
    tail, _ = _rank_pass(folded, device, num_chains)
    # Python's max(bulk, tail), as arviz: NaN only when bulk is NaN.
    return np.where(tail > bulk, tail, bulk)


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
    return np.dtype(dtype)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_chunk_size(num_chains: int, num_draws: int, itemsize: int = 4) -> int:
    """Variables per chunk so that one chunk's working memory is about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (num_chains * num_draws * itemsize * BUFFERS_PER_VALUE))


def map_chunks(draws: Any, run_chunk: Callable, *, chunk_size: int | None,
               min_chains: int) -> Any:
    """Apply run_chunk (host buffer (chain, draw, V), device -> (V,) values) to
    every variable of every leaf (leaves (chain, draw, ...) with equal chain and
    draw counts), chunk_size variables at a time across leaf boundaries; one
    worker thread per core, with x64 enabled in it, the local devices taken in
    turn; returns float64 numpy leaves shaped like the leaves without their two
    leading axes."""
    arrays, treedef = _leaves(draws, min_chains)
    chains, num_draws = np.shape(arrays[0])[:2]
    for a in arrays[1:]:
        if np.shape(a)[:2] != (chains, num_draws):
            raise ValueError(f"draws: every leaf needs the same (chain, draw) axes, got "
                             f"{[tuple(np.shape(a)) for a in arrays]}")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive integer or None, got {chunk_size!r}")
    dtypes = [_working_dtype([a]) for a in arrays]
    if len(set(dtypes)) > 1:
        # Each leaf in its own precision: a leaf's values do not depend on what
        # else is in the pytree. One pass per working dtype.
        leaves = [None] * len(arrays)
        for dtype in set(dtypes):
            picked = [i for i, d in enumerate(dtypes) if d == dtype]
            values = map_chunks([arrays[i] for i in picked], run_chunk,
                                chunk_size=chunk_size, min_chains=min_chains)
            for i, value in zip(picked, values):
                leaves[i] = value
        return jax.tree_util.tree_unflatten(treedef, leaves)
    dtype = dtypes[0]
    sizes = [int(np.prod(np.shape(a)[2:], dtype=np.int64)) for a in arrays]
    bounds = np.cumsum([0] + sizes)
    total = int(bounds[-1])
    out = np.full(total, np.nan)
    if total == 0:
        return _unflatten(out, arrays, sizes, treedef)
    size = min(chunk_size or default_chunk_size(chains, num_draws, dtype.itemsize), total)
    flats = [np.asarray(a).reshape(chains, num_draws, -1) for a in arrays]
    starts = iter(range(0, total, size))
    lock = threading.Lock()

    def fill(start: int) -> np.ndarray:
        buffer = host_array((chains, num_draws, size), dtype)
        # Padding, dropped: distinct values, which need no tie scans.
        buffer[:, :, total - start:] = np.arange(chains * num_draws).reshape(chains, num_draws, 1)
        leaf = int(np.searchsorted(bounds, start, side="right")) - 1
        filled = 0
        while filled < size and leaf < len(flats):
            offset = start + filled - int(bounds[leaf])
            take = min(size - filled, sizes[leaf] - offset)
            buffer[:, :, filled:filled + take] = flats[leaf][:, :, offset:offset + take]
            filled += take
            leaf += 1
        return buffer

    stop = threading.Event()

    def work(device) -> None:
        # x64 (thread-local) for the packed uint64 sort keys of float32 draws;
        # the working dtype was fixed above, outside it.
        with jax.enable_x64(True):
            while not stop.is_set():
                with lock:
                    start = next(starts, None)
                if start is None:
                    return
                out[start:start + size] = np.asarray(run_chunk(fill(start), device))[
                    :total - start]

    # One worker per core: host sorts and device programs release the GIL, and
    # a CPU device runs programs from several threads at once, so one device
    # (JAX's default on CPU) needs one compilation and still uses every core.
    devices = jax.local_devices()
    workers = min(_cores(), -(-total // size))
    with ThreadPoolExecutor(workers) as pool:
        running = [pool.submit(work, devices[i % len(devices)]) for i in range(workers)]
        try:
            for done in running:
                done.result()
        except BaseException:  # an error or Ctrl-C: the other workers stop too
            stop.set()
            raise
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
    chunk_size: variables per compiled call; None: about 16 MiB of working memory per
      chunk (`CHUNK_BYTES`), one chunk in flight per core.
    Returns the same structure, leaves (...) of float64 numpy values; NaN for a
    variable containing NaN and for a constant variable (as arviz).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    run = _rank_rhat_chunk if method == "rank" else on_device(_KERNELS[method])
    return map_chunks(draws, run, chunk_size=chunk_size, min_chains=2)


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
