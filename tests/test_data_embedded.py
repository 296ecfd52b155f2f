"""The embedded datasets load offline with the documented shapes and splits."""

import numpy as np
import pytest

import weightspace as ws


def test_digits_are_8x8x1_images_in_unit_range_with_a_fixed_stratified_split(digits):
    assert digits.x_train.shape[1:] == (8, 8, 1) and digits.x_train.dtype == np.float32
    assert digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_test) == 1797
    for x in (digits.x_train, digits.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    # Stratified: every class has the same share of the test split, within one row.
    train_frac = np.bincount(digits.y_train) / np.bincount(digits.y_train).sum()
    test_frac = np.bincount(digits.y_test) / np.bincount(digits.y_test).sum()
    np.testing.assert_allclose(train_frac, test_frac, atol=1.5 / len(digits.y_test))
    # Fixed: does not depend on seed.
    other = ws.data.load("digits", seed=7)
    np.testing.assert_array_equal(other.x_test, digits.x_test)


def test_diabetes_is_standardized_regression():
    ds = ws.data.load("diabetes")
    assert ds.num_classes is None and ds.y_train.shape == (len(ds.x_train), 1)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(ds.y_train.std(), 1, atol=1e-4)


def test_teacher_student_targets_are_teacher_outputs_plus_noise_of_the_given_scale():
    ds = ws.data.load("teacher_student", input_dim=3, hidden=(5,), output_dim=2,
                      noise_std=0.5, num_train=4000, seed=3)
    assert ds.x_train.shape == (4000, 3) and ds.y_train.shape == (4000, 2)
    x = ds.x_train.astype(np.float64)
    (w1, b1), (w2, b2) = ds.info["teacher"]
    residual = ds.y_train - (np.tanh(x @ w1 + b1) @ w2 + b2)
    # sd of the residual sd estimate from 8000 draws is about 0.5/sqrt(16000) = 0.004
    assert abs(residual.std() - 0.5) < 0.02
    assert ds.info["noise_std"] == 0.5


def test_dln_product_has_the_requested_rank_and_shapes():
    ds = ws.data.load("dln", widths=(5, 4, 3), rank=2, seed=1)
    assert ds.x_train.shape[1] == 5 and ds.y_train.shape[1] == 3
    assert np.linalg.matrix_rank(ds.info["product"], tol=1e-5) == 2
    w1, w2 = ds.info["teacher"]
    np.testing.assert_allclose(w1 @ w2, ds.info["product"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rank=4"):
        ws.data.load("dln", widths=(5, 4, 3), rank=4)


def test_n_train_subsamples_and_rows_select_a_block():
    full = ws.data.load("digits")
    sub = ws.data.load("digits", n_train=100, seed=2)
    assert len(sub.x_train) == 100 and sub.num_train == 100
    from weightspace.data.embedded import load_digits

    part = load_digits(rows=lambda n: (10, 30))
    assert part.num_train == full.num_train and part.train_offset == 10
    np.testing.assert_array_equal(part.x_train, full.x_train[10:30])
    with pytest.raises(ValueError, match="n_train=5000"):
        ws.data.load("digits", n_train=5000)


def test_unknown_dataset_name_lists_the_known_names():
    with pytest.raises(ValueError, match="name='cifar11'") as err:
        ws.data.load("cifar11")
    for name in ws.data.NAMES:
        assert name in str(err.value)


def test_unknown_option_names_the_option():
    with pytest.raises(TypeError, match="widht"):
        ws.data.load("dln", widht=(2, 2))
