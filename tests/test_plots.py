"""Diagnostic plots draw exactly their inputs: R-hat histogram heights equal
numpy counts over shared log-spaced bins and the legend fractions are counted
by hand; trace lines equal the draws of the weights their titles name; the
reliability bars equal per-bin accuracies and confidences worked by hand and
the ECE shown equals `predictive.ece`. Figures are valid PNGs, drawn without
pyplot, and bad inputs raise naming the argument before anything is drawn."""

import ast
import pathlib
import re
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch
from PIL import Image
from weightspace.diagnostics import plots
from weightspace.diagnostics import predictive as pm

_literal = re.escape


def _positions(seed=0, chains=3, draws=40):
    """Leaves of several shapes: 12 + 4 + 1 = 17 scalar weights."""
    rng = np.random.default_rng(seed)
    return {"layers": [{"kernel": rng.normal(size=(chains, draws, 3, 4)),
                        "bias": rng.normal(size=(chains, draws, 4))}],
            "scale": rng.normal(size=(chains, draws))}


def _scalar_draws(positions, name, index):
    leaf = {"layers.0.kernel": positions["layers"][0]["kernel"],
            "layers.0.bias": positions["layers"][0]["bias"],
            "scale": positions["scale"][..., None]}[name]
    return leaf.reshape(*leaf.shape[:2], -1)[:, :, index]


def _parse_title(title):
    name, index = re.fullmatch(r"(.+)\[(\d+)\]", title).groups()
    return name, int(index)


def _weight_axes(fig):
    return [ax for ax in fig.axes if ax.get_title() != "log density"]


def _stairs(fig):
    return {patch.get_label().split(":")[0]: patch.get_data()
            for patch in fig.axes[0].patches if isinstance(patch, StepPatch)}


# Six examples, two classes, 15 bins; bin b is (b/15, (b+1)/15] as in `ece`.
PROBS = np.array([
    [0.90, 0.10],  # conf 0.90, correct, bin 13
    [0.08, 0.92],  # conf 0.92, correct, bin 13
    [0.95, 0.05],  # conf 0.95, wrong,   bin 14
    [0.20, 0.80],  # conf 0.80 = 12/15 (edge), correct, bin 11
    [0.78, 0.22],  # conf 0.78, wrong,   bin 11
    [0.40, 0.60],  # conf 0.60 = 9/15 (edge), wrong, bin 8
])
LABELS = np.array([0, 1, 1, 1, 1, 0])


# ---------------------------------------------------------------------------
# files


def test_each_plot_returns_a_figure_and_writes_a_valid_png_creating_parent_directories(
        tmp_path):
    trace = types.SimpleNamespace(positions=_positions(), stats={"logdensity": np.zeros((3, 40))})
    written = {
        "a/b/rhat.png": lambda p: plots.plot_rhat(np.linspace(1.0, 1.3, 20),
                                                  np.linspace(0.99, 1.02, 10), path=p),
        "c/trace.png": lambda p: plots.plot_trace(trace, path=str(p)),
        "reliability.png": lambda p: plots.plot_reliability(PROBS, LABELS, path=p),
    }
    for name, draw in written.items():
        fig = draw(tmp_path / name)
        assert isinstance(fig, Figure)
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
            image.verify()
        with Image.open(tmp_path / name) as image:
            assert image.width > 0 and image.height > 0


def test_plots_never_import_pyplot_models_or_samplers():
    code = ("import sys, numpy as np\n"
            "from weightspace.diagnostics import plots\n"
            "plots.plot_rhat(np.array([1.0, 1.2]), None)\n"
            "plots.plot_trace(np.zeros((2, 5, 3)), weights=2)\n"
            "plots.plot_reliability([[0.3, 0.7]], [1])\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    tree = ast.parse(pathlib.Path(plots.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {m for m in imported if m.startswith(("weightspace.models",
                                                     "weightspace.samplers"))}


# ---------------------------------------------------------------------------
# R-hat


def test_rhat_histogram_heights_equal_numpy_fractions_over_shared_log_spaced_bins():
    rng = np.random.default_rng(1)
    weight = {"kernel": 0.995 + rng.exponential(0.2, size=(30, 7)),
              "bias": np.array([np.nan, np.inf, 1.0])}
    function = 0.999 + rng.exponential(0.01, size=200)
    fig = plots.plot_rhat(weight, function, bins=25)
    stairs = _stairs(fig)
    assert set(stairs) == {"weight space", "function space"}
    edges = stairs["weight space"].edges
    np.testing.assert_array_equal(edges, stairs["function space"].edges)
    finite_weight = np.concatenate([weight["kernel"].ravel(), [1.0]])
    assert len(edges) == 26
    assert edges[0] == pytest.approx(min(finite_weight.min(), function.min()), rel=1e-12)
    assert edges[-1] == pytest.approx(max(finite_weight.max(), function.max()), rel=1e-12)
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(edges[-1] / edges[0]) / 25,
                               rtol=1e-9)
    # Heights are fractions of each space's finite values.
    np.testing.assert_allclose(stairs["weight space"].values,
                               np.histogram(finite_weight, bins=edges)[0] / finite_weight.size)
    np.testing.assert_allclose(stairs["function space"].values,
                               np.histogram(function, bins=edges)[0] / function.size)


def test_rhat_x_axis_is_log_scaled_with_a_line_at_the_threshold():
    fig = plots.plot_rhat(np.array([1.0, 1.5, 3.0]), None, threshold=1.01)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    [line] = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), [1.01, 1.01])
    lo, hi = ax.get_xlim()
    assert lo <= 1.0 and hi >= 3.0


def test_rhat_legend_gives_fraction_of_all_values_below_threshold_with_nan_not_below():
    weight = np.array([1.0, 1.05, 1.2, np.nan])  # 2 of 4 below 1.1
    function = {"a": np.array([1.0, 1.3]), "b": np.array([[1.01]])}  # 2 of 3 below 1.1
    fig = plots.plot_rhat(weight, function)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["weight space: 50.0% < 1.1 (n=4; 1 NaN)",
                     "function space: 66.7% < 1.1 (n=3)",
                     "threshold 1.1"]
    big = np.r_[np.full(269_322 - 110_000, 1.2), np.full(110_000, 1.0)]
    fig = plots.plot_rhat(big, None, threshold=1.01)
    text = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert text == "weight space: 40.8% < 1.01 (n=269,322)"


def test_aligned_weights_are_a_third_histogram():
    fig = plots.plot_rhat(np.array([1.0, 1.5]), np.array([1.0, 1.01]),
                          aligned_rhat={"w": np.array([1.0, 1.02])})
    assert list(_stairs(fig)) == ["weight space", "aligned weights", "function space"]


def test_rhat_of_one_space_or_of_identical_values_still_draws_one_histogram():
    fig = plots.plot_rhat(None, np.ones(10))
    stairs = _stairs(fig)
    assert list(stairs) == ["function space"]
    assert stairs["function space"].values.sum() == pytest.approx(1.0)  # all 10 in one bin
    assert fig.axes[0].get_title() == "R-hat in function space"
    fig = plots.plot_rhat(np.array([np.nan, np.nan]), None)  # nothing finite to bin
    assert _stairs(fig)["weight space"].values.sum() == 0


# ---------------------------------------------------------------------------
# trace plots


def test_trace_with_an_int_picks_the_same_weights_for_the_same_seed_and_lines_are_their_draws():
    positions = _positions()
    titles = {}
    for seed in (0, 0, 7):
        fig = plots.plot_trace(positions, weights=5, seed=seed)
        axes = _weight_axes(fig)
        assert len(axes) == 5 == len(fig.axes)  # no log density given
        picked = [_parse_title(ax.get_title()) for ax in axes]
        assert len(set(picked)) == 5
        for ax, (name, index) in zip(axes, picked):
            expected = _scalar_draws(positions, name, index)
            assert len(ax.lines) == 3
            for chain, line in enumerate(ax.lines):
                np.testing.assert_array_equal(line.get_xdata(), np.arange(40))
                np.testing.assert_array_equal(line.get_ydata(), expected[chain])
        titles.setdefault(seed, []).append(picked)
    assert titles[0][0] == titles[0][1]
    assert titles[7][0] != titles[0][0]


def test_trace_with_more_weights_than_exist_plots_every_weight_once():
    fig = plots.plot_trace(_positions(), weights=100)
    picked = {_parse_title(ax.get_title()) for ax in fig.axes}
    assert picked == ({("layers.0.kernel", i) for i in range(12)}
                      | {("layers.0.bias", i) for i in range(4)} | {("scale", 0)})


def test_trace_of_named_weights_plots_them_in_the_given_order_from_jax_leaves():
    positions = _positions()
    chosen = [("layers.0.kernel", 7), ("scale", 0), ("layers.0.bias", 3)]
    jax_positions = {"layers": [{k: jnp.asarray(v) for k, v in positions["layers"][0].items()}],
                     "scale": jnp.asarray(positions["scale"])}
    fig = plots.plot_trace(jax_positions, weights=chosen)
    assert [ax.get_title() for ax in fig.axes] == ["layers.0.kernel[7]", "scale[0]",
                                                   "layers.0.bias[3]"]
    for ax, (name, index) in zip(fig.axes, chosen):
        expected = np.asarray(jnp.asarray(_scalar_draws(positions, name, index)))
        for chain, line in enumerate(ax.lines):
            np.testing.assert_array_equal(line.get_ydata(), expected[chain])
    fig = plots.plot_trace(np.zeros((2, 5, 3)), weights=[("position", 2)])
    assert fig.axes[0].get_title() == "position[2]"


def test_trace_log_density_panel_equals_stats_logdensity_per_chain_or_the_argument():
    rng = np.random.default_rng(3)
    logdensity = rng.normal(size=(3, 40)).cumsum(axis=1)
    trace = types.SimpleNamespace(positions=_positions(), stats={"logdensity": logdensity})
    fig = plots.plot_trace(trace, weights=2)
    assert len(fig.axes) == 3
    panel = fig.axes[-1]
    assert panel.get_title() == "log density"
    for chain, line in enumerate(panel.lines):
        np.testing.assert_array_equal(line.get_ydata(), logdensity[chain])
    override = -logdensity
    fig = plots.plot_trace(trace, weights=2, logdensity=override)
    for chain, line in enumerate(fig.axes[-1].lines):
        np.testing.assert_array_equal(line.get_ydata(), override[chain])
    fig = plots.plot_trace(types.SimpleNamespace(positions=_positions(), stats={}), weights=2)
    assert "log density" not in [ax.get_title() for ax in fig.axes]


# ---------------------------------------------------------------------------
# reliability diagram


def test_reliability_bars_equal_per_bin_accuracy_and_confidence_worked_by_hand():
    fig = plots.plot_reliability(PROBS, LABELS)
    top, bottom = fig.axes
    accuracy_bars, gap_bars = top.containers
    # non-empty bins 8, 11, 13, 14: accuracies 0, 1/2, 1, 0; mean confidences
    # 0.60, (0.80 + 0.78) / 2, (0.90 + 0.92) / 2, 0.95
    lefts = [bar.get_x() for bar in accuracy_bars]
    np.testing.assert_allclose(lefts, np.array([8, 11, 13, 14]) / 15, rtol=1e-12)
    np.testing.assert_allclose([bar.get_width() for bar in accuracy_bars], 1 / 15, rtol=1e-12)
    np.testing.assert_allclose([bar.get_height() for bar in accuracy_bars],
                               [0.0, 0.5, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose([bar.get_y() + bar.get_height() for bar in gap_bars],
                               [0.60, 0.79, 0.91, 0.95], rtol=1e-12)
    counts = np.zeros(15)
    counts[[8, 11, 13, 14]] = [1, 2, 2, 1]
    np.testing.assert_array_equal([bar.get_height() for bar in bottom.containers[0]], counts)


def test_reliability_ece_text_equals_predictive_ece_and_the_bars_reproduce_it():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(4, 0.5), size=500)
    probs[:20] = [0.6, 0.4, 0.0, 0.0]  # confidences on a bin edge (9/15)
    labels = rng.integers(0, 4, size=500)
    for num_bins in (15, 7):
        fig = plots.plot_reliability(probs, labels, num_bins=num_bins)
        top, bottom = fig.axes
        expected = pm.ece(probs, labels, num_bins)
        assert [t.get_text() for t in top.texts] == [f"ECE = {expected:.4f}"]
        accuracy = np.array([bar.get_height() for bar in top.containers[0]])
        confidence = np.array([bar.get_y() + bar.get_height() for bar in top.containers[1]])
        counts = np.array([bar.get_height() for bar in bottom.containers[0]])
        assert len(counts) == num_bins and counts.sum() == 500
        from_bars = np.sum(counts[counts > 0] / 500 * np.abs(accuracy - confidence))
        assert from_bars == pytest.approx(expected, rel=1e-10, abs=1e-14)


# ---------------------------------------------------------------------------
# bad inputs

OK_RHAT = np.array([1.0, 1.2])

BAD_RHAT = [
    ((None, None), {}, ValueError, "weight_rhat and function_rhat are both None"),
    ((np.array([1.0, -1.0]), None), {}, ValueError,
     "weight_rhat must hold R-hat values > 0 (or NaN, or inf), got -1.0"),
    ((None, np.array([1.0, -np.inf])), {}, ValueError, "function_rhat must hold R-hat values"),
    ((np.array(["a", "b"]), None), {}, TypeError, "weight_rhat must be an array of real"),
    (({}, None), {}, ValueError, "weight_rhat must be an array or a pytree"),
    ((None, np.zeros(0)), {}, ValueError, "function_rhat holds no values"),
    ((OK_RHAT, None), {"bins": 0}, ValueError, "bins=0"),
    ((OK_RHAT, None), {"bins": 2.5}, TypeError, "bins must be an int"),
    ((OK_RHAT, None), {"threshold": 0.0}, ValueError, "threshold must be a finite number > 0"),
    ((OK_RHAT, None), {"threshold": np.nan}, ValueError, "got threshold=nan"),
    ((OK_RHAT, None), {"threshold": "1.1"}, TypeError, "got threshold='1.1'"),
    ((OK_RHAT, None), {"path": 3}, TypeError, "path must be a str or os.PathLike"),
    ((OK_RHAT, None), {"path": b"x.png"}, TypeError, "path must be a str or os.PathLike"),
    ((OK_RHAT, None), {"title": 3}, TypeError, "title must be a str or None, got int 3"),
]


@pytest.mark.parametrize("args, kwargs, exc, words", BAD_RHAT)
def test_bad_rhat_inputs_raise_naming_the_argument(args, kwargs, exc, words):
    with pytest.raises(exc, match=_literal(words)):
        plots.plot_rhat(*args, **kwargs)


def _bad_trace_cases():
    ok = _positions()
    nan_scale = _positions()
    nan_scale["scale"][1, 5] = np.nan
    names = "'layers.0.bias' (size 4), 'layers.0.kernel' (size 12), 'scale' (size 1)"
    return [
        (ok, {"weights": [("layers.0.kernal", 0)]}, ValueError,
         f"weights: no leaf named 'layers.0.kernal'; leaf names: {names}"),
        (ok, {"weights": [("layers.0.bias", 4)]}, ValueError,
         "weights: flat index 4 of leaf 'layers.0.bias' must be an int in [0, 4)"),
        (ok, {"weights": [("scale", -1)]}, ValueError, "flat index -1 of leaf 'scale'"),
        (ok, {"weights": 0}, ValueError, "weights=0 is not allowed"),
        (ok, {"weights": "scale"}, TypeError, "weights must be an int >= 1 or a list"),
        (ok, {"weights": []}, TypeError, "got weights=[]"),
        (ok, {"weights": [("scale",)]}, TypeError, "got the entry ('scale',)"),
        (ok, {"seed": -1}, ValueError, "seed=-1 is not allowed"),
        (ok, {"seed": 1.5}, TypeError, "seed must be an int >= 0, got seed=1.5"),
        (ok, {"logdensity": np.zeros((3, 39))}, ValueError,
         ("logdensity must have shape (chain, draw) = (3, 40) to match the positions, "
          "got shape (3, 39)")),
        (ok, {"logdensity": np.full((3, 40), np.inf)}, ValueError,
         "logdensity must be finite, got logdensity[0, 0]=inf"),
        (types.SimpleNamespace(positions=ok, stats={"logdensity": np.zeros(40)}), {},
         ValueError, "positions_or_trace.stats['logdensity'] must have shape (chain, draw)"),
        (nan_scale, {"weights": [("scale", 0)]}, ValueError,
         ("weight scale[0] of positions_or_trace must be finite to be plotted, got nan at "
          "chain 1, draw 5")),
        ({"w": np.zeros(5)}, {}, ValueError,
         "positions_or_trace leaf 'w' must have shape (chain, draw, ...)"),
        ({"a": np.zeros((2, 5)), "b": np.zeros((2, 6))}, {}, ValueError,
         ("every leaf of positions_or_trace needs the same (chain, draw) axes, got "
          "a (2, 5), b (2, 6)")),
        (types.SimpleNamespace(positions={}), {}, ValueError,
         "positions_or_trace.positions must be a pytree of arrays"),
        ({"w": np.zeros((2, 5), dtype=complex)}, {}, TypeError,
         "positions_or_trace leaf 'w' must hold real numbers, got dtype complex128"),
        (ok, {"path": 1.0}, TypeError, "path must be a str or os.PathLike"),
    ]


@pytest.mark.parametrize("positions, kwargs, exc, words", _bad_trace_cases())
def test_bad_trace_inputs_raise_naming_the_argument(positions, kwargs, exc, words):
    with pytest.raises(exc, match=_literal(words)):
        plots.plot_trace(positions, **kwargs)


BAD_RELIABILITY = [
    (PROBS[:, 0], LABELS, {}, ValueError, "probs must have shape (n, k)"),
    (PROBS, LABELS[:5], {}, ValueError, "labels must have shape (6,)"),
    (PROBS, LABELS + 1, {}, ValueError, "labels must lie in [0, 2)"),
    (np.where(PROBS == 0.9, np.nan, PROBS), LABELS, {}, ValueError, "probs must be finite"),
    (PROBS, LABELS, {"num_bins": 0}, ValueError, "num_bins=0"),
    (PROBS, LABELS, {"num_bins": 2.0}, TypeError, "num_bins must be an int"),
    (PROBS, LABELS, {"path": ["a.png"]}, TypeError, "path must be a str or os.PathLike"),
    (PROBS, LABELS, {"title": b"t"}, TypeError, "title must be a str or None"),
]


@pytest.mark.parametrize("probs, labels, kwargs, exc, words", BAD_RELIABILITY)
def test_bad_reliability_inputs_raise_naming_the_argument(probs, labels, kwargs, exc, words):
    with pytest.raises(exc, match=_literal(words)):
        plots.plot_reliability(probs, labels, **kwargs)


def test_bad_input_raises_before_any_file_or_directory_is_written(tmp_path):
    target = tmp_path / "out" / "figure.png"
    with pytest.raises(ValueError):
        plots.plot_rhat(None, None, path=target)
    with pytest.raises(ValueError):
        plots.plot_trace(_positions(), weights=[("nope", 0)], path=target)
    with pytest.raises(ValueError):
        plots.plot_reliability(PROBS, LABELS, num_bins=0, path=target)
    assert not (tmp_path / "out").exists()


def test_llc_curve_draws_each_curve_with_error_bars_and_its_losses(tmp_path):
    steps = [2, 4, 6]
    mean = [[1.0, 2.0, np.nan], [0.5, 1.5, 2.5]]  # a diverged estimate is a gap
    fig = plots.plot_llc_curve(steps, mean, [[0.1, 0.2, np.nan], [0.1, 0.1, 0.1]],
                               train_loss=[[1.0, 0.5, 0.4], [1.1, 0.6, 0.5]],
                               test_loss=[[1.1, 0.6, 0.5], [1.2, 0.7, 0.6]],
                               labels=["a", "b"], step_label="epoch",
                               path=tmp_path / "curve.png")
    top, bottom = fig.axes
    assert len(top.containers) == 2 and len(bottom.lines) == 4
    np.testing.assert_array_equal(top.containers[1].lines[0].get_ydata(), mean[1])
    assert bottom.get_xlabel() == "epoch" and (tmp_path / "curve.png").stat().st_size > 0


def test_llc_curve_circles_flagged_estimates_and_draws_the_reference(tmp_path):
    fig = plots.plot_llc_curve([1, 2, 3, 4], [-50.0, -8.0, 9.0, 11.0], [1.0, 1.0, 0.3, 0.3],
                               flagged=[True, True, False, False], reference=11.5,
                               reference_label="Aoyagi", path=tmp_path / "c.png")
    top = fig.axes[0]
    circled = [line for line in top.lines if line.get_label() == "flagged"]
    assert len(circled) == 1
    np.testing.assert_array_equal(circled[0].get_ydata(), [-50.0, -8.0])
    [ref] = [line for line in top.lines if line.get_label() == "Aoyagi"]
    assert ref.get_ydata()[0] == 11.5
    # The axis is scaled to the unflagged estimates; the flagged ones far below
    # are marked at its edge and counted, not allowed to flatten the curve.
    low, high = top.get_ylim()
    assert -8.0 < low < 8.7 and 11.5 < high < 14.0, (low, high)
    assert [t.get_text() for t in top.texts] == [
        "2 flagged estimate(s) off the axis (from -50 to -8)"]
    unflagged = plots.plot_llc_curve([1, 2], [1.0, 2.0], flagged=[False, False])
    assert not [line for line in unflagged.axes[0].lines if line.get_label() == "flagged"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(steps=[2, 2, 6]), "steps must be a non-empty increasing"),
    (dict(llc_mean=[[1.0, 2.0]]), "llc_mean has 2 steps, steps has 3"),
    (dict(llc_std=[[0.1, 0.1]]), "llc_std must be shape (1, 3)"),
    (dict(test_loss=[np.inf, 1.0, 1.0]), "test_loss holds inf"),
    (dict(labels=["a", "b"]), "labels must be 1 str"),
    (dict(flagged=[[1, 0, 0]]), "flagged must be booleans shaped like llc_mean (1, 3)"),
    (dict(flagged=[[True, False]]), "flagged must be booleans shaped like llc_mean (1, 3)"),
    (dict(reference=float("nan")), "reference must be a finite number"),
])
def test_bad_llc_curve_inputs_raise_naming_the_argument(kwargs, words):
    args = {"steps": [2, 4, 6], "llc_mean": [[1.0, 2.0, 3.0]], **kwargs}
    with pytest.raises(ValueError, match=re.escape(words)):
        plots.plot_llc_curve(**args)
