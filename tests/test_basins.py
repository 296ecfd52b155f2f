"""Targets with exactly known basin masses (ws.slt.basin_target) and the basin
diagnostic (ws.diagnostics.basins)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import weightspace as ws
from weightspace.slt.basins import FACTORS, exact_masses


@pytest.mark.parametrize("factor,barriers", [("quartic", (1.0, 2.0, 8.0, 16.0, 30.0)),
                                             ("crossing", (30.0,))])
def test_exact_basin_masses_agree_two_ways_to_1e_6(factor, barriers):
    for barrier in barriers:
        target = ws.slt.basin_target(factor, barrier=barrier)
        quad, grid = target.masses("quad"), target.masses("grid")
        np.testing.assert_allclose(grid, quad, rtol=1e-6, atol=0)
        np.testing.assert_allclose(target.shares, quad / quad.sum(), rtol=0, atol=1e-6)


def test_basin_shares_grow_toward_the_lower_learning_coefficient_at_its_rate():
    """A basin's mass falls as n^-lambda (log n)^(m-1) (Watanabe 2009): the
    log of the degenerate-to-regular ratio grows with log n at slope
    lambda_regular - lambda_degenerate (1/4 for the quartic factor), plus
    1 / log n for the crossing's multiplicity 2 (slope 1/2 + 1/log n)."""
    def slope(factor, lo, hi):
        ratio = [np.log(m[0] / m[1]) for m in
                 (exact_masses(ws.slt.basin_target(factor, barrier=b), method="grid")
                  for b in (lo, hi))]
        return (ratio[1] - ratio[0]) / math.log(hi / lo)

    assert slope("quartic", 300.0, 3000.0) == pytest.approx(0.25, abs=0.01)
    n = 3000.0 / FACTORS["crossing"].saddle_value
    assert 0.5 < slope("crossing", 300.0, 3000.0) < 0.5 + 1.5 / math.log(n)
    for factor, barriers in (("quartic", (1, 4, 16, 30)), ("crossing", (2, 16))):
        shares = [ws.slt.basin_target(factor, barrier=b).shares[0] for b in barriers]
        assert np.all(np.diff(shares) > 0)


def test_the_barrier_is_the_lowest_pass_between_the_basins():
    """Flooding g from below on a fine grid: the two basins' minima join at
    the stated saddle value (to the grid's resolution), and not below it."""
    for name, spec in FACTORS.items():
        axis = np.linspace(-1.5, 1.5, 3001) if spec.dim == 1 else np.linspace(-0.5, 1.5, 1001)
        grid = np.stack(np.meshgrid(*[axis] * spec.dim, indexing="ij"), axis=-1)
        g = spec.g(grid)
        index = [tuple(np.abs(axis - c).argmin() for c in point) for point in spec.minima]

        def joined(level):
            parts, _ = ndimage.label(g <= level)
            return parts[index[0]] == parts[index[1]] != 0

        assert joined(spec.saddle_value * 1.01), name
        assert not joined(spec.saddle_value * 0.99), name


def test_a_basin_target_is_a_product_of_its_factors():
    target = ws.slt.basin_target("crossing", num_factors=5, barrier=4.0, prior_scale=2.0)
    u = np.random.default_rng(0).normal(size=(5, 2))
    x, y = u[:, 0], u[:, 1]
    expected = np.sum(-4.0 / (32 / 729) * (x * y) ** 2 * ((x - 1) ** 2 + (y - 1) ** 2)
                      - (x ** 2 + y ** 2) / 8.0)
    assert float(target.logdensity({"u": jnp.asarray(u)})) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(target.assign({"u": u}),
                                  np.where((x > 0.5) & (y > 0.5), 1, 0))
    assert target.basins == ("degenerate", "regular")
    assert jax.tree.map(jnp.shape, target.init(jax.random.key(0), 3)) == {"u": (3, 5, 2)}
    np.testing.assert_array_equal(target.assign(target.minimum("regular")), np.ones(5))


@pytest.mark.parametrize("kwargs,match", [
    ({"factor": "cubic"}, "factor='cubic'"),
    ({"factor": "quartic", "barrier": -1.0}, "barrier=-1.0"),
    ({"factor": "quartic", "num_factors": 0}, "num_factors=0"),
    ({"factor": "quartic", "prior_scale": float("inf")}, "prior_scale=inf"),
])
def test_bad_basin_target_arguments_are_named(kwargs, match):
    factor = kwargs.pop("factor")
    with pytest.raises(ValueError, match=match):
        ws.slt.basin_target(factor, **kwargs)


def _two_state_chains(rng, num_chains, num_draws, num_variables, stay, p_start):
    """Labels of independent two-state Markov chains whose stationary share of
    basin 1 is 1/2: each step keeps the label with probability `stay`."""
    labels = np.empty((num_chains, num_draws, num_variables), np.int64)
    labels[:, 0] = rng.random((num_chains, num_variables)) < p_start
    for t in range(1, num_draws):
        keep = rng.random((num_chains, num_variables)) < stay
        labels[:, t] = np.where(keep, labels[:, t - 1], 1 - labels[:, t - 1])
    return labels


def test_chains_that_mix_between_basins_are_not_flagged():
    rng = np.random.default_rng(0)
    labels = _two_state_chains(rng, 4, 1000, 200, stay=0.95, p_start=0.5)
    report = ws.diagnostics.basins(labels, exact=[0.5, 0.5])
    assert not report.weighted_by_start, report.verdict
    assert report.flagged == 0.0
    assert np.all(np.abs(report.error) < 4 * report.standard_error)
    assert report.crossings.min() > 0


def test_a_variable_whose_chains_all_stay_in_one_basin_is_no_evidence_alone():
    """A variable no chain crossed, with every chain in the same basin (a small
    basin not visited), is not flagged when the others mix; chains that sit in
    different basins without crossing are."""
    rng = np.random.default_rng(2)
    mixing = _two_state_chains(rng, 4, 1000, 200, stay=0.95, p_start=0.5)
    unvisited = np.concatenate([mixing, np.zeros((4, 1000, 1), np.int64)], axis=2)
    report = ws.diagnostics.basins(unvisited)
    assert not report.weighted_by_start, report.verdict
    assert report.no_crossing == pytest.approx(1 / 201) and report.flagged == 0.0
    apart = unvisited.copy()
    apart[0, :, -1] = 1
    report = ws.diagnostics.basins(apart)
    assert report.weighted_by_start and report.flagged == pytest.approx(1 / 201)
    assert "different basins in 0.5%" in report.verdict


def test_two_chains_stuck_in_different_basins_are_flagged_even_when_others_cross():
    """One variable (a network): chains 1 and 2 never cross and sit in
    different basins, chains 0 and 3 cross a few times: too few effective
    draws to test agreement, but the stuck pair alone says "by start". One
    named basin (assign_basins found one) has nothing to weigh."""
    labels = np.zeros((4, 500), np.int64)
    labels[0, 200:] = 1
    labels[1] = 1
    labels[3, 100:110] = 1
    report = ws.diagnostics.basins(labels)
    assert report.weighted_by_start and report.flagged == 1.0
    assert "never crossed sit in different basins in 100.0%" in report.verdict
    single = ws.diagnostics.basins(np.zeros((4, 500), np.int64), names=["basin 0"])
    assert single.weighted_by_start is False and "single basin" in single.verdict


def test_chains_that_never_cross_or_disagree_are_flagged():
    rng = np.random.default_rng(1)
    stuck = _two_state_chains(rng, 4, 500, 50, stay=1.0, p_start=0.5)
    report = ws.diagnostics.basins(stuck)
    assert report.weighted_by_start and report.no_crossing == 1.0
    assert "no chain crossed" in report.verdict
    # Chains that all sit in the same basin pass R-hat but are still flagged.
    same = np.zeros((4, 500, 3), np.int64)
    assert ws.diagnostics.basins(same).weighted_by_start
    # One chain of four sits in basin 1 for most of its run, crossing twice.
    slow = _two_state_chains(rng, 4, 2000, 1, stay=0.9, p_start=0.5)
    slow[0, 200:] = 1
    slow[0, 800] = 0
    report = ws.diagnostics.basins(slow)
    assert report.weighted_by_start and report.no_crossing == 0.0
    assert "disagree" in report.verdict


def test_too_few_effective_draws_give_no_verdict():
    """Chains that cross, but so rarely that each holds a handful of effective
    draws, are neither passed nor flagged: the autocorrelation time that the
    test needs cannot be estimated from them."""
    rng = np.random.default_rng(2)
    labels = _two_state_chains(rng, 4, 1000, 100, stay=0.99, p_start=0.5)
    report = ws.diagnostics.basins(labels)
    assert report.weighted_by_start is None, report.verdict
    assert report.ess_per_chain < 50 and report.untested > 0.5
    assert "too few effective draws" in report.verdict


def test_bad_basin_labels_are_named():
    with pytest.raises(ValueError, match="integers shaped"):
        ws.diagnostics.basins(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="at least 2 chains"):
        ws.diagnostics.basins(np.zeros((1, 10), np.int64))
    with pytest.raises(ValueError, match="exact must hold"):
        ws.diagnostics.basins(np.zeros((2, 10), np.int64), exact=[0.5, 0.4])
    with pytest.raises(ValueError, match="alpha=2"):
        ws.diagnostics.basins(np.zeros((2, 10), np.int64), alpha=2)


def test_hmc_weights_basins_by_mass_at_a_low_barrier_and_by_start_at_a_high_one():
    """The issue's finding, as a property of the diagnostic: at a barrier of 2
    HMC's chains cross and match the exact shares within 4 Monte Carlo
    standard errors; at 16 none crosses, the shares are off, and the report
    says so."""
    for barrier, mixes in ((2.0, True), (16.0, False)):
        target = ws.slt.basin_target("quartic", num_factors=100, barrier=barrier)
        trace = ws.samplers.hmc(target.logdensity, jax.random.key(2),
                                init=target.init(jax.random.key(1), 4), num_chains=4,
                                num_warmup=200, num_samples=400, progress=False)
        s = ws.diagnostics.summary(trace, basins=target)
        report = s.basins
        assert report.weighted_by_start is not mixes, report.verdict
        if mixes:
            assert np.all(np.abs(report.error) < 4 * report.standard_error)
        else:
            assert report.no_crossing == 1.0 and np.abs(report.error).max() > 0.05
        assert "basins (100 variable(s), a median of" in str(s)
        assert s.to_dict()["basins"]["weighted_by_start"] is not mixes
