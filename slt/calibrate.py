"""Choosing LLC hyperparameters: a sweep over step size x (n beta, localization).

The LLC literature picks the sampler's step size by running short chains over a
grid and keeping the largest step size whose estimate is stable: no divergence,
the loss stays above L_n(w*), the discretization error is small (MALA
acceptance of the steps), and the estimate agrees with smaller step sizes.

The acceptance bar is ours, from the deep linear networks of
tests/test_slt_dln.py (3 shapes x 3 teachers, 20,000 rows, localization 100):
there, SGLD step sizes whose mean acceptance fell below 0.9 gave estimates
9-25% above those of steps 5-10x smaller (whose own estimates still carry
some bias and some mixing error). Agreement with the next smaller step alone
let such a bias through when it grew in increments of under 10%. Short chains
fail the other way: at the smallest step sizes they have not reached their
stationary law within the burn-in, so their estimates are low and the larger,
converged step sizes "disagree" with them (a 150,000-parameter DLN, 1,000
burn-in steps: 1e-7 was picked and gave 43% below theory; benchmarks/RESULTS.md).
A drift test between the halves of the draws flags those, and a drifting
step size is no reference for the next.
`calibrate` runs that grid with `llc`, returns the table, a figure (lambda_hat
and its spread across chains against the step size, flagged settings marked),
and suggests the largest step size that is stable for each (nbeta,
localization).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Any

import jax
import numpy as np

from weightspace.jsonio import is_writer
from weightspace.slt.llc import llc

# Estimates within this fraction of the next smaller step size's count as agreeing.
AGREEMENT = 0.1
# SGLD steps whose mean MALA acceptance is below this are unstable (module docstring).
MIN_ACCEPTANCE = 0.9


@dataclasses.dataclass(frozen=True)
class Calibration:
    """rows: one dict per setting (step_size, nbeta, localization, mean, std,
    acceptance (mean MALA acceptance of the steps over chains), flags, stable); suggested: {(nbeta, localization): largest stable step size
    or None}; figure: the matplotlib Figure. `str()` prints the table."""

    rows: list
    suggested: dict
    figure: Any

    def __str__(self) -> str:
        lines = [("step size   nbeta      localization  lambda_hat  std     acceptance  "
                  "stable  flags")]
        for r in self.rows:
            lines.append(f"{r['step_size']:<11.3g} {r['nbeta']:<10.4g} "
                         f"{r['localization']:<13.4g} {r['mean']:<11.4g} {r['std']:<7.3g} "
                         f"{r['acceptance']:<11.3f} "
                         f"{'yes' if r['stable'] else 'no':<7} {'; '.join(r['flags'])}")
        for (nbeta, gamma), eps in self.suggested.items():
            lines.append(f"suggested step size at nbeta={nbeta:.4g}, localization={gamma:g}: "
                         f"{'none is stable' if eps is None else f'{eps:g}'}")
        return "\n".join(lines)


def _figure(rows):
    from matplotlib.figure import Figure  # slow to import (a third of a second); only figures need it

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    settings = sorted({(r["nbeta"], r["localization"]) for r in rows})
    for i, (nbeta, gamma) in enumerate(settings):
        part = sorted((r for r in rows if (r["nbeta"], r["localization"]) == (nbeta, gamma)),
                      key=lambda r: r["step_size"])
        eps = np.array([r["step_size"] for r in part])
        mean = np.array([r["mean"] for r in part])
        std = np.array([r["std"] for r in part])
        color = f"C{i % 10}"
        ax.errorbar(eps, mean, yerr=np.nan_to_num(std), color=color, marker="o",
                    capsize=3, label=f"nbeta={nbeta:.4g}, localization={gamma:g}")
        bad = np.array([not r["stable"] for r in part])
        if bad.any():
            ax.scatter(eps[bad], np.nan_to_num(mean[bad]), marker="x", s=80, color="k",
                       zorder=3, label="unstable" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("step size")
    ax.set_ylabel("lambda_hat (mean +- sd across chains)")
    ax.set_title("LLC calibration")
    ax.legend(fontsize="small")
    return fig


def _drift(est) -> float | None:
    """n beta (second-half mean loss - first-half mean loss), averaged over the
    chains that did not diverge, when it exceeds both AGREEMENT of the estimate
    and 3 standard errors (from its spread across chains); None otherwise. A
    chain whose loss still rises (or falls) through its draws has not reached
    its stationary law, and its estimate is off by more than the gap: small
    step sizes take the longest to get there."""
    loss = est.loss_trace[~est.diverged]
    if loss.shape[0] < 2 or loss.shape[1] < 4:
        return None
    half = loss.shape[1] // 2
    gaps = est.nbeta * (loss[:, half:].mean(axis=1) - loss[:, :half].mean(axis=1))
    gap = float(gaps.mean())
    se = float(gaps.std(ddof=1)) / math.sqrt(len(gaps))
    if abs(gap) > AGREEMENT * abs(est.mean) and abs(gap) > 3 * se:
        return gap
    return None


def calibrate(target, params_star, key, *, data=None,
              step_sizes=(1e-6, 1e-5, 1e-4, 1e-3), nbetas=None, localizations=(100.0,),
              num_chains: int = 2, num_draws: int = 200, num_burnin: int = 100,
              batch_size: int | None = None, sampler: str = "sgld",
              min_acceptance: float = MIN_ACCEPTANCE, path=None,
              progress: bool = True) -> Calibration:
    """Run `llc` on every (step size, nbeta, localization) and suggest step sizes.

    nbetas: default (n / log n,). A setting is stable when its estimate has no
    flags (divergence, loss below L_n(w*), low MALA acceptance), for the SGLD
    samplers the mean MALA acceptance of its steps is at least
    `min_acceptance`, its chains are not still drifting (the mean loss of the
    second half of the draws differs from the first half's by more than both
    10% of the estimate and 3 standard errors: the burn-in was too short for
    that step size), and it does not differ from the estimate of the next
    smaller step size that is not drifting by more than both 10% and 3
    standard errors (estimated from the spread across chains): a larger step
    should not change the answer.
    path: write the figure there as a PNG.
    """
    sizes = sorted(float(e) for e in step_sizes)
    if not sizes:
        raise ValueError("step_sizes must hold at least one step size")
    rows = []
    settings = list(itertools.product([None] if nbetas is None else list(nbetas),
                                      list(localizations)))
    keys = jax.random.split(key, len(settings) * len(sizes))
    k = 0
    for nbeta, gamma in settings:
        previous, previous_se = None, None
        for eps in sizes:
            est = llc(target, params_star, keys[k], data=data, num_chains=num_chains,
                      num_draws=num_draws, num_burnin=num_burnin, step_size=eps,
                      localization=gamma, nbeta=nbeta, batch_size=batch_size,
                      sampler=sampler, progress=progress)
            k += 1
            flags = list(est.flags)
            acceptance = (float(np.nanmean(est.mala_acceptance))
                          if est.mala_acceptance is not None else float("nan"))
            # MALA's own acceptance is part of its kernel; SGNHT's moves are not
            # Langevin proposals and have none: both are judged by agreement alone.
            if sampler not in ("mala", "sgnht") and not acceptance >= min_acceptance:
                flags.append(f"mean MALA acceptance {acceptance:.3f} below {min_acceptance}: "
                             f"the step's discretization error is large")
            se = est.std / math.sqrt(num_chains) if math.isfinite(est.std) else math.inf
            drift = _drift(est)
            if drift is not None:
                flags.append(f"still drifting: the second half of the draws averages "
                             f"{drift:+.4g} against the first (lengthen num_burnin)")
            if previous is not None and math.isfinite(previous) and math.isfinite(est.mean):
                gap = abs(est.mean - previous)
                # Monte Carlo error alone must not flag a setting: the gap must
                # exceed 3 standard errors (from the spread across chains) too.
                if gap > AGREEMENT * abs(previous) and gap > 3 * math.hypot(se, previous_se):
                    flags.append(f"differs from the next smaller step size's "
                                 f"{previous:.4g} by more than {AGREEMENT:.0%}")
            stable = not flags and math.isfinite(est.mean)
            rows.append({"step_size": eps, "nbeta": est.nbeta, "localization": float(gamma),
                         "mean": est.mean, "std": est.std, "acceptance": acceptance,
                         "flags": flags, "stable": stable})
            if drift is None:  # a chain still drifting is no reference for larger steps
                previous, previous_se = est.mean, se
    suggested = {}
    for r in rows:
        setting = (r["nbeta"], r["localization"])
        suggested.setdefault(setting, None)
        if r["stable"]:
            suggested[setting] = r["step_size"]  # rows ascend in step size
    fig = _figure(rows)
    if path is not None and is_writer():  # process 0 of a multi-process job
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
    return Calibration(rows, suggested, fig)
