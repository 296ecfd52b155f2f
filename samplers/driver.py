"""The chain driver: runs any kernel's warmup and sampling steps for all
chains together, keeps every `thin`-th draw with its stats and predictions,
writes them to a run directory as they come, checkpoints, resumes, and shows
progress. Kernels know nothing about it.

`sample(build, target, key, ...)` is the one entry point of every sampler:
the shared argument checks, the target (Posterior or callable), keys, chains
and mesh, start positions, eval inputs, the run fingerprint that guards
resume, then `run`. A sampler gives it an `Algorithm` (samplers/algorithm.py).

`run` drives two jitted functions over a `carry` (every array the chains need
to continue, leading axis = chain):

    warmup_step(tree, carry, t) -> (carry, stats, grad_evals)  warmup transition t
    sample_step(tree, carry, t) -> (carry, stats, grad_evals)  one kept draw from t

`stats` is a dict of (chain,) arrays, grad_evals (chain,) the step's cost in
full-batch-equivalent gradients (stored per draw as the stat "grad_evals",
summed over warmup into Trace.info["warmup_grad_evals"]). Randomness is a
function of the transition index t (keys are folded with t), so a resumed run
repeats exactly the transitions an uninterrupted one would have made.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from weightspace import sharding
from weightspace.jsonio import is_writer, read_json, write_json
from weightspace.samplers import target as target_lib
from weightspace.samplers import validation
from weightspace.samplers.algorithm import Algorithm
from weightspace.samplers.storage import RunStore, read_run
from weightspace.samplers.trace import Trace, leaf_name

GRAD_EVALS = "grad_evals"  # the stat: full-batch-equivalent gradients of each draw
WARMUP_COST_FILE = "warmup.json"  # in a run directory: {"grad_evals": [per chain]}


@dataclasses.dataclass(frozen=True)
class Plan:
    num_warmup: int
    num_samples: int
    thin: int
    checkpoint_every: int      # driver steps (warmup transitions or kept draws)
    checkpoint_seconds: float  # or this much wall time, whichever comes first
    # j -> last transition of kept draw j, when draws are not evenly thinned
    # (cyclical schedules); the sample step finds its own end in that case.
    draw_end: Callable[[int], int] | None = None

    @property
    def num_steps(self) -> int:
        return self.num_warmup + self.num_samples

    def transition(self, step: int) -> int:
        """Index of the first transition of driver step `step`."""
        if step < self.num_warmup:
            return step
        draw = step - self.num_warmup
        if self.draw_end is None:
            return self.num_warmup + draw * self.thin
        return self.num_warmup if draw == 0 else self.draw_end(draw - 1) + 1


def to_host(x) -> np.ndarray:
    """A global array on the host of every process (chains may live on
    devices of other processes)."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _record(positions, stats, predictions) -> dict[str, np.ndarray]:
    rec = {f"positions/{leaf_name(p)}": to_host(x)
           for p, x in jax.tree_util.tree_leaves_with_path(positions)}
    rec.update({f"stats/{k}": to_host(v) for k, v in stats.items()})
    if predictions is not None:
        rec["predictions"] = to_host(predictions)
    return rec


class _Progress:
    """tqdm bar on stderr with the running means of what the stats hold:
    acceptance, step size, divergences, log density."""

    def __init__(self, plan: Plan, start: int, enabled: bool, desc: str):
        self.plan = plan
        self.bar = tqdm(total=plan.num_steps, initial=start, desc=desc, file=sys.stderr,
                        disable=not enabled, unit="step", dynamic_ncols=True)
        self.divergent = 0
        self.accept_sum = 0.0
        self.count = 0

    def update(self, step: int, stats: dict[str, np.ndarray]):
        sampling = step >= self.plan.num_warmup
        parts = ["sample" if sampling else "warmup"]
        if "accept_prob" in stats:
            accept = float(np.mean(stats["accept_prob"]))
            if sampling:
                self.accept_sum += accept
                self.count += 1
                accept = self.accept_sum / self.count
            parts.append(f"acc={accept:.2f}")
        if "step_size" in stats:
            parts.append(f"eps={float(np.mean(stats['step_size'])):.3g}")
        if "is_divergent" in stats:
            if sampling:
                self.divergent += int(np.sum(stats["is_divergent"]))
            parts.append(f"div={self.divergent}")
        for name, label in (("logdensity", "logp"), ("minibatch_logdensity", "logp~"),
                            ("loss", "loss")):
            if name in stats:
                parts.append(f"{label}={float(np.mean(stats[name])):.4g}")
        self.bar.set_postfix_str(" ".join(parts), refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def sample(build: Callable[[Any], Algorithm], target, key, *, init=None, data=None,
           minibatch: bool = False, num_chains: int = 1, num_samples: int,
           num_warmup: int = 0, thin: int = 1, eval_x=None, predict_fn=None, mesh=None,
           run_dir=None, checkpoint_every: int = 10, checkpoint_seconds: float = 300.0,
           progress: bool = True) -> Trace:
    """Run a sampler: the one entry point every sampler goes through.

    build(target) -> Algorithm: the sampler's own checks that need the target
        (batch size against its rows, default trajectory length) and its
        Algorithm (samplers/algorithm.py). Called after the shared checks and
        target resolution, before any tracing.
    target: a Posterior or a callable: logdensity(position) (full batch), or with
        minibatch=True logdensity(position, batch) over `data` (the training rows).
    The other arguments are those every sampler shares (see ws.samplers.hmc).
    """
    validation.positive_int("num_chains", num_chains)
    validation.positive_int("num_samples", num_samples)
    validation.int_at_least("num_warmup", num_warmup, 0)
    validation.positive_int("thin", thin)
    validation.positive_int("checkpoint_every", checkpoint_every)
    validation.positive_float("checkpoint_seconds", checkpoint_seconds)
    if minibatch:
        tgt = target_lib.resolve_minibatch(target, data=data, predict_fn=predict_fn,
                                           mesh=mesh)
    else:
        tgt = target_lib.resolve(target, predict_fn=predict_fn, mesh=mesh)
    algorithm = build(tgt)
    key = validation.prng_key("key", key)
    mesh = tgt.mesh
    validation.chains_fit_mesh(num_chains * algorithm.replicas, mesh)

    key_init, *keys = jax.random.split(key, 1 + algorithm.num_keys)
    positions = validation.start_positions("init", init, tgt, key_init, num_chains)
    eval_x = validation.eval_inputs("eval_x", eval_x, tgt, positions)
    shard = None if mesh is None else chain_sharding(mesh)
    if shard is not None and algorithm.replicas == 1:
        # (With replicas, init spreads the chains' starts over their slots.)
        positions = jax.device_put(positions, shard)
    carry, init_cost = jax.jit(algorithm.init)(tgt.tree, positions, *keys)
    if shard is not None:
        carry = jax.device_put(carry, jax.tree.map(lambda _: shard, carry))

    config = {"sampler": algorithm.name, "num_chains": num_chains,
              "num_samples": num_samples, "num_warmup": num_warmup, "thin": thin,
              **algorithm.settings,
              "key": target_lib.fingerprint(jax.random.key_data(key)),
              "init": None if init is None else target_lib.fingerprint(init),
              "eval_x": None if eval_x is None else target_lib.fingerprint(eval_x),
              "target": tgt.description,
              "mesh": None if mesh is None else {k: int(v) for k, v in mesh.shape.items()}}
    plan = Plan(num_warmup=num_warmup, num_samples=num_samples, thin=thin,
                checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                draw_end=algorithm.draw_end)
    steps = chainwise if algorithm.replicas == 1 else all_slots
    return run(tree=tgt.tree, carry=carry, warmup_step=steps(algorithm.warmup_step, mesh),
               sample_step=steps(algorithm.sample_step, mesh),
               positions_of=algorithm.position, predict=chain_predict(tgt, eval_x),
               eval_x=eval_x, plan=plan, run_dir=run_dir, config=config, progress=progress,
               desc=algorithm.name, info_of=algorithm.info,
               init_cost=np.asarray(to_host(init_cost), np.float64))


def run(*, tree, carry, warmup_step: Callable, sample_step: Callable,
        positions_of: Callable, predict: Callable | None, eval_x, plan: Plan,
        run_dir=None, config: dict | None = None, progress: bool = True,
        desc: str = "sampling", info_of: Callable[[Any], dict] | None = None,
        init_cost=None) -> Trace:
    """Run warmup then sampling; see the module docstring.

    predict(tree, positions, eval_x) -> (chain, n_eval, ...) or None.
    info_of(carry) -> dict of run facts for Trace.info (e.g. adapted step sizes).
    init_cost: (chain,) gradients the carry's start cost; warmup's are added
        to it, and the total is Trace.info["warmup_grad_evals"] (also
        checkpointed, and written to the run directory when warmup ends).
    """
    num_chains = int(np.shape(jax.tree.leaves(carry)[0])[0])
    warmup_cost = (np.zeros(num_chains) if init_cost is None
                   else np.asarray(init_cost, np.float64))
    store = None
    step = 0
    if run_dir is not None:
        spec = {name: (a.shape, a.dtype.str) for name, a in _record_spec(
            tree, carry, sample_step, positions_of, predict, eval_x, plan).items()}
        store = RunStore(run_dir, config or {}, spec)
        leaves, treedef = jax.tree.flatten(carry)
        restored = store.restore(_checkpoint_state(jax.tree.map(_abstract, carry),
                                                   warmup_cost))
        if restored is not None:
            state, step = restored
            carry = jax.tree.unflatten(treedef, [state["carry"][f"{i:05d}"]
                                                 for i in range(len(leaves))])
            warmup_cost = np.asarray(state["warmup_grad_evals"], np.float64)
            expected = max(step - plan.num_warmup, 0)
            if store.num_draws != expected:
                raise RuntimeError(f"run_dir={run_dir!s}: checkpoint at step {step} "
                                   f"expects {expected} draws, found {store.num_draws}")

    records: list[dict[str, np.ndarray]] = []
    bar = _Progress(plan, step, progress, desc)
    last_commit, since_commit = time.monotonic(), 0
    try:
        while step < plan.num_steps:
            t = plan.transition(step)
            if step < plan.num_warmup:
                carry, stats, cost = warmup_step(tree, carry, t)
                host_stats = {k: to_host(v) for k, v in stats.items()}
                warmup_cost = warmup_cost + to_host(cost)
            else:
                carry, stats, cost = sample_step(tree, carry, t)
                positions = positions_of(carry)
                preds = None if predict is None else predict(tree, positions, eval_x)
                rec = _record(positions, {**stats, GRAD_EVALS: cost}, preds)
                host_stats = {k[len("stats/"):]: v for k, v in rec.items()
                              if k.startswith("stats/")}
                if store is None:
                    records.append(rec)
                else:
                    store.append(rec)
            step += 1
            since_commit += 1
            bar.update(step - 1, host_stats)
            if store is not None and (step == plan.num_steps
                                      or since_commit >= plan.checkpoint_every
                                      or time.monotonic() - last_commit
                                      >= plan.checkpoint_seconds
                                      or step == plan.num_warmup):
                store.commit(_checkpoint_state(carry, warmup_cost), step)
                if step >= plan.num_warmup:
                    _write_warmup_cost(run_dir, warmup_cost)
                last_commit, since_commit = time.monotonic(), 0
    finally:
        bar.close()
        if store is not None:
            store.close()

    info = {} if info_of is None else info_of(carry)
    info["warmup_grad_evals"] = warmup_cost
    if store is not None:
        _write_warmup_cost(run_dir, warmup_cost)  # a resumed, finished run may lack it
        # Every process reads the draws once process 0 has written the last of them.
        sharding.wait_for_processes(f"weightspace run end {store.run_dir}")
        trace = load(run_dir, template=positions_of(carry), _info=info)
    else:
        trace = _trace_from_records(records, positions_of(carry), info)
    return report_stuck(trace, desc)


def report_stuck(trace: Trace, desc: str) -> Trace:
    """Warn about, and list in trace.info["stuck_chains"], the chains whose
    every kept draw came from rejected or non-finite transitions (stat
    "is_accepted" false throughout): such a chain never left its start."""
    accepted = trace.stats.get("is_accepted")
    if accepted is None:
        return trace
    stuck = [int(i) for i in np.flatnonzero(~np.any(np.asarray(accepted, bool), axis=1))]
    trace.info["stuck_chains"] = stuck
    if stuck:
        warnings.warn(f"{desc}: chain(s) {stuck} are stuck: every transition of every kept "
                      f"draw was rejected or not finite, so their draws all repeat the "
                      f"chain's start; look at the step size and the start positions",
                      RuntimeWarning, stacklevel=3)
    return trace


def chain_sharding(mesh):
    """Chains (the leading axis of every carry leaf) spread along "chain"."""
    return NamedSharding(mesh, PartitionSpec("chain"))


def chainwise(one: Callable, mesh) -> Callable:
    """jit(vmap over chains) of one(tree, chain_carry, t) -> (chain_carry, stats,
    *more), stats a NamedTuple or dict of scalars (or arrays); the carry stays
    sharded along the mesh's "chain" axis, which also shards the chain axis of
    every sharding constraint inside `one` (spmd_axis_name)."""
    def step(tree, c, t):
        c, stats, *more = slot_vmap(one, mesh, in_axes=(None, 0, None))(tree, c, t)
        return c, (stats._asdict() if hasattr(stats, "_asdict") else stats, *more)

    # One sharding for the whole carry: a pytree prefix applies it to every leaf.
    jitted = (jax.jit(step) if mesh is None
              else jax.jit(step, out_shardings=(chain_sharding(mesh), None)))

    def chains(tree, c, t):
        c, rest = jitted(tree, c, t)
        return (c, *rest)

    return chains


def slot_vmap(one: Callable, mesh, in_axes=0) -> Callable:
    """vmap of `one` over chains (or a carry's slots), the mapped axis sharded
    along the mesh's "chain" axis."""
    spmd = None if mesh is None or mesh.shape.get("chain", 1) == 1 else "chain"
    return jax.vmap(one, in_axes=in_axes, spmd_axis_name=spmd)


def all_slots(step: Callable, mesh) -> Callable:
    """jit of step(tree, carry, t) -> (carry, stats, grad_evals) over the whole
    carry (an Algorithm with replicas > 1), the carry kept sharded along the
    mesh's "chain" axis."""
    jitted = (jax.jit(step) if mesh is None
              else jax.jit(step, out_shardings=(chain_sharding(mesh), None, None)))

    def slots(tree, c, t):
        c, stats, cost = jitted(tree, c, t)
        return c, (stats._asdict() if hasattr(stats, "_asdict") else stats), cost

    return slots


def chain_predict(target, eval_x):
    """jit of (tree, positions (chain, ...), x) -> (chain, n_eval, ...) predictions
    of every chain, or None without eval inputs."""
    if eval_x is None:
        return None
    predict_of = target.predict_of
    return jax.jit(lambda tree, pos, x: jax.vmap(predict_of(tree), in_axes=(0, None))(pos, x))


def _abstract(x):
    placement = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=placement)


def _checkpoint_state(carry, warmup_cost):
    """The carry as a dict with string keys (what orbax stores), with the
    gradients spent before the first draw."""
    return {"carry": {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(carry))},
            "warmup_grad_evals": np.asarray(warmup_cost, np.float64)}


def _write_warmup_cost(run_dir, warmup_cost) -> None:
    """Warmup's cost into the run directory (process 0), once it is final."""
    path = Path(run_dir).expanduser().absolute() / WARMUP_COST_FILE
    if is_writer() and not path.is_file():
        write_json(path, {"grad_evals": [float(c) for c in warmup_cost]})


def _record_spec(tree, carry, sample_step, positions_of, predict, eval_x, plan):
    """Shapes and dtypes of one record, from abstract evaluation (no compute)."""
    def one(tree, carry):
        carry, stats, cost = sample_step(tree, carry, plan.num_warmup)
        positions = positions_of(carry)
        preds = None if predict is None else predict(tree, positions, eval_x)
        return positions, {**stats, GRAD_EVALS: cost}, preds

    positions, stats, preds = jax.eval_shape(one, tree, carry)
    spec = {f"positions/{leaf_name(p)}": x
            for p, x in jax.tree_util.tree_leaves_with_path(positions)}
    spec.update({f"stats/{k}": v for k, v in stats.items()})
    if preds is not None:
        spec["predictions"] = preds
    return spec


def _trace_from_records(records, template_positions, info) -> Trace:
    if not records:
        raise ValueError("no draws were made")
    arrays = {k: np.stack([r[k] for r in records], axis=1) for k in records[0]}
    return _assemble(arrays, template_positions, info)


def _assemble(arrays: dict, template_positions, info) -> Trace:
    """Trace from name -> (chain, draw, ...) arrays; positions take the pytree
    structure of `template_positions` when given, else nested dicts."""
    names = [k for k in arrays if k.startswith("positions/")]
    if template_positions is not None:
        paths = [f"positions/{leaf_name(p)}" for p, _ in
                 jax.tree_util.tree_leaves_with_path(template_positions)]
        treedef = jax.tree.structure(template_positions)
        positions = jax.tree.unflatten(treedef, [arrays[p] for p in paths])
    else:
        positions = _nest({k[len("positions/"):]: arrays[k] for k in names})
    stats = {k[len("stats/"):]: v for k, v in arrays.items() if k.startswith("stats/")}
    return Trace(positions=positions, stats=stats, predictions=arrays.get("predictions"),
                 info=info)


def _nest(flat: dict[str, Any]):
    """{'layers.0.kernel': x} -> {'layers': {'0': {'kernel': x}}}."""
    if list(flat) == ["position"]:
        return flat["position"]
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, last = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def load(run_dir, *, template=None, _info: dict | None = None) -> Trace:
    """Open a finished or partial run lazily: arrays are read-only memory maps
    with leading (chain, draw) axes (views, nothing is read until used).

    Positions are nested dicts keyed by the names of the sampled pytree's
    leaves ("layers.0.kernel" -> ["layers"]["0"]["kernel"]); with `template`
    (a position pytree, leaves with a leading chain axis) they take its
    structure instead. info["warmup_grad_evals"] (chain,) is what the chains
    spent before their first draw (start and warmup), once warmup has ended."""
    config, arrays = read_run(run_dir)
    # Records are stored draw-major; swapping to (chain, draw) is a view.
    arrays = {k: np.swapaxes(v, 0, 1) for k, v in arrays.items()}
    info = {"run_dir": str(run_dir), "config": config}
    cost_file = Path(run_dir) / WARMUP_COST_FILE
    if cost_file.is_file():
        info["warmup_grad_evals"] = np.asarray(read_json(cost_file)["grad_evals"])
    info.update(_info or {})
    return _assemble(arrays, template, info)
