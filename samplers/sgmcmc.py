"""Stochastic-gradient MCMC, leaf by leaf: SGLD, preconditioned SGLD, SGHMC.

With g = grad of an unbiased minibatch estimate of log p(w | D) (the
Posterior's own temperature included), step size eps and temperature T:

- SGLD (Welling and Teh 2011):   w <- w + eps/2 g + N(0, eps T)
- pSGLD (Li et al. 2016), RMSprop preconditioner G = 1 / (lambda + sqrt(V)),
  V <- alpha V + (1 - alpha) (g / N)^2 (N training rows, so V tracks the
  per-example gradient as in the paper; alpha = 0.99, lambda = 1e-5 there):
                                 w <- w + eps/2 G g + N(0, eps T G)
  (the small correction term Gamma of the paper is dropped, as is usual).
- SGHMC (Chen et al. 2014, eq. 15, with beta_hat = 0), learning rate eps and
  friction alpha (1 - alpha is the momentum of SGD):
                                 v <- (1 - alpha) v + eps g + N(0, 2 alpha eps T)
                                 w <- w + v

The stationary distribution approaches p(w | D)^(1/T) as eps -> 0; at a finite
eps it is biased. On a Gaussian target with precision A and exact gradients,
SGLD is the linear recursion w' = (I - eps A/2) w + eps/2 b + sqrt(eps T) xi,
whose stationary covariance S solves the discrete Lyapunov equation
S = (I - eps A/2) S (I - eps A/2)^T + eps T I: along an eigenvector of A with
eigenvalue a the variance is T / (a (1 - eps a / 4)), larger than T / a by the
factor 1 / (1 - eps a / 4). SGHMC's (w, v) recursion has its own Lyapunov
equation. Minibatch gradient noise adds to both (tests/test_sgmcmc.py checks
the full-batch formulas and the minibatch means).

A step whose result is not finite (NaN or inf in the new state or the
estimate) is rejected: the state stays where it was and the step is flagged
divergent.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from weightspace.samplers import driver, minibatch, schedules, validation
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.trace import Trace

PSGLD_ALPHA = 0.99   # Li et al. 2016
PSGLD_LAMBDA = 1e-5  # Li et al. 2016
# The stabilizer of RMSprop-SGLD for LLC estimation, whose V tracks the mean
# loss's gradient: devinterp's default eps (optim/preconditioner.py). It caps
# the preconditioner at 10, so directions the loss does not move still feel
# the localization at a stable step.
RMSPROP_LOSS_LAMBDA = 0.1
SGHMC_FRICTION = 0.1  # SGD momentum 0.9; Chen et al. 2014 suggest 0.01-0.1
SGNHT_DIFFUSION = 0.01  # A of Ding et al. 2014; devinterp's diffusion_factor default


class SGLDState(NamedTuple):
    position: Any
    square_avg: Any  # pSGLD's running average of squared per-example gradients, or None


class SGHMCState(NamedTuple):
    position: Any
    momentum: Any


class SGNHTState(NamedTuple):
    position: Any
    momentum: Any      # displacement units: E[p_i^2] = step size at equilibrium
    thermostat: jax.Array  # xi, the adaptive friction


class SGMCMCInfo(NamedTuple):
    step_size: jax.Array
    noise: jax.Array                 # bool: noise injected (False in exploration stages)
    minibatch_logdensity: jax.Array  # the estimate at the position the step started from
    is_divergent: jax.Array


def _normal_like(key, tree):
    """Standard normals shaped like `tree`. One draw of all the entries, cut into
    leaves: on CPU one threefry call is measurably cheaper per step than one
    per leaf (benchmarks/sgmcmc.py); the position itself is never flattened."""
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    z = jax.random.normal(key, (sum(sizes),), jnp.result_type(*leaves))
    out, start = [], 0
    for x, n in zip(leaves, sizes):
        out.append(jax.lax.dynamic_slice_in_dim(z, start, n).reshape(jnp.shape(x)))
        start += n
    return jax.tree.unflatten(treedef, out)


def _all_finite(*trees) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(x)) for t in trees for x in jax.tree.leaves(t)]
    return jnp.all(jnp.stack(flags))


def _keep_finite(new, old, value, grad):
    ok = _all_finite(new, value, grad)
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old), ~ok


def sgld_init(position, preconditioned: bool = False) -> SGLDState:
    square_avg = jax.tree.map(jnp.zeros_like, position) if preconditioned else None
    return SGLDState(position, square_avg)


def sghmc_init(position) -> SGHMCState:
    return SGHMCState(position, jax.tree.map(jnp.zeros_like, position))


def sgnht_init(position, diffusion=SGNHT_DIFFUSION) -> SGNHTState:
    """At rest, the thermostat at the diffusion A: the noise brings the kinetic
    temperature up within about 1 / (2 A) steps (burn-in)."""
    return SGNHTState(position, jax.tree.map(jnp.zeros_like, position),
                      jnp.asarray(diffusion, jnp.float32))


def rmsprop_preconditioner(square_avg, lam: float):
    """G = 1 / (lam + sqrt(V)), leaf by leaf, from RMSprop's average V."""
    return jax.tree.map(lambda v: 1.0 / (lam + jnp.sqrt(v)), square_avg)


def build_sgld_kernel(estimate_fn: Callable, *, num_data: int, temperature: float = 1.0,
                      preconditioned: bool = False, alpha: float = PSGLD_ALPHA,
                      lam: float = PSGLD_LAMBDA, precondition_on: Callable | None = None):
    """step(key, state, batch, step_size, noise, value_grad=None) -> (state, info).

    estimate_fn(position, batch): unbiased estimate of log p(w | D).
    precondition_on(position, grad) -> the gradient whose squares the RMSprop
        average V tracks; default grad / num_data (the per-example gradient of
        Li et al. 2016). LLC estimation passes the loss term's gradient alone.
    noise: bool (may be traced); False makes the step plain (preconditioned)
        gradient ascent, the exploration stage of cyclical schedules.
    value_grad: (value, grad) of estimate_fn at state.position on this batch,
        when the caller already has them (e.g. from the previous full-batch
        step); computed here otherwise.
    """

    def step(key, state: SGLDState, batch, step_size, noise, value_grad=None, adapt=True):
        value, grad = (jax.value_and_grad(estimate_fn)(state.position, batch)
                       if value_grad is None else value_grad)
        z = _normal_like(key, state.position)
        scale = jnp.where(noise, jnp.sqrt(step_size * temperature), 0.0)
        if preconditioned:
            tracked = (jax.tree.map(lambda g: g / num_data, grad) if precondition_on is None
                       else precondition_on(state.position, grad))
            square_avg = jax.tree.map(
                lambda v, g: jnp.where(adapt, alpha * v + (1 - alpha) * jnp.square(g), v),
                state.square_avg, tracked)
            precond = rmsprop_preconditioner(square_avg, lam)
            position = jax.tree.map(
                lambda w, g, p, e: w + 0.5 * step_size * p * g + scale * jnp.sqrt(p) * e,
                state.position, grad, precond, z)
        else:
            square_avg = None
            position = jax.tree.map(lambda w, g, e: w + 0.5 * step_size * g + scale * e,
                                    state.position, grad, z)
        new, divergent = _keep_finite(SGLDState(position, square_avg), state, value, grad)
        return new, SGMCMCInfo(jnp.asarray(step_size, jnp.float32), jnp.asarray(noise),
                               value, divergent)

    return step


def build_sgnht_kernel(estimate_fn: Callable, *, diffusion: float = SGNHT_DIFFUSION):
    """step(key, state, batch, step_size, value_grad=None, moves=None) -> (state, info):
    stochastic gradient Nose-Hoover thermostat (Ding et al. 2014, algorithm 2),
    momentum p in displacement units, h the step size, A the diffusion:

        p <- p - xi p + h grad log p(w) + sqrt(2 A h) N(0, I)
        w <- w + p
        xi <- xi + |p|^2 / d - h

    The thermostat xi adapts the friction until the kinetic temperature
    |p|^2 / d equals h, absorbing the unknown minibatch gradient noise.
    moves: booleans like the position; coordinates where False keep p = 0
    and do not count in d (a weight-refined estimate).
    """

    def step(key, state: SGNHTState, batch, step_size, value_grad=None, moves=None):
        value, grad = (jax.value_and_grad(estimate_fn)(state.position, batch)
                       if value_grad is None else value_grad)
        z = _normal_like(key, state.position)
        scale = jnp.sqrt(2.0 * diffusion * step_size)
        momentum = jax.tree.map(
            lambda p, g, e: (1.0 - state.thermostat) * p + step_size * g + scale * e,
            state.momentum, grad, z)
        if moves is not None:
            momentum = jax.tree.map(lambda m, p: jnp.where(m, p, 0.0), moves, momentum)
            d = sum(jnp.sum(m) for m in jax.tree.leaves(moves))
        else:
            d = sum(p.size for p in jax.tree.leaves(momentum))
        kinetic = sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(momentum))
        new = SGNHTState(jax.tree.map(jnp.add, state.position, momentum), momentum,
                         state.thermostat + kinetic / d - step_size)
        new, divergent = _keep_finite(new, state, value, grad)
        return new, SGMCMCInfo(jnp.asarray(step_size, jnp.float32), jnp.asarray(True),
                               value, divergent)

    return step


def build_sghmc_kernel(estimate_fn: Callable, *, temperature: float = 1.0,
                       friction: float = SGHMC_FRICTION):
    """step(key, state, batch, step_size, noise) -> (state, info); see SGLD's."""

    def step(key, state: SGHMCState, batch, step_size, noise):
        value, grad = jax.value_and_grad(estimate_fn)(state.position, batch)
        z = _normal_like(key, state.position)
        scale = jnp.where(noise, jnp.sqrt(2.0 * friction * step_size * temperature), 0.0)
        momentum = jax.tree.map(lambda v, g, e: (1 - friction) * v + step_size * g + scale * e,
                                state.momentum, grad, z)
        position = jax.tree.map(jnp.add, state.position, momentum)
        new, divergent = _keep_finite(SGHMCState(position, momentum), state, value, grad)
        return new, SGMCMCInfo(jnp.asarray(step_size, jnp.float32), jnp.asarray(noise),
                               value, divergent)

    return step


# ------------------------------------------------------------------ samplers

class SGMCMCChains(NamedTuple):
    """What the chains carry (leading axis = chain); checkpointed as is."""

    key_data: jax.Array        # noise keys
    batch_key_data: jax.Array  # minibatch order keys
    state: Any                 # SGLDState or SGHMCState


def _block_end(schedule, thin: int, samples_per_cycle: int):
    """t -> last transition of the kept draw whose block starts at t."""
    if not isinstance(schedule, schedules.Cyclical):
        return lambda t: t + thin - 1
    cycle = schedule.cycle_length
    ends = jnp.asarray(schedule.sampling_transitions(0, samples_per_cycle), jnp.int32)

    def end(t):
        m = jnp.mod(t, cycle)
        return t - m + jnp.min(jnp.where(ends >= m, ends, 2 * cycle))

    return end


def _draw_end_host(schedule, num_warmup: int, thin: int, samples_per_cycle: int):
    """j -> last transition of kept draw j (host ints), or None for evenly thinned draws."""
    if not isinstance(schedule, schedules.Cyclical):
        return None
    cycle = schedule.cycle_length
    ends = schedule.sampling_transitions(0, samples_per_cycle)
    first_cycle, offset = divmod(num_warmup, cycle)
    first = [e for e in ends if e >= offset]

    def draw_end(j: int) -> int:
        if j < len(first):
            return first_cycle * cycle + first[j]
        c, k = divmod(j - len(first), len(ends))
        return (first_cycle + 1 + c) * cycle + ends[k]

    return draw_end


def _sgmcmc(kind: str, target, key, *, data, schedule, step_size, temperature,
            batch_size, thin, samples_per_cycle, num_warmup, kernel_options: dict,
            **common) -> Trace:
    """The shared body of `sgld` and `sghmc`: the schedule's checks, then one
    driver call with this module's `algorithm`."""
    validation.int_at_least("num_warmup", num_warmup, 0)
    validation.positive_int("thin", thin)
    validation.positive_int("samples_per_cycle", samples_per_cycle)
    temperature = validation.positive_float("temperature", temperature)
    if step_size is not None:
        step_size = validation.positive_float("step_size", step_size)
    sched = schedules.resolve(schedule, step_size)
    if isinstance(sched, schedules.Cyclical):
        if thin != 1:
            raise ValueError(f"thin={thin} is not used with a cyclical schedule: draws are "
                             f"samples_per_cycle evenly spaced transitions of each sampling "
                             f"stage")
        sched.sampling_transitions(0, samples_per_cycle)  # raises if they do not fit
    elif samples_per_cycle != 1:
        raise ValueError(f"samples_per_cycle={samples_per_cycle} needs a cyclical schedule")

    def build(tgt) -> Algorithm:
        batch = validation.positive_int("batch_size", batch_size)
        if batch > tgt.num_data:
            raise ValueError(f"batch_size={batch} is larger than the {tgt.num_data} "
                             f"training rows")
        return algorithm(kind, tgt, schedule=sched, batch_size=batch,
                         temperature=temperature, num_warmup=num_warmup, thin=thin,
                         samples_per_cycle=samples_per_cycle, kernel_options=kernel_options)

    return driver.sample(build, target, key, data=data, minibatch=True,
                         num_warmup=num_warmup, thin=thin, **common)


def algorithm(kind: str, tgt, *, schedule, batch_size: int, temperature: float,
              num_warmup: int, thin: int, samples_per_cycle: int,
              kernel_options: dict) -> Algorithm:
    """SGLD, pSGLD (kernel_options preconditioned=True) or SGHMC (kind "sghmc",
    kernel_options friction=...) for the driver, on a MinibatchTarget."""
    num_data, mesh = tgt.num_data, tgt.mesh
    if kind == "sghmc":
        kernel = build_sghmc_kernel
        options = {"temperature": temperature, **kernel_options}
        init_state = sghmc_init
    else:
        kernel = build_sgld_kernel
        options = {"temperature": temperature, "num_data": num_data, **kernel_options}
        preconditioned = kernel_options.get("preconditioned", False)
        init_state = lambda w: sgld_init(w, preconditioned)  # noqa: E731
    block_end = _block_end(schedule, thin, samples_per_cycle)
    per_transition = batch_size / num_data  # full-batch gradients of one minibatch step

    def init(tree, positions, key_chains, key_batches):
        num_chains = jax.tree.leaves(positions)[0].shape[0]
        chain_keys = jax.random.key_data(jax.random.split(key_chains, num_chains))
        batch_keys = jax.random.key_data(jax.random.split(key_batches, num_chains))
        carry = SGMCMCChains(chain_keys, batch_keys, jax.vmap(init_state)(positions))
        return carry, jnp.zeros((num_chains,), jnp.float32)

    def transition(tree, c: SGMCMCChains, t):
        estimate = tgt.estimate_of(tree)
        idx = minibatch.batch_indices(jax.random.wrap_key_data(c.batch_key_data), t,
                                      num_data, batch_size)
        batch = minibatch.take(tgt.data_of(tree), idx, mesh)
        eps, noise = schedule(t)
        step = kernel(estimate, **options)
        noise_key = jax.random.fold_in(jax.random.wrap_key_data(c.key_data), t)
        state, info = step(noise_key, c.state, batch, eps, noise)
        return c._replace(state=state), info

    def warmup_step(tree, c, t):
        c, info = transition(tree, c, t)
        return c, info, jnp.float32(per_transition)

    def sample_step(tree, c, t):
        t = jnp.asarray(t, jnp.int32)

        def body(i, carry):
            c, info = carry
            c, new = transition(tree, c, i)
            return c, new._replace(is_divergent=new.is_divergent | info.is_divergent)

        # A block has at least one transition, so the zero info is always replaced;
        # starting from it traces `transition` once instead of twice.
        shapes = jax.eval_shape(lambda: transition(tree, c, t)[1])
        none = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        end = block_end(t)
        c, info = jax.lax.fori_loop(t, end + 1, body, (c, none))
        return c, info, (end + 1 - t).astype(jnp.float32) * per_transition

    settings = {"batch_size": batch_size, "schedule": repr(schedule),
                "temperature": temperature,
                "samples_per_cycle": samples_per_cycle, "kernel": dict(kernel_options)}
    return Algorithm(
        name=kind, init=init, warmup_step=warmup_step, sample_step=sample_step,
        position=lambda c: c.state.position, settings=settings, num_keys=2,
        info=lambda c: {"schedule": repr(schedule), "batch_size": batch_size,
                        "num_data": num_data},
        draw_end=_draw_end_host(schedule, num_warmup, thin, samples_per_cycle))


_COMMON_DOC = """
    target: a Posterior (minibatches of its training rows, the likelihood scaled
        to the full data by `minibatch_logdensity`), or a callable
        logdensity(position, batch) -> unbiased estimate of the full log
        density, with `data` the training rows (a pytree of arrays, rows first).
    init: starting positions, leaves with a leading num_chains axis (required
        for a callable; default posterior.init with independent keys).
    num_samples: draws kept per chain. With a constant step size, after
        num_warmup burn-in transitions, one draw every `thin` transitions. With
        schedule=ws.samplers.cyclical(...), `samples_per_cycle` draws evenly
        spaced over each cycle's sampling stage (the last at the cycle's end),
        from transition num_warmup on.
    batch_size: rows per minibatch, drawn without replacement within an epoch
        (samplers/minibatch.py); at most the number of training rows.
    step_size or schedule: a constant step size, or a schedule object.
    temperature: T of the injected noise; the stationary distribution is
        p(w | D)^(1/T) (a Posterior's own temperature multiplies in).
    eval_x, predict_fn, mesh, run_dir, checkpoint_every, checkpoint_seconds,
    progress: as for ws.samplers.hmc (draws stream to run_dir; a killed run
        resumes to the draws an uninterrupted one makes).
    Stats per draw: step_size, noise, minibatch_logdensity (the estimate at
    the last transition's start) and is_divergent (a non-finite step was
    rejected in the draw's block), grad_evals (the draw's transitions times
    batch_size / num_data: full-batch-equivalent gradients).
"""


def sgld(target, key, *, data=None, init=None, num_chains: int = 1, num_samples: int,
         num_warmup: int = 0, batch_size: int, step_size: float | None = None,
         schedule=None, temperature: float = 1.0, preconditioner: str | None = None,
         thin: int = 1, samples_per_cycle: int = 1, eval_x=None, predict_fn=None,
         mesh=None, run_dir=None, checkpoint_every: int = 100,
         checkpoint_seconds: float = 300.0, progress: bool = True):
    """Stochastic gradient Langevin dynamics chains (Welling and Teh 2011); with
    preconditioner="rmsprop", pSGLD (Li et al. 2016). Returns a `Trace`.
    """
    if preconditioner is not None:
        validation.choice("preconditioner", preconditioner, ("rmsprop",))
    return _sgmcmc("sgld" if preconditioner is None else "psgld", target, key, data=data,
                   init=init, num_chains=num_chains, num_samples=num_samples,
                   num_warmup=num_warmup, batch_size=batch_size, step_size=step_size,
                   schedule=schedule, temperature=temperature, thin=thin,
                   samples_per_cycle=samples_per_cycle, eval_x=eval_x,
                   predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                   checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                   progress=progress,
                   kernel_options={"preconditioned": preconditioner is not None})


def sghmc(target, key, *, data=None, init=None, num_chains: int = 1, num_samples: int,
          num_warmup: int = 0, batch_size: int, step_size: float | None = None,
          schedule=None, friction: float = SGHMC_FRICTION, temperature: float = 1.0,
          thin: int = 1, samples_per_cycle: int = 1, eval_x=None, predict_fn=None,
          mesh=None, run_dir=None, checkpoint_every: int = 100,
          checkpoint_seconds: float = 300.0, progress: bool = True):
    """Stochastic gradient HMC chains (Chen et al. 2014); with
    schedule=ws.samplers.cyclical(...), cyclical SGHMC (Zhang et al. 2020).
    step_size is the learning rate eps; friction alpha in (0, 1]. Returns a `Trace`.
    """
    friction = validation.positive_float("friction", friction)
    if friction > 1:
        raise ValueError(f"friction must be in (0, 1] (1 - friction is the momentum); got "
                         f"friction={friction!r}")
    return _sgmcmc("sghmc", target, key, data=data, init=init, num_chains=num_chains,
                   num_samples=num_samples, num_warmup=num_warmup, batch_size=batch_size,
                   step_size=step_size, schedule=schedule, temperature=temperature,
                   thin=thin, samples_per_cycle=samples_per_cycle, eval_x=eval_x,
                   predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                   checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                   progress=progress, kernel_options={"friction": friction})


sgld.__doc__ += _COMMON_DOC
sghmc.__doc__ += _COMMON_DOC
