"""JSON files: numpy and jax values as JSON, atomic writes, reads, and who writes.

- `jsonable(obj)`: numbers and arrays as Python values, NaN and inf as None
  (JSON has no NaN).
- `write_json(path, obj)`: replace `path` atomically: temp file, fsync,
  os.replace, fsync of the directory, so a reader or a killed writer sees the
  old file or the new one, never a part.
- `read_json(path)`.
- `is_writer()`: in a multi-process job only process 0 writes files
  (`jax.process_index() == 0`); the others compute the same values.

A leaf module: it imports nothing from weightspace.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

_RAISE = object()


def jsonable(obj, *, key: Callable[[object], str] = str):
    """obj with numpy and jax values as Python ones, tuples as lists, NaN and inf
    as None, and dict keys through `key` (default str)."""
    if isinstance(obj, dict):
        return {key(k): jsonable(v, key=key) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, key=key) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(obj).tolist(), key=key)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj, *, writer_only: bool = False) -> None:
    """Replace `path` atomically with `jsonable(obj)`, creating its directory.

    writer_only: write from process 0 only (`is_writer`); the other processes
    of a multi-process job return without writing.
    """
    if writer_only and not is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(jsonable(obj), f, indent=1, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path, default=_RAISE):
    """The content of the JSON file `path`; when given, `default` instead of an
    error for a file that is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        if default is _RAISE:
            raise
        return default


def fsync_dir(path) -> None:
    """Make a rename or a new file in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_writer() -> bool:
    """Whether this process writes files: only process 0 of a multi-process job
    does (run directories, compare's output directory, JSON results)."""
    return jax.process_index() == 0
