"""The `weightspace` command: `sample` with every sampler writes a run directory
with command.json and a summary; `llc --run` estimates at the run's draws what
ws.slt.llc gives there with the documented key; `llc --dataset dln` compares
with the known coefficient; bad input is refused naming the flag; the README's
command lines run."""

import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import run_command as run

import weightspace as ws
from weightspace.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["--dataset", "digits", "--n-train", "200", "--model", "mlp", "--hidden", "16",
        "--no-progress"]
LLC_TINY = ["--chains", "2", "--num-draws", "20", "--burnin", "10", "--no-progress"]


def tiny_posterior():
    """The posterior the TINY flags describe, built here without the CLI."""
    data = ws.data.load("digits", seed=0, n_train=200)
    return ws.models.posterior(ws.models.MLP((16,), 10), data, prior_variance=0.2,
                               temperature=1.0)


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sgd"
    argv = ["sample", *TINY, "--sampler", "sgd", "--chains", "2", "--epochs", "3",
            "--learning-rate", "0.05", "--batch-size", "50", "--out", out]
    code = main([str(a) for a in argv])
    assert code == 0
    return out, argv


@pytest.fixture(scope="module")
def hmc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "hmc"
    # Fixed step size without warmup: the HMC program compiles quickest that way.
    code = main([str(a) for a in ["sample", *TINY, "--chains", "2", "--samples", "2",
                                  "--warmup", "0", "--warmup-mode", "fixed",
                                  "--step-size", "1e-3", "--trajectory-length", "3e-3",
                                  "--no-eval", "--out", out]])
    assert code == 0
    return out


def test_sample_writes_command_json_with_what_rebuilds_the_posterior(sgd_run):
    out, _ = sgd_run
    command = json.loads((out / "command.json").read_text())
    assert command == {"format": 1, "dataset": "digits", "data_dir": None, "n_train": 200,
                       "model": "mlp", "hidden": [16], "prior_variance": 0.2,
                       "temperature": 1.0, "seed": 0, "sampler": "sgd"}
    trace = ws.samplers.load(out)
    assert (trace.num_chains, trace.num_draws) == (2, 1)


def test_sgd_summary_says_why_there_is_no_rhat(sgd_run, capsys):
    out, argv = sgd_run
    code, stdout, _ = run(argv, capsys)  # rerun: resumes the finished run
    assert code == 0
    assert "2 chains x 1 draws" in stdout
    assert "R-hat and ESS need at least 2 chains of 4 draws" in stdout
    assert "ensemble member" in stdout and "no R-hat" in stdout
    assert "ensemble of the 2 members on the test set: accuracy" in stdout
    assert (out / "trace.png").stat().st_size > 0 and not (out / "rhat.png").exists()


@pytest.mark.parametrize("sampler, flags", [
    ("sgld", ["--samples", "2", "--warmup", "3", "--step-size", "1e-4", "--batch-size",
              "50", "--preconditioner", "rmsprop"]),
    ("sghmc", ["--samples", "2", "--step-size", "1e-5", "--batch-size", "50",
               "--cycle-length", "10", "--friction", "0.5"]),
])
def test_sample_with_sg_mcmc_samplers(tmp_path, capsys, sampler, flags):
    out = tmp_path / sampler
    code, stdout, err = run(["sample", *TINY, "--sampler", sampler, "--chains", "2",
                             *flags, "--no-eval", "--out", out], capsys)
    assert code == 0, err
    assert "2 chains x 2 draws" in stdout and "divergences" in stdout
    assert json.loads((out / "command.json").read_text())["sampler"] == sampler
    config = json.loads((out / "config.json").read_text())
    assert config["sampler"] == ("psgld" if sampler == "sgld" else "sghmc")
    assert config["batch_size"] == 50


@pytest.mark.parametrize("sampler, flags, config_sampler", [
    # untuned (tuning is tested in test_microcanonical.py), with MCLMC's own flag
    ("mclmc", ["--warmup", "0", "--step-size", "0.5", "--L", "2", "--preconditioning",
               "none", "--desired-energy-var", "1e-3"], "mclmc"),
    ("mams", ["--warmup", "0", "--step-size", "0.5", "--L", "2", "--preconditioning",
              "none"], "mams"),
    # untuned: MAMS's tuning is tested in test_microcanonical.py
    ("mile", ["--warmup", "0", "--step-size", "0.5", "--L", "2", "--ensemble-epochs", "2",
              "--ensemble-learning-rate", "0.05", "--chain-sampler", "mams"], "mams"),
    # untuned: the ladder's and step sizes' tuning is tested in test_replica_exchange.py
    ("replica_exchange", ["--warmup", "0", "--step-size", "1e-3", "--trajectory-length",
                          "3e-3", "--temperatures", "4"], "replica_exchange"),
])
def test_sample_with_microcanonical_and_tempered_samplers(tmp_path, capsys, sampler, flags,
                                                          config_sampler):
    out = tmp_path / sampler
    code, stdout, err = run(["sample", *TINY, "--sampler", sampler, "--chains", "2",
                             "--samples", "4", *flags, "--no-eval", "--out", out], capsys)
    assert code == 0, err
    assert "2 chains x 4 draws" in stdout
    assert json.loads((out / "command.json").read_text())["sampler"] == sampler
    run_dir = out / "chains" if sampler == "mile" else out
    assert json.loads((run_dir / "config.json").read_text())["sampler"] == config_sampler


def test_llc_run_at_the_last_draws_equals_ws_slt_llc(hmc_run, capsys):
    code, stdout, err = run(["llc", "--run", hmc_run, *LLC_TINY], capsys)
    assert code == 0, err
    assert "lambda_hat" in stdout and "wrote" in stdout
    report = json.loads((hmc_run / "llc.json").read_text())
    assert [(r["chain"], r["draw"]) for r in report["results"]] == [(0, 1), (1, 1)]
    assert all(np.isfinite(r["mean"]) for r in report["results"])
    assert report["command"]["sampler"] == "hmc"
    assert report["settings"]["num_chains"] == 2 and report["settings"]["step_size"] == 1e-4

    post = tiny_posterior()
    trace = ws.samplers.load(hmc_run, template=post.init(jax.random.key(0)))
    params = jax.tree.map(lambda x: np.asarray(x[1, -1]), trace.positions)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 1), 1)
    direct = ws.slt.llc(post, params, key, num_chains=2, num_draws=20, num_burnin=10,
                        step_size=1e-4, localization=100.0, nbeta=None, batch_size=None,
                        sampler="sgld", progress=False)
    result = report["results"][1]
    np.testing.assert_allclose(result["mean"], direct.mean, rtol=1e-6)
    np.testing.assert_allclose(result["per_chain"], direct.per_chain, rtol=1e-6)
    np.testing.assert_allclose(result["init_loss"], direct.init_loss, rtol=1e-6)


def test_llc_run_on_an_sgd_run_estimates_at_each_members_solution(sgd_run, tmp_path,
                                                                  capsys):
    out, _ = sgd_run
    target = tmp_path / "sub" / "llc.json"
    code, stdout, err = run(["llc", "--run", out, "--draws", "0", "--batch-size", "50",
                             "--out", target, *LLC_TINY], capsys)
    assert code == 0, err
    report = json.loads(target.read_text())
    assert len(report["results"]) == 2  # one per member
    for r in report["results"]:
        assert r["draw"] == 0 and np.isfinite(r["mean"]) and len(r["per_chain"]) == 2
    assert report["settings"]["batch_size"] == 50
    assert "over 2 position(s)" in stdout


def test_llc_dln_prints_the_theory_value_and_the_relative_error(tmp_path, capsys):
    target = tmp_path / "dln.json"
    code, stdout, err = run(["llc", "--dataset", "dln", "--widths", "2,3,2", "--rank", "1",
                             "--n-train", "2000", "--num-draws", "100", "--burnin", "50",
                             "--chains", "2", "--no-progress", "--out", target], capsys)
    assert code == 0, err
    theory = ws.slt.theory.dln((2, 3, 2), 1)
    assert f"theory          {theory:.5g} (Aoyagi 2024)" in stdout
    report = json.loads(target.read_text())
    (result,) = report["results"]
    assert result["theory"] == theory and np.isfinite(result["mean"])
    assert result["relative_error"] == pytest.approx((result["mean"] - theory) / theory)
    assert re.search(r"relative error  [+-]\d+\.\d%", stdout)


def test_llc_dln_from_small_init_prints_the_curve_stage_by_stage(tmp_path, capsys):
    """The README's curve, checkpoint every 10 epochs: saddle rows flagged,
    settled rows compared with theory, llc.json and llc_curve.png written; a
    run too short to learn every direction says so."""
    target = tmp_path / "curve" / "llc.json"
    code, stdout, err = run(["llc", "--dataset", "dln", "--widths", "6,5,5,4", "--rank", "3",
                             "--seed", "3", "--from-small-init", "--save-every", "10",
                             "--localization", "5", "--step-size", "1e-4", "--num-draws",
                             "3000", "--burnin", "1000", "--no-progress", "--out", target],
                            capsys)
    assert code == 0, err
    rows = [line.split() for line in stdout.splitlines() if re.match(r"\d+ +\d/3 ", line)]
    assert [int(r[0]) for r in rows] == list(range(10, 201, 10))
    report = json.loads(target.read_text())
    results = report["results"]
    assert [r["epoch"] for r in results] == list(range(10, 201, 10))
    for r in results:
        if r["learned_directions"] < 3:  # a saddle: flagged, never compared with theory
            assert r["flags"] and r["relative_error"] is None and not r["settled"]
    assert results[-1]["settled"] and results[-1]["flags"] == []
    assert results[-1]["relative_error"] == pytest.approx(
        (results[-1]["mean"] - 11.5) / 11.5)
    assert report["problem"]["theory"] == 11.5
    assert report["problem"]["from_small_init"] == {"n_train": 5000, "init_scale": 0.01,
                                                    "epochs": 200, "save_every": 10}
    assert (tmp_path / "curve" / "llc_curve.png").stat().st_size > 0
    assert "no checkpoint has learned" not in stdout
    # 1,000 burn-in + 3,000 draws, full batch: one gradient a step and one to start.
    assert "cost: 4001 full-batch gradient evaluations per chain, 320080 for the 80 chains" \
        in stdout and results[0]["grad_evals_per_chain"] == 4001
    code, stdout, err = run(["llc", "--dataset", "dln", "--widths", "6,5,5,4", "--rank", "3",
                             "--seed", "3", "--from-small-init", "--epochs", "100",
                             "--save-every", "50", "--localization", "5", "--num-draws", "20",
                             "--burnin", "10", "--no-progress"], capsys)
    assert code == 0, err
    assert "no checkpoint has learned all 3 directions and settled" in stdout


@pytest.mark.parametrize("argv, message", [
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--init-scale", "0.1"],
     "--init-scale 0.1 is only used with --from-small-init"),
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--from-small-init",
      "--epochs", "10", "--save-every", "3"], "--save-every 3 must divide --epochs 10"),
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--from-small-init",
      "--batch-size", "10"], "--batch-size 10: --from-small-init estimates on the full"),
    (["llc", "--run", "nowhere", "--from-small-init"], "--from-small-init: only for "
                                                        "--dataset dln"),
])
def test_llc_from_small_init_refuses_bad_flags_in_one_line(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, message", [
    (["llc"], "one of the arguments --run --dataset is required"),
    (["llc", "--run", "x", "--dataset", "dln"], "not allowed with argument"),
    (["llc", "--dataset", "digits"], "only dln has a known learning coefficient"),
    (["llc", "--dataset", "dln", "--widths", "4,6,3"], "needs --widths and --rank"),
    (["llc", "--dataset", "dln", "--widths", "4,x", "--rank", "1"], "argument --widths"),
    (["llc", "--dataset", "dln", "--widths", "4,2,3", "--rank", "3"],
     "--rank 3 exceeds the narrowest"),
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--step-sizes", "1e-4"],
     "only used with --calibrate"),
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--draws", "all"],
     "--draws all is only for --run"),
    (["llc", "--dataset", "dln", "--widths", "4,3", "--rank", "1", "--checkpoints", "all"],
     "--checkpoints all is only for --run"),
    (["llc", "--run", "nowhere", "--widths", "4,3"], "--widths: only for --dataset dln"),
    (["llc", "--run", "nowhere"], "--run nowhere: no such directory"),
    (["llc", "--dataset", "dln", "--step-size", "-1"], "argument --step-size"),
    (["sample", "--out", "x", "--epochs", "3"],
     "--epochs 3 is not used by --sampler hmc"),
    (["sample", "--out", "x", "--sampler", "sgld"], "--sampler sgld needs --step-size"),
    (["sample", "--out", "x", "--sampler", "sgd", "--epochs", "2"],
     "needs --learning-rate"),
    (["sample", "--out", "x", "--sampler", "sgld", "--step-size", "1e-4",
      "--samples-per-cycle", "2"], "--samples-per-cycle 2 needs --cycle-length"),
    (["sample", "--out", "x", "--sampler", "sghmc", "--step-size", "1e-4",
      "--cycle-length", "10", "--thin", "2"], "--thin 2 is not used with --cycle-length"),
    (["sample", "--out", "x", "--sampler", "bogus"], "argument --sampler: invalid choice"),
    (["sample", "--out", "x", "--hidden", "16,a"], "argument --hidden"),
    (["sample", "--out", "x", "--batch-size", "0"], "argument --batch-size"),
    (["sample", "--out", "x", "--coordinator", "127.0.0.1:1"],
     "--coordinator 127.0.0.1:1 needs --num-processes and --process-id too"),
    (["mixing", "--run", "x", "--coordinator", "localhost", "--num-processes", "2",
      "--process-id", "0"], "--coordinator 'localhost' is not allowed: it must be HOST:PORT"),
    (["llc", "--run", "x", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
      "--process-id", "2"], "--process-id 2 is not allowed: it must be in [0, 1]"),
    (["--distributed", "sample", "--out", "x", "--process-id", "0"],
     "--distributed is not allowed with --coordinator, --num-processes or --process-id"),
    (["sample", "--out", "x", "--peer-timeout", "5"],
     "--peer-timeout 5 is only for a multi-process job"),
    (["sample", "--out", "x", "--peer-timeout", "0"], "argument --peer-timeout"),
])
def test_bad_input_is_refused_naming_the_flag(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err


def test_llc_run_without_command_json_points_to_python(sgd_run, tmp_path, capsys):
    out, _ = sgd_run
    copy = tmp_path / "python-run"
    shutil.copytree(out, copy)
    (copy / "command.json").unlink()
    code, _, err = run(["llc", "--run", copy], capsys)
    assert code == 2
    assert "no command.json" in err and "ws.slt.llc" in err


def test_llc_run_refuses_bad_draws(sgd_run, capsys):
    out, _ = sgd_run
    for draws, message in (("7", "7 out of range: the run has 1 draw(s)"),
                           ("first", "must be 'last', 'all' or comma-separated"),
                           ("0,-2", "-2 out of range")):
        code, _, err = run(["llc", "--run", out, "--draws", draws], capsys)
        assert code == 2 and message in err, err


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    """Two SGD members trained for 6 epochs, each kept every 2 epochs."""
    out = tmp_path_factory.mktemp("cli") / "sgd-checkpoints"
    code = main([str(a) for a in ["sample", *TINY, "--sampler", "sgd", "--chains", "2",
                                  "--epochs", "6", "--save-every", "2", "--learning-rate",
                                  "0.05", "--batch-size", "50", "--out", out]])
    assert code == 0
    return out


def test_llc_checkpoints_draw_the_curve_of_each_member_in_one_program(checkpointed_run,
                                                                     capsys):
    out = checkpointed_run
    code, stdout, err = run(["llc", "--run", out, "--checkpoints", "all", "--batch-size",
                             "50", *LLC_TINY], capsys)
    assert code == 0, err
    report = json.loads((out / "llc.json").read_text())
    assert [(r["chain"], r["epoch"]) for r in report["results"]] == [
        (c, e) for c in (0, 1) for e in (2, 4, 6)]
    assert all(np.isfinite(r["test_nll"]) and np.isfinite(r["init_loss"])
               for r in report["results"])
    assert (out / "llc_curve.png").stat().st_size > 0
    assert "epoch" in stdout.splitlines()[1] and f"wrote {out / 'llc.json'}" in stdout
    # Member 1's first checkpoint, estimated alone with its chain's key.
    post = tiny_posterior()
    trace = ws.samplers.load(out, template=post.init(jax.random.key(0)))
    assert trace.num_draws == 3
    params = jax.tree.map(lambda x: np.asarray(x[1, 0]), trace.positions)
    direct = ws.slt.llc(post, params, jax.random.fold_in(jax.random.key(0), 1), num_chains=2,
                        num_draws=20, num_burnin=10, step_size=1e-4, batch_size=50,
                        progress=False)
    result = report["results"][3]
    np.testing.assert_allclose(result["per_chain"], direct.per_chain, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result["init_loss"], direct.init_loss, rtol=1e-6)
    # The run's test-set predictions at that checkpoint give its test NLL.
    data = ws.data.load("digits", seed=0, n_train=200)
    np.testing.assert_allclose(result["test_nll"],
                               ws.diagnostics.nll(trace.predictions[1, 0], data.y_test))


def test_llc_checkpoints_of_listed_epochs_label_each_with_its_epoch(tmp_path, capsys):
    out = tmp_path / "listed"
    code, stdout, err = run(["sample", *TINY, "--sampler", "sgd", "--chains", "1",
                             "--epochs", "5", "--save-at", "1,2,5", "--learning-rate",
                             "0.05", "--batch-size", "50", "--out", out], capsys)
    assert code == 0, err
    assert "3 checkpoints per member, after epochs 1, 2, 5" in stdout
    code, stdout, err = run(["llc", "--run", out, "--checkpoints", "all", "--batch-size",
                             "50", *LLC_TINY], capsys)
    assert code == 0, err
    report = json.loads((out / "llc.json").read_text())
    assert [r["epoch"] for r in report["results"]] == [1, 2, 5]
    code, _, err = run(["sample", *TINY, "--sampler", "sgd", "--epochs", "5", "--save-at",
                        "1,3", "--learning-rate", "0.05", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "save_at must be increasing epochs from 1 to num_epochs=5" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    code, _, err = run(["sample", *TINY, "--sampler", "sgd", "--epochs", "5", "--save-every",
                        "2", "--learning-rate", "0.05", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "save_every=2 does not divide num_epochs=5" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("extra, message", [
    (["--checkpoints", "0", "--draws", "0"], "--draws 0 and --checkpoints 0: give one"),
    (["--checkpoints", "5"], "--checkpoints 5: 5 out of range: the run has 3 draw(s)"),
    (["--checkpoints", "early"], "--checkpoints must be 'last', 'all' or comma-separated"),
])
def test_llc_refuses_bad_checkpoints(checkpointed_run, capsys, extra, message):
    code, _, err = run(["llc", "--run", checkpointed_run, *extra], capsys)
    assert code == 2 and message in err, err


def test_resuming_with_another_posterior_is_refused(sgd_run, capsys):
    out, argv = sgd_run
    before = (out / "command.json").read_text()
    code, _, err = run([*argv, "--prior-variance", "0.5"], capsys)
    assert code == 2
    assert "prior_variance (--prior-variance): stored 0.2, requested 0.5" in err
    assert (out / "command.json").read_text() == before


def test_sample_refuses_an_out_dir_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run(["sample", *TINY, "--out", tmp_path], capsys)
    assert code == 2 and "neither empty nor a run directory" in err
    assert not (tmp_path / "command.json").exists()


def _readme_commands():
    """The command lines of the README section on `weightspace llc`."""
    text = README.read_text()
    section = text.split("## Local learning coefficients from the command line", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [shlex.split(line) for block in blocks for line in block.splitlines()
            if line.startswith("weightspace ")]


# Smaller sizes appended to the README's command lines (argparse keeps the last value).
_SMALLER = {"sample": ["--n-train", "200", "--epochs", "2", "--chains", "2"],
            "llc": ["--num-draws", "20", "--burnin", "10", "--chains", "2"]}
_SMALLER_DLN = ["--n-train", "2000", "--num-draws", "50", "--burnin", "20"]


def test_readme_commands_run_at_a_smaller_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands()
    assert [c[:2] for c in commands] == [["weightspace", "sample"], ["weightspace", "llc"],
                                         ["weightspace", "llc"], ["weightspace", "sample"],
                                         ["weightspace", "llc"], ["weightspace", "llc"]]
    outputs = []
    for command in commands:
        argv = command[1:] + _SMALLER[command[1]] + ["--no-progress"]
        if "--dataset" in argv and "dln" in argv:
            argv += _SMALLER_DLN
        if "--save-every" in argv:  # checkpoints of the 2 epochs left
            argv += ["--save-every", "1"]
        code, stdout, err = run(argv, capsys)
        assert code == 0, (argv, err)
        outputs.append(stdout)
    assert "theory" in outputs[2] and "relative error" in outputs[2]
    results = json.loads((tmp_path / "runs" / "digits-sgd" / "llc.json").read_text())
    assert len(results["results"]) == 2  # one per member
    curve = json.loads((tmp_path / "runs" / "digits-curve" / "llc.json").read_text())
    assert [(r["chain"], r["epoch"]) for r in curve["results"]] == [
        (c, e) for c in (0, 1) for e in (1, 2)]
    assert (tmp_path / "runs" / "digits-curve" / "llc_curve.png").is_file()
    dln_curve = json.loads((tmp_path / "runs" / "dln-curve" / "llc.json").read_text())
    assert len(dln_curve["results"]) == 40 and "vs theory" in outputs[5]
    assert (tmp_path / "runs" / "dln-curve" / "llc_curve.png").is_file()


def test_command_json_is_written_before_sampling_starts(tmp_path, monkeypatch, capsys):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    # the command runs samplers through the registry: kill its sgd
    monkeypatch.setitem(ws.samplers.SAMPLERS, "sgd",
                        dataclasses.replace(ws.samplers.SAMPLERS["sgd"], sample=killed))
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        main([*map(str, ["sample", *TINY, "--sampler", "sgd", "--epochs", "1",
                         "--learning-rate", "0.1", "--out", out])])
    assert json.loads((out / "command.json").read_text())["sampler"] == "sgd"
    # The run store then creates its run directory next to it.
    from weightspace.samplers.storage import RunStore

    with RunStore(out, {"sampler": "sgd"}, {"x": ((2,), "float32")}) as store:
        assert store.num_draws == 0
    assert (out / "config.json").is_file()
