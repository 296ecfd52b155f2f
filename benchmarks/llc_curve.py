"""Wall time of an LLC curve: the LLC at 20 checkpoints of a training run,
estimated in one compiled program (`ws.slt.llc(..., stacked=True)`) against a
loop of one `ws.slt.llc` call per checkpoint (the way devinterp computes a
curve, here with our own estimator on both sides, so the two give the same
numbers and only the schedule differs).

The problem: the MLP(256, 256) on the digits training rows (n = 1,437); the
checkpoints are `ws.samplers.sgd(..., save_every=1)` after each of 20 epochs
(one run, batch 128, learning rate 0.01); 4 chains of 200 SGLD steps (50
burn-in, 150 draws) at each, minibatches of 128 rows, step size 1e-4,
localization 100, nbeta = n / log n, no MALA acceptance. One JAX CPU device
(XLA's threads on every core). Each round times the loop and the stacked call,
in alternating order, each after a warm-up call that compiles (the loop's
program is compiled once, for its first checkpoint, and reused); both use the
same key, so their estimates must agree (checked). Prints medians and the
ratio of each round; devinterp is not run here (benchmarks/llc.py times it on
one estimate).

    python benchmarks/llc_curve.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

import weightspace as ws

SETTINGS = dict(num_chains=4, num_draws=150, num_burnin=50, step_size=1e-4,
                localization=100.0, batch_size=128, mala_acceptance=False, progress=False)
CHECKPOINTS = 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    ds = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP((256, 256), 10), ds, prior_variance=0.2)
    run = ws.samplers.sgd(post, jax.random.key(0), num_epochs=CHECKPOINTS, save_every=1,
                          batch_size=128, learning_rate=0.01, progress=False)
    stack = jax.tree.map(lambda x: np.asarray(x[0]), run.positions)  # (checkpoint, ...)
    key = jax.random.key(1)

    def loop():
        return [ws.slt.llc(post, jax.tree.map(lambda x, k=k: x[k], stack), key, **SETTINGS)
                for k in range(CHECKPOINTS)]

    def stacked():
        return ws.slt.llc(post, stack, key, stacked=True, **SETTINGS)

    first = {"loop": _timed(loop), "stacked": _timed(stacked)}  # compile both
    times = {"loop": [], "stacked": []}
    for r in range(args.rounds):
        order = ("loop", "stacked") if r % 2 == 0 else ("stacked", "loop")
        for name in order:
            seconds, estimates = _timed(loop if name == "loop" else stacked)
            times[name].append(seconds)
            first.setdefault(f"{name} estimates", estimates)
    a = [e.mean for e in first["loop"][1]]
    b = [e.mean for e in first["stacked"][1]]
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3)
    ratios = [lo / st for lo, st in zip(times["loop"], times["stacked"])]
    print(f"{platform.machine()} CPU, {os.cpu_count()} cores; jax {jax.__version__}; "
          f"{jax.device_count()} device; load average {os.getloadavg()[0]:.1f}")
    print(f"{CHECKPOINTS} checkpoints x {SETTINGS['num_chains']} chains x "
          f"{SETTINGS['num_burnin'] + SETTINGS['num_draws']} steps, batch 128")
    for name in ("loop", "stacked"):
        print(f"{name:<8} first call {first[name][0]:.2f} s; then median "
              f"{statistics.median(times[name]):.2f} s ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"loop / stacked, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}x")
    print("LLC along the checkpoints (stacked):", ", ".join(f"{m:.1f}" for m in b))
    print(f"whole script: {(time.perf_counter() - started) / 60:.1f} min")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


if __name__ == "__main__":
    main()
