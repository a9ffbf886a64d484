"""Validation of search queries and purge filters: clear errors naming the bad part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from libervia_cache.storage.query import (
    OPERATOR_ALIASES,
    OPERATORS,
    OrderBy,
    ParsedFilter,
    SearchQueryError,
    parse_path,
    parse_purge_filters,
    parse_search_query,
    to_json_path,
)


def test_a_full_query_is_parsed() -> None:
    query = parse_search_query(
        {
            "fts": "python",
            "profiles": ["alice"],
            "types": ["blog", None],
            "names": ["a"],
            "parsed": [{"path": "tags", "op": "overlap", "value": ["x"]}],
            "order-by": [{"order": "rank"}, {"path": "a.b[0]", "direction": "desc"}],
            "index": 2,
            "limit": 10,
            "with_payload": True,
        }
    )
    assert query.types == ("blog", None) and query.item_ids == ("a",)
    assert query.parsed == (ParsedFilter(("tags",), "overlap", ("x",)),)
    assert query.order_by == (OrderBy("rank", None, False), OrderBy(None, ("a", "b", 0), True))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a", ("a",)),
        ("a.b[0].c", ("a", "b", 0, "c")),
        ("tags[1][2]", ("tags", 1, 2)),
        (["a", 0, "b c"], ("a", 0, "b c")),
    ],
)
def test_paths(raw: Any, expected: tuple[Any, ...]) -> None:
    assert parse_path(raw, "path") == expected


def test_json_paths_quote_keys() -> None:
    assert to_json_path(("a.b", 0, "c")) == '$."a.b"[0]."c"'


@pytest.mark.parametrize(
    ("query", "part"),
    [
        ({"parsed": [{"path": "a", "op": "~=", "value": 1}]}, "parsed[0].op"),
        ({"parsed": [{"path": "a..b", "op": "==", "value": 1}]}, "parsed[0].path"),
        ({"parsed": [{"path": ["a", -1], "op": "==", "value": 1}]}, "parsed[0].path"),
        ({"parsed": [{"path": ['a"b'], "op": "==", "value": 1}]}, "parsed[0].path"),
        ({"parsed": [{"path": "a", "op": "between", "value": [1]}]}, "parsed[0].value"),
        ({"parsed": [{"path": "a", "op": "in", "value": []}]}, "parsed[0].value"),
        ({"parsed": [{"path": "a", "op": "like", "value": 3}]}, "parsed[0].value"),
        ({"parsed": [{"path": "a", "op": "<", "value": None}]}, "parsed[0].value"),
        ({"parsed": [{"op": "=="}]}, "parsed[0]"),
        ({"parsed": [{"path": "a", "op": "==", "value": 1, "x": 2}]}, "parsed[0]"),
        ({"order-by": [{"order": "rank"}]}, "order-by[0].order"),
        ({"order-by": [{"order": "size"}]}, "order-by[0].order"),
        ({"order-by": [{"order": "creation", "direction": "up"}]}, "order-by[0].direction"),
        ({"order-by": [{"order": "creation", "path": "a"}]}, "order-by[0]"),
        ({"fts": '"unbalanced'}, "fts"),
        ({"fts": "a AND"}, "fts"),
        ({"fts": ""}, "fts"),
        ({"limit": -1}, "limit"),
        ({"index": True}, "index"),
        ({"profiles": "alice"}, "profiles"),
        ({"services": [None]}, "services"),
        ({"with_payload": "yes"}, "with_payload"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_queries_name_the_offending_part(query: dict[str, Any], part: str) -> None:
    with pytest.raises(SearchQueryError) as error:
        parse_search_query(query)
    assert error.value.part == part
    assert str(error.value).startswith(part)
    assert isinstance(error.value, ValueError)


def test_every_operator_accepts_a_valid_value() -> None:
    samples = {
        "SCALAR": 1,
        "SCALAR_OR_NULL": None,
        "PAIR": [1, 2],
        "LIST": ["a"],
        "PATTERN": "a%",
    }
    for op, kind in OPERATORS.items():
        parse_search_query({"parsed": [{"path": "a", "op": op, "value": samples[kind.name]}]})


@pytest.mark.parametrize(
    ("alias", "operator"),
    [("eq", "=="), ("ne", "!="), ("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")],
)
def test_operator_names_of_the_reference_are_aliases(alias: str, operator: str) -> None:
    query = parse_search_query({"parsed": [{"path": "a", "op": alias, "value": 1}]})
    assert query.parsed[0].op == operator


def test_less_than_stays_strict_where_the_reference_reads_it_as_at_most() -> None:
    assert OPERATOR_ALIASES["le"] == "<="
    assert (
        parse_search_query({"parsed": [{"path": "a", "op": "<", "value": 1}]}).parsed[0].op == "<"
    )


def test_an_unknown_operator_lists_the_aliases_too() -> None:
    with pytest.raises(SearchQueryError, match=r"parsed\[0\]\.op: unknown operator 'lte'.*\ble\b"):
        parse_search_query({"parsed": [{"path": "a", "op": "lte", "value": 1}]})


def test_purge_filters() -> None:
    filters = parse_purge_filters(
        {"services": ["s"], "types": [None], "created_before": "2024-01-01T00:00:00"}
    )
    assert filters.created_before == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_purge_filters(None) == parse_purge_filters({})
    with pytest.raises(SearchQueryError, match="updated_before"):
        parse_purge_filters({"updated_before": "yesterday"})
    with pytest.raises(SearchQueryError, match="fts"):
        parse_purge_filters({"fts": "x"})
