"""Samplers over weight pytrees: full-batch HMC and stochastic-gradient MCMC.

Kernels (`samplers/hmc.py`, `samplers/sgmcmc.py`) are pure functions over NamedTuple states; the
driver (`samplers/driver.py`) runs chains, warmup, thinning, checkpoints,
storage and progress. This subpackage never imports `weightspace.models`: a
sampler takes a Posterior or any callable log-density over a pytree.
"""

from weightspace.samplers.driver import load
from weightspace.samplers.hmc import HMCInfo, HMCState, hmc
from weightspace.samplers.schedules import constant, cyclical
from weightspace.samplers.sgmcmc import SGHMCState, SGLDState, SGMCMCInfo, sghmc, sgld
from weightspace.samplers.trace import Trace

__all__ = ["hmc", "sgld", "sghmc", "constant", "cyclical", "load", "Trace", "HMCState",
           "HMCInfo", "SGLDState", "SGHMCState", "SGMCMCInfo"]
