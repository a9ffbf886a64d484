"""PostgreSQL's plans: every page statement is index lookups and a range scan, never a
scan or a sort of the node; full-text and value searches use their GIN indexes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from libervia_cache.storage import Store, pages, pgpages, searching
from libervia_cache.storage.query import parse_search_query
from tests.conftest import run
from tests.harness.databases import execute, query

from .conftest import PostgresSession

NODE_ITEMS = 20_000


@pytest.fixture(scope="module")
def filled(postgresql_session: PostgresSession) -> Iterator[str]:
    """A database with two nodes of 20,000 items each, analysed."""
    url = postgresql_session.fresh()

    async def create() -> None:
        store = await Store.open(url)
        await store.close()

    run(create())
    execute(
        url,
        "INSERT INTO pubsub_nodes (profile, service, name, subscribed, extra, sync_token) "
        "VALUES ('alice', 's', 'a', false, '{}', 't'), ('alice', 's', 'b', false, '{}', 't')",
        "INSERT INTO pubsub_items (node_id, item_id, data, text, search, parsed, created, "
        "updated, position, creation_position, rsm_key) "
        "SELECT node, 'i' || n, '<item/>', 'w' || (n % 500), "
        "('''w' || (n % 500) || ''':1A')::tsvector, "
        "jsonb_build_object('tags', jsonb_build_array('t' || (n % 200)), 'n', n), "
        "now(), now(), n, n, 'k' || n "
        f"FROM generate_series(1, {NODE_ITEMS}) n, (VALUES (1), (2)) nodes(node)",
        "ANALYZE pubsub_items",
        "ANALYZE pubsub_nodes",
    )
    yield url


def plan(url: str, sql: str, *args: Any, setup: tuple[str, ...] = ()) -> str:
    return " | ".join(row[0] for row in query(url, f"EXPLAIN {sql}", *args, setup=setup))


@pytest.mark.parametrize("order", sorted(pgpages.STATEMENTS))
@pytest.mark.parametrize(
    "request_",
    [
        pages.PageRequest(rsm_max=20),
        pages.PageRequest(rsm_max=20, after="i15000"),
        pages.PageRequest(rsm_max=20, before=""),
        pages.PageRequest(rsm_max=20, index=18000, descending=True),
        pages.PageRequest(max_items=10),
        pages.PageRequest(item_ids=("i1", "i2")),
    ],
    ids=["first", "after", "last", "index-desc", "max-items", "ids"],
)
def test_page_statements_are_index_range_scans(
    filled: str, order: tuple[str, str], request_: pages.PageRequest
) -> None:
    request = pages.PageRequest(**{**request_.__dict__, "order_by": order[0], "keys": order[1]})
    if request.after is not None and order[1] == "rsm_key":
        request = pages.PageRequest(**{**request.__dict__, "after": "k15000"})
    sql, params = pgpages.page_request(1, request, "t")
    shown = plan(filled, sql, *params)
    assert "Seq Scan on pubsub_items" not in shown, shown
    assert "Index" in shown, shown
    # a sort of the page's rows at most, never of the node's
    sorts = [line for line in shown.split(" | ") if "Sort  (" in line]
    assert all("rows=" in s and int(s.split("rows=")[1].split()[0]) < 1000 for s in sorts), shown


@pytest.mark.parametrize(
    ("query_", "index"),
    [
        ({"fts": "w7", "limit": 20}, "ix_pubsub_items_search"),
        (
            {"parsed": [{"path": "tags", "op": "overlap", "value": ["t3"]}]},
            "ix_pubsub_items_parsed",
        ),
        ({"parsed": [{"path": "tags", "op": "==", "value": "none"}]}, "ix_pubsub_items_parsed"),
        ({"parsed": [{"path": "n", "op": "in", "value": [5, 7]}]}, "ix_pubsub_items_parsed"),
    ],
)
def test_searches_can_use_their_gin_index(filled: str, query_: dict[str, Any], index: str) -> None:
    """The index can answer the search (whether the planner takes it depends on the data:
    a frequent tag is found faster by walking the newest items)."""
    statement = searching.search_statement(parse_search_query(query_), True, ["alice"])
    compiled = statement.compile(
        dialect=asyncpg_dialect(), compile_kwargs={"render_postcompile": True}
    )
    params = [compiled.params[name] for name in compiled.positiontup or []]
    shown = plan(filled, str(compiled), *params, setup=("SET enable_seqscan = off",))
    assert index in shown, shown
