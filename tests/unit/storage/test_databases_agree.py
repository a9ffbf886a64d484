"""SQLite and PostgreSQL give the same answers to the same search, fuzzed.

One corpus is stored in both databases; hypothesis then asks both the same full-text
queries (built from FTS5's grammar: phrases, prefixes, ``^``, ``+``, ``NEAR``, column
filters, ``AND``/``OR``/``NOT`` with and without parentheses, implicit ``AND``) and the
same parsed-field filters (every operator, on strings, numbers, booleans, nulls,
arrays, objects and missing fields), and compares what comes back: the same items (the
same order where the order is defined: FTS ranks differ, by design), or the same
error. SQLite is the reference: the cache's behaviour was defined on it.

Left out, as doc/storage.md says: case-insensitive operators on letters whose
``casefold`` and ``lower`` differ (ß), and text comparisons with objects or arrays
(their JSON text is spaced differently).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libervia_cache.storage import SearchQueryError, Store
from libervia_cache.storage.query import OPERATORS
from tests.conftest import run

from .conftest import PostgresSession

AGREE_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

WORDS = ["a", "b", "c", "ab", "abc", "Café", "cafe", "CAFÉ", "naïve", "x1", "日本", "été", "Ünï"]
SEPARATORS = [" ", ", ", "-", "\u2019", "'", ". ", "_", "  "]

texts = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), min_size=0, max_size=8
).map(lambda parts: "".join(word + sep for word, sep in parts))

SCALARS = [
    None, True, False, 0, 1, 2, -3, 2.5, 10, 2**40,
    "a", "A", "b", "ab", "abc", "é", "É", "%", "_", "a_b", "10", "",
]  # fmt: skip
scalars = st.sampled_from(SCALARS)
arrays = st.lists(scalars, max_size=3)
parsed_values = st.fixed_dictionaries(
    {},
    optional={
        "s": scalars,
        "n": st.sampled_from([0, 1, 2, -3, 2.5, 10, 2**40, True, False]),
        "tags": st.one_of(arrays, scalars),
        "o": st.one_of(st.dictionaries(st.sampled_from(["k", "0"]), scalars, max_size=2), arrays),
        "0": scalars,
        "nested": st.fixed_dictionaries({}, optional={"x": scalars, "l": arrays}),
    },
)

CORPUS_SIZE = 12


def corpus_items(data: list[tuple[str, dict[str, Any] | None]]) -> list[Any]:
    from xml.sax.saxutils import escape

    return [
        (
            f"i{n:02d}",
            f"<item xmlns='http://jabber.org/protocol/pubsub' id='i{n:02d}'><p>{escape(text)}</p>"
            "</item>",
            parsed,
        )
        for n, (text, parsed) in enumerate(data)
    ]


corpora = st.lists(
    st.tuples(texts, st.one_of(st.none(), parsed_values)),
    min_size=CORPUS_SIZE,
    max_size=CORPUS_SIZE,
)

# --- full-text queries, from FTS5's grammar ----------------------------------------------

query_words = st.sampled_from(
    ["a", "b", "ab", "abc", "cafe", "Café", "naive", "ete", "x1", "日本", "zz"]
)


def _phrase(draw: Any) -> str:
    kind = draw(st.sampled_from(["word", "prefix", "quoted", "plus", "initial", "empty"]))
    word = draw(query_words)
    if kind == "prefix":
        return f"{word[:2]}*"
    if kind == "quoted":
        return '"' + " ".join(draw(st.lists(query_words, min_size=1, max_size=3))) + '"'
    if kind == "plus":
        return f"{word} + {draw(query_words)}"
    if kind == "initial":
        return f"^{word}"
    if kind == "empty":
        return '"."'
    return word


@st.composite
def nearsets(draw: Any) -> str:
    if draw(st.integers(0, 5)) == 0:
        phrases = [_phrase(draw).lstrip("^") or "a" for _ in range(draw(st.integers(1, 3)))]
        distance = draw(st.one_of(st.none(), st.integers(0, 3)))
        tail = "" if distance is None else f", {distance}"
        return f"NEAR({' '.join(phrases)}{tail})"
    column = draw(st.sampled_from(["", "", "", "text: ", "-text: ", "{text}: "]))
    return column + _phrase(draw)


@st.composite
def fts_queries(draw: Any, depth: int = 0) -> str:
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return " ".join(draw(st.lists(nearsets(), min_size=1, max_size=3)))
    left = draw(fts_queries(depth + 1))
    right = draw(fts_queries(depth + 1))
    op = draw(st.sampled_from(["AND", "OR", "NOT"]))
    wrap = draw(st.sampled_from(["", "paren", "column"]))
    expression = f"{left} {op} {right}"
    if wrap == "paren":
        return f"({expression})"
    if wrap == "column":
        return f"text: ({expression})"
    return expression


# --- parsed-field filters ------------------------------------------------------------------

filter_paths = st.sampled_from(
    ["s", "n", "tags", "o", "0", "nested.x", "nested.l", ["0"], "missing", "tags[0]", "o.k"]
)
comparable = st.sampled_from([0, 1, 2, 2.5, -3, 10, 2**40, "a", "A", "ab", "b", "é", "10", ""])
patterns = st.sampled_from(["a%", "%b", "_", "A%", "%", "a\\_b", "1%", "%.5", "é", "É%", "%a%"])


@st.composite
def parsed_filters(draw: Any) -> dict[str, Any]:
    op = draw(st.sampled_from(sorted(OPERATORS)))
    path = draw(filter_paths)
    kind = OPERATORS[op].name
    if kind == "SCALAR":
        value: Any = draw(comparable)
    elif kind == "SCALAR_OR_NULL":
        value = draw(st.one_of(comparable, st.none(), st.booleans()))
    elif kind == "PAIR":
        value = sorted(
            draw(st.lists(st.sampled_from([0, 1, 2, 10, -3, 2.5]), min_size=2, max_size=2))
        )
        if draw(st.booleans()):
            value = sorted(
                draw(st.lists(st.sampled_from(["a", "ab", "b", "é"]), min_size=2, max_size=2))
            )
    elif kind == "LIST":
        value = draw(st.lists(st.one_of(comparable, st.booleans()), min_size=1, max_size=3))
    else:
        value = draw(patterns)
    # text comparisons of objects and arrays differ by design (their JSON's spacing)
    if path == "o" and (kind in ("PATTERN", "SCALAR", "PAIR") or op in ("ilike", "not_ilike")):
        path = "s"
    return {"path": path, "op": op, "value": value}


orders = st.sampled_from(
    [
        [{"order": "item_id"}],
        [{"path": "n"}, {"order": "item_id"}],
        [{"path": "s", "direction": "desc"}, {"order": "item_id"}],
        [{"path": "tags"}, {"order": "item_id", "direction": "desc"}],
        [{"order": "creation", "direction": "desc"}],
        [{"order": "modification"}],
    ]
)

# --- the two stores --------------------------------------------------------------------------


@pytest.fixture
def stores(tmp_path: Path, postgresql_session: PostgresSession) -> Iterator[tuple[Store, Store]]:
    pg_url = postgresql_session.fresh()

    async def open_both() -> tuple[Store, Store]:
        return (
            await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'agree.db'}"),
            await Store.open(pg_url),
        )

    both = run(open_both())
    yield both

    async def close() -> None:
        for store in both:
            await store.close()

    run(close())


async def fill(stores: tuple[Store, Store], data: list[Any]) -> None:
    for store in stores:
        await store.reset()
        node = await store.get_or_create_node("alice", "svc", "blog")
        await store.cache_items(node.id, corpus_items(data))


async def answers(store: Store, query: dict[str, Any]) -> Any:
    try:
        results = await store.search(query)
    except SearchQueryError as error:
        return ("error", error.part, error.message)
    return [r["item_id"] for r in results]


@AGREE_SETTINGS
@given(data=corpora, queries=st.lists(fts_queries(), min_size=1, max_size=6))
def test_full_text_queries_find_the_same_items(
    stores: tuple[Store, Store], data: list[Any], queries: list[str]
) -> None:
    async def check() -> None:
        await fill(stores, data)
        for fts in queries:
            query = {"fts": fts, "order-by": [{"order": "item_id"}]}
            expected = await answers(stores[0], query)
            assert await answers(stores[1], query) == expected, (fts, data)

    run(check())


@AGREE_SETTINGS
@given(
    data=corpora,
    filters=st.lists(st.lists(parsed_filters(), min_size=1, max_size=2), min_size=1, max_size=6),
    order=orders,
)
def test_parsed_filters_and_orders_give_the_same_items_in_the_same_order(
    stores: tuple[Store, Store], data: list[Any], filters: list[Any], order: list[Any]
) -> None:
    async def check() -> None:
        await fill(stores, data)
        for parsed in filters:
            query = {"parsed": parsed, "order-by": order}
            expected = await answers(stores[0], query)
            assert await answers(stores[1], query) == expected, (json.dumps(parsed), data)

    run(check())


async def test_a_json_null_is_matched_by_no_pattern_on_either_database(
    stores: tuple[Store, Store],
) -> None:
    """Found by the fuzzing above: PostgreSQL read a JSON ``null`` as the text ``null``
    in LIKE, so ``%`` matched it; SQLite's ``json_extract`` gives NULL, which nothing
    matches (and ``not_like`` keeps)."""
    data = [("", {"s": None}), ("", {"s": "null"}), ("", {"s": "x"}), ("", {})]
    await fill(stores, data)
    for op in ("like", "ilike", "not_like", "not_ilike"):
        for pattern in ("%", "n%", "%UL%"):
            query = {
                "parsed": [{"path": "s", "op": op, "value": pattern}],
                "order-by": [{"order": "item_id"}],
            }
            expected = await answers(stores[0], query)
            assert await answers(stores[1], query) == expected, query
    like_all = {"parsed": [{"path": "s", "op": "like", "value": "%"}]}
    assert sorted(await answers(stores[1], like_all)) == ["i01", "i02"]


@pytest.mark.parametrize(
    "fts",
    [
        "cafe",
        "CAFÉ",
        "naive",
        "ete",
        "unicode",
        "ab*",
        "^a",
        "a b NOT c",
        "a OR b NOT c",
        "a NOT b c",
        "NEAR(a b, 0)",
        "NEAR(a c)",
        "NEAR(a a, 0)",
        '"a b" c',
        "a + b",
        '"."',
        'a "."',
        '"." NOT a',
        "-text: a",
        "a AND -text: b",
        "text: (a OR c)",
        "l ete",
        '"ab" *',
    ],
)
async def test_known_full_text_cases_agree(stores: tuple[Store, Store], fts: str) -> None:
    docs = [
        ("a b c", None),
        ("a x x x b", None),
        ("b a", None),
        ("c", None),
        ("a", None),
        ("Café crème, l\u2019été; Ünïcödé", None),
        ("abc naïve cafe", None),
    ]
    await fill(stores, docs)
    query = {"fts": fts, "order-by": [{"order": "item_id"}]}
    sqlite = await answers(stores[0], query)
    assert await answers(stores[1], query) == sqlite
