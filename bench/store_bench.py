"""Store benchmarks: issue 3's targets, and P2/P4 of issue 6.

Run ``python -m bench.store_bench [--quick] [--json PATH] [--databases sqlite,postgresql]
[--postgresql URL]``. Everything is measured in one run on one database per kind (filled
directly through the store, no XMPP server), and printed as ratios of medians:

- P2: a 20-item RSM page with ``count`` and ``index`` at 90% depth of a 100k-item node
  vs the first page (target <= 2x), and vs the reference Libervia query shape at the same
  depth (ROW_NUMBER over the whole node in a CTE, then a filter on the row number of the
  ``after`` item; target >= 20x faster);
- P4: FTS top-20 over 100k items (p50 <= 10 ms) and a parsed-field filter over 100k items
  (p50 <= 20 ms);
- read_vs_sqlite3: the store's read of a 20-item page (raw XML out, awaited as Twisted
  code awaits it) vs a raw ``sqlite3`` query of the same rows (target <= 5x).

P2pg and P4pg are P2 and P4 on a throwaway PostgreSQL database (:mod:`bench.pg`: the
server of ``--postgresql``, else ``$LIBERVIA_CACHE_BENCH_POSTGRESQL``, else the local
``postgres`` role), analysed after the fill; P2pg's detail adds the same page read by a
bare asyncpg prepared statement. Skipped, with the reason, when the server cannot be used.

:func:`run` returns the figures as a dict for ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bench import pg

T = TypeVar("T")

PAGE = 20
DATABASES = ("sqlite", "postgresql")
WORDS = [f"w{n:04d}" for n in range(2000)]
TAGS = [f"tag{n:03d}" for n in range(200)]

REFERENCE_AFTER_SQL = """
WITH ranked AS (
    SELECT id, item_id,
           row_number() OVER (ORDER BY updated ASC, id ASC) AS item_index
    FROM pubsub_items WHERE node_id = :node
)
SELECT pubsub_items.item_id, pubsub_items.data, ranked.item_index
FROM ranked JOIN pubsub_items ON pubsub_items.id = ranked.id
WHERE ranked.item_index > (SELECT item_index FROM ranked WHERE item_id = :after)
ORDER BY ranked.item_index LIMIT :limit
"""
REFERENCE_COUNT_SQL = "SELECT count(*) FROM pubsub_items WHERE node_id = :node"
RAW_PAGE_SQL = (
    "SELECT item_id, data FROM pubsub_items WHERE node_id = ? AND position > ? "
    "ORDER BY position LIMIT ?"
)


def make_item(n: int, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    words = " ".join(rng.choice(WORDS) for _ in range(30))
    tags = rng.sample(TAGS, 3)
    raw = (
        f"<item xmlns='http://jabber.org/protocol/pubsub' id='item-{n}'>"
        f"<entry xmlns='http://www.w3.org/2005/Atom'><title>post {n}</title>"
        f"<content>{words}</content>"
        + "".join(f"<category term='{t}'/>" for t in tags)
        + "</entry></item>"
    )
    return f"item-{n}", raw, {"title": f"post {n}", "n": n, "tags": tags}


async def median_ms(fn: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        await fn()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


def median_ms_sync(fn: Callable[[], Any], repeat: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


def pg_params(sql: str, names: tuple[str, ...]) -> str:
    """``sql`` with its ``:name`` (or ``?``) parameters written ``$1``, ``$2``.. (asyncpg)."""
    for number, name in enumerate(names, 1):
        old = "?" if name == "?" else f":{name}"
        sql = sql.replace(old, f"${number}", 1 if name == "?" else -1)
    return sql


async def analyze(url: str) -> None:
    """``ANALYZE`` the database (what autovacuum does soon after a bulk fill)."""
    import asyncpg

    connection = await asyncpg.connect(pg.dsn(url))
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def fill(store: Any, size: int, rng: random.Random) -> tuple[Any, float]:
    """A node of ``size`` items, filled through the store; the node and the seconds."""
    node = await store.get_or_create_node("bench", "pubsub.example.org", "big")
    start = time.perf_counter()
    batch = 1000
    for offset in range(0, size, batch):
        await store.cache_items(
            node.id, [make_item(n, rng) for n in range(offset, min(size, offset + batch))]
        )
    return node, time.perf_counter() - start


async def store_timings(
    store: Any, node_id: int, size: int, repeat: int, rng: random.Random
) -> Any:
    """The store's figures of P2 (pages) and P4 (searches), medians in ms."""
    deep_key = f"item-{int(size * 0.9)}"
    await store.get_items(node_id, rsm_max=PAGE)
    deep = await store.get_items(node_id, rsm_max=PAGE, after=deep_key)
    assert deep.index == int(size * 0.9) + 1 and deep.count == size, deep
    t: dict[str, Any] = {"deep_key": deep_key, "deep_ids": deep.item_ids}
    t["first"] = await median_ms(lambda: store.get_items(node_id, rsm_max=PAGE), repeat)
    t["deep"] = await median_ms(
        lambda: store.get_items(node_id, rsm_max=PAGE, after=deep_key), repeat
    )
    t["last"] = await median_ms(lambda: store.get_items(node_id, rsm_max=PAGE, before=""), repeat)
    t["index"] = await median_ms(
        lambda: store.get_items(node_id, rsm_max=PAGE, index=int(size * 0.9)), repeat
    )
    searches = max(50, repeat // 5)
    fts_words = rng.sample(WORDS, 20)
    fts_cycle = iter(fts_words * (repeat + 100))
    t["fts"] = await median_ms(
        lambda: store.search({"fts": next(fts_cycle), "limit": PAGE}), searches
    )
    t["fts_or"] = await median_ms(
        lambda: store.search({"fts": f"{fts_words[0]} OR {fts_words[1]}", "limit": PAGE}),
        searches,
    )
    tag_cycle = iter(TAGS * (repeat + 100))
    t["parsed"] = await median_ms(
        lambda: store.search(
            {
                "parsed": [{"path": "tags", "op": "overlap", "value": [next(tag_cycle)]}],
                "limit": PAGE,
            }
        ),
        searches,
    )
    t["range"] = await median_ms(
        lambda: store.search(
            {"parsed": [{"path": "n", "op": ">=", "value": size // 2}], "limit": PAGE}
        ),
        searches,
    )
    t["no_match"] = await median_ms(
        lambda: store.search(
            {"parsed": [{"path": "title", "op": "==", "value": "nothing"}], "limit": PAGE}
        ),
        10,
        warmup=2,
    )
    return t


async def renumber_ms(store: Any, node_id: int, size: int, deep_key: str) -> float:
    """Cost of closing a gap: retract an item at 50% depth, then read."""
    await store.delete_items(node_id, [f"item-{size // 2}"])
    start = time.perf_counter()
    await store.get_items(node_id, rsm_max=PAGE, after=deep_key)
    return (time.perf_counter() - start) * 1000


def figures(
    t: dict[str, Any], size: int, fill_seconds: float, reference_ms: float, renumber: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """P2 and P4 entries from :func:`store_timings`."""
    p2 = {
        "value": round(t["deep"] / t["first"], 2),
        "unit": "x (page at 90% depth / first page)",
        "target": "<= 2x; >= 20x faster than the reference query shape",
        "detail": {
            "node_items": size,
            "first_page_ms": round(t["first"], 4),
            "page_at_90pct_after_ms": round(t["deep"], 4),
            "page_at_90pct_index_ms": round(t["index"], 4),
            "last_page_ms": round(t["last"], 4),
            "reference_row_number_cte_ms": round(reference_ms, 3),
            "speedup_vs_reference": round(reference_ms / t["deep"], 1),
            "renumber_after_retract_at_50pct_ms": round(renumber, 1),
            "fill_items_per_second": round(size / fill_seconds),
        },
    }
    p4 = {
        "value": round(t["fts"], 3),
        "unit": "ms p50 (FTS top-20)",
        "target": "FTS top-20 p50 <= 10 ms; parsed-field filter p50 <= 20 ms",
        "detail": {
            "node_items": size,
            "fts_top20_ms": round(t["fts"], 3),
            "fts_or_top20_ms": round(t["fts_or"], 3),
            "parsed_overlap_top20_ms": round(t["parsed"], 3),
            "parsed_range_top20_ms": round(t["range"], 3),
            "parsed_no_match_full_scan_ms": round(t["no_match"], 3),
        },
    }
    return p2, p4


async def bench_sqlite(quick: bool) -> dict[str, Any]:
    from libervia_cache.storage import Store

    size = 20_000 if quick else 100_000
    repeat = 200 if quick else 1000
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        node, fill_seconds = await fill(store, size, rng)
        t = await store_timings(store, node.id, size, repeat, rng)

        raw = sqlite3.connect(path)
        params = {"node": node.id, "after": t["deep_key"], "limit": PAGE}

        def reference() -> Any:
            rows = raw.execute(REFERENCE_AFTER_SQL, params).fetchall()
            count = raw.execute(REFERENCE_COUNT_SQL, params).fetchone()
            return rows, count

        reference_rows, _ = reference()
        assert [r[0] for r in reference_rows] == t["deep_ids"]
        reference_ms = median_ms_sync(reference, max(10, repeat // 50), warmup=2)

        # raw sqlite3 read of the same rows
        deep_position = raw.execute(
            "SELECT position FROM pubsub_items WHERE node_id = ? AND item_id = ?",
            (node.id, t["deep_key"]),
        ).fetchone()[0]
        raw_args = (node.id, deep_position, PAGE)
        assert [r[0] for r in raw.execute(RAW_PAGE_SQL, raw_args)] == t["deep_ids"]
        raw_ms = median_ms_sync(lambda: raw.execute(RAW_PAGE_SQL, raw_args).fetchall(), repeat)

        renumber = await renumber_ms(store, node.id, size, t["deep_key"])
        raw.close()
        await store.close()

    p2, p4 = figures(t, size, fill_seconds, reference_ms, renumber)
    p2["detail"]["setup"] = "store filled directly (no XMPP server), SQLite file, WAL"
    return {
        "P2": p2,
        "P4": p4,
        "read_vs_sqlite3": {
            "value": round(t["deep"] / raw_ms, 2),
            "unit": "x (store page read / raw sqlite3 of the same rows)",
            "target": "<= 5x",
            "detail": {"store_ms": round(t["deep"], 4), "raw_sqlite3_ms": round(raw_ms, 4)},
        },
    }


async def bench_postgresql(quick: bool, url: str, server_version: str) -> dict[str, Any]:
    """P2 and P4 on a PostgreSQL database (``url``, empty); the raw reads with asyncpg on
    a connection of their own, prepared statements as the store's."""
    import asyncpg

    from libervia_cache.storage import Store
    from libervia_cache.storage.aio import aio

    size = 20_000 if quick else 100_000
    repeat = 200 if quick else 1000
    rng = random.Random(42)
    store = await Store.open(url)
    raw = None
    try:
        node, fill_seconds = await fill(store, size, rng)
        await aio(analyze(url))  # as autovacuum soon would after such a fill
        t = await store_timings(store, node.id, size, repeat, rng)

        raw = await aio(asyncpg.connect(pg.dsn(url)))
        reference_sql = pg_params(REFERENCE_AFTER_SQL, ("node", "after", "limit"))
        count_sql = pg_params(REFERENCE_COUNT_SQL, ("node",))

        async def reference() -> Any:
            rows = await raw.fetch(reference_sql, node.id, t["deep_key"], PAGE)
            count = await raw.fetchval(count_sql, node.id)
            return rows, count

        reference_rows, _ = await aio(reference())
        assert [r[0] for r in reference_rows] == t["deep_ids"]
        reference_ms = await median_ms(lambda: aio(reference()), max(10, repeat // 50), warmup=2)

        deep_position = await aio(
            raw.fetchval(
                "SELECT position FROM pubsub_items WHERE node_id = $1 AND item_id = $2",
                node.id,
                t["deep_key"],
            )
        )
        raw_sql = pg_params(RAW_PAGE_SQL, ("?", "?", "?"))
        raw_rows = await aio(raw.fetch(raw_sql, node.id, deep_position, PAGE))
        assert [r[0] for r in raw_rows] == t["deep_ids"]
        raw_ms = await median_ms(
            lambda: aio(raw.fetch(raw_sql, node.id, deep_position, PAGE)), repeat
        )
        renumber = await renumber_ms(store, node.id, size, t["deep_key"])
    finally:
        if raw is not None:
            await aio(raw.close())
        await store.close()

    p2, p4 = figures(t, size, fill_seconds, reference_ms, renumber)
    where = f"PostgreSQL {server_version} on {pg.host_of(url)} (asyncpg)"
    p2["detail"]["setup"] = f"store filled directly (no XMPP server), {where}"
    p2["detail"]["raw_asyncpg_page_ms"] = round(raw_ms, 4)
    p2["detail"]["store_vs_raw_asyncpg"] = round(t["deep"] / raw_ms, 2)
    p4["detail"]["setup"] = where
    return {"P2pg": p2, "P4pg": p4}


def _run_twisted(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` as Twisted code on the asyncio reactor (as the daemon does)."""
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if "twisted.internet.reactor" not in sys.modules:
        asyncioreactor.install(loop)
    from twisted.internet import defer

    return loop.run_until_complete(defer.Deferred.fromCoroutine(coro).asFuture(loop))


async def bench(quick: bool, databases: set[str], server: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "sqlite" in databases:
        results.update(await bench_sqlite(quick))
    if "postgresql" in databases:
        results.update(await postgresql_figures(quick, server))
    return results


async def postgresql_figures(quick: bool, server: str) -> dict[str, Any]:
    """P2pg and P4pg on a throwaway database of ``server`` (dropped at the end); both
    skipped, with the reason, when the server cannot be used or the run fails."""
    reason = pg.unavailable(server)
    if reason is None:
        try:
            with pg.throwaway(server, "store") as url:
                return await bench_postgresql(quick, url, pg.version(server))
        except Exception as error:
            traceback.print_exc()
            reason = f"failed: {type(error).__name__}: {' '.join(str(error).split())}"
    print(f"P2pg, P4pg skipped: {reason}", file=sys.stderr)
    return skipped_postgresql(reason)


def skipped_postgresql(reason: str) -> dict[str, Any]:
    """The entries of P2pg and P4pg when they could not be measured."""
    return {
        "P2pg": pg.skipped("x (page at 90% depth / first page)", "<= 2x", reason),
        "P4pg": pg.skipped("ms p50 (FTS top-20)", "FTS top-20 p50 <= 10 ms", reason),
    }


def run(
    quick: bool = False, databases: tuple[str, ...] = DATABASES, server: str | None = None
) -> dict[str, Any]:
    """Measure everything; return ``{"P2": ..., "P4": ..., "read_vs_sqlite3": ...,
    "P2pg": ..., "P4pg": ...}`` (the ids of the ``databases`` asked for)."""
    return _run_twisted(bench(quick, set(databases), pg.server_url(server)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, fewer repetitions")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument(
        "--databases",
        default=",".join(DATABASES),
        help="comma-separated: sqlite, postgresql (default: both)",
    )
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        help=f"PostgreSQL server, a role that may create databases (default: ${pg.ENV}, "
        f"else {pg.DEFAULT_SERVER})",
    )
    args = parser.parse_args()
    databases = tuple(d.strip() for d in args.databases.split(",") if d.strip())
    unknown = set(databases) - set(DATABASES)
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    results = run(args.quick, databases, args.postgresql)
    for suffix, name in (("", "SQLite"), ("pg", "PostgreSQL")):
        if f"P2{suffix}" in results:
            print_figures(results, suffix, name)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_figures(results: dict[str, Any], suffix: str, name: str) -> None:
    p2_entry, p4_entry = results[f"P2{suffix}"], results[f"P4{suffix}"]
    if p2_entry["value"] is None:
        print(f"{name}: skipped ({p2_entry['detail']['skipped']})")
        return
    p2, p4 = p2_entry["detail"], p4_entry["detail"]
    print(
        f"{name}: node of {p2['node_items']} items "
        f"(filled at {p2['fill_items_per_second']} items/s)"
    )
    print(
        f"P2{suffix}  page at 90% depth / first page: {p2_entry['value']}x "
        f"({p2['page_at_90pct_after_ms']} / {p2['first_page_ms']} ms)  target <= 2x"
    )
    print(
        f"P2{suffix}  reference ROW_NUMBER CTE / store at 90% depth: {p2['speedup_vs_reference']}x "
        f"({p2['reference_row_number_cte_ms']} ms)  target >= 20x"
    )
    print(
        f"P4{suffix}  FTS top-20 p50: {p4['fts_top20_ms']} ms (target <= 10); parsed filter top-20 "
        f"p50: {p4['parsed_overlap_top20_ms']} ms (target <= 20); "
        f"no-match full scan {p4['parsed_no_match_full_scan_ms']} ms"
    )
    if suffix == "":
        read = results["read_vs_sqlite3"]
        print(
            f"read store / raw sqlite3: {read['value']}x ({read['detail']['store_ms']} / "
            f"{read['detail']['raw_sqlite3_ms']} ms)  target <= 5x"
        )
    else:
        print(
            f"read store / raw asyncpg: {p2['store_vs_raw_asyncpg']}x "
            f"({p2['page_at_90pct_after_ms']} / {p2['raw_asyncpg_page_ms']} ms)"
        )
    print(
        f"renumbering after a retract at 50% depth: {p2['renumber_after_retract_at_50pct_ms']} ms"
    )


if __name__ == "__main__":
    main()
