"""Properties of the network descriptions in weightspace.models."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from weightspace.models.cnn_lstm import CNNLSTM
from weightspace.models.deep_linear import DeepLinear
from weightspace.models.lenet import LeNet5
from weightspace.models.mlp import MLP
from weightspace.models.network import Network
from weightspace.models.resnet import FilterResponseNorm, ResNet20FRN

# (network, input_shape, parameter count of the original model):
# Izmailov et al. 2021, "What Are Bayesian Neural Network Posteriors Really Like?".
PAPER_MODELS = {
    "mlp": (MLP((256, 256), 10), (28, 28, 1), 269_322),
    "lenet5": (LeNet5(), (28, 28, 1), 91_946),
    "resnet20_frn": (ResNet20FRN(), (32, 32, 3), 274_042),
    "cnn_lstm": (CNNLSTM(), (400,), 2_700_098),
    "deep_linear": (DeepLinear((3, 4, 5)), (3,), 3 * 4 + 4 * 5),
}

# Small inputs where the property does not depend on size; CNNLSTM reads 40 tokens.
SMALL = {
    "mlp": (MLP((16, 8), 3, activation="tanh"), (5, 2)),
    "linear_regression": (MLP((), 1), (7,)),
    "lenet5": (LeNet5(), (28, 28, 1)),
    "resnet20_frn": (ResNet20FRN(), (32, 32, 3)),
    "cnn_lstm": (CNNLSTM(), (40,)),
    "deep_linear": (DeepLinear((3, 4, 5)), (3,)),
}


def _inputs(net, input_shape, batch, seed=0):
    key = jax.random.key(seed)
    if isinstance(net, CNNLSTM):
        return jax.random.randint(key, (batch, *input_shape), 0, net.vocab_size)
    return jax.random.normal(key, (batch, *input_shape))


def _abstract(net, input_shape):
    return nnx.eval_shape(lambda: net.build(input_shape, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_parameter_count_matches_the_paper(name):
    net, input_shape, expected = PAPER_MODELS[name]
    _, params, rest = nnx.split(_abstract(net, input_shape), nnx.Param, ...)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert count == expected
    # Nothing but parameters: the output is a function of (params, x) alone.
    assert jax.tree.leaves(rest) == []


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_resnet_blocks_per_stage_sets_the_depth(blocks):
    # Structure and shapes only: traced (nnx.eval_shape, jax.eval_shape), not run
    # op by op, which compiled some 80 programs.
    net = ResNet20FRN(width=4, blocks_per_stage=blocks)
    stack = nnx.to_pure_dict(nnx.state(_abstract(net, (32, 32, 3)), nnx.Param))["blocks"]
    assert len(stack) == 3 * blocks   # depth 6 * blocks + 2 (20 for the paper's 3)
    # the first block of stages 2 and 3 halves the resolution through a shortcut
    assert [b for b, block in stack.items() if "shortcut" in block] == [blocks, 2 * blocks]
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    assert _apply_abstract(net, (32, 32, 3), images).shape == (2, 10)


def test_cnn_lstm_embedding_holds_most_parameters():
    module = _abstract(CNNLSTM(), (400,))
    assert module.embed.embedding.shape == (20_000, 128)


@pytest.mark.parametrize("name", SMALL)
def test_no_batch_statistics_or_dropout(name):
    net, input_shape = SMALL[name]
    for _, node in nnx.iter_graph(_abstract(net, input_shape)):
        assert not isinstance(node, (nnx.BatchNorm, nnx.Dropout))
        if isinstance(node, nnx.Variable):
            assert isinstance(node, nnx.Param), type(node)


def _init(net, input_shape):
    """key -> the nnx.Param state of a freshly built module."""
    return lambda key: nnx.state(net.build(input_shape, rngs=nnx.Rngs(key)), nnx.Param)


@pytest.fixture(scope="module", params=list(SMALL))
def built(request):
    """Each network built for two chains at once, the way samplers initialize."""
    net, input_shape = SMALL[request.param]
    graphdef, _, rest = nnx.split(_abstract(net, input_shape), nnx.Param, ...)
    keys = jax.random.split(jax.random.key(3), 2)
    stacked = jax.jit(jax.vmap(_init(net, input_shape)))(keys)
    return net, input_shape, graphdef, rest, stacked


def test_build_under_jit_and_vmap_gives_one_param_state_per_key(built):
    net, input_shape, _, _, stacked = built
    abstract = nnx.state(_abstract(net, input_shape), nnx.Param)
    assert isinstance(stacked, nnx.State)
    assert jax.tree.structure(stacked) == jax.tree.structure(abstract)
    for s, a in zip(jax.tree.leaves(stacked), jax.tree.leaves(abstract)):
        assert s.shape == (2, *a.shape)
    # Different keys give different weights (FRN's constant init aside).
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(stacked)]
    assert any(not np.array_equal(leaf[0], leaf[1]) for leaf in leaves)


def test_each_output_depends_only_on_its_own_example(built):
    net, input_shape, graphdef, rest, stacked = built
    params = jax.tree.map(lambda leaf: np.asarray(leaf)[0], stacked)
    apply = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x))
    x = _inputs(net, input_shape, batch=4)
    batched = apply(params, x)
    assert batched.shape == (4, net.num_outputs)
    assert bool(jnp.all(jnp.isfinite(batched)))
    alone = apply(params, x[2:3])
    np.testing.assert_allclose(alone[0], batched[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("net, input_shape", [
    (MLP((8,), 3), (4,)),
    (DeepLinear((3, 4, 5)), (3,)),
])
def test_same_key_gives_same_weights_eagerly_and_under_jit_vmap(net, input_shape):
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.jit(jax.vmap(_init(net, input_shape)))(keys)
    eager = _init(net, input_shape)(keys[1])
    for s, e in zip(jax.tree.leaves(stacked), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(np.asarray(s)[1], e, rtol=1e-6, atol=1e-6)


def test_stacked_parameters_apply_per_chain():
    net, input_shape = MLP((8,), 3), (4,)
    graphdef, _, rest = nnx.split(_abstract(net, input_shape), nnx.Param, ...)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(_init(net, input_shape))(keys)
    x = _inputs(net, input_shape, batch=5)
    out = jax.vmap(lambda p: nnx.merge(graphdef, p, rest)(x))(stacked)
    assert out.shape == (3, 5, 3)
    one = jax.tree.map(lambda leaf: np.asarray(leaf)[1], stacked)
    np.testing.assert_allclose(out[1], nnx.merge(graphdef, one, rest)(x), rtol=1e-6)


def test_deep_linear_is_the_product_of_its_matrices():
    net = DeepLinear([3, 4, 2, 5])
    module = net.build((3,), rngs=nnx.Rngs(0))
    kernels = [layer.kernel[...] for layer in module.layers]
    x = _inputs(net, (3,), batch=6)
    np.testing.assert_allclose(
        module(x), x @ kernels[0] @ kernels[1] @ kernels[2], rtol=1e-5, atol=1e-6
    )
    assert net.num_outputs == 5


def test_filter_response_norm_normalizes_each_example_and_channel():
    frn = FilterResponseNorm(3)
    frn.gamma[...] = jnp.array([1.0, 2.0, -1.0])
    frn.beta[...] = jnp.array([0.0, 0.5, 0.1])
    frn.tau[...] = jnp.array([-10.0, 0.0, 0.3])
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 4, 5, 3)))
    nu2 = (x**2).mean(axis=(1, 2), keepdims=True)
    y = np.array([1.0, 2.0, -1.0]) * x / np.sqrt(nu2 + 1e-6) + np.array([0.0, 0.5, 0.1])
    expected = np.maximum(y, np.array([-10.0, 0.0, 0.3]))
    np.testing.assert_allclose(frn(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SMALL)
def test_descriptions_are_hashable_networks(name):
    net, _ = SMALL[name]
    assert isinstance(net, Network)
    # Equal descriptions hash equally, so jit can take them as static arguments.
    assert hash(net) == hash(dataclasses.replace(net))


def test_lists_become_tuples():
    assert MLP([256, 256], 10) == MLP((256, 256), 10)
    assert hash(MLP([256, 256], 10)) == hash(MLP((256, 256), 10))
    assert DeepLinear([3, 4]).widths == (3, 4)


# Each bad argument must be named in the error together with the value received.
BAD_ARGUMENTS = [
    (lambda: MLP((256, 0), 10), ValueError, ["hidden", "(256, 0)"]),
    (lambda: MLP((2.5,), 10), TypeError, ["hidden", "2.5"]),
    (lambda: MLP(256, 10), TypeError, ["hidden", "256"]),
    (lambda: MLP((8,), 0), ValueError, ["num_outputs", "0"]),
    (lambda: MLP((8,), True), TypeError, ["num_outputs", "True"]),
    (lambda: MLP((8,), 2, "elu"), ValueError, ["activation", "elu", "relu", "swish"]),
    (lambda: LeNet5(-3), ValueError, ["num_outputs", "-3"]),
    (lambda: ResNet20FRN(width=0), ValueError, ["width", "0"]),
    (lambda: ResNet20FRN(blocks_per_stage=0), ValueError, ["blocks_per_stage", "0"]),
    (lambda: ResNet20FRN(activation="elu"), ValueError, ["activation", "elu", "gelu"]),
    (lambda: ResNet20FRN(num_outputs=10.0), TypeError, ["num_outputs", "10.0"]),
    (lambda: CNNLSTM(kernel_size=0), ValueError, ["kernel_size", "0"]),
    (lambda: CNNLSTM(vocab_size="20000"), TypeError, ["vocab_size", "20000"]),
    (lambda: DeepLinear((3,)), ValueError, ["widths", "(3,)"]),
    (lambda: DeepLinear((3, -1)), ValueError, ["widths", "(3, -1)"]),
    (lambda: DeepLinear((3, 1.5)), TypeError, ["widths", "1.5"]),
]


@pytest.mark.parametrize("make, error, words", BAD_ARGUMENTS)
def test_bad_constructor_arguments_are_named(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value)


BAD_INPUT_SHAPES = [
    (MLP((4,), 2), (28, 0)),
    (LeNet5(), (28, 28)),
    (LeNet5(), (8, 8, 1)),  # too small for three 3x3 stride-2 VALID pools
    (ResNet20FRN(), (32, 32)),
    (ResNet20FRN(), (32, 32, 3, 1)),
    (CNNLSTM(), (40, 2)),
    (CNNLSTM(), (7,)),  # conv 5 VALID leaves 3 steps, fewer than pool 4
    (DeepLinear((3, 4)), (4,)),
    (DeepLinear((3, 4)), (3, 1)),
]


@pytest.mark.parametrize("net, input_shape", BAD_INPUT_SHAPES)
def test_bad_input_shapes_are_named(net, input_shape):
    with pytest.raises(ValueError) as info:
        net.build(input_shape, rngs=nnx.Rngs(0))
    assert "input_shape" in str(info.value)
    assert str(input_shape) in str(info.value)


# Shapes and dtypes are static: tracing (jax.eval_shape) checks them, no compiling.
def _apply_abstract(net, input_shape, x):
    graphdef, params, rest = nnx.split(_abstract(net, input_shape), nnx.Param, ...)
    return jax.eval_shape(lambda p, x: nnx.merge(graphdef, p, rest)(x), params, x)


def test_cnn_lstm_accepts_the_shortest_sequence():
    # 8 tokens -> conv 5 VALID -> 4 steps -> one pool window of 4.
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    assert _apply_abstract(CNNLSTM(), (8,), tokens).shape == (2, 2)


def test_cnn_lstm_rejects_floating_tokens():
    tokens = jax.ShapeDtypeStruct((2, 40), jnp.float32)
    with pytest.raises(TypeError, match="float32"):
        _apply_abstract(CNNLSTM(), (40,), tokens)


def test_inputs_of_the_wrong_shape_are_rejected_when_traced():
    images = jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"\(2, 28, 28, 3\)"):
        _apply_abstract(LeNet5(), (28, 28, 1), images)


def test_lstm_follows_the_recurrence_with_the_forget_gate_shifted_by_one():
    # bnn_hmc's Haiku LSTM (Izmailov et al. 2021) computes sigmoid(f + 1).
    from weightspace.models.cnn_lstm import LSTM

    lstm = LSTM(3, 2, rngs=nnx.Rngs(0))
    lstm.bias[...] = jax.random.normal(jax.random.key(1), (8,))
    xs = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 3)), np.float64)
    wx, wh, b = (np.asarray(v[...], np.float64)
                 for v in (lstm.input_kernel, lstm.hidden_kernel, lstm.bias))
    sig = lambda z: 1 / (1 + np.exp(-z))
    h = c = np.zeros((2, 2))
    for t in range(5):
        i, g, f, o = np.split(xs[:, t] @ wx + h @ wh + b, 4, axis=-1)
        c = sig(f + 1) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
    np.testing.assert_allclose(lstm(jnp.asarray(xs, jnp.float32)), h, rtol=1e-5, atol=1e-6)
