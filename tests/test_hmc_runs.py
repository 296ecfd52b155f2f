"""Run directories of HMC, SGLD, MCLMC, MAMS and replica exchange: kill and resume, refusal to mix runs, lazy
loading, CLI."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws

from run_worker import NUM_STEPS

WORKER = Path(__file__).with_name("run_worker.py")


def _worker(sampler, *run_dirs, wait=True):
    """run_worker.py into each of run_dirs in turn, in one process."""
    cmd = [sys.executable, str(WORKER), sampler, *map(str, run_dirs)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _manifest(run_dir, key) -> int:
    """The committed num_draws or driver step of a run directory (0 before any)."""
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())[key] or 0
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _kill_mid_run(sampler, run_dir, rng, key, last):
    """Start the worker, wait until its manifest's `key` (num_draws or step)
    reaches a random value in [1, last], SIGKILL it a random instant later, and
    return the partial run's committed draws. A worker that finished before the
    kill (the machine may run it faster than expected) is discarded and run
    again with an earlier target, so the kill is always mid-run."""
    for attempt in range(5):
        shutil.rmtree(run_dir, ignore_errors=True)
        target = rng.randint(1, max(1, last >> attempt))
        proc = _worker(sampler, run_dir, wait=False)
        try:
            deadline = time.monotonic() + 300
            while (_manifest(run_dir, key) < target and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            output = proc.communicate()[0]
        if proc.returncode == -signal.SIGKILL:
            return _manifest(run_dir, "num_draws")
        assert proc.returncode == 0, output.decode()
    pytest.fail(f"the {sampler} worker finished before every one of 5 kills")


@pytest.mark.parametrize("sampler", ["hmc", "sgld", "sgd_checkpoints"])
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_draws(tmp_path,
                                                                              sampler):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    committed = _kill_mid_run(sampler, killed, random.Random(os.getpid()), "num_draws", 20)
    partial = ws.samplers.load(killed)  # a partial run opens, with whole draws only
    assert 0 < partial.num_draws == committed < 30
    _worker(sampler, killed, reference)  # resume, then an uninterrupted run
    a, b = ws.samplers.load(reference), ws.samplers.load(killed)
    assert a.num_draws == b.num_draws == 30
    for x, y in zip(jax.tree.leaves(a.positions), jax.tree.leaves(b.positions)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k])
    np.testing.assert_array_equal(
        jax.tree.leaves(partial.positions)[0],
        jax.tree.leaves(a.positions)[0][:, :partial.num_draws])


def _assert_same_runs(a, b):
    assert a.num_draws == b.num_draws
    for x, y in zip(jax.tree.leaves(a.positions), jax.tree.leaves(b.positions)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert set(a.stats) == set(b.stats)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k])


@pytest.mark.parametrize("sampler", ["mclmc", "mams", "replica_exchange"])
def test_tuned_sampler_sigkill_in_tuning_or_sampling_then_resume_is_exact(tmp_path,
                                                                          sampler):
    """Killed at a random moment of the run (tuning state, predictor, moments and
    autocorrelation sums, the replicas' ladder, rungs and swap counts are in the
    checkpoint), the resumed run's draws and stats equal an uninterrupted run's."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # Kill at a random driver step up to 20 before the end (warmup included).
    last = NUM_STEPS[sampler] - 20
    assert _kill_mid_run(sampler, killed, random.Random(os.getpid()), "step", last) < 30
    _worker(sampler, killed, reference)  # resume, then an uninterrupted run
    assert _manifest(reference, "step") == NUM_STEPS[sampler]
    _assert_same_runs(ws.samplers.load(reference), ws.samplers.load(killed))


def _gauss(q):
    return -0.5 * jnp.sum(q["x"] ** 2)


def _run(run_dir, **overrides):
    kwargs = dict(init={"x": jnp.zeros((2, 3))}, num_chains=2, num_samples=5,
                  step_size=0.3, warmup="fixed", run_dir=run_dir, progress=False)
    kwargs.update(overrides)
    return ws.samplers.hmc(_gauss, jax.random.key(2), **kwargs)


def test_a_run_dir_with_another_configuration_is_refused(tmp_path):
    _run(tmp_path / "run")
    with pytest.raises(ValueError, match="step_size"):
        _run(tmp_path / "run", step_size=0.2)
    with pytest.raises(ValueError, match="init"):
        _run(tmp_path / "run", init={"x": jnp.ones((2, 3))})


def test_a_finished_run_extends_with_more_samples_and_keeps_its_draws(tmp_path):
    first = _run(tmp_path / "run")
    first_x = np.array(first.positions["x"])
    longer = _run(tmp_path / "run", num_samples=9)
    assert longer.num_draws == 9
    np.testing.assert_array_equal(longer.positions["x"][:, :5], first_x)
    fresh = _run(tmp_path / "fresh", num_samples=9)
    np.testing.assert_array_equal(longer.positions["x"], fresh.positions["x"])


def test_load_opens_a_run_lazily_with_chain_draw_axes(tmp_path):
    trace = _run(tmp_path / "run", num_samples=7)
    loaded = ws.samplers.load(tmp_path / "run")
    x = loaded.positions["x"]
    assert x.shape == (2, 7, 3)
    assert isinstance(x.base, np.memmap) or isinstance(x, np.memmap)
    np.testing.assert_array_equal(x, trace.positions["x"])
    assert loaded.stats["accept_prob"].shape == (2, 7)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ws.samplers.load(tmp_path / "nowhere")


def test_in_memory_and_on_disk_runs_give_the_same_draws(tmp_path):
    disk = _run(tmp_path / "run")
    memory = _run(None)
    np.testing.assert_array_equal(disk.positions["x"], memory.positions["x"])


def test_cli_sample_runs_and_prints_a_summary(tmp_path, capsys):
    # In this process: a subprocess would pay JAX's start-up and imports again.
    from weightspace.cli import main

    code = main(["sample", "--dataset", "digits", "--n-train", "200", "--model", "mlp",
                 "--hidden", "8", "--chains", "2", "--samples", "4", "--warmup", "2",
                 "--max-steps", "20", "--no-progress", "--out", str(tmp_path / "cli")])
    out = capsys.readouterr()
    assert code == 0, out.err
    for piece in ("2 chains x 4 draws", "accuracy", "acceptance", "R-hat (rank)",
                  "weights (aligned)", "predictions bulk", "figures:"):
        assert piece in out.out
    assert ws.samplers.load(tmp_path / "cli").num_draws == 4
    for figure in ("trace.png", "rhat.png", "reliability.png"):
        assert (tmp_path / "cli" / figure).stat().st_size > 0
