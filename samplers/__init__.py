"""Samplers: full-batch HMC and stochastic-gradient MCMC over weight pytrees.

The kernels and the chain driver arrive with the HMC and SG-MCMC issues; this
subpackage never imports `weightspace.models` (a sampler takes any log-density).
"""
