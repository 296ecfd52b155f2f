"""Wall time of an LLC curve (issue 17): the LLC at 20 checkpoints of a
training run, by `ws.slt.llc` in one compiled program (`stacked=True`) and in
a loop of one call per checkpoint, against devinterp 1.3.2 (PyTorch) looping
over the same checkpoints with the same settings; both sides' 20 estimates
side by side, and where each side's time goes.

The problem: the MLP(256, 256) on the digits training rows (n = 1,437); the
checkpoints are `ws.samplers.sgd(..., save_every=1)` after each of 20 epochs
(one run, batch 128, learning rate 0.01, prior variance 0.2); at each, 4
chains of 200 SGLD steps (50 burn-in, 150 draws), minibatches of 128 rows,
step size 1e-4, localization 100, nbeta = n / log n, no MALA acceptance, the
loss the mean cross-entropy over the batch.

Ours runs in this process on one JAX CPU device (XLA's threads on every
core). The loop's program is compiled once, by its first call, and reused
for every checkpoint; the stacked call runs all 80 chains in one program.
Both use the same key, so their estimates must agree (checked: an assertion).

devinterp runs in a child process of its own venv (never in .venv; install
recipe and how its parameters map to ours: the docstring of
benchmarks/llc.py, whose constants and helpers this script imports). This
process writes the checkpoints (one .npz of named arrays, each with a leading
checkpoint axis) and the training rows (.npy) to a temporary directory; the
child reads them (no pickle), builds one torch model per checkpoint and calls
`estimate_learning_coeff_with_summary` once per checkpoint: SGLD with lr =
step size 1e-4, localization 100, nbeta = n / log n passed explicitly,
num_burnin_steps=50, num_draws=150, num_steps_bw_draws=1, num_chains=4,
cores=1 (chains one after another, its default on CPU; cores > 1 would
spawn a process pool, importing torch afresh, at every checkpoint), a
DataLoader of batches of 128, shuffled, drop_last=True (11 batches an epoch,
29 rows sit out, as in ours), init_loss = the full-data loss at the
checkpoint, computed in the timed loop just before each call (ours computes it
inside its call), the same seed at every checkpoint (as our one key). It does
so with torch threads = cores (the issue's setting) and on 1 torch thread
(on a shared machine torch's thread pool can be many-fold slower than one
thread); "devinterp best" is the faster of the two in each round.

Timed: each side's estimate calls alone (imports, loading the files, building
the models and compiling excluded: each of our schedules is called once to
compile before the rounds, and that first call is reported). Rounds alternate
which side goes first (and which threading devinterp starts with); ratios pair
the sides within a round; medians over rounds.

Estimates: per checkpoint, mean over the 4 chains and its standard error (std
over chains, ddof 1, / sqrt(4)); a checkpoint "agrees" when the two means
differ by at most 2 combined standard errors, sqrt(se_ours^2 + se_devinterp^2).
The two are the same Markov chain in law driven by different random numbers,
so they can agree only within Monte Carlo error; the count is printed, not
asserted.

Where the time goes:
- ours: the first call of each schedule minus its median later call is the
  one-time cost (tracing and XLA compilation). Of a compiled call, the part
  that is the forward and backward passes alone is measured by a separate
  jitted program doing just that: a `lax.scan` of 200 steps of
  `value_and_grad` of the batch loss on random minibatches of 128, `vmap`ped
  over the same chains (4 for one call of the loop, 80 for the stacked call),
  each step moving w by a tiny multiple of the gradient so nothing is hoisted;
  the rest is the sampler's own work (noise, localization, the batch
  permutation, loss bookkeeping) and, for the loop, the per-call host work.
- devinterp: one more child calls devinterp at the first and last checkpoint
  at each threading with timers: forward hooks on the model (forward pass),
  a subclass of its SGLD that times `step` (the optimizer update: noise and
  localization), the gap from the end of the forward pass to the start of
  `step` (cross-entropy and `loss.backward()`), the gap from the end of one
  step to the next forward pass of the same chain (the next DataLoader batch,
  devinterp's callbacks, `zero_grad`, its Python loop), and the rest of the
  call (per chain: deepcopy of the model, building the optimizer, unpickling
  the loader; per call: validation, LLC finalization). The same child times a
  DataLoader batch alone. Timer overhead: the timed call against the same
  checkpoints' untimed calls of the rounds (printed).

    python benchmarks/llc_curve.py [--rounds 3] [--quick]
        [--devinterp-python /tmp/venv-devinterp/bin/python]

--quick: 2 checkpoints, 1 round (the same chains), to check it runs end to
end. Without the devinterp interpreter the script says so and runs our side
only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# benchmarks/ is on sys.path when this file runs as a script; these import no
# third-party module at the top, so the devinterp venv can import them too.
from llc import (BATCH, CHAINS, DEVINTERP_PYTHON, HIDDEN, LOCALIZATION, NUM_CLASSES,
                 STEP_SIZE, X_TRAIN, Y_TRAIN, nbeta_of, pooled)

DRAWS, BURNIN = 150, 50
STEPS = DRAWS + BURNIN
CHECKPOINTS = {"full": 20, "quick": 2}
SEED = 1  # our key: jax.random.key(SEED); devinterp's seed
TIME_TARGET = 3  # devinterp's best / ours, the target
SGD = dict(batch_size=128, learning_rate=0.01)
PRIOR_VARIANCE = 0.2  # for the SGD run only: the LLC's loss is the NLL alone
STACK = "checkpoints.npz"


# ------------------------------------------------------------------ ours (.venv)

def ours_settings(n: int) -> dict:
    return dict(num_chains=CHAINS, num_draws=DRAWS, num_burnin=BURNIN, step_size=STEP_SIZE,
                localization=LOCALIZATION, nbeta=nbeta_of(n), batch_size=BATCH,
                mala_acceptance=False, progress=False)


def prepare(directory: str, checkpoints: int):
    """Train, write the checkpoints and the training rows to `directory`;
    return (posterior, the stack of checkpoints as numpy arrays, x, y)."""
    import jax
    import numpy as np

    import weightspace as ws
    from weightspace.leaf_names import named_leaves

    ds = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP(HIDDEN, NUM_CLASSES), ds,
                               prior_variance=PRIOR_VARIANCE)
    run = ws.samplers.sgd(post, jax.random.key(0), num_epochs=checkpoints, save_every=1,
                          progress=False, **SGD)
    stack = jax.tree.map(lambda x: np.asarray(x[0]), run.positions)  # (checkpoint, ...)
    np.savez(os.path.join(directory, STACK), **named_leaves(stack))
    np.save(os.path.join(directory, X_TRAIN), np.asarray(ds.x_train))
    np.save(os.path.join(directory, Y_TRAIN), np.asarray(ds.y_train))
    return post, stack, np.asarray(ds.x_train), np.asarray(ds.y_train)


def gradient_floor(post, stack, x, y, chains_per_position: int, positions: int) -> dict:
    """Seconds of a jitted program doing only the chains' forward and backward
    passes: per chain, a scan of STEPS value_and_grad of the batch loss on
    random minibatches of BATCH rows, vmapped over positions x chains. Compile
    (first call) excluded; the median of 3 calls."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    x, y = jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    chains = positions * chains_per_position
    rng = np.random.default_rng(0)
    idx = jnp.asarray(np.stack([[rng.choice(n, BATCH, replace=False) for _ in range(STEPS)]
                                for _ in range(chains)]).astype(np.int32))
    start = jax.tree.map(lambda w: jnp.repeat(jnp.asarray(w[:positions]),
                                              chains_per_position, axis=0), stack)

    def chain(w, rows):
        def body(w, i):
            value, grad = jax.value_and_grad(post.loss)(w, (x[i], y[i]))
            return jax.tree.map(lambda a, g: a - 1e-9 * g, w, grad), value
        return jax.lax.scan(body, w, rows)

    run = jax.jit(jax.vmap(chain))
    jax.block_until_ready(run(start, idx))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(run(start, idx))
        times.append(time.perf_counter() - t0)
    return {"chains": chains, "seconds": statistics.median(times)}


# ------------------------------------------------------- devinterp (its own venv)

def devinterp_child(job: dict) -> dict:
    """In the devinterp venv. job["task"]: "time" (the loop over every
    checkpoint at each threading in job["threads"]) or "profile" (timers, at
    the first and last checkpoint)."""
    import warnings
    from importlib.metadata import version

    import numpy as np
    import torch
    from torch import nn

    # Deprecation, "more draws than burn-in", "nbeta passed" and seed notices.
    warnings.simplefilter("ignore")
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import cycle, evaluate_ce

    directory = job["dir"]
    saved = np.load(os.path.join(directory, STACK))
    x = torch.from_numpy(np.load(os.path.join(directory, X_TRAIN)))
    y = torch.from_numpy(np.load(os.path.join(directory, Y_TRAIN)).astype(np.int64))
    num_checkpoints = saved["layers.0.kernel"].shape[0]
    which = (list(range(num_checkpoints)) if job["task"] == "time"
             else sorted({0, num_checkpoints - 1}))

    def model_at(k):
        layers = []
        for i in range(len(HIDDEN) + 1):
            kernel, bias = saved[f"layers.{i}.kernel"][k], saved[f"layers.{i}.bias"][k]
            linear = nn.Linear(*kernel.shape)
            with torch.no_grad():  # flax kernels are (in, out); torch weights (out, in)
                linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
                linear.bias.copy_(torch.from_numpy(bias))
            layers += [linear, nn.ReLU()]
        return nn.Sequential(nn.Flatten(), *layers[:-1])

    models = [model_at(k) for k in which]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=BATCH, shuffle=True, drop_last=True)
    nbeta = nbeta_of(len(x))

    def estimate(model, sampling_method=SGLD):
        with torch.no_grad():
            full_loss = nn.functional.cross_entropy(model(x), y).item()
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate_ce, sampling_method=sampling_method,
            optimizer_kwargs={"lr": STEP_SIZE, "localization": LOCALIZATION, "nbeta": nbeta},
            num_draws=DRAWS, num_chains=CHAINS, num_burnin_steps=BURNIN,
            num_steps_bw_draws=1, init_loss=full_loss, cores=1, seed=SEED, device="cpu",
            verbose=False)
        return {"full_loss": full_loss,
                "per_chain": [float(out[f"llc-chain/{i}"]) for i in range(CHAINS)]}

    def warm_up(threads):
        # torch's lazy set-up, and a fresh thread pool, are not timed.
        torch.set_num_threads(threads)
        evaluate_ce(models[0], next(iter(loader)))[0].backward()
        models[0].zero_grad()

    info = {"devinterp": version("devinterp"), "torch": torch.__version__,
            "cores": os.cpu_count(), "nbeta": nbeta}
    if job["task"] == "time":
        calls = {}
        for threads in job["threads"]:
            warm_up(threads)
            seconds, estimates = [], []
            t0 = time.perf_counter()
            for model in models:
                t1 = time.perf_counter()
                estimates.append(estimate(model))
                seconds.append(time.perf_counter() - t1)
            total = time.perf_counter() - t0
            calls[str(threads)] = {"seconds": total, "per_checkpoint_seconds": seconds,
                                   "estimates": estimates}
            print(f"devinterp, {threads} torch thread(s): {total:.1f} s for "
                  f"{len(models)} checkpoints", file=sys.stderr)
        return info | {"calls": calls}

    # task == "profile"
    clock = {"fwd_start": 0.0, "fwd_end": 0.0, "step_end": None}
    sums = dict.fromkeys(("forward", "loss_backward", "step", "between"), 0.0)
    counts = {"steps": 0}

    def pre_hook(module, args):
        if not torch.is_grad_enabled():  # the full-data loss, not a sampler step
            return
        now = time.perf_counter()
        if clock["step_end"] is not None:
            sums["between"] += now - clock["step_end"]
        clock["fwd_start"] = now

    def post_hook(module, args, output):
        if not torch.is_grad_enabled():
            return
        clock["fwd_end"] = time.perf_counter()
        sums["forward"] += clock["fwd_end"] - clock["fwd_start"]

    class TimedSGLD(SGLD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clock["step_end"] = None  # a new chain: its first batch is set-up

        def step(self, *args, **kwargs):
            t0 = time.perf_counter()
            sums["loss_backward"] += t0 - clock["fwd_end"]
            out = super().step(*args, **kwargs)
            clock["step_end"] = time.perf_counter()
            sums["step"] += clock["step_end"] - t0
            counts["steps"] += 1
            return out

    for model in models:  # deepcopy (one per chain) keeps the hooks
        model.register_forward_pre_hook(pre_hook)
        model.register_forward_hook(post_hook)
    profiles = {}
    for threads in job["threads"]:
        warm_up(threads)
        for key in sums:
            sums[key] = 0.0
        counts["steps"] = 0
        per_checkpoint = []
        for model in models:
            t0 = time.perf_counter()
            estimate(model, TimedSGLD)
            per_checkpoint.append(time.perf_counter() - t0)
        # A DataLoader batch alone, as devinterp draws them.
        batches = cycle(loader)
        next(batches)
        t0 = time.perf_counter()
        for _ in range(STEPS):
            next(batches)
        batch_s = (time.perf_counter() - t0) / STEPS
        profiles[str(threads)] = {"checkpoints": which, "seconds": sum(per_checkpoint),
                                  "per_checkpoint_seconds": per_checkpoint,
                                  "steps": counts["steps"], "sums": dict(sums),
                                  "dataloader_batch_s": batch_s}
        print(f"devinterp profile, {threads} torch thread(s): {sum(per_checkpoint):.1f} s "
              f"for checkpoints {which}", file=sys.stderr)
    return info | {"profiles": profiles}


def run_devinterp(python: str, job: dict) -> dict:
    out = subprocess.run([python, __file__, "--devinterp-child", json.dumps(job)],
                         stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        sys.exit("devinterp child failed (its error is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report

def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _summary(values, digits=2):
    return (f"{statistics.median(values):.{digits}f} "
            f"({', '.join(f'{v:.{digits}f}' for v in values)})")


def _se(per_chain) -> tuple[float, float]:
    """Mean and standard error (std ddof 1 / sqrt(chains)) over the finite chains."""
    finite = [v for v in per_chain if math.isfinite(v)]
    if len(finite) < 2:
        return (finite[0] if finite else math.nan), math.nan
    mean, _, se = pooled(finite)
    return mean, se


def estimates_report(ours, theirs) -> str:
    """ours: LLCEstimate per checkpoint; theirs: devinterp's per checkpoint."""
    lines = [f"| checkpoint (epoch) | ours: mean ± se | devinterp: mean ± se | "
             f"difference / combined se | within 2 se | our flags |", "|---|---|---|---|---|---|"]
    agree, z_all = 0, []
    for k, (o, d) in enumerate(zip(ours, theirs)):
        om, ose = _se(o.per_chain.tolist())
        dm, dse = _se(d["per_chain"])
        z = (om - dm) / math.hypot(ose, dse)
        ok = abs(z) <= 2
        agree += ok
        z_all.append(z)
        lines.append(f"| {k + 1} | {om:.2f} ± {ose:.2f} | {dm:.2f} ± {dse:.2f} | {z:+.2f} | "
                     f"{'yes' if ok else 'NO'} | {'; '.join(o.flags) or '-'} |")
    loss_gap = max(abs(o.init_loss - d["full_loss"]) for o, d in zip(ours, theirs))
    return ("\n".join(lines)
            + f"\n\n{agree} of {len(ours)} checkpoints agree within 2 combined standard "
            f"errors (|z| median {statistics.median(abs(z) for z in z_all):.2f}; 2 se is a "
            f"~95% band for each, so about 1 in 20 may fall outside by chance; with 4 chains "
            f"a standard error is itself uncertain). L_n at the checkpoints, ours against "
            f"devinterp's (float32): largest difference {loss_gap:.2e}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="default 3, --quick 1")
    parser.add_argument("--quick", action="store_true",
                        help=f"{CHECKPOINTS['quick']} checkpoints, 1 round")
    parser.add_argument("--devinterp-python", default=DEVINTERP_PYTHON,
                        help="python of the venv holding devinterp 1.3.2")
    parser.add_argument("--devinterp-child", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.devinterp_child:
        print(json.dumps(devinterp_child(json.loads(args.devinterp_child))))
        return

    import jax
    import numpy as np

    import weightspace as ws
    from logdensity import machine

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    num_checkpoints = CHECKPOINTS["quick" if args.quick else "full"]
    rounds = args.rounds or (1 if args.quick else 3)
    with_devinterp = os.path.exists(args.devinterp_python)
    if not with_devinterp:
        print(f"no devinterp interpreter at {args.devinterp_python} (install recipe: "
              f"benchmarks/llc.py's docstring): running our side only", file=sys.stderr)
    cores = os.cpu_count()
    threadings = [cores, 1] if cores > 1 else [1]

    with tempfile.TemporaryDirectory() as directory:
        post, stack, x_train, y_train = prepare(directory, num_checkpoints)
        settings = ours_settings(post.num_data)
        key = jax.random.key(SEED)

        def loop():
            return [ws.slt.llc(post, jax.tree.map(lambda x, k=k: x[k], stack), key, **settings)
                    for k in range(num_checkpoints)]

        def stacked():
            return ws.slt.llc(post, stack, key, stacked=True, **settings)

        ours_fns = {"loop": loop, "stacked": stacked}
        first = {name: _timed(fn) for name, fn in ours_fns.items()}  # compile both
        np.testing.assert_allclose([e.mean for e in first["stacked"][1]],
                                   [e.mean for e in first["loop"][1]], rtol=1e-3, atol=1e-3)
        times = {"loop": [], "stacked": []}
        dev_rounds, loads = [], []
        for r in range(rounds):
            loads.append(os.getloadavg()[0])
            sides = ["ours", "devinterp"] if with_devinterp else ["ours"]
            if r % 2:
                sides.reverse()
            for side in sides:
                if side == "devinterp":
                    dev_rounds.append(run_devinterp(args.devinterp_python, {
                        "task": "time", "dir": directory,
                        "threads": threadings if r % 2 == 0 else threadings[::-1]}))
                    continue
                for name in (("loop", "stacked") if r % 2 == 0 else ("stacked", "loop")):
                    seconds, _ = _timed(ours_fns[name])
                    times[name].append(seconds)
                    print(f"ours, {name}: {seconds:.1f} s", file=sys.stderr)
        # Where our time goes: the forward and backward passes alone.
        floors = {"loop": gradient_floor(post, stack, x_train, y_train, CHAINS, 1),
                  "stacked": gradient_floor(post, stack, x_train, y_train, CHAINS,
                                            num_checkpoints)}
        profile = (run_devinterp(args.devinterp_python, {"task": "profile", "dir": directory,
                                                         "threads": threadings})
                   if with_devinterp else None)

    # ---- report
    chain_steps = num_checkpoints * CHAINS * STEPS
    ours_med = {name: statistics.median(times[name]) for name in times}
    print(f"\n{machine()}; {jax.device_count()} JAX device ({jax.devices()[0].platform}); "
          f"load average {load_before:.1f} at the start, "
          f"{', '.join(f'{v:.1f}' for v in loads)} at the start of each round, "
          f"{os.getloadavg()[0]:.1f} at the end")
    if with_devinterp:
        d0 = dev_rounds[0]
        print(f"devinterp {d0['devinterp']}, torch {d0['torch']} (CPU), cores=1, "
              f"torch threads {' and '.join(map(str, threadings))}")
    print(f"{num_checkpoints} checkpoints x {CHAINS} chains x {STEPS} SGLD steps "
          f"({BURNIN} burn-in, {DRAWS} draws), batch {BATCH}, step size {STEP_SIZE:g}, "
          f"localization {LOCALIZATION:g}, nbeta = n / log n = {settings['nbeta']:.2f}; "
          f"{rounds} round(s){' (--quick)' if args.quick else ''}\n")

    lines = ["| what | first call s (compiles) | s, median (rounds) | ms per chain-step |",
             "|---|---|---|---|"]
    for name, label in (("loop", f"ours: loop of {num_checkpoints} `ws.slt.llc` calls"),
                        ("stacked", "ours: one stacked call (`stacked=True`)")):
        lines.append(f"| {label} | {first[name][0]:.2f} | {_summary(times[name])} | "
                     f"{1e3 * ours_med[name] / chain_steps:.3f} |")
    dev_times = {}
    if with_devinterp:
        for t in threadings:
            dev_times[t] = [d["calls"][str(t)]["seconds"] for d in dev_rounds]
            lines.append(f"| devinterp: loop of {num_checkpoints} calls, {t} torch "
                         f"thread{'s' if t > 1 else ''} | - | {_summary(dev_times[t])} | "
                         f"{1e3 * statistics.median(dev_times[t]) / chain_steps:.3f} |")
        dev_times["best"] = [min(d["calls"][str(t)]["seconds"] for t in threadings)
                             for d in dev_rounds]
    print("\n".join(lines))
    ratios = [lo / st for lo, st in zip(times["loop"], times["stacked"])]
    print(f"Ours, loop / stacked per round: {', '.join(f'{v:.2f}' for v in ratios)} "
          f"(median {statistics.median(ratios):.2f}x)")

    if with_devinterp:
        print("\nRatios, devinterp / ours (> 1: ours faster), per round; median; and "
              "against our first call (compile included):")
        rows = ["| devinterp | ours | per round | median | against our first call |",
                "|---|---|---|---|---|"]
        for t in [*threadings, "best"]:
            what = "best of its threadings" if t == "best" else f"{t} torch thread(s)"
            for name in ("stacked", "loop"):
                ratios = [a / b for a, b in zip(dev_times[t], times[name])]
                vs_first = statistics.median(dev_times[t]) / first[name][0]
                rows.append(f"| {what} | {name} | {', '.join(f'{v:.2f}' for v in ratios)} | "
                            f"{statistics.median(ratios):.2f}x | {vs_first:.2f}x |")
        print("\n".join(rows))
        best = {name: statistics.median([a / b for a, b in zip(dev_times["best"], times[name])])
                for name in times}
        print(f"Target (at least {TIME_TARGET}x faster than devinterp's best): ours stacked "
              f"{best['stacked']:.2f}x ({'met' if best['stacked'] >= TIME_TARGET else 'not met'}), "
              f"ours loop {best['loop']:.2f}x "
              f"({'met' if best['loop'] >= TIME_TARGET else 'not met'}).")

    print("\nEstimates (our stacked call; devinterp's loop on "
          f"{threadings[0]} torch thread(s), first round):" if with_devinterp
          else "\nEstimates (our stacked call):")
    ours_estimates = first["stacked"][1]
    if with_devinterp:
        print(estimates_report(ours_estimates,
                               dev_rounds[0]["calls"][str(threadings[0])]["estimates"]))
    else:
        print(", ".join(f"{_se(e.per_chain.tolist())[0]:.2f} ± {_se(e.per_chain.tolist())[1]:.2f}"
                        for e in ours_estimates))

    print("\nWhere our time goes:")
    for name in ("loop", "stacked"):
        once = first[name][0] - ours_med[name]
        floor = floors[name]["seconds"] * (num_checkpoints if name == "loop" else 1)
        print(f"- {name}: first call {first[name][0]:.2f} s = {once:.2f} s one-time (tracing, "
              f"compilation) + a compiled call of {ours_med[name]:.2f} s; of that, the forward "
              f"and backward passes alone take {floor:.2f} s "
              f"({100 * floor / ours_med[name]:.0f}%: a jitted scan of {STEPS} value_and_grad "
              f"steps vmapped over {floors[name]['chains']} chains"
              f"{f', x {num_checkpoints} calls' if name == 'loop' else ''}), the rest "
              f"{ours_med[name] - floor:.2f} s is the sampler's own work (noise, localization, "
              f"batch permutation, loss bookkeeping)"
              f"{' and the per-call host work' if name == 'loop' else ''}.")
    if with_devinterp:
        print("\nWhere devinterp's time goes (timed calls at checkpoints "
              f"{[k + 1 for k in profile['profiles'][str(threadings[0])]['checkpoints']]}, "
              "ms per chain-step):")
        rows = ["| torch threads | forward | cross-entropy + backward | SGLD step | between "
                "steps (batch, callbacks, zero_grad, loop) | per-call and per-chain set-up | "
                "total | untimed calls, same checkpoints (rounds' median) | a DataLoader "
                "batch alone |", "|---|---|---|---|---|---|---|---|---|"]
        for t in threadings:
            p = profile["profiles"][str(t)]
            steps = p["steps"]
            s = p["sums"]
            rest = p["seconds"] - sum(s.values())
            untimed = statistics.median(
                sum(d["calls"][str(t)]["per_checkpoint_seconds"][k] for k in p["checkpoints"])
                for d in dev_rounds)
            ms = lambda v: f"{1e3 * v / steps:.3f} ({100 * v / p['seconds']:.0f}%)"
            rows.append(f"| {t} | {ms(s['forward'])} | {ms(s['loss_backward'])} | "
                        f"{ms(s['step'])} | {ms(s['between'])} | {ms(rest)} | "
                        f"{1e3 * p['seconds'] / steps:.3f} | {1e3 * untimed / steps:.3f} | "
                        f"{1e3 * p['dataloader_batch_s']:.3f} |")
        print("\n".join(rows))
    print(f"\n{platform.python_implementation()} {platform.python_version()}; whole script: "
          f"{(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
