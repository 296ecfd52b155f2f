"""The mixing study: chains that are relabelled copies of each other look mixed in
function space and after alignment but not in raw weight space, and the verdict
says so from the numbers; a symmetry alignment cannot undo reads as different
basins; i.i.d. chains look mixed everywhere; the length grid is log-spaced from
4 to all draws and the longest length reproduces `ws.diagnostics.rhat`; the
command writes its files from a run of `weightspace sample`; bad input is named."""

import json
import re
import shutil

import jax
import numpy as np
import pytest
from conftest import run_command
from weightspace.experiments.mixing import (
    MixingResult,
    length_grid,
    mixing,
    plot_mixing,
)
from weightspace.samplers.trace import Trace

import weightspace as ws
from weightspace.cli import main

NETWORK = ws.models.MLP((8,), 3)
NUM_DRAWS, NOISE = 100, 0.05


def _mlp_params(rng):
    """Params of NETWORK on 4 inputs, named as a loaded run names them."""
    return {"layers": {"0": {"kernel": rng.normal(size=(4, 8)), "bias": rng.normal(size=8)},
                       "1": {"kernel": rng.normal(size=(8, 3)), "bias": rng.normal(size=3)}}}


def _probs(params, x):
    """NETWORK's class probabilities (relu hidden layer, softmax output)."""
    h = np.maximum(x @ params["layers"]["0"]["kernel"] + params["layers"]["0"]["bias"], 0)
    logits = h @ params["layers"]["1"]["kernel"] + params["layers"]["1"]["bias"]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _relabel(params, perm):
    """The same function with hidden unit j taken from unit perm[j]."""
    l0, l1 = params["layers"]["0"], params["layers"]["1"]
    return {"layers": {"0": {"kernel": l0["kernel"][:, perm], "bias": l0["bias"][perm]},
                       "1": {"kernel": l1["kernel"][perm], "bias": l1["bias"]}}}


def _rescale(params, scale):
    """The same function (relu(a z) = a relu(z), a > 0) with hidden units'
    incoming weights times `scale` and outgoing ones divided by it: a symmetry
    that is not a permutation, so alignment cannot undo it."""
    l0, l1 = params["layers"]["0"], params["layers"]["1"]
    return {"layers": {"0": {"kernel": l0["kernel"] * scale, "bias": l0["bias"] * scale},
                       "1": {"kernel": l1["kernel"] / scale, "bias": l1["bias"]}}}


def _symmetric_trace(symmetries, seed=0):
    """Chain c: draws w0 + noise (the same distribution in every chain), each
    mapped through symmetries[c], a function-preserving change of weights. The
    chains then sample the same functions with different weights."""
    rng = np.random.default_rng(seed)
    w0 = _mlp_params(rng)
    x = rng.normal(size=(10, 4))
    chains, preds = [], []
    for symmetry in symmetries:
        draws = [symmetry(jax.tree.map(lambda w: w + NOISE * rng.normal(size=w.shape), w0))
                 for _ in range(NUM_DRAWS)]
        chains.append(draws)
        preds.append([_probs(d, x) for d in draws])
    positions = jax.tree.map(lambda *xs: np.stack(xs).reshape(len(chains), NUM_DRAWS,
                                                              *np.shape(xs[0])),
                             *[d for chain in chains for d in chain])
    return Trace(positions, {}, np.asarray(preds))


def _verdict_fraction(verdict: str, what: str) -> float:
    """The percentage the verdict's first sentence gives for `what`, as a fraction."""
    match = re.search(r"([\d.]+)% " + re.escape(what), verdict)
    assert match, (what, verdict)
    return float(match.group(1)) / 100


@pytest.fixture(scope="module")
def relabelled():
    """Three chains, chain c the hidden units of chain 0 rolled by c (every unit moves)."""
    trace = _symmetric_trace([lambda w, c=c: _relabel(w, np.roll(np.arange(8), c))
                              for c in range(3)])
    return trace, mixing(trace, NETWORK, lengths=(10, 25, 50, NUM_DRAWS))


@pytest.fixture(scope="module")
def iid(tmp_path_factory):
    rng = np.random.default_rng(1)
    trace = Trace({"w": rng.normal(size=(4, 200, 30))}, {},
                  rng.normal(size=(4, 200, 10, 3)).astype(np.float32))
    out = tmp_path_factory.mktemp("mixing")
    return trace, mixing(trace, out=out), out


def test_relabelled_chains_are_mixed_in_function_space_and_aligned_but_not_raw(relabelled):
    trace, result = relabelled
    assert result.spaces == ("weights", "weights (aligned)", "predictions")
    # Every chain draws the same functions, i.i.d.: with 3 chains x 100 draws rank
    # R-hat of i.i.d. draws exceeds 1.1 with probability far below 1e-3 per
    # variable (max 1.056 over 20,000 simulated variables), so all 30 predictions
    # and all 67 aligned weights are below 1.1.
    assert result.fraction_below("predictions")[-1] == 1.0
    assert result.fraction_below("weights (aligned)")[-1] == 1.0
    # Raw, every hidden unit's weights sit at another unit's values in each
    # chain: chain means far apart against a within-chain sd of 0.05, so rank
    # R-hat is near its bound for separated chains; only the 3 output biases,
    # which no relabelling moves, are below 1.1.
    assert result.fraction_below("weights")[-1] == pytest.approx(3 / 67)
    assert result.quantile("weights", 0.5)[-1] > 1.5
    verdict = result.verdict
    assert "At 100 draws per chain (3 chains)" in verdict
    assert "of predictions but" in verdict
    assert _verdict_fraction(verdict, "of predictions") == 1.0
    assert _verdict_fraction(verdict, "of weights") == pytest.approx(3 / 67, abs=5e-4)
    assert _verdict_fraction(verdict, "aligned") == 1.0
    assert "not mixed as sampled but are after permutation alignment" in verdict
    assert "relabelled hidden units" in verdict
    # Without a network the same numbers cannot tell relabelling from other basins.
    unaligned = mixing(trace, lengths=(NUM_DRAWS,))
    assert unaligned.spaces == ("weights", "predictions")
    assert "without permutation alignment it is open whether" in unaligned.verdict


def test_a_symmetry_alignment_cannot_undo_reads_as_different_basins():
    # Chain 1 rescales hidden units (same functions); alignment only permutes.
    trace = _symmetric_trace([lambda w: w, lambda w: _rescale(w, 2.0)], seed=2)
    result = mixing(trace, NETWORK, lengths=(NUM_DRAWS,))
    assert result.fraction_below("predictions")[-1] == 1.0
    assert result.fraction_below("weights (aligned)")[-1] < 0.2
    assert "even after permutation alignment" in result.verdict
    assert "different basins" in result.verdict


def test_iid_chains_look_mixed_everywhere(iid):
    _, result, _ = iid
    assert isinstance(result, MixingResult)
    assert result.spaces == ("weights", "predictions")
    for space in result.spaces:
        # 4 chains x 200 i.i.d. draws: rank R-hat < 1.1 for every variable (see
        # above); < 1.01 for 99.2% of 20,000 simulated variables, so more than 3
        # of 30 above 1.01 has probability about C(30, 4) 0.008^4 ~ 1e-4.
        assert result.fraction_below(space, 1.1)[-1] == 1.0
        assert result.fraction_below(space, 1.01)[-1] >= 0.9
        assert result.quantile(space, 0.99)[-1] < 1.05
    assert "look mixed in both function space and weight space" in result.verdict
    assert any("not permutation-aligned" in note for note in result.notes)


def test_chains_apart_in_function_space_are_called_unmixed(iid):
    trace, _, _ = iid
    shift = np.array([5.0, 0, 0, 0])[:, None, None]
    apart = Trace({"w": trace.positions["w"] + shift}, {},
                  trace.predictions + shift[..., None])
    result = mixing(apart, lengths=(200,))
    assert result.fraction_below("predictions")[-1] == 0.0
    assert result.fraction_below("weights")[-1] == 0.0
    assert "0.0% of predictions and 0.0% of weights" in result.verdict
    assert "not mixed even in function space" in result.verdict


def test_default_lengths_are_log_spaced_from_4_to_all_draws_and_end_at_rhat(iid, relabelled):
    trace, result, _ = iid
    lengths = np.array(result.lengths)
    assert result.lengths == length_grid(200) == (4, 7, 12, 21, 37, 65, 114, 200)
    assert np.all(np.diff(lengths) > 0)
    ratios = lengths[1:] / lengths[:-1]
    assert np.allclose(ratios, (200 / 4) ** (1 / 7), rtol=0.15)
    assert length_grid(10) == (4, 5, 6, 7, 8, 9, 10)  # fewer than 8 when draws are few
    assert length_grid(4) == (4,)
    # The longest length is the whole trace: the values are ws.diagnostics.rhat's.
    np.testing.assert_array_equal(result.rhat_values["weights"]["w"],
                                  ws.diagnostics.rhat(trace.positions)["w"])
    np.testing.assert_array_equal(result.rhat_values["predictions"],
                                  ws.diagnostics.rhat(trace.predictions))
    # A shorter length summarizes R-hat of the first draws of every chain.
    prefix = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(trace.predictions[:, :21]))
    assert result.fraction_below("predictions", 1.1)[3] == prefix["fraction_below"][1.1]
    assert result.quantile("predictions", 0.9)[3] == prefix["quantiles"][0.9]
    # Aligned weights are those of align_permutations on the full chains.
    trace, result = relabelled
    aligned = ws.diagnostics.align_permutations(trace.positions, NETWORK)
    jax.tree.map(np.testing.assert_array_equal, result.rhat_values["weights (aligned)"],
                 ws.diagnostics.rhat(aligned))


def test_files_hold_the_numbers(iid):
    _, result, out = iid
    assert result.paths == {"figure": str(out / "mixing.png"), "json": str(out / "mixing.json")}
    assert (out / "mixing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "mixing.json").read_text())
    assert stored["lengths"] == list(result.lengths)
    assert stored["verdict"] == result.verdict
    assert stored["curves"]["weights"]["fraction_below"]["1.1"] == list(
        result.fraction_below("weights", 1.1))
    assert stored["curves"]["predictions"]["quantiles"]["0.5"] == list(
        result.quantile("predictions", 0.5))
    table = str(result)
    assert table.splitlines()[1].split()[:3] == ["draws", "space", "n"]
    assert result.verdict in table
    fig = plot_mixing(result)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"


def test_bad_input_is_named(iid):
    trace, _, _ = iid
    with pytest.raises(ValueError, match=r"lengths must be .* from 4 .* got lengths=\[2, 10\]"):
        mixing(trace, lengths=[2, 10])
    with pytest.raises(ValueError, match="201 out of range"):
        mixing(trace, lengths=[10, 201])
    with pytest.raises(TypeError, match="lengths="):
        mixing(trace, lengths=10)
    with pytest.raises(ValueError, match="trace.predictions is None"):
        mixing(Trace(trace.positions, {}), lengths=[10])
    short = Trace({"w": trace.positions["w"][:, :3]}, {}, trace.predictions[:, :3])
    with pytest.raises(ValueError, match="2 chains of 4 draws; got 4 chain.s. of 3 draw"):
        mixing(short)
    with pytest.raises(ValueError, match="predictions must be .chain, draw"):
        mixing(Trace(trace.positions, {}, trace.predictions[:2]))
    with pytest.raises(ValueError, match="method="):
        mixing(trace, method="arviz")
    with pytest.raises(TypeError, match="MixingResult"):
        plot_mixing({"lengths": [4]})


# ------------------------------------------------------------------ command line

def _mixing_command(argv, capsys):
    """(exit status, stdout, stderr) of `weightspace mixing ARGV`."""
    return run_command(["mixing", *argv], capsys)


@pytest.fixture(scope="module")
def hmc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixing-cli") / "hmc"
    code = main([str(a) for a in [
        "sample", "--dataset", "digits", "--n-train", "200", "--model", "mlp", "--hidden",
        "16", "--chains", "2", "--samples", "8", "--warmup", "0", "--warmup-mode", "fixed",
        "--step-size", "1e-3", "--trajectory-length", "3e-3", "--no-progress", "--out", out]])
    assert code == 0
    return out


def test_command_writes_figure_and_json_and_prints_table_and_verdict(hmc_run, tmp_path,
                                                                     capsys):
    code, out, err = _mixing_command(["--run", hmc_run, "--out", tmp_path, "--lengths",
                                      "4,8"], capsys)
    assert code == 0, err
    assert (tmp_path / "mixing.png").is_file()
    stored = json.loads((tmp_path / "mixing.json").read_text())
    assert stored["lengths"] == [4, 8]
    assert list(stored["curves"]) == ["weights", "weights (aligned)", "predictions"]
    assert stored["curves"]["weights"]["count"] == 64 * 16 + 16 + 16 * 10 + 10
    assert stored["curves"]["predictions"]["count"] == 360 * 10
    assert "draws  space" in out and "weights (aligned)" in out
    assert "At 8 draws per chain (2 chains)" in out
    assert stored["verdict"] in out
    assert f"wrote {tmp_path / 'mixing.png'}, {tmp_path / 'mixing.json'}" in out


def test_command_without_command_json_skips_alignment_with_a_note(hmc_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(hmc_run, run)
    (run / "command.json").unlink()
    code, out, err = _mixing_command(["--run", run, "--lengths", "8"], capsys)
    assert code == 0, err
    assert "no command.json" in out and "alignment is skipped" in out
    stored = json.loads((run / "mixing.json").read_text())  # --out defaults to the run
    assert list(stored["curves"]) == ["weights", "predictions"]


@pytest.mark.parametrize("argv, message", [
    (["--lengths", "2,8"], "--lengths must be .* from 4"),
    (["--lengths", "4,9"], "9 out of range"),
    (["--lengths", "x"], "--lengths: must be comma-separated integers"),
])
def test_command_names_bad_lengths(hmc_run, argv, message, capsys):
    code, _, err = _mixing_command(["--run", hmc_run, *argv], capsys)
    assert code == 2
    assert re.search(message, err), err


def test_command_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = _mixing_command(["--run", tmp_path], capsys)
    assert code == 2 and "not a run directory" in err
