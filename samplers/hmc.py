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
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
    value_and_grad = jax.value_and_grad(logdensity_fn)
    momentum = sample_momentum(key, state.position, inverse_mass)
    h0 = -state.logdensity + kinetic_energy(momentum, inverse_mass)

    def log_accept(eps):
        _, _, _, error = leapfrog(value_and_grad, state, momentum, eps, 1, inverse_mass,
                                  initial_energy=h0)
        return jnp.where(jnp.isfinite(error), -error, -jnp.inf)

    eps0 = jnp.asarray(initial, jnp.float32)
    direction = jnp.where(log_accept(eps0) > math.log(0.5), 1.0, -1.0)

    def cond(carry):
        i, eps = carry
        crossed = direction * log_accept(eps) <= direction * math.log(0.5)
        return (i < max_iterations) & ~crossed

    def body(carry):
        i, eps = carry
        return i + 1, eps * 2.0**direction

    _, eps = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), eps0))
    # The last doubling overshot: step back, as the last size that did not cross.
    return jnp.where(direction > 0, eps / 2.0, eps)


# -- the sampler: chains, warmup, driver -------------------------------------

WARMUPS = ("adapt", "fixed", "no_metropolis")
MASS_MATRICES = ("identity", "diagonal")


class HMCChains(NamedTuple):
    """Everything the chains carry from one transition to the next (leading
    axis = chain); checkpointed as is."""

    key_data: jax.Array   # (chain, ...) uint32: the chain's PRNG key
    state: HMCState
    step_size: jax.Array  # (chain,)
    inverse_mass: Any     # pytree like the position, or None (identity)
    dual_averaging: Any   # adaptation.DualAveragingState
    welford: Any          # adaptation.WelfordState, or None


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
    """
    from weightspace.samplers import adaptation, driver, target as target_lib, validation

    validation.positive_int("num_chains", num_chains)
    validation.positive_int("num_samples", num_samples)
    validation.int_at_least("num_warmup", num_warmup, 0)
    validation.positive_int("thin", thin)
    validation.positive_int("max_num_steps", max_num_steps)
    validation.positive_int("checkpoint_every", checkpoint_every)
    validation.positive_float("checkpoint_seconds", checkpoint_seconds)
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
    tgt = target_lib.resolve(target, predict_fn=predict_fn, mesh=mesh)
    if trajectory_length is None:
        trajectory_length = target_lib.default_trajectory_length(tgt)
    trajectory_length = validation.positive_float("trajectory_length", trajectory_length)
    key = validation.prng_key("key", key)
    mesh = tgt.mesh
    validation.chains_fit_mesh(num_chains, mesh)

    key_init, key_chains, key_step = jax.random.split(key, 3)
    positions = validation.start_positions("init", init, tgt, key_init, num_chains)
    eval_x = validation.eval_inputs("eval_x", eval_x, tgt, positions)

    adapt = warmup == "adapt" and num_warmup > 0
    adapt_mass = adapt and mass_matrix == "diagonal"
    schedule = adaptation.stan_schedule(num_warmup, adapt_mass)
    slow, window_end = jnp.asarray(schedule.slow), jnp.asarray(schedule.window_end)
    chain_keys = jax.random.key_data(jax.random.split(key_chains, num_chains))
    shard = None if mesh is None else driver.chain_sharding(mesh)

    def logdensity_fn(tree):
        return tgt.logdensity_of(tree)

    @jax.jit
    def start(tree, positions, chain_keys):
        states = jax.vmap(lambda q: _init_state(q, logdensity_fn(tree)))(positions)
        inverse_mass = (None if mass_matrix == "identity"
                        else jax.tree.map(jnp.ones_like, positions))
        if step_size is None:
            keys = jax.random.split(key_step, num_chains)
            eps = jax.vmap(lambda k, s, m: find_reasonable_step_size(
                logdensity_fn(tree), k, s, trajectory_length, m))(keys, states, inverse_mass)
        else:
            eps = jnp.full((num_chains,), step_size, jnp.float32)
        return HMCChains(chain_keys, states, eps, inverse_mass,
                         jax.vmap(adaptation.dual_averaging_init)(eps),
                         jax.vmap(adaptation.welford_init)(positions) if adapt_mass else None)

    def transition(tree, c: HMCChains, t, step_size, metropolis):
        kernel = build_kernel(logdensity_fn(tree), divergence_threshold=divergence_threshold)
        key = jax.random.fold_in(jax.random.wrap_key_data(c.key_data), t)
        n = num_integration_steps(trajectory_length, step_size, max_num_steps)
        return kernel(key, c.state, step_size, n, c.inverse_mass, metropolis)

    def warmup_one(tree, c: HMCChains, t):
        if not adapt:
            state, info = transition(tree, c, t, c.step_size, warmup != "no_metropolis")
            return c._replace(state=state), info
        eps = jnp.exp(c.dual_averaging.log_step_size)
        state, info = transition(tree, c, t, eps, True)
        da = adaptation.dual_averaging_update(c.dual_averaging, info.accept_prob,
                                              target_accept)
        inverse_mass, welford = c.inverse_mass, c.welford
        if adapt_mass:
            welford = _select(slow[t], adaptation.welford_update(welford, state.position),
                              welford)
            inverse_mass = _select(window_end[t], adaptation.welford_inverse_mass(welford),
                                   inverse_mass)
            welford = _select(window_end[t], adaptation.welford_init(state.position), welford)
            # New metric, new scale: restart dual averaging from the current step.
            da = _select(window_end[t],
                         adaptation.dual_averaging_init(jnp.exp(da.log_step_size)), da)
        last = t == num_warmup - 1
        eps = jnp.where(last, jnp.exp(da.log_step_size_avg), jnp.exp(da.log_step_size))
        return c._replace(state=state, step_size=eps, inverse_mass=inverse_mass,
                          dual_averaging=da, welford=welford), info

    def sample_one(tree, c: HMCChains, t):
        def body(c, j):
            state, info = transition(tree, c, t + j, c.step_size, True)
            return c._replace(state=state), info
        c, infos = jax.lax.scan(body, c, jnp.arange(thin))
        last = jax.tree.map(lambda x: x[-1], infos)
        return c, last._replace(accept_prob=jnp.mean(infos.accept_prob),
                                is_divergent=jnp.any(infos.is_divergent))

    positions = jax.device_put(positions, shard) if shard is not None else positions
    chain_keys = jax.device_put(chain_keys, shard) if shard is not None else chain_keys
    carry = start(tgt.tree, positions, chain_keys)
    if shard is not None:
        carry = jax.device_put(carry, jax.tree.map(lambda _: shard, carry))

    def chainwise(one):
        return driver.chainwise(one, mesh)

    predict = driver.chain_predict(tgt, eval_x)

    config = {"sampler": "hmc", "num_chains": num_chains, "num_samples": num_samples,
              "num_warmup": num_warmup, "step_size": step_size,
              "trajectory_length": trajectory_length, "max_num_steps": max_num_steps,
              "target_accept": target_accept, "mass_matrix": mass_matrix,
              "warmup": warmup, "thin": thin, "divergence_threshold": divergence_threshold,
              "key": target_lib.fingerprint(jax.random.key_data(key)),
              "init": None if init is None else target_lib.fingerprint(init),
              "eval_x": None if eval_x is None else target_lib.fingerprint(eval_x),
              "target": tgt.description,
              "mesh": None if mesh is None else {k: int(v) for k, v in mesh.shape.items()}}

    def info_of(c: HMCChains) -> dict:
        eps = np.asarray(driver.to_host(c.step_size))
        steps = np.asarray(driver.to_host(num_integration_steps(
            trajectory_length, c.step_size, max_num_steps)))
        return {"step_size": eps, "num_integration_steps": steps,
                "trajectory_length": trajectory_length,
                "trajectory_truncated": bool(np.any(np.ceil(trajectory_length / eps)
                                                    > max_num_steps))}

    plan = driver.Plan(num_warmup=num_warmup, num_samples=num_samples, thin=thin,
                       checkpoint_every=checkpoint_every,
                       checkpoint_seconds=checkpoint_seconds)
    trace = driver.run(tree=tgt.tree, carry=carry, warmup_step=chainwise(warmup_one),
                       sample_step=chainwise(sample_one),
                       positions_of=lambda c: c.state.position, predict=predict,
                       eval_x=eval_x, plan=plan, run_dir=run_dir, config=config,
                       progress=progress, desc="hmc", info_of=info_of)
    if trace.info.get("trajectory_truncated"):
        import warnings

        warnings.warn(f"trajectory_length={trajectory_length:g} needs more than "
                      f"max_num_steps={max_num_steps} steps at the step sizes "
                      f"{trace.info['step_size']}: trajectories were cut short; raise "
                      f"max_num_steps to sample with the requested length", stacklevel=2)
    return trace


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)
