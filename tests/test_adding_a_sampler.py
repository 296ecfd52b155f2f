"""The README's "Adding a sampler" example runs: a MALA written against the
sampler protocol goes through the driver with a run directory, resumes to the
draws it already had, counts its gradients, samples its target correctly,
registers by name for the command line, and registers as a method that
`compare` runs and reports beside the built-in ones."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import weightspace as ws
from conftest import run_command

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code() -> list[str]:
    text = README.read_text()
    start = text.index("## Adding a sampler")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    try:
        for block in _section_code():
            exec(compile(block, str(README), "exec"), namespace)
        yield namespace
    finally:
        ws.samplers.SAMPLERS.pop("mala", None)
        ws.experiments.methods.unregister("mala")


def test_the_sampler_fits_in_sixty_lines():
    code = _section_code()[0]
    assert len(code[:code.index("def banana")].splitlines()) < 60


def test_mala_through_the_driver_resumes_counts_and_samples_the_banana(example, tmp_path):
    more = example["more"]
    assert more.num_chains == 4 and more.num_draws == 400
    assert Path(more.info["run_dir"]).name == "mala"
    np.testing.assert_array_equal(more.stats["grad_evals"], 1.0)
    # the first gradient of each chain and its 50 warmup steps
    np.testing.assert_array_equal(more.info["warmup_grad_evals"], 51.0)
    loaded = ws.samplers.load(tmp_path / "runs" / "mala")
    np.testing.assert_array_equal(loaded.positions["x"], more.positions["x"])
    assert loaded.info["config"]["sampler"] == "mala"
    # banana: x ~ N(0, 1), y | x ~ N(x^2 / 2, 1), so E[x] = 0, E[y] = 1/2, Var x = 1
    x = np.asarray(more.positions["x"], np.float64)
    y = np.asarray(more.positions["y"], np.float64)
    ess_x, ess_y = (float(ws.diagnostics.ess(v)) for v in (x, y))
    assert abs(x.mean()) < 4 / np.sqrt(ess_x)
    assert abs(y.mean() - 0.5) < 4 * np.sqrt(1.5 / ess_y)  # Var y = 1 + Var(x^2)/4
    s = ws.diagnostics.summary(more)
    assert s.cost["total_grad_evals"] == 4 * 51 + 4 * 400
    assert "median per 1k gradients" in str(s)


def test_the_registered_sampler_is_offered_by_name(example):
    entry = ws.samplers.SAMPLERS["mala"]
    assert entry.sample is example["mala"]
    assert entry.keyword_arguments({"samples": 10, "warmup": 5, "thin": 1,
                                    "step_size": 0.1}, set()) == {
        "num_samples": 10, "num_warmup": 5, "thin": 1, "step_size": 0.1}


def test_the_command_line_runs_a_registered_sampler_and_resumes(example, tmp_path, capsys):
    out = tmp_path / "cli-mala"
    argv = ["sample", "--dataset", "digits", "--n-train", "200", "--model", "mlp",
            "--hidden", "16", "--no-progress", "--sampler", "mala", "--step-size", "1e-4",
            "--samples", "4", "--warmup", "2", "--chains", "2", "--out", out]
    code, stdout, _ = run_command(argv, capsys)
    assert code == 0, stdout
    assert "cost:" in stdout and "full-batch-equivalent gradient evaluations" in stdout
    first = ws.samplers.load(out)
    assert first.info["config"]["sampler"] == "mala" and first.num_draws == 4
    argv[argv.index("--samples") + 1] = "6"
    code, _, _ = run_command(argv, capsys)
    assert code == 0
    again = ws.samplers.load(out)
    assert again.num_draws == 6
    np.testing.assert_array_equal(again.positions["layers"]["0"]["kernel"][:, :4],
                                  first.positions["layers"]["0"]["kernel"])
    # a flag mala does not take is refused, naming the samplers that take it
    code, _, err = run_command([*argv[:-2], "--epochs", "3", "--out", out], capsys)
    assert code != 0 and "--epochs 3 is not used by --sampler mala" in err


def test_compare_runs_the_registered_method_and_reports_it(example, tmp_path, capsys):
    from weightspace.experiments.comparison import STAGES, format_table, settings

    assert STAGES.index("mala") == STAGES.index("mile") + 1 < STAGES.index("rhat")
    # its key comes after the built-in stages' keys, which keep theirs
    assert [settings.key_number(s) for s in STAGES] == [0, 1, 2, 3, 4, 5, 10, 11, 12, 6, 7, 8,
                                                        9]
    assert "mala.step_size" in ws.experiments.presets.fields()
    out = tmp_path / "compare"
    code, stdout, err = run_command(
        ["compare", "--preset", "quick", "--smoke", "--out", out, "--no-progress",
         "--set", "mala.step_size=1e-6"], capsys)
    assert code == 0, stdout + err
    results = json.loads((out / "results.json").read_text())
    assert results["preset"]["mala"] == {"num_chains": 2, "num_samples": 2, "num_warmup": 1,
                                         "step_size": 1e-6}
    record = results["stages"]["mala"]
    assert record["status"] == "ok"
    assert record["result"]["run_dir"] == "runs/mala" and record["result"]["num_draws"] == 2
    # the first gradient and one warmup step per chain, then one per draw
    assert record["result"]["total_grad_evals"] == 2 * 2 + 2 * 2
    mala = results["methods"]["mala"]
    assert mala["status"] == "ok" and mala["num_models"] == 4
    for metric in ("accuracy", "nll", "ece", "brier", "agreement_vs_hmc"):
        assert np.isfinite(mala[metric]), metric
    assert "mala" in results["stages"]["metrics"]["result"]["nll_vs_samples"]
    assert any(line.startswith("mala ") for line in format_table(results).splitlines())
    assert "| mala | ok |" in (out / "report.md").read_text()
    loaded = ws.samplers.load(out / "runs" / "mala")
    assert loaded.info["config"]["sampler"] == "mala"
