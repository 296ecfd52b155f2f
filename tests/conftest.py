"""Test-wide set-up: 8 simulated CPU devices (unless the caller chose a count),
so sharded code paths run in every test session; a persistent XLA compilation
cache shared by the workers and the processes the tests start."""

import os
from pathlib import Path

from host import cpu_hash

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")


def _compilation_cache_dir() -> Path:
    """.pytest_cache/jax-compilation-cache/<host>: XLA:CPU compiles for the host's
    instruction set, which JAX's cache key leaves out, so a copied checkout on
    another CPU gets its own folder."""
    return (Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation-cache"
            / cpu_hash())


# Much of the suite's time is XLA compiling, and many programs are compiled
# again in another process: the other xdist worker, a killed-and-resumed sampler,
# the notebook's kernel. JAX's persistent cache turns those compiles into loads.
# Its key is a hash of the lowered program, the compile options and XLA flags,
# the devices, and the jaxlib and backend versions, so a hit is the executable
# XLA would build anyway: tracing and lowering (and the errors they raise) run
# every time, only XLA's compile is skipped. Set as environment variables before
# JAX starts, so subprocesses inherit them. JAX_COMPILATION_CACHE_DIR set by the
# caller wins; JAX_ENABLE_COMPILATION_CACHE=false turns the cache off. Writes are
# not atomic: a read that races a write of the same entry fails its checksum,
# and JAX warns and compiles.
_CACHE_DIR = _compilation_cache_dir()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE_DIR))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
CACHE_LIMIT_BYTES = 4 << 30


def _prune_compilation_cache(root=_CACHE_DIR, limit=CACHE_LIMIT_BYTES):
    """Delete the oldest entries of the suite's cache grown past `limit` until half
    of it is left (JAX evicts only with the filelock package installed)."""
    entries = []
    for f in root.glob("*") if root.is_dir() else ():
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    for _, size, f in sorted(entries):
        f.unlink(missing_ok=True)
        total -= size
        if total <= limit // 2:
            break


# The device count must be set before JAX starts.
import jax
import numpy as np
import pytest


# -- the two xdist workers (pyproject.toml: -n 2 --dist loadfile) ---------------
# Each test file is one unit of work, run by one worker (so module fixtures run
# once), except the tests whose node ids start with an entry of ALONE: each is a
# unit of its own (they use no module fixture). Units are handed out longest
# first, so the last ones to start are short and the two workers finish close
# together (xdist's own order, most tests first, can leave test_compare.py's few
# long tests to the end while the other worker idles). UNIT_SECONDS: rough cost
# of a unit on one worker (a cold run on a loaded 2-core machine); only the order
# depends on it, so a stale entry costs time, never a result. Units not listed
# follow, in xdist's order.
ALONE = ("tests/test_compare.py::test_paper_preset_runs_end_to_end_under_smoke_on_mocked_tfds",
         "tests/test_hmc_runs.py::test_sigkill_at_a_random_moment",
         "tests/test_hmc_runs.py::test_tuned_sampler_sigkill")
_KILL, _MICRO_KILL = (ALONE[1] + "_then_resume_gives_the_uninterrupted_draws",
                      ALONE[2] + "_in_tuning_or_sampling_then_resume_is_exact")
UNIT_SECONDS = {
    ALONE[0] + "[paper-cifar10]": 760,   # slow: only under -m slow
    ALONE[0] + "[paper-imdb]": 240,
    ALONE[0] + "[paper-mnist]": 180,
    "tests/test_compare.py": 480,
    "tests/test_multiprocess_runs.py": 230,
    "tests/test_readme.py": 200,
    "tests/test_sgmcmc.py": 150,
    "tests/test_microcanonical.py": 140,
    "tests/test_cli.py": 140,
    "tests/test_hmc.py": 120,
    "tests/test_reference_runs.py": 110,
    "tests/test_hmc_runs.py": 90,
    _KILL + "[hmc]": 70,
    _MICRO_KILL + "[mams]": 75,
    "tests/test_baselines.py": 85,
    "tests/test_networks.py": 80,
    "tests/test_llc.py": 75,
    _MICRO_KILL + "[mclmc]": 65,
    _MICRO_KILL + "[replica_exchange]": 70,
    "tests/test_replica_exchange.py": 100,
    "tests/test_network_basins.py": 50,
    "tests/test_basin_study.py": 45,
    "tests/test_basins.py": 40,
    "tests/test_multiprocess.py": 70,
    "tests/test_notebook.py": 70,
    _KILL + "[sgld]": 60,
    _KILL + "[sgd_checkpoints]": 60,
    "tests/test_adding_a_sampler.py": 60,
    "tests/test_align.py": 60,
    "tests/test_rhat_ess.py": 40,
    "tests/test_mixing.py": 40,
    "tests/test_data_prepare.py": 40,
    "tests/test_sharding.py": 35,
    "tests/test_posterior.py": 35,
    "tests/test_slt_dln.py": 35,
}


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid):
            return nodeid if nodeid.startswith(ALONE) else super()._split_scope(nodeid)

        def _assign_work_unit(self, node):
            longest = max(self.workqueue, key=lambda unit: UNIT_SECONDS.get(unit, 0))
            self.workqueue.move_to_end(longest, last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def pytest_configure(config):
    # once, in the xdist controller, and only in the folder this file chose
    if (not hasattr(config, "workerinput")
            and os.environ["JAX_COMPILATION_CACHE_DIR"] == str(_CACHE_DIR)):
        _prune_compilation_cache()


@pytest.fixture(scope="session")
def digits():
    import weightspace as ws

    return ws.data.load("digits")


def cifar_shaped(n, seed=0, num_classes=10):
    """A Dataset of random CIFAR-shaped images and labels (no download)."""
    from weightspace.data import Dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    return Dataset("cifar_shaped", x, y, x[:4], y[:4], num_classes)


def run_command(argv, capsys):
    """(exit status, stdout, stderr) of `weightspace ARGV`, in process, through
    weightspace.cli.main (argparse's own errors exit with status 2)."""
    from weightspace.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_device_mesh():
    import weightspace as ws

    return ws.sharding.make_mesh(devices=jax.devices()[:1])
