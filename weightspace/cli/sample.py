"""`weightspace sample`: HMC (default), SGLD, SGHMC or SGD (an ensemble, one
member per chain) on a dataset and network, into a run directory, then its
diagnostics and figures. The run directory also gets command.json, what
rebuilds the posterior (ws.experiments.rebuild): dataset, network, prior,
temperature, seed, sampler."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import numpy as np

from weightspace import diagnostics, samplers, sharding
from weightspace.cli.arguments import (
    CommandError,
    flag,
    hidden_widths,
    int_list,
    job_mesh,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from weightspace.experiments import rebuild
from weightspace.jsonio import read_json, write_json

# The samplers and their flags come from the sampler registry (ws.samplers.SAMPLERS):
# a registered sampler is offered here with its options. Sampler flags default to
# None, so a flag given for a sampler that does not use it is an error rather than
# ignored.
_TYPES = {"positive_int": positive_int, "nonnegative_int": nonnegative_int,
          "positive_float": positive_float, "nonnegative_float": nonnegative_float,
          "str": None, "int_list": int_list}


def _flags() -> dict:
    """flag -> (its options by sampler name), in the registry's order."""
    flags: dict = {}
    for name, entry in samplers.SAMPLERS.items():
        for option in entry.options:
            flags.setdefault(option.flag, {})[name] = option
    return flags


def _help(by_sampler: dict) -> str:
    """One flag's help: each sampler's text (with its default), grouped when equal."""
    texts: dict = {}
    for name, o in by_sampler.items():
        parts = [o.help] if o.help else []
        if o.required and "required" not in o.help:
            parts.insert(0, "required")
        if o.default is not None:
            parts.append(f"default {o.default}")
        texts.setdefault("; ".join(parts), []).append(name)
    if len(texts) == 1:
        return next(iter(texts))
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in texts.items())


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


def _sampler_options(args) -> tuple[dict, int]:
    """(the sampler's keyword arguments, checkpoint_every) from the flags of
    args.sampler, defaults filled in."""
    entry = samplers.SAMPLERS[args.sampler]
    for dest, by_sampler in _flags().items():
        value = getattr(args, dest)
        if value is not None and args.sampler not in by_sampler:
            raise CommandError(f"{flag(dest)} {value} is not used by --sampler "
                               f"{args.sampler} (it is for --sampler "
                               f"{' or '.join(by_sampler)})")
    missing = [o.flag for o in entry.options if o.required and getattr(args, o.flag) is None]
    if missing:
        raise CommandError(f"--sampler {args.sampler} needs "
                           f"{' and '.join(flag(d) for d in missing)}")
    values = {o.flag: o.default if getattr(args, o.flag) is None else getattr(args, o.flag)
              for o in entry.options}
    given = {o.flag for o in entry.options if getattr(args, o.flag) is not None}
    try:
        kwargs = entry.keyword_arguments(values, given)
    except ValueError as err:
        raise CommandError(str(err)) from None
    checkpoint_every = (args.checkpoint_every if args.checkpoint_every is not None
                        else entry.checkpoint_every)
    return kwargs, checkpoint_every


def _run_sampler(args, options: tuple[dict, int], post, data):
    kwargs, checkpoint_every = options
    return samplers.SAMPLERS[args.sampler].sample(
        post, jax.random.key(args.seed), num_chains=args.chains,
        eval_x=None if args.no_eval else data.x_test, run_dir=args.out,
        checkpoint_every=checkpoint_every, progress=not args.no_progress, **kwargs)


def _summary(trace, data, network, seconds: float, sampler: str = "hmc") -> str:
    lines = [f"{trace} in {seconds:.1f} s"]
    if sampler == "sgd" and trace.num_draws > 1:
        # The draws are checkpoints of each member's training; the members, the
        # solutions, are the last draws, and the rest is about them.
        config = trace.info.get("config", {})
        every = config.get("save_every")
        when = (f"every {every} epochs" if every
                else f"after epochs {', '.join(map(str, config.get('save_at', [])))}")
        lines[0] += (f": {trace.num_draws} checkpoints per member, {when} "
                     f"(`weightspace llc --run {trace.info.get('run_dir', 'RUN_DIR')} "
                     f"--checkpoints all` estimates the LLC along them); below, the "
                     f"solutions (the last checkpoints)")
        trace = dataclasses.replace(
            trace, positions=jax.tree.map(lambda x: x[:, -1:], trace.positions),
            stats={k: v[:, -1:] for k, v in trace.stats.items()},
            predictions=None if trace.predictions is None else trace.predictions[:, -1:])
    enough = trace.num_chains >= 2 and trace.num_draws >= 4
    aligned = diagnostics.align_permutations(trace.positions, network) if enough else None
    summary = diagnostics.summary(trace, aligned_positions=aligned)
    lines += ["", str(summary), ""]
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
    data, network, post = rebuild.from_command(command, job_mesh())
    # Every process has judged --out before process 0 writes into it.
    sharding.wait_for_processes("sample out checked")
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
    p.add_argument("--data-dir", default=None,
                   help="where downloaded datasets are prepared (see `weightspace data prepare`)")
    p.add_argument("--n-train", type=positive_int, default=None,
                   help="subsample the training set")
    p.add_argument("--model", default="mlp", choices=list(rebuild.NETWORKS))
    p.add_argument("--hidden", type=hidden_widths, default=(256, 256),
                   help="MLP hidden widths, comma-separated (default 256,256)")
    p.add_argument("--prior-variance", type=positive_float, default=0.2,
                   help="Gaussian prior variance (Izmailov et al. 2021: 1/5)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="posterior temperature T")
    p.add_argument("--sampler", default="hmc", choices=tuple(samplers.SAMPLERS),
                   help="; ".join(f"{name}: {entry.summary}"
                                  for name, entry in samplers.SAMPLERS.items()))
    p.add_argument("--chains", type=positive_int, default=3,
                   help="chains (for sgd: ensemble members)")
    p.add_argument("--seed", type=int, default=0)
    groups: dict = {}
    for dest, by_sampler in _flags().items():
        title = ", ".join(by_sampler)
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        first = next(iter(by_sampler.values()))
        groups[title].add_argument(flag(dest), type=_TYPES[first.kind], default=None,
                                   choices=first.choices, help=_help(by_sampler))
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="checkpoint every this many steps (sgd: epochs), and every 5 "
                        "minutes (default: " + ", ".join(
                            f"{name} {entry.checkpoint_every}"
                            for name, entry in samplers.SAMPLERS.items()) + ")")
    p.add_argument("--no-eval", action="store_true", help="do not store test predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run directory (created, or resumed)")
    p.set_defaults(func=run)
