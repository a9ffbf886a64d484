"""libervia-cache's configuration comes from Libervia's configuration file."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from tests.integration.libervia.conftest import NS_MICROBLOG, Libervia, entry
from tests.servers.publisher import Publisher


async def test_the_stock_cache_s_no_cache_strategy_is_honoured(
    make_libervia: Callable[..., Coroutine[Any, Any, Libervia]],
    publisher: Publisher,
    fresh_node: Callable[..., str],
) -> None:
    libervia = await make_libervia(default_options={"pubsub_cache_strategy": "no_cache"})
    node = fresh_node(NS_MICROBLOG)
    await publisher.create_node(libervia.service, node)
    await publisher.publish(libervia.service, node, [entry("e1")])
    for __ in range(2):
        assert (await libervia.items_get(node))["cached"] is False
    assert await libervia.status(node) is None  # nothing recorded, nothing synchronised


async def test_pubsub_cache_section_values_are_used_and_the_database_can_move(
    make_libervia: Callable[..., Coroutine[Any, Any, Libervia]],
    publisher: Publisher,
    fresh_node: Callable[..., str],
    tmp_path: Any,
) -> None:
    libervia = await make_libervia(
        options={"cache_limit": 3, "db_url": "sqlite+aiosqlite:///elsewhere.db"}
    )
    node = fresh_node(NS_MICROBLOG)
    await publisher.create_node(libervia.service, node)
    await publisher.publish(libervia.service, node, [entry(f"e{n}") for n in range(5)], depth=1)
    await libervia.items_get(node)
    row = await libervia.wait_synchronised(node)
    assert (row["items"], row["truncated"]) == (3, True)
    # a relative path is taken from Libervia's local directory
    assert (libervia.backend.local_dir / "elsewhere.db").exists()
    assert not libervia.backend.database.exists()
