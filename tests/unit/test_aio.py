"""The Twisted/asyncio helpers."""

from __future__ import annotations

import asyncio

from twisted.internet import defer

from libervia_cache.hostapi import as_deferred
from libervia_cache.plugin.serial import KeyedQueues, SerialQueue
from libervia_cache.storage.aio import aio


async def test_an_asyncio_coroutine_is_awaited_from_twisted() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert await aio(double(21)) == 42


async def test_as_deferred_takes_plain_coroutine_and_deferred_callables() -> None:
    async def coroutine() -> str:
        return "c"

    assert await as_deferred(lambda: "p") == "p"
    assert await as_deferred(coroutine) == "c"
    assert await as_deferred(lambda: defer.succeed("d")) == "d"


async def test_a_serial_queue_runs_jobs_one_at_a_time_in_order() -> None:
    queue = SerialQueue()
    order: list[str] = []
    gate: defer.Deferred[None] = defer.Deferred()

    async def slow() -> str:
        order.append("slow starts")
        await gate
        order.append("slow ends")
        return "slow"

    first = queue.run(slow)
    second = queue.run(lambda: order.append("quick") or "quick")
    assert order == ["slow starts"]
    gate.callback(None)
    assert await first == "slow" and await second == "quick"
    assert order == ["slow starts", "slow ends", "quick"]


async def test_a_long_queue_of_synchronous_jobs_does_not_recurse() -> None:
    queue = SerialQueue()
    gate: defer.Deferred[None] = defer.Deferred()
    blocker = queue.run(lambda: gate)
    results = [queue.run(lambda n=n: n) for n in range(5000)]
    gate.callback(None)
    await blocker
    assert await defer.gatherResults(results) == list(range(5000))


async def test_a_failing_job_fails_its_deferred_only() -> None:
    queue = SerialQueue()

    def boom() -> None:
        raise ValueError("boom")

    failing = queue.run(boom)
    after = queue.run(lambda: "still runs")
    try:
        await failing
    except ValueError as error:
        assert str(error) == "boom"
    else:
        raise AssertionError("the job's failure was lost")
    assert await after == "still runs"


async def test_keyed_queues_run_each_key_in_order_and_keys_independently() -> None:
    queues = KeyedQueues()
    order: list[str] = []
    slow: defer.Deferred[None] = defer.Deferred()

    async def job(name: str, wait: defer.Deferred[None] | None = None) -> None:
        if wait is not None:
            await wait
        order.append(name)

    a1 = queues.run("a", lambda: job("a1", slow))
    a2 = queues.run("a", lambda: job("a2"))
    b1 = queues.run("b", lambda: job("b1"))
    await b1  # "b" does not wait for the slow job of "a"
    assert order == ["b1"] and queues.pending("a") == 2
    slow.callback(None)
    await a1
    await a2
    assert order == ["b1", "a1", "a2"]
    assert len(queues) == 0  # empty queues are forgotten


async def test_cancelling_the_deferred_leaves_the_work_running_to_its_end() -> None:
    """What a store call does under the Deferred (a transaction) is never interrupted:
    the caller stops waiting, the work ends, and its result is dropped quietly."""
    tasks: set[asyncio.Task[object]] = set()
    gate = asyncio.Event()
    ended: list[str] = []

    async def work() -> str:
        await gate.wait()
        ended.append("work")
        return "done"

    deferred = aio(work(), tasks)
    deferred.cancel()
    try:
        await deferred
    except defer.CancelledError:
        pass
    else:
        raise AssertionError("a cancelled Deferred fired with a result")
    (task,) = tasks
    assert not task.done()
    gate.set()
    assert await defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait([task])))
    assert ended == ["work"] and task.result() == "done" and not tasks


async def test_an_error_of_the_coroutine_fails_the_deferred_with_it() -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    try:
        await aio(boom())
    except KeyError as error:
        assert error.args == ("boom",)
    else:
        raise AssertionError("the coroutine's error was lost")
