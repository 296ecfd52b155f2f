"""The chain driver: runs any kernel's warmup and sampling steps for all
chains together, keeps every `thin`-th draw with its stats and predictions,
writes them to a run directory as they come, checkpoints, resumes, and shows
progress. Kernels know nothing about it.

A kernel is given to the driver as two jitted functions over a `carry` (every
array the chains need to continue, leading axis = chain):

    warmup_step(tree, carry, t) -> (carry, stats)      one warmup transition t
    sample_step(tree, carry, t) -> (carry, stats)      `thin` transitions from t

`stats` is a dict of (chain,) arrays. Randomness is a function of the
transition index t (keys are folded with t), so a resumed run repeats exactly
the transitions an uninterrupted one would have made.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from weightspace.samplers.trace import Trace, leaf_name


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
        from jax.experimental import multihost_utils

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
        from tqdm.auto import tqdm

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


def run(*, tree, carry, warmup_step: Callable, sample_step: Callable,
        positions_of: Callable, predict: Callable | None, eval_x, plan: Plan,
        run_dir=None, config: dict | None = None, progress: bool = True,
        desc: str = "sampling", info_of: Callable[[Any], dict] | None = None) -> Trace:
    """Run warmup then sampling; see the module docstring.

    predict(tree, positions, eval_x) -> (chain, n_eval, ...) or None.
    info_of(carry) -> dict of run facts for Trace.info (e.g. adapted step sizes).
    """
    store = None
    step = 0
    if run_dir is not None:
        from weightspace.samplers.storage import RunStore

        spec = {name: (a.shape, a.dtype.str) for name, a in _record_spec(
            tree, carry, sample_step, positions_of, predict, eval_x, plan).items()}
        store = RunStore(run_dir, config or {}, spec)
        leaves, treedef = jax.tree.flatten(carry)
        restored = store.restore(_checkpoint_state(jax.tree.map(_abstract, carry)))
        if restored is not None:
            state, step = restored
            carry = jax.tree.unflatten(treedef, [state["carry"][f"{i:05d}"]
                                                 for i in range(len(leaves))])
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
                carry, stats = warmup_step(tree, carry, t)
                host_stats = {k: to_host(v) for k, v in stats.items()}
            else:
                carry, stats = sample_step(tree, carry, t)
                positions = positions_of(carry)
                preds = None if predict is None else predict(tree, positions, eval_x)
                rec = _record(positions, stats, preds)
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
                store.commit(_checkpoint_state(carry), step)
                last_commit, since_commit = time.monotonic(), 0
    finally:
        bar.close()
        if store is not None:
            store.close()

    info = {} if info_of is None else info_of(carry)
    if store is not None:
        return load(run_dir, template=positions_of(carry), _info=info)
    return _trace_from_records(records, positions_of(carry), info)


def chain_sharding(mesh):
    """Chains (the leading axis of every carry leaf) spread along "chain"."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec("chain"))


def chainwise(one: Callable, mesh) -> Callable:
    """jit(vmap over chains) of one(tree, chain_carry, t) -> (chain_carry, stats),
    stats a NamedTuple or dict of scalars (or arrays); the carry stays sharded
    along the mesh's "chain" axis, which also shards the chain axis of every
    sharding constraint inside `one` (spmd_axis_name)."""
    spmd = None if mesh is None or mesh.shape.get("chain", 1) == 1 else "chain"

    def step(tree, c, t):
        c, stats = jax.vmap(one, in_axes=(None, 0, None), spmd_axis_name=spmd)(tree, c, t)
        return c, (stats._asdict() if hasattr(stats, "_asdict") else stats)

    if mesh is None:
        return jax.jit(step)
    # One sharding for the whole carry: a pytree prefix applies it to every leaf.
    return jax.jit(step, out_shardings=(chain_sharding(mesh), None))


def chain_predict(target, eval_x):
    """jit of (tree, positions (chain, ...), x) -> (chain, n_eval, ...) predictions
    of every chain, or None without eval inputs."""
    if eval_x is None:
        return None
    predict_of = target.predict_of
    return jax.jit(lambda tree, pos, x: jax.vmap(predict_of(tree), in_axes=(0, None))(pos, x))


def _abstract(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _checkpoint_state(carry):
    """The carry as a dict with string keys (what orbax stores)."""
    return {"carry": {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(carry))}}


def _record_spec(tree, carry, sample_step, positions_of, predict, eval_x, plan):
    """Shapes and dtypes of one record, from abstract evaluation (no compute)."""
    def one(tree, carry):
        carry, stats = sample_step(tree, carry, plan.num_warmup)
        positions = positions_of(carry)
        preds = None if predict is None else predict(tree, positions, eval_x)
        return positions, stats, preds

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
    structure instead."""
    from weightspace.samplers.storage import read_run

    config, arrays = read_run(run_dir)
    # Records are stored draw-major; swapping to (chain, draw) is a view.
    arrays = {k: np.swapaxes(v, 0, 1) for k, v in arrays.items()}
    info = {"run_dir": str(run_dir), "config": config, **(_info or {})}
    return _assemble(arrays, template, info)
