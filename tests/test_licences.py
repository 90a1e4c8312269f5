"""Every package in every locked environment is usable in production (docs/licences.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from pipelines.config import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import licences  # noqa: E402

# Releases known to be under the Business Source License 1.1 (checked against each wheel's metadata).
BSL_RELEASES = {
    "seldon-core": lambda v: tuple(map(int, v.split(".")[:2])) >= (1, 18),
    "alibi-detect": lambda v: tuple(map(int, v.split(".")[:3])) >= (0, 11, 5),
    "alibi": lambda v: tuple(map(int, v.split(".")[:3])) >= (0, 9, 5),
}


def test_licences_doc_is_current_and_every_licence_is_allowed():
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "licences.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_no_lock_pins_a_business_source_release():
    for _, lock in licences.ENVIRONMENTS.values():
        for name, version in licences.lock_pins(lock).items():
            assert not (name in BSL_RELEASES and BSL_RELEASES[name](version)), f"{lock}: {name}=={version}"


def test_the_check_refuses_a_business_source_or_unnamed_licence_and_a_drifted_pin():
    rows = [{"name": "seldon-core", "version": "1.18.2", "licence": "Business Source License 1.1"},
            {"name": "mystery", "version": "1.0", "licence": "UNKNOWN"},
            {"name": "numpy", "version": "2.0.0", "licence": "BSD License"},
            {"name": "scipy", "version": "1.12.0", "licence": "BSD License"}]
    found = licences.problems("serving", rows, {"numpy": "1.26.4", "scipy": "1.12.0"})
    assert len(found) == 3
    assert re.search(r"seldon-core 1.18.2 .*Business Source", found[0])
    assert "mystery 1.0 names no licence" in found[1]
    assert "numpy 2.0.0 is installed, the lock pins 1.26.4" in found[2]


def test_the_doc_lists_every_environment():
    with open(licences.OUTPUT) as fh:
        text = fh.read()
    for env, (_, lock) in licences.ENVIRONMENTS.items():
        assert f"## {env} (`{lock}`" in text
    assert re.search(r"\| seldon-core \| 1\.17\.1 \| Apache", text)
