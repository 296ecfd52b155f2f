"""Diagnostics over arrays with leading (chain, draw) axes: R-hat and ESS in
weight space and function space, permutation alignment of weights, predictive
metrics, basin shares and crossings, summaries and figures. This subpackage never imports
weightspace.models or weightspace.samplers."""

from weightspace.diagnostics.align import align_permutations
from weightspace.diagnostics.basin_assignment import BasinAssignment, assign_basins
from weightspace.diagnostics.basins import BasinReport, basins
from weightspace.diagnostics.ess import ess
from weightspace.diagnostics.plots import (
    plot_llc_curve,
    plot_reliability,
    plot_rhat,
    plot_trace,
)
from weightspace.diagnostics.predictive import (
    accuracy, agreement, brier, classification_metrics, ece, ensemble_predictive,
    gaussian_nll, nll, regression_metrics, reliability_bins, rmse, total_variation)
from weightspace.diagnostics.rhat import rhat, rhat_summary
from weightspace.diagnostics.summary import Summary, gradient_cost, summary

__all__ = ["accuracy", "agreement", "align_permutations", "assign_basins", "BasinAssignment",
           "BasinReport", "basins", "brier",
           "classification_metrics",
           "ece", "ensemble_predictive", "ess", "gaussian_nll", "gradient_cost", "nll",
           "plot_llc_curve", "plot_reliability",
           "plot_rhat", "plot_trace", "regression_metrics", "reliability_bins", "rhat",
           "rhat_summary", "rmse", "Summary", "summary", "total_variation"]
