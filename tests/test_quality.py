"""Code-quality gates that run with the suite: lint, types and the one-way layering of packages."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "samverka"

# package -> packages it must never import (imports point down: api -> interactions -> search/validation
# -> store -> fhir; see docs/architecture.md)
FORBIDDEN = {
    "store": {"api", "interactions", "search", "validation", "cli", "loader", "integrity"},
    "fhir": {"api", "interactions", "search", "validation", "store", "cli"},
    "validation": {"api", "interactions", "search", "store", "cli"},
    "search": {"api", "interactions", "validation", "cli"},
    "interactions": {"api", "cli"},
    "auth": {"api", "cli"},
    "audit": {"api", "cli"},
    "events": {"api", "cli"},
    "sweden": {"api", "interactions", "search", "store", "validation", "cli"},
    "modules": {"api", "cli"},
    # the SDK is for module developers: nothing of the server
    "sdk": {"api", "interactions", "search", "validation", "store", "fhir", "auth", "audit", "events", "modules",
            "cli", "loader", "integrity", "sweden", "generate", "config", "errors"},
}


def _imports(path: Path) -> set[str]:
    """The samverka subpackages a module imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(SRC).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level])
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    found.add(parts[0].removesuffix(".py"))
                elif node.names:
                    found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("samverka."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("samverka."):
                    found.add(a.name.split(".")[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package: str) -> None:
    """No module in a lower layer imports a higher one (storage never sees HTTP)."""
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        wrong = _imports(path) & FORBIDDEN[package]
        if wrong:
            bad.append(f"{path.relative_to(SRC)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


def test_ruff_is_clean() -> None:
    """`ruff check` passes on the package and the tests (rules in pyproject.toml)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    paths = [p for p in ("src", "tests", "benchmarks", "examples") if (ROOT / p).is_dir()]
    r = subprocess.run([ruff, "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_is_clean() -> None:
    """`mypy` passes on the package (settings in pyproject.toml)."""
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
