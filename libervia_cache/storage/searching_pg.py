"""PostgreSQL's SQL for search: the same operators, orders and full-text queries as
:mod:`.searching` (SQLite), with the same results.

SQLite compares what ``json_extract`` gives: a JSON string is text, a number (and
``true``/``false``, as 1 and 0) is a number, an object or array is its JSON text, JSON
``null`` and a missing field are NULL; numbers sort before text, text compares byte by
byte. Here the parsed JSON is ``JSONB``, and each field is read in the same terms:
:func:`_number` (numbers and booleans), :func:`_text` (strings, objects and arrays),
compared with the rules of SQLite (``COLLATE "C"`` is byte order). A field is found by
path with ``#>`` when no step of the path can be mistaken for an array index, else with
a ``strict`` JSON path (an index never reads an object, a key never reads an array).

Filters that look for a value (``==``, ``in``, ``overlap`` and their case-folded forms
aside) also say so in a form the GIN index of ``parsed`` answers (``@?`` with a JSON
path): the index finds the candidates, the exact condition decides.

Full-text queries are FTS5 queries, written as ``tsquery`` by :mod:`.ftsquery`; the
rank is ``-ts_rank`` (lower is better, as FTS5's bm25), all weights equal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Numeric,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, JSONPATH, TSQUERY

from .models import items_table
from .query import JsonPath, ParsedFilter

items = items_table
Field = ColumnElement[Any]

#: the ``tsvector`` column (not in the model: PostgreSQL only)
SEARCH: Field = literal_column("pubsub_items.search")

#: constants
EMPTY_OBJECT: Field = literal_column("'{}'::jsonb")
EMPTY_ARRAY: Field = literal_column("'[]'::jsonb")
JSON_TRUE: Field = literal_column("'true'::jsonb")
ROOT: Field = literal_column("'{}'::text[]")

#: a key that PostgreSQL's ``#>`` would read as an array index
_INDEX_LIKE = re.compile(r"\s*[-+]?\d+\s*")


def _json_path(path: JsonPath) -> str:
    """``("a", 0)`` -> ``strict $."a"[0]`` (a key never reads an array, nor an index an
    object: as SQLite's ``json_extract``)."""
    parts = ["strict $"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        else:
            parts.append('."' + step.replace("\\", "\\\\") + '"')
    return "".join(parts)


def field(path: JsonPath) -> Field:
    """The JSONB value at ``path`` of the item's parsed JSON (NULL when missing)."""
    if all(isinstance(step, str) and not _INDEX_LIKE.fullmatch(step) for step in path):
        steps = bindparam(None, [str(step) for step in path], type_=ARRAY(Text))
        return items.c.parsed.op("#>", return_type=JSONB)(steps)
    return func.jsonb_path_query_first(
        items.c.parsed,
        cast(bindparam(None, _json_path(path), type_=String), JSONPATH),
        EMPTY_OBJECT,
        true(),
        type_=JSONB,
    )


def _kind(value: Field) -> Field:
    return func.jsonb_typeof(value)


def _number(value: Field) -> Field:
    """The number SQLite reads there: JSON numbers, and booleans as 1 and 0; else NULL."""
    kind = _kind(value)
    return case(
        (kind == "number", cast(value, Numeric)),
        (kind == "boolean", case((value == JSON_TRUE, 1), else_=0)),
        else_=null(),
    )


def _text(value: Field, byte_order: bool = True) -> Field:
    """The text SQLite reads there: strings, and objects and arrays as JSON; else NULL.
    ``byte_order``: compared byte by byte (SQLite's BINARY), else in the database's
    locale (for ``lower``)."""
    kind = _kind(value)
    text = case(
        (kind == "string", value.op("#>>", return_type=Text)(ROOT)),
        (kind.in_(["object", "array"]), cast(value, Text)),
        else_=null(),
    )
    return text.collate("C") if byte_order else text


def _printed(value: Field, byte_order: bool = True) -> Field:
    """What SQLite's LIKE reads there: the text, or the number as text; NULL for JSON
    ``null``, as ``json_extract`` gives it (no pattern matches it, ``%`` included)."""
    kind = _kind(value)
    text = case(
        (kind == "null", null()),
        (kind == "string", value.op("#>>", return_type=Text)(ROOT)),
        (kind == "boolean", case((value == JSON_TRUE, "1"), else_="0")),
        else_=cast(value, Text),
    )
    return text.collate("C") if byte_order else text


def _is_null(value: Field) -> ColumnElement[bool]:
    """SQLite's NULL: a missing field or JSON ``null``."""
    return func.coalesce(_kind(value), "null") == "null"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _num(value: Any) -> Any:
    return bindparam(None, int(value) if isinstance(value, bool) else value, type_=Numeric)


def _str(value: str) -> Any:
    return bindparam(None, value, type_=Text)


def _compare(value: Field, op: str, operand: Any) -> ColumnElement[bool]:
    """SQLite's ``field op operand``: numbers before text, text byte by byte."""
    number, text = _number(value), _text(value)
    if _is_number(operand):
        condition = number.bool_op(op)(_num(operand))
        if op in (">", ">="):  # text is greater than any number
            return or_(condition, text.is_not(None))
        return condition
    condition = text.bool_op(op)(_str(operand).collate("C"))
    if op in ("<", "<="):  # any number is less than any text
        return or_(number.is_not(None), condition)
    return condition


def _equal_any(value: Field, operands: Sequence[Any]) -> ColumnElement[bool]:
    numbers = [int(v) if isinstance(v, bool) else v for v in operands if _is_number(v)]
    texts = [v for v in operands if isinstance(v, str)]
    conditions: list[ColumnElement[bool]] = []
    if numbers:
        conditions.append(_number(value) == any_(bindparam(None, numbers, ARRAY(Numeric))))
    if texts:
        conditions.append(_text(value) == any_(bindparam(None, texts, ARRAY(Text))))
    return or_(false(), *conditions)


def _jsonpath_literal(operand: Any) -> str | None:
    """``operand`` as a JSON path literal, for index lookups (None: not looked up)."""
    if isinstance(operand, bool):
        return "true" if operand else "false"
    if isinstance(operand, int):
        return str(operand)
    if isinstance(operand, str):
        return json.dumps(operand)
    return None


def _lookups(operand: Any) -> list[str]:
    """JSON path literals equal to ``operand`` as SQLite compares (1 is also true)."""
    found = [_jsonpath_literal(operand)]
    if isinstance(operand, int) and not isinstance(operand, bool) and operand in (0, 1):
        found.append("true" if operand else "false")
    if isinstance(operand, bool):
        found.append(str(int(operand)))
    return [f for f in found if f is not None]


def _indexed(path: JsonPath, operands: Sequence[Any], elements: bool) -> ColumnElement[bool]:
    """A condition the GIN index of ``parsed`` answers, implied by the exact one: the
    value (or, with ``elements``, an element or member of it) equals an operand."""
    base = "$" + "".join(
        f"[{step}]" if isinstance(step, int) else '."' + step.replace("\\", "\\\\") + '"'
        for step in path
    )
    accessors = ("[*]", ".*") if elements else ("",)
    literals = [lit for operand in operands for lit in _lookups(operand)]
    if not literals or any(_jsonpath_literal(o) is None for o in operands):
        return true()
    paths = [
        f"{base}{accessor} ? (@ == {lit})"
        for accessor in accessors
        for lit in dict.fromkeys(literals)
    ]
    return or_(
        *(
            items.c.parsed.op("@?", return_type=JSONB)(cast(bindparam(None, p, String), JSONPATH))
            for p in paths
        )
    )


def _equals(path: JsonPath, operand: Any) -> ColumnElement[bool]:
    value = field(path)
    if operand is None:
        return _is_null(value)
    return and_(_indexed(path, [operand], False), _compare(value, "=", operand))


def _not_equals(path: JsonPath, operand: Any) -> ColumnElement[bool]:
    value = field(path)
    if operand is None:
        return not_(_is_null(value))
    return not_(func.coalesce(_compare(value, "=", operand), false()))


def _in(path: JsonPath, operands: Sequence[Any]) -> ColumnElement[bool]:
    return and_(_indexed(path, operands, False), _equal_any(field(path), operands))


def _elements(path: JsonPath, operands: Sequence[Any], fold: bool) -> ColumnElement[bool]:
    """EXISTS an element among ``operands``: SQLite's ``json_each`` reads an array's
    elements, an object's members, or a scalar itself."""
    value = field(path)
    kind = _kind(value)
    each_member = func.jsonb_each(value).table_valued("key", "value")
    members = (
        select(func.coalesce(func.jsonb_agg(each_member.c.value), EMPTY_ARRAY))
        .select_from(each_member)
        .scalar_subquery()
    )
    listed = case(
        (kind == "array", value),
        (kind == "object", members),
        (kind.is_(None), EMPTY_ARRAY),
        else_=func.jsonb_build_array(value),
    )
    each = func.jsonb_array_elements(listed).table_valued("value")
    element: Field = each.c.value
    if fold:
        # lower() on both sides (PostgreSQL has no case folding): see doc/storage.md
        texts = [v.lower() if isinstance(v, str) else v for v in operands]
        numbers = [int(v) if isinstance(v, bool) else v for v in texts if _is_number(v)]
        strings = [v for v in texts if isinstance(v, str)]
        conditions: list[ColumnElement[bool]] = []
        if numbers:
            conditions.append(_number(element) == any_(bindparam(None, numbers, ARRAY(Numeric))))
        if strings:
            conditions.append(
                func.lower(_text(element, byte_order=False))
                == any_(bindparam(None, strings, ARRAY(Text)))
            )
        matches = or_(false(), *conditions)
        return exists(select(1).select_from(each).where(matches))
    matches = _equal_any(element, operands)
    return and_(_indexed(path, operands, True), exists(select(1).select_from(each).where(matches)))


def _like(path: JsonPath, pattern: str, fold: bool) -> ColumnElement[bool]:
    if fold:
        printed = _printed(field(path), byte_order=False)
        return func.lower(printed).like(func.lower(_str(pattern)), escape="\\")
    return _printed(field(path)).like(_str(pattern), escape="\\")


def _absent_or_not(path: JsonPath, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return or_(_is_null(field(path)), not_(func.coalesce(condition, false())))


def _between(path: JsonPath, pair: Sequence[Any]) -> ColumnElement[bool]:
    value = field(path)
    return and_(_compare(value, ">=", pair[0]), _compare(value, "<=", pair[1]))


#: operator -> SQL condition on (path, validated value); same keys as
#: :data:`.searching.OPERATOR_SQL`
OPERATOR_SQL: dict[str, Callable[[JsonPath, Any], ColumnElement[bool]]] = {
    "==": _equals,
    "!=": _not_equals,
    "<": lambda p, v: _compare(field(p), "<", v),
    "<=": lambda p, v: _compare(field(p), "<=", v),
    ">": lambda p, v: _compare(field(p), ">", v),
    ">=": lambda p, v: _compare(field(p), ">=", v),
    "between": _between,
    "in": _in,
    "not_in": lambda p, v: _absent_or_not(p, _equal_any(field(p), v)),
    "overlap": lambda p, v: _elements(p, v, fold=False),
    "ioverlap": lambda p, v: _elements(p, v, fold=True),
    "disjoint": lambda p, v: not_(_elements(p, v, fold=False)),
    "idisjoint": lambda p, v: not_(_elements(p, v, fold=True)),
    "like": lambda p, v: _like(p, v, fold=False),
    "ilike": lambda p, v: _like(p, v, fold=True),
    "not_like": lambda p, v: _absent_or_not(p, _like(p, v, fold=False)),
    "not_ilike": lambda p, v: _absent_or_not(p, _like(p, v, fold=True)),
}


def parsed_condition(parsed_filter: ParsedFilter) -> ColumnElement[bool]:
    """The SQL condition of one parsed-field filter."""
    return OPERATOR_SQL[parsed_filter.op](parsed_filter.path, parsed_filter.value)


def order_terms(path: JsonPath, descending: bool) -> list[Any]:
    """ORDER BY terms sorting a parsed field as SQLite sorts ``json_extract``: NULL,
    then numbers, then text (byte order); ``descending`` reverses it."""
    value = field(path)
    number, text = _number(value), _text(value)
    rank = case((number.is_not(None), 1), (text.is_not(None), 2), else_=0)
    terms = (rank, number, text)
    return [t.desc() if descending else t.asc() for t in terms]


def fts_query(tsquery: str) -> Any:
    """The bound ``tsquery``."""
    return cast(bindparam("fts", tsquery, String), TSQUERY)


def fts_match(tsquery: str) -> ColumnElement[bool]:
    """The items whose text matches."""
    return SEARCH.bool_op("@@")(fts_query(tsquery))


def fts_rank(tsquery: str) -> Field:
    """Lower is better, as FTS5's bm25; every weight 1 (``A`` marks the first token
    for ``^`` only)."""
    weights: Field = literal_column("'{1,1,1,1}'::float4[]")
    return (-func.ts_rank(weights, SEARCH, fts_query(tsquery))).label("rank")
