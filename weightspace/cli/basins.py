"""`weightspace basins`: do the samplers weight basins by their mass? HMC,
SGLD, MAMS and replica exchange (HMC or MAMS moves) on targets whose basin
masses are known exactly and on a small network with reference masses, from
low to high barriers (ws.experiments.basins)."""

from __future__ import annotations

import argparse
from pathlib import Path

from weightspace.cli.arguments import CommandError, float_list, name_list, reported
from weightspace.experiments.basins import FAMILIES, PRESETS, SAMPLERS, basins


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "basins", help="do the samplers weight basins by their mass? HMC, SGLD, MAMS and "
                       "replica exchange on targets with known basin masses",
        description="Runs every sampler on product targets whose basin masses are known "
                    "exactly (ws.slt.basin_target: a quadratic against a quartic minimum, "
                    "and a point against a normal crossing), from low to high barriers "
                    "(the barrier is n K at the saddle, so it grows with the sample size), "
                    "and on a one-unit tanh network whose basin masses come from "
                    "importance sampling (ws.slt.network_basin_target), at growing n, "
                    "with chains started from the prior. Reports each sampler's share of "
                    "the degenerate basin against the exact one, its Monte Carlo error, "
                    "the crossings, the basin diagnostic's verdict, the fraction of "
                    "coordinates R-hat flags, and the cost in gradients; states which "
                    "samplers weight basins by mass at which barriers. Writes "
                    "OUT/basins.json, OUT/basins.md and OUT/basins.png.")
    p.add_argument("--preset", default="quick", choices=list(PRESETS),
                   help="quick (default: 100-dimensional targets, 3 barriers, about 10 "
                        "minutes on 2 CPU cores) or full (1,000 factors, longer chains)")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--samplers", type=name_list(SAMPLERS), default=None,
                   help=f"comma-separated, from {', '.join(SAMPLERS)} (default: the "
                        f"preset's; quick leaves out replica_exchange_mams, the slowest)")
    p.add_argument("--families", type=name_list(FAMILIES), default=None,
                   help=f"comma-separated target families, from {', '.join(FAMILIES)} "
                        f"(default all)")
    p.add_argument("--barriers", type=float_list, default=None,
                   help="comma-separated barrier heights of the quartic and crossing "
                        "targets (default the preset's: 1,4,16 for quick)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a directory")
    with reported(TypeError, ValueError):
        study = basins(args.preset, out, samplers=args.samplers, families=args.families,
                       barriers=args.barriers, seed=args.seed)
    print()
    print(study)
    print(f"wrote {study.paths['json']}, {study.paths['table']}, {study.paths['figure']}")
    return 0
