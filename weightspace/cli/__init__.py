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
- `basins`: do the samplers weight basins by their mass? Every sampler on
  targets whose basin masses are known exactly, from low to high barriers
  (ws.experiments.basins).
- `datasets`: the dataset names (and one dataset's shapes).
- `data prepare`: fetch, check and convert the downloadable datasets (MNIST,
  Fashion-MNIST, CIFAR-10/100, IMDB) into a data directory (ws.data.prepare).
- `info`: library versions and the devices JAX sees.

One module per command (`compare`, `sample`, `llc`, `mixing`,
`llc_vs_generalization`, `basins`, `datasets`, `data`, `info`), each with `add_parser(subparsers)`
and `run(args) -> exit status`; `arguments` holds what they share. The command
line sits on top of the library: nothing below it imports it. Every command
keeps compiled programs in JAX's persistent compilation cache
(`compile_cache`: `--compile-cache DIR`, `--no-compile-cache`), and any command
runs as one process of a multi-process job (`processes`: `--distributed`, or
`--coordinator HOST:PORT --num-processes N --process-id I`).
"""

from __future__ import annotations

import argparse
import sys

from weightspace import __version__, sharding
from weightspace.cli import (
    basins,
    compare,
    compile_cache,
    data,
    datasets,
    info,
    llc,
    llc_vs_generalization,
    mixing,
    processes,
    sample,
)
from weightspace.cli.arguments import CommandError
from weightspace.data import DatasetUnavailable

__all__ = ["CommandError", "build_parser", "main"]

# In the order of `weightspace --help`.
COMMANDS = (compare, sample, llc, mixing, llc_vs_generalization, basins, datasets, data, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightspace",
        description="Bayesian posteriors over neural-network weights: sampling, "
                    "weight- and function-space diagnostics, local learning coefficients.")
    parser.add_argument("--version", action="version", version=f"weightspace {__version__}")
    _cache_options(parser, argparse.SUPPRESS)
    processes.add_options(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    # Also after the command's name: `weightspace sample ... --no-compile-cache`.
    for command_parser in sub.choices.values():
        _cache_options(command_parser, argparse.SUPPRESS)
        processes.add_options(command_parser, argparse.SUPPRESS)
    return parser


def _cache_options(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_argument_group("compilation cache")
    group.add_argument("--compile-cache", metavar="DIR", default=default,
                       help="keep compiled programs in DIR (a subfolder per host CPU), so "
                            "a rerun or resume loads them instead of compiling (default: "
                            "JAX_COMPILATION_CACHE_DIR, else WEIGHTSPACE_COMPILE_CACHE, else "
                            "~/.cache/weightspace/jax-compilation-cache)")
    group.add_argument("--no-compile-cache", action="store_true", default=default,
                       help="compile every program, keep nothing (also "
                            "WEIGHTSPACE_COMPILE_CACHE=off)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    compile_cache.enable(getattr(args, "compile_cache", None),
                         off=getattr(args, "no_compile_cache", False))
    watch = None
    try:
        watch = processes.start(args)
        code = args.func(args)
        if watch is not None:
            # Process 0 writes what the others skip (reports, figures): meet
            # before JAX's shutdown barrier, whose limit is 5 minutes.
            sharding.wait_for_processes(f"weightspace {args.command} finished")
        return code
    except CommandError as err:
        print(f"weightspace {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except DatasetUnavailable as err:  # from any command that loads a dataset
        print(f"weightspace {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if watch is None:
            raise
        watch.fail(err)  # names a lost peer if there is one; exits
    finally:
        if watch is not None:
            watch.done()
