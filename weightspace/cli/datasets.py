"""`weightspace datasets`: the dataset names, and one dataset's shapes."""

from __future__ import annotations

from weightspace import data


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list the datasets (and load one with NAME)")
    p.add_argument("name", nargs="?", help="load this dataset and print its shapes")
    p.add_argument("--data-dir", default=None,
                   help="where downloaded datasets are prepared (see `weightspace data prepare`)")
    p.set_defaults(func=run)


def run(args) -> int:
    print("embedded (no network):", ", ".join(data.EMBEDDED_NAMES))
    print("downloaded once into --data-dir (weightspace data prepare NAME):",
          ", ".join(data.TFDS_NAMES))
    if args.name:
        ds = data.load(args.name, data_dir=args.data_dir)
        print(ds)
    return 0
