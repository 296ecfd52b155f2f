"""Small fixed-seed runs of every sampler, for the bit-identity test.

`python tests/reference_runs.py [OUT]` (with 8 simulated CPU devices, as the
suite runs) writes tests/data/reference_runs.npz (or OUT) from the code it
imports, with the fingerprint of the machine and JAX that made it. The file in
the repository was made by the code before the sampler protocol and driver
(issue 13, BASE_COMMIT), so tests/test_reference_runs.py shows the rewrite
changed no draw, prediction or stat. XLA:CPU compiles for the host's instruction
set, so float results are bit-stable only on the same CPU and JAX:
`remake_from_base_commit` runs this script against BASE_COMMIT's package taken
from git, for a machine the stored file was not made on. Only arrays are
stored (np.savez, no pickle).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
# remake_from_base_commit: import weightspace from this plain tree only. An editable
# install's finder maps the subpackages (weightspace.samplers, ...) to the checkout's
# folders ahead of PYTHONPATH, so it is taken out of this process's import system.
TREE = os.environ.get("WEIGHTSPACE_REFERENCE_TREE")
if TREE:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in
                        f"{type(f).__module__}.{type(f).__name__}".lower()]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
    sys.path.insert(0, TREE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402

import weightspace as ws  # noqa: E402
from host import cpu_hash  # noqa: E402
from weightspace.leaf_names import leaf_name  # noqa: E402

PATH = Path(__file__).parent / "data" / "reference_runs.npz"
ROOT = Path(__file__).resolve().parents[1]
# The last commit before the sampler protocol (issue 13).
BASE_COMMIT = "4bcd70bf56377786ff6633eb62b7c77f8e169e58"
FINGERPRINT_KEY = "_meta:fingerprint"


def fingerprint() -> dict:
    """What float results depend on beyond the code: the CPU's instruction set
    and the JAX and jaxlib versions."""
    return {"cpu": cpu_hash(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def stored_fingerprint(arrays) -> dict | None:
    return (json.loads(str(arrays[FINGERPRINT_KEY])) if FINGERPRINT_KEY in arrays.files
            else None)


def remake_from_base_commit(out: Path) -> None:
    """Run this script with BASE_COMMIT's package (from git, laid out as a plain
    weightspace/ tree by that commit's package-dir) on this machine, into `out`.
    Raises RuntimeError when git or the commit is not there."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar",
                                  BASE_COMMIT], capture_output=True, timeout=120)
        if archive.returncode != 0:
            raise RuntimeError(f"git archive {BASE_COMMIT[:12]} failed: "
                               f"{archive.stderr.decode().strip()}")
        (tmp / "base.tar").write_bytes(archive.stdout)
        with tarfile.open(tmp / "base.tar") as tar:
            tar.extractall(tmp / "base", filter="data")
        base = tmp / "base"
        mapping = tomllib.loads((base / "pyproject.toml").read_text()
                                )["tool"]["setuptools"]["package-dir"]
        for package, folder in sorted(mapping.items()):  # weightspace first
            shutil.copytree(base / folder, tmp.joinpath("src", *package.split(".")),
                            dirs_exist_ok=True)
        env = {**os.environ, "WEIGHTSPACE_REFERENCE_TREE": str(tmp / "src"),
               "JAX_NUM_CPU_DEVICES": "8"}
        # The script is this one (the same settings); the package is the old one.
        done = subprocess.run([sys.executable, __file__, str(out)],
                              env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"the runs of {BASE_COMMIT[:12]} failed:\n{done.stderr[-3000:]}")


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


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else PATH
    if TREE:  # every module of the package is the tree's, none the checkout's
        loaded = {name: getattr(module, "__file__", None) for name, module
                  in sys.modules.items() if name.split(".")[0] == "weightspace"}
        stray = {n: f for n, f in loaded.items() if f and not f.startswith(TREE)}
        assert len(loaded) > 10 and not stray, stray
    arrays = {}
    for name, make in runs().items():
        for key, value in arrays_of(make()).items():
            arrays[f"{name}:{key}"] = value
        print(name, file=sys.stderr)
    arrays[FINGERPRINT_KEY] = np.array(json.dumps(fingerprint()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    print(f"wrote {len(arrays)} arrays to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
