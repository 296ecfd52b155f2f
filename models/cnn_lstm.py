"""CNN-LSTM text classifier, the IMDB model of Izmailov et al. 2021.

token ids -> embedding -> 1-D conv (VALID, bias) -> relu -> max-pool
(window = stride = pool_size) -> LSTM over time -> last hidden state -> dense.
With the defaults it has 2,700,098 parameters, 2,560,000 of them in the
20,000 x 128 embedding (Izmailov et al. 2021, "What Are Bayesian Neural
Network Posteriors Really Like?").
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from weightspace.checks import positive_int


class LSTM(nnx.Module):
    """LSTM over (batch, T, in) -> last hidden state (batch, hidden), zero start.

    Gates as in the bnn_hmc model of Izmailov et al. 2021 (a Haiku LSTM): the
    forget gate reads sigmoid(f + 1). The +1 is not a parameter, so under a
    zero-mean prior it changes the posterior; flax's cells have no such shift.
    Parameters: input_kernel (in, 4h), hidden_kernel (h, 4h), bias (4h), the
    count of one dense layer over [x, h].
    """

    def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.hidden_size = hidden_size
        self.input_kernel = nnx.Param(init(rngs.params(), (in_features, 4 * hidden_size)))
        self.hidden_kernel = nnx.Param(init(rngs.params(), (hidden_size, 4 * hidden_size)))
        self.bias = nnx.Param(jnp.zeros((4 * hidden_size,)))

    def __call__(self, xs: jax.Array) -> jax.Array:
        # The input projection of every step at once; only h @ W_h is sequential.
        projected = xs @ self.input_kernel[...] + self.bias[...]  # (batch, T, 4h)
        w_h = self.hidden_kernel[...]

        def step(carry, pre):
            h, c = carry
            i, g, f, o = jnp.split(pre + h @ w_h, 4, axis=-1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), None

        zeros = jnp.zeros((xs.shape[0], self.hidden_size), projected.dtype)
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.moveaxis(projected, 1, 0))
        return h


class CNNLSTMModule(nnx.Module):
    """tokens: (batch, T) integer ids in [0, vocab_size) -> logits (batch, num_outputs).

    Ids are values, so they are not checked here (they may be traced): ids >=
    vocab_size embed as NaN rows and negative ids wrap around.
    """

    def __init__(
        self,
        seq_len: int,
        vocab_size: int,
        num_outputs: int,
        embedding_dim: int,
        num_filters: int,
        kernel_size: int,
        pool_size: int,
        hidden_size: int,
        *,
        rngs: nnx.Rngs,
    ):
        self.seq_len = seq_len
        self.pool_size = pool_size
        self.embed = nnx.Embed(vocab_size, embedding_dim, rngs=rngs)
        self.conv = nnx.Conv(
            embedding_dim, num_filters, (kernel_size,), padding="VALID", rngs=rngs
        )
        self.lstm = LSTM(num_filters, hidden_size, rngs=rngs)
        self.head = nnx.Linear(hidden_size, num_outputs, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        # dtype and shape are static, so these checks run once, at trace time.
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(
                f"CNNLSTM expects integer token ids; got tokens.dtype={tokens.dtype}"
            )
        if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(
                f"tokens must have shape (batch, {self.seq_len}); "
                f"got tokens.shape={tokens.shape}"
            )
        x = self.embed(tokens)  # (batch, T, embedding_dim)
        x = jax.nn.relu(self.conv(x))  # (batch, T - kernel_size + 1, num_filters)
        x = nnx.max_pool(
            x, (self.pool_size,), strides=(self.pool_size,), padding="VALID"
        )
        return self.head(self.lstm(x))


@dataclasses.dataclass(frozen=True)
class CNNLSTM:
    """CNN-LSTM over (T,) integer token sequences, T >= kernel_size + pool_size - 1.

    Defaults are the IMDB model of Izmailov et al. 2021 (bnn_hmc `cnn_lstm`).
    """

    vocab_size: int = 20000
    num_outputs: int = 2
    embedding_dim: int = 128
    num_filters: int = 64
    kernel_size: int = 5
    pool_size: int = 4
    hidden_size: int = 128

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = positive_int(field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, value)

    def build(self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs) -> CNNLSTMModule:
        min_len = self.kernel_size + self.pool_size - 1
        ok = (
            isinstance(input_shape, Sequence)
            and len(input_shape) == 1
            and isinstance(input_shape[0], numbers.Integral)
            and not isinstance(input_shape[0], bool)
            and input_shape[0] >= min_len
        )
        if not ok:
            raise ValueError(
                "CNNLSTM needs token sequences: input_shape must be (T,) with "
                f"T >= kernel_size + pool_size - 1 = {min_len}; "
                f"got input_shape={input_shape!r}"
            )
        return CNNLSTMModule(
            int(input_shape[0]),
            self.vocab_size,
            self.num_outputs,
            self.embedding_dim,
            self.num_filters,
            self.kernel_size,
            self.pool_size,
            self.hidden_size,
            rngs=rngs,
        )

    def permutation_spec(self) -> dict:
        """Embedding dimensions, conv filters (relu and max-pooling over time
        act filter by filter) and LSTM units; the fused LSTM kernels hold four
        gate blocks of hidden_size columns, viewed as (rows, 4, hidden_size) so
        that one permutation moves a unit's four gates together."""
        f, h = self.num_filters, self.hidden_size
        return {
            "embedding": [("embed.embedding", 1), ("conv.kernel", 1)],
            "filters": [("conv.kernel", 2), ("conv.bias", 0),
                        ("lstm.input_kernel", 0, (f, 4, h))],
            "lstm": [("lstm.input_kernel", 2, (f, 4, h)),
                     ("lstm.hidden_kernel", 0, (h, 4, h)),
                     ("lstm.hidden_kernel", 2, (h, 4, h)),
                     ("lstm.bias", 1, (4, h)), ("head.kernel", 0)],
        }
