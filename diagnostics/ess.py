"""Effective sample size over draws with leading (chain, draw) axes.

ESS = M * N / tau with tau = -1 + 2 * sum_t rho_t, the autocorrelations rho_t
combined over chains as 1 - (W - mean_chains acov_t) / var_plus (Vehtari et al.
2021, eq. 10), autocovariances by FFT, and the sum truncated by Geyer's initial
positive sequence and made monotone (Geyer 1992), as arviz does.

- "bulk": ESS of the rank-normalized split chains.
- "tail": the smaller ESS of the indicators x <= q_0.05 and x <= q_0.95 (type-7
  quantiles over all draws), on split chains.

Same conventions as `rhat` (chunked, input precision, float64 numpy out, NaN
for a variable holding NaN); a constant variable has ESS M * N as in arviz.
One chain is allowed (at least 4 draws).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .rhat import map_chunks, on_device, order_keys, rank_normalize, split_chains

METHODS = ("bulk", "tail")
TAIL_PROBS = (0.05, 0.95)  # Vehtari et al. 2021, section 4.3


def _autocov(x: jax.Array) -> jax.Array:
    """(V, M, N) -> biased autocovariance at lags 0..N-1 along the last axis."""
    n = x.shape[-1]
    centered = x - x.mean(axis=-1, keepdims=True)
    f = jnp.fft.rfft(centered, n=2 * n, axis=-1)  # zero padding: linear, not circular
    return jnp.fft.irfft(f * jnp.conj(f), n=2 * n, axis=-1)[..., :n] / n


def geyer_ess(x: jax.Array) -> jax.Array:
    """(V, M, N) -> ESS per variable, Geyer's initial monotone sequence."""
    _, m, n = x.shape
    acov = _autocov(x)
    mean_acov = acov.mean(axis=1)  # (V, N)
    within = mean_acov[:, 0] * n / (n - 1)
    var_plus = mean_acov[:, 0]
    if m > 1:
        var_plus = var_plus + x.mean(axis=-1).var(axis=-1, ddof=1)
    rho = 1 - (within[:, None] - mean_acov) / var_plus[:, None]
    rho = rho.at[:, 0].set(1.0)

    # Pairs P_k = rho_2k + rho_2k+1. Pair k >= 1 is examined while 2k - 1 < N - 3
    # and every earlier pair is positive; the last pair examined, L, contributes
    # only its even term (and only if that term is positive or P_L >= 0).
    num_pairs = max(k for k in range(n) if k == 0 or 2 * k - 1 < n - 3) + 1
    pairs = rho[:, 0:2 * num_pairs:2] + rho[:, 1:2 * num_pairs:2]
    positive_before = jnp.cumprod(pairs > 0, axis=1)  # P_0..P_k all > 0
    last = positive_before[:, :num_pairs - 1].sum(axis=1)  # L
    monotone = jax.lax.cummin(pairs, axis=1)
    k = jnp.arange(num_pairs)
    full = jnp.where(k[None, :] < last[:, None], monotone, 0.0).sum(axis=1)
    even = jnp.take_along_axis(rho, 2 * last[:, None], axis=1)[:, 0]
    pair_last = jnp.take_along_axis(pairs, last[:, None], axis=1)[:, 0]
    even = jnp.where((even > 0) | (pair_last >= 0), even, 0.0)
    tau = -1 + 2 * full + even
    size = m * n
    tau = jnp.maximum(tau, 1 / math.log10(size))
    value = size / tau
    spread = x.max(axis=(1, 2)) - x.min(axis=(1, 2))
    constant = spread < np.finfo(np.float64).resolution
    value = jnp.where(constant, size, value)
    return jnp.where(jnp.isnan(rho).any(axis=1) & ~constant, jnp.nan, value)


def _bulk(x: jax.Array) -> jax.Array:
    return geyer_ess(rank_normalize(split_chains(x)))


def _quantile_position(n: int, prob: float) -> int:
    """Index of the sorted value at or below numpy's linear (type 7) quantile:
    x <= q holds exactly for the values <= that order statistic."""
    return int(np.floor(np.quantile(np.arange(n, dtype=np.float64), prob)))


def _tail(x: jax.Array) -> jax.Array:
    v, m, n = x.shape
    keys = order_keys(x)  # integer keys sort faster; x <= q iff key(x) <= key(q)
    sorted_keys = jax.lax.sort(keys.reshape(v, m * n), dimension=1, is_stable=False)
    values = []
    for prob in TAIL_PROBS:
        q = sorted_keys[:, _quantile_position(m * n, prob)]
        indicator = (keys <= q[:, None, None]).astype(x.dtype)
        values.append(geyer_ess(split_chains(indicator)))
    low, high = values
    return jnp.where(high < low, high, low)  # Python's min(low, high), as arviz


_KERNELS = {"bulk": _bulk, "tail": _tail}


def ess(draws: Any, *, method: str = "bulk", chunk_size: int | None = None) -> Any:
    """Effective sample size of every variable.

    draws: array or pytree, leaves (chain, draw, ...) with >= 1 chain and >= 4 draws.
    method: "bulk" or "tail" (Vehtari et al. 2021).
    chunk_size: variables per compiled call; None: about 16 MiB of working memory per
      chunk, one chunk in flight per core.
    Returns the same structure, leaves (...) of float64 numpy values.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return map_chunks(draws, on_device(_KERNELS[method]), chunk_size=chunk_size, min_chains=1)
