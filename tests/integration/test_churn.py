"""Churn: the server changes (publish, republish, retract, purge, configure, delete and
recreate) while the cache keeps up from events; after each round of changes a barrier
(a marker item published to every node, seen applied by the cache) and then every
request the cache answers is compared with the server's answer to the same request.

Every operation runs on every server (ejabberd keeps a republished item in its first
place: the cache follows it). A request the cache answers only once it learnt the
server's RSM keys (ejabberd) is asked once through the daemon's transparent path first.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import pubsub

from libervia_cache.backend.daemon import Daemon
from libervia_cache.storage import SyncState
from tests.harness.daemon import AppliedEvents, atom_entry, cache_of, start_daemon, sync_of
from tests.integration.test_fidelity import describe
from tests.integration.test_storm import comparable, requests_for
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"
ROUNDS = int(os.environ.get("LIBERVIA_CACHE_CHURN_ROUNDS", "12"))
NODE_OPTIONS = {"pubsub#access_model": "open", "pubsub#max_items": "max"}


class Churn:
    """The nodes, what the server holds, and the operations on them."""

    def __init__(
        self, daemon: Daemon, server: XMPPServer, publisher: Publisher, nodes: list[str]
    ) -> None:
        self.daemon = daemon
        self.server = server
        self.publisher = publisher
        self.service = JID(server.pubsub_service)
        self.nodes = nodes
        self.ids: dict[str, list[str]] = {node: [] for node in nodes}
        self.serial = 0
        self.rng = random.Random(int(os.environ.get("LIBERVIA_CACHE_CHURN_SEED", "5")))
        self.applied = AppliedEvents(daemon)
        self.comparisons = 0
        self.differences: list[str] = []
        self.operations: dict[str, int] = {}

    def new_id(self, prefix: str = "c") -> str:
        self.serial += 1
        return f"{prefix}{self.serial:04d}"

    async def publish(self, node: str, count: int) -> None:
        for __ in range(count):
            item_id = self.new_id()
            payload = atom_entry(item_id, f"post {self.serial}")
            await self.publisher.publish(self.service, node, [(item_id, payload)], depth=1)
            self.ids[node].append(item_id)

    async def operate(self, node: str) -> None:
        operations = ["publish", "publish", "retract", "purge", "configure", "recreate"]
        operations.append("republish")
        operation = self.rng.choice(operations)
        self.operations[operation] = self.operations.get(operation, 0) + 1
        if operation == "publish" or (operation in ("retract", "republish") and not self.ids[node]):
            await self.publish(node, self.rng.randint(1, 3))
        elif operation == "republish":
            item_id = self.rng.choice(self.ids[node])
            await self.publisher.publish(
                self.service,
                node,
                [(item_id, atom_entry(item_id, f"again {self.serial}"))],
                depth=1,
            )
            self.ids[node].remove(item_id)
            self.ids[node].append(item_id)
        elif operation == "retract":
            item_id = self.rng.choice(self.ids[node])
            await self.publisher.retract(self.service, node, [item_id], notify=True)
            self.ids[node].remove(item_id)
        elif operation == "purge":
            await self.publisher.purge(self.service, node)
            self.ids[node] = []
        elif operation == "configure":
            await self.publisher.configure(
                self.service, node, {"pubsub#title": f"title {self.serial}"}
            )
            self.serial += 1
        else:
            deletions = self.applied.count(node, pubsub.DeleteEvent)
            await self.publisher.delete_node(self.service, node)
            await self.applied.wait(
                lambda: self.applied.count(node, pubsub.DeleteEvent) > deletions, "the deletion"
            )
            await self.publisher.create_node(self.service, node, NODE_OPTIONS)
            self.ids[node] = []
            await self.publish(node, self.rng.randint(0, 4))

    async def barrier(self) -> None:
        """Every node: a marker published and seen applied by the cache, or, for a node
        the cache does not track (recreated), read and synchronised."""
        client = self.daemon.get_client("bob")
        store = cache_of(self.daemon).store_access.require()
        for node in self.nodes:
            info = await store.get_node("bob", self.service.full(), node)
            if info is None or info.sync_state not in (SyncState.COMPLETED, SyncState.IN_PROGRESS):
                await self.daemon.xep_0060.get_items(client, self.service, node)
            else:
                marker = self.new_id("marker-")
                await self.publisher.publish(
                    self.service, node, [(marker, atom_entry(marker, "m"))], depth=1
                )
                self.ids[node].append(marker)
                await self.applied.wait_for_items(node, [marker], "the marker")
            sync = sync_of(self.daemon, self.service, node)
            if sync is not None:
                await sync.wait()

    async def compare(self) -> None:
        cache = cache_of(self.daemon)
        client = self.daemon.get_client("bob")
        for node in self.nodes:
            for request in requests_for(self.server, max(1, len(self.ids[node]))):
                answer = await cache.get_items_from_cache(client, self.service, node, **request)
                if answer is None and not self.server.quirks["rsm_keys_are_item_ids"]:
                    await self.daemon.xep_0060.get_items(client, self.service, node, **request)
                    answer = await cache.get_items_from_cache(client, self.service, node, **request)
                if answer is None:
                    continue
                items, metadata = await self.daemon.xep_0060.get_items_from_network(
                    client, self.service, node, **request
                )
                self.comparisons += 1
                if comparable(self.server, *answer) != comparable(self.server, items, metadata):
                    self.differences.append(
                        f"{node} {describe(request)}: cache {[i['id'] for i in answer[0]]} "
                        f"{answer[1].get('rsm')} != server {[i['id'] for i in items]} "
                        f"{metadata.get('rsm')}"
                    )


async def test_churn_on_the_server_with_a_barrier_leaves_no_difference(
    xmpp_server: XMPPServer,
    publisher: Publisher,
    tmp_path: Path,
    fresh_node: Callable[..., str],
) -> None:
    service = JID(xmpp_server.pubsub_service)
    nodes = [fresh_node(MICROBLOG) for __ in range(3)]
    daemon = await start_daemon(tmp_path, xmpp_server, sync_page_size=4)
    try:
        churn = Churn(daemon, xmpp_server, publisher, nodes)
        for node in nodes:
            await publisher.create_node(service, node, NODE_OPTIONS)
            await churn.publish(node, 6)
        await churn.barrier()
        for __ in range(ROUNDS):
            for node in churn.rng.sample(nodes, 2):
                await churn.operate(node)
            await churn.barrier()
            await churn.compare()
        report = (
            f"churn on {xmpp_server.kind}: {ROUNDS} rounds, operations {churn.operations}, "
            f"{churn.comparisons} comparisons, {len(churn.differences)} differences"
        )
        print(report)
        assert not churn.differences, f"{report}: {churn.differences[:3]}"
        assert churn.comparisons >= ROUNDS, report
    finally:
        await daemon.stop()
