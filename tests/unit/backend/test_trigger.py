"""Ordering, ties, short-circuit, removal and error rules of the trigger manager."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, reactor, task

from libervia_cache.backend.trigger import TriggerManager


def recorder(calls: list[str], name: str, result: Any = True) -> Any:
    def callback(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return result

    callback.__qualname__ = name
    return callback


@pytest.fixture
def trigger() -> TriggerManager:
    return TriggerManager()


def test_priority_bounds_are_plus_minus_1000() -> None:
    assert TriggerManager.MIN_PRIORITY == -1000
    assert TriggerManager.MAX_PRIORITY == 1000


def test_higher_priority_runs_first(trigger: TriggerManager) -> None:
    calls: list[str] = []
    trigger.add("p", recorder(calls, "low"), -5)
    trigger.add("p", recorder(calls, "high"), 500)
    trigger.add("p", recorder(calls, "default"))
    assert trigger.point("p")
    assert calls == ["high", "default", "low"]


def test_equal_priorities_run_in_registration_order(trigger: TriggerManager) -> None:
    calls: list[str] = []
    for name in ("a", "b", "c"):
        trigger.add("p", recorder(calls, name), 10)
    trigger.add("p", recorder(calls, "first"), 11)
    trigger.add("p", recorder(calls, "d"), 10)
    trigger.point("p")
    assert calls == ["first", "a", "b", "c", "d"]


def test_extreme_priorities_are_accepted(trigger: TriggerManager) -> None:
    calls: list[str] = []
    trigger.add("p", recorder(calls, "min"), TriggerManager.MIN_PRIORITY)
    trigger.add("p", recorder(calls, "max"), TriggerManager.MAX_PRIORITY)
    trigger.point("p")
    assert calls == ["max", "min"]


@pytest.mark.parametrize("priority", [-1001, 1001])
def test_priority_out_of_range_is_a_value_error(trigger: TriggerManager, priority: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        trigger.add("p", recorder([], "cb"), priority)


def test_same_callback_twice_on_a_point_is_a_value_error(trigger: TriggerManager) -> None:
    callback = recorder([], "cb")
    trigger.add("p", callback)
    with pytest.raises(ValueError, match="already registered"):
        trigger.add("p", callback, 5)


def test_same_callback_on_two_points_is_allowed(trigger: TriggerManager) -> None:
    calls: list[str] = []
    callback = recorder(calls, "cb")
    trigger.add("p1", callback)
    trigger.add("p2", callback)
    trigger.point("p1")
    trigger.point("p2")
    assert calls == ["cb", "cb"]


def test_same_bound_method_twice_is_a_value_error(trigger: TriggerManager) -> None:
    class Plugin:
        def hook(self) -> bool:
            return True

    plugin = Plugin()
    trigger.add("p", plugin.hook)
    with pytest.raises(ValueError):
        trigger.add("p", plugin.hook)
    trigger.add("p", Plugin().hook)  # another instance is another callback


def test_removed_callback_no_longer_runs(trigger: TriggerManager) -> None:
    calls: list[str] = []
    kept, removed = recorder(calls, "kept"), recorder(calls, "removed")
    trigger.add("p", kept)
    trigger.add("p", removed)
    trigger.remove("p", removed)
    trigger.point("p")
    assert calls == ["kept"]


def test_removed_callback_can_be_added_again(trigger: TriggerManager) -> None:
    callback = recorder([], "cb")
    trigger.add("p", callback)
    trigger.remove("p", callback)
    trigger.add("p", callback)
    assert trigger.callbacks("p") == [callback]


def test_removing_an_absent_callback_is_a_key_error(trigger: TriggerManager) -> None:
    with pytest.raises(KeyError):
        trigger.remove("p", recorder([], "cb"))
    trigger.add("p", recorder([], "other"))
    with pytest.raises(KeyError):
        trigger.remove("p", recorder([], "cb"))


def test_point_without_callbacks_returns_true(trigger: TriggerManager) -> None:
    assert trigger.point("nothing") is True


def test_point_passes_arguments(trigger: TriggerManager) -> None:
    seen: list[Any] = []
    trigger.add("p", lambda *a, **kw: seen.append((a, kw)))
    trigger.point("p", 1, 2, key="v")
    assert seen == [((1, 2), {"key": "v"})]


def test_point_first_false_stops_and_returns_false(trigger: TriggerManager) -> None:
    calls: list[str] = []
    trigger.add("p", recorder(calls, "a"), 3)
    trigger.add("p", recorder(calls, "stop", False), 2)
    trigger.add("p", recorder(calls, "never"), 1)
    assert trigger.point("p") is False
    assert calls == ["a", "stop"]


def test_point_only_false_stops_not_other_falsy_values(trigger: TriggerManager) -> None:
    calls: list[str] = []
    trigger.add("p", recorder(calls, "none", None), 2)
    trigger.add("p", recorder(calls, "last"), 1)
    assert trigger.point("p") is True
    assert calls == ["none", "last"]


def test_point_exception_propagates(trigger: TriggerManager) -> None:
    def boom() -> bool:
        raise RuntimeError("boom")

    trigger.add("p", boom)
    with pytest.raises(RuntimeError, match="boom"):
        trigger.point("p")


def test_callback_removing_itself_while_running_does_not_skip_others(
    trigger: TriggerManager,
) -> None:
    calls: list[str] = []

    def once() -> bool:
        calls.append("once")
        trigger.remove("p", once)
        return True

    trigger.add("p", once, 2)
    trigger.add("p", recorder(calls, "next"), 1)
    trigger.point("p")
    assert calls == ["once", "next"]


async def test_async_point_accepts_plain_coroutine_and_deferred_callbacks(
    trigger: TriggerManager,
) -> None:
    calls: list[str] = []

    async def coroutine_cb(value: int) -> bool:
        await task.deferLater(reactor, 0.01, lambda: None)
        calls.append(f"coroutine {value}")
        return True

    def deferred_cb(value: int) -> defer.Deferred[bool]:
        calls.append(f"deferred {value}")
        return task.deferLater(reactor, 0, lambda: True)

    trigger.add("p", coroutine_cb, 3)
    trigger.add("p", deferred_cb, 2)
    trigger.add("p", recorder(calls, "plain"), 1)
    assert await trigger.async_point("p", 7) is True
    assert calls == ["coroutine 7", "deferred 7", "plain"]


async def test_async_point_first_false_stops(trigger: TriggerManager) -> None:
    calls: list[str] = []

    async def stop() -> bool:
        calls.append("stop")
        return False

    trigger.add("p", stop, 1)
    trigger.add("p", recorder(calls, "never"), 0)
    assert await trigger.async_point("p") is False
    assert calls == ["stop"]


async def test_async_point_runs_callbacks_one_after_the_other(trigger: TriggerManager) -> None:
    calls: list[str] = []

    async def slow() -> bool:
        calls.append("slow start")
        await task.deferLater(reactor, 0.02, lambda: None)
        calls.append("slow end")
        return True

    trigger.add("p", slow, 1)
    trigger.add("p", recorder(calls, "fast"), 0)
    await trigger.async_point("p")
    assert calls == ["slow start", "slow end", "fast"]


async def test_async_point_failure_propagates(trigger: TriggerManager) -> None:
    async def boom() -> bool:
        raise RuntimeError("boom")

    trigger.add("p", boom)
    with pytest.raises(RuntimeError, match="boom"):
        await trigger.async_point("p")


async def test_async_point_is_awaitable_from_a_deferred(trigger: TriggerManager) -> None:
    trigger.add("p", recorder([], "cb", False))
    result = await defer.Deferred.fromCoroutine(trigger.async_point("p"))
    assert result is False


async def test_return_point_without_callbacks_continues(trigger: TriggerManager) -> None:
    assert await trigger.async_return_point("p") == (True, None)


async def test_return_point_returns_value_of_first_stopper(trigger: TriggerManager) -> None:
    calls: list[str] = []

    async def answer(node: str) -> tuple[bool, Any]:
        calls.append("answer")
        return False, f"cached {node}"

    def other_answer(node: str) -> defer.Deferred[tuple[bool, Any]]:
        calls.append("other")
        return defer.succeed((False, "other"))

    trigger.add("p", recorder(calls, "pass", (True, None)), 5)
    trigger.add("p", answer, 4)
    trigger.add("p", other_answer, 3)
    assert await trigger.async_return_point("p", "n") == (False, "cached n")
    assert calls == ["pass", "answer"]


async def test_return_point_continues_when_all_pass(trigger: TriggerManager) -> None:
    calls: list[str] = []

    def deferred_pass() -> defer.Deferred[tuple[bool, Any]]:
        calls.append("deferred")
        return defer.succeed((True, None))

    trigger.add("p", recorder(calls, "plain", (True, None)))
    trigger.add("p", deferred_pass)
    assert await trigger.async_return_point("p") == (True, None)
    assert calls == ["plain", "deferred"]


async def test_return_point_stopper_may_answer_none(trigger: TriggerManager) -> None:
    trigger.add("p", recorder([], "cb", (False, None)))
    assert await trigger.async_return_point("p") == (False, None)


@pytest.mark.parametrize("bad", [True, None, (True,), [False, 1], (0, 1), (True, None, 1)])
async def test_return_point_bad_callback_result_is_a_type_error_naming_it(
    trigger: TriggerManager, bad: Any
) -> None:
    trigger.add("p", recorder([], "misbehaving_hook", bad))
    with pytest.raises(TypeError, match="misbehaving_hook"):
        await trigger.async_return_point("p")
