"""Whole runs as 2 JAX processes x 2 CPU devices on 127.0.0.1 (gloo): every
sampler, the command line (sample, llc, mixing) and compare give what one
process gives, and only process 0 writes files, apart from each process's own
shards of the orbax checkpoints.

Two processes sum the log-likelihood's shards in another order than one
process does (gloo), so the draws agree to float32 rounding, not bit for bit;
the two processes agree with each other exactly, and discrete stats
(acceptance, steps, gradient counts) agree exactly with one process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import weightspace as ws

from multiprocess_samplers_worker import CHAINS, DATA, run_samplers
from processes import assert_only_checkpoint_shards, finish, free_port, job_options, start

HERE = Path(__file__).parent


def _is_discrete(key: str) -> bool:
    return any(key.endswith(s) for s in ("is_accepted", "is_divergent", "num_steps",
                                         "grad_evals", "num_draws", "swaps"))


def assert_close_to_one_process(two: dict, one: dict, what: str) -> None:
    assert sorted(two) == sorted(one), what
    for key in one:
        a, b = np.asarray(two[key]), np.asarray(one[key])
        assert a.shape == b.shape, (what, key, a.shape, b.shape)
        if _is_discrete(key) or not np.issubdtype(b.dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: {key}")
        elif "/stats/" in key:  # energies: differences of sums of ~1e3, in float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3, err_msg=f"{what}: {key}")
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{what}: {key}")


@pytest.mark.multiprocess
def test_every_sampler_across_two_processes_equals_one_process(tmp_path):
    assert jax.device_count() == 8, "run with JAX_NUM_CPU_DEVICES=8 (tests/conftest.py)"
    two = tmp_path / "two"
    two.mkdir()
    port = free_port()
    procs = start([[HERE / "multiprocess_samplers_worker.py", 2, i, port, two]
                   for i in range(2)])
    try:  # the one-process reference, over this process's 8 devices, meanwhile
        one = run_samplers(tmp_path / "one", ws.sharding.make_mesh(num_chains=CHAINS,
                                                                   num_data=DATA))
    finally:
        finish(procs)
    p0, p1 = (dict(np.load(two / f"process{i}.npz")) for i in range(2))
    assert {k.split("/")[0] for k in one} == {
        "hmc", "sgld", "sgd", "deep_ensemble", "mclmc", "mams", "replica_exchange", "mfvi"}
    # process 1 holds the same values as process 0, bit for bit
    for key, value in p1.items():
        np.testing.assert_array_equal(value, p0[key], err_msg=key)
    assert_close_to_one_process(p0, one, "2 processes against 1")
    # what process 0 stored is what both processes returned
    for name in ("hmc", "sgld", "sgd", "deep_ensemble", "mclmc", "mams", "replica_exchange"):
        np.testing.assert_array_equal(p0[f"{name}/stored/predictions"],
                                      p0[f"{name}/predictions"], err_msg=name)
    assert_only_checkpoint_shards(json.loads((two / "writes1.json").read_text()), "process 1")
    written = {Path(p).name for _, p in json.loads((two / "writes0.json").read_text())}
    assert {"config.json", "manifest.json", "spec.json"} <= written  # the audit sees them


SAMPLES = 60
SAMPLE = ["sample", "--dataset", "digits", "--n-train", "200", "--hidden", "16",
          "--chains", "2", "--samples", str(SAMPLES), "--warmup", "2", "--warmup-mode",
          "fixed", "--step-size", "1e-3", "--trajectory-length", "0.0195", "--no-progress",
          "--checkpoint-every", "10"]
LLC = ["llc", "--chains", "2", "--num-draws", "10", "--burnin", "5", "--batch-size", "50",
       "--no-progress"]
MIXING = ["mixing", "--lengths", "4,60", "--no-align"]


def _job(commands, port: int, process: int, log: Path, root: Path) -> list:
    """audited_cli.py's argv for one process of a 2-process job running `commands`."""
    argv = []
    for c in commands:
        argv += ["+", c[0], *job_options(port, process), *c[1:]]
    return [HERE / "audited_cli.py", log, root, *argv[1:]]


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """sample, llc and mixing as a 2-process job (audited), and the same
    commands in this process (one process, 8 devices) meanwhile."""
    from weightspace.cli import main

    root = tmp_path_factory.mktemp("commands")
    two, one = root / "two", root / "one"
    port = free_port()
    procs = start([_job(([*SAMPLE, "--out", two / "run"], [*LLC, "--run", two / "run"],
                         [*MIXING, "--run", two / "run"]), port, i, root / f"audit{i}.json",
                        root) for i in range(2)])
    try:
        for argv in ([*SAMPLE, "--out", one / "run"], [*LLC, "--run", one / "run"],
                     [*MIXING, "--run", one / "run"]):
            assert main([str(a) for a in argv]) == 0, argv
    finally:
        finish(procs)
    audits = [json.loads((root / f"audit{i}.json").read_text()) for i in range(2)]
    return root, two / "run", one / "run", audits


@pytest.mark.multiprocess
def test_sample_llc_and_mixing_commands_across_two_processes(commands):
    root, two, one, audits = commands
    assert [a["codes"] for a in audits] == [[0, 0, 0]] * 2
    assert_only_checkpoint_shards(audits[1]["writes"], "process 1")
    written = {part for _, p in audits[0]["writes"] for part in Path(p).relative_to(root).parts}
    assert {"command.json", "draws", "llc.json", "mixing.json", "mixing.png",
            "trace.png", "rhat.png", "reliability.png"} <= written  # the audit sees them
    got, want = ws.samplers.load(two), ws.samplers.load(one)
    for a, b in zip(jax.tree.leaves(got.positions), jax.tree.leaves(want.positions)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.stats["is_accepted"], want.stats["is_accepted"])
    llc_two, llc_one = (json.loads((d / "llc.json").read_text())["results"] for d in (two, one))
    assert len(llc_two) == len(llc_one) == 2
    for a, b in zip(llc_two, llc_one):
        np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-3)
    mixing_two, mixing_one = (json.loads((d / "mixing.json").read_text()) for d in (two, one))
    assert mixing_two["lengths"] == mixing_one["lengths"] == [4, SAMPLES]
    assert mixing_two["curves"].keys() == mixing_one["curves"].keys()
    for space, curve in mixing_one["curves"].items():
        for q, values in curve["quantiles"].items():
            np.testing.assert_allclose(mixing_two["curves"][space]["quantiles"][q], values,
                                       rtol=1e-3, err_msg=f"{space} {q}")


def _manifest_draws(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["num_draws"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.multiprocess
def test_sigkill_of_one_process_stops_the_other_and_a_restart_resumes_exactly(
        commands, tmp_path):
    """SIGKILL process 1 of a 2-process `weightspace sample` mid-run: process 0
    stops with one line naming the lost peer (not a hang), and starting both
    again resumes to draws bit-identical to the uninterrupted 2-process run of
    the `commands` fixture."""
    whole = commands[1]
    killed = tmp_path / "run"
    target = int(np.random.default_rng(16).integers(5, SAMPLES // 2))  # the draw to kill at

    def job(port):
        return [["-m", "weightspace.cli", SAMPLE[0], *job_options(port, i), *SAMPLE[1:],
                 "--peer-timeout", "10", "--out", killed] for i in range(2)]

    procs = start(job(free_port()))
    try:
        while _manifest_draws(killed) < target and procs[1].poll() is None:
            time.sleep(0.1)
        committed = _manifest_draws(killed)
        procs[1].kill()  # SIGKILL
        procs[1].wait()
        assert procs[1].returncode == -9 and 0 < committed < SAMPLES, (
            procs[1].returncode, committed)
        out = procs[0].communicate(timeout=300)[0]  # the survivor must stop by itself
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 3, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("weightspace sample: error")]
    assert len(error) == 1 and "lost process 1 of the job" in error[0], out[-3000:]
    assert _manifest_draws(killed) < SAMPLES
    finish(start(job(free_port())))  # both again: the run resumes
    got, want = ws.samplers.load(killed), ws.samplers.load(whole)
    assert got.num_draws == want.num_draws == SAMPLES
    for a, b in zip(jax.tree.leaves(got.positions), jax.tree.leaves(want.positions)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    for name, value in want.stats.items():
        np.testing.assert_array_equal(got.stats[name], value, err_msg=name)
