"""Plain-text tables of the studies' results."""

from __future__ import annotations

import math


def fmt(x, digits: int = 4) -> str:
    """A float with `digits` decimals, "-" for None, NaN or inf, anything else as str."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def fixed_width(header: list[str], rows: list[list[str]], left=(0,)) -> str:
    """Columns padded to their widest cell: those of `left` (indices) left-aligned,
    the others (numbers) right-aligned; trailing spaces dropped."""
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if k in left else c.rjust(w)
                               for k, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in [header, *rows])
