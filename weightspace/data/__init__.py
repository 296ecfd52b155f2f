"""Datasets: `ws.data.load(name, ...) -> Dataset`.

Embedded (no network): digits, diabetes, teacher_student, dln.
Downloaded once into `data_dir`, without TensorFlow: mnist, fashion_mnist,
cifar10, cifar100, imdb_reviews. `ws.data.prepare(name, data_dir)` (the command
`weightspace data prepare`) fetches the authors' files, checks their SHA-256 and
moves the converted arrays into place atomically; `load` does the same on first
use, and also reads a copy tensorflow-datasets prepared (array_record).
"""

from __future__ import annotations

import inspect

import jax

from weightspace import sharding
from weightspace.data.dataset import Dataset
from weightspace.data.embedded import LOADERS as _EMBEDDED
from weightspace.data.downloaded import LOADERS as _TFDS
from weightspace.data.prepared import DatasetUnavailable, prepare

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imdb_reviews")
EMBEDDED_NAMES = tuple(_EMBEDDED)
NAMES = EMBEDDED_NAMES + TFDS_NAMES

__all__ = ["Dataset", "DatasetUnavailable", "load", "prepare", "NAMES", "EMBEDDED_NAMES",
           "TFDS_NAMES"]


def _loader(name: str):
    return _EMBEDDED[name] if name in _EMBEDDED else _TFDS[name]


def load(name: str, *, seed: int = 0, data_dir: str | None = None,
         n_train: int | None = None, mesh=None, **options) -> Dataset:
    """Load dataset `name` as numpy arrays.

    seed: for generated data and for the `n_train` subsample (the digits and
        diabetes train/test splits are fixed).
    data_dir: where the downloaded datasets are prepared (default:
        $WEIGHTSPACE_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets);
        unused by the embedded datasets. One that is not there is prepared
        first (`download=False` raises DatasetUnavailable instead, as does a
        failed download: a FileNotFoundError whose one-line message names the
        dataset, the directory and the command that prepares it).
    n_train: keep a random subset of this many training rows.
    mesh: in a multi-process job (after `ws.sharding.initialize()`), load only
        the training rows this process places on its devices of `mesh`; the
        returned Dataset then records `num_train` (global) and `train_offset`.
    options: dataset-specific, e.g. `widths`, `rank` for "dln"; `input_dim`,
        `hidden`, `noise_std` for "teacher_student"; `vocab_size`, `max_len`
        for "imdb_reviews"; `download` for the downloaded datasets.
    """
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown dataset name={name!r}; known datasets: "
                         f"{', '.join(NAMES)}")
    loader = _loader(name)
    allowed = [p for p in inspect.signature(loader).parameters
               if p not in ("seed", "data_dir", "n_train", "rows")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"dataset {name!r} got unknown option(s) {unknown}; its options "
                        f"are: {', '.join(allowed) or 'none'}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rows = None
    if mesh is not None and jax.process_count() > 1:
        rows = sharding.process_rows_fn(mesh)
    return loader(seed=seed, data_dir=data_dir, n_train=n_train, rows=rows, **options)
