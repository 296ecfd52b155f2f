"""Datasets that need no network: shipped inside scikit-learn, or generated.

Every loader takes `seed`, `n_train` and `rows` (see `Dataset`); `data_dir` is
accepted and ignored so that all loaders share one calling convention.
"""

from __future__ import annotations

import numpy as np

from weightspace.checks import nonnegative_float, positive_int, positive_ints
from weightspace.data.dataset import Dataset, RowsFn, local_block, subsample_indices

# The digits split is fixed (it does not move with `seed`) so that results on
# the default dataset are comparable across runs and papers.
_DIGITS_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def _split(x, y, *, stratify: bool, test_fraction: float):
    # scikit-learn takes seconds to import: only when a dataset is loaded.
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=_SPLIT_SEED,
                            stratify=y if stratify else None)


def _finish(name, x_train, y_train, x_test, y_test, num_classes, *, seed, n_train,
            rows, info=None) -> Dataset:
    keep = subsample_indices(len(x_train), n_train, seed)
    local, offset = local_block(keep, rows)
    return Dataset(name=name, x_train=x_train[local], y_train=y_train[local],
                   x_test=x_test, y_test=y_test, num_classes=num_classes,
                   info=dict(info or {}), num_train=len(keep), train_offset=offset)


def load_digits(*, seed: int = 0, data_dir=None, n_train: int | None = None,
                rows: RowsFn | None = None) -> Dataset:
    """scikit-learn's 1,797 handwritten digits as (8, 8, 1) images in [0, 1]
    (pixel counts 0..16 divided by 16); fixed stratified 80/20 split."""
    # scikit-learn takes seconds to import: only when a dataset is loaded.
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    x = (raw.images / 16.0).astype(np.float32)[..., None]
    y = raw.target.astype(np.int32)
    x_train, x_test, y_train, y_test = _split(x, y, stratify=True,
                                              test_fraction=_DIGITS_TEST_FRACTION)
    return _finish("digits", x_train, y_train, x_test, y_test, 10,
                   seed=seed, n_train=n_train, rows=rows)


def load_diabetes(*, seed: int = 0, data_dir=None, n_train: int | None = None,
                  rows: RowsFn | None = None) -> Dataset:
    """scikit-learn's diabetes regression (442 patients, 10 features); features
    and target standardized with training-split statistics; fixed 80/20 split.
    `info["y_mean"]`, `info["y_std"]` undo the target scaling."""
    # scikit-learn takes seconds to import: only when a dataset is loaded.
    from sklearn.datasets import load_diabetes as sk_diabetes

    raw = sk_diabetes()
    x = raw.data.astype(np.float64)
    y = raw.target.astype(np.float64)[:, None]
    x_train, x_test, y_train, y_test = _split(x, y, stratify=False, test_fraction=0.2)
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(0), y_train.std(0)
    standardize = lambda a, m, s: ((a - m) / s).astype(np.float32)
    return _finish(
        "diabetes",
        standardize(x_train, x_mean, x_std), standardize(y_train, y_mean, y_std),
        standardize(x_test, x_mean, x_std), standardize(y_test, y_mean, y_std), None,
        seed=seed, n_train=n_train, rows=rows,
        info={"y_mean": float(y_mean[0]), "y_std": float(y_std[0])})


def load_teacher_student(*, seed: int = 0, data_dir=None, n_train: int | None = None,
                         rows: RowsFn | None = None, input_dim: int = 8,
                         hidden: tuple[int, ...] = (16,), output_dim: int = 1,
                         noise_std: float = 0.1, num_train: int = 1000,
                         num_test: int = 1000) -> Dataset:
    """Regression targets of a random teacher MLP (tanh, LeCun-normal weights,
    standard normal inputs) plus Gaussian noise of scale `noise_std`.

    The teacher's weights are in `info["teacher"]` (list of (W, b)) and the noise
    scale in `info["noise_std"]`, which the Gaussian likelihood uses by default.
    """
    for name, value in (("input_dim", input_dim), ("output_dim", output_dim),
                        ("num_train", num_train), ("num_test", num_test)):
        positive_int(name, value)
    positive_ints("hidden", tuple(hidden))
    nonnegative_float("noise_std", noise_std)
    rng = np.random.default_rng(seed)
    sizes = (input_dim, *hidden, output_dim)
    teacher = [(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=(b,)) * 0.1)
               for a, b in zip(sizes[:-1], sizes[1:])]

    def forward(x):
        for i, (w, b) in enumerate(teacher):
            x = x @ w + b
            if i < len(teacher) - 1:
                x = np.tanh(x)
        return x

    def sample(n):
        x = rng.normal(size=(n, input_dim))
        y = forward(x) + noise_std * rng.normal(size=(n, output_dim))
        return x.astype(np.float32), y.astype(np.float32)

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    info = {"noise_std": float(noise_std), "sizes": sizes,
            "teacher": [(w.astype(np.float32), b.astype(np.float32)) for w, b in teacher]}
    return _finish("teacher_student", x_train, y_train, x_test, y_test, None,
                   seed=seed, n_train=n_train, rows=rows, info=info)


def load_dln(*, seed: int = 0, data_dir=None, n_train: int | None = None,
             rows: RowsFn | None = None, widths: tuple[int, ...] = (4, 4, 4),
             rank: int | None = None, noise_std: float = 1.0, num_train: int = 1000,
             num_test: int = 1000) -> Dataset:
    """Inputs x ~ N(0, I) and outputs x @ M + noise of a random deep linear
    teacher with layer widths `widths` = (d_in, h_1, ..., d_out), whose product
    matrix M has rank `rank` (default: the smallest width, i.e. full rank).

    The rank is imposed on the first layer's matrix (so M = W_1 ... W_L stays a
    product of the given shapes); `info["teacher"]` holds the layer matrices,
    `info["product"]` M and `info["rank"]` its rank. The default noise scale 1
    matches the Gaussian likelihood's unit default, so the model is realizable,
    as the learning-coefficient formulas assume (Aoyagi 2024).
    """
    widths = tuple(widths)
    if len(widths) < 2:
        raise ValueError(f"widths={widths!r} is not allowed: need at least (d_in, d_out)")
    positive_ints("widths", widths)
    positive_int("num_train", num_train)
    positive_int("num_test", num_test)
    nonnegative_float("noise_std", noise_std)
    max_rank = min(widths)
    if rank is None:
        rank = max_rank
    positive_int("rank", rank)
    if rank > max_rank:
        raise ValueError(f"rank={rank} is not allowed: a product through widths "
                         f"{widths} has rank at most {max_rank}")
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(a, b)) / np.sqrt(a) for a, b in zip(widths[:-1], widths[1:])]
    u, s, vt = np.linalg.svd(layers[0], full_matrices=False)
    s[rank:] = 0.0
    layers[0] = (u * s) @ vt
    product = layers[0]
    for w in layers[1:]:
        product = product @ w
    actual = int(np.linalg.matrix_rank(product))
    if actual != rank:  # a random draw this unlucky has probability zero
        raise RuntimeError(f"teacher product has rank {actual}, expected {rank}; "
                           f"try another seed")

    def sample(n):
        x = rng.normal(size=(n, widths[0]))
        y = x @ product + noise_std * rng.normal(size=(n, widths[-1]))
        return x.astype(np.float32), y.astype(np.float32)

    x_train, y_train = sample(num_train)
    x_test, y_test = sample(num_test)
    info = {"noise_std": float(noise_std), "widths": widths, "rank": rank,
            "teacher": [w.astype(np.float32) for w in layers],
            "product": product.astype(np.float32)}
    return _finish("dln", x_train, y_train, x_test, y_test, None,
                   seed=seed, n_train=n_train, rows=rows, info=info)


LOADERS = {
    "digits": load_digits,
    "diabetes": load_diabetes,
    "teacher_student": load_teacher_student,
    "dln": load_dln,
}
