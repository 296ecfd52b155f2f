"""MNIST, Fashion-MNIST, CIFAR-10/100 and IMDB, without TensorFlow.

Each loader reads, from data_dir, the copy `weightspace data prepare` made
(`weightspace.data.prepared`: .npy files, memory-mapped), else a copy that
tensorflow-datasets prepared as array_record files; with neither, and
`download=True`, it prepares the dataset first. Examples are read by index, so
a process of a multi-host job reads only its own training rows. Every
transformation uses constants or statistics of the whole training split, never
of the rows at hand: each process, and each `n_train` subsample, sees the same
encoding. No data augmentation anywhere (it would change the likelihood).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from weightspace.checks import int_at_least
from weightspace.data import prepared
from weightspace.data.dataset import Dataset, RowsFn, local_block, subsample_indices

PAD_ID = 0
OOV_ID = 1
_PAD_TOKEN, _OOV_TOKEN = "<pad>", "<oov>"  # cannot collide with a word of _WORD
_WORD = re.compile(r"[a-z0-9']+")


@dataclasses.dataclass(frozen=True)
class _ImageSource:
    """How one tfds image dataset becomes a `Dataset`.

    mean, std: per channel, of pixels scaled to [0, 1].
    """

    tfds_name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


# The usual published per-channel statistics of each training set. Fixed
# constants rather than statistics of the rows loaded, so a process that reads
# only its rows standardizes exactly like a single-process run.
_IMAGE_SOURCES = {
    "mnist": _ImageSource("mnist", 10, (0.1307,), (0.3081,)),
    "fashion_mnist": _ImageSource("fashion_mnist", 10, (0.2860,), (0.3530,)),
    "cifar10": _ImageSource("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # "label" is the fine label (100 classes); "coarse_label" (20) is ignored.
    "cifar100": _ImageSource("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMDB_TFDS_NAME = "imdb_reviews/plain_text"


# --- public loaders ----------------------------------------------------------

def load_mnist(*, seed: int = 0, data_dir: str | os.PathLike | None = None,
               n_train: int | None = None, rows: RowsFn | None = None,
               download: bool = True) -> Dataset:
    """MNIST: x (n, 28, 28, 1) float32, standardized; y (n,) int32 in [0, 10).

    60,000 training and 10,000 test images. `n_train` keeps that many training
    rows drawn with `seed`; `rows(num_train) -> (start, stop)` keeps one
    process's block of them. The test split is always whole.
    """
    return _load_images("mnist", _IMAGE_SOURCES["mnist"], seed=seed, data_dir=data_dir,
                        n_train=n_train, rows=rows, download=download)


def load_fashion_mnist(*, seed: int = 0, data_dir: str | os.PathLike | None = None,
                       n_train: int | None = None, rows: RowsFn | None = None,
                       download: bool = True) -> Dataset:
    """Fashion-MNIST: x (n, 28, 28, 1) float32, standardized; y (n,) int32 in [0, 10).

    60,000 training and 10,000 test images; arguments as in `load_mnist`.
    """
    return _load_images("fashion_mnist", _IMAGE_SOURCES["fashion_mnist"], seed=seed,
                        data_dir=data_dir, n_train=n_train, rows=rows, download=download)


def load_cifar10(*, seed: int = 0, data_dir: str | os.PathLike | None = None,
                 n_train: int | None = None, rows: RowsFn | None = None,
                 download: bool = True) -> Dataset:
    """CIFAR-10: x (n, 32, 32, 3) float32, standardized per channel; y (n,) int32 in [0, 10).

    50,000 training and 10,000 test images; arguments as in `load_mnist`.
    """
    return _load_images("cifar10", _IMAGE_SOURCES["cifar10"], seed=seed, data_dir=data_dir,
                        n_train=n_train, rows=rows, download=download)


def load_cifar100(*, seed: int = 0, data_dir: str | os.PathLike | None = None,
                  n_train: int | None = None, rows: RowsFn | None = None,
                  download: bool = True) -> Dataset:
    """CIFAR-100: x (n, 32, 32, 3) float32, standardized per channel; y (n,) int32
    fine labels in [0, 100).

    50,000 training and 10,000 test images; arguments as in `load_mnist`.
    """
    return _load_images("cifar100", _IMAGE_SOURCES["cifar100"], seed=seed, data_dir=data_dir,
                        n_train=n_train, rows=rows, download=download)


def load_imdb_reviews(*, seed: int = 0, data_dir: str | os.PathLike | None = None,
                      n_train: int | None = None, rows: RowsFn | None = None,
                      download: bool = True, vocab_size: int = 20000,
                      max_len: int = 400) -> Dataset:
    """IMDB movie reviews (sentiment): x (n, max_len) int32 token ids; y (n,) int32 in {0, 1}.

    25,000 training and 25,000 test reviews (the "plain_text" config; the
    unlabelled split is not used). Conventions, as for the CNN-LSTM of the HMC
    literature (Izmailov et al. 2021): a vocabulary of `vocab_size` = 20,000
    ids and sequences of `max_len` = 400 tokens.
    - Tokens: utf-8 text, lowercased, "<br />" replaced by a space, words are
      the matches of [a-z0-9']+.
    - Vocabulary, built from the whole training split (the same on every
      process whatever `n_train` and `rows`): id 0 padding, id 1
      out-of-vocabulary, then the vocab_size - 2 most frequent words, ties
      broken by alphabetical (code point) order.
    - Padding as Keras' `pad_sequences` default: zeros at the start, and
      longer reviews keep their last max_len tokens, so an LSTM's last step
      reads the end of the review.
    info["vocabulary"][i] is the word of id i.
    """
    return _load_text("imdb_reviews", _IMDB_TFDS_NAME, seed=seed, data_dir=data_dir,
                      n_train=n_train, rows=rows, download=download,
                      vocab_size=vocab_size, max_len=max_len)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imdb_reviews": load_imdb_reviews,
}


# --- images ------------------------------------------------------------------

def _load_images(name: str, source: _ImageSource, *, seed: int = 0,
                 data_dir: str | os.PathLike | None = None, n_train: int | None = None,
                 rows: RowsFn | None = None, download: bool = True) -> Dataset:
    """Any dataset with features "image" (uint8) and "label" as a `Dataset`."""
    train, test, provenance, shape = _open_splits(name, source.tfds_name, data_dir, download)
    indices = subsample_indices(len(train), n_train, seed)
    local, offset = local_block(indices, rows)
    x_train, y_train = _read_images(train, local, shape)
    x_test, y_test = _read_images(test, np.arange(len(test)), shape)
    return Dataset(
        name,
        _standardize(x_train, source.mean, source.std), y_train,
        _standardize(x_test, source.mean, source.std), y_test,
        source.num_classes,
        info={**provenance, "mean": source.mean, "std": source.std},
        num_train=len(indices), train_offset=offset)


def _read_images(split: Sequence[Any], indices: np.ndarray,
                 shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, *shape) and int32 labels (n,) of the rows `indices`."""
    if isinstance(split, prepared.PreparedSplit):
        return split.images(indices), split.labels(indices)
    x = np.empty((len(indices), *shape), np.uint8)
    y = np.empty(len(indices), np.int32)
    for row, example in enumerate(_read(split, indices)):
        x[row] = example["image"]
        y[row] = example["label"]
    return x, y


def _standardize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (n, h, w, c) -> float32 ((x / 255) - mean) / std, per channel."""
    # In place: a float32 copy of CIFAR-10's training set alone is 600 MB.
    x = x.astype(np.float32)
    x /= np.float32(255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return x


# --- text --------------------------------------------------------------------

def _load_text(name: str, tfds_name: str, *, seed: int = 0,
               data_dir: str | os.PathLike | None = None, n_train: int | None = None,
               rows: RowsFn | None = None, download: bool = True,
               vocab_size: int = 20000, max_len: int = 400) -> Dataset:
    """Any dataset with features "text" and binary "label" as token ids
    (see `load_imdb_reviews` for the conventions)."""
    int_at_least("vocab_size", vocab_size, 3)
    int_at_least("max_len", max_len, 1)
    train, test, provenance, _ = _open_splits(name, tfds_name, data_dir, download)
    indices = subsample_indices(len(train), n_train, seed)
    local, offset = local_block(indices, rows)
    # The vocabulary needs all training text: read it once and keep the tokens.
    train_tokens, train_labels = _read_text(train, np.arange(len(train)))
    vocabulary = _build_vocabulary(train_tokens, vocab_size)
    test_tokens, y_test = _read_text(test, np.arange(len(test)))
    word_ids = {word: i for i, word in enumerate(vocabulary)}
    return Dataset(
        name,
        _encode([train_tokens[i] for i in local], word_ids, max_len), train_labels[local],
        _encode(test_tokens, word_ids, max_len), y_test,
        2,
        info={**provenance,
              "vocab_size": vocab_size, "max_len": max_len,
              "padding": "pre", "truncating": "pre", "pad_id": PAD_ID, "oov_id": OOV_ID,
              "vocabulary": vocabulary},
        num_train=len(indices), train_offset=offset)


def _tokenize(text: bytes | str) -> list[str]:
    """Lowercased words ([a-z0-9']+) of one review, HTML line breaks removed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return _WORD.findall(text.lower().replace("<br />", " "))


def _read_text(split: Sequence[Any], indices: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """Tokens of each row `indices`, and their int32 labels (n,)."""
    tokens, labels = [], np.empty(len(indices), np.int32)
    for row, example in enumerate(_read(split, indices)):
        tokens.append(_tokenize(example["text"]))
        labels[row] = example["label"]
    return tokens, labels


def _build_vocabulary(token_lists: Sequence[Sequence[str]], vocab_size: int) -> tuple[str, ...]:
    """Word of each id: padding, out-of-vocabulary, then the vocab_size - 2 most
    frequent words, ties in alphabetical order. Shorter than vocab_size when the
    corpus has fewer distinct words."""
    counts = collections.Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return (_PAD_TOKEN, _OOV_TOKEN, *(word for word, _ in ranked[:vocab_size - 2]))


def _encode(token_lists: Sequence[Sequence[str]], word_ids: dict[str, int],
            max_len: int) -> np.ndarray:
    """Token ids (n, max_len) int32: the last max_len tokens, zeros before them."""
    x = np.full((len(token_lists), max_len), PAD_ID, np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [word_ids.get(word, OOV_ID) for word in tokens[-max_len:]]
        if ids:
            x[row, max_len - len(ids):] = ids
    return x


# --- where the examples come from -------------------------------------------

class _Splits(NamedTuple):
    train: Sequence[Any]
    test: Sequence[Any]
    provenance: dict[str, Any]
    image_shape: tuple[int, ...] | None


def _open_splits(name: str, tfds_name: str, data_dir: str | os.PathLike | None,
                 download: bool) -> _Splits:
    """Random-access train and test splits of dataset `name` in data_dir: the
    copy weightspace prepared, else tensorflow-datasets' copy, else (download)
    a copy prepared now. DatasetUnavailable (a FileNotFoundError) when there is
    none and none can be made."""
    root = prepared.resolve_data_dir(data_dir)
    splits = _open_prepared(name, root) or _open_tfds(tfds_name, root)
    if splits is None:
        if not download:
            raise prepared.unavailable(name, root, "download=False was given")
        prepared.prepare(name, root)
        splits = _open_prepared(name, root)
    return splits


def _open_prepared(name: str, root: Path) -> _Splits | None:
    opened = prepared.open_prepared(name, root)
    if opened is None:
        return None
    train, test, provenance = opened
    return _Splits(train, test, provenance,
                   train.image_shape if "image" in train.arrays else None)


def _open_tfds(tfds_name: str, root: Path) -> _Splits | None:
    """tensorflow-datasets' array_record copy of `tfds_name` in root, if it has one.

    The steps of `tfds.data_source` spelled out, because it drops
    file_format="array_record" whenever data_dir is given (and would then read
    TFRecord files, which cannot be read by index).
    """
    try:
        # Imported here: tfds is slow to import and only its copies need it.
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    # Looking for a copy that is not there makes tfds log a warning through
    # absl; it would precede the one-line error of a dataset found nowhere.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        builder = tfds.builder(tfds_name, data_dir=str(root), file_format="array_record")
        if not builder.is_prepared():
            return None
    finally:
        absl_log.setLevel(level)
    train, test = builder.as_data_source(split=["train", "test"])
    features = builder.info.features
    shape = tuple(features["image"].shape) if "image" in features else None
    provenance = {"source": "tensorflow_datasets", "tfds_name": tfds_name,
                  "tfds_version": str(builder.info.version), "data_dir": str(root)}
    return _Splits(train, test, provenance, shape)


def _read(split: Sequence[Any], indices: np.ndarray) -> Iterator[Any]:
    """The examples of rows `indices`, one `split[i]` at a time.

    One at a time because `__getitems__` of the source mocked by
    `tfds.testing.mock_data` is broken in tfds 4.9.10 (about 2x slower than
    batched reads on real files: ~10 s for 60,000 MNIST images).
    """
    for i in indices:
        yield split[int(i)]
