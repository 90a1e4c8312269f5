"""Harvest labelled serving traffic into the next span of the data lake, then train on it.

The server's prediction log joined with its feedback (by request id) becomes `span-N/harvest.csv`
with its provenance in `span-N/HARVEST.json` (cd4ml/triggers/harvest.py). The pipeline then runs on
span N, which trains on the window of recent spans ending there; a span the validation gate
refuses is quarantined with its report under <home>/quarantine/ and the serving model stays.
Nothing is harvested twice. `cd4ml drift-retrain` does the same when drift is reported.
"""

from cd4ml.commands.common import add_config_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "turn labelled serving traffic into the next span, then train on it"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--log-dir", help="the server's logs: a folder or a gs:// prefix (default <home>/serving-logs)")
    parser.add_argument("--dry-run", action="store_true", help="say which rows would be harvested; write nothing")
    parser.add_argument("--no-train", action="store_true",
                        help="write the span only (`cd4ml run` validates and trains on it later)")
    parser.add_argument("--list", action="store_true", help="list the harvests recorded in ML Metadata and exit")
    add_verbose_flag(parser)


def main(args) -> int:
    quiet_libraries(args.verbose)
    from cd4ml.triggers.harvest import Harvester

    config = config_from(args)
    harvester = Harvester(config, log_dir=args.log_dir)
    if args.list:
        from cd4ml.mlmd import records, store

        if not store.exists(config.metadata_path):
            print("no harvests yet (no ML Metadata store)")
            return 0
        for r in records.read(store.open_store(config.metadata_path), records.HARVEST):
            print(f"span {r['span']:3d}  {r['rows']:6d} rows  {r['requests']:5d} requests  "
                  f"{r['first_served']} .. {r['last_served']}  {r['outcome']:12s} {r['version'] or r['run_id']}")
        return 0
    harvest = harvester.harvest(dry_run=args.dry_run)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    if not harvest.span:
        print("nothing new to harvest")
        return 0
    if args.no_train:
        print(f"span {harvest.span} written; `cd4ml run --span {harvest.span}` validates and trains on it")
        return 0
    from cd4ml.runner import run_and_report
    from pipelines import local_runner

    run, outcome = harvester.train(harvest, run_and_report)
    print(local_runner.format_summary(run))
    print(f"harvested span {harvest.span}: {outcome}")
    return run.exit_code
