"""The `weightspace` command. Sampling, diagnostics and experiment subcommands
arrive with their issues; `datasets` and `info` are here from the start."""

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


def build_parser() -> argparse.ArgumentParser:
    from weightspace import __version__

    parser = argparse.ArgumentParser(
        prog="weightspace",
        description="Bayesian posteriors over neural-network weights: sampling, "
                    "weight- and function-space diagnostics, local learning coefficients.")
    parser.add_argument("--version", action="version", version=f"weightspace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
