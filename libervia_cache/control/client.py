"""A blocking client of the daemon's control socket (standard library sockets).

A :class:`ControlClient` keeps its connection between calls (connecting costs about as
much as a cached call) and reconnects by itself when the daemon closed it. It is
thread-safe: a call takes an idle connection or opens one, so calls from several threads
run concurrently, each on its own connection.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from libervia_cache.control.protocol import MAX_LINE_LENGTH
from libervia_cache.errors import BridgeError, DaemonUnreachable

#: Bytes asked of the socket per read; a cached 20-item page (~14 KB) comes in one.
RECV_SIZE = 64 * 1024

#: Idle connections a client keeps (more are closed after their call).
MAX_IDLE = 4

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class _Connection:
    """One connection to the daemon and its read buffer."""

    __slots__ = ("buffer", "pid", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()
        self.buffer = bytearray(RECV_SIZE)

    def is_usable(self) -> bool:
        """Whether an idle connection can carry a new call: same process, and the daemon
        has neither closed it nor sent anything since the last reply."""
        if self.pid != os.getpid():
            return False  # inherited through fork: it belongs to the parent
        self.sock.settimeout(0.0)  # with a timeout, Python would wait for data
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: open and quiet
        except OSError:
            return False
        return False  # b"": closed by the daemon; anything else: a stray message

    def close(self) -> None:
        self.sock.close()


class ControlClient:
    """Blocking client of the control socket (stdlib sockets; for the CLI and scripts).

    ``ControlClient(path).call(method, params)`` returns the method's result. The
    connection is kept for the next call; :meth:`close` (or ``with ControlClient(...)``)
    closes it. Thread-safe: concurrent calls use separate connections. After
    ``os.fork`` the child opens its own.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._ids = itertools.count(1)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit: nothing left to tell
            self.close()

    def close(self) -> None:
        """Close the idle connections (a later call opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` with keyword ``params`` and return its result.

        ``on_progress`` receives each progress message. ``timeout`` (seconds) bounds
        the whole call. Raises :class:`DaemonUnreachable` if no daemon listens, and
        :class:`BridgeError` for an error reply, a timeout (``timeout``) or a
        connection lost before the reply (``internal``).
        """
        request_id = next(self._ids)
        request = {"id": request_id, "method": method, "params": params or {}}
        line = _encoder.encode(request).encode()
        if len(line) > MAX_LINE_LENGTH:
            raise BridgeError(
                "too_large", f"request to {method} is larger than {MAX_LINE_LENGTH} bytes"
            )
        line += b"\n"
        deadline = None if timeout is None else time.monotonic() + timeout
        connection = self._send(line, method, timeout)
        clean = False  # the connection is between messages: it may be reused
        try:
            for message in self._messages(connection, method, deadline, timeout):
                if message.get("id") not in (request_id, None):
                    continue  # not ours (an error without id is about this connection)
                if "progress" in message:
                    if on_progress is not None:
                        on_progress(message["progress"])
                elif "error" in message:
                    clean = message.get("id") == request_id
                    error = message["error"] or {}
                    kind = str(error.get("kind", "internal"))
                    text = str(error.get("message", "unknown error"))
                    if kind == "unreachable":
                        raise DaemonUnreachable(text)
                    raise BridgeError(kind, text)
                elif "result" in message:
                    clean = True
                    return message["result"]
        finally:
            self._release(connection, clean)
        raise BridgeError("internal", f"the daemon closed the connection before answering {method}")

    # --- connections

    def _send(self, line: bytes, method: str, timeout: float | None) -> _Connection:
        """Send ``line`` on an idle connection, or on a new one; return the connection."""
        while True:
            connection = self._take_idle()
            if connection is None:
                break
            connection.sock.settimeout(timeout)
            try:
                connection.sock.sendall(line)
            except TimeoutError:
                connection.close()
                raise self._timeout(method, timeout) from None
            except OSError:
                # closed by the daemon since the check: nothing of the line was read
                connection.close()
                continue
            return connection
        connection = self._connect(timeout)
        try:
            connection.sock.sendall(line)
        except TimeoutError:
            connection.close()
            raise self._timeout(method, timeout) from None
        except OSError:
            pass  # the daemon may have closed after answering (e.g. too_large): read it
        return connection

    def _take_idle(self) -> _Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if connection.is_usable():
                return connection
            connection.close()

    def _release(self, connection: _Connection, clean: bool) -> None:
        """Keep ``connection`` for a later call if it is between messages, else close."""
        if clean:
            with self._lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(connection)
                    return
        connection.close()

    def _connect(self, timeout: float | None) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.path))
        except OSError as e:
            sock.close()
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                why = "not found"
            elif e.errno == errno.ECONNREFUSED:
                why = "refuses connections"
            elif e.errno == errno.EACCES:
                why = "is not accessible: permission denied"
            else:
                why = f"is unusable: {e.strerror or e}"
            raise DaemonUnreachable(
                f"no daemon is running (control socket {self.path} {why}); "
                "start it with `libervia-cache daemon`"
            ) from None
        return _Connection(sock)

    # --- reading

    def _messages(
        self,
        connection: _Connection,
        method: str,
        deadline: float | None,
        timeout: float | None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the JSON messages the daemon sends, until it closes the connection.

        Each read is scanned once for newlines: a long reply costs one pass, not one
        per read. Nothing is left unread when the caller stops after a reply, as the
        daemon sends nothing more for a call after its reply.
        """
        sock = connection.sock
        view = memoryview(connection.buffer)
        pending: list[bytes] = []  # the start of an unfinished line
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(method, timeout)
                sock.settimeout(remaining)
            try:
                size = sock.recv_into(view)
            except TimeoutError:
                raise self._timeout(method, timeout) from None
            except ConnectionResetError:
                size = 0
            if not size:
                return
            chunk = view[:size]
            start = 0
            while True:
                end = connection.buffer.find(b"\n", start, size)
                if end < 0:
                    break
                if pending:
                    pending.append(bytes(chunk[start:end]))
                    line = b"".join(pending)
                    pending = []
                else:
                    line = bytes(chunk[start:end])
                start = end + 1
                if not line or line.isspace():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    raise BridgeError("internal", "the daemon sent malformed JSON") from None
                if isinstance(message, dict):
                    yield message
            if start < size:
                pending.append(bytes(chunk[start:size]))

    @staticmethod
    def _timeout(method: str, timeout: float | None) -> BridgeError:
        return BridgeError("timeout", f"no answer from the daemon to {method} within {timeout} s")
