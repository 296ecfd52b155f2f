"""Basins of the digits MLP's posterior: which do HMC, replica exchange and a
deep ensemble find, and do they agree on the shares?

The posterior and HMC are `weightspace compare`'s quick preset (MLP(256, 256)
on the embedded digits data, prior variance 1/5); replica exchange runs as
many transitions with 4 rungs per chain; the deep ensemble is the preset's.
`ws.diagnostics.assign_basins` finds the basins from all the draws pooled
(hidden units aligned to one draw, k-means, clusters merged along straight
paths without a loss barrier); then for each basin: each run's share, the
test NLL of its draws' averaged prediction, and the LLC at the ensemble
members that fall in it (members are SGD solutions, local minima; draws are
not).

    python benchmarks/basins_digits.py [--write]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import weightspace as ws
from logdensity import machine, write_results

CHAINS, SAMPLES, WARMUP = 3, 60, 60
TRAJECTORY, MAX_STEPS, RUNGS = 0.2, 400, 4
MEMBERS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--max-barrier", type=float, default=1.0)
    args = parser.parse_args()
    started = time.time()
    data = ws.data.load("digits")
    net = ws.models.MLP((256, 256), 10)
    post = ws.models.posterior(net, data, prior_variance=1 / 5)
    common = dict(num_chains=CHAINS, num_samples=SAMPLES, num_warmup=WARMUP,
                  trajectory_length=TRAJECTORY, max_num_steps=MAX_STEPS,
                  eval_x=data.x_test, progress=False)
    seconds = {}
    t = time.perf_counter()
    runs = {"HMC": ws.samplers.hmc(post, jax.random.key(1), **common)}
    seconds["HMC"] = time.perf_counter() - t
    t = time.perf_counter()
    runs["replica exchange"] = ws.samplers.replica_exchange(
        post, jax.random.key(2), num_temperatures=RUNGS, **common)
    seconds["replica exchange"] = time.perf_counter() - t
    t = time.perf_counter()
    runs["deep ensemble"] = ws.samplers.deep_ensemble(
        post, jax.random.key(3), MEMBERS, num_epochs=30, batch_size=80, learning_rate=0.05,
        eval_x=data.x_test, progress=False)
    seconds["deep ensemble"] = time.perf_counter() - t

    # Pool every run's draws (chain and draw axes flattened) to find the basins.
    flat = {name: jax.tree.map(lambda a: np.asarray(a).reshape(1, -1, *np.shape(a)[2:]),
                               r.positions) for name, r in runs.items()}
    pooled = jax.tree.map(lambda *a: np.concatenate(a, axis=1), *flat.values())
    t = time.perf_counter()
    assign = ws.diagnostics.assign_basins(pooled, post.logdensity, network=net,
                                          max_clusters=args.clusters,
                                          max_barrier=args.max_barrier)
    seconds["assign_basins"] = time.perf_counter() - t
    labels = {name: assign(r.positions) for name, r in runs.items()}
    rows = []
    for b, basin in enumerate(assign.names):
        row = {"basin": basin}
        for name, r in runs.items():
            inside = labels[name] == b
            row[f"{name} share"] = float(inside.mean())
            probs = np.asarray(r.predictions)[inside]          # (draws, n_test, classes)
            row[f"{name} nll"] = (float(ws.diagnostics.nll(probs.mean(0), data.y_test))
                                  if inside.any() else None)
        members = np.flatnonzero(labels["deep ensemble"].reshape(-1) == b)
        llcs = []
        for m in members:
            w = jax.tree.map(lambda a: np.asarray(a)[m, 0], runs["deep ensemble"].positions)
            est = ws.slt.llc(post, w, jax.random.key(4), num_chains=2, num_draws=200,
                             num_burnin=200, step_size=1e-4, batch_size=256,
                             progress=False)
            llcs.append(float(est.mean))
        row["llc at members"] = llcs
        rows.append(row)
    cost = {name: float(ws.diagnostics.gradient_cost(r)["total_grad_evals"])
            for name, r in runs.items()}
    result = {"rows": rows, "barriers": assign.barriers.round(2).tolist(),
              "cluster_basin": assign.cluster_basin.tolist(), "seconds": seconds,
              "grad_evals": cost}
    print(json.dumps(result, indent=1))
    names = list(runs)
    lines = ["| basin | " + " | ".join(f"{n} share | {n} test NLL" for n in names)
             + " | LLC at the members in it |",
             "|---|" + "---|---|" * len(names) + "---|"]
    for r in rows:
        cells = []
        for n in names:
            nll = r[f"{n} nll"]
            cells += [f"{r[f'{n} share']:.2f}", "" if nll is None else f"{nll:.4f}"]
        lines.append(f"| {r['basin']} | " + " | ".join(cells) + " | "
                     + ", ".join(f"{x:.1f}" for x in r["llc at members"]) + " |")
    text = (f"## Basins of the digits MLP (`benchmarks/basins_digits.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}. MLP(256, 256), prior "
            f"variance 1/5; HMC and replica exchange ({RUNGS} rungs) {CHAINS} chains x "
            f"{WARMUP} warmup + {SAMPLES} draws, trajectory {TRAJECTORY}; a deep ensemble "
            f"of {MEMBERS}. Basins from all draws pooled (`assign_basins`, "
            f"{args.clusters} clusters, max barrier {args.max_barrier:g}). Gradients: "
            + ", ".join(f"{n} {c:,.0f}" for n, c in cost.items())
            + f". This invocation: {(time.time() - started) / 60:.1f} min.\n\n"
            + "\n".join(lines))
    print(text)
    if args.write:
        write_results(text, section="basins-digits")


if __name__ == "__main__":
    main()
