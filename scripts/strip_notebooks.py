#!/usr/bin/env python
"""Strip outputs and execution counts from notebooks before committing (what nbstripout does).

    .venv/bin/python scripts/strip_notebooks.py [notebooks/*.ipynb]

tests/test_notebooks.py fails on a notebook committed with outputs.
"""

import glob
import os
import sys

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strip(path: str) -> bool:
    book = nbformat.read(path, as_version=4)
    changed = False
    for cell in book.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
        if "execution" in cell.get("metadata", {}):
            del cell.metadata["execution"]
            changed = True
    if changed:
        nbformat.write(book, path)
    return changed


if __name__ == "__main__":
    paths = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    for p in paths:
        print(("stripped " if strip(p) else "clean    ") + p)
