"""Time from drift (or a data drop) to the new model version answering requests, and its parts.

Runs the demo loop (cd4ml/demo/loop.py) once in a fresh home and writes JSON:
  drift_to_answer_s  drift seen in the drift log -> the server answers with the version retrained
                     on the harvested traffic (harvest + pipeline run + push + hot load)
  drop_to_answer_s   upload -> the server answers with the version trained on the drop
  live_mae           MAE on held-out Jul-Dec days of the span-1 model and of the retrained one
  parts              each step's seconds
  steps              every step of the loop with its start offset and duration

    .venv/bin/python benchmarks/loop.py [-o benchmarks/results/loop.json]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import results_file  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="benchmarks/results/loop.json")
    args = parser.parse_args(argv)
    from cd4ml.commands.common import quiet_libraries
    quiet_libraries()
    from cd4ml.demo import loop

    result = loop.run_loop(progress=print)
    steps = {s["name"]: s["seconds"] for s in result["timeline"]["steps"]}
    parts = {
        "harvest_retrain_push_s": steps.get("drift trigger: harvest the labelled traffic, retrain on the window"),
        "hot_load_after_drift_s": steps.get("server hot-loads the retrained version"),
        "upload_s": steps.get("drop the Jul-Dec file into the bucket"),
        "watcher_retrain_push_s": steps.get("watcher: new span, retrain, validate, bless, push"),
        "hot_load_s": steps.get("server hot-loads the new version"),
        "rollback_s": steps.get("roll back"),
        "roll_forward_s": steps.get("roll forward"),
    }
    doc = results_file.write(args.output, {
        "drift_to_answer_s": round(result["drift_to_answer_s"], 2),
        "drop_to_answer_s": round(result["drop_to_answer_s"], 2), "live_mae": result["live_mae"], "parts": parts,
        "steps": result["timeline"]["steps"], "total_s": result["timeline"]["total_s"]}, echo=False)
    print(result["timeline_text"])
    print(json.dumps({"drift_to_answer_s": doc["drift_to_answer_s"], "drop_to_answer_s": doc["drop_to_answer_s"],
                      "live_mae": doc["live_mae"], **parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
