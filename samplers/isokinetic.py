"""Isokinetic (microcanonical) dynamics, leaf by leaf: the integrator shared by
MCLMC (`samplers/mclmc.py`) and MAMS (`samplers/mams.py`).

The velocity u is a unit vector in whitened coordinates; the position moves
as dx/dt = sqrt(M^-1) u and the velocity turns towards the whitened gradient
g~ = sqrt(M^-1) grad log p (ESH dynamics, Ver Steeg and Galstyan 2021; its
microcanonical reading, Robnik et al. 2023, "Microcanonical Hamiltonian Monte
Carlo", JMLR 24). With e = g~/|g~|, d the dimension and
delta = eps |g~| / (d - 1), the exact velocity flow over a time eps is

    zeta = exp(-delta)
    u' ~ e (1 - zeta) (1 + zeta + (u.e)(1 - zeta)) + 2 zeta u    (then normalized)

and the kinetic energy changes by (d - 1) (delta - log 2 + log((1 + u.e)(1 -
zeta^2) + 2 zeta^2)), which enters the energy error -log p(x') + log p(x) + dK.

The minimal-norm integrator (McLachlan 1995; Omelyan et al. 2003) composes
velocity flows of lengths b1 eps, (1 - 2 b1) eps, b1 eps with two position
flows of eps / 2: two gradients per step, error O(eps^3) per step with a
small constant. Partial refresh (Robnik and Seljak 2023, "Fluctuation without
dissipation") mixes Gaussian noise of scale nu = sqrt((exp(2 eps / L) - 1) / d)
into u and renormalizes: the velocity decorrelates over a length L.

Every operation maps over the leaves of the position pytree; the only
cross-leaf quantities are scalars (dot products and norms, which XLA reduces
across devices), so weights sharded over devices stay sharded: nothing is
flattened with ravel_pytree and nothing is all-gathered.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# McLachlan 1995 ("On the numerical integration of ODEs by symmetric
# composition methods", SIAM J. Sci. Comput. 16): the minimal-norm coefficient.
MCLACHLAN_B1 = 0.1931833275037836

_NORM_FLOOR = 1e-13  # below this a gradient has no direction to turn towards


class IsokineticState(NamedTuple):
    position: Any          # pytree
    velocity: Any          # pytree like position, unit norm in whitened coordinates
    logdensity: jax.Array  # scalar
    logdensity_grad: Any   # pytree like position


def dimension(tree) -> int:
    """Number of scalars in a pytree (static)."""
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(tree)))


def tree_dot(a, b) -> jax.Array:
    """sum_i a_i b_i over every leaf (a scalar)."""
    parts = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum(x * y), a, b))
    return sum(parts[1:], parts[0])


def tree_scale(tree, scale):
    return jax.tree.map(lambda x: x * scale, tree)


def whiten(tree, sqrt_inverse_mass):
    """sqrt(M^-1) * tree, leaf by leaf (None: the identity)."""
    if sqrt_inverse_mass is None:
        return tree
    return jax.tree.map(lambda x, s: x * s, tree, sqrt_inverse_mass)


def normal_like(key, tree):
    """Independent standard normals shaped like `tree`, one key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
                                        for k, x in zip(keys, leaves)])


def normalize(tree):
    """tree / |tree| (left as is when its norm is below the floor)."""
    norm = jnp.sqrt(tree_dot(tree, tree))
    return tree_scale(tree, jnp.where(norm > _NORM_FLOOR, 1.0 / norm, 1.0))


def random_unit_velocity(key, position):
    """A velocity drawn uniformly on the unit sphere."""
    return normalize(normal_like(key, position))


def velocity_update(velocity, logdensity_grad, time, sqrt_inverse_mass, dim: int):
    """The exact ESH velocity flow over `time` under a fixed gradient.

    Returns (new velocity, kinetic energy change)."""
    g = whiten(logdensity_grad, sqrt_inverse_mass)
    g_norm = jnp.sqrt(tree_dot(g, g))
    e = tree_scale(g, jnp.where(g_norm > _NORM_FLOOR, 1.0 / g_norm, 1.0))
    ue = tree_dot(velocity, e)
    delta = time * g_norm / (dim - 1)
    zeta = jnp.exp(-delta)
    a = (1 - zeta) * (1 + zeta + ue * (1 - zeta))
    new = normalize(jax.tree.map(lambda ei, ui: a * ei + 2 * zeta * ui, e, velocity))
    # 0.5 |u + e|^2 is 1 + u.e for unit vectors; computed as the norm so that a
    # velocity a rounding error off the sphere still gives a consistent energy.
    s_plus = 0.5 * tree_dot(jax.tree.map(jnp.add, velocity, e),
                            jax.tree.map(jnp.add, velocity, e))
    kinetic = (delta - math.log(2.0) + jnp.log(s_plus * (1 - zeta**2) + 2 * zeta**2)) \
        * (dim - 1)
    return new, kinetic


def mclachlan_step(logdensity_and_grad: Callable, state: IsokineticState, step_size,
                   sqrt_inverse_mass, dim: int):
    """One minimal-norm step (two gradients). Returns (state, kinetic energy change)."""
    b1 = MCLACHLAN_B1
    u, k1 = velocity_update(state.velocity, state.logdensity_grad, b1 * step_size,
                            sqrt_inverse_mass, dim)
    x = state.position
    kinetic = k1
    value, grad = state.logdensity, state.logdensity_grad
    for coefficient in (1 - 2 * b1, b1):
        move = whiten(u, sqrt_inverse_mass)
        x = jax.tree.map(lambda xi, vi: xi + 0.5 * step_size * vi, x, move)
        value, grad = logdensity_and_grad(x)
        u, k = velocity_update(u, grad, coefficient * step_size, sqrt_inverse_mass, dim)
        kinetic = kinetic + k
    return IsokineticState(x, u, value, grad), kinetic


def partial_refresh(key, velocity, step_size, L, dim: int):
    """Mix noise into the velocity so that it decorrelates over a length L
    (L = inf: no refresh)."""
    nu = jnp.sqrt((jnp.exp(2 * step_size / L) - 1) / dim)
    z = normal_like(key, velocity)
    return normalize(jax.tree.map(lambda ui, zi: ui + nu * zi, velocity, z))


def langevin_step(logdensity_and_grad: Callable, key, state: IsokineticState, step_size,
                  L, sqrt_inverse_mass, dim: int):
    """Half a refresh, one minimal-norm step, half a refresh (the OBABO-like
    splitting of Robnik and Seljak 2023). Returns (state, energy change)."""
    key_before, key_after = jax.random.split(key)
    state = state._replace(velocity=partial_refresh(key_before, state.velocity,
                                                    0.5 * step_size, L, dim))
    new, kinetic = mclachlan_step(logdensity_and_grad, state, step_size, sqrt_inverse_mass,
                                  dim)
    new = new._replace(velocity=partial_refresh(key_after, new.velocity, 0.5 * step_size,
                                                L, dim))
    energy_change = kinetic - new.logdensity + state.logdensity
    return new, energy_change


def all_finite(state: IsokineticState, *scalars) -> jax.Array:
    """Whether the state's log density, gradient and the given scalars are finite."""
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state.logdensity_grad)]
    checks += [jnp.isfinite(state.logdensity)] + [jnp.isfinite(s) for s in scalars]
    out = checks[0]
    for c in checks[1:]:
        out = out & c
    return out


def sqrt_inverse_mass_of(inverse_mass):
    """sqrt of a diagonal inverse mass pytree (None: the identity)."""
    if inverse_mass is None:
        return None
    return jax.tree.map(jnp.sqrt, inverse_mass)


def init(position, logdensity_fn: Callable, key) -> IsokineticState:
    """A state at `position` with a uniformly drawn velocity (one gradient)."""
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return IsokineticState(position, random_unit_velocity(key, position), value, grad)
