"""What the library expects of a network.

A network here is a small frozen description (hyper-parameters only) that can
build a flax.nnx module once the input shape is known. Keeping the description
separate from the module lets `ws.models.MLP((256, 256), 10)` be written before
the data is loaded, be hashed (it is static under jit), and be rebuilt with
fresh random weights for every chain.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from flax import nnx


@runtime_checkable
class Network(Protocol):
    """`build(input_shape, rngs=...)` returns an nnx.Module mapping a batch
    (batch, *input_shape) to outputs (batch, num_outputs): logits for
    classification, predicted means for regression."""

    num_outputs: int

    def build(self, input_shape: tuple[int, ...], *, rngs: nnx.Rngs) -> nnx.Module:
        ...


def check_input_shape(input_shape: object, *, network: str, rank: int | None = None,
                      need: str = "a tuple of positive ints") -> tuple[int, ...]:
    """`input_shape` (batch axis excluded) as a tuple of positive ints with
    `rank` entries when given; else a ValueError saying what `network` needs."""
    ok = (isinstance(input_shape, Sequence)
          and (rank is None or len(input_shape) == rank)
          and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
                  for d in input_shape))
    if not ok:
        raise ValueError(f"{network} needs input_shape to be {need} (batch axis "
                         f"excluded); got input_shape={input_shape!r}")
    return tuple(int(d) for d in input_shape)
