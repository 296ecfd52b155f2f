"""Diagnostic figures: R-hat in weight against function space, trace plots,
reliability diagrams.

Every function builds a `matplotlib.figure.Figure` directly (no pyplot, so no
global state and no GUI backend), returns it, and writes it as a PNG through
the Agg canvas when `path` is given, creating missing parent directories.
Inputs are plain arrays or pytrees, checked before anything is drawn: a bad
argument raises ValueError or TypeError naming it, the value received and
what is allowed.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from weightspace.checks import int_at_least, positive_int
from weightspace.diagnostics.predictive import (
    _finite, _float_array, _is_real, ece, reliability_bins)
from weightspace.jsonio import is_writer
from weightspace.leaf_names import leaf_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


# ---------------------------------------------------------------------------
# argument checks


def _path(path) -> Path | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise TypeError(f"path must be a str or os.PathLike (or None), got "
                        f"{type(path).__name__} {path!r}")
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"path must name a file, got {str(path)!r}")
    return path


def _title(value) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"title must be a str or None, got {type(value).__name__} {value!r}")
    return value


def _save(fig: Figure, path: Path | None) -> Figure:
    """Write fig to path, from process 0 of a multi-process job only."""
    if path is not None and is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    return fig


# ---------------------------------------------------------------------------
# R-hat histograms


def _pooled_rhat(name: str, values) -> np.ndarray:
    """All leaves of a pytree of R-hat values as one float64 vector. NaN (a
    constant variable) and +inf (chains stuck at different constants) are kept;
    values <= 0 cannot be an R-hat."""
    leaves = jax.tree_util.tree_leaves(values)
    if not leaves:
        raise ValueError(f"{name} must be an array or a pytree of arrays of R-hat values, "
                         f"got an empty pytree {values!r}")
    pooled = np.concatenate([_float_array(name, leaf).ravel() for leaf in leaves])
    if pooled.size == 0:
        raise ValueError(f"{name} holds no values (every leaf is empty)")
    bad = ~np.isnan(pooled) & ~(pooled > 0)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must hold R-hat values > 0 (or NaN, or inf), got "
                         f"{float(pooled[i])!r} at pooled index {i}")
    return pooled


def _log_edges(finite: list[np.ndarray], bins: int, threshold: float) -> np.ndarray:
    """`bins` + 1 log-spaced edges over the range of all finite values; a range
    of one value is widened by 1% either side (the threshold's if none)."""
    values = np.concatenate(finite)
    lo, hi = (values.min(), values.max()) if values.size else (threshold, threshold)
    if lo == hi:
        lo, hi = lo / 1.01, hi * 1.01
    return np.logspace(math.log10(lo), math.log10(hi), bins + 1)


def _log_axis(axis, lo: float, hi: float) -> None:
    """Readable ticks on a log axis: under a decade the log locator would mark
    only 1, so use evenly spaced round values there."""
    from matplotlib import ticker  # slow to import (a third of a second); only figures need it

    if hi / lo < 10:
        axis.set_major_locator(ticker.MaxNLocator(nbins=6))
        axis.set_minor_locator(ticker.NullLocator())
    else:
        axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False,
                                                     minor_thresholds=(2, 0.5)))
    axis.set_major_formatter(ticker.FormatStrFormatter("%g"))


def _rhat_label(space: str, pooled: np.ndarray, threshold: float) -> str:
    """'weight space: 41.2% < 1.1 (n=269,322; 3 NaN)': the fraction of all values
    below the threshold, NaN counted as not below (as in `rhat_summary`)."""
    nan, inf = int(np.isnan(pooled).sum()), int(np.isinf(pooled).sum())
    extra = "".join(f"; {count:,} {what}" for count, what in ((nan, "NaN"), (inf, "inf"))
                    if count)
    return (f"{space}: {100 * np.mean(pooled < threshold):.1f}% < {threshold:g} "
            f"(n={pooled.size:,}{extra})")


def plot_rhat(weight_rhat: Any, function_rhat: Any, *, aligned_rhat: Any = None,
              path=None, threshold: float = 1.1, bins: int = 50,
              title: str | None = None) -> Figure:
    """Histograms of weight-space and function-space R-hat on one log-scaled axis:
    whether chains that agree on predictions also agree on weights.

    weight_rhat, function_rhat: arrays or pytrees of R-hat values (as returned by
      `rhat`), all leaves pooled; either may be None, not both. NaN and inf are
      left out of the histogram and counted in the legend. Each histogram shows
      the fraction of its finite values per bin, so spaces of very different
      sizes (10^5 weights, 10^3 predictions) are comparable.
    aligned_rhat: optionally, R-hat of permutation-aligned weights
      (`align_permutations`), a third histogram.
    threshold: vertical line, and the legend gives the fraction of values below
      it; 1.1 is Gelman et al.'s (BDA3) rule of thumb (Vehtari et al. 2021 ask for 1.01).
    bins: number of bins, equally spaced in log R-hat over the range of both inputs.
    path: if given, the figure is written there as a PNG.
    """
    path, title = _path(path), _title(title)
    bins = positive_int("bins", bins)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a finite number > 0, got threshold={threshold!r}")
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a finite number > 0, got threshold={threshold!r}")
    threshold = float(threshold)
    if weight_rhat is None and function_rhat is None:
        raise ValueError("weight_rhat and function_rhat are both None: pass at least one "
                         "array or pytree of R-hat values")
    spaces = [(space, arg, _pooled_rhat(arg, values), color) for space, arg, values, color in
              (("weight space", "weight_rhat", weight_rhat, "C0"),
               ("aligned weights", "aligned_rhat", aligned_rhat, "C2"),
               ("function space", "function_rhat", function_rhat, "C1"))
              if values is not None]
    finite = [pooled[np.isfinite(pooled)] for _, _, pooled, _ in spaces]
    edges = _log_edges(finite, bins, threshold)

    from matplotlib import colors  # slow to import (a third of a second); only figures need it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for (space, _, pooled, color), values in zip(spaces, finite):
        counts, _ = np.histogram(values, bins=edges)
        ax.stairs(counts / max(values.size, 1), edges, fill=True, facecolor=colors.to_rgba(color, 0.35),
                  edgecolor=color, linewidth=1.2, label=_rhat_label(space, pooled, threshold))
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1,
               label=f"threshold {threshold:g}")
    ax.set_xscale("log")
    lo, hi = min(edges[0], threshold), max(edges[-1], threshold)
    pad = (hi / lo) ** 0.03
    ax.set_xlim(lo / pad, hi * pad)
    _log_axis(ax.xaxis, lo / pad, hi * pad)
    ax.set_xlabel("R-hat (log scale)")
    ax.set_ylabel("fraction of values")
    ax.set_title(title if title is not None else
                 "R-hat in " + ", ".join(space for space, *_ in spaces))
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


# ---------------------------------------------------------------------------
# trace plots


def _position_leaves(positions, arg: str) -> tuple[list[str], list[Any], tuple[int, int]]:
    """Names, leaves (chain, draw, ...) and the common (chain, draw) of a pytree."""
    pairs = jax.tree_util.tree_leaves_with_path(positions)
    if not pairs:
        raise ValueError(f"{arg} must be a pytree of arrays with leading (chain, draw) axes, "
                         f"got an empty pytree {positions!r}")
    names, leaves = [leaf_name(path) for path, _ in pairs], [leaf for _, leaf in pairs]
    for name, leaf in zip(names, leaves):
        shape = np.shape(leaf)
        if len(shape) < 2 or shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"{arg} leaf {name!r} must have shape (chain, draw, ...) with "
                             f"chain, draw >= 1, got shape {tuple(shape)}")
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if not _is_real(dtype):
            raise TypeError(f"{arg} leaf {name!r} must hold real numbers, got dtype {dtype}")
    chain_draw = np.shape(leaves[0])[:2]
    if any(np.shape(leaf)[:2] != chain_draw for leaf in leaves):
        got = ", ".join(f"{n} {tuple(np.shape(x))}" for n, x in zip(names, leaves))
        raise ValueError(f"every leaf of {arg} needs the same (chain, draw) axes, got {got}")
    return names, leaves, tuple(int(s) for s in chain_draw)


def _chosen_weights(weights, names: list[str], sizes: list[int],
                    seed) -> list[tuple[int, int]]:
    """(leaf number, flat index) of each weight to plot."""
    if isinstance(weights, numbers.Integral) and not isinstance(weights, bool):
        k = positive_int("weights", weights)
        seed = int_at_least("seed", seed, 0)
        total = sum(sizes)
        picks = np.sort(np.random.default_rng(seed).choice(total, min(k, total),
                                                             replace=False))
        starts = np.cumsum([0] + sizes[:-1])
        leaf_of = np.searchsorted(starts, picks, side="right") - 1
        return [(int(leaf), int(pick - starts[leaf])) for leaf, pick in zip(leaf_of, picks)]

    allowed = ("an int >= 1 or a list of (leaf_name, flat_index) pairs; leaf names: "
               + ", ".join(f"{n!r} (size {s})" for n, s in zip(names, sizes)))
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (list, tuple)) \
            or not weights:
        raise TypeError(f"weights must be {allowed}; got weights={weights!r}")
    chosen = []
    for pair in weights:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"weights must be {allowed}; got the entry {pair!r}")
        name, index = pair
        if name not in names:
            raise ValueError(f"weights: no leaf named {name!r}; leaf names: "
                             + ", ".join(f"{n!r} (size {s})" for n, s in zip(names, sizes)))
        leaf = names.index(name)
        if (isinstance(index, bool) or not isinstance(index, numbers.Integral)
                or not 0 <= index < sizes[leaf]):
            raise ValueError(f"weights: flat index {index!r} of leaf {name!r} must be an int "
                             f"in [0, {sizes[leaf]})")
        chosen.append((leaf, int(index)))
    return chosen


def _weight_draws(leaf, index: int) -> np.ndarray:
    """(chain, draw) draws of one scalar weight, read without converting the whole leaf."""
    shape = np.shape(leaf)
    where = np.unravel_index(index, shape[2:]) if len(shape) > 2 else ()
    return np.asarray(leaf[(slice(None), slice(None), *where)], dtype=np.float64)


def _finite_draws(what: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        chain, draw = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ValueError(f"{what} must be finite to be plotted, got "
                         f"{float(values[chain, draw])!r} at chain {chain}, draw {draw}")


def plot_trace(positions_or_trace: Any, *, weights=4, logdensity=None, path=None,
               seed: int = 0) -> Figure:
    """Trace plots, value against draw with one line per chain, of chosen scalar
    weights and, when available, of the log density.

    positions_or_trace: pytree, leaves (chain, draw, ...), or an object with
      `.positions` like that (and optionally `.stats`, a dict of (chain, draw)
      arrays whose "logdensity" is plotted).
    weights: an int k picks min(k, number of weights) scalar weights uniformly
      without replacement over all leaves with `numpy.random.default_rng(seed)`;
      or a list of (leaf_name, flat_index) pairs, leaf_name a dotted key path
      such as "layers.0.kernel" and flat_index into the leaf's (...) entries in
      C order. Panels are titled "layers.0.kernel[1234]".
    logdensity: (chain, draw) array; overrides the trace's stats["logdensity"].
    path: if given, the figure is written there as a PNG.
    """
    path = _path(path)
    arg, positions, stats = "positions_or_trace", positions_or_trace, None
    if hasattr(positions_or_trace, "positions"):
        arg = "positions_or_trace.positions"
        positions, stats = positions_or_trace.positions, getattr(positions_or_trace,
                                                                  "stats", None)
    names, leaves, (num_chains, num_draws) = _position_leaves(positions, arg)
    sizes = [math.prod(np.shape(leaf)[2:]) for leaf in leaves]
    chosen = _chosen_weights(weights, names, sizes, seed)

    ld_name = "logdensity"
    if logdensity is None and isinstance(stats, Mapping) and stats.get("logdensity") is not None:
        logdensity, ld_name = stats["logdensity"], "positions_or_trace.stats['logdensity']"
    if logdensity is not None:
        logdensity = _float_array(ld_name, logdensity)
        if logdensity.shape != (num_chains, num_draws):
            raise ValueError(f"{ld_name} must have shape (chain, draw) = "
                             f"({num_chains}, {num_draws}) to match the positions, got shape "
                             f"{logdensity.shape}")
        _finite(ld_name, logdensity)

    panels = []
    for leaf, index in chosen:
        label = f"{names[leaf]}[{index}]"
        values = _weight_draws(leaves[leaf], index)
        _finite_draws(f"weight {label} of {arg}", values)
        panels.append((label, values))
    if logdensity is not None:
        panels.append(("log density", logdensity))

    from matplotlib.figure import Figure  # slow to import (a third of a second); only figures need it

    fig = Figure(figsize=(8, 0.6 + 1.7 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    draw = np.arange(num_draws)
    for ax, (label, values) in zip(axes, panels):
        for chain in range(num_chains):
            ax.plot(draw, values[chain], linewidth=0.8, label=f"chain {chain}")
        ax.set_title(label, fontsize="medium")
    if num_chains <= 10:
        axes[0].legend(loc="upper right", fontsize="x-small", ncols=min(num_chains, 5))
    axes[-1].set_xlabel("draw")
    return _save(fig, path)


# ---------------------------------------------------------------------------
# reliability diagram


def plot_reliability(probs, labels, *, num_bins: int = 15, path=None,
                     title: str | None = None) -> Figure:
    """Reliability diagram (Guo et al. 2017, fig. 1): accuracy of the argmax
    prediction in equal-width confidence bins against the diagonal of perfect
    calibration, the gap from each bin's accuracy to its mean confidence, the
    ECE of `predictive.ece` over the same bins, and the example count per bin.

    probs: (n, k) class probabilities; labels: (n,) ints in [0, k).
    num_bins: equal-width bins over [0, 1], 15 as in Guo et al. and `ece`.
    path: if given, the figure is written there as a PNG.
    """
    path, title = _path(path), _title(title)
    stats = reliability_bins(probs, labels, num_bins)
    error = ece(probs, labels, num_bins)
    edges, count = stats["edges"], stats["count"]
    full = count > 0
    left, width = edges[:-1][full], np.diff(edges)[full]
    accuracy, confidence = stats["accuracy"][full], stats["confidence"][full]

    from matplotlib import colors  # slow to import (a third of a second); only figures need it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.bar(left, accuracy, width=width, align="edge", color="C0", edgecolor="k",
            linewidth=0.6, label="accuracy")
    top.bar(left, confidence - accuracy, width=width, bottom=accuracy, align="edge",
            color=colors.to_rgba("C3", 0.3), edgecolor="C3", linewidth=0.6, hatch="//",
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1,
             label="perfect calibration")
    top.text(0.03, 0.97, f"ECE = {error:.4f}", transform=top.transAxes, va="top",
             ha="left", fontsize="medium")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title if title is not None else
                  f"Reliability diagram ({num_bins} bins, n={int(count.sum()):,})")
    top.legend(loc="lower right", fontsize="small")
    bottom.bar(edges[:-1], count, width=np.diff(edges), align="edge", color="0.6",
               edgecolor="k", linewidth=0.6)
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("count")
    return _save(fig, path)


# ---------------------------------------------------------------------------
# LLC against the training step


def _curves(name: str, value, shape: tuple[int, int] | None) -> np.ndarray:
    """A (curve, step) float array of finite or NaN values (a 1-d value is one curve)."""
    array = np.asarray(value, np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        want = "(curve, step)" if shape is None else f"shape {shape}"
        raise ValueError(f"{name} must be {want}, like llc_mean; got shape "
                         f"{np.shape(value)}")
    if np.isinf(array).any():
        raise ValueError(f"{name} holds inf; missing values are NaN")
    return array


def _window_on_unflagged(ax, steps, mean, std, flagged, reference):
    """Scale the LLC axis to the unflagged estimates (and the reference): a
    flagged estimate at a saddle can be hundreds below, and would flatten the
    curve that matters. Flagged points off that window are drawn at its edge as
    red triangles, with a note of how far they go."""
    ok = ~flagged & np.isfinite(mean)
    if not ok.any():
        return
    spread = np.zeros_like(mean) if std is None else np.nan_to_num(std)
    lo = float(np.min((mean - spread)[ok]))
    hi = float(np.max((mean + spread)[ok]))
    if reference is not None:
        lo, hi = min(lo, reference), max(hi, reference)
    pad = 0.15 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    off = flagged & np.isfinite(mean) & ((mean < lo) | (mean > hi))
    if not off.any():
        return
    ax.set_ylim(lo, hi)
    for i, j in zip(*np.nonzero(off)):
        below = mean[i, j] < lo
        ax.plot(steps[j], lo if below else hi, "v" if below else "^", color="red",
                markersize=7, clip_on=False)
    ax.text(0.01, 0.02, f"{int(off.sum())} flagged estimate(s) off the axis "
                        f"(from {np.min(mean[off]):.4g} to {np.max(mean[off]):.4g})",
            transform=ax.transAxes, fontsize="small", color="red")


def plot_llc_curve(steps, llc_mean, llc_std=None, *, train_loss=None, test_loss=None,
                   labels=None, step_label: str = "step", flagged=None,
                   reference: float | None = None, reference_label: str = "theory",
                   path=None, title: str | None = None) -> Figure:
    """Local learning coefficients along a training run: each curve's LLC
    estimate with error bars (llc_std, e.g. the sd across the estimator's
    chains) above, and its training and test loss below, against the step.

    steps: (step,) increasing; llc_mean, llc_std, train_loss, test_loss:
    (curve, step) or (step,), NaN where there is no value (a diverged estimate
    is drawn as a gap, not hidden by a line through it). labels: one per curve.
    flagged: booleans like llc_mean, True where the estimate has flags (e.g.
    w* is not a minimum): those points are circled in red, so a value at a
    saddle is not read as a coefficient. reference: a known coefficient, drawn
    as a horizontal line labelled reference_label.
    """
    path, title = _path(path), _title(title)
    steps = np.asarray(steps, np.float64)
    if steps.ndim != 1 or steps.size == 0 or not np.isfinite(steps).all() \
            or (np.diff(steps) <= 0).any():
        raise ValueError(f"steps must be a non-empty increasing 1-d array of finite "
                         f"values, got {np.asarray(steps).tolist()!r}")
    mean = _curves("llc_mean", llc_mean, None)
    if mean.shape[1] != steps.size:
        raise ValueError(f"llc_mean has {mean.shape[1]} steps, steps has {steps.size}")
    std = None if llc_std is None else _curves("llc_std", llc_std, mean.shape)
    if flagged is not None:
        flagged = np.broadcast_to(np.asarray(flagged), mean.shape) if np.ndim(flagged) == 1 \
            else np.asarray(flagged)
        if flagged.shape != mean.shape or flagged.dtype != bool:
            raise ValueError(f"flagged must be booleans shaped like llc_mean {mean.shape}, "
                             f"got {np.asarray(flagged).dtype} {np.shape(flagged)}")
    if reference is not None and not np.isfinite(reference):
        raise ValueError(f"reference must be a finite number, got {reference!r}")
    losses = {name: _curves(name, value, mean.shape)
              for name, value in (("train_loss", train_loss), ("test_loss", test_loss))
              if value is not None}
    if labels is None:
        labels = [None] * len(mean) if len(mean) == 1 else [f"curve {i}"
                                                            for i in range(len(mean))]
    if len(labels) != len(mean) or not all(x is None or isinstance(x, str) for x in labels):
        raise ValueError(f"labels must be {len(mean)} str, got {labels!r}")

    from matplotlib.figure import Figure  # slow to import; only figures need it

    rows = 2 if losses else 1
    fig = Figure(figsize=(6.4, 3.2 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0])
    for i, label in enumerate(labels):
        axes[0].errorbar(steps, mean[i], yerr=None if std is None else std[i], marker="o",
                         markersize=3, capsize=2, color=f"C{i}", label=label)
        if flagged is not None and flagged[i].any():
            axes[0].plot(steps[flagged[i]], mean[i][flagged[i]], "o", markersize=8,
                         markerfacecolor="none", markeredgecolor="red",
                         label="flagged" if i == 0 else None)
        if losses:
            for name, style in (("train_loss", "-"), ("test_loss", "--")):
                if name in losses:
                    what = "training" if name == "train_loss" else "test"
                    axes[1].plot(steps, losses[name][i], style, color=f"C{i}",
                                 label=f"{what}{'' if label is None else f' ({label})'}")
    if reference is not None:
        axes[0].axhline(reference, color="gray", linestyle=":", label=reference_label)
    if flagged is not None:
        _window_on_unflagged(axes[0], steps, mean, std, flagged, reference)
    axes[0].set_ylabel("LLC estimate" + ("" if std is None else " (+- sd)"))
    axes[0].set_title(title if title is not None else "Local learning coefficient "
                                                      "along training")
    if (any(label is not None for label in labels) or reference is not None
            or (flagged is not None and flagged.any())):
        axes[0].legend(fontsize="small")
    if losses:
        axes[1].set_ylabel("loss")
        axes[1].legend(fontsize="small")
    axes[-1].set_xlabel(step_label)
    return _save(fig, path)
