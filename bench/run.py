"""Every benchmark of issue 6 in one run: ``python -m bench`` (``tox -e bench``).

Starts what it needs: a private ejabberd on 127.0.0.1 (``tests/servers``), the daemon
in-process (P1, P1L, P3, P6) and as the real ``libervia-cache daemon`` process (P1b);
P2/P4 come from :mod:`bench.store_bench` and P5 from :mod:`bench.p5_rss`, each in a
child process of its own; CLI times the command's start-up in child processes. Prints
every figure as a ratio or a median measured in this run and writes
``bench/results.json`` (one key per id: ``value``, ``unit``, ``target``, ``detail`` with
the raw medians). It reports; it never asserts timings.

P1pg, P2pg and P4pg are P1, P2 and P4 with the store on PostgreSQL: a throwaway
database (``libervia_cache_bench_*``, dropped at the end) of the server ``--postgresql``
names (default ``$LIBERVIA_CACHE_BENCH_POSTGRESQL``, else the local ``postgres`` role, see
:mod:`bench.pg`). P1pg reads through a second in-process daemon, against the same
ejabberd and node as P1. When the server cannot be reached they are reported as skipped,
with the reason (``value`` null), and the other ids are measured as usual.

    python -m bench [--quick] [--json PATH] [--only P1,P1pg,P3,...] [--postgresql URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common, pg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
ALL_IDS = (
    "P1",
    "P1pg",
    "P1L",
    "P1b",
    "P1s",
    "P2",
    "P2pg",
    "P3",
    "P4",
    "P4pg",
    "P5",
    "P6",
    "CLI",
    "LV",
)
#: the ids measured on PostgreSQL (a throwaway database of --postgresql's server)
PG_IDS = ("P1pg", "P2pg", "P4pg")
P1_UNIT = "x faster (ejabberd page / cached page through get_items)"
P1PG_TARGET = ">= 10x"
MICROBLOG = "urn:xmpp:microblog:0"
PAGE = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- real server part (in-process daemon) ----------------------------------------------


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.small = 50
        self.large = 2000
        self.sync = 10_000 if not quick else 2000
        self.cache_reps = 3000 if not quick else 500
        self.server_reps = 300 if not quick else 60
        self.large_server_reps = 40 if not quick else 10
        self.rounds = 5 if not quick else 2
        self.cli_reps = 12 if not quick else 4
        self.startup_reps = 30 if not quick else 10
        self.bridge_reps = 300 if not quick else 50
        self.p6_waves = 15 if not quick else 5
        self.p6_readers = 200


async def fill_node(publisher: Any, service: str, node: str, count: int) -> float:
    """Create ``node`` and publish ``count`` Atom items; return the seconds it took."""
    from tests.harness.daemon import atom_entry

    await publisher.create_node(service, node, {"pubsub#send_last_published_item": "never"})
    started = time.perf_counter()
    batch = 2000
    for offset in range(0, count, batch):
        items = [
            (
                f"item-{n}",
                atom_entry(f"item-{n}", f"post {n}", f"content of post {n} " * 8, [f"t{n % 9}"]),
            )
            for n in range(offset, min(count, offset + batch))
        ]
        await publisher.publish(service, node, items, depth=32)
    return time.perf_counter() - started


async def interleaved(
    measures: dict[str, tuple[Callable[[], Any], int]], rounds: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Run each measure ``reps // rounds`` times per round, rounds interleaved: a noisy
    neighbour then hits every measure alike."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for fn, _ in measures.values():
        await common.timings_ms(fn, 0, warmup=warmup)
    for _ in range(rounds):
        for name, (fn, reps) in measures.items():
            samples[name] += await common.timings_ms(fn, max(1, reps // rounds), warmup=0)
    return samples


async def page_figures(
    daemon: Any,
    client: Any,
    publisher: Any,
    service: str,
    node: str,
    reps: tuple[int, int],
    rounds: int,
) -> dict[str, Any]:
    """Cache page through the daemon vs the server's page (raw client and daemon path)."""
    from twisted.words.protocols.jabber.jid import JID
    from tx_xmpp import rsm

    xep_0060 = daemon.xep_0060
    service_jid = JID(service)

    async def cached() -> None:
        items, metadata = await xep_0060.get_items(
            client, service_jid, node, rsm_request=rsm.RSMRequest(max_=PAGE)
        )
        if not metadata["cached"] or len(items) != PAGE:
            raise AssertionError(f"cache did not answer the page of {node}: {metadata}")

    async def network() -> None:
        items, metadata = await xep_0060.get_items(
            client,
            service_jid,
            node,
            rsm_request=rsm.RSMRequest(max_=PAGE),
            extra={"use_cache": False},
        )
        if metadata["cached"] or len(items) != PAGE:
            raise AssertionError(f"network did not answer the page of {node}: {metadata}")

    async def server() -> None:
        items, _ = await publisher.get_items(service, node, rsm_request=rsm.RSMRequest(max_=PAGE))
        if len(items) != PAGE:
            raise AssertionError(f"server answered {len(items)} items")

    # ejabberd's RSM keys are its own (not item ids): a sync learns those of its pages'
    # ends, and the cache the others from the server's first answer to this page, as it
    # does for a user paging through a node
    await xep_0060.get_items(client, service_jid, node, rsm_request=rsm.RSMRequest(max_=PAGE))
    cache_reps, server_reps = reps
    samples = await interleaved(
        {
            "cache_daemon_path": (cached, cache_reps),
            "server_raw_client": (server, server_reps),
            "server_daemon_path": (network, server_reps),
        },
        rounds,
        warmup=min(20, server_reps),
    )
    cache_ms = common.median(samples["cache_daemon_path"])
    server_ms = common.median(samples["server_raw_client"])
    daemon_net_ms = common.median(samples["server_daemon_path"])
    return {
        "value": round(server_ms / cache_ms, 1),
        "detail": {
            "cache_page_ms": round(cache_ms, 4),
            "server_page_ms": round(server_ms, 4),
            "server_page_through_daemon_ms": round(daemon_net_ms, 4),
            "speedup_vs_daemon_network_path": round(daemon_net_ms / cache_ms, 1),
            "cache_spread": common.spread(samples["cache_daemon_path"]),
            "server_spread": common.spread(samples["server_raw_client"]),
        },
    }


async def synchronise(daemon: Any, client: Any, service: Any, node: str) -> Any:
    """An explicit sync of ``node`` (a running one is followed), waited for; the node as
    stored then. Raises when it did not complete."""
    from twisted.words.protocols.jabber.jid import JID

    from libervia_cache.plugin.sync import Outcome

    cache = daemon.plugins["PUBSUB_CACHE"]
    service_jid = JID(str(service))
    sync = await cache.management.synchronise(client, service_jid, node)
    await sync.wait()
    if sync.outcome is not Outcome.COMPLETED:
        raise RuntimeError(f"the sync of {node} ended {sync.outcome}: {sync.error}")
    return await cache.store_access.require().get_node(client.profile, service_jid.full(), node)


async def p3_sync_share(daemon: Any, client: Any, service: str, node: str) -> dict[str, Any]:
    """Sync ``node`` from the server, timing the cache side (parse + store) vs the total."""
    from twisted.words.protocols.jabber.jid import JID

    import libervia_cache.plugin.sync as sync_module
    from libervia_cache.storage.store import Store

    cache = daemon.plugins["PUBSUB_CACHE"]
    spent = {"parse": 0.0, "store": 0.0, "network": 0.0}
    original_parse = sync_module.parse_items
    original_store = Store.cache_items
    original_network = daemon.xep_0060.get_items_from_network

    async def timed_parse(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original_parse(*args, **kwargs)
        finally:
            spent["parse"] += time.perf_counter() - start

    async def timed_store(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original_store(self, *args, **kwargs)
        finally:
            spent["store"] += time.perf_counter() - start

    async def timed_network(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original_network(*args, **kwargs)
        finally:
            spent["network"] += time.perf_counter() - start

    sync_module.parse_items = timed_parse
    Store.cache_items = timed_store  # type: ignore[assignment,method-assign]
    daemon.xep_0060.get_items_from_network = timed_network
    try:
        started = time.perf_counter()
        node_info = await synchronise(daemon, client, JID(service), node)
        total = time.perf_counter() - started
    finally:
        sync_module.parse_items = original_parse
        Store.cache_items = original_store  # type: ignore[method-assign]
        del daemon.xep_0060.get_items_from_network
    stored = await cache.store_access.require().count_items(node_info.id)
    cache_side = spent["parse"] + spent["store"]
    return {
        "value": round(100 * cache_side / total, 1),
        "unit": "% of the sync's wall time on the cache side (parse + store)",
        "target": "<= 25%",
        "detail": {
            "server": "ejabberd (real, loopback)",
            "node_items": stored,
            "sync_seconds": round(total, 2),
            "parse_seconds": round(spent["parse"], 2),
            "store_seconds": round(spent["store"], 2),
            "network_request_seconds": round(spent["network"], 2),
            "other_seconds": round(total - cache_side - spent["network"], 2),
            "items_per_second": round(stored / total),
            "how": "parse_items and Store.cache_items wrapped with timers during "
            "an explicit sync (management.synchronise); network = XEP-0060 get_items_from_network "
            "(request, server time, stanza parse)",
        },
    }


async def p6_concurrency(
    daemon: Any,
    client: Any,
    publisher: Any,
    service: str,
    read_node: str,
    sync_node: str,
    sizes: Sizes,
) -> dict[str, Any]:
    """Waves of 200 simultaneous cached reads while a resync runs and events arrive."""
    from twisted.internet import defer, reactor, task
    from twisted.words.protocols.jabber.jid import JID
    from tx_xmpp import rsm

    from libervia_cache.plugin import EVENT_APPLIED_POINT
    from tests.harness.daemon import atom_entry, cache_of

    service_jid = JID(service)
    applied = {"events": 0}

    def on_applied(*_: Any) -> None:
        applied["events"] += 1

    daemon.trigger.add(EVENT_APPLIED_POINT, on_applied)
    sync_d = defer.Deferred.fromCoroutine(synchronise(daemon, client, service_jid, sync_node))
    sync_done = {"done": False}
    sync_d.addBoth(lambda r: sync_done.update(done=True) or r)
    rng = random.Random(6)
    published = {"count": 0}

    def publish_one() -> None:
        n = rng.randrange(sizes.small)
        d = publisher.publish(
            service,
            read_node,
            [(f"item-{n}", atom_entry(f"item-{n}", f"re {n}", "again"))],
            depth=1,
        )
        d = defer.ensureDeferred(d)
        d.addCallback(lambda _: published.update(count=published["count"] + 1))
        d.addErrback(lambda f: log(f"P6 publish failed: {f.getErrorMessage()}"))

    publishing = task.LoopingCall(publish_one)
    publishing.clock = reactor
    await common.sleep(0.5)  # the sync is under way
    publishing.start(0.02)
    latencies: list[float] = []
    wave_ms: list[float] = []
    errors: list[str] = []
    during_sync = 0
    offsets = [0, 10, 20, 30]

    async def read(k: int) -> None:
        start = time.perf_counter()
        try:
            items, metadata = await daemon.xep_0060.get_items(
                client,
                service_jid,
                read_node,
                rsm_request=rsm.RSMRequest(max_=PAGE, index=offsets[k % len(offsets)]),
            )
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
            return
        latencies.append((time.perf_counter() - start) * 1000)
        expected = min(PAGE, sizes.small - offsets[k % len(offsets)])
        if not metadata.get("cached") or len(items) != expected:
            errors.append(f"wrong answer: {len(items)} items, cached={metadata.get('cached')}")

    # each page once, as a user paging through it: the cache learns ejabberd's own RSM
    # keys of the pages' ends from its answers (a sync learns only those of its pages)
    for offset in offsets:
        await daemon.xep_0060.get_items(
            client, service_jid, read_node, rsm_request=rsm.RSMRequest(max_=PAGE, index=offset)
        )
    counters = cache_of(daemon).counters
    misses_before = dict(counters.miss_reasons)
    try:
        for _ in range(sizes.p6_waves):
            running = not sync_done["done"]
            start = time.perf_counter()
            await defer.gatherResults(
                [defer.Deferred.fromCoroutine(read(k)) for k in range(sizes.p6_readers)]
            )
            wave_ms.append((time.perf_counter() - start) * 1000)
            if running:
                during_sync += sizes.p6_readers
            await common.sleep(0.05)
    finally:
        publishing.stop()
    await sync_d
    await common.sleep(0.5)
    daemon.trigger.remove(EVENT_APPLIED_POINT, on_applied)
    reads = sizes.p6_waves * sizes.p6_readers
    return {
        "value": round(common.percentile(latencies, 99), 2),
        "unit": "ms p99 latency of a read among 200 issued at once",
        "target": "0 errors, p99 <= 5 ms",
        "detail": {
            "errors": len(errors),
            "first_errors": errors[:5],
            "reads": reads,
            "reads_while_sync_ran": during_sync,
            "events_published": published["count"],
            "events_applied_by_cache": applied["events"],
            "misses_by_reason": {
                reason: count - misses_before.get(reason, 0)
                for reason, count in counters.miss_reasons.items()
                if count != misses_before.get(reason, 0)
            },
            "p50_ms": round(common.percentile(latencies, 50), 2),
            "p99_ms": round(common.percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2) if latencies else None,
            "wave_of_200_median_ms": round(common.median(wave_ms), 2),
            "per_read_service_time_ms": round(common.median(wave_ms) / sizes.p6_readers, 4),
            "setup": f"ejabberd; reads: RSM pages of the synced {sizes.small}-item node "
            f"(index 0/10/20/30) while the {sizes.sync}-item node is resynchronised and "
            "items of the read node are republished every 20 ms (events)",
        },
    }


async def real_server_part(
    server: Any, directory: Path, sizes: Sizes, wanted: set[str], postgresql: PostgreSQL
) -> tuple[dict[str, Any], dict[str, str]]:
    """P1, P1L, P3 and P6 with the daemon in-process on SQLite, then P1pg with another
    on PostgreSQL; returns results and node names."""
    from tests.servers.publisher import connect_publisher

    publisher = await connect_publisher(server, "alice", "bench")
    try:
        return await _real_server_part(server, directory, sizes, wanted, postgresql, publisher)
    finally:
        await publisher.close()


async def _real_server_part(
    server: Any,
    directory: Path,
    sizes: Sizes,
    wanted: set[str],
    postgresql: PostgreSQL,
    publisher: Any,
) -> tuple[dict[str, Any], dict[str, str]]:
    service = server.pubsub_service
    tag = f"{int(time.time())}"
    nodes = {
        "small": f"{MICROBLOG}:bench-small-{tag}",
        "large": f"{MICROBLOG}:bench-large-{tag}",
        "sync": f"{MICROBLOG}:bench-sync-{tag}",
    }
    results: dict[str, Any] = {}
    fill: dict[str, float] = {}
    needed = {"small"}
    if "P1L" in wanted:
        needed.add("large")
    if wanted & {"P3", "P6"}:
        needed.add("sync")
    counts = {"small": sizes.small, "large": sizes.large, "sync": sizes.sync}
    for key in ("small", "large", "sync"):
        if key in needed:
            log(f"publishing {counts[key]} items to {nodes[key]}")
            fill[key] = await fill_node(publisher, service, nodes[key], counts[key])
    log(f"published ({', '.join(f'{k}: {v:.1f} s' for k, v in fill.items())})")
    if wanted & {"P1", "P1L", "P3", "P6"}:
        results.update(
            await sqlite_daemon_part(
                daemon_dir(directory, "sqlite"), server, sizes, wanted, nodes, publisher
            )
        )
    if "P1pg" in wanted:
        try:
            results["P1pg"] = await p1_postgresql(
                daemon_dir(directory, "postgresql"),
                server,
                sizes,
                nodes["small"],
                publisher,
                postgresql,
            )
        except Exception as error:  # the other ids' figures still count
            traceback.print_exc()
            reason = f"failed: {type(error).__name__}: {' '.join(str(error).split())}"
            log(f"P1pg {reason}")
            results["P1pg"] = pg.skipped(P1_UNIT, P1PG_TARGET, reason)
    return results, nodes


def daemon_dir(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir(exist_ok=True)
    return path


async def sqlite_daemon_part(
    directory: Path,
    server: Any,
    sizes: Sizes,
    wanted: set[str],
    nodes: dict[str, str],
    publisher: Any,
) -> dict[str, Any]:
    """P1, P1L, P3 and P6: the daemon in-process on an SQLite file."""
    from twisted.words.protocols.jabber.jid import JID

    from tests.harness.daemon import start_daemon

    service = server.pubsub_service
    results: dict[str, Any] = {}
    daemon = await start_daemon(directory, server, cache_limit=max(20_000, sizes.sync + 1000))
    client = daemon.clients["bob"]
    try:
        await synchronise(daemon, client, JID(service), nodes["small"])
        if "P1" in wanted:
            log("P1: 20-item page of a 50-item node, cache vs ejabberd")
            figures = await page_figures(
                daemon,
                client,
                publisher,
                service,
                nodes["small"],
                (sizes.cache_reps, sizes.server_reps),
                sizes.rounds,
            )
            results["P1"] = {**figures, "unit": P1_UNIT, "target": ">= 20x"}
            results["P1"]["detail"]["node_items"] = sizes.small
            results["P1"]["detail"]["server"] = "ejabberd (real, loopback)"
            results["P1"]["detail"]["database"] = "SQLite file"
        if "P1L" in wanted:
            log(f"P1L: syncing the {sizes.large}-item node")
            await synchronise(daemon, client, JID(service), nodes["large"])
            log("P1L: 20-item page of the large node, cache vs ejabberd")
            figures = await page_figures(
                daemon,
                client,
                publisher,
                service,
                nodes["large"],
                (sizes.cache_reps // 2, sizes.large_server_reps),
                sizes.rounds,
            )
            results["P1L"] = {
                **figures,
                "unit": "x faster (ejabberd page / cached page through get_items)",
                "target": "report",
            }
            results["P1L"]["detail"]["node_items"] = sizes.large
            results["P1L"]["detail"]["server"] = "ejabberd (real, loopback)"
        if "P3" in wanted:
            log(f"P3: syncing the {sizes.sync}-item node from ejabberd")
            results["P3"] = await p3_sync_share(daemon, client, service, nodes["sync"])
        if "P6" in wanted:
            log("P6: 200 concurrent reads during a resync, with events")
            results["P6"] = await p6_concurrency(
                daemon, client, publisher, service, nodes["small"], nodes["sync"], sizes
            )
    finally:
        await daemon.stop()
    return results


class PostgreSQL:
    """The PostgreSQL server of the PG ids, and why it cannot be used (None: it can)."""

    def __init__(self, server: str, wanted: set[str]) -> None:
        self.server = server
        self.reason: str | None = None
        self.version = ""
        if wanted & set(PG_IDS):
            self.reason = pg.unavailable(server)
            if self.reason is None:
                self.version = pg.version(server)
            else:
                log(f"{', '.join(i for i in PG_IDS if i in wanted)} skipped: {self.reason}")


async def p1_postgresql(
    directory: Path,
    server: Any,
    sizes: Sizes,
    node: str,
    publisher: Any,
    postgresql: PostgreSQL,
) -> dict[str, Any]:
    """P1pg: P1 with the daemon's store on a throwaway PostgreSQL database (same
    ejabberd, same node, same method), dropped at the end."""
    from twisted.words.protocols.jabber.jid import JID

    from tests.harness.daemon import start_daemon

    if postgresql.reason is not None:
        return pg.skipped(P1_UNIT, P1PG_TARGET, postgresql.reason)
    service = server.pubsub_service
    log("P1pg: 20-item page of a 50-item node, cache on PostgreSQL vs ejabberd")
    with pg.throwaway(postgresql.server, "p1") as url:
        daemon = await start_daemon(directory, server, database=url, cache_limit=20_000)
        try:
            client = daemon.clients["bob"]
            await synchronise(daemon, client, JID(service), node)
            figures = await page_figures(
                daemon,
                client,
                publisher,
                service,
                node,
                (sizes.cache_reps, sizes.server_reps),
                sizes.rounds,
            )
        finally:
            await daemon.stop()
    result = {**figures, "unit": P1_UNIT, "target": P1PG_TARGET}
    result["detail"]["node_items"] = sizes.small
    result["detail"]["server"] = "ejabberd (real, loopback)"
    result["detail"]["database"] = (
        f"PostgreSQL {postgresql.version} on {pg.host_of(postgresql.server)} (asyncpg)"
    )
    return result


# --- P1b: through the real daemon process, its bridge and its CLI ---------------------


def p1b_cli(server: Any, directory: Path, node: str, sizes: Sizes) -> dict[str, Any]:
    """``get --json`` through the CLI, cache vs network; and the bridge call alone."""
    from libervia_cache.control import ControlClient
    from tests.harness.daemon import DaemonProcess, write_config

    service = server.pubsub_service
    daemon = DaemonProcess(write_config(directory, server, profiles=["bob"], cache_limit=20_000))
    daemon.start()
    try:
        daemon.cli("sync", service, node, "--wait")
        get = ("get", service, node, "--rsm-max", str(PAGE), "--json")
        # read the page once: on a server whose RSM keys are its own (ejabberd), the
        # cache learns those of a page from the server's first answer to it
        daemon.cli(*get)

        def cli(*extra: str) -> Callable[[], None]:
            def call() -> None:
                result = json.loads(daemon.cli(*get, *extra).stdout)
                cached = result["metadata"]["cached"]
                if cached != (not extra) or len(result["items"]) != PAGE:
                    raise AssertionError(f"unexpected CLI answer: {result['metadata']}")

            return call

        bridge = ControlClient(directory / "daemon.sock")

        def bridge_call(use_cache: bool) -> Callable[[], None]:
            params = {
                "service": service,
                "node": node,
                "rsm": {"max": PAGE},
                "use_cache": use_cache,
            }

            def call() -> None:
                result = bridge.call("ps_items_get", params, timeout=60)
                if result["metadata"]["cached"] != use_cache or len(result["items"]) != PAGE:
                    raise AssertionError(f"unexpected bridge answer: {result['metadata']}")

            return call

        samples: dict[str, list[float]] = {k: [] for k in ("cli_c", "cli_n", "br_c", "br_n")}
        for fn in (cli(), cli("--no-cache")):
            fn()
        rounds = sizes.rounds
        for _ in range(rounds):
            samples["cli_c"] += common.timings_ms_sync(cli(), max(1, sizes.cli_reps // rounds), 0)
            samples["cli_n"] += common.timings_ms_sync(
                cli("--no-cache"), max(1, sizes.cli_reps // rounds), 0
            )
            samples["br_c"] += common.timings_ms_sync(
                bridge_call(True), sizes.bridge_reps // rounds, 5
            )
            samples["br_n"] += common.timings_ms_sync(
                bridge_call(False), sizes.bridge_reps // rounds // 3, 5
            )
    finally:
        code = daemon.stop()
        if code != 0:
            log(f"the daemon process exited with {code}; log: {daemon.log_path}")
    m = {k: common.median(v) for k, v in samples.items()}
    return {
        "value": round(m["cli_n"] / m["cli_c"], 2),
        "unit": "x faster (CLI get --json --no-cache / CLI get --json, cached)",
        "target": "report",
        "detail": {
            "server": "ejabberd (real, loopback)",
            "node_items": sizes.small,
            "cli_cached_ms": round(m["cli_c"], 2),
            "cli_network_ms": round(m["cli_n"], 2),
            "bridge_cached_ms": round(m["br_c"], 3),
            "bridge_network_ms": round(m["br_n"], 3),
            "bridge_speedup": round(m["br_n"] / m["br_c"], 1),
            "how": "the CLI is a new Python process per call (start-up dominates); "
            "bridge = one ps_items_get over the control socket from a blocking client",
        },
    }


# --- CLI: the command's start-up ----------------------------------------------------------


def run_child(argv: list[str]) -> float:
    """Run ``argv`` (output thrown away); its wall time in ms. Exit code 2 (no daemon)
    is what the client command is expected to end with."""
    start = time.perf_counter()
    code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    elapsed = (time.perf_counter() - start) * 1000
    if code not in (0, 2):
        raise AssertionError(f"{' '.join(argv)} exited with {code}")
    return elapsed


def peak_rss_mib(argv: list[str], runs: int = 3) -> float | None:
    """Median peak RSS of ``argv`` in MiB, per GNU time (None without /usr/bin/time).

    Not from ``wait4`` here: a child forked from this big process inherits its
    high-water mark; GNU time is small and forks the command itself.
    """
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return None
    peaks = []
    for _ in range(runs):
        done = subprocess.run(
            [str(gnu_time), "-f", "%M", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        peaks.append(int(done.stderr.strip().splitlines()[-1]) / 1024)
    return round(common.median(peaks), 1)


def cli_startup(sizes: Sizes) -> dict[str, Any]:
    """``libervia-cache --help`` and a client command vs ``python -c "import click"``.

    Each run is a new interpreter (the way people run the command), the commands
    interleaved so that a noisy neighbour hits them alike. The client command is
    ``status`` against a socket nobody listens on: it reads the configuration, connects
    and fails with exit code 2, the whole path of a command but the daemon's time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "libervia-cache.conf"
        config.write_text(f"[daemon]\nsocket = {Path(tmp) / 'nobody.sock'}\n")
        cli = [sys.executable, "-m", "libervia_cache"]
        commands = {
            "cli_help": [*cli, "--help"],
            "cli_status_no_daemon": [*cli, "--config", str(config), "status"],
            "import_click": [sys.executable, "-c", "import click"],
            "bare_python": [sys.executable, "-c", "pass"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for rep in range(2 + sizes.startup_reps):  # 2 warm-up rounds (.pyc, page cache)
            for name, argv in commands.items():
                elapsed = run_child(argv)
                if rep >= 2:
                    times[name].append(elapsed)
        peaks = {name: peak_rss_mib(argv) for name, argv in commands.items()}
    m = {name: common.median(values) for name, values in times.items()}
    return {
        "value": round(m["cli_help"] / m["import_click"], 2),
        "unit": 'x the start-up of python -c "import click" (libervia-cache --help)',
        "target": "<= 2x",
        "detail": {
            **{f"{name}_ms": round(value, 1) for name, value in m.items()},
            "cli_status_vs_import_click": round(m["cli_status_no_daemon"] / m["import_click"], 2),
            **{f"{name}_peak_rss_mib": peak for name, peak in peaks.items()},
            "runs_each": sizes.startup_reps,
            "how": "a new interpreter per run, the four commands interleaved, medians of the "
            "wall time; status reads the configuration and meets no daemon (exit 2); peak "
            "RSS per GNU time",
        },
    }


# --- child processes: store bench, P5 -----------------------------------------------------


def store_figures(quick: bool, databases: list[str], server: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store.json"
        command = [sys.executable, "-m", "bench.store_bench", "--json", str(out)]
        command += ["--databases", ",".join(databases)]
        if quick:
            command.append("--quick")
        env = {**os.environ, pg.ENV: server}  # not on the command line: it may hold a password
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
        return json.loads(out.read_text())


def p5_figures(quick: bool) -> dict[str, Any]:
    sizes = (10_000, 100_000) if not quick else (2000, 20_000)
    runs = {}
    for size in sizes:
        log(f"P5: syncing {size} items from the in-process service (own process)")
        output = subprocess.run(
            [sys.executable, "-m", "bench.p5_rss", str(size)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs[size] = json.loads(output.strip().splitlines()[-1])
    small, big = (runs[s] for s in sizes)
    return {
        "value": big["growth_mb"],
        "unit": f"MB peak RSS growth syncing {sizes[1]} items",
        "target": "<= 64 MB and flat in node size (10k vs 100k)",
        "detail": {
            "server": "in-process Tx-XMPP pubsub service over a loopback TCP stream "
            "(generated items, holds nothing); daemon in-process, one process per size",
            f"growth_{sizes[0]}_mb": small["growth_mb"],
            f"growth_{sizes[1]}_mb": big["growth_mb"],
            "growth_ratio_big_vs_small": round(big["growth_mb"] / max(small["growth_mb"], 0.1), 2),
            "runs": runs,
        },
    }


# --- main ----------------------------------------------------------------------------------


def print_summary(results: dict[str, Any]) -> None:
    print()
    print(f"{'id':5} {'value':>10}  unit  [target]")
    for key in ALL_IDS:
        if key not in results:
            continue
        r = results[key]
        if r["value"] is None:
            print(f"{key:5} {'skipped':>10}  {r['detail']['skipped']}")
            continue
        print(f"{key:5} {r['value']!s:>10}  {r['unit']}  [target {r['target']}]")
        print(f"      {json.dumps({k: v for k, v in r['detail'].items() if k != 'runs'})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller nodes, fewer repetitions")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--only", help="comma-separated ids (default: all)")
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        help="PostgreSQL server of the PG ids, a role that may create databases "
        f"(default: ${pg.ENV}, else {pg.DEFAULT_SERVER})",
    )
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else set(ALL_IDS)
    unknown = wanted - set(ALL_IDS)
    if unknown:
        parser.error(f"unknown id(s): {', '.join(sorted(unknown))}")
    sizes = Sizes(args.quick)
    started = time.perf_counter()
    postgresql = PostgreSQL(pg.server_url(args.postgresql), wanted)
    common.install()
    from tests.servers.ejabberd import EjabberdServer

    results: dict[str, Any] = {}
    store: dict[str, Any] = {}
    if "CLI" in wanted:  # first: before the servers load the machine
        log("CLI: start-up of libervia-cache vs python -c 'import click'")
        results["CLI"] = cli_startup(sizes)
    if wanted & {"P1", "P1pg", "P1L", "P1b", "P1s", "P3", "P6", "LV"}:
        missing = EjabberdServer.missing_binaries()
        if missing:
            sys.exit(
                f"ejabberd is not installed ({', '.join(missing)}): run tests/servers/install.sh"
            )
        log("starting a private ejabberd")
        server = EjabberdServer()
        server.start()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                inproc, process = Path(tmp) / "inproc", Path(tmp) / "process"
                inproc.mkdir()
                process.mkdir()
                part, nodes = common.run(
                    real_server_part(server, inproc, sizes, wanted, postgresql)
                )
                results.update(part)
                if "P1b" in wanted:
                    log("P1b: get --json through the CLI and the daemon process")
                    results["P1b"] = p1b_cli(server, process, nodes["small"], sizes)
                if "P1s" in wanted:
                    from bench.p1s_socket import p1s_figures

                    log("P1s: ps_items_get over the control socket, cached vs ejabberd")
                    (Path(tmp) / "p1s").mkdir()
                    results["P1s"] = p1s_figures(server, Path(tmp) / "p1s", nodes["small"], sizes)
                if "LV" in wanted:
                    from bench.libervia_bench import libervia_figures

                    log(
                        "LV: inside the real Libervia backend: stock cache, libervia-cache, network"
                    )
                    (Path(tmp) / "lv").mkdir()
                    results["LV"] = libervia_figures(server, Path(tmp) / "lv", args.quick)
        finally:
            server.stop()
            common.shutdown()
    store_ids = wanted & {"P2", "P4", "P2pg", "P4pg"}
    if store_ids:
        databases = []
        if store_ids & {"P2", "P4"}:
            databases.append("sqlite")
        if store_ids & {"P2pg", "P4pg"} and postgresql.reason is None:
            databases.append("postgresql")
        if databases:
            log(f"{', '.join(sorted(store_ids))}: store bench (own process)")
            store = store_figures(args.quick, databases, postgresql.server)
        for key in sorted(store_ids):
            if key in store:
                results[key] = store[key]
            elif key in PG_IDS and postgresql.reason is not None:
                from bench.store_bench import skipped_postgresql

                results[key] = skipped_postgresql(postgresql.reason)[key]
    if "P5" in wanted:
        results["P5"] = p5_figures(args.quick)
    ordered = {key: results[key] for key in ALL_IDS if key in results}
    document = {
        **ordered,
        "_run": {
            "command": "tox -e bench" + (" (--quick)" if args.quick else ""),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "seconds": round(time.perf_counter() - started),
            "machine": common.machine(),
            "read_vs_sqlite3": store.get("read_vs_sqlite3"),
            "postgresql": postgresql.version or postgresql.reason,
        },
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print_summary(ordered)
    print(f"\nwritten to {args.json} in {document['_run']['seconds']} s")


if __name__ == "__main__":
    main()
