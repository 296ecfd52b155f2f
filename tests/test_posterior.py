"""Posterior: log-density against hand computation, predictions, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import weightspace as ws
from weightspace.data import Dataset

from conftest import cifar_shaped, one_device_mesh


def _tiny_regression(n=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.normal(size=(n, 2)).astype(np.float32)
    return Dataset("tiny", x, y, x, y, None)


def test_logdensity_of_a_linear_gaussian_model_matches_hand_computation():
    data = _tiny_regression()
    v, s, t = 0.7, 0.3, 2.5
    post = ws.models.posterior(ws.models.DeepLinear((3, 2)), data, prior_variance=v,
                               temperature=t, likelihood=ws.models.Gaussian(noise_scale=s))
    params = post.init(jax.random.key(1))
    (w,) = [np.asarray(a, np.float64) for a in jax.tree.leaves(params)]
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    log_prior = np.sum(-0.5 * w**2 / v - 0.5 * math.log(2 * math.pi * v))
    log_lik = np.sum(-0.5 * ((y - x @ w) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi))
    expected = (log_prior + log_lik) / t
    np.testing.assert_allclose(post.logdensity(params), expected, rtol=1e-5)
    # and the gradient: d/dw = (-w/v + x^T (y - xw) / s^2) / T
    _, grad = post.logdensity_and_grad(params)
    (g,) = jax.tree.leaves(grad)
    np.testing.assert_allclose(g, (-w / v + x.T @ (y - x @ w) / s**2) / t, rtol=1e-4)


def test_logdensity_of_softmax_regression_matches_hand_computation(digits):
    v, t = 0.2, 0.5
    post = ws.models.posterior(ws.models.MLP((), 10), digits, prior_variance=v,
                               temperature=t)
    params = post.init(jax.random.key(3))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(a, np.float64)
            for path, a in jax.tree_util.tree_leaves_with_path(params)}
    (kname,) = [k for k in flat if k.endswith("kernel")]
    (bname,) = [k for k in flat if k.endswith("bias")]
    w, b = flat[kname], flat[bname]
    x = digits.x_train.reshape(len(digits.x_train), -1).astype(np.float64)
    logits = x @ w + b
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    log_lik = logp[np.arange(len(x)), digits.y_train].sum()
    log_prior = sum(np.sum(-0.5 * a**2 / v - 0.5 * math.log(2 * math.pi * v))
                    for a in (w, b))
    np.testing.assert_allclose(post.logdensity(params), (log_prior + log_lik) / t, rtol=1e-5)
    np.testing.assert_allclose(post.loss(params), -log_lik / len(x), rtol=1e-5)


def test_fan_in_prior_scales_kernel_variance_by_fan_in():
    prior = ws.models.GaussianPrior(2.0, scaling="fan_in")
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
    variances = prior.variances(params)
    assert variances["dense"]["kernel"] == 0.5 and variances["dense"]["bias"] == 2.0
    conv = {"kernel": jnp.ones((3, 3, 4, 8)), "hidden_kernel": jnp.ones((5, 20)),
            "embedding": jnp.ones((100, 4))}
    assert prior.variances(conv) == {"kernel": 2.0 / 36, "hidden_kernel": 2.0 / 5,
                                     "embedding": 2.0}
    # and the log-density uses those variances
    expected = sum(float(np.sum(-0.5 / v - 0.5 * np.log(2 * np.pi * v)) * a.size)
                   for a, v in ((params["dense"]["kernel"], 0.5), (params["dense"]["bias"], 2.0)))
    np.testing.assert_allclose(prior.log_prob(params), expected, rtol=1e-6)


def test_minibatch_logdensity_averages_to_the_full_batch_value():
    data = _tiny_regression(n=12)
    post = ws.models.posterior(ws.models.DeepLinear((3, 2)), data, prior_variance=1.0,
                               temperature=1.5)
    params = post.init()
    batches = [(data.x_train[i:i + 4], data.y_train[i:i + 4]) for i in range(0, 12, 4)]
    mean = np.mean([post.minibatch_logdensity(params, b) for b in batches])
    np.testing.assert_allclose(mean, post.logdensity(params), rtol=1e-5)
    # A mask drops rows: a batch padded with junk rows equals the batch alone.
    x, y = batches[0]
    junk = (np.concatenate([x, 100 + x]), np.concatenate([y, y]),
            np.array([True] * 4 + [False] * 4))
    np.testing.assert_allclose(post.minibatch_logdensity(params, junk),
                               post.minibatch_logdensity(params, batches[0]), rtol=1e-6)


def test_predict_returns_normalized_probabilities(digits):
    post = ws.models.posterior(ws.models.MLP((16,), 10), digits, prior_variance=0.2)
    probs = np.asarray(post.predict(post.init(), digits.x_test))
    assert probs.shape == (len(digits.x_test), 10) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    cifar = cifar_shaped(6)
    post = ws.models.posterior(ws.models.ResNet20FRN(10), cifar, prior_variance=0.2,
                               mesh=one_device_mesh())
    probs = np.asarray(post.predict(post.init(), cifar.x_test))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_regression_predict_returns_mean_and_the_noise_scale():
    data = ws.data.load("teacher_student", noise_std=0.25, num_train=50, num_test=5)
    post = ws.models.posterior(ws.models.MLP((8,), 1), data, prior_variance=1.0)
    assert post.likelihood.noise_scale == 0.25  # taken from the data's noise
    mean, std = post.predict(post.init(), data.x_test)
    assert mean.shape == std.shape == (5, 1)
    np.testing.assert_allclose(std, 0.25)


def test_padding_rows_do_not_change_the_logdensity(digits):
    # 1437 rows on 8 devices are padded to 1440; the value must equal the sum
    # over the real rows only, computed without padding on one device.
    assert len(digits.x_train) % 8 != 0 and jax.device_count() == 8
    net = ws.models.MLP((16,), 10)
    post8 = ws.models.posterior(net, digits, prior_variance=0.2)
    assert post8.x.shape[0] == 1440 and int(post8.mask.sum()) == 1437
    params = jax.device_get(post8.init())
    direct = post8.log_prior(params) + jnp.sum(
        post8.likelihood.log_prob(post8.apply(params, digits.x_train), digits.y_train))
    np.testing.assert_allclose(post8.logdensity(params), direct, rtol=1e-5)


# -- bad input: the error names the argument and the value ---------------------

@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_prior_variance_must_be_positive_and_finite(digits, value):
    with pytest.raises(ValueError, match=rf"prior_variance={value!r}"):
        ws.models.posterior(ws.models.MLP((4,), 10), digits, prior_variance=value)


@pytest.mark.parametrize("value", [0.0, -2.0])
def test_temperature_must_be_positive(digits, value):
    with pytest.raises(ValueError, match=rf"temperature={value!r}"):
        ws.models.posterior(ws.models.MLP((4,), 10), digits, prior_variance=1.0,
                            temperature=value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_rejected(digits, bad):
    x = digits.x_train.copy()
    x[3, 2, 2, 0] = bad
    data = Dataset("broken", x, digits.y_train, digits.x_test, digits.y_test, 10)
    with pytest.raises(ValueError, match=r"data\.x_train contains 1 non-finite"):
        ws.models.posterior(ws.models.MLP((4,), 10), data, prior_variance=1.0)


@pytest.mark.parametrize("label", [-1, 10])
def test_labels_outside_the_classes_are_rejected(digits, label):
    y = digits.y_train.copy()
    y[5] = label
    data = Dataset("broken", digits.x_train, y, digits.x_test, digits.y_test, 10)
    with pytest.raises(ValueError, match=rf"data\.y_train .*outside \[0, 10\).*{label}"):
        ws.models.posterior(ws.models.MLP((4,), 10), data, prior_variance=1.0)


def test_inputs_that_do_not_fit_the_network_are_rejected(digits):
    with pytest.raises(ValueError, match=r"network=DeepLinear.*\(8, 8, 1\)"):
        ws.models.posterior(ws.models.DeepLinear((10, 10)), digits, prior_variance=1.0)
    with pytest.raises(ValueError, match=r"outputs of shape \(3,\)"):
        ws.models.posterior(ws.models.MLP((4,), 3), digits, prior_variance=1.0)
    tokens = cifar_shaped(4)
    with pytest.raises(ValueError, match="network=CNNLSTM"):
        ws.models.posterior(ws.models.CNNLSTM(), tokens, prior_variance=1.0)


def test_token_ids_outside_the_vocabulary_are_rejected():
    x = np.zeros((4, 16), np.int32)
    x[1, 3] = 50
    data = Dataset("tokens", x, np.zeros(4, np.int32), x, np.zeros(4, np.int32), 2)
    with pytest.raises(ValueError, match=r"data\.x_train holds token ids in \[0, 50\]"):
        ws.models.posterior(ws.models.CNNLSTM(vocab_size=50, embedding_dim=4, num_filters=4,
                                              hidden_size=4), data, prior_variance=1.0)


def test_unknown_likelihood_name_is_rejected(digits):
    with pytest.raises(ValueError, match="likelihood='poisson'"):
        ws.models.posterior(ws.models.MLP((4,), 10), digits, prior_variance=1.0,
                            likelihood="poisson")
    with pytest.raises(ValueError, match="regression"):
        ws.models.posterior(ws.models.MLP((4,), 1), _tiny_regression(),
                            prior_variance=1.0, likelihood="categorical")


def test_network_must_be_a_network_description(digits):
    with pytest.raises(TypeError, match="network must be"):
        ws.models.posterior(lambda x: x, digits, prior_variance=1.0)
