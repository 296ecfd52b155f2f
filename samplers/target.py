"""What a sampler samples: a Posterior, or any callable log-density over a pytree.

samplers/ never imports weightspace.models: a Posterior is recognized by what
it offers (logdensity, init, predict, mesh, prior_variance, temperature).
The Posterior is a pytree holding the training data; it is passed as an
argument into the jitted steps, so the data are inputs of the compiled
program rather than constants baked into it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

_POSTERIOR_API = ("logdensity", "init", "predict", "mesh", "prior_variance", "temperature",
                  "input_shape")


def is_posterior(target) -> bool:
    return all(hasattr(target, name) for name in _POSTERIOR_API)


@dataclasses.dataclass(frozen=True)
class Target:
    """tree: the pytree argument of the jitted steps (the Posterior, or None);
    logdensity_of(tree) and predict_of(tree) give the functions inside them."""

    tree: Any
    logdensity_of: Callable
    predict_of: Callable | None
    posterior: Any
    mesh: Any
    description: dict

    def init_positions(self, key, num_chains: int):
        keys = jax.random.split(key, num_chains)
        return jax.jit(jax.vmap(self.posterior.init))(keys)


def _callable_name(fn) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{getattr(fn, '__module__', '?')}.{name}"


def resolve(target, *, predict_fn=None, mesh=None) -> Target:
    """A Target for a Posterior or a callable `logdensity(position) -> scalar`."""
    if is_posterior(target):
        if mesh is not None and mesh != target.mesh:
            raise ValueError(f"mesh={mesh} differs from the posterior's mesh {target.mesh}; "
                             f"build the posterior with ws.models.posterior(..., mesh=mesh)")
        if predict_fn is None:
            def predict(post):
                return lambda params, x: _mean(post.predict(params, x))
        else:
            def predict(_):
                return predict_fn
        return Target(tree=target, logdensity_of=lambda post: post.logdensity,
                      predict_of=predict, posterior=target, mesh=target.mesh,
                      description={"kind": "posterior", "repr": repr(target),
                                   "num_data": int(target.num_data)})
    if not callable(target):
        raise TypeError(f"target must be a Posterior (ws.models.posterior) or a callable "
                        f"logdensity(position) -> scalar, got {type(target).__name__}")
    return Target(tree=None, logdensity_of=lambda _: target,
                  predict_of=None if predict_fn is None else (lambda _: predict_fn),
                  posterior=None, mesh=mesh,
                  description={"kind": "callable", "name": _callable_name(target)})


def _mean(prediction):
    """Class probabilities as they are; for regression (mean, std) keep the mean,
    the function the weights compute (std is the fixed noise scale)."""
    return prediction[0] if isinstance(prediction, tuple) else prediction


def default_trajectory_length(target: Target) -> float:
    """(pi/2) * sqrt(T * prior_variance) for a Posterior (Izmailov et al. 2021):
    a quarter period of the prior's Gaussian, tempered; pi/2 for a callable
    (a quarter period of a unit-variance Gaussian)."""
    if target.posterior is None:
        return math.pi / 2
    return (math.pi / 2) * math.sqrt(target.posterior.temperature *
                                     target.posterior.prior_variance)


def fingerprint(tree) -> str:
    """A short hash of a pytree of arrays (init, eval_x) for run configs."""
    import hashlib

    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(jax.device_get(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]
