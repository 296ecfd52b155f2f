"""Replica exchange: exact at temperature 1, crosses barriers that HMC does not,
swaps temperatures not weights, sharded runs equal one device, bad input named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws
from weightspace.samplers.replica_exchange import refit_ladder

from conftest import one_device_mesh
from exact_targets import (check_gaussian_moments, check_regression_moments,
                           conjugate_regression, correlated_gaussian)


@pytest.mark.parametrize("moves, length", [("hmc", 1.5), ("mams", None)])
def test_replica_exchange_samples_a_correlated_gaussian_exactly_at_temperature_1(moves,
                                                                                 length):
    cov, logdensity = correlated_gaussian()
    trace = ws.samplers.replica_exchange(
        logdensity, jax.random.key(3), init={"x": jnp.zeros((4, 2))}, num_chains=4,
        num_temperatures=4, min_beta=0.1, num_samples=500, num_warmup=200,
        trajectory_length=length, moves=moves, progress=False)
    x = np.asarray(trace.positions["x"], np.float64)
    assert np.mean(trace.stats["swap_rate"]) > 0.3
    check_gaussian_moments(x, cov)
    assert trace.info["betas"].shape == (4, 4) and trace.info["swap_rate"].shape == (4, 3)


@pytest.mark.parametrize("moves", ["hmc", "mams"])
def test_replica_exchange_samples_conjugate_linear_regression_exactly(moves):
    """The prior as reference: the hottest rung (beta = 0) samples the prior."""
    mean, cov, logprior, logdensity = conjugate_regression()
    trace = ws.samplers.replica_exchange(
        logdensity, jax.random.key(4), init={"w": jnp.zeros((4, 3))}, num_chains=4,
        num_temperatures=6, reference=logprior, num_samples=500, num_warmup=200,
        moves=moves, progress=False)
    if moves == "mams":  # 2 gradients per integrator step and 1 per transition, at each rung
        steps = trace.stats["num_steps"]
        hotter = trace.stats["grad_evals"] - (2 * steps + 1)   # the 5 rungs above the cold one
        assert np.all(hotter >= 5 * 3) and np.all(hotter % 2 == 1)
        assert trace.info["moves"] == "mams" and len(np.unique(steps)) > 1
    assert np.all(trace.info["betas"][:, -1] == 0.0)
    check_regression_moments(np.asarray(trace.positions["w"], np.float64), mean, cov)


def test_replica_exchange_weights_basins_by_mass_where_hmc_weights_them_by_start():
    """A product of 100 quartic factors at a barrier of 16: HMC's chains never
    cross (tests/test_basins.py); replica exchange's do, its pooled share of
    each basin is within 0.02 of exact and within 4 Monte Carlo standard
    errors, and it reports swap rates and round trips."""
    target = ws.slt.basin_target("quartic", num_factors=100, barrier=16.0)
    trace = ws.samplers.replica_exchange(
        target.logdensity, jax.random.key(2), init=target.init(jax.random.key(1), 4),
        num_chains=4, num_temperatures=32, reference=target.logprior, num_warmup=300,
        num_samples=800, progress=False)
    report = ws.diagnostics.basins(trace, assign=target.assign, names=target.basins,
                                   exact=target.shares)
    assert report.no_crossing == 0.0 and report.crossings.min() > 100
    assert np.abs(report.error).max() < 0.02, report
    assert np.all(np.abs(report.error) < 4 * report.standard_error), report
    rates = trace.info["swap_rate"]
    assert rates.shape == (4, 31) and rates.min() > 0.2  # the refitted ladder equalizes
    assert trace.info["round_trips"].sum() > 0


def test_refitting_the_ladder_equalizes_rejection_rates():
    """Betas equally spaced in the cumulative rejection rate: where a pair
    rejected often, the new ladder puts more rungs."""
    betas = jnp.asarray([1.0, 0.5, 0.25, 0.0])
    new = refit_ladder(betas, jnp.asarray([0.9, 0.1, 0.1]))
    assert new[0] == 1.0 and new[-1] == 0.0
    assert jnp.all(jnp.diff(new) < 0)
    # Lambda = 0.9, 1.0, 1.1 at betas 0.5, 0.25, 0: thirds of 1.1 fall in the first gap.
    np.testing.assert_allclose(new[1:3], [1.0 - 0.5 * (1.1 / 3) / 0.9,
                                          1.0 - 0.5 * (2.2 / 3) / 0.9], rtol=1e-5)


def _digits_posterior(mesh):
    data = ws.data.load("digits", n_train=200)
    return ws.models.posterior(ws.models.MLP((16,), 10), data, prior_variance=0.2,
                               mesh=mesh), data


def test_sharded_replica_exchange_equals_one_device():
    assert jax.device_count() == 8, "run with JAX_NUM_CPU_DEVICES=8 (tests/conftest.py)"
    traces = []
    for mesh in (one_device_mesh(), ws.sharding.make_mesh(num_chains=2, num_data=4)):
        post, data = _digits_posterior(mesh)
        traces.append(ws.samplers.replica_exchange(
            post, jax.random.key(6), num_chains=1, num_temperatures=4, num_samples=4,
            num_warmup=0, step_size=0.01, trajectory_length=0.05, eval_x=data.x_test[:8],
            progress=False))
    one, other = traces
    for a, b in zip(jax.tree.leaves(one.positions), jax.tree.leaves(other.positions)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(other.predictions, one.predictions, atol=1e-4)
    for name in ("logdensity", "swap_rate", "grad_evals"):
        np.testing.assert_allclose(other.stats[name], one.stats[name], rtol=1e-4)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"num_temperatures": 1}, ValueError, "num_temperatures=1"),
    ({"min_beta": 1.0}, ValueError, "min_beta=1.0"),
    ({"min_beta": None}, ValueError, "min_beta=None"),
    ({"min_beta": 0.0}, ValueError, "min_beta=0"),
    ({"reference": 3.0}, TypeError, "reference=3.0"),
    ({"num_warmup": 10}, ValueError, "num_warmup=10"),
    ({"num_warmup": 0}, ValueError, "step_size=None"),
    ({"step_size": -1.0}, ValueError, "step_size=-1.0"),
    ({"init": {"x": jnp.zeros((3, 2))}}, ValueError, "init"),
    ({"moves": "nuts"}, ValueError, "moves"),
])
def test_bad_replica_exchange_arguments_are_named_before_tracing(kwargs, error, match):
    args = {"init": {"x": jnp.zeros((2, 2))}, "num_chains": 2, "num_samples": 2,
            "num_warmup": 60, "min_beta": 0.1, **kwargs}

    def logdensity(q):
        raise AssertionError("traced before the arguments were checked")

    with pytest.raises(error, match=match):
        ws.samplers.replica_exchange(logdensity, jax.random.key(0), progress=False, **args)


@pytest.mark.parametrize("moves", ["hmc", "mams"])
def test_compiled_transition_exchanges_temperatures_not_weights(moves):
    """Replicas spread over 4 devices along "chain": every collective in the
    compiled transition carries a few numbers per replica (log densities,
    rungs, acceptances, keys), never a replica's 256 weights."""
    from weightspace.samplers import driver
    from weightspace.samplers import target as target_lib
    from weightspace.samplers.replica_exchange import algorithm

    target = ws.slt.basin_target("quartic", num_factors=256, barrier=16.0)
    mesh = ws.sharding.make_mesh(num_chains=4, num_data=2)
    tgt = target_lib.resolve(target.logdensity, mesh=mesh)
    alg = algorithm(tgt.logdensity_of, lambda _: target.logprior, mesh=mesh, num_chains=2,
                    num_temperatures=4, num_warmup=0, min_beta=0.0, step_size=0.1,
                    trajectory_length=1.0, max_num_steps=100, target_accept=0.8, thin=1,
                    divergence_threshold=1000.0, moves=moves)
    carry, _ = jax.jit(alg.init)(None, target.init(jax.random.key(0), 2), jax.random.key(1),
                                 jax.random.key(2))
    carry = jax.device_put(carry, driver.chain_sharding(mesh))
    hlo = jax.jit(alg.sample_step, out_shardings=(driver.chain_sharding(mesh), None, None)) \
        .lower(None, carry, 0).compile().as_text()
    sizes = []
    for line in hlo.splitlines():
        op = line.split("=", 1)[-1]
        if any(f" {c}(" in op for c in ("all-gather", "all-to-all", "collective-permute",
                                        "all-reduce", "reduce-scatter")):
            shapes = [s for s in op.split(" ", 2)[:2] if "[" in s]
            dims = shapes[0].split("[", 1)[1].split("]", 1)[0] if shapes else ""
            sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    assert sizes, "the transition should exchange scalars between devices"
    assert max(sizes) <= 2 * 4 * 4, sizes
