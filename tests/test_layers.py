"""The layout's rules, checked on the source (every import, function-level ones included):

- imports run one way: components -> pipelines -> the command layer; scoring (the model code the
  pipeline and the servers share) reads only the feature list and the contract; serving depends only on
  components, scoring, the contract and the log store (whose GCS client components use too); the
  contract and the ML Metadata layer depend on nothing above them;
- one module registers our own ML Metadata types (cd4ml/mlmd/records.py);
- the names of the contract (a version's files, signatures, log names) are written in
  cd4ml/contract.py only.
"""

from __future__ import annotations

import ast
import glob
import os
from typing import Dict, List, Set, Tuple

import pytest

from cd4ml import contract
from pipelines.config import REPO_ROOT

REPO_PACKAGES = ("cd4ml", "components", "scoring", "pipelines", "serving")
# What each layer may import from the repository (prefixes of module names).
ALLOWED = {
    "cd4ml.contract": (),
    # The serving logs' store (a folder or a gs:// prefix): shared by the server and its readers.
    "cd4ml.logstore": ("cd4ml.contract",),
    "cd4ml.mlmd": ("cd4ml.contract", "cd4ml.mlmd"),
    # The log store's GCS client reads a gs:// registry (components/registry.py).
    # The model code the pipeline and the servers share: it reads the feature list, nothing else of ours.
    "scoring": ("scoring", "components.features", "cd4ml.contract"),
    "components": ("components", "scoring", "cd4ml.contract", "cd4ml.logstore"),
    "pipelines": ("pipelines", "components", "scoring", "cd4ml.contract", "cd4ml.mlmd"),
    "serving": ("serving", "components", "scoring", "cd4ml.contract", "cd4ml.logstore"),
}
# The command layer: never imported by the layers above.
COMMAND_LAYER = ("cd4ml.cli", "cd4ml.commands", "cd4ml.report", "cd4ml.triggers", "cd4ml.demo",
                 "cd4ml.promotion", "cd4ml.compare", "cd4ml.runner", "cd4ml.storage")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _sources() -> List[str]:
    found = []
    for package in REPO_PACKAGES:
        found += glob.glob(os.path.join(REPO_ROOT, package, "**", "*.py"), recursive=True)
    return sorted(found)


def _repo_imports(path: str) -> List[Tuple[int, str]]:
    """(line, module) for every import of a repository module in the file."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                     if os.path.exists(os.path.join(REPO_ROOT, *node.module.split("."), a.name + ".py"))
                                     or os.path.isdir(os.path.join(REPO_ROOT, *node.module.split("."), a.name))]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in REPO_PACKAGES]
    return found


def _layer(module: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return ""


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_imports_run_one_way():
    problems = []
    for path in _sources():
        module = _module_name(path)
        layer = _layer(module)
        if not layer:
            continue  # the command layer may import anything below it
        for line, imported in _repo_imports(path):
            if imported in ("cd4ml",):  # the package itself (it only sets TF_USE_LEGACY_KERAS)
                continue
            if not _within(imported, ALLOWED[layer]):
                problems.append(f"{os.path.relpath(path, REPO_ROOT)}:{line} imports {imported}")
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_nothing_below_the_command_layer_names_it():
    hits = [f"{os.path.relpath(p, REPO_ROOT)}:{line} {name}"
            for p in _sources() if _layer(_module_name(p))
            for line, name in _repo_imports(p) if _within(name, COMMAND_LAYER)]
    assert hits == []


def test_the_rule_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "serving_bad.py"
    bad.write_text("def f():\n    from cd4ml import report\n    import pipelines.local_runner\n")
    names = [n for _, n in _repo_imports(str(bad))]
    assert "cd4ml.report" in names and "pipelines.local_runner" in names
    assert not _within("pipelines.local_runner", ALLOWED["serving"])


def _calls(path: str, attribute: str) -> List[int]:
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attribute]


@pytest.mark.parametrize("call", ["put_execution_type", "put_context_type"])
def test_one_module_registers_our_ml_metadata_types(call):
    where = {os.path.relpath(p, REPO_ROOT) for p in _sources() if _calls(p, call)}
    assert where == {os.path.join("cd4ml", "mlmd", "records.py")}, where


def _contract_names() -> Dict[str, str]:
    """Literal value -> contract constant, for the names two parts must agree on."""
    names = ("MANIFEST", "HOLDOUT", "SCHEMA_FILE", "EVALUATION_FILE", "PIN_FILE", "SHADOW_FILE",
             "EXAMPLE_SIGNATURE", "RAW_SIGNATURE", "RELEASE_ARTIFACT", "DETECTORS_ARTIFACT", "LOG_DIR_NAME",
             "MAE", "RMSE")
    return {getattr(contract, n): n for n in names}


def _string_constants(path: str) -> List[Tuple[int, str]]:
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    docstrings: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_contract_names_are_written_once():
    names = _contract_names()
    contract_path = os.path.join(REPO_ROOT, "cd4ml", "contract.py")
    hits = [f"{os.path.relpath(p, REPO_ROOT)}:{line} {value!r} (use contract.{names[value]})"
            for p in _sources() if p != contract_path
            for line, value in _string_constants(p) if value in names]
    assert hits == [], "\n".join(hits)


def _serving_sources() -> List[str]:
    return sorted(glob.glob(os.path.join(REPO_ROOT, "serving", "*.py")))


def test_serving_classes_are_small_and_no_module_holds_state():
    """The serving core was one 466-line class with a module-global metrics collector beside it;
    each room is a class of its own now, and a server builds its own (so workers share nothing)."""
    too_long, globals_ = [], []
    for path in _serving_sources():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200:
                too_long.append(f"{os.path.basename(path)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
            if isinstance(node, ast.Global):
                globals_.append(f"{os.path.basename(path)}:{node.lineno} global {', '.join(node.names)}")
    assert not too_long and not globals_, too_long + globals_
