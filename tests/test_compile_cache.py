"""The command line's persistent compilation cache (weightspace/cli/compile_cache.py):
a second identical `weightspace sample` compiles nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

from weightspace.cli import build_parser, compile_cache

SUITE_CACHE = Path(os.environ["JAX_COMPILATION_CACHE_DIR"])   # tests/conftest.py

# Runs the command with a listener on JAX's compilation-cache events and prints
# their counts and the cache directory in use as JSON.
COUNTING = """
import collections, json, sys
import jax
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
from weightspace.cli import main
code = main(sys.argv[1:])
prefix = "/jax/compilation_cache/"
print(json.dumps({"code": code, "dir": jax.config.jax_compilation_cache_dir,
                  **{k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}}))
"""


def _sample(out, env):
    # The command of tests/test_hmc_runs.py::test_cli_sample_runs_and_prints_a_summary,
    # whose programs are usually in the suite's cache already: then the first run
    # loads them too.
    argv = ["sample", "--dataset", "digits", "--n-train", "200", "--model", "mlp",
            "--hidden", "8", "--chains", "2", "--samples", "4", "--warmup", "2",
            "--max-steps", "20", "--no-progress", "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", COUNTING, *argv], env=env, timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_identical_run_compiles_nothing(tmp_path):
    # JAX's own variable unset: the command picks WEIGHTSPACE_COMPILE_CACHE, here
    # the suite's cache folder (the command adds the same per-CPU subfolder).
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env["WEIGHTSPACE_COMPILE_CACHE"] = str(SUITE_CACHE.parent)
    first = _sample(tmp_path / "first", env)
    assert first["code"] == 0 and first["dir"] == str(SUITE_CACHE)
    assert first["compile_requests_use_cache"] > 0
    second = _sample(tmp_path / "second", env)
    assert second.get("cache_misses", 0) == 0, second
    assert second["cache_hits"] == second["compile_requests_use_cache"] == \
        first["compile_requests_use_cache"]


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("WEIGHTSPACE_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu = compile_cache.host_cpu()
    assert compile_cache.default_directory() == (
        tmp_path / "weightspace" / "jax-compilation-cache" / cpu)
    monkeypatch.setenv("WEIGHTSPACE_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache.default_directory() == tmp_path / "mine" / cpu
    monkeypatch.setenv("WEIGHTSPACE_COMPILE_CACHE", "OFF")
    assert compile_cache.default_directory() is None


def test_options_before_or_after_the_command_and_off_turns_the_cache_off():
    parser = build_parser()
    for argv in (["--no-compile-cache", "info"], ["info", "--no-compile-cache"]):
        args = parser.parse_args(argv)
        assert args.no_compile_cache is True
    args = parser.parse_args(["sample", "--compile-cache", "/somewhere", "--out", "run"])
    assert args.compile_cache == "/somewhere" and not getattr(args, "no_compile_cache", False)
    before = jax.config.jax_enable_compilation_cache
    try:
        assert compile_cache.enable(off=True) is None
        assert jax.config.jax_enable_compilation_cache is False
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
    # JAX's own setting (the suite's folder) is kept as it is.
    assert compile_cache.enable() == str(SUITE_CACHE)
