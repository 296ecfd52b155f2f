"""Wall time of `weightspace compare --preset quick`, stage by stage.

Runs the command as a user does (`python -m weightspace.cli compare --preset
quick --out DIR`, a fresh process and a fresh output directory each time, so
every run includes JAX's start-up and all compilation) --repeats times, one
after another, and reads each stage's seconds from DIR/results.json. The
parent also times the whole process (start-up, data loading and writing
included). The table quotes every run and the median; the machine is shared, so
the load average before and after each run is recorded too. Prints the table
and the first run's methods table; with --write, also records them in
benchmarks/RESULTS.md.

    python benchmarks/compare.py [--repeats 2] [--write] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logdensity import machine, write_results

PRESET = "quick"
TARGET_S = 600  # issue 7: the quick preset finishes in under 10 minutes on 2 cores


def one_run(out: Path) -> dict:
    """Run the command into `out`; its wall time, stage records and load averages."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "weightspace.cli", "compare", "--preset",
                           PRESET, "--out", str(out), "--no-progress"],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"weightspace compare exited with {proc.returncode} (its output is above)")
    results = json.loads((out / "results.json").read_text())
    return {"wall_s": wall, "load": (load_before, os.getloadavg()[0]),
            "stages": {s: r["seconds"] for s, r in results["stages"].items()},
            "results": results}


def table(runs: list[dict]) -> str:
    stages = list(runs[0]["stages"])
    header = ["stage", *(f"run {i + 1} s" for i in range(len(runs))), "median s",
              "share of the median total"]
    total = statistics.median(r["wall_s"] for r in runs)
    rows = []
    for stage in stages:
        values = [r["stages"][stage] for r in runs]
        median = statistics.median(values)
        rows.append([stage, *(f"{v:.1f}" for v in values), f"{median:.1f}",
                     f"{100 * median / total:.0f}%"])
    staged = [sum(r["stages"].values()) for r in runs]
    rows.append(["all stages", *(f"{v:.1f}" for v in staged),
                 f"{statistics.median(staged):.1f}", f"{100 * statistics.median(staged) / total:.0f}%"])
    rows.append(["whole command (wall)", *(f"{r['wall_s']:.1f}" for r in runs), f"{total:.1f}",
                 "100%"])
    rows.append(["load average before / after",
                 *(f"{a:.1f} / {b:.1f}" for a, b in (r["load"] for r in runs)), "", ""])
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true",
                        help="record the tables in benchmarks/RESULTS.md")
    parser.add_argument("--keep", default=None,
                        help="write the runs' output directories under this directory "
                             "(default: a temporary directory, removed)")
    args = parser.parse_args()
    from weightspace.experiments.comparison import format_table

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        runs = []
        for i in range(args.repeats):
            out = base / f"run{i + 1}"
            if out.exists():
                sys.exit(f"{out} exists: choose another --keep directory")
            print(f"run {i + 1}/{args.repeats} -> {out}", flush=True)
            runs.append(one_run(out))
        first = runs[0]["results"]
        median = statistics.median(r["wall_s"] for r in runs)
        verdict = ("met" if max(r["wall_s"] for r in runs) < TARGET_S else
                   "met on the median only" if median < TARGET_S else "NOT met")
        text = (f"## `weightspace compare --preset {PRESET}`, stage by stage "
                f"(`benchmarks/compare.py`)\n\n"
                f"Taken {time.strftime('%Y-%m-%d')} on {machine()}. {len(runs)} runs of the "
                f"command, each in a fresh process and output directory (start-up and every "
                f"compilation included), one after another; a stage's seconds come from "
                f"its record in results.json. {first['num_params']:,} weights, "
                f"{first['data']['num_train']:,} training and {first['data']['num_test']} "
                f"test rows. Target: under {TARGET_S // 60} minutes: {verdict} "
                f"(median {median:.0f} s).\n\n{table(runs)}\n\n"
                f"The first run's table:\n\n```text\n{format_table(first)}\n```")
        print("\n" + text)
        if args.write:
            write_results(text, section="compare")
            print("\nwritten to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
