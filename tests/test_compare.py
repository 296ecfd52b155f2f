"""`weightspace compare`: every method and metric reaches results.json and the
report; a rerun resumes finished stages without sampling again; a failing
stage is recorded and the others still run (those that need it are skipped
with the reason); bad input is refused naming the argument; the presets carry
Izmailov et al. 2021's settings and each paper preset runs end to end under
--smoke on mocked tensorflow-datasets data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jax
import pytest
from conftest import one_device_mesh, run_command
from tfds_mock import mocked_tfds
from weightspace.experiments import presets
from weightspace.experiments.comparison import STAGES

import weightspace as ws
from weightspace.cli import main as weightspace_main
from weightspace.jsonio import jsonable

METHODS = ("hmc", "sgd", "deep_ensemble", "sgld", "csghmc", "mfvi")
METRICS = ("accuracy", "nll", "ece", "brier", "agreement_vs_hmc", "total_variation_vs_hmc")
SAMPLERS = ("hmc", "sgd", "deep_ensemble", "sgld", "sghmc", "mfvi")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def cli(argv, capsys):
    """(exit status, stdout, stderr) of `weightspace compare ARGV`."""
    return run_command(["compare", *argv], capsys)


def forbid(monkeypatch, *names):
    """Make these samplers (and ws.slt.llc with "llc") raise if called."""
    def boom(name):
        def raiser(*args, **kwargs):
            raise RuntimeError(f"forced failure of {name}")
        return raiser
    for name in names:
        if name == "llc":
            monkeypatch.setattr(ws.slt, "llc", boom("llc"))
        else:
            monkeypatch.setattr(ws.samplers, name, boom(name))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick preset under smoke, on the test session's 8-device mesh."""
    out = tmp_path_factory.mktemp("compare") / "quick"
    results = ws.experiments.compare("quick", out, smoke=True, progress=False)
    return out, results


def copy_of(quick, tmp_path, *stages):
    """A copy of the quick run's OUT with `stages` to be run again."""
    out = tmp_path / "out"
    shutil.copytree(quick[0], out)
    for stage in stages:
        (out / "stages" / f"{stage}.json").unlink()
        shutil.rmtree(out / "runs" / stage, ignore_errors=True)
    return out


# ------------------------------------------------------------------ presets

def test_paper_presets_carry_table_3_and_name_real_datasets_and_networks():
    P = presets.PRESETS
    assert list(P) == ["quick", "paper-cifar10", "paper-imdb", "paper-mnist"]
    cifar, imdb, mnist = P["paper-cifar10"], P["paper-imdb"], P["paper-mnist"]
    assert isinstance(cifar.network, ws.models.ResNet20FRN) and cifar.data.name == "cifar10"
    assert isinstance(imdb.network, ws.models.CNNLSTM) and imdb.data.name == "imdb_reviews"
    assert isinstance(mnist.network, ws.models.MLP) and mnist.data.name == "mnist"
    for p in (cifar, imdb, mnist):
        assert p.data.name in ws.data.TFDS_NAMES
        h = p.hmc
        assert (h.num_chains, h.num_warmup, h.warmup, h.step_size) == (3, 50, "no_metropolis",
                                                                        1e-5)
        assert h.trajectory_length is None   # (pi/2) sqrt(T prior_variance) in ws.samplers.hmc
        assert h.max_num_steps >= math.ceil(math.pi / 2 * math.sqrt(p.prior_variance) / 1e-5)
        assert p.mfvi.learning_rate == 1e-4 and p.mfvi.num_samples == 50
    assert (cifar.prior_variance, cifar.hmc.num_samples) == (1 / 5, 240)
    assert (imdb.prior_variance, imdb.hmc.num_samples) == (1 / 40, 400)
    assert cifar.sgld.step_size == 1e-6 and imdb.sgld.step_size == 1e-5
    assert cifar.ensemble.num_members == 50
    quick = P["quick"]
    assert quick.data.name == "digits" and quick.network == ws.models.MLP((256, 256), 10)
    assert quick.hmc.num_chains >= 3


def test_smoke_keeps_dataset_network_and_modes_and_shrinks_the_sizes():
    for name, p in presets.PRESETS.items():
        s = presets.smoke(name)
        assert s.data.name == p.data.name and type(s.network) is type(p.network)
        assert s.hmc.warmup == p.hmc.warmup and s.hmc.num_chains == p.hmc.num_chains
        assert s.data.n_train == presets.SMOKE_TRAIN and s.data.n_test == presets.SMOKE_TEST
        assert s.hmc.num_samples * s.hmc.num_chains <= 12 and s.sgd.num_epochs == 1
    imdb = presets.smoke("paper-imdb")
    assert imdb.network.vocab_size == dict(imdb.data.options)["vocab_size"] < 20000


def test_override_changes_fields_and_refuses_unknown_ones():
    p = presets.override("quick", {"hmc.num_samples": 7, "prior_variance": 1,
                                   "llc.hmc_draws": [0, -1]})
    assert (p.hmc.num_samples, p.prior_variance, p.llc.hmc_draws) == (7, 1.0, (0, -1))
    with pytest.raises(ValueError, match="unknown preset field 'hmc.samples'.*hmc.num_samples"):
        presets.override("quick", {"hmc.samples": 7})
    with pytest.raises(ValueError, match="hmc.num_samples='many' is not allowed"):
        presets.override("quick", {"hmc.num_samples": "many"})
    with pytest.raises(ValueError, match="hmc.num_chains=1 is not allowed"):
        presets.override("quick", {"hmc.num_chains": 1})


# ------------------------------------------------------------------ the quick preset

def test_results_hold_every_method_metric_rhat_and_llc(quick):
    out, results = quick
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]
    assert list(results["stages"]) == list(STAGES)
    for stage, record in results["stages"].items():
        assert record["status"] == "ok" and not record["resumed"], (stage, record)
        assert record["error"] is None and record["seconds"] >= 0
    for method in METHODS:
        entry = results["methods"][method]
        assert entry["num_models"] >= 1
        for metric in METRICS:
            assert finite(entry[metric]), (method, metric, entry[metric])
        assert 0 <= entry["accuracy"] <= 1 and 0 <= entry["agreement_vs_hmc"] <= 1
    rhat = results["hmc"]["rhat"]
    assert set(rhat) == {"weights", "aligned_weights", "predictions"}
    assert rhat["weights"]["count"] == results["num_params"]
    for space in rhat.values():
        assert set(space["fraction_below"]) == {"1.1", "1.01"}
        assert all(0 <= v <= 1 for v in space["fraction_below"].values())
        assert set(space["quantiles"]) == {"0.5", "0.9", "0.99", "1.0"}
    positions = results["llc"]["positions"]
    assert [(e["method"], e["chain"]) for e in positions] == (
        [("sgd", 0), ("deep_ensemble", 0), ("deep_ensemble", 1)]
        + [("hmc", c) for c in range(3)])
    for e in positions:   # what an LLC-vs-generalization study reads
        assert finite(e["llc"]) and finite(e["init_loss"])
        assert finite(e["test"]["nll"]) and 0 <= e["test"]["accuracy"] <= 1
    assert {e["draw"] for e in positions if e["method"] == "hmc"} == {3}  # the last draw
    assert set(results["llc"]["by_method"]) == {"sgd", "deep_ensemble", "hmc"}
    report = (out / "report.md").read_text()
    figures = ("rhat.png", "reliability.png", "nll_vs_samples.png",
               "llc_vs_generalization.png")
    for name in figures:
        assert (out / name).stat().st_size > 0 and f"]({name})" in report
    assert set(results["figures"].values()) == set(figures)
    assert "### LLC against generalization" in report


def test_llc_vs_generalization_reads_the_comparison(quick, capsys):
    out, results = quick
    code = weightspace_main(["llc-vs-generalization", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    positions = results["llc"]["positions"]
    lines = [line for line in stdout.splitlines()
             if line.split()[:1] in (["sgd"], ["deep_ensemble"], ["hmc"])]
    # one row per position plus a mean row per method, then the correlations
    assert len([line for line in lines if line.split()[1] != "mean"]) == len(positions)
    saved = json.loads((out / "llc_vs_generalization.json").read_text())
    assert [(r["method"], r["chain"], r["draw"]) for r in saved["rows"]] == [
        (e["method"], e["chain"], e["draw"]) for e in positions]
    assert saved["correlations"] == results["llc"]["generalization"]["correlations"]
    assert saved["correlations"]["all"]["llc_vs_test_nll"]["n"] == len(positions)


def test_a_rerun_through_the_command_resumes_every_stage_without_sampling(
        quick, monkeypatch, capsys):
    out, first = quick
    forbid(monkeypatch, *SAMPLERS, "llc")
    code, stdout, _ = cli(["--preset", "quick", "--smoke", "--out", out, "--no-progress"],
                          capsys)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert all(r["status"] == "ok" and r["resumed"] for r in results["stages"].values())
    assert results["methods"] == first["methods"] and results["llc"] == first["llc"]
    assert stdout.count("resumed") == len(STAGES)
    for method in METHODS:   # the table, one row per method
        assert any(line.startswith(method + " ") for line in stdout.splitlines())


def test_a_failing_stage_is_recorded_and_the_others_complete(quick, tmp_path, monkeypatch,
                                                             capsys):
    out = copy_of(quick, tmp_path, "sgld")
    forbid(monkeypatch, "sgld")
    results = ws.experiments.compare("quick", out, smoke=True, progress=False)
    stdout = capsys.readouterr().out
    sgld = results["stages"]["sgld"]
    assert sgld["status"] == "failed"
    assert sgld["error"] == {"type": "RuntimeError", "message": "forced failure of sgld"}
    assert "sgld: FAILED" in stdout and "forced failure of sgld" in stdout
    assert results["methods"]["sgld"]["status"] == "failed"
    for stage, record in results["stages"].items():
        if stage != "sgld":
            assert record["status"] == "ok", (stage, record)
    # metrics and report read sgld: they ran again; the rest was resumed.
    assert not results["stages"]["metrics"]["resumed"]
    assert results["stages"]["hmc"]["resumed"] and results["stages"]["llc"]["resumed"]
    for method in set(METHODS) - {"sgld"}:
        assert finite(results["methods"][method]["nll"])
    assert "RuntimeError: forced failure of sgld" in (out / "report.md").read_text()


def test_stages_that_need_a_failed_one_are_skipped_with_the_reason(quick, tmp_path,
                                                                   monkeypatch, capsys):
    out = copy_of(quick, tmp_path, "hmc", "sgd")
    forbid(monkeypatch, "hmc", "sgd", "llc")   # llc: the ensemble's estimates are kept
    code, stdout, _ = cli(["--preset", "quick", "--smoke", "--out", out, "--no-progress"],
                          capsys)
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    stages = results["stages"]
    assert stages["hmc"]["status"] == stages["sgd"]["status"] == "failed"
    assert stages["rhat"]["status"] == "skipped" and "needs hmc" in stages["rhat"]["reason"]
    assert stages["mfvi"]["status"] == "skipped" and "needs sgd" in stages["mfvi"]["reason"]
    for stage in ("deep_ensemble", "sgld", "csghmc", "metrics", "llc", "report"):
        assert stages[stage]["status"] == "ok", stage
    for method in ("deep_ensemble", "sgld", "csghmc"):
        entry = results["methods"][method]
        assert finite(entry["nll"]) and entry["agreement_vs_hmc"] is None
        assert any("no HMC reference" in n for n in entry["notes"])
    assert {e["method"] for e in results["llc"]["positions"]} == {"deep_ensemble"}
    assert "rhat: skipped (needs hmc, which failed)" in stdout


# ------------------------------------------------------------------ bad input

def test_bad_input_is_refused_naming_the_argument(quick, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown preset='cifar'.*quick, paper-cifar10, "
                                         r"paper-imdb, paper-mnist"):
        ws.experiments.compare("cifar", tmp_path / "a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out=.*file' exists and is not a directory"):
        ws.experiments.compare("quick", tmp_path / "file", smoke=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither empty nor an output directory of compare"):
        ws.experiments.compare("quick", tmp_path / "other", smoke=True)
    with pytest.raises(ValueError, match="other settings .*differs in seed"):
        ws.experiments.compare("quick", quick[0], smoke=True, seed=1)
    with pytest.raises(ValueError, match=r"differs in preset.hmc.num_samples\)"):
        ws.experiments.compare("quick", quick[0], smoke=True,
                               overrides={"hmc.num_samples": 5})
    with pytest.raises(ValueError, match="unknown preset field 'hmc.chains'"):
        ws.experiments.compare("quick", tmp_path / "b", smoke=True,
                               overrides={"hmc.chains": 2})

    code, _, err = cli(["--preset", "cifar", "--out", tmp_path / "c"], capsys)
    assert code == 2 and "--preset: invalid choice: 'cifar'" in err and "paper-imdb" in err
    code, _, err = cli(["--out", tmp_path / "file", "--smoke"], capsys)
    assert code == 2 and "exists and is not a directory" in err
    code, _, err = cli(["--out", tmp_path / "d", "--set", "hmc.num_samples"], capsys)
    assert code == 2 and "--set: must be FIELD=VALUE" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


# ------------------------------------------------------------------ the paper presets

# Every stage compiles the preset's network anew: on 2 CPU cores the CIFAR-10
# preset's end-to-end smoke takes 5 to 8 minutes, IMDB's 2 to 3 and MNIST's
# 1 to 2, which the README's 15-minute suite cannot hold. They run with
# `pytest -m slow`; the default suite runs every stage end to end on the quick
# preset (the `quick` fixture), and each paper preset's data, network and one
# stage below.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper-mnist", "paper-imdb", "paper-cifar10"])
def test_paper_preset_runs_end_to_end_under_smoke_on_mocked_tfds(name, tmp_path):
    # One device: sharded convolutions on 8 simulated CPU devices are many times
    # slower, and sharding is what test_sharding checks.
    with mocked_tfds(presets.SMOKE_TRAIN + 8, tmp_path / "data"):
        results = ws.experiments.compare(name, tmp_path / "out", smoke=True, progress=False,
                                         mesh=one_device_mesh())
    for stage, record in results["stages"].items():
        assert record["status"] == "ok", (stage, record["error"])
    assert results["data"]["name"] == presets.PRESETS[name].data.name
    assert results["data"]["num_test"] == presets.SMOKE_TEST
    assert results["preset"]["network"]["type"] == type(presets.PRESETS[name].network).__name__
    for method in METHODS:
        assert finite(results["methods"][method]["nll"])
    assert len(results["llc"]["positions"]) == 1 + 2 + 3
    assert jax.tree.leaves(results["hmc"]["rhat"])
    assert Path(tmp_path / "out" / "report.md").is_file()


@pytest.mark.parametrize("name", ["paper-mnist", "paper-imdb", "paper-cifar10"])
def test_paper_preset_data_network_and_sgd_stage_under_smoke_on_mocked_tfds(name, tmp_path):
    """What the slow end-to-end runs check that the rest of the default suite
    does not: the preset's dataset through tfds (mocked) at its settings, the
    posterior of its network, and a stage (SGD, the cheapest to compile) that
    trains and predicts on it."""
    from weightspace.experiments.comparison.run import _stage_fn
    from weightspace.experiments.comparison.settings import load_data, resolve_preset
    from weightspace.experiments.comparison.state import Run

    p = resolve_preset(name, True, None)
    mesh = one_device_mesh()
    with mocked_tfds(presets.SMOKE_TRAIN + 8, tmp_path / "data"):
        data = load_data(p, 0, None, mesh)
    assert data.name == p.data.name and len(data.x_test) == presets.SMOKE_TEST
    post = ws.models.posterior(p.network, data, prior_variance=p.prior_variance,
                               temperature=p.temperature, mesh=mesh)
    run = Run(preset=p, out=tmp_path, data=data, post=post, key=jax.random.key(0),
              progress=False, smoke=True)
    result = _stage_fn("sgd")(run)
    trace = ws.samplers.load(tmp_path / result["run_dir"])
    assert trace.predictions.shape[:3] == (1, 1, presets.SMOKE_TEST)
    assert all(bool(jax.numpy.isfinite(x).all()) for x in jax.tree.leaves(trace.positions))
    assert bool(jax.numpy.isfinite(trace.predictions).all())


def _assert_same_results(got, want, path="results") -> None:
    """Two results.json agree: the same keys, lists and strings, numbers to
    float32 rounding (two processes sum shards in another order), apart from
    timings and the output directory."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            if k not in ("seconds", "out"):
                _assert_same_results(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same_results(a, b, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-3, abs=1e-3), (path, got, want)
    else:
        assert got == want, (path, got, want)


# Both processes wait for each other before every stage (a coordination-service
# barrier, ws.sharding.wait_for_processes): without it, on a loaded machine they
# reached a stage's first collective more than gloo's fixed 30 s apart (process 0
# writes the reports and figures) and the set-up of its communicator failed.
@pytest.mark.multiprocess
def test_quick_smoke_as_two_processes_writes_the_same_results(quick, tmp_path):
    """`weightspace compare --preset quick --smoke` as 2 processes x 2 CPU
    devices writes what the one-process run (the `quick` fixture) wrote, and
    process 1 writes nothing but its shards of the checkpoints."""
    from processes import assert_only_checkpoint_shards, finish, free_port, job_options, start

    port = free_port()
    audited = Path(__file__).with_name("audited_cli.py")
    finish(start([[audited, tmp_path / f"audit{i}.json", tmp_path, "compare", "--preset",
                   "quick", "--smoke", "--no-progress", "--out", tmp_path / "out",
                   *job_options(port, i)] for i in range(2)]))
    audits = [json.loads((tmp_path / f"audit{i}.json").read_text()) for i in range(2)]
    assert [a["codes"] for a in audits] == [[0], [0]]
    assert_only_checkpoint_shards(audits[1]["writes"], "process 1")
    got = json.loads((tmp_path / "out" / "results.json").read_text())
    # The fixture's first results (other tests rerun stages in its folder, which
    # then reads "resumed"), as results.json holds them.
    want = json.loads(json.dumps(jsonable(quick[1])))
    _assert_same_results(got, want)
