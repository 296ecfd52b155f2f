"""Targets whose basin masses are known exactly: the ground truth for "do the
samplers weight basins by their mass?".

A target is a product of `num_factors` independent copies of one
low-dimensional factor with two basins of different local learning
coefficients (LLC). Every copy has the same exact basin shares, computed once
by quadrature in float64, so a sampler's share of each basin, counted over
coordinates and draws, is compared with a number known to 1e-6 at any
dimension. The position is {"u": (num_factors, factor_dim)}: leaf by leaf,
it can be sharded along the factor axis.

Each factor's log density, in the coordinates u,

    log p(u) = -(barrier / g(u_saddle)) g(u) - |u|^2 / (2 prior_scale^2),

is a singular model's n K(w) (K the population loss, n the sample size) with
the scale of w absorbed into u: the barrier is n K at the lowest saddle
between the basins (the prior's share left out), so for a fixed K it grows
linearly with n, and raising the barrier is raising n. Singular learning
theory then says the basin with the lower LLC takes all the mass as the
barrier grows (Watanabe 2009, "Algebraic Geometry and Statistical Learning
Theory", Thm 6.1: a basin's mass falls as n^-lambda (log n)^(m-1)).

Factors:

- "quartic" (1-D): g(u) = (u + 1)^2 (u - 1)^4. Basin "regular" (u < -1/3):
  a quadratic minimum at -1, LLC 1/2. Basin "degenerate" (u > -1/3): a
  quartic minimum at 1, LLC 1/4. Saddle at -1/3, g = 1024/729.
- "crossing" (2-D): g(u, v) = (u v)^2 ((u - 1)^2 + (v - 1)^2). Basin
  "regular" (u > 1/2 and v > 1/2): the point (1, 1), LLC 1. Basin
  "degenerate" (the rest): the two axes, a set of minima that is not a point,
  crossing normally at 0 as in networks (K ~ u^2 v^2), LLC 1/2 with
  multiplicity 2. Lowest saddle at (2/3, 2/3), g = 32/729. The partition's
  edges follow the ridges between the point and the axes (g(1, v) and
  g(u, 1) peak at 1/2); near the saddle the box corner differs from the
  ridge, where the density is exp(-0.8 barrier) of the minima's or less.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from weightspace.checks import choice, positive_float, positive_int

QUAD_TAIL = 80.0  # integrate where log p is within this of its maximum (e^-80 ~ 1e-35)
GRID_PANELS = 200  # Gauss-Legendre panels per axis (1-D; 2-D uses a quarter)
GRID_NODES = 20    # nodes per panel
FINE_PANEL, FINE_REACH = 0.02, 0.5  # finer panels near the minima and the saddle


@dataclasses.dataclass(frozen=True)
class _Factor:
    name: str
    dim: int
    g: Callable              # (..., dim) -> (...), numpy or jax
    saddle_value: float      # g at the lowest saddle between the basins
    basins: tuple            # names, in the order of the labels
    llc: tuple               # (lambda, multiplicity) per basin
    label: Callable          # numpy (..., dim) -> int labels (...)
    minima: tuple            # a point of each basin's minimum set


def _quartic_g(u):
    x = u[..., 0]
    return (x + 1.0) ** 2 * (x - 1.0) ** 4


def _quartic_label(u):
    return np.where(np.asarray(u)[..., 0] > -1.0 / 3.0, 0, 1)


def _crossing_g(u):
    x, y = u[..., 0], u[..., 1]
    return (x * y) ** 2 * ((x - 1.0) ** 2 + (y - 1.0) ** 2)


def _crossing_label(u):
    u = np.asarray(u)
    return np.where((u[..., 0] > 0.5) & (u[..., 1] > 0.5), 1, 0)


FACTORS = {
    "quartic": _Factor("quartic", 1, _quartic_g, 1024.0 / 729.0, ("degenerate", "regular"),
                       ((Fraction(1, 4), 1), (Fraction(1, 2), 1)), _quartic_label,
                       ((1.0,), (-1.0,))),
    "crossing": _Factor("crossing", 2, _crossing_g, 32.0 / 729.0, ("degenerate", "regular"),
                        ((Fraction(1, 2), 2), (Fraction(1, 1), 1)), _crossing_label,
                        ((0.0, 0.0), (1.0, 1.0))),
}


@dataclasses.dataclass(frozen=True)
class BasinTarget:
    """A product of `num_factors` copies of FACTORS[factor] (module docstring).

    logdensity(position) -> scalar, position {"u": (num_factors, dim)} (jax).
    basins: basin names; label i of `assign` is basins[i].
    llc: per basin, (lambda, multiplicity) of its minimum set.
    shares: exact share of each basin in every factor (float64, sums to 1).
    """

    factor: str
    num_factors: int
    barrier: float
    prior_scale: float

    @property
    def _spec(self) -> _Factor:
        return FACTORS[self.factor]

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def basins(self) -> tuple:
        return self._spec.basins

    @property
    def llc(self) -> tuple:
        return self._spec.llc

    @property
    def scale(self) -> float:
        """The factor's n: barrier / g(saddle)."""
        return self.barrier / self._spec.saddle_value

    def factor_logdensity(self, u):
        """log p of each factor (unnormalized), u (..., dim) -> (...); numpy or jax."""
        return -self.scale * self._spec.g(u) - (u ** 2).sum(-1) / (2.0 * self.prior_scale ** 2)

    def logdensity(self, position):
        return jnp.sum(self.factor_logdensity(position["u"]))

    def logprior(self, position):
        """The Gaussian prior's part of `logdensity` (unnormalized): the
        reference a tempered sampler leaves untempered."""
        return -jnp.sum(position["u"] ** 2) / (2.0 * self.prior_scale ** 2)

    def assign(self, positions) -> np.ndarray:
        """Basin labels of positions {"u": (..., num_factors, dim)} -> (..., num_factors)."""
        return self._spec.label(np.asarray(positions["u"] if isinstance(positions, dict)
                                           else positions))

    def init(self, key, num_chains: int):
        """Starting positions drawn from the prior, {"u": (num_chains, num_factors, dim)}:
        each chain falls into a basin on its own, as a network's chains do."""
        num_chains = positive_int("num_chains", num_chains)
        u = self.prior_scale * jax.random.normal(key, (num_chains, self.num_factors, self.dim))
        return {"u": u}

    @functools.cached_property
    def shares(self) -> np.ndarray:
        """Exact share of each basin in every factor (the grid's; `masses`
        checks it against adaptive quadrature)."""
        masses = exact_masses(self, method="grid")
        return masses / masses.sum()

    def masses(self, method: str = "quad") -> np.ndarray:
        """Each basin's mass in one factor (`exact_masses`)."""
        return exact_masses(self, method=method)

    def minimum(self, basin: str) -> dict:
        """Every factor at `basin`'s minimum: {"u": (num_factors, dim)}."""
        point = self._spec.minima[self.basins.index(choice("basin", basin, self.basins))]
        return {"u": jnp.tile(jnp.asarray(point, jnp.float32), (self.num_factors, 1))}


def basin_target(factor: str, *, num_factors: int = 1, barrier: float = 8.0,
                 prior_scale: float = 1.0) -> BasinTarget:
    """A product target with exactly known basin shares (module docstring).

    factor: "quartic" (1-D, a quadratic and a quartic minimum) or "crossing"
        (2-D, a point and a normal crossing).
    num_factors: independent copies; the position has num_factors * dim numbers.
    barrier: n K at the lowest saddle, in units of the log density (1 to 30
        spans "every sampler crosses" to "none does without help").
    prior_scale: the Gaussian prior's standard deviation in u.
    """
    choice("factor", factor, tuple(FACTORS))
    return BasinTarget(factor, positive_int("num_factors", num_factors),
                       positive_float("barrier", barrier),
                       positive_float("prior_scale", prior_scale))


# -- exact masses ---------------------------------------------------------------

def _reach(target: BasinTarget) -> float:
    """A half-width beyond which every factor's log density is QUAD_TAIL below
    its value at the minima (the prior alone bounds it)."""
    far = math.sqrt(2.0 * QUAD_TAIL) * target.prior_scale
    return far + max(abs(c) for point in target._spec.minima for c in point) + 1.0


def _cells(target: BasinTarget) -> list[tuple[int, list[tuple[float, float]]]]:
    """Each basin as boxes (basin index, [(lo, hi) per axis]) whose union is the
    integration domain; the boxes' edges are the basins' boundaries."""
    r = _reach(target)
    if target.factor == "quartic":
        return [(0, [(-1.0 / 3.0, r)]), (1, [(-r, -1.0 / 3.0)])]
    return [(1, [(0.5, r), (0.5, r)]), (0, [(-r, 0.5), (-r, r)]), (0, [(0.5, r), (-r, 0.5)])]


def _breakpoints(lo: float, hi: float) -> list[float]:
    """Where the integrands change fastest (the minima and the saddle's
    coordinates), inside (lo, hi)."""
    return sorted(p for p in (-1.0, -1.0 / 3.0, 0.0, 2.0 / 3.0, 1.0) if lo < p < hi)


def _quad_box(f, box) -> float:
    from scipy import integrate  # slow to import; only the exact masses need it

    opts = {"epsabs": 0.0, "epsrel": 1e-12, "limit": 500}
    if len(box) == 1:
        (lo, hi), = box
        return integrate.quad(lambda x: f(np.array([x])), lo, hi,
                              points=_breakpoints(lo, hi) or None, **opts)[0]
    (xlo, xhi), (ylo, yhi) = box
    inner = lambda x: integrate.quad(lambda y: f(np.array([x, y])), ylo, yhi,
                                     points=_breakpoints(ylo, yhi) or None, **opts)[0]
    return integrate.quad(inner, xlo, xhi, points=_breakpoints(xlo, xhi) or None, **opts)[0]


def _gauss_legendre(lo: float, hi: float, panels: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi]: `panels` equal
    panels of GRID_NODES nodes, refined to panels of width FINE_PANEL within
    FINE_REACH of each breakpoint (where a high barrier makes the density's
    features narrow)."""
    nodes, weights = np.polynomial.legendre.leggauss(GRID_NODES)
    fine = [np.arange(p - FINE_REACH, p + FINE_REACH + FINE_PANEL / 2, FINE_PANEL)
            for p in _breakpoints(lo - FINE_REACH, hi + FINE_REACH)]
    edges = np.concatenate([np.linspace(lo, hi, panels + 1), _breakpoints(lo, hi), *fine])
    edges = np.unique(edges[(edges >= lo) & (edges <= hi)])
    a, b = edges[:-1, None], edges[1:, None]
    x = (a + b) / 2 + (b - a) / 2 * nodes
    w = (b - a) / 2 * weights
    return x.ravel(), np.broadcast_to(w, x.shape).ravel()


def _grid_box(f, box) -> float:
    if len(box) == 1:
        x, w = _gauss_legendre(*box[0], GRID_PANELS)
        return float(np.sum(w * f(x[:, None])))
    x, wx = _gauss_legendre(*box[0], GRID_PANELS // 4)
    y, wy = _gauss_legendre(*box[1], GRID_PANELS // 4)
    total = 0.0
    for i in range(0, len(x), 256):  # rows in blocks, to bound memory
        xs = x[i:i + 256]
        u = np.stack(np.broadcast_arrays(xs[:, None], y[None, :]), axis=-1)
        total += float(np.sum(wx[i:i + 256, None] * wy[None, :] * f(u)))
    return total


def exact_masses(target: BasinTarget, *, method: str = "quad") -> np.ndarray:
    """Each basin's unnormalized mass in one factor, in float64, relative to
    the density at the highest minimum: method "quad" (scipy's adaptive
    quadrature, nested in 2-D) or "grid" (a composite Gauss-Legendre grid);
    the two are independent checks of each other."""
    choice("method", method, ("quad", "grid"))
    top = max(float(target.factor_logdensity(np.asarray(p, np.float64)))
              for p in target._spec.minima)
    density = lambda u: np.exp(target.factor_logdensity(np.asarray(u, np.float64)) - top)
    integrate = _quad_box if method == "quad" else _grid_box
    masses = np.zeros(len(target.basins))
    for basin, box in _cells(target):
        masses[basin] += integrate(density, box)
    return masses
