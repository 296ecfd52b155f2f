"""Run directories: draws written as they are produced, plus resumable sampler state.

On-disk layout of a run directory (nothing in it is a pickle; loading never runs code):

    config.json       the run's config (a JSON object); written last at creation, so its
                      presence marks a complete run directory.
    spec.json         {"format": 1, "records": {name: {"file", "shape", "dtype"}}}: one record
                      is one kept draw of every chain; file is relative to the run directory;
                      dtype is a numpy bool/int/uint/float/complex name (no bfloat16).
    manifest.json     {"num_draws": n, "step": s}: the committed draws, the only ones readers
                      see. Replaced atomically (temp file, fsync, os.replace, fsync dir).
    draws/<file>.bin  one file per record name ('/' replaced by '.'): raw little-endian,
                      C-order; draw i occupies bytes [i * size, (i + 1) * size). Bytes past
                      num_draws * size are uncommitted and ignored.
    checkpoints/<step>/  orbax checkpoint: state/ (StandardSave of the sampler state) and
                      draws/ (JSON {"num_draws": n}, the draw count that goes with it).
    command.json      optional, written by the weightspace CLI before the run starts (so a
                      new run directory may hold it before config.json): what rebuilds the
                      sampled posterior (dataset, network, prior, temperature, seed, sampler).

`RunStore.commit` runs: fsync the draw files -> orbax checkpoint -> manifest. A kill between
any two steps leaves manifest count <= latest checkpoint count <= durable draws, so readers
never see a torn record and `RunStore.restore` can truncate the files back to the checkpoint.

Multi-process jobs: only process 0 (`jax.process_index() == 0`) writes config, spec,
draws and manifest; `append` is a no-op elsewhere (the caller gathers records to host on
process 0). Every process must call `commit` and `restore`, since orbax writes and reads
sharded arrays from every process. The run directory must be on a filesystem that every
process sees: the others read what process 0 wrote, after a
`ws.sharding.wait_for_processes` barrier.
"""

import json
import os
import re
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from weightspace import sharding
from weightspace.jsonio import fsync_dir as _fsync_dir
from weightspace.jsonio import read_json as _read_json
from weightspace.jsonio import write_json as _write_json

_FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_MISSING = "<missing>"


class RunStore:
    """Writer for one run directory; see the module docstring for the layout.

    config: JSON-serializable dict; on reopening it must equal the stored one except for
      "num_samples" (a run may be extended), which is then updated.
    record_spec: name -> (shape, dtype) of one record, e.g.
      {"positions/layers/0/kernel": ((3, 64, 32), "float32"), "stats/step_size": ((3,), "float32")}.
    num_draws: committed draws, what `read_run` shows.
    """

    num_draws: int

    def __init__(self, run_dir, config: dict, record_spec: dict):
        self.run_dir = Path(run_dir).expanduser().absolute()
        self._writer = jax.process_index() == 0
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        config = _json_roundtrip(config, "config")
        records = _normalize_spec(record_spec)
        if (self.run_dir / "config.json").is_file():
            records = self._check_stored(config, records)
        elif self._writer:
            self._create(config, records)
        # The other processes read the manifest once process 0 has made or checked it.
        sharding.wait_for_processes(f"weightspace run store {self.run_dir}")
        self._records = {
            n: (r["file"], np.dtype(r["dtype"]), tuple(r["shape"])) for n, r in records.items()
        }
        manifest = self.run_dir / "manifest.json"
        self.num_draws = _read_json(manifest)["num_draws"] if manifest.is_file() else 0
        self._files = {}
        if self._writer:
            self._files = {n: open(self.run_dir / r[0], "r+b") for n, r in self._records.items()}
        self._seek(self.num_draws)
        self._manager = ocp.CheckpointManager(
            self.run_dir / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=True),
        )

    def append(self, record: dict) -> None:
        """Write one record after the last appended one; invisible to readers until `commit`.

        record: name -> array with exactly the shape and dtype of record_spec.
        """
        if self._writer:
            arrays = self._check_record(record)
            for name, array in arrays.items():
                little_endian = self._records[name][1].newbyteorder("<")
                self._files[name].write(np.ascontiguousarray(array, little_endian).data)
        self._num_appended += 1

    def commit(self, state: dict, step: int) -> None:
        """Make the appended draws durable and visible, with `state` as checkpoint `step`.

        state: pytree of jax.Arrays (possibly sharded), numpy arrays and Python scalars
          (stored as numpy arrays); PRNG keys as `jax.random.key_data(key)`.
        step: greater than every earlier step (orbax silently skips an existing one).
        """
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"step must exceed the latest checkpoint step {latest}, got {step}")
        if self._writer:
            for f in self._files.values():
                f.truncate()  # drops stale bytes past the appended draws
                f.flush()
                os.fsync(f.fileno())
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(jax.tree.map(_saveable, state)),
            draws=ocp.args.JsonSave({"num_draws": self._num_appended}),
        )
        if not self._manager.save(step, args=args):
            raise RuntimeError(f"orbax declined to save step {step} in {self.run_dir}")
        self._manager.wait_until_finished()
        self._write_manifest(self._num_appended, step)

    def restore(self, abstract_state) -> tuple[dict, int] | None:
        """(state, step) of the latest checkpoint, or None if there is none (then every draw
        is dropped: the run starts over).

        abstract_state: pytree matching the saved state whose leaves are
          jax.ShapeDtypeStruct (with .sharding: restored onto those devices), arrays (their
          shape, dtype and sharding), or Python scalars (restored as the same type).
        Draws appended after that checkpoint are dropped (files truncated, manifest
        rewritten); `append` continues from the checkpoint's draw count.
        """
        step = self._manager.latest_step()
        if step is None:
            self._truncate(0, None)
            return None
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(jax.tree.map(_abstract, abstract_state)),
                draws=ocp.args.JsonRestore(),
            ),
        )
        self._truncate(restored.draws["num_draws"], step)
        state = jax.tree.map(_like_template, abstract_state, restored.state)
        return state, step

    def close(self) -> None:
        """Close the files and the checkpoint manager; uncommitted draws are not kept."""
        for f in self._files.values():
            f.close()
        self._files = {}
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _create(self, config, records):
        if self.run_dir.exists():  # leftovers of a creation killed before config.json are fine
            ours = {"draws", "checkpoints", "spec.json", "manifest.json", "command.json"}
            unknown = {p.name.removesuffix(".tmp") for p in self.run_dir.iterdir()} - ours
            unknown.discard("config.json")
            if unknown:
                raise FileExistsError(
                    f"{self.run_dir} is neither empty nor a run directory: {sorted(unknown)}"
                )
        (self.run_dir / "draws").mkdir(parents=True, exist_ok=True)
        for r in records.values():
            with open(self.run_dir / r["file"], "wb") as f:
                os.fsync(f.fileno())
        _fsync_dir(self.run_dir / "draws")
        _write_json(self.run_dir / "spec.json", {"format": _FORMAT, "records": records})
        _write_json(self.run_dir / "manifest.json", {"num_draws": 0, "step": None})
        _write_json(self.run_dir / "config.json", config)

    def _check_stored(self, config, records):
        stored = _read_json(self.run_dir / "config.json")
        diff = _diff(
            {k: v for k, v in stored.items() if k != "num_samples"},
            {k: v for k, v in config.items() if k != "num_samples"},
        )
        if diff:
            raise ValueError(f"{self.run_dir} holds a run with a different config: {diff}")
        stored_records = _read_json(self.run_dir / "spec.json")["records"]
        diff = _diff(
            {n: (r["shape"], r["dtype"]) for n, r in stored_records.items()},
            {n: (r["shape"], r["dtype"]) for n, r in records.items()},
        )
        if diff:
            raise ValueError(f"{self.run_dir} holds a run with a different record_spec: {diff}")
        if self._writer and stored.get("num_samples") != config.get("num_samples"):
            _write_json(self.run_dir / "config.json", config)
        return stored_records

    def _check_record(self, record):
        if set(record) != set(self._records):
            missing, unexpected = set(self._records) - set(record), set(record) - set(self._records)
            raise ValueError(
                f"record must have the names of record_spec; missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        arrays = {name: np.asarray(value) for name, value in record.items()}
        for name, array in arrays.items():
            _, dtype, shape = self._records[name]
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"record[{name!r}] must have shape {shape} and dtype {dtype.name}, "
                    f"got shape {array.shape} and dtype {array.dtype.name}"
                )
        return arrays

    def _seek(self, num_draws):
        self._num_appended = num_draws
        for name, f in self._files.items():
            _, dtype, shape = self._records[name]
            f.seek(num_draws * _nbytes(dtype, shape))

    def _truncate(self, num_draws, step):
        for name, f in self._files.items():
            _, dtype, shape = self._records[name]
            f.flush()
            if os.fstat(f.fileno()).st_size < num_draws * _nbytes(dtype, shape):
                raise RuntimeError(
                    f"{self.run_dir}: {name} holds fewer than the checkpoint's {num_draws} draws"
                )
            f.truncate(num_draws * _nbytes(dtype, shape))
            os.fsync(f.fileno())
        self._seek(num_draws)
        self._write_manifest(num_draws, step)

    def _write_manifest(self, num_draws, step):
        if self._writer:
            _write_json(self.run_dir / "manifest.json", {"num_draws": num_draws, "step": step})
        self.num_draws = num_draws


def read_run(run_dir) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, arrays) of a finished or partial run; loads no code and no draw into memory.

    arrays: record name -> read-only np.memmap (num_draws, *record_shape) of the committed
    draws (a plain empty array when there are none). Safe while a writer is running: the
    manifest is read once and files never shrink below the committed count.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = _read_json(run_dir / "config.json")
    records = _read_json(run_dir / "spec.json")["records"]
    num_draws = _read_json(run_dir / "manifest.json")["num_draws"]
    arrays = {}
    for name, r in records.items():
        dtype, shape = np.dtype(r["dtype"]).newbyteorder("<"), (num_draws, *r["shape"])
        if num_draws == 0:
            arrays[name] = np.empty(shape, dtype)
            arrays[name].flags.writeable = False
        else:
            arrays[name] = np.memmap(run_dir / r["file"], dtype=dtype, mode="r", shape=shape)
    return config, arrays


def _normalize_spec(record_spec):
    """name -> {"file", "shape", "dtype"}, validated; file names are unique even on
    case-insensitive file systems."""
    records, files = {}, {}
    for name, (shape, dtype) in record_spec.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"record_spec names must be '/'-separated [A-Za-z0-9_.-]+ parts, got {name!r}"
            )
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        if dtype.kind not in "biufc" or min(shape, default=1) < 1:
            raise ValueError(
                f"record_spec[{name!r}] must be a non-empty shape with a bool/int/float/complex "
                f"dtype, got {(shape, dtype.name)}"
            )
        file = "draws/" + name.replace("/", ".") + ".bin"
        if file.lower() in files:
            raise ValueError(
                f"record_spec names {files[file.lower()]!r} and {name!r} map to one file {file}"
            )
        files[file.lower()] = name
        records[name] = {"file": file, "shape": list(shape), "dtype": dtype.name}
    return records


def _nbytes(dtype, shape):
    return dtype.itemsize * int(np.prod(shape))


def _saveable(leaf):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        raise TypeError("state must hold PRNG keys as jax.random.key_data(key), not typed keys")
    return leaf if isinstance(leaf, (jax.Array, np.ndarray)) else np.asarray(leaf)


def _abstract(leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return np.asarray(leaf)  # numpy template: orbax restores a numpy array


def _like_template(template, value):
    return type(template)(value) if isinstance(template, (bool, int, float, complex)) else value


def _diff(stored, requested):
    keys = list(stored) + [k for k in requested if k not in stored]
    return "; ".join(
        f"{k}: stored {stored.get(k, _MISSING)!r}, requested {requested.get(k, _MISSING)!r}"
        for k in keys
        if stored.get(k, _MISSING) != requested.get(k, _MISSING)
    )


def _json_roundtrip(obj, argname):
    """obj as it will read back from JSON (tuples become lists), so comparisons are fair."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{argname} must be JSON-serializable (no NaN/inf): {e}") from None
