"""Deep linear networks: the LLC that `calibrate`'s step size gives is within 15%
of Aoyagi's learning coefficient, for 2-, 3- and 4-layer networks whose teacher
has a product of rank below full."""

import math

import jax
import numpy as np
import pytest

import weightspace as ws

# (widths, rank): 2, 3 and 4 layers; full rank would be min(widths) = 4, 3, 2.
SHAPES = [((5, 4, 6), 1), ((4, 6, 5, 3), 2), ((3, 5, 5, 5, 2), 1)]
STEP_SIZES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4)
# RMSprop-SGLD on the loss's gradient multiplies the step by up to 1 / 0.1 = 10
# where the loss is flat (its preconditioner 1 / (0.1 + sqrt(V))): a grid ten
# times finer covers the same effective steps.
GRIDS = {"sgld": STEP_SIZES, "sgnht": STEP_SIZES,
         "rmsprop_sgld_loss": tuple(e / 10 for e in STEP_SIZES)}


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}-rank{s[1]}")
def problem(request):
    widths, rank = request.param
    return ws.slt.dln_problem(widths, rank, num_train=20000, seed=0)


def test_the_moment_loss_is_the_posterior_loss(problem):
    rng = np.random.default_rng(0)
    for scale in (0.0, 0.01, 0.3):
        w = jax.tree.map(lambda a, s=scale: a + s * rng.normal(size=a.shape).astype(np.float32),
                         problem.params_star)
        assert float(problem.moment_loss(w, problem.moments)) == pytest.approx(
            float(problem.posterior.loss(w)), rel=1e-5)
    assert problem.init_loss == pytest.approx(
        float(problem.moment_loss(problem.params_star, problem.moments)), rel=1e-6)
    assert problem.nbeta == pytest.approx(20000 / math.log(20000))


@pytest.mark.parametrize("sampler", ["sgld", "sgnht", "rmsprop_sgld_loss"])
def test_llc_at_the_calibrated_step_size_is_within_15_percent_of_theory(problem, sampler):
    cal = ws.slt.calibrate(problem.moment_loss, problem.params_star, jax.random.key(0),
                           data=problem.moments, step_sizes=GRIDS[sampler],
                           nbetas=(problem.nbeta,), localizations=(100.0,), num_chains=4,
                           num_draws=4000, num_burnin=2000, sampler=sampler,
                           progress=False)
    [((nbeta, localization), eps)] = cal.suggested.items()
    assert eps is not None, str(cal)
    kw = {"data": problem.moments, "nbeta": nbeta, "localization": localization,
          "sampler": sampler, "progress": False}
    # Long chains: the degenerate directions of deeper networks mix slowly (quarter
    # means of 1,000-draw chains swung by 20% on the 4-layer shape).
    est = ws.slt.llc(problem.moment_loss, problem.params_star, jax.random.key(1),
                     num_chains=8, num_draws=10000, num_burnin=4000, step_size=eps, **kw)
    truth = float(problem.theory)
    assert est.flags == [], est
    # The Monte Carlo error is small against the tolerance, so a failure is bias.
    assert est.std / math.sqrt(8) < 0.05 * truth, est
    assert abs(est.mean - truth) < 0.15 * truth, (est, truth, str(cal))
