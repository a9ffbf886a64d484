"""Property tests: the store answers like a simple in-memory pubsub node.

Random sequences of publish (newest or oldest batches, with republished and duplicate
ids), retract and purge are applied to the store and to :class:`ModelNode`; after each
step a random request (max_items, item ids, RSM first page/after/before/last
page/index, both orders, both directions) must get the same answer from both.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libervia_cache.storage import Store, UnknownRSMKey
from tests.conftest import run

from .conftest import item

ALPHABET = [f"id{n}" for n in range(12)] + ["it'em", "日本"]
_node_names = itertools.count()


@dataclass
class ModelNode:
    modification: list[str] = field(default_factory=list)
    creation: list[str] = field(default_factory=list)

    def publish(self, ids: list[str], where: str) -> None:
        batch = list(dict.fromkeys(reversed(ids)))[::-1]  # last occurrence wins
        new = [i for i in batch if i not in self.creation]
        rest = [i for i in self.modification if i not in batch]
        if where == "newest":
            self.modification = rest + batch
            self.creation = self.creation + new
        else:
            self.modification = batch + rest
            self.creation = new + self.creation

    def retract(self, ids: list[str]) -> None:
        self.modification = [i for i in self.modification if i not in ids]
        self.creation = [i for i in self.creation if i not in ids]

    def purge(self) -> None:
        self.modification, self.creation = [], []

    def answer(self, request: dict[str, Any]) -> dict[str, Any] | str:
        ordered = list(self.creation if request["order_by"] == "creation" else self.modification)
        if request["descending"]:
            ordered.reverse()
        count = len(ordered)
        limit = request.get("rsm_max")
        rsm = any(k in request for k in ("rsm_max", "after", "before", "index"))
        if "item_ids" in request:
            page = [i for i in ordered if i in request["item_ids"]]
            return {"ids": page, "count": len(page) if rsm else None}
        if "max_items" in request:
            n = request["max_items"]
            start, end = max(0, count - n), count
        elif "before" in request:
            if request["before"] == "":
                end = count
            elif request["before"] in ordered:
                end = ordered.index(request["before"])
            else:
                return "unknown"
            start = 0 if limit is None else max(0, end - limit)
        else:
            if "after" in request:
                if request["after"] not in ordered:
                    return "unknown"
                start = ordered.index(request["after"]) + 1
            else:
                start = min(request.get("index", 0), count)
            end = count if limit is None else min(count, start + limit)
        page = ordered[start:end]
        return {
            "ids": page,
            "count": count if rsm else None,
            "index": (start if page else None) if rsm else None,
        }


ids_lists = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=6)
operations = st.one_of(
    st.tuples(st.just("publish"), ids_lists, st.sampled_from(["newest", "oldest"])),
    st.tuples(st.just("retract"), ids_lists, st.none()),
    st.tuples(st.just("purge"), st.none(), st.none()),
)
keys = st.sampled_from(ALPHABET)
requests = st.fixed_dictionaries(
    {"order_by": st.sampled_from(["modification", "creation"]), "descending": st.booleans()},
    optional={"rsm_max": st.integers(0, 6)},
).flatmap(
    lambda base: st.one_of(
        st.just(base),
        st.fixed_dictionaries({**{k: st.just(v) for k, v in base.items()}, "after": keys}),
        st.fixed_dictionaries(
            {**{k: st.just(v) for k, v in base.items()}, "before": st.one_of(st.just(""), keys)}
        ),
        st.fixed_dictionaries(
            {**{k: st.just(v) for k, v in base.items()}, "index": st.integers(0, 15)}
        ),
        st.fixed_dictionaries(
            {
                "order_by": st.just(base["order_by"]),
                "descending": st.just(base["descending"]),
                "max_items": st.integers(0, 15),
            }
        ),
        st.fixed_dictionaries(
            {
                "order_by": st.just(base["order_by"]),
                "descending": st.just(base["descending"]),
                "item_ids": st.lists(keys, max_size=4),
            }
        ),
    )
)


async def apply_and_check(
    store: Store, steps: list[tuple[tuple[str, Any, Any], dict[str, Any]]]
) -> None:
    node = await store.get_or_create_node("p", "s", f"node-{next(_node_names)}")
    model = ModelNode()
    for (operation, ids, where), request in steps:
        if operation == "publish":
            await store.cache_items(node.id, [item(i) for i in ids], where=where)
            model.publish(ids, where)
        elif operation == "retract":
            await store.delete_items(node.id, ids)
            model.retract(ids)
        else:
            await store.purge_node_items(node.id)
            model.purge()
        expected = model.answer(request)
        try:
            page = await store.get_items(node.id, **request)
        except UnknownRSMKey:
            assert expected == "unknown", (request, model)
            continue
        assert isinstance(expected, dict), (request, model, page)
        assert page.item_ids == expected["ids"], (request, model)
        assert page.first == (expected["ids"][0] if expected["ids"] else None)
        assert page.last == (expected["ids"][-1] if expected["ids"] else None)
        assert page.count == expected["count"], (request, model, page)
        if "index" in expected:
            assert page.index == expected["index"], (request, model, page)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.tuples(operations, requests), min_size=1, max_size=12))
def test_store_answers_like_an_in_memory_node(
    store: Store, steps: list[tuple[tuple[str, Any, Any], dict[str, Any]]]
) -> None:
    run(apply_and_check(store, steps))
