"""One table of a sampler run's health: R-hat and ESS in weight space and in
function space, acceptance and divergences per chain and overall."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from weightspace.diagnostics.align import align_permutations
from weightspace.diagnostics.basins import BasinReport, basins as basin_report
from weightspace.diagnostics.ess import ess
from weightspace.diagnostics.rhat import METHODS, rhat, rhat_summary
from weightspace.leaf_names import named_leaves

RHAT_QUANTILES = (0.5, 0.9, 0.99, 1.0)
# Small ESS is the warning sign, so the low quantiles are reported.
ESS_QUANTILES = (0.0, 0.01, 0.1, 0.5)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Tables of `summary(trace)`, each a list of rows (dicts):

    rhat: one row per space ("weights", "weights (aligned)", "predictions"):
        count, nan_count, fraction_below {threshold: fraction}, quantiles {q: value}.
    ess: one row per space and kind (bulk, tail): count, quantiles {q: value}.
    chains: one row per chain and a last row with chain "all": draws, mean
        acceptance probability, divergent transitions (count and fraction),
        mean log density, last step size and number of leapfrog steps (those
        the trace's stats have).
    notes: what was left out and why (e.g. one chain: no R-hat).
    cost: what the run cost in full-batch-equivalent gradient evaluations, all
        chains together (when the trace's stats have "grad_evals"): warmup
        (from trace.info["warmup_grad_evals"], start and warmup), sampling and
        total; each ESS row then also has per_1000_grad_evals {q: ESS quantile
        per 1,000 gradients of the total}.
    rhat_values: {space: the R-hat pytree the row summarizes}, for figures
        (`plot_rhat`) without computing R-hat again; not part of `to_dict()`.
    basins: the `BasinReport` when `summary` was given `basins` (None otherwise).
    `str(summary)` prints the tables; `to_dict()` is JSON-ready.
    """

    method: str
    rhat: list
    ess: list
    chains: list
    notes: list
    rhat_values: dict = dataclasses.field(default_factory=dict, repr=False)
    cost: dict = dataclasses.field(default_factory=dict)
    basins: BasinReport | None = None

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "rhat_values"}
        out["basins"] = None if self.basins is None else self.basins.to_dict()
        return out

    def __str__(self) -> str:
        return format_summary(self)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(header), *map(line, rows)]


def _num(x: float, digits: int = 4) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _percent(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{100 * x:.1f}%"


def _q(q: float) -> str:
    return {0.0: "min", 0.5: "median", 1.0: "max"}.get(q, f"{100 * q:g}%")


def format_summary(s: Summary) -> str:
    """The printable form of a Summary."""
    out = []
    if s.rhat:
        thresholds = list(s.rhat[0]["fraction_below"])
        quantiles = list(s.rhat[0]["quantiles"])
        header = [f"R-hat ({s.method})", "n", *(f"< {t:g}" for t in thresholds),
                  *map(_q, quantiles), "NaN"]
        out += _table(header, [
            [r["space"], f"{r['count']:,}",
             *(_percent(r["fraction_below"][t]) for t in thresholds),
             *(_num(r["quantiles"][q]) for q in quantiles), f"{r['nan_count']:,}"]
            for r in s.rhat])
        out.append("")
    if s.ess:
        quantiles = list(s.ess[0]["quantiles"])
        per_grad = "per_1000_grad_evals" in s.ess[0]
        out += _table(["ESS", "n", *map(_q, quantiles),
                       *(["median per 1k gradients"] if per_grad else [])], [
            [f"{r['space']} {r['kind']}", f"{r['count']:,}",
             *(_num(r["quantiles"][q], 3) for q in quantiles),
             *([_num(r["per_1000_grad_evals"][0.5], 3)] if per_grad else [])]
            for r in s.ess])
        out.append("")
    if s.cost:
        c = s.cost
        out += [f"cost: {c['total_grad_evals']:,.0f} full-batch-equivalent gradient "
                f"evaluations over all chains (warmup {c['warmup_grad_evals']:,.0f}, "
                f"sampling {c['sampling_grad_evals']:,.0f})", ""]
    if s.chains:
        columns = [("draws", "draws", lambda v: f"{v:,}"),
                   ("accept_prob", "acceptance", lambda v: f"{v:.3f}"),
                   ("divergences", "divergences", lambda v: f"{v:,}"),
                   ("divergent_fraction", "divergent", _percent),
                   ("mean_logdensity", "mean log density", lambda v: f"{v:.1f}"),
                   ("step_size", "step size", lambda v: f"{v:.3g}"),
                   ("num_steps", "leapfrog steps", lambda v: f"{v:,}")]
        columns = [c for c in columns if c[0] in s.chains[0]]
        out += _table(["chain", *(c[1] for c in columns)], [
            [str(r["chain"]), *(fmt(r[key]) if key in r else "" for key, _, fmt in columns)]
            for r in s.chains])
    if s.basins is not None:
        out += ["", str(s.basins)]
    out += [f"note: {n}" for n in s.notes]
    return "\n".join(out).strip("\n")


def _chain_rows(stats: dict, num_chains: int, num_draws: int) -> list[dict]:
    stats = {k: np.asarray(v) for k, v in (stats or {}).items()}

    def row(chain, pick):
        r = {"chain": chain, "draws": int(num_draws * (num_chains if chain == "all" else 1))}
        if "accept_prob" in stats:
            r["accept_prob"] = float(np.mean(pick(stats["accept_prob"])))
        if "is_divergent" in stats:
            div = pick(stats["is_divergent"]).astype(bool)
            r["divergences"] = int(div.sum())
            r["divergent_fraction"] = float(div.mean())
        if "logdensity" in stats:
            r["mean_logdensity"] = float(np.mean(pick(stats["logdensity"])))
        if "step_size" in stats and chain != "all":
            r["step_size"] = float(pick(stats["step_size"])[-1])
        if "num_steps" in stats and chain != "all":
            r["num_steps"] = int(pick(stats["num_steps"])[-1])
        return r

    rows = [row(c, lambda a, c=c: a[c]) for c in range(num_chains)]
    return [*rows, row("all", lambda a: a)]


def summary(trace: Any, *, method: str = "rank", network: Any = None,
            aligned_positions: Any = None, thresholds=(1.1, 1.01),
            chunk_size: int | None = None, basins: Any = None) -> Summary:
    """R-hat and ESS in weight space and function space, and per-chain stats.

    trace: a `Trace` (or anything with `positions`, leaves (chain, draw, ...),
        `stats`, a dict of (chain, draw) arrays, and `predictions`, None or
        (chain, draw, ...)).
    method: R-hat estimator, "rank" (Vehtari et al. 2021), "split" or
        "classic" (as reported by Izmailov et al. 2021); see `rhat`.
    network: when given (a network of ws.models, a Posterior or a permutation
        spec), weight-space R-hat is also reported on permutation-aligned
        weights (`align_permutations`).
    aligned_positions: the aligned weights when already computed (then
        `network` is not needed).
    thresholds: R-hat values whose fraction-below is reported.
    basins: where the basins are known, a target with `assign` (positions ->
        basin labels), `basins` (names) and `shares` (exact), such as
        `ws.slt.basin_target(...)`, or just an `assign` callable: the summary
        then has `ws.diagnostics.basins`'s report (crossings, shares per
        chain, and whether the chains weight basins by where they started).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got method={method!r}")
    for name in ("positions", "stats"):
        if not hasattr(trace, name):
            raise TypeError(f"trace must have .positions and .stats (a ws.samplers "
                            f"Trace); got trace={trace!r}")
    leaves = named_leaves(trace.positions)
    if not leaves or any(np.ndim(x) < 2 for x in leaves.values()):
        raise ValueError("trace.positions must have leaves shaped (chain, draw, ...)")
    num_chains, num_draws = np.shape(next(iter(leaves.values())))[:2]
    spaces = {"weights": trace.positions}
    if aligned_positions is None and network is not None:
        aligned_positions = align_permutations(trace.positions, network)
    if aligned_positions is not None:
        spaces["weights (aligned)"] = aligned_positions
    predictions = getattr(trace, "predictions", None)
    if predictions is not None:
        spaces["predictions"] = predictions

    rhat_rows, ess_rows, notes, rhat_values = [], [], [], {}
    if num_chains < 2 or num_draws < 4:
        notes.append(f"R-hat and ESS need at least 2 chains of 4 draws; the trace has "
                     f"{num_chains} chain(s) of {num_draws} draw(s)")
    else:
        for space, draws in spaces.items():
            rhat_values[space] = rhat(draws, method=method, chunk_size=chunk_size)
            r = rhat_summary(rhat_values[space], thresholds=tuple(thresholds),
                             quantiles=RHAT_QUANTILES)
            rhat_rows.append({"space": space, **r})
            for kind in ("bulk", "tail"):
                values = ess(draws, method=kind, chunk_size=chunk_size)
                pooled = rhat_summary(values, thresholds=(), quantiles=ESS_QUANTILES)
                ess_rows.append({"space": space, "kind": kind, "count": pooled["count"],
                                 "quantiles": pooled["quantiles"]})
    cost = gradient_cost(trace)
    if cost and cost["total_grad_evals"] > 0:
        for r in ess_rows:
            r["per_1000_grad_evals"] = {q: 1000.0 * v / cost["total_grad_evals"]
                                        for q, v in r["quantiles"].items()}
    report = None
    if basins is not None:
        assign = getattr(basins, "assign", basins)
        if not callable(assign):
            raise TypeError(f"basins must be a target with .assign or a callable "
                            f"positions -> labels; got basins={basins!r}")
        report = basin_report(trace.positions, assign=assign,
                              names=getattr(basins, "basins", None),
                              exact=getattr(basins, "shares", None))
    return Summary(method, rhat_rows, ess_rows,
                   _chain_rows(trace.stats, num_chains, num_draws), notes, rhat_values,
                   cost, report)


def gradient_cost(trace) -> dict:
    """Full-batch-equivalent gradients of a run, all chains, warmup and sampling:
    {} when the trace does not count them."""
    stats = trace.stats or {}
    if "grad_evals" not in stats:
        return {}
    sampling = float(np.sum(np.asarray(stats["grad_evals"], np.float64)))
    info = getattr(trace, "info", None) or {}
    warmup = float(np.sum(np.asarray(info.get("warmup_grad_evals", 0.0), np.float64)))
    return {"warmup_grad_evals": warmup, "sampling_grad_evals": sampling,
            "total_grad_evals": warmup + sampling}
