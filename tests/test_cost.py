"""Every Trace counts its cost in full-batch-equivalent gradient evaluations:
checked against a hand count (HMC: the leapfrog steps plus the first gradient
and the step-size search, counted by a callback in the gradient itself; SGLD
and SGD: batch_size / num_data per minibatch step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws


def counting_gaussian(calls: list):
    """A standard normal log density whose gradient reports every evaluation."""

    @jax.custom_vjp
    def logdensity(position):
        return -0.5 * jnp.sum(position["x"] ** 2)

    def forward(position):
        return logdensity(position), position

    def backward(position, g):
        jax.debug.callback(lambda *_: calls.append(1), g)
        return ({"x": -position["x"] * g},)

    logdensity.defvjp(forward, backward)
    return logdensity


@pytest.mark.parametrize("warmup", ["adapt", "fixed"])
def test_hmc_counts_every_gradient_it_evaluates(warmup):
    calls = []
    step_size = None if warmup == "adapt" else 0.125
    trace = ws.samplers.hmc(counting_gaussian(calls), jax.random.key(0),
                            init={"x": jnp.ones((1, 3))}, num_chains=1, num_samples=5,
                            num_warmup=6, thin=3, warmup=warmup, step_size=step_size,
                            trajectory_length=0.5, progress=False)
    jax.effects_barrier()
    grads = trace.stats["grad_evals"]
    assert grads.shape == (1, 5)
    # each draw: its thin=3 transitions' leapfrog steps, one gradient per step
    # (a fixed 0.5 / 0.125 = 4 steps without divergences)
    if warmup == "fixed":
        np.testing.assert_array_equal(grads, 12.0)
        assert trace.info["warmup_grad_evals"].tolist() == [1 + 6 * 4]
    assert float(trace.info["warmup_grad_evals"].sum() + grads.sum()) == len(calls)
    s = ws.diagnostics.summary(trace)
    assert s.cost["total_grad_evals"] == len(calls)
    assert "full-batch-equivalent gradient evaluations" in str(s)


def test_sgld_counts_batch_over_n_per_step_and_sgd_per_epoch():
    rows = jnp.linspace(-1.0, 1.0, 100)[:, None]

    def estimate(w, batch):
        return -0.5 * jnp.sum(w["x"] ** 2) - 50.0 * jnp.mean((batch - w["x"]) ** 2)

    init = {"x": jnp.zeros((2, 1))}
    trace = ws.samplers.sgld(estimate, jax.random.key(1), data=rows, init=init,
                             num_chains=2, num_samples=4, num_warmup=7, batch_size=20,
                             step_size=1e-3, thin=3, progress=False)
    np.testing.assert_allclose(trace.stats["grad_evals"], 3 * 20 / 100, rtol=1e-6)
    np.testing.assert_allclose(trace.info["warmup_grad_evals"], 7 * 20 / 100)
    # cyclical: draws are unevenly spaced; together they cover every transition
    # from num_warmup to the last draw's end
    cyc = ws.samplers.sghmc(estimate, jax.random.key(2), data=rows, init=init,
                            num_chains=2, num_samples=5, num_warmup=3, batch_size=20,
                            schedule=ws.samplers.cyclical(1e-3, cycle_length=10),
                            samples_per_cycle=2, progress=False)
    # 2 draws per 10-step cycle, at its transitions 8 and 9: the 5th ends at 28
    np.testing.assert_allclose(cyc.stats["grad_evals"].sum(axis=1), (29 - 3) * 0.2,
                               rtol=1e-6)
    fit = ws.samplers.sgd(estimate, jax.random.key(3), data=rows, init=init, num_chains=2,
                          num_epochs=3, batch_size=30, learning_rate=0.01, progress=False)
    # an epoch is 100 // 30 = 3 steps of 30 rows: 0.9 full-batch gradients
    np.testing.assert_allclose(fit.info["warmup_grad_evals"], 3 * 0.9)
    np.testing.assert_array_equal(fit.stats["grad_evals"], 0.0)
