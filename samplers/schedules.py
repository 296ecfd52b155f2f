"""Step-size schedules for stochastic-gradient samplers: t -> (step size, noise on).

A schedule is a frozen dataclass (hashable, so it is static under jit) called
with a transition index t (0-based, possibly traced) that returns the step size
and whether the injected noise is on at t.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax.numpy as jnp

from weightspace.checks import positive_float, positive_int


def _positive(name: str, value, *, integer: bool = False):
    return positive_int(name, value) if integer else positive_float(name, value)


@dataclasses.dataclass(frozen=True)
class Constant:
    """The same step size at every transition, noise always on."""

    step_size: float

    def __post_init__(self):
        object.__setattr__(self, "step_size", _positive("step_size", self.step_size))

    def __call__(self, t):
        return jnp.float32(self.step_size), jnp.bool_(True)


@dataclasses.dataclass(frozen=True)
class Cyclical:
    """Cyclical cosine schedule of cSG-MCMC (Zhang et al. 2020, eq. 1):

        step(t) = step_size / 2 * (cos(pi * r(t)) + 1),  r(t) = (t mod L) / L,

    L = cycle_length transitions (their ceil(K / M) for K transitions in M
    cycles; their k - 1 is our t). Transitions with r(t) < exploration are the
    exploration stage: the noise is off, so the sampler is an optimizer
    (SGD, or SGD with momentum for SGHMC) that moves to a new mode; the rest of
    the cycle is the sampling stage, with noise. Draws belong in the sampling
    stage; `sampling_transitions` lists where.
    """

    step_size: float
    cycle_length: int
    exploration: float = 0.8

    def __post_init__(self):
        object.__setattr__(self, "step_size", _positive("step_size", self.step_size))
        object.__setattr__(self, "cycle_length",
                           _positive("cycle_length", self.cycle_length, integer=True))
        e = self.exploration
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or not 0 <= e < 1:
            raise ValueError(f"exploration must be a fraction of the cycle in [0, 1); got "
                             f"exploration={e!r}")
        object.__setattr__(self, "exploration", float(e))

    def __call__(self, t):
        m = jnp.mod(jnp.asarray(t, jnp.int32), self.cycle_length)
        step = self.step_size / 2 * (jnp.cos(jnp.pi * m / self.cycle_length) + 1)
        # r(t) < exploration  <=>  t mod L < ceil(exploration * L), in integers.
        return step.astype(jnp.float32), m >= self.exploration_steps

    @property
    def exploration_steps(self) -> int:
        """Transitions per cycle in the exploration stage (r(t) < exploration)."""
        return math.ceil(self.exploration * self.cycle_length)

    def sampling_transitions(self, cycle: int, per_cycle: int) -> list[int]:
        """`per_cycle` transitions of `cycle` spread evenly over its sampling
        stage, the last one ending the cycle."""
        start, stop = self.exploration_steps, self.cycle_length
        span = stop - start
        if per_cycle > span:
            raise ValueError(f"samples_per_cycle={per_cycle} exceeds the {span} "
                             f"transitions of a sampling stage")
        return [cycle * self.cycle_length + start + (span * (k + 1)) // per_cycle - 1
                for k in range(per_cycle)]


def resolve(schedule, step_size) -> Constant | Cyclical:
    """The schedule of a sampler call: `schedule` when given, else Constant(step_size)."""
    if schedule is None:
        if step_size is None:
            raise ValueError("step_size is required (or give schedule=ws.samplers.cyclical(...))")
        return Constant(step_size)
    if not isinstance(schedule, (Constant, Cyclical)):
        raise TypeError(f"schedule must be ws.samplers.constant(...) or "
                        f"ws.samplers.cyclical(...); got schedule={schedule!r}")
    if step_size is not None:
        raise ValueError(f"give step_size or schedule, not both; got step_size={step_size!r} "
                         f"and schedule={schedule!r}")
    return schedule


def constant(step_size: float) -> Constant:
    return Constant(step_size)


def cyclical(step_size: float, cycle_length: int, exploration: float = 0.8) -> Cyclical:
    """Zhang et al. 2020's cosine cycles; see `Cyclical`."""
    return Cyclical(step_size, cycle_length, exploration)
