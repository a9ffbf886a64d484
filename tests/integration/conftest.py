"""Fixtures of the integration tests: real XMPP servers, a publisher, fresh node names,
the daemon (in-process and as a process).

``xmpp_server`` is session scoped and parametrised over the kinds listed in
``LIBERVIA_CACHE_TEST_SERVERS`` (comma separated; default: every kind), so every test
that uses it runs once per server, and pytest starts each server once. A kind whose
programs are missing is skipped, except in CI (``CI=true``) where it is an error:
``tests/servers/install.sh`` installs them.

``daemon_process`` is the daemon as a process, one per module (the CLI tests).

``daemon`` is the reference daemon in-process, bob connected to the session's server,
its database in the test's directory; ``@pytest.mark.daemon_options(...)`` (on a test or
a module) gives it other profiles or ``[pubsub_cache]`` options. ``make_daemon`` starts
more (a restart on the same database, other options in one test); both stop what they
started. :func:`synchronise` and :func:`synchronised` are the explicit sync of a node,
waited for.

Tests of the daemon (``daemon``, ``make_daemon``, ``daemon_process``) run on each
database kind of ``LIBERVIA_CACHE_TEST_DATABASES`` (see :mod:`tests.harness.databases`):
SQLite (a file in the test's directory) and PostgreSQL (the session's database, emptied
for each test; one of its own for a module's ``daemon_process``). On PostgreSQL they run
against one server kind only, ``LIBERVIA_CACHE_TEST_POSTGRESQL_SERVER`` (default: the
first kind asked for), to keep the run short: the database and the server are
independent. Modules of :data:`SQLITE_ONLY_MODULES`, and tests marked ``sqlite_only``,
look inside the SQLite file and run on SQLite alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from twisted.words.protocols.jabber.jid import JID

from tests.conftest import run
from tests.harness.daemon import DaemonProcess, cache_of, running_daemon, start_daemon
from tests.harness.databases import (
    PostgresDatabases,
    database_kinds,
    empty,
    require_postgresql,
    server_url,
)
from tests.servers.base import ServerError, XMPPServer
from tests.servers.ejabberd import EjabberdServer
from tests.servers.libervia_pubsub import LiberviaPubsubServer
from tests.servers.prosody import ProsodyServer
from tests.servers.publisher import Publisher, connect_publisher

if TYPE_CHECKING:
    from libervia_cache.backend.daemon import Daemon
    from libervia_cache.plugin.sync import NodeSync
    from libervia_cache.storage import NodeInfo

SERVER_CLASSES: dict[str, type[XMPPServer]] = {
    cls.kind: cls for cls in (EjabberdServer, ProsodyServer, LiberviaPubsubServer)
}
DEFAULT_SERVERS = "ejabberd,prosody,libervia-pubsub"


def server_kinds() -> list[str]:
    """Kinds asked for by ``LIBERVIA_CACHE_TEST_SERVERS``, validated."""
    value = os.environ.get("LIBERVIA_CACHE_TEST_SERVERS", DEFAULT_SERVERS)
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in SERVER_CLASSES]
    if unknown:
        raise pytest.UsageError(
            f"LIBERVIA_CACHE_TEST_SERVERS: unknown server kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(SERVER_CLASSES)}"
        )
    return kinds


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "daemon_options(profiles=..., **options): profiles and [pubsub_cache] options of "
        "the `daemon` fixture",
    )
    config.addinivalue_line(
        "markers", "sqlite_only: the daemon's database must be an SQLite file (not PostgreSQL)"
    )


#: modules whose tests look inside the SQLite file (locks, corruption, paths, the file
#: lock of one daemon per database): their daemons run on SQLite only
SQLITE_ONLY_MODULES = frozenset(
    {
        "test_faults_database",
        "test_faults_database_sync_errors",
        "test_faults_kill",
        "test_isolation",
        "test_service_daemon",
        "test_service_lock",
    }
)

#: what makes a test a daemon test, run on each database kind
DAEMON_FIXTURES = frozenset({"daemon", "make_daemon", "daemon_process"})


def postgresql_server_kind() -> str:
    """The XMPP server kind the daemon tests run against on PostgreSQL."""
    return os.environ.get("LIBERVIA_CACHE_TEST_POSTGRESQL_SERVER") or server_kinds()[0]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_kind" not in metafunc.fixturenames:
        return
    kinds = database_kinds()
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in SQLITE_ONLY_MODULES or metafunc.definition.get_closest_marker("sqlite_only"):
        kinds = ["sqlite"]
    metafunc.parametrize("database_kind", kinds, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("database_kind") == "postgresql" and params.get("xmpp_server") not in (
            None,
            postgresql_server_kind(),
        ):
            deselected.append(item)  # PostgreSQL runs against one server kind
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def database_kind(request: pytest.FixtureRequest) -> str:
    """The kind of the daemons' database: ``sqlite`` or ``postgresql``."""
    return str(getattr(request, "param", "sqlite"))


class PostgresForDaemons:
    """The session's PostgreSQL databases for daemons: one emptied for each test, one
    per module for ``daemon_process``."""

    def __init__(self) -> None:
        self.databases = PostgresDatabases(server_url())
        self.reason = self.databases.check()
        self.shared = None if self.reason else self.databases.create("daemons")

    def fresh(self) -> str:
        require_postgresql(self.databases, self.reason)
        assert self.shared is not None
        empty(self.shared)
        return self.shared

    def of_module(self, module: str) -> str:
        require_postgresql(self.databases, self.reason)
        return self.databases.create(module.rpartition(".")[2][:30])


@pytest.fixture(scope="session")
def postgresql_for_daemons() -> Iterator[PostgresForDaemons]:
    session = PostgresForDaemons()
    try:
        yield session
    finally:
        session.databases.drop_all()


@pytest.fixture
def daemon_database(request: pytest.FixtureRequest, database_kind: str) -> str | None:
    """The database of the test's daemons: None (``cache.db`` in their directory) on
    SQLite, the URL of an emptied PostgreSQL database on PostgreSQL."""
    if database_kind != "postgresql":
        return None
    session: PostgresForDaemons = request.getfixturevalue("postgresql_for_daemons")
    return session.fresh()


@pytest.fixture(scope="session", params=server_kinds())
def xmpp_server(request: pytest.FixtureRequest) -> Iterator[XMPPServer]:
    """A running private server of one kind (the test runs once per kind)."""
    cls = SERVER_CLASSES[request.param]
    missing = cls.missing_binaries()
    if missing:
        message = (
            f"{cls.kind} not installed (missing {', '.join(missing)}): run tests/servers/install.sh"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = cls(keep=bool(os.environ.get("LIBERVIA_CACHE_TEST_KEEP_SERVERS")))
    try:
        server.start()
    except ServerError as e:
        pytest.fail(f"{cls.kind} failed to start: {e}\n{server.log_tail()}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_server() -> Iterator[XMPPServer]:
    """A server of its own (of the first kind asked for), that a test may stop."""
    server = SERVER_CLASSES[server_kinds()[0]]()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def publisher(xmpp_server: XMPPServer) -> Iterator[Publisher]:
    """A :class:`Publisher` connected as alice (admin on Prosody), closed after the test."""
    publisher = run(connect_publisher(xmpp_server, "alice", f"publisher-{uuid.uuid4().hex[:8]}"))
    try:
        yield publisher
    finally:
        run(publisher.close())


@pytest.fixture
def connect_user(
    xmpp_server: XMPPServer,
) -> Iterator[Callable[[str], Coroutine[Any, Any, Publisher]]]:
    """Connect more accounts: ``bob = await connect_user("bob")``; closed after the test."""
    connected: list[Publisher] = []

    async def connect(user: str) -> Publisher:
        client = await connect_publisher(xmpp_server, user, f"test-{uuid.uuid4().hex[:8]}")
        connected.append(client)
        return client

    try:
        yield connect
    finally:
        for client in connected:
            run(client.close())


def unique_node_name(prefix: str = "test") -> str:
    """A node name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fresh_node() -> Callable[..., str]:
    """A factory of unique node names: ``fresh_node()``, ``fresh_node("urn:xmpp:microblog:0")``."""
    return unique_node_name


# --- the daemon, as a process --------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_process(
    request: pytest.FixtureRequest,
    xmpp_server: XMPPServer,
    database_kind: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DaemonProcess]:
    """``libervia-cache daemon`` (bob on the session's server), one for the module: its
    tests use their own nodes, and talk to it through the CLI or its control socket."""
    directory = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    database: str | None = None
    if database_kind == "postgresql":
        session: PostgresForDaemons = request.getfixturevalue("postgresql_for_daemons")
        database = session.of_module(request.module.__name__)
    with running_daemon(directory, xmpp_server, database=database) as process:
        yield process


# --- the daemon, in-process -----------------------------------------------------------------


class DaemonFactory:
    """Starts in-process daemons for one test; :meth:`stop_all` stops those still running.

    ``await make_daemon(profiles=..., database=..., **options)``: a daemon on the test's
    ``xmpp_server`` (or ``server``), its configuration in ``directory`` (default: the
    test's directory, so that a daemon started after another one stopped finds its
    database).
    """

    def __init__(
        self, server: XMPPServer | None, directory: Path, database: str | None = None
    ) -> None:
        self.server = server
        self.directory = directory
        #: the test's database (a URL), shared by its daemons; None: an SQLite file in
        #: each daemon's directory
        self.database = database
        self._running: list[Daemon] = []

    async def __call__(
        self,
        profiles: Iterable[str] = ("bob",),
        database: Path | str | None = None,
        directory: Path | None = None,
        server: XMPPServer | None = None,
        **options: Any,
    ) -> Daemon:
        server = server or self.server
        assert server is not None, "a test without xmpp_server names the daemon's server"
        daemon = await start_daemon(
            directory or self.directory,
            server,
            profiles=profiles,
            database=database if database is not None else self.database,
            **options,
        )
        self._running.append(daemon)
        return daemon

    async def stop(self, daemon: Daemon) -> None:
        """Stop ``daemon`` now (a test restarting it on the same database)."""
        self._running.remove(daemon)
        await daemon.stop()

    async def stop_all(self) -> None:
        while self._running:
            await self.stop(self._running[-1])


@pytest.fixture
def make_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, daemon_database: str | None
) -> Iterator[DaemonFactory]:
    """A :class:`DaemonFactory`; every daemon it started and the test did not stop is
    stopped after the test.

    It does not ask for ``xmpp_server`` itself (a test on a ``private_server`` would
    then run once per server kind): it uses the test's, if the test asks for it.
    """
    server = (
        request.getfixturevalue("xmpp_server") if "xmpp_server" in request.fixturenames else None
    )
    factory = DaemonFactory(server, tmp_path, daemon_database)
    try:
        yield factory
    finally:
        run(factory.stop_all())


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest, xmpp_server: XMPPServer, make_daemon: DaemonFactory
) -> Daemon:
    """The reference daemon in-process: bob connected to the session's server, its
    database ``cache.db`` in the test's directory; stopped after the test.

    ``@pytest.mark.daemon_options(profiles=["bob", "carol"], sync_page_size=5)`` on the
    test or its module: other profiles, ``[pubsub_cache]`` options.
    """
    marker = request.node.get_closest_marker("daemon_options")
    options = dict(marker.kwargs) if marker is not None else {}
    return run(make_daemon(**options))


async def synchronise(
    daemon: Daemon, service: JID | str, node: str, profile: str = "bob"
) -> NodeSync:
    """An explicit sync of ``node`` (what the ``sync`` command asks), waited for: its
    ``outcome`` and ``error`` say how it ended (a sync already running is followed)."""
    sync = await cache_of(daemon).management.synchronise(
        daemon.get_client(profile), JID(str(service)), node
    )
    await sync.wait()
    return sync


async def synchronised(
    daemon: Daemon, service: JID | str, node: str, profile: str = "bob"
) -> NodeInfo:
    """:func:`synchronise`, which must complete: the node as stored then."""
    from libervia_cache.plugin.sync import Outcome
    from libervia_cache.storage import SyncState

    sync = await synchronise(daemon, service, node, profile)
    assert sync.outcome is Outcome.COMPLETED, (
        f"the sync of {node} ended {sync.outcome}: {sync.error!r}"
    )
    store = cache_of(daemon).store_access.require()
    node_info = await store.get_node(profile, JID(str(service)).full(), node)
    assert node_info is not None and node_info.sync_state is SyncState.COMPLETED, node_info
    return node_info
