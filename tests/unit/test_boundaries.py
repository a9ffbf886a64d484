"""The two boundaries of DESIGN.md: the plugin codes against the host API only, and
the reference daemon finds plugins through entry points only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "libervia_cache"
PLUGIN_SIDE = sorted(
    [
        *(PACKAGE / name for name in ("plugin.py", "analysis.py", "sync.py", "search.py")),
        PACKAGE / "bridge_api.py",
        *(PACKAGE / "storage").glob("*.py"),
        *(PACKAGE / "analysers").glob("*.py"),
    ]
)
DAEMON_SIDE = sorted((PACKAGE / "backend").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", PLUGIN_SIDE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_plugin_never_imports_the_reference_daemon(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.startswith("libervia_cache.backend")}


@pytest.mark.parametrize("path", DAEMON_SIDE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_daemon_never_imports_the_plugin(path: Path) -> None:
    plugin_modules = (
        "libervia_cache.plugin",
        "libervia_cache.plugin.analysis",
        "libervia_cache.sync",
        "libervia_cache.storage",
        "libervia_cache.analysers",
        "libervia_cache.bridge_api",
    )
    assert not {m for m in imported_modules(path) if m.startswith(plugin_modules)}
