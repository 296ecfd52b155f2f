"""tensorflow-datasets' mocked datasets as the loaders' source, offline.

`tfds.testing.mock_data` stands in for a prepared copy of every tfds dataset,
but its builders still say they are not prepared, and the loaders read a
weightspace-prepared copy first: `mocked_tfds` also makes the builders say they
are prepared and points the default data directory at an empty folder."""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import tensorflow_datasets as tfds


@contextlib.contextmanager
def mocked_tfds(num_examples: int, empty_dir):
    with mock.patch.dict(os.environ, {"WEIGHTSPACE_DATA_DIR": str(empty_dir)}), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True), \
            tfds.testing.mock_data(num_examples=num_examples,
                                   policy=tfds.testing.MockPolicy.USE_CODE):
        yield
