"""Effective samples per gradient on the digits MLP(256, 256) posterior: every
sampler gets the same budget of full-batch gradients per chain, all costs
counted (the start, tuning or warmup, a MILE ensemble's training, sampling).

Samplers: weightspace HMC with the quick preset's settings (from the network's
initializer and from deep-ensemble members), MCLMC, MAMS, and MILE (MCLMC or
MAMS from deep-ensemble members), against blackjax's MCLMC, MAMS and NUTS with
their documented defaults (benchmarks/efficiency_references.py). Per sampler:
median bulk ESS per 1,000 gradients of the test predictions and of the
permutation-aligned weights, the fraction of R-hat below 1.1 (predictions, raw
and aligned weights), the ensemble's test accuracy and NLL, gradients per
second, and all-gathers in the compiled step under weights sharded over 4
devices (ours against blackjax's). Each sampler runs in a child process on one
CPU device; its time includes compilation.

    python benchmarks/efficiency.py [--budget 10000] [--only NAME,...] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logdensity import machine, write_results

CASES = ("hmc", "hmc_from_ensemble", "mclmc", "mams", "mile_mclmc", "mile_mams",
         "blackjax_mclmc", "blackjax_mams", "blackjax_nuts", "mclmc_diagonal",
         "mams_diagonal")
LABELS = {"hmc": "weightspace HMC, quick settings", "hmc_from_ensemble":
          "weightspace HMC, quick settings, from ensemble members",
          "mclmc": "weightspace MCLMC", "mams": "weightspace MAMS",
          "mile_mclmc": "weightspace MILE (MCLMC from ensemble members)",
          "mile_mams": "weightspace MILE (MAMS from ensemble members)",
          "blackjax_mclmc": "blackjax MCLMC, defaults", "blackjax_mams":
          "blackjax MAMS, defaults (tuner's num_steps fitted to the budget)",
          "blackjax_nuts": "blackjax NUTS, window adaptation stopped at half the budget"}
CHAINS = 3
DRAWS = 100          # kept per chain by the microcanonical samplers
MAMS_ADJUSTED = 20   # MAMS's dual-averaging transitions
ENSEMBLE = {"num_epochs": 30, "batch_size": 80, "learning_rate": 0.05}  # the quick preset's SGD
HMC_QUICK = {"num_warmup": 30, "num_samples": 60, "trajectory_length": 0.2,
             "max_num_steps": 400}  # the quick preset's HMC (about 10,000 gradients a chain)


def _setup():
    import weightspace as ws

    data = ws.data.load("digits")
    network = ws.models.MLP((256, 256), 10)
    post = ws.models.posterior(network, data, prior_variance=1 / 5)
    return ws, data, network, post


def _members(ws, post, key):
    members = ws.samplers.deep_ensemble(post, key, CHAINS, progress=False, **ENSEMBLE)
    import jax
    import numpy as np
    starts = jax.tree.map(lambda x: np.asarray(x[:, -1]), members.positions)
    cost = np.asarray(members.info["warmup_grad_evals"]) + np.asarray(
        members.stats["grad_evals"]).sum(axis=1)
    return starts, cost


def _microcanonical(ws, post, data, key, sampler, budget, run_dir, init=None,
                    spent=None, preconditioning="none"):
    """MCLMC: warmup 20% of the budget's steps, the rest sampled into DRAWS.
    MAMS: MCLMC's warmup, then MAMS_ADJUSTED transitions of dual averaging; its
    cost per transition is known only after tuning, so the run is made in two
    calls on one run directory: warmup and one draw, then more
    draws (a run may grow; every transition is kept) to spend the rest."""
    import numpy as np

    run = getattr(ws.samplers, sampler)
    spent = np.zeros(CHAINS) if spent is None else spent
    steps = int((budget - spent.max()) // 2)  # two gradients per integrator step
    common = dict(init=init, num_chains=CHAINS, eval_x=data.x_test, run_dir=run_dir,
                  preconditioning=preconditioning, progress=False)
    if sampler == "mclmc":
        warmup = steps // 5
        thin = max(1, (steps - warmup - 20) // DRAWS)
        return run(post, key, num_warmup=warmup, num_samples=DRAWS, thin=thin, **common)
    # MAMS: MCLMC's warmup (as above), then dual averaging over MAMS_ADJUSTED
    # transitions of the fitted length (tens of steps each).
    warmup = steps // 5 + MAMS_ADJUSTED
    common["num_adjusted_warmup"] = MAMS_ADJUSTED
    trace = run(post, key, num_warmup=warmup, num_samples=1, **common)
    used = spent + np.asarray(trace.info["warmup_grad_evals"]) + np.asarray(
        trace.stats["grad_evals"]).sum(axis=1)
    per_transition = 2 * float(np.mean(trace.info["mean_num_steps"]))
    transitions = max(20, int((budget - used.max()) // per_transition))
    return run(post, key, num_warmup=warmup, num_samples=transitions, **common)


def run_case(name: str, budget: int, out: Path) -> dict:
    import jax
    import numpy as np

    ws, data, network, post = _setup()
    key = jax.random.key(0)
    key_members, key_chains = jax.random.split(key)
    start = time.perf_counter()
    extra = {}
    if name.startswith("blackjax"):
        import efficiency_references as refs

        result = getattr(refs, name)(post, key_chains, num_chains=CHAINS, budget=budget,
                                     eval_x=data.x_test, thin_to=DRAWS)
        seconds = result["seconds"]
        draws = result["predictions"].shape[1]
        trace = ws.samplers.Trace(
            positions=result["positions"], predictions=result["predictions"],
            stats={"grad_evals": np.repeat(result["sampling_grad_evals"][:, None] / draws,
                                           draws, axis=1),
                   "logdensity": result["logdensity"]},
            info={"warmup_grad_evals": result["warmup_grad_evals"]})
        extra["settings"] = result["settings"]
    else:
        init, spent = None, None
        if name in ("hmc_from_ensemble", "mile_mclmc", "mile_mams"):
            init, spent = _members(ws, post, key_members)
        if name.startswith("hmc"):
            trace = ws.samplers.hmc(post, key_chains, init=init, num_chains=CHAINS,
                                    eval_x=data.x_test, progress=False, **HMC_QUICK)
        else:
            sampler = name.replace("mile_", "").replace("_diagonal", "")
            trace = _microcanonical(ws, post, data, key_chains, sampler, budget,
                                    out / name, init=init, spent=spent,
                                    preconditioning="diagonal" if name.endswith("diagonal")
                                    else "none")
            extra["settings"] = {k: np.asarray(v).tolist() for k, v in trace.info.items()
                                 if k in ("step_size", "L", "mean_num_steps")}
        seconds = time.perf_counter() - start
        if spent is not None:
            trace.info["warmup_grad_evals"] = (
                np.asarray(trace.info["warmup_grad_evals"], np.float64) + spent)
    summary = ws.diagnostics.summary(trace, network=network)
    ess = {r["space"]: r["per_1000_grad_evals"][0.5] for r in summary.ess
           if r["kind"] == "bulk"}
    below = {r["space"]: r["fraction_below"][1.1] for r in summary.rhat}
    probs = np.asarray(trace.predictions, np.float64).reshape(-1, *trace.predictions.shape[2:])
    mean = probs.mean(axis=0)
    y = np.asarray(data.y_test)
    logdensity = np.asarray(trace.stats["logdensity"], np.float64)
    return {"case": name, "label": LABELS[name], "seconds": seconds,
            "grad_evals": summary.cost["total_grad_evals"],
            "grad_evals_per_chain": summary.cost["total_grad_evals"] / CHAINS,
            "ess_per_1000_predictions": ess["predictions"],
            "ess_per_1000_aligned_weights": ess["weights (aligned)"],
            "rhat_below_1.1_predictions": below["predictions"],
            "rhat_below_1.1_weights": below["weights"],
            "rhat_below_1.1_aligned_weights": below["weights (aligned)"],
            "accuracy": float(np.mean(mean.argmax(-1) == y)),
            "nll": float(-np.mean(np.log(mean[np.arange(len(y)), y] + 1e-12))),
            "logdensity_first_last": [logdensity[:, :5].mean(axis=1).tolist(),
                                      logdensity[:, -5:].mean(axis=1).tolist()],
            "num_draws": int(trace.num_draws), **extra}


def all_gathers() -> dict:
    """All-gathers in one compiled transition under weights sharded over 4
    devices (the MLP's kernels split along their output axis): ours and blackjax's."""
    import blackjax
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from weightspace.samplers import mams as _  # noqa: F401
    from weightspace.samplers.mams import build_kernel as mams_kernel, init as mams_init
    from weightspace.samplers.mclmc import build_kernel as mclmc_kernel, init as mclmc_init

    ws, data, network, post = _setup()
    mesh = jax.make_mesh((4,), ("w",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:4])
    params = post.init(jax.random.key(0))

    def place(x):
        spec = PartitionSpec(*([None] * (x.ndim - 1)), "w") if x.shape[-1] % 4 == 0 \
            else PartitionSpec()
        return jax.device_put(x, NamedSharding(mesh, spec))

    params = jax.tree.map(place, params)
    logdensity = post.logdensity
    key = jax.random.key(1)

    def count(fn, *args):
        hlo = jax.jit(fn).lower(*args).compile().as_text()
        return sum(line.count("all-gather(") + line.count("all-gather-start(")
                   for line in hlo.splitlines())

    ours_mclmc = mclmc_kernel(logdensity)
    ours_mams = mams_kernel(logdensity)
    bj_mclmc = blackjax.mcmc.mclmc.build_kernel()
    bj_mams = blackjax.mcmc.adjusted_mclmc_dynamic.build_kernel(
        integration_steps_fn=blackjax.mcmc.adjusted_mclmc_dynamic
        .make_random_trajectory_length_fn(True))
    bj_hmc = blackjax.hmc(logdensity, 1e-3, jnp.ones(sum(x.size for x in
                                                         jax.tree.leaves(params))), 5)
    return {
        # what the network's forward and backward pass need (activations
        # gathered between layers): every sampler step holds at least these
        "log density and gradient alone": count(jax.value_and_grad(logdensity), params),
        "weightspace mclmc": count(lambda k, s: ours_mclmc(k, s, 0.1, 3.0), key,
                                   mclmc_init(params, logdensity, key)),
        "weightspace mams": count(lambda k, s: ours_mams(k, s, 0.1, 5), key,
                                  mams_init(params, logdensity)),
        "blackjax mclmc": count(lambda k, s: bj_mclmc(k, s, logdensity, 1.0, 3.0, 0.1), key,
                                blackjax.mcmc.mclmc.init(params, logdensity, key)),
        "blackjax mams": count(lambda k, s: bj_mams(k, s, logdensity, 0.1, jnp.inf, 1.0,
                                                    (5.0,)), key,
                               blackjax.mcmc.adjusted_mclmc_dynamic.init(params, logdensity,
                                                                         key)),
        "blackjax hmc": count(bj_hmc.step, key, bj_hmc.init(params)),
    }


def table(rows: list[dict], reference: dict | None) -> str:
    lines = ["| sampler | gradients per chain | ESS / 1k gradients, test predictions | "
             "ESS / 1k gradients, aligned weights | R-hat < 1.1: predictions | raw weights "
             "| aligned weights | accuracy | NLL | gradients per second | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['grad_evals_per_chain']:,.0f} | "
            f"{r['ess_per_1000_predictions']:.2f} | {r['ess_per_1000_aligned_weights']:.2f} | "
            f"{r['rhat_below_1.1_predictions']:.0%} | {r['rhat_below_1.1_weights']:.0%} | "
            f"{r['rhat_below_1.1_aligned_weights']:.0%} | {r['accuracy']:.4f} | "
            f"{r['nll']:.4f} | {r['grad_evals'] / r['seconds']:.0f} | {r['seconds']:.0f} |")
    if reference is not None:
        lines.append("")
        lines.append("Ratios to weightspace HMC (quick settings), ESS per 1,000 gradients: "
                     + "; ".join(
                         f"{r['case']} {r['ess_per_1000_predictions'] / reference['ess_per_1000_predictions']:.2f}x "
                         f"(predictions), {r['ess_per_1000_aligned_weights'] / reference['ess_per_1000_aligned_weights']:.2f}x "
                         f"(aligned weights)" for r in rows if r is not reference))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=10_000,
                        help="full-batch gradients per chain")
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--write", action="store_true",
                        help="record the table in benchmarks/RESULTS.md")
    parser.add_argument("--results", help="a JSON-lines file: each measured row is "
                        "appended to it, and the table holds every case in it (the last row "
                        "of a case wins), so cases can be measured in several invocations")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "all_gathers":
            print(json.dumps(all_gathers()))
        else:
            print(json.dumps(run_case(args.child, args.budget, Path(args.out))))
        return
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in filter(None, args.only.split(",")):
            env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
            res = subprocess.run([sys.executable, __file__, "--child", name, "--budget",
                                  str(args.budget), "--out", out], env=env,
                                 stdout=subprocess.PIPE, text=True, check=False)
            if res.returncode != 0:
                print(f"{name} failed (its error is above)", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    if args.results:
        by_case = {}
        for line in Path(args.results).read_text().splitlines():
            row = json.loads(line)
            by_case[row["case"]] = row
        rows = [by_case[c] for c in CASES if c in by_case]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
    gathers = json.loads(subprocess.run(
        [sys.executable, __file__, "--child", "all_gathers"], env=env,
        stdout=subprocess.PIPE, text=True, check=True).stdout.strip().splitlines()[-1])
    reference = next((r for r in rows if r["case"] == "hmc"), None)
    text = (f"## Effective samples per gradient (`benchmarks/efficiency.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}; 1 device per sampler, in "
            f"its own process (time includes compilation). MLP(256, 256) posterior on "
            f"digits (85,002 weights, 1,437 rows, prior variance 1/5), {CHAINS} chains, "
            f"a budget of {args.budget:,} full-batch gradients per chain, every cost "
            f"counted. This invocation: {(time.time() - started) / 60:.1f} min.\n\n"
            + table(rows, reference)
            + "\n\nAll-gathers in one compiled transition with the MLP's kernels sharded "
              "over 4 devices along their output axis (the log density's own are those of "
              "its activations between layers): "
            + ", ".join(f"{k} {v}" for k, v in gathers.items()) + ".")
    print(text)
    if args.write:
        write_results(text, section="efficiency")


if __name__ == "__main__":
    main()
