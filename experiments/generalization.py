"""Does the local learning coefficient predict generalization?

Singular learning theory ties the LLC of a solution to how well it generalizes
(Watanabe 2009; Lau et al. 2023): at a fixed training loss, a smaller LLC means
a simpler solution. `weightspace compare` estimates the LLC at the SGD
solution, at every deep-ensemble member and at chosen HMC draws, each with its
training NLL L_n(w*) and its own test metrics. This study reads those
positions, tabulates LLC, test NLL and the generalization gap (test NLL minus
training NLL), and measures how they go together with Spearman's and
Pearson's correlation, over all positions and within each method.

    result = ws.experiments.llc_vs_generalization("runs/compare-quick")
    print(result)          # the positions, per-method means, correlations, notes
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightspace.experiments.methods import LABELS, METHODS
from weightspace.experiments.tables import fixed_width, fmt
from weightspace.jsonio import is_writer, jsonable, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT = 1
# A correlation of fewer points is not reported (and below 3 it is +-1 or undefined).
MIN_POINTS = 3
FIGURE = "llc_vs_generalization.png"
JSON = "llc_vs_generalization.json"
DPI = 120
PAIRS = {"llc_vs_test_nll": "test_nll", "llc_vs_gap": "gap"}
_MARKERS = {"sgd": "s", "deep_ensemble": "^", "hmc": "o"}


class GeneralizationError(ValueError):
    """Bad input to `llc_vs_generalization` (names the argument and what is allowed)."""


# ------------------------------------------------------------------ result

@dataclasses.dataclass(frozen=True)
class LLCGeneralization:
    """The LLC of each position of a compare run against its generalization.

    rows: one dict per position: method, chain, draw, llc, llc_std, llc_se
        (llc_std / sqrt(finite per-chain estimates)), train_nll (L_n(w*)),
        test_nll, gap (test_nll - train_nll), test_accuracy, flags; a missing
        number is NaN.
    correlations: {"all": pairs, "by_method": {method: pairs}} with pairs
        {"llc_vs_test_nll" | "llc_vs_gap": {"n", "spearman", "pearson"}};
        by_method holds methods with at least MIN_POINTS positions; a
        correlation is None with fewer than MIN_POINTS finite points or a
        constant variable.
    notes: what was left out and why.
    figure: path of the figure written, or None.
    preset, dataset: names, for titles.
    `str(result)` is the table, the correlations and the notes.
    """

    rows: list
    correlations: dict
    notes: list
    figure: str | None = None
    preset: str | None = None
    dataset: str | None = None

    def table(self) -> str:
        """One line per position, then each method's means over its finite values."""
        header = ["method", "chain", "draw", "LLC", "LLC std", "LLC SE", "train NLL",
                  "test NLL", "gap", "test acc", "flags"]
        lines = [[r["method"], str(r["chain"]), str(r["draw"]), fmt(r["llc"], 3),
                  fmt(r["llc_std"], 3), fmt(r["llc_se"], 3), fmt(r["train_nll"]),
                  fmt(r["test_nll"]), fmt(r["gap"]), fmt(r["test_accuracy"]),
                  "; ".join(r["flags"]) or "-"] for r in self.rows]
        for method in _methods(self.rows):
            rows = [r for r in self.rows if r["method"] == method]
            flagged = sum(bool(r["flags"]) for r in rows)
            lines.append([method, "mean", f"n={len(rows)}", fmt(_mean(rows, "llc"), 3), "",
                          "", *(fmt(_mean(rows, k)) for k in
                                ("train_nll", "test_nll", "gap", "test_accuracy")),
                          f"{flagged} flagged" if flagged else "-"])
        return fixed_width(header, lines, left=(0, len(header) - 1))

    def correlation_table(self) -> str:
        """Spearman and Pearson of LLC against test NLL and the gap, by group."""
        header = ["LLC against", "positions", "n", "Spearman", "Pearson"]
        groups = {"all": self.correlations["all"], **self.correlations["by_method"]}
        lines = [[what, group, str(c["n"]), fmt(c["spearman"], 3), fmt(c["pearson"], 3)]
                 for group, pairs in groups.items()
                 for what, c in zip(("test NLL", "gap"), pairs.values())]
        return fixed_width(header, lines, left=(0, 1))

    def to_dict(self) -> dict:
        """JSON-ready: NaN as None."""
        return {"format": FORMAT, **jsonable(dataclasses.asdict(self))}

    def __str__(self) -> str:
        title = "LLC against generalization" + "".join(
            f", {k} {v}" for k, v in (("preset", self.preset), ("data", self.dataset)) if v)
        return "\n".join([title, self.table(), "", self.correlation_table(),
                          *(f"note: {n}" for n in self.notes)])


def _methods(rows: list[dict]) -> list[str]:
    """The methods of `rows` in the order they first appear."""
    return list(dict.fromkeys(r["method"] for r in rows))


def _mean(rows: list[dict], key: str) -> float:
    values = np.array([r[key] for r in rows], np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


# ------------------------------------------------------------------ reading compare's output

def _where(source, name: str) -> str:
    if isinstance(source, dict):
        return f"{name} (a results dict)"
    return f"{name} {source}" if name.startswith("--") else f"{name}={str(source)!r}"


def load_results(source, name: str = "source") -> tuple[dict, Path | None]:
    """(results, the directory or None) of a compare output directory or results
    dict, with every check of the input; errors name `name` ("source", or "--out"
    for the command)."""
    directory = None
    where = _where(source, name)
    if isinstance(source, (str, os.PathLike)) and str(source):
        directory = Path(source)
        if not directory.is_dir():
            raise GeneralizationError(
                f"{where}: no such directory; {name} must be an output directory of "
                f"`weightspace compare` (holding results.json)"
                + ("" if name.startswith("--") else " or a results dict"))
        path = directory / "results.json"
        if not path.is_file():
            raise GeneralizationError(
                f"{where} holds no results.json: it is not an output directory of "
                f"`weightspace compare` (which writes results.json after every stage)")
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise GeneralizationError(f"{where}: results.json cannot be read: {err}") from None
    elif isinstance(source, dict):
        results = source
    else:
        raise TypeError(f"{name} must be an output directory of `weightspace compare` (str "
                        f"or os.PathLike) or its results dict; got {type(source).__name__} "
                        f"{name}={source!r}")
    if not isinstance(results, dict) or "llc" not in results:
        raise GeneralizationError(f"{where}: the results have no 'llc' entry; they must be "
                                  f"those of `weightspace compare` (RESULTS_SCHEMA)")
    llc = results["llc"]
    if llc is None:
        record = (results.get("stages") or {}).get("llc")
        raise GeneralizationError(f"{where}: results['llc'] is null: the llc stage of "
                                  f"`weightspace compare` did not finish ({_status(record)}); "
                                  f"run compare again with the same --out to resume it")
    positions = llc.get("positions") if isinstance(llc, dict) else None
    if not isinstance(positions, list):
        raise GeneralizationError(f"{where}: results['llc'] must be a dict with a list "
                                  f"'positions'; got {llc!r:.200}")
    if not positions:
        raise GeneralizationError(f"{where}: results['llc']['positions'] is empty: no "
                                  f"position to relate the LLC to generalization")
    return results, directory


def _status(record) -> str:
    """The llc stage's record of results['stages'] in words."""
    if not isinstance(record, dict):
        return "results['stages'] has no llc record: compare stopped before it"
    text = f"results['stages']['llc']['status'] is {record.get('status')!r}"
    error = record.get("error")
    if error:
        text += f": {error.get('type')}: {error.get('message')}"
    elif record.get("reason"):
        text += f": {record['reason']}"
    return text


def _number(value) -> float:
    """A number of results.json as a float; null (NaN written as JSON) as NaN."""
    return math.nan if value is None else float(value)


def _row(entry: dict, index: int) -> dict:
    try:
        test = entry["test"] or {}
        per_chain = np.array([_number(v) for v in entry.get("per_chain") or []], np.float64)
        count = int(np.isfinite(per_chain).sum())
        llc_std = _number(entry.get("llc_std"))
        se = llc_std / math.sqrt(count) if count else math.nan
        train, test_nll = _number(entry["init_loss"]), _number(test.get("nll"))
        return {"method": str(entry["method"]), "chain": int(entry["chain"]),
                "draw": int(entry["draw"]), "llc": _number(entry["llc"]),
                "llc_std": llc_std, "llc_se": se,
                "train_nll": train, "test_nll": test_nll, "gap": test_nll - train,
                "test_accuracy": _number(test.get("accuracy")),
                "flags": [str(f) for f in entry.get("flags") or []]}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise GeneralizationError(
            f"results['llc']['positions'][{index}] must hold method, chain, draw, llc, "
            f"init_loss and test (RESULTS_SCHEMA); got {entry!r:.300} ({err!r})") from None


# ------------------------------------------------------------------ correlations

def _correlation(x, y) -> dict:
    """{"n", "spearman", "pearson"} of the pairs where both x and y are finite;
    a coefficient is None with fewer than MIN_POINTS pairs or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": n, "spearman": None, "pearson": None}
    from scipy import stats  # slow to import; only the correlations need it

    return {"n": n, "spearman": float(stats.spearmanr(x, y).statistic),
            "pearson": float(stats.pearsonr(x, y).statistic)}


def _pairs(rows: list[dict]) -> dict:
    llc = [r["llc"] for r in rows]
    return {pair: _correlation(llc, [r[key] for r in rows]) for pair, key in PAIRS.items()}


def _correlations(rows: list[dict]) -> dict:
    by_method = {}
    for method in _methods(rows):
        group = [r for r in rows if r["method"] == method]
        if len(group) >= MIN_POINTS:
            by_method[method] = _pairs(group)
    return {"all": _pairs(rows), "by_method": by_method}


def _notes(rows: list[dict], llc: dict) -> list[str]:
    notes = [f"compare: {n}" for n in llc.get("notes") or []]
    name = lambda r: f"{r['method']} chain {r['chain']} draw {r['draw']}"
    missing = [name(r) for r in rows if not math.isfinite(r["llc"])]
    if missing:
        notes.append(f"{len(missing)} of {len(rows)} positions have no LLC estimate (null: "
                     f"no chain of the LLC sampler gave a finite one): in the table, left "
                     f"out of the correlations and the figure: {', '.join(missing)}")
    for key, what in (("test_nll", "test NLL"), ("gap", "gap")):
        lacking = [name(r) for r in rows if math.isfinite(r["llc"])
                   and not math.isfinite(r[key])]
        if lacking:
            notes.append(f"{len(lacking)} positions with an LLC have no {what} (null): left "
                         f"out of its correlations and panel: {', '.join(lacking)}")
    small = [m for m in _methods(rows)
             if sum(r["method"] == m for r in rows) < MIN_POINTS]
    if small:
        notes.append(f"no per-method correlation for {', '.join(small)}: fewer than "
                     f"{MIN_POINTS} positions")
    return notes


# ------------------------------------------------------------------ the study

def llc_vs_generalization(source, *, out=None, figure: bool = True) -> LLCGeneralization:
    """LLC against test NLL and the generalization gap at the positions of a
    `weightspace compare` run.

    source: the compare output directory (holding results.json) or its results
        dict; its llc entry must be there (the llc stage finished).
    out: a directory for llc_vs_generalization.png and .json; default the
        source directory, or nothing written for a dict source. Only JAX
        process 0 writes.
    figure: draw the figure (`plot_llc_vs_generalization`) into out.

    Positions whose LLC is null stay in the table and are left out of the
    correlations and the figure, with a note.
    """
    results, directory = load_results(source)
    if not isinstance(figure, bool):
        raise TypeError(f"figure must be True or False; got figure={figure!r}")
    if out is None:
        out = directory
    elif not isinstance(out, (str, os.PathLike)) or not str(out):
        raise TypeError(f"out must be a directory path (str or os.PathLike) or None; got "
                        f"out={out!r}")
    out = None if out is None else Path(out)
    if out is not None and out.exists() and not out.is_dir():
        raise GeneralizationError(f"out={str(out)!r} exists and is not a directory")

    llc = results["llc"]
    rows = [_row(e, i) for i, e in enumerate(llc["positions"])]
    data = results.get("data") or {}
    preset = results.get("preset")
    result = LLCGeneralization(
        rows, _correlations(rows), _notes(rows, llc),
        preset=preset.get("name") if isinstance(preset, dict) else preset,
        dataset=(f"{data['name']} ({data.get('num_train')} train, {data.get('num_test')} "
                 f"test)" if data.get("name") else None))
    if out is None or not is_writer():
        return result
    out.mkdir(parents=True, exist_ok=True)
    if figure:
        fig = plot_llc_vs_generalization(result)
        fig.savefig(out / FIGURE, format="png", dpi=DPI)
        result = dataclasses.replace(result, figure=str(out / FIGURE))
    write_json(out / JSON, result.to_dict())
    return result


# ------------------------------------------------------------------ the figure

def plot_llc_vs_generalization(result: LLCGeneralization) -> Figure:
    """Two panels, LLC on x with horizontal bars of one standard error: test NLL
    (left) and generalization gap (right) on y, one colour and marker per
    method; above each panel's right corner, the Spearman rho of all positions."""
    if not isinstance(result, LLCGeneralization):
        raise TypeError(f"result must be an LLCGeneralization (of llc_vs_generalization); "
                        f"got {type(result).__name__}")
    from matplotlib.figure import Figure  # slow to import (a third of a second); only figures need it

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    labels = {"test_nll": "test NLL", "gap": "generalization gap (test NLL - train NLL)"}
    for ax, (pair, key) in zip(axes, PAIRS.items()):
        for method in _methods(result.rows):
            rows = [r for r in result.rows if r["method"] == method
                    and math.isfinite(r["llc"]) and math.isfinite(r[key])]
            if not rows:
                continue
            color = f"C{METHODS.index(method)}" if method in METHODS else "k"
            se = np.array([r["llc_se"] for r in rows], np.float64)
            ax.errorbar([r["llc"] for r in rows], [r[key] for r in rows],
                        xerr=np.where(np.isfinite(se), se, 0.0), linestyle="none",
                        marker=_MARKERS.get(method, "D"), color=color, capsize=2,
                        label=LABELS.get(method, method))
        c = result.correlations["all"][pair]
        rho = "undefined" if c["spearman"] is None else f"{c['spearman']:.2f}"
        # Above the axes' right corner, where it cannot hide a point.
        ax.set_title(f"Spearman ρ = {rho}, n = {c['n']}", loc="right", fontsize="small")
        ax.set_xlabel("LLC (bars: standard error over the sampler's chains)")
        ax.set_ylabel(labels[key])
        ax.grid(True, alpha=0.3)
    axes[1].axhline(0, color="0.5", linewidth=0.8)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=len(handles),
                   fontsize="small")
    where = ", ".join(v for v in (result.preset and f"preset {result.preset}",
                                  result.dataset) if v)
    fig.suptitle("Local learning coefficient against generalization"
                 + (f": {where}" if where else ""))
    return fig
