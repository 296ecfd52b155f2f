"""Diagnostics over arrays with leading (chain, draw) axes: predictive metrics
now; R-hat, ESS, summaries and plots arrive with the rest of the diagnostics
issue. This subpackage never imports weightspace.models or weightspace.samplers."""

from weightspace.diagnostics.predictive import (
    accuracy, agreement, brier, classification_metrics, ece, ensemble_predictive,
    gaussian_nll, nll, regression_metrics, rmse, total_variation)

__all__ = ["accuracy", "agreement", "brier", "classification_metrics", "ece",
           "ensemble_predictive", "gaussian_nll", "nll", "regression_metrics", "rmse",
           "total_variation"]
