"""What a sampler samples: a Posterior, or any callable log-density over a pytree.

samplers/ never imports weightspace.models: a Posterior is recognized by what
it offers (logdensity, init, predict, mesh, prior_variance, temperature).
The Posterior is a pytree holding the training data; it is passed as an
argument into the jitted steps, so the data are inputs of the compiled
program rather than constants baked into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

_POSTERIOR_API = ("logdensity", "init", "predict", "mesh", "prior_variance", "temperature",
                  "input_shape")


def is_posterior(target) -> bool:
    return all(hasattr(target, name) for name in _POSTERIOR_API)


@dataclasses.dataclass(frozen=True)
class _Sampled:
    """What every target has. tree: the pytree argument of the jitted steps;
    predict_of(tree): the prediction function inside them, or None."""

    tree: Any
    predict_of: Callable | None
    posterior: Any
    mesh: Any
    description: dict

    def init_positions(self, key, num_chains: int):
        """The posterior's own initializer, one independent key per chain."""
        keys = jax.random.split(key, num_chains)
        return jax.jit(jax.vmap(self.posterior.init))(keys)


@dataclasses.dataclass(frozen=True)
class Target(_Sampled):
    """A full-batch target: tree is the Posterior (or None); logdensity_of(tree)
    gives the log density inside the jitted steps."""

    logdensity_of: Callable


def callable_name(fn) -> str:
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
                  description={"kind": "callable", "name": callable_name(target)})


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
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(jax.device_get(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class MinibatchTarget(_Sampled):
    """What a stochastic-gradient sampler needs.

    tree: the pytree argument of the jitted steps: (posterior or None, data rows).
    estimate_of(tree): f(position, batch) -> unbiased estimate of the full
        log density from a batch (a pytree of row arrays like `data_of(tree)`).
    data_of(tree): the training rows, a pytree of arrays with num_data rows
        first (a Posterior's may be followed by padding rows, never sampled).
    """

    estimate_of: Callable
    data_of: Callable
    num_data: int


def training_rows(data):
    """(data as jax arrays, number of rows) for the `data` of a callable target: a
    pytree of arrays sharing a leading number of rows > 0."""
    if data is None:
        raise ValueError("data is required with a callable target: a pytree of arrays "
                         "with the training rows first, e.g. (x, y)")
    leaves = jax.tree.leaves(data)
    lengths = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in leaves}
    if not leaves or len(lengths) != 1 or -1 in lengths or 0 in lengths:
        raise ValueError(f"data must be a pytree of arrays sharing a leading number of "
                         f"rows > 0; got shapes {[np.shape(a) for a in leaves]}")
    return jax.tree.map(jnp.asarray, data), lengths.pop()


def resolve_minibatch(target, *, data=None, predict_fn=None, mesh=None) -> MinibatchTarget:
    """A MinibatchTarget for a Posterior (its minibatch_logdensity over its own
    training rows) or a callable `logdensity(position, batch)` over `data`."""
    if is_posterior(target):
        if data is not None:
            raise ValueError("data is only for a callable target: a Posterior samples "
                             "minibatches of its own training rows")
        full = resolve(target, predict_fn=predict_fn, mesh=mesh)
        return MinibatchTarget(
            tree=(target, None),
            estimate_of=lambda tree: tree[0].minibatch_logdensity,
            data_of=lambda tree: (tree[0].x, tree[0].y), num_data=int(target.num_data),
            predict_of=None if full.predict_of is None else (
                lambda tree: full.predict_of(tree[0])),
            posterior=target, mesh=target.mesh, description=full.description)
    if not callable(target):
        raise TypeError(f"target must be a Posterior (ws.models.posterior) or a callable "
                        f"logdensity(position, batch) -> scalar, got {type(target).__name__}")
    data, num_data = training_rows(data)
    return MinibatchTarget(
        tree=(None, data), estimate_of=lambda _: target, data_of=lambda tree: tree[1],
        num_data=num_data,
        predict_of=None if predict_fn is None else (lambda _: predict_fn),
        posterior=None, mesh=mesh,
        description={"kind": "callable", "name": callable_name(target),
                     "data": fingerprint(data)})
