"""The LLC of a deep linear network of 150,000 parameters against Aoyagi's
coefficient (issue 17: at least 10^5 parameters within 15% of theory; Furman
and Lau 2024 report estimates mostly 0-50% low at such sizes).

Widths (100, 300, 300, 100), a rank-10 teacher, 20,000 training rows, w* from
`ws.slt.dln_problem`; SGLD on the moment form of L_n, nbeta = n / log n,
localization 100, 4 chains. First `ws.slt.calibrate` over five step sizes with
short chains (1,000 burn-in, 2,000 draws: the settings the DLN tests use at
small sizes, scaled down) and an estimate at the step size it suggests, then
`ws.slt.llc` with long chains (10,000 burn-in,
10,000 draws) at two step sizes, each with the mean of the first and second
half of its draws (a drift between them means the chains are still moving).

    python benchmarks/dln_large.py [--sampler S] [--short-only]
        (about 10 minutes on 2 CPU cores; --short-only: the calibration and
        the estimate at its suggestion, about 4)

--sampler rmsprop_sgld_loss calibrates on step sizes ten times smaller (its
preconditioner multiplies the step by up to 10) and skips the long runs.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import weightspace as ws

WIDTHS, RANK = (100, 300, 300, 100), 10
STEP_SIZES = (1e-7, 3e-7, 1e-6, 3e-6, 1e-5)
LONG = dict(num_chains=4, num_draws=10000, num_burnin=10000, localization=100.0,
            progress=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sampler", default="sgld", choices=("sgld", "rmsprop_sgld_loss"))
    parser.add_argument("--short-only", action="store_true")
    args = parser.parse_args()
    grid = STEP_SIZES if args.sampler == "sgld" else tuple(e / 10 for e in STEP_SIZES)
    started = time.perf_counter()
    p = ws.slt.dln_problem(WIDTHS, RANK, num_train=20000, seed=0)
    theory = float(p.theory)
    size = sum(np.size(w) for w in jax.tree.leaves(p.params_star))
    print(f"widths {WIDTHS}, rank {RANK}: {size:,} parameters, theory {theory:g}")
    cal = ws.slt.calibrate(p.moment_loss, p.params_star, jax.random.key(0), data=p.moments,
                           step_sizes=grid, nbetas=(p.nbeta,), localizations=(100.0,),
                           num_chains=4, num_draws=2000, num_burnin=1000,
                           sampler=args.sampler, progress=False)
    print(cal)
    [((nbeta, localization), suggested)] = cal.suggested.items()
    if suggested is not None:
        est = ws.slt.llc(p.moment_loss, p.params_star, jax.random.key(1), data=p.moments,
                         nbeta=nbeta, localization=localization, step_size=suggested,
                         num_chains=4, num_draws=5000, num_burnin=2000,
                         sampler=args.sampler, progress=False)
        print(f"at the suggested step size {suggested:g} (2,000 burn-in, 5,000 draws): "
              f"{est}; relative error {(est.mean - theory) / theory:+.1%}")
    for eps in () if args.short_only or args.sampler != "sgld" else (1e-6, 2e-6):
        est = ws.slt.llc(p.moment_loss, p.params_star, jax.random.key(1), data=p.moments,
                         nbeta=p.nbeta, step_size=eps, **LONG)
        half = LONG["num_draws"] // 2
        halves = [p.nbeta * (est.loss_trace[:, s].mean() - est.init_loss)
                  for s in (slice(None, half), slice(half, None))]
        print(f"step size {eps:g}: {est}; MALA acceptance "
              f"{np.nanmean(est.mala_acceptance):.3f}; halves {halves[0]:.0f}, "
              f"{halves[1]:.0f}; relative error {(est.mean - theory) / theory:+.1%}")
    print(f"whole script: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
