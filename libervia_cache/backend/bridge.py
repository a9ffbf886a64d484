"""The daemon's control socket: bridge methods exposed to frontends (the CLI).

:class:`Bridge` implements :class:`hostapi.Bridge`: plugins register methods, the daemon
listens on a local Unix socket that only its owner may use. The wire protocol is
:mod:`libervia_cache.control.protocol`; the client side is
:class:`libervia_cache.control.ControlClient`.

Requests on one connection run concurrently; replies carry the request's id. A line
longer than :data:`MAX_LINE_LENGTH` gets a ``too_large`` error and the connection is
closed; any other bad request gets a ``bad_request`` error and the connection stays
usable. Error kinds and their CLI exit codes are :data:`libervia_cache.errors.KINDS`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.python.failure import Failure

from libervia_cache.control.protocol import MAX_LINE_LENGTH, encode
from libervia_cache.errors import BridgeError, one_line
from libervia_cache.hostapi import as_deferred

__all__ = ["MAX_LINE_LENGTH", "AlreadyRunning", "Bridge"]

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    """Another daemon already answers on the control socket path."""


# --- server


@dataclass(frozen=True)
class _Method:
    name: str
    function: Callable[..., Any]
    signature: inspect.Signature | None
    wants_progress: bool


def _describe(failure: Failure) -> str:
    message = one_line(str(failure.value))
    name = failure.type.__name__ if failure.type is not None else "Exception"
    return f"{name}: {message}" if message else name


class _BridgeConnection(protocol.Protocol):
    """One client connection: splits lines, dispatches requests, writes replies."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no newline
        self._open = True

    def connectionMade(self) -> None:
        self.bridge._connections.add(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._open = False
        self.bridge._connections.discard(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            return
        self._buffer += data
        while self._open:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._buffer)
                if self._scanned > MAX_LINE_LENGTH:
                    self._too_large()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._scanned = 0
            if len(line) > MAX_LINE_LENGTH:
                self._too_large()
                return
            if line.strip():
                self._request(line)

    def _too_large(self) -> None:
        self._buffer.clear()
        message = f"request line longer than {MAX_LINE_LENGTH} bytes; closing the connection"
        self.send({"id": None, "error": BridgeError("too_large", message).to_json()})
        self._open = False
        self._close()

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line, unless the client is gone."""
        transport: Any = self.transport  # zope interfaces confuse mypy
        if transport is None or not self.connected:
            return
        transport.write(encode(message))

    def _close(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()

    def _request(self, line: bytes) -> None:
        try:
            request = json.loads(line)
        except ValueError as e:
            self._error(None, BridgeError("bad_request", f"malformed JSON: {e}"))
            return
        if not isinstance(request, dict):
            self._error(None, BridgeError("bad_request", "a request must be a JSON object"))
            return
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", {})
        if params is None:
            params = {}
        if not isinstance(method, str) or not method:
            self._error(request_id, BridgeError("bad_request", '"method" must be a string'))
        elif not isinstance(params, dict):
            self._error(request_id, BridgeError("bad_request", '"params" must be an object'))
        else:
            d = self.bridge.dispatch(
                method,
                params,
                progress=lambda data: self.send({"id": request_id, "progress": data}),
            )
            d.addCallbacks(
                lambda result: self._result(request_id, method, result),
                lambda failure: self._error(request_id, self.bridge._error_of(method, failure)),
            )

    def _result(self, request_id: Any, method: str, result: Any) -> None:
        try:
            self.send({"id": request_id, "result": result})
        except (TypeError, ValueError) as e:
            log.error("bridge method %s returned a result that is not JSON: %r", method, result)
            message = f"result of {method} is not JSON-serialisable: {one_line(str(e))}"
            self._error(request_id, BridgeError("internal", message))

    def _error(self, request_id: Any, error: BridgeError) -> None:
        self.send({"id": request_id, "error": error.to_json()})


class _BridgeFactory(protocol.Factory):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def buildProtocol(self, addr: Any) -> _BridgeConnection:
        return _BridgeConnection(self.bridge)


class Bridge:
    """Bridge methods exposed on the local control socket (implements ``hostapi.Bridge``)."""

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}
        self._port: Any = None  # IListeningPort
        self._connections: set[_BridgeConnection] = set()
        self.path: Path | None = None

    @property
    def methods(self) -> list[str]:
        """Names of the registered methods."""
        return list(self._methods)

    def register_method(self, name: str, method: Callable[..., Any]) -> None:
        """Expose ``method`` as ``name``.

        ``method`` takes keyword arguments (the request's ``params``) and returns a
        JSON-serialisable result; it may be a plain function, a coroutine function (run
        by Twisted) or return a Deferred. If it has a ``progress`` parameter, it
        receives a ``progress(dict)`` callable that sends progress lines to the caller.
        It raises :class:`BridgeError` to answer with a typed error. Registering a name
        twice is a ``ValueError``.
        """
        if name in self._methods:
            raise ValueError(f"bridge method {name!r} is already registered")
        try:
            signature: inspect.Signature | None = inspect.signature(method)
        except (TypeError, ValueError):
            signature = None  # some builtins have none: arguments are not checked
        wants_progress = signature is not None and "progress" in signature.parameters
        self._methods[name] = _Method(name, method, signature, wants_progress)

    def dispatch(
        self,
        name: str,
        params: dict[str, Any],
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> defer.Deferred[Any]:
        """Call method ``name`` with keyword ``params``; a Deferred of its result.

        Fails with :class:`BridgeError` ``unknown_method`` or ``bad_request`` (a bad
        keyword, named); other failures are the method's own.
        """
        method = self._methods.get(name)
        if method is None:
            return defer.fail(BridgeError("unknown_method", f"unknown method {name!r}"))
        kwargs = dict(params)
        if "progress" in kwargs and method.wants_progress:
            return defer.fail(BridgeError("bad_request", f"{name}: 'progress' is reserved"))
        if method.wants_progress:
            kwargs["progress"] = progress if progress is not None else _ignore_progress
        if method.signature is not None:
            try:
                method.signature.bind(**kwargs)
            except TypeError as e:
                return defer.fail(BridgeError("bad_request", f"{name}: {e}"))
        return as_deferred(method.function, **kwargs)

    def _error_of(self, name: str, failure: Failure) -> BridgeError:
        """The error reply of a failed call; unexpected failures are logged in full."""
        if isinstance(failure.value, BridgeError):
            return failure.value
        log.error("bridge method %s failed:\n%s", name, failure.getTraceback())
        return BridgeError("internal", f"{name} failed: {_describe(failure)}")

    def listen(self, path: Path | str) -> defer.Deferred[None]:
        """Listen on the Unix socket ``path``; a Deferred fired when it is ready.

        The parent directory is created with mode 0700 if missing; the socket is 0600
        from the moment it exists. A stale socket file (nothing answers) is replaced;
        if a daemon answers there, fails with :class:`AlreadyRunning`.
        """
        return defer.Deferred.fromCoroutine(self._listen(Path(path)))

    async def _listen(self, path: Path) -> None:
        from twisted.internet import reactor

        if self._port is not None:
            raise RuntimeError(f"the bridge already listens on {self.path}")
        path = path.absolute()
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
        if os.path.lexists(path):
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise AlreadyRunning(f"{path} exists and is not a socket; not replacing it")
            if await _answers(reactor, path):
                raise AlreadyRunning(f"another daemon is already running on {path}")
            path.unlink()
        # Bind under an umask that leaves no window where the socket is group-readable.
        previous_umask = os.umask(0o177)
        try:
            self._port = reactor.listenUNIX(str(path), _BridgeFactory(self), mode=0o600)
        finally:
            os.umask(previous_umask)
        self.path = path
        log.info("bridge listening on %s", path)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening (the socket file is removed) and close client connections."""
        for connection in list(self._connections):
            connection._close()
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        result = port.stopListening()
        return result if isinstance(result, defer.Deferred) else defer.succeed(None)


def _ignore_progress(data: dict[str, Any]) -> None:
    """Progress sink of calls made without a connection (:meth:`Bridge.dispatch`)."""


async def _answers(reactor: Any, path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    endpoint = endpoints.UNIXClientEndpoint(reactor, str(path), timeout=5)
    try:
        connection = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
    except Exception:
        return False
    connection.transport.loseConnection()
    return True
