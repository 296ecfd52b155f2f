"""The stages of a comparison, one function of the shared `Run` each: the
built-in methods (hmc, sgd, deep_ensemble, sgld, csghmc, mfvi, registered here
in ws.experiments.methods), then rhat, metrics and llc (report is
`report.stage_report`). Each returns its record's result (JSON-ready); the
methods' draws stay in their run directories under OUT/runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import numpy as np

from weightspace import diagnostics, models, samplers, slt
from weightspace.experiments import generalization, presets
from weightspace.experiments.comparison import report
from weightspace.experiments.comparison.settings import FIGURES, llc_methods
from weightspace.experiments.comparison.state import Run
from weightspace.experiments.methods import REGISTRY, Method, names, register
from weightspace.jsonio import is_writer, jsonable, read_json, write_json
from weightspace.samplers.mile import CHAINS_DIR


# ------------------------------------------------------------------ sampling stages

def sampler_result(run: Run, method: str, trace) -> dict:
    """What a method's record says of its run: where it is, its shape and what it
    cost in full-batch-equivalent gradients (warmup and sampling, all chains).
    For methods registered beside the built-in ones."""
    return {"run_dir": run.relative(run.run_dir(method)), "num_chains": trace.num_chains,
            "num_draws": trace.num_draws, **diagnostics.gradient_cost(trace)}


def _steps_per_epoch(run: Run, batch_size: int) -> int:
    return max(1, run.data.num_train // batch_size)


def _epochs_to_steps(run: Run, epochs: float, batch_size: int, minimum: int) -> int:
    return max(minimum, round(epochs * _steps_per_epoch(run, batch_size)))


def _chain_means(stats: dict, name: str):
    if name not in stats:
        return None
    return np.asarray(stats[name], np.float64).mean(axis=1).tolist()


def _stage_hmc(run: Run) -> dict:
    s = run.preset.hmc
    trace = samplers.hmc(
        run.post, run.stage_key("hmc"), num_chains=s.num_chains, num_samples=s.num_samples,
        num_warmup=s.num_warmup, step_size=s.step_size,
        trajectory_length=s.trajectory_length, max_num_steps=s.max_num_steps,
        warmup=s.warmup, thin=s.thin, eval_x=run.data.x_test,
        run_dir=run.run_dir("hmc"), progress=run.progress)
    div = np.asarray(trace.stats["is_divergent"], bool)
    return {"run_dir": run.relative(run.run_dir("hmc")), "num_chains": trace.num_chains,
            "num_draws": trace.num_draws,
            "step_size": np.asarray(trace.info["step_size"]).tolist(),
            "num_integration_steps": np.asarray(trace.info["num_integration_steps"]).tolist(),
            "trajectory_length": float(trace.info["trajectory_length"]),
            "accept_prob": _chain_means(trace.stats, "accept_prob"),
            "divergences": div.sum(axis=1).tolist()}


def _sgd_posterior(run: Run):
    """SGD's posterior: the preset's, or its own prior variance (1 / weight decay)."""
    s = run.preset.sgd
    if s.prior_variance is None or s.prior_variance == run.preset.prior_variance:
        return run.post
    return models.posterior(run.preset.network, run.data, prior_variance=s.prior_variance,
                            temperature=run.preset.temperature, mesh=run.post.mesh)


def _sgd_kwargs(run: Run) -> dict:
    s = run.preset.sgd
    return {"num_epochs": s.num_epochs, "batch_size": s.batch_size,
            "learning_rate": s.learning_rate, "momentum": s.momentum, "schedule": s.schedule,
            "eval_x": run.data.x_test, "progress": run.progress}


def _sgd_result(run: Run, method: str, trace) -> dict:
    loss = np.asarray(trace.stats["loss"], np.float64)[:, -1]
    return {"run_dir": run.relative(run.run_dir(method)), "num_models": trace.num_chains,
            "final_loss": loss.tolist(),
            "prior_variance": run.preset.sgd.prior_variance or run.preset.prior_variance}


def _stage_sgd(run: Run) -> dict:
    trace = samplers.sgd(_sgd_posterior(run), run.stage_key("sgd"), num_chains=1,
                         run_dir=run.run_dir("sgd"), **_sgd_kwargs(run))
    return _sgd_result(run, "sgd", trace)


def _stage_deep_ensemble(run: Run) -> dict:
    trace = samplers.deep_ensemble(
        _sgd_posterior(run), run.stage_key("deep_ensemble"), run.preset.ensemble.num_members,
        run_dir=run.run_dir("deep_ensemble"), **_sgd_kwargs(run))
    return _sgd_result(run, "deep_ensemble", trace)


def _sg_result(run: Run, method: str, trace, settings: dict) -> dict:
    div = np.asarray(trace.stats["is_divergent"], bool)
    return {"run_dir": run.relative(run.run_dir(method)), "num_chains": trace.num_chains,
            "num_draws": trace.num_draws, "divergent_draws": div.sum(axis=1).tolist(),
            **settings}


def _stage_sgld(run: Run) -> dict:
    s = run.preset.sgld
    warmup = _epochs_to_steps(run, s.burnin_epochs, s.batch_size, 0)
    thin = _epochs_to_steps(run, s.thin_epochs, s.batch_size, 1)
    trace = samplers.sgld(
        run.post, run.stage_key("sgld"), num_chains=s.num_chains, num_samples=s.num_samples,
        num_warmup=warmup, batch_size=s.batch_size, step_size=s.step_size, thin=thin,
        eval_x=run.data.x_test, run_dir=run.run_dir("sgld"), progress=run.progress)
    return _sg_result(run, "sgld", trace, {"num_warmup": warmup, "thin": thin,
                                           "step_size": s.step_size})


def _stage_csghmc(run: Run) -> dict:
    s = run.preset.csghmc
    cycle = _epochs_to_steps(run, s.cycle_epochs, s.batch_size, 2)
    schedule = samplers.cyclical(s.step_size, cycle, s.exploration)
    trace = samplers.sghmc(
        run.post, run.stage_key("csghmc"), num_chains=s.num_chains,
        num_samples=s.num_cycles * s.samples_per_cycle, batch_size=s.batch_size,
        schedule=schedule, samples_per_cycle=s.samples_per_cycle, friction=s.friction,
        eval_x=run.data.x_test, run_dir=run.run_dir("csghmc"), progress=run.progress)
    return _sg_result(run, "csghmc", trace, {"cycle_length": cycle,
                                             "schedule": repr(schedule)})


def _stage_mfvi(run: Run) -> dict:
    s = run.preset.mfvi
    sgd = run.trace("sgd")
    w_map = jax.tree.map(lambda w: np.asarray(w[0, 0]), sgd.positions)
    trace = samplers.mfvi(
        run.post, run.stage_key("mfvi"), init=w_map, num_epochs=s.num_epochs,
        batch_size=s.batch_size, learning_rate=s.learning_rate, init_scale=s.init_scale,
        num_samples=s.num_samples, eval_x=run.data.x_test, progress=run.progress)
    run_dir = run.run_dir("mfvi")
    if is_writer():
        # mfvi keeps no run directory: its draws' predictions are what later stages read.
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "predictions.tmp.npy"
        np.save(tmp, np.asarray(trace.predictions, np.float32))
        os.replace(tmp, run_dir / "predictions.npy")
    elbo = np.asarray(trace.info.get("elbo_loss", [np.nan]), np.float64)
    return {"run_dir": run.relative(run_dir), "num_draws": trace.num_draws,
            "final_elbo_loss": float(elbo[-1]),
            "scale_summary": trace.info.get("scale_summary")}


def _mfvi_predictions(run: Run) -> np.ndarray:
    return np.load(run.run_dir("mfvi") / "predictions.npy", mmap_mode="r")


# ------------------------------------------------------------------ rhat

def _stage_rhat(run: Run) -> dict:
    trace = run.trace("hmc")
    aligned = None
    if trace.num_chains >= 2 and trace.num_draws >= 4:
        aligned = diagnostics.align_permutations(trace.positions, run.preset.network)
    with np.errstate(invalid="ignore"):  # quantiles of infinite R-hat values (inf - inf)
        summary = diagnostics.summary(trace, aligned_positions=aligned)
    names = {"weights": "weights", "weights (aligned)": "aligned_weights",
             "predictions": "predictions"}
    rhat = {names[row["space"]]: {k: v for k, v in row.items() if k != "space"}
            for row in summary.rhat}
    values = summary.rhat_values
    figure = None
    if values:
        diagnostics.plot_rhat(values.get("weights"), values.get("predictions"),
                              aligned_rhat=values.get("weights (aligned)"),
                              path=run.out / FIGURES["rhat"] if is_writer() else None,
                              title=f"HMC R-hat ({run.preset.name}): weight vs "
                                    f"function space")
        figure = FIGURES["rhat"]
    return {"method": summary.method, "rhat": rhat, "ess": summary.ess,
            "chains": summary.chains, "notes": summary.notes, "figure": figure}


# ------------------------------------------------------------------ metrics

def _ensemble_metrics(run: Run, probs) -> dict:
    return diagnostics.classification_metrics(probs, run.data.y_test)


def _chains_vs_rest(preds) -> tuple[float, float]:
    """HMC against itself: mean over chains of agreement and total variation of
    one chain's predictive against the other chains' pooled one."""
    per_chain = [diagnostics.ensemble_predictive(preds[c:c + 1])
                 for c in range(preds.shape[0])]
    total = sum(per_chain)
    agree, tv = [], []
    for c, own in enumerate(per_chain):
        rest = (total - own) / (len(per_chain) - 1)
        agree.append(diagnostics.agreement(own, rest))
        tv.append(diagnostics.total_variation(own, rest))
    return float(np.mean(agree)), float(np.mean(tv))


def running_nll(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Test NLL of the running ensemble: the first d draws of every chain, for
    d = 1..draws. predictions: (chain, draw, n, k). Returns (models in the
    ensemble (d * chains), NLL), each (draws,)."""
    chains, draws = predictions.shape[:2]
    total = np.zeros(predictions.shape[2:], np.float64)
    counts, values = [], []
    for d in range(draws):
        total += np.asarray(predictions[:, d], np.float64).sum(axis=0)
        counts.append((d + 1) * chains)
        values.append(diagnostics.nll(total / ((d + 1) * chains), labels))
    return np.asarray(counts), np.asarray(values)


def _stage_metrics(run: Run) -> dict:
    methods, curves, probs_of = {}, {}, {}
    for method in names():
        if not run.ok(method):
            rec = run.records[method]
            methods[method] = {"status": rec["status"],
                               "error": rec.get("error"), "reason": rec.get("reason")}
            continue
        preds = run.predictions(method)
        probs = diagnostics.ensemble_predictive(preds)
        probs_of[method] = probs
        entry = {"status": "ok", "num_models": int(preds.shape[0] * preds.shape[1]),
                 **_ensemble_metrics(run, probs), "notes": []}
        methods[method] = entry
        # Members are the models of a deep ensemble: a running curve over them.
        members = REGISTRY[method].members == "chains"
        ordered = np.swapaxes(preds, 0, 1) if members else preds
        curves[method] = running_nll(ordered, run.data.y_test)
    reference = probs_of.get("hmc")
    for method, entry in methods.items():
        if entry["status"] != "ok":
            continue
        if method == "hmc":  # the presets check that HMC has at least 2 chains
            entry["agreement_vs_hmc"], entry["total_variation_vs_hmc"] = \
                _chains_vs_rest(run.predictions("hmc"))
            entry["notes"].append("hmc: each chain's predictive against the other "
                                  "chains' (the agreement HMC has with itself)")
        elif reference is None:
            entry["agreement_vs_hmc"] = entry["total_variation_vs_hmc"] = None
            entry["notes"].append(f"no HMC reference: hmc {run.records['hmc']['status']}")
        else:
            entry["agreement_vs_hmc"] = diagnostics.agreement(probs_of[method], reference)
            entry["total_variation_vs_hmc"] = diagnostics.total_variation(probs_of[method],
                                                                          reference)
    figures = {}
    if probs_of:
        report.plot_reliability(run, probs_of)
        figures["reliability"] = FIGURES["reliability"]
    if curves:
        report.plot_nll_curves(run, curves)
        figures["nll_vs_samples"] = FIGURES["nll_vs_samples"]
    return {"methods": methods, "figures": figures,
            "nll_vs_samples": {m: {"num_models": c.tolist(), "nll": v.tolist()}
                               for m, (c, v) in curves.items()}}


# ------------------------------------------------------------------ llc

def _llc_positions(run: Run) -> list[tuple[str, int, int]]:
    """(method, chain, draw) of every position whose LLC is estimated."""
    return [(method, chain, draw) for method in llc_methods() if run.ok(method)
            for chain, draw in REGISTRY[method].llc_positions(run)]


def _hmc_positions(run: Run) -> list[tuple[int, int]]:
    """Per chain, the draws llc.hmc_draws (indices, negative from the end)."""
    draws = run.records["hmc"]["result"]["num_draws"]
    picked = list(dict.fromkeys(d % draws for d in run.preset.llc.hmc_draws))
    return [(c, d) for c in range(run.preset.hmc.num_chains) for d in picked]


def _ensemble_positions(run: Run) -> list[tuple[int, int]]:
    return [(m, 0) for m in range(run.preset.ensemble.num_members)]


def _llc_settings(run: Run) -> dict:
    s = run.preset.llc
    return {"num_chains": s.num_chains, "num_draws": s.num_draws, "num_burnin": s.num_burnin,
            "step_size": s.step_size, "localization": s.localization,
            "batch_size": s.batch_size}


def _stage_llc(run: Run) -> dict:
    settings = _llc_settings(run)
    positions = _llc_positions(run)
    if not positions:
        raise RuntimeError("no positions to estimate the LLC at: sgd, deep_ensemble and hmc "
                           "all did not finish")
    # Estimates are kept as they are made, so a killed stage resumes.
    partial_path = run.run_dir("llc") / "positions.json"
    stored = read_json(partial_path, default=None) or {}
    done = {(e["method"], e["chain"], e["draw"]): e for e in stored.get("positions", [])
            } if stored.get("settings") == json.loads(json.dumps(settings)) else {}
    traces = {m: run.trace(m) for m in {m for m, _, _ in positions}}
    key = run.stage_key("llc")
    entries = []
    for method, chain, draw in positions:
        if (method, chain, draw) in done:
            entries.append(done[(method, chain, draw)])
            continue
        trace = traces[method]
        params = jax.tree.map(lambda x, c=chain, d=draw: np.asarray(x[c, d]),
                              trace.positions)
        # The key is a function of the position only (method, chain, draw).
        k = jax.random.fold_in(jax.random.fold_in(
            jax.random.fold_in(key, names().index(method)), chain), draw)
        est = slt.llc(run.post, params, k, progress=run.progress, **settings)
        probs = np.asarray(trace.predictions[chain, draw], np.float64)
        entry = {"method": method, "chain": chain, "draw": draw, "llc": est.mean,
                 "llc_std": est.std, "per_chain": est.per_chain, "init_loss": est.init_loss,
                 "nbeta": est.nbeta, "flags": est.flags,
                 "test": _ensemble_metrics(run, probs)}
        entries.append(jsonable(entry))
        print(f"  llc {method} chain {chain} draw {draw}: {est.mean:.4g} +- {est.std:.3g}; "
              f"L_n(w*) {est.init_loss:.4g}, test NLL {entry['test']['nll']:.4g}"
              f"{'; ' + '; '.join(est.flags) if est.flags else ''}", flush=True)
        write_json(partial_path, {"settings": settings, "positions": entries},
                   writer_only=True)
    by_method = {}
    for method in llc_methods():
        values = np.array([e["llc"] for e in entries if e["method"] == method
                           and e["llc"] is not None], np.float64)
        if values.size:
            by_method[method] = {"count": int(values.size), "mean": float(values.mean()),
                                 "sd": float(values.std(ddof=1)) if values.size > 1 else None}
    skipped = [m for m in llc_methods() if not run.ok(m)]
    result = {"settings": settings, "positions": entries, "by_method": by_method,
              "notes": [f"{m} {run.records[m]['status']}: no LLC there" for m in skipped]}
    # LLC against test NLL and the generalization gap: the figure and JSON of
    # `weightspace llc-vs-generalization`, written into OUT.
    study = generalization.llc_vs_generalization({**run.header, "llc": result}, out=run.out)
    result["generalization"] = {"correlations": study.correlations,
                                "figure": generalization.FIGURE}
    return result


ANALYSIS_FNS: dict[str, Callable[[Run], dict]] = {
    "rhat": _stage_rhat, "metrics": _stage_metrics, "llc": _stage_llc}


# The built-in methods, first in the registry and in this order (their stage keys
# and LLC keys are their positions here). replace=True: a module reload keeps them.
for _method in (
        Method("hmc", "HMC", _stage_hmc, llc_positions=_hmc_positions),
        Method("sgd", "SGD", _stage_sgd, llc_positions=lambda run: [(0, 0)]),
        Method("deep_ensemble", "deep ensemble", _stage_deep_ensemble, members="chains",
               llc_positions=_ensemble_positions),
        Method("sgld", "SGLD", _stage_sgld),
        Method("csghmc", "cyclical SGHMC", _stage_csghmc),
        Method("mfvi", "MFVI", _stage_mfvi, needs=("sgd",), predictions=_mfvi_predictions)):
    register(_method, replace=True)


# ------------------------------------------------------------------ microcanonical

def _microcanonical_result(run: Run, method: str, trace) -> dict:
    return {**sampler_result(run, method, trace),
            "step_size": np.asarray(trace.info["step_size"]).tolist(),
            "L": np.asarray(trace.info["L"]).tolist(),
            "accept_prob": _chain_means(trace.stats, "accept_prob"),
            "divergent_draws": np.asarray(trace.stats["is_divergent"], bool)
            .sum(axis=1).tolist(),
            "stuck_chains": trace.info.get("stuck_chains", [])}


def _stage_mams(run: Run) -> dict:
    s = run.settings("mams")
    trace = samplers.mams(
        run.post, run.stage_key("mams"), num_chains=s.num_chains, num_samples=s.num_samples,
        num_warmup=s.num_warmup, thin=s.thin, target_accept=s.target_accept,
        preconditioning=s.preconditioning, max_num_steps=s.max_num_steps,
        step_size=s.step_size, L=s.L, num_adjusted_warmup=s.num_adjusted_warmup,
        eval_x=run.data.x_test, run_dir=run.run_dir("mams"), progress=run.progress)
    return _microcanonical_result(run, "mams", trace)


def _stage_mile(run: Run) -> dict:
    s, sgd = run.settings("mile"), run.preset.sgd
    ensemble = {"num_epochs": s.ensemble_epochs or sgd.num_epochs,
                "batch_size": sgd.batch_size, "learning_rate": sgd.learning_rate,
                "momentum": sgd.momentum, "schedule": sgd.schedule}
    trace = samplers.mile(
        run.post, run.stage_key("mile"), sampler=s.sampler, num_chains=s.num_chains,
        ensemble=ensemble, num_samples=s.num_samples, num_warmup=s.num_warmup, thin=s.thin,
        preconditioning=s.preconditioning, step_size=s.step_size, L=s.L,
        eval_x=run.data.x_test, run_dir=run.run_dir("mile"), progress=run.progress)
    return {**_microcanonical_result(run, "mile", trace), "sampler": s.sampler,
            "ensemble_grad_evals": np.asarray(trace.info["ensemble_grad_evals"]).tolist()}


def _mile_predictions(run: Run):
    return samplers.load(run.run_dir("mile") / CHAINS_DIR).predictions


def _microcanonical_smoke(settings):
    """Two draws of untuned two-step transitions (tuning needs 100)."""
    step = settings.step_size or 0.1
    untuned = {"num_adjusted_warmup": None} if hasattr(settings, "num_adjusted_warmup") \
        else {}
    return dataclasses.replace(settings, num_chains=2, num_samples=2, num_warmup=0, thin=1,
                               step_size=step, L=settings.L or 2 * step,
                               preconditioning="none", **untuned)


register(Method("mams", "MAMS", _stage_mams, settings=presets.MAMSSettings,
                smoke=_microcanonical_smoke), replace=True)
register(Method("mile", "MILE", _stage_mile, settings=presets.MILESettings,
                smoke=lambda s: dataclasses.replace(_microcanonical_smoke(s),
                                                    ensemble_epochs=1),
                predictions=_mile_predictions), replace=True)
