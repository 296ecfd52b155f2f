"""The `weightspace` command: `sample` (HMC into a run directory, then its
diagnostics and figures), `datasets`, `info`."""

from __future__ import annotations

import argparse
import sys


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


MODELS = ("mlp", "linear", "lenet5", "resnet20frn", "cnnlstm")


def _network(args, data):
    from weightspace import models

    outputs = data.num_classes if data.num_classes is not None else data.y_train.shape[1]
    if args.model == "mlp":
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
        return models.MLP(hidden, outputs)
    if args.model == "linear":
        return models.MLP((), outputs)
    if args.model == "lenet5":
        return models.LeNet5(outputs)
    if args.model == "resnet20frn":
        return models.ResNet20FRN(outputs)
    return models.CNNLSTM(vocab_size=data.info.get("vocab_size", 20000), num_outputs=outputs)


def _summary(trace, data, network, seconds: float) -> str:
    from weightspace import diagnostics

    enough = trace.num_chains >= 2 and trace.num_draws >= 4
    aligned = diagnostics.align_permutations(trace.positions, network) if enough else None
    summary = diagnostics.summary(trace, aligned_positions=aligned)
    lines = [f"{trace} in {seconds:.1f} s", "", str(summary), ""]
    pred = None
    if trace.predictions is not None:
        pred = diagnostics.ensemble_predictive(trace)
        if data.num_classes is not None:
            m = diagnostics.classification_metrics(pred, data.y_test)
            lines.append(f"ensemble of all draws on the test set: accuracy "
                         f"{m['accuracy']:.4f}, NLL {m['nll']:.4f}, ECE {m['ece']:.4f}")
        else:
            lines.append(f"ensemble of all draws on the test set: RMSE "
                         f"{diagnostics.rmse(pred, data.y_test):.4f}")
    if "run_dir" in trace.info:
        lines.append(f"run directory: {trace.info['run_dir']} "
                     f"(open with ws.samplers.load)")
        lines += _figures(trace, data, summary.rhat_values, pred, trace.info["run_dir"])
    return "\n".join(lines)


def _figures(trace, data, rhat_values: dict, pred, run_dir) -> list[str]:
    """Trace plots, the R-hat histograms of the summary (`rhat_values`, by space)
    and the reliability diagram of the ensemble predictive `pred`, into the run
    directory."""
    import os

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

    import weightspace as ws

    data = ws.data.load(args.dataset, seed=args.seed, data_dir=args.data_dir,
                        n_train=args.n_train)
    network = _network(args, data)
    post = ws.models.posterior(network, data,
                               prior_variance=args.prior_variance,
                               temperature=args.temperature)
    start = time.perf_counter()
    trace = ws.samplers.hmc(
        post, jax.random.key(args.seed), num_chains=args.chains,
        num_samples=args.samples, num_warmup=args.warmup, step_size=args.step_size,
        trajectory_length=args.trajectory_length, max_num_steps=args.max_steps,
        target_accept=args.target_accept, mass_matrix=args.mass_matrix,
        warmup=args.warmup_mode, thin=args.thin,
        eval_x=None if args.no_eval else data.x_test, run_dir=args.out,
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    print(_summary(trace, data, network, time.perf_counter() - start))
    return 0


def _add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="full-batch HMC on a dataset and network, into a run directory",
        description="Full-batch HMC chains over network weights. Draws, test-set "
                    "predictions and checkpoints go to --out as they are made; running "
                    "the same command again resumes.")
    p.add_argument("--dataset", default="digits", help="a name of `weightspace datasets`")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--n-train", type=int, default=None, help="subsample the training set")
    p.add_argument("--model", default="mlp", choices=MODELS)
    p.add_argument("--hidden", default="256,256", help="MLP hidden widths, comma-separated")
    p.add_argument("--prior-variance", type=float, default=0.2,
                   help="Gaussian prior variance (Izmailov et al. 2021: 1/5)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--chains", type=int, default=3)
    p.add_argument("--samples", type=int, default=100, help="kept draws per chain")
    p.add_argument("--warmup", type=int, default=50, help="warmup transitions")
    p.add_argument("--warmup-mode", default="adapt", choices=("adapt", "fixed",
                                                              "no_metropolis"))
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--trajectory-length", type=float, default=None,
                   help="default (pi/2) sqrt(temperature * prior variance)")
    p.add_argument("--max-steps", type=int, default=1000,
                   help="cap on leapfrog steps per trajectory")
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--mass-matrix", default="identity", choices=("identity", "diagonal"))
    p.add_argument("--thin", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="checkpoint every this many steps (and every 5 minutes)")
    p.add_argument("--no-eval", action="store_true", help="do not store test predictions")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run directory (created, or resumed)")
    p.set_defaults(func=_sample)


def build_parser() -> argparse.ArgumentParser:
    from weightspace import __version__

    parser = argparse.ArgumentParser(
        prog="weightspace",
        description="Bayesian posteriors over neural-network weights: sampling, "
                    "weight- and function-space diagnostics, local learning coefficients.")
    parser.add_argument("--version", action="version", version=f"weightspace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_sample_parser(sub)
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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
