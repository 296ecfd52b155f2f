"""Ensemble-started sampling (MILE; Sommer et al. 2025, "Microcanonical
Langevin Ensembles", ICLR): train a deep ensemble, one member per chain, then
tune and run MCLMC or MAMS from each member's solution.

The members (`deep_ensemble`, minibatch SGD) reach the posterior's high-density
region in a few epochs of cheap minibatch gradients, so the sampler's warmup
tunes on chains that have stopped travelling, and each chain starts in its own
basin. Everything is counted: the Trace's info["warmup_grad_evals"] holds, per
chain, the member's training (full-batch equivalents: a minibatch gradient is
batch_size / num_data of one) plus the sampler's start and warmup;
info["ensemble_grad_evals"] the training alone.

With run_dir the ensemble trains into run_dir/ensemble and the chains run in
run_dir/chains; both resume.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import jax
import numpy as np

from weightspace.samplers import target as target_lib
from weightspace.samplers import validation
from weightspace.samplers.baselines import deep_ensemble
from weightspace.samplers.mams import check_arguments as check_mams
from weightspace.samplers.mams import mams
from weightspace.samplers.mclmc import check_arguments as check_mclmc
from weightspace.samplers.mclmc import mclmc
from weightspace.samplers.trace import Trace

SAMPLERS = {"mclmc": mclmc, "mams": mams}
CHECKS = {"mclmc": check_mclmc, "mams": check_mams}
ENSEMBLE_DIR, CHAINS_DIR = "ensemble", "chains"


def ensemble_cost(members: Trace) -> np.ndarray:
    """(member,) full-batch-equivalent gradients each member's training cost."""
    cost = np.asarray(members.info.get("warmup_grad_evals", 0.0), np.float64)
    return cost + np.sum(np.asarray(members.stats["grad_evals"], np.float64), axis=1)


def mile(target, key, *, sampler: str = "mclmc", num_chains: int = 1, ensemble: dict,
         eval_x=None, run_dir=None, progress: bool = True, **sampler_kwargs) -> Trace:
    """MCLMC or MAMS chains started from deep-ensemble members; returns the
    sampler's `Trace` with the ensemble's cost added (module docstring).

    target: a Posterior (the members train on its minibatches).
    sampler: "mclmc" or "mams".
    ensemble: keyword arguments of `deep_ensemble` other than num_members
        (num_epochs, batch_size and learning_rate are required).
    sampler_kwargs: those of the sampler (num_samples, num_warmup, step_size,
        L, preconditioning, thin, ...), except init, which the members give.
    """
    validation.choice("sampler", sampler, tuple(SAMPLERS))
    if not target_lib.is_posterior(target):
        raise TypeError(f"target must be a Posterior (ws.models.posterior): the ensemble "
                        f"members train on its minibatches; got {type(target).__name__}")
    if not isinstance(ensemble, dict):
        raise TypeError(f"ensemble must be a dict of deep_ensemble arguments, got "
                        f"{ensemble!r}")
    if "init" in sampler_kwargs:
        raise TypeError("init is not an argument of mile: the chains start from the "
                        "ensemble members")
    for name in ("num_members", "eval_x", "run_dir", "progress"):
        if name in ensemble:
            raise TypeError(f"ensemble[{name!r}] is set by mile (num_members = num_chains)")
    # The chains' settings are checked before the ensemble trains.
    check = CHECKS[sampler]
    known = inspect.signature(check).parameters
    check(**{k: v for k, v in sampler_kwargs.items() if k in known})
    num_chains = validation.positive_int("num_chains", num_chains)
    key = validation.prng_key("key", key)
    key_members, key_chains = jax.random.split(key)
    root = None if run_dir is None else Path(run_dir)
    members = deep_ensemble(target, key_members, num_chains, **ensemble,
                            run_dir=None if root is None else root / ENSEMBLE_DIR,
                            progress=progress)
    starts = jax.tree.map(lambda x: np.asarray(x[:, -1]), members.positions)
    trace = SAMPLERS[sampler](target, key_chains, init=starts, num_chains=num_chains,
                              eval_x=eval_x, run_dir=None if root is None
                              else root / CHAINS_DIR, progress=progress, **sampler_kwargs)
    trained = ensemble_cost(members)
    trace.info["ensemble_grad_evals"] = trained
    trace.info["warmup_grad_evals"] = (
        np.asarray(trace.info.get("warmup_grad_evals", 0.0), np.float64) + trained)
    trace.info["sampler"] = f"mile ({sampler})"
    return trace
