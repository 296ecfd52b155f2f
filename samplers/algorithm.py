"""The sampler protocol: what a sampler gives the driver.

A sampler is a kernel (pure functions over NamedTuple states, e.g.
`samplers/hmc.py`'s `init` and `build_kernel`) plus one `Algorithm`: how to
start the chains' carry, one warmup transition, one kept draw, where the
position is in the carry, the settings that identify a run, and run facts for
`Trace.info`. Everything that is the same for every sampler (argument checks,
the target, keys, chains and mesh, start positions, eval inputs, the run
fingerprint, run directory and exact resume, thinning, progress, gradient
counts) is the driver's (`samplers/driver.py`, `driver.sample`).

The carry holds every array the chains need to continue, leading axis = chain;
it is checkpointed as is. Steps see ONE chain's carry (the driver vmaps them
over chains and spreads chains along the mesh's "chain" axis) and return

    (carry, stats, grad_evals)

stats: a dict (or NamedTuple) of scalars recorded per draw; grad_evals: the
full-batch-equivalent gradient evaluations the step cost (a minibatch gradient
counts batch_size / num_data), recorded as the draw's stat "grad_evals" and
summed over warmup into `Trace.info["warmup_grad_evals"]`. Randomness must be a
function of the transition index t (fold keys with t), so that a resumed run
repeats an uninterrupted one.

Modelled on blackjax's `SamplingAlgorithm` (init, step) and numpyro's
`MCMCKernel`; the extra fields are what running chains for days on a pod needs
(identity of a run for resume, cost accounting, draw placement).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """What a sampler gives `driver.sample`.

    name: the run config's "sampler" field and the progress bar's label.
    init(tree, positions, *keys) -> (carry, grad_evals): the chains' carry from
        start positions (leaves (chain, ...)) and `num_keys` PRNG keys of the
        sampler's own; grad_evals (chain,) is what starting cost (e.g. HMC's
        first gradient and its step-size search). Jitted by the driver.
    warmup_step(tree, carry, t) -> (carry, stats, grad_evals): warmup
        transition t of one chain (stats are shown, not stored).
    sample_step(tree, carry, t) -> (carry, stats, grad_evals): one kept draw of
        one chain, from transition t (`thin` transitions, or up to
        draw_end's next end).
    position(carry) -> the position pytree (for one chain or all).
    settings: what identifies a run besides the driver's own fields (sampler,
        chains, samples, warmup, thin, key, init, eval inputs, target, mesh): a
        JSON-able dict, compared on resume (only num_samples may grow).
    info(carry) -> dict of run facts for Trace.info (carry of all chains).
    num_keys: PRNG keys `init` takes.
    draw_end: j -> last transition of kept draw j (host ints) when draws are
        not evenly thinned (cyclical schedules); None: every `thin` transitions.
    replicas: carry slots per chain. With 1 (every sampler but replica
        exchange) the steps see one chain's carry and the driver vmaps them.
        With more, the carry's leading axis holds num_chains * replicas slots
        (spread along the mesh's "chain" axis), the steps see all of them (they
        vmap over slots themselves, e.g. with `driver.slot_vmap`, and may
        exchange scalars between slots) and return stats and grad_evals per
        chain (num_chains,); `position` gives each chain's kept position.
    """

    name: str
    init: Callable[..., tuple[Any, jax.Array]]
    warmup_step: Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]
    sample_step: Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]
    position: Callable[[Any], Any]
    settings: dict
    info: Callable[[Any], dict] = lambda carry: {}
    num_keys: int = 1
    draw_end: Callable[[int], int] | None = None
    replicas: int = 1
