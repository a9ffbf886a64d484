"""What the plugin declares and hooks into its host, and that :meth:`stop` takes it all back.

The plugin declares its ``[pubsub_cache]`` keys in ``PLUGIN_INFO["config"]`` (the host
merges and validates them; parsing is tested with the daemon's configuration, in
``tests/unit/backend/test_config.py``). It adds two triggers, one event handler and the
``ps_cache_*`` bridge methods when built, and removes every one of them when stopped,
after which nothing of it runs: no sync, no check, no event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from libervia_cache.hostapi import GET_ITEMS_POINT, GOT_ITEMS_POINT
from libervia_cache.plugin import PLUGIN_INFO, PubsubCache
from libervia_cache.plugin.settings import SECTION, CacheStrategy, Settings
from libervia_cache.plugin.store_access import StoreAccess
from libervia_cache.plugin.sync import Outcome
from tests.fakes import FakeConfig, FakeService, atom
from tests.unit.plugin.conftest import BLOG, COMMENTS, Start, items

BRIDGE_METHODS = {
    "ps_cache_get",
    "ps_cache_sync",
    "ps_cache_purge",
    "ps_cache_reset",
    "ps_cache_search",
    "ps_cache_status",
}


def declared() -> Any:
    return PLUGIN_INFO["config"][SECTION]  # type: ignore[index]


# --- settings ---------------------------------------------------------------------------


def test_the_plugin_declares_its_pubsub_cache_keys_with_their_defaults() -> None:
    assert {key.name: key.default for key in declared()} == {
        "strategy": CacheStrategy.CACHE,
        "db_url": None,
        "cache_limit": 5000,
        "progress_deadline": 21600,
        "check_interval": 600,
        "sync_page_size": 100,
    }


def test_every_declared_key_says_what_it_is_for() -> None:
    assert all(key.help.strip() for key in declared())


def test_the_settings_default_to_the_declared_defaults() -> None:
    config = FakeConfig(PLUGIN_INFO["config"], {})  # type: ignore[arg-type]

    assert Settings.from_config(config) == Settings()


def test_the_settings_follow_the_configured_values() -> None:
    config = FakeConfig(
        PLUGIN_INFO["config"],  # type: ignore[arg-type]
        {
            "pubsub_cache.strategy": CacheStrategy.NO_CACHE,
            "pubsub_cache.db_url": "sqlite+aiosqlite:////tmp/elsewhere.db",
            "pubsub_cache.cache_limit": 10,
            "pubsub_cache.progress_deadline": 60,
            "pubsub_cache.sync_page_size": 7,
        },
    )

    assert Settings.from_config(config) == Settings(
        serving=False,
        db_url="sqlite+aiosqlite:////tmp/elsewhere.db",
        cache_limit=10,
        progress_deadline=60,
        page_size=7,
    )


# --- wiring -----------------------------------------------------------------------------


async def test_the_plugin_hooks_its_triggers_event_handler_and_bridge_methods(
    start: Start,
) -> None:
    cache = await start()
    trigger: Any = cache.host.trigger
    bridge: Any = cache.host.bridge

    assert trigger.callbacks(GET_ITEMS_POINT) == [cache.plugin._get_items_trigger]
    assert trigger.callbacks(GOT_ITEMS_POINT) == [cache.plugin._got_items_trigger]
    assert cache.host.xep_0060.handlers == [cache.plugin.events]
    assert set(bridge.methods) == BRIDGE_METHODS


async def test_the_plugin_names_its_sqlite_file_for_the_host_to_lock(
    start: Start, tmp_path: Path
) -> None:
    cache = await start()

    assert cache.plugin.exclusive_files() == [tmp_path / "cache.db"]


def test_a_postgresql_or_memory_database_has_no_file_to_lock_and_the_default_has_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    def files(url: str | None) -> list[Path]:
        plugin = PubsubCache.__new__(PubsubCache)
        plugin.store_access = StoreAccess(url)
        return plugin.exclusive_files()

    assert files("postgresql+asyncpg://cache@db.example/cache") == []
    assert files("sqlite+aiosqlite://") == []
    assert files(None) == [tmp_path / "libervia-cache" / "cache.db"]


async def test_stop_removes_every_trigger_the_event_handler_and_every_bridge_method(
    start: Start,
) -> None:
    cache = await start()
    trigger: Any = cache.host.trigger
    bridge: Any = cache.host.bridge

    await cache.stop()

    assert trigger.callbacks(GET_ITEMS_POINT) == []
    assert trigger.callbacks(GOT_ITEMS_POINT) == []
    assert cache.host.xep_0060.handlers == []
    assert bridge.methods == {}


async def test_a_sync_running_at_stop_is_cancelled(start: Start, service: FakeService) -> None:
    service.publish(BLOG, *items(12))
    cache = await start(config={"pubsub_cache.sync_page_size": 5})
    second_page = service.hold("items", let_through=1)
    sync = await cache.start_sync()
    await second_page.reached

    await cache.stop()
    second_page.release()

    assert sync.outcome is Outcome.CANCELLED
    assert len(cache.plugin.syncs) == 0


async def test_after_stop_reads_start_no_sync_and_events_are_not_applied(
    start: Start, service: FakeService
) -> None:
    service.publish(BLOG, *items(3))
    service.publish(COMMENTS, *items(2, "c"))
    cache = await start()
    await cache.synchronise()
    await cache.stop()

    service.publish(BLOG, atom("i04"))
    answer = await cache.get(COMMENTS)  # unknown to the cache

    assert answer[1]["cached"] is False
    assert cache.plugin.counters.syncs_started == 1
    assert cache.plugin.counters.events_applied == 0
    assert cache.events.nodes == []


async def test_a_check_in_flight_at_stop_starts_no_sync(start: Start, service: FakeService) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    service.publish(BLOG, atom("i04"), notify=False)  # the check will find a change
    checking = service.hold("items")
    await cache.plugin.profile_connected(cache.client)
    await checking.reached

    stopping = defer.Deferred.fromCoroutine(cache.stop())
    checking.release()
    await stopping

    assert cache.plugin.counters.syncs_started == 1
    assert len(cache.plugin.syncs) == 0


async def test_a_connection_after_stop_checks_nothing(start: Start, service: FakeService) -> None:
    service.publish(BLOG, *items(3))
    cache = await start()
    await cache.synchronise()
    await cache.stop()
    asked = len(service.requests)

    await cache.plugin.profile_connected(cache.client)

    assert len(service.requests) == asked
    assert cache.plugin.counters.syncs_started == 1
