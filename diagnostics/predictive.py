"""Predictive metrics: how good, how calibrated and how alike predictive
distributions are, and the ensemble (Bayesian model average) predictive of a
trace.

Classification metrics take `probs` (n, k) class probabilities and `labels` (n,)
integers in [0, k); regression metrics take (n, ...) predictive means, standard
deviations and targets. All return Python floats computed in float64 with numpy.
Inputs are checked at the boundary: a bad argument raises ValueError or TypeError
naming it, the value or shape received and what is allowed.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import dtypes

from weightspace.checks import positive_int

# Probabilities are clipped at this floor before taking logs so that a class
# given probability 0 costs -log(1e-12) ~ 27.6 nats instead of inf.
PROB_FLOOR = 1e-12

# Rows of `probs` may sum to 1 within this tolerance (float32 softmax outputs,
# averages of many draws).
ROW_SUM_TOL = 1e-3

# Each chunk read by `ensemble_predictive` holds at most this many bytes once
# cast to float64, so memory stays bounded for memory-mapped traces larger than
# RAM.
CHUNK_BYTES = 64 * 2**20


# ---------------------------------------------------------------------------
# argument checks


def _is_real(dtype) -> bool:
    # jax's issubdtype also knows bfloat16 and the other ml_dtypes floats.
    return dtype != bool and (dtypes.issubdtype(dtype, jnp.integer)
                              or dtypes.issubdtype(dtype, jnp.floating))


def _float_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}"
                        ) from err
    if not _is_real(arr.dtype):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite, got {name}[{', '.join(map(str, bad))}]="
                         f"{float(arr[bad])!r} (shape {arr.shape})")


def _probs(name: str, value) -> np.ndarray:
    """(n, k) float64 probabilities: finite, >= 0, rows summing to 1 within ROW_SUM_TOL."""
    p = _float_array(name, value)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, k) with n, k >= 1 (class "
                         f"probabilities), got shape {p.shape}")
    _finite(name, p)
    if np.any(p < 0):
        i, j = (int(v) for v in np.argwhere(p < 0)[0])
        raise ValueError(f"{name} must be non-negative probabilities, got "
                         f"{name}[{i}, {j}]={float(p[i, j])!r}")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if np.any(off):
        i = int(np.argmax(off))
        raise ValueError(f"rows of {name} must sum to 1 within {ROW_SUM_TOL}, got row {i} "
                         f"summing to {float(sums[i])!r}")
    return p


def _labels(value, n: int, k: int) -> np.ndarray:
    y = np.asarray(value)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers in [0, {k}), got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match probs, got shape {y.shape}")
    out = (y < 0) | (y >= k)
    if np.any(out):
        i = int(np.argmax(out))
        raise ValueError(f"labels must lie in [0, {k}) (probs has {k} classes), got "
                         f"labels[{i}]={int(y[i])}")
    return y.astype(np.int64, copy=False)


def _classification(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = _probs("probs", probs)
    return p, _labels(labels, *p.shape)


def _same_shape(names: tuple[str, ...], arrays: tuple[np.ndarray, ...]) -> None:
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        got = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise ValueError(f"{' and '.join(names)} must have the same shape, got {got}")
    if len(shapes[0]) < 1 or shapes[0][0] < 1:
        raise ValueError(f"{names[0]} must have shape (n, ...) with n >= 1, got shape "
                         f"{shapes[0]}")


# ---------------------------------------------------------------------------
# classification


def accuracy(probs, labels) -> float:
    """Fraction of examples whose argmax class (first on ties) equals the label.

    probs: (n, k) class probabilities; labels: (n,) ints in [0, k).
    """
    p, y = _classification(probs, labels)
    return float(np.mean(np.argmax(p, axis=1) == y))


def nll(probs, labels) -> float:
    """Mean negative log probability of the true class, -1/n sum_i log p_i[y_i].

    Probabilities are clipped below at PROB_FLOOR = 1e-12 before the log, so a
    true class given probability 0 costs about 27.6 nats rather than inf.
    probs: (n, k) class probabilities; labels: (n,) ints in [0, k).
    """
    p, y = _classification(probs, labels)
    p_true = p[np.arange(p.shape[0]), y]
    return float(-np.mean(np.log(np.maximum(p_true, PROB_FLOOR))))


def ece(probs, labels, num_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017, eq. 3).

    ECE = sum_b (|B_b| / n) * |acc(B_b) - conf(B_b)|, where confidence is the max
    probability of a row, the prediction its argmax (first on ties), and the bins
    are `num_bins` equal-width intervals over [0, 1] (15 in Guo et al.). Bins are
    closed on the right: bin b is (b/num_bins, (b+1)/num_bins], so a confidence
    equal to an edge b/num_bins (the float64 nearest to it) falls in the lower
    bin; a confidence of exactly 0 goes in the first bin and one above 1 (rows
    may sum to 1 + 1e-3) in the last. Empty bins contribute nothing.
    probs: (n, k) class probabilities; labels: (n,) ints in [0, k).
    """
    bins = reliability_bins(probs, labels, num_bins)
    # |B|/n * |acc - conf| = |sum correct - sum conf| / n, which skips empty bins.
    return float(np.sum(np.abs(bins["sum_correct"] - bins["sum_confidence"]))
                 / bins["count"].sum())


def reliability_bins(probs, labels, num_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin statistics of the confidence bins of `ece` (see there).

    Returns {"edges": (num_bins + 1,), "count": (num_bins,) ints, "sum_correct",
    "sum_confidence": (num_bins,) sums of correctness and of max probability,
    "accuracy", "confidence": their means, NaN for an empty bin}.
    """
    num_bins = positive_int("num_bins", num_bins)
    p, y = _classification(probs, labels)
    conf = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    edges = np.arange(num_bins + 1, dtype=np.float64) / num_bins
    # side="left" returns i with edges[i-1] < conf <= edges[i]: right-closed bins.
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    sum_conf = np.bincount(bins, weights=conf, minlength=num_bins)
    sum_correct = np.bincount(bins, weights=correct, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": edges, "count": count, "sum_correct": sum_correct,
                "sum_confidence": sum_conf, "accuracy": sum_correct / count,
                "confidence": sum_conf / count}


def brier(probs, labels) -> float:
    """Brier score, 1/n sum_i sum_k (p_ik - [k == y_i])^2 (between 0 and 2).

    probs: (n, k) class probabilities; labels: (n,) ints in [0, k).
    """
    p, y = _classification(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def classification_metrics(probs, labels, num_bins: int = 15) -> dict[str, float]:
    """{"accuracy", "nll", "ece", "brier"} of `probs` (n, k) against `labels` (n,)."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels, num_bins),
        "brier": brier(probs, labels),
    }


# ---------------------------------------------------------------------------
# regression


def rmse(mean, targets) -> float:
    """Root mean squared error, sqrt(mean over examples and outputs of (mean - y)^2).

    mean, targets: (n, ...) of the same shape, finite.
    """
    mu = _float_array("mean", mean)
    y = _float_array("targets", targets)
    _same_shape(("mean", "targets"), (mu, y))
    _finite("mean", mu)
    _finite("targets", y)
    return float(np.sqrt(np.mean((mu - y) ** 2)))


def gaussian_nll(mean, std, targets) -> float:
    """Mean over examples of the Gaussian negative log density, summed over outputs:

    1/n sum_i sum_d [ log(std_id) + log(2 pi)/2 + (y_id - mean_id)^2 / (2 std_id^2) ].

    mean, std, targets: (n, ...) of the same shape; std finite and > 0.
    """
    mu = _float_array("mean", mean)
    sd = _float_array("std", std)
    y = _float_array("targets", targets)
    _same_shape(("mean", "std", "targets"), (mu, sd, y))
    for name, arr in (("mean", mu), ("std", sd), ("targets", y)):
        _finite(name, arr)
    if np.any(sd <= 0):
        bad = tuple(int(i) for i in np.argwhere(sd <= 0)[0])
        where = ", ".join(map(str, bad))
        raise ValueError(f"std must be > 0, got std[{where}]={float(sd[bad])!r}")
    z = (y - mu) / sd
    per_entry = np.log(sd) + 0.5 * math.log(2 * math.pi) + 0.5 * z**2
    return float(np.mean(per_entry.reshape(mu.shape[0], -1).sum(axis=1)))


def regression_metrics(mean, std, targets) -> dict[str, float]:
    """{"rmse", "gaussian_nll"} of predictive `mean`, `std` (n, ...) against `targets`."""
    return {"rmse": rmse(mean, targets), "gaussian_nll": gaussian_nll(mean, std, targets)}


# ---------------------------------------------------------------------------
# comparing two predictive distributions


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = _probs("p", p), _probs("q", q)
    _same_shape(("p", "q"), (p, q))
    return p, q


def agreement(p, q) -> float:
    """Fraction of examples on which p and q have the same argmax class (first on ties).

    p, q: (n, k) class probabilities.
    """
    p, q = _pair(p, q)
    return float(np.mean(np.argmax(p, axis=1) == np.argmax(q, axis=1)))


def total_variation(p, q) -> float:
    """Mean over examples of the total variation distance, 1/n sum_i 1/2 sum_k |p_ik - q_ik|.

    p, q: (n, k) class probabilities.
    """
    p, q = _pair(p, q)
    return float(np.mean(0.5 * np.sum(np.abs(p - q), axis=1)))


# ---------------------------------------------------------------------------
# ensemble predictive


def ensemble_predictive(trace_or_predictions, draws_per_chunk: int | None = None) -> np.ndarray:
    """Average of the stored predictions over chains and draws (the Bayesian
    model average: class probabilities, or predictive means for regression).

    trace_or_predictions: an object with `.predictions`, or the array itself,
        shaped (chain, draw, n, ...); numpy, np.memmap, jax, or anything with
        `.shape`, `.dtype` and slicing.
    draws_per_chunk: draws read at a time; by default as many as fit in
        CHUNK_BYTES (64 MiB) as float64, and at least one. The sum streams over chains and chunks
        of draws, accumulating in float64, so a memory-mapped trace larger than
        memory is never loaded or copied whole.
    Returns (n, ...) float64.
    """
    preds = trace_or_predictions
    name = "trace_or_predictions"
    if hasattr(preds, "predictions"):
        preds, name = preds.predictions, "trace_or_predictions.predictions"
        if preds is None:
            raise ValueError(f"{name} is None: the trace holds no predictions (pass eval "
                             "inputs to the sampler), or pass a (chain, draw, n, ...) array")
    if not all(hasattr(preds, attr) for attr in ("shape", "dtype", "__getitem__")):
        if isinstance(preds, (list, tuple)):
            preds = np.asarray(preds)
        else:
            raise TypeError(f"{name} must be a (chain, draw, n, ...) array or an object with "
                            f".predictions, got {type(preds).__name__}")
    shape = tuple(int(s) for s in preds.shape)
    dtype = np.dtype(preds.dtype)
    if not _is_real(dtype):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if len(shape) < 3 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must have shape (chain, draw, n, ...) with chain, draw >= 1, "
                         f"got shape {shape}")
    num_chains, num_draws, item = shape[0], shape[1], shape[2:]
    if draws_per_chunk is None:
        per_draw = 8 * max(1, math.prod(item))
        draws_per_chunk = max(1, min(num_draws, CHUNK_BYTES // per_draw))
    else:
        draws_per_chunk = positive_int("draws_per_chunk", draws_per_chunk)

    total = np.zeros(item, dtype=np.float64)
    for c in range(num_chains):
        for start in range(0, num_draws, draws_per_chunk):
            chunk = np.asarray(preds[c, start:start + draws_per_chunk])
            total += np.sum(chunk, axis=0, dtype=np.float64)
    return total / (num_chains * num_draws)
