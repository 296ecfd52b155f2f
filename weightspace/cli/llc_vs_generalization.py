"""`weightspace llc-vs-generalization`: the LLCs `compare` estimated (SGD solution,
ensemble members, HMC draws) against their test NLL and generalization gap,
with a figure and a table (ws.experiments.llc_vs_generalization)."""

from __future__ import annotations

from pathlib import Path

from weightspace.cli.arguments import reported
from weightspace.experiments.generalization import (
    FIGURE,
    JSON,
    MIN_POINTS,
    GeneralizationError,
    llc_vs_generalization,
    load_results,
)
from weightspace.jsonio import is_writer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "llc-vs-generalization",
        help="LLC against test NLL and the generalization gap, from a compare run",
        description="Reads DIR/results.json of `weightspace compare` and relates the local "
                    "learning coefficient at each position (the SGD solution, the deep-"
                    "ensemble members, the HMC draws) to its test NLL and its "
                    "generalization gap (test NLL - training NLL): a table, Spearman and "
                    "Pearson correlations over all positions and per method (with at "
                    f"least {MIN_POINTS} positions), and a figure. Writes {FIGURE} and "
                    f"{JSON} into DIR.")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the output directory of `weightspace compare`; the figure and "
                        "the JSON are written there")
    p.add_argument("--no-figure", action="store_true", help=f"do not draw {FIGURE}")
    p.set_defaults(func=run)


def run(args) -> int:
    with reported(GeneralizationError):
        results, _ = load_results(args.out, name="--out")
        result = llc_vs_generalization(results, out=args.out, figure=not args.no_figure)
    print(result)
    if is_writer():
        written = [p for p in (result.figure, str(Path(args.out) / JSON)) if p]
        print(f"wrote {', '.join(written)}")
    return 0
