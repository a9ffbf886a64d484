"""Profile of the P1 path: a cached 20-item page through ``XEP_0060.get_items``.

    python -m bench.profile_p1 [--reps 5000] [--html out.html]

Starts a private ejabberd and the daemon in-process, syncs a 50-item microblog node,
then (1) times each layer of the cached read on its own (subtractive breakdown:
trigger manager, plugin trigger, node lookup, page read, XML parse, metadata) and (2)
runs the whole path under pyinstrument and prints the call tree. It reports only.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

PAGE = 20


async def profile(reps: int, html: Path | None) -> None:
    from pyinstrument import Profiler
    from twisted.words.protocols.jabber.jid import JID
    from tx_xmpp import rsm

    from bench.run import MICROBLOG, fill_node, synchronise
    from libervia_cache.hostapi import answer_metadata
    from libervia_cache.plugin.xml import parse_element
    from tests.harness.daemon import start_daemon
    from tests.servers.ejabberd import EjabberdServer
    from tests.servers.publisher import connect_publisher

    server = EjabberdServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            publisher = await connect_publisher(server, "alice", "profile")
            service = server.pubsub_service
            node = f"{MICROBLOG}:profile-{int(time.time())}"
            await fill_node(publisher, service, node, 50)
            daemon = await start_daemon(Path(tmp), server)
            try:
                client = daemon.clients["bob"]
                cache = daemon.plugins["PUBSUB_CACHE"]
                service_jid = JID(service)
                node_info = await synchronise(daemon, client, service_jid, node)
                store = cache.store_access.require()
                xep_0060 = daemon.xep_0060
                page = await store.get_items(node_info.id, rsm_max=PAGE)
                raws = page.items
                extra = {"use_cache": True}

                def request() -> rsm.RSMRequest:
                    return rsm.RSMRequest(max_=PAGE)

                async def full() -> Any:
                    return await xep_0060.get_items(
                        client, service_jid, node, rsm_request=request()
                    )

                async def trigger_point() -> Any:
                    return await daemon.trigger.async_return_point(
                        "XEP-0060_getItems", client, service_jid, node, None, None, None,
                        request(), extra,
                    )  # fmt: skip

                async def plugin_trigger() -> Any:
                    return await cache._get_items_trigger(
                        client, service_jid, node, None, None, None, request(), extra
                    )

                async def from_cache() -> Any:
                    return await cache.get_items_from_cache(
                        client, service_jid, node, rsm_request=request()
                    )

                async def get_node() -> Any:
                    return await store.get_node(client.profile, service, node)

                async def get_page() -> Any:
                    return await store.get_items(node_info.id, rsm_max=PAGE)

                async def parse() -> Any:
                    return [parse_element(raw) for raw in raws]

                async def metadata() -> Any:
                    rsm_data = {
                        "first": page.first,
                        "last": page.last,
                        "index": page.index,
                        "count": page.count,
                    }
                    return answer_metadata(
                        service_jid, node, len(page.items), request(), rsm_data, cached=True
                    )

                async def rsm_object() -> Any:
                    return request()

                layers = {
                    "xep_0060.get_items (whole P1 path)": full,
                    "trigger.async_return_point": trigger_point,
                    "PubsubCache._get_items_trigger": plugin_trigger,
                    "PubsubCache.get_items_from_cache": from_cache,
                    "Store.get_node (aiosqlite, SQLAlchemy Core)": get_node,
                    "Store.get_items (lean sqlite3 page read)": get_page,
                    "parse_element x20 (domish)": parse,
                    "hostapi.answer_metadata": metadata,
                    "RSMRequest()": rsm_object,
                }
                samples: dict[str, list[float]] = {name: [] for name in layers}
                for fn in layers.values():
                    await common.timings_ms(fn, 0, warmup=200)
                for _ in range(5):
                    for name, fn in layers.items():
                        samples[name] += await common.timings_ms(fn, reps // 5, warmup=0)
                print(f"\nlayers of the cached read, median of {reps} (microseconds):")
                for name, values in samples.items():
                    print(f"  {common.median(values) * 1000:9.1f} us  {name}")
                await prototypes(store, client.profile, service, node, raws, reps)
                gc.collect()
                gc.freeze()
                frozen = await common.timings_ms(full, reps, warmup=200)
                gc.unfreeze()
                disabled_gc = []
                gc.disable()
                try:
                    disabled_gc = await common.timings_ms(full, reps, warmup=200)
                finally:
                    gc.enable()
                print(f"  {common.median(frozen) * 1000:9.1f} us  whole path after gc.freeze()")
                print(f"  {common.median(disabled_gc) * 1000:9.1f} us  whole path, gc disabled")

                profiler = Profiler(interval=0.0001, async_mode="disabled")
                profiler.start()
                for _ in range(reps):
                    await full()
                profiler.stop()
                print(profiler.output_text(unicode=True, color=False, show_all=False))
                if html is not None:
                    html.write_text(profiler.output_html())
            finally:
                await daemon.stop()
                await publisher.close()
    finally:
        server.stop()


async def prototypes(
    store: Any, profile: str, service: str, node: str, raws: list[str], reps: int
) -> None:
    """Time candidate replacements of the costly layers (no library code changed)."""
    from sqlalchemy import bindparam, select
    from sqlalchemy.dialects import sqlite
    from twisted.internet import defer
    from twisted.words.xish import domish
    from tx_xmpp import pubsub

    from libervia_cache.plugin.xml import parse_element
    from libervia_cache.storage import noderows

    nodes = noderows.nodes
    statement = select(*noderows.NODE_COLUMNS).where(
        nodes.c.profile == bindparam("profile"),
        nodes.c.service == bindparam("service"),
        nodes.c.name == bindparam("name"),
    )
    sql = str(statement.compile(dialect=sqlite.dialect(paramstyle="named")))
    params = {"profile": profile, "service": service, "name": node}
    # the Enum/JSON columns need their result processors: a raw row keeps strings
    raw_row = store._reader.execute(sql, params).fetchone()

    async def lean_node() -> Any:
        return store._reader.execute(sql, params).fetchone()

    async def one_stream_parse() -> Any:
        elements: list[domish.Element] = []
        stream = domish.elementStream()
        stream.DocumentStartEvent = lambda root: None
        stream.ElementEvent = elements.append
        stream.DocumentEndEvent = lambda: None
        stream.parse(("<w>" + "".join(raws) + "</w>").encode())
        return elements

    async def parse_each() -> Any:
        return [parse_element(raw) for raw in raws]

    async def raw_shells() -> Any:
        shells = []
        for raw in raws:
            item = domish.Element((pubsub.NS_PUBSUB, "item"))
            item["id"] = "x"
            item.addRawXml(raw)
            shells.append(item)
        return shells

    async def no_op() -> None:
        return None

    async def deferred_layer() -> Any:
        return await defer.Deferred.fromCoroutine(no_op())

    candidates = {
        "node row through the lean sqlite3 reader (precompiled SQL)": lean_node,
        "parse_element x20 (today)": parse_each,
        "one expat stream for the 20 items": one_stream_parse,
        "20 <item/> shells holding raw XML (lazy parse)": raw_shells,
        "one Deferred.fromCoroutine layer around a no-op": deferred_layer,
    }
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        await common.timings_ms(fn, 0, warmup=200)
    for _ in range(5):
        for name, fn in candidates.items():
            samples[name] += await common.timings_ms(fn, reps // 5, warmup=0)
    print(f"\ncandidate replacements, median of {reps} (microseconds):")
    for name, values in samples.items():
        print(f"  {common.median(values) * 1000:9.1f} us  {name}")
    print(f"  (raw node row: {tuple(raw_row)!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5000)
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    try:
        common.run(profile(args.reps, args.html))
    finally:
        common.shutdown()


if __name__ == "__main__":
    main()
