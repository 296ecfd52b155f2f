"""Optimization baselines: the MAP by SGD, deep ensembles, mean-field VI.

- `sgd` minimizes the per-example loss
      L(w) = -log p(w | D) / N = mean NLL + (-log p(w)) / N   (tempered by T),
  estimated on minibatches (without replacement within an epoch, a pure
  function of (key, step), samplers/minibatch.py), with optax: SGD with
  momentum 0.9 and a cosine decay by default, Adam as an option (Izmailov et
  al. 2021 train their SGD baselines with momentum 0.9 and a cosine schedule).
  It runs through the chain driver: one warmup step is one epoch, the single
  kept draw is the final parameters, so run directories, exact resume and
  progress work as for the samplers.
- `deep_ensemble` trains `num_members` independent SGD runs together (vmap);
  member m is chain m of the Trace.
- `mfvi` fits a fully factorized Gaussian q(w) = prod_i N(w_i | mu_i, s_i^2)
  by maximizing the ELBO E_q[log p(w | D)] + H(q) with numpyro's SVI and an
  AutoNormal guide, the mean initialized at a given position (the MAP), and
  returns draws from q.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from weightspace import sharding
from weightspace.leaf_names import named_leaves
from weightspace.samplers import driver, minibatch, validation
from weightspace.samplers import target as target_lib
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.trace import Trace

SGD_MOMENTUM = 0.9          # Izmailov et al. 2021 (SGD and deep-ensemble baselines)
MFVI_LEARNING_RATE = 1e-4   # Izmailov et al. 2021 (MFVI: Adam, cosine decay)
MFVI_INIT_SCALE = 0.1       # Izmailov et al. 2021 initialize the variance at 1e-2
MFVI_NUM_SAMPLES = 50       # Izmailov et al. 2021 (MFVI predictive samples)

_LOGDENSITY_SITE = "log_posterior_estimate"


class SGDChains(NamedTuple):
    """What the SGD runs carry (leading axis = chain); checkpointed as is."""

    batch_key_data: jax.Array  # (chain, 2) minibatch-order keys
    params: Any                # leaves (chain, ...)
    opt_state: Any             # optax state, leaves (chain, ...)
    last: dict                 # (chain,) stats of the last epoch


# ------------------------------------------------------------------ checks

def _momentum(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"momentum={value!r} is not allowed: it must lie in [0, 1)")
    return float(value)


def _batch_size(value, num_data: int) -> int:
    value = validation.positive_int("batch_size", value)
    if value > num_data:
        raise ValueError(f"batch_size={value} is not allowed: it is larger than the "
                         f"{num_data} training rows")
    return value


def _schedule(name: str, learning_rate: float, total_steps: int):
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    return optax.constant_schedule(learning_rate)


def _nll_of(posterior, num_data: int):
    """(params, estimate) -> mean minibatch negative log likelihood, recovered
    from the full-data estimate T^-1 (log p(w) + N/B sum_batch log p(y|x, w)), for
    a Posterior (None for a callable target, whose prior is not known)."""
    if posterior is None or not hasattr(posterior, "log_prior"):
        return None
    temperature = posterior.temperature

    def nll(params, estimate):
        return -(temperature * estimate - posterior.log_prior(params)) / num_data

    return nll


# ------------------------------------------------------------------ SGD

def _train(kind, target, key, *, data, init, num_chains, num_epochs, batch_size,
           learning_rate, optimizer, momentum, schedule, eval_x, predict_fn, mesh,
           run_dir, checkpoint_every, checkpoint_seconds, progress, save_every=None,
           save_at=None):
    """The body of `sgd` and `deep_ensemble`: their checks, then one driver call
    in which one warmup step is one epoch and the one kept draw is the end, or,
    with save_every, each kept draw is the parameters after save_every more
    epochs, or, with save_at, the parameters after each listed epoch."""
    num_chains = validation.positive_int("num_chains", num_chains)
    num_epochs, save_every, save_at = checkpoint_plan(num_epochs, save_every, save_at)
    learning_rate = validation.positive_float("learning_rate", learning_rate)
    validation.choice("optimizer", optimizer, ("sgd", "adam"))
    momentum = _momentum(momentum)
    validation.choice("schedule", schedule, ("cosine", "constant"))

    def build(tgt) -> Algorithm:
        return algorithm(kind, tgt, num_chains=num_chains, num_epochs=num_epochs,
                         batch_size=_batch_size(batch_size, tgt.num_data),
                         learning_rate=learning_rate, optimizer=optimizer,
                         momentum=momentum, schedule=schedule, save_every=save_every,
                         save_at=save_at)

    ends = checkpoint_epochs(num_epochs, save_every, save_at)
    trace = driver.sample(build, target, key, init=init, data=data, minibatch=True,
                          num_chains=num_chains, num_samples=1 if ends is None else len(ends),
                          num_warmup=num_epochs if ends is None else 0,
                          thin=save_every or 1,
                          eval_x=eval_x, predict_fn=predict_fn, mesh=mesh, run_dir=run_dir,
                          checkpoint_every=checkpoint_every,
                          checkpoint_seconds=checkpoint_seconds, progress=progress)
    bad = [int(c) for c in np.flatnonzero(~np.isfinite(np.asarray(trace.stats["loss"])[:, -1]))]
    if bad:
        warnings.warn(f"{kind}: chain(s) {bad} ended with a non-finite training loss; "
                      f"try a smaller learning_rate than {learning_rate!r}", RuntimeWarning,
                      stacklevel=3)
    return trace


def checkpoint_plan(num_epochs, save_every=None, save_at=None):
    """(num_epochs, save_every, save_at) of `sgd` checked: save_every divides
    num_epochs, save_at lists increasing epochs ending at num_epochs, not both
    (ValueError naming the argument otherwise). The command line checks its
    flags with it before anything is written."""
    num_epochs = validation.positive_int("num_epochs", num_epochs)
    if save_every is not None:
        save_every = validation.positive_int("save_every", save_every)
        if num_epochs % save_every:
            raise ValueError(f"save_every={save_every} does not divide num_epochs="
                             f"{num_epochs}: the last draw must be the end of training")
        if save_at is not None:
            raise ValueError("give save_every or save_at, not both")
    if save_at is not None:
        save_at = _epoch_list(save_at, num_epochs)
    return num_epochs, save_every, save_at


def checkpoint_epochs(num_epochs: int, save_every=None, save_at=None):
    """The epoch after which each checkpoint is kept (1-based, the last
    num_epochs), from checked arguments or a run's config; None without
    checkpoints (the one draw is the end of training)."""
    if save_at is not None:
        return tuple(save_at)
    if save_every is not None:
        return tuple(range(save_every, num_epochs + 1, save_every))
    return None


def _epoch_list(save_at, num_epochs: int) -> tuple[int, ...]:
    """save_at checked: increasing epochs in 1..num_epochs, the last num_epochs."""
    try:
        epochs = tuple(int(e) for e in save_at)
        ints = all(float(e) == int(e) for e in save_at)
    except (TypeError, ValueError):
        epochs, ints = (), False
    if (not epochs or not ints or any(b <= a for a, b in zip(epochs, epochs[1:]))
            or epochs[0] < 1 or epochs[-1] != num_epochs):
        raise ValueError(f"save_at must be increasing epochs from 1 to num_epochs="
                         f"{num_epochs}, the last num_epochs (the end of training); got "
                         f"save_at={save_at!r}")
    return epochs


def algorithm(kind: str, tgt, *, num_chains: int, num_epochs: int, batch_size: int,
              learning_rate: float, optimizer: str, momentum: float,
              schedule: str, save_every: int | None = None,
              save_at: tuple[int, ...] | None = None) -> Algorithm:
    """Minibatch SGD (or Adam) for the driver, on a MinibatchTarget: a warmup
    step is an epoch, the one sample step returns the final parameters; with
    save_every or save_at, there is no warmup and a sample step runs the epochs
    up to the next checkpoint, returning the parameters there."""
    num_data, mesh = tgt.num_data, tgt.mesh
    per_epoch = minibatch.steps_per_epoch(num_data, batch_size)
    total_steps = num_epochs * per_epoch
    sched = _schedule(schedule, learning_rate, total_steps)
    if optimizer == "sgd":
        opt = optax.sgd(sched, momentum=momentum or None)
    else:
        opt = optax.adam(sched)
    nll_of = _nll_of(tgt.posterior, num_data)
    epoch_cost = per_epoch * batch_size / num_data  # full-batch gradients of an epoch

    def init(tree, params, key_batches):
        nan = jnp.full((num_chains,), jnp.nan, jnp.float32)
        last = {"loss": nan, "learning_rate": nan}
        if nll_of is not None:
            last["nll"] = nan
        carry = SGDChains(jax.random.key_data(jax.random.split(key_batches, num_chains)),
                          params, jax.vmap(opt.init)(params), last)
        return carry, jnp.zeros((num_chains,), jnp.float32)

    def epoch(tree, c: SGDChains, t):
        estimate = tgt.estimate_of(tree)
        rows = tgt.data_of(tree)
        batch_key = jax.random.wrap_key_data(c.batch_key_data)
        first = jnp.asarray(t, jnp.int32) * per_epoch

        def loss_fn(params, batch):
            value = estimate(params, batch)
            return -value / num_data, value

        def step(state, s):
            params, opt_state = state
            idx = minibatch.batch_indices(batch_key, first + s, num_data, batch_size)
            (loss, value), grad = jax.value_and_grad(loss_fn, has_aux=True)(
                params, minibatch.take(rows, idx, mesh))
            updates, opt_state = opt.update(grad, opt_state, params)
            stats = {"loss": loss}
            if nll_of is not None:
                stats["nll"] = nll_of(params, value)
            return (optax.apply_updates(params, updates), opt_state), stats

        (params, opt_state), stats = jax.lax.scan(
            step, (c.params, c.opt_state), jnp.arange(per_epoch, dtype=jnp.int32))
        stats = {k: jnp.mean(v) for k, v in stats.items()}
        stats["learning_rate"] = jnp.asarray(sched(first + per_epoch - 1), jnp.float32)
        return (c._replace(params=params, opt_state=opt_state, last=stats), stats,
                jnp.float32(epoch_cost))

    def final(tree, c: SGDChains, t):
        return c, c.last, jnp.float32(0.0)

    ends = checkpoint_epochs(num_epochs, save_every, save_at)

    def until_checkpoint(tree, c: SGDChains, t):
        """The epochs from t through the next checkpoint's (a draw's end); the
        stats are the last epoch's."""
        last_epoch = jnp.asarray(ends, jnp.int32) - 1  # 0-based, each draw's last epoch
        end = last_epoch[jnp.searchsorted(last_epoch, jnp.asarray(t, jnp.int32))]

        def body(i, carry):
            c, cost = carry
            c, _, more = epoch(tree, c, i)
            return c, cost + more

        c, cost = jax.lax.fori_loop(t, end + 1, body, (c, jnp.float32(0.0)))
        return c, c.last, cost

    settings = {"num_epochs": num_epochs, "batch_size": batch_size,
                "learning_rate": learning_rate, "optimizer": optimizer,
                "momentum": momentum, "schedule": schedule}
    if save_every is not None:  # a run directory without it reads as the end only
        settings["save_every"] = save_every
    if save_at is not None:
        settings["save_at"] = list(save_at)
    info = {"optimizer": optimizer, "momentum": momentum, "schedule": schedule,
            "learning_rate": learning_rate, "num_epochs": num_epochs,
            "batch_size": batch_size, "steps_per_epoch": per_epoch, "num_data": num_data}
    return Algorithm(name=kind, init=init, warmup_step=epoch,
                     sample_step=final if ends is None else until_checkpoint,
                     position=lambda c: c.params, settings=settings,
                     info=lambda c: dict(info), num_keys=1,
                     draw_end=None if save_at is None else (lambda j: save_at[j] - 1))


def sgd(target, key, *, data=None, init=None, num_chains: int = 1, num_epochs: int,
        batch_size: int, learning_rate: float, optimizer: str = "sgd",
        momentum: float = SGD_MOMENTUM, schedule: str = "cosine", eval_x=None,
        predict_fn=None, mesh=None, run_dir=None, checkpoint_every: int = 1,
        checkpoint_seconds: float = 300.0, progress: bool = True,
        save_every: int | None = None, save_at=None):
    """The MAP by minibatch SGD (see the module docstring). Returns a `Trace`
    with one draw per chain: the final parameters; with `save_every`, one draw
    every save_every epochs (the training run's checkpoints, the last the end).

    target: a Posterior, or a callable logdensity(position, batch) -> unbiased
        estimate of the full log density with `data` the training rows (a
        pytree of arrays, rows first); the loss is -estimate / num_data.
    init: starting parameters, leaves with a leading num_chains axis (required
        for a callable; default posterior.init with independent keys).
    num_chains: independent runs (own init and minibatch order), trained together.
    num_epochs: passes over the training rows; one epoch is num_data // batch_size
        steps, each on a fresh minibatch of batch_size rows (at most num_data).
    learning_rate: the initial step size on the per-example loss.
    optimizer: "sgd" (heavy-ball momentum, default 0.9, Izmailov et al. 2021) or
        "adam" (momentum unused).
    schedule: "cosine" (decay to 0 over all steps, Izmailov et al. 2021) or "constant".
    eval_x, predict_fn, mesh, run_dir, checkpoint_every, checkpoint_seconds,
    progress: as for ws.samplers.sgld; checkpoint_every counts epochs, so a killed
        run resumes from its last epoch to the parameters an uninterrupted one ends with.

    save_every: keep the parameters after every save_every epochs (it must
        divide num_epochs), stored in run_dir like draws: a killed run resumes
        and `ws.samplers.load` reads them lazily. For LLC curves
        (`ws.slt.llc(..., stacked=True)`).
    save_at: instead of save_every, the epochs after which to keep the
        parameters (increasing, the last num_epochs), e.g. spaced
        logarithmically to resolve the early changes of a run.

    Trace: positions leaves (chain, draws, ...), draws = 1, len(save_at) or num_epochs /
    save_every; predictions (chain, draws, n_eval, ...) for eval_x; stats
    (chain, draws): "loss", the mean minibatch L(w) of the last
    epoch (it includes the prior's normalizing constant / N); "nll" (Posterior
    targets), the mean minibatch negative log likelihood of the last epoch;
    "learning_rate", the last step's.
    """
    return _train("sgd", target, key, data=data, init=init, num_chains=num_chains,
                  num_epochs=num_epochs, batch_size=batch_size,
                  learning_rate=learning_rate, optimizer=optimizer, momentum=momentum,
                  schedule=schedule, eval_x=eval_x, predict_fn=predict_fn, mesh=mesh,
                  run_dir=run_dir, checkpoint_every=checkpoint_every,
                  checkpoint_seconds=checkpoint_seconds, progress=progress,
                  save_every=save_every, save_at=save_at)


def deep_ensemble(target, key, num_members: int, **sgd_kwargs):
    """`num_members` independent SGD runs (Lakshminarayanan et al. 2017), trained
    in parallel: member m is chain m of the returned `Trace` (one draw each), with
    its own init and minibatch order. sgd_kwargs: every argument of `sgd` but
    num_chains (num_epochs, batch_size, learning_rate are required)."""
    num_members = validation.positive_int("num_members", num_members)
    if "num_chains" in sgd_kwargs:
        raise TypeError(f"num_chains={sgd_kwargs['num_chains']!r} is not an argument of "
                        f"deep_ensemble: the number of members is num_members")
    signature = inspect.signature(sgd)
    unknown = sorted(set(sgd_kwargs) - set(signature.parameters))
    if unknown:
        raise TypeError(f"deep_ensemble got unexpected argument(s) {', '.join(unknown)}; "
                        f"it takes those of sgd except num_chains")
    try:
        bound = signature.bind(target, key, num_chains=num_members, **sgd_kwargs)
    except TypeError as err:
        raise TypeError(f"deep_ensemble: {err} (an argument of sgd)") from None
    bound.apply_defaults()
    return _train("deep_ensemble", **bound.arguments)


# ------------------------------------------------------------------ MFVI

def _single_position(init, tgt):
    """(names, treedef, {name: array}) of one position; a Posterior's structure
    wins, so params with str keys (a loaded run) work too."""
    given = named_leaves(init)
    if not given:
        raise ValueError("init has no array leaves: give one position, e.g. the MAP "
                         "jax.tree.map(lambda w: w[0, 0], ws.samplers.sgd(...).positions)")
    if tgt.posterior is not None:
        template = jax.eval_shape(tgt.posterior.init, jax.random.key(0))
        expected = {n: tuple(x.shape) for n, x in named_leaves(template).items()}
        if set(given) != set(expected):
            raise ValueError(f"init has leaves {sorted(given)}; the posterior's parameters "
                             f"are {sorted(expected)}")
        for name, shape in expected.items():
            got = tuple(np.shape(given[name]))
            if got != shape:
                hint = ""
                if len(got) > len(shape) and got[len(got) - len(shape):] == shape:
                    hint = (": give one position, e.g. jax.tree.map(lambda w: w[0, 0], "
                            "trace.positions)")
                raise ValueError(f"init leaf {name!r} has shape {got}, the posterior's "
                                 f"parameter has shape {shape}{hint}")
        treedef, names = jax.tree.structure(template), list(expected)
    else:
        treedef, names = jax.tree.structure(init), list(given)
    if _LOGDENSITY_SITE in names:
        raise ValueError(f"init has a leaf named {_LOGDENSITY_SITE!r}, the name of the "
                         f"model's log-density site; rename it")
    values = {}
    for name in names:
        leaf = jnp.asarray(given[name])
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"init leaf {name!r} has dtype {leaf.dtype}: weights must be "
                            f"floating point")
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(f"init leaf {name!r} holds NaN or inf")
        values[name] = jnp.asarray(np.asarray(leaf))  # one device: see mfvi's set-up
    return names, treedef, values


def mfvi(target, key, *, init, num_epochs: int, batch_size: int,
         learning_rate: float = MFVI_LEARNING_RATE, schedule: str = "cosine",
         init_scale: float = MFVI_INIT_SCALE, num_samples: int = MFVI_NUM_SAMPLES,
         eval_x=None, predict_fn=None, data=None, progress: bool = True):
    """Mean-field Gaussian VI (numpyro SVI, Trace_ELBO, AutoNormal guide) of the
    target's posterior; returns a `Trace` of num_samples draws from the fitted q.

    The model has one improper flat site per leaf (named by its dotted leaf
    name, the leaf flattened to a vector) and a factor equal to the target's
    unbiased minibatch estimate of log p(w | D), prior (and temperature)
    included. Adam with a cosine decay over all steps from learning_rate
    (1e-4, Izmailov et al. 2021); minibatches as in `sgd`.

    target, data, predict_fn: as for `sgd`.
    init: ONE position (no chain axis), the initial mean, usually the MAP:
        jax.tree.map(lambda w: w[0, 0], ws.samplers.sgd(...).positions).
    init_scale: initial standard deviation of every weight (0.1: variance 1e-2,
        Izmailov et al. 2021).
    num_samples: draws from q (50, Izmailov et al. 2021).

    Trace: positions leaves (1, num_samples, ...); predictions (1, num_samples,
    n_eval, ...) for eval_x; stats "loss" (1, num_samples): the final epoch's
    mean -ELBO / num_data (the same for every draw); info: "elbo_loss" (per
    epoch mean -ELBO / num_data), "scale_summary" ({leaf: mean, min, max of
    the fitted standard deviations}), "loc" and "scale" (the fitted guide, pytrees
    like init). No run directory or resume: the fit runs in memory.
    """
    # numpyro: only mfvi needs it, and importing it costs about a second
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import optax_to_numpyro

    num_epochs = validation.positive_int("num_epochs", num_epochs)
    learning_rate = validation.positive_float("learning_rate", learning_rate)
    validation.choice("schedule", schedule, ("cosine", "constant"))
    init_scale = validation.positive_float("init_scale", init_scale)
    num_samples = validation.positive_int("num_samples", num_samples)
    tgt = target_lib.resolve_minibatch(target, data=data, predict_fn=predict_fn)
    batch_size = _batch_size(batch_size, tgt.num_data)
    key = validation.prng_key("key", key)
    names, treedef, values = _single_position(init, tgt)
    eval_x = validation.eval_inputs("eval_x", eval_x, tgt,
                                    jax.tree.unflatten(treedef, [values[n][None]
                                                                 for n in names]))
    mesh, num_data = tgt.mesh, tgt.num_data
    per_epoch = minibatch.steps_per_epoch(num_data, batch_size)
    sched = _schedule(schedule, learning_rate, num_epochs * per_epoch)

    # jitted so that numpyro's eager set-up compiles the network once, not op by op
    estimate = jax.jit(lambda tree, params, batch: tgt.estimate_of(tree)(params, batch))

    # Sites are the leaves flattened to vectors: XLA on CPU compiles threefry
    # normals of some shapes, e.g. (256, 10), very slowly (seconds), flat ones fast.
    shapes = {n: values[n].shape for n in names}

    def model(tree, batch):
        leaves = [numpyro.sample(n, dist.ImproperUniform(
            constraints.real, (), event_shape=(math.prod(shapes[n]),))).reshape(shapes[n])
            for n in names]
        params = jax.tree.unflatten(treedef, leaves)
        numpyro.factor(_LOGDENSITY_SITE, estimate(tree, params, batch))

    guide = AutoNormal(model, init_loc_fn=init_to_value(
        values={n: v.ravel() for n, v in values.items()}), init_scale=init_scale)
    svi = SVI(model, guide, optax_to_numpyro(optax.adam(sched)), Trace_ELBO())
    key_batches, key_svi, key_draws = jax.random.split(key, 3)

    def batch_of(tree, t):
        idx = minibatch.batch_indices(key_batches, t, num_data, batch_size)
        return minibatch.take(tgt.data_of(tree), idx, mesh)

    @jax.jit
    def epoch(tree, state, e):
        def step(state, s):
            return svi.update(state, tree, batch_of(tree, e * per_epoch + s))

        state, losses = jax.lax.scan(step, state, jnp.arange(per_epoch, dtype=jnp.int32))
        return state, jnp.mean(losses) / num_data

    # numpyro sets the guide up eagerly, op by op: on one device with host
    # inputs, each op compiles for one device rather than for the whole mesh.
    # (to_host: in a multi-process job the batch spans other processes' devices.)
    first = jax.tree.map(lambda a: jnp.asarray(driver.to_host(a)), batch_of(tgt.tree, 0))
    state = svi.init(key_svi, tgt.tree, first)
    if mesh is not None:
        # Replicated from the start, so the epoch compiles once (not again when
        # the state comes back from the first epoch placed on the mesh).
        state = sharding.replicate(state, mesh)
    history = []
    with tqdm(total=num_epochs, desc="mfvi", file=sys.stderr, disable=not progress,
              unit="epoch", dynamic_ncols=True) as bar:
        for e in range(num_epochs):
            state, loss = epoch(tgt.tree, state, jnp.int32(e))
            history.append(float(loss))
            bar.set_postfix_str(f"loss={history[-1]:.4g}", refresh=False)
            bar.update(1)
    if not math.isfinite(history[-1]):
        warnings.warn(f"mfvi: the ELBO became non-finite; try a smaller learning_rate "
                      f"than {learning_rate!r}", RuntimeWarning, stacklevel=2)

    fitted = jax.device_get(jax.jit(svi.get_params)(state))
    loc = {n: np.reshape(fitted[f"{n}_auto_loc"], shapes[n]) for n in names}
    scale = {n: np.reshape(fitted[f"{n}_auto_scale"], shapes[n]) for n in names}

    @jax.jit
    def draw(key, loc, scale):
        # q's draws loc + scale * eps (what AutoNormal.sample_posterior draws for
        # real sites), computed on flat vectors for the compile time noted above.
        keys = jax.random.split(key, len(names))
        return {n: jnp.tile(loc[n], num_samples) + jnp.tile(scale[n], num_samples)
                * jax.random.normal(k, (num_samples * loc[n].size,))
                for k, n in zip(keys, names)}

    flat = jax.device_get(draw(key_draws, {n: fitted[f"{n}_auto_loc"] for n in names},
                               {n: fitted[f"{n}_auto_scale"] for n in names}))
    positions = jax.tree.unflatten(treedef, [flat[n].reshape(num_samples, *shapes[n])
                                             for n in names])
    predictions = None
    if eval_x is not None:
        predict_of = tgt.predict_of
        predict = jax.jit(lambda tree, pos, x: jax.lax.map(
            lambda p: predict_of(tree)(p, x), pos))
        predictions = np.asarray(predict(tgt.tree, positions, eval_x))[None]
    info = {"elbo_loss": np.asarray(history), "init_scale": init_scale,
            "learning_rate": learning_rate, "schedule": schedule, "num_epochs": num_epochs,
            "batch_size": batch_size, "steps_per_epoch": per_epoch, "num_data": num_data,
            "scale_summary": {n: {"mean": float(s.mean()), "min": float(s.min()),
                                  "max": float(s.max())} for n, s in scale.items()},
            "loc": jax.tree.unflatten(treedef, [loc[n] for n in names]),
            "scale": jax.tree.unflatten(treedef, [scale[n] for n in names])}
    return Trace(positions=jax.tree.map(lambda x: np.asarray(x)[None], positions),
                 stats={"loss": np.full((1, num_samples), history[-1], np.float32)},
                 predictions=predictions, info=info)
