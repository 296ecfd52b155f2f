"""Local learning coefficient (LLC) estimation (Lau et al. 2023).

    lambda_hat(w*) = n beta (E[L_n(w)] - L_n(w*)),

the expectation under the localized tempered posterior

    p(w) propto exp(-n beta L_n(w) - gamma / 2 |w - w*|^2),

L_n the mean negative log likelihood (or any mean loss) over the n training
rows, gamma the localization. n beta defaults to n / log n (beta = 1 / log n,
the WBIC temperature). Some libraries set n to the batch size when they sample
with minibatches; here n is always the number of training rows, so the
estimate does not change with the batch size.

Samplers: "sgld", "rmsprop_sgld", "rmsprop_sgld_loss" and "sgnht" (the kernels
of samplers/sgmcmc.py, on minibatch estimates of L_n when batch_size is given),
and "mala", Langevin with a Metropolis correction on the full-batch density
(one leapfrog step of the HMC kernel: HMC with step h and one step is MALA with
eps = h^2), whose draws are exact up to Monte Carlo error, to measure the SGLD
bias. E[L_n(w)] is the mean over draws of the loss at each draw (the minibatch
loss for minibatch SGLD, an unbiased estimate); L_n(w*) is always the
full-data loss. SGNHT is the stochastic gradient Nose-Hoover thermostat (Ding
et al. 2014), as devinterp offers it.

The two RMSprop-SGLDs differ in what their preconditioner G = 1 / (lambda +
sqrt(V)) averages:
- "rmsprop_sgld" (pSGLD, Li et al. 2016): V averages the squares of the whole
  per-example gradient of log p, localization included; lambda = 1e-5.
- "rmsprop_sgld_loss" (as devinterp builds it, and as Hitchcock and Hoogland
  2025 recommend for local sampling): V averages the squares of the loss's
  gradient alone; lambda = 0.1, devinterp's default, which caps G at 10. A
  direction the loss does not move (a dead ReLU unit) thus gets G = 10, not
  1 / 1e-5: with lambda = 1e-5 the localization's drift eps G gamma / 2 was 50
  at eps = 1e-5, gamma = 100, and the chains diverged. V adapts during burn-in
  only and is then held fixed, so the draws come from Langevin dynamics with a
  constant diagonal preconditioner, whose stationary law is the localized
  posterior (a preconditioner that keeps adapting follows the position, and
  the law of w' = w + eps/2 G(w) grad log p + N(0, eps G(w)) is then about
  p / G: on the regular model of tests/test_llc.py, at eps 1e-4, 3.29 against
  3.13 with V held, d/2 = 3). With num_burnin=0, V stays 0 and G = 10. Its
  steps are up to 10 times those of "sgld" at the same eps: calibrate it on a
  grid ten times finer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from weightspace.checks import nonnegative_float, positive_float
from weightspace.leaf_names import named_leaves
from weightspace.samplers import driver, minibatch, sgmcmc, validation
from weightspace.samplers import target as target_lib
# ws.samplers.hmc is the sampler function; the HMC kernel is taken from its module.
from weightspace.samplers.hmc import build_kernel as hmc_build_kernel
from weightspace.samplers.hmc import init as hmc_init
from weightspace.samplers.sgmcmc import PSGLD_LAMBDA, RMSPROP_LOSS_LAMBDA, SGNHT_DIFFUSION

SAMPLERS = ("sgld", "rmsprop_sgld", "rmsprop_sgld_loss", "sgnht", "mala")
# A mean MALA acceptance of the SGLD proposals below this flags a chain: the
# discretization error of the steps is large (a heuristic threshold, not a
# published rule; near-1 acceptance is fine for the bias, though a step that
# small may need a longer burn-in).
MIN_ACCEPTANCE = 0.5


@dataclasses.dataclass(frozen=True)
class LLCEstimate:
    """mean, std: over the chains that did not diverge (std across chains);
    per_chain: (chain,) estimates, NaN for a diverged chain; loss_trace: (chain,
    draw) losses at the draws; init_loss: L_n(w*); nbeta: n beta used;
    mala_acceptance: (chain,) mean MALA acceptance probability of the steps
    (for SGLD: of its proposals, as a diagnostic), or None when not computed;
    diverged, below_init, unhealthy_acceptance: (chain,) flags;
    last_position: the chains' final positions, leaves (chain, ...);
    grad_evals: what each chain cost, in full-batch gradient evaluations (a
    minibatch gradient counts batch_size / n; the forward pass for L_n(w*) is
    not counted);
    `flags` lists them in words; an estimate without flags has flags == []."""

    mean: float
    std: float
    per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    mala_acceptance: np.ndarray | None
    diverged: np.ndarray
    below_init: np.ndarray
    unhealthy_acceptance: np.ndarray
    last_position: Any = None
    grad_evals: float | None = None

    @property
    def flags(self) -> list[str]:
        out = []
        for name, what in (("diverged", "diverged (a non-finite loss, gradient or step)"),
                           ("below_init", ("mean loss below L_n(w*): w* is not a local "
                                           "minimum of the loss")),
                           ("unhealthy_acceptance",
                            f"mean MALA acceptance below {MIN_ACCEPTANCE}")):
            chains = np.flatnonzero(getattr(self, name)).tolist()
            if chains:
                out.append(f"chains {chains} {what}")
        return out

    def __repr__(self) -> str:
        flags = "; ".join(self.flags) or "no flags"
        return (f"LLCEstimate(mean={self.mean:.4g}, std={self.std:.3g}, "
                f"chains={len(self.per_chain)}, nbeta={self.nbeta:.4g}; {flags})")


def _resolve(target, data, mesh):
    """(tree, n, mesh): tree is the Posterior itself or, for a callable loss, its
    training rows (the array argument of the compiled steps)."""
    if target_lib.is_posterior(target):
        if data is not None:
            raise ValueError("data is only for a callable loss: a Posterior's loss is "
                             "over its own training rows")
        if mesh is not None and mesh != target.mesh:
            raise ValueError(f"mesh={mesh} differs from the posterior's mesh {target.mesh}; "
                             f"build the posterior with ws.models.posterior(..., mesh=mesh)")
        return target, int(target.num_data), target.mesh
    if not callable(target):
        raise TypeError(f"target must be a Posterior (ws.models.posterior) or a callable "
                        f"loss(params, batch) -> mean loss; got {type(target).__name__}")
    data, n = target_lib.training_rows(data)
    return data, n, mesh


def _mask_tree(mask, params_star):
    """A pytree of booleans like params_star (True: the leaf moves), from None, a
    pytree of booleans, or a list of dotted leaf-name prefixes ("layers.1")."""
    if mask is None:
        return None
    names = list(named_leaves(params_star))
    if isinstance(mask, (list, tuple)) and all(isinstance(m, str) for m in mask):
        unknown = [m for m in mask if not any(n == m or n.startswith(m + ".") for n in names)]
        if unknown or not mask:
            raise ValueError(f"mask names {unknown or mask!r} match no leaf; leaves: {names}")
        flags = [any(n == m or n.startswith(m + ".") for m in mask) for n in names]
        return jax.tree.unflatten(jax.tree.structure(params_star), flags)
    try:
        jax.tree.map(lambda m, w: np.broadcast_to(np.asarray(m, bool), np.shape(w)),
                     mask, params_star)
    except (ValueError, TypeError) as err:
        raise ValueError(f"mask must be a pytree of booleans like params_star, or a list of "
                         f"leaf names among {names}: {err}") from None
    return jax.tree.map(lambda m: np.asarray(m, bool), mask)


def llc(target, params_star, key, *, data=None, num_chains: int = 4, num_draws: int = 200,
        num_burnin: int = 100, step_size: float = 1e-4, localization: float = 100.0,
        nbeta: float | None = None, batch_size: int | None = None, sampler: str = "sgld",
        mask=None, masks=None, mala_acceptance: bool = True, mesh=None,
        stacked: bool = False, diffusion: float = SGNHT_DIFFUSION,
        progress: bool = True) -> LLCEstimate | list[LLCEstimate]:
    """Estimate the local learning coefficient at params_star (see the module docstring).

    target: a Posterior (L_n = its mean negative log likelihood, untempered) or a
        callable loss(params, batch) -> mean loss over the batch, with `data` the
        training rows (a pytree of arrays, rows first).
    params_star: one position (no chain axis), e.g. an SGD solution; with
        stacked=True, K positions along a leading axis (checkpoints of a
        training run), estimated together in one compiled program.
    num_chains, num_draws, num_burnin: chains run together (vmap); num_burnin
        steps are discarded, then every step is a draw.
    step_size: eps of w <- w + eps/2 grad log p + N(0, eps) (for "mala", the same
        eps: one leapfrog step of size sqrt(eps); for "sgnht", its h).
    diffusion: SGNHT's A (default 0.01, devinterp's diffusion_factor); unused
        by the other samplers.
    localization: gamma. nbeta: n beta, default n / log n with n the number of
        training rows (not the batch size).
    batch_size: None for full-batch gradients; "mala" needs None.
    mask: None, a pytree of booleans like params_star, or a list of leaf-name
        prefixes ("layers.1"): only those weights are sampled (the others stay at
        w*), the weight-refined LLC of Wang et al. 2024.
    masks: a list of masks (e.g. one per layer), each estimated at params_star
        in one compiled program (the chains of every mask together, vmapped);
        returns one LLCEstimate per mask, estimate m equal to `llc(...,
        mask=masks[m])` with the same key. Not with `mask` or `stacked`.
    mala_acceptance: also compute, for SGLD, the Metropolis acceptance
        probability of each step's proposal on its batch (one more gradient per
        step); "mala" always reports its own; "sgnht" has none (its moves are
        not Langevin proposals).
    mesh: the ("chain", "data") mesh (ws.sharding.make_mesh) for a callable loss;
        a Posterior brings its own. Chains are spread along "chain" (num_chains
        must be a multiple of its size), minibatches along "data".
    stacked: params_star is a stack; returns one LLCEstimate per position. The
        K x num_chains chains run as one vmapped batch (K x num_chains must be
        a multiple of the mesh's "chain" size), and each position's chains get
        the same keys as an unstacked call with `key`, so estimate k equals
        `llc(target, position_k, key, ...)` (common random numbers across
        positions: the differences along a curve are less noisy than
        separate keys would make them).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got sampler={sampler!r}")
    num_chains = validation.positive_int("num_chains", num_chains)
    num_draws = validation.positive_int("num_draws", num_draws)
    num_burnin = validation.int_at_least("num_burnin", num_burnin, 0)
    step_size = positive_float("step_size", step_size)
    gamma = nonnegative_float("localization", localization)
    diffusion = positive_float("diffusion", diffusion)
    key = validation.prng_key("key", key)
    if sampler == "sgnht":
        mala_acceptance = False
    tree, n, mesh = _resolve(target, data, mesh)
    is_posterior = tree is target
    if nbeta is None:
        if n < 2:
            raise ValueError(f"nbeta=None needs at least 2 training rows (n / log n); n={n}")
        nbeta = n / math.log(n)
    nbeta = positive_float("nbeta", nbeta)
    if batch_size is not None:
        batch_size = validation.positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the {n} training rows")
        if sampler == "mala":
            raise ValueError("sampler='mala' is the exact (Metropolis-corrected) reference "
                             "and needs full-batch gradients: batch_size=None")
    leaves = jax.tree.leaves(params_star)
    if not leaves:
        raise ValueError("params_star has no array leaves")
    params_star = jax.tree.map(lambda w: jnp.asarray(w, jnp.float32)
                               if not jnp.issubdtype(jnp.result_type(w), jnp.floating)
                               else jnp.asarray(w), params_star)
    if not all(bool(jnp.all(jnp.isfinite(w))) for w in jax.tree.leaves(params_star)):
        raise ValueError("params_star holds NaN or inf")
    if not isinstance(stacked, bool):
        raise TypeError(f"stacked must be True or False, got stacked={stacked!r}")
    if masks is not None and (mask is not None or stacked):
        raise ValueError("masks= estimates several masks at one position: give it "
                         "without mask= and without stacked=True")
    if stacked:
        sizes = {int(np.shape(w)[0]) if np.ndim(w) else None for w in jax.tree.leaves(params_star)}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ValueError(f"stacked=True needs every leaf of params_star to have the same "
                             f"leading (position) axis of at least 1; leading sizes: "
                             f"{sorted(sizes, key=str)}")
        num_positions = sizes.pop()
        stars = params_star
    else:
        num_positions = 1
        stars = jax.tree.map(lambda w: w[None], params_star)
    one_star = jax.tree.map(lambda w: w[0], stars)
    if masks is not None:
        if not isinstance(masks, (list, tuple)) or not masks:
            raise ValueError(f"masks must be a non-empty list of masks (each like mask=), "
                             f"got masks={masks!r}")
        num_positions = len(masks)
        stars = jax.tree.map(lambda w: jnp.repeat(w, num_positions, axis=0), stars)
        move_trees = [_mask_tree(m, one_star) for m in masks]
    else:
        move_trees = [_mask_tree(mask, one_star)] * num_positions
    # Each position's mask, full-size, along the positions' axis (None: no mask).
    moves = None if move_trees[0] is None else jax.tree.map(
        lambda w, *ms: np.stack([np.broadcast_to(np.asarray(m, bool), np.shape(w))
                                 for m in ms]), one_star, *move_trees)
    several = stacked or masks is not None
    what = "positions" if stacked else "masks"
    if not several:
        validation.chains_fit_mesh(num_chains, mesh)
    elif mesh is not None and (num_positions * num_chains) % mesh.shape["chain"]:
        raise ValueError(f"{num_positions} {what} x num_chains={num_chains} chains is not "
                         f"allowed on a mesh whose 'chain' axis has {mesh.shape['chain']} "
                         f"devices: the product must be a multiple of {mesh.shape['chain']}")

    block = min(num_burnin + num_draws, 100)
    program = _Program(sampler, None if is_posterior else target, n, batch_size,
                       bool(mala_acceptance), moves is not None, block, mesh)
    init_states, run_block, full_losses = _compiled(program)
    hyper = {"step_size": jnp.float32(step_size), "nbeta": jnp.float32(nbeta),
             "gamma": jnp.float32(gamma), "diffusion": jnp.float32(diffusion),
             "burnin": jnp.int32(num_burnin)}
    args = (tree, hyper)
    init_loss = np.asarray(full_losses(args, stars), np.float64)
    if not np.isfinite(init_loss).all():
        bad = np.flatnonzero(~np.isfinite(init_loss)).tolist()
        raise ValueError(f"the loss at params_star{f' (positions {bad})' if stacked else ''} "
                         f"is {init_loss[bad].tolist() if stacked else init_loss[0]}: "
                         f"not finite")
    total = num_burnin + num_draws
    # Chain c of every position has the keys of chain c of an unstacked call.
    keys = jax.random.key_data(jax.random.split(key, (num_chains, 2)))
    keys = jnp.tile(keys, (num_positions, 1, 1))
    per_chain = lambda tree: jax.tree.map(lambda x: jnp.repeat(x, num_chains, axis=0), tree)
    carry = (keys, per_chain(init_states(args, stars, moves)), per_chain(stars),
             per_chain(moves))
    if mesh is not None:
        carry = jax.device_put(carry, driver.chain_sharding(mesh))
    losses, accepts, divergent = [], [], []
    with tqdm(total=total, desc=f"llc ({sampler})", disable=not progress, unit="step",
              dynamic_ncols=True) as bar:
        for t0 in range(0, total, block):
            carry, (loss, accept, div) = run_block(args, carry, jnp.int32(t0))
            losses.append(np.asarray(loss))
            accepts.append(np.asarray(accept))
            divergent.append(np.asarray(div))
            bar.update(min(block, total - t0))
    loss = np.concatenate(losses, axis=1)[:, num_burnin:total]
    accept = np.concatenate(accepts, axis=1)[:, num_burnin:total]
    div = np.concatenate(divergent, axis=1)[:, :total].any(axis=1)
    state = carry[1] if sampler == "mala" else carry[1][0]
    last = jax.tree.map(np.asarray, _restrict(carry[3], state.position, carry[2]))
    with_acceptance = sampler == "mala" or bool(mala_acceptance)
    grad_evals = _grad_evals(total, n, batch_size, bool(mala_acceptance))
    estimates = []
    for k in range(num_positions):
        chains = slice(k * num_chains, (k + 1) * num_chains)
        estimates.append(_estimate(
            loss[chains], accept[chains] if with_acceptance else None, div[chains],
            float(init_loss[k]), float(nbeta),
            jax.tree.map(lambda x: x[chains], last), grad_evals))
    return estimates if several else estimates[0]


def _grad_evals(steps: int, n: int, batch_size: int | None, mala_acceptance: bool) -> float:
    """Full-batch gradient evaluations per chain (see LLCEstimate). Full batch:
    one at w* to start, then one per step (the next step reuses it; MALA's
    leapfrog and the acceptance diagnostic share it). Minibatch: one batch
    gradient per step, two with the acceptance diagnostic (at both ends; SGNHT
    has none, and `llc` passes False for it)."""
    if batch_size is None:
        return float(1 + steps)
    per_step = 2 if mala_acceptance else 1
    return float(steps * per_step * batch_size / n)


def _estimate(loss, accept, divergent, init_loss: float, nbeta: float, last,
              grad_evals: float | None = None) -> LLCEstimate:
    """One position's LLCEstimate from its chains' losses (chain, draw), step
    acceptances (chain, draw) or None, and divergence flags (chain,)."""
    diverged = divergent | ~np.isfinite(loss).all(axis=1)
    per_chain = nbeta * (loss.mean(axis=1) - init_loss)
    per_chain = np.where(diverged, np.nan, per_chain)
    healthy = per_chain[~diverged]
    mean = float(healthy.mean()) if healthy.size else float("nan")
    std = float(healthy.std(ddof=1)) if healthy.size > 1 else float("nan")
    acceptance = None
    if accept is not None:
        acceptance = np.nanmean(np.where(np.isfinite(accept), accept, np.nan), axis=1)
    unhealthy = (np.zeros(len(loss), bool) if acceptance is None
                 else ~(acceptance >= MIN_ACCEPTANCE))
    below = ~diverged & (np.where(np.isfinite(loss), loss, np.inf).mean(axis=1) < init_loss)
    return LLCEstimate(mean, std, per_chain, loss, init_loss, nbeta, acceptance,
                       diverged, below, unhealthy & ~diverged, last, grad_evals)


@dataclasses.dataclass(frozen=True)
class _Program:
    """What the compiled steps depend on besides their array arguments
    (tree, w*, mask, step size / nbeta / localization): equal programs share
    their compiled code, so calibrate's grid and llc at many w* compile once.
    loss: the callable loss(params, batch), or None for a Posterior's."""

    sampler: str
    loss: Any
    num_data: int
    batch_size: int | None
    mala_acceptance: bool
    masked: bool
    block: int
    mesh: Any


def _restrict(moves, new, old):
    """new where `moves`, old elsewhere (new when there is no mask)."""
    if moves is None:
        return new
    return jax.tree.map(lambda m, a, b: jnp.where(m, a, b), moves, new, old)


@functools.lru_cache(maxsize=16)
def _compiled(program: _Program):
    """(init_states(shared, stars, moves) -> each position's chain state,
    run_block(shared, carry, t0) -> (carry, (loss, acceptance, divergent), each
    (chain, block)), full_losses(shared, stars) -> L_n at each position),
    shared = (tree, hyper), stars and moves (masks, or None) stacks over
    positions, carry = (keys, state, w*, mask) per chain. Inside, args = (tree,
    w*, mask, hyper) for one chain."""
    p = program
    full_batch = p.batch_size is None

    def loss_fn(tree):
        return tree.loss if p.loss is None else p.loss

    def rows(tree):
        if p.loss is not None:
            return tree
        return (tree.x, tree.y, tree.mask) if full_batch else (tree.x, tree.y)

    def full_loss(args):
        tree, star = args[0], args[1]
        return tree.loss(star) if p.loss is None else p.loss(star, tree)

    # w*, the mask and the hyperparameters are arguments of the compiled program,
    # not constants baked into it.
    def logdensity(w, batch, args):
        tree, star, _, hyper = args
        return (-hyper["nbeta"] * loss_fn(tree)(w, batch)
                - 0.5 * hyper["gamma"] * _distance2(w, star))

    def batch_at(args, batch_key, t):
        if full_batch:
            return rows(args[0])
        idx = minibatch.batch_indices(batch_key, t, p.num_data, p.batch_size)
        return minibatch.take(rows(args[0]), idx, p.mesh)

    def loss_at(value, position, args):
        """The loss from the log density at a position: value = -nbeta L - gamma/2 d^2."""
        hyper = args[3]
        return -(value + 0.5 * hyper["gamma"] * _distance2(position, args[1])) / hyper["nbeta"]

    def with_first_value_grad(state, args):
        """A gradient sampler's start: its state and, with full-batch gradients,
        the (value, grad) at w* that its first step uses (None otherwise)."""
        if not full_batch:
            return state, None
        est = lambda w: logdensity(w, batch_at(args, None, 0), args)
        return state, jax.value_and_grad(est)(args[1])

    if p.sampler == "mala":
        # With a mask, MALA runs on u with the chain at restrict(u, w*): the
        # fixed coordinates of u have no gradient, so one leapfrog step leaves
        # their momentum, hence their kinetic energy, unchanged, and the
        # acceptance is exactly that of the moving coordinates.
        def density(args):
            return lambda u: logdensity(_restrict(args[2], u, args[1]),
                                        batch_at(args, None, 0), args)

        def chain_block(args, state, keys, t0):
            keys = jax.random.wrap_key_data(keys)
            kernel = hmc_build_kernel(density(args))
            leapfrog = jnp.sqrt(args[3]["step_size"])

            def body(s, t):
                new, info = kernel(jax.random.fold_in(keys[0], t), s, leapfrog, 1, None, True)
                position = _restrict(args[2], new.position, args[1])
                return new, (loss_at(new.logdensity, position, args), info.accept_prob,
                             info.is_divergent)
            return jax.lax.scan(body, state, t0 + jnp.arange(p.block))

        def init(args):
            return hmc_init(args[1], density(args))
    elif p.sampler == "sgnht":
        def chain_block(args, carry, keys, t0):
            noise_key, batch_key = jax.random.wrap_key_data(keys)
            est = lambda w, b: logdensity(w, b, args)
            kernel = sgmcmc.build_sgnht_kernel(est, diffusion=args[3]["diffusion"])
            value_and_grad = jax.value_and_grad(est)

            def body(c, t):
                s, cached = c
                batch = batch_at(args, batch_key, t)
                value, grad = cached if full_batch else value_and_grad(s.position, batch)
                new, info = kernel(jax.random.fold_in(noise_key, t), s, batch,
                                   args[3]["step_size"], value_grad=(value, grad),
                                   moves=args[2])
                if full_batch:  # the next step's (value, grad): one gradient a step
                    cached = value_and_grad(new.position, batch)
                return (new, cached), (loss_at(value, s.position, args),
                                       jnp.float32(jnp.nan), info.is_divergent)
            return jax.lax.scan(body, carry, t0 + jnp.arange(p.block))

        def init(args):
            return with_first_value_grad(sgmcmc.sgnht_init(args[1], args[3]["diffusion"]),
                                         args)
    else:
        preconditioned = p.sampler in ("rmsprop_sgld", "rmsprop_sgld_loss")
        lam = RMSPROP_LOSS_LAMBDA if p.sampler == "rmsprop_sgld_loss" else PSGLD_LAMBDA

        def adapt(t, args):
            """Whether step t updates RMSprop's average V: always for
            "rmsprop_sgld"; for "rmsprop_sgld_loss", during burn-in only."""
            if p.sampler == "rmsprop_sgld_loss":
                return t < args[3]["burnin"]
            return True

        def loss_gradient(args):
            """The gradient of the loss term alone, from that of the log density
            -nbeta L - gamma/2 |w - w*|^2 (no second backward pass)."""
            hyper = args[3]
            return lambda w, g: jax.tree.map(
                lambda gg, ww, ss: -(gg + hyper["gamma"] * (ww - ss)) / hyper["nbeta"],
                g, w, args[1])

        # Each step needs (value, grad) at the current position. With full-batch
        # gradients those are the previous step's values at the new position,
        # which the acceptance diagnostic computes anyway: the chain carries them
        # and a step costs one gradient. With minibatches the acceptance is on
        # the step's own batch, one more gradient per step.
        def chain_block(args, carry, keys, t0):
            noise_key, batch_key = jax.random.wrap_key_data(keys)
            est = lambda w, b: logdensity(w, b, args)
            kernel = sgmcmc.build_sgld_kernel(
                est, num_data=p.num_data, preconditioned=preconditioned, lam=lam,
                precondition_on=(loss_gradient(args) if p.sampler == "rmsprop_sgld_loss"
                                 else None))
            value_and_grad = jax.value_and_grad(est)
            eps = args[3]["step_size"]

            def body(c, t):
                s, cached = c
                batch = batch_at(args, batch_key, t)
                value, grad = cached if full_batch else value_and_grad(s.position, batch)
                new, info = kernel(jax.random.fold_in(noise_key, t), s, batch, eps, True,
                                   value_grad=(value, grad), adapt=adapt(t, args))
                new = new._replace(position=_restrict(args[2], new.position, s.position))
                accept = jnp.float32(jnp.nan)
                if full_batch or p.mala_acceptance:
                    new_vg = value_and_grad(new.position, batch)
                    if p.mala_acceptance:
                        accept = _proposal_acceptance((value, grad), new_vg, s, new, eps,
                                                      args[2], lam)
                    cached = new_vg if full_batch else cached
                return (new, cached), (loss_at(value, s.position, args), accept,
                                       info.is_divergent)
            return jax.lax.scan(body, carry, t0 + jnp.arange(p.block))

        def init(args):
            return with_first_value_grad(sgmcmc.sgld_init(args[1], preconditioned), args)

    def chain_args(shared, star, moves):
        tree, hyper = shared
        return tree, star, moves, hyper

    def one(shared, carry, t0):
        keys, state, star, moves = carry
        state, stats = chain_block(chain_args(shared, star, moves), state, keys, t0)
        return (keys, state, star, moves), stats

    def init_states(shared, stars, moves):
        return jax.vmap(lambda star, m: init(chain_args(shared, star, m)))(stars, moves)

    def full_losses(shared, stars):
        return jax.vmap(lambda star: full_loss(chain_args(shared, star, None)))(stars)

    return jax.jit(init_states), driver.chainwise(one, p.mesh), jax.jit(full_losses)


def _distance2(a, b):
    """|a - b|^2 over every leaf."""
    return sum(jnp.sum(jnp.square(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _proposal_acceptance(old_vg, new_vg, old, new, eps, moves, lam):
    """Metropolis acceptance probability of the (preconditioned) Langevin
    proposal old -> new on the step's batch: min(1, p(new) q(old | new) / (p(old)
    q(new | old))), q(b | a) = N(a + eps/2 G grad log p(a), eps G), G the step's
    preconditioner (1 for SGLD; 1 / (lam + sqrt(V)) for RMSprop-SGLD); (value,
    grad) of log p at old and new given.
    Only the weights that move (`moves`, None for all) enter q."""
    (f_old, g_old), (f_new, g_new) = old_vg, new_vg
    if new.square_avg is None:
        precond = jax.tree.map(jnp.ones_like, old.position)
    else:
        precond = sgmcmc.rmsprop_preconditioner(new.square_avg, lam)
    weight = (jax.tree.map(lambda _: 1.0, old.position) if moves is None
              else jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), moves))

    def log_q(b, a, g):
        return -sum(jnp.sum(m * jnp.square(bb - aa - 0.5 * eps * p * gg) / (2 * eps * p))
                    for bb, aa, gg, p, m in zip(*map(jax.tree.leaves, (b, a, g, precond, weight))))

    log_ratio = (f_new + log_q(old.position, new.position, g_new)
                 - f_old - log_q(new.position, old.position, g_old))
    return jnp.minimum(1.0, jnp.exp(jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)))
