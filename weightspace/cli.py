"""The `weightspace` command:

- `compare`: the main job. HMC, SGD, a deep ensemble, SGLD, cyclical SGHMC and
  mean-field VI on one posterior (a preset: `quick`, or Izmailov et al. 2021's
  `paper-*` settings), with R-hat in weight and function space, predictive
  metrics and local learning coefficients, into an output directory
  (ws.experiments.compare).
- `sample`: HMC (default), SGLD, SGHMC or SGD (an ensemble, one member per
  chain) on a dataset and network, into a run directory, then its diagnostics
  and figures. The run directory also gets `command.json`, what rebuilds the
  posterior (dataset, network, prior, temperature, seed, sampler).
- `llc`: local learning coefficients, either at draws of a run made by
  `sample` (`--run RUN_DIR`: the last draw of each chain by default, for an SGD
  run each member's solution) or on a deep linear network whose coefficient is
  known (`--dataset dln --widths ... --rank ...`, optionally calibrating the
  step size first).
- `mixing`: R-hat of the weights (raw and permutation-aligned) and of the
  predictions against chain length for a run (`--run RUN_DIR`), with
  mixing.png and mixing.json (ws.experiments.mixing).
- `llc-vs-generalization`: the LLCs `compare` estimated (SGD solution, ensemble
  members, HMC draws) against their test NLL and generalization gap, with a
  figure and a table (ws.experiments.llc_vs_generalization).
- `datasets`: the dataset names (and one dataset's shapes).
- `info`: library versions and the devices JAX sees.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


class CommandError(Exception):
    """Bad input or an impossible request, reported as `weightspace CMD: error: ...`
    with exit status `code` (2 for bad input, as argparse's own errors)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ argument types

def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _finite_float(*, positive: bool):
    """An argparse type: a finite number > 0 (positive) or >= 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if positive else '>='} 0, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)
_positive_float = _finite_float(positive=True)
_nonnegative_float = _finite_float(positive=False)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 1, got {text!r}")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(_positive_float(t) for t in text.split(",") if t.strip())
    except argparse.ArgumentTypeError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated finite numbers > 0, got {text!r}")
    return values


def _hidden(text: str) -> tuple[int, ...]:
    """MLP hidden widths; "" is no hidden layer."""
    if not text.strip():
        return ()
    return _int_list(text)


# ------------------------------------------------------------------ JSON files

def _jsonable(obj):
    """obj with numpy values as Python ones and NaN/inf as None (JSON has no NaN)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: Path, obj) -> None:
    """Replace `path` atomically (a killed writer leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=1, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ datasets, info

def _datasets(args) -> int:
    from weightspace import data

    print("embedded (no network):", ", ".join(data.EMBEDDED_NAMES))
    print("tensorflow-datasets (array_record in --data-dir):", ", ".join(data.TFDS_NAMES))
    if args.name:
        ds = data.load(args.name, data_dir=args.data_dir)
        print(ds)
    return 0


def _info(args) -> int:
    import importlib.metadata as md

    import jax

    for pkg in ("weightspace", "jax", "jaxlib", "flax", "optax", "blackjax", "numpyro",
                "arviz", "orbax-checkpoint", "tensorflow-datasets"):
        try:
            print(f"{pkg:22s} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg:22s} not installed")
    print(f"{'python':22s} {sys.version.split()[0]}")
    print(f"processes {jax.process_count()}, devices {jax.device_count()}: "
          f"{jax.devices()}")
    return 0


# ------------------------------------------------------------------ the posterior of a run

MODELS = ("mlp", "linear", "lenet5", "resnet20frn", "cnnlstm")
SAMPLERS = ("hmc", "sgld", "sghmc", "sgd")

# command.json: what rebuilds a run's posterior. data_dir says where the data
# are, not which: it may change between a run and its resume.
COMMAND_FORMAT = 1
REBUILD_KEYS = ("dataset", "data_dir", "n_train", "model", "hidden", "prior_variance",
                "temperature", "seed", "sampler")
_REBUILD_FLAGS = {"dataset": "--dataset", "n_train": "--n-train", "model": "--model",
                  "hidden": "--hidden", "prior_variance": "--prior-variance",
                  "temperature": "--temperature", "seed": "--seed", "sampler": "--sampler"}


def _network(model: str, hidden, data):
    from weightspace import models

    outputs = data.num_classes if data.num_classes is not None else data.y_train.shape[1]
    if model == "mlp":
        return models.MLP(tuple(hidden), outputs)
    if model == "linear":
        return models.MLP((), outputs)
    if model == "lenet5":
        return models.LeNet5(outputs)
    if model == "resnet20frn":
        return models.ResNet20FRN(outputs)
    return models.CNNLSTM(vocab_size=data.info.get("vocab_size", 20000), num_outputs=outputs)


def _rebuild(command: dict):
    """(data, network, posterior) of a command.json."""
    from weightspace import data as data_lib
    from weightspace import models

    data = data_lib.load(command["dataset"], seed=command["seed"],
                         data_dir=command["data_dir"], n_train=command["n_train"])
    network = _network(command["model"], command["hidden"] or (), data)
    post = models.posterior(network, data, prior_variance=command["prior_variance"],
                            temperature=command["temperature"])
    return data, network, post


def _command_of(args) -> dict:
    return {"format": COMMAND_FORMAT, "dataset": args.dataset,
            "data_dir": None if args.data_dir is None else os.path.abspath(args.data_dir),
            "n_train": args.n_train, "model": args.model,
            "hidden": list(args.hidden) if args.model == "mlp" else None,
            "prior_variance": args.prior_variance, "temperature": args.temperature,
            "seed": args.seed, "sampler": args.sampler}


def _check_run_dir(out: Path, command: dict) -> bool:
    """Whether command.json is still to be written into the run directory `out`;
    when it is there (a resumed run), check that it holds the same posterior."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a directory")
    stored_path = out / "command.json"
    if stored_path.is_file():
        with open(stored_path) as f:
            stored = json.load(f)
        differ = [k for k in REBUILD_KEYS if k != "data_dir"
                  and stored.get(k) != command[k]]
        if differ:
            parts = "; ".join(f"{k} ({_REBUILD_FLAGS[k]}): stored {stored.get(k)!r}, "
                              f"requested {command[k]!r}" for k in differ)
            raise CommandError(f"--out {out} holds a run of another posterior or sampler "
                               f"(its command.json differs in {', '.join(differ)}): {parts}. "
                               f"Resume with the stored settings, or choose another --out.")
        return False
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise CommandError(f"--out {out} is neither empty nor a run directory")
    # A run directory made in Python (config.json, no command.json) gets one: the
    # sampler's own config check then refuses a different posterior.
    return True


# ------------------------------------------------------------------ sample

# dest -> the samplers that use the flag. These flags default to None, so a flag
# given for a sampler that does not use it is an error rather than ignored.
_SAMPLER_FLAGS = {
    "samples": ("hmc", "sgld", "sghmc"), "warmup": ("hmc", "sgld", "sghmc"),
    "thin": ("hmc", "sgld", "sghmc"), "step_size": ("hmc", "sgld", "sghmc"),
    "warmup_mode": ("hmc",), "trajectory_length": ("hmc",), "max_steps": ("hmc",),
    "target_accept": ("hmc",), "mass_matrix": ("hmc",),
    "batch_size": ("sgld", "sghmc", "sgd"),
    "preconditioner": ("sgld",), "friction": ("sghmc",),
    "cycle_length": ("sgld", "sghmc"), "samples_per_cycle": ("sgld", "sghmc"),
    "epochs": ("sgd",), "learning_rate": ("sgd",), "optimizer": ("sgd",),
    "momentum": ("sgd",), "lr_schedule": ("sgd",),
}
_SAMPLE_DEFAULTS = {
    "samples": 100, "warmup": 50,  # Izmailov et al. 2021: 50 burn-in iterations
    "thin": 1, "warmup_mode": "adapt", "max_steps": 1000, "target_accept": 0.8,
    "mass_matrix": "identity",
    "batch_size": 80,              # Izmailov et al. 2021 (SGD and SGLD baselines)
    "samples_per_cycle": 1, "optimizer": "sgd",
    "momentum": 0.9,               # Izmailov et al. 2021 (SGD baselines)
    "lr_schedule": "cosine",       # Izmailov et al. 2021 (SGD baselines)
}
_CHECKPOINT_EVERY = {"hmc": 10, "sgld": 100, "sghmc": 100, "sgd": 1}
_REQUIRED = {"sgld": ("step_size",), "sghmc": ("step_size",),
             "sgd": ("epochs", "learning_rate")}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _sampler_options(args) -> dict:
    """The sampler flags resolved for args.sampler: dest -> value (defaults filled in)."""
    sampler = args.sampler
    for dest, users in _SAMPLER_FLAGS.items():
        value = getattr(args, dest)
        if value is not None and sampler not in users:
            raise CommandError(f"{_flag(dest)} {value} is not used by --sampler {sampler} "
                               f"(it is for --sampler {' or '.join(users)})")
    missing = [d for d in _REQUIRED.get(sampler, ()) if getattr(args, d) is None]
    if missing:
        raise CommandError(f"--sampler {sampler} needs "
                           f"{' and '.join(_flag(d) for d in missing)}")
    options = {d: getattr(args, d) if getattr(args, d) is not None
               else _SAMPLE_DEFAULTS.get(d) for d in _SAMPLER_FLAGS
               if sampler in _SAMPLER_FLAGS[d]}
    if args.cycle_length is None and args.samples_per_cycle is not None:
        raise CommandError(f"--samples-per-cycle {args.samples_per_cycle} needs "
                           f"--cycle-length (a cyclical step-size schedule)")
    if args.cycle_length is not None and args.thin is not None:
        raise CommandError(f"--thin {args.thin} is not used with --cycle-length: draws are "
                           f"--samples-per-cycle evenly spaced steps of each cycle")
    options["checkpoint_every"] = (args.checkpoint_every if args.checkpoint_every is not None
                                   else _CHECKPOINT_EVERY[sampler])
    return options


def _run_sampler(args, options: dict, post, data):
    import jax

    import weightspace as ws

    key = jax.random.key(args.seed)
    common = {"num_chains": args.chains, "eval_x": None if args.no_eval else data.x_test,
              "run_dir": args.out, "checkpoint_every": options["checkpoint_every"],
              "progress": not args.no_progress}
    if args.sampler == "hmc":
        return ws.samplers.hmc(
            post, key, num_samples=options["samples"], num_warmup=options["warmup"],
            step_size=options["step_size"], trajectory_length=options["trajectory_length"],
            max_num_steps=options["max_steps"], target_accept=options["target_accept"],
            mass_matrix=options["mass_matrix"], warmup=options["warmup_mode"],
            thin=options["thin"], **common)
    if args.sampler == "sgd":
        return ws.samplers.sgd(
            post, key, num_epochs=options["epochs"], batch_size=options["batch_size"],
            learning_rate=options["learning_rate"], optimizer=options["optimizer"],
            momentum=options["momentum"], schedule=options["lr_schedule"], **common)
    schedule, step_size = None, options["step_size"]
    if options["cycle_length"] is not None:
        schedule, step_size = ws.samplers.cyclical(step_size, options["cycle_length"]), None
    sg = {"num_samples": options["samples"], "num_warmup": options["warmup"],
          "batch_size": options["batch_size"], "step_size": step_size, "schedule": schedule,
          "thin": options["thin"], "samples_per_cycle": options["samples_per_cycle"],
          **common}
    if args.sampler == "sgld":
        return ws.samplers.sgld(post, key, preconditioner=options["preconditioner"], **sg)
    friction = options["friction"]
    if friction is None:
        return ws.samplers.sghmc(post, key, **sg)
    return ws.samplers.sghmc(post, key, friction=friction, **sg)


def _summary(trace, data, network, seconds: float, sampler: str = "hmc") -> str:
    import numpy as np

    from weightspace import diagnostics

    enough = trace.num_chains >= 2 and trace.num_draws >= 4
    aligned = diagnostics.align_permutations(trace.positions, network) if enough else None
    summary = diagnostics.summary(trace, aligned_positions=aligned)
    lines = [f"{trace} in {seconds:.1f} s", "", str(summary), ""]
    if sampler == "sgd":
        # summary() already notes the missing R-hat; say why it is missing here.
        lines.append(f"SGD: each of the {trace.num_chains} chains is one ensemble member "
                     f"and its one draw the member's final parameters (the solution), so "
                     f"there is no R-hat or ESS to report")
        if "loss" in trace.stats:
            loss = np.asarray(trace.stats["loss"])[:, -1]
            lines.append("training loss of the last epoch, by member: "
                         + ", ".join(f"{v:.4g}" for v in loss))
    pred = None
    if trace.predictions is not None:
        pred = diagnostics.ensemble_predictive(trace)
        what = (f"ensemble of the {trace.num_chains} members" if sampler == "sgd"
                else "ensemble of all draws")
        if data.num_classes is not None:
            m = diagnostics.classification_metrics(pred, data.y_test)
            lines.append(f"{what} on the test set: accuracy "
                         f"{m['accuracy']:.4f}, NLL {m['nll']:.4f}, ECE {m['ece']:.4f}")
        else:
            lines.append(f"{what} on the test set: RMSE "
                         f"{diagnostics.rmse(pred, data.y_test):.4f}")
    if "run_dir" in trace.info:
        lines.append(f"run directory: {trace.info['run_dir']} "
                     f"(open with ws.samplers.load; `weightspace llc --run` estimates "
                     f"local learning coefficients at its draws)")
        lines += _figures(trace, data, summary.rhat_values, pred, trace.info["run_dir"])
    return "\n".join(lines)


def _figures(trace, data, rhat_values: dict, pred, run_dir) -> list[str]:
    """Trace plots, the R-hat histograms of the summary (`rhat_values`, by space)
    and the reliability diagram of the ensemble predictive `pred`, into the run
    directory."""
    from weightspace import diagnostics

    written = [os.path.join(run_dir, "trace.png")]
    diagnostics.plot_trace(trace, path=written[0])
    if rhat_values:
        path = os.path.join(run_dir, "rhat.png")
        diagnostics.plot_rhat(rhat_values["weights"], rhat_values.get("predictions"),
                              aligned_rhat=rhat_values.get("weights (aligned)"), path=path)
        written.append(path)
    if pred is not None and data.num_classes is not None:
        path = os.path.join(run_dir, "reliability.png")
        diagnostics.plot_reliability(pred, data.y_test, path=path)
        written.append(path)
    return ["figures: " + ", ".join(written)]


def _sample(args) -> int:
    import time

    import jax

    options = _sampler_options(args)
    command = _command_of(args)
    out = Path(args.out)
    write = _check_run_dir(out, command)
    data, network, post = _rebuild(command)
    if write and jax.process_index() == 0:
        _write_json(out / "command.json", command)  # before sampling: a killed run has it
    start = time.perf_counter()
    trace = _run_sampler(args, options, post, data)
    print(_summary(trace, data, network, time.perf_counter() - start, args.sampler))
    return 0


def _add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="HMC, SGLD, SGHMC or SGD on a dataset and network, into a run "
                       "directory",
        description="Chains over network weights (full-batch HMC by default; SGLD, SGHMC, "
                    "or an SGD ensemble with one member per chain). Draws, test-set "
                    "predictions and checkpoints go to --out as they are made, with "
                    "command.json (what rebuilds the posterior, for `weightspace llc "
                    "--run`); running the same command again resumes. Sampler flags left "
                    "out take the defaults shown; a flag the chosen sampler does not use "
                    "is an error.")
    p.add_argument("--dataset", default="digits", help="a name of `weightspace datasets`")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--n-train", type=_positive_int, default=None,
                   help="subsample the training set")
    p.add_argument("--model", default="mlp", choices=MODELS)
    p.add_argument("--hidden", type=_hidden, default=(256, 256),
                   help="MLP hidden widths, comma-separated (default 256,256)")
    p.add_argument("--prior-variance", type=_positive_float, default=0.2,
                   help="Gaussian prior variance (Izmailov et al. 2021: 1/5)")
    p.add_argument("--temperature", type=_positive_float, default=1.0,
                   help="posterior temperature T")
    p.add_argument("--sampler", default="hmc", choices=SAMPLERS,
                   help="hmc (default); sgld, sghmc (minibatch SG-MCMC); sgd (one SGD run "
                        "per chain, a deep ensemble: each chain's one draw is its solution)")
    p.add_argument("--chains", type=_positive_int, default=3,
                   help="chains (for sgd: ensemble members)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("hmc, sgld, sghmc")
    g.add_argument("--samples", type=_positive_int, default=None,
                   help="kept draws per chain (default 100)")
    g.add_argument("--warmup", type=_nonnegative_int, default=None,
                   help="warmup (hmc) or burn-in (sgld, sghmc) transitions (default 50)")
    g.add_argument("--thin", type=_positive_int, default=None,
                   help="keep every this many transitions (default 1)")
    g.add_argument("--step-size", type=_positive_float, default=None,
                   help="hmc: the initial step size (default: found during warmup); "
                        "sgld, sghmc: the step size (required; with --cycle-length the "
                        "largest of the cyclical schedule)")
    g = p.add_argument_group("hmc")
    g.add_argument("--warmup-mode", default=None, choices=("adapt", "fixed",
                                                           "no_metropolis"),
                   help="default adapt")
    g.add_argument("--trajectory-length", type=_positive_float, default=None,
                   help="default (pi/2) sqrt(temperature * prior variance)")
    g.add_argument("--max-steps", type=_positive_int, default=None,
                   help="cap on leapfrog steps per trajectory (default 1000)")
    g.add_argument("--target-accept", type=_positive_float, default=None,
                   help="default 0.8")
    g.add_argument("--mass-matrix", default=None, choices=("identity", "diagonal"),
                   help="default identity")
    g = p.add_argument_group("sgld, sghmc, sgd")
    g.add_argument("--batch-size", type=_positive_int, default=None,
                   help="rows per minibatch (default 80, Izmailov et al. 2021)")
    g = p.add_argument_group("sgld, sghmc")
    g.add_argument("--preconditioner", default=None, choices=("rmsprop",),
                   help="sgld only: rmsprop is pSGLD (Li et al. 2016)")
    g.add_argument("--friction", type=_positive_float, default=None,
                   help="sghmc only: friction in (0, 1] (default 0.1)")
    g.add_argument("--cycle-length", type=_positive_int, default=None,
                   help="cyclical step sizes (Zhang et al. 2020) with cycles of this many "
                        "transitions")
    g.add_argument("--samples-per-cycle", type=_positive_int, default=None,
                   help="draws per cycle with --cycle-length (default 1)")
    g = p.add_argument_group("sgd")
    g.add_argument("--epochs", type=_positive_int, default=None, help="required")
    g.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="required: the initial learning rate on the per-example loss")
    g.add_argument("--optimizer", default=None, choices=("sgd", "adam"),
                   help="default sgd (with momentum)")
    g.add_argument("--momentum", type=_nonnegative_float, default=None,
                   help="default 0.9 (Izmailov et al. 2021)")
    g.add_argument("--lr-schedule", default=None, choices=("cosine", "constant"),
                   help="default cosine (Izmailov et al. 2021)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None,
                   help="checkpoint every this many steps, and every 5 minutes (default: "
                        "hmc 10, sgld and sghmc 100, sgd 1 epoch)")
    p.add_argument("--no-eval", action="store_true", help="do not store test predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run directory (created, or resumed)")
    p.set_defaults(func=_sample)


# ------------------------------------------------------------------ llc

LLC_STEP_SIZE = 1e-4     # ws.slt.llc's default
DLN_NUM_TRAIN = 20000    # ws.slt.dln_problem's default
_DLN_FLAGS = ("widths", "rank", "n_train", "calibrate", "step_sizes", "figure")


def _llc_settings(args, step_size: float) -> dict:
    """Keyword arguments of ws.slt.llc from the flags."""
    return {"num_chains": args.chains, "num_draws": args.num_draws,
            "num_burnin": args.burnin, "step_size": step_size,
            "localization": args.localization, "nbeta": args.nbeta,
            "batch_size": args.batch_size, "sampler": args.llc_sampler}


def _result(est) -> dict:
    return {"init_loss": est.init_loss, "mean": est.mean, "std": est.std,
            "nbeta": est.nbeta, "per_chain": est.per_chain,
            "mala_acceptance": est.mala_acceptance, "diverged": est.diverged,
            "below_init": est.below_init, "unhealthy_acceptance": est.unhealthy_acceptance,
            "flags": est.flags}


def _parse_draws(text: str, num_draws: int) -> list[int]:
    """Draw indices (0 <= i < num_draws) of --draws: last, all, or a list."""
    if text == "last":
        return [num_draws - 1]
    if text == "all":
        return list(range(num_draws))
    try:
        picked = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        picked = []
    if not picked:
        raise CommandError(f"--draws must be 'last', 'all' or comma-separated draw "
                           f"indices; got --draws {text!r}")
    bad = [i for i in picked if not -num_draws <= i < num_draws]
    if bad:
        raise CommandError(f"--draws {text}: {', '.join(map(str, bad))} out of range: the "
                           f"run has {num_draws} draw(s) per chain (indices 0..{num_draws - 1}"
                           f", or -{num_draws}..-1 from the end)")
    return list(dict.fromkeys(i % num_draws for i in picked))


def _table_row(chain, draw, est) -> str:
    return (f"{chain!s:<6} {draw!s:<6} {est.init_loss:<12.6g} {est.mean:<12.5g} "
            f"{est.std:<10.3g} {'; '.join(est.flags) or '-'}")


_TABLE_HEADER = (f"{'chain':<6} {'draw':<6} {'L_n(w*)':<12} {'lambda_hat':<12} "
                 f"{'std':<10} flags")


def _read_command(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise CommandError(f"--run {run_dir}: no such directory")
    if not (run_dir / "config.json").is_file():
        raise CommandError(f"--run {run_dir} is not a run directory (no config.json)")
    path = run_dir / "command.json"
    if not path.is_file():
        raise CommandError(
            f"--run {run_dir} has no command.json: it was not made by `weightspace sample`, "
            f"so the command cannot rebuild its posterior. In Python, rebuild the posterior "
            f"and call ws.slt.llc(posterior, params_star, key) at draws of "
            f"ws.samplers.load(run_dir, template=posterior.init(key)).")
    with open(path) as f:
        command = json.load(f)
    missing = [k for k in REBUILD_KEYS if k not in command]
    if command.get("format") != COMMAND_FORMAT or missing:
        raise CommandError(f"{path} is not a command.json of this version (format "
                           f"{command.get('format')!r}, missing {missing})")
    return command


def _llc_run(args) -> int:
    import jax
    import numpy as np

    import weightspace as ws

    run_dir = Path(args.run)
    command = _read_command(run_dir)
    _, _, post = _rebuild(command)
    template = jax.eval_shape(post.init, jax.random.key(0))
    try:
        trace = ws.samplers.load(run_dir, template=template)
    except KeyError as err:
        raise CommandError(f"the draws in {run_dir} are not positions of the posterior "
                           f"rebuilt from its command.json (no record {err})", 1) from None
    for want, got in zip(jax.tree.leaves(template), jax.tree.leaves(trace.positions)):
        if tuple(np.shape(got)[2:]) != tuple(want.shape):
            raise CommandError(f"the draws in {run_dir} have shapes unlike the posterior "
                               f"rebuilt from its command.json", 1)
    if trace.num_draws == 0:
        raise CommandError(f"--run {run_dir} holds no committed draws yet")
    draws = _parse_draws(args.draws, trace.num_draws)
    step_size = LLC_STEP_SIZE if args.step_size is None else args.step_size
    settings = _llc_settings(args, step_size)
    print(f"LLC of {post} at {len(draws) * trace.num_chains} position(s) of {run_dir} "
          f"({command['sampler']} run, {trace.num_chains} chains x {trace.num_draws} "
          f"draws)")
    print(_TABLE_HEADER, flush=True)
    base = jax.random.key(args.seed)
    results = []
    for chain in range(trace.num_chains):
        for draw in draws:
            params = jax.tree.map(lambda x, c=chain, d=draw: np.asarray(x[c, d]),
                                  trace.positions)
            # One key per position, a function of (chain, draw) only, so an estimate
            # does not depend on which other positions were asked for.
            key = jax.random.fold_in(jax.random.fold_in(base, chain), draw)
            est = ws.slt.llc(post, params, key, progress=not args.no_progress, **settings)
            print(_table_row(chain, draw, est), flush=True)
            results.append({"chain": chain, "draw": draw, **_result(est)})
    means = np.array([r["mean"] for r in results], float)
    if len(results) > 1 and np.isfinite(means).any():
        finite = means[np.isfinite(means)]
        spread = f", sd {finite.std(ddof=1):.4g}" if finite.size > 1 else ""
        print(f"over {finite.size} position(s): lambda_hat mean {finite.mean():.5g}{spread}")
    out = run_dir / "llc.json" if args.out is None else Path(args.out)
    _write_json(out, {
        "format": 1, "run": str(run_dir.absolute()), "command": command,
        "settings": {**settings, "seed": args.seed, "draws": args.draws,
                     "key": "jax.random.fold_in(jax.random.fold_in("
                            "jax.random.key(seed), chain), draw)"},
        "results": results})
    print(f"wrote {out}")
    return 0


def _llc_dln(args) -> int:
    import jax

    import weightspace as ws

    if args.dataset != "dln":
        raise CommandError(f"--dataset {args.dataset}: only dln has a known learning "
                           f"coefficient here; for a trained network, run `weightspace "
                           f"sample ... --out RUN_DIR`, then `weightspace llc --run RUN_DIR`")
    if args.draws is not None:
        raise CommandError(f"--draws {args.draws} is only for --run")
    for dest in ("widths", "rank"):
        if getattr(args, dest) is None:
            raise CommandError("--dataset dln needs --widths and --rank (e.g. --widths "
                               "4,6,5,3 --rank 2)")
    widths, rank = args.widths, args.rank
    if len(widths) < 2:
        raise CommandError(f"--widths {','.join(map(str, widths))}: need at least the input "
                           f"and output widths")
    if rank > min(widths):
        raise CommandError(f"--rank {rank} exceeds the narrowest of --widths "
                           f"{','.join(map(str, widths))}")
    if not args.calibrate:
        for dest in ("step_sizes", "figure"):
            if getattr(args, dest) is not None:
                raise CommandError(f"{_flag(dest)} {getattr(args, dest)} is only used with "
                                   f"--calibrate")
    elif args.step_size is not None:
        raise CommandError(f"--step-size {args.step_size} and --calibrate: give one "
                           f"(--calibrate picks the step size among --step-sizes)")
    n_train = DLN_NUM_TRAIN if args.n_train is None else args.n_train
    problem = ws.slt.dln_problem(widths, rank, num_train=n_train, seed=args.seed)
    theory = float(problem.theory)
    print(f"deep linear network, widths {widths}, teacher rank {rank}: n = {n_train} "
          f"training rows, L_n(w*) = {problem.init_loss:.6g}")
    # One key for the estimate, one for the calibration.
    key_estimate, key_calibrate = jax.random.split(jax.random.key(args.seed))
    calibration = None
    if args.calibrate:
        cal = ws.slt.calibrate(
            problem.posterior, problem.params_star, key_calibrate,
            step_sizes=args.step_sizes or (1e-6, 1e-5, 1e-4, 1e-3),
            nbetas=None if args.nbeta is None else (args.nbeta,),
            localizations=(args.localization,), num_chains=args.chains,
            num_draws=args.num_draws, num_burnin=args.burnin, batch_size=args.batch_size,
            sampler=args.llc_sampler, path=args.figure, progress=not args.no_progress)
        print(cal)
        if args.figure is not None:
            print(f"calibration figure: {args.figure}")
        calibration = cal.rows
        (step_size,) = cal.suggested.values()
        if step_size is None:
            raise CommandError("no step size of the calibration is stable (table above); "
                               "try smaller --step-sizes", 1)
        print(f"step size {step_size:g}: the largest stable one")
    else:
        step_size = LLC_STEP_SIZE if args.step_size is None else args.step_size
    settings = _llc_settings(args, step_size)
    est = ws.slt.llc(problem.posterior, problem.params_star, key_estimate,
                     progress=not args.no_progress, **settings)
    error = (est.mean - theory) / theory
    print(est)
    print(f"lambda_hat      {est.mean:.5g} +- {est.std:.3g} (sd across {args.chains} "
          f"chains)")
    print(f"theory          {theory:.5g} (Aoyagi 2024)")
    print(f"relative error  {error:+.1%}")
    if args.out is not None:
        out = Path(args.out)
        _write_json(out, {
            "format": 1,
            "problem": {"dataset": "dln", "widths": widths, "rank": rank, "n_train": n_train,
                        "seed": args.seed, "theory": theory},
            "settings": {**settings, "seed": args.seed, "calibrate": args.calibrate,
                         "key": "jax.random.split(jax.random.key(seed))[0]"},
            "calibration": calibration,
            "results": [{**_result(est), "theory": theory, "relative_error": error}]})
        print(f"wrote {out}")
    return 0


def _llc(args) -> int:
    if args.run is not None:
        given = [d for d in _DLN_FLAGS if getattr(args, d) not in (None, False)]
        if given:
            raise CommandError(f"{', '.join(_flag(d) for d in given)}: only for "
                               f"--dataset dln, not with --run")
        if args.draws is None:
            args.draws = "last"
        return _llc_run(args)
    return _llc_dln(args)


def _add_llc_parser(sub) -> None:
    p = sub.add_parser(
        "llc", help="local learning coefficients at draws of a run, or on a deep linear "
                    "network",
        description="Local learning coefficient estimates (Lau et al. 2023; ws.slt.llc). "
                    "--run RUN_DIR: at draws of a run made by `weightspace sample` (its "
                    "command.json rebuilds the posterior); the estimate at chain c, draw d "
                    "uses the key fold_in(fold_in(key(--seed), c), d); results go to "
                    "RUN_DIR/llc.json (or --out). --dataset dln: on a deep linear network "
                    "whose learning coefficient is known (Aoyagi 2024), with the theory "
                    "value and the relative error.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", default=None, metavar="RUN_DIR",
                       help="a run directory of `weightspace sample`")
    which.add_argument("--dataset", default=None, metavar="NAME",
                       help="dln (the only dataset with a known coefficient)")
    g = p.add_argument_group("--run")
    g.add_argument("--draws", default=None,
                   help="last (default: the last draw of each chain, for an SGD run each "
                        "member's solution), all, or comma-separated draw indices "
                        "(negative from the end), taken in every chain")
    g = p.add_argument_group("--dataset dln")
    g.add_argument("--widths", type=_int_list, default=None,
                   help="layer widths, input to output, e.g. 4,6,5,3")
    g.add_argument("--rank", type=_positive_int, default=None,
                   help="rank of the teacher's product matrix")
    g.add_argument("--n-train", type=_positive_int, default=None,
                   help=f"training rows (default {DLN_NUM_TRAIN})")
    g.add_argument("--calibrate", action="store_true",
                   help="sweep --step-sizes first (ws.slt.calibrate) and use the largest "
                        "stable one")
    g.add_argument("--step-sizes", type=_float_list, default=None,
                   help="comma-separated, for --calibrate (default 1e-6,1e-5,1e-4,1e-3)")
    g.add_argument("--figure", default=None, help="with --calibrate: write its figure (PNG)")
    g = p.add_argument_group("the estimator")
    g.add_argument("--chains", type=_positive_int, default=4, help="chains of the LLC sampler (default 4)")
    g.add_argument("--num-draws", type=_positive_int, default=200,
                   help="draws per chain after burn-in (default 200)")
    g.add_argument("--burnin", type=_nonnegative_int, default=100,
                   help="discarded steps (default 100)")
    g.add_argument("--step-size", type=_positive_float, default=None,
                   help=f"sampler step size (default {LLC_STEP_SIZE:g})")
    g.add_argument("--localization", type=_nonnegative_float, default=100.0,
                   help="gamma (default 100)")
    g.add_argument("--nbeta", type=_positive_float, default=None,
                   help="n beta (default n / log n, n the training rows)")
    g.add_argument("--batch-size", type=_positive_int, default=None,
                   help="minibatch rows (default: full batch)")
    g.add_argument("--llc-sampler", default="sgld", choices=("sgld", "rmsprop_sgld", "mala"),
                   help="default sgld")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None,
                   help="JSON results file (default RUN_DIR/llc.json with --run; none "
                        "with --dataset)")
    p.set_defaults(func=_llc)


# ------------------------------------------------------------------ entry point

def build_parser() -> argparse.ArgumentParser:
    from weightspace import __version__

    parser = argparse.ArgumentParser(
        prog="weightspace",
        description="Bayesian posteriors over neural-network weights: sampling, "
                    "weight- and function-space diagnostics, local learning coefficients.")
    parser.add_argument("--version", action="version", version=f"weightspace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The package exports functions named like these modules: import the parsers.
    from weightspace.experiments.compare import add_parser as add_compare_parser
    from weightspace.experiments.generalization import (
        add_parser as add_generalization_parser,
    )
    from weightspace.experiments.mixing import add_parser as add_mixing_parser

    add_compare_parser(sub)
    _add_sample_parser(sub)
    _add_llc_parser(sub)
    add_mixing_parser(sub)
    add_generalization_parser(sub)
    p = sub.add_parser("datasets", help="list the datasets (and load one with NAME)")
    p.add_argument("name", nargs="?", help="load this dataset and print its shapes")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.set_defaults(func=_datasets)
    p = sub.add_parser("info", help="library versions and the devices JAX sees")
    p.set_defaults(func=_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except CommandError as err:
        print(f"weightspace {args.command}: error: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
