"""Hamiltonian Monte Carlo with a fixed trajectory length, leaf by leaf.

    H(q, p) = -log pi(q) + 1/2 p^T M^{-1} p,   p ~ N(0, M),   M^{-1} diagonal

A transition draws a momentum, runs n = ceil(trajectory_length / step_size)
velocity-Verlet steps (capped by max_num_steps) and accepts the end point with
probability min(1, exp(-(H_end - H_start))). Every operation maps over the
leaves of the position pytree; nothing is flattened with ravel_pytree, so
weights sharded over devices stay sharded and the only cross-device traffic is
the one the log-density itself needs.

A trajectory whose energy error is not finite or exceeds
`divergence_threshold` stops early, is rejected and is flagged divergent.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.samplers import adaptation as adaptation_lib
from weightspace.samplers import driver, validation
from weightspace.samplers import target as target_lib
from weightspace.samplers.algorithm import Algorithm

DIVERGENCE_THRESHOLD = 1000.0  # energy error; Stan's and blackjax's default


class HMCState(NamedTuple):
    position: Any          # pytree
    logdensity: jax.Array  # scalar
    logdensity_grad: Any   # pytree like position


class HMCInfo(NamedTuple):
    accept_prob: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    energy_error: jax.Array
    num_steps: jax.Array
    step_size: jax.Array
    logdensity: jax.Array


def init(position, logdensity_fn: Callable) -> HMCState:
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return HMCState(position, value, grad)


_init_state = init  # hmc() takes an argument named init


def _tree_sum(tree) -> jax.Array:
    return sum(jax.tree.leaves(tree), jnp.zeros((), jnp.float32))


def kinetic_energy(momentum, inverse_mass=None) -> jax.Array:
    """1/2 p^T M^{-1} p; inverse_mass None is the identity."""
    if inverse_mass is None:
        return 0.5 * _tree_sum(jax.tree.map(lambda p: jnp.sum(jnp.square(p)), momentum))
    return 0.5 * _tree_sum(jax.tree.map(lambda p, m: jnp.sum(m * jnp.square(p)),
                                        momentum, inverse_mass))


def sample_momentum(key, position, inverse_mass=None):
    """p ~ N(0, M), one key per leaf."""
    leaves, treedef = jax.tree.flatten(position)
    keys = jax.random.split(key, len(leaves))
    normals = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
               for k, x in zip(keys, leaves)]
    momentum = jax.tree.unflatten(treedef, normals)
    if inverse_mass is None:
        return momentum
    return jax.tree.map(lambda z, m: z / jnp.sqrt(m), momentum, inverse_mass)


def _axpy(a, x, y):
    """y + a * x over pytrees."""
    return jax.tree.map(lambda xi, yi: yi + a * xi, x, y)


def _velocity(momentum, inverse_mass):
    if inverse_mass is None:
        return momentum
    return jax.tree.map(lambda p, m: m * p, momentum, inverse_mass)


def leapfrog(logdensity_and_grad: Callable, state: HMCState, momentum, step_size,
             num_steps, inverse_mass=None, *, initial_energy=None,
             divergence_threshold: float = DIVERGENCE_THRESHOLD):
    """`num_steps` velocity-Verlet steps from (state, momentum).

    Returns (end state, end momentum, steps taken, energy error). With
    `initial_energy`, stops after the first step whose energy error is not
    finite or exceeds the threshold.
    """
    dtype = jnp.result_type(state.logdensity)
    h0 = jnp.zeros((), dtype) if initial_energy is None else initial_energy
    step_size = jnp.asarray(step_size, dtype)

    def diverged(error):
        return (initial_energy is not None) & (~jnp.isfinite(error)
                                               | (error > divergence_threshold))

    def cond(carry):
        i, _, _, error = carry
        return (i < num_steps) & ~diverged(error)

    def body(carry):
        i, s, p, _ = carry
        p = _axpy(0.5 * step_size, s.logdensity_grad, p)
        q = _axpy(step_size, _velocity(p, inverse_mass), s.position)
        value, grad = logdensity_and_grad(q)
        p = _axpy(0.5 * step_size, grad, p)
        error = (-value + kinetic_energy(p, inverse_mass)) - h0
        return i + 1, HMCState(q, value, grad), p, error

    start = (jnp.zeros((), jnp.int32), state, momentum, jnp.zeros((), dtype))
    steps, end, momentum, error = jax.lax.while_loop(cond, body, start)
    return end, momentum, steps, error


def num_integration_steps(trajectory_length, step_size, max_num_steps: int):
    """ceil(trajectory_length / step_size), at least 1, at most max_num_steps."""
    n = jnp.ceil(trajectory_length / step_size)
    return jnp.clip(jnp.nan_to_num(n, nan=1.0, posinf=max_num_steps),
                    1, max_num_steps).astype(jnp.int32)


def build_kernel(logdensity_fn: Callable, *,
                 divergence_threshold: float = DIVERGENCE_THRESHOLD):
    """The HMC transition for `logdensity_fn`:

        step(key, state, step_size, num_steps, inverse_mass=None, metropolis=True)
            -> (HMCState, HMCInfo)

    metropolis=False accepts every non-divergent end point (the burn-in of
    Izmailov et al. 2021); it may be a traced boolean.
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def step(key, state: HMCState, step_size, num_steps, inverse_mass=None,
             metropolis=True):
        key_momentum, key_accept = jax.random.split(key)
        momentum = sample_momentum(key_momentum, state.position, inverse_mass)
        h0 = -state.logdensity + kinetic_energy(momentum, inverse_mass)
        end, _, steps, error = leapfrog(value_and_grad, state, momentum, step_size,
                                        num_steps, inverse_mass, initial_energy=h0,
                                        divergence_threshold=divergence_threshold)
        divergent = ~jnp.isfinite(error) | (error > divergence_threshold)
        accept_prob = jnp.where(divergent, 0.0, jnp.minimum(1.0, jnp.exp(-error)))
        u = jax.random.uniform(key_accept, dtype=accept_prob.dtype)
        accepted = ~divergent & jnp.where(metropolis, u < accept_prob, True)
        new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), end, state)
        info = HMCInfo(accept_prob=accept_prob, is_accepted=accepted,
                       is_divergent=divergent, energy_error=error, num_steps=steps,
                       step_size=jnp.asarray(step_size, accept_prob.dtype),
                       logdensity=new.logdensity)
        return new, info

    return step


def find_reasonable_step_size(logdensity_fn: Callable, key, state: HMCState,
                              initial: float = 1.0, inverse_mass=None,
                              max_iterations: int = 100) -> jax.Array:
    """Hoffman and Gelman 2014, Algorithm 4: double or halve a one-step
    leapfrog's step size until its acceptance probability crosses 1/2."""
    return _find_step_size(logdensity_fn, key, state, initial, inverse_mass,
                           max_iterations)[0]


def _find_step_size(logdensity_fn: Callable, key, state: HMCState, initial: float = 1.0,
                    inverse_mass=None, max_iterations: int = 100):
    """(step size, gradients spent) of `find_reasonable_step_size`: one
    one-step leapfrog (one gradient) per step size tried."""
    value_and_grad = jax.value_and_grad(logdensity_fn)
    momentum = sample_momentum(key, state.position, inverse_mass)
    h0 = -state.logdensity + kinetic_energy(momentum, inverse_mass)

    def log_accept(eps):
        _, _, _, error = leapfrog(value_and_grad, state, momentum, eps, 1, inverse_mass,
                                  initial_energy=h0)
        return jnp.where(jnp.isfinite(error), -error, -jnp.inf)

    eps0 = jnp.asarray(initial, jnp.float32)
    first = log_accept(eps0)
    direction = jnp.where(first > math.log(0.5), 1.0, -1.0)

    # The loop carries the last size's log acceptance, so its test evaluates no
    # gradient: under vmap a while loop's test also runs inside its body.
    def cond(carry):
        i, _, log_acc = carry
        crossed = direction * log_acc <= direction * math.log(0.5)
        return (i < max_iterations) & ~crossed

    def body(carry):
        i, eps, _ = carry
        eps = eps * 2.0**direction
        return i + 1, eps, log_accept(eps)

    tries, eps, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), eps0, first))
    # The last doubling overshot: step back, as the last size that did not cross.
    return jnp.where(direction > 0, eps / 2.0, eps), (tries + 1).astype(jnp.float32)


# -- the sampler: chains, warmup, driver -------------------------------------

WARMUPS = ("adapt", "fixed", "no_metropolis")
MASS_MATRICES = ("identity", "diagonal")


class HMCChains(NamedTuple):
    """Everything one chain carries from one transition to the next (leading
    axis = chain across chains); checkpointed as is."""

    key_data: jax.Array   # the chain's PRNG key
    state: HMCState
    # step size and inverse mass in use, and (warmup="adapt") their estimators;
    # after warmup, step_size is the one sampling uses
    adaptation: adaptation_lib.WindowAdaptationState


def hmc(target, key, *, init=None, num_chains: int = 1, num_samples: int,
        num_warmup: int = 0, step_size: float | None = None,
        trajectory_length: float | None = None, max_num_steps: int = 1000,
        target_accept: float = 0.8, mass_matrix: str = "identity", warmup: str = "adapt",
        thin: int = 1, eval_x=None, predict_fn=None, mesh=None, run_dir=None,
        checkpoint_every: int = 10, checkpoint_seconds: float = 300.0,
        divergence_threshold: float = DIVERGENCE_THRESHOLD, progress: bool = True):
    """Full-batch HMC chains; returns a `Trace`.

    target: a Posterior (ws.models.posterior) or a callable
        logdensity(position) -> scalar.
    init: starting positions, leaves with a leading num_chains axis; required
        for a callable target; for a Posterior default posterior.init with
        independent keys.
    num_samples: draws kept per chain, after num_warmup warmup transitions;
        thin transitions are made per kept draw.
    step_size: with warmup="adapt", the starting point of dual averaging
        (default: Hoffman and Gelman's heuristic); otherwise the fixed step
        size (required).
    trajectory_length: default (pi/2) * sqrt(temperature * prior_variance) for a
        Posterior (Izmailov et al. 2021), pi/2 for a callable. Steps per
        trajectory: ceil(trajectory_length / step_size), at most max_num_steps.
    target_accept: dual averaging target (Stan's 0.8).
    mass_matrix: "identity", or "diagonal" (estimated from the warmup draws in
        Stan's windows; needs warmup="adapt" and num_warmup >= 20).
    warmup: "adapt" (dual averaging of the step size, and mass-matrix windows);
        "fixed" (fixed step size, Metropolis-corrected); "no_metropolis" (fixed
        step size, every non-divergent proposal accepted during warmup: the
        burn-in of Izmailov et al. 2021).
    eval_x: inputs whose predictions (class probabilities, or predictive means)
        are stored with every kept draw; with a callable target give
        predict_fn(position, eval_x).
    mesh: for a callable target, a ("chain", "data") mesh to spread chains
        over; a Posterior runs on its own mesh.
    run_dir: write draws there as they are made, checkpoint every
        `checkpoint_every` steps or `checkpoint_seconds`, and resume a run that
        is already there (num_samples may grow; any other change is an error).

    Stats per draw: accept_prob (mean over the draw's `thin` transitions),
    is_accepted, is_divergent (any in the draw), energy_error, num_steps,
    step_size, logdensity, and grad_evals: the leapfrog steps of the draw's
    transitions (one gradient each). Trace.info["warmup_grad_evals"]: the first
    gradient, the step-size search and the warmup transitions, per chain.
    """
    validation.positive_int("max_num_steps", max_num_steps)
    validation.positive_float("divergence_threshold", divergence_threshold)
    validation.probability("target_accept", target_accept)
    validation.choice("warmup", warmup, WARMUPS)
    validation.choice("mass_matrix", mass_matrix, MASS_MATRICES)
    if mass_matrix == "diagonal" and warmup != "adapt":
        raise ValueError(f"mass_matrix='diagonal' is estimated during warmup and needs "
                         f"warmup='adapt', got warmup={warmup!r}")
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    elif warmup != "adapt":
        raise ValueError(f"step_size=None is not allowed with warmup={warmup!r}: a fixed "
                         f"step size must be given")
    lengths = []

    def build(tgt) -> Algorithm:
        length = trajectory_length
        if length is None:
            length = target_lib.default_trajectory_length(tgt)
        length = validation.positive_float("trajectory_length", length)
        lengths.append(length)
        return algorithm(tgt.logdensity_of, num_chains=num_chains, num_warmup=num_warmup,
                         step_size=step_size, trajectory_length=length,
                         max_num_steps=max_num_steps, target_accept=target_accept,
                         mass_matrix=mass_matrix, warmup=warmup, thin=thin,
                         divergence_threshold=divergence_threshold)

    trace = driver.sample(build, target, key, init=init, num_chains=num_chains,
                          num_samples=num_samples, num_warmup=num_warmup, thin=thin,
                          eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                          checkpoint_every=checkpoint_every,
                          checkpoint_seconds=checkpoint_seconds, progress=progress)
    if trace.info.get("trajectory_truncated"):
        warnings.warn(f"trajectory_length={lengths[0]:g} needs more than "
                      f"max_num_steps={max_num_steps} steps at the step sizes "
                      f"{trace.info['step_size']}: trajectories were cut short; raise "
                      f"max_num_steps to sample with the requested length", stacklevel=2)
    return trace


def algorithm(logdensity_of: Callable, *, num_chains: int, num_warmup: int,
              step_size: float | None, trajectory_length: float, max_num_steps: int,
              target_accept: float, mass_matrix: str, warmup: str, thin: int,
              divergence_threshold: float) -> Algorithm:
    """HMC for the driver (arguments checked by `hmc`); logdensity_of(tree) is
    the log density inside the jitted steps."""
    adapt = warmup == "adapt" and num_warmup > 0
    window = adaptation_lib.window_adaptation(
        num_warmup, adapt_mass=adapt and mass_matrix == "diagonal",
        target_accept=target_accept)

    def init(tree, positions, key_chains, key_step):
        chain_keys = jax.random.key_data(jax.random.split(key_chains, num_chains))
        states = jax.vmap(lambda q: _init_state(q, logdensity_of(tree)))(positions)
        inverse_mass = (None if mass_matrix == "identity"
                        else jax.tree.map(jnp.ones_like, positions))
        cost = jnp.ones((num_chains,), jnp.float32)  # the first gradient
        if step_size is None:
            keys = jax.random.split(key_step, num_chains)
            eps, search = jax.vmap(lambda k, s, m: _find_step_size(
                logdensity_of(tree), k, s, trajectory_length, m))(keys, states, inverse_mass)
            cost = cost + search
        else:
            eps = jnp.full((num_chains,), step_size, jnp.float32)
        if adapt:
            adapted = jax.vmap(window.init)(positions, eps)
        else:
            adapted = adaptation_lib.WindowAdaptationState(eps, inverse_mass, None, None)
        return HMCChains(chain_keys, states, adapted), cost

    def transition(tree, c: HMCChains, t, step_size, metropolis):
        kernel = build_kernel(logdensity_of(tree), divergence_threshold=divergence_threshold)
        key = jax.random.fold_in(jax.random.wrap_key_data(c.key_data), t)
        n = num_integration_steps(trajectory_length, step_size, max_num_steps)
        return kernel(key, c.state, step_size, n, c.adaptation.inverse_mass, metropolis)

    def warmup_step(tree, c: HMCChains, t):
        adapted = c.adaptation
        if not adapt:
            state, info = transition(tree, c, t, adapted.step_size, warmup != "no_metropolis")
            return c._replace(state=state), info, _gradients(info)
        eps = adaptation_lib.warmup_step_size(adapted)
        state, info = transition(tree, c, t, eps, True)
        adapted = window.update(adapted, t, state.position, info.accept_prob)
        adapted = adaptation_lib.select(t == num_warmup - 1, window.final(adapted), adapted)
        return c._replace(state=state, adaptation=adapted), info, _gradients(info)

    def sample_step(tree, c: HMCChains, t):
        def body(c, j):
            state, info = transition(tree, c, t + j, c.adaptation.step_size, True)
            return c._replace(state=state), info
        c, infos = jax.lax.scan(body, c, jnp.arange(thin))
        last = jax.tree.map(lambda x: x[-1], infos)
        return c, last._replace(accept_prob=jnp.mean(infos.accept_prob),
                                is_divergent=jnp.any(infos.is_divergent)), \
            jnp.sum(_gradients(infos))

    def info(c: HMCChains) -> dict:
        eps = np.asarray(driver.to_host(c.adaptation.step_size))
        steps = np.asarray(driver.to_host(num_integration_steps(
            trajectory_length, c.adaptation.step_size, max_num_steps)))
        return {"step_size": eps, "num_integration_steps": steps,
                "trajectory_length": trajectory_length,
                "trajectory_truncated": bool(np.any(np.ceil(trajectory_length / eps)
                                                    > max_num_steps))}

    settings = {"step_size": step_size,
                "trajectory_length": trajectory_length, "max_num_steps": max_num_steps,
                "target_accept": target_accept, "mass_matrix": mass_matrix,
                "warmup": warmup, "divergence_threshold": divergence_threshold}
    return Algorithm(name="hmc", init=init, warmup_step=warmup_step,
                     sample_step=sample_step, position=lambda c: c.state.position,
                     settings=settings, info=info, num_keys=2)


def _gradients(info: HMCInfo) -> jax.Array:
    """One gradient per leapfrog step taken (a divergent trajectory stops early)."""
    return info.num_steps.astype(jnp.float32)
