"""Fixtures of the storage tests: a store on a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from libervia_cache.storage import NodeInfo, Store
from tests.conftest import run


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cache.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    async def open_store() -> Store:
        return await Store.open(db_url)

    opened = run(open_store())
    yield opened

    async def close() -> None:
        await opened.close()

    run(close())


@pytest.fixture
def node(store: Store) -> NodeInfo:
    async def create() -> NodeInfo:
        return await store.get_or_create_node("alice", "pubsub.example.org", "blog")

    return run(create())


def item(item_id: str, text: str | None = None) -> tuple[str, str, dict[str, str]]:
    """An item as the plugin caches it: (id, raw XML, parsed)."""
    from xml.sax.saxutils import escape, quoteattr

    body = escape(text if text is not None else f"text of {item_id}")
    return (
        item_id,
        f"<item xmlns='http://jabber.org/protocol/pubsub' id={quoteattr(item_id)}>"
        f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{body}</title></entry></item>",
        {"title": text if text is not None else f"text of {item_id}"},
    )


def items(*ids: str) -> list[tuple[str, str, dict[str, str]]]:
    return [item(i) for i in ids]
