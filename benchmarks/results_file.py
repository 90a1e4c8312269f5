"""Writing a benchmark's JSON: the figures, the machine they were measured on, then the file."""

import json
import os
import platform


def write(path: str, doc: dict, echo: bool = True) -> dict:
    doc = dict(doc, machine={"cpus": os.cpu_count(), "python": platform.python_version()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2)
    if echo:
        print(json.dumps(doc, indent=2))
    return doc
