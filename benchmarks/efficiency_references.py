"""Reference runs of blackjax's own samplers for the efficiency benchmark.

`benchmarks/efficiency.py` compares samplers at a fixed cost: every chain may
spend `budget` full-batch gradient evaluations of the log posterior, tuning
included. This module supplies the outside references for that comparison,
three blackjax (1.7.1) samplers run the way blackjax documents them, with
their tuners and every tuning knob left at its default value:

    blackjax_mclmc  unadjusted MCLMC, tuned by mclmc_find_L_and_step_size
    blackjax_mams   Metropolis-adjusted MCLMC with random trajectory lengths,
                    tuned by adjusted_mclmc_find_L_and_step_size (target 0.9)
    blackjax_nuts   NUTS after blackjax's window adaptation (target 0.8), its
                    warm-up stopped at half the budget if it gets there

All three share one signature,

    fn(post, key, *, num_chains, budget, eval_x, thin_to) -> dict

and return the same dict (see `_result`). Gradient accounting: the gradient
of the initial position (computed by every blackjax `init`) and all tuning
steps count as warm-up; each isokinetic McLachlan step costs 2 gradients and
each velocity-Verlet step (NUTS) costs 1. Chains run side by side under
jax.vmap; the sampling phase keeps `thin_to` draws per chain, evenly spaced in
gradient cost, so only those positions are ever stored.
"""

from __future__ import annotations

import inspect
import math
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import adjusted_mclmc_dynamic as _amd
from blackjax.mcmc import integrators as _integrators
from blackjax.mcmc import mclmc as _mclmc
from blackjax.mcmc import nuts as _nuts

__all__ = ["blackjax_mclmc", "blackjax_mams", "blackjax_nuts"]

GRADS_PER_MCLACHLAN_STEP = 2  # two position updates, one gradient each
GRADS_PER_VERLET_STEP = 1  # the gradient at the end of a step is reused
INIT_GRADS = 1  # value_and_grad at the starting position, inside every `init`
PREDICT_CHUNK = 32  # draws per jitted predict call


def _defaults(fn) -> dict:
    """Default values of fn's keyword arguments, read from its signature so
    that the cost formulas below follow the installed blackjax."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


# -- shared pieces ------------------------------------------------------------

def _thinned_run(step, state, key, budget, thin_to, next_cost, cost_of, summary):
    """Runs one chain's sampling phase within `budget` gradients, keeping
    `thin_to` states spaced evenly in gradients spent.

    step(key, state) -> (state, info); cost_of(info): gradients the transition
    spent; next_cost(state, spent, n): the cost expected for the next one (a
    transition starts only if spent + that <= budget); summary(info): a dict of
    scalars summed over the transitions. The k-th kept state (k = 0..thin_to-1)
    is the first one at which spent >= (k + 1) * budget / thin_to, or the last
    one if the chain stops first. Jittable and vmappable (budget may differ
    between chains). Returns the kept positions, their log densities, the
    transition count and gradients spent at each keep, and the sums.
    """
    budget = jnp.asarray(budget, jnp.int32)
    shapes = jax.eval_shape(lambda: summary(step(key, state)[1]))
    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

    def outer(carry, k):
        threshold = jnp.floor((k + 1).astype(jnp.float32) * budget.astype(jnp.float32)
                              / thin_to)

        def cond(c):
            state, _, spent, n, _ = c
            return (spent < threshold) & (spent + next_cost(state, spent, n) <= budget)

        def body(c):
            state, key, spent, n, sums = c
            key, subkey = jax.random.split(key)
            state, info = step(subkey, state)
            sums = jax.tree.map(lambda a, b: a + jnp.asarray(b, jnp.float32),
                                sums, summary(info))
            return state, key, spent + cost_of(info).astype(jnp.int32), n + 1, sums

        carry = jax.lax.while_loop(cond, body, carry)
        state, _, spent, n, _ = carry
        return carry, (state.position, state.logdensity, n, spent)

    init = (state, key, jnp.int32(0), jnp.int32(0), zero_sums)
    (state, _, spent, n, sums), kept = jax.lax.scan(outer, init, jnp.arange(thin_to))
    positions, logdensity, n_at_keep, spent_at_keep = kept
    return {"positions": positions, "logdensity": logdensity, "n_at_keep": n_at_keep,
            "spent_at_keep": spent_at_keep, "num_transitions": n, "spent": spent,
            "sums": sums}


def _select_draws(n_at_keep: np.ndarray) -> list[np.ndarray]:
    """Per chain, the indices of distinct kept draws (a keep that came after no
    new transition repeats the previous state and is dropped), then cut to the
    same count for every chain by taking an evenly spaced subset that always
    includes the last draw."""
    distinct = []
    for n in n_at_keep:
        previous = np.concatenate([[-1], n[:-1]])
        distinct.append(np.flatnonzero(n > previous))
    m = min(len(d) for d in distinct)
    out = []
    for d in distinct:
        pick = np.round(np.linspace(len(d) - 1, 0, m)).astype(int)[::-1]
        out.append(d[pick])
    return out


def _predict(post, positions: dict, eval_x) -> np.ndarray:
    """post.predict of every (chain, draw) position on eval_x, as numpy
    (chain, draw, n_eval, classes); jitted and vmapped, PREDICT_CHUNK draws
    per call."""
    leaves = jax.tree.leaves(positions)
    num_chains, num_draws = leaves[0].shape[:2]
    flat = jax.tree.map(lambda a: a.reshape(num_chains * num_draws, *a.shape[2:]), positions)
    fn = jax.jit(jax.vmap(lambda p, params, x: p.predict(params, x), in_axes=(None, 0, None)))
    x = jnp.asarray(eval_x)
    outs = []
    total = num_chains * num_draws
    for start in range(0, total, PREDICT_CHUNK):
        chunk = jax.tree.map(lambda a: a[start:start + PREDICT_CHUNK], flat)
        size = min(PREDICT_CHUNK, total - start)
        if size < PREDICT_CHUNK:  # pad so every call has one shape (one compile)
            chunk = jax.tree.map(
                lambda a: np.concatenate([a, np.repeat(a[-1:], PREDICT_CHUNK - size, 0)]),
                chunk)
        outs.append(np.asarray(fn(post, chunk, x))[:size])
    out = np.concatenate(outs) if outs else np.zeros((0,))
    return out.reshape(num_chains, num_draws, *out.shape[1:])


def _result(post, run: dict, eval_x, warmup, seconds: float, settings: dict) -> dict:
    """The dict every reference returns, from a (chain-batched) `_thinned_run`
    output already on the host:

    positions    pytree like the params, float32 numpy (chain, draw, ...)
    predictions  numpy (chain, draw, n_eval, classes), post.predict of each draw
    logdensity   numpy (chain, draw)
    warmup_grad_evals    numpy (chain,) gradients before sampling (initial
                         gradient and tuning)
    sampling_grad_evals  numpy (chain,) gradients of the sampling phase
    seconds      wall time of tuning + sampling (compilation included)
    settings     JSON-able tuned parameters and notes
    """
    keep = _select_draws(np.asarray(run["n_at_keep"]))
    take = lambda a: np.stack([np.asarray(a)[c, idx] for c, idx in enumerate(keep)])
    positions = jax.tree.map(lambda a: take(a).astype(np.float32), run["positions"])
    settings = dict(settings)
    settings["num_sampling_transitions"] = np.asarray(run["num_transitions"]).tolist()
    settings["kept_transition_index"] = take(run["n_at_keep"]).tolist()
    settings["seconds_excludes"] = "the prediction pass"
    return {
        "positions": positions,
        "predictions": _predict(post, positions, eval_x),
        "logdensity": take(run["logdensity"]).astype(np.float32),
        "warmup_grad_evals": np.asarray(warmup, dtype=np.int64),
        "sampling_grad_evals": np.asarray(run["spent"], dtype=np.int64),
        "seconds": float(seconds),
        "settings": settings,
    }


def _overrun_note(what: str, warmup, budget: int, num_transitions) -> str | None:
    """A sentence for settings["note"] when tuning left some chain no room
    for a single sampling transition."""
    idle = np.flatnonzero(np.asarray(num_transitions) == 0).tolist()
    if not idle:
        return None
    return (f"the {what} alone spent {np.asarray(warmup).tolist()} gradients against a "
            f"budget of {budget} per chain; chains {idle} ran no sampling transition, so "
            f"every chain returns one draw (for those chains, the {what}'s final state)")


def _chain_keys(key, num_chains):
    return jax.random.split(key, num_chains)


def _vector_summary(v) -> dict:
    """min / median / max of a per-chain batch of vectors (chain, d)."""
    v = np.asarray(v, dtype=np.float64).reshape(np.shape(v)[0], -1)
    return {"min": v.min(1).tolist(), "median": np.median(v, 1).tolist(),
            "max": v.max(1).tolist()}


def _floats(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def _host(tree):
    return jax.tree.map(np.asarray, tree)


# -- unadjusted MCLMC ---------------------------------------------------------

def _mclmc_tuning_steps(num_steps: int) -> tuple[int, int]:
    """(integrator steps mclmc_find_L_and_step_size runs for this num_steps,
    the count it reports), with its default fractions and
    diagonal_preconditioning=True. The two differ by one step when the second
    phase length is 2 mod 3: the re-tuning after the mass matrix update runs
    round(n2 / 3) steps but the returned total adds n2 // 3."""
    d = _defaults(blackjax.mclmc_find_L_and_step_size)
    n1 = round(num_steps * d["frac_tune1"])
    n2 = round(num_steps * d["frac_tune2"])
    n3 = round(num_steps * d["frac_tune3"])
    ran = n1 + n2 + (round(n2 / 3) if n2 > 1 else 0) + (n3 if n3 >= 2 else 0)
    reported = n1 + n2 + n2 // 3 + (n3 if n3 >= 2 else 0)
    return ran, reported


def _mclmc_num_steps(budget: int) -> int:
    """Largest num_steps N with INIT_GRADS + 2 * (tuning steps(N) + N) <= budget."""
    d = _defaults(blackjax.mclmc_find_L_and_step_size)
    frac = d["frac_tune1"] + d["frac_tune2"] * (1 + 1 / 3) + d["frac_tune3"]
    n = int((budget - INIT_GRADS) / GRADS_PER_MCLACHLAN_STEP / (1 + frac)) + 3
    while n > 0 and INIT_GRADS + GRADS_PER_MCLACHLAN_STEP * (
            _mclmc_tuning_steps(n)[0] + n) > budget:
        n -= 1
    return n


def blackjax_mclmc(post, key, *, num_chains: int, budget: int, eval_x, thin_to: int) -> dict:
    """Unadjusted MCLMC (isokinetic McLachlan integrator) tuned by
    blackjax.mclmc_find_L_and_step_size with diagonal preconditioning and all
    other arguments at their defaults.

    Budget: num_steps N is the largest with 1 + 2 * (T(N) + N) <= budget, where
    T(N) is the number of integrator steps the tuner runs (computed from its
    own rounding rules) and every step costs 2 gradients; the chain then
    samples exactly N steps. warmup_grad_evals = 1 + 2 T(N), sampling 2 N.
    `seconds` covers tuning and sampling, compilation included.
    """
    num_steps = _mclmc_num_steps(budget)
    if num_steps < 1:
        raise ValueError(f"budget={budget} leaves no MCLMC step")
    tune_steps, reported_steps = _mclmc_tuning_steps(num_steps)
    kernel = _mclmc.build_kernel(integrator=_integrators.isokinetic_mclachlan)

    def tune(post, key):
        k_init, k_momentum, k_tune, k_sample = jax.random.split(key, 4)
        state = _mclmc.init(post.init(k_init), post.logdensity, k_momentum)
        state, params, reported = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, num_steps=num_steps, state=state, rng_key=k_tune,
            logdensity_fn=post.logdensity, diagonal_preconditioning=True)
        return state, params, jnp.asarray(reported), k_sample

    def sample(post, state, params, key):
        algorithm = blackjax.mclmc(post.logdensity, L=params.L, step_size=params.step_size,
                                   integrator=_integrators.isokinetic_mclachlan,
                                   inverse_mass_matrix=params.inverse_mass_matrix)
        cost = GRADS_PER_MCLACHLAN_STEP
        return _thinned_run(
            algorithm.step, state, key, cost * num_steps, thin_to,
            next_cost=lambda s, spent, n: cost, cost_of=lambda info: jnp.int32(cost),
            summary=lambda info: {"energy_change_sq": jnp.square(info.energy_change),
                                  "nonfinite": jnp.logical_not(info.nonans)})

    start = time.perf_counter()
    state, params, reported, sample_keys = jax.block_until_ready(
        jax.jit(jax.vmap(tune, in_axes=(None, 0)))(post, _chain_keys(key, num_chains)))
    tuned = time.perf_counter()
    run = jax.block_until_ready(
        jax.jit(jax.vmap(sample, in_axes=(None, 0, 0, 0)))(post, state, params, sample_keys))
    seconds = time.perf_counter() - start
    run, params, reported = _host(run), _host(params), np.asarray(reported)

    dim = sum(math.prod(np.shape(x)[1:]) for x in jax.tree.leaves(state.position))
    steps = np.maximum(run["num_transitions"], 1)
    settings = {
        "sampler": "blackjax.mclmc (isokinetic_mclachlan), mclmc_find_L_and_step_size defaults",
        "tuner_num_steps": num_steps,
        "tuning_integrator_steps": tune_steps,
        "tuner_reported_integrator_steps": reported.tolist(),
        "sampling_steps": num_steps,
        "L": _floats(params.L),
        "step_size": _floats(params.step_size),
        "inverse_mass_matrix": _vector_summary(params.inverse_mass_matrix),
        "energy_change_sq_per_dim": _floats(run["sums"]["energy_change_sq"] / steps / dim),
        "nonfinite_steps": np.asarray(run["sums"]["nonfinite"]).astype(int).tolist(),
        "seconds_tuning": tuned - start,
        "seconds_sampling": seconds - (tuned - start),
    }
    if not np.all(reported == reported_steps):
        settings["note"] = "tuner reported an unexpected step count; costs use the computed one"
    warmup = np.full(num_chains, INIT_GRADS + GRADS_PER_MCLACHLAN_STEP * tune_steps)
    return _result(post, run, eval_x, warmup, seconds, settings)


# -- Metropolis-adjusted MCLMC (MAMS) -----------------------------------------

def _mams_tuning_transitions(num_steps: int) -> int:
    """Transitions adjusted_mclmc_find_L_and_step_size runs with its defaults
    (frac_tune3 = 0): int(f1 N) + int(f2 N) in its first pass, int(f1 N) in
    its second (run only when int(f2 N) > 0)."""
    d = _defaults(blackjax.adjusted_mclmc_find_L_and_step_size)
    n1, n2 = int(num_steps * d["frac_tune1"]), int(num_steps * d["frac_tune2"])
    return n1 + n2 + (n1 if n2 != 0 else 0)


# Gradients per transition of the tuner's first pass on the digits MLP(256,
# 256): it holds L at 2 x the initial step size 0.2 sqrt(d) while dual
# averaging shrinks the step, so a trajectory of L / eps steps grows to 200 to
# 500 steps (traced 2026-12-06: 12 transitions spent 4,920 gradients, 2 x 150
# to 600 steps from the fourth on).
PASS1_GRADS_PER_TRANSITION = 800


def _mams_num_steps(budget: int) -> int:
    """num_steps for adjusted_mclmc_find_L_and_step_size, chosen so that its
    expected cost is half the budget: with its defaults it runs int(f1 N) +
    int(f2 N) first-pass transitions at about PASS1_GRADS_PER_TRANSITION
    gradients each (L fixed, trajectories of L / eps steps), then int(f1 N)
    second-pass transitions at target_num_integration_steps (2) steps each.
    The rest of the budget is sampled at that length.
    """
    d = _defaults(blackjax.adjusted_mclmc_find_L_and_step_size)
    pass2 = GRADS_PER_MCLACHLAN_STEP * d["target_num_integration_steps"]
    per_num_step = (d["frac_tune1"] + d["frac_tune2"]) * PASS1_GRADS_PER_TRANSITION \
        + d["frac_tune1"] * pass2
    return max(int((budget / 2 - INIT_GRADS) / per_num_step), 1)


def blackjax_mams(post, key, *, num_chains: int, budget: int, eval_x, thin_to: int,
                  num_steps: int | None = None) -> dict:
    """Metropolis-adjusted MCLMC (blackjax.adjusted_mclmc_dynamic, isokinetic
    McLachlan, trajectory length drawn uniformly around L / step_size), tuned
    by blackjax.adjusted_mclmc_find_L_and_step_size with target=0.9 and every
    other argument at its default.

    Budget: the tuner's num_steps is chosen so that its expected cost is half
    the budget (`_mams_num_steps`); its actual
    cost is the number of integrator steps it reports, times 2, plus 1 for the
    initial gradient (warmup_grad_evals). Sampling then runs transitions while
    the next one, whose length is known before it runs, still fits in the
    chain's budget; sampling_grad_evals = 2 * its integrator steps. If the
    tuner alone spends the budget, no transition runs, the single draw is the
    tuner's final state, and settings["note"] says so. num_steps, if given,
    replaces the tuner's num_steps chosen from the budget. settings
    "tuning_grads_per_num_step" is the measured tuning cost over num_steps,
    which tells what num_steps would fit a budget. `seconds` covers tuning and
    sampling, compilation included.
    """
    if num_steps is None:
        num_steps = _mams_num_steps(budget)
    steps_fn = _amd.make_random_trajectory_length_fn(True)
    kernel = _amd.build_kernel(integrator=_integrators.isokinetic_mclachlan,
                               integration_steps_fn=steps_fn)
    target = 0.9

    def tune(post, key):
        k_init, k_arg, k_tune, k_sample = jax.random.split(key, 4)
        state = _amd.init(post.init(k_init), post.logdensity, k_arg)
        state, params, tuning_steps = blackjax.adjusted_mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, logdensity_fn=post.logdensity, num_steps=num_steps,
            state=state, rng_key=k_tune, target=target)
        return state, params, jnp.asarray(tuning_steps, jnp.int32), k_sample

    def sample(post, state, params, key, sampling_budget):
        avg = params.L / params.step_size
        algorithm = blackjax.adjusted_mclmc_dynamic(
            post.logdensity, step_size=params.step_size,
            inverse_mass_matrix=params.inverse_mass_matrix,
            integrator=_integrators.isokinetic_mclachlan,
            integration_steps_fn=steps_fn, integration_steps_params=(avg,))
        cost = lambda n: GRADS_PER_MCLACHLAN_STEP * n
        return _thinned_run(
            algorithm.step, state, key, sampling_budget, thin_to,
            # the kernel draws its length from state.random_generator_arg
            next_cost=lambda s, spent, n: cost(steps_fn(s.random_generator_arg, avg)),
            cost_of=lambda info: cost(info.num_integration_steps),
            summary=lambda info: {"acceptance_rate": info.acceptance_rate,
                                  "divergent": info.is_divergent,
                                  "integration_steps": info.num_integration_steps})

    start = time.perf_counter()
    state, params, tuning_steps, sample_keys = jax.block_until_ready(
        jax.jit(jax.vmap(tune, in_axes=(None, 0)))(post, _chain_keys(key, num_chains)))
    tuned = time.perf_counter()
    warmup = INIT_GRADS + GRADS_PER_MCLACHLAN_STEP * np.asarray(tuning_steps, dtype=np.int64)
    sampling_budget = np.maximum(budget - warmup, 0).astype(np.int32)
    run = jax.block_until_ready(
        jax.jit(jax.vmap(sample, in_axes=(None, 0, 0, 0, 0)))(
            post, state, params, sample_keys, sampling_budget))
    seconds = time.perf_counter() - start
    run, params = _host(run), _host(params)

    transitions = np.maximum(run["num_transitions"], 1)
    settings = {
        "sampler": ("blackjax.adjusted_mclmc_dynamic (isokinetic_mclachlan, random "
                    "trajectory length), adjusted_mclmc_find_L_and_step_size target=0.9"),
        "target": target,
        "tuner_num_steps": num_steps,
        "tuner_transitions": _mams_tuning_transitions(num_steps),
        "tuning_integrator_steps": np.asarray(tuning_steps).tolist(),
        "tuning_grads_per_num_step": _floats(warmup / num_steps),
        "L": _floats(params.L),
        "step_size": _floats(params.step_size),
        "avg_integration_steps": _floats(params.L / params.step_size),
        "inverse_mass_matrix": _vector_summary(params.inverse_mass_matrix),
        "acceptance_rate": _floats(run["sums"]["acceptance_rate"] / transitions),
        "divergent_transitions": np.asarray(run["sums"]["divergent"]).astype(int).tolist(),
        "mean_integration_steps": _floats(run["sums"]["integration_steps"] / transitions),
        "seconds_tuning": tuned - start,
        "seconds_sampling": seconds - (tuned - start),
    }
    note = _overrun_note("tuner", warmup, budget, run["num_transitions"])
    if note:
        settings["note"] = note
    return _result(post, run, eval_x, warmup, seconds, settings)


# -- NUTS ---------------------------------------------------------------------

def _nuts_num_warmup(budget: int) -> int:
    """Warm-up transitions for a budget: budget // 200 clipped to [20, 100],
    i.e. 100 from a budget of 20,000 gradients on. The guess behind it: a
    warm-up transition on a neural-network posterior costs ~100 gradients
    (110-140 on the tiny test network), and warm-up should take at most about
    half the budget. Below 20 transitions blackjax skips the mass-matrix
    adaptation altogether, hence the floor."""
    return int(min(100, max(20, budget // 200)))


def blackjax_nuts(post, key, *, num_chains: int, budget: int, eval_x, thin_to: int,
                  num_warmup: int | None = None, warmup_share: float = 0.5) -> dict:
    """NUTS (velocity Verlet, at most 10 doublings) after blackjax's window
    adaptation with its defaults (Stan's schedule over num_warmup
    transitions, diagonal mass matrix, target acceptance 0.8, initial step
    size 1), num_warmup by default `_nuts_num_warmup(budget)`.

    The adaptation is blackjax's own (`blackjax.adaptation.window_adaptation.base`
    and `staged_adaptation.build_schedule`, the pieces `window_adaptation`
    is made of), driven one transition at a time as its docstring invites,
    so that it can stop at a budget: a NUTS transition on this network may
    cost up to 1,023 gradients while the dual averaging shrinks the step
    size, and `window_adaptation(...).run` with 50 transitions did not
    finish within 15 minutes at a budget of 10,000 gradients per chain. A
    chain's warm-up ends after num_warmup transitions or once it has spent
    warmup_share of the budget, whichever comes first; it then uses the
    adaptation's values at that point (`final`: the averaged step size and
    the last mass matrix computed). settings["warmup_transitions"] says how
    far each chain got.

    Budget: warmup_grad_evals = 1 (initial gradient) + the sum of the
    warm-up transitions' num_integration_steps (1 gradient each). Sampling
    runs transitions while spent + (mean cost of this chain's transitions so
    far; at first, of its last warm-up transitions) <= the rest of the
    budget, so a chain may end slightly under or over it; sampling_grad_evals
    is the exact sum of num_integration_steps. If the warm-up alone spends the
    budget, the single draw is its final state and settings["note"] says so.
    `seconds` covers warm-up and sampling, compilation included.
    """
    from blackjax.adaptation.staged_adaptation import build_schedule
    from blackjax.adaptation.window_adaptation import base as window_base

    num_warmup = _nuts_num_warmup(budget) if num_warmup is None else int(num_warmup)
    schedule = jnp.asarray(build_schedule(num_warmup), jnp.int32)
    warmup_budget = int(warmup_share * budget)
    defaults = _defaults(blackjax.window_adaptation)
    adapt_init, adapt_update, adapt_final = window_base(
        is_mass_matrix_diagonal=defaults["is_mass_matrix_diagonal"],
        target_acceptance_rate=defaults["target_acceptance_rate"])
    max_doublings = _defaults(_nuts.as_top_level_api)["max_num_doublings"]
    kernel = _nuts.build_kernel()
    tail = max(1, num_warmup // 10)

    def tune(post, key):
        k_init, k_warmup, k_sample = jax.random.split(key, 3)
        position = post.init(k_init)
        state = _nuts.init(position, post.logdensity)
        adaptation = adapt_init(position, defaults["initial_step_size"])
        recent = jnp.zeros(tail, jnp.float32)  # costs of the last `tail` transitions

        def cond(c):
            _, _, _, i, spent, _, _ = c
            return (i < num_warmup) & (spent < warmup_budget)

        def body(c):
            state, adaptation, key, i, spent, divergent, recent = c
            key, subkey = jax.random.split(key)
            state, info = kernel(subkey, state, post.logdensity, adaptation.step_size,
                                 adaptation.inverse_mass_matrix,
                                 max_num_doublings=max_doublings)
            adaptation = adapt_update(adaptation, (schedule[i, 0], schedule[i, 1]),
                                      state.position, info.acceptance_rate)
            steps = info.num_integration_steps.astype(jnp.int32)
            recent = jnp.roll(recent, -1).at[-1].set(steps.astype(jnp.float32))
            return (state, adaptation, key, i + 1, spent + steps,
                    divergent + info.is_divergent.astype(jnp.int32), recent)

        state, adaptation, _, done, spent, divergent, recent = jax.lax.while_loop(
            cond, body, (state, adaptation, k_warmup, jnp.int32(0), jnp.int32(0),
                         jnp.int32(0), recent))
        step_size, inverse_mass_matrix = adapt_final(adaptation)
        parameters = {"step_size": step_size, "inverse_mass_matrix": inverse_mass_matrix}
        guess = recent.sum() / jnp.maximum(jnp.minimum(done, tail), 1)
        return state, parameters, spent, guess, divergent, done, k_sample

    def sample(post, state, parameters, key, sampling_budget, first_guess):
        algorithm = blackjax.nuts(post.logdensity, **parameters)
        return _thinned_run(
            algorithm.step, state, key, sampling_budget, thin_to,
            next_cost=lambda s, spent, n: jnp.where(
                n > 0, spent / jnp.maximum(n, 1), first_guess),
            cost_of=lambda info: GRADS_PER_VERLET_STEP * info.num_integration_steps,
            summary=lambda info: {"acceptance_rate": info.acceptance_rate,
                                  "divergent": info.is_divergent,
                                  "integration_steps": info.num_integration_steps,
                                  "max_doublings": info.num_trajectory_expansions >= max_doublings})

    start = time.perf_counter()
    state, parameters, warmup_steps, guess, warmup_div, done, sample_keys = \
        jax.block_until_ready(jax.jit(jax.vmap(tune, in_axes=(None, 0)))(
            post, _chain_keys(key, num_chains)))
    tuned = time.perf_counter()
    warmup = INIT_GRADS + GRADS_PER_VERLET_STEP * np.asarray(warmup_steps, dtype=np.int64)
    sampling_budget = np.maximum(budget - warmup, 0).astype(np.int32)
    run = jax.block_until_ready(
        jax.jit(jax.vmap(sample, in_axes=(None, 0, 0, 0, 0, 0)))(
            post, state, parameters, sample_keys, sampling_budget, guess))
    seconds = time.perf_counter() - start
    run, parameters = _host(run), _host(parameters)

    transitions = np.maximum(run["num_transitions"], 1)
    settings = {
        "sampler": ("blackjax.nuts after blackjax's window adaptation (defaults: target 0.8, "
                    "diagonal mass matrix, initial step size 1), stopped at "
                    f"{warmup_share:.0%} of the budget"),
        "num_warmup": num_warmup,
        "warmup_transitions": np.asarray(done).tolist(),
        "warmup_integration_steps": np.asarray(warmup_steps).tolist(),
        "warmup_divergent_transitions": np.asarray(warmup_div).astype(int).tolist(),
        "step_size": _floats(parameters["step_size"]),
        "inverse_mass_matrix": _vector_summary(parameters["inverse_mass_matrix"]),
        "acceptance_rate": _floats(run["sums"]["acceptance_rate"] / transitions),
        "divergent_transitions": np.asarray(run["sums"]["divergent"]).astype(int).tolist(),
        "max_doublings_transitions": np.asarray(run["sums"]["max_doublings"]).astype(int).tolist(),
        "mean_integration_steps": _floats(run["sums"]["integration_steps"] / transitions),
        "seconds_tuning": tuned - start,
        "seconds_sampling": seconds - (tuned - start),
    }
    note = _overrun_note("warm-up", warmup, budget, run["num_transitions"])
    if note:
        settings["note"] = note
    return _result(post, run, eval_x, warmup, seconds, settings)
