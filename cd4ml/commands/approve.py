"""Approve a version that waits for a person (pushed under CD4ML_PROMOTION=manual): it serves from
the server's next registry poll.

    cd4ml models                                   lists what waits, with its evaluation vs the served version
    cd4ml approve VERSION --reason "reviewed the slices; summer MAE 37 vs 88"
    cd4ml approve --latest --reason "..."          the newest waiting one (CD does this in `environment: production`)
    cd4ml reject VERSION --reason "..."            it never serves

Who, when and why are written to <registry>/<VERSION>/APPROVAL.json and recorded in ML Metadata
(cd4ml.Promotion, action approve or reject).
"""

import os
import sys

from cd4ml.commands.common import add_config_flags, add_registry_flag, config_from

HELP = "approve a version waiting for approval (CD4ML_PROMOTION=manual): it serves"
REJECT = False


def register(parser):
    add_config_flags(parser)
    parser.add_argument("version", nargs="?", help="the waiting version")
    parser.add_argument("--latest", action="store_true", help="the newest waiting version")
    parser.add_argument("--reason", required=True, help="why (recorded with who and when)")
    add_registry_flag(parser)


def decide(args, reject: bool) -> int:
    from cd4ml import promotion

    name = "reject" if reject else "approve"
    config = config_from(args, registry=args.registry)
    waiting = promotion.pending(config.registry)
    if bool(args.version) == bool(args.latest):
        print(f"cd4ml {name}: give VERSION or --latest (waiting: "
              f"{', '.join(v.version for v in waiting) or 'none'})", file=sys.stderr)
        return 2
    version = args.version or (waiting[-1].version if waiting else "")
    from components import model_card

    card = model_card.read(os.path.join(config.registry, version)) if version else None
    if card:  # what the decision is about, before it is recorded
        print(model_card.summary(card))
    try:
        d = promotion.approve(config.registry, version, args.reason, config.metadata_path, reject=reject)
    except promotion.PromotionError as exc:
        print(f"cd4ml {name}: {exc}", file=sys.stderr)
        return 2
    what = "rejected: it will not serve" if reject else "approved: it serves from the server's next poll"
    print(f"{d.version} {what} (was serving {d.previous or 'nothing'}; recorded in ML Metadata as execution "
          f"{d.execution_id})" + (f"\n  note: {d.note}" if d.note else ""))
    return 0


def main(args) -> int:
    return decide(args, REJECT)
