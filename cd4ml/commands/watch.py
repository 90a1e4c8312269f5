"""Watch a bucket for data drops: each new object becomes the next span and retrains the model.

    cd4ml watch --bucket gs://BUCKET --prefix incoming/ [--once] [--submit build/pipeline.json]

Uses the real google-cloud-storage client (STORAGE_EMULATOR_HOST for the local emulator). Locally
the object is copied to <data root>/span-N/ and the pipeline runs; with --submit the object is
copied in the bucket to the gs:// data root and a Kubeflow / Vertex run is submitted instead.
Every object (bucket/name#generation) is processed exactly once, recorded in ML Metadata; after a
restart the watcher skips what finished and resumes what was interrupted. A drop that fails
validation is quarantined (bucket quarantine/ and <home>/quarantine/, with its report) and the
serving model stays. Object names that could escape the data root are refused.

    cd4ml watch --schedules schedules.yaml [--bucket ...]

also runs the schedules file's entries here when they are due (cd4ml/triggers/schedule.py): the
file `cd4ml schedule apply` gives Kubeflow or Vertex AI, kept on this machine.
"""

import sys

from cd4ml.commands.common import add_config_flags, add_trigger_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "watch a bucket for new data and retrain on each drop (exactly once per object)"


def add_bucket_flags(parser):
    parser.add_argument("--bucket", help="gs://BUCKET (or BUCKET) to watch for drops")
    parser.add_argument("--prefix", dest="drop_prefix",
                        help="object prefix of drops (env CD4ML_DROP_PREFIX, default incoming/)")


def register(parser):
    add_config_flags(parser)
    add_bucket_flags(parser)
    add_trigger_flags(parser, interval=5.0, what="drops")
    parser.add_argument("--schedules", metavar="FILE", help="also run this schedules file's entries when due")
    add_verbose_flag(parser)


def main(args) -> int:
    quiet_libraries(args.verbose)
    from cd4ml.triggers import drop as triggers

    config = config_from(args, drop_prefix=args.drop_prefix)
    if not args.bucket and not args.schedules:
        print("cd4ml watch: give --bucket (drops to watch), --schedules (a schedules file), or both", file=sys.stderr)
        return 2
    local = None
    if args.schedules:
        from cd4ml.triggers.schedule import LocalSchedule
        from pipelines import schedules

        try:
            local = LocalSchedule(config, schedules.load(args.schedules))
        except schedules.ScheduleError as exc:
            print(f"cd4ml watch: {exc}", file=sys.stderr)
            return 2
        print(f"running {len(local.entries)} schedule(s) from {args.schedules} when due (UTC)", flush=True)
    if not args.bucket:
        return _schedules_only(args, local)
    prefix = config.drop_prefix
    if args.submit and not config.data_root.startswith("gs://"):
        print(f"cd4ml watch: --submit places drops in the cluster's data root, which must be gs:// "
              f"(CD4ML_DATA_ROOT is {config.data_root})", file=sys.stderr)
        return 2
    handler = triggers.make_handler(config, args.bucket, prefix, submit_job=args.submit)
    if args.list:
        for rec in handler.ledger.history():
            print(f"{rec['key']}  {rec['state']:8s} {rec.get('outcome', ''):12s} span {rec.get('span', '-')}"
                  f"  {rec.get('version', '') or rec.get('run_id', '')}")
        return 0
    print(f"watching gs://{handler.bucket}/{prefix} -> {'submit ' + args.submit if args.submit else config.data_root}"
          f" (MLMD {config.metadata_path})", flush=True)
    try:
        results = handler.watch(interval=args.interval, once=args.once, also=local.run_due if local else None)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    if args.once:
        print(f"{len(results)} drop(s) processed" if results else "nothing new")
    bad = [r for r in results if r.outcome in (triggers.FAILED,)]
    return 1 if bad else 0


def _schedules_only(args, local) -> int:
    import time

    while True:
        ran = local.run_due()
        if args.once:
            print(f"{len(ran)} schedule(s) ran" if ran else "nothing due this minute")
            return 1 if any(r.get("status") == "error" for r in ran) else 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
            return 0
