"""`weightspace sample`: HMC (default), SGLD, SGHMC or SGD (an ensemble, one
member per chain) on a dataset and network, into a run directory, then its
diagnostics and figures. The run directory also gets command.json, what
rebuilds the posterior (ws.experiments.rebuild): dataset, network, prior,
temperature, seed, sampler."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax
import numpy as np

from weightspace import diagnostics, samplers
from weightspace.cli.arguments import (
    CommandError,
    flag,
    hidden_widths,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from weightspace.experiments import rebuild
from weightspace.jsonio import read_json, write_json

# The samplers the command runs and their flags, defaults and requirements.
SAMPLERS = ("hmc", "sgld", "sghmc", "sgd")
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

def _command_of(args) -> dict:
    return {"format": rebuild.COMMAND_FORMAT, "dataset": args.dataset,
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
        stored = read_json(stored_path)
        differ = [k for k in rebuild.REBUILD_KEYS if k != "data_dir"
                  and stored.get(k) != command[k]]
        if differ:
            parts = "; ".join(f"{k} ({flag(k)}): stored {stored.get(k)!r}, "
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


def _sampler_options(args) -> dict:
    """The sampler flags resolved for args.sampler: dest -> value (defaults filled in)."""
    sampler = args.sampler
    for dest, users in _SAMPLER_FLAGS.items():
        value = getattr(args, dest)
        if value is not None and sampler not in users:
            raise CommandError(f"{flag(dest)} {value} is not used by --sampler {sampler} "
                               f"(it is for --sampler {' or '.join(users)})")
    missing = [d for d in _REQUIRED.get(sampler, ()) if getattr(args, d) is None]
    if missing:
        raise CommandError(f"--sampler {sampler} needs "
                           f"{' and '.join(flag(d) for d in missing)}")
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
    key = jax.random.key(args.seed)
    common = {"num_chains": args.chains, "eval_x": None if args.no_eval else data.x_test,
              "run_dir": args.out, "checkpoint_every": options["checkpoint_every"],
              "progress": not args.no_progress}
    if args.sampler == "hmc":
        return samplers.hmc(
            post, key, num_samples=options["samples"], num_warmup=options["warmup"],
            step_size=options["step_size"], trajectory_length=options["trajectory_length"],
            max_num_steps=options["max_steps"], target_accept=options["target_accept"],
            mass_matrix=options["mass_matrix"], warmup=options["warmup_mode"],
            thin=options["thin"], **common)
    if args.sampler == "sgd":
        return samplers.sgd(
            post, key, num_epochs=options["epochs"], batch_size=options["batch_size"],
            learning_rate=options["learning_rate"], optimizer=options["optimizer"],
            momentum=options["momentum"], schedule=options["lr_schedule"], **common)
    schedule, step_size = None, options["step_size"]
    if options["cycle_length"] is not None:
        schedule, step_size = samplers.cyclical(step_size, options["cycle_length"]), None
    sg = {"num_samples": options["samples"], "num_warmup": options["warmup"],
          "batch_size": options["batch_size"], "step_size": step_size, "schedule": schedule,
          "thin": options["thin"], "samples_per_cycle": options["samples_per_cycle"],
          **common}
    if args.sampler == "sgld":
        return samplers.sgld(post, key, preconditioner=options["preconditioner"], **sg)
    friction = options["friction"]
    if friction is None:
        return samplers.sghmc(post, key, **sg)
    return samplers.sghmc(post, key, friction=friction, **sg)


def _summary(trace, data, network, seconds: float, sampler: str = "hmc") -> str:
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


def run(args) -> int:
    options = _sampler_options(args)
    command = _command_of(args)
    out = Path(args.out)
    write = _check_run_dir(out, command)
    data, network, post = rebuild.from_command(command)
    if write:  # before sampling: a killed run has it
        write_json(out / "command.json", command, writer_only=True)
    start = time.perf_counter()
    trace = _run_sampler(args, options, post, data)
    print(_summary(trace, data, network, time.perf_counter() - start, args.sampler))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
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
    p.add_argument("--n-train", type=positive_int, default=None,
                   help="subsample the training set")
    p.add_argument("--model", default="mlp", choices=rebuild.MODELS)
    p.add_argument("--hidden", type=hidden_widths, default=(256, 256),
                   help="MLP hidden widths, comma-separated (default 256,256)")
    p.add_argument("--prior-variance", type=positive_float, default=0.2,
                   help="Gaussian prior variance (Izmailov et al. 2021: 1/5)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="posterior temperature T")
    p.add_argument("--sampler", default="hmc", choices=SAMPLERS,
                   help="hmc (default); sgld, sghmc (minibatch SG-MCMC); sgd (one SGD run "
                        "per chain, a deep ensemble: each chain's one draw is its solution)")
    p.add_argument("--chains", type=positive_int, default=3,
                   help="chains (for sgd: ensemble members)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("hmc, sgld, sghmc")
    g.add_argument("--samples", type=positive_int, default=None,
                   help="kept draws per chain (default 100)")
    g.add_argument("--warmup", type=nonnegative_int, default=None,
                   help="warmup (hmc) or burn-in (sgld, sghmc) transitions (default 50)")
    g.add_argument("--thin", type=positive_int, default=None,
                   help="keep every this many transitions (default 1)")
    g.add_argument("--step-size", type=positive_float, default=None,
                   help="hmc: the initial step size (default: found during warmup); "
                        "sgld, sghmc: the step size (required; with --cycle-length the "
                        "largest of the cyclical schedule)")
    g = p.add_argument_group("hmc")
    g.add_argument("--warmup-mode", default=None, choices=("adapt", "fixed",
                                                           "no_metropolis"),
                   help="default adapt")
    g.add_argument("--trajectory-length", type=positive_float, default=None,
                   help="default (pi/2) sqrt(temperature * prior variance)")
    g.add_argument("--max-steps", type=positive_int, default=None,
                   help="cap on leapfrog steps per trajectory (default 1000)")
    g.add_argument("--target-accept", type=positive_float, default=None,
                   help="default 0.8")
    g.add_argument("--mass-matrix", default=None, choices=("identity", "diagonal"),
                   help="default identity")
    g = p.add_argument_group("sgld, sghmc, sgd")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="rows per minibatch (default 80, Izmailov et al. 2021)")
    g = p.add_argument_group("sgld, sghmc")
    g.add_argument("--preconditioner", default=None, choices=("rmsprop",),
                   help="sgld only: rmsprop is pSGLD (Li et al. 2016)")
    g.add_argument("--friction", type=positive_float, default=None,
                   help="sghmc only: friction in (0, 1] (default 0.1)")
    g.add_argument("--cycle-length", type=positive_int, default=None,
                   help="cyclical step sizes (Zhang et al. 2020) with cycles of this many "
                        "transitions")
    g.add_argument("--samples-per-cycle", type=positive_int, default=None,
                   help="draws per cycle with --cycle-length (default 1)")
    g = p.add_argument_group("sgd")
    g.add_argument("--epochs", type=positive_int, default=None, help="required")
    g.add_argument("--learning-rate", type=positive_float, default=None,
                   help="required: the initial learning rate on the per-example loss")
    g.add_argument("--optimizer", default=None, choices=("sgd", "adam"),
                   help="default sgd (with momentum)")
    g.add_argument("--momentum", type=nonnegative_float, default=None,
                   help="default 0.9 (Izmailov et al. 2021)")
    g.add_argument("--lr-schedule", default=None, choices=("cosine", "constant"),
                   help="default cosine (Izmailov et al. 2021)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="checkpoint every this many steps, and every 5 minutes (default: "
                        "hmc 10, sgld and sghmc 100, sgd 1 epoch)")
    p.add_argument("--no-eval", action="store_true", help="do not store test predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run directory (created, or resumed)")
    p.set_defaults(func=run)
