"""Demo: a node read from the network, then from the cache, with both timings.

Starts a private ejabberd on 127.0.0.1 (tests/servers), the daemon as a real process
(``libervia-cache daemon``), publishes a sample microblog node as alice, reads it as bob
through the daemon's control socket from the network, synchronises it, reads it again
from the cache, and prints the median time of each read. Everything it starts is
stopped at the end. Run with ``bash bench/demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import asyncioreactor

_loop = asyncio.new_event_loop()
asyncioreactor.install(_loop)

from twisted.internet import defer, reactor  # noqa: E402

from libervia_cache.control import ControlClient  # noqa: E402
from tests.harness.daemon import DaemonProcess, atom_entry, write_config  # noqa: E402
from tests.servers.ejabberd import EjabberdServer  # noqa: E402
from tests.servers.publisher import connect_publisher  # noqa: E402

NODE = "urn:xmpp:microblog:0"


def run(coro: Any) -> Any:
    """Run a Twisted coroutine on the reactor's loop until it is done."""
    if not reactor.running:  # type: ignore[attr-defined]
        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
    return _loop.run_until_complete(defer.Deferred.fromCoroutine(coro).asFuture(_loop))


def median_ms(call: Any, repeat: int) -> float:
    timings = []
    for __ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50, help="items in the sample node")
    parser.add_argument("--repeat", type=int, default=30, help="reads timed on each side")
    args = parser.parse_args()

    server = EjabberdServer()
    print("starting a private ejabberd on 127.0.0.1 ...", flush=True)
    server.start()
    daemon: DaemonProcess | None = None
    try:
        directory = Path(tempfile.mkdtemp(prefix="libervia-cache-demo-"))
        config = write_config(directory, server, profiles=["bob"])
        daemon = DaemonProcess(config)
        print("starting the daemon (libervia-cache daemon) ...", flush=True)
        daemon.start()

        async def publish() -> None:
            publisher = await connect_publisher(server, "alice", "demo")
            try:
                await publisher.create_node(
                    server.pubsub_service, NODE, {"pubsub#access_model": "open"}
                )
                await publisher.publish(
                    server.pubsub_service,
                    NODE,
                    [
                        (f"post-{n}", atom_entry(f"post-{n}", f"Post {n}", f"Hello {n}", ["demo"]))
                        for n in range(args.items)
                    ],
                )
            finally:
                await publisher.close()

        print(f"publishing {args.items} microblog items as alice ...", flush=True)
        run(publish())

        bridge = ControlClient(directory / "daemon.sock")
        request = {"service": server.pubsub_service, "node": NODE, "rsm": {"max": 20}}

        def read(use_cache: bool) -> dict[str, Any]:
            return bridge.call("ps_items_get", {**request, "use_cache": use_cache})  # type: ignore[no-any-return]

        first = read(use_cache=False)
        network_ms = median_ms(lambda: read(use_cache=False), args.repeat)
        print("synchronising the node into the cache (libervia-cache sync --wait) ...", flush=True)
        daemon.cli("sync", server.pubsub_service, NODE, "--wait")
        # ejabberd's RSM keys are its own (timestamps): a sync learns those at the ends of
        # its pages, and the cache the others from the server's first answer to a page
        if not read(use_cache=True)["metadata"]["cached"]:
            print("first read of the page: the cache learnt ejabberd's RSM keys of it", flush=True)
        cached = read(use_cache=True)
        if not cached["metadata"]["cached"] or cached["items"] != first["items"]:
            print("the cached answer differs from the server's!", file=sys.stderr)
            return 1
        cache_ms = median_ms(lambda: read(use_cache=True), args.repeat)

        print()
        print(f"20-item page of a {args.items}-item node, read by bob through the daemon's socket")
        print(f"  from the network (ejabberd): {network_ms:7.2f} ms  (median of {args.repeat})")
        print(f"  from the cache:              {cache_ms:7.2f} ms  (median of {args.repeat})")
        print(f"  the cache is {network_ms / cache_ms:.1f}x faster, same items, same order")
        return 0
    finally:
        if daemon is not None and daemon.process is not None:
            daemon.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
