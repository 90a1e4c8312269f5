"""Time from a data drop to the new model version answering requests, and its parts.

Runs the demo loop (cd4ml/demo/loop.py) once in a fresh home and writes JSON:
  drop_to_answer_s   upload -> the server answers with the version trained on the drop
  parts              upload, watcher (span placement + pipeline run + push), hot load
  steps              every step of the loop with its start offset and duration

    .venv/bin/python benchmarks/loop.py [-o benchmarks/results/loop.json]
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        "upload_s": steps.get("drop span 2 (Jul-Dec) into the bucket"),
        "watcher_retrain_push_s": steps.get("watcher: new span, retrain, validate, bless, push"),
        "hot_load_s": steps.get("server hot-loads the new version"),
        "rollback_s": steps.get("roll back"),
        "roll_forward_s": steps.get("roll forward"),
    }
    doc = {"drop_to_answer_s": round(result["drop_to_answer_s"], 2), "parts": parts,
           "steps": result["timeline"]["steps"], "total_s": result["timeline"]["total_s"],
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(doc, fh, indent=2)
    print(result["timeline_text"])
    print(json.dumps({"drop_to_answer_s": doc["drop_to_answer_s"], **parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
