"""Datasets: `ws.data.load(name, ...) -> Dataset`.

Embedded (no network): digits, diabetes, teacher_student, dln.
Through tensorflow-datasets without TensorFlow (array_record files in
`data_dir`): mnist, fashion_mnist, cifar10, cifar100, imdb_reviews.
"""

from __future__ import annotations

import inspect

import jax

from weightspace import sharding
from weightspace.data.dataset import Dataset
from weightspace.data.embedded import LOADERS as _EMBEDDED
from weightspace.data.tfds_sources import LOADERS as _TFDS

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imdb_reviews")
EMBEDDED_NAMES = tuple(_EMBEDDED)
NAMES = EMBEDDED_NAMES + TFDS_NAMES

__all__ = ["Dataset", "load", "NAMES", "EMBEDDED_NAMES", "TFDS_NAMES"]


def _loader(name: str):
    return _EMBEDDED[name] if name in _EMBEDDED else _TFDS[name]


def load(name: str, *, seed: int = 0, data_dir: str | None = None,
         n_train: int | None = None, mesh=None, **options) -> Dataset:
    """Load dataset `name` as numpy arrays.

    seed: for generated data and for the `n_train` subsample (the digits and
        diabetes train/test splits are fixed).
    data_dir: where tensorflow-datasets looks for prepared array_record files
        (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); unused by the
        embedded datasets.
    n_train: keep a random subset of this many training rows.
    mesh: in a multi-process job (after `ws.sharding.initialize()`), load only
        the training rows this process places on its devices of `mesh`; the
        returned Dataset then records `num_train` (global) and `train_offset`.
    options: dataset-specific, e.g. `widths`, `rank` for "dln"; `input_dim`,
        `hidden`, `noise_std` for "teacher_student"; `vocab_size`, `max_len`
        for "imdb_reviews"; `download` for the tfds datasets.
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
