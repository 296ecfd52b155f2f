"""Replica exchange (parallel tempering) with HMC or MAMS moves, leaf by leaf.

Each chain runs K tempered replicas, replica at rung k sampling

    p_k(w) ∝ exp(beta_k (log p(w) - log r(w)) + log r(w)),
    1 = beta_0 > beta_1 > ... > beta_{K-1} >= 0,

with r the reference: a Posterior's prior (the hottest rung may then be
beta = 0, the prior itself), a callable target's `reference`, or none
(r = 1, and the hottest beta must be > 0). Rung 0 is the posterior; its
draws are the chain's.

A transition: one gradient of log p (and of log r) at every replica's
position; one round of swaps between neighbouring rungs; one move per replica
at its rung's temperature and step size (identity mass), either

- "hmc": an HMC trajectory of fixed length, the same number of leapfrog
  steps at every rung, trajectory_length / rung 0's step size; or
- "mams": a Metropolis-adjusted microcanonical trajectory (`ws.samplers.mams`'s
  kernel: isokinetic dynamics, McLachlan integrator, 2 gradients a step), its
  number of steps drawn afresh per replica with mean trajectory_length /
  rung 0's step size (Robnik et al. 2025's randomization). MAMS's step size
  and length are in the isokinetic velocity's units (|v| = 1 over all d
  weights), sqrt(d) times HMC's for the same motion per coordinate; the
  defaults scale by it. Swaps follow the non-reversible scheme of Syed, Bouchard-Cote,
Deligiannidis and Doucet 2021 ("Non-reversible parallel tempering", JRSS B
84): even transitions propose the pairs (0,1), (2,3), ..., odd ones (1,2),
(3,4), ...; the pair (k, k+1) swaps with probability
min(1, exp((beta_k - beta_{k+1}) (l_{k+1} - l_k))), l = log p - log r. Each
swap, and each HMC move, leaves the joint law of the replicas invariant, so
rung 0 samples the posterior exactly once warmup has stopped adapting.

A swap exchanges the two replicas' rungs, that is their temperatures, not
their weights: the replicas are slots of the carry, spread along the mesh's
"chain" axis, and only scalars (l, rungs, acceptance) cross devices. The
gradient at the start of every trajectory is computed afresh because the
replica's temperature may have changed: one gradient per transition more
than plain HMC.

Warmup: every rung's step size by dual averaging to `target_accept`; the
ladder is refitted after rounds of warmup that double in length (ending at
1/16, 1/8, 1/4, 1/2 and 3/4 of it) so that every neighbouring pair rejects
swaps equally often (Syed et al. 2021, Sec. 5: the cumulative
rejection rate Lambda(beta) is interpolated linearly in beta and the new
betas are equally spaced in Lambda), which maximizes round trips for a given
number of rungs. A swap rate s between all neighbours needs about
1 + Lambda / (1 - s) rungs; `info["rungs_for_swap_rate"]` reports it for
`target_swap_rate`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.samplers import adaptation as adaptation_lib
from weightspace.samplers import driver, isokinetic, validation
from weightspace.samplers import target as target_lib
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.hmc import DIVERGENCE_THRESHOLD, HMCState, _find_step_size
from weightspace.samplers.hmc import build_kernel as hmc_kernel
from weightspace.samplers.hmc import init as hmc_init
from weightspace.samplers.hmc import num_integration_steps
from weightspace.samplers.mams import GRADIENTS_PER_STEP as MAMS_GRADIENTS_PER_STEP
from weightspace.samplers.mams import TARGET_ACCEPT as MAMS_TARGET_ACCEPT
from weightspace.samplers.mams import MAMSState, num_steps_of
from weightspace.samplers.mams import build_kernel as mams_kernel

# Fractions of warmup at which the ladder is refitted, from the swaps of the
# round just ended: rounds that double (Syed et al. 2021, Sec. 5.3), and the
# last quarter for the step sizes at the final ladder.
REFIT_AT = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4)
MIN_WARMUP = 50             # transitions the warmup schedule needs
COLDEST_WITHOUT_ZERO = 1e-3  # hottest beta but one of the first ladder when beta_min = 0
TARGET_SWAP_RATE = 0.5      # what info["rungs_for_swap_rate"] is computed for
MOVES = ("hmc", "mams")
TARGET_ACCEPT = {"hmc": 0.8, "mams": MAMS_TARGET_ACCEPT}  # Stan's; Robnik et al. 2025


class ReplicaChains(NamedTuple):
    """The carry: one slot per replica, slot c * K + j is replica j of chain c
    (leading axis = slots). Per-chain tables (the ladder, step sizes, swap
    counts) are copied into each of the chain's slots and kept identical."""

    key_data: jax.Array          # (S, key): the slot's PRNG key
    position: Any                # pytree, leaves (S, ...)
    rung: jax.Array              # (S,) the slot's rung (0 = posterior)
    betas: jax.Array             # (S, K) the chain's ladder
    log_step_size: jax.Array     # (S, K) per rung, in use
    dual_averaging: Any          # DualAveragingState, leaves (S, K)
    rejected: jax.Array          # (S, K-1) summed swap rejection probabilities
    proposed: jax.Array          # (S, K-1) swaps proposed
    round_trips: jax.Array       # (S,) the slot's trips rung 0 -> K-1 -> 0
    heading: jax.Array           # (S,) 0 none yet, 1 left rung 0 last, 2 left rung K-1 last


def initial_ladder(num_temperatures: int, min_beta: float) -> np.ndarray:
    """Geometric from 1 to min_beta; with min_beta = 0, geometric from 1 to
    COLDEST_WITHOUT_ZERO then 0."""
    k = num_temperatures
    if min_beta > 0:
        return min_beta ** (np.arange(k) / (k - 1))
    if k == 2:
        return np.array([1.0, 0.0])
    return np.concatenate([COLDEST_WITHOUT_ZERO ** (np.arange(k - 1) / (k - 2)), [0.0]])


def refit_ladder(betas, rejection):
    """Betas equally spaced in the cumulative rejection rate (Syed et al.
    2021, Sec. 5.2). betas (..., K) decreasing from 1; rejection (..., K-1)
    per neighbouring pair. The ends stay where they are."""
    lam = jnp.concatenate([jnp.zeros_like(rejection[..., :1]),
                           jnp.cumsum(jnp.maximum(rejection, 1e-6), axis=-1)], axis=-1)
    k = betas.shape[-1]
    grid = jnp.linspace(0.0, 1.0, k) * lam[..., -1:]

    def one(b, l, g):
        # l increases with the rung; b decreases. Interpolate b as a function of l.
        return jnp.interp(g, l, b)

    flat = lambda x: x.reshape(-1, x.shape[-1])
    new = jax.vmap(one)(flat(betas), flat(lam), flat(grid)).reshape(betas.shape)
    return new.at[..., 0].set(1.0).at[..., -1].set(betas[..., -1])


def replica_exchange(target, key, *, init=None, num_chains: int = 1,
                     num_temperatures: int = 8, num_samples: int, num_warmup: int = 0,
                     min_beta: float | None = None, reference: Callable | None = None,
                     step_size: float | None = None, trajectory_length: float | None = None,
                     max_num_steps: int = 1000, target_accept: float | None = None,
                     moves: str = "hmc", thin: int = 1, eval_x=None, predict_fn=None, mesh=None, run_dir=None,
                     checkpoint_every: int = 10, checkpoint_seconds: float = 300.0,
                     divergence_threshold: float = DIVERGENCE_THRESHOLD,
                     progress: bool = True):
    """Replica-exchange HMC chains (module docstring); returns a `Trace` of
    each chain's rung-0 (posterior) replica.

    target, init, num_chains, eval_x, predict_fn, mesh, run_dir,
        checkpoint_every, checkpoint_seconds, progress, max_num_steps,
        target_accept, divergence_threshold: as `ws.samplers.hmc`.
    num_temperatures: rungs per chain, K >= 2 (K * num_chains replicas in all,
        spread along the mesh's "chain" axis).
    min_beta: the hottest rung's inverse temperature, in [0, 1): default 0
        (the reference itself) when there is a reference (a Posterior's prior,
        or `reference`); a callable target without one needs min_beta > 0.
    reference: for a callable target, log r(position), the part left
        untempered (e.g. the log prior); a Posterior's is its log prior. Its
        gradient is counted as free, as a prior's is next to the likelihood's.
    step_size: the first step size of every rung (default: Hoffman and
        Gelman's heuristic at each rung); with num_warmup = 0 the fixed one.
    trajectory_length: at rung 0, as `hmc` (MAMS: the mean, default hmc's
        times sqrt(d)); every rung takes the same (mean) number of steps, so a
        hotter rung's trajectory is longer in proportion to its step size.
    moves: "hmc" or "mams" (module docstring).
    target_accept: of every rung's dual averaging (default 0.8 for HMC, 0.9
        for MAMS).
    num_warmup: transitions that adapt step sizes and the ladder, at least
        50 (or 0 with step_size given: a fixed geometric ladder).

    Stats per draw (of rung 0): accept_prob, is_accepted (the posterior
    replica moved: its trajectory was accepted or a swap brought another
    state in), is_divergent, num_steps, step_size, logdensity, swap_rate
    (mean acceptance of the swaps proposed in the draw), grad_evals (every
    replica's: one per leapfrog step plus one per transition).
    info: betas, step_size (chain, K), swap_rate (chain, K-1) over sampling,
    round_trips (chain,) and per replica (chain, K), communication_barrier
    (chain,), rungs_for_swap_rate (chain,): rungs an equal swap rate of
    TARGET_SWAP_RATE would need.
    """
    k = validation.int_at_least("num_temperatures", num_temperatures, 2)
    validation.positive_int("max_num_steps", max_num_steps)
    validation.positive_float("divergence_threshold", divergence_threshold)
    validation.choice("moves", moves, MOVES)
    if target_accept is None:
        target_accept = TARGET_ACCEPT[moves]
    validation.probability("target_accept", target_accept)
    validation.int_at_least("num_warmup", num_warmup, 0)
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    if num_warmup == 0 and step_size is None:
        raise ValueError("step_size=None is not allowed with num_warmup=0: give a fixed "
                         "step size, or num_warmup >= 50 to adapt one per rung")
    if 0 < num_warmup < MIN_WARMUP:
        raise ValueError(f"num_warmup={num_warmup} is too short to adapt the ladder and "
                         f"step sizes: use num_warmup >= {MIN_WARMUP} (or 0)")
    if reference is not None and not callable(reference):
        raise TypeError(f"reference must be a callable log r(position), got "
                        f"reference={reference!r}")
    if min_beta is not None and (isinstance(min_beta, bool) or not 0 <= min_beta < 1):
        raise ValueError(f"min_beta={min_beta!r} is not allowed: it must lie in [0, 1)")

    def build(tgt) -> Algorithm:
        if tgt.posterior is not None:
            if reference is not None:
                raise ValueError("reference is only for a callable target: a Posterior's "
                                 "reference is its prior")
            reference_of = lambda post: (lambda q: post.log_prior(q) / post.temperature)
        elif reference is not None:
            reference_of = lambda _: reference
        else:
            reference_of = None
        beta_min = min_beta
        if beta_min is None:
            if reference_of is None:
                raise ValueError("min_beta=None is not allowed for a callable target without "
                                 "a reference: give min_beta > 0, or reference=log prior")
            beta_min = 0.0
        if beta_min == 0 and reference_of is None:
            raise ValueError("min_beta=0 is not allowed without a reference: the target "
                             "tempered to beta = 0 is flat; give min_beta > 0 or reference")
        if tgt.mesh is not None and "chain" in tgt.mesh.axis_names:
            size = tgt.mesh.shape["chain"]
            if (num_chains * k) % size:
                raise ValueError(f"num_chains * num_temperatures = {num_chains * k} is not "
                                 f"allowed on a mesh whose 'chain' axis has {size} devices: "
                                 f"use a multiple of {size}")
        length = trajectory_length
        if length is None:
            length = target_lib.default_trajectory_length(tgt)
        length = validation.positive_float("trajectory_length", length)
        name = ("prior" if tgt.posterior is not None else
                None if reference is None else target_lib.callable_name(reference))
        return algorithm(tgt.logdensity_of, reference_of, mesh=tgt.mesh, reference_name=name,
                         num_chains=num_chains, num_temperatures=k, num_warmup=num_warmup,
                         min_beta=float(beta_min), step_size=step_size,
                         trajectory_length=length, max_num_steps=max_num_steps,
                         target_accept=target_accept, thin=thin,
                         divergence_threshold=divergence_threshold, moves=moves,
                         scale_length=moves == "mams" and trajectory_length is None)

    return driver.sample(build, target, key, init=init, num_chains=num_chains,
                         num_samples=num_samples, num_warmup=num_warmup, thin=thin,
                         eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                         checkpoint_every=checkpoint_every,
                         checkpoint_seconds=checkpoint_seconds, progress=progress)


def _by_chain(x, num_chains: int):
    """(S, ...) -> (num_chains, K, ...)."""
    return x.reshape(num_chains, -1, *x.shape[1:])


def _to_slots(x, k: int):
    """(num_chains, ...) -> (S, ...): the chain's value in each of its K slots."""
    return jnp.repeat(x, k, axis=0)


def algorithm(logdensity_of: Callable, reference_of: Callable | None, *, mesh,
              reference_name: str | None = None,
              num_chains: int, num_temperatures: int, num_warmup: int, min_beta: float,
              step_size: float | None, trajectory_length: float, max_num_steps: int,
              target_accept: float, thin: int, divergence_threshold: float,
              moves: str = "hmc", scale_length: bool = False) -> Algorithm:
    """Replica exchange for the driver (arguments checked by `replica_exchange`).
    scale_length: MAMS with the default length, trajectory_length is in HMC's
    units and is multiplied by sqrt(d)."""
    k = num_temperatures
    mams_moves = moves == "mams"

    def units(position_of_one_slot) -> float:
        """HMC's step sizes and lengths to the moves' units (static)."""
        return math.sqrt(isokinetic.dimension(position_of_one_slot)) if mams_moves else 1.0

    def length_of(position_of_one_slot) -> float:
        return trajectory_length * (units(position_of_one_slot) if scale_length else 1.0)

    slots = num_chains * k
    refits = sorted({int(round(f * num_warmup)) - 1 for f in REFIT_AT}) if num_warmup else []
    zero_reference = lambda q: jnp.zeros((), jnp.float32)

    def parts(tree):
        """(log p, log r) inside the jitted steps."""
        return logdensity_of(tree), (zero_reference if reference_of is None
                                     else reference_of(tree))

    def tempered(tree, beta):
        logp, logr = parts(tree)
        return lambda q: beta * (logp(q) - logr(q)) + logr(q)

    def init(tree, positions, key_chains, key_step):
        position = jax.tree.map(lambda x: _to_slots(x, k), positions)
        key_data = jax.random.key_data(jax.random.split(key_chains, slots))
        rung = jnp.tile(jnp.arange(k, dtype=jnp.int32), num_chains)
        ladder = jnp.asarray(initial_ladder(k, min_beta), jnp.float32)
        betas = jnp.tile(ladder, (slots, 1))
        cost = jnp.zeros((num_chains,), jnp.float32)
        if step_size is None:
            def search(q, beta, key):
                fn = tempered(tree, beta)
                state = hmc_init(q, fn)
                eps, tries = _find_step_size(fn, key, state, length_of(q) / units(q))
                return eps, tries + 1.0

            eps, spent = driver.slot_vmap(search, mesh)(
                position, ladder[rung], jax.random.split(key_step, slots))
            eps = eps * units(jax.tree.map(lambda x: x[0], position))
            # each chain's rung j starts from its slot j's search
            log_eps = jnp.log(_by_chain(eps, num_chains))          # (C, K) by rung
            cost = _by_chain(spent, num_chains).sum(axis=1)
        else:
            log_eps = jnp.full((num_chains, k), math.log(step_size), jnp.float32)
        log_eps = _to_slots(log_eps, k)
        averaging = jax.vmap(jax.vmap(adaptation_lib.dual_averaging_init))(jnp.exp(log_eps))
        zeros = jnp.zeros((slots, k - 1), jnp.float32)
        carry = ReplicaChains(key_data, position, rung, betas, log_eps, averaging, zeros,
                              zeros, jnp.zeros((slots,), jnp.int32),
                              jnp.zeros((slots,), jnp.int32))
        return carry, cost

    def transition(tree, c: ReplicaChains, t, adapting: bool):
        logp_fn, logr_fn = parts(tree)
        keys = jax.vmap(lambda d: jax.random.fold_in(jax.random.wrap_key_data(d), t))(
            c.key_data)
        move_keys = jax.vmap(lambda key: jax.random.fold_in(key, 0))(keys)
        swap_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(
            _by_chain(keys, num_chains)[:, 0])

        # 1. log p and log r with their gradients where the replicas stand.
        logp, grad_p = driver.slot_vmap(jax.value_and_grad(logp_fn), mesh)(c.position)
        logr, grad_r = driver.slot_vmap(jax.value_and_grad(logr_fn), mesh)(c.position)
        ell = logp - logr

        # 2. One round of swaps, by chain: scalars only.
        betas = _by_chain(c.betas, num_chains)[:, 0]                  # (C, K)
        rung = _by_chain(c.rung, num_chains)                          # (C, K) by slot
        order = jnp.argsort(rung, axis=1)                             # slot at each rung
        ell_at = jnp.take_along_axis(_by_chain(ell, num_chains), order, axis=1)
        log_alpha = (betas[:, :-1] - betas[:, 1:]) * (ell_at[:, 1:] - ell_at[:, :-1])
        alpha = jnp.where(jnp.isfinite(log_alpha), jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0)
        pairs = (jnp.arange(k - 1) % 2) == (t % 2)
        u = jax.vmap(lambda key: jax.random.uniform(key, (k - 1,)))(swap_keys)
        swap = pairs & (u < alpha)                                    # (C, K-1)
        shift = (jnp.pad(swap, ((0, 0), (0, 1))).astype(jnp.int32)
                 - jnp.pad(swap, ((0, 0), (1, 0))).astype(jnp.int32))
        order = jnp.take_along_axis(order, jnp.arange(k) + shift, axis=1)
        new_rung = jnp.argsort(order, axis=1).astype(jnp.int32)      # rung of each slot
        rejected = _by_chain(c.rejected, num_chains)[:, 0] + jnp.where(pairs, 1.0 - alpha, 0.0)
        proposed = _by_chain(c.proposed, num_chains)[:, 0] + pairs
        rung = new_rung.reshape(-1)
        came_back = (rung == 0) & (c.heading == 2)
        heading = jnp.where(rung == 0, 1, jnp.where(rung == k - 1, 2, c.heading))
        round_trips = c.round_trips + came_back

        # 3. An HMC trajectory per replica at its rung's temperature.
        beta = jnp.take_along_axis(c.betas, rung[:, None], axis=1)[:, 0]
        log_eps = (c.dual_averaging.log_step_size if adapting else c.log_step_size)
        eps = jnp.exp(jnp.take_along_axis(log_eps, rung[:, None], axis=1)[:, 0])

        # The same number of leapfrog steps at every rung (the replicas run in
        # lockstep), set by rung 0: hotter rungs' trajectories are longer by
        # their step size, as their distributions are wider.
        cold_eps = jnp.exp(log_eps[:, 0])
        length = length_of(jax.tree.map(lambda x: x[0], c.position))
        n = num_integration_steps(length, cold_eps, max_num_steps)     # (S,)

        def move(key, q, lp, gp, lr, gr, b, e, n):
            fn = tempered(tree, b)
            value = b * lp + (1.0 - b) * lr
            grad = jax.tree.map(lambda x, y: b * x + (1.0 - b) * y, gp, gr)
            if mams_moves:
                # n is the mean; each replica draws its own number of steps.
                key_n, key = jax.random.split(key)
                steps = num_steps_of(key_n, n.astype(jnp.float32), max_num_steps)
                kernel = mams_kernel(fn, divergence_threshold=divergence_threshold)
                new, info = kernel(key, MAMSState(q, value, grad), e, steps)
                return new, info
            kernel = hmc_kernel(fn, divergence_threshold=divergence_threshold)
            return kernel(key, HMCState(q, value, grad), e, n)

        new, info = driver.slot_vmap(move, mesh)(move_keys, c.position, logp, grad_p, logr,
                                                 grad_r, beta, eps, n)
        per_step = MAMS_GRADIENTS_PER_STEP if mams_moves else 1.0
        c = c._replace(position=new.position, rung=rung, rejected=_to_slots(rejected, k),
                       proposed=_to_slots(proposed, k), round_trips=round_trips,
                       heading=heading)
        cold = jnp.arange(num_chains) * k + order[:, 0]              # slot at rung 0
        stats = {"accept_prob": info.accept_prob[cold],
                 "is_accepted": info.is_accepted[cold] | swap[:, 0],
                 "is_divergent": info.is_divergent[cold], "num_steps": info.num_steps[cold],
                 "step_size": eps[cold], "logdensity": info.logdensity[cold],
                 "swap_rate": jnp.sum(jnp.where(pairs, alpha, 0.0), axis=1)
                 / jnp.maximum(jnp.sum(pairs), 1)}
        cost = _by_chain(per_step * info.num_steps.astype(jnp.float32) + 1.0,
                         num_chains).sum(axis=1)
        accept_by_rung = jnp.take_along_axis(_by_chain(info.accept_prob, num_chains), order,
                                             axis=1)
        return c, stats, cost, accept_by_rung

    def warmup_step(tree, c: ReplicaChains, t):
        c, stats, cost, accept = transition(tree, c, t, True)
        averaging = jax.tree.map(lambda x: _by_chain(x, num_chains)[:, 0], c.dual_averaging)
        averaging = jax.vmap(jax.vmap(lambda s, a: adaptation_lib.dual_averaging_update(
            s, a, target_accept)))(averaging, accept)
        betas = _by_chain(c.betas, num_chains)[:, 0]
        rejection = (_by_chain(c.rejected, num_chains)[:, 0]
                     / jnp.maximum(_by_chain(c.proposed, num_chains)[:, 0], 1.0))
        refit = jnp.isin(t, jnp.asarray(refits, jnp.int32)) if refits else jnp.bool_(False)
        betas = jnp.where(refit, refit_ladder(betas, rejection), betas)
        # A new ladder moves every rung's temperature: restart dual averaging
        # from the step sizes reached, and the swap counts.
        restarted = jax.vmap(jax.vmap(adaptation_lib.dual_averaging_init))(
            jnp.exp(averaging.log_step_size))
        averaging = adaptation_lib.select(refit, restarted, averaging)
        last = t == num_warmup - 1
        final_eps = jnp.where(last, averaging.log_step_size_avg, averaging.log_step_size)
        zeros = jnp.zeros_like(c.rejected)
        c = c._replace(
            betas=_to_slots(betas, k), dual_averaging=jax.tree.map(
                lambda x: _to_slots(x, k), averaging),
            log_step_size=_to_slots(final_eps, k),
            rejected=jnp.where(refit | last, zeros, c.rejected),
            proposed=jnp.where(refit | last, zeros, c.proposed),
            round_trips=jnp.where(last, 0, c.round_trips),
            heading=jnp.where(last, 0, c.heading))
        return c, stats, cost

    def sample_step(tree, c: ReplicaChains, t):
        def body(c, j):
            c, stats, cost, _ = transition(tree, c, t + j, False)
            return c, (stats, cost)

        c, (stats, cost) = jax.lax.scan(body, c, jnp.arange(thin))
        last = jax.tree.map(lambda x: x[-1], stats)
        last["accept_prob"] = jnp.mean(stats["accept_prob"], axis=0)
        last["is_divergent"] = jnp.any(stats["is_divergent"], axis=0)
        last["is_accepted"] = jnp.any(stats["is_accepted"], axis=0)
        last["swap_rate"] = jnp.mean(stats["swap_rate"], axis=0)
        return c, last, jnp.sum(cost, axis=0)

    def position(c: ReplicaChains):
        cold = jnp.arange(num_chains) * k + jnp.argmin(_by_chain(c.rung, num_chains), axis=1)
        return jax.tree.map(lambda x: x[cold], c.position)

    def info(c: ReplicaChains) -> dict:
        host = lambda x: np.asarray(driver.to_host(x))
        first = lambda x: host(_by_chain(x, num_chains)[:, 0])
        rate = 1.0 - first(c.rejected) / np.maximum(first(c.proposed), 1.0)
        barrier = np.sum(1.0 - rate, axis=-1)
        return {"betas": first(c.betas), "step_size": np.exp(first(c.log_step_size)),
                "swap_rate": rate, "communication_barrier": barrier,
                "rungs_for_swap_rate": np.ceil(1.0 + barrier / (1.0 - TARGET_SWAP_RATE)),
                "round_trips_per_replica": host(_by_chain(c.round_trips, num_chains)),
                "round_trips": host(_by_chain(c.round_trips, num_chains)).sum(axis=1),
                "trajectory_length": length_of(jax.tree.map(lambda x: x[0], c.position)),
                "moves": moves}

    settings = {"num_temperatures": k, "min_beta": min_beta, "step_size": step_size,
                "trajectory_length": trajectory_length, "max_num_steps": max_num_steps,
                "target_accept": target_accept, "divergence_threshold": divergence_threshold,
                "reference": reference_name}
    if mams_moves:  # runs with HMC moves keep the settings (and run directories) they had
        settings["moves"] = moves
    return Algorithm(name="replica_exchange", init=init, warmup_step=warmup_step,
                     sample_step=sample_step, position=position, settings=settings,
                     info=info, num_keys=2, replicas=k)
