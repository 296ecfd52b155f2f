"""SGLD steps per second on the digits MLP(256, 256) posterior, minibatches of
128 rows: our kernel (`weightspace.samplers.sgmcmc.build_sgld_kernel`) against
`blackjax.sgld` on the same minibatch target, with 1 chain and with 4 chains
(vmap), and our `ws.samplers.sgld` driver end to end.

Both kernels get the same minibatches (`samplers/minibatch.py`: without
replacement within an epoch, drawn inside the jitted loop) and the same
unbiased estimate of the log posterior, `post.minibatch_logdensity`; blackjax
gets its gradient as `jax.grad` of that estimate. blackjax's step
delta * g + sqrt(2 delta) xi is ours with delta = eps / 2. One CPU device, in a
child process; compilation excluded (each function is called once first).
Prints a table; with --write, also records it in benchmarks/RESULTS.md.

    python benchmarks/sgmcmc.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from logdensity import machine, one_device_child, write_results

STEP_SIZE = 1e-4
BATCH = 128
SETTINGS = {"full": {"rounds": 9, "steps": 400, "driver_pairs": 5, "draws": (2, 22),
                     "thin": 20},
            "quick": {"rounds": 2, "steps": 20, "driver_pairs": 1, "draws": (1, 3),
                      "thin": 5}}


READING = (
    "Reading the SGLD table: there is no speed target for this benchmark. Our step "
    "does more than blackjax's: it returns the minibatch log density (from "
    "`value_and_grad`, free) and checks that the new state is finite, keeping the old "
    "one and flagging the step divergent if not; the check and the select cost about "
    "6% per step in an A/B run during development. Our noise is one normal draw cut "
    "into leaves (one draw per leaf was about 7% slower on this CPU). What remains of "
    "the gap is not explained; the min-max range of the paired ratios shows how much "
    "this shared machine moves between rounds.")


def measure(settings: dict, cache_dir: str) -> dict:
    import importlib

    import blackjax
    import jax
    import numpy as np

    import weightspace as ws
    from weightspace.samplers import minibatch

    # Every ws.samplers.sgld call jits new closures; a persistent cache turns
    # the later calls' compilation into a load (see benchmarks/hmc.py).
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    sgmcmc = importlib.import_module("weightspace.samplers.sgmcmc")
    data = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP((256, 256), 10), data, prior_variance=0.2)
    num_data, steps = post.num_data, settings["steps"]
    params = post.init(jax.random.key(0))
    chain_params = jax.jit(jax.vmap(post.init))(jax.random.split(jax.random.key(1), 4))

    def batch_of(post, key, t):
        idx = minibatch.batch_indices(key, t, num_data, BATCH)
        return minibatch.take((post.x, post.y), idx)

    def ours_chain(post, position, key):
        step = sgmcmc.build_sgld_kernel(post.minibatch_logdensity, num_data=num_data)
        batch_key, noise_key = jax.random.split(key)

        def body(state, t):
            batch = batch_of(post, batch_key, t)
            state, info = step(jax.random.fold_in(noise_key, t), state, batch, STEP_SIZE,
                               True)
            return state, info.is_divergent
        state, divergent = jax.lax.scan(body, sgmcmc.sgld_init(position), np.arange(steps))
        return state.position, divergent

    def blackjax_chain(post, position, key):
        algorithm = blackjax.sgld(jax.grad(post.minibatch_logdensity))
        batch_key, noise_key = jax.random.split(key)

        def body(position, t):
            batch = batch_of(post, batch_key, t)
            position = algorithm.step(jax.random.fold_in(noise_key, t), position, batch,
                                      STEP_SIZE / 2)
            return position, jax.numpy.zeros((), bool)
        return jax.lax.scan(body, position, np.arange(steps))

    keys = jax.random.split(jax.random.key(2), 4)
    runners = {
        "ours_1": (jax.jit(ours_chain), params, keys[0]),
        "blackjax_1": (jax.jit(blackjax_chain), params, keys[0]),
        "ours_4": (jax.jit(jax.vmap(ours_chain, in_axes=(None, 0, 0))), chain_params, keys),
        "blackjax_4": (jax.jit(jax.vmap(blackjax_chain, in_axes=(None, 0, 0))),
                       chain_params, keys),
    }

    def run(name):
        fn, start, key = runners[name]
        t0 = time.perf_counter()
        position, divergent = jax.block_until_ready(fn(post, start, key))
        seconds = time.perf_counter() - t0
        if np.any(divergent) or not all(np.all(np.isfinite(x))
                                        for x in jax.tree.leaves(position)):
            raise RuntimeError(f"{name}: non-finite positions")
        return steps / seconds  # steps per second (per chain-step count below)

    for name in runners:
        run(name)  # compiles
    names = list(runners)
    rounds = []
    for r in range(settings["rounds"]):
        order = names[r % len(names):] + names[:r % len(names)]
        rounds.append({name: run(name) for name in order})
        print(f"round {r + 1}/{settings['rounds']}: "
              + ", ".join(f"{n} {v:.0f} steps/s" for n, v in rounds[-1].items()),
              file=sys.stderr)

    def driver(num_chains, num_samples):
        t0 = time.perf_counter()
        ws.samplers.sgld(post, jax.random.key(5), num_chains=num_chains,
                         num_samples=num_samples, batch_size=BATCH, step_size=STEP_SIZE,
                         thin=settings["thin"], progress=False)
        return time.perf_counter() - t0

    few, many = settings["draws"]
    for chains in (1, 4):
        driver(chains, few)
    driver_rounds = []
    for r in range(settings["driver_pairs"]):
        row = {}
        for chains in (1, 4):
            extra = driver(chains, many) - driver(chains, few)
            row[f"driver_{chains}"] = (many - few) * settings["thin"] / extra
        driver_rounds.append(row)
        print(f"driver pair {r + 1}: " + ", ".join(f"{n} {v:.0f} steps/s"
                                                  for n, v in row.items()), file=sys.stderr)
    return {"blackjax": blackjax.__version__, "num_weights": post.num_params(params),
            "num_data": num_data, "rounds": rounds, "driver_rounds": driver_rounds}


def _summary(values, digits=0):
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def table(result: dict) -> str:
    r, d = result["rounds"], result["driver_rounds"]

    def col(rounds, name):
        return [x[name] for x in rounds]

    def ratio(rounds, num, den):
        return [x[num] / x[den] for x in rounds]

    rows = [
        ("weightspace SGLD kernel, 1 chain", col(r, "ours_1"),
         ratio(r, "ours_1", "blackjax_1"), "ours / blackjax (speed)"),
        ("blackjax `sgld`, 1 chain", col(r, "blackjax_1"), None, ""),
        ("weightspace SGLD kernel, 4 chains (vmap)", col(r, "ours_4"),
         ratio(r, "ours_4", "blackjax_4"), "ours / blackjax (speed)"),
        ("blackjax `sgld`, 4 chains (vmap)", col(r, "blackjax_4"), None, ""),
        ("`ws.samplers.sgld`, 1 chain", col(d, "driver_1"), None, ""),
        ("`ws.samplers.sgld`, 4 chains", col(d, "driver_4"), None, ""),
    ]
    lines = ["| case | steps per second (chain steps: 4 chains count once), median "
             "(min-max) | ratio, median (min-max) | ratio is |", "|---|---|---|---|"]
    for case, values, ratios, what in rows:
        lines.append(f"| {case} | {_summary(values)} | "
                     f"{'' if ratios is None else _summary(ratios, 2)} | {what} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--write", action="store_true",
                        help="record the table in benchmarks/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    if args.child:
        with tempfile.TemporaryDirectory() as cache_dir:
            print(json.dumps(measure(settings, cache_dir)))
        return
    t0 = time.perf_counter()
    result = one_device_child(__file__, args.quick)
    minutes = (time.perf_counter() - t0) / 60
    s = settings
    text = (f"## SGLD steps per second (`benchmarks/sgmcmc.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}, blackjax "
            f"{result['blackjax']}; 1 device. MLP(256, 256) posterior on digits "
            f"({result['num_weights']:,} weights, {result['num_data']:,} rows), minibatches "
            f"of {BATCH} rows drawn inside the jitted loop for both libraries, step size "
            f"{STEP_SIZE:g}. Kernel rows: {s['rounds']} interleaved rounds of "
            f"{s['steps']} steps per call in a jitted `lax.scan`, after a compiling call; "
            f"a 4-chain step advances all 4 chains; ratios are paired within a round. "
            f"Driver rows: {s['driver_pairs']} pairs of runs with {s['draws'][0]} and "
            f"{s['draws'][1]} draws, thin {s['thin']}: the extra steps over the extra "
            f"time (compilation cancels out). Whole script: {minutes:.1f} min.\n\n"
            + table(result) + "\n\n" + READING)
    print(text)
    if args.write:
        write_results(text, "sgmcmc")


if __name__ == "__main__":
    main()
