"""Measure the test servers: startup time, publishing N items, reading a page.

    python -m tests.servers.measure [--items 2000] [kind ...]

Prints one line per server kind. Run from the repository root, in the virtualenv.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet import asyncioreactor

import tests.conftest  # noqa: F401  (installs the asyncio reactor first)
from tests.conftest import run

assert asyncioreactor  # the reactor is installed by tests.conftest

from tx_xmpp import rsm  # noqa: E402

from tests.integration.conftest import SERVER_CLASSES  # noqa: E402
from tests.servers.base import XMPPServer  # noqa: E402
from tests.servers.publisher import connect_publisher  # noqa: E402


async def measure_publishing(server: XMPPServer, count: int) -> dict[str, float]:
    """Publish ``count`` items to a fresh node; time it and a 20-item page read."""
    publisher = await connect_publisher(server)
    try:
        service = server.pubsub_service
        await publisher.create_node(service, "measure")
        began = time.monotonic()
        await publisher.publish(
            service,
            "measure",
            [(f"item-{n}", f"<entry xmlns='urn:example'><n>{n}</n></entry>") for n in range(count)],
        )
        publish_time = time.monotonic() - began
        items, _ = await publisher.get_items(service, "measure", max_items=count)
        assert len(items) == count, f"{server.kind}: {len(items)} items stored, {count} published"
        began = time.monotonic()
        for _ in range(20):
            await publisher.get_items(service, "measure", rsm_request=rsm.RSMRequest(max_=20))
        page_time = (time.monotonic() - began) / 20
        return {"publish": publish_time, "page": page_time}
    finally:
        await publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=list(SERVER_CLASSES))
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    for kind in args.kinds:
        server = SERVER_CLASSES[kind]()
        server.start()
        try:
            figures = run(measure_publishing(server, args.items), timeout=900)
        finally:
            server.stop()
        print(
            f"{kind:16} start {server.startup_time:5.2f} s "
            f"(accounts {server.register_time:4.2f} s)   "
            f"publish {args.items} items {figures['publish']:6.2f} s "
            f"({args.items / figures['publish']:5.0f}/s)   "
            f"20-item page on it {figures['page'] * 1000:6.1f} ms"
        )


if __name__ == "__main__":
    main()
