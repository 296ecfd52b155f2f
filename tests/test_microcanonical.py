"""MCLMC and MAMS: the integrator equals blackjax's, MAMS samples its target
exactly, MCLMC's bias stays within its energy-error bound, sharded runs equal
one device with no all-gather of the weights, bad input is named, stuck
chains are reported."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import weightspace as ws
from weightspace.samplers import isokinetic
from weightspace.samplers.mams import build_kernel as mams_kernel, init as mams_init
from weightspace.samplers.mclmc import build_kernel as mclmc_kernel, init as mclmc_init

from conftest import one_device_mesh
from exact_targets import (check_gaussian_moments, check_regression_moments,
                           conjugate_regression, correlated_gaussian)


def _logdensity(x):
    """A non-Gaussian density over a pytree of two leaves."""
    scales = jnp.arange(1.0, 7.0).reshape(2, 3)
    return (-0.5 * jnp.sum(scales * x["a"] ** 2) - 0.5 * jnp.sum((x["b"] - 1.0) ** 2 / 0.3)
            + jnp.sum(jnp.sin(x["a"])))


@pytest.mark.parametrize("preconditioned", [False, True])
def test_isokinetic_mclachlan_step_equals_blackjax(preconditioned):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    position = {"a": jax.random.normal(k1, (2, 3)), "b": jax.random.normal(k2, (4,))}
    velocity = isokinetic.random_unit_velocity(k3, position)
    inverse_mass = ({"a": jnp.linspace(0.5, 2.0, 6).reshape(2, 3),
                     "b": jnp.array([0.1, 1.0, 3.0, 0.7])} if preconditioned else None)
    value, grad = jax.value_and_grad(_logdensity)(position)
    flat_mass = ravel_pytree(inverse_mass)[0] if preconditioned else 1.0
    theirs, their_kinetic = blackjax.mcmc.integrators.isokinetic_mclachlan(
        _logdensity, flat_mass)(
        blackjax.mcmc.integrators.IntegratorState(position, velocity, value, grad), 0.3)
    ours, our_kinetic = isokinetic.mclachlan_step(
        jax.value_and_grad(_logdensity), isokinetic.IsokineticState(position, velocity,
                                                                   value, grad),
        0.3, isokinetic.sqrt_inverse_mass_of(inverse_mass), 10)
    for a, b in [(theirs.position, ours.position), (theirs.momentum, ours.velocity),
                 (theirs.logdensity_grad, ours.logdensity_grad)]:
        np.testing.assert_allclose(ravel_pytree(b)[0], ravel_pytree(a)[0], atol=1e-6)
    np.testing.assert_allclose(ours.logdensity, theirs.logdensity, atol=1e-6)
    np.testing.assert_allclose(our_kinetic, their_kinetic, atol=1e-6)


def test_mams_samples_a_correlated_gaussian_exactly():
    cov, logdensity = correlated_gaussian()
    trace = ws.samplers.mams(logdensity, jax.random.key(3), init={"x": jnp.zeros((4, 2))},
                             num_chains=4, num_samples=500, num_warmup=300, thin=3,
                             progress=False)
    x = np.asarray(trace.positions["x"], np.float64)
    assert np.mean(trace.stats["accept_prob"]) > 0.7
    check_gaussian_moments(x, cov)
    data = trace.to_arviz()
    posterior = data["posterior"] if not hasattr(data, "posterior") else data.posterior
    assert posterior["x"].shape == (4, 500, 2)
    stats = data["sample_stats"] if not hasattr(data, "sample_stats") else data.sample_stats
    assert {"acceptance_rate", "diverging", "lp", "n_steps", "L"} <= set(stats.data_vars)


def test_mams_samples_conjugate_linear_regression_exactly():
    mean, cov, _, logdensity = conjugate_regression()
    trace = ws.samplers.mams(logdensity, jax.random.key(4), init={"w": jnp.zeros((4, 3))},
                             num_chains=4, num_samples=500, num_warmup=300, thin=2,
                             progress=False)
    check_regression_moments(np.asarray(trace.positions["w"], np.float64), mean, cov)


def test_mclmc_bias_on_a_gaussian_is_within_its_energy_error_bound():
    """Robnik and Seljak 2024 (arXiv:2412.08876): on Gaussian targets the squared
    relative bias of the second moments, b^2 = mean_i (E[x_i^2] / sigma_i^2 - 1)^2,
    is at most the energy-error variance per dimension (EEVPD) the step size is
    tuned to. So |mean_i (E[x_i^2] / sigma_i^2) - 1| <= sqrt(EEVPD), tested with
    the Monte Carlo error of the average added (4 standard errors)."""
    d = 50
    sigma = jnp.asarray(np.logspace(-1, 1, d), jnp.float32)
    target = 1e-2  # a larger target than the default, so the bias is measurable

    def logdensity(q):
        return -0.5 * jnp.sum((q["x"] / sigma) ** 2)

    init = {"x": jnp.asarray(np.random.default_rng(1).normal(size=(4, d)), jnp.float32)
            * sigma}
    trace = ws.samplers.mclmc(logdensity, jax.random.key(5), init=init, num_chains=4,
                              num_samples=400, num_warmup=500, thin=10,
                              desired_energy_var=target, progress=False)
    x = np.asarray(trace.positions["x"], np.float64) / np.asarray(sigma, np.float64)
    relative = x**2  # (chain, draw, d): E = 1 without bias
    eevpd = float(np.nanmean(trace.stats["energy_variance"]))
    assert 0.2 * target < eevpd < 5 * target  # the tuning met its target
    per_coordinate = relative.mean(axis=(0, 1))
    ess = np.asarray(ws.diagnostics.ess(relative))
    se = np.sqrt(np.sum(relative.var(axis=(0, 1)) / ess)) / d
    bias = per_coordinate.mean() - 1.0
    assert abs(bias) <= np.sqrt(target) + 4 * se, (bias, np.sqrt(target), se)


def _digits_posterior(mesh, n_train=200):
    data = ws.data.load("digits", n_train=n_train)
    return ws.models.posterior(ws.models.MLP((16,), 10), data, prior_variance=0.2,
                               mesh=mesh), data


@pytest.mark.parametrize("sampler", ["mclmc", "mams"])
def test_sharded_runs_equal_one_device(sampler):
    assert jax.device_count() == 8, "run with JAX_NUM_CPU_DEVICES=8 (tests/conftest.py)"
    run = getattr(ws.samplers, sampler)
    traces = []
    for mesh in (one_device_mesh(), ws.sharding.make_mesh(num_chains=1, num_data=8),
                 ws.sharding.make_mesh(num_chains=2, num_data=4)):
        post, data = _digits_posterior(mesh)
        # Fixed step size and L, no warmup: tuning's 100 transitions would
        # amplify the last-bit differences of sums taken in another order (the
        # dynamics are chaotic), which says nothing about the sharding; the
        # sampling transition is the kernel that warmup runs too.
        traces.append(run(post, jax.random.key(6), num_chains=2, num_samples=5,
                          num_warmup=0, thin=2, step_size=0.5, L=2.0, preconditioning="none",
                          eval_x=data.x_test[:8], progress=False))
    one = traces[0]
    for other in traces[1:]:
        for a, b in zip(jax.tree.leaves(one.positions), jax.tree.leaves(other.positions)):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(other.predictions, one.predictions, atol=1e-4)
        np.testing.assert_allclose(other.stats["logdensity"], one.stats["logdensity"],
                                   rtol=1e-4)


def _all_gathers(hlo: str) -> int:
    return sum(line.count("all-gather(") + line.count("all-gather-start(")
               for line in hlo.splitlines())


@pytest.mark.parametrize("kernel", ["mclmc", "mams"])
def test_compiled_step_with_weights_sharded_over_devices_has_no_all_gather(kernel):
    """Weights sharded over 4 devices: our step's only cross-device traffic is
    scalar reductions; blackjax's ravels the position (all-gathers)."""
    mesh = jax.make_mesh((4,), ("w",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:4])
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("w"))
    position = {"a": jax.device_put(jnp.ones((64, 8)), sharded),
                "b": jax.device_put(jnp.ones((32,)), sharded)}

    def logdensity(q):
        return -0.5 * jnp.sum(q["a"] ** 2) - 0.5 * jnp.sum(jnp.cos(q["b"]))

    key = jax.random.key(0)
    if kernel == "mclmc":
        state = mclmc_init(position, logdensity, key)
        step = mclmc_kernel(logdensity)
        hlo = jax.jit(lambda k, s: step(k, s, 0.1, 3.0)).lower(key, state).compile().as_text()
    else:
        state = mams_init(position, logdensity)
        step = mams_kernel(logdensity)
        hlo = jax.jit(lambda k, s: step(k, s, 0.1, 5)).lower(key, state).compile().as_text()
    assert _all_gathers(hlo) == 0
    # The check can fail: blackjax's MCLMC step on the same sharded position does gather.
    bj_state = blackjax.mcmc.mclmc.init(position, logdensity, key)
    bj_step = blackjax.mcmc.mclmc.build_kernel()
    bj_hlo = jax.jit(lambda k, s: bj_step(k, s, logdensity, 1.0, 3.0, 0.1)).lower(
        key, bj_state).compile().as_text()
    assert _all_gathers(bj_hlo) > 0


@pytest.mark.parametrize("sampler", ["mclmc", "mams"])
def test_bad_arguments_are_named_before_tracing(sampler):
    run = getattr(ws.samplers, sampler)
    init = {"x": jnp.zeros((1, 3))}
    logdensity = lambda q: -jnp.sum(q["x"] ** 2)  # noqa: E731
    common = dict(init=init, num_samples=2, progress=False)
    cases = [({"step_size": -1.0, "num_warmup": 200}, "step_size"),
             ({"L": 0.0, "num_warmup": 200}, "L"),
             ({"preconditioning": "full", "num_warmup": 200}, "preconditioning"),
             ({"num_warmup": 10}, "num_warmup=10"),
             ({"num_samples": 0, "num_warmup": 200}, "num_samples")]
    if sampler == "mams":
        cases += [({"target_accept": 1.5, "num_warmup": 200}, "target_accept"),
                  ({"max_num_steps": 0, "num_warmup": 200}, "max_num_steps"),
                  ({"num_adjusted_warmup": 201, "num_warmup": 200}, "num_adjusted_warmup"),
                  ({"num_adjusted_warmup": -1, "num_warmup": 200}, "num_adjusted_warmup"),
                  ({"num_adjusted_warmup": 0, "num_warmup": 200}, "num_adjusted_warmup"),
                  # 150 of 200 for dual averaging leaves 50 MCLMC transitions to fit L
                  ({"num_adjusted_warmup": 150, "num_warmup": 200}, "num_warmup=200")]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            run(logdensity, jax.random.key(0), **{**common, **kwargs})
    with pytest.raises(ValueError, match="init"):
        run(logdensity, jax.random.key(0), init={"x": jnp.zeros((2, 3))}, num_chains=1,
            num_samples=2, num_warmup=200, progress=False)


@pytest.mark.parametrize("chain_sampler, kwargs, name", [
    ("mams", {"num_warmup": 50}, "num_warmup=50"),
    ("mams", {"num_warmup": 200, "num_adjusted_warmup": 300}, "num_adjusted_warmup"),
    ("mclmc", {"num_warmup": 200, "L": -1.0}, "L"),
])
def test_mile_checks_the_chains_settings_before_training_the_ensemble(
        tmp_path, chain_sampler, kwargs, name):
    post, _ = _digits_posterior(one_device_mesh())
    with pytest.raises(ValueError, match=name):
        ws.samplers.mile(post, jax.random.key(0), sampler=chain_sampler, num_chains=2,
                         ensemble=dict(num_epochs=1, batch_size=50, learning_rate=0.1),
                         num_samples=2, run_dir=tmp_path / "run", progress=False,
                         **kwargs)
    assert not (tmp_path / "run").exists()  # nothing trained


@pytest.mark.parametrize("sampler", ["mclmc", "mams"])
def test_a_chain_that_never_moves_is_reported_stuck(sampler):
    """A density that is -inf away from the start: every step is rejected (MAMS)
    or not finite (MCLMC)."""
    def logdensity(q):
        return jnp.where(jnp.all(q["x"] == 0.0), 0.0, -jnp.inf)

    run = getattr(ws.samplers, sampler)
    with pytest.warns(RuntimeWarning, match=r"chain\(s\) \[0, 1\] are stuck"):
        trace = run(logdensity, jax.random.key(0), init={"x": jnp.zeros((2, 3))},
                    num_chains=2, num_samples=3, step_size=0.1, L=1.0,
                    preconditioning="none", progress=False)
    assert trace.info["stuck_chains"] == [0, 1]
    assert np.all(trace.stats["is_divergent"])
