"""Time full-batch HMC per leapfrog step on the digits MLP(256, 256) posterior.

Our kernel (`weightspace.samplers.hmc.build_kernel`) against one bare jitted
value_and_grad of the same log-density (and the same gradients chained in one
jitted loop), against blackjax.hmc and numpyro's HMC kernel, and our
`ws.samplers.hmc` driver with 4 chains against 1 chain.
Step size 1e-4 and 50 leapfrog steps per trajectory everywhere; one CPU
device, in a child process (JAX fixes the device count at start-up). Each
library gets the posterior as an argument of the jitted loop (not a closure:
that would bake the data into the program). Compilation is excluded: every
function is called once before timing. Prints a table; with --write, also
records it in benchmarks/RESULTS.md.

    python benchmarks/hmc.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from logdensity import RESULTS, machine, one_device_child, write_results

STEP_SIZE = 1e-4
NUM_STEPS = 50  # leapfrog steps per trajectory

# rounds: interleaved repeats of the kernel-level cases; transitions: HMC
# transitions per timed call; driver_pairs: repeats of the driver's
# difference measurement, between num_samples=draws[chains][0] and [1].
SETTINGS = {"full": {"rounds": 9, "transitions": 4, "driver_pairs": 5,
                     "draws": {1: (2, 22), 4: (2, 12)}},
            "quick": {"rounds": 3, "transitions": 1, "driver_pairs": 1,
                      "draws": {1: (1, 3), 4: (1, 2)}}}


def measure(settings: dict, cache_dir: str) -> dict:
    """Runs inside a child process whose device count is already set."""
    import importlib

    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    from numpyro.infer.hmc import hmc as numpyro_hmc

    import weightspace as ws

    # Every ws.samplers.hmc call builds and jits new closures; with a
    # persistent cache the later calls load the executable instead of
    # compiling it again for seconds (a noisy few seconds on this machine).
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    kernel = importlib.import_module("weightspace.samplers.hmc")
    post = ws.models.posterior(ws.models.MLP((256, 256), 10), ws.data.load("digits"),
                               prior_variance=0.2)
    params = post.init(jax.random.key(0))
    num_weights = post.num_params(params)
    transitions = settings["transitions"]
    keys = jax.random.split(jax.random.key(1), transitions)
    chain_keys = jax.random.split(jax.random.key(2), (transitions, 4))
    chain_params = jax.jit(jax.vmap(post.init))(jax.random.split(jax.random.key(3), 4))

    # Each runner: (post, state, keys) -> (state, leapfrog steps per transition),
    # `transitions` transitions of one chain in a lax.scan.
    def ours(post, state, keys):
        step = kernel.build_kernel(post.logdensity)

        def body(s, k):
            s, info = step(k, s, STEP_SIZE, NUM_STEPS)
            return s, info.num_steps
        return jax.lax.scan(body, state, keys)

    def ours_4_chains(post, states, keys):
        step = kernel.build_kernel(post.logdensity)

        def body(s, k):
            s, info = jax.vmap(lambda k, s: step(k, s, STEP_SIZE, NUM_STEPS))(k, s)
            return s, info.num_steps
        return jax.lax.scan(body, states, keys)

    def with_blackjax(post, state, keys):
        algorithm = blackjax.hmc(post.logdensity, STEP_SIZE,
                                 inverse_mass_matrix=jnp.ones(num_weights),
                                 num_integration_steps=NUM_STEPS)

        def body(s, k):
            s, info = algorithm.step(k, s)
            return s, jnp.asarray(info.num_integration_steps)
        return jax.lax.scan(body, state, keys)

    # potential_fn_gen takes the posterior from model_args, so it stays an
    # argument of the jitted loop. trajectory_length=None: with a length,
    # numpyro replaces the step size by length / num_steps.
    numpyro_init, numpyro_sample = numpyro_hmc(
        potential_fn_gen=lambda post: lambda q: -post.logdensity(q), algo="HMC")

    def with_numpyro(post, state, keys):
        def body(s, _):
            s = numpyro_sample(s, model_args=(post,))
            return s, s.num_steps
        return jax.lax.scan(body, state, keys)

    starts = {
        "ours": jax.jit(lambda post, q: kernel.init(q, post.logdensity))(post, params),
        "ours_4_chains": jax.jit(lambda post, q: jax.vmap(
            lambda q: kernel.init(q, post.logdensity))(q))(post, chain_params),
        "blackjax": jax.jit(lambda post, q: blackjax.mcmc.hmc.init(q, post.logdensity))(
            post, params),
        "numpyro": jax.jit(lambda post, q: numpyro_init(
            q, num_warmup=0, step_size=STEP_SIZE, adapt_step_size=False,
            adapt_mass_matrix=False, num_steps=NUM_STEPS, trajectory_length=None,
            model_args=(post,), rng_key=jax.random.key(4)))(post, params),
    }
    runners = {"ours": (jax.jit(ours), keys), "ours_4_chains": (jax.jit(ours_4_chains),
                                                               chain_keys),
               "blackjax": (jax.jit(with_blackjax), keys),
               "numpyro": (jax.jit(with_numpyro), keys)}
    bare = jax.jit(lambda post, q: post.logdensity_and_grad(q))
    # Leapfrog steps per timed call, per chain.
    per_call = transitions * NUM_STEPS

    @jax.jit
    def looped(post, q, scale):
        # per_call gradients in one program; feeding each back (scale = 0 at
        # run time, unknown to the compiler) keeps them from being merged.
        def body(_, q):
            _, g = post.logdensity_and_grad(q)
            return jax.tree.map(lambda x, gx: x + scale * gx, q, g)
        return jax.lax.fori_loop(0, per_call, body, q)

    def run(name):
        fn, k = runners[name]
        t0 = time.perf_counter()
        _, steps = jax.block_until_ready(fn(post, starts[name], k))
        seconds = time.perf_counter() - t0
        if not np.all(np.asarray(steps) == NUM_STEPS):
            raise RuntimeError(f"{name}: leapfrog steps {np.asarray(steps)}, "
                               f"expected {NUM_STEPS}")
        return seconds / per_call / (4 if name == "ours_4_chains" else 1)

    def run_bare():
        # As many blocked calls as a kernel call has steps: the same exposure
        # to the machine's noise.
        t0 = time.perf_counter()
        for _ in range(per_call):
            jax.block_until_ready(bare(post, params))
        return (time.perf_counter() - t0) / per_call

    def run_looped():
        t0 = time.perf_counter()
        jax.block_until_ready(looped(post, params, 0.0))
        return (time.perf_counter() - t0) / per_call

    cases = {"bare": run_bare, "looped": run_looped,
             **{name: (lambda n=name: run(n)) for name in runners}}
    for case in cases.values():  # compiles
        case()
    names = list(cases)
    kernel_rounds = []
    for r in range(settings["rounds"]):
        order = names[r % len(names):] + names[:r % len(names)]
        kernel_rounds.append({name: cases[name]() for name in order})
        print(f"kernel round {r + 1}/{settings['rounds']}: "
              + ", ".join(f"{n} {1e3 * s:.3f} ms" for n, s in kernel_rounds[-1].items()),
              file=sys.stderr)

    def driver(num_chains, num_samples):
        t0 = time.perf_counter()
        trace = ws.samplers.hmc(post, jax.random.key(5), num_chains=num_chains,
                                num_samples=num_samples, step_size=STEP_SIZE,
                                trajectory_length=(NUM_STEPS - 0.5) * STEP_SIZE,
                                warmup="fixed", progress=False)
        seconds = time.perf_counter() - t0
        steps = trace.stats["num_steps"]
        if steps.shape != (num_chains, num_samples) or not np.all(steps == NUM_STEPS):
            raise RuntimeError(f"driver: num_steps {steps}, expected {NUM_STEPS}")
        return seconds

    # Every call traces, lowers and loads its executables again; the
    # difference between a short and a long run is the time of the extra draws.
    draws = settings["draws"]
    for chains in (1, 4):
        driver(chains, draws[chains][0])
    driver_rounds = []
    for r in range(settings["driver_pairs"]):
        row = {}
        for chains in (1, 4):
            few, many = draws[chains]
            extra = driver(chains, many) - driver(chains, few)
            row[f"driver_{chains}"] = extra / ((many - few) * chains * NUM_STEPS)
        driver_rounds.append(row)
        print(f"driver pair {r + 1}/{settings['driver_pairs']}: "
              + ", ".join(f"{n} {1e3 * s:.3f} ms" for n, s in row.items()), file=sys.stderr)
    return {"versions": {"blackjax": blackjax.__version__, "numpyro": numpyro.__version__},
            "num_weights": num_weights, "num_data": post.num_data,
            "devices": jax.device_count(),
            "kernel_rounds": kernel_rounds, "driver_rounds": driver_rounds}


def _summary(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """median (min-max)"""
    v = [scale * x for x in values]
    return f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def table(result: dict) -> str:
    k, d = result["kernel_rounds"], result["driver_rounds"]

    def times(rounds, name):
        return [r[name] for r in rounds]

    def paired(rounds, num, den):
        return [r[num] / r[den] for r in rounds]

    kernel_median = statistics.median(times(k, "ours"))
    rows = [
        ("bare `value_and_grad`", times(k, "bare"), None, "", "",
         "one jitted full-batch `post.logdensity_and_grad` call, blocked"),
        ("bare `value_and_grad` in a jitted loop", times(k, "looped"),
         paired(k, "ours", "looped"), "ours / looped", "",
         "the same gradients chained in one `fori_loop`: no per-call dispatch"),
        ("weightspace kernel, 1 chain", times(k, "ours"), paired(k, "ours", "bare"),
         "ours / bare", "<= 1.05",
         "`build_kernel` step, jitted `lax.scan` over transitions"),
        ("blackjax `hmc`, 1 chain", times(k, "blackjax"),
         paired(k, "ours", "blackjax"), "ours / blackjax", "<= 1.0",
         ("`blackjax.hmc(...).step`, identity `inverse_mass_matrix` of ones, jitted "
          "`lax.scan`")),
        ("numpyro HMC, 1 chain", times(k, "numpyro"),
         paired(k, "ours", "numpyro"), "ours / numpyro", "<= 1.0",
         ("functional `hmc(potential_fn_gen=..., algo=\"HMC\")` `sample_kernel`, "
          "jitted `lax.scan`")),
        ("weightspace kernel, `vmap` over 4 chains", times(k, "ours_4_chains"),
         paired(k, "ours_4_chains", "ours"), "4 chains / (4 x 1 chain)", "",
         "as the 1-chain kernel row, per chain-step"),
        ("`ws.samplers.hmc`, 1 chain", times(d, "driver_1"),
         [r["driver_1"] / kernel_median for r in d], "driver / kernel (unpaired)", "",
         ("driver end to end, `progress=False`: extra time of the longer run per "
          "extra step")),
        ("`ws.samplers.hmc`, 4 chains", times(d, "driver_4"),
         paired(d, "driver_4", "driver_1"), "4 chains / (4 x 1 chain)", "",
         "as the 1-chain driver row, per chain-step"),
    ]
    lines = [("| case | ms per leapfrog step, median (min-max) | ratio, median (min-max) "
              "| ratio is | target | what is timed |"),
             "|---|---|---|---|---|---|"]
    for case, secs, ratio, what, target, note in rows:
        lines.append(f"| {case} | {_summary(secs, 1e3)} | "
                     f"{'1' if ratio is None else _summary(ratio, digits=3)} | {what} | "
                     f"{target} | {note} |")
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
    s, v = settings, result["versions"]
    text = (f"## HMC per leapfrog step (`benchmarks/hmc.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}, blackjax "
            f"{v['blackjax']}, numpyro {v['numpyro']}; {result['devices']} device. "
            f"MLP(256, 256) posterior on digits ({result['num_weights']:,} weights, "
            f"{result['num_data']:,} rows), "
            f"step size {STEP_SIZE:g}, {NUM_STEPS} leapfrog steps per trajectory. "
            f"Kernel rows: {s['rounds']} interleaved rounds, each timing "
            f"{s['transitions']} transition(s) per call after a first, compiling "
            f"call; ratios are paired within a round. Driver rows: {s['driver_pairs']} "
            f"pairs of runs, {s['draws'][1][0]} and {s['draws'][1][1]} draws with 1 "
            f"chain, {s['draws'][4][0]} and {s['draws'][4][1]} with 4 (executables "
            f"come from a persistent compilation cache after the first run; the "
            f"difference removes the rest of the per-run cost). Whole script: "
            f"{minutes:.1f} min.\n\n{table(result)}")
    print(text)
    if args.write:
        write_results(text, "hmc")
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
