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

Warmup (num_warmup transitions; the paper's stages, with our fractions):
  [0, 40%)    step size by dual averaging towards target_accept (0.9, as the
              authors recommend), L moving with it (fixed steps per trajectory);
  [40, 70%)   the same, and the moments of the positions; at the end the
              diagonal preconditioner M^-1 = their variances and L = the
              posterior's size (sqrt(d) whitened; without preconditioning
              sqrt(sum of variances)), as MCLMC's tuning does;
  [70, 80%)   dual averaging restarted under the new metric (L fixed);
  [80, 90%)   step size and L fixed: the autocorrelation time tau (in
              transitions) of every coordinate, then L = 0.4 * L * mean tau
              (the distance over which draws decorrelate, Robnik et al. 2023)
              when longer (batch means under-estimate a long tau);
  [90, 100%)  dual averaging again with L fixed; sampling uses its average.
A trajectory whose energy error is not finite or exceeds the divergence
threshold stops early and is rejected.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.samplers import adaptation as adaptation_lib
from weightspace.samplers import driver, isokinetic, validation
from weightspace.samplers import isokinetic_tuning as tuning
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.hmc import DIVERGENCE_THRESHOLD
from weightspace.samplers.mclmc import PRECONDITIONINGS, check_tuning

TARGET_ACCEPT = 0.9      # Robnik, Cohn-Gordon and Seljak 2025
INITIAL_STEPS = 4.0      # steps per trajectory while the step size is first found
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


_init_state = init  # mams() takes an argument named init


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
    key_data: jax.Array
    state: MAMSState
    step_size: jax.Array
    L: jax.Array
    inverse_mass: Any
    dual_averaging: adaptation_lib.DualAveragingState
    moments: tuning.Moments | None
    autocorrelation: tuning.Autocorrelation | None


def algorithm(logdensity_of: Callable, *, num_chains: int, num_warmup: int,
              step_size: float | None, L: float | None, preconditioning: str,
              target_accept: float, max_num_steps: int, thin: int,
              divergence_threshold: float) -> Algorithm:
    """MAMS for the driver (arguments checked by `mams`)."""
    tune_step = step_size is None
    tune_metric = preconditioning == "diagonal"
    tune_L = L is None
    end_travel, end_moments, end_retune = tuning.phase_bounds(num_warmup)
    end_ac = int(round(0.9 * num_warmup)) if tune_L else end_retune
    batch_size = max(1, (end_ac - end_retune) // 8)
    schedule = np.zeros((4, max(num_warmup, 1)), bool)
    schedule[0, end_travel:end_moments] = tune_metric or tune_L
    schedule[1, end_retune:end_ac] = tune_L
    # The step size adapts everywhere but in the autocorrelation window; L
    # follows the step size (fixed steps per trajectory) until the moments set it.
    schedule[2, :num_warmup] = tune_step
    schedule[2, end_retune:end_ac] = False
    schedule[3, :end_moments] = tune_L
    collect, collect_ac, adapt_step, L_follows = map(jnp.asarray, schedule)

    def init(tree, positions, key_chains, key_step):
        keys = jax.random.split(key_chains, num_chains)
        logdensity = logdensity_of(tree)
        states = jax.vmap(lambda q: _init_state(q, logdensity))(positions)
        dim = isokinetic.dimension(jax.tree.map(lambda x: x[0], positions))
        if dim < 2:
            raise ValueError(f"init: MAMS needs a position of at least 2 numbers, got {dim}")
        inverse_mass = jax.tree.map(jnp.ones_like, positions) if tune_metric else None
        cost = jnp.ones((num_chains,), jnp.float32)
        if tune_step:
            value_and_grad = jax.value_and_grad(logdensity)

            def search(s, m, k):
                sqrt_m = isokinetic.sqrt_inverse_mass_of(m)
                start = isokinetic.IsokineticState(
                    s.position, isokinetic.random_unit_velocity(k, s.position),
                    s.logdensity, s.logdensity_grad)

                def score(eps):  # log acceptance of one step: crosses log(1/2)
                    end, kinetic = isokinetic.mclachlan_step(value_and_grad, start, eps,
                                                             sqrt_m, dim)
                    return end.logdensity - s.logdensity - kinetic

                return tuning.search_step_size(score, jnp.sqrt(dim) * 0.25, math.log(0.5))

            eps, tries = jax.vmap(search)(states, inverse_mass,
                                          jax.random.split(key_step, num_chains))
            cost = cost + GRADIENTS_PER_STEP * tries
        else:
            eps = jnp.full((num_chains,), step_size, jnp.float32)
        length = eps * INITIAL_STEPS if tune_L else jnp.full((num_chains,), L, jnp.float32)
        da = jax.vmap(adaptation_lib.dual_averaging_init)(eps)
        moments = (jax.vmap(tuning.moments_init)(positions)
                   if (tune_metric or tune_L) and num_warmup else None)
        ac = jax.vmap(tuning.autocorrelation_init)(positions) if tune_L and num_warmup \
            else None
        return MAMSChains(jax.random.key_data(keys), states, eps, length, inverse_mass, da,
                          moments, ac), cost

    def transition(tree, c: MAMSChains, t, step_size):
        kernel = build_kernel(logdensity_of(tree), divergence_threshold=divergence_threshold)
        key = jax.random.fold_in(jax.random.wrap_key_data(c.key_data), t)
        key_steps, key_kernel = jax.random.split(key)
        n = num_steps_of(key_steps, c.L / step_size, max_num_steps)
        return kernel(key_kernel, c.state, step_size, n, c.inverse_mass)

    def warmup_step(tree, c: MAMSChains, t):
        # The step the transition uses is computed inside this program (see
        # adaptation.warmup_step_size: the step count may hinge on its last bit).
        eps = jnp.where(adapt_step[t], jnp.exp(c.dual_averaging.log_step_size), c.step_size)
        length = jnp.where(L_follows[t], c.L * eps / c.step_size, c.L)
        c = c._replace(step_size=eps, L=length)
        state, info = transition(tree, c, t, eps)
        c = c._replace(state=state)
        da = adaptation_lib.select(adapt_step[t], adaptation_lib.dual_averaging_update(
            c.dual_averaging, info.accept_prob, target_accept), c.dual_averaging)
        inverse_mass = c.inverse_mass
        if c.moments is not None:
            moments = tuning.moments_update(c.moments, state.position,
                                            jnp.where(collect[t], 1.0, 0.0))
            at_end = t == end_moments - 1
            variance = tuning.moments_variance(moments)
            if tune_metric:
                inverse_mass = adaptation_lib.select(
                    at_end, jax.tree.map(lambda v: jnp.maximum(v, 1e-30), variance),
                    inverse_mass)
            if tune_L:
                # Robnik et al. 2023's first L: the size of the posterior (sqrt(d)
                # in whitened units), at most max_num_steps steps.
                size = (jnp.sqrt(float(isokinetic.dimension(state.position))) if tune_metric
                        else jnp.sqrt(tuning.total_variance(moments)))
                c = c._replace(L=jnp.where(at_end, jnp.minimum(size, eps * max_num_steps),
                                           c.L))
            c = c._replace(moments=moments)
        # A new metric or a new L changes the scale: restart dual averaging.
        restart = ((t == end_moments - 1) if (tune_metric or tune_L)
                   else jnp.zeros((), bool))
        if c.autocorrelation is not None:
            ac = adaptation_lib.select(collect_ac[t], tuning.autocorrelation_update(
                c.autocorrelation, state.position, batch_size), c.autocorrelation)
            tau = tuning.autocorrelation_time(ac, batch_size)
            # Only lengthens L: batch means shorter than tau under-estimate it.
            fitted = jnp.minimum(jnp.maximum(tuning.L_FACTOR * c.L * tau, c.L),
                                 eps * max_num_steps)
            fit_now = (t == end_ac - 1) & jnp.isfinite(fitted)
            c = c._replace(autocorrelation=ac, L=jnp.where(fit_now, fitted, c.L))
            restart = restart | (t == end_ac - 1)
        da = adaptation_lib.select(restart, adaptation_lib.dual_averaging_init(
            jnp.exp(da.log_step_size)), da)
        if tune_step:
            # The last warmup transition leaves the average for sampling.
            final = jnp.exp(da.log_step_size_avg)
            last = t == num_warmup - 1
            c = c._replace(step_size=jnp.where(last & (da.count > 0), final, c.step_size))
        c = c._replace(dual_averaging=da, inverse_mass=inverse_mass)
        return c, _stats(info, c), GRADIENTS_PER_STEP * info.num_steps.astype(jnp.float32)

    def sample_step(tree, c: MAMSChains, t):
        def body(c, j):
            state, info = transition(tree, c, t + j, c.step_size)
            return c._replace(state=state), info

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
                "preconditioning": preconditioning}

    settings = {"step_size": step_size, "L": L, "preconditioning": preconditioning,
                "target_accept": target_accept, "max_num_steps": max_num_steps,
                "divergence_threshold": divergence_threshold}
    return Algorithm(name="mams", init=init, warmup_step=warmup_step,
                     sample_step=sample_step, position=lambda c: c.state.position,
                     settings=settings, info=info, num_keys=2)


def _stats(info: MAMSInfo, c: MAMSChains) -> dict:
    return {"accept_prob": info.accept_prob, "is_accepted": info.is_accepted,
            "is_divergent": info.is_divergent, "energy_error": info.energy_error,
            "num_steps": info.num_steps, "step_size": c.step_size, "L": c.L,
            "logdensity": info.logdensity}


def mams(target, key, *, init=None, num_chains: int = 1, num_samples: int,
         num_warmup: int = 0, step_size: float | None = None, L: float | None = None,
         preconditioning: str = "none", target_accept: float = TARGET_ACCEPT,
         max_num_steps: int = 1000, thin: int = 1, eval_x=None, predict_fn=None,
         mesh=None, run_dir=None, checkpoint_every: int = 10,
         checkpoint_seconds: float = 300.0,
         divergence_threshold: float = DIVERGENCE_THRESHOLD, progress: bool = True):
    """MAMS chains; returns a `Trace`.

    target, init, num_chains, eval_x, predict_fn, mesh, run_dir,
        checkpoint_every, checkpoint_seconds, progress: as `ws.samplers.hmc`.
    num_samples: draws kept per chain, `thin` transitions each.
    num_warmup: tuning transitions (the module docstring's schedule); at
        least 100 unless step_size and L are given with preconditioning="none".
    step_size: fixed step size (default: dual averaging towards target_accept).
    L: fixed mean trajectory length in whitened units (default: tuned); each
        trajectory takes ceil(U s) steps with mean L / step_size, at most
        max_num_steps.
    preconditioning: "none" (the default, as MCLMC's) or "diagonal" (estimated
        in warmup).
    target_accept: dual averaging's target (0.9, Robnik et al. 2025).

    Stats per draw: accept_prob (mean over the draw's transitions),
    is_accepted (any accepted), is_divergent (any), energy_error, num_steps,
    step_size, L, logdensity, grad_evals (2 per integrator step taken).
    """
    validation.choice("preconditioning", preconditioning, PRECONDITIONINGS)
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    if L is not None:
        L = validation.positive_float("L", L)
    validation.probability("target_accept", target_accept)
    validation.positive_int("max_num_steps", max_num_steps)
    validation.positive_float("divergence_threshold", divergence_threshold)
    validation.int_at_least("num_warmup", num_warmup, 0)
    check_tuning(num_warmup, step_size, L, preconditioning)

    def build(tgt) -> Algorithm:
        return algorithm(tgt.logdensity_of, num_chains=num_chains, num_warmup=num_warmup,
                         step_size=step_size, L=L, preconditioning=preconditioning,
                         target_accept=target_accept, max_num_steps=max_num_steps,
                         thin=thin, divergence_threshold=divergence_threshold)

    return driver.sample(build, target, key, init=init, num_chains=num_chains,
                         num_samples=num_samples, num_warmup=num_warmup, thin=thin,
                         eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                         checkpoint_every=checkpoint_every,
                         checkpoint_seconds=checkpoint_seconds, progress=progress)
