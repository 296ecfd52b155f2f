"""`weightspace data prepare NAME...`: fetch, check and convert downloadable
datasets into a data directory (ws.data.prepare), so that runs, and every
process of a multi-host job, find them there."""

from __future__ import annotations

from weightspace import data
from weightspace.data import prepared
from weightspace.cli.arguments import reported


def run(args) -> int:
    for name in args.names:
        with reported(ValueError):
            folder = data.prepare(name, args.data_dir, mirror=args.mirror,
                                  progress=not args.no_progress,
                                  keep_downloads=args.keep_downloads)
        # Its row counts, read from the memory-mapped copy (nothing decoded).
        train, test, _ = prepared.open_prepared(name, prepared.resolve_data_dir(args.data_dir))
        print(f"{name}: {len(train):,} training and {len(test):,} test rows in {folder}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="prepare downloadable datasets in a data directory",
        description="Datasets that are downloaded rather than shipped.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    prepare = actions.add_parser(
        "prepare", help="fetch, check and convert datasets into --data-dir",
        description="Downloads each dataset's published files (MNIST's and Fashion-MNIST's "
                    "IDX files, CIFAR's binary batches, the aclImdb review tree), checks "
                    "their SHA-256 against the pinned checksums, converts them to .npy "
                    "arrays and moves those into DATA_DIR/weightspace/NAME once complete: "
                    "a killed preparation leaves nothing a later run reads. Already "
                    "prepared datasets are left as they are. No TensorFlow needed.")
    prepare.add_argument("names", nargs="+", metavar="NAME", choices=list(data.TFDS_NAMES),
                         help="one or more of: " + ", ".join(data.TFDS_NAMES))
    prepare.add_argument("--data-dir", default=None,
                         help="where to prepare them (default: WEIGHTSPACE_DATA_DIR, else "
                              "TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    prepare.add_argument("--mirror", default=None, metavar="URL",
                         help="fetch the published files from URL/NAME/<file name> instead of "
                              "their authors' sites (checksums still checked; default: "
                              "WEIGHTSPACE_DATA_MIRROR)")
    prepare.add_argument("--keep-downloads", action="store_true",
                         help="keep the downloaded files in DATA_DIR/weightspace/downloads")
    prepare.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
