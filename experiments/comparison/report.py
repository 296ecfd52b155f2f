"""What a comparison reports: results.json (`gather_results`, `RESULTS_SCHEMA`),
the methods table (`format_table`), report.md (the report stage) and the
figures of the metrics stage (reliability.png, nll_vs_samples.png)."""

from __future__ import annotations

from weightspace import diagnostics
from weightspace.experiments.comparison.settings import FIGURES, METRICS
from weightspace.experiments.comparison.settings import stages as all_stages
from weightspace.experiments.comparison.state import Run
from weightspace.experiments.generalization import llc_vs_generalization
from weightspace.experiments.methods import LABELS, names
from weightspace.experiments.tables import fixed_width, fmt
from weightspace.jsonio import is_writer, jsonable

RESULTS_SCHEMA = """\
results.json (format 1):
  format, preset (Preset.to_dict()), smoke, seed, out
  data: {name, num_train, num_test, num_classes}; network: repr; num_params
  stages: {stage: {status: ok|failed|skipped, resumed, seconds, inputs,
           error: {type, message} | null, reason (skipped), result}}
  methods: {method: {status, num_models, accuracy, nll, ece, brier,
            agreement_vs_hmc, total_variation_vs_hmc, notes} or {status, error}}
  hmc: {rhat: {weights|aligned_weights|predictions: {count, nan_count,
        fraction_below: {"1.1", "1.01"}, quantiles: {"0.5", "0.9", "0.99", "1.0"}
        (of the non-NaN values; null there is an infinite R-hat)}},
        ess, chains, notes, sampler (step sizes, acceptance, leapfrog steps)}
  llc: {settings, positions: [{method, chain, draw, llc, llc_std, per_chain,
        init_loss, nbeta, flags, test: {accuracy, nll, ece, brier}}],
        by_method: {method: {count, mean, sd}},
        generalization: {correlations (of llc_vs_generalization), figure}}
  figures: {rhat, reliability, nll_vs_samples, llc_vs_generalization}: file
           names in OUT
"""


# ------------------------------------------------------------------ figures

def plot_reliability(run: Run, probs_of: dict) -> None:
    """Reliability curves of every method (accuracy against mean confidence in
    the equal-width bins of `ece`) over the test examples per bin."""
    from matplotlib.figure import Figure  # slow to import (a third of a second); only figures need it

    fig = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1,
             label="perfect calibration")
    for i, (method, probs) in enumerate(probs_of.items()):
        bins = diagnostics.reliability_bins(probs, run.data.y_test)
        full = bins["count"] > 0
        ece = diagnostics.ece(probs, run.data.y_test)
        top.plot(bins["confidence"][full], bins["accuracy"][full], marker="o",
                 markersize=3, color=f"C{i}", label=f"{LABELS[method]} (ECE {ece:.3f})")
        bottom.stairs(bins["count"], bins["edges"], color=f"C{i}")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    top.set_title(f"Reliability of each method's predictive ({run.preset.name})")
    top.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel("confidence (max probability); points at each bin's mean")
    bottom.set_ylabel("test examples")
    if is_writer():
        fig.savefig(run.out / FIGURES["reliability"], dpi=120)


def _models(n: int) -> str:
    return "one model" if n == 1 else f"{n} models"


def plot_nll_curves(run: Run, curves: dict) -> None:
    from matplotlib.figure import Figure  # slow to import (a third of a second); only figures need it

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (method, (counts, values)) in enumerate(curves.items()):
        if len(counts) == 1:
            ax.axhline(values[0], color=f"C{i}", linestyle="--", linewidth=1,
                       label=f"{LABELS[method]} ({_models(int(counts[0]))})")
        else:
            ax.plot(counts, values, color=f"C{i}", marker="o", markersize=2,
                    label=LABELS[method])
    ax.set_xscale("log")
    ax.set_xlabel("models in the ensemble (draws x chains)")
    ax.set_ylabel("test NLL")
    ax.set_title(f"Test NLL of the running ensemble ({run.preset.name})")
    ax.legend(fontsize="small")
    if is_writer():
        fig.savefig(run.out / FIGURES["nll_vs_samples"], dpi=120)


# ------------------------------------------------------------------ report

def format_table(results: dict) -> str:
    """The methods table (one row per method) of a results dict."""
    header = ["method", "models", "accuracy", "NLL", "ECE", "Brier", "agree(HMC)",
              "TV(HMC)"]
    rows = []
    methods = results.get("methods") or {}
    for method in names():
        entry = methods.get(method)
        if entry is None:
            status = results["stages"].get(method, {}).get("status", "-")
            rows.append([method, f"({status})"] + [""] * 6)
        elif entry.get("status") != "ok":
            err = entry.get("error") or {}
            what = (f"{err.get('type')}: {err.get('message')}" if err
                    else entry.get("reason") or "")
            rows.append([method, f"({entry['status']})", what[:60]] + [""] * 5)
        elif "accuracy" not in entry:
            rows.append([method, "(no metrics)"] + [""] * 6)
        else:
            rows.append([method, str(entry["num_models"]),
                         *(fmt(entry.get(m)) for m in METRICS)])
    return fixed_width(header, rows, left=range(len(header)))


def _fmt_list(values, digits: int = 3) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def stage_report(run: Run) -> dict:
    results = gather_results(run)
    p = run.preset
    lines = [f"# weightspace compare: {p.name}", "", p.description, "",
             (f"{run.post}; {run.post.num_params():,} weights; {len(run.data.x_test)} test "
              f"rows; seed {results.get('seed')}."), "", "## Stages", ""]
    rows = []
    for stage in all_stages()[:-1]:
        r = run.records[stage]
        what = ""
        if r.get("error"):
            what = f"{r['error']['type']}: {r['error']['message']}"
        elif r.get("reason"):
            what = r["reason"]
        rows.append([stage, r["status"] + (" (resumed)" if r.get("resumed") else ""),
                     f"{r['seconds']:.1f}", what.replace("|", "/").replace("\n", " ")])
    lines += _md_table(["stage", "status", "seconds", "error"], rows)
    lines += ["", "## Predictive performance on the test set", "",
              ("Each method's ensemble predictive (the mean of its models' class "
               "probabilities); agreement and total variation against HMC's (for HMC: each "
               "chain against the other chains)."), ""]
    lines += ["```text", format_table(results), "```", ""]
    hmc = results.get("hmc") or {}
    if hmc.get("rhat"):
        sampler = hmc.get("sampler") or {}
        lines += ["## HMC: R-hat in weight space and function space", "",
                  (f"{sampler.get('num_chains')} chains x {sampler.get('num_draws')} draws; "
                   f"mean acceptance by chain {_fmt_list(sampler.get('accept_prob'))}; step "
                   f"sizes {_fmt_list(sampler.get('step_size'), 3)}; leapfrog steps "
                   f"{sampler.get('num_integration_steps')}. R-hat method: "
                   f"{hmc.get('method')}. Aligned weights: hidden units relabelled to match "
                   f"one draw (weight matching), which undoes permutation symmetry."), ""]
        rows = []
        for space, s in hmc["rhat"].items():
            fb, q = s["fraction_below"], s["quantiles"]
            # Quantiles leave NaN out: a null one of finite count is infinite.
            top = "inf" if s["count"] > s["nan_count"] else "nan"
            rows.append([space, str(s["count"]),
                         *(fmt(v, 3) for v in fb.values()),
                         *(fmt(v, 3) if v is not None else top for v in q.values())])
        some = next(iter(hmc["rhat"].values()))
        lines += _md_table(["space", "n", *(f"< {t}" for t in some["fraction_below"]),
                            *(f"q{t}" for t in some["quantiles"])], rows)
        lines += ["", f"![R-hat histograms]({FIGURES['rhat']})", ""]
    elif hmc.get("notes"):
        lines += ["## HMC R-hat", "", *hmc["notes"], ""]
    llc = results.get("llc") or {}
    if llc.get("positions"):
        settings = ", ".join(f"{k}={v}" for k, v in llc["settings"].items())
        lines += ["## Local learning coefficients", "",
                  (f"ws.slt.llc at each position ({settings}); test metrics of the single "
                   f"model at that position."), ""]
        rows = [[e["method"], str(e["chain"]), str(e["draw"]), fmt(e["llc"], 3),
                 fmt(e["llc_std"], 3), fmt(e["init_loss"]), fmt(e["test"]["nll"]),
                 fmt(e["test"]["accuracy"]), "; ".join(e["flags"]) or "-"]
                for e in llc["positions"]]
        lines += _md_table(["method", "chain", "draw", "LLC", "sd", "L_n(w*)", "test NLL",
                            "test accuracy", "flags"], rows)
        lines += ["", "By method: " + "; ".join(
            f"{m} {fmt(v['mean'], 3)} (sd {fmt(v['sd'], 3)}, n={v['count']})"
            for m, v in llc.get("by_method", {}).items()), ""]
        study = llc_vs_generalization(results, figure=False)
        lines += ["### LLC against generalization", "",
                  ("Rank (Spearman) and linear (Pearson) correlation of the LLC with the "
                   "test NLL and with the generalization gap (test NLL minus training NLL) "
                   "of the positions above (`weightspace llc-vs-generalization`)."), "",
                  "```text", study.correlation_table(), "```", "",
                  *(f"- {n}" for n in study.notes), ""]
        if "llc_vs_generalization" in (results.get("figures") or {}):
            lines += [(f"![LLC against test NLL and the generalization gap]"
                       f"({results['figures']['llc_vs_generalization']})"), ""]
    figures = results.get("figures") or {}
    if "reliability" in figures or "nll_vs_samples" in figures:
        lines += ["## Figures", ""]
        if "reliability" in figures:
            lines += [f"![Reliability diagram]({figures['reliability']})", ""]
        if "nll_vs_samples" in figures:
            lines += [(f"![Test NLL against the number of samples]"
                       f"({figures['nll_vs_samples']})"), ""]
    if is_writer():
        (run.out / "report.md").write_text("\n".join(lines) + "\n")
    return {"report": "report.md"}


# ------------------------------------------------------------------ results

def gather_results(run: Run) -> dict:
    """The content of OUT/results.json (RESULTS_SCHEMA) from the records so far."""
    recs = run.records
    stages = {}
    for stage in all_stages():
        if stage in recs:
            r = recs[stage]
            stages[stage] = {"status": r["status"], "resumed": bool(r.get("resumed")),
                             "seconds": r.get("seconds"), "inputs": r.get("inputs"),
                             "error": r.get("error"), "reason": r.get("reason"),
                             "result": r.get("result")}
    metrics = (recs.get("metrics") or {}).get("result") or {}
    methods = metrics.get("methods")
    if methods is None:  # metrics not run (yet) or failed: the methods' own statuses
        methods = {m: {"status": recs[m]["status"], "error": recs[m].get("error"),
                       "reason": recs[m].get("reason")} for m in names() if m in recs}
    rhat_rec = recs.get("rhat") or {}
    hmc = {"sampler": (recs.get("hmc") or {}).get("result")}
    if rhat_rec.get("status") == "ok":
        hmc.update({k: rhat_rec["result"][k] for k in ("method", "rhat", "ess", "chains",
                                                       "notes")})
    elif rhat_rec:
        hmc["notes"] = [f"rhat {rhat_rec['status']}: "
                        + (rhat_rec.get("reason") or str(rhat_rec.get("error")))]
    llc_rec = recs.get("llc") or {}
    llc = llc_rec.get("result") if llc_rec.get("status") == "ok" else None
    figures = {}
    if (rhat_rec.get("result") or {}).get("figure"):
        figures["rhat"] = rhat_rec["result"]["figure"]
    figures.update(metrics.get("figures", {}))
    if llc and (llc.get("generalization") or {}).get("figure"):
        figures["llc_vs_generalization"] = llc["generalization"]["figure"]
    return jsonable({**run.header, "stages": stages, "methods": methods, "hmc": hmc,
                     "llc": llc, "figures": figures})
