"""Search and purge queries fuzzed with hypothesis, through the store and the bridge.

Whatever the query (random keys, operators, paths, values, types, FTS syntax, huge
integers, lone surrogates, NUL, SQL fragments), the store either answers or raises
:class:`SearchQueryError` naming a part of the query; nothing else escapes, and nothing
in the database changes. Purge is checked against a Python model of its filters: it
deletes exactly the items matching every filter, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from twisted.internet.defer import Deferred

from libervia_cache.backend.bridge import Bridge
from libervia_cache.errors import BridgeError
from libervia_cache.storage import Store, SyncState
from libervia_cache.storage.aio import aio
from libervia_cache.storage.models import items_table, nodes_table
from libervia_cache.storage.query import OPERATORS, ORDER_KEYS, SearchQueryError
from tests.conftest import run
from tests.fakes import FakeService, start_plugin

INJECTION = "'); DROP TABLE pubsub_items; --"

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies -----------------------------------------------------------------------

NASTY_TEXTS = [
    INJECTION,
    "x' OR '1'='1",
    '"',
    "\\",
    "%",
    "_",
    "\x00",
    "a\x00b",
    "\ud800",
    "日本",
    "",
    " ",
    "$.a",
    "a.b[0]",
    "a[99999999999999999999]",
    "[",
    "]",
    "..",
    "tags",
    "title",
    "n",
]
texts = st.one_of(st.text(max_size=10), st.sampled_from(NASTY_TEXTS))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 0, -1]),
    st.floats(),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)
    ),
    max_leaves=6,
)
FTS_TOKENS = [
    "python",
    "café",
    "twisted",
    '"',
    "(",
    ")",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "NEAR(python twisted, 2)",
    "*",
    "^",
    ":",
    "text:",
    "{text}:",
    "nosuchcolumn:",
    "-",
    "+",
    ",",
    '"python twisted"',
    INJECTION,
]
fts_queries = st.one_of(
    st.lists(st.sampled_from(FTS_TOKENS), min_size=1, max_size=6).map(" ".join),
    st.lists(st.sampled_from(FTS_TOKENS), min_size=1, max_size=4).map("".join),
    texts,
    json_values,
)
paths = st.one_of(
    texts,
    st.lists(st.one_of(texts, st.integers(min_value=-3, max_value=2**70)), max_size=3),
    json_values,
)
operators = st.one_of(st.sampled_from(sorted(OPERATORS)), texts)
parsed_filters = st.one_of(
    st.fixed_dictionaries({"path": paths, "op": operators}, optional={"value": json_values}),
    st.dictionaries(texts, json_values, max_size=4),
    json_values,
)
order_terms = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "order": st.one_of(st.sampled_from(ORDER_KEYS), texts),
            "path": paths,
            "direction": st.one_of(st.sampled_from(["asc", "desc"]), texts),
        },
    ),
    json_values,
)
text_lists = st.one_of(st.lists(st.one_of(texts, st.none()), max_size=3), json_values)
integers = st.one_of(st.integers(min_value=-5, max_value=2**70), json_values)
search_queries = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "fts": fts_queries,
            "profiles": text_lists,
            "services": text_lists,
            "nodes": text_lists,
            "types": text_lists,
            "subtypes": text_lists,
            "names": text_lists,
            "item_ids": text_lists,
            "index": integers,
            "limit": integers,
            "with_payload": st.one_of(st.booleans(), json_values),
            "parsed": st.one_of(st.lists(parsed_filters, max_size=3), json_values),
            "order-by": st.one_of(st.lists(order_terms, max_size=2), order_terms),
        },
    ),
    st.dictionaries(texts, json_values, max_size=3),
)
dates = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14))])),
    st.datetimes(),
    st.datetimes().map(datetime.isoformat),
    texts,
    json_values,
)
purge_filters = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "profiles": text_lists,
            "services": text_lists,
            "nodes": text_lists,
            "types": text_lists,
            "subtypes": text_lists,
            "created_before": dates,
            "updated_before": dates,
        },
    ),
    st.dictionaries(texts, json_values, max_size=3),
)

# --- a small corpus -------------------------------------------------------------------

CORPUS: list[tuple[str, str, str, list[tuple[str, str, dict[str, Any] | None]]]] = [
    ("bob", "pubsub.example.org", "blog", [
        ("p1", "<item id='p1'><title>Twisted and asyncio</title></item>",
         {"title": "Twisted", "n": 1, "tags": ["Python", "async"], "meta": {"lang": "en"}}),
        ("p2", "<item id='p2'><title>Café crème</title></item>",
         {"title": "café", "n": 2.5, "tags": ["food"], "flag": True}),
        ("p3", f"<item id='p3'><title>{INJECTION}</title></item>",
         {"title": INJECTION, "n": 2**62, "tags": []}),
    ]),
    ("carol", "pubsub.example.org", "blog", [
        ("c1", "<item id='c1'><x>python</x></item>", None),
        ("c2", "<item id='c2'><x>日本語</x></item>", {"title": None, "tags": "not a list"}),
    ]),
]  # fmt: skip


CORPUS_SIZE = sum(len(items) for *_, items in CORPUS)


async def fill(store: Store) -> None:
    await store.reset()
    for profile, service, node, items in CORPUS:
        info = await store.get_or_create_node(profile, service, node, type_="blog")
        token = await store.begin_sync(info.id, {})
        await store.cache_items(info.id, items, complete=True, token=token)


def snapshot(store: Store) -> Deferred[tuple[int, int, list[Any]]]:
    """Item and node counts and every item row: what must not change under a search."""
    return aio(_snapshot(store))


async def _snapshot(store: Store) -> tuple[int, int, list[Any]]:
    # an asyncio coroutine (SQLAlchemy asyncio): tests await it through aio()
    async with store.engine.connect() as connection:
        item_count = (
            await connection.execute(select(func.count()).select_from(items_table))
        ).scalar_one()
        node_count = (
            await connection.execute(select(func.count()).select_from(nodes_table))
        ).scalar_one()
        rows = (
            await connection.execute(
                select(items_table.c.item_id, items_table.c.data).order_by(items_table.c.id)
            )
        ).all()
    return item_count, node_count, [tuple(r) for r in rows]


def part_root(part: str) -> str:
    """``parsed[0].value`` -> ``parsed``."""
    return re.split(r"[.\[]", part, maxsplit=1)[0]


# --- search -----------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(query=search_queries)
def test_any_search_query_is_answered_or_rejected_naming_its_part(
    store: Store, query: dict[str, Any]
) -> None:
    async def check() -> None:
        if not await store.search({"limit": 1}):
            await fill(store)
        before = await snapshot(store)
        try:
            results = await store.search(query)
        except SearchQueryError as error:
            root = part_root(error.part)
            assert error.part in query or root in query, (error.part, query)
            assert error.message
        else:
            known = {item_id for *_, items in CORPUS for item_id, *__ in items}
            assert {r["item_id"] for r in results} <= known
        assert await snapshot(store) == before

    run(check())


@FUZZ_SETTINGS
@given(fts=fts_queries.filter(lambda fts: fts is not None))
def test_any_full_text_query_is_answered_or_rejected_as_fts(store: Store, fts: Any) -> None:
    async def check() -> None:
        if not await store.search({"limit": 1}):
            await fill(store)
        try:
            await store.search({"fts": fts, "order-by": [{"order": "rank"}]})
        except SearchQueryError as error:
            assert error.part == "fts", error

    run(check())


@FUZZ_SETTINGS
@given(
    path=paths,
    op=st.sampled_from(sorted(OPERATORS)),
    value=json_values,
)
def test_every_operator_with_any_path_and_value_is_answered_or_rejected(
    store: Store, path: Any, op: str, value: Any
) -> None:
    async def check() -> None:
        if not await store.search({"limit": 1}):
            await fill(store)
        query = {"parsed": [{"path": path, "op": op, "value": value}], "order-by": {"path": path}}
        try:
            await store.search(query)
        except SearchQueryError as error:
            assert part_root(error.part) in ("parsed", "order-by"), error
            assert error.part != "parsed", "the filter is well formed: the error names its key"

    run(check())


async def test_lists_mixing_booleans_and_numbers_are_bound_as_json_reads_them(
    store: Store,
) -> None:
    """Found by fuzzing: a list starting with a boolean failed to bind the numbers after
    it (SQLAlchemy typed the whole list as Boolean). JSON true and false read as 1, 0."""
    await fill(store)
    flagged = await store.search({"parsed": [{"path": "flag", "op": "in", "value": [True, 7.5]}]})
    assert [r["item_id"] for r in flagged] == ["p2"]
    numbered = await store.search({"parsed": [{"path": "n", "op": "in", "value": [False, 1]}]})
    assert [r["item_id"] for r in numbered] == ["p1"]
    tagged = await store.search(
        {"parsed": [{"path": "tags", "op": "disjoint", "value": [False, -1, "food"]}]}
    )
    assert sorted(r["item_id"] for r in tagged) == ["c1", "c2", "p1", "p3"]


@pytest.mark.parametrize(
    ("query", "part"),
    [
        ({"parsed": [{"path": "n", "op": "==", "value": 2**64}]}, "parsed[0].value"),
        ({"parsed": [{"path": "tags", "op": "overlap", "value": [-(2**63) - 1]}]},
         "parsed[0].value"),
        ({"parsed": [{"path": "n", "op": "between", "value": [0, 2**70]}]}, "parsed[0].value"),
        ({"parsed": [{"path": "title", "op": "==", "value": "\ud800"}]}, "parsed[0].value"),
        ({"parsed": [{"path": "ti\ud800tle", "op": "==", "value": "x"}]}, "parsed[0].path"),
        ({"parsed": [{"path": ["a\x00b"], "op": "==", "value": "x"}]}, "parsed[0].path"),
        ({"parsed": [{"path": "a\x00b", "op": "==", "value": "x"}]}, "parsed[0].path"),
        ({"order-by": [{"path": "a\x00b"}]}, "order-by[0].path"),
        ({"parsed": [{"path": "n", "op": "<", "value": False}]}, "parsed[0].value"),
        ({"fts": "caf\udce9"}, "fts"),
        ({"profiles": ["b\udcf6b"]}, "profiles"),
        ({"names": ["\ud800"]}, "names"),
        ({"index": 2**63}, "index"),
        ({"limit": 2**64}, "limit"),
    ],
)  # fmt: skip
async def test_values_sqlite_cannot_bind_are_rejected_naming_the_part(
    store: Store, query: dict[str, Any], part: str
) -> None:
    """Found by fuzzing: these used to escape as OverflowError, UnicodeEncodeError,
    a SQLite "JSON path error" or an SQLAlchemy ArgumentError (ordering on a boolean)
    instead of a query error."""
    await fill(store)
    with pytest.raises(SearchQueryError) as error:
        await store.search(query)
    assert error.value.part == part


async def test_the_largest_sqlite_integers_are_accepted(store: Store) -> None:
    await fill(store)
    results = await store.search(
        {
            "parsed": [{"path": "n", "op": "between", "value": [-(2**63), 2**63 - 1]}],
            "index": 0,
            "limit": 2**63 - 1,
        }
    )
    assert sorted(r["item_id"] for r in results) == ["p1", "p2", "p3"]


@pytest.mark.parametrize(
    "query",
    [
        {"fts": f'"{INJECTION}"'},
        {"profiles": [INJECTION]},
        {"services": [INJECTION]},
        {"nodes": [INJECTION]},
        {"types": [INJECTION]},
        {"names": [INJECTION]},
        {"parsed": [{"path": "title", "op": "==", "value": INJECTION}]},
        {"parsed": [{"path": "title", "op": "like", "value": f"%{INJECTION}%"}]},
        {"parsed": [{"path": "title", "op": "in", "value": [INJECTION, "x"]}]},
        {"parsed": [{"path": [INJECTION], "op": "!=", "value": None}]},
        {"order-by": [{"path": [INJECTION]}]},
    ],
)
async def test_sql_in_a_search_value_is_just_a_value(store: Store, query: dict[str, Any]) -> None:
    await fill(store)
    before = await snapshot(store)
    results = await store.search(query)
    matching = {r["item_id"] for r in results}
    # only the item whose title is that very text can match
    assert matching <= {"p3"} or "order-by" in query or "!=" in str(query)
    assert await snapshot(store) == before


async def test_sql_in_a_full_text_query_finds_the_item_holding_that_text(store: Store) -> None:
    await fill(store)
    results = await store.search({"fts": '"DROP TABLE pubsub_items"'})
    assert [r["item_id"] for r in results] == ["p3"]


# --- purge --------------------------------------------------------------------------------

PROFILES = ["bob", "carol"]
SERVICES = ["pubsub.example.org", "pubsub.example.net"]
NAMES = ["blog", "events"]
TIMES = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=6 * n) for n in range(6)]


@dataclass(frozen=True)
class ModelItem:
    profile: str
    service: str
    node: str
    type: str | None
    subtype: str | None
    item_id: str
    created: datetime
    updated: datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.profile, self.service, self.node, self.item_id)


def as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def model_matches(item: ModelItem, filters: dict[str, Any]) -> bool:
    """The purge filters, as Python: every given filter must match."""
    checks = {
        "profiles": lambda v: item.profile in v,
        "services": lambda v: item.service in v,
        "nodes": lambda v: item.node in v,
        "types": lambda v: item.type in v,
        "subtypes": lambda v: item.subtype in v,
        "created_before": lambda v: item.created < as_utc(v),
        "updated_before": lambda v: item.updated < as_utc(v),
    }
    return all(checks[key](value) for key, value in filters.items() if value is not None)


node_specs = st.lists(
    st.tuples(
        st.sampled_from(PROFILES),
        st.sampled_from(SERVICES),
        st.sampled_from(NAMES),
        st.sampled_from(["blog", "event", None]),
        st.sampled_from(["x", None]),
        st.sampled_from([SyncState.COMPLETED, SyncState.ERROR, None]),
        st.lists(st.tuples(st.sampled_from(TIMES), st.sampled_from(TIMES)), min_size=0, max_size=3),
    ),
    max_size=6,
    unique_by=lambda spec: spec[:3],
)
cutoffs = st.one_of(
    st.sampled_from(TIMES),
    st.sampled_from(TIMES).map(lambda t: t + timedelta(microseconds=1)),
    st.sampled_from(TIMES).map(lambda t: t.astimezone(timezone(timedelta(hours=5)))),
    st.sampled_from(TIMES).map(lambda t: t.replace(tzinfo=None).isoformat()),
    st.sampled_from(TIMES).map(lambda t: t.astimezone(timezone(timedelta(hours=-3))).isoformat()),
)
valid_purge_filters = st.fixed_dictionaries(
    {},
    optional={
        "profiles": st.lists(st.sampled_from([*PROFILES, "dave"]), max_size=2),
        "services": st.lists(st.sampled_from(SERVICES), max_size=2),
        "nodes": st.lists(st.sampled_from([*NAMES, "other"]), max_size=2),
        "types": st.lists(st.sampled_from(["blog", "event", "other", None]), max_size=2),
        "subtypes": st.lists(st.sampled_from(["x", None]), max_size=2),
        "created_before": cutoffs,
        "updated_before": cutoffs,
    },
)


async def set_times(store: Store, node_id: int, entries: list[tuple[str, Any, Any]]) -> None:
    """Give items chosen creation and modification times (an asyncio coroutine)."""
    async with store.engine.begin() as connection:
        for item_id, created, updated in entries:
            await connection.execute(
                update(items_table)
                .where(items_table.c.node_id == node_id, items_table.c.item_id == item_id)
                .values(created=created, updated=updated)
            )


async def fill_model(store: Store, specs: list[Any]) -> tuple[list[ModelItem], dict[int, Any]]:
    await store.reset()
    model: list[ModelItem] = []
    states: dict[int, Any] = {}
    for profile, service, name, type_, subtype, state, times in specs:
        info = await store.get_or_create_node(
            profile, service, name, type_=type_, subtype=subtype, sync_state=state
        )
        states[info.id] = state
        entries = [(f"{name}-{n}", created, updated) for n, (created, updated) in enumerate(times)]
        await store.cache_items(info.id, [(i, f"<item id='{i}'/>", {"i": i}) for i, *_ in entries])
        await aio(set_times(store, info.id, entries))
        model += [
            ModelItem(profile, service, name, type_, subtype, i, created, updated)
            for i, created, updated in entries
        ]
    return model, states


async def stored_keys(store: Store) -> set[tuple[str, str, str, str]]:
    results = await store.search({})
    return {(r["profile"], r["service"], r["node"], r["item_id"]) for r in results}


@settings(FUZZ_SETTINGS, max_examples=120)
@given(specs=node_specs, filters=valid_purge_filters)
def test_purge_deletes_exactly_the_items_matching_every_filter(
    store: Store, specs: list[Any], filters: dict[str, Any]
) -> None:
    async def check() -> None:
        model, states = await fill_model(store, specs)
        matching = {i.key for i in model if model_matches(i, filters)}
        assert await store.count_purge(filters) == len(matching)
        assert await store.purge(filters) == len(matching)
        remaining = await stored_keys(store)
        # nothing left matches the filters, and everything that did not match is there
        assert remaining == {i.key for i in model} - matching
        touched = {(i.profile, i.service, i.node) for i in model if i.key in matching}
        for node in await store.get_nodes():
            expected = states[node.id]
            if (node.profile, node.service, node.name) in touched and expected is (
                SyncState.COMPLETED
            ):
                expected = None  # no longer a mirror of the server
            assert node.sync_state is expected, node

    run(check())


@FUZZ_SETTINGS
@given(filters=purge_filters)
def test_any_purge_filters_purge_or_are_rejected_naming_the_part_and_deleting_nothing(
    store: Store, filters: dict[str, Any]
) -> None:
    async def check() -> None:
        before = await snapshot(store)
        if before[0] != CORPUS_SIZE:
            await fill(store)
            before = await snapshot(store)
        try:
            expected = await store.count_purge(filters)
        except SearchQueryError as error:
            assert error.part in filters or part_root(error.part) in filters, (error.part, filters)
            with pytest.raises(SearchQueryError):
                await store.purge(filters)
            assert await snapshot(store) == before
        else:
            assert await store.purge(filters) == expected
            assert (await snapshot(store))[0] == before[0] - expected

    run(check())


@pytest.mark.parametrize(
    "filters",
    [
        {"created_before": "0001-01-01T00:00:00+01:00"},
        {"updated_before": "9999-12-31T23:59:59-01:00"},
        {"profiles": ["\ud800"]},
    ],
)
async def test_purge_filters_sqlite_cannot_bind_are_rejected_and_delete_nothing(
    store: Store, filters: dict[str, Any]
) -> None:
    """Found by fuzzing: dates with no UTC equivalent escaped as OverflowError."""
    await fill(store)
    before = await snapshot(store)
    with pytest.raises(SearchQueryError) as error:
        await store.purge(filters)
    assert error.value.part in filters
    assert await snapshot(store) == before


@pytest.mark.parametrize("key", ["profiles", "services", "nodes", "types", "subtypes"])
async def test_sql_in_a_purge_filter_is_just_a_value(store: Store, key: str) -> None:
    await fill(store)
    before = await snapshot(store)
    assert await store.purge({key: [INJECTION]}) == 0
    assert await snapshot(store) == before


# --- through the bridge ---------------------------------------------------------------------


@pytest.fixture
def bridge(store: Store, db_url: str, tmp_path: Path) -> Iterator[Bridge]:
    """The cache plugin on a fake host with a real bridge and profiles bob and carol,
    on the database of ``store``."""
    real_bridge = Bridge()

    async def start() -> Any:
        plugin, __ = await start_plugin(
            FakeService(),
            tmp_path,
            config={"pubsub_cache.db_url": db_url},
            profiles=("bob", "carol"),
            bridge=real_bridge,
        )
        await fill(store)
        return plugin

    plugin = run(start())
    yield real_bridge
    run(plugin.stop())


@pytest.mark.parametrize(
    ("method", "params", "part"),
    [
        ("ps_cache_search", {"query": {"parsed": [{"path": "n", "op": "=~", "value": 1}]}},
         "parsed[0].op"),
        ("ps_cache_search", {"query": {"fts": '"unbalanced'}}, "fts"),
        ("ps_cache_search", {"query": {"limit": 2**64}}, "limit"),
        ("ps_cache_search", {"query": {"order-by": [{"order": "rank"}]}}, "order-by[0].order"),
        ("ps_cache_search", {"query": {"names": "p1"}}, "names"),
        ("ps_cache_purge", {"filters": {"created_before": "yesterday"}}, "created_before"),
        ("ps_cache_purge", {"filters": {"types": "blog"}}, "types"),
        ("ps_cache_purge", {"filters": {"item_ids": ["p1"]}}, "item_ids"),
        ("ps_cache_purge", {"filters": {"types": ["\ud800"]}, "dry_run": True}, "types"),
    ],
)  # fmt: skip
async def test_bridge_answers_an_invalid_query_with_a_bad_request_naming_the_part(
    bridge: Bridge, store: Store, method: str, params: dict[str, Any], part: str
) -> None:
    before = await snapshot(store)
    with pytest.raises(BridgeError) as error:
        await bridge.dispatch(method, params)
    assert error.value.kind == "bad_request"
    assert error.value.message.startswith(f"{part}:"), error.value.message
    assert await snapshot(store) == before


async def test_bridge_search_takes_sql_as_a_plain_value(bridge: Bridge, store: Store) -> None:
    results = await bridge.dispatch(
        "ps_cache_search",
        {"query": {"parsed": [{"path": "title", "op": "==", "value": INJECTION}]}},
    )
    assert [r["item_id"] for r in results] == ["p3"]
    assert isinstance(results[0]["created"], str)  # JSON-ready


async def test_bridge_purge_with_a_profile_filter_touches_only_that_profile(
    bridge: Bridge, store: Store
) -> None:
    assert await bridge.dispatch(
        "ps_cache_purge", {"filters": {"profiles": ["carol"]}, "dry_run": True}
    ) == {"count": 2}
    assert await bridge.dispatch("ps_cache_purge", {"filters": {"profiles": ["carol"]}}) == {
        "purged": 2
    }
    assert {(r["profile"], r["item_id"]) for r in await store.search({})} == {
        ("bob", "p1"),
        ("bob", "p2"),
        ("bob", "p3"),
    }


async def test_bridge_purge_naming_an_unknown_profile_is_not_found_and_deletes_nothing(
    bridge: Bridge, store: Store
) -> None:
    before = await snapshot(store)
    with pytest.raises(BridgeError) as error:
        await bridge.dispatch("ps_cache_purge", {"filters": {"profiles": [INJECTION]}})
    assert error.value.kind == "not_found"
    assert await snapshot(store) == before


@FUZZ_SETTINGS
@given(query=search_queries.filter(lambda q: isinstance(q.get("profiles", []), list)))
def test_bridge_search_answers_any_query_or_a_typed_error(bridge: Bridge, query: Any) -> None:
    async def check() -> None:
        try:
            await bridge.dispatch("ps_cache_search", {"query": query})
        except BridgeError as error:
            assert error.kind in ("bad_request", "not_found"), error

    run(check())
