"""Pin a model version: the server answers with it from its next registry poll (seconds).

    cd4ml promote VERSION [--reason "..."]     pin VERSION (must be complete and blessed)
    cd4ml promote --latest                     remove the pin: serve the newest version again
    cd4ml promote VERSION --shadow             score VERSION beside the served one, answers unchanged
    cd4ml promote --no-shadow                  stop the shadow

Writes <registry>/SERVING.json and records the decision in ML Metadata (cd4ml.Promotion).
"""

import sys

from cd4ml.commands.common import add_config_flags, add_decision_flags, config_from

HELP = "pin a model version for serving (or --latest to unpin)"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("version", nargs="?", help="version to serve")
    parser.add_argument("--latest", action="store_true", help="unpin: serve the newest complete version")
    parser.add_argument("--shadow", action="store_true",
                        help="run VERSION as a shadow challenger (logged, compared, never answers)")
    parser.add_argument("--no-shadow", dest="no_shadow", action="store_true", help="stop the shadow")
    parser.add_argument("--force", action="store_true", help="pin even a version that was not blessed")
    add_decision_flags(parser)


def main(args) -> int:
    from cd4ml import promotion

    config = config_from(args, registry=args.registry)
    if args.shadow or args.no_shadow:
        if bool(args.version) == bool(args.no_shadow):
            print("cd4ml promote: give VERSION --shadow, or --no-shadow", file=sys.stderr)
            return 2
        try:
            d = promotion.shadow(config.registry, None if args.no_shadow else args.version, args.reason,
                                 config.metadata_path)
        except promotion.PromotionError as exc:
            print(f"cd4ml promote: {exc}", file=sys.stderr)
            return 2
        print(f"shadow: {d.version or 'none'} (was {d.previous or 'none'}); the server follows at its next poll")
        return 0
    if bool(args.version) == bool(args.latest):
        print("cd4ml promote: give a VERSION or --latest", file=sys.stderr)
        return 2
    try:
        if args.latest:
            d = promotion.unpin(config.registry, args.reason, config.metadata_path)
        else:
            d = promotion.promote(config.registry, args.version, args.reason, config.metadata_path,
                                  force=args.force)
    except promotion.PromotionError as exc:
        print(f"cd4ml promote: {exc}", file=sys.stderr)
        return 2
    print(f"{d.action}: {d.previous or '-'} -> {d.version or '-'} ({d.reason}); recorded in MLMD "
          f"(execution {d.execution_id})")
    if d.note:
        print(f"note: {d.note}")
    return 0
