"""The parts of the Libervia host that need no Libervia: the launcher's import hook, and
the translation of Libervia's search queries, purge filters and results.

Everything else of the host runs inside the real backend: ``tests/integration/libervia``.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from libervia_cache.hosts.libervia import queries
from libervia_cache.hosts.libervia.launcher import (
    REPLACEMENT_MODULE,
    STOCK_CACHE_MODULE,
    ReplaceStockCache,
)
from libervia_cache.storage.query import parse_purge_filters, parse_search_query

# --- the launcher -------------------------------------------------------------------------


def test_the_launcher_replaces_the_stock_cache_module_and_no_other() -> None:
    assert STOCK_CACHE_MODULE == "libervia.backend.plugins.plugin_pubsub_cache"
    assert REPLACEMENT_MODULE == "libervia_cache.hosts.libervia.plugin_pubsub_cache"
    finder = ReplaceStockCache()
    assert finder.find_spec("libervia.backend.plugins.plugin_xep_0277", None) is None


def test_the_stock_name_loads_the_replacement_s_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fake_host"
    (package / "plugins").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugins" / "__init__.py").write_text("")
    (package / "plugins" / "plugin_cache.py").write_text("WHO = 'stock'\n")
    (tmp_path / "replacement.py").write_text(
        textwrap.dedent(
            """
            PLUGIN_INFO = {"import_name": "PUBSUB_CACHE"}
            WHO = "libervia-cache"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = ReplaceStockCache("fake_host.plugins.plugin_cache", "replacement")
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    try:
        module = importlib.import_module("fake_host.plugins.plugin_cache")
        assert module.WHO == "libervia-cache"
        assert module.__name__ == "fake_host.plugins.plugin_cache"
        assert module.PLUGIN_INFO["import_name"] == "PUBSUB_CACHE"
    finally:
        for name in [n for n in sys.modules if n.startswith(("fake_host", "replacement"))]:
            del sys.modules[name]


# --- search queries, purge filters, results ----------------------------------------------


def test_what_libervia_reads_as_not_given_is_dropped() -> None:
    query = queries.search_query(
        {"fts": "", "limit": 0, "index": 0, "nodes": [], "with_payload": False}
    )
    assert query == {"with_payload": False}
    assert parse_search_query(query).limit is None


def test_keys_the_stock_cache_ignores_are_dropped() -> None:
    assert queries.search_query({"keys": ["title"], "output": "json", "fts": "x"}) == {"fts": "x"}
    assert queries.purge_filters({"force": True, "nodes": ["n"]}) == {"nodes": ["n"]}


def test_order_directions_are_lower_cased() -> None:
    query = queries.search_query({"order-by": [{"order": "creation", "direction": "DESC"}]})
    assert parse_search_query(query).order_by[0].descending


def test_libervia_s_operator_names_reach_the_query_language() -> None:
    query = queries.search_query({"parsed": [{"path": ["title"], "op": "le", "value": "b"}]})
    assert parse_search_query(query).parsed[0].op == "<="


def test_epoch_dates_of_purge_filters_become_dates() -> None:
    filters = queries.purge_filters({"updated_before": 1700000000, "created_before": 1.5})
    parsed = parse_purge_filters(filters)
    assert parsed.updated_before == datetime.fromtimestamp(1700000000, UTC)
    assert parsed.created_before == datetime.fromtimestamp(1.5, UTC)
    assert queries.purge_filters({"created_before": "2024-01-01T00:00:00"}) == {
        "created_before": "2024-01-01T00:00:00"
    }


@pytest.mark.parametrize("value", [True, 1e300])
def test_a_bad_epoch_date_is_refused_with_its_key(value: object) -> None:
    with pytest.raises(queries.QueryError, match="updated_before"):
        queries.purge_filters({"updated_before": value})


def test_a_query_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(queries.QueryError, match="search query"):
        queries.search_query(["fts"])
    assert queries.search_query("") == {}


def test_a_result_is_the_parsed_data_with_where_it_comes_from() -> None:
    result = {
        "profile": "bob",
        "service": "pubsub.example.org",
        "node": "urn:xmpp:microblog:0",
        "item_id": "p1",
        "parsed": {"title": "hello", "id": "p1"},
        "created": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-01T00:00:00+00:00",
        "item_payload": "<item id='p1'/>",
    }
    assert queries.search_result(result) == {
        "title": "hello",
        "id": "p1",
        "pubsub_service": "pubsub.example.org",
        "pubsub_node": "urn:xmpp:microblog:0",
        "node_profile": "bob",
        "item_payload": "<item id='p1'/>",
    }
    # an item its analyser could not parse: where it comes from only
    assert queries.search_result({**result, "parsed": None})["pubsub_node"] == (
        "urn:xmpp:microblog:0"
    )
