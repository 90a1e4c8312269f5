"""Serve the previous good version: the newest complete, blessed version older than the one being
served is pinned in <registry>/SERVING.json (the server switches within its poll interval), and
the decision is recorded in ML Metadata. `cd4ml promote --latest` rolls forward again.
"""

import sys

from cd4ml.commands.common import add_config_flags, add_decision_flags, config_from

HELP = "roll back to the previous good model version"


def register(parser):
    add_config_flags(parser)
    add_decision_flags(parser)


def main(args) -> int:
    from cd4ml import promotion

    config = config_from(args, registry=args.registry)
    try:
        d = promotion.rollback(config.registry, args.reason, config.metadata_path)
    except promotion.PromotionError as exc:
        print(f"cd4ml rollback: {exc}", file=sys.stderr)
        return 2
    from cd4ml import alerts

    alerts.notify(config.home, "rolled_back", f"version {d.previous}", f"{promotion.user()} rolled back "
                  f"{d.previous} -> {d.version}: {d.reason}", at=d.at)
    print(f"rollback: {d.previous} -> {d.version} ({d.reason}); recorded in MLMD (execution {d.execution_id})")
    if d.note:
        print(f"note: {d.note}")
    return 0
