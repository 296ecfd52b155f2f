"""What XLA:CPU's compiled code depends on besides the program: the host's CPU.
XLA:CPU compiles for the instruction set it finds, so compiled programs (the
suite's compilation cache) and float results (the reference runs) are only
comparable on the same CPU. No JAX import: conftest reads this before JAX starts,
so the library's `host_cpu` (weightspace/cli/compile_cache.py, which names the
command line's cache folders the same way) is loaded from its file, without
importing the package (which would start JAX)."""

import importlib.util
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[1] / "weightspace" / "cli" / "compile_cache.py"
_spec = importlib.util.spec_from_file_location("_weightspace_compile_cache", _SOURCE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

cpu_hash = _module.host_cpu
