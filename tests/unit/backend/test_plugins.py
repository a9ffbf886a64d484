"""Plugin loading: discovery, dependency order, failures and their consequences."""

from __future__ import annotations

import configparser
import importlib.metadata
import logging
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from libervia_cache.backend.plugins import (
    ENTRY_POINT_GROUP,
    PluginLoadError,
    load_plugins,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


class FakeEntryPoint:
    """An entry point whose ``load`` returns a prepared module or raises."""

    def __init__(self, name: str, load: Callable[[], Any]) -> None:
        self.name = name
        self._load = load

    def load(self) -> Any:
        return self._load()


class Host:
    def __init__(self) -> None:
        self.plugins: dict[str, Any] = {}
        self.constructed: list[str] = []


def fake_plugin(
    import_name: str,
    /,
    dependencies: list[str] | None = None,
    recommendations: list[str] | None = None,
    constructor: Callable[[Any], None] | None = None,
    **info: Any,
) -> FakeEntryPoint:
    module = types.ModuleType(f"fake_{import_name}")

    class Main:
        def __init__(self, host: Any) -> None:
            if constructor is not None:
                constructor(host)
            host.constructed.append(import_name)
            self.host = host

    module.Main = Main  # type: ignore[attr-defined]
    module.PLUGIN_INFO = {  # type: ignore[attr-defined]
        "name": f"Plugin {import_name}",
        "import_name": import_name,
        "dependencies": dependencies or [],
        "recommendations": recommendations or [],
        "main": "Main",
        "description": f"fake plugin {import_name}",
        **info,
    }
    return FakeEntryPoint(import_name, lambda: module)


def broken_import(name: str) -> FakeEntryPoint:
    def load() -> Any:
        raise ImportError(f"No module named 'missing_{name}'")

    return FakeEntryPoint(name, load)


def failing_constructor(host: Any) -> None:
    raise RuntimeError("cannot start")


def test_plugins_are_constructed_with_host_and_returned_by_import_name() -> None:
    host = Host()
    loaded = load_plugins(host, [fake_plugin("A"), fake_plugin("B")])
    assert list(loaded) == ["A", "B"]
    assert all(plugin.host is host for plugin in loaded.values())  # type: ignore[attr-defined]


def test_dependencies_are_loaded_before_dependents() -> None:
    host = Host()
    entry_points = [
        fake_plugin("CACHE", ["XEP-0060", "STORE"]),
        fake_plugin("XEP-0060", ["STORE"]),
        fake_plugin("STORE"),
    ]
    loaded = load_plugins(host, entry_points)
    assert list(loaded) == ["STORE", "XEP-0060", "CACHE"]
    assert host.constructed == ["STORE", "XEP-0060", "CACHE"]


def test_independent_plugins_keep_their_discovery_order() -> None:
    loaded = load_plugins(Host(), [fake_plugin(n) for n in ("C", "A", "B")])
    assert list(loaded) == ["C", "A", "B"]


def test_constructor_sees_its_dependencies_in_host_plugins() -> None:
    seen: list[Any] = []
    host = Host()
    load_plugins(
        host,
        [
            fake_plugin("CACHE", ["XEP-0060"], constructor=lambda h: seen.append(h.plugins)),
            fake_plugin("XEP-0060"),
        ],
    )
    assert "XEP-0060" in seen[0]
    assert list(host.plugins) == ["XEP-0060", "CACHE"]


def test_host_without_plugins_mapping_is_accepted() -> None:
    host = types.SimpleNamespace(constructed=[])
    assert list(load_plugins(host, [fake_plugin("A")])) == ["A"]


def test_present_recommendations_are_loaded_first() -> None:
    loaded = load_plugins(Host(), [fake_plugin("A", recommendations=["B"]), fake_plugin("B")])
    assert list(loaded) == ["B", "A"]


def test_absent_recommendations_are_ignored() -> None:
    loaded = load_plugins(Host(), [fake_plugin("A", recommendations=["NOT_INSTALLED"])])
    assert list(loaded) == ["A"]


def test_failing_recommendations_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    entry_points = [
        fake_plugin("A", recommendations=["B", "C"]),
        broken_import("B"),
        fake_plugin("C", constructor=failing_constructor),
    ]
    assert list(load_plugins(Host(), entry_points)) == ["A"]


def test_recommendation_closing_a_cycle_is_dropped() -> None:
    loaded = load_plugins(
        Host(), [fake_plugin("A", ["B"]), fake_plugin("B", recommendations=["A"])]
    )
    assert list(loaded) == ["B", "A"]


def test_import_error_is_logged_by_name_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        loaded = load_plugins(Host(), [broken_import("BROKEN"), fake_plugin("OK")])
    assert list(loaded) == ["OK"]
    assert "BROKEN" in caplog.text
    assert "missing_BROKEN" in caplog.text


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"name": 3}, "name"),
        ({"import_name": ""}, "import_name"),
        ({"main": "Nope"}, "Nope"),
        ({"dependencies": "XEP-0060"}, "dependencies"),
        ({"recommendations": [1]}, "recommendations"),
        ({"description": None}, "description"),
    ],
)
def test_bad_plugin_info_is_logged_by_name_and_skipped(
    caplog: pytest.LogCaptureFixture, info: dict[str, Any], reason: str
) -> None:
    with caplog.at_level(logging.ERROR):
        loaded = load_plugins(Host(), [fake_plugin("BAD", **info), fake_plugin("OK")])
    assert list(loaded) == ["OK"]
    assert "BAD" in caplog.text
    assert reason in caplog.text


def test_module_without_plugin_info_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    empty = FakeEntryPoint("EMPTY", lambda: types.ModuleType("empty"))
    with caplog.at_level(logging.ERROR):
        assert load_plugins(Host(), [empty]) == {}
    assert "EMPTY" in caplog.text
    assert "PLUGIN_INFO" in caplog.text


def test_constructor_exception_is_logged_by_name_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = Host()
    with caplog.at_level(logging.ERROR):
        loaded = load_plugins(
            host, [fake_plugin("FAILS", constructor=failing_constructor), fake_plugin("OK")]
        )
    assert list(loaded) == ["OK"]
    assert "FAILS" not in host.plugins
    assert "FAILS" in caplog.text
    assert "cannot start" in caplog.text


def test_required_plugin_failing_to_import_raises_naming_both() -> None:
    with pytest.raises(PluginLoadError) as raised:
        load_plugins(Host(), [fake_plugin("CACHE", ["XEP-0060"]), broken_import("XEP-0060")])
    message = str(raised.value)
    assert "CACHE" in message
    assert "XEP-0060" in message
    assert "\n" not in message


def test_required_plugin_failing_to_start_raises_naming_both() -> None:
    entry_points = [
        fake_plugin("CACHE", ["XEP-0060"]),
        fake_plugin("XEP-0060", constructor=failing_constructor),
    ]
    with pytest.raises(PluginLoadError) as raised:
        load_plugins(Host(), entry_points)
    message = str(raised.value)
    assert "CACHE" in message
    assert "XEP-0060" in message
    assert "cannot start" in message
    assert "\n" not in message


def test_missing_dependency_raises_naming_both() -> None:
    with pytest.raises(PluginLoadError, match=r"CACHE.*requires plugin XEP-0060.*not installed"):
        load_plugins(Host(), [fake_plugin("CACHE", ["XEP-0060"])])


def test_dependency_cycle_raises_naming_the_cycle() -> None:
    entry_points = [fake_plugin("A", ["B"]), fake_plugin("B", ["C"]), fake_plugin("C", ["A"])]
    host = Host()
    with pytest.raises(PluginLoadError, match="cycle: A -> B -> C -> A"):
        load_plugins(host, entry_points)
    assert host.constructed == []


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(PluginLoadError, match="cycle: A -> A"):
        load_plugins(Host(), [fake_plugin("A", ["A"])])


def test_duplicate_import_name_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    first = fake_plugin("A", description="first")
    second = fake_plugin("A", description="second")
    host = Host()
    with caplog.at_level(logging.ERROR):
        loaded = load_plugins(host, [first, second])
    assert list(loaded) == ["A"]
    assert host.constructed == ["A"]
    assert "duplicate" in caplog.text


def test_installed_entry_points_declare_the_shipped_plugins() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"XEP-0060", "PUBSUB_CACHE", "MICROBLOG_ANALYSER"} <= names


def test_setup_cfg_declares_the_shipped_plugins_in_the_group() -> None:
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(REPO_ROOT / "setup.cfg")
    declared = setup["options.entry_points"][ENTRY_POINT_GROUP]
    names = {line.split("=")[0].strip() for line in declared.splitlines() if line.strip()}
    assert {"XEP-0060", "PUBSUB_CACHE", "MICROBLOG_ANALYSER"} <= names
