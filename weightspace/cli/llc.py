"""`weightspace llc`: local learning coefficients, either at draws of a run made
by `weightspace sample` (`--run RUN_DIR`: the last draw of each chain by
default, for an SGD run each member's solution; its command.json rebuilds the
posterior) or on a deep linear network whose coefficient is known (`--dataset
dln --widths ... --rank ...`, optionally calibrating the step size first)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from weightspace import diagnostics, samplers, slt
from weightspace.cli.arguments import (
    CommandError,
    flag,
    float_list,
    int_list,
    job_mesh,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    reported,
)
from weightspace.experiments import rebuild
from weightspace.jsonio import write_json
from weightspace.samplers.baselines import checkpoint_epochs
from weightspace.slt.llc import SAMPLERS as LLC_SAMPLERS

LLC_STEP_SIZE = 1e-4     # ws.slt.llc's default
DLN_NUM_TRAIN = 20000    # ws.slt.dln_problem's default
_DLN_FLAGS = ("widths", "rank", "n_train", "calibrate", "step_sizes", "figure",
              "from_small_init", "init_scale", "epochs", "save_every")
# `--from-small-init`: ws.slt.dln_training_run's defaults.
CURVE_DEFAULTS = {"n_train": 5000, "init_scale": 0.01, "epochs": 200, "save_every": 5}


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
            "grad_evals_per_chain": est.grad_evals, "flags": est.flags}


def _parse_draws(text: str, num_draws: int, option: str = "--draws") -> list[int]:
    """Draw indices (0 <= i < num_draws) of --draws (or --checkpoints): last,
    all, or a list."""
    if text == "last":
        return [num_draws - 1]
    if text == "all":
        return list(range(num_draws))
    try:
        picked = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        picked = []
    if not picked:
        raise CommandError(f"{option} must be 'last', 'all' or comma-separated draw "
                           f"indices; got {option} {text!r}")
    bad = [i for i in picked if not -num_draws <= i < num_draws]
    if bad:
        raise CommandError(f"{option} {text}: {', '.join(map(str, bad))} out of range: the "
                           f"run has {num_draws} draw(s) per chain (indices 0..{num_draws - 1}"
                           f", or -{num_draws}..-1 from the end)")
    return list(dict.fromkeys(i % num_draws for i in picked))


def _table_row(chain, draw, est) -> str:
    return (f"{chain!s:<6} {draw!s:<6} {est.init_loss:<12.6g} {est.mean:<12.5g} "
            f"{est.std:<10.3g} {'; '.join(est.flags) or '-'}")


_TABLE_HEADER = (f"{'chain':<6} {'draw':<6} {'L_n(w*)':<12} {'lambda_hat':<12} "
                 f"{'std':<10} flags")


def _read_command(run_dir: Path) -> dict:
    """The command.json of --run; a run without one was made in Python, and the
    error says how to estimate there."""
    with reported(rebuild.RebuildError):
        rebuild.check_run_dir(run_dir, "--run")
    if not (run_dir / "command.json").is_file():
        raise CommandError(
            f"--run {run_dir} has no command.json: it was not made by `weightspace sample`, "
            f"so the command cannot rebuild its posterior. In Python, rebuild the posterior "
            f"and call ws.slt.llc(posterior, params_star, key) at draws of "
            f"ws.samplers.load(run_dir, template=posterior.init(key)).")
    with reported(rebuild.RebuildError):
        return rebuild.read_command(run_dir, "--run")


def _llc_run(args) -> int:
    run_dir = Path(args.run)
    command = _read_command(run_dir)
    data, _, post = rebuild.from_command(command, job_mesh())
    template = jax.eval_shape(post.init, jax.random.key(0))
    try:
        trace = samplers.load(run_dir, template=template)
    except KeyError as err:
        raise CommandError(f"the draws in {run_dir} are not positions of the posterior "
                           f"rebuilt from its command.json (no record {err})", 1) from None
    for want, got in zip(jax.tree.leaves(template), jax.tree.leaves(trace.positions)):
        if tuple(np.shape(got)[2:]) != tuple(want.shape):
            raise CommandError(f"the draws in {run_dir} have shapes unlike the posterior "
                               f"rebuilt from its command.json", 1)
    if trace.num_draws == 0:
        raise CommandError(f"--run {run_dir} holds no committed draws yet")
    if args.checkpoints is not None:
        return _llc_curve(args, run_dir, command, data, post, trace)
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
            est = slt.llc(post, params, key, progress=not args.no_progress, **settings)
            print(_table_row(chain, draw, est), flush=True)
            results.append({"chain": chain, "draw": draw, **_result(est)})
    means = np.array([r["mean"] for r in results], float)
    if len(results) > 1 and np.isfinite(means).any():
        finite = means[np.isfinite(means)]
        spread = f", sd {finite.std(ddof=1):.4g}" if finite.size > 1 else ""
        print(f"over {finite.size} position(s): lambda_hat mean {finite.mean():.5g}{spread}")
    out = _write_report(args, run_dir, command, results, {
        **settings, "draws": args.draws,
        "key": "jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), chain), draw)"})
    print(f"wrote {out}")
    return 0


def _report_path(args, run_dir: Path) -> Path:
    return run_dir / "llc.json" if args.out is None else Path(args.out)


def _write_report(args, run_dir: Path, command: dict, results: list, settings: dict) -> Path:
    """llc.json of a --run estimate (RUN_DIR/llc.json, or --out); its path."""
    out = _report_path(args, run_dir)
    write_json(out, {"format": 1, "run": str(run_dir.absolute()), "command": command,
                     "settings": {**settings, "seed": args.seed}, "results": results},
               writer_only=True)
    return out


def _llc_curve(args, run_dir: Path, command: dict, data, post, trace) -> int:
    """--checkpoints: the LLC at draws of each chain (for `sample --sampler sgd
    --save-every K`, each member's training checkpoints) in one compiled program
    per chain, with the training and test loss there, a table, llc.json and
    llc_curve.png."""
    draws = _parse_draws(args.checkpoints, trace.num_draws, "--checkpoints")
    step_size = LLC_STEP_SIZE if args.step_size is None else args.step_size
    settings = _llc_settings(args, step_size)
    config = trace.info.get("config", {})
    epochs = checkpoint_epochs(config.get("num_epochs"), config.get("save_every"),
                               config.get("save_at"))
    steps = list(draws) if epochs is None else [epochs[d] for d in draws]
    step_label = "draw" if epochs is None else "epoch"
    test_nll = np.full((trace.num_chains, len(draws)), np.nan)
    if trace.predictions is not None and data.num_classes is not None:
        for chain in range(trace.num_chains):
            for i, draw in enumerate(draws):
                test_nll[chain, i] = diagnostics.nll(trace.predictions[chain, draw],
                                                     data.y_test)
    print(f"LLC of {post} along {len(draws)} checkpoint(s) of each of {trace.num_chains} "
          f"chain(s) of {run_dir} ({command['sampler']} run)")
    print(f"{'chain':<6} {step_label:<6} {'L_n(w*)':<12} {'test NLL':<10} "
          f"{'lambda_hat':<12} {'std':<10} flags", flush=True)
    base = jax.random.key(args.seed)
    results, estimates = [], []
    for chain in range(trace.num_chains):
        stack = jax.tree.map(lambda x, c=chain: np.asarray(x[c, draws]), trace.positions)
        # One key per chain, shared by its checkpoints (common random numbers):
        # the estimate at one checkpoint equals `llc` there with that key.
        row = slt.llc(post, stack, jax.random.fold_in(base, chain), stacked=True,
                      progress=not args.no_progress, **settings)
        estimates.append(row)
        for i, (draw, step, est) in enumerate(zip(draws, steps, row)):
            print(f"{chain:<6} {step:<6} {est.init_loss:<12.6g} {test_nll[chain, i]:<10.4g} "
                  f"{est.mean:<12.5g} {est.std:<10.3g} {'; '.join(est.flags) or '-'}",
                  flush=True)
            results.append({"chain": chain, "draw": draw, step_label: step,
                            "test_nll": test_nll[chain, i], **_result(est)})
    chains = args.chains * len(draws) * trace.num_chains
    print(f"cost: {estimates[0][0].grad_evals:g} full-batch gradient evaluations per "
          f"estimator chain, {estimates[0][0].grad_evals * chains:g} for the {chains} chains")
    figure = _report_path(args, run_dir).with_name("llc_curve.png")
    diagnostics.plot_llc_curve(
        steps, [[e.mean for e in row] for row in estimates],
        [[e.std for e in row] for row in estimates],
        train_loss=[[e.init_loss for e in row] for row in estimates],
        test_loss=None if np.isnan(test_nll).all() else test_nll,
        labels=None if trace.num_chains == 1 else [f"chain {c}"
                                                   for c in range(trace.num_chains)],
        step_label=step_label, flagged=[[bool(e.flags) for e in row] for row in estimates],
        path=figure, title=f"LLC along training ({command['sampler']}, {command['dataset']})")
    out = _write_report(args, run_dir, command, results, {
        **settings, "checkpoints": args.checkpoints,
        "key": "jax.random.fold_in(jax.random.key(seed), chain), shared by the chain's "
               "checkpoints"})
    print(f"wrote {out} and {figure}")
    return 0


def _llc_dln(args) -> int:
    if args.dataset != "dln":
        raise CommandError(f"--dataset {args.dataset}: only dln has a known learning "
                           f"coefficient here; for a trained network, run `weightspace "
                           f"sample ... --out RUN_DIR`, then `weightspace llc --run RUN_DIR`")
    for dest in ("draws", "checkpoints"):
        if getattr(args, dest) is not None:
            raise CommandError(f"{flag(dest)} {getattr(args, dest)} is only for --run")
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
                raise CommandError(f"{flag(dest)} {getattr(args, dest)} is only used with "
                                   f"--calibrate")
    elif args.step_size is not None:
        raise CommandError(f"--step-size {args.step_size} and --calibrate: give one "
                           f"(--calibrate picks the step size among --step-sizes)")
    if args.from_small_init:
        return _dln_curve(args, widths, rank)
    for dest in ("init_scale", "epochs", "save_every"):
        if getattr(args, dest) is not None:
            raise CommandError(f"{flag(dest)} {getattr(args, dest)} is only used with "
                               f"--from-small-init")
    n_train = DLN_NUM_TRAIN if args.n_train is None else args.n_train
    problem = slt.dln_problem(widths, rank, num_train=n_train, seed=args.seed)
    theory = float(problem.theory)
    print(f"deep linear network, widths {widths}, teacher rank {rank}: n = {n_train} "
          f"training rows, L_n(w*) = {problem.init_loss:.6g}")
    # One key for the estimate, one for the calibration.
    key_estimate, key_calibrate = jax.random.split(jax.random.key(args.seed))
    step_size, calibration = _calibrated_step(args, problem.posterior, problem.params_star,
                                              key_calibrate, None, args.nbeta)
    settings = _llc_settings(args, step_size)
    est = slt.llc(problem.posterior, problem.params_star, key_estimate,
                     progress=not args.no_progress, **settings)
    error = (est.mean - theory) / theory
    print(est)
    print(f"lambda_hat      {est.mean:.5g} +- {est.std:.3g} (sd across {args.chains} "
          f"chains)")
    print(f"theory          {theory:.5g} (Aoyagi 2024)")
    print(f"relative error  {error:+.1%}")
    if args.out is not None:
        out = Path(args.out)
        write_json(out, {
            "format": 1,
            "problem": {"dataset": "dln", "widths": widths, "rank": rank, "n_train": n_train,
                        "seed": args.seed, "theory": theory},
            "settings": {**settings, "seed": args.seed, "calibrate": args.calibrate,
                         "key": "jax.random.split(jax.random.key(seed))[0]"},
            "calibration": calibration,
            "results": [{**_result(est), "theory": theory, "relative_error": error}]},
            writer_only=True)
        print(f"wrote {out}")
    return 0


def _calibrated_step(args, loss, position, key, data, nbeta):
    """--calibrate's step size (printing its table), else --step-size."""
    if not args.calibrate:
        return LLC_STEP_SIZE if args.step_size is None else args.step_size, None
    cal = slt.calibrate(
        loss, position, key, data=data,
        step_sizes=args.step_sizes or (1e-6, 1e-5, 1e-4, 1e-3),
        nbetas=(nbeta,) if nbeta is not None else None,
        localizations=(args.localization,), num_chains=args.chains,
        num_draws=args.num_draws, num_burnin=args.burnin, batch_size=args.batch_size,
        sampler=args.llc_sampler, path=args.figure, progress=not args.no_progress)
    print(cal)
    if args.figure is not None:
        print(f"calibration figure: {args.figure}")
    (step_size,) = cal.suggested.values()
    if step_size is None:
        raise CommandError("no step size of the calibration is stable (table above); "
                           "try smaller --step-sizes", 1)
    print(f"step size {step_size:g}: the largest stable one")
    return step_size, cal.rows


def _dln_curve(args, widths, rank) -> int:
    """--from-small-init: train from small initialization (ws.slt.dln_training_run),
    estimate the LLC at every checkpoint in one compiled program, print the
    curve with each checkpoint's learned directions and flags, and (with --out)
    write the JSON and llc_curve.png beside it."""
    if args.batch_size is not None:
        raise CommandError(f"--batch-size {args.batch_size}: --from-small-init estimates on "
                           f"the full-batch loss (from the data's second moments, as cheap "
                           f"as one row)")
    opts = {k: CURVE_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k)
            for k in CURVE_DEFAULTS}
    if opts["epochs"] % opts["save_every"]:
        raise CommandError(f"--save-every {opts['save_every']} must divide --epochs "
                           f"{opts['epochs']}")
    run = slt.dln_training_run(widths, rank, num_train=opts["n_train"], seed=args.seed,
                               init_scale=opts["init_scale"], num_epochs=opts["epochs"],
                               save_every=opts["save_every"], progress=not args.no_progress)
    theory = float(run.theory)
    nbeta = run.nbeta if args.nbeta is None else args.nbeta
    print(f"deep linear network, widths {widths}, teacher rank {rank} (singular values "
          f"{', '.join(f'{v:.3g}' for v in run.teacher_singular_values[:rank])}): "
          f"n = {opts['n_train']}; SGD from initialization x {opts['init_scale']:g}, "
          f"{opts['epochs']} epochs, a checkpoint every {opts['save_every']}")
    key_estimate, key_calibrate = jax.random.split(jax.random.key(args.seed))
    last = jax.tree.map(lambda x: x[-1], run.checkpoints)
    step_size, calibration = _calibrated_step(args, run.moment_loss, last, key_calibrate,
                                              run.moments, nbeta)
    settings = {**_llc_settings(args, step_size), "nbeta": nbeta}
    curve = slt.llc(run.moment_loss, run.checkpoints, key_estimate, data=run.moments,
                    stacked=True, progress=not args.no_progress, **settings)
    settled = run.settled(nbeta)
    print(f"{'epoch':<6} {'learned':<8} {'L_n(w*)':<10} {'test loss':<10} "
          f"{'lambda_hat':<11} {'std':<8} {'vs theory':<10} flags")
    results = []
    for k, est in enumerate(curve):
        error = (est.mean - theory) / theory if settled[k] and not est.flags else None
        print(f"{run.epochs[k]:<6} {f'{run.stage[k]}/{rank}':<8} {est.init_loss:<10.6g} "
              f"{run.test_loss[k]:<10.6g} {est.mean:<11.5g} {est.std:<8.3g} "
              f"{'-' if error is None else f'{error:+.1%}':<10} "
              f"{'; '.join(est.flags) or '-'}", flush=True)
        results.append({**_result(est), "epoch": int(run.epochs[k]),
                        "learned_directions": int(run.stage[k]),
                        "test_loss": float(run.test_loss[k]), "settled": bool(settled[k]),
                        "relative_error": error})
    print(f"cost: {curve[0].grad_evals:g} full-batch gradient evaluations per chain, "
          f"{curve[0].grad_evals * args.chains * len(curve):g} for the "
          f"{args.chains * len(curve)} chains")
    print(f"theory {theory:.5g} (Aoyagi 2024) at the minimum, the settled checkpoints; "
          f"none is claimed at the saddles before (a flag there says the chains found "
          f"lower loss: w* is not a minimum)")
    if not settled.any():
        print(f"no checkpoint has learned all {rank} directions and settled: the run "
              f"ended before its last stage (try more --epochs or a larger --init-scale); "
              f"short chains may not leave a saddle along a weak direction, so an "
              f"unflagged estimate there is no coefficient either")
    if args.out is None:
        print("(give --out FILE.json to keep the results and llc_curve.png beside them)")
        return 0
    out = Path(args.out)
    figure = out.with_name("llc_curve.png")
    diagnostics.plot_llc_curve(
        run.epochs, [e.mean for e in curve], [e.std for e in curve],
        train_loss=run.train_loss, test_loss=run.test_loss, step_label="epoch",
        flagged=[bool(e.flags) for e in curve], reference=theory,
        reference_label="Aoyagi's coefficient", path=figure,
        title=f"LLC along SGD from small initialization, DLN {widths}, rank {rank}")
    write_json(out, {
        "format": 1,
        "problem": {"dataset": "dln", "widths": widths, "rank": rank, "seed": args.seed,
                    "theory": theory, "from_small_init": opts,
                    "teacher_singular_values": run.teacher_singular_values[:rank]},
        "settings": {**settings, "seed": args.seed, "calibrate": args.calibrate,
                     "key": "jax.random.split(jax.random.key(seed))[0], shared by the "
                            "checkpoints"},
        "calibration": calibration, "results": results}, writer_only=True)
    print(f"wrote {out} and {figure}")
    return 0


def run(args) -> int:
    if args.run is not None:
        given = [d for d in _DLN_FLAGS if getattr(args, d) not in (None, False)]
        if given:
            raise CommandError(f"{', '.join(flag(d) for d in given)}: only for "
                               f"--dataset dln, not with --run")
        if args.draws is not None and args.checkpoints is not None:
            raise CommandError(f"--draws {args.draws} and --checkpoints {args.checkpoints}: "
                               f"give one")
        if args.draws is None:
            args.draws = "last"
        return _llc_run(args)
    return _llc_dln(args)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
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
    g.add_argument("--checkpoints", default=None,
                   help="all, last or comma-separated draw indices: the LLC curve along "
                        "each chain's draws (for `sample --sampler sgd --save-every K`, "
                        "the checkpoints of each member's training), all of a chain's in "
                        "one compiled program with the key fold_in(key(--seed), chain); "
                        "also writes llc_curve.png (LLC +- sd, training and test loss)")
    g = p.add_argument_group("--dataset dln")
    g.add_argument("--widths", type=int_list, default=None,
                   help="layer widths, input to output, e.g. 4,6,5,3")
    g.add_argument("--rank", type=positive_int, default=None,
                   help="rank of the teacher's product matrix")
    g.add_argument("--n-train", type=positive_int, default=None,
                   help=f"training rows (default {DLN_NUM_TRAIN}; "
                        f"{CURVE_DEFAULTS['n_train']} with --from-small-init)")
    g.add_argument("--calibrate", action="store_true",
                   help="sweep --step-sizes first (ws.slt.calibrate) and use the largest "
                        "stable one")
    g.add_argument("--step-sizes", type=float_list, default=None,
                   help="comma-separated, for --calibrate (default 1e-6,1e-5,1e-4,1e-3)")
    g.add_argument("--figure", default=None, help="with --calibrate: write its figure (PNG)")
    g.add_argument("--from-small-init", action="store_true",
                   help="train by SGD from small initialization (ws.slt.dln_training_run) "
                        "and estimate the LLC at every checkpoint in one program: the "
                        "curve stage by stage, with flags at the saddles and the theory "
                        "at the end (with --out, also llc_curve.png beside it)")
    g.add_argument("--init-scale", type=positive_float, default=None,
                   help=f"--from-small-init: the default initialization times this "
                        f"(default {CURVE_DEFAULTS['init_scale']:g})")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help=f"--from-small-init: SGD epochs (default {CURVE_DEFAULTS['epochs']})")
    g.add_argument("--save-every", type=positive_int, default=None,
                   help=f"--from-small-init: a checkpoint every this many epochs (default "
                        f"{CURVE_DEFAULTS['save_every']})")
    g = p.add_argument_group("the estimator")
    g.add_argument("--chains", type=positive_int, default=4,
                   help="chains of the LLC sampler (default 4)")
    g.add_argument("--num-draws", type=positive_int, default=200,
                   help="draws per chain after burn-in (default 200)")
    g.add_argument("--burnin", type=nonnegative_int, default=100,
                   help="discarded steps (default 100)")
    g.add_argument("--step-size", type=positive_float, default=None,
                   help=f"sampler step size (default {LLC_STEP_SIZE:g})")
    g.add_argument("--localization", type=nonnegative_float, default=100.0,
                   help="gamma (default 100)")
    g.add_argument("--nbeta", type=positive_float, default=None,
                   help="n beta (default n / log n, n the training rows)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="minibatch rows (default: full batch)")
    g.add_argument("--llc-sampler", default="sgld", choices=LLC_SAMPLERS,
                   help="default sgld")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None,
                   help="JSON results file (default RUN_DIR/llc.json with --run; none "
                        "with --dataset)")
    p.set_defaults(func=run)
