"""Deep linear networks: LLC problems whose answer is known.

A deep linear teacher with a product matrix of rank r generates the data
(`ws.data.load("dln", ...)`); the true learning coefficient of a student with
the same widths is `theory.dln(widths, r)` (Aoyagi 2024). `dln_problem` builds
the posterior and a local minimum w* of the loss near the teacher, the point at
which `llc` then estimates the coefficient.

With the Gaussian likelihood of unit noise, L_n depends on the data only
through their second moments:

    L_n(W) = 1/2 (tr(W' Sxx W) - 2 tr(W' Sxy) + syy) + d_out/2 log(2 pi),

W the product of the layers, Sxx = X'X/n, Sxy = X'Y/n, syy = |Y|^2/n.
`DLNProblem.moment_loss` evaluates that in O(d^3) instead of O(n d) per step, so
long chains at large n are cheap:

    ws.slt.llc(p.moment_loss, p.params_star, key, data=p.moments, nbeta=p.nbeta)

(`moments` is one "row", so nbeta, n / log n of the real n, is passed.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from weightspace import data as data_lib
from weightspace import models, samplers
from weightspace.checks import int_at_least
from weightspace.samplers.baselines import checkpoint_epochs
from weightspace.slt import theory


@dataclasses.dataclass(frozen=True)
class DLNProblem:
    """posterior: the Gaussian-likelihood posterior of ws.models.DeepLinear(widths)
    on `data` (prior variance 1; `llc` uses only its mean NLL); params_star: w*,
    leaves like the network's parameters; init_loss: L_n(w*); theory: the true
    learning coefficient (a Fraction); moments: {"xx", "xy", "yy"}, the second
    moments of the training rows with a leading axis of one "row" (the `data`
    of `moment_loss`); nbeta: n / log n for the n training rows."""

    widths: tuple
    rank: int
    data: Any
    posterior: Any
    params_star: Any
    init_loss: float
    theory: Any
    moments: Any
    nbeta: float

    @staticmethod
    def moment_loss(params, moments):
        """L_n(params) from the second moments (module docstring): equal to
        posterior.loss(params) up to rounding."""
        kernels = [layer["kernel"] for _, layer in sorted(params["layers"].items())]
        product = kernels[0]
        for w in kernels[1:]:
            product = product @ w
        xx, xy, yy = moments["xx"][0], moments["xy"][0], moments["yy"][0]
        quadratic = jnp.sum(product * (xx @ product)) - 2 * jnp.sum(product * xy) + yy
        return 0.5 * quadratic + 0.5 * product.shape[1] * math.log(2 * math.pi)


def _moments(x, y) -> dict:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]
    out = {"xx": x.T @ x / n, "xy": x.T @ y / n, "yy": np.sum(y * y) / n}
    return {k: jnp.asarray(np.asarray(v, np.float32)[None]) for k, v in out.items()}


def dln_problem(widths, rank: int, *, num_train: int = 20000, seed: int = 0,
                steps: int = 3000, learning_rate: float = 1e-3) -> DLNProblem:
    """The data of a rank-`rank` deep linear teacher, its posterior and w*.

    w* is found by `steps` full-batch Adam steps on L_n from the teacher's own
    layers: the teacher is the population minimum, so the empirical minimum is
    in its basin (the LLC is defined at a local minimum of L_n; `llc` flags a w*
    whose chains fall below L_n(w*)).
    """
    steps = int_at_least("steps", steps, 0)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got learning_rate={learning_rate!r}")
    ds = data_lib.load("dln", widths=tuple(widths), rank=rank, num_train=num_train,
                       seed=seed)
    network = models.DeepLinear(tuple(widths))
    post = models.posterior(network, ds, prior_variance=1.0)
    template = post.init(jax.random.key(0))
    teacher = iter(jnp.asarray(w) for w in ds.info["teacher"])
    w = jax.tree.map(lambda leaf: next(teacher).astype(leaf.dtype), template)
    opt = optax.adam(learning_rate)

    moments = _moments(ds.x_train, ds.y_train)

    @jax.jit
    def descend(w, moments):
        def step(carry, _):
            w, state = carry
            grads = jax.grad(DLNProblem.moment_loss)(w, moments)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(w, updates), state), None
        (w, _), _ = jax.lax.scan(step, (w, opt.init(w)), None, length=steps)
        return w

    w = descend(w, moments)
    n = int(post.num_data)
    return DLNProblem(tuple(widths), int(rank), ds, post, w, float(jax.jit(post.loss)(w)),
                      theory.dln(tuple(widths), int(rank)), moments, n / math.log(n))


@dataclasses.dataclass(frozen=True)
class DLNRun:
    """A deep linear network trained by SGD from small initialization, with its
    checkpoints: from a small start, gradient descent learns the teacher's
    singular directions one at a time, largest first (Saxe et al. 2014); between
    stages the weights sit near saddles of the loss, where the product has
    lower rank. Only the end is a minimum: Aoyagi's coefficient (`theory`) is
    the LLC there, not at the saddles.

    epochs: (K,) the epoch after which each checkpoint was kept; checkpoints:
    leaves (K, ...); train_loss, test_loss: (K,) L_n and the test rows' mean
    NLL at each; product_singular_values: (K, min(widths)) of W_1 ... W_L at
    each, teacher_singular_values those of the teacher's product; stage: (K,)
    how many of the teacher's directions each checkpoint has learned (singular
    values above half the teacher's); moments, test_moments, nbeta: for
    `DLNProblem.moment_loss` as in `dln_problem`."""

    widths: tuple
    rank: int
    data: Any
    posterior: Any
    epochs: np.ndarray
    checkpoints: Any
    train_loss: np.ndarray
    test_loss: np.ndarray
    product_singular_values: np.ndarray
    teacher_singular_values: np.ndarray
    stage: np.ndarray
    theory: Any
    moments: Any
    test_moments: Any
    nbeta: float

    moment_loss = staticmethod(DLNProblem.moment_loss)

    def settled(self, nbeta: float | None = None) -> np.ndarray:
        """(K,) booleans: the checkpoints that have learned every direction and
        whose L_n is within 0.5 / nbeta (default self.nbeta) of the run's
        lowest, below what the estimator resolves: where Aoyagi's coefficient
        applies."""
        nbeta = self.nbeta if nbeta is None else nbeta
        return (self.stage == self.rank) & (nbeta * (self.train_loss
                                                     - self.train_loss.min()) < 0.5)


def dln_training_run(widths, rank: int, *, num_train: int = 5000, seed: int = 0,
                     init_scale: float = 0.01, num_epochs: int = 200, save_every: int = 5,
                     batch_size: int = 100, learning_rate: float = 0.02,
                     run_dir=None, progress: bool = False) -> DLNRun:
    """Train ws.models.DeepLinear(widths) on the data of a rank-`rank` teacher
    (`ws.data.load("dln", ...)`) by minibatch SGD (momentum 0.9, cosine
    schedule) from its default initialization scaled by `init_scale`, keeping
    the parameters every `save_every` epochs (`ws.samplers.sgd(save_every=)`;
    with `run_dir`, stored there and resumable). The cosine schedule lets the
    last checkpoints settle at the minimum, where `llc` should find Aoyagi's
    coefficient; the defaults learn the three directions of
    `dln_training_run((6, 5, 5, 4), 3, seed=3)` in three visible stages."""
    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0; got init_scale={init_scale!r}")
    ds = data_lib.load("dln", widths=tuple(widths), rank=rank, num_train=num_train,
                       seed=seed)
    post = models.posterior(models.DeepLinear(tuple(widths)), ds, prior_variance=1.0)
    init = jax.tree.map(lambda w: init_scale * w[None], post.init(jax.random.key(seed)))
    run = samplers.sgd(post, jax.random.key(seed + 1), init=init, num_epochs=num_epochs,
                       save_every=save_every, batch_size=batch_size,
                       learning_rate=learning_rate, schedule="cosine", run_dir=run_dir,
                       progress=progress)
    checkpoints = jax.tree.map(lambda x: np.asarray(x[0]), run.positions)
    moments = _moments(ds.x_train, ds.y_train)
    test_moments = _moments(ds.x_test, ds.y_test)
    losses = jax.jit(jax.vmap(DLNProblem.moment_loss, in_axes=(0, None)))
    kernels = [layer["kernel"] for _, layer in sorted(checkpoints["layers"].items())]
    product = kernels[0]
    for w in kernels[1:]:
        product = np.matmul(product, w)
    sv = np.linalg.svd(np.asarray(product, np.float64), compute_uv=False)
    teacher = np.linalg.svd(np.asarray(ds.info["product"], np.float64), compute_uv=False)
    stage = np.sum(sv[:, :rank] > teacher[None, :rank] / 2, axis=1)
    n = int(post.num_data)
    return DLNRun(tuple(widths), int(rank), ds, post,
                  np.asarray(checkpoint_epochs(num_epochs, save_every)),
                  checkpoints,
                  np.asarray(losses(checkpoints, moments), np.float64),
                  np.asarray(losses(checkpoints, test_moments), np.float64), sv, teacher,
                  stage, theory.dln(tuple(widths), int(rank)), moments, test_moments,
                  n / math.log(n))
