"""Store benchmarks: issue 3's targets, and P2/P4 of issue 6.

Run ``python bench/store_bench.py [--quick] [--json PATH]``. Everything is measured in
one run on one database (filled directly through the store, no XMPP server), and printed
as ratios of medians:

- P2: a 20-item RSM page with ``count`` and ``index`` at 90% depth of a 100k-item node
  vs the first page (target <= 2x), and vs the reference Libervia query shape at the same
  depth (ROW_NUMBER over the whole node in a CTE, then a filter on the row number of the
  ``after`` item; target >= 20x faster);
- P4: FTS top-20 over 100k items (p50 <= 10 ms) and a parsed-field filter over 100k items
  (p50 <= 20 ms);
- read_vs_sqlite3: the store's read of a 20-item page (raw XML out, awaited as Twisted
  code awaits it) vs a raw ``sqlite3`` query of the same rows (target <= 5x).

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
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PAGE = 20
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


async def bench(quick: bool) -> dict[str, Any]:
    from libervia_cache.storage import Store

    size = 20_000 if quick else 100_000
    repeat = 200 if quick else 1000
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        node = await store.get_or_create_node("bench", "pubsub.example.org", "big")
        start = time.perf_counter()
        batch = 1000
        for offset in range(0, size, batch):
            await store.cache_items(
                node.id, [make_item(n, rng) for n in range(offset, min(size, offset + batch))]
            )
        fill_seconds = time.perf_counter() - start

        deep_key = f"item-{int(size * 0.9)}"
        await store.get_items(node.id, rsm_max=PAGE)
        deep = await store.get_items(node.id, rsm_max=PAGE, after=deep_key)
        assert deep.index == int(size * 0.9) + 1 and deep.count == size, deep

        first_ms = await median_ms(lambda: store.get_items(node.id, rsm_max=PAGE), repeat)
        deep_ms = await median_ms(
            lambda: store.get_items(node.id, rsm_max=PAGE, after=deep_key), repeat
        )
        last_ms = await median_ms(lambda: store.get_items(node.id, rsm_max=PAGE, before=""), repeat)
        index_ms = await median_ms(
            lambda: store.get_items(node.id, rsm_max=PAGE, index=int(size * 0.9)), repeat
        )

        raw = sqlite3.connect(path)
        params = {"node": node.id, "after": deep_key, "limit": PAGE}

        def reference() -> Any:
            rows = raw.execute(REFERENCE_AFTER_SQL, params).fetchall()
            count = raw.execute(REFERENCE_COUNT_SQL, params).fetchone()
            return rows, count

        reference_rows, _ = reference()
        assert [r[0] for r in reference_rows] == deep.item_ids
        reference_ms = median_ms_sync(reference, max(10, repeat // 50), warmup=2)

        # raw sqlite3 read of the same rows
        deep_position = raw.execute(
            "SELECT position FROM pubsub_items WHERE node_id = ? AND item_id = ?",
            (node.id, deep_key),
        ).fetchone()[0]
        raw_args = (node.id, deep_position, PAGE)
        assert [r[0] for r in raw.execute(RAW_PAGE_SQL, raw_args)] == deep.item_ids
        raw_ms = median_ms_sync(lambda: raw.execute(RAW_PAGE_SQL, raw_args).fetchall(), repeat)

        # P4
        fts_words = rng.sample(WORDS, 20)
        fts_cycle = iter(fts_words * (repeat + 100))
        fts_ms = await median_ms(
            lambda: store.search({"fts": next(fts_cycle), "limit": PAGE}), max(50, repeat // 5)
        )
        fts_phrase_ms = await median_ms(
            lambda: store.search({"fts": f"{fts_words[0]} OR {fts_words[1]}", "limit": PAGE}),
            max(50, repeat // 5),
        )
        tag_cycle = iter(TAGS * (repeat + 100))
        parsed_ms = await median_ms(
            lambda: store.search(
                {
                    "parsed": [{"path": "tags", "op": "overlap", "value": [next(tag_cycle)]}],
                    "limit": PAGE,
                }
            ),
            max(50, repeat // 5),
        )
        range_ms = await median_ms(
            lambda: store.search(
                {"parsed": [{"path": "n", "op": ">=", "value": size // 2}], "limit": PAGE}
            ),
            max(50, repeat // 5),
        )
        no_match_ms = await median_ms(
            lambda: store.search(
                {"parsed": [{"path": "title", "op": "==", "value": "nothing"}], "limit": PAGE}
            ),
            10,
            warmup=2,
        )

        # cost of closing a gap: retract an item at 50% depth, then read
        await store.delete_items(node.id, [f"item-{size // 2}"])
        start = time.perf_counter()
        await store.get_items(node.id, rsm_max=PAGE, after=deep_key)
        renumber_ms = (time.perf_counter() - start) * 1000

        raw.close()
        await store.close()

    return {
        "P2": {
            "value": round(deep_ms / first_ms, 2),
            "unit": "x (page at 90% depth / first page)",
            "target": "<= 2x; >= 20x faster than the reference query shape",
            "detail": {
                "node_items": size,
                "first_page_ms": round(first_ms, 4),
                "page_at_90pct_after_ms": round(deep_ms, 4),
                "page_at_90pct_index_ms": round(index_ms, 4),
                "last_page_ms": round(last_ms, 4),
                "reference_row_number_cte_ms": round(reference_ms, 3),
                "speedup_vs_reference": round(reference_ms / deep_ms, 1),
                "renumber_after_retract_at_50pct_ms": round(renumber_ms, 1),
                "fill_items_per_second": round(size / fill_seconds),
                "setup": "store filled directly (no XMPP server), SQLite file, WAL",
            },
        },
        "P4": {
            "value": round(fts_ms, 3),
            "unit": "ms p50 (FTS top-20)",
            "target": "FTS top-20 p50 <= 10 ms; parsed-field filter p50 <= 20 ms",
            "detail": {
                "node_items": size,
                "fts_top20_ms": round(fts_ms, 3),
                "fts_or_top20_ms": round(fts_phrase_ms, 3),
                "parsed_overlap_top20_ms": round(parsed_ms, 3),
                "parsed_range_top20_ms": round(range_ms, 3),
                "parsed_no_match_full_scan_ms": round(no_match_ms, 3),
            },
        },
        "read_vs_sqlite3": {
            "value": round(deep_ms / raw_ms, 2),
            "unit": "x (store page read / raw sqlite3 of the same rows)",
            "target": "<= 5x",
            "detail": {"store_ms": round(deep_ms, 4), "raw_sqlite3_ms": round(raw_ms, 4)},
        },
    }


def _run_twisted(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` as Twisted code on the asyncio reactor (as the daemon does)."""
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if "twisted.internet.reactor" not in sys.modules:
        asyncioreactor.install(loop)
    from twisted.internet import defer

    return loop.run_until_complete(defer.Deferred.fromCoroutine(coro).asFuture(loop))


def run(quick: bool = False) -> dict[str, Any]:
    """Measure everything; return ``{"P2": ..., "P4": ..., "read_vs_sqlite3": ...}``."""
    return _run_twisted(bench(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, fewer repetitions")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    results = run(args.quick)
    p2, p4, read = results["P2"]["detail"], results["P4"]["detail"], results["read_vs_sqlite3"]
    print(f"node of {p2['node_items']} items (filled at {p2['fill_items_per_second']} items/s)")
    print(
        f"P2  page at 90% depth / first page: {results['P2']['value']}x "
        f"({p2['page_at_90pct_after_ms']} / {p2['first_page_ms']} ms)  target <= 2x"
    )
    print(
        f"P2  reference ROW_NUMBER CTE / store at 90% depth: {p2['speedup_vs_reference']}x "
        f"({p2['reference_row_number_cte_ms']} ms)  target >= 20x"
    )
    print(
        f"P4  FTS top-20 p50: {p4['fts_top20_ms']} ms (target <= 10); parsed filter top-20 "
        f"p50: {p4['parsed_overlap_top20_ms']} ms (target <= 20); "
        f"no-match full scan {p4['parsed_no_match_full_scan_ms']} ms"
    )
    print(
        f"read store / raw sqlite3: {read['value']}x ({read['detail']['store_ms']} / "
        f"{read['detail']['raw_sqlite3_ms']} ms)  target <= 5x"
    )
    print(
        f"renumbering after a retract at 50% depth: {p2['renumber_after_retract_at_50pct_ms']} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
