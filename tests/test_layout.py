"""The package's shape: every module imports on its own, the import graph has no cycle, the CLI
uses only the public API, stages do not format each other's store paths, and every stage's
parameters are documented where the CLI help can be checked against them."""

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mdclust
from mdclust import methods

PKG = Path(mdclust.__file__).parent
PUBLIC = ("mdclust", "mdclust.methods", "mdclust.datasets")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(module_name(p) for p in PKG.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """mdclust modules a file imports, at any depth (function-local imports included: a cycle
    hidden in a function is still a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            if not base.startswith("mdclust"):
                continue
            for alias in node.names:  # `from mdclust.core import layout` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mdclust"))
        assert not (isinstance(node, ast.ImportFrom) and node.level), \
            f"{path}: relative import (the package uses absolute imports)"
    return found


def graph() -> dict[str, set[str]]:
    g = {}
    for path in PKG.rglob("*.py"):
        name = module_name(path)
        # a package's __init__ is imported with every submodule; an edge to it is an edge to
        # what it imports, which the top-level mdclust/__init__ (the public API) must not be
        g[name] = {m for m in imports_of(path) if m != name and m != "mdclust"} \
            if name != "mdclust" else set()
    return g


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in g and not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if not state.get(node):
            visit(node)


def test_a_cycle_would_be_found(tmp_path):
    # the checker itself can fail: a two-module cycle written to disk is reported
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from mdclust.core import layout\nfrom mdclust.stages.cluster import cluster\n")
    b.write_text("import mdclust.stages.train\n")
    assert imports_of(a) == {"mdclust.core.layout", "mdclust.stages.cluster"}
    assert imports_of(b) == {"mdclust.stages.train"}


def test_infrastructure_and_methods_never_import_stages():
    g = graph()
    for name, deps in g.items():
        if name.startswith(("mdclust.core", "mdclust.methods")):
            # the registry names stage adapters as strings, loaded on demand
            assert not [d for d in deps if d.startswith(("mdclust.stages", "mdclust.cli"))], name


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_on_its_own(name):
    done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_cli_imports_only_the_public_api():
    for dep in imports_of(PKG / "cli.py"):
        assert dep in PUBLIC or dep.startswith("mdclust.methods."), dep


def test_store_paths_are_formatted_in_the_layout_module_only():
    pattern = re.compile(r"""f?["'](interests|features|views|text_features|clusterings|train)/""")
    for path in PKG.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.relative_to(PKG)}:{i}: {line.strip()}"


STAGES = {"embed": "embed", "candidates": "candidates", "filter_nouns": "filter",
          "train": "train", "cluster": "cluster", "evaluate": "eval", "export": "export",
          "info": "info", "report": "report"}
# `mdclust export --to-folders DIR` calls export_folders(out=DIR): its options count too
ALSO = {"export": ("export_folders", {"to_folders"})}
# CLI options named in the singular where the stage takes a list
PLURAL = {"interest": "interests", "method": "methods"}
# allow_download: a hidden no-op kept for 0.1 scripts (downloads are the default now)
CLI_ONLY = {"store", "as_json", "quiet", "out", "allow_download"}


def documented(fn) -> set[str]:
    """Names in the numpydoc Parameters section of a docstring."""
    doc = inspect.getdoc(fn) or ""
    if "Parameters\n----------" not in doc:
        return set()
    section = doc.split("Parameters\n----------", 1)[1]
    section = re.split(r"\n\n[A-Z]\w+\n-+", section)[0]
    return {m.group(1) for m in re.finditer(r"^(\w+) :", section, re.M)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_parameters_are_documented(stage):
    fn = getattr(mdclust, stage)
    params = set(inspect.signature(fn).parameters)
    missing = params - documented(fn)
    assert not missing, f"{stage}: undocumented parameters {sorted(missing)}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_cli_options_match_stage_parameters(stage):
    """Every option of the command is a parameter of its stage function (or a CLI concern),
    so the stage docstring documents what the CLI help says."""
    from typer.main import get_command

    from mdclust.cli import app

    command = get_command(app).commands[STAGES[stage]]
    fn = getattr(mdclust, stage)
    params = set(inspect.signature(fn).parameters)
    config = set()
    if stage == "train":  # method settings go through the registry's dataclasses
        for name in methods.TRAINED:
            config |= set(methods.get(name).load("config").__dataclass_fields__)
        config |= {"wd", "preset"}  # wd = weight_decay; preset picks a settings set
    if stage in ALSO:
        other, renamed = ALSO[stage]
        config |= set(inspect.signature(getattr(mdclust, other)).parameters) | renamed
    options = {PLURAL.get(p.name, p.name) if stage == "report" else p.name
               for p in command.params}
    unknown = options - params - config - CLI_ONLY
    assert not unknown, f"`mdclust {STAGES[stage]}` options not in {stage}(): {sorted(unknown)}"


def test_registry_entries_resolve():
    for m in methods.METHODS.values():
        assert m.kind in methods.KINDS
        cfg = m.settings(k=3)
        assert cfg.k == 3 and callable(m.load("fit"))
        if m.kind == "trained":
            assert callable(m.load("stage"))
    with pytest.raises(mdclust.BadInput, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(mdclust.BadInput, match="has no setting bogus"):
        methods.get("kmeans").settings(k=2, bogus=1)
