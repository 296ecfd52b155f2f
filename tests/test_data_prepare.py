"""`ws.data.prepare` and `weightspace data prepare`, offline: tiny files in each
source's own format (gzipped IDX, CIFAR binary batches in a .tar.gz, the aclImdb
tree) served over HTTP on 127.0.0.1 as the authors' sites would serve them, with
the pinned checksums replaced by the tiny files' own. A wrong checksum, a
preparation killed while downloading or while writing, and a dataset that cannot
be fetched are each a clear error and leave nothing a later load trusts."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from processes import free_port
from weightspace import data
from weightspace.cli import main
from weightspace.data import prepared, sources

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}
# (sentiment, review id, text) in the order of the tree; loaded negative first,
# then positive, each by id (10 after 3: ids compare as numbers).
TRAIN_REVIEWS = [("pos", 1, "A fine film, fine!"), ("neg", 10, "dull<br />dull"),
                 ("neg", 3, "Not fine")]
TEST_REVIEWS = [("pos", 2, "fine"), ("neg", 0, "caf\u00e9 dull")]


# --- the published files, in miniature ---------------------------------------

def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _targz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _cifar_batch(images: np.ndarray, labels: list[np.ndarray]) -> bytes:
    """Records: the label bytes, then the image's red, green and blue planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([*(l[:, None] for l in labels), planes], axis=1).astype(
        np.uint8).tobytes()


def _published(name: str, rng: np.random.Generator) -> tuple[dict[str, bytes], dict]:
    """(file name -> bytes as published, what a load must give back)."""
    if name == "imdb_reviews":
        tree = {f"aclImdb/{split}/{sentiment}/{i}_{7 if sentiment == 'pos' else 2}.txt":
                text.encode() for split, reviews in (("train", TRAIN_REVIEWS),
                                                     ("test", TEST_REVIEWS))
                for sentiment, i, text in reviews}
        tree["aclImdb/train/unsup/0_0.txt"] = b"unlabelled, left out"
        tree["aclImdb/train/urls_pos.txt"] = b"http://www.imdb.com/title/tt0000001/\n"
        return {"aclImdb_v1.tar.gz": _targz(tree)}, {}
    h, w, c = IMAGE_SHAPES[name]
    n_train, n_test = 10, 3
    images = rng.integers(0, 256, (n_train + n_test, h, w, c), dtype=np.uint8)
    num_classes = 100 if name == "cifar100" else 10
    labels = rng.integers(0, num_classes, n_train + n_test)
    expected = {"x_train": images[:n_train], "y_train": labels[:n_train],
                "x_test": images[n_train:], "y_test": labels[n_train:]}
    if c == 1:
        files = {"train-images-idx3-ubyte.gz": _idx(images[:n_train, ..., 0]),
                 "train-labels-idx1-ubyte.gz": _idx(labels[:n_train]),
                 "t10k-images-idx3-ubyte.gz": _idx(images[n_train:, ..., 0]),
                 "t10k-labels-idx1-ubyte.gz": _idx(labels[n_train:])}
    elif name == "cifar10":
        batches = {f"cifar-10-batches-bin/data_batch_{b + 1}.bin":
                   _cifar_batch(images[2 * b:2 * b + 2], [labels[2 * b:2 * b + 2]])
                   for b in range(5)}
        batches["cifar-10-batches-bin/test_batch.bin"] = _cifar_batch(
            images[n_train:], [labels[n_train:]])
        batches["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
        files = {"cifar-10-binary.tar.gz": _targz(batches)}
    else:
        coarse = labels // 5
        files = {"cifar-100-binary.tar.gz": _targz({
            "cifar-100-binary/train.bin": _cifar_batch(
                images[:n_train], [coarse[:n_train], labels[:n_train]]),
            "cifar-100-binary/test.bin": _cifar_batch(
                images[n_train:], [coarse[n_train:], labels[n_train:]])})}
    return files, expected


class _Site(http.server.SimpleHTTPRequestHandler):
    """Serves the site folder; records each request; can stall half-way
    through one file until released (to kill a download in flight)."""

    requests: list[str]
    stall_on: str | None = None
    gate: threading.Barrier | None = None  # holds the first file until all callers ask
    stalled: threading.Event
    release: threading.Event

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.requests.append(name)
        if self.gate is not None and name == "train-images-idx3-ubyte.gz":
            self.gate.wait()
        if name != self.stall_on:
            return super().do_GET()
        content = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content[:len(content) // 2])
        self.wfile.flush()
        self.stalled.set()
        self.release.wait(60)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The published files of all five datasets, and what each must load as."""
    folder = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(0)
    expected, pins = {}, {}
    for name in sources.SOURCES:
        files, expected[name] = _published(name, rng)
        pins[name] = []
        (folder / name).mkdir()
        for published in sources.SOURCES[name].files:
            content = files[published.name]
            (folder / name / published.name).write_bytes(content)
            pins[name].append((published.url, hashlib.sha256(content).hexdigest()))
    return folder, expected, pins


@pytest.fixture
def server(site):
    folder = site[0]
    handler = type("Site", (_Site,), {"requests": [], "stalled": threading.Event(),
                                      "release": threading.Event()})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield handler
    handler.release.set()
    httpd.shutdown()
    httpd.server_close()


def _pin(monkeypatch, pins):
    for name, files in pins.items():
        monkeypatch.setitem(sources.SOURCES, name, sources.Source(
            tuple(sources.SourceFile(url, sha) for url, sha in files),
            sources.SOURCES[name].read))


@pytest.fixture
def pinned(monkeypatch, site, server):
    """The tiny files' checksums pinned, fetched from the local server."""
    _pin(monkeypatch, site[2])
    monkeypatch.setenv(prepared.MIRROR_ENV, server.url)
    return server


def _pixels(ds, x):
    mean = np.asarray(ds.info["mean"], np.float32)
    std = np.asarray(ds.info["std"], np.float32)
    return np.round((x * std + mean) * 255).astype(np.int64)


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}/files"  # nothing listens there


# --- pinned sources ----------------------------------------------------------

def test_pinned_urls_and_checksums_are_the_ones_tensorflow_datasets_pins():
    import tensorflow_datasets as tfds

    root = Path(tfds.__file__).parent
    tables = [*root.glob("url_checksums/*.txt"), root / "datasets/imdb_reviews/checksums.tsv"]
    tfds_pins = {}
    for table in tables:
        for line in table.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3:
                tfds_pins[fields[0]] = fields[2]
    for name, source in sources.SOURCES.items():
        for f in source.files:
            assert tfds_pins.get(f.url) == f.sha256, (name, f.url)


# --- each source format ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(IMAGE_SHAPES))
def test_prepared_images_load_as_published_in_source_order(tmp_path, site, pinned, name):
    folder = data.prepare(name, tmp_path, progress=False)
    assert folder == tmp_path / "weightspace" / name
    ds = data.load(name, data_dir=tmp_path, download=False)
    expected = site[1][name]
    assert ds.x_train.shape == (10, *IMAGE_SHAPES[name]) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(_pixels(ds, ds.x_train), expected["x_train"])
    np.testing.assert_array_equal(_pixels(ds, ds.x_test), expected["x_test"])
    np.testing.assert_array_equal(ds.y_train, expected["y_train"])  # fine labels for cifar100
    np.testing.assert_array_equal(ds.y_test, expected["y_test"])
    assert ds.y_train.dtype == np.int32
    assert ds.info["source"] == "weightspace prepared"
    assert ds.info["files"] == [f"{f.url} sha256:{f.sha256}" for f in sources.SOURCES[name].files]
    assert not (tmp_path / "weightspace" / "downloads" / name).exists()  # removed once prepared


def test_prepared_reviews_load_negative_then_positive_by_id(tmp_path, pinned):
    data.prepare("imdb_reviews", tmp_path, progress=False)
    train, test, _ = prepared.open_prepared("imdb_reviews", tmp_path)
    assert [train[i]["text"].decode() for i in range(len(train))] == [
        "Not fine", "dull<br />dull", "A fine film, fine!"]
    assert [test[i]["text"].decode() for i in range(len(test))] == ["caf\u00e9 dull", "fine"]
    ds = data.load("imdb_reviews", data_dir=tmp_path, download=False, max_len=4)
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1])
    np.testing.assert_array_equal(ds.y_test, [0, 1])
    vocabulary = ds.info["vocabulary"]
    assert vocabulary[:3] == ("<pad>", "<oov>", "fine")  # fine 3, dull 2, then a, film, not
    words = [[vocabulary[i] for i in row if i] for row in ds.x_train]
    assert words == [["not", "fine"], ["dull", "dull"], ["a", "fine", "film", "fine"]]


def test_rows_and_n_train_read_the_same_rows_from_a_prepared_copy(tmp_path, pinned):
    data.prepare("cifar10", tmp_path, progress=False)
    full = data.load("cifar10", data_dir=tmp_path, download=False)
    part = data.downloaded.load_cifar10(data_dir=tmp_path, download=False,
                                        rows=lambda n: (3, 7))
    np.testing.assert_array_equal(part.x_train, full.x_train[3:7])
    assert (part.num_train, part.train_offset) == (10, 3)
    sub = data.load("cifar10", data_dir=tmp_path, download=False, n_train=4, seed=2)
    kept = data.dataset.subsample_indices(10, 4, 2)
    np.testing.assert_array_equal(sub.y_train, full.y_train[kept])


def test_first_use_prepares_once_and_later_loads_fetch_nothing(tmp_path, pinned):
    data.load("mnist", data_dir=tmp_path)
    assert sorted(pinned.requests) == sorted(f.name for f in sources.SOURCES["mnist"].files)
    data.load("mnist", data_dir=tmp_path)
    data.prepare("mnist", tmp_path)
    assert len(pinned.requests) == 4


def test_files_already_in_the_downloads_folder_are_not_fetched(tmp_path, site, monkeypatch):
    _pin(monkeypatch, site[2])
    downloads = tmp_path / "weightspace" / "downloads" / "cifar100"
    downloads.mkdir(parents=True)
    (downloads / "cifar-100-binary.tar.gz").write_bytes(
        (site[0] / "cifar100" / "cifar-100-binary.tar.gz").read_bytes())
    data.prepare("cifar100", tmp_path, mirror=_unreachable(), progress=False)
    assert data.load("cifar100", data_dir=tmp_path, download=False).num_classes == 100


# --- what must fail, and what it must leave ----------------------------------

def test_a_checksum_mismatch_is_a_clear_error_and_keeps_nothing(tmp_path, site, pinned,
                                                                monkeypatch):
    pins = dict(site[2])
    url, sha = pins["mnist"][0]
    wrong = "0" * 64
    pins["mnist"] = [(url, wrong), *pins["mnist"][1:]]
    _pin(monkeypatch, pins)
    with pytest.raises(data.DatasetUnavailable) as err:
        data.prepare("mnist", tmp_path, progress=False)
    message = str(err.value)
    assert "\n" not in message and "'mnist'" in message and str(tmp_path) in message
    assert "hash" in message and wrong in message and sha in message
    assert f"weightspace data prepare mnist --data-dir {tmp_path}" in message
    assert not (tmp_path / "weightspace" / "mnist").exists()
    downloads = tmp_path / "weightspace" / "downloads" / "mnist"
    assert not (downloads / "train-images-idx3-ubyte.gz").exists()


def _prepare_in_child(tmp_path, pins, mirror, kill_at_array=None) -> subprocess.Popen:
    """`prepare("mnist")` in a child process with the tiny files pinned; with
    kill_at_array=k it SIGKILLs itself half-way through writing array k."""
    (tmp_path / "pins.json").write_text(json.dumps(pins))
    script = f"""
import json, os, signal
import numpy as np
from weightspace.data import prepared, sources
for name, files in json.load(open({str(tmp_path / 'pins.json')!r})).items():
    sources.SOURCES[name] = sources.Source(
        tuple(sources.SourceFile(u, h) for u, h in files), sources.SOURCES[name].read)
kill_at, saved, numpy_save = {kill_at_array!r}, [], np.save
def save(f, array, **kwargs):
    if len(saved) == kill_at:
        f.write(b"\\x93NUMPY half an array")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    saved.append(array.shape)
    numpy_save(f, array, **kwargs)
np.save = save
prepared.prepare("mnist", {str(tmp_path / 'data')!r}, mirror={mirror!r}, progress=False)
"""
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)


def _assert_nothing_trusted_then_prepare_again(tmp_path, site, pinned, monkeypatch):
    data_dir = tmp_path / "data"
    assert not (data_dir / "weightspace" / "mnist").exists()
    with pytest.raises(data.DatasetUnavailable, match="download=False"):
        data.load("mnist", data_dir=data_dir, download=False)
    _pin(monkeypatch, site[2])
    data.prepare("mnist", data_dir, progress=False)
    ds = data.load("mnist", data_dir=data_dir, download=False)
    np.testing.assert_array_equal(_pixels(ds, ds.x_train), site[1]["mnist"]["x_train"])
    assert not list((data_dir / "weightspace").glob(".partial-*"))


def test_a_preparation_killed_while_downloading_leaves_nothing_a_load_trusts(
        tmp_path, site, pinned, monkeypatch):
    pinned.stall_on = "t10k-images-idx3-ubyte.gz"
    child = _prepare_in_child(tmp_path, site[2], pinned.url)
    try:
        assert pinned.stalled.wait(60), child.stderr.read1().decode()
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL  # killed mid-download, not finished
    finally:
        child.kill()
        pinned.release.set()
    pinned.stall_on = None
    _assert_nothing_trusted_then_prepare_again(tmp_path, site, pinned, monkeypatch)


def test_a_preparation_killed_while_writing_leaves_nothing_a_load_trusts(
        tmp_path, site, pinned, monkeypatch):
    child = _prepare_in_child(tmp_path, site[2], pinned.url, kill_at_array=2)
    assert child.wait(120) == -signal.SIGKILL, child.stderr.read().decode()
    partial = list((tmp_path / "data" / "weightspace").glob(".partial-mnist-*"))
    assert len(partial) == 1 and (partial[0] / "train_label.npy").exists()
    assert not (partial[0] / prepared.MANIFEST).exists()
    _assert_nothing_trusted_then_prepare_again(tmp_path, site, pinned, monkeypatch)


def test_processes_preparing_one_folder_at_once_leave_one_copy(tmp_path, site, pinned):
    # Both start fetching before either has a copy; whichever finishes second
    # loses the rename, or finds its downloads gone, and returns the winner's copy.
    pinned.gate = threading.Barrier(2, timeout=60)
    children = [_prepare_in_child(tmp_path, site[2], pinned.url) for _ in range(2)]
    for child in children:
        assert child.wait(120) == 0, child.stderr.read().decode()
    assert pinned.requests.count("train-images-idx3-ubyte.gz") == 2
    folder = tmp_path / "data" / "weightspace"
    assert sorted(p.name for p in folder.iterdir()) == ["mnist"]  # no partial, no downloads
    ds = data.load("mnist", data_dir=tmp_path / "data", download=False)
    np.testing.assert_array_equal(ds.y_train, site[1]["mnist"]["y_train"])


def test_a_copy_finished_second_is_dropped_and_the_first_kept(tmp_path):
    final = prepared.prepared_dir("mnist", tmp_path)
    first = {"train_label": np.arange(3, dtype=np.int32)}
    prepared._write("mnist", sources.SOURCES["mnist"], first, final)
    prepared._write("mnist", sources.SOURCES["mnist"], {"train_label": np.zeros(3, np.int32)},
                    final)  # its rename onto the finished folder fails
    np.testing.assert_array_equal(np.load(final / "train_label.npy"), first["train_label"])
    assert [p.name for p in final.parent.iterdir()] == ["mnist"]


def test_a_damaged_prepared_copy_is_named_not_read(tmp_path, pinned):
    folder = data.prepare("fashion_mnist", tmp_path, progress=False)
    with open(folder / "train_image.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load("fashion_mnist", data_dir=tmp_path, download=False)
    assert "damaged" in str(err.value) and "train_image.npy is 100 bytes" in str(err.value)


def test_a_dataset_that_cannot_be_fetched_names_dataset_folder_and_command(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv(prepared.MIRROR_ENV, _unreachable())
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load("imdb_reviews", data_dir=tmp_path)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in message
    assert "'imdb_reviews'" in message and "ConnectionError" in message
    assert f"weightspace data prepare imdb_reviews --data-dir {tmp_path}" in message


def test_default_data_dir_is_weightspace_then_tfds_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTSPACE_DATA_DIR", str(tmp_path / "ws"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert prepared.resolve_data_dir(None) == tmp_path / "ws"
    monkeypatch.delenv("WEIGHTSPACE_DATA_DIR")
    assert prepared.resolve_data_dir(None) == tmp_path / "tfds"
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert prepared.resolve_data_dir(None) == tmp_path / "tensorflow_datasets"
    assert prepared.resolve_data_dir("rel") == Path.cwd() / "rel"


# --- the command line --------------------------------------------------------

def test_data_prepare_command_prepares_each_dataset_named(tmp_path, pinned, capsys):
    assert main(["data", "prepare", "mnist", "cifar10", "--data-dir", str(tmp_path),
                 "--no-progress", "--keep-downloads"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"mnist: 10 training and 3 test rows in {tmp_path / 'weightspace' / 'mnist'}",
                   f"cifar10: 10 training and 3 test rows in "
                   f"{tmp_path / 'weightspace' / 'cifar10'}"]
    assert (tmp_path / "weightspace" / "downloads" / "cifar10" / "cifar-10-binary.tar.gz").exists()


@pytest.mark.parametrize("mirror", ["ftp://example.org/data", "127.0.0.1:8000", 3])
def test_a_mirror_that_is_not_an_http_url_is_refused_before_anything_is_fetched(
        tmp_path, mirror):
    with pytest.raises(ValueError, match=f"mirror={mirror!r} is not allowed: it must be an "
                                         f"http:// or https:// URL"):
        data.prepare("mnist", tmp_path, mirror=mirror)
    assert not (tmp_path / "weightspace").exists()


def test_a_published_file_that_cannot_be_read_is_named(tmp_path, site, monkeypatch):
    broken = tmp_path / "site" / "cifar10"
    broken.mkdir(parents=True)
    content = _targz({"cifar-10-batches-bin/test_batch.bin": b"\0" * 3073})  # no training batches
    (broken / "cifar-10-binary.tar.gz").write_bytes(content)
    pins = {"cifar10": [(sources.SOURCES["cifar10"].files[0].url,
                         hashlib.sha256(content).hexdigest())]}
    _pin(monkeypatch, pins)
    downloads = tmp_path / "data" / "weightspace" / "downloads" / "cifar10"
    downloads.mkdir(parents=True)
    (downloads / "cifar-10-binary.tar.gz").write_bytes(content)
    with pytest.raises(data.DatasetUnavailable, match=r"could not be read \(ValueError: "
                       r"cifar-10-binary.tar.gz lacks cifar-10-batches-bin/data_batch_1.bin"):
        data.prepare("cifar10", tmp_path / "data", mirror=_unreachable())


def test_data_prepare_rejects_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "svhn"])
    assert "invalid choice: 'svhn'" in capsys.readouterr().err


def test_data_prepare_with_a_bad_mirror_is_one_line(tmp_path, capsys):
    assert main(["data", "prepare", "mnist", "--data-dir", str(tmp_path),
                 "--mirror", "ftp://example.org"]) == 2
    assert capsys.readouterr().err == ("weightspace data: error: mirror='ftp://example.org' is "
                                       "not allowed: it must be an http:// or https:// URL "
                                       "(from the argument or $WEIGHTSPACE_DATA_MIRROR)\n")


def test_compare_on_a_dataset_that_cannot_be_fetched_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, prepared.MIRROR_ENV: _unreachable()}
    result = subprocess.run(
        [sys.executable, "-m", "weightspace.cli", "compare", "--preset", "paper-cifar10",
         "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
         "--no-compile-cache"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightspace compare: error: dataset 'cifar10'")
    assert str(tmp_path / "data") in lines[0]
    assert f"weightspace data prepare cifar10 --data-dir {tmp_path / 'data'}" in lines[0]
