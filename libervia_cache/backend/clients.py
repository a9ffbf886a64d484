"""XMPP client connections of the reference daemon: one per profile.

:func:`start_client` builds a :class:`tx_xmpp.client.XMPPClient` whose stream
initialisation follows the profile's TLS policy, attaches the profile's handlers (e.g.
the RSM-aware pubsub client) and starts it: it keeps trying, from the first attempt on,
with exponential backoff (1 s, then about 2.7 times longer each time, at most
``max_retry_delay``), whatever went wrong: a refused connection, a server that does not
answer in time, an authentication or TLS failure. The delay starts again from 1 s only
after a successful authentication, so that a server that accepts connections but refuses
the account is not hammered. :attr:`ReconnectingClient.status` says where it stands
(:class:`ConnectionStatus`), and :meth:`ReconnectingClient.observe` reports every
change.

:func:`connect_client` is the same client for callers that need the first connection to
succeed (test publishers, tools): it fires once the stream is authenticated and bound,
or fails with :class:`ClientConnectionError` (a one-line message) and stops trying.

Knowing when the client is (re)connected
----------------------------------------

- :attr:`ReconnectingClient.is_connected` tells whether an authenticated stream is up now.
- :meth:`ReconnectingClient.when_connected` returns a Deferred fired at once if the stream
  is up, else at the next successful (re)authentication;
  :meth:`ReconnectingClient.when_disconnected` the same for the next loss.
- Handlers (:class:`tx_xmpp.subprotocols.XMPPHandler`) get ``connectionInitialized()``
  after every (re)authentication and ``connectionLost(reason)`` after every drop: that is
  the Wokkel way for protocol code to react, e.g. to resubscribe. Stanzas sent while the
  stream is down are queued by the stream manager and sent on reconnection; pending IQ
  requests fail with the connection loss.

TLS policies (per profile, see :data:`TLS_POLICIES`)
----------------------------------------------------

``required``
    STARTTLS is mandatory; the server certificate is verified against ``tls_ca`` (a PEM
    file of certificates to trust) if given, else against the system trust store, and
    must match the JID's domain.
``optional``
    STARTTLS is used when the server offers it (and then verified as above); a server
    that does not offer it is talked to in clear.
``off``
    STARTTLS is never negotiated; a server that requires it fails the connection.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from OpenSSL import SSL
from twisted.internet import defer, error, ssl
from twisted.internet.interfaces import (
    IConnector,
    IOpenSSLClientConnectionCreator,
)
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import sasl
from twisted.words.protocols.jabber import xmlstream as jabber_xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish.xmlstream import XmlStreamFactoryMixin
from tx_xmpp import client as tx_client
from tx_xmpp.subprotocols import StreamManager, XMPPHandler

log = logging.getLogger(__name__)

TLSPolicy = Literal["required", "optional", "off"]
TLS_POLICIES: tuple[str, ...] = get_args(TLSPolicy)

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_RETRY_DELAY = 60.0


class ClientConnectionError(Exception):
    """The first connection of a client failed; the message is one line for the user."""


class ConnectionState(enum.StrEnum):
    """Where a client's connection stands."""

    #: an attempt is under way
    CONNECTING = "connecting"
    #: the stream is authenticated and bound
    CONNECTED = "connected"
    #: the last attempt failed (``error`` says why); the next one is at ``next_retry``
    FAILED = "failed"
    #: an established connection was lost; the next attempt is at ``next_retry``
    DISCONNECTED = "disconnected"
    #: stopped for good (the daemon stops)
    STOPPED = "stopped"


def _iso(posix: float | None) -> str | None:
    return None if posix is None else datetime.fromtimestamp(posix, UTC).isoformat()


@dataclass
class ConnectionStatus:
    """The state of a client's connection, for the status and the log."""

    state: ConnectionState = ConnectionState.CONNECTING
    #: when the state last changed (POSIX time)
    since: float = 0.0
    #: why the last attempt failed, or how the connection was lost (one line)
    error: str | None = None
    #: failed attempts since the last successful connection
    failures: int = 0
    #: when the next attempt starts (POSIX time), while FAILED or DISCONNECTED
    next_retry: float | None = None
    #: when the stream was last authenticated (POSIX time)
    connected_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the status (times in ISO 8601, UTC)."""
        return {
            "state": self.state.value,
            "since": _iso(self.since),
            "error": self.error,
            "failures": self.failures,
            "next_retry": _iso(self.next_retry),
            "connected_since": _iso(self.connected_since),
        }


def tls_client_options(domain: str, tls_ca: str | None) -> IOpenSSLClientConnectionCreator:
    """TLS client options that verify the server certificate for ``domain``.

    :param domain: the name the certificate must be valid for (the JID's domain).
    :param tls_ca: a PEM file whose certificate(s) are trusted instead of the system
        trust store; ``None`` uses the platform trust store.
    """
    if tls_ca is None:
        return ssl.optionsForClientTLS(domain)
    pem = Path(tls_ca).read_bytes()
    try:
        trust_root = ssl.trustRootFromCertificates(
            [ssl.Certificate.loadPEM(block) for block in _pem_certificates(pem)]
        )
    except SSL.Error as e:
        raise ValueError(f"cannot read the certificate(s) in {tls_ca}: {e}") from e
    return ssl.optionsForClientTLS(domain, trustRoot=trust_root)


def _pem_certificates(pem: bytes) -> list[bytes]:
    """Split a PEM bundle into its certificate blocks."""
    end = b"-----END CERTIFICATE-----"
    blocks = [block + end for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]
    if not blocks:
        raise ValueError("no PEM certificate found")
    return blocks


class PolicyAuthenticator(tx_client.HybridAuthenticator):
    """``HybridAuthenticator`` whose STARTTLS step follows a :data:`TLSPolicy`.

    The TLS initializer is kept in the list even when TLS is ``off`` (with ``wanted``
    false), as Twisted recommends, so that a server requiring TLS gives a clear
    ``TLSRequired`` error rather than a confusing later failure.
    """

    def __init__(
        self,
        jid: JID,
        password: str,
        tls: str,
        tls_options: IOpenSSLClientConnectionCreator | None,
    ) -> None:
        super().__init__(jid, password)
        self.tls = tls
        self.tls_options = tls_options

    def associateWithStream(self, xs: jabber_xmlstream.XmlStream) -> None:
        super().associateWithStream(xs)
        xs.initializers = [
            self._tls_initializer(xs)
            if isinstance(init, jabber_xmlstream.TLSInitiatingInitializer)
            else init
            for init in xs.initializers
        ]

    def _tls_initializer(
        self, xs: jabber_xmlstream.XmlStream
    ) -> jabber_xmlstream.TLSInitiatingInitializer:
        init = jabber_xmlstream.TLSInitiatingInitializer(
            xs, required=self.tls == "required", configurationForTLS=self.tls_options
        )
        init.wanted = self.tls != "off"
        return init


class ReconnectingXmlStreamFactory(jabber_xmlstream.XmlStreamFactory):
    """The Jabber stream factory (a ``ReconnectingClientFactory``) with loss observers.

    Observers registered with :meth:`observe_closed` are called once with the reason the
    next time the connection attempt fails or the connection is lost.
    """

    def __init__(self, authenticator: PolicyAuthenticator, max_retry_delay: float) -> None:
        super().__init__(authenticator)
        self.maxDelay = int(max_retry_delay)
        self._closed_observers: list[Callable[[Failure], None]] = []
        #: the client told of each attempt's start and end (for its status)
        self.client: ReconnectingClient | None = None

    def buildProtocol(self, addr: Any) -> Any:
        # unlike XmlStreamFactory, the delay is not reset when TCP connects: a server
        # that accepts connections and then refuses the account would be retried every
        # second; the client resets it once authenticated
        return XmlStreamFactoryMixin.buildProtocol(self, addr)

    def startedConnecting(self, connector: IConnector) -> None:
        super().startedConnecting(connector)
        if self.client is not None:
            self.client._attempt_started(connector)

    def next_retry(self) -> float | None:
        """When the next attempt is scheduled (POSIX time), if one is."""
        call: Any = self._callID
        if call is None or not call.active():
            return None
        clock: Any = self.clock
        return time.time() + max(0.0, call.getTime() - clock.seconds())

    def observe_closed(self, observer: Callable[[Failure], None]) -> None:
        """Call ``observer(reason)`` once, at the next failure or loss of connection."""
        self._closed_observers.append(observer)

    def _notify_closed(self, reason: Failure) -> None:
        observers, self._closed_observers = self._closed_observers, []
        for observer in observers:
            observer(reason)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self._notify_closed(reason)
        super().clientConnectionFailed(connector, reason)
        if self.client is not None:
            self.client._attempt_ended(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        self._notify_closed(reason)
        super().clientConnectionLost(connector, reason)
        if self.client is not None:
            self.client._attempt_ended(reason)


class ReconnectingClient(tx_client.XMPPClient):
    """An ``XMPPClient`` with a TLS policy, reconnection and connection state.

    Build it with :func:`start_client` or :func:`connect_client` rather than directly.
    """

    factory: ReconnectingXmlStreamFactory

    def __init__(
        self,
        jid: JID,
        password: str,
        host: str,
        port: int,
        tls: str = "required",
        tls_ca: str | None = None,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
        attempt_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if tls not in TLS_POLICIES:
            raise ValueError(f"unknown TLS policy {tls!r}, expected one of {TLS_POLICIES}")
        tls_options = tls_client_options(jid.host, tls_ca) if tls != "off" else None
        self.jid = jid
        self.domain = jid.host.encode("idna")
        self.host = host
        self.port = port
        self.tls = tls
        self._connected_waiters: list[defer.Deferred[None]] = []
        self._disconnected_waiters: list[defer.Deferred[None]] = []
        # The factory is built with our authenticator from the start, so that
        # ``factory.authenticator`` and ``factory.args`` (what ``buildProtocol`` passes
        # to each new stream) agree.
        authenticator = PolicyAuthenticator(jid, password, tls, tls_options)
        factory = ReconnectingXmlStreamFactory(authenticator, max_retry_delay)
        StreamManager.__init__(self, factory)
        factory.client = self
        #: where the connection stands (see :class:`ConnectionStatus`)
        self.status = ConnectionStatus(since=time.time())
        self.attempt_timeout = attempt_timeout
        self._observers: list[Callable[[ReconnectingClient], None]] = []
        self._attempt_error: str | None = None
        self._attempt_timer: Any = None
        self._connector: IConnector | None = None

    @property
    def is_connected(self) -> bool:
        """Whether an authenticated and bound stream is up right now."""
        return bool(self._initialized)

    def when_connected(self) -> defer.Deferred[None]:
        """A Deferred fired when the stream is up: at once, or at the next (re)connection."""
        if self.is_connected:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._connected_waiters.append(d)
        return d

    def when_disconnected(self) -> defer.Deferred[None]:
        """A Deferred fired at the next loss of the stream (at once if it is down)."""
        if not self.is_connected:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._disconnected_waiters.append(d)
        return d

    def observe(self, observer: Callable[[ReconnectingClient], None]) -> None:
        """Call ``observer(client)`` after every change of :attr:`status`."""
        self._observers.append(observer)

    def _set_state(self, state: ConnectionState, **changes: Any) -> None:
        self.status.state = state
        self.status.since = time.time()
        for name, value in changes.items():
            setattr(self.status, name, value)
        for observer in list(self._observers):
            try:
                observer(self)
            except Exception:
                log.exception("%s: a connection observer failed", self.jid.full())

    # --- one attempt: started by the factory, ended by the factory

    def _attempt_started(self, connector: IConnector) -> None:
        self._connector = connector
        self._attempt_error = None
        self._cancel_attempt_timer()
        if self.attempt_timeout is not None:
            from twisted.internet import reactor

            clock: Any = reactor
            self._attempt_timer = clock.callLater(self.attempt_timeout, self._attempt_timed_out)
        self._set_state(ConnectionState.CONNECTING, next_retry=None)

    def _attempt_timed_out(self) -> None:
        self._attempt_timer = None
        if self._attempt_error is None:
            self._attempt_error = f"no answer within {self.attempt_timeout:g} s"
        connector: Any = self._connector
        if connector is None:
            return
        if connector.state == "connecting":
            connector.stopConnecting()
        elif connector.transport is not None:
            connector.transport.abortConnection()

    def _cancel_attempt_timer(self) -> None:
        if self._attempt_timer is not None and self._attempt_timer.active():
            self._attempt_timer.cancel()
        self._attempt_timer = None

    def _attempt_ended(self, reason: Failure) -> None:
        """The factory saw the connection fail or close (a retry may be scheduled)."""
        self._cancel_attempt_timer()
        was_connected = self.status.state is ConnectionState.CONNECTED
        if not self.running or not self.factory.continueTrying:
            self._set_state(ConnectionState.STOPPED, next_retry=None)
        elif was_connected:
            self._set_state(
                ConnectionState.DISCONNECTED,
                error=f"the connection was lost ({_loss(reason)})",
                next_retry=self.factory.next_retry(),
            )
        else:
            self._set_state(
                ConnectionState.FAILED,
                error=self._attempt_error or describe_failure(reason),
                failures=self.status.failures + 1,
                next_retry=self.factory.next_retry(),
            )

    def _authd(self, xs: jabber_xmlstream.XmlStream) -> None:
        super()._authd(xs)
        self._cancel_attempt_timer()
        self.factory.resetDelay()
        now = time.time()
        self._set_state(
            ConnectionState.CONNECTED, error=None, failures=0, next_retry=None, connected_since=now
        )
        waiters, self._connected_waiters = self._connected_waiters, []
        for d in waiters:
            d.callback(None)

    def _disconnected(self, reason: Failure) -> None:
        if self._attempt_error is None and self.status.state is not ConnectionState.CONNECTED:
            # the stream sees the real reason of a failed negotiation (e.g. the TLS
            # verification error), the factory only the transport's
            self._attempt_error = describe_failure(reason)
        super()._disconnected(reason)
        waiters, self._disconnected_waiters = self._disconnected_waiters, []
        for d in waiters:
            d.callback(None)

    def initializationFailed(self, reason: Failure) -> None:
        # The parent re-raises the failure inside the event dispatcher, which only gets
        # it logged as unhandled; close the connection instead: the factory tries again
        # later (with a growing delay), and the status says why.
        self._attempt_error = describe_failure(reason)
        log.debug("%s: stream initialisation failed: %s", self.jid.full(), self._attempt_error)
        xs = self.xmlstream
        if xs is not None and xs.transport is not None:
            # not loseConnection(): over TLS it waits for the server's close_notify, which
            # a server waiting for another authentication attempt does not send
            xs.sendFooter()
            xs.transport.abortConnection()

    def stopService(self) -> Any:
        self._cancel_attempt_timer()
        result = super().stopService()
        if self.status.state is not ConnectionState.STOPPED and not self._connection_open():
            self._set_state(ConnectionState.STOPPED, next_retry=None)
        return result

    def _connection_open(self) -> bool:
        connector: Any = getattr(self, "_connection", None)
        return connector is not None and connector.state != "disconnected"


def describe_failure(reason: Failure) -> str:
    """A one-line, human readable description of a connection failure."""
    value = reason.value
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, sasl.SASLAuthError):
        return f"authentication failed ({value.condition})"
    if isinstance(value, sasl.SASLNoAcceptableMechanism):
        return "authentication failed (no acceptable SASL mechanism)"
    if isinstance(value, jabber_xmlstream.FeatureNotAdvertized):
        return "the server does not offer STARTTLS, which the TLS policy requires"
    if isinstance(value, jabber_xmlstream.TLSRequired):
        return "the server requires TLS, which the TLS policy turns off"
    if isinstance(value, jabber_xmlstream.TLSFailed):
        return "TLS negotiation failed (the server refused STARTTLS)"
    if isinstance(value, SSL.Error):
        return f"TLS failure: {_ssl_error_text(value)}"
    if isinstance(value, error.ConnectionDone | error.ConnectionLost):
        return "the server closed the connection during stream initialisation"
    if isinstance(value, error.DNSLookupError):
        return "the server's host name cannot be resolved"
    if isinstance(value, error.TimeoutError):
        return "the connection timed out"
    if isinstance(value, error.NoRouteError):
        return "no route to the server's host"
    if isinstance(value, sasl.SASLError):
        return "authentication failed"
    if isinstance(value, jabber_error.StreamError):
        return f"the server ended the stream ({value.condition})"
    text = " ".join(str(value).split())
    return f"connection failed: {text}" if text else "connection failed"


def _loss(reason: Failure) -> str:
    """How an established connection ended, in a few words."""
    value = reason.value
    if isinstance(value, error.ConnectionDone):
        return "closed by the server"
    if isinstance(value, error.ConnectionLost):
        return "connection reset or cut"
    text = str(value).splitlines()[0] if str(value) else ""
    return text or "connection lost"


def _ssl_error_text(value: SSL.Error) -> str:
    """The reason strings of an OpenSSL error, e.g. 'certificate verify failed'."""
    try:
        reasons = [entry[2] for entry in value.args[0] if entry[2]]
    except (IndexError, TypeError):
        reasons = []
    return ", ".join(reasons) or str(value)


def start_client(
    jid: JID,
    password: str,
    host: str,
    port: int,
    tls: str = "required",
    tls_ca: str | None = None,
    handlers: Iterable[XMPPHandler] = (),
    attempt_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
) -> ReconnectingClient:
    """Start a client that connects, and keeps trying until :func:`disconnect_client`.

    Every failure, the first one included, is retried with a growing delay (see the
    module documentation); :attr:`ReconnectingClient.status` says where it stands and
    :meth:`ReconnectingClient.observe` reports each change.

    :param attempt_timeout: seconds one attempt may take, from the TCP connection to
        the bound stream, before it is given up (and retried).
    :raises ValueError: for a TLS policy or certificate file that cannot be used (a
        one-line message).
    """
    try:
        client = ReconnectingClient(
            jid, password, host, port, tls, tls_ca, max_retry_delay, attempt_timeout
        )
    except OSError as e:
        raise ValueError(f"{tls_ca}: {e.strerror or e}") from None
    for handler in handlers:
        handler.setHandlerParent(client)
    client.startService()
    return client


def connect_client(
    jid: JID,
    password: str,
    host: str,
    port: int,
    tls: str = "required",
    tls_ca: str | None = None,
    handlers: Iterable[XMPPHandler] = (),
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
) -> defer.Deferred[ReconnectingClient]:
    """Connect a client and fire with it once its stream is authenticated and bound.

    :param jid: the account; its resource, if any, is asked for at bind time (the
        server may assign another one: read ``client.jid`` afterwards).
    :param host: address to connect to (no SRV lookup is done).
    :param tls: the TLS policy, see the module documentation.
    :param tls_ca: PEM file of certificates to trust instead of the system store.
    :param handlers: subprotocol handlers to attach before connecting.
    :param timeout: seconds allowed for the whole first connection.
    :param max_retry_delay: ceiling of the reconnection backoff, in seconds.
    :return: a Deferred firing with the started :class:`ReconnectingClient`, or failing with
        :class:`ClientConnectionError` (the client is then stopped).
    """
    try:
        client = ReconnectingClient(
            jid, password, host, port, tls, tls_ca, max_retry_delay, attempt_timeout=timeout
        )
    except (ValueError, OSError) as e:
        return defer.fail(ClientConnectionError(f"{jid.full()}: {e}"))
    for handler in handlers:
        handler.setHandlerParent(client)

    result: defer.Deferred[ReconnectingClient] = defer.Deferred()
    where = f"{jid.full()} via {host}:{port}"

    def fail(reason: Failure | str) -> None:
        if result.called:
            return
        if timer.active():
            timer.cancel()
        text = reason if isinstance(reason, str) else describe_failure(reason)
        if client.running:
            client.stopService()
        result.errback(ClientConnectionError(f"cannot connect {where}: {text}"))

    def on_authenticated(_: Any) -> None:
        if not result.called:
            timer.cancel()
            result.callback(client)

    def on_closed(reason: Failure) -> None:
        if not result.called:
            fail(reason)

    from twisted.internet import reactor

    # Typed as Any: Twisted's interface methods lack ``self`` for mypy (no zope plugin).
    clock: Any = reactor
    timer = clock.callLater(timeout, fail, f"timed out after {timeout:g} s")
    client.factory.addBootstrap(jabber_xmlstream.INIT_FAILED_EVENT, fail)
    # The stream sees the real reason of a loss (e.g. the TLS verification error),
    # the factory only the transport's; the factory alone sees a refused connection.
    client.factory.addBootstrap(jabber_xmlstream.STREAM_END_EVENT, on_closed)
    client.when_connected().addCallback(on_authenticated)
    client.factory.observe_closed(on_closed)
    client.startService()

    def cleanup(outcome: Any) -> Any:
        client.factory.removeBootstrap(jabber_xmlstream.INIT_FAILED_EVENT, fail)
        client.factory.removeBootstrap(jabber_xmlstream.STREAM_END_EVENT, on_closed)
        return outcome

    return result.addBoth(cleanup)


def disconnect_client(client: ReconnectingClient) -> defer.Deferred[None]:
    """Stop a client for good (no reconnection) and fire once its connection is closed.

    The stream is closed politely (closing ``</stream:stream>`` tag) before the TCP
    connection. Calling it on a stopped client fires at once.
    """
    connector = getattr(client, "_connection", None)
    closed: defer.Deferred[None] = defer.Deferred()
    if connector is not None and connector.state != "disconnected":
        client.factory.observe_closed(lambda _reason: closed.callback(None))
    else:
        closed.callback(None)
    if client.xmlstream is not None:
        client.xmlstream.sendFooter()
    if client.running:
        client.stopService()
    else:
        client.factory.stopTrying()
    return closed
