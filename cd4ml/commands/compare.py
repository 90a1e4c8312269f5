"""Compare model versions on live traffic, from the server's prediction and feedback logs.

    cd4ml compare                         live MAE of every version that answered (feedback joined)
    cd4ml compare CHAMPION CHALLENGER     also replay the labelled live rows through both versions
                                          (a shadow evaluation: no client sees the challenger)
"""

import json
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from, quiet_libraries

HELP = "compare versions on live traffic: live MAE per version, and a shadow replay of labelled rows"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("versions", nargs="*", help="versions to replay the labelled live rows through")
    parser.add_argument("--log-dir", help="the server's log directory (default <home>/serving-logs)")
    add_registry_flag(parser)
    parser.add_argument("--limit", type=int, help="replay only the last N labelled rows")
    parser.add_argument("--json", action="store_true")


def main(args) -> int:
    quiet_libraries()
    from cd4ml import compare
    from cd4ml.contract import default_log_dir

    config = config_from(args, registry=args.registry)
    log_dir = args.log_dir or default_log_dir(config.registry)
    live = compare.live(log_dir)
    replayed = None
    if args.versions:
        try:
            replayed = compare.replay(config.registry, args.versions, log_dir, args.limit)
        except ValueError as exc:
            print(f"cd4ml compare: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"live": live, "replay": replayed}, indent=2))
    else:
        print(compare.format_report(live, replayed))
    return 0
