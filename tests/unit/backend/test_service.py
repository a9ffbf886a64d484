"""Running the daemon unattended: log levels and formats, systemd notifications, the lock
on a database, connections that keep trying, one-line messages about profiles."""

from __future__ import annotations

import io
import logging
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.clients import ConnectionState, ReconnectingClient, start_client
from libervia_cache.backend.config import (
    ConfigError,
    LogLevels,
    load_config,
    parse_log_levels,
    parse_value,
)
from libervia_cache.backend.daemon import Daemon, ExclusiveFiles, FileInUse
from libervia_cache.backend.runner import (
    JournalFormatter,
    notify_systemd,
    setup_logging,
    writes_to_journal,
)
from libervia_cache.errors import BridgeError
from tests.servers.base import free_port

PROFILE = "[profile bob]\njid = bob@example.org\npassword = secret\nhost = 127.0.0.1\n"


@pytest.fixture(autouse=True)
def xdg_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-runtime"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.conf"
    path.write_text(textwrap.dedent(text))
    return path


# --- log levels ----------------------------------------------------------------------------


def test_log_level_is_info_by_default_with_library_noise_at_warning(tmp_path: Path) -> None:
    levels = load_config(write(tmp_path, "")).log_levels
    assert levels == LogLevels()
    assert levels.levels() == {
        "": logging.INFO,
        "aiosqlite": logging.WARNING,
        "alembic": logging.WARNING,
        "sqlalchemy": logging.WARNING,
        "twisted": logging.WARNING,
    }


def test_debug_leaves_the_libraries_quiet_unless_named() -> None:
    levels = parse_log_levels("DEBUG, aiosqlite=debug, libervia_cache.plugin.sync=warning")
    assert levels.levels()[""] == logging.DEBUG
    assert levels.levels()["aiosqlite"] == logging.DEBUG
    assert levels.levels()["alembic"] == logging.WARNING
    assert levels.levels()["libervia_cache.plugin.sync"] == logging.WARNING
    assert levels.text == "debug,aiosqlite=debug,libervia_cache.plugin.sync=warning"


def test_error_level_quiets_the_libraries_to_error_too() -> None:
    assert parse_log_levels("error").levels()["alembic"] == logging.ERROR


def test_the_daemon_section_takes_a_log_level(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[daemon]\nlog_level = warning,twisted=info\n"))
    assert config.log_levels.levels()[""] == logging.WARNING
    assert config.log_levels.levels()["twisted"] == logging.INFO


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("verbose", "'verbose' is not a log level (debug, info, warning, error)"),
        ("aiosqlite=debug", "expected LEVEL[,LOGGER=LEVEL...]"),
        ("info,aiosqlite", "expected LOGGER=LEVEL"),
        ("info,aiosqlite=loud", "aiosqlite: 'loud' is not a log level"),
    ],
)
def test_a_bad_log_level_is_one_line_naming_the_key(
    tmp_path: Path, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f"[daemon]\nlog_level = {value}\n"))
    assert "[daemon] log_level: " in str(raised.value) and problem in str(raised.value)


def test_an_option_standing_for_a_key_is_checked_as_the_key(tmp_path: Path) -> None:
    url = parse_value("pubsub_cache", "db_url", "sqlite+aiosqlite:///x.db", tmp_path)
    assert url == f"sqlite+aiosqlite:///{tmp_path}/x.db"
    with pytest.raises(ConfigError, match=r"\[pubsub_cache\] db_url: .*asyncio driver"):
        parse_value("pubsub_cache", "db_url", "sqlite:///x.db", tmp_path)
    with pytest.raises(ConfigError, match="unknown configuration key"):
        parse_value("pubsub_cache", "nope", "1", tmp_path)


# --- log format ----------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name or None).level for name in LogLevels().levels()}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def test_journal_lines_carry_a_priority_on_every_line_and_no_time() -> None:
    formatter = JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("x.y", logging.WARNING, __file__, 1, "a\nb", None, None)
    assert formatter.format(record) == "<4>x.y: a\n<4>b"
    record = logging.LogRecord("x.y", logging.DEBUG, __file__, 1, "fine", None, None)
    assert formatter.format(record) == "<7>x.y: fine"


def test_the_journal_is_recognised_by_the_device_and_inode_of_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "log").open("w") as stream, (tmp_path / "other").open("w") as other:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert writes_to_journal(stream)
        assert not writes_to_journal(other)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not writes_to_journal(stream)


def test_setup_logging_writes_journal_lines_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    with (tmp_path / "log").open("w") as stream:
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        setup_logging(parse_log_levels("info"), stream)
        logging.getLogger("libervia_cache.test").info("hello")
        logging.getLogger("aiosqlite").info("executing noise")
    assert (tmp_path / "log").read_text() == "<6>libervia_cache.test: hello\n"


def test_setup_logging_writes_times_and_levels_elsewhere(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(parse_log_levels("info"), stream)
    logging.getLogger("libervia_cache.test").warning("careful")
    line = stream.getvalue().strip()
    assert line.endswith(" WARNING libervia_cache.test: careful")
    assert line[:4].isdigit()  # the time first


def test_systemd_is_told_when_it_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        notify_systemd("READY=1")
        assert listener.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify_systemd("READY=1")  # nobody listens: nothing happens


# --- the lock on a database ----------------------------------------------------------------


def test_a_second_holder_of_a_database_is_refused_naming_the_first(tmp_path: Path) -> None:
    database = tmp_path / "cache.db"
    first, second = ExclusiveFiles(), ExclusiveFiles()
    first.acquire(database, Path("/run/first.sock"))
    with pytest.raises(FileInUse) as refused:
        second.acquire(database, Path("/run/second.sock"))
    message = str(refused.value)
    assert f"{database} is used by another libervia-cache daemon (PID {os.getpid()}" in message
    assert "/run/first.sock" in message and "\n" not in message
    first.release()
    second.acquire(database, Path("/run/second.sock"))  # free again
    second.release()


# --- profiles ------------------------------------------------------------------------------


def test_a_daemon_without_profile_says_how_to_add_one(tmp_path: Path) -> None:
    daemon = Daemon(load_config(write(tmp_path, "")))
    assert daemon.default_profile == ""
    with pytest.raises(BridgeError) as raised:
        daemon.get_client(daemon.default_profile)
    assert raised.value.kind == "not_found"
    assert "no profile is configured: add a [profile NAME] section to" in raised.value.message


def test_an_unknown_profile_is_not_found_naming_the_known_ones(tmp_path: Path) -> None:
    daemon = Daemon(load_config(write(tmp_path, PROFILE)))
    with pytest.raises(BridgeError) as raised:
        daemon.get_client("alice")
    assert (raised.value.kind, raised.value.message) == (
        "not_found",
        "unknown profile 'alice' (known: bob)",
    )


def test_the_daemon_status_lists_every_profile(tmp_path: Path) -> None:
    daemon = Daemon(load_config(write(tmp_path, PROFILE)), log_level="info")
    status = daemon.status()
    assert status["pid"] == os.getpid() and status["log_level"] == "info"
    assert status["config"] == str(tmp_path / "test.conf") and status["config_exists"]
    assert status["uptime"] >= 0 and status["version"]
    [bob] = status["profiles"]
    assert bob["profile"] == "bob" and bob["jid"] == "bob@example.org"
    assert bob["state"] == "not_started"


# --- connections that keep trying ----------------------------------------------------------


class Recorder:
    """The statuses a client went through, and a way to wait for one."""

    def __init__(self, client: ReconnectingClient) -> None:
        self.seen: list[dict[str, Any]] = []
        self._waiting: list[tuple[Any, defer.Deferred[None]]] = []
        client.observe(self)

    def __call__(self, client: ReconnectingClient) -> None:
        status = client.status
        self.seen.append(
            {
                "state": status.state,
                "error": status.error,
                "failures": status.failures,
                "delay": None if status.next_retry is None else status.next_retry - time.time(),
            }
        )
        for entry in list(self._waiting):
            condition, d = entry
            if condition():
                self._waiting.remove(entry)
                d.callback(None)

    def failures(self, count: int) -> defer.Deferred[None]:
        def condition() -> bool:
            return any(
                s["state"] is ConnectionState.FAILED and s["failures"] >= count for s in self.seen
            )

        d: defer.Deferred[None] = defer.Deferred()
        if condition():
            d.callback(None)
        else:
            self._waiting.append((condition, d))
        return d.addTimeout(30, reactor)

    def failed(self) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["state"] is ConnectionState.FAILED]


async def test_a_refused_first_connection_is_retried_with_a_growing_delay() -> None:
    client = start_client(JID("bob@localhost"), "pw", "127.0.0.1", free_port(), tls="off")
    recorder = Recorder(client)
    try:
        await recorder.failures(2)
    finally:
        client.stopService()
    first, second = recorder.failed()[:2]
    assert first["error"] == second["error"] == "connection refused"
    assert (first["failures"], second["failures"]) == (1, 2)
    assert 0 < first["delay"] < second["delay"]
    assert client.status.state is ConnectionState.STOPPED


class Silent(protocol.Protocol):
    """A server that accepts the connection and never says a word."""


async def test_a_server_that_never_answers_is_given_up_per_attempt_and_retried_later() -> None:
    port: Any = reactor.listenTCP(0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1")  # type: ignore[attr-defined]
    client = start_client(
        JID("bob@localhost"), "pw", "127.0.0.1", port.getHost().port, tls="off",
        attempt_timeout=0.3,
    )  # fmt: skip
    recorder = Recorder(client)
    try:
        await recorder.failures(2)
    finally:
        client.stopService()
        await port.stopListening()
    first, second = recorder.failed()[:2]
    assert first["error"] == "no answer within 0.3 s"
    # the delay grows although TCP connected each time: it resets only once authenticated
    assert 0 < first["delay"] < second["delay"]


class LockingPlugin:
    """A plugin that needs a file for itself (as the cache needs its SQLite database)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = False

    def exclusive_files(self) -> list[Path]:
        return [self.path]

    def start(self) -> None:
        self.started = True


async def test_a_daemon_refuses_to_start_on_a_file_a_running_daemon_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from libervia_cache.backend import daemon as daemon_module
    from libervia_cache.backend.runner import start_exit_code

    database = tmp_path / "data" / "cache.db"
    plugins: list[LockingPlugin] = []

    def load_plugins(host: Any) -> dict[str, Any]:
        plugins.append(LockingPlugin(database))
        return {"LOCKING": plugins[-1]}

    monkeypatch.setattr(daemon_module, "load_plugins", load_plugins)
    first = Daemon(load_config(write(tmp_path, "")))
    await first.start(listen=False, connect=False)
    try:
        second = Daemon(load_config(write(tmp_path, "")))
        with pytest.raises(BridgeError) as refused:
            await second.start(listen=False, connect=False)
        assert refused.value.kind == "conflict" and start_exit_code(refused.value) == 1
        assert f"{database} is used by another libervia-cache daemon" in refused.value.message
        assert plugins[0].started and not plugins[1].started  # refused before it started
        assert (database.parent / "cache.db.lock").read_text().startswith(f"{os.getpid()} ")
    finally:
        await first.stop()
    third = Daemon(load_config(write(tmp_path, "")))
    await third.start(listen=False, connect=False)  # free once the first one stopped
    await third.stop()
