"""Samplers over weight pytrees: full-batch HMC, microcanonical samplers (MCLMC,
MAMS), replica exchange, stochastic-gradient MCMC, and
the optimization baselines (SGD, deep ensembles, mean-field VI).

Kernels (`samplers/hmc.py`, `samplers/sgmcmc.py`) are pure functions over
NamedTuple states; each sampler gives the driver one `Algorithm`
(`samplers/algorithm.py`), and the driver (`samplers/driver.py`, `driver.sample`)
does what every sampler shares: checks, target, keys, chains and mesh, start
positions, predictions, run directories and exact resume, thinning, progress
and gradient counts. `registry.SAMPLERS` names them for the command line. This
subpackage never imports `weightspace.models`: a sampler takes a Posterior or
any callable log-density over a pytree.
"""

from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.baselines import deep_ensemble, mfvi, sgd
from weightspace.samplers.driver import load
from weightspace.samplers.hmc import HMCInfo, HMCState, hmc
from weightspace.samplers.isokinetic import IsokineticState
from weightspace.samplers.mams import MAMSInfo, MAMSState, mams
from weightspace.samplers.mclmc import MCLMCInfo, mclmc
from weightspace.samplers.mile import mile
from weightspace.samplers.replica_exchange import ReplicaChains, replica_exchange
from weightspace.samplers.schedules import constant, cyclical
from weightspace.samplers.sgmcmc import SGHMCState, SGLDState, SGMCMCInfo, sghmc, sgld
from weightspace.samplers.trace import Trace
from weightspace.samplers.registry import SAMPLERS, Entry, Option, register

__all__ = ["SAMPLERS", "Algorithm", "Entry", "HMCInfo", "HMCState", "IsokineticState",
           "MAMSInfo", "MAMSState", "MCLMCInfo", "Option", "ReplicaChains", "SGHMCState",
           "SGLDState",
           "SGMCMCInfo", "Trace", "constant", "cyclical", "deep_ensemble", "hmc", "load",
           "mams", "mclmc", "mfvi", "mile", "register", "replica_exchange", "sgd", "sghmc",
           "sgld"]
