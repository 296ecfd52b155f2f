"""Warmup adaptation: dual averaging of the step size, Welford variance for a
diagonal mass matrix, and Stan's schedule of adaptation windows.

All pieces are pure functions over NamedTuple states of one chain; the driver
vmaps them over chains.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DualAveragingState(NamedTuple):
    log_step_size: jax.Array      # the step size to use next
    log_step_size_avg: jax.Array  # the iterate average, used after warmup
    count: jax.Array              # iterations since the last restart
    avg_error: jax.Array          # running mean of (target - accept_prob)
    mu: jax.Array                 # shrinkage point, log(10 * initial step size)


def dual_averaging_init(step_size) -> DualAveragingState:
    """Hoffman and Gelman 2014 (NUTS paper), Algorithm 5: mu = log(10 * eps0)."""
    log_eps = jnp.log(jnp.asarray(step_size, jnp.float32))
    zero = jnp.zeros((), jnp.float32)
    return DualAveragingState(log_eps, zero, jnp.zeros((), jnp.int32), zero,
                              jnp.log(10.0) + log_eps)


def dual_averaging_update(state: DualAveragingState, accept_prob, target_accept, *,
                          gamma: float = 0.05, t0: float = 10.0,
                          kappa: float = 0.75) -> DualAveragingState:
    """One update towards `target_accept`; defaults of Hoffman and Gelman 2014
    (also Stan's: gamma 0.05, t0 10, kappa 0.75)."""
    t = state.count + 1
    tf = t.astype(jnp.float32)
    # A NaN acceptance (a divergent trajectory) counts as zero: shrink the step.
    accept_prob = jnp.where(jnp.isfinite(accept_prob), accept_prob, 0.0)
    eta = 1.0 / (tf + t0)
    avg_error = (1.0 - eta) * state.avg_error + eta * (target_accept - accept_prob)
    log_eps = state.mu - jnp.sqrt(tf) / gamma * avg_error
    weight = tf ** (-kappa)
    log_eps_avg = weight * log_eps + (1.0 - weight) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_eps_avg, t, avg_error, state.mu)


class WelfordState(NamedTuple):
    count: jax.Array
    mean: Any  # pytree like the position
    m2: Any    # pytree like the position: sum of squared deviations


def welford_init(position) -> WelfordState:
    zeros = jax.tree.map(jnp.zeros_like, position)
    return WelfordState(jnp.zeros((), jnp.int32), zeros, zeros)


def welford_update(state: WelfordState, position) -> WelfordState:
    count = state.count + 1
    delta = jax.tree.map(lambda x, m: x - m, position, state.mean)
    mean = jax.tree.map(lambda m, d: m + d / count, state.mean, delta)
    m2 = jax.tree.map(lambda s, x, m, d: s + d * (x - m), state.m2, position, mean, delta)
    return WelfordState(count, mean, m2)


def welford_inverse_mass(state: WelfordState):
    """Stan's regularized variance estimate, used as the inverse mass matrix:
    (n / (n + 5)) * var + 1e-3 * 5 / (n + 5)."""
    n = state.count.astype(jnp.float32)
    return jax.tree.map(
        lambda s: (n / (n + 5.0)) * s / jnp.maximum(n - 1.0, 1.0) + 1e-3 * 5.0 / (n + 5.0),
        state.m2)


class WarmupSchedule(NamedTuple):
    """Per warmup iteration: accumulate the variance (`slow`), and at the end
    of a slow window update the mass matrix and restart dual averaging."""

    slow: np.ndarray        # bool (num_warmup,)
    window_end: np.ndarray  # bool (num_warmup,)


def stan_schedule(num_warmup: int, adapt_mass: bool, *, init_buffer: int = 75,
                  term_buffer: int = 50, base_window: int = 25) -> WarmupSchedule:
    """Stan's windows (Stan Reference Manual, "HMC algorithm parameters"): a
    fast initial buffer, slow windows doubling in size, a fast terminal buffer;
    when num_warmup is below the sum of the defaults, 15% / 75% / 10%."""
    slow = np.zeros(num_warmup, bool)
    window_end = np.zeros(num_warmup, bool)
    if not adapt_mass or num_warmup < 20:
        return WarmupSchedule(slow, window_end)
    if init_buffer + term_buffer + base_window > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    start, size = init_buffer, base_window
    last = num_warmup - term_buffer
    while start < last:
        end = start + size
        # A window that would leave less than twice its successor's size is
        # stretched to the terminal buffer.
        if end + 2 * size > last:
            end = last
        slow[start:end] = True
        window_end[end - 1] = True
        start, size = end, 2 * size
    return WarmupSchedule(slow, window_end)


class WindowAdaptationState(NamedTuple):
    """Stan-style warmup of one chain: the step size (the initial one, then dual
    averaging's latest, after `final` the average, to sample with; warmup
    transitions use `warmup_step_size`), the inverse mass matrix in use (None:
    the identity), and the estimators behind them."""

    step_size: jax.Array
    inverse_mass: Any                # pytree like the position, or None
    dual_averaging: DualAveragingState
    welford: WelfordState | None     # None unless the mass matrix is adapted


class WindowAdaptation(NamedTuple):
    """(init, update, final) of Stan's window adaptation, as blackjax cuts it:

        init(position, step_size) -> state
        update(state, t, position, accept_prob) -> state    after warmup transition t
        final(state) -> state                               step size := the average
    """

    init: Any
    update: Any
    final: Any


def window_adaptation(num_warmup: int, *, adapt_mass: bool,
                      target_accept: float) -> WindowAdaptation:
    """Dual averaging of the step size towards `target_accept` throughout warmup
    and, with adapt_mass, a diagonal inverse mass matrix from the variance of
    the draws of each slow window of `stan_schedule`; at the end of a window the
    metric changes, so dual averaging restarts from the current step size."""
    schedule = stan_schedule(num_warmup, adapt_mass)
    slow, window_end = jnp.asarray(schedule.slow), jnp.asarray(schedule.window_end)

    def init(position, step_size) -> WindowAdaptationState:
        da = dual_averaging_init(step_size)
        inverse_mass = jax.tree.map(jnp.ones_like, position) if adapt_mass else None
        welford = welford_init(position) if adapt_mass else None
        return WindowAdaptationState(jnp.asarray(step_size, jnp.float32), inverse_mass, da,
                                     welford)

    def update(state: WindowAdaptationState, t, position,
               accept_prob) -> WindowAdaptationState:
        da = dual_averaging_update(state.dual_averaging, accept_prob, target_accept)
        inverse_mass, welford = state.inverse_mass, state.welford
        if adapt_mass:
            welford = select(slow[t], welford_update(welford, position), welford)
            inverse_mass = select(window_end[t], welford_inverse_mass(welford),
                                   inverse_mass)
            welford = select(window_end[t], welford_init(position), welford)
            # New metric, new scale: restart dual averaging from the current step.
            da = select(window_end[t], dual_averaging_init(jnp.exp(da.log_step_size)), da)
        return WindowAdaptationState(jnp.exp(da.log_step_size), inverse_mass, da, welford)

    def final(state: WindowAdaptationState) -> WindowAdaptationState:
        return state._replace(step_size=jnp.exp(state.dual_averaging.log_step_size_avg))

    return WindowAdaptation(init, update, final)


def warmup_step_size(state: WindowAdaptationState) -> jax.Array:
    """The step size of the next warmup transition. Computed inside the step that
    uses it: XLA may round exp differently in another compiled program, and the
    step count ceil(trajectory_length / step_size) can hinge on the last bit."""
    return jnp.exp(state.dual_averaging.log_step_size)


def select(pred, new, old):
    """`new` where pred, else `old`, leaf by leaf (pred may be traced)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)
