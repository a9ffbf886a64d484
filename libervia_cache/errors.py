"""One place for errors: exception -> bridge error kind -> CLI exit code, and one line.

Everything that reports an error to a person or a frontend goes through this module:

- :data:`KINDS`: every error kind of the bridge, whose fault it is and the exit code the
  CLI uses for it;
- :data:`EXCEPTIONS`: which exception is which kind, and how it reads in one line;
- :func:`describe`: the one-line message of any exception (no class names, no ``None``,
  no traceback);
- :func:`to_bridge_error`: the typed error a bridge method answers with.

Standard library only: the CLI imports it, and must not load Twisted or SQLAlchemy.
Third-party and storage exceptions are named by their dotted path and looked up in
``sys.modules`` when an error is classified (an exception of a module nobody imported
cannot exist), so that this table stays the only one without importing them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "EXCEPTIONS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USER_ERROR",
    "KINDS",
    "BridgeError",
    "CacheUnavailable",
    "DaemonUnreachable",
    "ErrorKind",
    "NodeNotFound",
    "SyncError",
    "describe",
    "exit_code",
    "kind_of",
    "one_line",
    "to_bridge_error",
]

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_FAILURE = 3

#: longest message, in characters, before it is cut with "..."
MAX_MESSAGE = 300


@dataclass(frozen=True)
class ErrorKind:
    """One kind of bridge error."""

    name: str
    exit_code: int
    #: the caller's fault (bad input, unknown thing): never worth a traceback in the log
    caller_fault: bool
    meaning: str


#: Every error kind of the bridge, with the CLI exit code of each.
KINDS: dict[str, ErrorKind] = {
    kind.name: kind
    for kind in (
        ErrorKind("bad_request", EXIT_USER_ERROR, True, "malformed request, bad argument"),
        ErrorKind("not_found", EXIT_USER_ERROR, True, "unknown profile, node or item"),
        ErrorKind("unknown_method", EXIT_USER_ERROR, True, "no such bridge method"),
        ErrorKind("not_cached", EXIT_USER_ERROR, True, "the cache cannot answer (cache-get)"),
        ErrorKind("conflict", EXIT_USER_ERROR, True, "already exists or already running"),
        ErrorKind("unreachable", EXIT_UNREACHABLE, False, "no daemon answers"),
        ErrorKind("server", EXIT_FAILURE, False, "the XMPP server failed or refused"),
        ErrorKind("unavailable", EXIT_FAILURE, False, "not connected, or no database"),
        ErrorKind("timeout", EXIT_FAILURE, False, "no answer in time"),
        ErrorKind("too_large", EXIT_FAILURE, False, "a request or reply over the limits"),
        ErrorKind("internal", EXIT_FAILURE, False, "a bug: the traceback is in the log"),
    )
}


def exit_code(kind: str) -> int:
    """CLI exit code of an error kind (unknown kinds count as failures)."""
    known = KINDS.get(kind)
    return known.exit_code if known is not None else EXIT_FAILURE


def one_line(text: str) -> str:
    """``text`` on one line, cut to :data:`MAX_MESSAGE` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


# --- the project's own exceptions ---------------------------------------------------------


class BridgeError(Exception):
    """A typed error of a bridge method: ``kind`` (see :data:`KINDS`) and a one-line
    ``message``. Frontends receive ``{"kind", "message"}``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = one_line(message)

    def to_json(self) -> dict[str, str]:
        """The ``error`` member of a reply."""
        return {"kind": self.kind, "message": self.message}

    def __str__(self) -> str:
        return self.message


class DaemonUnreachable(BridgeError):
    """No daemon answers on the control socket."""

    def __init__(self, message: str) -> None:
        super().__init__("unreachable", message)


class CacheUnavailable(RuntimeError):
    """The cache's database is not open (the message says why)."""


class SyncError(Exception):
    """A synchronisation could not complete; the message says why, naming the node."""


class NodeNotFound(LookupError):
    """The pubsub service does not have this node (item-not-found on the node itself)."""


# --- exception -> kind ---------------------------------------------------------------------


def _stanza_error(error: BaseException) -> str:
    condition = getattr(error, "condition", None) or "an error"
    text = getattr(error, "text", None)
    return f"the pubsub service answered {condition}" + (f" ({one_line(text)})" if text else "")


def _stanza_kind(error: BaseException) -> str:
    # a request the service found bad is the caller's: say so with the caller's kind
    condition = getattr(error, "condition", None)
    return {"item-not-found": "not_found", "bad-request": "bad_request"}.get(
        str(condition), "server"
    )


def _timeout(error: BaseException) -> str:
    return "the pubsub service did not answer in time"


def _database(error: BaseException) -> str:
    orig = getattr(error, "orig", None)  # SQLAlchemy wraps the driver's error
    return f"the cache database failed: {one_line(str(orig or error) or type(error).__name__)}"


def _unavailable(error: BaseException) -> str:
    return f"the cache is unavailable: {one_line(str(error))}"


def _recursion(error: BaseException) -> str:
    return "an item is nested too deeply to be handled"


#: exception (class, or dotted path of a class outside the standard library) ->
#: (kind, one-line describer or None for ``str(error)``). First match wins: subclasses
#: before their bases.
EXCEPTIONS: tuple[
    tuple[type[BaseException] | str, str, Callable[[BaseException], str] | None], ...
] = (
    (NodeNotFound, "not_found", None),
    (CacheUnavailable, "unavailable", _unavailable),
    (SyncError, "server", None),
    ("libervia_cache.storage.query.SearchQueryError", "bad_request", None),
    ("libervia_cache.storage.records.NodeGone", "conflict", None),
    ("libervia_cache.storage.records.ProfileServedElsewhere", "unavailable", None),
    ("libervia_cache.hostapi.NotConnected", "unavailable", None),
    ("twisted.words.protocols.jabber.error.StanzaError", "server", _stanza_error),
    ("twisted.internet.defer.TimeoutError", "timeout", _timeout),
    ("twisted.internet.error.TimeoutError", "timeout", _timeout),
    ("sqlalchemy.exc.SQLAlchemyError", "unavailable", _database),
    (RecursionError, "bad_request", _recursion),
    ("sqlite3.Error", "unavailable", _database),
    (TimeoutError, "timeout", _timeout),
)


def _resolve(entry: type[BaseException] | str) -> type[BaseException] | None:
    if not isinstance(entry, str):
        return entry
    module_name, _, class_name = entry.rpartition(".")
    module = sys.modules.get(module_name)
    found = getattr(module, class_name, None) if module is not None else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _entry(error: BaseException) -> tuple[str, Callable[[BaseException], str] | None] | None:
    for exception, kind, describer in EXCEPTIONS:
        cls = _resolve(exception)
        if cls is not None and isinstance(error, cls):
            if kind == "server" and describer is _stanza_error:
                kind = _stanza_kind(error)
            return kind, describer
    return None


def kind_of(error: BaseException) -> str:
    """The bridge error kind of ``error``: ``internal`` for anything unexpected."""
    if isinstance(error, BridgeError):
        return error.kind
    entry = _entry(error)
    return entry[0] if entry is not None else "internal"


def describe(error: BaseException) -> str:
    """``error`` in one line for a person: what happened, never a class name alone."""
    if isinstance(error, BridgeError):
        return error.message
    entry = _entry(error)
    if entry is not None and entry[1] is not None:
        return one_line(entry[1](error))
    text = one_line(str(error))
    if entry is not None and text:
        return text
    name = type(error).__name__
    return f"unexpected {name}: {text}" if text else f"unexpected {name}"


def to_bridge_error(error: BaseException, doing: str | None = None) -> BridgeError:
    """The bridge error of ``error``; ``doing`` (e.g. "synchronisation of node x") is
    put in front of the message."""
    if isinstance(error, BridgeError):
        return error
    message = describe(error)
    return BridgeError(kind_of(error), f"{doing}: {message}" if doing else message)
