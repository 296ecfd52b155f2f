"""Activation functions the networks accept by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
    "gelu": jax.nn.gelu,
}


def check_activation(activation: object) -> str:
    """Return `activation` if it names an entry of ACTIVATIONS, else raise."""
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a str, one of {sorted(ACTIVATIONS)}; "
            f"got activation={activation!r}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}; "
            f"got activation={activation!r}"
        )
    return activation
