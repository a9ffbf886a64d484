"""Fixtures of the integration tests: real XMPP servers, a publisher, fresh node names.

``xmpp_server`` is session scoped and parametrised over the kinds listed in
``LIBERVIA_CACHE_TEST_SERVERS`` (comma separated; default: every kind), so every test
that uses it runs once per server, and pytest starts each server once. A kind whose
programs are missing is skipped, except in CI (``CI=true``) where it is an error:
``tests/servers/install.sh`` installs them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from tests.conftest import run
from tests.servers.base import ServerError, XMPPServer
from tests.servers.ejabberd import EjabberdServer
from tests.servers.libervia_pubsub import LiberviaPubsubServer
from tests.servers.prosody import ProsodyServer
from tests.servers.publisher import Publisher, connect_publisher

SERVER_CLASSES: dict[str, type[XMPPServer]] = {
    cls.kind: cls for cls in (EjabberdServer, ProsodyServer, LiberviaPubsubServer)
}
DEFAULT_SERVERS = "ejabberd,prosody,libervia-pubsub"


def server_kinds() -> list[str]:
    """Kinds asked for by ``LIBERVIA_CACHE_TEST_SERVERS``, validated."""
    value = os.environ.get("LIBERVIA_CACHE_TEST_SERVERS", DEFAULT_SERVERS)
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in SERVER_CLASSES]
    if unknown:
        raise pytest.UsageError(
            f"LIBERVIA_CACHE_TEST_SERVERS: unknown server kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(SERVER_CLASSES)}"
        )
    return kinds


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", params=server_kinds())
def xmpp_server(request: pytest.FixtureRequest) -> Iterator[XMPPServer]:
    """A running private server of one kind (the test runs once per kind)."""
    cls = SERVER_CLASSES[request.param]
    missing = cls.missing_binaries()
    if missing:
        message = (
            f"{cls.kind} not installed (missing {', '.join(missing)}): run tests/servers/install.sh"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = cls(keep=bool(os.environ.get("LIBERVIA_CACHE_TEST_KEEP_SERVERS")))
    try:
        server.start()
    except ServerError as e:
        pytest.fail(f"{cls.kind} failed to start: {e}\n{server.log_tail()}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def publisher(xmpp_server: XMPPServer) -> Iterator[Publisher]:
    """A :class:`Publisher` connected as alice (admin on Prosody), closed after the test."""
    publisher = run(connect_publisher(xmpp_server, "alice", f"publisher-{uuid.uuid4().hex[:8]}"))
    try:
        yield publisher
    finally:
        run(publisher.close())


@pytest.fixture
def connect_user(
    xmpp_server: XMPPServer,
) -> Iterator[Callable[[str], Coroutine[Any, Any, Publisher]]]:
    """Connect more accounts: ``bob = await connect_user("bob")``; closed after the test."""
    connected: list[Publisher] = []

    async def connect(user: str) -> Publisher:
        client = await connect_publisher(xmpp_server, user, f"test-{uuid.uuid4().hex[:8]}")
        connected.append(client)
        return client

    try:
        yield connect
    finally:
        for client in connected:
            run(client.close())


def unique_node_name(prefix: str = "test") -> str:
    """A node name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fresh_node() -> Callable[..., str]:
    """A factory of unique node names: ``fresh_node()``, ``fresh_node("urn:xmpp:microblog:0")``."""
    return unique_node_name
