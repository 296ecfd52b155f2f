"""HMC: known answers, agreement with blackjax, sharding, divergences, bad input."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws
from weightspace.data import Dataset

from conftest import one_device_mesh

# the module (ws.samplers.hmc is the sampler function of the same name)
hmc_lib = importlib.import_module("weightspace.samplers.hmc")


def _ess(x):
    """Bulk-free, classic ESS of (chain, draw) draws (blackjax, a reference)."""
    import blackjax

    return float(blackjax.ess(jnp.asarray(x), chain_axis=0, sample_axis=1))


COV = np.array([[1.0, 0.8], [0.8, 1.0]])
PREC = np.linalg.inv(COV)


def gaussian_2d(position):
    x = position["x"]
    return -0.5 * x @ jnp.asarray(PREC, x.dtype) @ x


def test_correlated_gaussian_moments_within_monte_carlo_error():
    init = {"x": jnp.zeros((4, 2))}
    trace = ws.samplers.hmc(gaussian_2d, jax.random.key(0), init=init, num_chains=4,
                            num_samples=1500, num_warmup=300, progress=False)
    x = np.asarray(trace.positions["x"], np.float64)  # (chain, draw, 2)
    flat = x.reshape(-1, 2)
    for i in range(2):
        ess = _ess(x[..., i])
        assert abs(flat[:, i].mean()) < 4 * math.sqrt(COV[i, i] / ess)
    # sample covariance entries: sd of the estimate ~ sqrt((s_ii s_jj + s_ij^2) / ESS)
    ess = min(_ess(x[..., 0] * x[..., 1]), _ess(x[..., 0] ** 2), _ess(x[..., 1] ** 2))
    cov = np.cov(flat.T)
    for i in range(2):
        for j in range(2):
            tol = 4 * math.sqrt((COV[i, i] * COV[j, j] + COV[i, j] ** 2) / ess)
            assert abs(cov[i, j] - COV[i, j]) < tol, (i, j, cov)
    assert trace.stats["is_divergent"].sum() == 0
    # dual averaging reached the neighbourhood of its target (0.8)
    assert 0.6 < trace.stats["accept_prob"].mean() < 0.97


def test_bayesian_linear_regression_matches_the_conjugate_posterior():
    rng = np.random.default_rng(0)
    n, d, noise, prior_var = 60, 3, 0.5, 1.0
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = np.array([[1.0], [-0.5], [0.25]])
    y = (x @ w_true + noise * rng.normal(size=(n, 1))).astype(np.float32)
    data = Dataset("linreg", x, y, x[:5], y[:5], None, info={"noise_std": noise})
    post = ws.models.posterior(ws.models.DeepLinear((d, 1)), data,
                               prior_variance=prior_var, mesh=one_device_mesh())
    trace = ws.samplers.hmc(post, jax.random.key(1), num_chains=4, num_samples=1000,
                            num_warmup=400, mass_matrix="diagonal", progress=False)
    (w,) = jax.tree.leaves(trace.positions)  # (chain, draw, d, 1)
    w = np.asarray(w, np.float64)[..., 0].reshape(-1, d)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    cov = np.linalg.inv(xd.T @ xd / noise**2 + np.eye(d) / prior_var)
    mean = cov @ xd.T @ yd[:, 0] / noise**2
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(w.mean(0) - mean), 0.1 * sd)
    np.testing.assert_allclose(w.std(0), sd, rtol=0.1)


def test_leapfrog_end_point_equals_blackjax():
    from blackjax.mcmc import integrators, metrics

    def logdensity(q):
        return -0.5 * jnp.sum(q["a"] ** 2 * jnp.arange(1.0, 4.0)) - jnp.sum(q["b"] ** 4) / 4

    q = {"a": jnp.array([0.3, -1.0, 0.5]), "b": jnp.array([[0.2, -0.4]])}
    p = {"a": jnp.array([1.0, 0.5, -0.2]), "b": jnp.array([[0.7, 0.1]])}
    for inv_mass in (None, {"a": jnp.array([0.5, 1.0, 2.0]), "b": jnp.array([[1.5, 0.3]])}):
        state = hmc_lib.init(q, logdensity)
        ours, momentum, steps, _ = hmc_lib.leapfrog(jax.value_and_grad(logdensity), state,
                                                     p, 0.1, 7, inv_mass)
        flat_inv = (jnp.ones(5) if inv_mass is None else
                    jax.flatten_util.ravel_pytree(inv_mass)[0])
        metric = metrics.default_metric(flat_inv)
        step = integrators.velocity_verlet(logdensity, metric.kinetic_energy)
        theirs = integrators.IntegratorState(q, p, state.logdensity, state.logdensity_grad)
        for _ in range(7):
            theirs = step(theirs, 0.1)
        assert int(steps) == 7
        for a, b in zip(jax.tree.leaves((ours.position, momentum, ours.logdensity)),
                        jax.tree.leaves((theirs.position, theirs.momentum,
                                         theirs.logdensity))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_acceptance_rate_agrees_with_blackjax():
    import blackjax

    scales = jnp.linspace(0.5, 2.0, 10)

    def logdensity(q):
        return -0.5 * jnp.sum((q / scales) ** 2)

    step_size, num_steps, n = 0.45, 5, 3000
    kernel = blackjax.hmc(logdensity, step_size, jnp.ones(10), num_steps)

    def bj_step(state, key):
        state, info = kernel.step(key, state)
        return state, info.acceptance_rate

    _, bj_accept = jax.lax.scan(bj_step, kernel.init(jnp.zeros(10)),
                                jax.random.split(jax.random.key(3), n))
    trace = ws.samplers.hmc(logdensity, jax.random.key(4), init=jnp.zeros((1, 10)),
                            num_samples=n, step_size=step_size,
                            trajectory_length=(num_steps - 0.5) * step_size,
                            warmup="fixed", progress=False)
    assert (trace.stats["num_steps"] == num_steps).all()
    ours = np.asarray(trace.stats["accept_prob"])[0]
    theirs = np.asarray(bj_accept)
    se = math.sqrt(ours.var() / n + theirs.var() / n)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)


def _digits_posterior(mesh):
    ds = ws.data.load("digits")
    return ws.models.posterior(ws.models.MLP((16,), 10), ds, prior_variance=0.2, mesh=mesh)


@pytest.mark.parametrize("mesh_shape", [(1, 8), (2, 4)])
def test_sharded_draws_equal_one_device_draws(mesh_shape):
    kwargs = dict(num_chains=2, num_samples=20, step_size=1e-3, trajectory_length=0.0195,
                  warmup="fixed", progress=False)
    one = ws.samplers.hmc(_digits_posterior(one_device_mesh()), jax.random.key(0), **kwargs)
    mesh = ws.sharding.make_mesh(num_chains=mesh_shape[0], num_data=mesh_shape[1])
    sharded = ws.samplers.hmc(_digits_posterior(mesh), jax.random.key(0), **kwargs)
    assert (one.stats["num_steps"] == 20).all()
    for a, b in zip(jax.tree.leaves(sharded.positions), jax.tree.leaves(one.positions)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sharded.stats["is_accepted"], one.stats["is_accepted"])


def test_nan_region_transitions_are_rejected_and_counted_divergent():
    def logdensity(q):
        x = q["x"]
        return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))

    trace = ws.samplers.hmc(logdensity, jax.random.key(5), init={"x": jnp.zeros((2, 2))},
                            num_chains=2, num_samples=300, num_warmup=100, progress=False)
    x = np.asarray(trace.positions["x"])
    assert np.isfinite(x).all() and (x[..., 0] <= 1.0).all()
    div = trace.stats["is_divergent"]
    assert div.sum() > 0
    assert not trace.stats["is_accepted"][div].any()
    assert np.isfinite(trace.stats["logdensity"]).all()
    assert len(np.unique(x[0, :, 1])) > 100  # the chain kept moving


def test_without_metropolis_every_non_divergent_proposal_is_accepted():
    step = hmc_lib.build_kernel(lambda q: -0.5 * jnp.sum(q**2))
    state = hmc_lib.init(jnp.ones(3), lambda q: -0.5 * jnp.sum(q**2))
    keys = jax.random.split(jax.random.key(6), 200)
    # a step size this large makes Metropolis reject most proposals
    _, with_mh = jax.vmap(lambda k: step(k, state, 1.9, 3))(keys)
    _, without = jax.vmap(lambda k: step(k, state, 1.9, 3, metropolis=False))(keys)
    assert with_mh.is_accepted.mean() < 0.9
    assert bool(jnp.all(without.is_accepted | without.is_divergent))
    np.testing.assert_array_equal(without.accept_prob, with_mh.accept_prob)


def test_posterior_defaults_trajectory_to_the_paper_rule_and_stores_predictions(digits):
    post = ws.models.posterior(ws.models.MLP((8,), 10), digits, prior_variance=0.2,
                               temperature=0.5, mesh=one_device_mesh())
    trace = ws.samplers.hmc(post, jax.random.key(7), num_chains=2, num_samples=3,
                            step_size=0.05, warmup="no_metropolis", num_warmup=2, thin=2,
                            eval_x=digits.x_test[:11], progress=False)
    assert trace.info["trajectory_length"] == pytest.approx(math.pi / 2 * math.sqrt(0.1))
    assert trace.predictions.shape == (2, 3, 11, 10)
    np.testing.assert_allclose(trace.predictions.sum(-1), 1.0, atol=1e-5)
    kernel = jax.tree.leaves(trace.positions)[0]
    assert kernel.shape[:2] == (2, 3)
    assert set(trace.stats) == {"accept_prob", "is_accepted", "is_divergent", "energy_error",
                                "num_steps", "step_size", "logdensity", "grad_evals"}
    assert all(v.shape == (2, 3) for v in trace.stats.values())


def test_to_arviz_names_every_leaf_and_stat():
    trace = ws.samplers.hmc(gaussian_2d, jax.random.key(8), init={"x": jnp.zeros((2, 2))},
                            num_chains=2, num_samples=10, step_size=0.3, warmup="fixed",
                            progress=False)
    data = trace.to_arviz()
    posterior = data["posterior"] if not hasattr(data, "posterior") else data.posterior
    assert posterior["x"].shape == (2, 10, 2)
    stats = data["sample_stats"] if not hasattr(data, "sample_stats") else data.sample_stats
    assert {"acceptance_rate", "diverging", "lp", "step_size"} <= set(stats.data_vars)


# -- bad input ------------------------------------------------------------------

def _call(**overrides):
    kwargs = dict(init={"x": jnp.zeros((2, 2))}, num_chains=2, num_samples=5,
                  step_size=0.1, warmup="fixed", progress=False)
    kwargs.update(overrides)
    return ws.samplers.hmc(gaussian_2d, jax.random.key(0), **kwargs)


@pytest.mark.parametrize("name, value, error", [
    ("step_size", 0.0, ValueError), ("step_size", -1.0, ValueError),
    ("trajectory_length", 0.0, ValueError), ("trajectory_length", float("nan"), ValueError),
    ("num_samples", 0, ValueError), ("num_chains", 0, ValueError),
    ("thin", 0, ValueError), ("max_num_steps", 0, ValueError),
    ("target_accept", 1.0, ValueError), ("warmup", "nuts", ValueError),
    ("mass_matrix", "dense", ValueError), ("num_samples", 2.5, TypeError),
])
def test_bad_arguments_are_named(name, value, error):
    with pytest.raises(error, match=name):
        _call(**{name: value})


def test_a_diagonal_mass_matrix_needs_adaptation():
    with pytest.raises(ValueError, match="mass_matrix='diagonal'.*warmup='fixed'"):
        _call(mass_matrix="diagonal")


def test_init_must_be_given_for_a_callable_and_have_a_chain_axis():
    with pytest.raises(ValueError, match="init is required"):
        _call(init=None)
    with pytest.raises(ValueError, match=r"init\['x'\] has shape \(3, 2\).*num_chains=2"):
        _call(init={"x": jnp.zeros((3, 2))})


def test_eval_x_must_fit_the_network(digits):
    post = ws.models.posterior(ws.models.MLP((8,), 10), digits, prior_variance=0.2,
                               mesh=one_device_mesh())
    with pytest.raises(ValueError, match=r"eval_x has shape \(4, 8, 8\)"):
        ws.samplers.hmc(post, jax.random.key(0), num_samples=2, step_size=0.1,
                        warmup="fixed", eval_x=np.zeros((4, 8, 8)), progress=False)
    with pytest.raises(ValueError, match="predict_fn"):
        _call(eval_x=np.zeros((3, 2)))
