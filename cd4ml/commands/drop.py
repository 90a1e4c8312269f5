"""Upload a data file to the watched bucket prefix (the demo's data drop).

    cd4ml drop data/bikeshare/span-2/bikeshare.csv --bucket gs://BUCKET [--prefix incoming/] [--name N.csv]

`cd4ml watch` (or the Cloud Function) picks it up as the next span. Against the local emulator,
set STORAGE_EMULATOR_HOST; --create makes the bucket if it does not exist.
"""

import os
import sys

from cd4ml.commands.common import config_from

HELP = "upload a data file to the bucket the watcher watches"


def register(parser):
    parser.add_argument("file", help="CSV file to drop")
    parser.add_argument("--bucket", required=True, help="gs://BUCKET (or BUCKET)")
    parser.add_argument("--prefix", dest="drop_prefix", help="object prefix (env CD4ML_DROP_PREFIX, default incoming/)")
    parser.add_argument("--name", help="object file name (default: a timestamped copy of the file name)")
    parser.add_argument("--create", action="store_true", help="create the bucket if missing")


def main(args) -> int:
    import datetime

    from cd4ml import storage

    if not os.path.isfile(args.file):
        print(f"cd4ml drop: {args.file}: no such file", file=sys.stderr)
        return 2
    config = config_from(args, drop_prefix=args.drop_prefix)
    client = storage.client(config.gcp_project)
    if args.create:
        storage.ensure_bucket(args.bucket, client)
    stem, ext = os.path.splitext(os.path.basename(args.file))
    name = args.name or f"{stem}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}{ext}"
    uri, generation = storage.upload(args.file, args.bucket, config.drop_prefix, name=name, gcs=client)
    print(f"dropped {args.file} as {uri} (generation {generation})")
    return 0
