"""`weightspace info`: library versions and the devices JAX sees."""

from __future__ import annotations

import importlib.metadata as md
import sys

import jax

PACKAGES = ("weightspace", "jax", "jaxlib", "flax", "optax", "blackjax", "numpyro", "arviz",
            "orbax-checkpoint", "tensorflow-datasets")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="library versions and the devices JAX sees")
    p.set_defaults(func=run)


def run(args) -> int:
    for pkg in PACKAGES:
        try:
            print(f"{pkg:22s} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg:22s} not installed")
    print(f"{'python':22s} {sys.version.split()[0]}")
    print(f"processes {jax.process_count()}, devices {jax.device_count()}: "
          f"{jax.devices()}")
    return 0
