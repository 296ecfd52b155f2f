"""Observation models: log p(y | network outputs) per example, and predictions."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Categorical:
    """y ~ Categorical(softmax(outputs)); outputs are logits (n, num_classes)."""

    name = "categorical"

    def log_prob(self, outputs, y):
        """outputs (n, k), y (n,) int -> (n,) log-probabilities."""
        logp = jax.nn.log_softmax(outputs, axis=-1)
        return jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]

    def predict(self, outputs):
        """Class probabilities (n, k)."""
        return jax.nn.softmax(outputs, axis=-1)


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """y ~ Normal(outputs, noise_scale^2 I), the noise scale fixed."""

    noise_scale: float = 1.0
    name = "gaussian"

    def __post_init__(self):
        if (isinstance(self.noise_scale, bool)
                or not isinstance(self.noise_scale, (int, float))
                or not math.isfinite(self.noise_scale) or self.noise_scale <= 0):
            raise ValueError(f"noise_scale={self.noise_scale!r} is not allowed: expected a "
                             f"finite number > 0")

    def log_prob(self, outputs, y):
        """outputs (n, d), y (n, d) -> (n,) log-densities summed over d."""
        z = (y - outputs) / self.noise_scale
        per_dim = -0.5 * z**2 - math.log(self.noise_scale) - 0.5 * math.log(2 * math.pi)
        return jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=-1)

    def predict(self, outputs):
        """(mean, std), both (n, d): the network output and the noise scale."""
        return outputs, jnp.full_like(outputs, self.noise_scale)


NAMES = ("categorical", "gaussian")


def resolve(likelihood, dataset):
    """The likelihood object for `likelihood` (None, a name, or an object) and data.

    None picks categorical for classification and, for regression, a Gaussian
    whose noise scale is the one the data were generated with when the dataset
    records it (`info["noise_std"]`), else 1.
    """
    regression = dataset.num_classes is None
    if likelihood is None:
        likelihood = "gaussian" if regression else "categorical"
    if isinstance(likelihood, str):
        if likelihood not in NAMES:
            raise ValueError(f"unknown likelihood={likelihood!r}; known: {', '.join(NAMES)}")
        if likelihood == "categorical":
            likelihood = Categorical()
        else:
            noise = dataset.info.get("noise_std") or 1.0
            likelihood = Gaussian(noise_scale=float(noise))
    if not isinstance(likelihood, (Categorical, Gaussian)):
        raise TypeError(f"likelihood must be None, one of {NAMES} or a Categorical/"
                        f"Gaussian object, got {likelihood!r}")
    if isinstance(likelihood, Categorical) and regression:
        raise ValueError(f"likelihood={likelihood!r} needs class labels, but dataset "
                         f"{dataset.name!r} is a regression task (num_classes=None)")
    if isinstance(likelihood, Gaussian) and not regression:
        raise ValueError(f"likelihood={likelihood!r} needs real-valued targets, but "
                         f"dataset {dataset.name!r} has {dataset.num_classes} classes")
    return likelihood
