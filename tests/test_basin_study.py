"""The basin study (ws.experiments.basins, `weightspace basins`): rows, verdict,
files and bad input."""

import json
import subprocess
import sys

import pytest

import weightspace as ws
from weightspace.cli import main
from weightspace.experiments.basins import BasinSettings

SMALL = BasinSettings(families=("quartic",), num_factors={"quartic": 20}, barriers=(1.0, 16.0),
                      samplers=("hmc", "replica_exchange"), num_chains=4, num_warmup=200,
                      num_samples=300, rungs=16, replica_thin=2)


def test_the_study_finds_hmc_weighting_by_start_at_a_high_barrier_and_writes_its_files(
        tmp_path):
    study = ws.experiments.basins(SMALL, tmp_path, progress=None)
    rows = {(r["barrier"], r["sampler"]): r for r in study.rows}
    assert len(rows) == 4
    exact = ws.slt.basin_target("quartic", barrier=16.0).shares[0]
    # From the prior, HMC falls into the basins by their prior share and stays.
    stuck = rows[16.0, "hmc"]
    assert stuck["exact"][0] == pytest.approx(exact)
    assert stuck["crossings"] == 0 and stuck["weighted_by_start"]
    assert abs(stuck["error"][0]) > 0.05
    # At a barrier of 1, HMC crosses; replica exchange crosses at 16.
    assert rows[1.0, "hmc"]["crossings"] > 0
    assert rows[16.0, "replica_exchange"]["crossings"] > 0
    for r in study.rows:
        assert r["grad_evals"] > 0 and 0.0 <= r["rhat_flagged"] <= 1.0
    assert "HMC: weights basins by mass at barrier(s) 1; not at 16" in study.verdict
    saved = json.loads((tmp_path / "basins.json").read_text())
    assert saved["rows"][0]["sampler"] == "hmc" and saved["verdict"] == study.verdict
    curve = saved["exact_curves"]["quartic"]
    assert curve["degenerate_share"] == sorted(curve["degenerate_share"])  # grows with n
    assert (tmp_path / "basins.png").stat().st_size > 0
    assert "| quartic | 16 | HMC |" in (tmp_path / "basins.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--samplers", "hmc,nuts"], "--samplers: must be comma-separated names from"),
    (["--barriers", "2,-1"], "--barriers: must be comma-separated finite numbers > 0"),
    (["--families", "cubic"], "--families: must be comma-separated names from"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit, before any work
        main(["basins", "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "basins.json").exists()


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["basins", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"weightspace basins: error: --out {tmp_path / 'file'} exists and is not " \
                  f"a directory"


def test_bad_arguments_in_python_are_named():
    with pytest.raises(ValueError, match="samplers"):
        ws.experiments.basins("quick", samplers=["nuts"])
    with pytest.raises(ValueError, match="preset"):
        ws.experiments.basins("huge")
    with pytest.raises(ValueError, match="barriers"):
        ws.experiments.basins("quick", barriers=[0.0])


def test_the_installed_command_prints_bad_input_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "weightspace.cli", "basins", "--out",
                          str(tmp_path), "--samplers", "nuts"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]  # argparse prints the usage line first
    assert last.startswith("weightspace basins: error: argument --samplers: must be")
