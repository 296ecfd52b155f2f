"""Wall time of one local learning coefficient estimate: `ws.slt.llc` against
devinterp 1.3.2 (PyTorch), with both estimates side by side.

The problem: the MLP(256, 256) on the digits training rows (n = 1,437), w* from
`ws.samplers.sgd`; 4 chains of 600 SGLD steps (100 burn-in, 500 draws),
minibatches of 128 rows, step size 1e-4, localization 100, nbeta = n / log n,
the loss the mean cross-entropy over the batch. A child process in this venv
trains w* and writes it and the training rows as .npy files to a temporary
directory; our side and devinterp's read the same files, each in processes of
its own (ours: one CPU device, XLA's threads on every core; devinterp: torch
threads = cores, its chains one after another, its default on CPU). Each round
times, for ours, a first call (tracing and compilation included) and a second
call in the same process, which reuses what the first compiled (kept in memory
by `llc`, or loaded from the persistent compilation cache this script turns
on), with mala_acceptance False and True in separate processes; for
devinterp, one call without and one with its `MalaAcceptanceRate` callback,
then one without on a single torch thread (a check: torch's thread pool is
slowed many-fold by other processes on the cores of this shared machine).
Timed: the estimate call alone (imports, loading the files and building the
model excluded). Rounds alternate which library goes first; ratios pair the
two libraries within a round. Prints a table; with --write, also records it in
benchmarks/RESULTS.md.

devinterp lives in a virtual environment of its own, never in .venv; install
torch first, as the CPU wheel this machine keeps on disk, so that devinterp's
`torch>=2.0.1` does not pull a CUDA build:

    python3.11 -m venv /tmp/venv-devinterp
    /tmp/venv-devinterp/bin/pip install torch==2.13.0
    /tmp/venv-devinterp/bin/pip install devinterp==1.3.2

    python benchmarks/llc.py [--quick] [--repeats 3] [--write]
        [--devinterp-python /tmp/venv-devinterp/bin/python]

How devinterp 1.3.2 is parametrized (site-packages/devinterp/), and so how
its arguments are set here:
- optim/sgld.py, `SGLD.step` (lines 204, 216, 233-253): dw = nbeta * grad
  L_batch + localization (w - w0); w <- w - lr/2 dw + sqrt(lr) N(0, 1). That is
  our w <- w + eps/2 grad log p + N(0, eps) with log p = -nbeta L_batch -
  localization/2 |w - w*|^2: lr = eps, the same localization, the same nbeta
  (optim/sgmcmc.py, `SGMCMC.sgld`, lines 355 and 392-395, is the same update).
- utils.py, `default_nbeta` (lines 82-106): devinterp's default nbeta is
  batch_size / log(batch_size), from the batch size, not n; here nbeta =
  n / log n is passed explicitly on both sides.
- slt/sampler.py, `estimate_learning_coeff_with_summary` (lines 136-143):
  init_loss defaults to the mean loss of num_chains batches
  (`get_init_loss_multi_batch`); here the full-data loss at w* is passed, as
  ours computes it.
- backends/default/slt/sampler.py, `sample_single_chain` (lines 105-134): the
  loss at draw i is the batch loss at the position step i starts from, batches
  cycle through the DataLoader (shuffled each pass; drop_last=True here, so an
  epoch is 11 batches of 128 and 29 rows sit out, as in ours); chains run one
  after another when cores=1 (lines 347-369).
- slt/llc.py, `LLCEstimator.finalize` (lines 97-109): per chain nbeta (mean
  draw loss - init_loss); mean and std (ddof 1) over chains, as ours.
- slt/mala.py, `MalaAcceptanceRate.update` (lines 123-148): the acceptance of
  the step w_{i-1} -> w_i uses the loss of batch i-1 at w_{i-1} and of batch i
  at w_i (ours evaluates both on one batch, at one more gradient per step), and
  slot 0 of its trace is never filled (reported below without it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from logdensity import machine, one_device_child, write_results

DEVINTERP_PYTHON = "/tmp/venv-devinterp/bin/python"
TIME_TARGET = 10  # devinterp time / our time, the target
HIDDEN = (256, 256)
NUM_CLASSES = 10
BATCH = 128
STEP_SIZE = 1e-4
LOCALIZATION = 100.0
CHAINS = 4
# w* only: the LLC's loss is the NLL alone. A weak prior (weight decay 1 / (10 n)
# per row) leaves w* close to a minimum of the training loss.
PRIOR_VARIANCE = 10.0
SGD = {"batch_size": 64, "learning_rate": 0.1}
SETTINGS = {"full": {"draws": 500, "burnin": 100, "sgd_epochs": 60},
            "quick": {"draws": 40, "burnin": 10, "sgd_epochs": 5}}
JOB_ENV = "WS_BENCH_LLC_JOB"
# The files the parent's temporary directory holds for both sides.
W_STAR, X_TRAIN, Y_TRAIN = "w_star.npz", "x_train.npy", "y_train.npy"


def nbeta_of(n: int) -> float:
    return n / math.log(n)


# ------------------------------------------------------------------ ours (.venv)

def prepare(directory: str, settings: dict) -> dict:
    """Train w* by SGD and write it and the training rows to `directory`."""
    import jax
    import numpy as np

    import weightspace as ws
    from weightspace.leaf_names import named_leaves

    data = ws.data.load("digits")
    post = ws.models.posterior(ws.models.MLP(HIDDEN, NUM_CLASSES), data,
                               prior_variance=PRIOR_VARIANCE)
    fit = ws.samplers.sgd(post, jax.random.key(0), num_epochs=settings["sgd_epochs"],
                          progress=False, **SGD)
    w_star = jax.tree.map(lambda w: w[0, 0], fit.positions)
    np.savez(os.path.join(directory, W_STAR),
             **{name: np.asarray(w) for name, w in named_leaves(w_star).items()})
    np.save(os.path.join(directory, X_TRAIN), np.asarray(data.x_train))
    np.save(os.path.join(directory, Y_TRAIN), np.asarray(data.y_train))

    def accuracy(x, y):
        return float(np.mean(np.argmax(post.predict(w_star, x), -1) == y))

    return {"num_data": post.num_data, "num_weights": post.num_params(w_star),
            "loss": float(post.loss(w_star)),
            "train_accuracy": accuracy(data.x_train, data.y_train),
            "test_accuracy": accuracy(data.x_test, data.y_test),
            "input_size": int(np.prod(data.x_train.shape[1:]))}


def measure_ours(directory: str, seed: int, mala: bool, settings: dict,
                 cache_dir: str) -> dict:
    """A first and a second `ws.slt.llc` call on the files in `directory`."""
    import jax
    import numpy as np

    import weightspace as ws
    from weightspace.leaf_names import named_leaves

    # Fresh per process, so the first call compiles; should `llc` build new
    # closures per call, the second call loads them from here instead.
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    x, y = (np.load(os.path.join(directory, f)) for f in (X_TRAIN, Y_TRAIN))
    # No test rows: the estimate only reads the training rows.
    data = ws.data.Dataset("digits_train_rows", x, y, x[:0], y[:0], NUM_CLASSES)
    post = ws.models.posterior(ws.models.MLP(HIDDEN, NUM_CLASSES), data,
                               prior_variance=PRIOR_VARIANCE)
    saved = np.load(os.path.join(directory, W_STAR))
    template = post.init(jax.random.key(0))
    w_star = jax.tree.unflatten(jax.tree.structure(template),
                                [jax.numpy.asarray(saved[name])
                                 for name in named_leaves(template)])
    jax.block_until_ready((post, w_star))
    calls = []
    for _ in ("first", "second"):
        t0 = time.perf_counter()
        est = ws.slt.llc(post, w_star, jax.random.key(seed), num_chains=CHAINS,
                         num_draws=settings["draws"], num_burnin=settings["burnin"],
                         step_size=STEP_SIZE, localization=LOCALIZATION,
                         nbeta=nbeta_of(post.num_data), batch_size=BATCH, sampler="sgld",
                         mala_acceptance=mala, progress=False)
        seconds = time.perf_counter() - t0
        calls.append({"seconds": seconds, "per_chain": est.per_chain.tolist(),
                      "mean": est.mean, "std": est.std, "init_loss": est.init_loss,
                      "nbeta": est.nbeta, "flags": est.flags,
                      "acceptance": (None if est.mala_acceptance is None
                                     else est.mala_acceptance.tolist())})
        print(f"ours, seed {seed}, mala_acceptance={mala}: {seconds:.1f} s, {est}",
              file=sys.stderr)
    return {"jax": jax.__version__, "calls": calls}


def ours_child(job: dict, quick: bool) -> dict:
    # The shared runner passes only --child/--quick; the job goes in the
    # environment, which it hands on to the child.
    os.environ[JOB_ENV] = json.dumps(job)
    try:
        return one_device_child(__file__, quick)
    finally:
        del os.environ[JOB_ENV]


def child(settings: dict) -> dict:
    job = json.loads(os.environ[JOB_ENV])
    if job["task"] == "prepare":
        return prepare(job["dir"], settings)
    with tempfile.TemporaryDirectory() as cache_dir:
        return measure_ours(job["dir"], job["seed"], job["mala"], settings, cache_dir)


# ------------------------------------------------------- devinterp (its own venv)

def measure_devinterp(directory: str, seed: int, settings: dict) -> dict:
    """One devinterp estimate without and one with its MALA callback."""
    import warnings
    from importlib.metadata import version

    import numpy as np
    import torch
    from torch import nn

    # Deprecation and "nbeta passed" notices, once per chain.
    warnings.simplefilter("ignore")
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.mala import MalaAcceptanceRate
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import evaluate_ce, get_init_loss_multi_batch

    torch.set_num_threads(os.cpu_count())
    saved = np.load(os.path.join(directory, W_STAR))
    x = torch.from_numpy(np.load(os.path.join(directory, X_TRAIN)))
    y = torch.from_numpy(np.load(os.path.join(directory, Y_TRAIN)).astype(np.int64))
    layers = []
    for i in range(len(HIDDEN) + 1):
        kernel, bias = saved[f"layers.{i}.kernel"], saved[f"layers.{i}.bias"]
        linear = nn.Linear(*kernel.shape)
        with torch.no_grad():  # flax kernels are (in, out); torch weights (out, in)
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(nn.Flatten(), *layers[:-1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=BATCH, shuffle=True, drop_last=True)
    n = len(x)
    nbeta = nbeta_of(n)
    with torch.no_grad():
        full_loss = nn.functional.cross_entropy(model(x), y).item()
    default_init_loss = get_init_loss_multi_batch(loader, CHAINS, model, evaluate_ce, "cpu")
    # One forward and backward pass first, so that torch's lazy set-up is not timed.
    evaluate_ce(model, next(iter(loader)))[0].backward()
    model.zero_grad()

    # The setting, torch threads = cores, with and without the MALA
    # callback; then one torch thread, because on this shared machine torch's
    # thread pool slows down many-fold when other processes hold the cores
    # (200 steps took 4 ms each with 1 thread, 70-130 ms with 2, under a load
    # average of 5 during development).
    cores = os.cpu_count()
    calls = {}
    for name, threads, mala in (("plain", cores, False), ("mala", cores, True),
                                ("plain_1_thread", 1, False)):
        torch.set_num_threads(threads)
        callbacks = ([MalaAcceptanceRate(CHAINS, settings["draws"], learning_rate=STEP_SIZE,
                                         nbeta=nbeta)] if mala else [])
        t0 = time.perf_counter()
        out = estimate_learning_coeff_with_summary(
            model, loader, callbacks=callbacks, evaluate=evaluate_ce, sampling_method=SGLD,
            optimizer_kwargs={"lr": STEP_SIZE, "localization": LOCALIZATION, "nbeta": nbeta},
            num_draws=settings["draws"], num_chains=CHAINS,
            num_burnin_steps=settings["burnin"], num_steps_bw_draws=1, init_loss=full_loss,
            cores=1, seed=seed, device="cpu", verbose=False)
        seconds = time.perf_counter() - t0
        call = {"seconds": seconds, "threads": threads,
                "per_chain": [out[f"llc-chain/{i}"] for i in range(CHAINS)],
                "mean": out["llc/mean"], "std": out["llc/std"]}
        if mala:
            trace = np.asarray(out["mala_accept/trace"])
            call["acceptance"] = trace[:, 1:].mean(axis=1).tolist()
            call["acceptance_reported"] = float(out["mala_accept/mean"])
        calls[name] = call
        print(f"devinterp, seed {seed}, {name}: {seconds:.1f} s, mean {call['mean']:.3f}",
              file=sys.stderr)
    return {"devinterp": version("devinterp"), "torch": torch.__version__,
            "threads": cores, "full_loss": full_loss,
            "default_init_loss": default_init_loss, "nbeta": nbeta, "calls": calls}


def devinterp_child(python: str, directory: str, seed: int, quick: bool) -> dict:
    args = [python, __file__, "--devinterp-child", directory, "--seed", str(seed)]
    out = subprocess.run(args + (["--quick"] if quick else []), stdout=subprocess.PIPE,
                         text=True, check=False)
    if out.returncode != 0:
        sys.exit("devinterp child failed (its error is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report

def _summary(values, digits=1):
    return (f"{statistics.median(values):.{digits}f} "
            f"({', '.join(f'{v:.{digits}f}' for v in values)})")


def _range(values, digits=1):
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


# (our job, devinterp's call, what the row compares)
PAIRS = (("plain", "plain", ("without acceptance: ours `mala_acceptance=False`; "
                             "devinterp no callback, torch threads = cores")),
         ("mala", "mala", ("with MALA acceptance: ours `mala_acceptance=True`; devinterp "
                           "`MalaAcceptanceRate` callback, torch threads = cores")),
         ("plain", "plain_1_thread", ("without acceptance, devinterp on 1 torch thread "
                                      "(not the issue's setting: a check on thread "
                                      "contention)")))
OUR_CALLS = ("first (compiles)", "second (compiled)")


def _ratios(rounds, ours_job, theirs_call, k):
    return [r["devinterp"]["calls"][theirs_call]["seconds"]
            / r["ours"][ours_job]["calls"][k]["seconds"] for r in rounds]


def timing_table(rounds: list[dict]) -> str:
    lines = [("| estimate | our call | ours s, median (each round) | devinterp s, median "
              "(each round) | devinterp / ours, median of paired ratios (min-max) |"),
             "|---|---|---|---|---|"]
    for ours_job, theirs_call, what in PAIRS:
        theirs = [r["devinterp"]["calls"][theirs_call]["seconds"] for r in rounds]
        for k, call in enumerate(OUR_CALLS):
            ours = [r["ours"][ours_job]["calls"][k]["seconds"] for r in rounds]
            lines.append(f"| {what} | {call} | {_summary(ours)} | {_summary(theirs)} | "
                         f"{_range(_ratios(rounds, ours_job, theirs_call, k))}x |")
    return "\n".join(lines)


def pooled(per_chain: list[float]) -> tuple[float, float, float]:
    """Mean, std (ddof 1) and standard error of the mean over chains."""
    mean, std = statistics.fmean(per_chain), statistics.stdev(per_chain)
    return mean, std, std / math.sqrt(len(per_chain))


def estimate_table(rounds: list[dict]) -> tuple[str, dict]:
    """Estimates from our first call without acceptance and devinterp's call
    without callbacks (same seed, so the other calls repeat these chains)."""
    lines = ["| | ours (`ws.slt.llc`) | devinterp |", "|---|---|---|"]
    for r in rounds:
        o, d = r["ours"]["plain"]["calls"][0], r["devinterp"]["calls"]["plain"]
        lines.append(f"| LLC, seed {r['seed']}: mean ± std over {CHAINS} chains | "
                     f"{o['mean']:.2f} ± {o['std']:.2f} | {d['mean']:.2f} ± {d['std']:.2f} |")
    ours_all = [v for r in rounds for v in r["ours"]["plain"]["calls"][0]["per_chain"]]
    theirs_all = [v for r in rounds for v in r["devinterp"]["calls"]["plain"]["per_chain"]]
    om, osd, ose = pooled(ours_all)
    dm, dsd, dse = pooled(theirs_all)
    lines.append(f"| LLC, all {len(ours_all)} chains: mean ± std (standard error) | "
                 f"{om:.2f} ± {osd:.2f} ({ose:.2f}) | {dm:.2f} ± {dsd:.2f} ({dse:.2f}) |")
    first = rounds[0]
    ours_first = first["ours"]["plain"]["calls"][0]
    lines.append(f"| L_n(w*), full-data mean cross-entropy, float32 | "
                 f"{ours_first['init_loss']:.7f} | {first['devinterp']['full_loss']:.7f} |")
    lines.append(f"| nbeta | {ours_first['nbeta']:.3f} | {first['devinterp']['nbeta']:.3f} |")
    ours_acc = [v for r in rounds for v in r["ours"]["mala"]["calls"][0]["acceptance"]]
    theirs_acc = [v for r in rounds for v in r["devinterp"]["calls"]["mala"]["acceptance"]]
    reported = [r["devinterp"]["calls"]["mala"]["acceptance_reported"] for r in rounds]
    lines.append(f"| mean MALA acceptance of the SGLD steps, over chains and rounds | "
                 f"{statistics.fmean(ours_acc):.3f} (both ends of a step on its batch) | "
                 f"{statistics.fmean(theirs_acc):.3f} (consecutive batches; "
                 f"`mala_accept/mean`, which counts its never-filled slot 0 as 0: "
                 f"{statistics.fmean(reported):.3f}) |")
    return "\n".join(lines), {"ours": (om, ose), "devinterp": (dm, dse),
                              "z": (om - dm) / math.hypot(ose, dse),
                              "chains": len(ours_all)}


def reading(rounds: list[dict], prep: dict, pooled_: dict, settings: dict) -> str:
    met = {True: "met", False: "not met"}

    def verdict(ours_job, theirs_call):
        first, second = (statistics.median(_ratios(rounds, ours_job, theirs_call, k))
                         for k in (0, 1))
        return (f"{first:.1f}x against our first call ({met[first >= TIME_TARGET]}) and "
                f"{second:.1f}x against the second ({met[second >= TIME_TARGET]})")

    steps = CHAINS * (settings["draws"] + settings["burnin"])

    def ms_per_step(seconds):
        return 1e3 * statistics.median(seconds) / steps

    ours_ms = ms_per_step([r["ours"]["plain"]["calls"][1]["seconds"] for r in rounds])
    theirs_ms = {c: ms_per_step([r["devinterp"]["calls"][c]["seconds"] for r in rounds])
                 for c in ("plain", "plain_1_thread")}
    threaded = [r["devinterp"]["calls"]["plain"]["seconds"] for r in rounds]
    # A chain-step is one forward and backward pass of the batch: about 3 x 2 x
    # batch x (multiply-adds per row) floating-point operations.
    widths = (prep["input_size"], *HIDDEN, NUM_CLASSES)
    mflop = 6 * BATCH * sum(a * b for a, b in itertools.pairwise(widths)) / 1e6
    d = rounds[0]["devinterp"]
    shift = d["nbeta"] * (d["full_loss"] - d["default_init_loss"])
    flags = sorted({f for r in rounds for job in ("plain", "mala")
                    for c in r["ours"][job]["calls"] for f in c["flags"]})
    (om, ose), (dm, dse), z = pooled_["ours"], pooled_["devinterp"], pooled_["z"]
    return (
        f"Reading the LLC tables. Time (target: at least {TIME_TARGET}x faster than "
        f"devinterp in the issue's setting, torch threads = cores), medians of the paired "
        f"ratios: without acceptance {verdict('plain', 'plain')}; with MALA acceptance "
        f"{verdict('mala', 'mala')}. Devinterp on {d['threads']} threads took "
        f"{min(threaded):.0f}-{max(threaded):.0f} s for the call without acceptance "
        f"({theirs_ms['plain']:.2f} ms per chain-step, median) and on one thread "
        f"{theirs_ms['plain_1_thread']:.2f} ms per chain-step"
        + (": most of that margin is torch's, not ours: on this shared machine its thread "
           "pool waits for cores that other processes hold. "
           if theirs_ms["plain"] > 2 * theirs_ms["plain_1_thread"] else ". ")
        + f"Against devinterp on one thread the ratio is "
        f"{verdict('plain', 'plain_1_thread')}; our compiled call takes {ours_ms:.2f} ms "
        f"per chain-step. A chain-step is one forward and backward pass of {BATCH} rows "
        f"through MLP{HIDDEN}, about {mflop:.0f} MFLOP: ours runs it at "
        f"{mflop / ours_ms:.0f} GFLOP/s on {os.cpu_count()} cores and devinterp at "
        f"{mflop / theirs_ms['plain_1_thread']:.0f} GFLOP/s on one, so both spend most of "
        f"a step in the same matrix products, and per-step overhead leaves no "
        f"{TIME_TARGET}x to win on this problem. "
        f"Estimates: {om:.2f} ± {ose:.2f} (ours) and {dm:.2f} ± {dse:.2f} (devinterp), "
        f"means over {pooled_['chains']} chains each with their standard errors; they "
        f"differ by {z:+.1f} standard errors. The two are the same Markov chain in law "
        f"(same update, batch scheme, loss, L_n(w*) and nbeta) driven by different random "
        f"numbers, so they can agree only within Monte Carlo error. Our flags: "
        f"{'; '.join(flags) if flags else 'none'}. Left at devinterp's default, init_loss "
        f"would be the mean loss of the first {CHAINS} batches in order "
        f"({d['default_init_loss']:.7f}), moving every devinterp estimate by "
        f"{shift:+.3f}. The two acceptance rates measure different things: devinterp's "
        f"compares the densities of consecutive batches, so the batch-to-batch spread of "
        f"nbeta L_batch enters its ratio, where ours evaluates both ends of a step on the "
        f"step's batch, at the price of one more gradient per step. w*: MLP{HIDDEN}, "
        f"{prep['num_weights']:,} weights, SGD {settings['sgd_epochs']} epochs (batch "
        f"{SGD['batch_size']}, learning rate {SGD['learning_rate']}, momentum 0.9, cosine "
        f"decay), prior variance {PRIOR_VARIANCE:g}; training loss {prep['loss']:.5f}, "
        f"accuracy {prep['train_accuracy']:.3f} train and {prep['test_accuracy']:.3f} test.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short chains, one round")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds (default 3, --quick 1)")
    parser.add_argument("--devinterp-python", default=DEVINTERP_PYTHON,
                        help="python of the venv holding devinterp 1.3.2")
    parser.add_argument("--write", action="store_true",
                        help="record the tables in benchmarks/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devinterp-child", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    if args.child:
        print(json.dumps(child(settings)))
        return
    if args.devinterp_child:
        print(json.dumps(measure_devinterp(args.devinterp_child, args.seed, settings)))
        return
    if not os.path.exists(args.devinterp_python):
        sys.exit(f"no devinterp venv at {args.devinterp_python}: see this script's "
                 f"docstring for how to install it")
    repeats = args.repeats or (1 if args.quick else 3)
    began = time.perf_counter()
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as directory:
        prep = ours_child({"task": "prepare", "dir": directory}, args.quick)
        for seed in range(repeats):
            row = {"seed": seed, "ours": {}, "load": os.getloadavg()[0]}
            # Alternate which library goes first, so that a burst of load on
            # this shared machine does not always fall on the same one.
            for side in (("ours", "devinterp") if seed % 2 == 0 else ("devinterp", "ours")):
                if side == "devinterp":
                    row["devinterp"] = devinterp_child(args.devinterp_python, directory,
                                                       seed, args.quick)
                    continue
                for job, mala in (("plain", False), ("mala", True)):
                    row["ours"][job] = ours_child({"task": "ours", "dir": directory,
                                                   "seed": seed, "mala": mala}, args.quick)
            rounds.append(row)
    load_after = os.getloadavg()
    minutes = (time.perf_counter() - began) / 60
    d = rounds[0]["devinterp"]
    estimates, pooled_ = estimate_table(rounds)
    loads = ", ".join(f"{r['load']:.1f}" for r in rounds)
    text = (f"## Local learning coefficient against devinterp (`benchmarks/llc.py`)\n\n"
            f"Taken {time.strftime('%Y-%m-%d')} on {machine()}; devinterp {d['devinterp']} "
            f"with torch {d['torch']} (CPU) in its own venv, {d['threads']} torch threads, "
            f"chains one after another (cores=1, its default); ours on 1 JAX CPU device. "
            f"MLP{HIDDEN} on the {prep['num_data']:,} digits training rows, w* from "
            f"`ws.samplers.sgd`; {CHAINS} chains x {settings['burnin'] + settings['draws']} "
            f"SGLD steps ({settings['burnin']} burn-in, {settings['draws']} draws), batch "
            f"{BATCH}, step size {STEP_SIZE:g} (devinterp's lr), localization "
            f"{LOCALIZATION:g}, nbeta = n / log n = {d['nbeta']:.2f} on both sides, "
            f"devinterp's init_loss set to L_n(w*) as ours computes it. {repeats} rounds, "
            f"seed = round; each library in processes of its own, reading the same w* and "
            f"rows; timed: the estimate call alone. Our first call traces and compiles; "
            f"the second, in the same process, reuses what the first compiled; devinterp, "
            f"which compiles nothing, is called once per row and round, and the ratio "
            f"divides that call by each of ours. Load average (1 min) "
            f"{load_before[0]:.1f} at the start, {loads} at the start of each round and "
            f"{load_after[0]:.1f} at the end: the machine is shared. Whole script: "
            f"{minutes:.1f} min."
            f"{' (--quick settings)' if args.quick else ''}\n\n"
            f"{timing_table(rounds)}\n\n{estimates}\n\n"
            f"{reading(rounds, prep, pooled_, settings)}")
    print(text)
    if args.write:
        write_results(text, section="llc")


if __name__ == "__main__":
    main()
