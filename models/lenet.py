"""LeNet-5 as used by Izmailov et al. 2021 (the bnn_hmc code): three 5x5 SAME
convolutions (6, 16, 120 filters), each followed by relu and a 3x3 stride-2 VALID
max-pool, then dense 84 (relu) and a linear output layer; biases everywhere.

On MNIST (28, 28, 1) with 10 classes it has 91,946 parameters
(Izmailov et al. 2021, "What Are Bayesian Neural Network Posteriors Really Like?").
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from weightspace.checks import positive_int
from weightspace.models.network import check_input_shape

_FILTERS = (6, 16, 120)
_KERNEL = (5, 5)
_POOL_WINDOW, _POOL_STRIDE = 3, 2
_DENSE = 84


def _pooled(n: int) -> int:
    """Spatial size after a VALID max-pool (0 if the window does not fit)."""
    return (n - _POOL_WINDOW) // _POOL_STRIDE + 1 if n >= _POOL_WINDOW else 0


def _check_input_shape(input_shape: object) -> tuple[int, int, int]:
    h, w, c = check_input_shape(input_shape, network="LeNet5", rank=3,
                                need="an image shape (height, width, channels)")
    # SAME convolutions keep the size; each VALID pool needs a full 3x3 window.
    ph, pw = h, w
    for _ in _FILTERS:
        ph, pw = _pooled(ph), _pooled(pw)
    if ph == 0 or pw == 0:
        raise ValueError(
            "LeNet5 pools three times with 3x3 stride-2 VALID windows, so height "
            f"and width must be at least 15; got input_shape={input_shape!r}"
        )
    return h, w, c


class LeNet5Module(nnx.Module):
    """x: (batch, height, width, channels) -> logits (batch, num_outputs)."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_outputs: int, *, rngs: nnx.Rngs
    ):
        self.input_shape = input_shape
        h, w, c = input_shape
        convs = []
        for f in _FILTERS:
            convs.append(nnx.Conv(c, f, _KERNEL, padding="SAME", rngs=rngs))
            c = f
            h, w = _pooled(h), _pooled(w)
        self.convs = nnx.List(convs)
        self.hidden = nnx.Linear(h * w * c, _DENSE, rngs=rngs)
        self.out = nnx.Linear(_DENSE, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, *{self.input_shape}); got x.shape={x.shape}"
            )
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
            x = nnx.max_pool(
                x,
                (_POOL_WINDOW, _POOL_WINDOW),
                strides=(_POOL_STRIDE, _POOL_STRIDE),
                padding="VALID",
            )
        x = x.reshape(x.shape[0], -1)
        return self.out(jax.nn.relu(self.hidden(x)))


@dataclasses.dataclass(frozen=True)
class LeNet5:
    """LeNet-5 for (height, width, channels) images, height and width >= 15."""

    num_outputs: int = 10

    def __post_init__(self):
        object.__setattr__(self, "num_outputs", positive_int("num_outputs", self.num_outputs))

    def build(self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs) -> LeNet5Module:
        input_shape = _check_input_shape(input_shape)
        return LeNet5Module(input_shape, self.num_outputs, rngs=rngs)

    def permutation_spec(self) -> dict:
        """Filters of each convolution (max-pooling and relu act channel by
        channel) and the dense layer's units. The dense layer reads the last
        (height, width, channels) map flattened, so its rows are viewed as
        (height * width, channels, units) to permute the channels."""
        dense_view = (-1, _FILTERS[-1], _DENSE)
        spec = {}
        for j in range(len(_FILTERS)):
            reader = ((f"convs.{j + 1}.kernel", 2) if j + 1 < len(_FILTERS)
                      else ("hidden.kernel", 1, dense_view))
            spec[f"convs.{j}"] = [(f"convs.{j}.kernel", 3), (f"convs.{j}.bias", 0), reader]
        spec["hidden"] = [("hidden.kernel", 2, dense_view), ("hidden.bias", 0),
                          ("out.kernel", 0)]
        return spec
