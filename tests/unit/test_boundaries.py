"""The import rules of DESIGN.md, as a table, checked on every module of the package.

Imports run one way: ``cli`` -> ``control``, ``errors``; ``plugin`` -> ``hostapi``,
``storage``, ``errors``; ``backend`` and ``hosts`` -> ``hostapi``, ``errors``;
``storage`` -> itself only. Nothing imports ``plugin``: hosts find it through their
plugin loading. Every import counts, relative ones and those inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "libervia_cache"

#: part of the package -> the other parts it may import (itself always allowed)
RULES: dict[str, set[str]] = {
    "errors": set(),
    "hostapi": {"errors"},
    "control": {"errors"},
    "cli": {"control", "errors"},
    "storage": set(),
    "plugin": {"hostapi", "storage", "errors"},
    "analysers": set(),
    "backend": {"hostapi", "errors", "control"},
    "hosts": {"hostapi", "errors"},
    "migration": {"storage"},
    "__main__": {"cli"},
}

#: modules allowed one more part, and why
EXCEPTIONS: dict[str, set[str]] = {
    # the commands that run the heavy parts, imported only when they run
    "cli.daemon": {"backend"},
    "cli.db": {"storage"},
}


def part_of(module: str) -> str:
    """``libervia_cache.plugin.sync`` -> ``plugin``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "migration"):
        relative = path.relative_to(ROOT / "migration").with_suffix("")
        return ".".join(["libervia_cache", "migration", *relative.parts])
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports made absolute."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
                if node.module is None:
                    modules.update(f"{target}.{alias.name}" for alias in node.names)
                else:
                    modules.add(target)
            elif node.module:
                modules.add(node.module)
    return {m for m in modules if m == "libervia_cache" or m.startswith("libervia_cache.")}


SOURCES = sorted(
    [*PACKAGE.rglob("*.py"), *(ROOT / "migration").rglob("*.py")],
    key=lambda p: str(p),
)


def test_every_part_of_the_package_has_a_rule() -> None:
    parts = {
        part_of(module_name(path)) for path in SOURCES if module_name(path) != "libervia_cache"
    }
    assert parts <= set(RULES), parts - set(RULES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_follow_the_rules(path: Path) -> None:
    name = module_name(path)
    own = part_of(name)
    allowed = RULES.get(own, set()) | {own}
    sub = ".".join(name.split(".")[1:3])
    allowed |= EXCEPTIONS.get(sub, set())
    wrong = {m for m in imported_modules(path) if part_of(m) not in allowed}
    assert not wrong, f"{name} ({own}) may import {sorted(allowed)}, not {sorted(wrong)}"


def test_nothing_imports_the_plugin() -> None:
    importers = {
        module_name(path)
        for path in SOURCES
        if part_of(module_name(path)) != "plugin"
        and any(part_of(m) == "plugin" for m in imported_modules(path))
    }
    assert not importers


def test_relative_imports_are_resolved() -> None:
    # the check above would be blind to `from ..backend import x` otherwise
    store = PACKAGE / "storage" / "store.py"
    assert "libervia_cache.storage.pages" in imported_modules(store) or any(
        m.startswith("libervia_cache.storage") for m in imported_modules(store)
    )
