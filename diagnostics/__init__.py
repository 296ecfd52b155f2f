"""Diagnostics over arrays with leading (chain, draw) axes: R-hat and ESS in
weight space and function space, and predictive metrics; summaries, plots and
permutation alignment arrive with the rest of the diagnostics issue. This
subpackage never imports weightspace.models or weightspace.samplers."""

from weightspace.diagnostics.ess import ess
from weightspace.diagnostics.rhat import rhat, rhat_summary
from weightspace.diagnostics.predictive import (
    accuracy, agreement, brier, classification_metrics, ece, ensemble_predictive,
    gaussian_nll, nll, regression_metrics, rmse, total_variation)

__all__ = ["rhat", "rhat_summary", "ess", "accuracy", "agreement", "brier", "classification_metrics", "ece",
           "ensemble_predictive", "gaussian_nll", "nll", "regression_metrics", "rmse",
           "total_variation"]
