"""Retrain when the server reports drift: debounced, with a cooldown and a minimum of new labelled
rows (prediction log joined with feedback). The new labelled rows are harvested into the next span
(`cd4ml harvest`), then the model retrains on the window of recent spans ending there: locally,
on Kubeflow (--submit JOB), or through GitHub (--github OWNER/REPO: a repository_dispatch).

Reads the server's drift, prediction and feedback logs (default <home>/serving-logs; a gs:// prefix
on a cluster). Each request is recorded in ML Metadata (cd4ml.RetrainRequest) with its harvest
(cd4ml.Harvest); --list shows them.
"""

import time

from cd4ml.commands.common import add_config_flags, add_trigger_flags, add_verbose_flag, config_from, quiet_libraries

HELP = "when the server reports drift: harvest its labelled traffic, retrain on the window (debounced, cooldown)"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--log-dir", help="the server's logs: a folder or a gs:// prefix (default <home>/serving-logs)")
    parser.add_argument("--cooldown", type=float,
                        help="seconds between retrain requests (env CD4ML_RETRAIN_COOLDOWN_S)")
    parser.add_argument("--min-rows", type=int, help="new labelled rows needed (env CD4ML_RETRAIN_MIN_ROWS)")
    parser.add_argument("--debounce", type=float, default=30.0,
                        help="seconds a drift burst settles (default %(default)s)")
    add_trigger_flags(parser, interval=10.0, what="retrain requests")
    parser.add_argument("--github", metavar="OWNER/REPO",
                        help="send a repository_dispatch (drift-detected) instead of training here; the token "
                             "comes from CD4ML_GITHUB_TOKEN (env CD4ML_GITHUB_REPOSITORY)")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would happen and which rows the harvest would take; change nothing")
    add_verbose_flag(parser)


def main(args) -> int:
    quiet_libraries(args.verbose)
    from cd4ml.triggers.dispatch import GitHubDispatch
    from cd4ml.triggers.drift import DriftRetrainer

    config = config_from(args)
    try:
        notify = GitHubDispatch.from_env(args.github)
    except ValueError as err:
        print(f"cd4ml drift-retrain: {err}")
        return 2
    retrainer = DriftRetrainer(config, log_dir=args.log_dir, cooldown_s=args.cooldown, min_rows=args.min_rows,
                               debounce_s=args.debounce, submit_job=args.submit, notify=notify)
    if args.list:
        for r in retrainer.requests():
            harvested = f"harvested span {r['harvest_span']}" if r.get("harvest_span") else "no harvest"
            window = f"window {r['window']}" if r.get("window") else ""
            print(f"{r.get('requested_at')}  {r.get('outcome', ''):14s} rows {r.get('labelled_rows')}  "
                  f"drifted {r.get('drifted')}  {harvested}  {window}  {r.get('version') or r.get('run_id', '')}")
        return 0
    print(f"watching drift in {retrainer.log_dir} (cooldown {retrainer.cooldown_s:.0f} s, "
          f"min rows {retrainer.min_rows}, debounce {retrainer.debounce_s:.0f} s)", flush=True)
    last = None
    try:
        while True:
            outcome = retrainer.check(dry_run=args.dry_run)
            line = f"{outcome.decision.action}: {outcome.decision.why}"
            if line != last:
                print(line, flush=True)
                last = line
            if args.once:
                return 1 if outcome.outcome.startswith("error") else 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
