"""Gaussian priors over network weights."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

SCALINGS = ("isotropic", "fan_in")


def _is_kernel(path, leaf) -> bool:
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    # "kernel" in flax layers; "input_kernel"/"hidden_kernel" in the LSTM.
    return isinstance(name, str) and name.endswith("kernel") and np.ndim(leaf) >= 2


@dataclasses.dataclass(frozen=True)
class GaussianPrior:
    """w ~ Normal(0, v) independently for every weight.

    scaling="isotropic": v = variance for all weights (Izmailov et al. 2021).
    scaling="fan_in": v = variance / fan_in for weight matrices and convolution
    kernels (fan_in = product of all but the last axis), v = variance for
    biases, normalization parameters and embeddings; the prior then keeps the
    scale of activations independent of layer width (Neal 1996).
    """

    variance: float
    scaling: str = "isotropic"

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown prior scaling={self.scaling!r}; known: "
                             f"{', '.join(SCALINGS)}")

    def variances(self, params):
        """A pytree like `params` of per-leaf prior variances (Python floats)."""
        def leaf_variance(path, leaf):
            if self.scaling == "fan_in" and _is_kernel(path, leaf):
                return self.variance / math.prod(np.shape(leaf)[:-1])
            return self.variance
        return jax.tree_util.tree_map_with_path(leaf_variance, params)

    def log_prob(self, params):
        """Normalized log-density, summed over all weights."""
        def leaf_log_prob(w, v):
            return (-0.5 * jnp.sum(jnp.square(w)) / v
                    - 0.5 * w.size * math.log(2 * math.pi * v))
        terms = jax.tree.leaves(jax.tree.map(leaf_log_prob, params, self.variances(params)))
        return sum(terms, jnp.zeros((), jnp.result_type(*jax.tree.leaves(params))))

    def sample(self, key, params):
        """A draw from the prior with the structure and dtypes of `params`."""
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        variances = jax.tree.leaves(self.variances(params))
        draws = [math.sqrt(v) * jax.random.normal(k, jnp.shape(w), jnp.result_type(w))
                 for k, w, v in zip(keys, leaves, variances)]
        return jax.tree.unflatten(treedef, draws)
