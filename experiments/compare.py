"""`weightspace compare`: HMC against SGD, a deep ensemble, SGLD, cyclical SGHMC
and mean-field VI on one posterior (Izmailov et al. 2021), with R-hat in weight
and function space and local learning coefficients at the solutions.

    import weightspace as ws
    results = ws.experiments.compare("quick", "runs/compare")

Stages, in order: one per method (hmc, sgd, deep_ensemble, sgld, csghmc, mfvi),
then rhat (HMC's R-hat of weights, aligned weights and predictions, rhat.png),
metrics (accuracy, NLL, ECE, Brier of each method's ensemble predictive,
agreement and total variation against HMC's; reliability.png,
nll_vs_samples.png), llc (at the SGD solution, every ensemble member and
chosen HMC draws, each with its own test metrics) and report (report.md).

The output directory OUT holds:

    compare.json          the settings (preset, smoke, seed): a rerun with other
                          settings is refused
    runs/<method>/        the samplers' run directories (mfvi: its predictions
                          as .npy), so a killed stage resumes where it stopped
    stages/<stage>.json   a stage's record: status ("ok" or "failed" or
                          "skipped"), seconds, result or error, and the statuses
                          of the stages it read ("inputs")
    results.json          every record gathered (see `RESULTS_SCHEMA`)
    report.md, rhat.png, reliability.png, nll_vs_samples.png,
    llc_vs_generalization.png and .json (ws.experiments.llc_vs_generalization)

A stage whose record says "ok" with the same inputs is resumed (not run
again); a failed or skipped one runs again. A stage that raises is recorded
with its error and the others still run; one that needs a failed stage (mfvi
starts at the SGD solution, rhat reads HMC) is skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from weightspace.experiments import presets as presets_lib

from weightspace.cli import _jsonable
from weightspace.cli import _write_json as _write_json_file

FORMAT = 1
METHODS = ("hmc", "sgd", "deep_ensemble", "sgld", "csghmc", "mfvi")
STAGES = (*METHODS, "rhat", "metrics", "llc", "report")
METRICS = ("accuracy", "nll", "ece", "brier", "agreement_vs_hmc", "total_variation_vs_hmc")
LLC_METHODS = ("sgd", "deep_ensemble", "hmc")
FIGURES = {"rhat": "rhat.png", "reliability": "reliability.png",
           "nll_vs_samples": "nll_vs_samples.png"}

# Stages a stage cannot run without, and stages whose results it uses when
# they are there. A record is resumed only when these had the same statuses.
_NEEDS = {"mfvi": ("sgd",), "rhat": ("hmc",)}
_USES = {"metrics": METHODS, "llc": LLC_METHODS,
         "report": tuple(s for s in STAGES if s != "report")}

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


class CompareError(ValueError):
    """Bad input to `compare` (names the argument and what is allowed)."""


# ------------------------------------------------------------------ JSON

def _is_writer() -> bool:
    """Only process 0 of a multi-process job writes into OUT (the samplers'
    run directories follow the same rule)."""
    import jax

    return jax.process_index() == 0


def _write_json(path: Path, obj) -> None:
    """Replace `path` atomically, from process 0 only."""
    if _is_writer():
        _write_json_file(path, obj)


def _read_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _error(err: BaseException) -> dict:
    return {"type": type(err).__name__, "message": str(err)}


# ------------------------------------------------------------------ the run

@dataclasses.dataclass
class _Run:
    """What the stages share."""

    preset: Any
    out: Path
    data: Any
    post: Any
    key: Any
    progress: bool
    smoke: bool
    header: dict = dataclasses.field(default_factory=dict)
    records: dict = dataclasses.field(default_factory=dict)

    def run_dir(self, method: str) -> Path:
        return self.out / "runs" / method

    def relative(self, path: Path) -> str:
        """`path` relative to OUT, so an output directory can be moved."""
        return str(Path(path).relative_to(self.out))

    def stage_key(self, stage: str):
        import jax

        return jax.random.fold_in(self.key, STAGES.index(stage))

    def ok(self, stage: str) -> bool:
        return self.records.get(stage, {}).get("status") == "ok"

    def template(self):
        import jax

        return jax.eval_shape(self.post.init, jax.random.key(0))

    def trace(self, method: str):
        """The finished run of a sampling method (memory-mapped)."""
        import weightspace as ws

        return ws.samplers.load(self.run_dir(method), template=self.template())

    def predictions(self, method: str) -> np.ndarray:
        """(chain, draw, n_test, k) test-set probabilities of a method's draws."""
        if method == "mfvi":
            return np.load(self.run_dir("mfvi") / "predictions.npy", mmap_mode="r")
        return self.trace(method).predictions


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"preset": {"hmc": {"num_samples": 4}}} -> {"preset.hmc.num_samples": 4}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_out(out, config: dict) -> Path:
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise CompareError(f"out={out!r} is not allowed: it must be a directory path")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"out={str(out)!r} exists and is not a directory")
    stored_path = out / "compare.json"
    if out.is_dir() and any(out.iterdir()):
        stored = _read_json(stored_path)
        if stored is None:
            raise CompareError(f"out={str(out)!r} is neither empty nor an output directory of "
                               f"compare (no compare.json): choose a new or empty directory")
        stored, current = _flat(stored), _flat(json.loads(json.dumps(_jsonable(config))))
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            raise CompareError(
                f"out={str(out)!r} holds a comparison with other settings (compare.json "
                f"differs in {', '.join(differ)}): rerun with the stored settings to resume, "
                f"or choose another out")
    return out


def _resolve_preset(preset, smoke: bool, overrides):
    try:
        p = presets_lib.get(preset)
    except ValueError as err:
        raise CompareError(str(err)) from None
    if not isinstance(smoke, bool):
        raise CompareError(f"smoke={smoke!r} is not allowed: it must be True or False")
    if smoke:
        p = presets_lib.smoke(p)
    if overrides:
        try:
            p = presets_lib.override(p, dict(overrides))
        except ValueError as err:
            raise CompareError(str(err)) from None
    return p


def _load_data(p, seed: int, data_dir, mesh):
    import weightspace as ws

    ds = ws.data.load(p.data.name, seed=seed, data_dir=data_dir, n_train=p.data.n_train,
                      mesh=mesh, **dict(p.data.options))
    if ds.num_classes is None:
        raise CompareError(f"preset {p.name!r}: dataset {p.data.name!r} is a regression "
                           f"task; compare reports classification metrics (accuracy, NLL, "
                           f"ECE, Brier) and needs a classification dataset")
    if p.data.n_test is not None and p.data.n_test < len(ds.x_test):
        ds = dataclasses.replace(ds, x_test=ds.x_test[:p.data.n_test],
                                 y_test=ds.y_test[:p.data.n_test])
    return ds


def compare(preset="quick", out=None, *, smoke: bool = False, data_dir=None, seed: int = 0,
            progress: bool = True, overrides: dict | None = None, mesh=None) -> dict:
    """Run every stage of the comparison into `out` and return the results
    (the content of OUT/results.json, see RESULTS_SCHEMA).

    preset: a name of presets.PRESETS ("quick", "paper-cifar10", "paper-imdb",
        "paper-mnist") or a presets.Preset.
    out: the output directory (default runs/compare-<preset>); created, or
        resumed when it holds an earlier run with the same settings.
    smoke: presets.smoke(preset), a handful of steps on a few rows.
    data_dir: tensorflow-datasets data_dir (not part of the settings).
    seed: data subsample and every PRNG key (fold_in(key(seed), stage index)).
    overrides: {"hmc.num_samples": 20, ...}, fields of presets.fields(),
        applied after smoke.
    mesh: the posterior's ("chain", "data") mesh (ws.sharding.make_mesh);
        default all devices along "data". Chain counts must be multiples of its
        "chain" axis. Not part of the settings.
    """
    import jax

    import weightspace as ws

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CompareError(f"seed={seed!r} is not allowed: it must be an int")
    p = _resolve_preset(preset, smoke, overrides)
    if out is None:
        out = Path("runs") / f"compare-{p.name.replace(' (smoke)', '-smoke')}"
    config = {"format": FORMAT, "preset": p.to_dict(), "smoke": smoke, "seed": seed}
    out = _check_out(out, config)
    if _is_writer():
        out.mkdir(parents=True, exist_ok=True)
    if not (out / "compare.json").is_file():
        _write_json(out / "compare.json", config)

    print(f"compare: preset {p.name} -> {out}", flush=True)
    if mesh is None and jax.process_count() > 1:
        mesh = ws.sharding.make_mesh()  # each process then loads only its rows
    data = _load_data(p, seed, data_dir, mesh)
    post = ws.models.posterior(p.network, data, prior_variance=p.prior_variance,
                               temperature=p.temperature, mesh=mesh)
    print(f"{post}: {post.num_params():,} weights; {len(data.x_test)} test rows", flush=True)
    header = {"format": FORMAT, "preset": p.to_dict(), "smoke": smoke, "seed": seed,
              "out": str(out.absolute()),
              "data": {"name": data.name, "num_train": int(data.num_train),
                       "num_test": len(data.x_test), "num_classes": data.num_classes},
              "network": repr(p.network), "num_params": int(post.num_params())}
    run = _Run(preset=p, out=out, data=data, post=post, key=jax.random.key(seed),
               progress=progress, smoke=smoke, header=header)
    for i, stage in enumerate(STAGES):
        _run_stage(run, stage, i)
        results = _results(run)
        _write_json(out / "results.json", results)
    print()
    print(format_table(results))
    failed = [s for s, r in results["stages"].items() if r["status"] != "ok"]
    print(f"\nresults: {out / 'results.json'}; report: {out / 'report.md'}"
          + (f"; not finished: {', '.join(failed)}" if failed else ""), flush=True)
    return results


def _run_stage(run: _Run, stage: str, index: int) -> None:
    needs, uses = _NEEDS.get(stage, ()), _USES.get(stage, ())
    inputs = {s: run.records[s]["status"] for s in (*needs, *uses)}
    path = run.out / "stages" / f"{stage}.json"
    title = f"[{index + 1}/{len(STAGES)}] {stage}"
    stored = _read_json(path)
    if stored and stored.get("status") == "ok" and stored.get("inputs") == inputs:
        run.records[stage] = {**stored, "resumed": True}
        print(f"{title}: resumed (finished earlier in {stored['seconds']:.1f} s)", flush=True)
        return
    missing = [s for s in needs if inputs[s] != "ok"]
    record = {"stage": stage, "inputs": inputs, "resumed": False, "error": None}
    if missing:
        reason = "; ".join(f"needs {s}, which {inputs[s]}" for s in missing)
        record.update(status="skipped", seconds=0.0, reason=reason, result=None)
        print(f"{title}: skipped ({reason})", flush=True)
    else:
        print(f"{title} ...", flush=True)
        start = time.perf_counter()
        try:
            with _quiet_smoke(run.smoke):
                result = _STAGE_FNS[stage](run)
        except Exception as err:  # noqa: BLE001  (recorded; the other stages run)
            seconds = time.perf_counter() - start
            record.update(status="failed", seconds=seconds, result=None, error=_error(err))
            if _is_writer():
                (run.out / "stages").mkdir(parents=True, exist_ok=True)
                (run.out / "stages" / f"{stage}.traceback.txt").write_text(
                    traceback.format_exc())
            print(f"{title}: FAILED after {seconds:.1f} s: {type(err).__name__}: {err} "
                  f"(traceback in {run.out / 'stages' / f'{stage}.traceback.txt'})",
                  flush=True)
        else:
            seconds = time.perf_counter() - start
            record.update(status="ok", seconds=seconds, result=result)
            print(f"{title}: done in {seconds:.1f} s", flush=True)
    _write_json(path, {k: v for k, v in record.items() if k != "resumed"})
    run.records[stage] = record


@contextlib.contextmanager
def _quiet_smoke(smoke: bool):
    """Under smoke, HMC trajectories are cut to a couple of steps on purpose."""
    with warnings.catch_warnings():
        if smoke:
            warnings.filterwarnings("ignore", message=".*trajectories were cut short.*")
        yield


# ------------------------------------------------------------------ sampling stages

def _steps_per_epoch(run: _Run, batch_size: int) -> int:
    return max(1, run.data.num_train // batch_size)


def _epochs_to_steps(run: _Run, epochs: float, batch_size: int, minimum: int) -> int:
    return max(minimum, round(epochs * _steps_per_epoch(run, batch_size)))


def _chain_means(stats: dict, name: str):
    if name not in stats:
        return None
    return np.asarray(stats[name], np.float64).mean(axis=1).tolist()


def _stage_hmc(run: _Run) -> dict:
    import weightspace as ws

    s = run.preset.hmc
    trace = ws.samplers.hmc(
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


def _sgd_posterior(run: _Run):
    """SGD's posterior: the preset's, or its own prior variance (1 / weight decay)."""
    import weightspace as ws

    s = run.preset.sgd
    if s.prior_variance is None or s.prior_variance == run.preset.prior_variance:
        return run.post
    return ws.models.posterior(run.preset.network, run.data, prior_variance=s.prior_variance,
                               temperature=run.preset.temperature, mesh=run.post.mesh)


def _sgd_kwargs(run: _Run) -> dict:
    s = run.preset.sgd
    return {"num_epochs": s.num_epochs, "batch_size": s.batch_size,
            "learning_rate": s.learning_rate, "momentum": s.momentum, "schedule": s.schedule,
            "eval_x": run.data.x_test, "progress": run.progress}


def _sgd_result(run: _Run, method: str, trace) -> dict:
    loss = np.asarray(trace.stats["loss"], np.float64)[:, -1]
    return {"run_dir": run.relative(run.run_dir(method)), "num_models": trace.num_chains,
            "final_loss": loss.tolist(),
            "prior_variance": run.preset.sgd.prior_variance or run.preset.prior_variance}


def _stage_sgd(run: _Run) -> dict:
    import weightspace as ws

    trace = ws.samplers.sgd(_sgd_posterior(run), run.stage_key("sgd"), num_chains=1,
                            run_dir=run.run_dir("sgd"), **_sgd_kwargs(run))
    return _sgd_result(run, "sgd", trace)


def _stage_deep_ensemble(run: _Run) -> dict:
    import weightspace as ws

    trace = ws.samplers.deep_ensemble(
        _sgd_posterior(run), run.stage_key("deep_ensemble"), run.preset.ensemble.num_members,
        run_dir=run.run_dir("deep_ensemble"), **_sgd_kwargs(run))
    return _sgd_result(run, "deep_ensemble", trace)


def _sg_result(run: _Run, method: str, trace, settings: dict) -> dict:
    div = np.asarray(trace.stats["is_divergent"], bool)
    return {"run_dir": run.relative(run.run_dir(method)), "num_chains": trace.num_chains,
            "num_draws": trace.num_draws, "divergent_draws": div.sum(axis=1).tolist(),
            **settings}


def _stage_sgld(run: _Run) -> dict:
    import weightspace as ws

    s = run.preset.sgld
    warmup = _epochs_to_steps(run, s.burnin_epochs, s.batch_size, 0)
    thin = _epochs_to_steps(run, s.thin_epochs, s.batch_size, 1)
    trace = ws.samplers.sgld(
        run.post, run.stage_key("sgld"), num_chains=s.num_chains, num_samples=s.num_samples,
        num_warmup=warmup, batch_size=s.batch_size, step_size=s.step_size, thin=thin,
        eval_x=run.data.x_test, run_dir=run.run_dir("sgld"), progress=run.progress)
    return _sg_result(run, "sgld", trace, {"num_warmup": warmup, "thin": thin,
                                           "step_size": s.step_size})


def _stage_csghmc(run: _Run) -> dict:
    import weightspace as ws

    s = run.preset.csghmc
    cycle = _epochs_to_steps(run, s.cycle_epochs, s.batch_size, 2)
    schedule = ws.samplers.cyclical(s.step_size, cycle, s.exploration)
    trace = ws.samplers.sghmc(
        run.post, run.stage_key("csghmc"), num_chains=s.num_chains,
        num_samples=s.num_cycles * s.samples_per_cycle, batch_size=s.batch_size,
        schedule=schedule, samples_per_cycle=s.samples_per_cycle, friction=s.friction,
        eval_x=run.data.x_test, run_dir=run.run_dir("csghmc"), progress=run.progress)
    return _sg_result(run, "csghmc", trace, {"cycle_length": cycle,
                                             "schedule": repr(schedule)})


def _stage_mfvi(run: _Run) -> dict:
    import jax

    import weightspace as ws

    s = run.preset.mfvi
    sgd = run.trace("sgd")
    w_map = jax.tree.map(lambda w: np.asarray(w[0, 0]), sgd.positions)
    trace = ws.samplers.mfvi(
        run.post, run.stage_key("mfvi"), init=w_map, num_epochs=s.num_epochs,
        batch_size=s.batch_size, learning_rate=s.learning_rate, init_scale=s.init_scale,
        num_samples=s.num_samples, eval_x=run.data.x_test, progress=run.progress)
    run_dir = run.run_dir("mfvi")
    if _is_writer():
        # mfvi keeps no run directory: its draws' predictions are what later stages read.
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "predictions.tmp.npy"
        np.save(tmp, np.asarray(trace.predictions, np.float32))
        os.replace(tmp, run_dir / "predictions.npy")
    elbo = np.asarray(trace.info.get("elbo_loss", [np.nan]), np.float64)
    return {"run_dir": run.relative(run_dir), "num_draws": trace.num_draws,
            "final_elbo_loss": float(elbo[-1]),
            "scale_summary": trace.info.get("scale_summary")}


# ------------------------------------------------------------------ rhat

def _stage_rhat(run: _Run) -> dict:
    import weightspace as ws

    trace = run.trace("hmc")
    aligned = None
    if trace.num_chains >= 2 and trace.num_draws >= 4:
        aligned = ws.diagnostics.align_permutations(trace.positions, run.preset.network)
    with np.errstate(invalid="ignore"):  # quantiles of infinite R-hat values (inf - inf)
        summary = ws.diagnostics.summary(trace, aligned_positions=aligned)
    names = {"weights": "weights", "weights (aligned)": "aligned_weights",
             "predictions": "predictions"}
    rhat = {names[row["space"]]: {k: v for k, v in row.items() if k != "space"}
            for row in summary.rhat}
    values = summary.rhat_values
    figure = None
    if values:
        ws.diagnostics.plot_rhat(values.get("weights"), values.get("predictions"),
                                 aligned_rhat=values.get("weights (aligned)"),
                                 path=run.out / FIGURES["rhat"] if _is_writer() else None,
                                 title=f"HMC R-hat ({run.preset.name}): weight vs "
                                       f"function space")
        figure = FIGURES["rhat"]
    return {"method": summary.method, "rhat": rhat, "ess": summary.ess,
            "chains": summary.chains, "notes": summary.notes, "figure": figure}


# ------------------------------------------------------------------ metrics

def _ensemble_metrics(run: _Run, probs) -> dict:
    import weightspace as ws

    return ws.diagnostics.classification_metrics(probs, run.data.y_test)


def _chains_vs_rest(preds) -> tuple[float, float]:
    """HMC against itself: mean over chains of agreement and total variation of
    one chain's predictive against the other chains' pooled one."""
    import weightspace as ws

    D = ws.diagnostics
    per_chain = [D.ensemble_predictive(preds[c:c + 1]) for c in range(preds.shape[0])]
    total = sum(per_chain)
    agree, tv = [], []
    for c, own in enumerate(per_chain):
        rest = (total - own) / (len(per_chain) - 1)
        agree.append(D.agreement(own, rest))
        tv.append(D.total_variation(own, rest))
    return float(np.mean(agree)), float(np.mean(tv))


def running_nll(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Test NLL of the running ensemble: the first d draws of every chain, for
    d = 1..draws. predictions: (chain, draw, n, k). Returns (models in the
    ensemble (d * chains), NLL), each (draws,)."""
    import weightspace as ws

    chains, draws = predictions.shape[:2]
    total = np.zeros(predictions.shape[2:], np.float64)
    counts, values = [], []
    for d in range(draws):
        total += np.asarray(predictions[:, d], np.float64).sum(axis=0)
        counts.append((d + 1) * chains)
        values.append(ws.diagnostics.nll(total / ((d + 1) * chains), labels))
    return np.asarray(counts), np.asarray(values)


def _stage_metrics(run: _Run) -> dict:
    import weightspace as ws

    D = ws.diagnostics
    methods, curves, probs_of = {}, {}, {}
    for method in METHODS:
        if not run.ok(method):
            rec = run.records[method]
            methods[method] = {"status": rec["status"],
                               "error": rec.get("error"), "reason": rec.get("reason")}
            continue
        preds = run.predictions(method)
        probs = D.ensemble_predictive(preds)
        probs_of[method] = probs
        entry = {"status": "ok", "num_models": int(preds.shape[0] * preds.shape[1]),
                 **_ensemble_metrics(run, probs), "notes": []}
        methods[method] = entry
        # Members are the models of a deep ensemble: a running curve over them.
        ordered = np.swapaxes(preds, 0, 1) if method == "deep_ensemble" else preds
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
            entry["agreement_vs_hmc"] = D.agreement(probs_of[method], reference)
            entry["total_variation_vs_hmc"] = D.total_variation(probs_of[method], reference)
    figures = {}
    if probs_of:
        _plot_reliability(run, probs_of)
        figures["reliability"] = FIGURES["reliability"]
    if curves:
        _plot_nll_curves(run, curves)
        figures["nll_vs_samples"] = FIGURES["nll_vs_samples"]
    return {"methods": methods, "figures": figures,
            "nll_vs_samples": {m: {"num_models": c.tolist(), "nll": v.tolist()}
                               for m, (c, v) in curves.items()}}


_LABELS = {"hmc": "HMC", "sgd": "SGD", "deep_ensemble": "deep ensemble", "sgld": "SGLD",
           "csghmc": "cyclical SGHMC", "mfvi": "MFVI"}


def _plot_reliability(run: _Run, probs_of: dict) -> None:
    """Reliability curves of every method (accuracy against mean confidence in
    the equal-width bins of `ece`) over the test examples per bin."""
    from matplotlib.figure import Figure

    import weightspace as ws

    fig = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1,
             label="perfect calibration")
    for i, (method, probs) in enumerate(probs_of.items()):
        bins = ws.diagnostics.reliability_bins(probs, run.data.y_test)
        full = bins["count"] > 0
        ece = ws.diagnostics.ece(probs, run.data.y_test)
        top.plot(bins["confidence"][full], bins["accuracy"][full], marker="o",
                 markersize=3, color=f"C{i}", label=f"{_LABELS[method]} (ECE {ece:.3f})")
        bottom.stairs(bins["count"], bins["edges"], color=f"C{i}")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    top.set_title(f"Reliability of each method's predictive ({run.preset.name})")
    top.legend(loc="upper left", fontsize="small")
    bottom.set_xlabel("confidence (max probability); points at each bin's mean")
    bottom.set_ylabel("test examples")
    if _is_writer():
        fig.savefig(run.out / FIGURES["reliability"], dpi=120)


def _models(n: int) -> str:
    return "one model" if n == 1 else f"{n} models"


def _plot_nll_curves(run: _Run, curves: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for i, (method, (counts, values)) in enumerate(curves.items()):
        if len(counts) == 1:
            ax.axhline(values[0], color=f"C{i}", linestyle="--", linewidth=1,
                       label=f"{_LABELS[method]} ({_models(int(counts[0]))})")
        else:
            ax.plot(counts, values, color=f"C{i}", marker="o", markersize=2,
                    label=_LABELS[method])
    ax.set_xscale("log")
    ax.set_xlabel("models in the ensemble (draws x chains)")
    ax.set_ylabel("test NLL")
    ax.set_title(f"Test NLL of the running ensemble ({run.preset.name})")
    ax.legend(fontsize="small")
    if _is_writer():
        fig.savefig(run.out / FIGURES["nll_vs_samples"], dpi=120)


# ------------------------------------------------------------------ llc

def _llc_positions(run: _Run) -> list[tuple[str, int, int]]:
    """(method, chain, draw) of every position whose LLC is estimated."""
    out = []
    if run.ok("sgd"):
        out.append(("sgd", 0, 0))
    if run.ok("deep_ensemble"):
        out += [("deep_ensemble", m, 0) for m in range(run.preset.ensemble.num_members)]
    if run.ok("hmc"):
        draws = run.records["hmc"]["result"]["num_draws"]
        picked = list(dict.fromkeys(d % draws for d in run.preset.llc.hmc_draws))
        out += [("hmc", c, d) for c in range(run.preset.hmc.num_chains) for d in picked]
    return out


def _llc_settings(run: _Run) -> dict:
    s = run.preset.llc
    return {"num_chains": s.num_chains, "num_draws": s.num_draws, "num_burnin": s.num_burnin,
            "step_size": s.step_size, "localization": s.localization,
            "batch_size": s.batch_size}


def _stage_llc(run: _Run) -> dict:
    import jax

    import weightspace as ws

    settings = _llc_settings(run)
    positions = _llc_positions(run)
    if not positions:
        raise RuntimeError("no positions to estimate the LLC at: sgd, deep_ensemble and hmc "
                           "all did not finish")
    # Estimates are kept as they are made, so a killed stage resumes.
    partial_path = run.run_dir("llc") / "positions.json"
    stored = _read_json(partial_path) or {}
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
            jax.random.fold_in(key, METHODS.index(method)), chain), draw)
        est = ws.slt.llc(run.post, params, k, progress=run.progress, **settings)
        probs = np.asarray(trace.predictions[chain, draw], np.float64)
        entry = {"method": method, "chain": chain, "draw": draw, "llc": est.mean,
                 "llc_std": est.std, "per_chain": est.per_chain, "init_loss": est.init_loss,
                 "nbeta": est.nbeta, "flags": est.flags,
                 "test": _ensemble_metrics(run, probs)}
        entries.append(_jsonable(entry))
        print(f"  llc {method} chain {chain} draw {draw}: {est.mean:.4g} +- {est.std:.3g}; "
              f"L_n(w*) {est.init_loss:.4g}, test NLL {entry['test']['nll']:.4g}"
              f"{'; ' + '; '.join(est.flags) if est.flags else ''}", flush=True)
        _write_json(partial_path, {"settings": settings, "positions": entries})
    by_method = {}
    for method in LLC_METHODS:
        values = np.array([e["llc"] for e in entries if e["method"] == method
                           and e["llc"] is not None], np.float64)
        if values.size:
            by_method[method] = {"count": int(values.size), "mean": float(values.mean()),
                                 "sd": float(values.std(ddof=1)) if values.size > 1 else None}
    skipped = [m for m in LLC_METHODS if not run.ok(m)]
    result = {"settings": settings, "positions": entries, "by_method": by_method,
              "notes": [f"{m} {run.records[m]['status']}: no LLC there" for m in skipped]}
    # LLC against test NLL and the generalization gap: the figure and JSON of
    # `weightspace llc-vs-generalization`, written into OUT.
    from weightspace.experiments.generalization import FIGURE, llc_vs_generalization

    study = llc_vs_generalization({**run.header, "llc": result}, out=run.out)
    result["generalization"] = {"correlations": study.correlations, "figure": FIGURE}
    return result


# ------------------------------------------------------------------ report

def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def format_table(results: dict) -> str:
    """The methods table (one row per method) of a results dict."""
    header = ["method", "models", "accuracy", "NLL", "ECE", "Brier", "agree(HMC)",
              "TV(HMC)"]
    rows = []
    methods = results.get("methods") or {}
    for method in METHODS:
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
                         *(_fmt(entry.get(m)) for m in METRICS)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def _fmt_list(values, digits: int = 3) -> str:
    if not values:
        return "-"
    return ", ".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _stage_report(run: _Run) -> dict:
    results = _results(run)
    p = run.preset
    lines = [f"# weightspace compare: {p.name}", "", p.description, "",
             (f"{run.post}; {run.post.num_params():,} weights; {len(run.data.x_test)} test "
              f"rows; seed {results.get('seed')}."), "", "## Stages", ""]
    rows = []
    for stage in STAGES[:-1]:
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
                         *(_fmt(v, 3) for v in fb.values()),
                         *(_fmt(v, 3) if v is not None else top for v in q.values())])
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
        rows = [[e["method"], str(e["chain"]), str(e["draw"]), _fmt(e["llc"], 3),
                 _fmt(e["llc_std"], 3), _fmt(e["init_loss"]), _fmt(e["test"]["nll"]),
                 _fmt(e["test"]["accuracy"]), "; ".join(e["flags"]) or "-"]
                for e in llc["positions"]]
        lines += _md_table(["method", "chain", "draw", "LLC", "sd", "L_n(w*)", "test NLL",
                            "test accuracy", "flags"], rows)
        lines += ["", "By method: " + "; ".join(
            f"{m} {_fmt(v['mean'], 3)} (sd {_fmt(v['sd'], 3)}, n={v['count']})"
            for m, v in llc.get("by_method", {}).items()), ""]
        from weightspace.experiments.generalization import llc_vs_generalization

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
    if _is_writer():
        (run.out / "report.md").write_text("\n".join(lines) + "\n")
    return {"report": "report.md"}


# ------------------------------------------------------------------ results

def _results(run: _Run) -> dict:
    recs = run.records
    stages = {}
    for stage in STAGES:
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
                       "reason": recs[m].get("reason")} for m in METHODS if m in recs}
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
    return _jsonable({**run.header, "stages": stages, "methods": methods, "hmc": hmc,
                      "llc": llc, "figures": figures})


_STAGE_FNS: dict[str, Callable[[_Run], dict]] = {
    "hmc": _stage_hmc, "sgd": _stage_sgd, "deep_ensemble": _stage_deep_ensemble,
    "sgld": _stage_sgld, "csghmc": _stage_csghmc, "mfvi": _stage_mfvi,
    "rhat": _stage_rhat, "metrics": _stage_metrics, "llc": _stage_llc,
    "report": _stage_report,
}


# ------------------------------------------------------------------ command line

def _set_pair(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE (e.g. hmc.num_samples=20), "
                                         f"got {text!r}")
    return name.strip(), presets_lib.parse_value(value.strip())


def _command(args) -> int:
    from weightspace.cli import CommandError

    try:
        results = compare(args.preset, args.out, smoke=args.smoke, data_dir=args.data_dir,
                          seed=args.seed, progress=not args.no_progress,
                          overrides=dict(args.set or []))
    except CompareError as err:
        raise CommandError(str(err)) from None
    return 0 if all(r["status"] == "ok" for r in results["stages"].values()) else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `weightspace compare` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "compare", help="HMC against SGD, a deep ensemble, SGLD, cyclical SGHMC and MFVI, "
                        "with R-hat and LLC, into an output directory",
        description="Runs HMC, SGD, a deep ensemble, SGLD, cyclical SGHMC and mean-field VI "
                    "on one posterior (a preset), then R-hat of HMC in weight and function "
                    "space, each method's accuracy, NLL, ECE, Brier and agreement and total "
                    "variation against HMC, and local learning coefficients at the SGD "
                    "solution, the ensemble members and HMC draws. Writes OUT/results.json, "
                    "OUT/report.md and its figures, and prints the table. A failed stage is "
                    "reported and the others run; running the same command again resumes "
                    "finished stages. Exit status 1 when a stage did not finish.")
    p.add_argument("--preset", default="quick", choices=list(presets_lib.PRESETS),
                   help="quick (default: digits, MLP(256, 256), under 10 minutes on 2 CPU "
                        "cores); paper-cifar10, paper-imdb, paper-mnist (Izmailov et al. "
                        "2021, Table 3; for TPU pods)")
    p.add_argument("--out", required=True, help="output directory (created, or resumed)")
    p.add_argument("--smoke", action="store_true",
                   help="a handful of steps on a few rows, every stage running (for tests)")
    p.add_argument("--set", action="append", type=_set_pair, metavar="FIELD=VALUE",
                   help="change one preset field, e.g. --set hmc.num_samples=20 (repeatable; "
                        "fields: " + ", ".join(presets_lib.fields()) + ")")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_command)
    return p
