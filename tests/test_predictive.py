"""Predictive metrics equal values worked by hand on tiny arrays; the ensemble
predictive equals the mean over (chain, draw) for in-memory, memory-mapped and
Trace-like inputs while reading only chunks of draws; bad inputs raise naming the
argument."""

import math
import types

import numpy as np
import pytest
from weightspace.diagnostics import predictive as pm

# Three examples, two classes: a tie (argmax -> first class, correct), a
# confident correct row, and a row giving the true class probability 0.
PROBS = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
LABELS = np.array([0, 1, 1])


def test_accuracy_counts_argmax_hits_with_ties_going_to_the_first_class():
    assert pm.accuracy(PROBS, LABELS) == pytest.approx(2 / 3)


def test_nll_is_mean_negative_log_true_class_probability_with_zero_clipped_to_1e_12():
    expected = -(math.log(0.5) + math.log(0.75) + math.log(1e-12)) / 3
    assert pm.nll(PROBS, LABELS) == pytest.approx(expected, rel=1e-12)
    assert pm.nll([[0.2, 0.8]], [1]) == pytest.approx(-math.log(0.8), rel=1e-12)


def test_brier_is_mean_squared_distance_to_the_one_hot_label():
    # rows: 0.5^2 + 0.5^2 = 0.5; 0.25^2 + 0.25^2 = 0.125; 1^2 + 1^2 = 2
    assert pm.brier(PROBS, LABELS) == pytest.approx((0.5 + 0.125 + 2.0) / 3, rel=1e-12)
    assert pm.brier([[0.0, 1.0, 0.0]], [1]) == 0.0


def test_ece_on_six_examples_worked_by_hand_with_15_bins():
    # Bin b is (b/15, (b+1)/15]; a confidence on an edge goes to the lower bin.
    probs = np.array([
        [0.90, 0.10],  # conf 0.90, pred 0, label 0: correct, bin 13 (0.867, 0.933]
        [0.08, 0.92],  # conf 0.92, pred 1, label 1: correct, bin 13
        [0.95, 0.05],  # conf 0.95, pred 0, label 1: wrong,   bin 14 (0.933, 1]
        [0.20, 0.80],  # conf 0.80 = 12/15 (edge), correct,   bin 11 (0.733, 0.8]
        [0.78, 0.22],  # conf 0.78, pred 0, label 1: wrong,   bin 11
        [0.40, 0.60],  # conf 0.60 = 9/15 (edge), pred 1, label 0: wrong, bin 8 (0.533, 0.6]
    ])
    labels = np.array([0, 1, 1, 1, 1, 0])
    # bin 13: 2 examples, acc 1,   conf 0.91 -> 2/6 * 0.09
    # bin 14: 1 example,  acc 0,   conf 0.95 -> 1/6 * 0.95
    # bin 11: 2 examples, acc 1/2, conf 0.79 -> 2/6 * 0.29
    # bin  8: 1 example,  acc 0,   conf 0.60 -> 1/6 * 0.60
    expected = (2 * 0.09 + 0.95 + 2 * 0.29 + 0.60) / 6
    assert pm.ece(probs, labels) == pytest.approx(expected, rel=1e-12)
    # Were edges left-closed, 0.8 would sit alone in bin 12 and 0.6 in bin 9:
    left_closed = (2 * 0.09 + 0.95 + 0.78 + 0.20 + 0.60) / 6
    assert pm.ece(probs, labels) != pytest.approx(left_closed)


def test_ece_with_one_bin_is_gap_between_accuracy_and_mean_confidence():
    # mean confidence (0.5 + 0.75 + 1) / 3 = 0.75, accuracy 2/3
    assert pm.ece(PROBS, LABELS, num_bins=1) == pytest.approx(0.75 - 2 / 3, rel=1e-12)


def test_ece_is_zero_when_each_bin_accuracy_equals_its_confidence():
    # four examples at confidence 0.75, three right: acc 0.75 in bin (0.6, 0.8]
    probs = np.tile([0.75, 0.25], (4, 1))
    assert pm.ece(probs, [0, 0, 0, 1], num_bins=5) == pytest.approx(0.0, abs=1e-15)


def test_classification_metrics_collects_the_four_metrics():
    got = pm.classification_metrics(PROBS, LABELS)
    assert got == {"accuracy": pm.accuracy(PROBS, LABELS), "nll": pm.nll(PROBS, LABELS),
                   "ece": pm.ece(PROBS, LABELS), "brier": pm.brier(PROBS, LABELS)}


def test_agreement_and_total_variation_worked_by_hand():
    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    q = np.array([[0.6, 0.4], [0.9, 0.1], [0.5, 0.5]])
    # argmax: p -> 0, 1, 0; q -> 0, 0, 0 (ties to the first class)
    assert pm.agreement(p, q) == pytest.approx(2 / 3)
    # half L1 per row: 0.1, 0.5, 0
    assert pm.total_variation(p, q) == pytest.approx((0.1 + 0.5 + 0.0) / 3, rel=1e-12)
    assert pm.total_variation(p, p) == 0.0
    assert pm.total_variation([[1.0, 0.0]], [[0.0, 1.0]]) == 1.0


def test_rmse_is_root_of_mean_squared_error():
    assert pm.rmse([1.0, 2.0, 3.0], [1.0, 4.0, 0.0]) == pytest.approx(math.sqrt(13 / 3))
    # over examples and outputs: errors 1, 0, 0, 3
    assert pm.rmse([[1.0, 2.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 3.0]]) == pytest.approx(
        math.sqrt(10 / 4))


def test_gaussian_nll_sums_over_outputs_and_averages_over_examples():
    mean = np.array([[0.0, 1.0], [2.0, -1.0]])
    std = np.array([[1.0, 2.0], [0.5, 1.0]])
    targets = np.array([[1.0, 1.0], [3.0, 1.0]])

    def entry(m, s, y):
        return math.log(s) + 0.5 * math.log(2 * math.pi) + (y - m) ** 2 / (2 * s**2)

    ex0 = entry(0.0, 1.0, 1.0) + entry(1.0, 2.0, 1.0)
    ex1 = entry(2.0, 0.5, 3.0) + entry(-1.0, 1.0, 1.0)
    assert pm.gaussian_nll(mean, std, targets) == pytest.approx((ex0 + ex1) / 2, rel=1e-12)
    assert pm.gaussian_nll([0.0], [1.0], [0.0]) == pytest.approx(0.5 * math.log(2 * math.pi))
    assert pm.regression_metrics(mean, std, targets) == {
        "rmse": pm.rmse(mean, targets), "gaussian_nll": pm.gaussian_nll(mean, std, targets)}


def _predictions(shape=(2, 3, 4, 5), seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape)
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)


def test_ensemble_predictive_is_the_mean_over_chains_and_draws():
    preds = _predictions()
    expected = preds.astype(np.float64).mean(axis=(0, 1))
    for chunk in (None, 1, 2, 3, 10):  # 2 splits the 3 draws unevenly
        got = pm.ensemble_predictive(preds, draws_per_chunk=chunk)
        assert got.dtype == np.float64 and got.shape == (4, 5)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_ensemble_predictive_of_a_memmap_and_of_a_trace_like_object(tmp_path):
    preds = _predictions()
    expected = preds.astype(np.float64).mean(axis=(0, 1))
    mm = np.lib.format.open_memmap(tmp_path / "predictions.npy", mode="w+",
                                   dtype=preds.dtype, shape=preds.shape)
    mm[...] = preds
    mm.flush()
    del mm
    loaded = np.load(tmp_path / "predictions.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap)
    np.testing.assert_allclose(pm.ensemble_predictive(loaded, draws_per_chunk=2), expected,
                               rtol=1e-12)
    trace = types.SimpleNamespace(predictions=loaded, positions=None)
    np.testing.assert_allclose(pm.ensemble_predictive(trace), expected, rtol=1e-12)


def test_ensemble_predictive_of_regression_means_and_jax_arrays_including_bfloat16():
    import jax.numpy as jnp

    preds = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # exact in bfloat16
    for array in (jnp.asarray(preds), jnp.asarray(preds, dtype=jnp.bfloat16)):
        got = pm.ensemble_predictive(array, draws_per_chunk=2)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, preds.mean(axis=(0, 1)), rtol=1e-12)


class _RecordingArray:
    """An array view that records how many draws each read asks for."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, index):
        out = self.data[index]
        self.reads.append(out.shape[0] if out.ndim == self.data.ndim - 1 else None)
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("ensemble_predictive converted the whole array")


def test_ensemble_predictive_reads_chunks_of_draws_never_the_whole_array(monkeypatch):
    preds = _predictions(shape=(3, 7, 2, 3))
    rec = _RecordingArray(preds)
    got = pm.ensemble_predictive(rec, draws_per_chunk=3)
    np.testing.assert_allclose(got, preds.astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)
    assert rec.reads == [3, 3, 1] * 3
    # the default chunk follows the byte budget: here 2 draws of 2*3 float64
    monkeypatch.setattr(pm, "CHUNK_BYTES", 2 * 2 * 3 * 8)
    rec = _RecordingArray(preds)
    pm.ensemble_predictive(rec)
    assert rec.reads == [2, 2, 2, 1] * 3


BAD_CLASSIFICATION = [
    # (probs, labels, kwargs, exception, words the message must contain)
    (PROBS[:, :, None], LABELS, {}, ValueError, "probs must have shape (n, k)"),
    (PROBS, LABELS[:2], {}, ValueError, "labels must have shape (3,)"),
    (PROBS, [0, 2, 1], {}, ValueError, "labels must lie in [0, 2)"),
    (PROBS, [0, -1, 1], {}, ValueError, "labels[1]=-1"),
    (PROBS, [0.0, 1.0, 1.0], {}, TypeError, "labels must be integers"),
    (PROBS, [True, False, True], {}, TypeError, "labels must be integers"),
    ([[0.5, 0.5], [np.nan, 1.0], [1.0, 0.0]], LABELS, {}, ValueError, "probs must be finite"),
    ([[1.5, -0.5], [0.25, 0.75], [1.0, 0.0]], LABELS, {}, ValueError,
     "probs must be non-negative"),
    ([[0.5, 0.5], [0.25, 0.76], [1.0, 0.0]], LABELS, {}, ValueError,
     "rows of probs must sum to 1 within 0.001, got row 1"),
    (np.array([["a", "b"]] * 3), LABELS, {}, TypeError, "probs must be an array of real"),
    (PROBS, LABELS, {"num_bins": 0}, ValueError, "num_bins=0"),
    (PROBS, LABELS, {"num_bins": 2.0}, TypeError, "num_bins must be an int"),
]


@pytest.mark.parametrize("probs, labels, kwargs, exc, words", BAD_CLASSIFICATION)
def test_bad_classification_inputs_raise_naming_the_argument(probs, labels, kwargs, exc, words):
    with pytest.raises(exc, match=_literal(words)):
        pm.ece(probs, labels, **kwargs)
    if not kwargs:
        for metric in (pm.accuracy, pm.nll, pm.brier, pm.classification_metrics):
            with pytest.raises(exc, match=_literal(words)):
                metric(probs, labels)


def test_rows_summing_to_one_within_the_tolerance_are_accepted():
    probs = np.array([[0.5, 0.5005], [0.2, 0.7995]])
    assert pm.accuracy(probs, [1, 1]) == 1.0


def test_bad_comparison_inputs_raise_naming_the_argument():
    p = np.array([[0.7, 0.3], [0.4, 0.6]])
    for metric in (pm.agreement, pm.total_variation):
        with pytest.raises(ValueError, match=_literal("p and q must have the same shape")):
            metric(p, p[:1])
        with pytest.raises(ValueError, match=_literal("rows of q must sum to 1")):
            metric(p, p * 2)


def test_bad_regression_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match=_literal("mean and targets must have the same shape, "
                                                  "got mean (3,), targets (2,)")):
        pm.rmse([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=_literal("targets must be finite, got targets[1]=inf")):
        pm.rmse([1.0, 2.0], [1.0, np.inf])
    with pytest.raises(ValueError, match=_literal("std must be > 0, got std[1]=0.0")):
        pm.gaussian_nll([1.0, 2.0], [1.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=_literal("std must be > 0")):
        pm.regression_metrics([1.0, 2.0], [-1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=_literal("mean and std and targets must have the same")):
        pm.gaussian_nll([1.0, 2.0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=_literal("with n >= 1")):
        pm.rmse([], [])


def test_bad_ensemble_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match=_literal("trace_or_predictions.predictions is None")):
        pm.ensemble_predictive(types.SimpleNamespace(predictions=None))
    with pytest.raises(ValueError, match=_literal("shape (chain, draw, n, ...)")):
        pm.ensemble_predictive(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=_literal("got shape (2, 0, 4)")):
        pm.ensemble_predictive(np.zeros((2, 0, 4)))
    with pytest.raises(TypeError, match="trace_or_predictions must be"):
        pm.ensemble_predictive("predictions")
    with pytest.raises(TypeError, match="dtype bool"):
        pm.ensemble_predictive(np.zeros((1, 1, 2), dtype=bool))
    with pytest.raises(ValueError, match="draws_per_chunk=0"):
        pm.ensemble_predictive(np.zeros((1, 1, 2)), draws_per_chunk=0)


def _literal(text):
    import re

    return re.escape(text)
