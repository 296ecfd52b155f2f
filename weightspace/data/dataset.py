"""The `Dataset` record every loader returns, and the checks it runs on itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# A loader may be asked for only part of the training rows (one process of a
# multi-host job). It receives the global number of training rows and returns
# the half-open range [start, stop) this process should hold.
RowsFn = Callable[[int], tuple[int, int]]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays of one supervised task, on the host (numpy).

    x_train: (n, ...) inputs; float32 features/images, int32 token ids for text.
    y_train: (n,) int32 labels in [0, num_classes) for classification,
             (n, d_out) float32 targets for regression.
    num_classes: number of classes, or None for regression.
    num_train: rows of the whole training set; larger than len(x_train) when
               this object holds only the rows [train_offset, train_offset +
               len(x_train)) of it (one process of a multi-host job).
    info: facts about how the data was made (teacher weights, noise_std, ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    num_train: int = -1
    train_offset: int = 0

    def __post_init__(self):
        if self.num_train < 0:
            object.__setattr__(self, "num_train", len(self.x_train))
        if len(self.x_train) != len(self.y_train):
            raise ValueError(
                f"dataset {self.name!r}: x_train has {len(self.x_train)} rows but "
                f"y_train has {len(self.y_train)}")
        if len(self.x_test) != len(self.y_test):
            raise ValueError(
                f"dataset {self.name!r}: x_test has {len(self.x_test)} rows but "
                f"y_test has {len(self.y_test)}")
        if not 0 <= self.train_offset <= self.num_train - len(self.x_train):
            raise ValueError(
                f"dataset {self.name!r}: rows [{self.train_offset}, "
                f"{self.train_offset + len(self.x_train)}) do not fit in "
                f"num_train={self.num_train}")

    @property
    def is_regression(self) -> bool:
        return self.num_classes is None

    @property
    def is_partial(self) -> bool:
        """True when this object holds only some of the training rows."""
        return len(self.x_train) != self.num_train

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        kind = "regression" if self.is_regression else f"{self.num_classes} classes"
        part = (f", rows [{self.train_offset}, {self.train_offset + len(self.x_train)})"
                if self.is_partial else "")
        return (f"Dataset({self.name!r}, {kind}, x_train {self.x_train.shape} "
                f"{self.x_train.dtype}, x_test {self.x_test.shape}, "
                f"num_train={self.num_train}{part})")


def subsample_indices(num_available: int, n_train: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the training rows to keep: all, or `n_train` drawn
    without replacement with `seed` (the same on every process)."""
    if n_train is None:
        return np.arange(num_available)
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)):
        raise TypeError(f"n_train must be an int or None, got {n_train!r}")
    if not 1 <= n_train <= num_available:
        raise ValueError(
            f"n_train={n_train} is not allowed: it must be between 1 and the "
            f"{num_available} training rows available")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_available, size=n_train, replace=False))


def local_block(indices: np.ndarray, rows: RowsFn | None) -> tuple[np.ndarray, int]:
    """The part of `indices` this process holds, and its offset."""
    if rows is None:
        return indices, 0
    start, stop = rows(len(indices))
    if not 0 <= start <= stop <= len(indices):
        raise ValueError(f"rows=({start}, {stop}) is not a block of the "
                         f"{len(indices)} training rows")
    return indices[start:stop], start
