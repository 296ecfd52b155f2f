"""JAX's persistent compilation cache for the command line: compiled programs
are written to a directory and loaded by the next run with the same programs
(a rerun, a resume, the other processes of a multi-process job), so it does
not compile again.

The directory, first match wins:
1. `--compile-cache DIR` (or `--no-compile-cache`: no cache);
2. JAX's own setting (`JAX_COMPILATION_CACHE_DIR`), left as it is;
3. `WEIGHTSPACE_COMPILE_CACHE` (`off` turns the cache off);
4. `$XDG_CACHE_HOME/weightspace/jax-compilation-cache` (`~/.cache/...`).
Under 3 and 4 (and 1) a subfolder per host CPU: XLA:CPU compiles for the
instruction set it finds and JAX's cache key leaves the CPU out, so hosts that
share a home directory must not share compiled CPU programs.

Every program is cached however fast it compiled
(`jax_persistent_cache_min_compile_time_secs` 0, unless set by
`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`), so a second run compiles nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

OFF = "off"


def host_cpu() -> str:
    """12 hex digits of the machine type, CPU model and instruction-set flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))})
    except OSError:
        cpu = [platform.processor()]
    return hashlib.sha256("\n".join([platform.machine(), *cpu]).encode()).hexdigest()[:12]


def default_directory() -> Path | None:
    """The cache directory of rules 3 and 4 of the module docstring (None: off)."""
    chosen = os.environ.get("WEIGHTSPACE_COMPILE_CACHE")
    if chosen is not None and chosen.strip().lower() == OFF:
        return None
    if chosen:
        base = Path(chosen).expanduser()
    else:
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        base = Path(home) / "weightspace" / "jax-compilation-cache"
    return base / host_cpu()


def enable(directory: str | os.PathLike | None = None, *, off: bool = False) -> str | None:
    """Turn the persistent cache on before the first compilation (module
    docstring); returns the directory in use, or None when off."""
    import jax

    if off:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if directory is not None:
        path = Path(directory).expanduser() / host_cpu()
    elif jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    else:
        path = default_directory()
        if path is None:
            jax.config.update("jax_enable_compilation_cache", False)
            return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(path)
