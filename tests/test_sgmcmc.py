"""SG-MCMC: known answers on conjugate linear regression (including the
step-size bias of the variance), the cyclical schedule, minibatches, sharding,
bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

import weightspace as ws
from weightspace.data import Dataset
from weightspace.samplers import minibatch, sgmcmc

from conftest import one_device_mesh

N, D, NOISE, PRIOR_VAR = 60, 3, 0.5, 1.0


def _regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    w_true = np.array([[1.0], [-0.5], [0.25]])
    y = (x @ w_true + NOISE * rng.normal(size=(N, 1))).astype(np.float32)
    data = Dataset("linreg", x, y, x[:5], y[:5], None, info={"noise_std": NOISE})
    post = ws.models.posterior(ws.models.DeepLinear((D, 1)), data,
                               prior_variance=PRIOR_VAR, mesh=one_device_mesh())
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    precision = xd.T @ xd / NOISE**2 + np.eye(D) / PRIOR_VAR
    mean = np.linalg.solve(precision, xd.T @ yd[:, 0] / NOISE**2)
    return post, precision, mean


def _draws(trace):
    (w,) = jax.tree.leaves(trace.positions)  # (chain, draw, D, 1)
    return np.asarray(w, np.float64)[..., 0]


def _ess(w):
    """Smallest bulk ESS over the coordinates and their pairwise products (the
    quantities whose means are the mean and the covariance)."""
    centered = w - w.reshape(-1, D).mean(0)
    products = [centered[..., i] * centered[..., j] for i in range(D) for j in range(i, D)]
    values = np.stack([*np.moveaxis(w, -1, 0), *products], axis=-1)
    return float(np.min(ws.diagnostics.ess(values)))


def _check_moments(w, mean, cov, mean_tol_sd=0.1):
    """Mean within `mean_tol_sd` posterior sd and 4 Monte Carlo standard errors;
    covariance within 4 MC standard errors, sd(c_ij) ~ sqrt((s_ii s_jj + s_ij^2) / ESS)."""
    flat = w.reshape(-1, D)
    ess = _ess(w)
    sd = np.sqrt(np.diag(cov))
    err = np.abs(flat.mean(0) - mean)
    assert np.all(err < mean_tol_sd * sd + 4 * sd / math.sqrt(ess)), (err / sd, ess)
    emp = np.cov(flat.T)
    tol = 4 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / ess)
    assert np.all(np.abs(emp - cov) < tol), (emp, cov, tol, ess)
    return ess


def test_full_batch_sgld_matches_the_discretized_langevin_stationary_law():
    post, precision, mean = _regression()
    lam_max = np.linalg.eigvalsh(precision).max()
    eps = 0.8 / lam_max  # eps * lam_max / 4 = 0.2: a 25% variance bias along the top axis
    trace = ws.samplers.sgld(post, jax.random.key(0), num_chains=4, num_samples=2500,
                             num_warmup=200, batch_size=N, step_size=eps, thin=4,
                             progress=False)
    # w' = (I - eps A / 2) w + eps / 2 b + sqrt(eps) xi: S = M S M^T + eps I.
    m = np.eye(D) - 0.5 * eps * precision
    biased = solve_discrete_lyapunov(m, eps * np.eye(D))
    exact = np.linalg.inv(precision)
    top = np.linalg.eigh(precision)[1][:, -1]
    assert top @ biased @ top / (top @ exact @ top) == pytest.approx(
        1 / (1 - eps * lam_max / 4), rel=1e-6)
    ess = _check_moments(_draws(trace), mean, biased)
    assert ess > 1000
    # The bias is visible at this sample size: the exact covariance is rejected.
    emp = np.cov(_draws(trace).reshape(-1, D).T)
    assert top @ emp @ top > top @ exact @ top * (1 + 4 * math.sqrt(2 / ess))


def test_full_batch_sghmc_matches_its_discretized_stationary_law():
    post, precision, mean = _regression()
    lam_max = np.linalg.eigvalsh(precision).max()
    eta, alpha = 0.05 / lam_max, 0.1
    trace = ws.samplers.sghmc(post, jax.random.key(1), num_chains=4, num_samples=2500,
                              num_warmup=300, batch_size=N, step_size=eta, friction=alpha,
                              thin=4, progress=False)
    # z = (w, v): v' = (1 - a) v - eta A w + eta b + sqrt(2 a eta) xi, w' = w + v'.
    eye = np.eye(D)
    f = np.block([[eye - eta * precision, (1 - alpha) * eye],
                  [-eta * precision, (1 - alpha) * eye]])
    q = 2 * alpha * eta * np.block([[eye, eye], [eye, eye]])
    stationary = solve_discrete_lyapunov(f, q)[:D, :D]
    _check_moments(_draws(trace), mean, stationary)


@pytest.mark.parametrize("sampler", ["sgld", "sghmc", "psgld"])
def test_minibatch_means_are_within_a_tenth_of_a_posterior_sd(sampler):
    post, precision, mean = _regression()
    lam_max = np.linalg.eigvalsh(precision).max()
    cov = np.linalg.inv(precision)
    kwargs = dict(num_chains=4, num_samples=2000, num_warmup=300, batch_size=10, thin=5,
                  progress=False)
    if sampler == "sgld":
        trace = ws.samplers.sgld(post, jax.random.key(2), step_size=0.1 / lam_max, **kwargs)
    elif sampler == "psgld":
        trace = ws.samplers.sgld(post, jax.random.key(2), step_size=1e-4,
                                 preconditioner="rmsprop", **kwargs)
    else:
        trace = ws.samplers.sghmc(post, jax.random.key(2), step_size=0.02 / lam_max,
                                  **kwargs)
    w = _draws(trace)
    flat = w.reshape(-1, D)
    sd = np.sqrt(np.diag(cov))
    ess = _ess(w)
    err = np.abs(flat.mean(0) - mean)
    assert np.all(err < 0.1 * sd + 4 * sd / math.sqrt(ess)), (err / sd, ess)
    assert np.all(err < 0.1 * sd), err / sd
    # Gradient noise only inflates the spread (documented bias): never below exact.
    assert np.all(flat.std(0) > 0.9 * sd)
    assert not trace.stats["is_divergent"].any()


def test_cyclical_schedule_follows_zhang_et_al():
    sched = ws.samplers.cyclical(0.3, cycle_length=10, exploration=0.75)
    t = np.arange(35)
    eps, noise = jax.vmap(sched)(jnp.asarray(t))
    # Zhang et al. 2020, eq. 1 with k = t + 1, ceil(K / M) = 10.
    expected = 0.3 / 2 * (np.cos(np.pi * np.mod(t, 10) / 10) + 1)
    np.testing.assert_allclose(eps, expected, rtol=1e-6)
    # r(k) < beta is exploration: t mod 10 in 0..7 (7.5 rounds up to 8 steps).
    np.testing.assert_array_equal(noise, np.mod(t, 10) >= 8)
    assert sched.sampling_transitions(2, 2) == [28, 29]
    assert ws.samplers.cyclical(1.0, 10, 0.5).sampling_transitions(0, 3) == [5, 7, 9]


def test_noise_is_off_in_exploration_stages():
    def estimate(w, batch):
        return -0.5 * jnp.sum(w["x"] ** 2) + 0.0 * jnp.sum(batch)

    state = {"x": jnp.array([1.0, -2.0])}
    key = jax.random.key(0)
    sgld = sgmcmc.build_sgld_kernel(estimate, num_data=1)
    s, info = sgld(key, sgmcmc.sgld_init(state), jnp.zeros(1), 0.1, False)
    np.testing.assert_allclose(s.position["x"], state["x"] * (1 - 0.05), rtol=1e-6)
    s, _ = sgld(key, sgmcmc.sgld_init(state), jnp.zeros(1), 0.1, True)
    assert not np.allclose(s.position["x"], state["x"] * (1 - 0.05))
    sghmc = sgmcmc.build_sghmc_kernel(estimate, friction=0.1)
    s, _ = sghmc(key, sgmcmc.sghmc_init(state), jnp.zeros(1), 0.1, False)
    np.testing.assert_allclose(s.momentum["x"], -0.1 * state["x"], rtol=1e-6)
    np.testing.assert_allclose(s.position["x"], 0.9 * state["x"], rtol=1e-6)


def test_cyclical_draws_come_from_sampling_stages():
    post, precision, _ = _regression()
    sched = ws.samplers.cyclical(0.1 / np.linalg.eigvalsh(precision).max(), 20, 0.5)
    trace = ws.samplers.sghmc(post, jax.random.key(3), num_samples=6, batch_size=20,
                              schedule=sched, samples_per_cycle=2, num_warmup=25,
                              progress=False)
    assert trace.stats["noise"].all()
    # Sampling stages are t mod 20 in 10..19, draws at 14 and 19 of each cycle; warmup
    # ends inside cycle 1 (t = 25), so the draws end at t = 34, 39, 54, 59, ...
    ends = np.array([34, 39, 54, 59, 74, 79])
    expected = np.asarray(jax.vmap(sched)(jnp.asarray(ends))[0])
    np.testing.assert_allclose(trace.stats["step_size"][0], expected, rtol=1e-6)


def test_minibatches_cover_every_row_once_per_epoch():
    key = jax.random.key(0)
    rows = [np.asarray(minibatch.batch_indices(key, t, 23, 5)) for t in range(8)]
    first, second = np.concatenate(rows[:4]), np.concatenate(rows[4:])
    assert len(set(first)) == 20 and len(set(second)) == 20  # 23 // 5 = 4 steps
    assert set(first) <= set(range(23))
    assert not np.array_equal(first, second)  # a new order each epoch


@pytest.mark.parametrize("num_data", [1, 2, 23, 1437, 50000])
def test_the_epoch_permutation_is_a_bijection(num_data):
    order = np.asarray(minibatch.permute(jax.random.key(3), jnp.arange(num_data), num_data))
    np.testing.assert_array_equal(np.sort(order), np.arange(num_data))


def test_every_row_is_equally_likely_at_a_batch_position():
    # 4,000 keys, 10 rows: each count is Binomial(4000, 0.1), sd 19; a chi-square
    # with 9 degrees of freedom stays below 27.9 with probability 0.999.
    first = np.asarray(jax.vmap(lambda k: minibatch.permute(k, jnp.arange(1), 10)[0])(
        jax.random.split(jax.random.key(0), 4000)))
    counts = np.bincount(first, minlength=10)
    assert ((counts - 400) ** 2 / 400).sum() < 27.9, counts


def _digits_posterior(mesh):
    ds = ws.data.load("digits")
    return ws.models.posterior(ws.models.MLP((16,), 10), ds, prior_variance=0.2, mesh=mesh)


@pytest.mark.parametrize("mesh_shape", [(1, 8), (2, 4)])
def test_sharded_sgld_equals_one_device(mesh_shape):
    kwargs = dict(num_chains=2, num_samples=4, num_warmup=2, batch_size=64,
                  step_size=1e-4, thin=3, progress=False)
    one = ws.samplers.sgld(_digits_posterior(one_device_mesh()), jax.random.key(0), **kwargs)
    mesh = ws.sharding.make_mesh(num_chains=mesh_shape[0], num_data=mesh_shape[1])
    sharded = ws.samplers.sgld(_digits_posterior(mesh), jax.random.key(0), **kwargs)
    for a, b in zip(jax.tree.leaves(sharded.positions), jax.tree.leaves(one.positions)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_callable_target_with_data_and_predictions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)

    def estimate(w, batch):
        return -0.5 * jnp.sum(w["m"] ** 2) - 40 / batch.shape[0] * 0.5 * jnp.sum(
            (batch - w["m"]) ** 2)

    trace = ws.samplers.sgld(estimate, jax.random.key(0), data=x,
                             init={"m": jnp.zeros((2, 2))}, num_chains=2, num_samples=400,
                             batch_size=8, step_size=1e-3, thin=10, num_warmup=100,
                             eval_x=jnp.ones((3, 2)),
                             predict_fn=lambda w, e: e @ w["m"], progress=False)
    assert trace.predictions.shape == (2, 400, 3)
    # Posterior N(sum x / 41, 1 / 41) per coordinate; mean within 4 MC errors.
    m = np.asarray(trace.positions["m"], np.float64)
    ess = np.asarray(ws.diagnostics.ess(m))
    tol = 4 * math.sqrt(1 / 41) / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(m.mean((0, 1)) - x.sum(0) / 41), tol)


BAD = [
    (dict(step_size=-1.0), ValueError, "step_size"),
    (dict(step_size=None), ValueError, "step_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=10_000), ValueError, "batch_size=10000"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(num_chains=0), ValueError, "num_chains"),
    (dict(thin=0), ValueError, "thin"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(preconditioner="adam"), ValueError, "preconditioner"),
    (dict(schedule=0.1), TypeError, "schedule"),
    (dict(schedule=ws.samplers.cyclical(0.1, 10)), ValueError, "not both"),
    (dict(samples_per_cycle=2), ValueError, "samples_per_cycle"),
    (dict(num_warmup=-1), ValueError, "num_warmup"),
]


@pytest.mark.parametrize("override,error,match", BAD)
def test_bad_arguments_are_named(digits, override, error, match):
    post = ws.models.posterior(ws.models.MLP((4,), 10), digits, prior_variance=0.2)
    kwargs = dict(num_samples=2, batch_size=32, step_size=1e-3, progress=False)
    kwargs.update(override)
    with pytest.raises(error, match=match):
        ws.samplers.sgld(post, jax.random.key(0), **kwargs)


def test_bad_sghmc_and_schedule_arguments_are_named(digits):
    post = ws.models.posterior(ws.models.MLP((4,), 10), digits, prior_variance=0.2)
    with pytest.raises(ValueError, match="friction"):
        ws.samplers.sghmc(post, jax.random.key(0), num_samples=2, batch_size=8,
                          step_size=1e-3, friction=1.5)
    with pytest.raises(ValueError, match="exploration"):
        ws.samplers.cyclical(0.1, 10, exploration=1.0)
    with pytest.raises(ValueError, match="cycle_length"):
        ws.samplers.cyclical(0.1, 0)
    with pytest.raises(ValueError, match="samples_per_cycle=5"):
        ws.samplers.sghmc(post, jax.random.key(0), num_samples=2, batch_size=8,
                          schedule=ws.samplers.cyclical(0.1, 10, 0.8), samples_per_cycle=5)
    with pytest.raises(ValueError, match="data is required"):
        ws.samplers.sgld(lambda w, b: 0.0, jax.random.key(0), init={"w": jnp.zeros((1, 2))},
                         num_samples=2, batch_size=1, step_size=0.1)
    with pytest.raises(ValueError, match="init is required"):
        ws.samplers.sgld(lambda w, b: 0.0, jax.random.key(0), data=jnp.zeros((4, 2)),
                         num_samples=2, batch_size=1, step_size=0.1)


def test_the_rmsprop_average_can_track_another_gradient_and_be_held():
    """LLC's "rmsprop_sgld_loss" averages the squares of the loss's gradient
    (given by precondition_on), not of the gradient it steps along, and stops
    averaging after burn-in (adapt=False)."""
    grad_of_log_p = {"w": jnp.array([1.0, -2.0, 0.0])}
    kernel = sgmcmc.build_sgld_kernel(
        lambda w, batch: jnp.sum(w["w"] * grad_of_log_p["w"]), num_data=10,
        preconditioned=True, lam=0.1,
        precondition_on=lambda w, g: {"w": jnp.array([2.0, 0.0, 2.0])})
    start = sgmcmc.sgld_init({"w": jnp.zeros(3)}, preconditioned=True)
    eps = 1e-2
    first, _ = kernel(jax.random.key(0), start, None, eps, False)
    np.testing.assert_allclose(first.square_avg["w"], [0.04, 0.0, 0.04], rtol=1e-6)
    precond = 1.0 / (0.1 + np.sqrt([0.04, 0.0, 0.04]))  # 1/0.3, 10, 1/0.3
    np.testing.assert_allclose(first.position["w"], 0.5 * eps * precond * [1.0, -2.0, 0.0],
                               rtol=1e-6)
    held, _ = kernel(jax.random.key(1), first, None, eps, False, adapt=False)
    np.testing.assert_array_equal(held.square_avg["w"], first.square_avg["w"])
    np.testing.assert_allclose(held.position["w"] - first.position["w"],
                               0.5 * eps * precond * [1.0, -2.0, 0.0], rtol=1e-5)
