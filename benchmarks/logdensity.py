"""Time one jitted full-batch value_and_grad of the log posterior.

MLP(256, 256) on the digits training set and ResNet20FRN on 512 CIFAR-shaped
images, on 1 device and on 8 simulated CPU devices. Each device count runs in
its own process (JAX fixes the count at start-up). Prints a table; with
--write, also records it in benchmarks/RESULTS.md.

    python benchmarks/logdensity.py [--repeats 7] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def measure(repeats: int) -> list[dict]:
    """Runs inside a child process whose device count is already set."""
    import jax
    import numpy as np

    import weightspace as ws

    rng = np.random.default_rng(0)
    cifar = ws.data.Dataset(
        "cifar_shaped_512", rng.normal(size=(512, 32, 32, 3)).astype(np.float32),
        rng.integers(0, 10, 512).astype(np.int32), np.zeros((1, 32, 32, 3), np.float32),
        np.zeros(1, np.int32), 10)
    cases = [("MLP(256, 256) on digits (1,437 rows)", ws.models.MLP((256, 256), 10),
              ws.data.load("digits")),
             ("ResNet20FRN on 512 CIFAR-shaped images", ws.models.ResNet20FRN(10), cifar)]
    rows = []
    step = jax.jit(lambda post, params: post.logdensity_and_grad(params))
    for label, network, data in cases:
        post = ws.models.posterior(network, data, prior_variance=0.2)
        params = post.init(jax.random.key(0))
        t0 = time.perf_counter()
        jax.block_until_ready(step(post, params))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(step(post, params))
            times.append(time.perf_counter() - t0)
        rows.append({"case": label, "devices": jax.device_count(),
                     "params": post.num_params(params), "first_call_s": compile_s,
                     "median_s": statistics.median(times), "min_s": min(times),
                     "repeats": repeats})
    return rows


def run_child(devices: int, repeats: int) -> list[dict]:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"benchmark child with {devices} device(s) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_device_child(script: str, quick: bool) -> dict:
    """Run `script --child [--quick]` on one CPU device and return the JSON its
    last stdout line holds; the child's stderr (its progress) goes to ours."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    args = [sys.executable, script, "--child"] + (["--quick"] if quick else [])
    out = subprocess.run(args, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        sys.exit("benchmark child failed (its error is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import jax

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {mem:.0f} GiB; "
            f"Python {platform.python_version()}, jax {jax.__version__}")


def table(rows: list[dict]) -> str:
    one = {r["case"]: r["median_s"] for r in rows if r["devices"] == 1}
    lines = ["| case | devices | parameters | first call (compile) s | median s | min s "
             "| median time relative to 1 device |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['devices']} | {r['params']:,} | "
                     f"{r['first_call_s']:.2f} | {r['median_s']:.4f} | {r['min_s']:.4f} | "
                     f"{r['median_s'] / one[r['case']]:.2f}x |")
    return "\n".join(lines)


def write_results(text: str, section: str = "logdensity") -> None:
    """Replace the `<!-- section:start -->`...`<!-- section:end -->` block of
    RESULTS.md with `text`, or append the block; the rest of the file stays."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{start}\n{text}\n{end}"
    if start in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", action="store_true",
                        help="record the table in benchmarks/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats)))
        return
    rows = run_child(1, args.repeats) + run_child(8, args.repeats)
    text = (f"## Full-batch log-density and gradient (`benchmarks/logdensity.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}. One jitted "
            f"`value_and_grad` of the log posterior, {args.repeats} timed calls after "
            f"the first; 8 devices are simulated on the same CPU cores, so they show "
            f"the cost of sharding, not a speed-up.\n\n{table(rows)}")
    print(text)
    if args.write:
        write_results(text)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
