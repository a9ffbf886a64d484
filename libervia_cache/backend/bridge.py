"""The daemon's control socket: bridge methods exposed to frontends (the CLI).

:class:`Bridge` implements :class:`hostapi.Bridge`: plugins register methods, the daemon
listens on a local Unix socket that only its owner may use. The wire protocol is
:mod:`libervia_cache.control.protocol`; the client side is
:class:`libervia_cache.control.ControlClient`.

Requests on one connection run concurrently; replies carry the request's id. A bad
request gets a ``bad_request`` error and the connection stays usable. Error kinds and
their CLI exit codes are :data:`libervia_cache.errors.KINDS`.

What clients can make the daemon hold is capped (:class:`Limits`, one connection and all
of them together), so that a buggy frontend cannot grow the daemon without bound:

- **input**: a request line longer than :data:`MAX_LINE_LENGTH`, or unprocessed input
  over :data:`MAX_HELD_INPUT` across all connections, is a ``too_large`` error and the
  connection that sent it is closed;
- **requests in flight**: at most :data:`MAX_REQUESTS_PER_CONNECTION` on one connection
  and :data:`MAX_REQUESTS` (and :data:`MAX_REQUEST_BYTES` of request lines) in all; past
  that the daemon stops reading the connection until replies go out, so requests wait
  in the client's socket and none is dropped;
- **output**: a reply longer than :data:`MAX_REPLY_LENGTH` is a ``too_large`` error; a
  client that does not read its replies is disconnected (with a log line saying why)
  once the daemon holds more than :data:`MAX_UNREAD_OUTPUT_PER_CONNECTION` for it, or
  when all unread output passes :data:`MAX_UNREAD_OUTPUT` (the client holding the most
  is disconnected first).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints, protocol, unix
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from libervia_cache.control.protocol import MAX_LINE_LENGTH, MAX_REPLY_LENGTH, encode
from libervia_cache.errors import BridgeError, describe, one_line
from libervia_cache.hostapi import as_deferred

__all__ = [
    "MAX_HELD_INPUT",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_LENGTH",
    "MAX_REQUESTS",
    "MAX_REQUESTS_PER_CONNECTION",
    "MAX_REQUEST_BYTES",
    "MAX_UNREAD_OUTPUT",
    "MAX_UNREAD_OUTPUT_PER_CONNECTION",
    "AlreadyRunning",
    "Bridge",
    "Limits",
    "Usage",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: Unprocessed input (partial request lines, and lines waiting for a free request slot)
#: the daemon holds for all connections together.
MAX_HELD_INPUT = 16 * MiB
#: Requests running at once for one connection; then the connection is not read.
MAX_REQUESTS_PER_CONNECTION = 16
#: Requests running at once for all connections.
MAX_REQUESTS = 256
#: Request lines of the requests running at once, all connections (a request is always
#: admitted when nothing else runs).
MAX_REQUEST_BYTES = 32 * MiB
#: Replies written but not read by one client, beyond the 64 KiB the transport buffers
#: before it asks the daemon to hold off: more and the connection is dropped.
MAX_UNREAD_OUTPUT_PER_CONNECTION = 32 * MiB
#: Unread replies of all clients together: more and the client holding the most is
#: dropped.
MAX_UNREAD_OUTPUT = 128 * MiB


@dataclass(frozen=True)
class Limits:
    """What clients of the control socket can make the daemon hold (bytes, requests).

    The defaults are the module's constants; tests use smaller ones.
    """

    line: int = MAX_LINE_LENGTH
    held_input: int = MAX_HELD_INPUT
    requests_per_connection: int = MAX_REQUESTS_PER_CONNECTION
    requests: int = MAX_REQUESTS
    request_bytes: int = MAX_REQUEST_BYTES
    reply: int = MAX_REPLY_LENGTH
    unread_output_per_connection: int = MAX_UNREAD_OUTPUT_PER_CONNECTION
    unread_output: int = MAX_UNREAD_OUTPUT


@dataclass(frozen=True)
class Usage:
    """What the control socket's clients make the daemon hold right now."""

    connections: int
    #: bytes of partial request lines and of lines waiting for a request slot
    held_input: int
    requests: int
    request_bytes: int
    #: bytes of replies written for clients that have not read them (see :class:`Limits`)
    unread_output: int
    #: connections the daemon is not reading because they are at a request cap
    paused_connections: int


class AlreadyRunning(Exception):
    """Another daemon already answers on the control socket path."""


# --- methods


@dataclass(frozen=True)
class _Method:
    """A registered method and what its keyword arguments may be (checked without
    ``inspect.Signature.bind``, which costs more than the rest of a cached call)."""

    name: str
    function: Callable[..., Any]
    #: keywords it accepts; None: any (``**kwargs``, or no signature to check against)
    accepted: frozenset[str] | None
    required: tuple[str, ...]
    wants_progress: bool
    #: ``bind`` is used for signatures the sets above cannot describe
    signature: inspect.Signature | None

    @classmethod
    def of(cls, name: str, function: Callable[..., Any]) -> _Method:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return cls(name, function, None, (), False, None)  # some builtins have none
        parameters = signature.parameters.values()
        wants_progress = "progress" in signature.parameters
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if any(p.kind == inspect.Parameter.POSITIONAL_ONLY for p in parameters):
            return cls(name, function, None, (), wants_progress, signature)
        accepted: frozenset[str] | None = frozenset(p.name for p in parameters if p.kind in keyword)
        if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            accepted = None
        required = tuple(p.name for p in parameters if p.kind in keyword and p.default is p.empty)
        return cls(name, function, accepted, required, wants_progress, None)

    def check(self, kwargs: dict[str, Any]) -> str | None:
        """Why ``kwargs`` cannot be passed (the first bad keyword, named), or None."""
        if self.signature is not None:
            try:
                self.signature.bind(**kwargs)
            except TypeError as e:
                return str(e)
            return None
        if self.accepted is not None:
            for key in kwargs:
                if key not in self.accepted:
                    return f"got an unexpected keyword argument {key!r}"
        for key in self.required:
            if key not in kwargs:
                return f"missing a required argument: {key!r}"
        return None


# --- one connection


@implementer(IPushProducer)
class _BridgeConnection(protocol.Protocol):
    """One client connection: splits lines, dispatches requests, writes replies.

    It is the streaming producer of its transport: the transport pauses it when its
    write buffer is full (the client is not reading) and resumes it once drained; what
    is written in between is the client's unread output.
    """

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.limits = bridge.limits
        self._partial: list[bytes] = []  # chunks of an unfinished line
        self._partial_length = 0
        self._waiting: deque[bytes] = deque()  # lines read while at a request cap
        self._waiting_length = 0
        self._held = 0  # what this connection counts in bridge._held_input
        self._requests = 0
        self._reading_paused = False
        self._output_paused = False
        self._unread = 0  # what this connection counts in bridge._unread_output
        self._closing = False

    # --- connection lifetime

    def connectionMade(self) -> None:
        self.bridge._connections.add(self)
        transport: Any = self.transport  # zope interfaces confuse mypy
        transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closing = True
        self.bridge._connections.discard(self)
        self._forget_input()
        self._forget_output()

    def _close(self) -> None:
        """Close once the replies already written are sent."""
        self._closing = True
        self._forget_input()
        transport: Any = self.transport
        if transport is not None:
            transport.unregisterProducer()  # else loseConnection waits for it forever
            transport.loseConnection()

    def _abort(self, why: str) -> None:
        """Drop the connection and whatever it has not read."""
        log.warning("control socket: disconnecting a client: %s", why)
        self._closing = True
        self._forget_input()
        self._forget_output()
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # --- input

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._partial:
            end = data.find(b"\n")
            if end < 0:
                self._partial.append(data)
                self._partial_length += len(data)
                if self._partial_length > self.limits.line:
                    self._line_too_large()
                else:
                    self._account_input()
                return
            self._partial.append(data[:end])
            line = b"".join(self._partial)
            self._partial = []
            self._partial_length = 0
            self._line(line)
            data = data[end + 1 :]
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if self._closing:
                return
            self._line(line)
        if self._closing:
            return
        if rest:
            self._partial.append(rest)
            self._partial_length = len(rest)
            if len(rest) > self.limits.line:
                self._line_too_large()
                return
        self._account_input()

    def _line(self, line: bytes) -> None:
        if len(line) > self.limits.line:
            self._line_too_large()
        elif not line or line.isspace():
            pass
        elif self._waiting or not self.bridge._admits(self, len(line)):
            self._waiting.append(line)
            self._waiting_length += len(line)
            if not self._reading_paused:
                self._reading_paused = True
                self.bridge._paused[self] = None
                transport: Any = self.transport
                transport.pauseProducing()  # stop reading until replies go out
        else:
            self._request(line)

    def _dispatch_waiting(self) -> None:
        """Run the lines read while at a cap, as far as the caps allow; read again once
        none is left."""
        while self._waiting and not self._closing:
            line = self._waiting[0]
            if not self.bridge._admits(self, len(line)):
                break
            self._waiting.popleft()
            self._waiting_length -= len(line)
            self._request(line)
        if self._closing:
            return
        self._account_input()
        if not self._waiting and self._reading_paused:
            self._reading_paused = False
            self.bridge._paused.pop(self, None)
            transport: Any = self.transport
            transport.resumeProducing()

    def _account_input(self) -> None:
        """Count what this connection holds; refuse it if all clients hold too much."""
        held = self._partial_length + self._waiting_length
        self.bridge._held_input += held - self._held
        self._held = held
        if held and self.bridge._held_input > self.limits.held_input:
            log.warning(
                "control socket: clients hold more than %d bytes of unprocessed input; "
                "refusing a connection that holds %d",
                self.limits.held_input,
                held,
            )
            self._refuse(
                "the daemon holds too much unprocessed input from its clients; "
                "closing the connection"
            )

    def _forget_input(self) -> None:
        self._partial = []
        self._waiting.clear()
        self._partial_length = self._waiting_length = 0
        self.bridge._held_input -= self._held
        self._held = 0
        if self._reading_paused:
            self._reading_paused = False
            self.bridge._paused.pop(self, None)

    def _line_too_large(self) -> None:
        log.warning("control socket: a request line over %d bytes", self.limits.line)
        self._refuse(f"request line longer than {self.limits.line} bytes; closing the connection")

    def _refuse(self, message: str) -> None:
        """A ``too_large`` error, then close."""
        self._forget_input()
        self._write(encode({"id": None, "error": BridgeError("too_large", message).to_json()}))
        self._close()

    # --- requests

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
        params = request.get("params")
        if params is None:
            params = {}
        if not isinstance(method, str) or not method:
            self._error(request_id, BridgeError("bad_request", '"method" must be a string'))
            return
        if not isinstance(params, dict):
            self._error(request_id, BridgeError("bad_request", '"params" must be an object'))
            return
        size = len(line)
        self._requests += 1
        self.bridge._started(size)
        d = self.bridge.dispatch(method, params, progress=_Progress(self, request_id))
        context = (request_id, method, size)
        d.addCallbacks(self._result, self._failure, callbackArgs=context, errbackArgs=context)

    def _result(self, result: Any, request_id: Any, method: str, size: int) -> None:
        try:
            data = encode({"id": request_id, "result": result})
        except (TypeError, ValueError, RecursionError) as e:
            log.error("bridge method %s returned a result that is not JSON: %r", method, result)
            message = f"result of {method} is not JSON-serialisable: {one_line(str(e))}"
            data = self._encode_error(request_id, BridgeError("internal", message))
        else:
            if len(data) > self.limits.reply + 1:
                log.warning(
                    "control socket: the reply of %s is %d bytes, over the limit (%d); "
                    "answering too_large",
                    method,
                    len(data),
                    self.limits.reply,
                )
                message = (
                    f"the reply of {method} is {len(data)} bytes, over the control socket's "
                    f"limit of {self.limits.reply}: ask for less (e.g. a page with RSM)"
                )
                data = self._encode_error(request_id, BridgeError("too_large", message))
        self._finished(size, data)

    def _failure(self, failure: Failure, request_id: Any, method: str, size: int) -> None:
        self._finished(size, self._encode_error(request_id, self.bridge._error_of(method, failure)))

    def _finished(self, size: int, reply: bytes) -> None:
        self._requests -= 1
        self.bridge._ended(size)
        self._write(reply)
        if self.bridge._paused:
            self.bridge._release()

    @staticmethod
    def _encode_error(request_id: Any, error: BridgeError) -> bytes:
        return encode({"id": request_id, "error": error.to_json()})

    def _error(self, request_id: Any, error: BridgeError) -> None:
        self._write(self._encode_error(request_id, error))

    # --- output

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON message (a progress message, say), unless the client is gone
        or it is over the reply limit (then it is logged and dropped)."""
        data = encode(message)
        if len(data) > self.limits.reply + 1:
            log.warning("control socket: dropping a %d-byte message over the limit", len(data))
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self._closing or not self.connected:
            return
        transport: Any = self.transport
        transport.write(data)
        if self._output_paused:  # set by the transport during write() when it is full
            self._unread += len(data)
            self.bridge._unread_output += len(data)
            if self._unread > self.limits.unread_output_per_connection:
                self._abort(
                    f"it has not read {self._unread} bytes of replies (limit "
                    f"{self.limits.unread_output_per_connection} per connection)"
                )
            elif self.bridge._unread_output > self.limits.unread_output:
                self.bridge._shed_output()

    def _forget_output(self) -> None:
        self.bridge._unread_output -= self._unread
        self._unread = 0

    # IPushProducer, driven by the transport's write buffer

    def pauseProducing(self) -> None:
        self._output_paused = True

    def resumeProducing(self) -> None:
        self._output_paused = False  # the transport's buffer is empty: all was read
        self._forget_output()

    def stopProducing(self) -> None:
        """The transport is gone (``connectionLost`` follows)."""


class _Progress:
    """The ``progress(dict)`` callable of one request: progress lines to its caller."""

    __slots__ = ("connection", "request_id")

    def __init__(self, connection: _BridgeConnection, request_id: Any) -> None:
        self.connection = connection
        self.request_id = request_id

    def __call__(self, data: dict[str, Any]) -> None:
        self.connection.send({"id": self.request_id, "progress": data})


class _Server(unix.Server):
    """The transport of a client connection: a write is sent at once when nothing is
    queued before it.

    Twisted queues every write until the next turn of the reactor, which then registers
    the socket for writing, sends and unregisters it: a third of the daemon's time on a
    cached call. A write that the socket does not take whole is queued as usual, so the
    producer pausing, resuming and error handling stay Twisted's.
    """

    def write(self, data: bytes) -> None:
        if (
            self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not self.dataBuffer
            and not self._tempDataLen
        ):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0  # full (EAGAIN), or broken: the queued write reports it
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class _Port(unix.Port):
    transport = _Server


class _BridgeFactory(protocol.Factory):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def buildProtocol(self, addr: Any) -> _BridgeConnection:
        return _BridgeConnection(self.bridge)


# --- the bridge


class Bridge:
    """Bridge methods exposed on the local control socket (implements ``hostapi.Bridge``).

    ``limits`` caps what clients can make the daemon hold (see the module's docstring).
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self._methods: dict[str, _Method] = {}
        self._port: Any = None  # IListeningPort
        self._connections: set[_BridgeConnection] = set()
        # what clients make the daemon hold, kept up to date by the connections
        self._held_input = 0
        self._requests = 0
        self._request_bytes = 0
        self._unread_output = 0
        # connections not read because they are at a cap, in the order they got there
        self._paused: dict[_BridgeConnection, None] = {}
        self._releasing = False
        self._release_again = False
        self.path: Path | None = None

    @property
    def methods(self) -> list[str]:
        """Names of the registered methods."""
        return list(self._methods)

    def usage(self) -> Usage:
        """What the control socket's clients make the daemon hold right now."""
        return Usage(
            connections=len(self._connections),
            held_input=self._held_input,
            requests=self._requests,
            request_bytes=self._request_bytes,
            unread_output=self._unread_output,
            paused_connections=len(self._paused),
        )

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
        self._methods[name] = _Method.of(name, method)

    def unregister_method(self, name: str) -> None:
        """Stop exposing ``name`` (a plugin that stops); ``KeyError`` if unknown."""
        del self._methods[name]

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
        if method.wants_progress:
            if "progress" in kwargs:
                return defer.fail(BridgeError("bad_request", f"{name}: 'progress' is reserved"))
            kwargs["progress"] = progress if progress is not None else _ignore_progress
        problem = method.check(kwargs)
        if problem is not None:
            return defer.fail(BridgeError("bad_request", f"{name}: {problem}"))
        return as_deferred(method.function, **kwargs)

    def _error_of(self, name: str, failure: Failure) -> BridgeError:
        """The error reply of a failed call; unexpected failures are logged in full."""
        if isinstance(failure.value, BridgeError):
            return failure.value
        log.error("bridge method %s failed:\n%s", name, failure.getTraceback())
        error = failure.value if failure.value is not None else Exception("unknown failure")
        return BridgeError("internal", f"{name} failed: {describe(error)}")

    # --- the caps, shared by the connections

    def _admits(self, connection: _BridgeConnection, size: int) -> bool:
        """Whether a request of ``size`` bytes from ``connection`` may start now."""
        if connection._requests >= self.limits.requests_per_connection:
            return False
        if self._requests == 0:
            return True
        return (
            self._requests < self.limits.requests
            and self._request_bytes + size <= self.limits.request_bytes
        )

    def _started(self, size: int) -> None:
        self._requests += 1
        self._request_bytes += size

    def _ended(self, size: int) -> None:
        self._requests -= 1
        self._request_bytes -= size

    def _release(self) -> None:
        """Let connections paused at a cap run their waiting requests, oldest first."""
        if self._releasing:  # a request finished synchronously while releasing
            self._release_again = True
            return
        self._releasing = True
        try:
            self._release_again = True
            while self._release_again:
                self._release_again = False
                for connection in list(self._paused):
                    connection._dispatch_waiting()
        finally:
            self._releasing = False

    def _shed_output(self) -> None:
        """All clients together have not read too much: drop the biggest holders."""
        while self._unread_output > self.limits.unread_output:
            hog = max(self._connections, key=lambda c: c._unread, default=None)
            if hog is None or hog._unread == 0:
                break
            hog._abort(
                f"it has not read {hog._unread} bytes of replies, the most of all clients, "
                f"which together passed the limit of {self.limits.unread_output}"
            )

    # --- listening

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
            listening: Any = _Port  # typed for bytes paths and without zope: mypy objects
            port = listening(str(path), _BridgeFactory(self), mode=0o600, reactor=reactor)
            port.startListening()
            self._port = port
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
