"""Real-world XEP-0277 items: each parses as the corpus says and indexes as it says.

The corpus (``shared/realdata/microblog/`` beside the checkout, or the folder named by
``LIBERVIA_CACHE_REALDATA``) holds items as Movim, Libervia, Jappix, GNU social,
Mastodon bridges, feed gateways and the XEPs' own examples write them. It is read where
it lies, never copied into the project (it holds excerpts of other projects' files).
Without it these tests fail: CI has it.

How an ``expect`` key of ``index.json`` is checked against the parsed JSON (the
analyser's :func:`~libervia_cache.analysers.microblog.parse_item`), table-driven in
:data:`CHECKS` by key shape; ``null`` always means "absent":

- ``rejected``: ``true``, the parser raises ``ValueError`` (no other parse key is then
  checked; the item is stored raw and still indexed); ``false``, it returns data
- ``author_<field>`` (``name``, ``uri``, ``email``, ``jid``): ``parsed["author"][field]``
- ``<key>_contains`` / ``<key>_not_contains``: substrings of ``parsed[key]`` (which must
  exist for ``_contains``)
- ``<key>_in``: ``parsed[key]`` is one of the listed values
- ``<key>_count``: ``len(parsed[key])``, 0 when absent
- ``has`` / ``lacks``: keys present in / absent from the parsed dict
- ``links``: every listed link is a subset (attribute by attribute) of one parsed link;
  ``[]`` means the entry has no link at all
- ``<key>_ts``: the POSIX timestamp, equal within a microsecond
- any other key: ``parsed[key] == value`` (strings, lists)
- ``fts``: stored through :meth:`Store.cache_items`, each ``find`` word finds the item,
  no ``not_find`` word does
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.analysers import microblog
from libervia_cache.plugin.analysis import Analyser
from libervia_cache.plugin.items import parse_items
from libervia_cache.plugin.xml import parse_element
from libervia_cache.storage import Store

ENV_VAR = "LIBERVIA_CACHE_REALDATA"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "microblog"


def corpus_dir() -> Path:
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else DEFAULT_CORPUS


def load_index() -> dict[str, Any] | None:
    index = corpus_dir() / "index.json"
    if not index.is_file():
        return None
    loaded: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
    return loaded


def require_index() -> dict[str, Any]:
    index = load_index()
    if index is None:
        pytest.fail(
            f"the real-data corpus is missing: no index.json in {corpus_dir()} (set "
            f"{ENV_VAR} to the folder holding shared/realdata/microblog, or check it out "
            "beside this project as CI does)",
            pytrace=False,
        )
    return index


def corpus_params() -> list[Any]:
    index = load_index()
    if index is None:
        # one failing case rather than none: a missing corpus must not pass as "0 tests"
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(entry, id=entry["file"].removesuffix(".xml")) for entry in index["items"]]


# ---------------------------------------------------------------------------------------
# expectations


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_MISSING: Any = _Absent()


def _value(parsed: dict[str, Any], key: str) -> Any:
    if key.startswith("author_"):
        return (parsed.get("author") or {}).get(key.removeprefix("author_"), _MISSING)
    return parsed.get(key, _MISSING)


def _check_equal(parsed: dict[str, Any], key: str, expected: Any) -> None:
    actual = _value(parsed, key)
    if expected is None:
        assert actual is _MISSING, f"{key}: expected absent, got {actual!r}"
    else:
        assert actual == expected, f"{key}: expected {expected!r}, got {actual!r}"


def _check_timestamp(parsed: dict[str, Any], key: str, expected: Any) -> None:
    actual = _value(parsed, key)
    if expected is None:
        assert actual is _MISSING, f"{key}: expected absent, got {actual!r}"
    else:
        assert actual is not _MISSING, f"{key}: expected {expected!r}, absent"
        assert actual == pytest.approx(expected, abs=1e-6), f"{key}: {actual!r} != {expected!r}"


def _check_contains(parsed: dict[str, Any], key: str, expected: Any) -> None:
    field = key.removesuffix("_contains")
    actual = _value(parsed, field)
    assert isinstance(actual, str), f"{field}: expected text, got {actual!r}"
    for part in expected:
        assert part in actual, f"{field}: {part!r} not in {actual!r}"


def _check_not_contains(parsed: dict[str, Any], key: str, expected: Any) -> None:
    field = key.removesuffix("_not_contains")
    actual = _value(parsed, field)
    text = actual if isinstance(actual, str) else ""
    for part in expected:
        assert part not in text, f"{field}: {part!r} in {text!r}"


def _check_in(parsed: dict[str, Any], key: str, expected: Any) -> None:
    field = key.removesuffix("_in")
    actual = _value(parsed, field)
    assert actual in expected, f"{field}: {actual!r} not one of {expected!r}"


def _check_count(parsed: dict[str, Any], key: str, expected: Any) -> None:
    field = key.removesuffix("_count")
    actual = _value(parsed, field)
    count = 0 if actual is _MISSING else len(actual)
    assert count == expected, f"{field}: {count} instead of {expected}: {actual!r}"


def _check_has(parsed: dict[str, Any], key: str, expected: Any) -> None:
    missing = [name for name in expected if name not in parsed]
    assert not missing, f"has: {missing} absent from {sorted(parsed)}"


def _check_lacks(parsed: dict[str, Any], key: str, expected: Any) -> None:
    present = [name for name in expected if name in parsed]
    assert not present, f"lacks: {present} present"


def _check_links(parsed: dict[str, Any], key: str, expected: Any) -> None:
    links = parsed.get("links", [])
    if expected is None or expected == []:
        assert links == [], f"links: expected none, got {links!r}"
        return
    for wanted in expected:
        assert any(wanted.items() <= link.items() for link in links), (
            f"links: no link holds {wanted!r} in {links!r}"
        )


def _check_nothing(parsed: dict[str, Any], key: str, expected: Any) -> None:
    """Keys checked elsewhere (``rejected``, ``fts``)."""


Check = Callable[[dict[str, Any], str, Any], None]

#: (how the key is recognised, how it is checked), first match wins
CHECKS: tuple[tuple[Callable[[str], bool], Check], ...] = (
    (lambda key: key in ("rejected", "fts"), _check_nothing),
    (lambda key: key == "has", _check_has),
    (lambda key: key == "lacks", _check_lacks),
    (lambda key: key == "links", _check_links),
    (lambda key: key.endswith("_not_contains"), _check_not_contains),
    (lambda key: key.endswith("_contains"), _check_contains),
    (lambda key: key.endswith("_count"), _check_count),
    (lambda key: key.endswith("_ts"), _check_timestamp),
    (lambda key: key.endswith("_in"), _check_in),
    (lambda key: True, _check_equal),
)


def check_expectation(parsed: dict[str, Any], key: str, expected: Any) -> None:
    check = next(check for matches, check in CHECKS if matches(key))
    check(parsed, key, expected)


def read_item(entry: dict[str, Any]) -> Any:
    path = corpus_dir() / entry["file"]
    assert path.is_file(), f"{entry['file']} is listed in index.json but missing"
    return parse_element(path.read_bytes())


# ---------------------------------------------------------------------------------------
# tests


def test_the_corpus_is_there_and_every_file_is_listed() -> None:
    index = require_index()
    listed = {entry["file"] for entry in index["items"]}
    on_disk = {path.name for path in corpus_dir().glob("*.xml")}
    assert listed == on_disk
    assert len(listed) >= 51


@pytest.mark.parametrize("entry", corpus_params())
def test_each_item_parses_as_the_corpus_expects(entry: dict[str, Any] | None) -> None:
    if entry is None:
        require_index()
        return
    expect = entry["expect"]
    item = read_item(entry)
    if expect.get("rejected"):
        with pytest.raises(ValueError):
            microblog.parse_item(None, item, JID(entry["service"]), entry["node"])
        return
    parsed = microblog.parse_item(None, item, JID(entry["service"]), entry["node"])
    json.dumps(parsed)
    failures = []
    for key, expected in expect.items():
        try:
            check_expectation(parsed, key, expected)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures) + f"\nparsed: {parsed!r}"


@pytest.mark.parametrize("entry", corpus_params())
async def test_each_item_indexes_as_the_corpus_expects(
    entry: dict[str, Any] | None, tmp_path: Path
) -> None:
    if entry is None:
        require_index()
        return
    fts = entry["expect"].get("fts", {})
    analyser = Analyser(name="microblog", type="blog", parser=microblog.parse_item)
    # the plugin's own path: normalised, serialised, parsed (a refused item stays raw)
    [(item_id, raw_xml, parsed)] = await parse_items(
        analyser,
        None,  # type: ignore[arg-type]
        JID(entry["service"]),
        entry["node"],
        [read_item(entry)],
    )
    assert (parsed is None) == bool(entry["expect"].get("rejected"))
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}")
    try:
        node = await store.get_or_create_node("alice", entry["service"], entry["node"])
        await store.cache_items(node.id, [(item_id, raw_xml, parsed)])
        found: dict[str, bool] = {}
        for word in [*fts.get("find", []), *fts.get("not_find", [])]:
            results = await store.search({"fts": f'"{word}"', "names": [item_id]})
            found[word] = [r["item_id"] for r in results] == [item_id]
    finally:
        await store.close()
    missed = [word for word in fts.get("find", []) if not found[word]]
    wrongly = [word for word in fts.get("not_find", []) if found[word]]
    assert not missed and not wrongly, (
        f"not found: {missed}; found though it must not be: {wrongly}"
    )
