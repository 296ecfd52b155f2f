"""`weightspace compare`: the main job. HMC, SGD, a deep ensemble, SGLD, cyclical
SGHMC and mean-field VI on one posterior (a preset: `quick`, or Izmailov et al.
2021's `paper-*` settings), with R-hat in weight and function space, predictive
metrics and local learning coefficients, into an output directory
(ws.experiments.compare)."""

from __future__ import annotations

import argparse
from typing import Any

from weightspace.cli.arguments import reported
from weightspace.experiments import presets
from weightspace.experiments.comparison import CompareError, compare


def _set_pair(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE (e.g. hmc.num_samples=20), "
                                         f"got {text!r}")
    return name.strip(), presets.parse_value(value.strip())


def run(args) -> int:
    with reported(CompareError):
        results = compare(args.preset, args.out, smoke=args.smoke, data_dir=args.data_dir,
                          seed=args.seed, progress=not args.no_progress,
                          overrides=dict(args.set or []))
    return 0 if all(r["status"] == "ok" for r in results["stages"].values()) else 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="HMC against SGD, a deep ensemble, SGLD, cyclical SGHMC and MFVI, "
                        "with R-hat and LLC, into an output directory",
        description="Runs HMC, SGD, a deep ensemble, SGLD, cyclical SGHMC and mean-field VI "
                    "(and any method registered in ws.experiments.methods) on one posterior "
                    "(a preset), then R-hat of HMC in weight and function "
                    "space, each method's accuracy, NLL, ECE, Brier and agreement and total "
                    "variation against HMC, and local learning coefficients at the SGD "
                    "solution, the ensemble members and HMC draws. Writes OUT/results.json, "
                    "OUT/report.md and its figures, and prints the table. A failed stage is "
                    "reported and the others run; running the same command again resumes "
                    "finished stages. Exit status 1 when a stage did not finish.")
    p.add_argument("--preset", default="quick", choices=list(presets.PRESETS),
                   help="quick (default: digits, MLP(256, 256), under 10 minutes on 2 CPU "
                        "cores); paper-cifar10, paper-imdb, paper-mnist (Izmailov et al. "
                        "2021, Table 3; for TPU pods)")
    p.add_argument("--out", required=True, help="output directory (created, or resumed)")
    p.add_argument("--smoke", action="store_true",
                   help="a handful of steps on a few rows, every stage running (for tests)")
    p.add_argument("--set", action="append", type=_set_pair, metavar="FIELD=VALUE",
                   help="change one preset field, e.g. --set hmc.num_samples=20 (repeatable; "
                        "fields: " + ", ".join(presets.fields()) + ")")
    p.add_argument("--data-dir", default=None,
                   help="where downloaded datasets are prepared (see `weightspace data prepare`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
