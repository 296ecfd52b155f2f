"""Datasets prepared on disk by weightspace: fetch, check, convert, move into place.

`prepare(name, data_dir)` fetches a dataset's published files (pooch: each is
downloaded to a temporary name, its SHA-256 checked against the pinned one in
`weightspace.data.sources`, then renamed), reads them into arrays, and writes
those as .npy files plus a manifest into a temporary folder that is renamed into
place only when complete. A preparation killed at any moment leaves either
nothing or a folder whose name no loader reads, and the next `prepare` starts
over. `open_prepared` is what the loaders read: the arrays memory-mapped, so
a process of a multi-host job reads only its own training rows from disk.

Layout under data_dir:
    weightspace/<name>/manifest.json, <array>.npy   the prepared dataset
    weightspace/downloads/<name>/<file>             published files (removed
                                                    once prepared, unless kept)
    weightspace/.partial-<name>-<host>-<pid>-<tag>/ a preparation in progress

Why pooch and the authors' files, not Hugging Face `datasets` and its parquet
shards: the checksums of the authors' files are published and pinned by
tensorflow-datasets (a test compares ours with them), whereas parquet exports
on the Hub change with the Hub's conversions and could not be checked from
here; `datasets` would also bring its own cache (a second copy on disk) and
dill-based fingerprinting, and this library loads nothing through pickle.
pooch is the small, well-kept library that does the one thing needed (a
checked, atomic download with retries); reading IDX, CIFAR binary and the
aclImdb tree takes a few lines of numpy each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import secrets
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weightspace.data.sources import SOURCES, Source
from weightspace.jsonio import fsync_dir, read_json, write_json

FORMAT = 1
MANIFEST = "manifest.json"
FOLDER = "weightspace"  # under data_dir, beside any tensorflow-datasets folders
MIRROR_ENV = "WEIGHTSPACE_DATA_MIRROR"
DOWNLOAD_TIMEOUT_S = 60  # per network read, not per file
DOWNLOAD_RETRIES = 2


class DatasetUnavailable(FileNotFoundError):
    """A dataset that is not prepared in its data directory and could not be
    fetched or read. The message is one line: the dataset, the directory, why,
    and the command that prepares it."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """data_dir, else $WEIGHTSPACE_DATA_DIR, else $TFDS_DATA_DIR, else
    ~/tensorflow_datasets (where tensorflow-datasets keeps its own copies,
    which the loaders also read)."""
    if data_dir is None:
        data_dir = (os.environ.get("WEIGHTSPACE_DATA_DIR") or os.environ.get("TFDS_DATA_DIR")
                    or os.path.join("~", "tensorflow_datasets"))
    return Path(os.path.expanduser(os.fspath(data_dir))).absolute()


def prepared_dir(name: str, root: Path) -> Path:
    return root / FOLDER / name


def downloads_dir(name: str, root: Path) -> Path:
    return root / FOLDER / "downloads" / name


def unavailable(name: str, root: Path, reason: str) -> DatasetUnavailable:
    """The one-line error for dataset `name` missing from `root`, and why."""
    command = f"weightspace data prepare {name} --data-dir {shlex.quote(str(root))}"
    return DatasetUnavailable(
        f"dataset {name!r} is not prepared in {root} and {reason}; prepare it with "
        f"`{command}` where the network is reachable (or with its published files "
        f"copied into {downloads_dir(name, root)}), or point --data-dir (data_dir=) "
        f"at a directory that holds it")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# --- prepare -----------------------------------------------------------------

def prepare(name: str, data_dir: str | os.PathLike | None = None, *,
            mirror: str | None = None, progress: bool = True,
            keep_downloads: bool = False) -> Path:
    """Fetch, check and convert dataset `name` into data_dir; its folder.

    Does nothing when it is already prepared. mirror: an http(s) URL that
    serves the published files as <mirror>/<name>/<file name> (default
    $WEIGHTSPACE_DATA_MIRROR, else the authors' URLs; MNIST's and
    Fashion-MNIST's files share names); checksums are checked either way.
    Files already in `downloads_dir` with the right checksum are not
    downloaded again. Raises DatasetUnavailable when the files cannot be
    fetched, fail their checksum or cannot be read.
    """
    if not isinstance(name, str) or name not in SOURCES:
        raise ValueError(f"cannot prepare dataset name={name!r}; the downloaded datasets "
                         f"are: {', '.join(SOURCES)}")
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    if mirror is not None and (not isinstance(mirror, str)
                               or not mirror.startswith(("http://", "https://"))):
        raise ValueError(f"mirror={mirror!r} is not allowed: it must be an http:// or "
                         f"https:// URL (from the argument or ${MIRROR_ENV})")
    root = resolve_data_dir(data_dir)
    final = prepared_dir(name, root)
    if (final / MANIFEST).is_file():
        return final
    source = SOURCES[name]
    step = "fetched"
    try:
        paths = _fetch(name, source, root, mirror, progress)
        step = "read"
        arrays = source.read(paths)
    except (OSError, ValueError) as err:
        if (final / MANIFEST).is_file():  # another process prepared it meanwhile
            return final
        raise unavailable(name, root, f"could not be {step} ({first_line(err)})") from err
    _write(name, source, arrays, final)
    if not keep_downloads:
        shutil.rmtree(downloads_dir(name, root), ignore_errors=True)
        with contextlib.suppress(OSError):  # still holds another dataset's files
            downloads_dir(name, root).parent.rmdir()
    return final


def _fetch(name: str, source: Source, root: Path, mirror: str | None,
           progress: bool) -> dict[str, Path]:
    """Local paths of the dataset's published files, each checked against its SHA-256."""
    # Imported here: pooch (and requests under it) are needed only to prepare.
    import pooch

    # Its per-file "Downloading ..." and "will retry" lines would precede the
    # one-line error of a failed fetch; the progress bar says enough.
    pooch.get_logger().setLevel("WARNING")
    urls = {f.name: (f"{mirror.rstrip('/')}/{name}/{f.name}" if mirror else f.url)
            for f in source.files}
    fetcher = pooch.create(path=downloads_dir(name, root), base_url=mirror or "",
                           registry={f.name: f"sha256:{f.sha256}" for f in source.files},
                           urls=urls, retry_if_failed=DOWNLOAD_RETRIES)
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT_S)
    return {f.name: Path(fetcher.fetch(f.name, downloader=downloader)) for f in source.files}


def _write(name: str, source: Source, arrays: dict[str, np.ndarray], final: Path) -> None:
    """The arrays and their manifest into a temporary folder, renamed to `final`
    once every byte is on disk."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent, name)
    # Unique per call: processes sharing the folder (hosts of a pod on one file
    # system) or threads of one process may prepare the same dataset at once.
    partial = parent / (f".partial-{name}-{socket.gethostname()}-{os.getpid()}-"
                        f"{secrets.token_hex(4)}")
    partial.mkdir()
    entries = {}
    for key, array in arrays.items():
        path = partial / f"{key}.npy"
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        entries[key] = {"file": path.name, "shape": list(array.shape),
                        "dtype": array.dtype.str, "bytes": path.stat().st_size}
    # The manifest is written last: a folder with one holds every array.
    write_json(partial / MANIFEST, {
        "format": FORMAT, "dataset": name, "arrays": entries,
        "sources": [dataclasses.asdict(f) for f in source.files]})
    try:
        os.rename(partial, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process finished first
        return
    fsync_dir(parent)


def _remove_abandoned(parent: Path, name: str) -> None:
    """Partial folders of `name` left on this host by processes that no longer run."""
    host = socket.gethostname()
    for partial in parent.glob(f".partial-{name}-{host}-*"):
        pid = partial.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- read --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PreparedSplit(Sequence):
    """One split, memory-mapped: `split[i]` is {"image", "label"} or
    {"text" (utf-8 bytes), "label"}; `images(rows)` and `labels(rows)` read many."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        example = {"label": int(self.arrays["label"][i])}
        if "image" in self.arrays:
            example["image"] = np.asarray(self.arrays["image"][i])
        else:
            offset = self.arrays["offset"]
            example["text"] = self.arrays["text"][offset[i]:offset[i + 1]].tobytes()
        return example

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.arrays["image"].shape[1:])

    def images(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.arrays["image"][np.asarray(rows, np.int64)])

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.arrays["label"][np.asarray(rows, np.int64)], np.int32)


def open_prepared(name: str, root: Path) -> tuple[PreparedSplit, PreparedSplit,
                                                  dict[str, Any]] | None:
    """The train and test splits of dataset `name` prepared in `root`, and its
    provenance; None when it is not there. A folder that does not match its
    manifest (changed after it was prepared) is DatasetUnavailable."""
    folder = prepared_dir(name, root)
    manifest = read_json(folder / MANIFEST, default=None)
    if manifest is None:
        return None

    def damaged(why: str) -> DatasetUnavailable:
        return unavailable(name, root, f"its prepared copy in {folder} is damaged ({why}: "
                                       f"delete that folder and prepare it again)")

    if manifest.get("format") != FORMAT or manifest.get("dataset") != name:
        raise damaged(f"manifest says format {manifest.get('format')!r} of dataset "
                      f"{manifest.get('dataset')!r}, expected format {FORMAT} of {name!r}")
    splits: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    for key, entry in manifest["arrays"].items():
        path = folder / entry["file"]
        size = path.stat().st_size if path.is_file() else None
        if size != entry["bytes"]:
            raise damaged(f"{path.name} is {size} bytes, its manifest says {entry['bytes']}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise damaged(f"{path.name} is not a .npy file ({first_line(err)})") from err
        if (list(array.shape), array.dtype.str) != (entry["shape"], entry["dtype"]):
            raise damaged(f"{path.name} holds {array.dtype.str} {array.shape}, its "
                          f"manifest says {entry['dtype']} {tuple(entry['shape'])}")
        split, _, field = key.partition("_")
        splits[split][field] = array
    provenance = {"source": "weightspace prepared", "prepared_dir": str(folder),
                  "data_dir": str(root),
                  "files": [f"{s['url']} sha256:{s['sha256']}" for s in manifest["sources"]]}
    return PreparedSplit(splits["train"]), PreparedSplit(splits["test"]), provenance
