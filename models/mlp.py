"""Multi-layer perceptron: flatten, dense layers with biases, linear output.

`MLP((256, 256), 10)` on MNIST (28, 28, 1) has 269,322 parameters, the MLP of
Izmailov et al. 2021 ("What Are Bayesian Neural Network Posteriors Really Like?").
With `hidden=()` it is a linear model (logistic or linear regression).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
from flax import nnx

from weightspace.checks import positive_int
from weightspace.models.activations import ACTIVATIONS, check_activation
from weightspace.models.network import check_input_shape


class MLPModule(nnx.Module):
    """x: (batch, *input_shape) -> logits (batch, num_outputs)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        hidden: tuple[int, ...],
        num_outputs: int,
        activation: str,
        *,
        rngs: nnx.Rngs,
    ):
        self.input_shape = input_shape
        self.activation = activation
        widths = (math.prod(input_shape), *hidden, num_outputs)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, *{self.input_shape}); got x.shape={x.shape}"
            )
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


@dataclasses.dataclass(frozen=True)
class MLP:
    """Fully connected network.

    hidden: widths of the hidden layers, may be empty; a list is stored as a tuple.
    num_outputs: logits (classification) or predicted means (regression).
    activation: one of "relu", "tanh", "swish", "gelu".
    """

    hidden: tuple[int, ...]
    num_outputs: int
    activation: str = "relu"

    def __post_init__(self):
        if isinstance(self.hidden, (str, bytes)) or not isinstance(
            self.hidden, Sequence
        ):
            raise TypeError(
                f"hidden must be a tuple of positive ints; got hidden={self.hidden!r}"
            )
        try:
            hidden = tuple(positive_int("hidden", h) for h in self.hidden)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"hidden must be a tuple of positive ints; got hidden={self.hidden!r}"
            ) from None
        # Frozen dataclass: a list would make the description unhashable.
        object.__setattr__(self, "hidden", hidden)
        object.__setattr__(
            self, "num_outputs", positive_int("num_outputs", self.num_outputs)
        )
        check_activation(self.activation)

    def build(self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs) -> MLPModule:
        input_shape = check_input_shape(input_shape, network="MLP")
        return MLPModule(
            input_shape, self.hidden, self.num_outputs, self.activation, rngs=rngs
        )

    def permutation_spec(self) -> dict:
        """Hidden units of layer i: columns of layers.i.kernel, entries of
        layers.i.bias, rows of the next kernel (see ws.diagnostics.align_permutations)."""
        return {f"layers.{i}": [(f"layers.{i}.kernel", 1), (f"layers.{i}.bias", 0),
                                (f"layers.{i + 1}.kernel", 0)]
                for i in range(len(self.hidden))}
