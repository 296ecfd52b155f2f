"""Metropolis-adjusted microcanonical sampling (MAMS), leaf by leaf.

Robnik, Cohn-Gordon and Seljak 2025 ("Metropolis Adjusted Microcanonical
Hamiltonian Monte Carlo"): a transition draws a velocity uniformly on the
unit sphere, runs n minimal-norm isokinetic steps (`samplers/isokinetic.py`,
two gradients each) and accepts the end point with probability
min(1, exp(-W)), W = log p(x) - log p(x') + dK the energy error. The map is
volume-preserving up to the kinetic term and reversible, so the chain's
stationary law is the target exactly. n is random with mean L / eps:
n = ceil(U s) with U ~ Uniform(0, 1) and s chosen so that E[n] = L / eps
(a random trajectory length avoids the resonances of a fixed one).

Warmup (num_warmup transitions) follows the authors' current pipeline
(blackjax's `alba_adjusted`, used by their sampler-comparison code): the
chains first run unadjusted MCLMC with its whole tuning schedule
(`ws.samplers.mclmc`: travel, moments, step size from the energy error, L from
the autocorrelation time), then MAMS transitions tune the step size by dual
averaging towards target_accept (0.9, as the authors recommend) with the
steps per trajectory that MCLMC found (L follows the step size); sampling uses
the average. The last num_adjusted_warmup transitions are MAMS's (default: a
tenth), the rest MCLMC's, one minimal-norm step each. From an initializer,
short Metropolis-adjusted trajectories with a fresh velocity each relax
diffusively (on the digits MLP our earlier all-MAMS warmup left the log density
600 above its typical value after 10,000 gradients); MCLMC's partially
refreshed velocity carries the chain across, and its transitions cost two
gradients where MAMS's cost tens.
A trajectory whose energy error is not finite or exceeds the divergence
threshold stops early and is rejected.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.samplers import adaptation as adaptation_lib
from weightspace.samplers import driver, isokinetic, validation
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.hmc import DIVERGENCE_THRESHOLD
from weightspace.samplers.mclmc import (DESIRED_ENERGY_VAR, MIN_WARMUP, PRECONDITIONINGS,
                                        MCLMCChains)
from weightspace.samplers.mclmc import algorithm as mclmc_algorithm

TARGET_ACCEPT = 0.9      # Robnik, Cohn-Gordon and Seljak 2025
GRADIENTS_PER_STEP = 2.0


class MAMSState(NamedTuple):
    position: Any
    logdensity: jax.Array
    logdensity_grad: Any


class MAMSInfo(NamedTuple):
    accept_prob: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    energy_error: jax.Array
    num_steps: jax.Array
    logdensity: jax.Array


def init(position, logdensity_fn: Callable) -> MAMSState:
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return MAMSState(position, value, grad)


def mean_steps_scale(mean_steps):
    """s such that n = ceil(U s), U ~ Uniform(0, 1), has E[n] = mean_steps (>= 1).

    For s in [k, k + 1), n takes 1..k with probability 1/s each and k + 1 with
    (s - k)/s, so E[n] = (k(k + 1)/2 + (k + 1)(s - k)) / s; solving E[n] = mu
    gives s = k(k + 1) / (2(k + 1 - mu)), which lies in [k, k + 1) for
    k = floor(2 mu - 1)."""
    mu = jnp.maximum(mean_steps, 1.0)
    k = jnp.floor(2 * mu - 1)
    return k * (k + 1) / (2 * (k + 1 - mu))


def num_steps_of(key, mean_steps, max_num_steps: int):
    s = mean_steps_scale(mean_steps)
    n = jnp.ceil(jax.random.uniform(key) * s)
    return jnp.clip(jnp.nan_to_num(n, nan=1.0, posinf=max_num_steps), 1,
                    max_num_steps).astype(jnp.int32)


def build_kernel(logdensity_fn: Callable, *,
                 divergence_threshold: float = DIVERGENCE_THRESHOLD):
    """One MAMS transition:

        step(key, state, step_size, num_steps, inverse_mass=None) -> (state, MAMSInfo)
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def step(key, state: MAMSState, step_size, num_steps, inverse_mass=None):
        dim = isokinetic.dimension(state.position)
        sqrt_m = isokinetic.sqrt_inverse_mass_of(inverse_mass)
        key_velocity, key_accept = jax.random.split(key)
        start = isokinetic.IsokineticState(
            state.position, isokinetic.random_unit_velocity(key_velocity, state.position),
            state.logdensity, state.logdensity_grad)
        dtype = jnp.result_type(state.logdensity)

        def diverged(error):
            return ~jnp.isfinite(error) | (error > divergence_threshold)

        def cond(carry):
            i, _, _, error = carry
            return (i < num_steps) & ~diverged(error)

        def body(carry):
            i, s, kinetic, _ = carry
            s, dk = isokinetic.mclachlan_step(value_and_grad, s, step_size, sqrt_m, dim)
            kinetic = kinetic + dk
            error = state.logdensity - s.logdensity + kinetic
            return i + 1, s, kinetic, error

        zero = jnp.zeros((), dtype)
        steps, end, _, error = jax.lax.while_loop(cond, body,
                                                  (jnp.zeros((), jnp.int32), start, zero,
                                                   zero))
        divergent = diverged(error) | ~isokinetic.all_finite(end)
        accept_prob = jnp.where(divergent, 0.0, jnp.minimum(1.0, jnp.exp(-error)))
        u = jax.random.uniform(key_accept, dtype=accept_prob.dtype)
        accepted = ~divergent & (u < accept_prob)
        proposal = MAMSState(end.position, end.logdensity, end.logdensity_grad)
        new = adaptation_lib.select(accepted, proposal, state)
        info = MAMSInfo(accept_prob=accept_prob, is_accepted=accepted, is_divergent=divergent,
                        energy_error=error, num_steps=steps, logdensity=new.logdensity)
        return new, info

    return step


class MAMSChains(NamedTuple):
    """What one chain carries (leading axis = chain across chains): the
    unadjusted chain of warmup's first phase, whose state holds the position
    throughout (its velocity is unused once MAMS runs), and MAMS's own tuning."""

    travel: MCLMCChains
    step_size: jax.Array
    L: jax.Array
    dual_averaging: adaptation_lib.DualAveragingState


def default_adjusted_warmup(num_warmup: int, step_size, L, preconditioning: str) -> int:
    """MAMS's warmup transitions when not given: a tenth of the warmup when the
    step size is tuned; none when only L or the metric is (MCLMC fits them);
    all when nothing is tuned (there is nothing for MCLMC to do)."""
    if step_size is None:
        return max(1, num_warmup // 10) if num_warmup else 0
    return 0 if (L is None or preconditioning == "diagonal") else num_warmup


def check_warmup(num_warmup: int, num_adjusted_warmup: int, step_size, L,
                 preconditioning: str) -> None:
    """What MAMS's two warmup phases need, checked before tracing."""
    if num_adjusted_warmup > num_warmup:
        raise ValueError(f"num_adjusted_warmup={num_adjusted_warmup} exceeds "
                         f"num_warmup={num_warmup}: it counts the last warmup transitions")
    if step_size is None and num_warmup and num_adjusted_warmup == 0:
        raise ValueError("num_adjusted_warmup=0 leaves MAMS's step size untuned: give "
                         "step_size, or num_adjusted_warmup >= 1")
    needs = ["L"] if L is None else []
    if preconditioning == "diagonal":
        needs.append("preconditioning='diagonal'")
    num_travel = num_warmup - num_adjusted_warmup
    if needs and num_travel < MIN_WARMUP:
        raise ValueError(
            f"num_warmup={num_warmup} with num_adjusted_warmup={num_adjusted_warmup} is "
            f"too short to tune {', '.join(needs)}: the MCLMC phase (num_warmup - "
            f"num_adjusted_warmup = {num_travel} transitions) needs >= {MIN_WARMUP}; raise "
            f"num_warmup or lower num_adjusted_warmup, or give L with "
            f"preconditioning='none'")


def check_arguments(*, num_warmup: int = 0, num_adjusted_warmup: int | None = None,
                    step_size=None, L=None, preconditioning: str = "none",
                    target_accept: float = TARGET_ACCEPT, max_num_steps: int = 1000,
                    divergence_threshold: float = DIVERGENCE_THRESHOLD) -> dict:
    """`mams`'s tuning arguments checked and resolved (num_adjusted_warmup's
    default filled in), before anything is traced; `mile` calls it before it
    trains the ensemble."""
    validation.choice("preconditioning", preconditioning, PRECONDITIONINGS)
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    if L is not None:
        L = validation.positive_float("L", L)
    validation.probability("target_accept", target_accept)
    validation.positive_int("max_num_steps", max_num_steps)
    validation.positive_float("divergence_threshold", divergence_threshold)
    validation.int_at_least("num_warmup", num_warmup, 0)
    if num_adjusted_warmup is None:
        num_adjusted_warmup = default_adjusted_warmup(num_warmup, step_size, L,
                                                      preconditioning)
    validation.int_at_least("num_adjusted_warmup", num_adjusted_warmup, 0)
    check_warmup(num_warmup, num_adjusted_warmup, step_size, L, preconditioning)
    return {"num_adjusted_warmup": num_adjusted_warmup, "step_size": step_size, "L": L}


def algorithm(logdensity_of: Callable, *, num_chains: int, num_warmup: int,
              num_adjusted_warmup: int, step_size: float | None, L: float | None,
              preconditioning: str, target_accept: float, max_num_steps: int, thin: int,
              divergence_threshold: float) -> Algorithm:
    """MAMS for the driver (arguments checked by `mams`)."""
    tune_step = step_size is None
    num_travel = num_warmup - num_adjusted_warmup
    # The MCLMC phase tunes its own step size (to MCLMC's energy target);
    # without that phase, MCLMC's first search only seeds dual averaging.
    travel = mclmc_algorithm(
        logdensity_of, num_chains=num_chains, num_warmup=num_travel,
        step_size=None if (num_travel or tune_step) else step_size, L=L,
        preconditioning=preconditioning, desired_energy_var=DESIRED_ENERGY_VAR, thin=1)

    def init(tree, positions, key_chains, key_step):
        chains, cost = travel.init(tree, positions, key_chains, key_step)
        eps = chains.step_size if tune_step else jnp.full((num_chains,), step_size,
                                                          jnp.float32)
        length = jnp.minimum(chains.L, eps * max_num_steps)
        da = jax.vmap(adaptation_lib.dual_averaging_init)(eps)
        return MAMSChains(chains, eps, length, da), cost

    def transition(tree, c: MAMSChains, t, step_size, L):
        kernel = build_kernel(logdensity_of(tree), divergence_threshold=divergence_threshold)
        key = jax.random.fold_in(jax.random.wrap_key_data(c.travel.key_data), t)
        key_steps, key_kernel = jax.random.split(key)
        n = num_steps_of(key_steps, L / step_size, max_num_steps)
        s = c.travel.state
        state, info = kernel(key_kernel, MAMSState(s.position, s.logdensity,
                                                   s.logdensity_grad),
                             step_size, n, c.travel.inverse_mass)
        s = s._replace(position=state.position, logdensity=state.logdensity,
                       logdensity_grad=state.logdensity_grad)
        return c._replace(travel=c.travel._replace(state=s)), info

    def unadjusted(tree, c: MAMSChains, t):
        chains, stats, cost = travel.warmup_step(tree, c.travel, t)
        # The last MCLMC transition hands its step size and L over.
        last = t == num_travel - 1
        eps = jnp.where(last & tune_step, chains.step_size, c.step_size)
        length = jnp.where(last, jnp.minimum(chains.L, eps * max_num_steps), c.L)
        da = adaptation_lib.select(last, adaptation_lib.dual_averaging_init(eps),
                                   c.dual_averaging)
        info = MAMSInfo(accept_prob=stats["is_accepted"].astype(jnp.float32),
                        is_accepted=stats["is_accepted"],
                        is_divergent=stats["is_divergent"],
                        energy_error=stats["energy_change"],
                        num_steps=jnp.ones((), jnp.int32), logdensity=stats["logdensity"])
        return MAMSChains(chains, eps, length, da), info, cost

    def adjusted(tree, c: MAMSChains, t):
        # The step the transition uses is computed inside this program (see
        # adaptation.warmup_step_size: the step count may hinge on its last bit).
        # While the step size adapts, the steps per trajectory stay those the
        # MCLMC phase found (L follows the step size).
        eps = jnp.exp(c.dual_averaging.log_step_size) if tune_step else c.step_size
        length = c.L * eps / c.step_size
        c, info = transition(tree, c, t, eps, length)
        c = c._replace(step_size=eps, L=length)
        if tune_step:
            da = adaptation_lib.dual_averaging_update(c.dual_averaging, info.accept_prob,
                                                      target_accept)
            # The last warmup transition leaves the average for sampling.
            final = jnp.exp(da.log_step_size_avg)
            last = t == num_warmup - 1
            c = c._replace(dual_averaging=da,
                           step_size=jnp.where(last, final, eps),
                           L=jnp.where(last, length * final / eps, length))
        cost = GRADIENTS_PER_STEP * info.num_steps.astype(jnp.float32)
        return c, info, cost

    def warmup_step(tree, c: MAMSChains, t):
        if num_travel == 0:
            c, info, cost = adjusted(tree, c, t)
        elif num_adjusted_warmup == 0:
            c, info, cost = unadjusted(tree, c, t)
        else:
            c, info, cost = jax.lax.cond(t < num_travel, lambda c: unadjusted(tree, c, t),
                                         lambda c: adjusted(tree, c, t), c)
        return c, _stats(info, c), cost

    def sample_step(tree, c: MAMSChains, t):
        def body(c, j):
            return transition(tree, c, t + j, c.step_size, c.L)

        c, infos = jax.lax.scan(body, c, jnp.arange(thin))
        stats = _stats(jax.tree.map(lambda x: x[-1], infos), c)
        stats["accept_prob"] = jnp.mean(infos.accept_prob)
        stats["is_accepted"] = jnp.any(infos.is_accepted)
        stats["is_divergent"] = jnp.any(infos.is_divergent)
        return c, stats, GRADIENTS_PER_STEP * jnp.sum(infos.num_steps).astype(jnp.float32)

    def info(c: MAMSChains) -> dict:
        eps = np.asarray(driver.to_host(c.step_size))
        length = np.asarray(driver.to_host(c.L))
        return {"step_size": eps, "L": length, "mean_num_steps": length / eps,
                "mclmc_step_size": np.asarray(driver.to_host(c.travel.step_size)),
                "preconditioning": preconditioning}

    settings = {"step_size": step_size, "L": L, "preconditioning": preconditioning,
                "target_accept": target_accept, "max_num_steps": max_num_steps,
                "num_adjusted_warmup": num_adjusted_warmup,
                "divergence_threshold": divergence_threshold}
    return Algorithm(name="mams", init=init, warmup_step=warmup_step,
                     sample_step=sample_step,
                     position=lambda c: c.travel.state.position,
                     settings=settings, info=info, num_keys=2)


def _stats(info: MAMSInfo, c: MAMSChains) -> dict:
    return {"accept_prob": info.accept_prob, "is_accepted": info.is_accepted,
            "is_divergent": info.is_divergent, "energy_error": info.energy_error,
            "num_steps": info.num_steps, "step_size": c.step_size, "L": c.L,
            "logdensity": info.logdensity}


def mams(target, key, *, init=None, num_chains: int = 1, num_samples: int,
         num_warmup: int = 0, step_size: float | None = None, L: float | None = None,
         preconditioning: str = "none", target_accept: float = TARGET_ACCEPT,
         max_num_steps: int = 1000, num_adjusted_warmup: int | None = None,
         thin: int = 1, eval_x=None, predict_fn=None, mesh=None, run_dir=None,
         checkpoint_every: int = 10, checkpoint_seconds: float = 300.0,
         divergence_threshold: float = DIVERGENCE_THRESHOLD, progress: bool = True):
    """MAMS chains; returns a `Trace`.

    target, init, num_chains, eval_x, predict_fn, mesh, run_dir,
        checkpoint_every, checkpoint_seconds, progress: as `ws.samplers.hmc`.
    num_samples: draws kept per chain, `thin` transitions each.
    num_warmup: tuning transitions (the module docstring's schedule): MCLMC
        transitions, then num_adjusted_warmup MAMS transitions; the MCLMC
        phase needs at least 100 unless L is given with preconditioning="none".
    num_adjusted_warmup: the last warmup transitions, MAMS's, in which dual
        averaging tunes the step size (default: num_warmup // 10 when the step
        size is tuned; 0 when only L or the metric is; all of them when
        nothing is tuned).
    step_size: fixed step size (default: dual averaging towards target_accept).
    L: fixed mean trajectory length in whitened units (default: tuned); each
        trajectory takes ceil(U s) steps with mean L / step_size, at most
        max_num_steps.
    preconditioning: "none" (the default, as MCLMC's) or "diagonal" (estimated
        in warmup).
    target_accept: dual averaging's target (0.9, Robnik et al. 2025).

    Stats per draw: accept_prob (mean over the draw's transitions),
    is_accepted (any accepted), is_divergent (any), energy_error, num_steps,
    step_size, L, logdensity, grad_evals (2 per integrator step taken). In
    warmup's MCLMC phase a transition is one step, accepted when finite.
    Trace.info: step_size, L and mean_num_steps per chain, and
    mclmc_step_size (the MCLMC phase's).
    """
    checked = check_arguments(
        num_warmup=num_warmup, num_adjusted_warmup=num_adjusted_warmup,
        step_size=step_size, L=L, preconditioning=preconditioning,
        target_accept=target_accept, max_num_steps=max_num_steps,
        divergence_threshold=divergence_threshold)
    num_adjusted_warmup, step_size, L = (checked["num_adjusted_warmup"],
                                         checked["step_size"], checked["L"])

    def build(tgt) -> Algorithm:
        return algorithm(tgt.logdensity_of, num_chains=num_chains, num_warmup=num_warmup,
                         num_adjusted_warmup=num_adjusted_warmup, step_size=step_size,
                         L=L, preconditioning=preconditioning,
                         target_accept=target_accept, max_num_steps=max_num_steps,
                         thin=thin, divergence_threshold=divergence_threshold)

    return driver.sample(build, target, key, init=init, num_chains=num_chains,
                         num_samples=num_samples, num_warmup=num_warmup, thin=thin,
                         eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                         checkpoint_every=checkpoint_every,
                         checkpoint_seconds=checkpoint_seconds, progress=progress)
