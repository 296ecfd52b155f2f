"""Samplers over weight pytrees: full-batch HMC (SG-MCMC arrives with its issue).

Kernels (`samplers/hmc.py`) are pure functions over NamedTuple states; the
driver (`samplers/driver.py`) runs chains, warmup, thinning, checkpoints,
storage and progress. This subpackage never imports `weightspace.models`: a
sampler takes a Posterior or any callable log-density over a pytree.
"""

from weightspace.samplers.driver import load
from weightspace.samplers.hmc import HMCInfo, HMCState, hmc
from weightspace.samplers.trace import Trace

__all__ = ["hmc", "load", "Trace", "HMCState", "HMCInfo"]
