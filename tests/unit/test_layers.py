"""The packages' imports point down the layers (read from the source with ast, nothing run):

    deployments  ->  sampling, trainers.families  ->  models, registry

models/ and registry/ are the ground and import neither each other nor anything above;
trainers/ never imports the Serve side; deployments/ knows the trainers only through
trainers.families, the one description of a model family.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "registry", "sampling", "trainers", "deployments")
# package -> packages it must never import
FORBIDDEN = {
    "models": {"registry", "sampling", "trainers", "deployments"},
    "registry": {"models", "sampling", "trainers", "deployments"},
    "sampling": {"trainers", "deployments"},
    "trainers": {"sampling", "deployments"},
    "deployments": set(),
}
# package -> the only modules of a package it may import from
ONLY_THROUGH = {("deployments", "trainers"): {"trainers.families"}}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def broken_rules(package: str, root: Path = REPO) -> list[str]:
    broken = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imports_of(path):
            target = module.split(".")[0]
            allowed = ONLY_THROUGH.get((package, target))
            if target in FORBIDDEN[package] or (allowed and module not in allowed):
                broken.append(f"{path.relative_to(root)}:{line} imports {module}")
    return broken


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package):
    assert broken_rules(package) == []


def test_the_check_sees_a_broken_rule(tmp_path):
    """Rule breakers planted in a scratch tree are reported (the check is not vacuous)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "bad.py").write_text("def f():\n    from registry import Registry\n")
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "bad.py").write_text("import trainers.loop\n")
    assert broken_rules("models", tmp_path) == ["models/bad.py:2 imports registry"]
    assert broken_rules("deployments", tmp_path) == ["deployments/bad.py:1 imports trainers.loop"]
