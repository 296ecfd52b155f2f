"""Samplers over weight pytrees: full-batch HMC, stochastic-gradient MCMC, and
the optimization baselines (SGD, deep ensembles, mean-field VI).

Kernels (`samplers/hmc.py`, `samplers/sgmcmc.py`) are pure functions over NamedTuple states; the
driver (`samplers/driver.py`) runs chains, warmup, thinning, checkpoints,
storage and progress. This subpackage never imports `weightspace.models`: a
sampler takes a Posterior or any callable log-density over a pytree.
"""

from weightspace.samplers.baselines import deep_ensemble, mfvi, sgd
from weightspace.samplers.driver import load
from weightspace.samplers.hmc import HMCInfo, HMCState, hmc
from weightspace.samplers.schedules import constant, cyclical
from weightspace.samplers.sgmcmc import SGHMCState, SGLDState, SGMCMCInfo, sghmc, sgld
from weightspace.samplers.trace import Trace

__all__ = ["HMCInfo", "HMCState", "SGHMCState", "SGLDState", "SGMCMCInfo", "Trace", "constant",
           "cyclical", "deep_ensemble", "hmc", "load", "mfvi", "sgd", "sghmc", "sgld"]
