"""ws.diagnostics.summary: R-hat and ESS per space and per-chain stats, equal to
the functions they summarize."""

import json
import types

import jax
import numpy as np
import pytest

import weightspace as ws


def _trace(num_chains=3, num_draws=60, seed=0):
    rng = np.random.default_rng(seed)
    positions = {"layers": {0: {"kernel": rng.normal(size=(num_chains, num_draws, 4, 5)),
                                "bias": rng.normal(size=(num_chains, num_draws, 5))}}}
    positions["layers"][0]["bias"][-1] += 3.0  # one chain elsewhere: R-hat >> 1 there
    stats = {"accept_prob": rng.uniform(size=(num_chains, num_draws)),
             "is_divergent": rng.uniform(size=(num_chains, num_draws)) < 0.1,
             "logdensity": rng.normal(size=(num_chains, num_draws)),
             "step_size": rng.uniform(size=(num_chains, num_draws))}
    predictions = rng.dirichlet(np.ones(3), size=(num_chains, num_draws, 7))
    return ws.samplers.Trace(positions, stats, predictions)


def test_rhat_and_ess_rows_equal_the_summarized_functions():
    trace = _trace()
    s = ws.diagnostics.summary(trace, method="split")
    assert [r["space"] for r in s.rhat] == ["weights", "predictions"]
    for row, draws in zip(s.rhat, (trace.positions, trace.predictions)):
        expected = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(draws, method="split"),
                                               quantiles=(0.5, 0.9, 0.99, 1.0))
        assert row["count"] == expected["count"]
        assert row["fraction_below"] == expected["fraction_below"]
        assert row["quantiles"] == expected["quantiles"]
    assert s.rhat[0]["fraction_below"][1.1] == pytest.approx(20 / 25)  # 5 shifted biases
    for row in s.ess:
        draws = trace.positions if row["space"] == "weights" else trace.predictions
        values = np.concatenate([np.ravel(v) for v in
                                 jax.tree.leaves(ws.diagnostics.ess(draws, method=row["kind"]))])
        for q, v in row["quantiles"].items():
            assert v == pytest.approx(np.quantile(values, q), rel=1e-12)
    assert {(r["space"], r["kind"]) for r in s.ess} == {
        (sp, k) for sp in ("weights", "predictions") for k in ("bulk", "tail")}


def test_chain_rows_give_acceptance_divergences_per_chain_and_overall():
    trace = _trace()
    s = ws.diagnostics.summary(trace)
    st = trace.stats
    assert [r["chain"] for r in s.chains] == [0, 1, 2, "all"]
    for c in range(3):
        row = s.chains[c]
        assert row["draws"] == 60
        assert row["accept_prob"] == pytest.approx(st["accept_prob"][c].mean())
        assert row["divergences"] == int(st["is_divergent"][c].sum())
        assert row["mean_logdensity"] == pytest.approx(st["logdensity"][c].mean())
        assert row["step_size"] == st["step_size"][c, -1]
    overall = s.chains[-1]
    assert overall["draws"] == 180
    assert overall["divergences"] == int(st["is_divergent"].sum())
    assert overall["divergent_fraction"] == pytest.approx(st["is_divergent"].mean())
    assert overall["accept_prob"] == pytest.approx(st["accept_prob"].mean())


def test_printable_form_and_json_hold_every_table():
    s = ws.diagnostics.summary(_trace())
    text = str(s)
    for piece in ("R-hat (rank)", "< 1.1", "< 1.01", "weights", "predictions",
                  "weights bulk", "predictions tail", "acceptance", "divergences", "all"):
        assert piece in text
    assert json.loads(json.dumps(s.to_dict()))["chains"][-1]["chain"] == "all"


def test_aligned_weights_row_with_a_network():
    network = ws.models.MLP((6,), 2)
    rng = np.random.default_rng(1)
    base = {"layers": {0: {"kernel": rng.normal(size=(3, 6)), "bias": rng.normal(size=6)},
                       1: {"kernel": rng.normal(size=(6, 2)), "bias": rng.normal(size=2)}}}
    perm = rng.permutation(6)
    relabelled = {"layers": {0: {"kernel": base["layers"][0]["kernel"][:, perm],
                                 "bias": base["layers"][0]["bias"][perm]},
                             1: {"kernel": base["layers"][1]["kernel"][perm],
                                 "bias": base["layers"][1]["bias"]}}}
    def chain(center):
        return jax.tree.map(lambda w: w + 0.02 * rng.normal(size=(50, *w.shape)), center)

    positions = jax.tree.map(lambda a, b: np.stack([a, b]), chain(base), chain(relabelled))
    trace = types.SimpleNamespace(positions=positions, stats={}, predictions=None)
    s = ws.diagnostics.summary(trace, network=network)
    rows = {r["space"]: r for r in s.rhat}
    assert set(rows) == {"weights", "weights (aligned)"}
    assert rows["weights"]["fraction_below"][1.1] < 0.5
    assert rows["weights (aligned)"]["fraction_below"][1.1] == 1.0


def test_one_chain_or_one_draw_reports_chain_stats_and_says_why_rhat_is_missing():
    trace = types.SimpleNamespace(positions={"w": np.zeros((1, 1, 3))},
                                  stats={"logdensity": np.array([[-2.0]])})
    s = ws.diagnostics.summary(trace)
    assert s.rhat == [] and s.ess == []
    assert "at least 2 chains" in s.notes[0]
    assert s.chains[0]["mean_logdensity"] == -2.0
    assert "note:" in str(s)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method='bulk'"):
        ws.diagnostics.summary(_trace(), method="bulk")
    with pytest.raises(TypeError, match="trace="):
        ws.diagnostics.summary({"w": np.zeros((2, 5))})
