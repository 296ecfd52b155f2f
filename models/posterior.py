"""The tempered posterior over a network's weights given a dataset.

    log p_T(w | D) = (log p(w) + sum_i log p(y_i | x_i, w)) / T   (+ const)

`Posterior` is a JAX pytree whose leaves are the (sharded) training arrays and
whose static part is the network, prior, likelihood and temperature. Pass it as
an argument to jitted functions, `jax.jit(lambda post, w: post.logdensity(w))`,
so the data enter the compiled program as inputs; a closure over a Posterior
would bake the whole dataset into the program as a constant.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from weightspace import sharding as sharding_lib
from weightspace.checks import positive_float
from weightspace.data.dataset import Dataset
from weightspace.models import likelihood as likelihood_lib
from weightspace.models.network import Network
from weightspace.models.prior import GaussianPrior


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything about a Posterior that is not an array (hashable: jit key)."""

    network: Any
    graphdef: Any
    likelihood: Any
    prior: GaussianPrior
    temperature: float
    num_data: int
    num_classes: int | None
    input_shape: tuple[int, ...]
    mesh: Any
    dataset_name: str


@jax.tree_util.register_pytree_node_class
class Posterior:
    """Tempered posterior of `network` on a dataset (see module docstring).

    Attributes: network, likelihood, prior, prior_variance, temperature,
    num_data (training rows, without padding), num_classes, mesh; x, y, mask:
    the training arrays, rows sharded along the mesh's "data" axis and padded
    to a multiple of it, `mask` False on padding rows.
    """

    def __init__(self, static: _Static, x, y, mask, rest, default_key):
        self._static = static
        self.x, self.y, self.mask = x, y, mask
        self._rest = rest
        self._default_key = default_key

    # -- pytree -------------------------------------------------------------
    def tree_flatten(self):
        return (self.x, self.y, self.mask, self._rest, self._default_key), self._static

    @classmethod
    def tree_unflatten(cls, static, children):
        return cls(static, *children)

    # -- static facts -------------------------------------------------------
    network = property(lambda self: self._static.network)
    likelihood = property(lambda self: self._static.likelihood)
    prior = property(lambda self: self._static.prior)
    prior_variance = property(lambda self: self._static.prior.variance)
    temperature = property(lambda self: self._static.temperature)
    num_data = property(lambda self: self._static.num_data)
    num_classes = property(lambda self: self._static.num_classes)
    mesh = property(lambda self: self._static.mesh)
    input_shape = property(lambda self: self._static.input_shape)

    def __repr__(self):
        s = self._static
        return (f"Posterior({s.network!r} on {s.dataset_name!r}: num_data={s.num_data}, "
                f"likelihood={s.likelihood!r}, prior={s.prior!r}, "
                f"temperature={s.temperature})")

    # -- parameters ---------------------------------------------------------
    def init(self, key=None):
        """Parameters drawn from the network's own initializer (He, LeCun, ...),
        a nested dict of arrays; replicated over the mesh. Works under jit/vmap."""
        key = self._default_key if key is None else key
        return _init(self._static, key)

    def apply(self, params, x):
        """Network outputs (n, num_outputs) for inputs x (n, *input_shape)."""
        return nnx.merge(self._static.graphdef, params, self._rest)(x)

    def num_params(self, params=None) -> int:
        params = self.init() if params is None else params
        return sum(math.prod(jnp.shape(w)) for w in jax.tree.leaves(params))

    # -- densities ----------------------------------------------------------
    def log_prior(self, params):
        return self._static.prior.log_prob(params)

    def _log_lik_terms(self, params, x, y):
        return self._static.likelihood.log_prob(self.apply(params, x), y)

    def log_likelihood(self, params):
        """Sum over all training rows of log p(y_i | x_i, w) (padding excluded)."""
        return _log_likelihood(self, params)

    def logdensity(self, params):
        """Full-batch (log prior + summed log likelihood) / temperature."""
        return _logdensity(self, params)

    def logdensity_and_grad(self, params):
        """(logdensity, its gradient with the structure of params)."""
        return _logdensity_and_grad(self, params)

    def minibatch_logdensity(self, params, batch):
        """Unbiased estimate of `logdensity` from a minibatch.

        batch: (x, y) or (x, y, mask) with B rows (B = mask.sum() when given);
        the summed log likelihood is scaled by num_data / B.
        """
        x, y, mask = _unpack(batch)
        terms = self._log_lik_terms(params, x, y)
        if mask is None:
            total, count = jnp.sum(terms), terms.shape[0]
        else:
            total = jnp.sum(jnp.where(mask, terms, 0.0))
            count = jnp.maximum(jnp.sum(mask), 1)
        scaled = self._static.num_data / count * total
        return (self.log_prior(params) + scaled) / self._static.temperature

    def loss(self, params, batch=None):
        """Mean negative log likelihood over `batch` ((x, y) or (x, y, mask)),
        or over the whole training set when batch is None. Untempered."""
        if batch is None:
            return -self.log_likelihood(params) / self._static.num_data
        x, y, mask = _unpack(batch)
        terms = self._log_lik_terms(params, x, y)
        if mask is None:
            return -jnp.mean(terms)
        return -jnp.sum(jnp.where(mask, terms, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def predict(self, params, x):
        """Class probabilities (n, k) for classification; for regression
        (mean, std), each (n, d), of the predictive given these weights."""
        return self._static.likelihood.predict(self.apply(params, x))


def _unpack(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(f"batch must be (x, y) or (x, y, mask), got {type(batch).__name__}")
    return (*batch, None) if len(batch) == 2 else tuple(batch)


@functools.partial(jax.jit, static_argnums=0)
def _init(static: _Static, key):
    module = static.network.build(static.input_shape, rngs=nnx.Rngs(key))
    params = nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[1])
    if static.mesh is not None:
        params = jax.lax.with_sharding_constraint(params, sharding_lib.replicated(static.mesh))
    return params


@jax.jit
def _log_likelihood(post: Posterior, params):
    terms = post._log_lik_terms(params, post.x, post.y)
    return jnp.sum(jnp.where(post.mask, terms, 0.0))


@jax.jit
def _logdensity(post: Posterior, params):
    return (post.log_prior(params) + _log_likelihood(post, params)) / post.temperature


@jax.jit
def _logdensity_and_grad(post: Posterior, params):
    return jax.value_and_grad(_logdensity, argnums=1)(post, params)


# -- construction with checks at the boundary ---------------------------------

def _check_finite(name, array):
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf); "
                             f"clean or drop those rows before building a posterior")


def _check_tokens(network, data: Dataset):
    """Token ids must index the embedding: out-of-range ids would silently read
    NaN rows (too large) or rows from the end (negative) inside jit."""
    vocab_size = getattr(network, "vocab_size", None)
    for name in ("x_train", "x_test"):
        x = np.asarray(getattr(data, name))
        if vocab_size is None or not np.issubdtype(x.dtype, np.integer) or not x.size:
            continue
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"data.{name} holds token ids in [{low}, {high}], outside "
                             f"[0, {vocab_size}) of network={network!r}")


def _check_data(data: Dataset):
    for name in ("x_train", "x_test", "y_train", "y_test"):
        _check_finite(f"data.{name}", np.asarray(getattr(data, name)))
    if data.num_classes is None:
        for name in ("y_train", "y_test"):
            y = np.asarray(getattr(data, name))
            if y.ndim != 2:
                raise ValueError(f"data.{name} has shape {y.shape}: regression targets "
                                 f"must be (n, d_out)")
        return
    for name in ("y_train", "y_test"):
        y = np.asarray(getattr(data, name))
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise ValueError(f"data.{name} must hold integer class labels of shape (n,), "
                             f"got dtype {y.dtype} and shape {y.shape}")
        if y.size:
            bad = y[(y < 0) | (y >= data.num_classes)]
            if bad.size:
                raise ValueError(
                    f"data.{name} has {bad.size} label(s) outside [0, {data.num_classes}), "
                    f"e.g. {int(bad[0])}")


def _abstract_module(network, input_shape, input_dtype):
    """Build the network abstractly and check it accepts the data's inputs."""
    try:
        module = nnx.eval_shape(lambda: network.build(input_shape, rngs=nnx.Rngs(0)))
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        sample = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
        out = jax.eval_shape(lambda p, r, x: nnx.merge(graphdef, p, r)(x),
                             nnx.to_pure_dict(params), rest, sample)
    except (ValueError, TypeError) as err:
        raise ValueError(f"network={network!r} does not accept inputs of shape "
                         f"{input_shape} and dtype {np.dtype(input_dtype)} "
                         f"(data.x_train rows): {err}") from err
    if jax.tree.leaves(rest):
        kinds = sorted({type(v).__name__ for v in jax.tree.leaves(
            rest, is_leaf=lambda v: isinstance(v, nnx.Variable))})
        raise ValueError(f"network={network!r} holds non-parameter state ({kinds}), such as "
                         f"BatchNorm statistics; a posterior needs outputs that depend "
                         f"only on the weights and each input row")
    return graphdef, rest, out


def posterior(network: Network, data: Dataset, *, prior_variance: float,
              temperature: float = 1.0, likelihood=None, prior_scaling: str = "isotropic",
              mesh=None, key=None) -> Posterior:
    """The tempered posterior of `network` on `data`.

    network: a network description with `build(input_shape, rngs=)` and
        `num_outputs` (ws.models.MLP, LeNet5, ResNet20FRN, CNNLSTM, DeepLinear).
    data: a `ws.data.Dataset`; its training rows are placed on `mesh`.
    prior_variance: variance of the Gaussian prior (Izmailov et al. 2021 use
        1/5 for CIFAR and 1/40 for IMDB).
    temperature: T in p(w)^(1/T) p(D|w)^(1/T); 1 is the Bayes posterior.
    likelihood: None (categorical for classification, Gaussian for
        regression), "categorical", "gaussian", or ws.models.Categorical() /
        ws.models.Gaussian(noise_scale=...).
    prior_scaling: "isotropic" or "fan_in" (see GaussianPrior).
    mesh: a ("chain", "data") mesh (ws.sharding.make_mesh); default: all
        devices along "data".
    key: default key of `init()`; default jax.random.key(0).
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a weightspace network description with "
                        f"build(input_shape, rngs=...) and num_outputs (e.g. "
                        f"ws.models.MLP((256, 256), 10)), got {network!r}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a ws.data.Dataset (ws.data.load(...)), got "
                        f"{type(data).__name__}")
    prior_variance = positive_float("prior_variance", prior_variance)
    temperature = positive_float("temperature", temperature)
    prior = GaussianPrior(prior_variance, scaling=prior_scaling)
    lik = likelihood_lib.resolve(likelihood, data)
    _check_data(data)
    _check_tokens(network, data)
    x_train, y_train = np.asarray(data.x_train), np.asarray(data.y_train)
    input_shape, input_dtype = tuple(x_train.shape[1:]), x_train.dtype
    graphdef, rest, out = _abstract_module(network, input_shape, input_dtype)
    expected = data.num_classes if data.num_classes is not None else y_train.shape[1]
    if out.shape != (1, expected):
        raise ValueError(f"network={network!r} produces outputs of shape {out.shape[1:]} "
                         f"per example, but dataset {data.name!r} needs ({expected},) "
                         f"({'classes' if data.num_classes else 'target dimensions'})")
    if mesh is None:
        mesh = sharding_lib.make_mesh()
    (x, y), mask = sharding_lib.shard_rows(mesh, (x_train, y_train),
                                           num_rows=data.num_train,
                                           offset=data.train_offset)
    static = _Static(network=network, graphdef=graphdef, likelihood=lik, prior=prior,
                     temperature=temperature, num_data=data.num_train,
                     num_classes=data.num_classes, input_shape=input_shape,
                     mesh=mesh, dataset_name=data.name)
    rest = jax.device_put(rest, sharding_lib.replicated(mesh))
    key = jax.random.key(0) if key is None else key
    return Posterior(static, x, y, mask, rest, key)
