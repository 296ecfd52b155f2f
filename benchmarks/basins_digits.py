"""Basins of the digits MLP's posterior: which basins do HMC, replica exchange
and a deep ensemble find, how do they weight them, and how do the basins
differ in local learning coefficient and test NLL?

    python benchmarks/basins_digits.py [--out runs/basins-digits] [--results rows.jsonl]

Stages (each timed; the samplers write run directories under --out, so a
killed run resumes):
1. HMC (`--chains` chains from the initializer, dual averaging, the default
   trajectory (pi/2) sqrt(prior variance)).
2. Replica exchange with HMC moves (`--rungs` temperatures, the prior as the
   hottest rung, the ladder adapted during warmup).
3. A deep ensemble (`--members` SGD runs, the quick preset's SGD settings).
4. Basins: `ws.diagnostics.assign_basins` on the pooled draws of all three
   (permutation alignment, k-means, straight-path loss barriers), then each
   source's shares; for the samplers also `ws.diagnostics.basins` (crossings,
   the verdict) and R-hat of the test predictions (function space) and of the
   aligned weights.
   The members alone are also clustered, one cluster each, to see whether
   the SGD minima are separated by barriers at their own level.
5. Per basin: the test NLL and accuracy of the ensemble predictive of its
   sampler draws, and its LLC (`ws.slt.llc`, the quick preset's settings) at
   the ensemble members in it; a basin that no member reached gets its LLC at
   its representative draw after full-batch descent (`polished`), kept only if
   descent stayed in the basin.
6. Minima: `--quench` evenly spaced draws of every chain descended by
   full-batch Adam, each minimum (and each member) its own cluster, merged
   only where a straight path shows no barrier: how many minima the draws
   reach, and whether any two chains reach the same one.

The network is small (`--hidden 16`: 1,210 weights) because replica
exchange needs more rungs as the dimension grows: with 8 rungs on this
network, swaps between the colder rungs were never accepted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import weightspace as ws
from logdensity import machine

PRIOR_VARIANCE = 1 / 5        # Izmailov et al. 2021, Table 3
# The quick preset's SGD and LLC settings (experiments/presets.py).
SGD = dict(num_epochs=30, batch_size=80, learning_rate=0.05)
LLC = dict(num_chains=2, num_draws=200, num_burnin=200, step_size=1e-4, batch_size=256)
POLISH_EPOCHS = 200


class Clock:
    """Seconds per stage, printed as each ends."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[{name}] {self.seconds[name]:.1f} s", flush=True)
        return out


def _pool(*position_sets):
    """Positions of several runs, each (chain, draw, ...), as one (1, total, ...)."""
    flat = [jax.tree.map(lambda a: np.asarray(a).reshape((-1,) + a.shape[2:]), p)
            for p in position_sets]
    return jax.tree.map(lambda *a: np.concatenate(a)[None], *flat)


def _shares(labels, k):
    labels = np.asarray(labels).ravel()
    return np.bincount(labels, minlength=k)[:k] / labels.size


def _test_metrics(trace, labels):
    mean = np.asarray(trace.predictions).reshape((-1,) + trace.predictions.shape[2:]).mean(0)
    return {"test_nll": ws.diagnostics.nll(mean, labels),
            "test_accuracy": ws.diagnostics.accuracy(mean, labels)}


def _sampler_row(name, trace, basin_labels, names, aligned, labels):
    report = ws.diagnostics.basins(basin_labels, names=names)
    function_rhat = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(trace.predictions))
    weight_rhat = ws.diagnostics.rhat_summary(ws.diagnostics.rhat(aligned))
    grads = float(np.sum(trace.stats["grad_evals"]) + np.sum(trace.info["warmup_grad_evals"]))
    row = {"source": name, "pooled": report.pooled.tolist(),
           "standard_error": report.standard_error.tolist(),
           "shares_per_chain": report.shares.tolist(),
           "crossings": report.crossings.tolist(),
           "weighted_by_start": report.weighted_by_start, "verdict": report.verdict,
           "function_rhat_below_1.1": function_rhat["fraction_below"][1.1],
           "weight_rhat_below_1.1": weight_rhat["fraction_below"][1.1],
           "grad_evals": grads, **_test_metrics(trace, labels)}
    if "swap_rate" in trace.info:
        row["swap_rate"] = np.asarray(trace.info["swap_rate"]).mean(axis=0).round(3).tolist()
        row["round_trips"] = np.asarray(trace.info["round_trips"]).tolist()
    return row


def _descend(post, positions, key):
    """Full-batch descent (Adam) from each position (leaves (m, ...)) to the
    bottom of its basin of attraction; leaves (m, ...)."""
    trace = ws.samplers.sgd(post, key, init=positions, num_chains=jax.tree.leaves(
        positions)[0].shape[0], num_epochs=POLISH_EPOCHS, batch_size=post.num_data,
        learning_rate=1e-2, optimizer="adam", progress=False)
    return jax.tree.map(lambda a: a[:, 0], trace.positions)


def _polish(post, position, key):
    return jax.tree.map(lambda a: a[0], _descend(
        post, jax.tree.map(lambda a: jnp.asarray(a)[None], position), key))


def _quench(post, traces, members, per_chain, key):
    """Minima level: descend from `per_chain` evenly spaced draws of every
    chain, then treat every minimum (and every ensemble member) as its own
    cluster and merge those joined by a straight path without a barrier.
    Returns, per source, the minima basins of its draws (chain, per_chain)."""
    picked = {}
    for name, t in traces.items():
        s = t.positions
        draws = jax.tree.leaves(s)[0].shape[1]
        idx = np.linspace(0, draws - 1, per_chain).round().astype(int)
        picked[name] = jax.tree.map(lambda a: np.asarray(a)[:, idx], s)
    flat = _pool(*picked.values())
    minima = _descend(post, jax.tree.map(lambda a: jnp.asarray(a[0]), flat), key)
    everything = jax.tree.map(lambda a, m: np.concatenate([np.asarray(a), np.asarray(m)[:, 0]])[None],
                              minima, members)
    count = jax.tree.leaves(everything)[0].shape[1]
    assign = ws.diagnostics.assign_basins(everything, post.logdensity, network=post.network,
                                          max_clusters=count)
    labels = assign(everything)[0]
    out, start = {}, 0
    for name, p in picked.items():
        c = jax.tree.leaves(p)[0].shape[0]
        out[name] = labels[start:start + c * per_chain].reshape(c, per_chain)
        start += c * per_chain
    out["deep_ensemble"] = labels[start:][:, None]
    log_density = np.asarray(jax.vmap(post.logdensity)(jax.tree.map(lambda a: a[0],
                                                                    everything)))
    return out, assign, log_density


def _basin_rows(post, ds, assign, sources, members, member_labels, key):
    """Test metrics of each basin's sampler draws; LLC at its members (or at
    its polished representative)."""
    rows = []
    for b, name in enumerate(assign.names):
        probs = np.concatenate([p[np.asarray(lab) == b] for p, lab in sources])
        row = {"basin": name, "sampler_draws": int(len(probs))}
        if len(probs):
            mean = probs.mean(axis=0)
            row["test_nll"] = ws.diagnostics.nll(mean, ds.y_test)
            row["test_accuracy"] = ws.diagnostics.accuracy(mean, ds.y_test)
        at = [jax.tree.map(lambda a: a[m, 0], members) for m in np.flatnonzero(member_labels == b)]
        row["llc_at"] = "members" if at else "polished"
        if not at:
            rep = int(np.flatnonzero(assign.cluster_basin == b)[0])
            polished = _polish(post, assign.representative(rep), key)
            stays = int(assign(jax.tree.map(lambda a: a[None, None], polished))[0, 0]) == b
            row["polished_stays_in_basin"] = stays
            at = [polished] if stays else []
        estimates = [ws.slt.llc(post, w, jax.random.fold_in(key, i), progress=False, **LLC)
                     for i, w in enumerate(at)]
        row["llc"] = [float(e.mean) for e in estimates]
        row["llc_std_across_chains"] = [float(e.std) for e in estimates]
        row["llc_flags"] = [list(e.flags) for e in estimates]
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--rungs", type=int, default=32)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--quench", type=int, default=8, help="draws per chain descended to "
                   "their minimum")
    p.add_argument("--out", type=Path, default=Path("runs/basins-digits"))
    p.add_argument("--results", type=Path, default=None)
    args = p.parse_args()
    clock = Clock()
    ds = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP((args.hidden,), 10), ds,
                               prior_variance=PRIOR_VARIANCE)
    common = dict(num_chains=args.chains, num_samples=args.samples, num_warmup=args.warmup,
                  eval_x=ds.x_test, progress=False)
    hmc = clock("hmc", ws.samplers.hmc, post, jax.random.key(1), run_dir=args.out / "hmc",
                **common)
    re = clock("replica_exchange", ws.samplers.replica_exchange, post, jax.random.key(2),
               num_temperatures=args.rungs, run_dir=args.out / "replica_exchange", **common)
    ens = clock("deep_ensemble", ws.samplers.deep_ensemble, post, jax.random.key(3),
                args.members, eval_x=ds.x_test, run_dir=args.out / "deep_ensemble",
                progress=False, **SGD)

    pooled = _pool(hmc.positions, re.positions, ens.positions)
    assign = clock("assign_basins", ws.diagnostics.assign_basins, pooled, post.logdensity,
                   network=post.network)
    k = len(assign.names)
    # The members alone, one cluster each: are the SGD minima separated by
    # barriers at their own level (far above the samplers' typical set)?
    minima = clock("assign_basins members", ws.diagnostics.assign_basins, ens.positions,
                   post.logdensity, network=post.network, max_clusters=args.members)
    labels = {name: assign(t.positions) for name, t in
              (("hmc", hmc), ("replica_exchange", re), ("deep_ensemble", ens))}
    align = lambda t: ws.diagnostics.align_permutations(t.positions, post.network)
    rows = [clock(f"report {name}", _sampler_row, name, t, labels[name], assign.names,
                  align(t), ds.y_test)
            for name, t in (("hmc", hmc), ("replica_exchange", re))]
    member_labels = labels["deep_ensemble"][:, 0]
    rows.append({"source": "deep_ensemble", "pooled": _shares(member_labels, k).tolist(),
                 "member_basins": member_labels.tolist(), **_test_metrics(ens, ds.y_test),
                 "member_test_nll": [ws.diagnostics.nll(np.asarray(p[0]), ds.y_test)
                                     for p in ens.predictions],
                 "grad_evals": float(np.sum(ens.stats["grad_evals"]) + np.sum(ens.info["warmup_grad_evals"]))})
    sources = [(np.asarray(t.predictions).reshape((-1,) + t.predictions.shape[2:]),
                np.asarray(labels[name]).ravel())
               for name, t in (("hmc", hmc), ("replica_exchange", re))]
    basin_rows = clock("per-basin LLC and test metrics", _basin_rows, post, ds, assign,
                       sources, ens.positions, member_labels, jax.random.key(4))
    quenched, quench_assign, quench_lp = clock(
        "quench", _quench, post, {"hmc": hmc, "replica_exchange": re}, ens.positions,
        args.quench, jax.random.key(5))
    chains_of = {}                              # minima basin -> chains that reached it
    for name, v in quenched.items():
        for c, row in enumerate(v.tolist()):
            for b in row:
                chains_of.setdefault(b, set()).add((name, c))
    minima_level = {
        "per_chain": args.quench, "basins": len(quench_assign.names),
        "labels": {name: v.tolist() for name, v in quenched.items()},
        "distinct_per_chain": {name: [len(set(row)) for row in v.tolist()]
                               for name, v in quenched.items()},
        "reached_by_several_chains": sum(len(c) > 1 for c in chains_of.values()),
        "log_density_of_minima": [float(np.min(quench_lp)), float(np.max(quench_lp))],
        "median_barrier": float(np.median(quench_assign.barriers[np.triu_indices(
            len(quench_assign.barriers), 1)]))}
    result = {"settings": vars(args) | {"out": str(args.out), "results": str(args.results)},
              "num_weights": post.num_params(post.init(jax.random.key(0))),
              "basins": list(assign.names), "barriers": assign.barriers.round(2).tolist(),
              "cluster_basin": assign.cluster_basin.tolist(),
              "cluster_log_density": assign.log_density.round(1).tolist(),
              "member_basins_alone": minima(ens.positions)[:, 0].tolist(),
              "member_barriers": minima.barriers.round(1).tolist(),
              "member_log_density": minima.log_density.round(1).tolist(), "sources": rows,
              "per_basin": basin_rows, "minima_level": minima_level, "seconds": clock.seconds, "machine": machine()}
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.results:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
