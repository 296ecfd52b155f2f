"""Microcanonical Langevin Monte Carlo (MCLMC), leaf by leaf.

Robnik, De Luca, Silverstein and Seljak 2023 ("Microcanonical Hamiltonian
Monte Carlo", JMLR 24) and Robnik and Seljak 2023 ("Fluctuation without
dissipation: Microcanonical Langevin Monte Carlo"): isokinetic dynamics whose
marginal over the position is the target, integrated with the minimal-norm
(McLachlan) scheme, the velocity partially refreshed so that it decorrelates
over a length L (`samplers/isokinetic.py`). There is no Metropolis test: the
step size is chosen so that the energy error's variance per dimension meets a
target (5e-4, Robnik et al. 2023), which bounds the asymptotic bias of the
second moments on Gaussian targets (Robnik and Seljak 2024, arXiv:2412.08876:
the squared relative bias is at most the energy-error variance per dimension).
Each transition is one integrator step: two full-batch gradients.

Warmup (num_warmup transitions; our schedule, built so that nothing is fitted
while a chain is still travelling from its start):
  [0, 40%)   step size from the energy error only: the chains travel (then the
             step-size predictor restarts, forgetting the failures of the travel);
  [40, 70%)  step size, and the step-weighted moments of the positions; at the
             end the diagonal preconditioner M^-1 = their variances and
             L = sqrt(d) in whitened units (without preconditioning,
             L = sqrt(sum of variances));
  [70, 80%)  step size again under the new metric (predictor restarted);
  [80, 100%) step size and L fixed: the autocorrelation time tau of every
             coordinate (streamed batch means), then L = 0.4 * eps * mean tau
             (Robnik et al. 2023) when that is longer than the moments' L:
             batch means shorter than tau under-estimate it, and a short L
             turns the dynamics diffusive (on the digits MLP, chains with
             L ~ 20 were still drifting after 10,000 gradients).
A non-finite step is undone (the velocity is redrawn) and caps the step size
at 0.8 of the one that failed, as does a step whose energy error is 1,000
times the target; the cap lifts back over 50 stable steps
(`isokinetic_tuning.predictor_update`). In sampling a non-finite step is
flagged divergent.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.samplers import adaptation as adaptation_lib
from weightspace.samplers import driver, isokinetic, validation
from weightspace.samplers import isokinetic_tuning as tuning
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.isokinetic import IsokineticState

PRECONDITIONINGS = ("diagonal", "none")
DESIRED_ENERGY_VAR = 5e-4  # Robnik et al. 2023: energy-error variance per dimension
MIN_WARMUP = 100           # transitions the tuning schedule needs
GRADIENTS_PER_STEP = 2.0   # the minimal-norm integrator


class MCLMCInfo(NamedTuple):
    logdensity: jax.Array
    energy_change: jax.Array
    is_divergent: jax.Array   # the step was not finite and was undone
    is_accepted: jax.Array    # the chain moved (every finite step does)


def init(position, logdensity_fn: Callable, key) -> IsokineticState:
    return isokinetic.init(position, logdensity_fn, key)


_init_state = init  # mclmc() takes an argument named init


def build_kernel(logdensity_fn: Callable):
    """One MCLMC transition for `logdensity_fn`:

        step(key, state, step_size, L, inverse_mass=None) -> (state, MCLMCInfo)

    inverse_mass: diagonal M^-1, a pytree like the position (None: identity).
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def step(key, state: IsokineticState, step_size, L, inverse_mass=None):
        dim = isokinetic.dimension(state.position)
        key_step, key_velocity = jax.random.split(key)
        new, energy_change = isokinetic.langevin_step(
            value_and_grad, key_step, state, step_size, L,
            isokinetic.sqrt_inverse_mass_of(inverse_mass), dim)
        finite = isokinetic.all_finite(new, energy_change)
        undone = state._replace(velocity=isokinetic.random_unit_velocity(key_velocity,
                                                                         state.position))
        new = adaptation_lib.select(finite, new, undone)
        info = MCLMCInfo(logdensity=new.logdensity,
                         energy_change=jnp.where(finite, energy_change, jnp.nan),
                         is_divergent=~finite, is_accepted=finite)
        return new, info

    return step


class MCLMCChains(NamedTuple):
    """What one chain carries (leading axis = chain across chains)."""

    key_data: jax.Array
    state: IsokineticState
    step_size: jax.Array
    L: jax.Array
    inverse_mass: Any                         # pytree like the position, or None
    predictor: tuning.EnergyPredictor
    moments: tuning.Moments | None            # None when nothing is estimated from them
    autocorrelation: tuning.Autocorrelation | None


def initial_step_size(logdensity_fn: Callable, states: IsokineticState, inverse_mass,
                      desired_energy_var: float):
    """Per chain (the leading axis of `states`), the step size whose first
    minimal-norm step meets the energy target, searched by doubling or halving
    from sqrt(d) / 4; returns (step sizes, gradients spent per chain)."""
    value_and_grad = jax.value_and_grad(logdensity_fn)
    dim = isokinetic.dimension(jax.tree.map(lambda x: x[0], states.position))

    def search(s, m):
        sqrt_m = isokinetic.sqrt_inverse_mass_of(m)

        def score(eps):  # -log xi: crosses 0 at the target energy variance
            end, kinetic = isokinetic.mclachlan_step(value_and_grad, s, eps, sqrt_m, dim)
            change = kinetic - end.logdensity + s.logdensity
            return -jnp.log(jnp.square(change) / (dim * desired_energy_var))

        return tuning.search_step_size(score, jnp.sqrt(dim) * 0.25, 0.0)

    eps, tries = jax.vmap(search)(states, inverse_mass)
    return eps, GRADIENTS_PER_STEP * tries


def tuned_step(logdensity_fn: Callable, key, state: IsokineticState, step_size, L,
               predictor: tuning.EnergyPredictor, desired_energy_var: float,
               inverse_mass=None):
    """One MCLMC transition and the energy predictor's update:
    (state, MCLMCInfo, predictor, the predicted next step size)."""
    state, info = build_kernel(logdensity_fn)(key, state, step_size, L, inverse_mass)
    predictor, predicted = tuning.predictor_update(
        predictor, step_size, info.energy_change, info.is_accepted,
        isokinetic.dimension(state.position), desired_energy_var)
    return state, info, predictor, predicted


def check_tuning(num_warmup: int, step_size, L, preconditioning: str) -> None:
    """What tuning needs, checked before tracing."""
    needs = [name for name, value in (("step_size", step_size), ("L", L)) if value is None]
    if preconditioning == "diagonal":
        needs.append("preconditioning='diagonal'")
    if needs and num_warmup < MIN_WARMUP:
        raise ValueError(f"num_warmup={num_warmup} is too short to tune "
                         f"{', '.join(needs)}: use num_warmup >= {MIN_WARMUP}, or give "
                         f"step_size and L with preconditioning='none'")


def check_arguments(*, num_warmup: int = 0, step_size=None, L=None,
                    preconditioning: str = "none",
                    desired_energy_var: float = DESIRED_ENERGY_VAR) -> dict:
    """`mclmc`'s tuning arguments checked before anything is traced; `mile`
    calls it before it trains the ensemble."""
    validation.choice("preconditioning", preconditioning, PRECONDITIONINGS)
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    if L is not None:
        L = validation.positive_float("L", L)
    desired_energy_var = validation.positive_float("desired_energy_var", desired_energy_var)
    validation.int_at_least("num_warmup", num_warmup, 0)
    check_tuning(num_warmup, step_size, L, preconditioning)
    return {"step_size": step_size, "L": L, "desired_energy_var": desired_energy_var}


def algorithm(logdensity_of: Callable, *, num_chains: int, num_warmup: int,
              step_size: float | None, L: float | None, preconditioning: str,
              desired_energy_var: float, thin: int) -> Algorithm:
    """MCLMC for the driver (arguments checked by `mclmc`)."""
    tune_step = step_size is None
    tune_metric = preconditioning == "diagonal"
    tune_L = L is None
    end_travel, end_moments, end_retune = tuning.phase_bounds(num_warmup)
    batch_size = max(1, (num_warmup - end_retune) // 8)
    collect = np.zeros(max(num_warmup, 1), bool)
    collect[end_travel:end_moments] = tune_metric or tune_L
    collect_ac = np.zeros(max(num_warmup, 1), bool)
    collect_ac[end_retune:num_warmup] = tune_L
    collect, collect_ac = jnp.asarray(collect), jnp.asarray(collect_ac)

    def init(tree, positions, key_chains, key_step):
        keys = jax.random.split(key_chains, num_chains)
        logdensity = logdensity_of(tree)
        states = jax.vmap(lambda q, k: _init_state(q, logdensity, k))(
            positions, jax.random.split(key_step, num_chains))
        dim = isokinetic.dimension(jax.tree.map(lambda x: x[0], positions))
        if dim < 2:
            raise ValueError(f"init: the microcanonical samplers need a position of at "
                             f"least 2 numbers, got {dim}")
        inverse_mass = (jax.tree.map(jnp.ones_like, positions) if tune_metric else None)
        cost = jnp.ones((num_chains,), jnp.float32)
        if tune_step:
            eps, search_cost = initial_step_size(logdensity, states, inverse_mass,
                                                 desired_energy_var)
            cost = cost + search_cost
        else:
            eps = jnp.full((num_chains,), step_size, jnp.float32)
        length = jnp.full((num_chains,), jnp.sqrt(dim) if tune_L else L, jnp.float32)
        predictor = jax.vmap(lambda _: tuning.predictor_init())(eps)
        moments = (jax.vmap(tuning.moments_init)(positions)
                   if (tune_metric or tune_L) and num_warmup else None)
        autocorrelation = (jax.vmap(tuning.autocorrelation_init)(positions)
                           if tune_L and num_warmup else None)
        carry = MCLMCChains(jax.random.key_data(keys), states, eps, length, inverse_mass,
                            predictor, moments, autocorrelation)
        return carry, cost

    def transition(tree, c: MCLMCChains, t):
        kernel = build_kernel(logdensity_of(tree))
        return kernel(_key(c, t), c.state, c.step_size, c.L, c.inverse_mass)

    def warmup_step(tree, c: MCLMCChains, t):
        state, info, predictor, predicted = tuned_step(
            logdensity_of(tree), _key(c, t), c.state, c.step_size, c.L, c.predictor,
            desired_energy_var, c.inverse_mass)
        c = c._replace(state=state)
        dim = isokinetic.dimension(state.position)
        eps, length, inverse_mass = c.step_size, c.L, c.inverse_mass
        if tune_step:
            adapting = (t < end_retune) | (not tune_L)
            # The travel from the start sees gradients and failures that the
            # typical set does not: restart the predictor (and its cap) after it.
            predictor = adaptation_lib.select(t == end_travel - 1, tuning.predictor_init(),
                                              predictor)
            c = c._replace(predictor=adaptation_lib.select(adapting, predictor, c.predictor))
            eps = jnp.where(adapting, predicted, eps)
        if c.moments is not None:
            weight = jnp.where(collect[t] & info.is_accepted, c.step_size, 0.0)
            moments = tuning.moments_update(c.moments, state.position, weight)
            c = c._replace(moments=moments)
            at_end = t == end_moments - 1
            variance = tuning.moments_variance(moments)
            if tune_metric:
                inverse_mass = adaptation_lib.select(
                    at_end, jax.tree.map(lambda v: jnp.maximum(v, 1e-30), variance),
                    inverse_mass)
                if tune_L:
                    length = jnp.where(at_end, jnp.sqrt(float(dim)), length)
            elif tune_L:
                length = jnp.where(at_end, jnp.sqrt(tuning.total_variance(moments)), length)
            # A new metric changes the energy error's scale: restart the predictor.
            if tune_metric and tune_step:
                c = c._replace(predictor=adaptation_lib.select(
                    at_end, tuning.predictor_init(), c.predictor))
        if c.autocorrelation is not None:
            ac = adaptation_lib.select(
                collect_ac[t], tuning.autocorrelation_update(c.autocorrelation,
                                                             state.position, batch_size),
                c.autocorrelation)
            tau = tuning.autocorrelation_time(ac, batch_size)
            # Batch means under-estimate tau when a batch is shorter than tau,
            # so the fit can only lengthen the moments' L, never shorten it.
            fitted = jnp.maximum(tuning.L_FACTOR * eps * tau, length)
            length = jnp.where((t == num_warmup - 1) & jnp.isfinite(fitted), fitted, length)
            c = c._replace(autocorrelation=ac)
        c = c._replace(step_size=eps, L=length, inverse_mass=inverse_mass)
        return c, _stats(info, c), jnp.float32(GRADIENTS_PER_STEP)

    def sample_step(tree, c: MCLMCChains, t):
        def body(c, j):
            state, info = transition(tree, c, t + j)
            return c._replace(state=state), info

        c, infos = jax.lax.scan(body, c, jnp.arange(thin))
        dim = isokinetic.dimension(c.state.position)
        stats = _stats(jax.tree.map(lambda x: x[-1], infos), c)
        stats["is_divergent"] = jnp.any(infos.is_divergent)
        stats["is_accepted"] = jnp.any(infos.is_accepted)
        stats["energy_variance"] = jnp.nanmean(jnp.square(infos.energy_change)) / dim
        return c, stats, jnp.float32(GRADIENTS_PER_STEP * thin)

    def info(c: MCLMCChains) -> dict:
        return {"step_size": np.asarray(driver.to_host(c.step_size)),
                "L": np.asarray(driver.to_host(c.L)),
                "preconditioning": preconditioning}

    settings = {"step_size": step_size, "L": L, "preconditioning": preconditioning,
                "desired_energy_var": desired_energy_var}
    return Algorithm(name="mclmc", init=init, warmup_step=warmup_step,
                     sample_step=sample_step, position=lambda c: c.state.position,
                     settings=settings, info=info, num_keys=2)


def _key(c: MCLMCChains, t):
    """Transition t's key."""
    return jax.random.fold_in(jax.random.wrap_key_data(c.key_data), t)


def _stats(info: MCLMCInfo, c: MCLMCChains) -> dict:
    return {"logdensity": info.logdensity, "energy_change": info.energy_change,
            "step_size": c.step_size, "L": c.L, "is_divergent": info.is_divergent,
            "is_accepted": info.is_accepted}


def mclmc(target, key, *, init=None, num_chains: int = 1, num_samples: int,
          num_warmup: int = 0, step_size: float | None = None, L: float | None = None,
          preconditioning: str = "none",
          desired_energy_var: float = DESIRED_ENERGY_VAR, thin: int = 1, eval_x=None,
          predict_fn=None, mesh=None, run_dir=None, checkpoint_every: int = 100,
          checkpoint_seconds: float = 300.0, progress: bool = True):
    """MCLMC chains; returns a `Trace`.

    target, init, num_chains, eval_x, predict_fn, mesh, run_dir,
        checkpoint_every, checkpoint_seconds, progress: as `ws.samplers.hmc`.
    num_samples: draws kept per chain; each is `thin` transitions (one
        minimal-norm step, two gradients, per transition).
    num_warmup: tuning transitions (the module docstring's schedule); at
        least 100 unless step_size and L are given with preconditioning="none".
    step_size: fixed integrator step size (default: tuned to the energy target).
    L: fixed momentum decoherence length in whitened units (default: tuned).
    preconditioning: "none" (the default) or "diagonal" (M^-1 = the positions'
        variances in warmup). On the digits MLP the diagonal metric, fitted in
        a warmup of 10,000 gradients, left the chains' log density sloshing by
        thousands between draws (0.26 ESS of the test predictions per 1,000
        gradients); without it the log density settled within a few hundred of
        HMC's (benchmarks/RESULTS.md).
    desired_energy_var: energy-error variance per dimension the step size is
        tuned to (Robnik et al. 2023: 5e-4).

    Stats per draw: logdensity, energy_change (of the draw's last step),
    energy_variance (mean over its steps of dE^2 / d), step_size, L,
    is_divergent (a step was not finite and was undone), is_accepted (the
    chain moved), grad_evals (2 per transition).
    """
    checked = check_arguments(num_warmup=num_warmup, step_size=step_size, L=L,
                              preconditioning=preconditioning,
                              desired_energy_var=desired_energy_var)
    step_size, L, desired_energy_var = (checked["step_size"], checked["L"],
                                        checked["desired_energy_var"])

    def build(tgt) -> Algorithm:
        return algorithm(tgt.logdensity_of, num_chains=num_chains, num_warmup=num_warmup,
                         step_size=step_size, L=L, preconditioning=preconditioning,
                         desired_energy_var=desired_energy_var, thin=thin)

    return driver.sample(build, target, key, init=init, num_chains=num_chains,
                         num_samples=num_samples, num_warmup=num_warmup, thin=thin,
                         eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                         checkpoint_every=checkpoint_every,
                         checkpoint_seconds=checkpoint_seconds, progress=progress)
