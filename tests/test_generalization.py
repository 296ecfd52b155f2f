"""`weightspace llc-vs-generalization`: the table's standard errors and gaps are
the hand-computed ones; the correlations are scipy's on the finite points, None
below three, per method only where a method has three positions; a position
without an LLC stays in the table, out of the correlations, with a note; a
directory source gets the figure and NaN-free JSON, a dict source nothing; the
command prints the table; bad input is refused naming the argument."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
from conftest import run_command
from scipy import stats
from weightspace.experiments.generalization import (
    FIGURE,
    JSON,
    GeneralizationError,
    LLCGeneralization,
    llc_vs_generalization,
)


def position(method, chain, llc, train_nll, test_nll, *, draw=0, llc_std=0.5,
             per_chain=(1.0, 2.0, 3.0, 4.0), flags=(), accuracy=0.9):
    """One entry of results['llc']['positions'] as compare writes it."""
    return {"method": method, "chain": chain, "draw": draw, "llc": llc, "llc_std": llc_std,
            "per_chain": list(per_chain), "init_loss": train_nll, "nbeta": 100.0,
            "flags": list(flags),
            "test": {"accuracy": accuracy, "nll": test_nll, "ece": 0.05, "brier": 0.1}}


def results(positions, *, llc_notes=(), stages=None):
    """A results dict of `weightspace compare` around these LLC positions."""
    return {"format": 1, "preset": {"name": "quick"}, "smoke": False, "seed": 0,
            "data": {"name": "digits", "num_train": 1437, "num_test": 360,
                     "num_classes": 10},
            "num_params": 1234, "stages": stages or {"llc": {"status": "ok"}},
            "llc": {"settings": {"num_chains": 4}, "positions": list(positions),
                    "by_method": {}, "notes": list(llc_notes)}}


def monotone():
    """SGD, four ensemble members whose test NLL and gap grow with the LLC, and
    two HMC draws."""
    return [position("sgd", 0, 9.0, 0.05, 0.9),
            *(position("deep_ensemble", m, 2.0 + m, 0.1, 0.2 + 0.1 * m ** 2)
              for m in range(4)),
            position("hmc", 0, 6.0, 0.3, 0.35, draw=4),
            position("hmc", 1, 7.0, 0.25, 0.4, draw=4)]


def write(directory, obj):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(obj))
    return directory


def strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"{token} in the JSON")
    return json.loads(text, parse_constant=refuse)


def test_rows_hold_the_standard_error_and_gap_computed_by_hand():
    entry = position("hmc", 1, 12.5, 0.21, 0.34, draw=7, llc_std=0.9,
                     per_chain=(11.0, None, 13.0, 14.0), flags=["below init"],
                     accuracy=0.87)
    result = llc_vs_generalization(results([entry]))
    assert isinstance(result, LLCGeneralization) and result.figure is None
    (row,) = map(dict, result.rows)
    assert row.pop("flags") == ["below init"]
    assert row == pytest.approx({
        "method": "hmc", "chain": 1, "draw": 7, "llc": 12.5, "llc_std": 0.9,
        "llc_se": 0.9 / math.sqrt(3), "train_nll": 0.21, "test_nll": 0.34,
        "gap": 0.34 - 0.21, "test_accuracy": 0.87})
    lines = result.table().splitlines()
    assert lines[0].split()[:4] == ["method", "chain", "draw", "LLC"]
    assert lines[1].split() == ["hmc", "1", "7", "12.500", "0.900", "0.520", "0.2100",
                                "0.3400", "0.1300", "0.8700", "below", "init"]
    assert lines[2].split()[:4] == ["hmc", "mean", "n=1", "12.500"]


def test_correlations_equal_scipy_and_are_one_on_a_monotone_set():
    rows = monotone()
    result = llc_vs_generalization(results(rows))
    llc = np.array([p["llc"] for p in rows])
    test_nll = np.array([p["test"]["nll"] for p in rows])
    gap = test_nll - np.array([p["init_loss"] for p in rows])
    overall = result.correlations["all"]
    assert overall["llc_vs_test_nll"] == pytest.approx({
        "n": 7, "spearman": stats.spearmanr(llc, test_nll).statistic,
        "pearson": np.corrcoef(llc, test_nll)[0, 1]})
    assert overall["llc_vs_gap"] == pytest.approx({
        "n": 7, "spearman": stats.spearmanr(llc, gap).statistic,
        "pearson": np.corrcoef(llc, gap)[0, 1]})
    members = slice(1, 5)
    (ensemble,) = result.correlations["by_method"].values()
    assert list(result.correlations["by_method"]) == ["deep_ensemble"]
    assert ensemble["llc_vs_test_nll"] == pytest.approx({
        "n": 4, "spearman": 1.0,
        "pearson": np.corrcoef(llc[members], test_nll[members])[0, 1]})
    assert ensemble["llc_vs_gap"] == pytest.approx({
        "n": 4, "spearman": 1.0, "pearson": np.corrcoef(llc[members], gap[members])[0, 1]})
    assert any("sgd" in n and "hmc" in n and "fewer than 3" in n for n in result.notes)


def test_correlations_are_none_below_three_points_and_for_a_constant_side():
    two = llc_vs_generalization(results([position("hmc", c, 1.0 + c, 0.1, 0.2 + c)
                                         for c in range(2)]))
    assert two.correlations == {"all": {
        pair: {"n": 2, "spearman": None, "pearson": None}
        for pair in ("llc_vs_test_nll", "llc_vs_gap")}, "by_method": {}}
    constant = llc_vs_generalization(results([position("hmc", c, 5.0, 0.1, 0.2 + c)
                                              for c in range(4)]))
    assert constant.correlations["all"]["llc_vs_test_nll"] == {
        "n": 4, "spearman": None, "pearson": None}


def test_a_position_without_llc_is_in_the_table_out_of_correlations_and_noted():
    rows = [*monotone(), position("hmc", 2, None, 0.3, 5.0, per_chain=(None,) * 4,
                                  llc_std=None)]
    result = llc_vs_generalization(results(rows, llc_notes=["sgld skipped: no LLC there"]))
    assert len(result.rows) == 8
    last = result.rows[-1]
    assert math.isnan(last["llc"]) and math.isnan(last["llc_se"])
    assert last["gap"] == pytest.approx(4.7)
    assert result.table().count("\nhmc ") == 4  # three positions and the mean
    # The null position (test NLL 5.0, far above the rest) changes nothing.
    assert result.correlations["all"] == llc_vs_generalization(
        results(monotone())).correlations["all"]
    assert result.correlations["by_method"]["hmc"]["llc_vs_test_nll"]["n"] == 2
    assert any("1 of 8 positions" in n and "hmc chain 2 draw 0" in n for n in result.notes)
    assert "compare: sgld skipped: no LLC there" in result.notes
    assert strict_json(json.dumps(result.to_dict()))["rows"][-1]["llc"] is None


def test_a_directory_source_gets_the_figure_and_json(tmp_path):
    out = write(tmp_path / "compare", results(
        [*monotone(), position("hmc", 2, None, 0.3, 0.5, llc_std=None)]))
    result = llc_vs_generalization(out)
    assert result.figure == str(out / FIGURE)
    png = (out / FIGURE).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    stored = strict_json((out / JSON).read_text())
    assert stored["rows"][-1]["llc"] is None
    assert stored["correlations"] == strict_json(json.dumps(result.to_dict()))["correlations"]
    assert stored["preset"] == "quick" and stored["figure"] == str(out / FIGURE)
    assert not list(out.glob("*.tmp"))


def test_a_dict_source_writes_nothing_and_out_or_no_figure_choose_what(tmp_path):
    assert llc_vs_generalization(results(monotone())).figure is None
    assert not list(tmp_path.iterdir())
    out = tmp_path / "elsewhere"
    result = llc_vs_generalization(results(monotone()), out=out, figure=False)
    assert result.figure is None and sorted(p.name for p in out.iterdir()) == [JSON]


def test_only_process_zero_writes(tmp_path, monkeypatch):
    out = write(tmp_path / "compare", results(monotone()))
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert llc_vs_generalization(out).figure is None
    assert [p.name for p in out.iterdir()] == ["results.json"]


def test_bad_sources_are_refused_naming_the_argument(tmp_path):
    with pytest.raises(TypeError, match="source must be .* got int source=3"):
        llc_vs_generalization(3)
    with pytest.raises(GeneralizationError, match="source=.*missing.*no such directory"):
        llc_vs_generalization(tmp_path / "missing")
    with pytest.raises(GeneralizationError, match="holds no results.json"):
        llc_vs_generalization(tmp_path)
    without = results(monotone())
    del without["llc"]
    with pytest.raises(GeneralizationError, match="source .a results dict.: .*no 'llc' entry"):
        llc_vs_generalization(without)
    with pytest.raises(GeneralizationError, match=r"positions'\] is empty"):
        llc_vs_generalization(results([]))
    with pytest.raises(GeneralizationError, match=r"positions'\]\[0\] must hold"):
        llc_vs_generalization(results([{"method": "sgd"}]))
    with pytest.raises(TypeError, match="out must be"):
        llc_vs_generalization(results(monotone()), out=5)


def test_a_null_llc_entry_points_to_the_llc_stage_status():
    failed = results(monotone(), stages={"llc": {
        "status": "failed", "error": {"type": "RuntimeError", "message": "boom"}}})
    failed["llc"] = None
    with pytest.raises(GeneralizationError, match=(
            r"llc stage of `weightspace compare` did not finish "
            r"\(results\['stages'\]\['llc'\]\['status'\] is 'failed': RuntimeError: boom\)")):
        llc_vs_generalization(failed)
    failed["stages"] = {}
    with pytest.raises(GeneralizationError, match="has no llc record"):
        llc_vs_generalization(failed)


def cli(argv, capsys):
    """(exit status, stdout, stderr) of `weightspace llc-vs-generalization ARGV`."""
    return run_command(["llc-vs-generalization", *argv], capsys)


def test_the_command_prints_the_table_and_correlations(tmp_path, capsys):
    out = write(tmp_path / "compare", results(monotone()))
    code, stdout, stderr = cli(["--out", out], capsys)
    assert code == 0, stderr
    assert "deep_ensemble      3     0" in stdout and "Spearman" in stdout
    assert f"wrote {out / FIGURE}, {out / JSON}" in stdout
    code, stdout, _ = cli(["--out", out, "--no-figure"], capsys)
    assert code == 0 and f"wrote {out / JSON}" in stdout


def test_the_command_names_out_on_bad_input(tmp_path, capsys):
    code, _, stderr = cli([], capsys)
    assert code == 2 and "--out" in stderr
    code, _, stderr = cli(["--out", tmp_path / "missing"], capsys)
    assert code == 2 and f"--out {tmp_path / 'missing'}: no such directory" in stderr
    code, _, stderr = cli(["--out", tmp_path], capsys)
    assert code == 2 and f"--out {tmp_path} holds no results.json" in stderr
    unfinished = results(monotone(), stages={"llc": {"status": "skipped",
                                                     "reason": "needs hmc"}})
    unfinished["llc"] = None
    out = write(tmp_path / "compare", unfinished)
    code, _, stderr = cli(["--out", out], capsys)
    assert code == 2 and f"--out {out}: results['llc'] is null" in stderr
    assert "'skipped': needs hmc" in stderr
