"""Where MNIST, Fashion-MNIST, CIFAR-10/100 and IMDB come from, and how their
published files become arrays.

Each dataset is fetched from the files its authors publish, pinned by SHA-256:
MNIST's and Fashion-MNIST's gzipped IDX files, CIFAR's binary batches (not the
python batches, which are pickles) and the Large Movie Review tree. The URLs and
checksums are the ones tensorflow-datasets 4.9.10 pins for the same datasets
(its `url_checksums/` and `imdb_reviews/checksums.tsv`); a test reads them back
from the installed tfds. Nothing here touches the network: `weightspace.data.prepared`
fetches the files and calls `read`.

Row order is the source's: MNIST's and CIFAR's files in their order (CIFAR-10's
training set is data_batch_1 to data_batch_5), IMDB's reviews negative first,
then positive, each by review id.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One published file: where it is and what it must hash to."""

    url: str
    sha256: str

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Arrays of one dataset, by name: "train_image" (n, h, w, c) uint8,
# "train_label" (n,) int32, ... for images; "train_text" (bytes,) uint8 and
# "train_offset" (n + 1,) int64 (review i is text[offset[i]:offset[i + 1]],
# utf-8) for text; the same for "test_".
Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Source:
    files: tuple[SourceFile, ...]
    read: Callable[[dict[str, Path]], Arrays]  # file name -> local path


_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# --- MNIST and Fashion-MNIST: IDX files --------------------------------------

def read_idx(data: bytes, *, what: str = "IDX file") -> np.ndarray:
    """An IDX array of unsigned bytes: two zero bytes, type 0x08, the number of
    dimensions, their sizes as big-endian uint32, then the values."""
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise ValueError(f"{what} is not an IDX file of unsigned bytes "
                         f"(header {data[:4].hex()!r}, expected 000008 and a rank)")
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{what} holds {values.size} values, its header says "
                         f"{shape} ({int(np.prod(shape))})")
    return values.reshape(shape)


def _idx_files(base: str, sha256s: tuple[str, ...]) -> tuple[SourceFile, ...]:
    return tuple(SourceFile(base + name, sha) for name, sha in zip(_IDX_NAMES, sha256s))


def _read_idx_dataset(paths: dict[str, Path]) -> Arrays:
    def idx(name: str) -> np.ndarray:
        with gzip.open(paths[name], "rb") as f:
            return read_idx(f.read(), what=name)

    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = idx(f"{prefix}-images-idx3-ubyte.gz")
        labels = idx(f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{prefix}-images has shape {images.shape} and "
                             f"{prefix}-labels {labels.shape}: expected (n, h, w) and (n,)")
        arrays[f"{split}_image"] = images[..., None]
        arrays[f"{split}_label"] = labels.astype(np.int32)
    return arrays


# --- CIFAR: binary batches ---------------------------------------------------

def _tar_members(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of these members of a .tar.gz, read in one pass."""
    wanted, found = set(names), {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path.name} lacks {', '.join(missing)}")
    return found


def _cifar_records(data: bytes, label_bytes: int, label_index: int,
                   what: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) uint8 and labels (n,) int32 of a CIFAR binary batch:
    records of `label_bytes` label bytes, then 1,024 red, green and blue bytes."""
    record = label_bytes + 3 * 32 * 32
    if len(data) % record:
        raise ValueError(f"{what} is {len(data)} bytes, not a whole number of "
                         f"{record}-byte records")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, label_index].astype(np.int32)


def _cifar_reader(archive: str, train: tuple[str, ...], test: str, label_bytes: int,
                  label_index: int) -> Callable[[dict[str, Path]], Arrays]:
    def read(paths: dict[str, Path]) -> Arrays:
        members = _tar_members(paths[archive], (*train, test))
        arrays = {}
        for split, names in (("train", train), ("test", (test,))):
            parts = [_cifar_records(members[n], label_bytes, label_index, n) for n in names]
            arrays[f"{split}_image"] = np.concatenate([p[0] for p in parts])
            arrays[f"{split}_label"] = np.concatenate([p[1] for p in parts])
        return arrays
    return read


# --- IMDB: the aclImdb text tree ---------------------------------------------

_REVIEW = re.compile(r"aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt")


def _read_imdb(paths: dict[str, Path]) -> Arrays:
    """Labelled reviews of aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt
    (label 0 negative, 1 positive, as in tfds); unsup/ and the url lists are left out."""
    reviews: dict[str, list[tuple[int, int, bytes]]] = {"train": [], "test": []}
    with tarfile.open(paths["aclImdb_v1.tar.gz"], "r:gz") as tar:
        for member in tar:
            match = _REVIEW.fullmatch(member.name)
            if match and member.isfile():
                split, sentiment, review_id, _ = match.groups()
                reviews[split].append((int(sentiment == "pos"), int(review_id),
                                       tar.extractfile(member).read()))
    arrays = {}
    for split, rows in reviews.items():
        if not rows:
            raise ValueError(f"aclImdb_v1.tar.gz has no reviews under aclImdb/{split}/")
        rows.sort(key=lambda row: row[:2])
        texts = [text for _, _, text in rows]
        arrays[f"{split}_text"] = np.frombuffer(b"".join(texts), np.uint8)
        arrays[f"{split}_offset"] = np.concatenate(
            [[0], np.cumsum([len(t) for t in texts])]).astype(np.int64)
        arrays[f"{split}_label"] = np.array([label for label, _, _ in rows], np.int32)
    return arrays


SOURCES: dict[str, Source] = {
    "mnist": Source(_idx_files(_MNIST, (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
        _read_idx_dataset),
    "fashion_mnist": Source(_idx_files(_FASHION, (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")),
        _read_idx_dataset),
    "cifar10": Source(
        (SourceFile("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
        _cifar_reader("cifar-10-binary.tar.gz",
                      tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
                      "cifar-10-batches-bin/test_batch.bin", label_bytes=1, label_index=0)),
    # Records hold the coarse label (20 classes), then the fine one (100): the fine one is kept.
    "cifar100": Source(
        (SourceFile("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                    "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),),
        _cifar_reader("cifar-100-binary.tar.gz", ("cifar-100-binary/train.bin",),
                      "cifar-100-binary/test.bin", label_bytes=2, label_index=1)),
    "imdb_reviews": Source(
        (SourceFile("http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),),
        _read_imdb),
}
