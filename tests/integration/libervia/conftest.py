"""The real Libervia backend, with libervia-cache as its ``PUBSUB_CACHE``.

``libervia_install`` installs Libervia once (cached between runs, see
:mod:`tests.servers.libervia_backend`); without it the tests are skipped, except in CI
(``CI=true``) where that is a failure. ``libervia`` is one backend per module and server
kind, its profile ``bob`` connected to the session's ``xmpp_server``; tests use fresh
node names. :class:`Libervia` holds the calls tests make, as Libervia's frontends make
them (positional arguments over the PB bridge, JSON strings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.spread import pb

from tests.conftest import run
from tests.integration.conftest import in_ci
from tests.servers.base import XMPPServer
from tests.servers.libervia_backend import (
    LiberviaBackend,
    LiberviaInstall,
    LiberviaInstallError,
    ensure_installed,
    error_class,
    sleep,
)

NS_ATOM = "http://www.w3.org/2005/Atom"
#: the node prefix Libervia's XEP-0277 analyser matches
NS_MICROBLOG = "urn:xmpp:microblog:0"
PROFILE = "bob"

T = TypeVar("T")


def entry(item_id: str, title: str | None = None, content: str = "") -> tuple[str, str]:
    """A microblog item Libervia's XEP-0277 parser reads: ``(id, Atom entry)``."""
    return item_id, (
        f"<entry xmlns='{NS_ATOM}'><id>urn:uuid:{item_id}</id>"
        f"<title type='text'>{title or item_id}</title>"
        f"<content type='text'>{content or 'body of ' + item_id}</content>"
        "<published>2026-01-01T00:00:00Z</published><updated>2026-01-01T00:00:00Z</updated>"
        "<author><name>alice</name></author></entry>"
    )


class Libervia:
    """A running backend, seen as its frontends see it."""

    def __init__(self, backend: LiberviaBackend, server: XMPPServer) -> None:
        self.backend = backend
        self.server = server
        self.service = server.pubsub_service

    async def call(self, name: str, *args: Any) -> Any:
        assert self.backend.bridge is not None
        return await self.backend.bridge.call(name, *args)

    async def error_of(self, name: str, *args: Any) -> str:
        """The class name of the Libervia exception a call fails with."""
        try:
            await self.call(name, *args)
        except (pb.Error, pb.RemoteError) as error:
            return error_class(error)
        raise AssertionError(f"{name} did not fail")

    async def items_get(
        self, node: str, max_items: int = -1, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``ps_items_get`` (the transparent read): metadata and ``items`` (XML)."""
        answer = await self.call(
            "ps_items_get", self.service, node, max_items, [], "", json.dumps(extra or {}), PROFILE
        )
        return dict(json.loads(answer))

    async def network(
        self, node: str, max_items: int = -1, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The same read with the cache bypassed."""
        return await self.items_get(node, max_items, {**(extra or {}), "use_cache": False})

    async def status(self, node: str) -> dict[str, Any] | None:
        status = json.loads(await self.call("ps_cache_status", self.service, node, PROFILE))
        return status["nodes"][0] if status["nodes"] else None

    async def wait_synchronised(self, node: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = await self.status(node)
            if row is not None and row["state"] == "COMPLETED" and row["held"] is None:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node} not synchronised: {row}")
            await sleep(0.05)

    async def probe(self, action: str, **arguments: Any) -> Any:
        return json.loads(await self.call("cache_test_probe", action, json.dumps(arguments)))

    async def pubsub_requests_sent(self) -> int:
        return int(await self.probe("sent", profile=PROFILE))

    async def read_sending_nothing(self, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s answer, once it was given with no pubsub request sent meanwhile.

        Three tries: a freshness check of the cache (a few seconds after a publication,
        then periodically) may happen to send its request during one read.
        """
        for __ in range(3):
            before = await self.pubsub_requests_sent()
            answer = await read()
            if await self.pubsub_requests_sent() == before:
                return answer
        raise AssertionError("every read sent a pubsub request")

    async def wait_events(self, node: str, count: int, timeout: float = 15) -> None:
        """Until libervia-cache has taken ``count`` events of ``node`` into account."""
        deadline = time.monotonic() + timeout
        while (await self.probe("events_applied")).get(node, 0) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} event(s) of {node} not applied in time")
            await sleep(0.05)

    async def search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return list(json.loads(await self.call("ps_cache_search", json.dumps(query))))


@pytest.fixture(scope="session")
def libervia_install() -> LiberviaInstall:
    """Libervia, installed (cached between runs)."""
    try:
        return ensure_installed()
    except LiberviaInstallError as error:
        message = f"the Libervia backend could not be installed: {error}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def make_libervia(
    xmpp_server: XMPPServer, libervia_install: LiberviaInstall, tmp_path: Path
) -> Iterator[Callable[..., Coroutine[Any, Any, Libervia]]]:
    """More backends for one test: ``await make_libervia(options=..., default_options=...)``
    (``[pubsub_cache]`` and ``[DEFAULT]`` options); stopped after the test."""
    started: list[LiberviaBackend] = []

    async def make(**kwargs: Any) -> Libervia:
        directory = tmp_path / f"libervia-{len(started)}"
        backend = LiberviaBackend(
            libervia_install, directory, xmpp_server, profiles=(PROFILE,), **kwargs
        )
        started.append(backend)
        await backend.start()
        return Libervia(backend, xmpp_server)

    try:
        yield make
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture(scope="module")
def libervia(
    request: pytest.FixtureRequest,
    xmpp_server: XMPPServer,
    libervia_install: LiberviaInstall,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Libervia]:
    """A Libervia backend running libervia-cache, bob connected to ``xmpp_server``."""
    directory: Path = tmp_path_factory.mktemp(f"libervia-{xmpp_server.kind}")
    backend = LiberviaBackend(libervia_install, directory, xmpp_server, profiles=(PROFILE,))
    try:
        run(backend.start())
    except Exception as error:
        pytest.fail(f"Libervia did not start: {error}\n{backend.log_tail()}")
    try:
        yield Libervia(backend, xmpp_server)
    finally:
        backend.stop()
