"""Search and purge queries: the model, and its validation.

A search query is a plain dict (it comes from the bridge or the CLI as JSON), with the
keys of the reference Libervia ``pubsub_cache`` search::

    {
        "fts": "python OR twisted",           # FTS5 query over the items' text
        "profiles": ["alice"], "services": ["pubsub.example.org"],
        "nodes": ["urn:xmpp:microblog:0"],
        "types": ["blog", None],              # None: nodes without a type
        "subtypes": [...], "names": ["item-1"],   # item ids ("item_ids" also accepted)
        "parsed": [{"path": "tags", "op": "overlap", "value": ["xmpp"]},
                   {"path": ["published"], "op": ">=", "value": "2024-01-01"}],
        "order-by": [{"order": "rank"}, {"path": "a.b[0]", "direction": "desc"}],
        "index": 0, "limit": 20, "with_payload": False,
    }

:func:`parse_search_query` and :func:`parse_purge_filters` check everything before any
SQL is built, and raise :class:`SearchQueryError` naming the offending part. Operators,
order keys and filter keys are tables, not if-chains; the SQL side
(:mod:`libervia_cache.storage.searching`) maps the same operator names to expressions.

Unlike the reference, every operator means exactly what it says (``<`` is strictly
less), ``like`` is case-sensitive and ``ilike`` is not (Unicode case folding), and the
negated operators (``!=``, ``not_in``, ``disjoint``, ``idisjoint``, ``not_like``,
``not_ilike``) also match items where the field is absent. The operator names the
reference also accepts (``eq``, ``ne``, ``gt``, ``le``; and ``lt``, ``ge`` for
symmetry) are aliases (:data:`OPERATOR_ALIASES`): ``le`` is ``<=``, and ``<`` stays
strictly less (the reference reads ``<`` as ``<=``).
"""

from __future__ import annotations

import enum
import math
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "OPERATORS",
    "OPERATOR_ALIASES",
    "ORDER_KEYS",
    "JsonPath",
    "OrderBy",
    "ParsedFilter",
    "PurgeFilters",
    "SearchQuery",
    "SearchQueryError",
    "ValueKind",
    "parse_purge_filters",
    "parse_search_query",
]


class SearchQueryError(ValueError):
    """An invalid search or purge query; ``part`` names the offending part."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part
        self.message = message


class ValueKind(enum.Enum):
    """What an operator's ``value`` must be."""

    SCALAR = "a string or number (booleans have no order)"
    SCALAR_OR_NULL = "a string, number, boolean or null"
    PAIR = "a list of two strings or numbers [low, high]"
    LIST = "a non-empty list of strings, numbers or booleans"
    PATTERN = "a string (LIKE pattern: % and _ are wildcards, \\ escapes)"


#: operator -> the kind of value it takes. The SQL for each is in
#: ``libervia_cache.storage.searching.OPERATOR_SQL`` (same keys).
OPERATORS: dict[str, ValueKind] = {
    "==": ValueKind.SCALAR_OR_NULL,
    "!=": ValueKind.SCALAR_OR_NULL,
    "<": ValueKind.SCALAR,
    "<=": ValueKind.SCALAR,
    ">": ValueKind.SCALAR,
    ">=": ValueKind.SCALAR,
    "between": ValueKind.PAIR,
    "in": ValueKind.LIST,
    "not_in": ValueKind.LIST,
    "overlap": ValueKind.LIST,
    "ioverlap": ValueKind.LIST,
    "disjoint": ValueKind.LIST,
    "idisjoint": ValueKind.LIST,
    "like": ValueKind.PATTERN,
    "ilike": ValueKind.PATTERN,
    "not_like": ValueKind.PATTERN,
    "not_ilike": ValueKind.PATTERN,
}

#: other names of operators -> the operator (the names the reference Libervia cache
#: accepts besides the symbols, and ``lt``/``ge`` to complete them)
OPERATOR_ALIASES: dict[str, str] = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
}

#: ``order`` values of an order-by entry; ``rank`` needs a full-text query.
ORDER_KEYS = ("creation", "modification", "item_id", "rank")

_DIRECTIONS = {"asc": False, "desc": True}

#: A path into the parsed JSON: object keys (str) and array indexes (int).
JsonPath = tuple[str | int, ...]

_PATH_SEGMENT_RE = re.compile(r"([^.\[\]\"]+)((?:\[\d+\])*)")
_INDEX_RE = re.compile(r"\[(\d+)\]")

#: SQLite integers are signed 64-bit: a bigger Python int cannot be bound.
SQL_INT_MIN, SQL_INT_MAX = -(2**63), 2**63 - 1


def _check_text(value: str, part: str, what: str = "text") -> str:
    """``value`` if both databases can bind it (UTF-8 encodable: no lone surrogate;
    no NUL, which PostgreSQL text cannot hold)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SearchQueryError(
            part, f"{what} {value!r} is not valid Unicode (lone surrogate at {e.start})"
        ) from None
    if "\0" in value:
        raise SearchQueryError(part, f"{what} {value!r} holds a NUL character")
    return value


def _check_key(key: str, raw: Any, part: str) -> str:
    """A JSON object key of a path: non-empty, no '"' or NUL (SQLite path syntax)."""
    if not key or '"' in key or "\0" in key:
        raise SearchQueryError(part, f"invalid key {key!r} in path {raw!r} (empty, '\"' or NUL)")
    return _check_text(key, part, "key")


@dataclass(frozen=True)
class ParsedFilter:
    """A condition on a field of the items' parsed JSON."""

    path: JsonPath
    op: str
    value: Any

    @property
    def json_path(self) -> str:
        """The SQLite JSON path (``$."a"[0]."b"``), always bound as a parameter."""
        return to_json_path(self.path)


@dataclass(frozen=True)
class OrderBy:
    """One ordering term: a fixed key (``ORDER_KEYS``) or a parsed JSON path."""

    key: str | None
    path: JsonPath | None
    descending: bool


@dataclass(frozen=True)
class SearchQuery:
    """A validated search query (see the module docstring for the dict form)."""

    fts: str | None = None
    profiles: tuple[str, ...] | None = None
    services: tuple[str, ...] | None = None
    nodes: tuple[str, ...] | None = None
    types: tuple[str | None, ...] | None = None
    subtypes: tuple[str | None, ...] | None = None
    item_ids: tuple[str, ...] | None = None
    parsed: tuple[ParsedFilter, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    index: int = 0
    limit: int | None = None
    with_payload: bool = False


@dataclass(frozen=True)
class PurgeFilters:
    """Validated purge filters: which items :meth:`Store.purge` deletes (all if empty)."""

    profiles: tuple[str, ...] | None = None
    services: tuple[str, ...] | None = None
    nodes: tuple[str, ...] | None = None
    types: tuple[str | None, ...] | None = None
    subtypes: tuple[str | None, ...] | None = None
    created_before: datetime | None = None
    updated_before: datetime | None = None


def to_json_path(path: JsonPath) -> str:
    """``("a", 0, "b c")`` -> ``$."a"[0]."b c"``."""
    parts = ["$"]
    for segment in path:
        parts.append(f"[{segment}]" if isinstance(segment, int) else f'."{segment}"')
    return "".join(parts)


def parse_path(raw: Any, part: str) -> JsonPath:
    """A path given as ``"a.b[0].c"`` or ``["a", "b", 0, "c"]``."""
    segments: list[str | int] = []
    if isinstance(raw, str):
        if not raw:
            raise SearchQueryError(part, "empty path")
        for piece in raw.split("."):
            match = _PATH_SEGMENT_RE.fullmatch(piece)
            if match is None:
                raise SearchQueryError(
                    part, f"invalid path {raw!r}: segment {piece!r} is not name or name[index]"
                )
            segments.append(_check_key(match.group(1), raw, part))
            segments.extend(int(i) for i in _INDEX_RE.findall(match.group(2)))
    elif isinstance(raw, Sequence) and not isinstance(raw, bytes | bytearray):
        if not raw:
            raise SearchQueryError(part, "empty path")
        for segment in raw:
            if isinstance(segment, bool) or not isinstance(segment, str | int):
                raise SearchQueryError(part, f"path segment {segment!r} is not a key or index")
            if isinstance(segment, int) and segment < 0:
                raise SearchQueryError(part, f"negative array index {segment}")
            if isinstance(segment, str):
                _check_key(segment, raw, part)
            segments.append(segment)
    else:
        raise SearchQueryError(part, f"path must be a string or a list, not {raw!r}")
    return tuple(segments)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return "\0" not in value
    if isinstance(value, int) and not isinstance(value, bool):
        return SQL_INT_MIN <= value <= SQL_INT_MAX
    if isinstance(value, float):
        return math.isfinite(value)  # SQLite binds NaN as NULL; JSON has neither
    return isinstance(value, bool)


def _check_value(kind: ValueKind, value: Any, part: str) -> Any:
    ok: bool
    if kind is ValueKind.SCALAR:
        ok = _is_scalar(value) and not isinstance(value, bool)
    elif kind is ValueKind.SCALAR_OR_NULL:
        ok = value is None or _is_scalar(value)
    elif kind is ValueKind.PAIR:
        ok = (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(_is_scalar(v) and not isinstance(v, bool) for v in value)
        )
        if ok:
            value = tuple(value)
    elif kind is ValueKind.LIST:
        ok = isinstance(value, list | tuple) and bool(value) and all(_is_scalar(v) for v in value)
        if ok:
            value = tuple(value)
    else:
        ok = isinstance(value, str) and _is_scalar(value)
    if not ok:
        raise SearchQueryError(
            part,
            f"value must be {kind.value} (valid Unicode without NUL, 64-bit integers, "
            f"finite numbers), not {value!r}",
        )
    return value


def _parse_parsed_filter(raw: Any, part: str) -> ParsedFilter:
    if not isinstance(raw, Mapping):
        raise SearchQueryError(part, "must be an object with path, op and value")
    unknown = set(raw) - {"path", "op", "value"}
    if unknown:
        raise SearchQueryError(part, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    for key in ("path", "op"):
        if key not in raw:
            raise SearchQueryError(part, f"missing {key!r}")
    op = raw["op"]
    if isinstance(op, str):
        op = OPERATOR_ALIASES.get(op, op)
    if op not in OPERATORS:
        known = ", ".join([*OPERATORS, *OPERATOR_ALIASES])
        raise SearchQueryError(f"{part}.op", f"unknown operator {op!r}; known: {known}")
    path = parse_path(raw["path"], f"{part}.path")
    value = _check_value(OPERATORS[op], raw.get("value"), f"{part}.value")
    return ParsedFilter(path=path, op=op, value=value)


def _parse_order_by(raw: Any, part: str, has_fts: bool) -> OrderBy:
    if not isinstance(raw, Mapping):
        raise SearchQueryError(part, "must be an object with 'order' or 'path'")
    unknown = set(raw) - {"order", "path", "direction"}
    if unknown:
        raise SearchQueryError(part, f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    direction = raw.get("direction", "asc")
    if direction not in _DIRECTIONS:
        raise SearchQueryError(f"{part}.direction", f"must be 'asc' or 'desc', not {direction!r}")
    if ("order" in raw) == ("path" in raw):
        raise SearchQueryError(part, "needs exactly one of 'order' and 'path'")
    if "path" in raw:
        return OrderBy(None, parse_path(raw["path"], f"{part}.path"), _DIRECTIONS[direction])
    key = raw["order"]
    if key not in ORDER_KEYS:
        raise SearchQueryError(
            f"{part}.order", f"unknown order {key!r}; known: {', '.join(ORDER_KEYS)}"
        )
    if key == "rank" and not has_fts:
        raise SearchQueryError(f"{part}.order", "'rank' needs a full-text query ('fts')")
    return OrderBy(key, None, _DIRECTIONS[direction])


def _text_list(nullable: bool) -> Callable[[Any, str], tuple[Any, ...]]:
    def convert(raw: Any, part: str) -> tuple[Any, ...]:
        if isinstance(raw, str) or not isinstance(raw, Sequence):
            raise SearchQueryError(part, f"must be a list, not {raw!r}")
        values: list[Any] = []
        for value in raw:
            if value is None and nullable:
                values.append(None)
            elif isinstance(value, str):
                values.append(_check_text(value, part))
            elif hasattr(value, "full"):  # a JID
                values.append(value.full())
            else:
                expected = "strings or null" if nullable else "strings"
                raise SearchQueryError(part, f"must hold {expected}, not {value!r}")
        return tuple(values)

    return convert


def _non_negative_int(raw: Any, part: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= SQL_INT_MAX:
        raise SearchQueryError(part, f"must be an integer from 0 to 2**63-1, not {raw!r}")
    return raw


def _boolean(raw: Any, part: str) -> bool:
    if not isinstance(raw, bool):
        raise SearchQueryError(part, f"must be true or false, not {raw!r}")
    return raw


def _datetime(raw: Any, part: str) -> datetime:
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError:
            raise SearchQueryError(part, f"not an ISO 8601 date: {raw!r}") from None
    if not isinstance(raw, datetime):
        raise SearchQueryError(part, f"must be a datetime, not {raw!r}")
    # naive datetimes are taken as UTC, like everything the store writes; converted to
    # UTC here, since a date near year 1 or 9999 may not have a UTC equivalent
    if raw.tzinfo is None:
        return raw.replace(tzinfo=UTC)
    try:
        return raw.astimezone(UTC)
    except OverflowError:
        raise SearchQueryError(part, f"{raw.isoformat()} is out of range in UTC") from None


_fts_checker: sqlite3.Connection | None = None


def _fts(raw: Any, part: str) -> str:
    """Check an FTS5 query's syntax against an empty in-memory FTS5 table."""
    global _fts_checker
    if not isinstance(raw, str) or not raw.strip():
        raise SearchQueryError(part, f"must be a non-empty string, not {raw!r}")
    _check_text(raw, part, "full-text query")
    if _fts_checker is None:
        _fts_checker = sqlite3.connect(":memory:", check_same_thread=False)
        _fts_checker.execute("CREATE VIRTUAL TABLE t USING fts5(text)")
    try:
        _fts_checker.execute("SELECT rowid FROM t WHERE t MATCH ?", (raw,)).fetchall()
    except sqlite3.OperationalError as e:
        raise SearchQueryError(part, f"invalid full-text query {raw!r}: {e}") from None
    return raw


#: search query key -> (SearchQuery field, converter)
_SEARCH_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "fts": ("fts", _fts),
    "profiles": ("profiles", _text_list(False)),
    "services": ("services", _text_list(False)),
    "nodes": ("nodes", _text_list(False)),
    "types": ("types", _text_list(True)),
    "subtypes": ("subtypes", _text_list(True)),
    "names": ("item_ids", _text_list(False)),
    "item_ids": ("item_ids", _text_list(False)),
    "index": ("index", _non_negative_int),
    "limit": ("limit", _non_negative_int),
    "with_payload": ("with_payload", _boolean),
}

#: purge filter key -> (PurgeFilters field, converter)
_PURGE_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "profiles": ("profiles", _text_list(False)),
    "services": ("services", _text_list(False)),
    "nodes": ("nodes", _text_list(False)),
    "types": ("types", _text_list(True)),
    "subtypes": ("subtypes", _text_list(True)),
    "created_before": ("created_before", _datetime),
    "updated_before": ("updated_before", _datetime),
}


def parse_search_query(raw: Mapping[str, Any] | SearchQuery) -> SearchQuery:
    """Validate a search query dict; raise :class:`SearchQueryError` naming the bad part."""
    if isinstance(raw, SearchQuery):
        return raw
    if not isinstance(raw, Mapping):
        raise SearchQueryError("query", f"must be an object, not {raw!r}")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("parsed", "order-by", "order_by"):
            continue
        if key not in _SEARCH_KEYS:
            known = ", ".join([*_SEARCH_KEYS, "parsed", "order-by"])
            raise SearchQueryError(str(key), f"unknown search key; known: {known}")
        if value is None:
            continue
        name, convert = _SEARCH_KEYS[key]
        fields[name] = convert(value, key)
    parsed = raw.get("parsed") or []
    if not isinstance(parsed, Sequence) or isinstance(parsed, str):
        raise SearchQueryError("parsed", "must be a list of {path, op, value} objects")
    fields["parsed"] = tuple(
        _parse_parsed_filter(item, f"parsed[{i}]") for i, item in enumerate(parsed)
    )
    order_key = "order-by" if "order-by" in raw else "order_by"
    order_by = raw.get(order_key) or []
    if isinstance(order_by, Mapping):
        order_by = [order_by]
    if not isinstance(order_by, Sequence) or isinstance(order_by, str):
        raise SearchQueryError(order_key, "must be a list of order objects")
    has_fts = fields.get("fts") is not None
    fields["order_by"] = tuple(
        _parse_order_by(item, f"{order_key}[{i}]", has_fts) for i, item in enumerate(order_by)
    )
    return SearchQuery(**fields)


def parse_purge_filters(raw: Mapping[str, Any] | PurgeFilters | None) -> PurgeFilters:
    """Validate purge filters; raise :class:`SearchQueryError` naming the bad part."""
    if raw is None:
        return PurgeFilters()
    if isinstance(raw, PurgeFilters):
        return raw
    if not isinstance(raw, Mapping):
        raise SearchQueryError("filters", f"must be an object, not {raw!r}")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _PURGE_KEYS:
            raise SearchQueryError(
                str(key), f"unknown purge filter; known: {', '.join(_PURGE_KEYS)}"
            )
        if value is None:
            continue
        name, convert = _PURGE_KEYS[key]
        fields[name] = convert(value, key)
    return PurgeFilters(**fields)
