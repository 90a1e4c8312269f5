"""The docs stay true to the code: every configuration field documented, links resolve, and the
commands the docs tell people to run exist."""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import pytest

from cd4ml import cli
from pipelines.config import REPO_ROOT, PipelineConfig

DOCS = os.path.join(REPO_ROOT, "docs")
MINE = ["architecture.md", "configuration.md", "adding-a-feature.md", "operations.md"]
# Commands a doc may name before they land (none at the moment).
ANNOUNCED: set = set()


def read(name):
    with open(os.path.join(DOCS, name)) as fh:
        return fh.read()


def test_configuration_lists_every_field_and_nothing_else():
    text = read("configuration.md")
    fields = {"CD4ML_" + f.name.upper() for f in dataclasses.fields(PipelineConfig)}
    missing = sorted(v for v in fields if f"`{v}`" not in text)
    assert not missing, f"docs/configuration.md lacks {missing}: add a row for each new PipelineConfig field"
    table = set(re.findall(r"^\| `(CD4ML_[A-Z0-9_]+)` \|", text, flags=re.M))
    assert table == fields, f"rows for fields that no longer exist: {sorted(table - fields)}"


def test_configuration_defaults_match_the_code():
    text = read("configuration.md")
    defaults = PipelineConfig(home="/h")
    for field in dataclasses.fields(PipelineConfig):
        value = getattr(defaults, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row = re.search(rf"^\| `CD4ML_{field.name.upper()}` \| `([^`]*)` \|", text, flags=re.M)
            assert row and float(row.group(1)) == float(value), field.name


def test_architecture_has_the_flow_diagram():
    text = read("architecture.md")
    assert "```mermaid" in text
    for stage in ("data drop", "pipeline", "registry", "server", "drift", "retrain"):
        assert stage in text.lower(), stage


@pytest.mark.parametrize("name", MINE)
def test_links_resolve(name):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", read(name)):
        if "://" in target:
            continue
        assert os.path.exists(os.path.join(DOCS, target)), f"{name}: broken link {target}"


@pytest.mark.parametrize("name", MINE)
def test_commands_named_in_docs_exist(name):
    commands = set(cli.COMMANDS)
    named = set(re.findall(r"`cd4ml ([a-z][a-z-]*)", read(name)))
    for block in re.findall(r"```\n(.*?)```", read(name), flags=re.S):
        named |= set(re.findall(r"^cd4ml ([a-z][a-z-]*)", block, flags=re.M))
    unknown = named - commands - ANNOUNCED
    assert not unknown, f"{name} names commands that do not exist: {sorted(unknown)}"


@pytest.mark.parametrize("name", MINE)
def test_documented_flags_exist(name):
    """Every `--flag` written after `cd4ml COMMAND` (in code spans and blocks) is a flag of COMMAND."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = read(name)
    snippets = re.findall(r"`(cd4ml [^`]+)`", text)
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        snippets += [line.split("#")[0] for line in block.splitlines() if line.startswith("cd4ml ")]
    checked = 0
    for snippet in snippets:
        command = snippet.split()[1]
        if command not in sub.choices:
            continue
        options = {o for a in sub.choices[command]._actions for o in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", snippet):
            assert flag in options, f"{name}: `{snippet.strip()}`: {command} has no {flag}"
            checked += 1
    if name == "operations.md":
        assert checked >= 10


def test_every_doc_is_linked_from_another():
    names = [os.path.basename(p) for p in glob.glob(os.path.join(DOCS, "*.md"))]
    corpus = "".join(read(n) for n in names)
    for name in MINE:
        if name != "architecture.md":
            assert f"({name})" in corpus, f"nothing links to {name}"
