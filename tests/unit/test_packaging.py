"""The wheel ships every package of the checkout (setup.cfg lists them by hand)."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}


def _present() -> set[str]:
    found = set()
    for init in (ROOT / "libervia_cache").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "migration").rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT / "migration").parts
        found.add(".".join(("libervia_cache", "migration", *parts)))
    return found


def test_every_package_is_declared() -> None:
    missing = _present() - _declared()
    assert not missing, f"packages missing from setup.cfg [options] packages: {sorted(missing)}"


def test_every_declared_package_exists() -> None:
    stale = _declared() - _present()
    assert not stale, f"setup.cfg lists packages that do not exist: {sorted(stale)}"
