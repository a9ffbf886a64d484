"""An explicit sync on a database that cannot be written is an ``unavailable``
bridge error naming the database failure, not an internal error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.errors import BridgeError
from libervia_cache.storage import engine as engine_module
from tests.integration.conftest import DaemonFactory, server_kinds
from tests.integration.test_faults_database import locked_by_another_process, make_node
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

pytestmark = pytest.mark.parametrize("xmpp_server", server_kinds()[:1], indirect=True)


async def test_an_explicit_sync_on_a_locked_database_is_an_unavailable_error_not_internal(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    make_daemon: DaemonFactory,
    tmp_path: Path,
    fresh_node: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT", 1.0)
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node("urn:xmpp:microblog:0")
    await make_node(publisher, service, node, 3)
    daemon = await make_daemon()  # after the patch: the store's engine reads it
    with (
        locked_by_another_process(tmp_path / "cache.db"),
        pytest.raises(BridgeError) as refused,
    ):
        await daemon.bridge.dispatch(
            "ps_cache_sync", {"service": service.full(), "node": node, "wait": True}
        )
    assert refused.value.kind == "unavailable", refused.value
    assert "database is locked" in refused.value.message
