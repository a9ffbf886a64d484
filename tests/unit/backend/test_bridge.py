"""The control socket: wire protocol, errors, concurrency, permissions, and the client."""

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

from libervia_cache.backend.bridge import AlreadyRunning, Bridge
from libervia_cache.control import MAX_LINE_LENGTH, ControlClient
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
def bridge(socket_dir: Path, calls: Calls) -> Iterator[Bridge]:
    bridge = Bridge()
    for name in ("echo", "slow", "deferred", "with_progress", "not_found", "crash", "not_json"):
        bridge.register_method(name, getattr(calls, name))

    async def listen() -> None:
        await bridge.listen(socket_dir / "run" / "daemon.sock")

    run(listen())
    yield bridge

    async def stop() -> None:
        await bridge.stop()

    run(stop())


def client_of(bridge: Bridge) -> ControlClient:
    assert bridge.path is not None
    return ControlClient(bridge.path)


async def call(bridge: Bridge, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
    """Call through the blocking client, in a thread, as the CLI would."""
    return await in_thread(client_of(bridge).call, method, params, **kw)


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
    assert error.message == "crash failed: RuntimeError: something broke"
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


async def test_line_over_4_mib_is_too_large_and_closes(bridge: Bridge) -> None:
    huge = request(1, "echo", text="x" * (MAX_LINE_LENGTH + 10))
    replies = await raw(bridge, huge, replies=2)
    assert replies[0]["error"]["kind"] == "too_large"
    assert replies[1] == "EOF"


async def test_line_of_exactly_4_mib_is_accepted(bridge: Bridge) -> None:
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
