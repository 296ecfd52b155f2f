"""The small network with reference basin masses (ws.slt.network_basin_target):
its modes and labels, and its reference shares validated two ways."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws
from weightspace.slt.network_basins import network_basin_target


def test_each_edge_is_a_basin_found_with_its_mirror_image():
    target = network_basin_target()
    modes = target.modes
    assert modes.shape == (4, 4)  # two fits, each with its mirror (-a, -b, -c, d)
    labels = target.assign(modes)
    np.testing.assert_array_equal(np.sort(labels[:2]), [0, 1])
    np.testing.assert_array_equal(labels[2:], labels[:2])
    values = target.log_posterior(modes)
    np.testing.assert_allclose(values[2:], values[:2], rtol=1e-9)
    # The jax log density is the float64 one, in float32.
    w = jnp.asarray(modes, jnp.float32)
    np.testing.assert_allclose(jax.vmap(lambda q: target.logdensity({"w": q}))(w), values,
                               rtol=1e-5)


def test_closed_form_gradient_and_hessian_match_finite_differences():
    target = network_basin_target(repeats=4.0)
    rng = np.random.default_rng(0)
    for w in [*target.modes[:2], *rng.normal(size=(3, 4))]:
        eye, h = np.eye(4), 1e-5
        fd_grad = np.array([target.log_posterior(w + h * e) - target.log_posterior(w - h * e)
                            for e in eye]) / (2 * h)
        fd_hess = np.stack([target.gradient(w + h * e) - target.gradient(w - h * e)
                            for e in eye]) / (2 * h)
        scale = 1 + np.abs(target.hessian(w)).max()
        np.testing.assert_allclose(target.gradient(w), fd_grad, atol=1e-5 * scale)
        np.testing.assert_allclose(target.hessian(w), fd_hess, atol=1e-5 * scale)
    np.testing.assert_allclose(target.gradient(target.modes[0]), 0.0, atol=1e-4)


def _tempered_run(target):
    return ws.samplers.replica_exchange(
        target.logdensity, jax.random.key(0), init=target.init(jax.random.key(1), 4),
        num_chains=4, reference=target.logprior, num_temperatures=16, num_warmup=300,
        num_samples=2000, progress=False)


@pytest.fixture(scope="module")
def at_n64():
    """The network at n = 64 (repeats 4) and a replica-exchange run on it."""
    target = network_basin_target(repeats=4.0)
    return target, _tempered_run(target)


@pytest.mark.parametrize("repeats", [1.0, 4.0])
def test_reference_shares_agree_across_proposals_and_with_a_long_tempered_run(repeats,
                                                                              at_n64):
    """Importance sampling with two proposals, and replica exchange (a second,
    independent method), give the same shares within 4 combined standard errors."""
    target, trace = at_n64 if repeats == 4.0 else (network_basin_target(repeats=repeats),
                                                   None)
    shares, se = target.reference_shares(400_000)
    wide, wide_se = target.reference_shares(400_000, seed=1, inflate=6.0)
    assert abs(shares[0] - wide[0]) < 4 * np.hypot(se[0], wide_se[0])
    assert se[0] < 0.01  # half the study's tolerance on a share
    trace = _tempered_run(target) if trace is None else trace
    report = ws.diagnostics.basins(trace, assign=target.assign, names=target.basins,
                                   exact=shares)
    assert not report.weighted_by_start, report.verdict
    assert abs(report.error[0]) < 4 * np.hypot(report.standard_error[0], se[0]), report


def test_bad_arguments_are_named():
    for kwargs, name in [({"num_data": 0}, "num_data"), ({"noise": -1.0}, "noise"),
                         ({"repeats": 0.0}, "repeats"), ({"edge_height": 0.0}, "edge_height")]:
        with pytest.raises(ValueError, match=name):
            network_basin_target(**kwargs)
    with pytest.raises(ValueError, match="num_draws"):
        network_basin_target().reference_shares(0)


def test_basins_found_from_the_draws_lie_within_the_constructed_ones(at_n64):
    """assign_basins, from draws alone (k-means, then merged along straight
    paths without a barrier), finds each fit and its mirror image as separate
    basins, each within one constructed basin."""
    target, trace = at_n64
    assign = ws.diagnostics.assign_basins(trace, target.logdensity)
    found, truth = assign(trace), target.assign(trace.positions)
    assert found.shape == truth.shape == (4, 2000)
    big = [b for b in range(len(assign.names)) if (found == b).mean() > 0.01]
    assert len(big) == 4  # two fits, each with its mirror image
    for b in big:
        purity = np.bincount(truth[found == b], minlength=2).max() / (found == b).sum()
        assert purity > 0.98, (b, purity)
    # Between the basins the straight paths climb; within one they do not.
    assert np.all(assign.barriers[np.ix_(assign.cluster_basin == 0,
                                         assign.cluster_basin == 1)] > 1.0)
    # Labels of other draws: one draw per mode lands in that mode's basin.
    labels = assign({"w": target.modes})
    assert len(set(labels.tolist())) == 4
    # Each cluster's representative is a draw of that cluster's basin.
    for c in range(len(assign.cluster_basin)):
        rep = assign.representative(c)
        assert assign({"w": rep["w"][None]})[0] == assign.cluster_basin[c]
        np.testing.assert_allclose(target.logdensity(rep), assign.log_density[c], rtol=1e-5)
    report = ws.diagnostics.basins(trace, assign=assign, names=assign.names)
    assert report.names == assign.names and not report.weighted_by_start
    with pytest.raises(ValueError, match="structure"):
        assign({"v": target.modes})
    with pytest.raises(ValueError, match="max_barrier"):
        ws.diagnostics.assign_basins(trace, target.logdensity, max_barrier=-1.0)


def test_draws_with_relabelled_hidden_units_fall_into_one_basin_after_alignment():
    data = ws.data.load("digits", n_train=100)
    post = ws.models.posterior(ws.models.MLP((4,), 10), data, prior_variance=0.2)
    w = post.init()
    rng = np.random.default_rng(0)
    perm = np.array([2, 0, 3, 1])

    def draws(permute):
        def leaf(path, a):
            name = jax.tree_util.keystr(path)
            a = np.asarray(a)
            if permute and name == "['layers'][0]['kernel']":
                a = a[:, perm]
            elif permute and name in ("['layers'][0]['bias']", "['layers'][1]['kernel']"):
                a = a[perm]
            return a + 1e-3 * rng.normal(size=(6, *a.shape)).astype(a.dtype)
        return jax.tree_util.tree_map_with_path(leaf, w)

    positions = jax.tree.map(lambda a, b: np.stack([a, b]), draws(False), draws(True))
    assign = ws.diagnostics.assign_basins(positions, post.logdensity, network=post.network,
                                          max_clusters=4)
    labels = assign(positions)
    assert labels.shape == (2, 6) and np.all(labels == 0)
