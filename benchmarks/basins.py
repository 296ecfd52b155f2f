"""Do the samplers weight basins by their mass? Product targets of quartic
factors (`ws.slt.basin_target`) at several barriers: each sampler's pooled
share of each basin against the exact one, its Monte Carlo error, crossings,
the basin diagnostic's verdict, and the cost in gradients.

    python benchmarks/basins.py [--factors 1000] [--barriers 2,16] [--results rows.jsonl]
    python benchmarks/basins.py --samplers "" --results rows.jsonl --write   # the table only

Samplers: HMC with its defaults (dual averaging, trajectory pi/2), full-batch
SGLD (fixed step size, every SGLD_THIN-th step kept), and replica exchange
with HMC moves (`--rungs` temperatures, the prior as reference). Chains start from the prior, so a sampler that never crosses
keeps the shares the chains fell into.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import weightspace as ws
from logdensity import machine, write_results

CHAINS = 4
# Full-batch SGLD: stable below ~1e-2 at a barrier of 16; at a barrier of 2 its
# basin indicator decorrelates over about 5,600 steps, hence the thinning.
SGLD_STEP, SGLD_THIN = 5e-4, 100


def run(sampler: str, barrier: float, factors: int, rungs: int, warmup: int,
        samples: int, trajectory: float, thin: int = 1) -> dict:
    target = ws.slt.basin_target("quartic", num_factors=factors, barrier=barrier)
    init = target.init(jax.random.key(1), CHAINS)
    start = time.perf_counter()
    if sampler == "hmc":
        trace = ws.samplers.hmc(target.logdensity, jax.random.key(2), init=init,
                                num_chains=CHAINS, num_warmup=warmup, num_samples=samples,
                                progress=False)
        extra = {}
    elif sampler == "sgld":
        # One "row" of data and the full log density as its estimate: full-batch SGLD.
        trace = ws.samplers.sgld(lambda q, batch: target.logdensity(q), jax.random.key(2),
                                 data=np.zeros((1, 1), np.float32), init=init,
                                 num_chains=CHAINS, num_warmup=warmup * 10,
                                 num_samples=samples, batch_size=1, step_size=SGLD_STEP,
                                 thin=SGLD_THIN, progress=False)
        extra = {"step_size": SGLD_STEP, "thin": SGLD_THIN}
    else:
        trace = ws.samplers.replica_exchange(
            target.logdensity, jax.random.key(2), init=init, num_chains=CHAINS,
            num_temperatures=rungs, reference=target.logprior, num_warmup=warmup,
            num_samples=samples, trajectory_length=trajectory, thin=thin, progress=False)
        extra = {"rungs": rungs, "thin": thin, "swap_rate_mean": float(trace.info["swap_rate"].mean()),
                 "swap_rate_min": float(trace.info["swap_rate"].min()),
                 "round_trips": trace.info["round_trips"].tolist(),
                 "rungs_for_swap_rate_0.5": trace.info["rungs_for_swap_rate"].tolist()}
    seconds = time.perf_counter() - start
    report = ws.diagnostics.basins(trace, assign=target.assign, names=target.basins,
                                   exact=target.shares)
    cost = ws.diagnostics.gradient_cost(trace)
    return {"sampler": sampler, "barrier": barrier, "factors": factors,
            "warmup": warmup, "samples": samples, "exact_degenerate": float(target.shares[0]),
            "share_degenerate": float(report.pooled[0]), "error": float(report.error[0]),
            "standard_error": float(report.standard_error[0]),
            "crossings": int(report.crossings.sum()), "flagged": report.flagged,
            "no_crossing": report.no_crossing, "untested": report.untested,
            "ess_per_chain": report.ess_per_chain,
            "weighted_by_start": report.weighted_by_start, "verdict": report.verdict,
            "grad_evals": cost["total_grad_evals"], "seconds": seconds, **extra}


VERDICTS = {True: "by start", False: "by mass", None: "too few draws to tell"}


def table(rows: list[dict]) -> str:
    lines = ["| sampler | barrier | warmup + draws x thin | exact share (degenerate) | sampled "
             "| error | MC error "
             "| crossings | effective draws per chain | variables flagged | verdict | gradients "
             "| seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = {"hmc": "HMC", "sgld": f"SGLD (step {SGLD_STEP:g})"}.get(
            r["sampler"], f"replica exchange ({r.get('rungs')} rungs, thin {r.get('thin', 1)})")
        warmup = r["warmup"] * (10 if r["sampler"] == "sgld" else 1)
        lines.append(f"| {name} | {r['barrier']:g} | {warmup:,} + {r['samples']:,} x "
                     f"{r.get('thin', 1)} | {r['exact_degenerate']:.4f} | "
                     f"{r['share_degenerate']:.4f} | {r['error']:+.4f} | "
                     f"{r['standard_error']:.4f} | {r['crossings']:,} | "
                     f"{r['ess_per_chain']:.0f} | {r['flagged']:.0%} | "
                     f"{VERDICTS[r['weighted_by_start']]} | "
                     f"{r['grad_evals']:,.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, default=1000)
    parser.add_argument("--barriers", default="2,16")
    parser.add_argument("--samplers", default="hmc,sgld,replica_exchange")
    parser.add_argument("--rungs", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--thin", type=int, default=1,
                        help="replica exchange's transitions per kept draw")
    parser.add_argument("--trajectory", type=float, default=0.3,
                        help="replica exchange's trajectory length at rung 0")
    parser.add_argument("--results", help="JSON-lines file the rows are appended to")
    parser.add_argument("--write", action="store_true",
                        help="record the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    started = time.time()
    rows = []
    for barrier in map(float, args.barriers.split(",")):
        for sampler in filter(None, args.samplers.split(",")):
            rows.append(run(sampler, barrier, args.factors, args.rungs, args.warmup,
                            args.samples, args.trajectory, args.thin))
            print(json.dumps(rows[-1]), flush=True)
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    if args.results:  # the table holds every row of the file (the last of a case wins)
        by_case = {}
        for line in open(args.results).read().splitlines():
            row = json.loads(line)
            by_case[(row["barrier"], row["sampler"], row.get("thin", 1))] = row
        rows = [by_case[k] for k in sorted(by_case, key=lambda k: (
            k[0], ("hmc", "sgld", "replica_exchange").index(k[1]), k[2]))]
    text = (f"## Basin shares on a target with known masses (`benchmarks/basins.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}. A product of "
            f"{args.factors:,} quartic factors (`ws.slt.basin_target`), {CHAINS} chains "
            f"from the prior; warmup transitions (SGLD: steps) and kept draws per chain "
            f"in each row. This invocation: {(time.time() - started) / 60:.1f} min.\n\n"
            + table(rows))
    print(text)
    if args.write:
        write_results(text, section="basins")


if __name__ == "__main__":
    main()
