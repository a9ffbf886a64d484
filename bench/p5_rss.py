"""P5: peak RSS growth of the daemon while it synchronises an N-item node.

Run in a fresh process per size (``python -m bench.p5_rss N``), so that sizes do not
share an allocator history; prints one JSON object. The daemon runs in-process (plugins,
store on an SQLite file, the cache's sync with the microblog analyser parsing every
item) and talks real XMPP over a loopback TCP stream to the in-process Tx-XMPP pubsub
service of :mod:`bench.inprocess_service`, whose items are generated on request (it
holds nothing). RSS is sampled every 20 ms during the sync; the growth is the peak
minus the RSS once the daemon is up and connected, before the sync.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

NODE = "urn:xmpp:microblog:0:p5"


def write_config(directory: Path, cache_limit: int) -> Path:
    path = directory / "libervia-cache.conf"
    path.write_text(
        "\n".join(
            [
                "[daemon]",
                f"socket = {directory / 'daemon.sock'}",
                "",
                "[pubsub_cache]",
                f"db_url = sqlite+aiosqlite:///{directory / 'cache.db'}",
                f"cache_limit = {cache_limit}",
                "",
            ]
        )
    )
    return path


async def measure(size: int) -> dict[str, Any]:
    from twisted.internet import reactor, task
    from twisted.words.protocols.jabber.jid import JID

    from bench.inprocess_service import SERVICE, connect_loopback
    from bench.run import synchronise
    from libervia_cache.backend.config import load_config
    from libervia_cache.backend.daemon import Daemon

    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(load_config(write_config(Path(tmp), size + 1000)))
        await daemon.start(listen=False, connect=False)
        client = await connect_loopback(daemon.xep_0060.make_client_handler(), {NODE: size})
        cache = daemon.plugins["PUBSUB_CACHE"]
        gc.collect()
        baseline = common.rss_bytes()
        samples: list[int] = [baseline]
        sampler = task.LoopingCall(lambda: samples.append(common.rss_bytes()))
        sampler.clock = reactor
        sampler.start(0.02)
        started = time.perf_counter()
        try:
            node_info = await synchronise(daemon, client, JID(SERVICE), NODE)
        finally:
            sampler.stop()
        elapsed = time.perf_counter() - started
        samples.append(common.rss_bytes())
        stored = await cache.store_access.require().count_items(node_info.id)
        await client.close()
        await daemon.stop()
    peak = max(samples)
    return {
        "items": size,
        "stored": stored,
        "baseline_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "growth_mb": round((peak - baseline) / 2**20, 1),
        "final_growth_mb": round((samples[-1] - baseline) / 2**20, 1),
        "sync_seconds": round(elapsed, 2),
        "items_per_second": round(size / elapsed),
        "rss_samples": len(samples),
    }


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    try:
        result = common.run(measure(size))
    finally:
        common.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
