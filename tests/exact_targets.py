"""Targets whose moments are known exactly, and the Monte Carlo check the
samplers' stationarity tests apply to them (MAMS, replica exchange)."""

import jax.numpy as jnp
import numpy as np

import weightspace as ws


def mcse_check(draws, truth, f, name):
    """mean of f(draws) within 4 Monte Carlo standard errors of truth, the
    standard error from the bulk ESS of f(draws) (chain, draw)."""
    values = np.asarray(f(draws), np.float64)
    ess = float(ws.diagnostics.ess(values))
    se = values.std() / np.sqrt(ess)
    assert abs(values.mean() - truth) < 4 * se, (name, values.mean(), truth, se, ess)


def correlated_gaussian():
    """(covariance, logdensity over {"x": (2,)}): correlation 0.95, scales 1 and 3."""
    cov = np.array([[1.0, 0.95], [0.95, 1.0]]) * np.array([[1.0, 3.0], [3.0, 9.0]])
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)

    def logdensity(q):
        return -0.5 * q["x"] @ precision @ q["x"]

    return cov, logdensity


def check_gaussian_moments(x, cov):
    """Means, variances and the covariance of draws x (chain, draw, 2)."""
    for i in range(2):
        mcse_check(x, 0.0, lambda d: d[..., i], f"mean {i}")
        mcse_check(x, cov[i, i], lambda d: d[..., i] ** 2, f"variance {i}")
    mcse_check(x, cov[0, 1], lambda d: d[..., 0] * d[..., 1], "covariance")


def conjugate_regression():
    """Linear regression with a Gaussian prior: (posterior mean, posterior
    covariance, logprior, logdensity over {"w": (3,)})."""
    rng = np.random.default_rng(0)
    n, p, noise, prior = 40, 3, 0.5, 2.0
    X = rng.normal(size=(n, p)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + noise * rng.normal(size=n)).astype(np.float32)
    cov = np.linalg.inv(X.T.astype(np.float64) @ X / noise**2 + np.eye(p) / prior)
    mean = cov @ X.T.astype(np.float64) @ y / noise**2

    def logprior(q):
        return -0.5 * jnp.sum(q["w"] ** 2) / prior

    def logdensity(q):
        return -0.5 * jnp.sum((y - X @ q["w"]) ** 2) / noise**2 + logprior(q)

    return mean, cov, logprior, logdensity


def check_regression_moments(w, mean, cov):
    """First and second moments of draws w (chain, draw, p)."""
    for i in range(len(mean)):
        mcse_check(w, mean[i], lambda d: d[..., i], f"mean {i}")
        mcse_check(w, cov[i, i] + mean[i] ** 2, lambda d: d[..., i] ** 2, f"second {i}")
