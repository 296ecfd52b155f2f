"""tfds loaders, offline: mocked tfds for the five real datasets, tiny builders
prepared into a temp data_dir for the real array_record read path, and the
errors raised when a dataset is not on disk. No test downloads anything."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pooch
import pytest
import tensorflow_datasets as tfds

from tfds_mock import mocked_tfds
from weightspace.data.dataset import subsample_indices
from weightspace.data.downloaded import LOADERS, _ImageSource, _load_images, _load_text

N = 12  # examples per split under mock_data (train and test yield the same ones)

IMAGE_CASES = {  # name: (image shape, num_classes)
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}


@pytest.fixture
def mocked(tmp_path):
    with mocked_tfds(N, tmp_path):
        yield


def _unstandardize(ds):
    """The [0, 1] pixels the fixed per-channel constants were applied to."""
    mean = np.asarray(ds.info["mean"], np.float32)
    std = np.asarray(ds.info["std"], np.float32)
    return ds.x_train * std + mean, ds.x_test * std + mean


# --- mocked tfds: the five datasets ------------------------------------------

def test_loaders_cover_the_five_datasets():
    assert set(LOADERS) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "imdb_reviews"}


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_image_dataset_shapes_dtypes_and_labels(mocked, name):
    shape, num_classes = IMAGE_CASES[name]
    ds = LOADERS[name]()
    assert ds.name == name and ds.num_classes == num_classes
    assert ds.x_train.shape == (N, *shape) and ds.x_test.shape == (N, *shape)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.shape == (N,) and ds.y_train.dtype == np.int32
    assert ds.y_test.dtype == np.int32
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    for y in (ds.y_train, ds.y_test):
        assert ((0 <= y) & (y < num_classes)).all()
    assert ds.num_train == N and ds.train_offset == 0 and not ds.is_partial


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_images_are_standardized_with_the_fixed_published_constants(mocked, name):
    ds = LOADERS[name]()
    expected = {"mnist": ((0.1307,), (0.3081,)),
                "fashion_mnist": ((0.2860,), (0.3530,)),
                "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}[name]
    assert (ds.info["mean"], ds.info["std"]) == expected
    for pixels in _unstandardize(ds):
        assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
        # Undoing the standardization gives back whole uint8 values: the
        # constants applied are exactly these, per channel.
        np.testing.assert_allclose(pixels * 255, np.round(pixels * 255), atol=1e-3)


def test_imdb_shapes_dtypes_and_labels(mocked):
    ds = LOADERS["imdb_reviews"]()
    assert ds.name == "imdb_reviews" and ds.num_classes == 2
    assert ds.x_train.shape == (N, 400) and ds.x_test.shape == (N, 400)
    assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int32
    assert ((0 <= ds.x_train) & (ds.x_train < 20000)).all()
    assert set(np.unique(ds.y_train)) <= {0, 1} and set(np.unique(ds.y_test)) <= {0, 1}
    assert ds.info["vocab_size"] == 20000 and ds.info["max_len"] == 400
    assert ds.info["vocabulary"][:2] == ("<pad>", "<oov>")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_n_train_keeps_the_seeded_subsample(mocked, name):
    full = LOADERS[name]()
    ds = LOADERS[name](n_train=5, seed=3)
    kept = subsample_indices(N, 5, 3)
    assert len(ds.x_train) == ds.num_train == 5 and ds.train_offset == 0
    np.testing.assert_array_equal(ds.x_train, full.x_train[kept])
    np.testing.assert_array_equal(ds.y_train, full.y_train[kept])
    assert len(ds.x_test) == N  # the test split is always whole


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_rows_returns_exactly_that_block_of_the_full_load(mocked, name):
    full = LOADERS[name]()
    part = LOADERS[name](rows=lambda n: (3, 8))
    np.testing.assert_array_equal(part.x_train, full.x_train[3:8])
    np.testing.assert_array_equal(part.y_train, full.y_train[3:8])
    assert part.num_train == N and part.train_offset == 3 and part.is_partial
    np.testing.assert_array_equal(part.x_test, full.x_test)


def test_rows_apply_to_the_subsample(mocked):
    full = LOADERS["cifar10"](n_train=10, seed=1)
    part = LOADERS["cifar10"](n_train=10, seed=1, rows=lambda n: (n // 2, n))
    assert part.num_train == 10 and part.train_offset == 5
    np.testing.assert_array_equal(part.x_train, full.x_train[5:])


@pytest.mark.parametrize("argname, value", [("vocab_size", 2), ("max_len", 0)])
def test_imdb_rejects_bad_sizes_before_reading_anything(tmp_path, argname, value):
    with pytest.raises(ValueError, match=f"{argname}={value}"):
        LOADERS["imdb_reviews"](data_dir=tmp_path, download=False, **{argname: value})


# --- the real read path: tiny builders prepared into a temp data_dir --------

def _tiny_pixels(i: int, channels: int) -> np.ndarray:
    """Image i of the tiny builders: 4 x 4 x channels, every value distinct."""
    h, w, c = np.meshgrid(np.arange(4), np.arange(4), np.arange(channels), indexing="ij")
    return (20 * i + 4 * h + w + 3 * c * (channels > 1)).astype(np.uint8)


class _TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    CHANNELS = 3

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, self.CHANNELS)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(7)),
                "test": self._generate_examples(range(7, 10))}

    def _generate_examples(self, ids):
        for i in ids:
            pixels = _tiny_pixels(i, self.CHANNELS)
            # Handed to tfds as PIL images: encoding numpy arrays needs TensorFlow.
            image = PIL.Image.fromarray(pixels[..., 0] if self.CHANNELS == 1 else pixels)
            yield i, {"image": image, "label": i % 3}


class WsTestTinyRgb(_TinyImages):
    CHANNELS = 3


class WsTestTinyGray(_TinyImages):
    CHANNELS = 1


# Train reviews, their tokens, and the counts the vocabulary is built from:
# b 3, a 2, then 42, c, caf, don't, ya once each (ties in code point order).
TRAIN_REVIEWS = [("b a b<br />c", 0),             # b a b c ("br" is not a word)
                 ("A don't 42 ya", 1),            # a don't 42 ya
                 ("Caf\u00e9 b", 1)]              # caf b (non-ASCII letters split words)
TEST_REVIEWS = [("ya TOP b", 0), ("", 1)]


class WsTestTinyReviews(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=["neg", "pos"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TRAIN_REVIEWS),
                "test": self._generate_examples(TEST_REVIEWS)}

    def _generate_examples(self, reviews):
        for i, (text, label) in enumerate(reviews):
            yield i, {"text": text, "label": label}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    for cls in (WsTestTinyRgb, WsTestTinyGray, WsTestTinyReviews):
        cls(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


TINY_SOURCES = {
    "ws_test_tiny_rgb": _ImageSource("ws_test_tiny_rgb", 3, (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)),
    "ws_test_tiny_gray": _ImageSource("ws_test_tiny_gray", 3, (0.2,), (0.4,)),
}


def _load_tiny_images(tfds_name, data_dir, **kwargs):
    return _load_images("tiny", TINY_SOURCES[tfds_name], data_dir=data_dir, download=False,
                        **kwargs)


def _image_ids(ds, x, channels):
    """Which tiny image each row is, checking its pixels exactly."""
    mean = np.asarray(ds.info["mean"], np.float32)
    std = np.asarray(ds.info["std"], np.float32)
    raw = np.round((x * std + mean) * 255).astype(int)
    ids = raw[:, 0, 0, 0] // 20
    for row, i in zip(raw, ids):
        np.testing.assert_array_equal(row, _tiny_pixels(i, channels))
    return ids


@pytest.mark.parametrize("tfds_name, channels", [("ws_test_tiny_rgb", 3),
                                                 ("ws_test_tiny_gray", 1)])
def test_real_files_give_back_the_known_pixels_and_labels(tiny_dir, tfds_name, channels):
    ds = _load_tiny_images(tfds_name, tiny_dir)
    assert ds.x_train.shape == (7, 4, 4, channels) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (3, 4, 4, channels)
    train_ids = _image_ids(ds, ds.x_train, channels)
    test_ids = _image_ids(ds, ds.x_test, channels)
    assert sorted(train_ids) == list(range(7)) and sorted(test_ids) == [7, 8, 9]
    np.testing.assert_array_equal(ds.y_train, train_ids % 3)
    np.testing.assert_array_equal(ds.y_test, test_ids % 3)
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 3


def test_real_files_rows_and_n_train_select_from_the_full_load(tiny_dir):
    full = _load_tiny_images("ws_test_tiny_rgb", tiny_dir)
    part = _load_tiny_images("ws_test_tiny_rgb", tiny_dir, rows=lambda n: (2, 5))
    np.testing.assert_array_equal(part.x_train, full.x_train[2:5])
    assert (part.num_train, part.train_offset) == (7, 2)
    sub = _load_tiny_images("ws_test_tiny_rgb", tiny_dir, n_train=4, seed=1,
                            rows=lambda n: (1, n))
    kept = subsample_indices(7, 4, 1)[1:]
    np.testing.assert_array_equal(sub.x_train, full.x_train[kept])
    np.testing.assert_array_equal(sub.y_train, full.y_train[kept])
    assert (sub.num_train, sub.train_offset) == (4, 1)


def test_an_empty_block_of_rows_keeps_the_shapes(tiny_dir):
    ds = _load_tiny_images("ws_test_tiny_rgb", tiny_dir, rows=lambda n: (n, n))
    assert ds.x_train.shape == (0, 4, 4, 3) and ds.y_train.shape == (0,)
    assert ds.num_train == 7 and len(ds.x_test) == 3


def _load_tiny_reviews(data_dir, **kwargs):
    return _load_text("tiny_reviews", "ws_test_tiny_reviews", data_dir=data_dir,
                      download=False, **kwargs)


def _rows_by_label(ds):
    # The files are shuffled by tfds: compare rows as a set, paired with labels.
    return sorted(zip(map(tuple, ds.x_train.tolist()), ds.y_train.tolist()))


def test_vocabulary_is_by_frequency_then_alphabetical_with_pad_and_oov(tiny_dir):
    ds = _load_tiny_reviews(tiny_dir, vocab_size=6, max_len=3)
    assert ds.info["vocabulary"] == ("<pad>", "<oov>", "b", "a", "42", "c")
    assert ds.info["vocab_size"] == 6 and ds.info["max_len"] == 3
    big = _load_tiny_reviews(tiny_dir, vocab_size=100, max_len=3)
    assert big.info["vocabulary"] == ("<pad>", "<oov>", "b", "a", "42", "c", "caf", "don't", "ya")
    assert big.info["vocab_size"] == 100


def test_reviews_are_encoded_and_pre_padded_or_pre_truncated(tiny_dir):
    ds = _load_tiny_reviews(tiny_dir, vocab_size=6, max_len=3)
    # b a b c -> keep the last 3: a b c; a don't 42 ya -> don't 42 ya (OOV, 42, OOV);
    # caf b -> pad, caf (OOV), b.
    assert _rows_by_label(ds) == sorted([((3, 2, 5), 0), ((1, 4, 1), 1), ((0, 1, 2), 1)])
    assert sorted(zip(map(tuple, ds.x_test.tolist()), ds.y_test.tolist())) == sorted(
        [((1, 1, 2), 0), ((0, 0, 0), 1)])
    assert ds.x_train.dtype == np.int32 and ds.num_classes == 2
    long = _load_tiny_reviews(tiny_dir, vocab_size=6)  # max_len 400: zeros first
    assert long.x_train.shape == (3, 400)
    assert sorted(tuple(r[-4:]) for r in long.x_train.tolist()) == sorted(
        [(2, 3, 2, 5), (3, 1, 4, 1), (0, 0, 1, 2)])
    assert not long.x_train[:, :-4].any()


def test_every_block_of_rows_sees_the_same_vocabulary(tiny_dir):
    full = _load_tiny_reviews(tiny_dir, vocab_size=6, max_len=3)
    part = _load_tiny_reviews(tiny_dir, vocab_size=6, max_len=3, rows=lambda n: (1, 2))
    sub = _load_tiny_reviews(tiny_dir, vocab_size=6, max_len=3, n_train=1, seed=0)
    assert part.info["vocabulary"] == sub.info["vocabulary"] == full.info["vocabulary"]
    np.testing.assert_array_equal(part.x_train, full.x_train[1:2])
    assert (part.num_train, part.train_offset) == (3, 1)


# --- not on disk -------------------------------------------------------------

def test_missing_dataset_without_download_names_the_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        LOADERS["mnist"](data_dir=tmp_path, download=False)
    message = str(err.value)
    assert "'mnist'" in message and f"not prepared in {tmp_path} " in message
    assert "download=False" in message
    assert f"`weightspace data prepare mnist --data-dir {tmp_path}`" in message


def test_default_data_dir_is_resolved_like_tfds(tmp_path, monkeypatch):
    monkeypatch.delenv("WEIGHTSPACE_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from_env"))
    with pytest.raises(FileNotFoundError, match="from_env"):
        LOADERS["cifar10"](download=False)
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        LOADERS["cifar10"](download=False)
    assert f"not prepared in {tmp_path / 'tensorflow_datasets'} " in str(err.value)


@pytest.mark.parametrize("name, error", [
    ("mnist", OSError("Network is unreachable")),
    ("imdb_reviews", ConnectionError("Network is unreachable")),
])
def test_failed_download_raises_file_not_found_from_the_cause(tmp_path, monkeypatch,
                                                              name, error):
    def fail(self, url, output_file, pooch):
        raise error

    # Patched on pooch's downloader: no real download can start.
    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fail)
    with pytest.raises(FileNotFoundError) as err:
        LOADERS[name](data_dir=tmp_path)
    assert err.value.__cause__ is error
    message = str(err.value)
    assert f"{name!r}" in message and f"not prepared in {tmp_path} " in message
    assert "Network is unreachable" in message
