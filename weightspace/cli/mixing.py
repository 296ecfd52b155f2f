"""`weightspace mixing`: R-hat of the weights (raw and permutation-aligned) and of
the predictions against chain length for a run (`--run RUN_DIR`), with
mixing.png and mixing.json (ws.experiments.mixing)."""

from __future__ import annotations

from pathlib import Path

from weightspace import samplers
from weightspace.cli.arguments import CommandError, int_list, reported
from weightspace.diagnostics.rhat import METHODS
from weightspace.experiments import rebuild
from weightspace.experiments.mixing import MIN_LENGTH, NUM_LENGTHS, check_lengths, mixing


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "mixing", help="R-hat in weight space (raw, aligned) and function space against "
                       "chain length, for a run",
        description="The weight-space against function-space mixing study "
                    "(ws.experiments.mixing) on a run directory of `weightspace sample`: "
                    "R-hat of the weights, of the permutation-aligned weights and of the "
                    "test-set predictions on the first N draws of every chain, for a grid "
                    "of N. The network for alignment is rebuilt from the run's "
                    "command.json; without one, alignment is skipped with a note. Writes "
                    "mixing.png and mixing.json into --out and prints the table and the "
                    "verdict.")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="a run directory of `weightspace sample` (with test predictions)")
    p.add_argument("--out", default=None, metavar="DIR", help="default RUN_DIR")
    p.add_argument("--lengths", type=int_list, default=None,
                   help=f"comma-separated draws per chain, each >= {MIN_LENGTH} (default "
                        f"{NUM_LENGTHS} log-spaced from {MIN_LENGTH} to all draws)")
    p.add_argument("--method", default="rank", choices=METHODS,
                   help="R-hat estimator (default rank, Vehtari et al. 2021)")
    p.add_argument("--no-align", action="store_true",
                   help="skip permutation alignment (it runs a weight matching per draw)")
    p.set_defaults(func=run)


def run(args) -> int:
    with reported(rebuild.RebuildError):
        run_dir = rebuild.check_run_dir(args.run, "--run")
    network = None
    if args.no_align:
        print("note: --no-align: the weights are not permutation-aligned")
    elif (run_dir / "command.json").is_file():
        with reported(rebuild.RebuildError):
            command = rebuild.read_command(run_dir, "--run")
        _, network, _ = rebuild.from_command(command)
    else:
        print(f"note: {run_dir} has no command.json (not made by `weightspace sample`), so "
              f"the network cannot be rebuilt and permutation alignment is skipped; in "
              f"Python, pass network= to ws.experiments.mixing")
    trace = samplers.load(run_dir)
    if trace.num_chains < 2 or trace.num_draws < MIN_LENGTH:
        raise CommandError(f"--run {run_dir} holds {trace.num_chains} chain(s) of "
                           f"{trace.num_draws} draw(s); R-hat needs at least 2 chains of "
                           f"{MIN_LENGTH} draws (an SGD run has one draw per member)")
    if trace.predictions is None:
        raise CommandError(f"--run {run_dir} holds no test-set predictions (sampled with "
                           f"--no-eval?): function-space R-hat needs them")
    lengths = None
    if args.lengths is not None:
        with reported(TypeError, ValueError):
            lengths = check_lengths(args.lengths, trace.num_draws, name="--lengths")
    out = run_dir if args.out is None else Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a directory")
    print(f"R-hat of {trace} from {run_dir}"
          + (", aligning the weights first" if network is not None else ""), flush=True)
    # ValueError: e.g. the rebuilt network does not fit the stored draws.
    with reported(ValueError, code=1, prefix=f"--run {run_dir}: "):
        result = mixing(trace, network, lengths=lengths, out=out, method=args.method)
    print(result)
    print(f"wrote {result.paths['figure']}, {result.paths['json']}")
    return 0
