"""The control socket: wire protocol, errors, concurrency, limits, permissions, the client."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task, threads
from twisted.python.threadpool import ThreadPool

from libervia_cache.backend.bridge import (
    MAX_HELD_INPUT,
    MAX_REQUESTS,
    MAX_REQUESTS_PER_CONNECTION,
    MAX_UNREAD_OUTPUT_PER_CONNECTION,
    AlreadyRunning,
    Bridge,
    Limits,
    Usage,
)
from libervia_cache.control import MAX_LINE_LENGTH, ControlClient
from libervia_cache.control.protocol import MAX_REPLY_LENGTH
from libervia_cache.errors import KINDS, BridgeError, DaemonUnreachable, exit_code
from tests.conftest import run

# The blocking client runs in threads, as in the CLI. Not the reactor's own pool
# (deferToThread): the test reactor is never stopped, so that pool's threads would keep
# the interpreter from exiting at the end of the session.
_pool = ThreadPool(minthreads=0, maxthreads=16, name="bridge-test-clients")


@pytest.fixture(scope="module", autouse=True)
def client_threads() -> Iterator[None]:
    _pool.start()
    yield
    _pool.stop()


def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    """Like ``threads.deferToThread``, on a pool stopped at the end of this module."""
    return threads.deferToThreadPool(reactor, _pool, function, *args, **kwargs)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class Calls:
    """Methods exposed by the test bridge, recording what happened."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.gates: list[defer.Deferred[None]] = []

    def echo(self, text: str, times: int = 1) -> str:
        return text * times

    async def slow(self, name: str, delay: float = 0.3) -> str:
        await sleep(delay)
        self.finished.append(name)
        return name

    def deferred(self, value: int) -> defer.Deferred[int]:
        return task.deferLater(reactor, 0.01, lambda: value * 2)

    async def with_progress(self, steps: int, progress: Callable[[dict[str, Any]], None]) -> str:
        for step in range(steps):
            progress({"done": step + 1, "total": steps})
            await sleep(0.01)
        return "done"

    def not_found(self) -> None:
        raise BridgeError("not_found", "no node\nnamed x")

    def crash(self) -> None:
        raise RuntimeError("something\nbroke")

    def not_json(self) -> object:
        return object()

    def gate(self, n: int = 0, padding: str = "") -> defer.Deferred[int]:
        """Answers ``n`` when the test opens its gate (``open_gates``)."""
        gate: defer.Deferred[None] = defer.Deferred()
        self.gates.append(gate)
        return gate.addCallback(lambda _: n)

    def open_gates(self, count: int | None = None) -> int:
        """Let the first ``count`` (all) waiting gate calls answer; how many were let."""
        opened = self.gates[:count] if count is not None else list(self.gates)
        del self.gates[: len(opened)]
        for gate in opened:
            gate.callback(None)
        return len(opened)


METHODS = ("echo", "slow", "deferred", "with_progress", "not_found", "crash", "not_json", "gate")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # pytest's tmp_path may exceed the 108-byte limit of Unix socket paths.
    directory = Path(tempfile.mkdtemp(prefix="lcb-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def limits() -> Limits | None:
    """The bridge's limits: the defaults, unless a test parametrizes ``limits``."""
    return None


@pytest.fixture
def bridge(socket_dir: Path, calls: Calls, limits: Limits | None) -> Iterator[Bridge]:
    bridge = Bridge(limits)
    for name in METHODS:
        bridge.register_method(name, getattr(calls, name))

    async def listen() -> None:
        await bridge.listen(socket_dir / "run" / "daemon.sock")

    run(listen())
    yield bridge
    calls.open_gates()

    async def stop() -> None:
        await bridge.stop()

    run(stop())


def client_of(bridge: Bridge) -> ControlClient:
    assert bridge.path is not None
    return ControlClient(bridge.path)


def call_once(path: Path, method: str, params: dict[str, Any] | None, **kw: Any) -> Any:
    with ControlClient(path) as client:
        return client.call(method, params, **kw)


async def call(bridge: Bridge, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
    """Call through a new blocking client, in a thread, as the CLI would."""
    assert bridge.path is not None
    return await in_thread(call_once, bridge.path, method, params, **kw)


async def until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Wait for ``condition`` (polled on the reactor), failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.005)


async def call_error(bridge: Bridge, method: str, params: dict[str, Any] | None = None) -> Any:
    with pytest.raises(BridgeError) as raised:
        await call(bridge, method, params)
    return raised.value


def raw_exchange(
    path: Path, data: bytes, replies: int, close_after_send: bool = False
) -> list[Any]:
    """Send raw bytes, read up to ``replies`` JSON lines (fewer if the daemon closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        with contextlib.suppress(OSError):  # the daemon may close first (too_large)
            sock.sendall(data)
        if close_after_send:
            return []
        buffer = b""
        messages: list[Any] = []
        while len(messages) < replies:
            if b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                messages.append(json.loads(line))
                continue
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                messages.append("EOF")
                break
            buffer += chunk
        return messages


async def raw(bridge: Bridge, data: bytes, replies: int = 1, **kw: Any) -> list[Any]:
    assert bridge.path is not None
    return await in_thread(raw_exchange, bridge.path, data, replies, **kw)


def request(request_id: Any, method: str, **params: Any) -> bytes:
    return json.dumps({"id": request_id, "method": method, "params": params}).encode() + b"\n"


# --- calls and results


async def test_plain_method_result(bridge: Bridge) -> None:
    assert await call(bridge, "echo", {"text": "ab", "times": 2}) == "abab"


async def test_coroutine_method_result(bridge: Bridge) -> None:
    assert await call(bridge, "slow", {"name": "x", "delay": 0.01}) == "x"


async def test_deferred_method_result(bridge: Bridge) -> None:
    assert await call(bridge, "deferred", {"value": 21}) == 42


async def test_params_may_be_omitted_or_null(bridge: Bridge) -> None:
    bridge.register_method("nothing", lambda: {"ok": True})
    assert await call(bridge, "nothing") == {"ok": True}
    replies = await raw(bridge, b'{"id": 1, "method": "nothing", "params": null}\n')
    assert replies == [{"id": 1, "result": {"ok": True}}]


async def test_reply_carries_the_request_id(bridge: Bridge) -> None:
    replies = await raw(bridge, request({"any": ["json"]}, "echo", text="a"))
    assert replies == [{"id": {"any": ["json"]}, "result": "a"}]


async def test_progress_messages_come_before_the_result(bridge: Bridge) -> None:
    seen: list[dict[str, Any]] = []
    result = await call(bridge, "with_progress", {"steps": 3}, on_progress=seen.append)
    assert result == "done"
    assert seen == [{"done": 1, "total": 3}, {"done": 2, "total": 3}, {"done": 3, "total": 3}]


async def test_progress_lines_on_the_wire(bridge: Bridge) -> None:
    replies = await raw(bridge, request(7, "with_progress", steps=2), replies=3)
    assert replies == [
        {"id": 7, "progress": {"done": 1, "total": 2}},
        {"id": 7, "progress": {"done": 2, "total": 2}},
        {"id": 7, "result": "done"},
    ]


async def test_progress_is_reserved_for_the_bridge(bridge: Bridge) -> None:
    error = await call_error(bridge, "with_progress", {"steps": 1, "progress": 1})
    assert error.kind == "bad_request"


async def test_registering_a_name_twice_is_a_value_error(bridge: Bridge) -> None:
    with pytest.raises(ValueError, match="echo"):
        bridge.register_method("echo", lambda: None)


# --- errors


async def test_unknown_method(bridge: Bridge) -> None:
    error = await call_error(bridge, "nope")
    assert (error.kind, exit_code(error.kind)) == ("unknown_method", 1)
    assert "nope" in error.message


async def test_unexpected_keyword_is_a_bad_request_naming_it(bridge: Bridge) -> None:
    error = await call_error(bridge, "echo", {"text": "a", "colour": "red"})
    assert error.kind == "bad_request"
    assert "colour" in error.message


async def test_missing_argument_is_a_bad_request_naming_it(bridge: Bridge) -> None:
    error = await call_error(bridge, "echo", {"times": 2})
    assert error.kind == "bad_request"
    assert "text" in error.message


async def test_bridge_error_of_a_method_is_replied_as_is(bridge: Bridge) -> None:
    error = await call_error(bridge, "not_found")
    assert (error.kind, error.message) == ("not_found", "no node named x")


async def test_other_exception_is_internal_one_line_and_logged(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        error = await call_error(bridge, "crash")
    assert error.kind == "internal"
    assert error.message == "crash failed: unexpected RuntimeError: something broke"
    assert "Traceback" in caplog.text
    assert "in crash" in caplog.text


async def test_result_that_is_not_json_is_an_internal_error(bridge: Bridge) -> None:
    error = await call_error(bridge, "not_json")
    assert error.kind == "internal"
    assert "not JSON-serialisable" in error.message


async def test_malformed_json_is_a_bad_request_and_connection_stays_usable(
    bridge: Bridge,
) -> None:
    replies = await raw(bridge, b"{not json\n" + request(2, "echo", text="ok"), replies=2)
    assert replies[0]["id"] is None
    assert replies[0]["error"]["kind"] == "bad_request"
    assert "malformed JSON" in replies[0]["error"]["message"]
    assert replies[1] == {"id": 2, "result": "ok"}


@pytest.mark.parametrize(
    ("line", "reply_id"),
    [
        (b"[1, 2]", None),
        (b'"text"', None),
        (b'{"id": 3, "params": {}}', 3),
        (b'{"id": 4, "method": 12}', 4),
        (b'{"id": 5, "method": "echo", "params": [1]}', 5),
    ],
)
async def test_malformed_requests_are_bad_requests(
    bridge: Bridge, line: bytes, reply_id: Any
) -> None:
    replies = await raw(bridge, line + b"\n" + request(9, "echo", text="still"), replies=2)
    assert replies[0]["id"] == reply_id
    assert replies[0]["error"]["kind"] == "bad_request"
    assert replies[1] == {"id": 9, "result": "still"}


async def test_blank_lines_are_ignored(bridge: Bridge) -> None:
    assert await raw(bridge, b"\n  \n" + request(1, "echo", text="a")) == [{"id": 1, "result": "a"}]


async def test_line_over_the_limit_is_too_large_and_closes(bridge: Bridge) -> None:
    huge = request(1, "echo", text="x" * (MAX_LINE_LENGTH + 10))
    replies = await raw(bridge, huge, replies=2)
    assert replies[0]["error"]["kind"] == "too_large"
    assert replies[1] == "EOF"


async def test_line_of_exactly_the_limit_is_accepted(bridge: Bridge) -> None:
    overhead = len(request(1, "echo", text="")) - 1
    text = "x" * (MAX_LINE_LENGTH - overhead)
    replies = await raw(bridge, request(1, "echo", text=text))
    assert replies == [{"id": 1, "result": text}]


async def test_client_refuses_to_send_too_large_requests(bridge: Bridge) -> None:
    error = await call_error(bridge, "echo", {"text": "x" * (MAX_LINE_LENGTH + 1)})
    assert error.kind == "too_large"


# --- concurrency


async def test_requests_on_one_connection_run_concurrently(bridge: Bridge) -> None:
    data = request("slow", "slow", name="a", delay=0.3) + request("fast", "echo", text="b")
    replies = await raw(bridge, data, replies=2)
    assert replies == [{"id": "fast", "result": "b"}, {"id": "slow", "result": "a"}]


async def test_concurrent_clients(bridge: Bridge) -> None:
    start = time.monotonic()
    results = await defer.gatherResults(
        [defer.ensureDeferred(call(bridge, "slow", {"name": str(n)})) for n in range(8)]
    )
    assert results == [str(n) for n in range(8)]
    assert time.monotonic() - start < 8 * 0.3 / 2


async def test_client_disconnecting_mid_call_does_not_disturb_others(
    bridge: Bridge, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await raw(bridge, request(1, "slow", name="gone", delay=0.2), close_after_send=True)
        other = defer.ensureDeferred(call(bridge, "slow", {"name": "stays", "delay": 0.4}))
        progress_gone = raw(bridge, request(2, "with_progress", steps=20), close_after_send=True)
        await progress_gone
        assert await other == "stays"
        await sleep(0.3)
    assert calls.finished == ["gone", "stays"]
    assert caplog.records == []


# --- limits: what clients can make the daemon hold

MiB = 1024 * 1024


class RawClient:
    """A client connection driven by hand (a blocking socket; transfers in a thread)."""

    def __init__(self, path: Path | None) -> None:
        assert path is not None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> defer.Deferred[bool]:
        """Send ``data``: True once the socket took it all, False if the daemon closed."""
        return in_thread(self._send, data)

    def _send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def read(self, count: int, timeout: float = 20) -> defer.Deferred[list[Any]]:
        """Up to ``count`` messages: fewer if none comes within ``timeout`` s, and
        ``"EOF"`` last if the daemon closed the connection."""
        return in_thread(self._read, count, timeout)

    def _read(self, count: int, timeout: float) -> list[Any]:
        self.sock.settimeout(timeout)
        messages: list[Any] = []
        while len(messages) < count:
            end = self.buffer.find(b"\n")
            if end >= 0:
                messages.append(json.loads(self.buffer[:end]))
                self.buffer = self.buffer[end + 1 :]
                continue
            try:
                chunk = self.sock.recv(MiB)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                messages.append("EOF")
                break
            self.buffer += chunk
        return messages

    def close(self) -> None:
        self.sock.close()


async def until_usage(bridge: Bridge, timeout: float = 20, **expected: int) -> None:
    """Wait until the fields of ``bridge.usage()`` named in ``expected`` have those
    values; on timeout, fail showing the last usage."""

    def reached() -> bool:
        usage = bridge.usage()
        return all(getattr(usage, name) == value for name, value in expected.items())

    try:
        await until(reached, f"usage {expected}", timeout)
    except AssertionError:
        raise AssertionError(f"expected usage {expected}, still {bridge.usage()}") from None


async def open_gates_until_all_answered(bridge: Bridge, calls: Calls) -> None:
    """Let every gate call answer, those that start meanwhile too, until none runs."""
    while True:
        await until(
            lambda: bool(calls.gates) or bridge.usage().requests == 0,
            "a request at its gate, or none left",
        )
        if not calls.gates:
            return
        calls.open_gates()


def echo_request(request_id: Any, size: int) -> bytes:
    """A request whose reply is ``size`` bytes of text (and a few of JSON)."""
    return request(request_id, "echo", text="x" * 1024, times=size // 1024)


async def test_an_unfinished_line_over_the_limit_is_too_large_and_closes(bridge: Bridge) -> None:
    client = RawClient(bridge.path)
    try:
        await client.send(b"x" * (MAX_LINE_LENGTH + 1))  # no newline, ever
        replies = await client.read(2)
    finally:
        client.close()
    assert replies[0]["error"]["kind"] == "too_large"
    assert replies[1] == "EOF"
    await until_usage(bridge, connections=0, held_input=0)


async def test_unfinished_lines_of_many_clients_never_make_the_daemon_hold_more_than_the_cap(
    bridge: Bridge,
) -> None:
    size = MAX_LINE_LENGTH  # each client holds an unfinished line as long as allowed
    fit = MAX_HELD_INPUT // size
    clients = [RawClient(bridge.path) for _ in range(fit + 8)]
    try:
        for number, client in enumerate(clients, 1):
            await client.send(b"x" * size)
            holders = min(number, fit)  # any client beyond the cap is refused and closed
            refused = number - holders
            await until_usage(bridge, held_input=holders * size, connections=len(clients) - refused)
            assert bridge.usage().held_input <= MAX_HELD_INPUT
        for client in clients[:fit]:
            assert await client.read(1, timeout=0.01) == []
        for client in clients[fit:]:
            replies = await client.read(2)
            assert replies[0]["error"]["kind"] == "too_large"
            assert "too much unprocessed input" in replies[0]["error"]["message"]
            assert replies[1] == "EOF"
        assert await call(bridge, "echo", {"text": "still served"}) == "still served"
    finally:
        for client in clients:
            client.close()
    await until_usage(bridge, connections=0, held_input=0)


async def test_requests_over_the_cap_of_a_connection_wait_and_are_all_answered(
    bridge: Bridge, calls: Calls
) -> None:
    total = MAX_REQUESTS_PER_CONNECTION + 4
    lines = [request(n, "gate", n=n) for n in range(total)]
    client = RawClient(bridge.path)
    try:
        await client.send(b"".join(lines))
        # the daemon stops reading the connection: the other requests wait, unread
        waiting = sum(len(line) - 1 for line in lines[MAX_REQUESTS_PER_CONNECTION:])
        await until_usage(
            bridge,
            requests=MAX_REQUESTS_PER_CONNECTION,
            paused_connections=1,
            held_input=waiting,
        )
        assert await call(bridge, "echo", {"text": "others are served"}) == "others are served"
        calls.open_gates(1)  # one reply out: one more request in
        await until(lambda: len(calls.gates) == MAX_REQUESTS_PER_CONNECTION, "the 17th request")
        assert bridge.usage().requests == MAX_REQUESTS_PER_CONNECTION
        await open_gates_until_all_answered(bridge, calls)
        replies = await client.read(total)
    finally:
        client.close()
    assert sorted(reply["id"] for reply in replies) == list(range(total))
    assert all(reply["result"] == reply["id"] for reply in replies)
    await until_usage(bridge, requests=0, paused_connections=0, held_input=0, connections=0)


async def test_requests_over_the_cap_of_all_connections_wait_and_are_all_answered(
    bridge: Bridge, calls: Calls
) -> None:
    per_client = MAX_REQUESTS_PER_CONNECTION
    clients = [RawClient(bridge.path) for _ in range(MAX_REQUESTS // per_client + 1)]
    try:
        for number, client in enumerate(clients):
            await client.send(
                b"".join(request([number, n], "gate", n=n) for n in range(per_client))
            )
        await until_usage(bridge, requests=MAX_REQUESTS, paused_connections=1)
        later = defer.ensureDeferred(call(bridge, "echo", {"text": "later"}))
        await until_usage(bridge, requests=MAX_REQUESTS, paused_connections=2)
        assert not later.called
        await open_gates_until_all_answered(bridge, calls)
        assert await later == "later"
        for number, client in enumerate(clients):
            replies = await client.read(per_client)
            assert sorted(reply["id"] for reply in replies) == [[number, n] for n in range(16)]
    finally:
        for client in clients:
            client.close()
    await until_usage(bridge, requests=0, paused_connections=0, held_input=0, connections=0)


@pytest.mark.parametrize("limits", [Limits(request_bytes=20_000)], ids=["20kB"])
async def test_requests_over_the_bytes_cap_wait_and_are_all_answered(
    bridge: Bridge, calls: Calls
) -> None:
    lines = [request(n, "gate", n=n, padding="p" * 6000) for n in range(5)]
    assert 3 * len(lines[0]) < 20_000 < 4 * len(lines[0])
    client = RawClient(bridge.path)
    try:
        await client.send(b"".join(lines))
        await until_usage(bridge, requests=3, request_bytes=3 * (len(lines[0]) - 1))
        assert bridge.usage().paused_connections == 1
        await open_gates_until_all_answered(bridge, calls)
        replies = await client.read(5)
    finally:
        client.close()
    assert sorted(reply["result"] for reply in replies) == [0, 1, 2, 3, 4]
    await until_usage(bridge, requests=0, request_bytes=0, paused_connections=0)


async def test_a_reply_over_the_limit_is_too_large_and_the_connection_stays_usable(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    huge = request(1, "echo", text="x", times=MAX_REPLY_LENGTH)
    replies = await raw(bridge, huge + request(2, "echo", text="ok"), replies=2)
    assert replies[0]["id"] == 1
    assert replies[0]["error"]["kind"] == "too_large"
    assert "the reply of echo is" in replies[0]["error"]["message"]
    assert replies[1] == {"id": 2, "result": "ok"}
    assert "over the limit" in caplog.text
    error = await call_error(bridge, "echo", {"text": "x", "times": MAX_REPLY_LENGTH})
    assert error.kind == "too_large"


def keep_calling(path: Path, stop: defer.Deferred[None], at_least: int) -> list[Any]:
    """Call echo until ``stop`` fired and ``at_least`` calls were made; the results."""
    results: list[Any] = []
    with ControlClient(path) as client:
        while len(results) < at_least or not stop.called:
            results.append(client.call("echo", {"text": "served"}, timeout=10))
    return results


async def test_a_client_that_does_not_read_its_replies_is_disconnected_others_are_served(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    assert bridge.path is not None
    count = MAX_UNREAD_OUTPUT_PER_CONNECTION // MiB + 8
    hog = RawClient(bridge.path)
    done: defer.Deferred[None] = defer.Deferred()
    others = in_thread(keep_calling, bridge.path, done, 20)
    try:
        with caplog.at_level(logging.WARNING):
            for n in range(count):  # asks for replies it never reads
                if not await hog.send(echo_request(n, MiB)):
                    break
                assert bridge.usage().unread_output <= MAX_UNREAD_OUTPUT_PER_CONNECTION
            await until_usage(bridge, connections=1, unread_output=0)  # only the others'
            done.callback(None)
            results = await others
        assert results == ["served"] * len(results)
        assert "disconnecting a client: it has not read" in caplog.text
        assert "per connection" in caplog.text
        replies = await hog.read(count)
        assert replies[-1] == "EOF"
        assert len(replies) - 1 < count  # what it had not read was dropped
    finally:
        hog.close()
        if not done.called:
            done.callback(None)
    await until_usage(bridge, connections=0, unread_output=0)


@pytest.mark.parametrize(
    "limits",
    [Limits(unread_output_per_connection=8 * MiB, unread_output=10 * MiB)],
    ids=["8MiB-10MiB"],
)
async def test_when_all_clients_do_not_read_too_much_the_biggest_holder_is_disconnected(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = RawClient(bridge.path), RawClient(bridge.path)
    try:
        with caplog.at_level(logging.WARNING):
            await first.send(b"".join(echo_request(n, MiB) for n in range(7)))
            await until(lambda: bridge.usage().unread_output > 6 * MiB, "7 MiB unread")
            assert "disconnecting" not in caplog.text  # under both caps
            await second.send(b"".join(echo_request(n, MiB) for n in range(5)))
            await until_usage(bridge, connections=1)
        assert bridge.usage().unread_output <= 5 * (MiB + 100)  # the second's replies
        assert "the most of all clients" in caplog.text
        assert (await first.read(8))[-1] == "EOF"
        replies = await second.read(5)
        assert [reply["id"] for reply in replies] == [0, 1, 2, 3, 4]
        assert all(len(reply["result"]) == MiB for reply in replies)
    finally:
        first.close()
        second.close()
    await until_usage(bridge, connections=0, unread_output=0)


async def test_usage_is_back_to_zero_once_clients_are_gone(bridge: Bridge) -> None:
    assert await call(bridge, "echo", {"text": "a"}) == "a"
    await until_usage(bridge, connections=0)
    assert bridge.usage() == Usage(0, 0, 0, 0, 0, 0)


# --- the client's connection


async def test_a_client_keeps_its_connection_between_calls(bridge: Bridge) -> None:
    client = client_of(bridge)
    try:
        for text in ("a", "b", "c"):
            assert await in_thread(client.call, "echo", {"text": text}) == text
        assert bridge.usage().connections == 1
        with pytest.raises(BridgeError) as raised:
            await in_thread(client.call, "nope")
        assert raised.value.kind == "unknown_method"
        assert await in_thread(client.call, "echo", {"text": "d"}) == "d"
        assert bridge.usage().connections == 1
    finally:
        client.close()
    await until_usage(bridge, connections=0)


async def test_a_client_reconnects_when_the_daemon_closed_its_connection(
    bridge: Bridge, socket_dir: Path
) -> None:
    client = client_of(bridge)
    try:
        assert await in_thread(client.call, "echo", {"text": "before"}) == "before"
        await bridge.stop()
        restarted = Bridge()
        restarted.register_method("echo", lambda text: f"{text} again")
        await restarted.listen(socket_dir / "run" / "daemon.sock")
        try:
            assert await in_thread(client.call, "echo", {"text": "after"}) == "after again"
        finally:
            await restarted.stop()
    finally:
        client.close()


async def test_after_a_timeout_the_next_call_gets_its_own_answer(bridge: Bridge) -> None:
    client = client_of(bridge)
    try:
        with pytest.raises(BridgeError) as raised:
            await in_thread(client.call, "slow", {"name": "late", "delay": 0.3}, timeout=0.05)
        assert raised.value.kind == "timeout"
        assert await in_thread(client.call, "slow", {"name": "own", "delay": 0.01}) == "own"
    finally:
        client.close()


async def test_one_client_serves_concurrent_threads_on_separate_connections(
    bridge: Bridge,
) -> None:
    client = client_of(bridge)
    try:
        start = time.monotonic()
        results = await defer.gatherResults(
            [in_thread(client.call, "slow", {"name": str(n)}) for n in range(8)]
        )
        assert results == [str(n) for n in range(8)]
        assert time.monotonic() - start < 8 * 0.3 / 2
        await until(lambda: bridge.usage().connections <= 4, "extra connections closed")
    finally:
        client.close()
    await until_usage(bridge, connections=0)


async def test_a_method_taking_any_keyword_gets_them_all(bridge: Bridge) -> None:
    bridge.register_method("keys", lambda **kwargs: sorted(kwargs))
    assert await call(bridge, "keys", {"b": 1, "a": 2}) == ["a", "b"]


# --- the socket file


async def test_socket_is_owner_only_and_its_new_directory_too(bridge: Bridge) -> None:
    assert bridge.path is not None
    mode = bridge.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(bridge.path.parent.stat().st_mode) == 0o700


async def test_existing_directory_is_left_alone(socket_dir: Path) -> None:
    socket_dir.chmod(0o755)
    bridge = Bridge()
    await bridge.listen(socket_dir / "d.sock")
    try:
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o755
        assert stat.S_IMODE((socket_dir / "d.sock").stat().st_mode) == 0o600
    finally:
        await bridge.stop()


async def test_umask_is_restored_after_listening(socket_dir: Path) -> None:
    previous = os.umask(0o022)
    try:
        bridge = Bridge()
        await bridge.listen(socket_dir / "d.sock")
        await bridge.stop()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


async def test_stop_removes_the_socket_file(socket_dir: Path) -> None:
    bridge = Bridge()
    await bridge.listen(socket_dir / "d.sock")
    await bridge.stop()
    assert not (socket_dir / "d.sock").exists()


def make_stale_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens


async def test_stale_socket_file_is_replaced(socket_dir: Path) -> None:
    path = socket_dir / "d.sock"
    make_stale_socket(path)
    bridge = Bridge()
    bridge.register_method("ping", lambda: "pong")
    await bridge.listen(path)
    try:
        assert await call(bridge, "ping") == "pong"
    finally:
        await bridge.stop()


async def test_live_socket_makes_listen_fail(bridge: Bridge) -> None:
    with pytest.raises(AlreadyRunning, match="another daemon is already running on /tmp/"):
        await Bridge().listen(bridge.path)  # type: ignore[arg-type]
    assert await call(bridge, "echo", {"text": "alive"}) == "alive"


async def test_a_file_that_is_not_a_socket_is_not_replaced(socket_dir: Path) -> None:
    path = socket_dir / "d.sock"
    path.write_text("precious")
    with pytest.raises(AlreadyRunning, match="not a socket"):
        await Bridge().listen(path)
    assert path.read_text() == "precious"


# --- the client without a daemon


def test_missing_socket_means_daemon_unreachable(socket_dir: Path) -> None:
    path = socket_dir / "none.sock"
    with pytest.raises(DaemonUnreachable) as raised:
        ControlClient(path).call("echo")
    assert raised.value.kind == "unreachable"
    assert exit_code(raised.value.kind) == 2
    assert str(raised.value) == (
        f"no daemon is running (control socket {path} not found); "
        "start it with `libervia-cache daemon`"
    )


def test_refusing_socket_means_daemon_unreachable(socket_dir: Path) -> None:
    path = socket_dir / "stale.sock"
    make_stale_socket(path)
    with pytest.raises(DaemonUnreachable, match="refuses connections"):
        ControlClient(path).call("echo")


async def test_client_timeout(bridge: Bridge) -> None:
    with pytest.raises(BridgeError) as raised:
        await call(bridge, "slow", {"name": "late", "delay": 1}, timeout=0.1)
    assert raised.value.kind == "timeout"
    assert exit_code(raised.value.kind) == 3


# --- error kinds


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("bad_request", 1),
        ("not_found", 1),
        ("unknown_method", 1),
        ("not_cached", 1),
        ("conflict", 1),
        ("unreachable", 2),
        ("server", 3),
        ("internal", 3),
        ("timeout", 3),
        ("too_large", 3),
    ],
)
def test_error_kind_exit_codes(kind: str, code: int) -> None:
    assert KINDS[kind].exit_code == code
    assert exit_code(kind) == code


def test_error_kinds_table_is_complete() -> None:
    assert {name: kind.exit_code for name, kind in KINDS.items()} == {
        "bad_request": 1,
        "not_found": 1,
        "unknown_method": 1,
        "not_cached": 1,
        "conflict": 1,
        "unreachable": 2,
        "server": 3,
        "unavailable": 3,
        "internal": 3,
        "timeout": 3,
        "too_large": 3,
    }


def test_unknown_error_kind_counts_as_failure() -> None:
    assert exit_code("from_the_future") == 3


def test_bridge_error_message_is_one_line() -> None:
    error = BridgeError("server", "item-not-found:\n  the node is gone")
    assert str(error) == "item-not-found: the node is gone"
    assert error.to_json() == {"kind": "server", "message": "item-not-found: the node is gone"}


def test_the_documented_limits_are_the_daemons() -> None:
    page = (Path(__file__).parents[3] / "doc" / "cli.md").read_text()
    section = page.split("### Connections and limits of the control socket", 1)[1]
    limits = Limits()
    for documented in (
        f"| one request line | {limits.line // MiB} MiB |",
        f"| {limits.held_input // MiB} MiB |",
        f"| requests in flight on one connection | {limits.requests_per_connection} |",
        f"| {limits.requests}, and {limits.request_bytes // MiB} MiB of request lines |",
        f"| one reply | {limits.reply // MiB} MiB |",
        f"| {limits.unread_output_per_connection // MiB} MiB per connection |",
        f"| {limits.unread_output // MiB} MiB |",
    ):
        assert documented in section
