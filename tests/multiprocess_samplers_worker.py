"""One process of a multi-process sampler run (tests/test_multiprocess_samplers.py).

usage: python multiprocess_samplers_worker.py NUM_PROCESSES PROCESS_ID PORT OUT_DIR

Every sampler runs on the digits MLP(16) posterior over a (chain=2, data=2)
mesh, each process loading only its own training rows, with a run directory
under OUT_DIR/runs (shared by the processes, as on a pod's filesystem). Each
process saves what its traces hold to OUT_DIR/process{ID}.npz and, through an
audit hook, every file it created, changed or removed under OUT_DIR/runs to
OUT_DIR/writes{ID}.json. With NUM_PROCESSES=1 the same runs happen in one
process over 4 devices (`run_samplers` is also called in-process by the test).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

import weightspace as ws

sys.path.insert(0, str(Path(__file__).parent))
from audited_cli import WriteAudit  # noqa: E402

CHAINS, DATA = 2, 2  # 2 processes x 2 CPU devices


def _settings() -> dict:
    """sampler -> keyword arguments: a few transitions each, at fixed step
    sizes: step-size adaptation turns the last-bit differences of sums taken
    in another order into different step sizes within a few transitions
    (0.01 apart in HMC's weights after 6), which says nothing about
    processes; the transitions are the kernels that warmup runs too."""
    return {
        "hmc": dict(num_chains=2, num_samples=4, num_warmup=2, warmup="fixed",
                    step_size=1e-3, trajectory_length=0.0195),
        "sgld": dict(num_chains=2, num_samples=3, num_warmup=2, batch_size=50,
                     step_size=1e-4, thin=2),
        "sgd": dict(num_chains=2, num_epochs=2, batch_size=50, learning_rate=0.05),
        "deep_ensemble": dict(num_members=2, num_epochs=1, batch_size=100,
                              learning_rate=0.05, optimizer="adam"),
        "mclmc": dict(num_chains=2, num_samples=3, step_size=0.5, L=2.0, thin=2),
        "mams": dict(num_chains=2, num_samples=3, step_size=0.5, L=2.0),
        "replica_exchange": dict(num_chains=1, num_temperatures=4, num_samples=3,
                                 step_size=0.01, trajectory_length=0.05),
        "mfvi": dict(num_epochs=2, batch_size=50, learning_rate=1e-3, num_samples=3),
    }


def run_samplers(out_dir: Path, mesh) -> dict[str, np.ndarray]:
    """Every sampler's positions, predictions and stats (and mean-field VI's),
    as flat numpy arrays named "<sampler>/<what>", plus what
    `ws.samplers.load` reads back from each run directory
    ("<sampler>/stored/...") in process 0."""
    data = ws.data.load("digits", n_train=200, mesh=mesh)
    post = ws.models.posterior(ws.models.MLP((16,), 10), data, prior_variance=0.2, mesh=mesh)
    results, traces = {}, {}
    for i, (name, kwargs) in enumerate(_settings().items()):
        run_dir = out_dir / "runs" / name
        if name == "mfvi":  # from SGD's solution, as compare starts it; no run directory
            kwargs = dict(kwargs, init=jax.tree.map(lambda w: w[0, -1], traces["sgd"].positions))
        else:
            kwargs = dict(kwargs, run_dir=run_dir)
        trace = traces[name] = getattr(ws.samplers, name)(
            post, jax.random.key(i), eval_x=data.x_test[:8], progress=False, **kwargs)
        for path, leaf in jax.tree_util.tree_leaves_with_path(trace.positions):
            results[f"{name}/positions{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
        results[f"{name}/predictions"] = np.asarray(trace.predictions)
        for stat, value in trace.stats.items():
            results[f"{name}/stats/{stat}"] = np.asarray(value)
        if jax.process_index() == 0 and name != "mfvi":
            stored = ws.samplers.load(run_dir)
            results[f"{name}/stored/predictions"] = np.asarray(stored.predictions)
            results[f"{name}/stored/num_draws"] = np.asarray(stored.num_draws)
    return results


def main(num_processes: int, process_id: int, port: int, out_dir: str) -> None:
    out = Path(out_dir)
    if num_processes > 1:
        ws.sharding.initialize(f"127.0.0.1:{port}", num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120)
    assert jax.process_count() == num_processes and jax.device_count() == CHAINS * DATA
    audit = WriteAudit(out / "runs")
    results = run_samplers(out, ws.sharding.make_mesh(num_chains=CHAINS, num_data=DATA))
    events = list(audit.events)
    np.savez(out / f"process{process_id}.npz", **results)
    with open(out / f"writes{process_id}.json", "w") as f:
        json.dump(events, f)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]), sys.argv[4])
