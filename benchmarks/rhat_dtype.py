"""float32 and float64 draws through rank R-hat, before and after float64
draws kept their precision (issue 16): "before" is the old working dtype
(float64 cut to float32 unless x64 was on globally), patched back in; the
runs alternate so that both see the same machine load.

    python benchmarks/rhat_dtype.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import numpy as np

import weightspace.diagnostics.rhat  # noqa: F401  (the module, not the function)

R = sys.modules["weightspace.diagnostics.rhat"]
SHAPE = (3, 240, 274_042)   # chains, draws, weights: ResNet-20-FRN as in benchmarks/rhat.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    new = R._working_dtype
    old = lambda arrays: np.dtype(jax.dtypes.canonicalize_dtype(new(arrays)))
    x32 = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    x64 = x32.astype(np.float64)
    R.rhat(x32[..., :1000])
    R.rhat(x64[..., :1000])  # compile both
    runs = {("float32", "before"): (old, x32), ("float32", "after"): (new, x32),
            ("float64", "before"): (old, x64), ("float64", "after"): (new, x64)}
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, (dtype_of, x) in runs.items():
            R._working_dtype = dtype_of
            start = time.perf_counter()
            R.rhat(x)
            times[k].append(time.perf_counter() - start)
    R._working_dtype = new
    for (dtype, when), v in times.items():
        print(f"{dtype} {when}: median {statistics.median(v):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in v)})")


if __name__ == "__main__":
    main()
