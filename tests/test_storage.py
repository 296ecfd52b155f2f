"""Run directories: committed draws are exactly what readers see, a run killed at any
moment resumes from its last checkpoint, and nothing on disk is a pickle."""

import inspect
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from weightspace.samplers.storage import RunStore, read_run

CONFIG = {"sampler": "hmc", "seed": 0, "step_size": 1e-3, "num_chains": 3, "num_samples": 10}
SPEC = {
    "positions/layers/0/kernel": ((3, 4, 2), "float32"),
    "stats/accept_prob": ((3,), "float32"),
    "stats/is_divergent": ((3,), "bool"),
    "predictions": ((3, 50, 10), "float32"),
}


def _record(i):
    """Draw i as the tests (and the killed subprocess) write it: every value depends on i."""
    return {
        "positions/layers/0/kernel": np.arange(24, dtype=np.float32).reshape(3, 4, 2) + 1000 * i,
        "stats/accept_prob": np.full((3,), i / 7, np.float32),
        "stats/is_divergent": np.array([i % 2 == 0, False, True]),
        "predictions": np.full((3, 50, 10), -i, np.float32),
    }


def _assert_draws(arrays, num_draws):
    for name, array in arrays.items():
        expected = np.stack([_record(i)[name] for i in range(num_draws)]) if num_draws else None
        assert array.shape == (num_draws, *SPEC[name][0]), name
        if num_draws:
            np.testing.assert_array_equal(array, expected, err_msg=name)


def _write_run(run_dir, num_draws, commit_every=1):
    with RunStore(run_dir, CONFIG, SPEC) as store:
        for i in range(num_draws):
            store.append(_record(i))
            if (i + 1) % commit_every == 0:
                store.commit({"i": i + 1, "x": np.full(4, i + 1.0)}, step=i + 1)


def test_committed_draws_read_back_as_memmaps(tmp_path):
    _write_run(tmp_path / "run", 5)
    config, arrays = read_run(tmp_path / "run")
    assert config == CONFIG
    assert set(arrays) == set(SPEC)
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in arrays.values())
    _assert_draws(arrays, 5)


def test_uncommitted_draws_are_invisible(tmp_path):
    with RunStore(tmp_path / "run", CONFIG, SPEC) as store:
        _, arrays = read_run(tmp_path / "run")
        _assert_draws(arrays, 0)
        for i in range(3):
            store.append(_record(i))
        store.commit({"i": 3}, step=3)
        store.append(_record(3))
        store.append(_record(4))
        assert store.num_draws == 3
        _, arrays = read_run(tmp_path / "run")
        _assert_draws(arrays, 3)


@pytest.mark.parametrize("crash", ["after_append", "torn_record", "before_manifest"])
def test_crash_resumes_from_last_checkpoint(tmp_path, crash):
    """Crashes between commit steps: after appending without committing, halfway through
    writing a record, and after the checkpoint but before the manifest."""
    run_dir = tmp_path / "run"
    _write_run(run_dir, 4, commit_every=2)  # checkpoints at 2 and 4 draws
    expected = 4
    if crash == "after_append":
        with RunStore(run_dir, CONFIG, SPEC) as store:
            for i in range(4, 7):
                store.append(_record(i))
    elif crash == "torn_record":
        with open(run_dir / "draws" / "predictions.bin", "ab") as f:
            f.write(b"\x7f" * (3 * 50 * 10 * 4 // 2))  # half a record of garbage
    elif crash == "before_manifest":
        old_manifest = (run_dir / "manifest.json").read_bytes()
        with RunStore(run_dir, CONFIG, SPEC) as store:
            store.restore({"i": 0, "x": np.zeros(4)})
            store.append(_record(4))
            store.commit({"i": 5, "x": np.full(4, 5.0)}, step=5)
        (run_dir / "manifest.json").write_bytes(old_manifest)
        expected = 5
    _assert_draws(read_run(run_dir)[1], 4)

    with RunStore(run_dir, CONFIG, SPEC) as store:
        state, step = store.restore({"i": 0, "x": np.zeros(4)})
        assert (step, state["i"], store.num_draws) == (expected, expected, expected)
        np.testing.assert_array_equal(state["x"], np.full(4, float(expected)))
        _assert_draws(read_run(run_dir)[1], expected)
        for name, (shape, dtype) in SPEC.items():
            file = run_dir / "draws" / f"{name.replace('/', '.')}.bin"
            assert os.path.getsize(file) == expected * np.dtype(dtype).itemsize * np.prod(shape)
        for i in range(expected, 8):
            store.append(_record(i))
        store.commit({"i": 8, "x": np.full(4, 8.0)}, step=8)
    _assert_draws(read_run(run_dir)[1], 8)


_KILLED_SCRIPT = """
import sys
import numpy as np
from weightspace.samplers.storage import RunStore
CONFIG, SPEC = {config!r}, {spec!r}
{record}
with RunStore(sys.argv[1], CONFIG, SPEC) as store:
    restored = store.restore({{"i": 0}})
    i = restored[0]["i"] if restored else 0
    while True:
        store.append(_record(i))
        i += 1
        store.commit({{"i": i}}, step=i)
"""


def _num_visible(run_dir):
    try:
        return len(read_run(run_dir)[1]["predictions"])
    except FileNotFoundError:
        return 0


def test_sigkill_at_a_random_moment_leaves_a_resumable_run(tmp_path):
    """The writer commits after every draw; it is killed once it has made progress, after a
    random delay, then resumed in a new process and killed again."""
    run_dir = tmp_path / "run"
    script = _KILLED_SCRIPT.format(config=CONFIG, spec=SPEC, record=inspect.getsource(_record))
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    seen = 0
    for attempt in range(2):
        with open(tmp_path / f"stderr{attempt}.txt", "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 60
        while _num_visible(run_dir) <= seen:
            assert proc.poll() is None, (tmp_path / f"stderr{attempt}.txt").read_text()
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.01)
        delay = np.random.default_rng().uniform(0.0, 0.5)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, arrays = read_run(run_dir)
        visible = len(arrays["predictions"])
        assert visible > seen, f"killed {delay:.3f} s after draw {seen}"
        _assert_draws(arrays, visible)
        seen = visible

    with RunStore(run_dir, CONFIG, SPEC) as store:
        state, step = store.restore({"i": 0})
        assert state["i"] == step == store.num_draws >= seen
        _assert_draws(read_run(run_dir)[1], step)
        store.append(_record(step))
        store.commit({"i": step + 1}, step=step + 1)
    _assert_draws(read_run(run_dir)[1], step + 1)


def test_config_must_match_except_num_samples(tmp_path):
    run_dir = tmp_path / "run"
    _write_run(run_dir, 2)
    changed = dict(CONFIG, seed=1, step_size=2e-3)
    with pytest.raises(ValueError) as e:
        RunStore(run_dir, changed, SPEC)
    for text in [str(run_dir), "seed: stored 0, requested 1",
                 "step_size: stored 0.001, requested 0.002"]:
        assert text in str(e.value)
    with pytest.raises(ValueError, match="extra: stored '<missing>', requested 1"):
        RunStore(run_dir, dict(CONFIG, extra=1), SPEC)
    with pytest.raises(ValueError, match="stats/accept_prob: stored"):
        RunStore(run_dir, CONFIG, dict(SPEC, **{"stats/accept_prob": ((4,), "float32")}))
    with pytest.raises(ValueError, match="stats/energy: stored '<missing>'"):
        RunStore(run_dir, CONFIG, dict(SPEC, **{"stats/energy": ((3,), "float32")}))

    with RunStore(run_dir, dict(CONFIG, num_samples=20), SPEC) as store:
        assert store.num_draws == 2
    assert read_run(run_dir)[0] == dict(CONFIG, num_samples=20)


def test_sharded_state_restores_onto_its_devices(tmp_path):
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("chain",))
    state = {
        "position": {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4),
                                         NamedSharding(mesh, P("chain")))},
        "step_size": jax.device_put(jnp.float32(0.1), NamedSharding(mesh, P())),
        "key": jax.random.key_data(jax.random.key(3)),
        "iteration": 17,
    }
    with RunStore(tmp_path / "run", CONFIG, SPEC) as store:
        store.commit(state, step=1)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            {k: v for k, v in state.items() if k != "iteration"})
    with RunStore(tmp_path / "run", CONFIG, SPEC) as store:
        restored, step = store.restore(dict(abstract, iteration=0))
    assert step == 1 and restored["iteration"] == 17 and isinstance(restored["iteration"], int)
    np.testing.assert_array_equal(restored["key"], state["key"])
    for got, want in [(restored["position"]["w"], state["position"]["w"]),
                      (restored["step_size"], state["step_size"])]:
        np.testing.assert_array_equal(got, want)
        assert got.sharding == want.sharding


def test_no_pickle_on_disk_or_when_reading(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _write_run(run_dir, 3)
    for root, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                head = f.read(2)
            rel = os.path.relpath(path, run_dir)
            if rel.startswith("draws" + os.sep):
                assert rel.endswith(".bin"), rel  # raw little-endian records
            elif name == "commit_success.txt":
                assert head == b"Ch", rel
            elif head == b"\x0c\xdb":
                assert rel.startswith("checkpoints" + os.sep), rel  # tensorstore OCDBT
            else:
                with open(path) as f:
                    json.load(f)  # config, spec, manifest, orbax metadata

    def refuse(*args, **kwargs):
        raise AssertionError("read_run unpickled something")

    for name in ["load", "loads", "Unpickler"]:
        monkeypatch.setattr(pickle, name, refuse)
    _, arrays = read_run(run_dir)
    _assert_draws(arrays, 3)


def test_read_run_of_a_non_run_directory_names_it(tmp_path):
    for path in [tmp_path / "missing", tmp_path]:
        with pytest.raises(FileNotFoundError, match=str(path)):
            read_run(path)


def test_bad_input_is_rejected_at_the_boundary(tmp_path):
    with pytest.raises(ValueError, match="name"):
        RunStore(tmp_path / "a", CONFIG, {"bad name": ((3,), "float32")})
    with pytest.raises(ValueError, match="dtype"):
        RunStore(tmp_path / "b", CONFIG, {"x": ((3,), "object")})
    with pytest.raises(ValueError, match="one file"):
        RunStore(tmp_path / "c", CONFIG, {"a/b": ((3,), "float32"), "a.b": ((3,), "float32")})
    with pytest.raises(ValueError, match="JSON"):
        RunStore(tmp_path / "d", {"f": lambda: 0}, SPEC)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("not a run")
    with pytest.raises(FileExistsError, match="notes.txt"):
        RunStore(tmp_path / "e", CONFIG, SPEC)
    with RunStore(tmp_path / "run", CONFIG, SPEC) as store:
        record = _record(0)
        with pytest.raises(ValueError, match="missing"):
            store.append({k: v for k, v in record.items() if k != "predictions"})
        with pytest.raises(ValueError, match="predictions.*float32.*float64"):
            store.append(dict(record, predictions=record["predictions"].astype(np.float64)))
        with pytest.raises(ValueError, match=r"\(3, 4, 2\)"):
            store.append({**record, "positions/layers/0/kernel": np.zeros((3, 4), np.float32)})
        store.commit({"i": 0}, step=5)
        with pytest.raises(ValueError, match="step"):
            store.commit({"i": 0}, step=5)
