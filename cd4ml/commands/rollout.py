"""Guarded rollout: canaries promoted or rolled back by live evidence (cd4ml/rollout.py).

    cd4ml rollout                       status: what serves, the canary and its evidence, each
                                        guarded version's state
    cd4ml rollout watch [--once]        the controller: start the next canary, judge the running
                                        one every --interval seconds (a loop here, a CronJob on a
                                        cluster: k8s/base/rollout-cronjob.yaml)
    cd4ml rollout promote VERSION       promote the canary (or a waiting version) now
    cd4ml rollout abort VERSION         roll the canary back now (or withdraw a waiting version)

Versions are guarded when the pipeline pushed them under CD4ML_ROLLOUT=guarded. The guards and
their bounds: CD4ML_GUARD_MAE_RATIO, CD4ML_GUARD_P99_RATIO, CD4ML_GUARD_ERROR_RATE,
CD4ML_GUARD_OUTLIER_RATIO (after CD4ML_GUARD_MIN_ROWS rows); the canary: CD4ML_CANARY_SHARE,
CD4ML_CANARY_MIN_ROWS, CD4ML_PROMOTE_MARGIN, CD4ML_PROMOTE_CONFIDENCE (`cd4ml config` shows them).
"""

import json
import sys
import time

from cd4ml.commands.common import add_config_flags, config_from

HELP = "guarded rollout: canary status; watch (promote or roll back on live evidence); promote/abort"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--registry", help="model registry (env CD4ML_REGISTRY)")
    parser.add_argument("--log-dir", help="the servers' logs (default: beside the registry)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("status", help="what serves, the canary and its evidence (the default)")
    watch = sub.add_parser("watch", help="start canaries and decide on them, every --interval seconds")
    watch.add_argument("--once", action="store_true", help="one look, then exit (a CronJob's run)")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between looks (default %(default)s)")
    for name, what in (("promote", "promote the canary or a waiting version now"),
                       ("abort", "roll the canary back now, or withdraw a waiting version")):
        one = sub.add_parser(name, help=what)
        one.add_argument("version")
        one.add_argument("--reason", default="", help="why (recorded in ML Metadata and the model card)")
    parser.add_argument("--json", action="store_true", help="status as JSON")


def main(args) -> int:
    from cd4ml import rollout

    config = config_from(args, registry=args.registry)
    action = args.action or "status"
    try:
        if action == "status":
            doc = rollout.status(config, args.log_dir)
            print(json.dumps(doc, indent=2, default=str) if args.json else format_status(doc))
            return 0
        if action in ("promote", "abort"):
            done = (rollout.promote_now if action == "promote" else rollout.abort)(config, args.version, args.reason)
            print(f"{done.line()} (ML Metadata execution {done.execution_id})")
            return 0
        while True:  # watch
            done = rollout.step(config, args.log_dir)
            if done.action != "nothing" or args.once:
                print(f"{time.strftime('%H:%M:%S')} {done.line()}", flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except rollout.RolloutError as exc:
        print(f"cd4ml rollout {action}: {exc}", file=sys.stderr)
        return 2


def format_status(doc) -> str:
    lines = [f"serving {doc['serving'] or 'nothing'} ({doc['why']}); CD4ML_ROLLOUT={doc['policy']}"]
    canary = doc["canary"]
    if canary:
        lines.append(f"canary {canary['version']} on {canary['share']:.0%} of traffic since {canary['started_at']}: "
                     f"{canary['verdict']} ({canary['why']})")
        for role in ("serving", "canary"):
            e = canary["evidence"][role]
            mae = f"{e['live_mae']:.2f}" if e["live_mae"] is not None else "-"
            p99 = f"{e['p99_ms']:.1f} ms" if e["p99_ms"] is not None else "-"
            lines.append(f"  {role:<8} {e['version']:<12} requests {e['requests']:>6}  errors {e['error_rate']:>6.1%}  "
                         f"p99 {p99:>9}  outliers {e['outlier_rate']:>6.1%}  labelled {e['labelled_rows']:>6}  "
                         f"live MAE {mae}")
    else:
        lines.append("no canary running" + (f"; waiting: {', '.join(doc['waiting'])}" if doc["waiting"] else ""))
    for version, state in sorted(doc["versions"].items()):
        lines.append(f"  {version}: {state['state']} at {state['at']}"
                     + (f" by the {state['guard']} guard" if state.get("guard") else "")
                     + (f" ({state['reason']})" if state.get("reason") else ""))
    return "\n".join(lines)
