"""Cloud Function entry point `on_drop`: cd4ml.triggers.cloud_function does the work.

Deployed with the cd4ml, pipelines and components packages copied beside this file
(docs/cloud-function.md); in the repository they are one folder up.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for candidate in (HERE, os.path.dirname(HERE)):  # deployed: packages copied beside main.py
    if os.path.isdir(os.path.join(candidate, "cd4ml")) and candidate not in sys.path:
        sys.path.insert(0, candidate)

import functions_framework  # noqa: E402

from cd4ml.triggers.cloud_function import handle_event  # noqa: E402


@functions_framework.cloud_event
def on_drop(event):
    print(json.dumps(handle_event(event, job_dir=HERE)), flush=True)
