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


def test_a_run_from_small_init_learns_stage_by_stage_and_its_curve_ends_at_aoyagis_value(
        tmp_path):
    """SGD from small initialization learns the teacher's three directions one
    at a time; the LLC curve (one stacked call over the 40 checkpoints) flags
    every checkpoint before the last direction is learned (saddles: the chains
    find lower loss, so no coefficient is claimed there) and, at the
    checkpoints where SGD has settled, is within 15% of Aoyagi's coefficient.

    Localization 5, not 100: at the end the smallest non-zero Hessian eigenvalue
    of L_n times n beta is about 90, so gamma = 100 would hold those directions
    in (measured with the posterior's loss at the end of a run of this problem from
    another initialization key: 8.2-8.5 at gamma 100,
    10.2-10.4 at gamma 20, 11.5 at gamma 5, theory 11.5)."""
    run = ws.slt.dln_training_run((6, 5, 5, 4), 3, seed=3)
    assert run.theory == 11.5 and run.epochs[-1] == 200 and len(run.epochs) == 40
    # Stage by stage: the number of learned directions never drops, and each of
    # 0, 1, 2 and 3 is held at some checkpoint (plateaus, then a drop in loss).
    assert np.all(np.diff(run.stage) >= 0) and set(run.stage) == {0, 1, 2, 3}, run.stage
    plateau = [run.train_loss[run.stage == s].min() for s in range(4)]
    assert np.all(np.diff(plateau) < 0), plateau
    last = jax.tree.map(lambda x: x[-1], run.checkpoints)
    cal = ws.slt.calibrate(run.moment_loss, last, jax.random.key(0), data=run.moments,
                           step_sizes=(2e-5, 5e-5, 1e-4, 2e-4), nbetas=(run.nbeta,),
                           localizations=(5.0,), num_chains=4, num_draws=2000,
                           num_burnin=1000, progress=False)
    [eps] = cal.suggested.values()
    assert eps is not None, str(cal)
    curve = ws.slt.llc(run.moment_loss, run.checkpoints, jax.random.key(1), data=run.moments,
                       nbeta=run.nbeta, localization=5.0, step_size=eps, stacked=True,
                       num_chains=4, num_draws=3000, num_burnin=1000, progress=False)
    truth = float(run.theory)
    for est, stage in zip(curve, run.stage):
        if stage < 3:
            assert est.below_init.all() and est.flags, est
    settled = (run.stage == 3) & (run.nbeta * (run.train_loss - run.train_loss.min()) < 0.5)
    assert settled.sum() >= 5, run.train_loss
    for k in np.flatnonzero(settled):
        assert curve[k].flags == [], curve[k]
        assert curve[k].std / 2 < 0.05 * truth, curve[k]
        assert abs(curve[k].mean - truth) < 0.15 * truth, (k, curve[k], truth)
    fig = ws.diagnostics.plot_llc_curve(
        run.epochs, [e.mean for e in curve], [e.std for e in curve],
        train_loss=run.train_loss, test_loss=run.test_loss, step_label="epoch",
        flagged=[bool(e.flags) for e in curve], reference=truth,
        reference_label="Aoyagi", path=tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0 and len(fig.axes) == 2
