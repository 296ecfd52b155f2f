"""Small fixed-seed runs of every sampler, for the bit-identity test.

`python tests/reference_runs.py` (with 8 simulated CPU devices, as the suite
runs) writes tests/data/reference_runs.npz from the code it imports; the file in
the repository was made by the code before the sampler protocol and driver
(issue 13), so tests/test_reference_runs.py shows the rewrite changed no draw,
prediction or stat. Only arrays are stored (np.savez, no pickle).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import weightspace as ws  # noqa: E402
from weightspace.leaf_names import leaf_name  # noqa: E402

PATH = Path(__file__).parent / "data" / "reference_runs.npz"


def _gaussian(position):
    x = position["x"]
    return -0.5 * jnp.sum(x * x * jnp.asarray([1.0, 4.0, 0.25], x.dtype))


def posterior():
    ds = ws.data.load("digits", n_train=256)
    return ws.models.posterior(ws.models.MLP((8,), 10), ds, prior_variance=1 / 5), ds


def runs() -> dict:
    """name -> zero-argument function returning a Trace (the settings stay here,
    so the test and this script run the same calls)."""
    post, ds = posterior()
    x = ds.x_test[:16]
    common = {"num_chains": 2, "eval_x": x, "progress": False}
    return {
        "hmc_adapt": lambda: ws.samplers.hmc(
            post, jax.random.key(1), num_samples=4, num_warmup=6, thin=2, **common),
        "hmc_fixed": lambda: ws.samplers.hmc(
            post, jax.random.key(2), num_samples=4, num_warmup=3, warmup="fixed",
            step_size=3e-3, trajectory_length=0.02, **common),
        "hmc_no_metropolis": lambda: ws.samplers.hmc(
            post, jax.random.key(3), num_samples=3, num_warmup=3,
            warmup="no_metropolis", step_size=3e-3, trajectory_length=0.02, **common),
        "hmc_diagonal": lambda: ws.samplers.hmc(
            post, jax.random.key(4), num_samples=4, num_warmup=24,
            mass_matrix="diagonal", trajectory_length=0.05, **common),
        "hmc_callable": lambda: ws.samplers.hmc(
            _gaussian, jax.random.key(5), init={"x": jnp.zeros((2, 3))}, num_chains=2,
            num_samples=5, num_warmup=5, progress=False),
        "sgld": lambda: ws.samplers.sgld(
            post, jax.random.key(6), num_samples=4, num_warmup=5, batch_size=32,
            step_size=1e-4, thin=3, **common),
        "psgld": lambda: ws.samplers.sgld(
            post, jax.random.key(7), num_samples=4, num_warmup=5, batch_size=32,
            step_size=1e-4, preconditioner="rmsprop", **common),
        "sghmc_cyclical": lambda: ws.samplers.sghmc(
            post, jax.random.key(8), num_samples=4, num_warmup=2, batch_size=32,
            schedule=ws.samplers.cyclical(1e-5, cycle_length=10), samples_per_cycle=2,
            **common),
        "sgd": lambda: ws.samplers.sgd(
            post, jax.random.key(9), num_epochs=2, batch_size=32, learning_rate=0.05,
            **common),
        "deep_ensemble": lambda: ws.samplers.deep_ensemble(
            post, jax.random.key(10), 2, num_epochs=2, batch_size=64, learning_rate=0.05,
            optimizer="adam", eval_x=x, progress=False),
    }


def arrays_of(trace) -> dict[str, np.ndarray]:
    """positions/<leaf>, stats/<name> and predictions of a Trace."""
    out = {f"positions/{leaf_name(p)}": np.asarray(v)
           for p, v in jax.tree_util.tree_leaves_with_path(trace.positions)}
    out.update({f"stats/{k}": np.asarray(v) for k, v in trace.stats.items()})
    if trace.predictions is not None:
        out["predictions"] = np.asarray(trace.predictions)
    return out


def main() -> int:
    arrays = {}
    for name, make in runs().items():
        for key, value in arrays_of(make()).items():
            arrays[f"{name}:{key}"] = value
        print(name, file=sys.stderr)
    PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print(f"wrote {len(arrays)} arrays to {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
