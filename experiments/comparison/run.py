"""Running a comparison: `compare()` runs the stages in order into the output
directory, resuming those whose stored record says "ok" with the same inputs,
recording a stage that raises (the others still run) and skipping one whose
needed stage did not finish."""

from __future__ import annotations

import contextlib
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import jax

from weightspace import models, sharding
from weightspace.experiments.comparison.report import (
    format_table,
    gather_results,
    stage_report,
)
from weightspace.experiments.comparison.settings import (
    FORMAT,
    CompareError,
    check_out,
    load_data,
    needs,
    resolve_preset,
    stages,
    uses,
)
from weightspace.experiments.comparison.stages import ANALYSIS_FNS
from weightspace.experiments.comparison.state import Run
from weightspace.experiments.methods import REGISTRY
from weightspace.jsonio import is_writer, read_json, write_json


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
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CompareError(f"seed={seed!r} is not allowed: it must be an int")
    p = resolve_preset(preset, smoke, overrides)
    if out is None:
        out = Path("runs") / f"compare-{p.name.replace(' (smoke)', '-smoke')}"
    config = {"format": FORMAT, "preset": p.to_dict(), "smoke": smoke, "seed": seed}
    out = check_out(out, config)
    # Every process judges `out` before process 0 writes into it: a process that
    # looked later could find a half-made directory and refuse it.
    sharding.wait_for_processes("compare out checked")
    if is_writer():
        out.mkdir(parents=True, exist_ok=True)
    if not (out / "compare.json").is_file():
        write_json(out / "compare.json", config, writer_only=True)

    print(f"compare: preset {p.name} -> {out}", flush=True)
    if mesh is None and jax.process_count() > 1:
        mesh = sharding.make_mesh()  # each process then loads only its rows
    data = load_data(p, seed, data_dir, mesh)
    post = models.posterior(p.network, data, prior_variance=p.prior_variance,
                            temperature=p.temperature, mesh=mesh)
    print(f"{post}: {post.num_params():,} weights; {len(data.x_test)} test rows", flush=True)
    header = {"format": FORMAT, "preset": p.to_dict(), "smoke": smoke, "seed": seed,
              "out": str(out.absolute()),
              "data": {"name": data.name, "num_train": int(data.num_train),
                       "num_test": len(data.x_test), "num_classes": data.num_classes},
              "network": repr(p.network), "num_params": int(post.num_params())}
    run = Run(preset=p, out=out, data=data, post=post, key=jax.random.key(seed),
              progress=progress, smoke=smoke, header=header)
    for i, stage in enumerate(stages()):
        # Process 0 writes results, reports and figures the others skip: the
        # stage's first collective must not find them too far apart.
        sharding.wait_for_processes(f"compare stage {stage}")
        _run_stage(run, stage, i)
        results = gather_results(run)
        write_json(out / "results.json", results, writer_only=True)
    print()
    print(format_table(results))
    failed = [s for s, r in results["stages"].items() if r["status"] != "ok"]
    print(f"\nresults: {out / 'results.json'}; report: {out / 'report.md'}"
          + (f"; not finished: {', '.join(failed)}" if failed else ""), flush=True)
    return results


def _run_stage(run: Run, stage: str, index: int) -> None:
    needed = needs(stage)
    inputs = {s: run.records[s]["status"] for s in (*needed, *uses(stage))}
    path = run.out / "stages" / f"{stage}.json"
    title = f"[{index + 1}/{len(stages())}] {stage}"
    stored = read_json(path, default=None)
    if stored and stored.get("status") == "ok" and stored.get("inputs") == inputs:
        run.records[stage] = {**stored, "resumed": True}
        print(f"{title}: resumed (finished earlier in {stored['seconds']:.1f} s)", flush=True)
        return
    missing = [s for s in needed if inputs[s] != "ok"]
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
                result = _stage_fn(stage)(run)
        except Exception as err:  # noqa: BLE001  (recorded; the other stages run)
            seconds = time.perf_counter() - start
            record.update(status="failed", seconds=seconds, result=None,
                          error={"type": type(err).__name__, "message": str(err)})
            if is_writer():
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
    write_json(path, {k: v for k, v in record.items() if k != "resumed"}, writer_only=True)
    run.records[stage] = record


@contextlib.contextmanager
def _quiet_smoke(smoke: bool):
    """Under smoke, HMC trajectories are cut to a couple of steps on purpose."""
    with warnings.catch_warnings():
        if smoke:
            warnings.filterwarnings("ignore", message=".*trajectories were cut short.*")
        yield


def _stage_fn(stage: str) -> Callable[[Run], dict]:
    if stage in REGISTRY:
        return REGISTRY[stage].run
    return stage_report if stage == "report" else ANALYSIS_FNS[stage]
