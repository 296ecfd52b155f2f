"""Weight space against function space: how R-hat evolves with chain length.

Izmailov et al. 2021 report good R-hat on test-set predictions and large R-hat
on some weights. This study asks whether chains that look mixed in function
space are mixed in weight space, and whether the weight-space disagreement is
only relabelled hidden units (a symmetry of the network) or different basins:
for prefixes of the chains of growing length it computes R-hat of

- "weights": the sampled weights as they are,
- "weights (aligned)": the weights after permutation alignment
  (`ws.diagnostics.align_permutations`), which undoes relabelled units,
- "predictions": the predictions on eval inputs (function space),

summarizes each by the fraction of values below 1.1 and 1.01 and quantiles,
draws the curves against draws per chain, and states the answer at the longest
length in words computed from those numbers.

    result = ws.experiments.mixing(trace, network, out="figures/mixing")
    print(result)          # table by length and space, then the verdict
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from weightspace.checks import int_at_least
from weightspace.diagnostics.align import align_permutations
from weightspace.diagnostics.rhat import METHODS, rhat, rhat_summary
from weightspace.experiments.tables import fixed_width

if TYPE_CHECKING:
    from matplotlib.figure import Figure
from weightspace.jsonio import is_writer, jsonable, write_json

SPACES = ("weights", "weights (aligned)", "predictions")
# Split R-hat halves every chain; rank R-hat needs at least 2 draws per half.
MIN_LENGTH = 4
NUM_LENGTHS = 8
# 1.1: Gelman et al. (BDA3)'s rule of thumb; 1.01: Vehtari et al. 2021.
THRESHOLDS = (1.1, 1.01)
QUANTILES = (0.5, 0.9, 0.99, 1.0)
# A space "looks mixed" when at least this fraction of its R-hat values is
# below the first threshold; it only words the verdict, the numbers are reported.
MIXED_FRACTION = 0.9
FORMAT = 1
DPI = 120
_COLORS = {"weights": "C0", "weights (aligned)": "C2", "predictions": "C1"}  # as plot_rhat


# ------------------------------------------------------------------ the grid of lengths

def length_grid(num_draws: int, num: int = NUM_LENGTHS, start: int = MIN_LENGTH
                ) -> tuple[int, ...]:
    """About `num` chain lengths log-spaced from `start` to `num_draws` (both
    included), rounded to integers, duplicates dropped (short chains give fewer)."""
    num_draws = int_at_least("num_draws", num_draws, MIN_LENGTH)
    num = int_at_least("num", num, 1)
    start = min(int_at_least("start", start, MIN_LENGTH), num_draws)
    if num == 1:
        return (num_draws,)
    grid = np.rint(np.geomspace(start, num_draws, num)).astype(int)
    return tuple(int(n) for n in np.unique(np.clip(grid, start, num_draws)))


def check_lengths(lengths, num_draws: int, name: str = "lengths") -> tuple[int, ...]:
    """lengths as a sorted tuple of distinct ints in [MIN_LENGTH, num_draws], or a
    ValueError/TypeError naming `name`, the value and what is allowed."""
    allowed = (f"a non-empty sequence of ints from {MIN_LENGTH} (split R-hat needs "
               f"{MIN_LENGTH // 2} draws per half-chain) to {num_draws} (the draws per chain)")
    if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__iter__"):
        raise TypeError(f"{name} must be {allowed}; got {name}={lengths!r}")
    values = list(lengths)
    if not values or any(isinstance(n, bool) or not isinstance(n, numbers.Integral)
                         for n in values):
        raise TypeError(f"{name} must be {allowed}; got {name}={lengths!r}")
    bad = [int(n) for n in values if not MIN_LENGTH <= n <= num_draws]
    if bad:
        raise ValueError(f"{name} must be {allowed}; got {name}={list(map(int, values))!r} "
                         f"with {', '.join(map(str, bad))} out of range")
    return tuple(sorted({int(n) for n in values}))


# ------------------------------------------------------------------ result

@dataclasses.dataclass(frozen=True)
class MixingResult:
    """R-hat summaries of every space at every chain length.

    lengths: draws per chain of the prefixes, ascending.
    curves: {space: {"count": variables, "nan_count": [per length],
        "fraction_below": {threshold: [per length]}, "quantiles": {q: [per length]}}},
        spaces among SPACES, fractions counting NaN as not below (`rhat_summary`).
    verdict: the answer at the longest length, in words from `curves`.
    notes: what was left out and why.
    rhat_values: {space: R-hat pytree at the longest length}, e.g. for
        `ws.diagnostics.plot_rhat`; not part of `to_dict()`.
    paths: {"figure": ..., "json": ...} of the files written with `out=`.
    `str(result)` is the table, the verdict and the notes.
    """

    method: str
    num_chains: int
    num_draws: int
    lengths: tuple
    thresholds: tuple
    mixed_fraction: float
    curves: dict
    verdict: str
    notes: list
    run_dir: str | None = None
    rhat_values: dict = dataclasses.field(default_factory=dict, repr=False)
    paths: dict = dataclasses.field(default_factory=dict)

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self.curves)

    def fraction_below(self, space: str, threshold: float | None = None) -> np.ndarray:
        """Fraction of R-hat values below `threshold` (default the first one) per length."""
        threshold = self.thresholds[0] if threshold is None else threshold
        return self._curve(space, "fraction_below", threshold)

    def quantile(self, space: str, q: float = 0.5) -> np.ndarray:
        """Quantile q of the R-hat values (NaN left out) per length."""
        return self._curve(space, "quantiles", q)

    def _curve(self, space: str, kind: str, key: float) -> np.ndarray:
        if space not in self.curves:
            raise KeyError(f"space {space!r} is not in this result; spaces: {self.spaces}")
        values = self.curves[space][kind]
        if key not in values:
            raise KeyError(f"{kind}: {key!r} was not computed; computed: {tuple(values)}")
        return np.asarray(values[key], float)

    def to_dict(self) -> dict:
        """JSON-ready (thresholds and quantiles as string keys, NaN as None)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("rhat_values", "paths")}
        return {"format": FORMAT, **jsonable(out, key=_key)}

    def table(self) -> str:
        header = ["draws", "space", "n", *(f"< {t:g}" for t in self.thresholds),
                  *map(_quantile_name, QUANTILES), "NaN"]
        rows = []
        for i, n in enumerate(self.lengths):
            for j, (space, c) in enumerate(self.curves.items()):
                rows.append([str(n) if j == 0 else "", space, f"{c['count']:,}",
                             *(_percent(c["fraction_below"][t][i]) for t in self.thresholds),
                             *(_number(c["quantiles"][q][i]) for q in QUANTILES),
                             f"{c['nan_count'][i]:,}"])
        title = (f"R-hat ({self.method}) of the first N draws of {self.num_chains} chains "
                 f"({self.num_draws} draws each)")
        return "\n".join([title, fixed_width(header, rows, left=(0, 1))])

    def __str__(self) -> str:
        return "\n".join([self.table(), "", self.verdict, *(f"note: {n}" for n in self.notes)])


def _quantile_name(q: float) -> str:
    return {0.5: "median", 1.0: "max"}.get(q, f"{100 * q:g}%")


def _number(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _percent(x: float) -> str:
    """Percent with one decimal; never rounds a fraction below 1 up to 100.0% or
    one above 0 down to 0.0%, since "all" and "none" are what a reader looks for."""
    if x is None or not math.isfinite(x):
        return "nan"
    if 0.999 <= x < 1:
        return ">99.9%"
    if 0 < x < 0.0005:
        return "<0.1%"
    return f"{100 * x:.1f}%"


def _key(k) -> str:
    """A JSON key: thresholds and quantiles as written in the table (1.1, 0.5, 1)."""
    return f"{k:g}" if isinstance(k, float) else str(k)


# ------------------------------------------------------------------ the study

def _shape_check(positions, predictions) -> tuple[int, int]:
    leaves = jax.tree_util.tree_leaves_with_path(positions)
    if not leaves:
        raise ValueError(f"trace.positions must be a pytree of arrays with leading "
                         f"(chain, draw) axes; got an empty pytree {positions!r}")
    shapes = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves}
    lead = {s[:2] for s in shapes.values()}
    if any(len(s) < 2 for s in shapes.values()) or len(lead) != 1:
        raise ValueError(f"trace.positions: every leaf must be (chain, draw, ...) with the "
                         f"same chain and draw counts; got shapes {shapes}")
    chains, draws = lead.pop()
    if predictions is None:
        raise ValueError("trace.predictions is None: function-space R-hat needs the "
                         "predictions on eval inputs, (chain, draw, n_eval, ...); sample "
                         "with eval_x= (the CLI: without --no-eval)")
    shape = tuple(np.shape(predictions))
    if len(shape) < 2 or shape[:2] != (chains, draws):
        raise ValueError(f"trace.predictions must be (chain, draw, n_eval, ...) with the "
                         f"positions' {chains} chains and {draws} draws; got shape {shape}")
    if chains < 2 or draws < MIN_LENGTH:
        raise ValueError(f"trace: R-hat needs at least 2 chains of {MIN_LENGTH} draws; got "
                         f"{chains} chain(s) of {draws} draw(s)")
    return int(chains), int(draws)


def _check_thresholds(thresholds) -> tuple[float, ...]:
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise TypeError(f"thresholds must be a non-empty sequence of numbers > 1; got "
                        f"thresholds={thresholds!r}")
    values = tuple(thresholds)
    if not values or any(isinstance(t, bool) or not isinstance(t, numbers.Real)
                         or not math.isfinite(t) or t <= 1 for t in values):
        raise ValueError(f"thresholds must be a non-empty sequence of finite numbers > 1; "
                         f"got thresholds={thresholds!r}")
    return tuple(float(t) for t in values)


def mixing(trace: Any, network: Any = None, *, lengths=None, out=None,
           method: str = "rank", aligned_positions: Any = None,
           num_lengths: int = NUM_LENGTHS, thresholds=THRESHOLDS,
           mixed_fraction: float = MIXED_FRACTION,
           chunk_size: int | None = None) -> MixingResult:
    """R-hat in weight space (raw and permutation-aligned) and in function space
    on prefixes of the chains of growing length.

    trace: a `Trace` (or anything with `positions`, leaves (chain, draw, ...), and
        `predictions`, (chain, draw, n_eval, ...)), at least 2 chains of 4 draws.
    network: a network of `ws.models`, a Posterior or a permutation spec; the
        weights are then aligned with `ws.diagnostics.align_permutations`.
        Without it (and without `aligned_positions`) the aligned space is left
        out, with a note.
    lengths: draws per chain of the prefixes, each in [4, num_draws]; default
        `length_grid(num_draws, num_lengths)`: log-spaced from 4 to all draws.
    out: a directory; `mixing.png` (`plot_mixing`) and `mixing.json`
        (`to_dict()`) are written there.
    method: R-hat estimator of `ws.diagnostics.rhat` ("rank", "split", "classic").
    aligned_positions: the aligned weights when already computed.
    thresholds: R-hat values whose fraction-below is reported; the first one
        words the verdict.
    mixed_fraction: the verdict calls a space mixed when at least this fraction
        of its R-hat values is below thresholds[0].

    The weights are aligned once, on the full chains, and the prefixes are taken
    from the aligned draws. Alignment relabels every draw to match one fixed
    reference draw (chain 0's last) and never changes a draw's function, so a
    prefix of the aligned chains is the prefix relabelled; every length is then
    measured in the same labelling (aligning each prefix on its own would move
    the reference to the prefix's last draw, mixing a change of labels into the
    curve), and weight matching runs once per draw instead of once per draw and
    length. That the reference may lie beyond a short prefix does not matter: it
    only fixes the labels, no statistic of the later draws enters the R-hat.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got method={method!r}")
    if not hasattr(trace, "positions"):
        raise TypeError(f"trace must have .positions (leaves (chain, draw, ...)) and "
                        f".predictions (a ws.samplers Trace); got trace={trace!r}")
    positions = trace.positions
    predictions = getattr(trace, "predictions", None)
    num_chains, num_draws = _shape_check(positions, predictions)
    num_lengths = int_at_least("num_lengths", num_lengths, 1)
    lengths = (length_grid(num_draws, num_lengths) if lengths is None
               else check_lengths(lengths, num_draws))
    thresholds = _check_thresholds(thresholds)
    if (isinstance(mixed_fraction, bool) or not isinstance(mixed_fraction, numbers.Real)
            or not 0 < mixed_fraction <= 1):
        raise ValueError(f"mixed_fraction must be a number in (0, 1]; got "
                         f"mixed_fraction={mixed_fraction!r}")
    if out is not None and (not isinstance(out, (str, os.PathLike)) or str(out) == ""):
        raise TypeError(f"out must be a directory path (str or os.PathLike) or None; got "
                        f"out={out!r}")

    notes = []
    if aligned_positions is None and network is not None:
        aligned_positions = align_permutations(positions, network)
    if aligned_positions is not None:
        if (jax.tree.structure(aligned_positions) != jax.tree.structure(positions) or any(
                np.shape(a) != np.shape(b) for a, b in
                zip(jax.tree.leaves(aligned_positions), jax.tree.leaves(positions)))):
            raise ValueError("aligned_positions must have the structure and shapes of "
                             "trace.positions (the output of align_permutations)")
    else:
        notes.append("no network given: weights were not permutation-aligned, so "
                     "relabelled hidden units cannot be told apart from different basins")
    spaces = {"weights": positions}
    if aligned_positions is not None:
        spaces["weights (aligned)"] = aligned_positions
    spaces["predictions"] = predictions

    summaries: dict[str, list[dict]] = {space: [] for space in spaces}
    values = None
    for n in lengths:
        prefix = {space: jax.tree.map(lambda x, n=n: x[:, :n], draws)
                  for space, draws in spaces.items()}
        # One call over every space: one compiled program per length, and the
        # workers share the chunks of all spaces.
        values = rhat(prefix, method=method, chunk_size=chunk_size)
        for space in spaces:
            summaries[space].append(rhat_summary(values[space], thresholds=thresholds,
                                                 quantiles=QUANTILES))
    curves = {space: {
        "count": rows[0]["count"],
        "nan_count": [r["nan_count"] for r in rows],
        "fraction_below": {t: [r["fraction_below"][t] for r in rows] for t in thresholds},
        "quantiles": {q: [r["quantiles"][q] for r in rows] for q in QUANTILES},
    } for space, rows in summaries.items()}
    info = getattr(trace, "info", None)
    run_dir = info.get("run_dir") if isinstance(info, dict) else None
    result = MixingResult(method, num_chains, num_draws, lengths, thresholds,
                          float(mixed_fraction), curves,
                          _verdict(curves, lengths, num_chains, thresholds[0],
                                   mixed_fraction),
                          notes, None if run_dir is None else str(run_dir),
                          {space: values[space] for space in spaces})
    if out is not None:
        out = Path(out)
        paths = {"figure": str(out / "mixing.png"), "json": str(out / "mixing.json")}
        if is_writer():  # process 0 of a multi-process job; the others compute alike
            out.mkdir(parents=True, exist_ok=True)
            plot_mixing(result, path=paths["figure"])
            write_json(paths["json"], result.to_dict())
        result.paths.update(paths)
    return result


# ------------------------------------------------------------------ the verdict

def _verdict(curves: dict, lengths, num_chains: int, threshold: float = THRESHOLDS[0],
            mixed_fraction: float = MIXED_FRACTION) -> str:
    """The answer in words, from `MixingResult.curves`: the fractions below
    `threshold` at the longest length, how they changed from the shortest one, and
    which of "mixed in both spaces", "relabelled units only", "different basins"
    or "not even mixed in function space" the numbers say."""
    last = -1
    frac = {s: c["fraction_below"][threshold] for s, c in curves.items()}
    median = {s: c["quantiles"][0.5][last] for s, c in curves.items()}
    pred, raw = frac["predictions"][last], frac["weights"][last]
    aligned = frac["weights (aligned)"][last] if "weights (aligned)" in frac else None
    conjunction = "but" if raw < pred else "and"
    weights = f"{_percent(raw)} of weights"
    if aligned is not None:
        weights += f" ({_percent(aligned)} aligned)"
    lines = [f"At {lengths[last]} draws per chain ({num_chains} chains), "
             f"{_percent(pred)} of predictions {conjunction} {weights} have R-hat < "
             f"{threshold:g}; median R-hat " + ", ".join(
                 f"{_short(s)} {_number(m)}" for s, m in median.items()) + "."]
    for other in (t for t in curves["weights"]["fraction_below"] if t != threshold):
        lines.append(f"Below {other:g}: " + ", ".join(
            f"{_percent(c['fraction_below'][other][last])} of "
            f"{'aligned weights' if s == 'weights (aligned)' else s}"
            for s, c in curves.items()) + ".")
    nan = {s: c["nan_count"][last] for s, c in curves.items() if c["nan_count"][last]}
    if nan:
        lines.append("NaN R-hat (a variable constant over all draws), counted as not below: "
                     + ", ".join(f"{n:,} of {curves[s]['count']:,} {_short(s)}"
                                 for s, n in nan.items()) + ".")
    if len(lengths) > 1:
        lines.append(f"From {lengths[0]} to {lengths[last]} draws per chain the fraction "
                     f"below {threshold:g} went " + ", ".join(
                         f"from {_percent(f[0])} to {_percent(f[last])} ({_short(s)})"
                         for s, f in frac.items()) + ".")
    mixed = lambda f: f is not None and f >= mixed_fraction  # noqa: E731
    rule = (f"(a space counts as mixed when at least {_percent(mixed_fraction)} of its "
            f"R-hat values are below {threshold:g})")
    if not mixed(pred):
        answer = ("the chains are not mixed even in function space at this length, so "
                  "they cannot be judged in weight space yet: longer chains are needed")
        if mixed(raw):
            answer += ("; their weights do look mixed, which is unusual (predictions that "
                       "are constant, e.g. saturated probabilities, give NaN R-hat, counted "
                       "as not below)")
    elif mixed(raw):
        answer = "the chains look mixed in both function space and weight space"
    elif aligned is None:
        answer = ("the chains look mixed in function space but not in weight space; "
                  "without permutation alignment it is open whether they differ only by "
                  "relabelled hidden units or sit in different basins")
    elif mixed(aligned):
        answer = ("the chains look mixed in function space; in weight space they are not "
                  "mixed as sampled but are after permutation alignment: they differ by "
                  "relabelled hidden units, the same basin(s) up to symmetry")
    else:
        answer = ("the chains look mixed in function space but not in weight space, even "
                  "after permutation alignment: chains that agree on predictions sit in "
                  "different basins (or different regions of one), so good function-space "
                  "R-hat does not show that they weight the basins by their volume")
    lines.append(f"Verdict {rule}: {answer}.")
    return "\n".join(lines)


def _short(space: str) -> str:
    return {"weights (aligned)": "aligned"}.get(space, space)


# ------------------------------------------------------------------ the figure

def plot_mixing(result: MixingResult, *, path=None) -> Figure:
    """Two panels against draws per chain (log scale), one line per space: the
    fraction of R-hat values below each threshold (solid the first, dotted the
    second), and the median R-hat (solid) with its 90% quantile (dashed).
    path: if given, the figure is written there as a PNG."""
    if not isinstance(result, MixingResult):
        raise TypeError(f"result must be a MixingResult (of ws.experiments.mixing); got "
                        f"{type(result).__name__}")
    from matplotlib import ticker  # slow to import (a third of a second); only figures need it
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    lengths = np.asarray(result.lengths)
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True)
    styles = ["-", ":", "-.", "--"]
    for space in result.spaces:
        color = _COLORS.get(space, None)
        for t, style in zip(result.thresholds, styles):
            left.plot(lengths, result.fraction_below(space, t), linestyle=style,
                      marker="o" if style == "-" else ".", color=color)
        right.plot(lengths, result.quantile(space, 0.5), "-o", color=color)
        right.plot(lengths, result.quantile(space, 0.9), "--", marker=".", color=color)
    for t, style in zip(result.thresholds, styles):
        right.axhline(t, color="0.5", linestyle=style, linewidth=0.8)
        right.annotate(f"{t:g}", (1, t), xycoords=("axes fraction", "data"),
                       xytext=(3, 0), textcoords="offset points", va="center",
                       fontsize="x-small", color="0.4")
    fig.legend(handles=[Line2D([], [], color=_COLORS.get(s), marker="o", label=_short(s))
                        for s in result.spaces],
               loc="outside lower center", ncols=len(result.spaces), fontsize="small")
    left.legend(handles=[Line2D([], [], color="k", linestyle=style, label=f"R-hat < {t:g}")
                         for t, style in zip(result.thresholds, styles)],
                loc="best", fontsize="small")
    right.legend(handles=[Line2D([], [], color="k", linestyle="-", label="median"),
                          Line2D([], [], color="k", linestyle="--", label="90% quantile")],
                 loc="best", fontsize="small")
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("fraction of R-hat values below threshold")
    right.set_ylabel(f"R-hat ({result.method})")
    finite = np.concatenate([np.concatenate([result.quantile(s, 0.5), result.quantile(s, 0.9)])
                             for s in result.spaces] + [np.asarray(result.thresholds)])
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.max() / finite.min() >= 1.5:
        right.set_yscale("log")
        if finite.max() / finite.min() < 10:  # the log locator would mark only 1
            right.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6))
            right.yaxis.set_minor_locator(ticker.NullLocator())
        right.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(lengths, labels=[str(n) for n in lengths])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("draws per chain (log scale)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"R-hat in weight and function space against chain length "
                 f"({result.num_chains} chains)")
    if path is not None and is_writer():
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    return fig
