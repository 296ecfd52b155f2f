"""Diagnostics over arrays with leading (chain, draw) axes: R-hat, ESS,
predictive metrics and plots (arrive with the diagnostics issue)."""
