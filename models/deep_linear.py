"""Deep linear network: x -> x W_1 W_2 ... W_L, no biases, no activations.

The function is linear in x, but the parametrization by a product of matrices
is singular, which makes it a test case with a known learning coefficient
(Aoyagi 2024, "Consideration on the learning efficiency of multiple-layered
neural networks with linear units").
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence

import jax
from flax import nnx

# LeCun normal (variance 1 / fan_in) keeps the scale of x W_1 ... W_l roughly
# constant with depth.
_INIT = nnx.initializers.lecun_normal()


class DeepLinearModule(nnx.Module):
    """x: (batch, widths[0]) -> (batch, widths[-1]).

    Kernel l (from 1) has shape (widths[l-1], widths[l]).
    """

    def __init__(self, widths: tuple[int, ...], *, rngs: nnx.Rngs):
        self.in_features = widths[0]
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, use_bias=False, kernel_init=_INIT, rngs=rngs)
                for a, b in zip(widths[:-1], widths[1:])
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have shape (batch, {self.in_features}); got x.shape={x.shape}"
            )
        for layer in self.layers:
            x = layer(x)
        return x


@dataclasses.dataclass(frozen=True)
class DeepLinear:
    """widths = (d_in, h_1, ..., h_{L-1}, d_out): L = len(widths) - 1 linear maps.

    A list is stored as a tuple; num_outputs is widths[-1].
    """

    widths: tuple[int, ...]

    def __post_init__(self):
        w = self.widths
        if isinstance(w, (str, bytes)) or not isinstance(w, Sequence):
            raise TypeError(
                f"widths must be a tuple of positive ints; got widths={w!r}"
            )
        if not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in w
        ):
            raise TypeError(
                f"widths must be a tuple of positive ints; got widths={w!r}"
            )
        if len(w) < 2 or not all(d > 0 for d in w):
            raise ValueError(
                "widths must be (d_in, ..., d_out), at least two positive ints; "
                f"got widths={w!r}"
            )
        object.__setattr__(self, "widths", tuple(int(d) for d in w))

    @property
    def num_outputs(self) -> int:
        return self.widths[-1]

    def build(
        self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs
    ) -> DeepLinearModule:
        if not isinstance(input_shape, Sequence) or tuple(input_shape) != (
            self.widths[0],
        ):
            raise ValueError(
                f"DeepLinear with widths={self.widths} needs input_shape="
                f"({self.widths[0]},); got input_shape={input_shape!r}"
            )
        return DeepLinearModule(self.widths, rngs=rngs)

    def permutation_spec(self) -> dict:
        """Units of hidden width l: columns of layers.l.kernel, rows of the next
        kernel. A deep linear network is also invariant under any invertible
        matrix between layers; only the permutations are aligned."""
        return {f"layers.{i}": [(f"layers.{i}.kernel", 1), (f"layers.{i + 1}.kernel", 0)]
                for i in range(len(self.widths) - 2)}
