"""Tuning pieces shared by MCLMC and MAMS, leaf by leaf, for one chain.

- `search_step_size`: double or halve a step size until a score crosses a
  threshold (Hoffman and Gelman 2014, Algorithm 4, with any score).
- `EnergyPredictor`: MCLMC's step size from the energy error (Robnik et al.
  2023, "Microcanonical Hamiltonian Monte Carlo", JMLR 24, Sec. 4): the
  variance of the energy error per step scales as eps^6, so each step's
  xi = dE^2 / (d * target) predicts the step size eps * xi^(-1/6) that meets
  the target variance per dimension; predictions are averaged with a decay of
  (n - 1) / (n + 1) for n = 150 effective samples, down-weighting steps far
  from the target (weight exp(-(log xi / 9)^2 / 2)).
- `Moments`: step-weighted mean and variance of the positions (West 1979),
  for a diagonal preconditioner and the first L = sqrt(sum of variances).
- `Autocorrelation`: the integrated autocorrelation time of every coordinate
  from batch means, tau_i = b Var(batch means)_i / Var_i, streamed: no draws
  are stored. L = 0.4 * (distance per transition) * mean_i tau_i (Robnik et al.
  2023 Sec. 4: 0.4 times the distance over which draws decorrelate).

Every accumulator is a NamedTuple of scalars and pytrees like the position, so
it is checkpointed with the chain and sharded like the weights.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

# Robnik et al. 2023, Sec. 4: 150 effective samples in the step-size average,
# trust in the estimate 1.5 (the weight's width is 6 * 1.5 in log xi).
PREDICTOR_SAMPLES = 150
PREDICTOR_TRUST = 1.5
STEP_SHRINK = 0.8  # a failed step caps the step size at 0.8 of the failed one
# A step whose energy error is this many times the target variance counts as
# failed: past the integrator's stability limit the error jumps by orders of
# magnitude (on the digits MLP: dE^2/d of 5e-7 at eps = 2, 2e3 at eps = 4), so
# the eps^6 model would place the step size beyond the cliff.
UNSTABLE_XI = 1e3
# The cap lifts back by 1 / STEP_SHRINK over this many stable steps. A cap that
# never lifts ratchets down: on the digits MLP one chain of three met a few
# heavy-tailed energy errors and ended tuning at a step size of 0.17 against
# 1.4 and 2.3 for the others (benchmarks/RESULTS.md, efficiency).
CAP_RECOVERY_STEPS = 50
L_FACTOR = 0.4     # Robnik et al. 2023: L = 0.4 x the decorrelation distance


def search_step_size(score: Callable, initial, threshold: float,
                     max_iterations: int = 100):
    """Double the step size while score(eps) >= threshold, or halve it while it
    is below; score decreases with eps (non-finite counts as below).

    Returns (the last step size on the >= side, score evaluations made)."""
    eps0 = jnp.asarray(initial, jnp.float32)

    def good(eps):
        s = score(eps)
        return jnp.isfinite(s) & (s >= threshold)

    first = good(eps0)
    factor = jnp.where(first, 2.0, 0.5)

    def cond(carry):
        i, _, ok = carry
        return (i < max_iterations) & (ok == first)

    def body(carry):
        i, eps, _ = carry
        eps = eps * factor
        return i + 1, eps, good(eps)

    tries, eps, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), eps0, first))
    # Growing, the last size crossed to the bad side: step back one.
    return jnp.where(first, eps / 2.0, eps), (tries + 1).astype(jnp.float32)


class EnergyPredictor(NamedTuple):
    time: jax.Array           # decayed sum of weights
    x_average: jax.Array      # decayed weighted sum of xi / eps^6
    step_size_max: jax.Array  # below the smallest step size that gave a non-finite step


def predictor_init() -> EnergyPredictor:
    zero = jnp.zeros((), jnp.float32)
    return EnergyPredictor(zero, zero, jnp.asarray(jnp.inf, jnp.float32))


def predictor_update(p: EnergyPredictor, step_size, energy_change, finite, dim: int,
                     desired_energy_var: float):
    """One step's energy change -> (predictor, the next step size). A step that
    was not finite or was unstable (xi >= UNSTABLE_XI) caps the step size at
    STEP_SHRINK times its own; every stable step lifts the cap by a factor
    (1 / STEP_SHRINK)^(1 / CAP_RECOVERY_STEPS), so the cap sits where
    unstable steps come at most about once per CAP_RECOVERY_STEPS steps."""
    decay = (PREDICTOR_SAMPLES - 1.0) / (PREDICTOR_SAMPLES + 1.0)
    xi = jnp.square(jnp.where(finite, energy_change, 0.0)) / (dim * desired_energy_var) + 1e-8
    finite = finite & (xi < UNSTABLE_XI)
    weight = jnp.exp(-0.5 * jnp.square(jnp.log(xi) / (6.0 * PREDICTOR_TRUST)))
    x_average = decay * p.x_average + weight * xi / step_size**6
    time = decay * p.time + weight
    predicted = (x_average / time) ** (-1.0 / 6.0)
    failed_max = STEP_SHRINK * step_size
    lifted = p.step_size_max * (1.0 / STEP_SHRINK) ** (1.0 / CAP_RECOVERY_STEPS)
    step_max = jnp.where(finite, lifted, jnp.minimum(p.step_size_max, failed_max))
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b),
                       EnergyPredictor(time, x_average, step_max),
                       p._replace(step_size_max=step_max))
    next_step = jnp.where(finite, jnp.minimum(predicted, step_max), failed_max)
    return new, next_step


class Moments(NamedTuple):
    weight: jax.Array  # total weight
    mean: Any          # pytree like the position
    m2: Any            # pytree: weighted sum of squared deviations


def moments_init(position) -> Moments:
    zeros = jax.tree.map(jnp.zeros_like, position)
    return Moments(jnp.zeros((), jnp.float32), zeros, zeros)


def moments_update(m: Moments, x, weight) -> Moments:
    """West's weighted update; weight 0 leaves the moments as they are."""
    total = m.weight + weight
    frac = jnp.where(total > 0, weight / jnp.where(total > 0, total, 1.0), 0.0)
    delta = jax.tree.map(lambda xi, mi: xi - mi, x, m.mean)
    mean = jax.tree.map(lambda mi, di: mi + frac * di, m.mean, delta)
    m2 = jax.tree.map(lambda s, xi, mi, di: s + weight * di * (xi - mi), m.m2, x, mean, delta)
    return Moments(total, mean, m2)


def moments_variance(m: Moments):
    return jax.tree.map(lambda s: s / jnp.maximum(m.weight, 1e-30), m.m2)


def total_variance(m: Moments) -> jax.Array:
    parts = jax.tree.leaves(jax.tree.map(jnp.sum, moments_variance(m)))
    return sum(parts[1:], parts[0])


class Autocorrelation(NamedTuple):
    count: jax.Array      # transitions seen
    values: Moments       # of the positions
    batch_sum: Any        # pytree: the current batch's sum
    batches: Moments      # of the batch means


def autocorrelation_init(position) -> Autocorrelation:
    return Autocorrelation(jnp.zeros((), jnp.int32), moments_init(position),
                           jax.tree.map(jnp.zeros_like, position), moments_init(position))


def autocorrelation_update(a: Autocorrelation, x, batch_size: int) -> Autocorrelation:
    count = a.count + 1
    values = moments_update(a.values, x, 1.0)
    batch_sum = jax.tree.map(jnp.add, a.batch_sum, x)
    full = count % batch_size == 0
    batches = moments_update(a.batches, jax.tree.map(lambda s: s / batch_size, batch_sum),
                             jnp.where(full, 1.0, 0.0))
    batch_sum = jax.tree.map(lambda s: jnp.where(full, jnp.zeros_like(s), s), batch_sum)
    return Autocorrelation(count, values, batch_sum, batches)


def autocorrelation_time(a: Autocorrelation, batch_size: int) -> jax.Array:
    """Mean over coordinates of tau_i = b Var(batch means)_i / Var_i, in
    transitions (coordinates that did not move are left out; NaN if none did)."""
    var = moments_variance(a.values)
    # Unbiased variance of the batch means (their count is small).
    k = a.batches.weight
    batch_var = jax.tree.map(lambda s: s / jnp.maximum(k - 1.0, 1.0), a.batches.m2)
    taus = jax.tree.map(lambda bv, v: jnp.where(v > 0, batch_size * bv / jnp.where(
        v > 0, v, 1.0), 0.0), batch_var, var)
    moved = jax.tree.map(lambda v: jnp.sum(v > 0).astype(jnp.float32), var)
    total = sum(jax.tree.leaves(jax.tree.map(jnp.sum, taus)))
    n = sum(jax.tree.leaves(moved))
    return jnp.where(n > 0, total / jnp.maximum(n, 1.0), jnp.nan)


def phase_bounds(num_warmup: int, fractions=(0.4, 0.7, 0.8)) -> tuple[int, int, int]:
    """Transitions where the warmup phases end: travel (step size only), moments
    (step size and preconditioner), retune (step size under the new metric);
    the rest measures the autocorrelation for L."""
    return tuple(int(round(f * num_warmup)) for f in fractions)
