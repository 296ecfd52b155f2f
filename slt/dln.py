"""Deep linear networks: LLC problems whose answer is known.

A deep linear teacher with a product matrix of rank r generates the data
(`ws.data.load("dln", ...)`); the true learning coefficient of a student with
the same widths is `theory.dln(widths, r)` (Aoyagi 2024). `dln_problem` builds
the posterior and a local minimum w* of the loss near the teacher, the point at
which `llc` then estimates the coefficient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from weightspace.slt import theory


@dataclasses.dataclass(frozen=True)
class DLNProblem:
    """posterior: the Gaussian-likelihood posterior of ws.models.DeepLinear(widths)
    on `data` (prior variance 1; `llc` uses only its mean NLL); params_star: w*,
    leaves like the network's parameters; init_loss: L_n(w*); theory: the true
    learning coefficient (a Fraction)."""

    widths: tuple
    rank: int
    data: Any
    posterior: Any
    params_star: Any
    init_loss: float
    theory: Any


def dln_problem(widths, rank: int, *, num_train: int = 20000, seed: int = 0,
                steps: int = 3000, learning_rate: float = 1e-3) -> DLNProblem:
    """The data of a rank-`rank` deep linear teacher, its posterior and w*.

    w* is found by `steps` full-batch Adam steps on L_n from the teacher's own
    layers: the teacher is the population minimum, so the empirical minimum is
    in its basin (the LLC is defined at a local minimum of L_n; `llc` flags a w*
    whose chains fall below L_n(w*)).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from weightspace import data as data_lib
    from weightspace import models
    from weightspace.samplers import validation

    steps = validation.int_at_least("steps", steps, 0)
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

    @jax.jit
    def descend(post, w):
        def step(carry, _):
            w, state = carry
            grads = jax.grad(post.loss)(w)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(w, updates), state), None
        (w, _), _ = jax.lax.scan(step, (w, opt.init(w)), None, length=steps)
        return w, post.loss(w)

    w, loss = descend(post, w)
    return DLNProblem(tuple(widths), int(rank), ds, post, w, float(loss),
                      theory.dln(tuple(widths), int(rank)))
