"""List the model versions in the registry: metrics, blessing, lineage (span, run) and which one
the server answers with (* marks it; a SERVING.json pin wins over the newest complete version).
--history adds the promote/rollback decisions recorded in ML Metadata; --card VERSION prints that
version's model card (components/model_card.py).
"""

import json
import os
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from

HELP = "list pushed model versions with metrics, blessing, lineage and the one being served"


def register(parser):
    add_config_flags(parser)
    add_registry_flag(parser)
    parser.add_argument("--history", action="store_true", help="also show promote/rollback decisions")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--card", metavar="VERSION",
                        help="print this version's model card (with --json: the whole card; its page is "
                             "<registry>/VERSION/model_card.html)")


def main(args) -> int:
    import dataclasses

    from cd4ml import promotion

    config = config_from(args, registry=args.registry)
    if args.card:
        return _card(config.registry, args.card, args.json)
    versions = promotion.list_versions(config.registry, config.metadata_path)
    decisions = promotion.history(config.metadata_path, config.registry) if args.history else []
    if args.json:
        print(json.dumps({"registry": config.registry, "versions": [dataclasses.asdict(v) for v in versions],
                          "history": decisions}, indent=2, default=str))
        return 0
    print(f"registry {config.registry}")
    print(promotion.format_versions(versions))
    if args.history:
        print("decisions:" if decisions else "no promote/rollback decisions recorded")
        for d in decisions:
            print(f"  {d.get('at')}  {d.get('action'):8s} {d.get('previous') or '-'} -> {d.get('version') or '-'}"
                  f"  by {d.get('user')}: {d.get('reason')}")
    return 0


def _card(registry: str, version: str, as_json: bool) -> int:
    from components import model_card

    card = model_card.read(os.path.join(registry, version))
    if card is None:
        print(f"cd4ml models --card: version {version} has no model card in {registry} "
              f"(not pushed there, or pushed before cd4ml wrote cards)", file=sys.stderr)
        return 1
    print(json.dumps(card, indent=2, sort_keys=True) if as_json else model_card.summary(card))
    return 0
