"""LV: inside the real Libervia backend, its stock cache vs libervia-cache vs the network.

One run, one private ejabberd, two Libervia backends of the same installation
(``tests.servers.libervia_backend``): one as ``libervia-backend`` runs it, with its stock
``PUBSUB_CACHE`` (profile ``carol``), one through ``python -m libervia_cache.hosts.libervia``
(profile ``bob``). Both read the same two microblog nodes, of 50 and 2,000 items,
synchronised by each cache with Libervia's own XEP-0277 analyser. The read is a 20-item
page (``max_items=20``, what both caches serve from their store):

- in-process: ``XEP_0060.get_items`` called inside the backend by the test probe
  (:mod:`tests.harness.libervia`), as another Libervia plugin reads a node;
- over the bridge: ``ps_items_get`` over Libervia's PB bridge, as its frontends read it
  (and an empty round trip, ``version_get``, for scale).

The network figure is libervia-cache's backend with ``use_cache: false`` (the same
request path minus the cache). Every cached answer is checked: libervia-cache's metadata
says ``cached``, and neither backend sends a pubsub request while its cache answers.

    python -m bench --only LV        (or: python -m bench.libervia_bench [--quick])
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

PAGE = 20
MICROBLOG = "urn:xmpp:microblog:0"
OURS, STOCK = "bob", "carol"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] LV: {message}", file=sys.stderr, flush=True)


class Reps:
    def __init__(self, quick: bool) -> None:
        self.inprocess = 400 if not quick else 100
        self.bridge = 300 if not quick else 60
        self.rounds = 5 if not quick else 2


async def _call(backend: Any, name: str, *args: Any) -> Any:
    return await backend.bridge.call(name, *args)


async def _probe(backend: Any, action: str, **arguments: Any) -> Any:
    return json.loads(await _call(backend, "cache_test_probe", action, json.dumps(arguments)))


async def _fill(publisher: Any, service: str, node: str, count: int) -> None:
    from tests.harness.daemon import atom_entry

    await publisher.create_node(service, node)
    items = [
        (f"item-{n}", atom_entry(f"item-{n}", f"post {n}", f"content of post {n} " * 8))
        for n in range(count)
    ]
    await publisher.publish(service, node, items, depth=32)


async def _wait(what: str, check: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await common.sleep(0.1)


async def _synchronise(ours: Any, stock: Any, service: str, node: str) -> dict[str, Any]:
    """Both caches synchronise ``node`` as a read through the bridge starts it."""
    for backend, profile in ((ours, OURS), (stock, STOCK)):
        await _call(backend, "ps_items_get", service, node, PAGE, [], "", "{}", profile)

    async def ours_done() -> bool:
        status = json.loads(await _call(ours, "ps_cache_status", service, node, OURS))
        rows = status["nodes"]
        return bool(rows) and rows[0]["state"] == "COMPLETED" and rows[0]["held"] is None

    async def stock_done() -> bool:
        state = await _probe(stock, "stock_node", profile=STOCK, service=service, node=node)
        return state is not None and state["sync_state"] == "COMPLETED"

    await _wait(f"libervia-cache's sync of {node}", ours_done)
    await _wait(f"the stock cache's sync of {node}", stock_done)
    status = json.loads(await _call(ours, "ps_cache_status", service, node, OURS))
    stock_state = await _probe(stock, "stock_node", profile=STOCK, service=service, node=node)
    return {
        "libervia_cache_items": status["nodes"][0]["items"],
        "stock_items": stock_state["items"],
    }


async def _node_figures(
    ours: Any, stock: Any, service: str, node: str, reps: Reps
) -> dict[str, Any]:
    """In-process and bridge medians of the three paths on ``node``."""

    async def inprocess(backend: Any, profile: str, extra: dict[str, Any], count: int) -> Any:
        return await _probe(
            backend,
            "get_items",
            profile=profile,
            service=service,
            node=node,
            max_items=PAGE,
            extra=extra,
            repeat=count,
        )

    def bridge_read(backend: Any, profile: str, extra: dict[str, Any]) -> Any:
        async def read() -> None:
            answer = json.loads(
                await _call(
                    backend, "ps_items_get", service, node, PAGE, [], "", json.dumps(extra), profile
                )
            )
            if len(answer["items"]) != PAGE:
                raise AssertionError(f"{len(answer['items'])} items answered")

        return read

    paths = {
        "stock_cache": (stock, STOCK, {}),
        "libervia_cache": (ours, OURS, {}),
        "network": (ours, OURS, {"use_cache": False}),
    }
    # checks: the caches answer without a request to the server (three tries for
    # libervia-cache: one of its freshness checks may send its request meanwhile)
    for attempt in range(3):
        before = await _probe(ours, "sent", profile=OURS)
        check = await inprocess(ours, OURS, {}, 1)
        if not check["metadata"].get("cached") or len(check["ids"]) != PAGE:
            raise AssertionError(f"libervia-cache did not answer {node}: {check['metadata']}")
        if await _probe(ours, "sent", profile=OURS) == before:
            break
        if attempt == 2:
            raise AssertionError(f"libervia-cache asked the server for {node}")
    sent = {STOCK: await _probe(stock, "sent", profile=STOCK)}
    await inprocess(stock, STOCK, {}, 1)
    if await _probe(stock, "sent", profile=STOCK) != sent[STOCK]:
        raise AssertionError(f"the stock cache asked the server for {node}")

    in_samples: dict[str, list[float]] = {name: [] for name in paths}
    bridge_samples: dict[str, list[float]] = {name: [] for name in paths}
    round_trip: list[float] = []
    for backend, profile, extra in paths.values():  # warm-up
        await inprocess(backend, profile, extra, 20)
        await common.timings_ms(bridge_read(backend, profile, extra), 0, warmup=10)
    for __ in range(reps.rounds):
        for name, (backend, profile, extra) in paths.items():
            answer = await inprocess(backend, profile, extra, reps.inprocess // reps.rounds)
            in_samples[name] += [d * 1000 for d in answer["durations"]]
            bridge_samples[name] += await common.timings_ms(
                bridge_read(backend, profile, extra), reps.bridge // reps.rounds, warmup=0
            )
        round_trip += await common.timings_ms(
            lambda: _call(ours, "version_get"), reps.bridge // reps.rounds, warmup=0
        )
    # the stock backend reads only from its cache: not one request to the server
    requests = await _probe(stock, "sent", profile=STOCK) - sent[STOCK]
    if requests:
        raise AssertionError(f"the stock cache asked the server {requests} times")

    def medians(samples: dict[str, list[float]]) -> dict[str, float]:
        return {name: round(statistics.median(values), 4) for name, values in samples.items()}

    inproc, bridge = medians(in_samples), medians(bridge_samples)
    return {
        "in_process_ms": inproc,
        "bridge_ms": bridge,
        "bridge_round_trip_ms": round(statistics.median(round_trip), 4),
        "in_process_speedup_vs_stock": round(inproc["stock_cache"] / inproc["libervia_cache"], 1),
        "in_process_speedup_vs_network": round(inproc["network"] / inproc["libervia_cache"], 1),
        "bridge_speedup_vs_stock": round(bridge["stock_cache"] / bridge["libervia_cache"], 2),
        "bridge_speedup_vs_network": round(bridge["network"] / bridge["libervia_cache"], 2),
        "in_process_spread": {name: common.spread(v) for name, v in in_samples.items()},
        "bridge_spread": {name: common.spread(v) for name, v in bridge_samples.items()},
    }


async def _measure(server: Any, directory: Path, quick: bool) -> dict[str, Any]:
    from tests.servers.libervia_backend import LiberviaBackend, ensure_installed
    from tests.servers.publisher import connect_publisher

    reps = Reps(quick)
    log("installing Libervia (cached between runs)")
    install = ensure_installed()
    # Libervia's default log level (info): debug logs of every read would be measured too
    ours = LiberviaBackend(install, directory / "ours", server, profiles=(OURS,), log_level="info")
    stock = LiberviaBackend(
        install, directory / "stock", server, cache="stock", profiles=(STOCK,), log_level="info"
    )
    publisher = None
    try:
        log("starting both backends")
        await ours.start()
        await stock.start()
        publisher = await connect_publisher(server, "alice", "bench-libervia")
        service = server.pubsub_service
        nodes = {50: f"{MICROBLOG}-lv-small", 2000: f"{MICROBLOG}-lv-large"}
        figures: dict[str, Any] = {}
        for size, node in nodes.items():
            log(f"filling a {size}-item node")
            await _fill(publisher, service, node, size)
            log(f"both caches synchronise the {size}-item node")
            held = await _synchronise(ours, stock, service, node)
            log(f"measuring 20-item pages of the {size}-item node")
            figures[str(size)] = {**await _node_figures(ours, stock, service, node, reps), **held}
        return figures
    finally:
        if publisher is not None:
            await publisher.close()
        ours.stop()
        stock.stop()


def libervia_figures(server: Any, directory: Path, quick: bool) -> dict[str, Any]:
    """LV, in the shape of ``bench/results.json``: the value is libervia-cache's in-process
    speed-up over the stock cache on the 50-item node."""
    figures = common.run(_measure(server, directory, quick))
    small = figures["50"]
    return {
        "value": small["in_process_speedup_vs_stock"],
        "unit": "x faster than Libervia's stock cache, in-process, 20-item page of 50",
        "target": ">= 20x in-process; faster than the network over the bridge",
        "detail": {
            "nodes": figures,
            "server": "ejabberd (real, loopback)",
            "libervia": "Debian trixie libervia-backend 0.9.0~hg4352-1, PB bridge",
            "request": "max_items=20 (both caches answer it from their store)",
        },
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="write the result there too")
    args = parser.parse_args()
    common.install()
    from tests.servers.ejabberd import EjabberdServer

    server = EjabberdServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = libervia_figures(server, Path(tmp), args.quick)
    finally:
        server.stop()
        common.shutdown()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
