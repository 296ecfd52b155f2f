"""What XLA:CPU's compiled code depends on besides the program: the host's CPU.
XLA:CPU compiles for the instruction set it finds, so compiled programs (the
suite's compilation cache) and float results (the reference runs) are only
comparable on the same CPU. No JAX import: conftest reads this before JAX starts."""

import hashlib
import platform
from pathlib import Path


def cpu_hash() -> str:
    """12 hex digits of the machine type, CPU model and instruction-set flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))})
    except OSError:
        cpu = [platform.processor()]
    return hashlib.sha256("\n".join([platform.machine(), *cpu]).encode()).hexdigest()[:12]
