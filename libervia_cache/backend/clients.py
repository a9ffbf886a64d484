"""XMPP client connections of the reference daemon: one per profile.

:func:`connect_client` builds a :class:`tx_xmpp.client.XMPPClient` whose stream
initialisation follows the profile's TLS policy, attaches the profile's handlers (e.g.
the RSM-aware pubsub client), starts it and fires once the stream is authenticated and
bound. The first connection must succeed: a refused connection, an authentication or TLS
failure or a timeout fails the returned Deferred with :class:`ClientConnectionError`, a
one-line message. After that, the client reconnects by itself with exponential backoff
whenever the connection drops (its factory is a Twisted ``ReconnectingClientFactory``).

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

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from OpenSSL import SSL
from twisted.internet import defer, error, ssl
from twisted.internet.interfaces import (
    IConnector,
    IOpenSSLClientConnectionCreator,
)
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import sasl
from twisted.words.protocols.jabber import xmlstream as jabber_xmlstream
from twisted.words.protocols.jabber.jid import JID
from tx_xmpp import client as tx_client
from tx_xmpp.subprotocols import StreamManager, XMPPHandler

log = logging.getLogger(__name__)

TLSPolicy = Literal["required", "optional", "off"]
TLS_POLICIES: tuple[str, ...] = get_args(TLSPolicy)

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_RETRY_DELAY = 60.0


class ClientConnectionError(Exception):
    """The first connection of a client failed; the message is one line for the user."""


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

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        self._notify_closed(reason)
        super().clientConnectionLost(connector, reason)


class ReconnectingClient(tx_client.XMPPClient):
    """An ``XMPPClient`` with a TLS policy, reconnection and connection state.

    Build it with :func:`connect_client` rather than directly.
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

    def _authd(self, xs: jabber_xmlstream.XmlStream) -> None:
        super()._authd(xs)
        waiters, self._connected_waiters = self._connected_waiters, []
        for d in waiters:
            d.callback(None)

    def _disconnected(self, reason: Failure) -> None:
        super()._disconnected(reason)
        waiters, self._disconnected_waiters = self._disconnected_waiters, []
        for d in waiters:
            d.callback(None)

    def initializationFailed(self, reason: Failure) -> None:
        # The parent re-raises the failure inside the event dispatcher, which only gets
        # it logged as unhandled; stop the service and log it once instead.
        log.warning(
            "%s: stream initialisation failed: %s", self.jid.full(), describe_failure(reason)
        )
        self.stopService()


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
    text = str(value).splitlines()[0] if str(value) else ""
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _ssl_error_text(value: SSL.Error) -> str:
    """The reason strings of an OpenSSL error, e.g. 'certificate verify failed'."""
    try:
        reasons = [entry[2] for entry in value.args[0] if entry[2]]
    except (IndexError, TypeError):
        reasons = []
    return ", ".join(reasons) or str(value)


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
        client = ReconnectingClient(jid, password, host, port, tls, tls_ca, max_retry_delay)
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
