"""The cache plugin on a fake host (:mod:`tests.fakes`), and what its tests share.

``start`` builds the real :class:`PubsubCache` on a :class:`FakeHost` with a real SQLite
store in the test's directory, and stops it at the end of the test. :class:`Cache` is
what a test holds: the plugin, its host and service, and the few questions tests ask
(a read through the host's request path, the service's own answer, a sync to its end,
the node as the store has it). Nothing here waits by sleeping: syncs are awaited
through :meth:`NodeSync.wait`, events through :data:`EVENT_APPLIED_POINT`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from libervia_cache.hostapi import Client, ItemsResult
from libervia_cache.plugin import EVENT_APPLIED_POINT, PubsubCache
from libervia_cache.plugin.sync import NodeKey, NodeSync, Outcome
from libervia_cache.storage import NodeInfo, Store
from tests.conftest import run
from tests.fakes import FakeHost, FakeService, atom, next_turn, start_plugin

#: a node the shipped microblog analyser synchronises
BLOG = "urn:xmpp:microblog:0"
#: another one (comments of a post)
COMMENTS = "urn:xmpp:microblog:0:comments/post-1"


def items(count: int, prefix: str = "i") -> list[tuple[str, str]]:
    """``count`` microblog items ``i01``, ``i02``..., oldest first."""
    return [atom(f"{prefix}{n:02d}") for n in range(1, count + 1)]


def xml(answer: ItemsResult) -> list[str]:
    """The items of an answer, as the XML a frontend receives."""
    return [item.toXml() for item in answer[0]]


def ids(answer: ItemsResult) -> list[str]:
    return [item.getAttribute("id") for item in answer[0]]


def without_origin(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata of an answer, without where it came from."""
    return {k: v for k, v in metadata.items() if k != "cached"}


class EventsApplied:
    """Counts the events the cache has taken into account (applied, or their node made
    suspect): :meth:`wait` waits for the n-th, without polling."""

    def __init__(self, host: FakeHost) -> None:
        self.nodes: list[str] = []
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []
        host.trigger.add(EVENT_APPLIED_POINT, self._applied)

    def _applied(self, client: Any, event: Any) -> None:
        self.nodes.append(event.nodeIdentifier)
        for waiter in [w for w in self._waiters if w[0] <= len(self.nodes)]:
            self._waiters.remove(waiter)
            # on the next turn: the test goes on once the cache is done with the event,
            # not from inside the cache's own call
            next_turn(waiter[1])

    def wait(self, count: int) -> defer.Deferred[None]:
        """Fired once ``count`` events were taken into account since the start."""
        done: defer.Deferred[None] = defer.Deferred()
        if len(self.nodes) >= count:
            done.callback(None)
        else:
            self._waiters.append((count, done))
        return done


@dataclass
class Cache:
    """A started plugin on a fake host, seen as profile ``profile``."""

    plugin: PubsubCache
    host: FakeHost
    service: FakeService
    events: EventsApplied
    profile: str = "bob"
    stopped: bool = False

    def for_profile(self, profile: str) -> Cache:
        """The same plugin, seen as another of the host's profiles."""
        return dataclasses.replace(self, profile=profile)

    @property
    def client(self) -> Client:
        return self.host.clients[self.profile]

    @property
    def store(self) -> Store:
        return self.plugin.store_access.require()

    def key(self, node: str = BLOG) -> NodeKey:
        return (self.profile, self.service.jid.full(), node)

    def get(self, node: str = BLOG, **request: Any) -> defer.Deferred[ItemsResult]:
        """An items request through the host's request path (its trigger points)."""
        return self.host.xep_0060.get_items(self.client, self.service.jid, node, **request)

    def network(self, node: str = BLOG, **request: Any) -> defer.Deferred[ItemsResult]:
        """The service's own answer (no trigger point: the cache is not asked)."""
        return self.host.xep_0060.get_items_from_network(
            self.client, self.service.jid, node, **request
        )

    async def synchronise(self, node: str = BLOG) -> NodeSync:
        """Synchronise ``node`` and wait for the end of its sync (completed)."""
        sync = await self.start_sync(node)
        await sync.wait()
        assert sync.outcome is Outcome.COMPLETED, (sync.outcome, sync.error)
        return sync

    async def start_sync(self, node: str = BLOG) -> NodeSync:
        return await self.plugin.management.synchronise(self.client, self.service.jid, node)

    def running(self, node: str = BLOG) -> NodeSync:
        """The sync of ``node`` running now (there must be one)."""
        sync = self.plugin.syncs.running(self.key(node))
        assert sync is not None, f"no sync of {node} is running"
        return sync

    async def settled(self, node: str = BLOG) -> None:
        """Until no sync of ``node`` runs (whether one ran, or ended already)."""
        while (sync := self.plugin.syncs.running(self.key(node))) is not None:
            await sync.wait()

    async def node(self, node: str = BLOG) -> NodeInfo | None:
        return await self.store.get_node(self.profile, self.service.jid.full(), node)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.plugin.stop()


Start = Callable[..., Awaitable[Cache]]


@pytest.fixture
def service(request: pytest.FixtureRequest) -> FakeService:
    """The pubsub service; ``indirect`` parameter: whether it honours RSM (default), or
    ignores it as Prosody 0.12 does."""
    return FakeService(rsm=getattr(request, "param", True))


@pytest.fixture(scope="session")
def empty_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database the store created (migrated to the latest revision), holding nothing:
    copied for each test, it spares each the cost of creating its schema."""
    path = tmp_path_factory.mktemp("template") / "cache.db"

    async def create() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        await store.close()

    run(create())
    return path


@pytest.fixture
def start(tmp_path: Path, service: FakeService, empty_database: Path) -> Iterator[Start]:
    """``await start(config={...}, profiles=(...))``: a started plugin on ``service``,
    its database in the test's directory (a later start opens the same database, as a
    restarted daemon does); every plugin started is stopped after the test."""
    started: list[Cache] = []

    async def start(*, profile: str = "bob", **options: Any) -> Cache:
        database = tmp_path / "cache.db"
        if not database.exists():
            shutil.copyfile(empty_database, database)
        plugin, host = await start_plugin(service, tmp_path, **options)
        cache = Cache(plugin, host, service, EventsApplied(host), profile)
        started.append(cache)
        return cache

    yield start
    for cache in started:
        run(cache.stop())
