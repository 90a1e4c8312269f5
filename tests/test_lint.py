"""The lint the CI workflow runs (`make lint`) holds on the whole tree, so a red lint job is
caught by `make test` first."""

import os
import subprocess
import sys

from pipelines.config import REPO_ROOT


def test_ruff_is_clean():
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
