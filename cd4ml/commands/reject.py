"""Reject a version that waits for approval (CD4ML_PROMOTION=manual): the server never picks it.

    cd4ml reject VERSION --reason "the hr=17 slice regressed"

Recorded in <registry>/<VERSION>/APPROVAL.json and in ML Metadata (cd4ml.Promotion, action reject).
"""

from cd4ml.commands.approve import decide, register  # noqa: F401 - the same flags

HELP = "reject a version waiting for approval: it never serves"


def main(args) -> int:
    return decide(args, reject=True)
