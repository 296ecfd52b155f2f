"""A small network whose basin masses come from a validated reference.

One tanh unit with an output bias, f(x) = a tanh(b x + c) + d (4 weights
w = (a, b, c, d)), fitted by Gaussian likelihood to noisy data from a "bump"
teacher, tanh(s (x + e)) - h tanh(s (x - e)): a single unit can fit the
bump's left edge or its right edge, not both. The two fits are separate
basins of the posterior, with a barrier between them (moving the unit from
one edge to the other passes through fits of neither), and their masses
differ because the edges differ in height (h < 1) and the data are noisy.
Each basin appears twice, as (a, b, c, d) and its mirror (-a, -b, -c, d)
(tanh is odd), so a draw is assigned by its unit's location x0 = -c / b,
which the mirror keeps: "left" when x0 < 0, "right" otherwise.

No closed form gives the masses. `reference_shares` estimates them by
importance sampling in float64 (a defensive mixture: Student-t components at
every mode found by multi-start optimization, and the prior), with the
estimator's standard error; tests/test_network_basins.py checks it against a
second, independent estimate, a long replica-exchange run, and against a
different proposal.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from weightspace.checks import positive_float, positive_int

BASINS = ("left", "right")
DIM = 4
# The proposal: Student-t (T_DOF degrees of freedom) at each mode, its scale
# matrix the inverse Hessian times T_INFLATE, and the prior with weight PRIOR_WEIGHT.
T_DOF, T_INFLATE, PRIOR_WEIGHT = 4.0, 2.0, 0.1
NUM_STARTS = 200


@dataclasses.dataclass(frozen=True)
class NetworkBasinTarget:
    """The posterior of f(x) = a tanh(b x + c) + d on the bump teacher's data
    (module docstring). Position {"w": (4,)} = (a, b, c, d).

    x, y: the data (float64, n rows).
    noise: the likelihood's standard deviation; prior_scale: the Gaussian
        prior's, on every weight.
    repeats: the data counted this many times (the sample size n = repeats x
        rows with the loss K fixed): raising it raises the barrier.
    """

    x: np.ndarray
    y: np.ndarray
    noise: float
    prior_scale: float
    repeats: float = 1.0

    basins = BASINS

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    def log_posterior(self, w):
        """Unnormalized log posterior of w (..., 4) -> (...); numpy (float64) or jax."""
        xp = np if isinstance(w, np.ndarray) else jnp
        a, b, c, d = (w[..., i, None] for i in range(DIM))
        f = a * xp.tanh(b * xp.asarray(self.x, w.dtype) + c) + d
        resid = xp.asarray(self.y, w.dtype) - f
        return (-self.repeats * (resid ** 2).sum(-1) / (2.0 * self.noise ** 2)
                - (w ** 2).sum(-1) / (2.0 * self.prior_scale ** 2))

    def logdensity(self, position):
        return self.log_posterior(position["w"])

    def logprior(self, position):
        """The prior's part of `logdensity`: the reference of a tempered sampler."""
        return -jnp.sum(position["w"] ** 2) / (2.0 * self.prior_scale ** 2)

    def assign(self, positions) -> np.ndarray:
        """Basin labels (0 "left", 1 "right") of positions {"w": (..., 4)} -> (...)."""
        w = np.asarray(positions["w"] if isinstance(positions, dict) else positions)
        b, c = w[..., 1], w[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x0 = -c / b
        return np.where(x0 < 0.0, 0, 1)

    def init(self, key, num_chains: int):
        """Starting positions drawn from the prior, {"w": (num_chains, 4)}."""
        import jax

        num_chains = positive_int("num_chains", num_chains)
        return {"w": self.prior_scale * jax.random.normal(key, (num_chains, DIM))}

    @functools.cached_property
    def modes(self) -> np.ndarray:
        """(m, 4) the posterior's local maxima found from NUM_STARTS prior draws
        (mirror images included), float64."""
        from scipy import optimize

        rng = np.random.default_rng(0)
        neg = lambda w: -float(self.log_posterior(w))
        grad = lambda w: -self.gradient(w)
        found = []
        for start in self.prior_scale * rng.normal(size=(NUM_STARTS, DIM)):
            r = optimize.minimize(neg, start, jac=grad, method="L-BFGS-B")
            w = r.x * np.array([np.sign(r.x[1]) or 1.0] * 3 + [1.0])  # canonical: b > 0
            if not any(np.allclose(w, m, atol=1e-3) for m in found):
                found.append(w)
        mirrored = [m * np.array([-1.0, -1.0, -1.0, 1.0]) for m in found]
        return np.array(found + mirrored)

    def reference_shares(self, num_draws: int = 2_000_000, seed: int = 0,
                         inflate: float = T_INFLATE) -> tuple[np.ndarray, np.ndarray]:
        """(shares, standard_error) of the basins by importance sampling
        (module docstring); `inflate` widens the Student-t components."""
        num_draws = positive_int("num_draws", num_draws)
        inflate = positive_float("inflate", inflate)
        rng = np.random.default_rng(seed)
        modes = self.modes
        scales = [np.linalg.cholesky(inflate * np.linalg.inv(-self.hessian(m)))
                  for m in modes]
        weights = np.r_[np.full(len(modes), (1 - PRIOR_WEIGHT) / len(modes)), PRIOR_WEIGHT]
        counts = rng.multinomial(num_draws, weights)
        draws = [m + _student_t(rng, k, T_DOF) @ L.T for m, L, k in zip(modes, scales, counts)]
        draws.append(self.prior_scale * rng.normal(size=(counts[-1], DIM)))
        w = np.concatenate(draws)
        log_q = np.stack([_log_t(w, m, L, T_DOF) for m, L in zip(modes, scales)]
                         + [_log_normal(w, self.prior_scale)], axis=-1)
        log_q = np.logaddexp.reduce(log_q + np.log(weights), axis=-1)
        log_w = self.log_posterior(w) - log_q
        iw = np.exp(log_w - log_w.max())
        labels = self.assign(w)
        total = iw.sum()
        shares = np.array([iw[labels == k].sum() / total for k in range(len(BASINS))])
        se = np.array([np.sqrt(np.sum(iw ** 2 * ((labels == k) - shares[k]) ** 2)) / total
                       for k in range(len(BASINS))])
        return shares, se

    @functools.cached_property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """(shares, standard_error) from `reference_shares` at its defaults
        (2 million draws), computed once."""
        return self.reference_shares()

    @property
    def shares(self) -> np.ndarray:
        """The reference shares (importance sampling, 2 million draws)."""
        return self.reference[0]

    def _fit(self, w: np.ndarray):
        """tanh(b x + c), its derivative, the residuals and the fit's Jacobian
        (4, n) at w = (a, b, c, d)."""
        a, b, c, d = w
        t = np.tanh(b * self.x + c)
        s = 1 - t ** 2                                  # tanh'
        resid = self.y - (a * t + d)
        jac = np.stack([t, a * s * self.x, a * s, np.ones_like(t)])
        return t, s, resid, jac

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """The log posterior's gradient at w (4,), float64, in closed form."""
        _, _, resid, jac = self._fit(w)
        return self.repeats * jac @ resid / self.noise ** 2 - w / self.prior_scale ** 2

    def hessian(self, w: np.ndarray) -> np.ndarray:
        """The log posterior's Hessian at w (4,), float64, in closed form:
        -(repeats / noise^2) sum_i (J_i J_i^T - resid_i H_i) - I / prior_scale^2,
        J_i and H_i the fit's first and second derivatives at row i."""
        a, x = w[0], self.x
        t, s, resid, jac = self._fit(w)
        s2 = -2 * t * s                                 # tanh''
        zero = np.zeros_like(t)
        second = np.array([[zero, s * x, s, zero],
                           [s * x, a * s2 * x ** 2, a * s2 * x, zero],
                           [s, a * s2 * x, a * s2, zero],
                           [zero, zero, zero, zero]])
        curvature = jac @ jac.T - second @ resid
        return (-self.repeats * curvature / self.noise ** 2
                - np.eye(DIM) / self.prior_scale ** 2)


def network_basin_target(*, num_data: int = 16, noise: float = 1.0,
                         prior_scale: float = 3.0, edge_height: float = 0.9,
                         seed: int = 1, repeats: float = 1.0) -> NetworkBasinTarget:
    """The one-unit network on the bump teacher's data (module docstring).

    num_data: rows, x evenly spaced on [-4, 4].
    noise: the data's (and the likelihood's) standard deviation; with num_data
        it sets the barrier between the basins.
    edge_height: h, the right edge's height relative to the left's.
    seed: the noise's seed.
    repeats: the data counted this many times (n = repeats x num_data, the
        loss unchanged): raising it raises the barrier between the basins.
    """
    num_data = positive_int("num_data", num_data)
    noise = positive_float("noise", noise)
    edge_height = positive_float("edge_height", edge_height)
    x = np.linspace(-4.0, 4.0, num_data)
    y = np.tanh(4.0 * (x + 2.0)) - edge_height * np.tanh(4.0 * (x - 2.0))
    y = y + noise * np.random.default_rng(seed).normal(size=num_data)
    return NetworkBasinTarget(x, y, noise, positive_float("prior_scale", prior_scale),
                              positive_float("repeats", repeats))


def _student_t(rng, k, dof):
    z = rng.normal(size=(k, DIM))
    return z * np.sqrt(dof / rng.chisquare(dof, size=(k, 1)))


def _log_t(w, mean, chol, dof):
    from scipy.special import gammaln

    z = np.linalg.solve(chol, (w - mean).T).T
    q = (z ** 2).sum(-1)
    return (gammaln((dof + DIM) / 2) - gammaln(dof / 2) - DIM / 2 * np.log(dof * np.pi)
            - np.log(np.diag(chol)).sum() - (dof + DIM) / 2 * np.log1p(q / dof))


def _log_normal(w, scale):
    return -(w ** 2).sum(-1) / (2 * scale ** 2) - DIM * np.log(scale * np.sqrt(2 * np.pi))
