"""A blocking client of the daemon's control socket (standard library sockets).

Each call opens its own connection, so one client may be used from several threads.
"""

from __future__ import annotations

import errno
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from libervia_cache.control.protocol import MAX_LINE_LENGTH
from libervia_cache.errors import BridgeError, DaemonUnreachable


class ControlClient:
    """Blocking client of the control socket (stdlib sockets; for the CLI).

    Each call opens its own connection, so one client may be used from several threads.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._ids = itertools.count(1)

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
        line = json.dumps(
            {"id": request_id, "method": method, "params": params or {}},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        if len(line) > MAX_LINE_LENGTH:
            raise BridgeError(
                "too_large", f"request to {method} is larger than {MAX_LINE_LENGTH} bytes"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._connect(timeout) as sock:
            try:
                sock.sendall(line + b"\n")
            except TimeoutError:
                raise self._timeout(method, timeout) from None
            except OSError:
                pass  # the daemon may have closed after answering (e.g. too_large): read it
            for message in self._messages(sock, method, deadline, timeout):
                if message.get("id") not in (request_id, None):
                    continue
                if "progress" in message:
                    if on_progress is not None:
                        on_progress(message["progress"])
                elif "error" in message:
                    error = message["error"] or {}
                    kind = str(error.get("kind", "internal"))
                    text = str(error.get("message", "unknown error"))
                    if kind == "unreachable":
                        raise DaemonUnreachable(text)
                    raise BridgeError(kind, text)
                elif "result" in message:
                    return message["result"]
        raise BridgeError("internal", f"the daemon closed the connection before answering {method}")

    def _connect(self, timeout: float | None) -> socket.socket:
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
                why = f"is unusable: {e.strerror}"
            raise DaemonUnreachable(
                f"no daemon is running (control socket {self.path} {why}); "
                "start it with `libervia-cache daemon`"
            ) from None
        return sock

    def _messages(
        self, sock: socket.socket, method: str, deadline: float | None, timeout: float | None
    ) -> Any:
        """Yield the JSON messages the daemon sends, until it closes the connection."""
        buffer = bytearray()
        while True:
            end = buffer.find(b"\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if line.strip():
                    try:
                        message = json.loads(line)
                    except ValueError:
                        raise BridgeError("internal", "the daemon sent malformed JSON") from None
                    if isinstance(message, dict):
                        yield message
                continue
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(method, timeout)
                sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise self._timeout(method, timeout) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return
            buffer += chunk

    @staticmethod
    def _timeout(method: str, timeout: float | None) -> BridgeError:
        return BridgeError("timeout", f"no answer from the daemon to {method} within {timeout} s")
