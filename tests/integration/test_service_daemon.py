"""The daemon run unattended, as a user sees it through the CLI: profiles that connect
whenever their server lets them, a status that says what is going on, logs that tell
what the daemon does (in the journal's form under systemd), a systemd unit that works.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.words.protocols.jabber.jid import JID

from tests.conftest import run
from tests.harness.daemon import DaemonProcess, atom_entry, cli_json, run_cli, write_config
from tests.servers.base import XMPPServer, free_port, wait_until
from tests.servers.publisher import connect_publisher

MICROBLOG = "urn:xmpp:microblog:0"
#: what a message for a person never holds
LEAKS = re.compile(r"\bNone\b|Traceback|\b[A-Z]\w*(Error|Exception)\b")


def daemon_status(daemon: DaemonProcess) -> dict[str, Any]:
    status: dict[str, Any] = cli_json(daemon, "status")["daemon"]
    return status


def profile_status(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    return next(row for row in daemon_status(daemon)["profiles"] if row["profile"] == name)


def set_profile_key(config: Path, profile: str, key: str, value: str) -> None:
    """Change ``[profile NAME] key`` in a configuration written by ``write_config``."""
    lines, section = [], None
    for line in config.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == f"[profile {profile}]" and line.startswith(f"{key} = "):
            line = f"{key} = {value}"
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")


class Forwarder:
    """A TCP port that refuses connections until :meth:`open`, then forwards them to the
    server: a server that is not up yet, then is (threads: the CLI blocks the test)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, __ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in [*([self._listener] if self._listener else []), *self._sockets]:
            sock.close()


@pytest.fixture
def forwarder(xmpp_server: XMPPServer) -> Iterator[Forwarder]:
    forwarding = Forwarder((xmpp_server.host, xmpp_server.c2s_port))
    yield forwarding
    forwarding.close()


@pytest.fixture
def stopped_after() -> Iterator[list[DaemonProcess]]:
    """Daemons a test started, stopped (cleanly, exit 0) after it."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            assert daemon.stop() == 0, daemon.log()


def start(daemon: DaemonProcess, started: list[DaemonProcess]) -> DaemonProcess:
    started.append(daemon)
    daemon.start()
    return daemon


def publish_node(server: XMPPServer, node: str, count: int, access: str = "open") -> None:
    async def publish() -> None:
        publisher = await connect_publisher(server, "alice", f"pub-{uuid.uuid4().hex[:8]}")
        try:
            service = JID(server.pubsub_service)
            await publisher.create_node(service, node, {"pubsub#access_model": access})
            posts = [(f"p{n}", atom_entry(f"p{n}", f"Post {n}")) for n in range(count)]
            await publisher.publish(service, node, posts, depth=1)
        finally:
            await publisher.close()

    run(publish())


# --- profiles connect whenever they can -------------------------------------------------------


def test_a_profile_whose_server_is_not_up_yet_connects_when_it_comes_up(
    xmpp_server: XMPPServer,
    tmp_path: Path,
    forwarder: Forwarder,
    stopped_after: list[DaemonProcess],
    fresh_node: Callable[..., str],
) -> None:
    node = fresh_node(MICROBLOG)
    publish_node(xmpp_server, node, 3)
    config = write_config(tmp_path, xmpp_server)
    set_profile_key(config, "bob", "port", str(forwarder.port))
    daemon = start(DaemonProcess(config), stopped_after)

    bob = profile_status(daemon, "bob")
    assert bob["state"] in ("failed", "connecting"), bob
    assert bob["error"] == "connection refused" and bob["failures"] >= 1
    status = daemon.cli("status").stdout
    assert "bob (bob@localhost): failed" in status or "bob (bob@localhost): connecting" in status
    assert "connection refused" in status
    refused = daemon.cli("get", xmpp_server.pubsub_service, node, check=False)
    assert refused.returncode == 3
    assert refused.stderr.startswith("libervia-cache: profile 'bob' is not connected: ")
    assert "connection refused" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert "profile bob: cannot connect: connection refused; next try in" in daemon.log()

    forwarder.open()
    wait_until(
        lambda: profile_status(daemon, "bob")["state"] == "connected",
        "bob to connect once the server is up",
        timeout=60,
    )
    got = json.loads(daemon.cli("get", xmpp_server.pubsub_service, node, "--json").stdout)
    assert len(got["items"]) == 3
    connected = profile_status(daemon, "bob")
    assert connected["error"] is None and connected["next_retry"] is None
    assert connected["connected_as"].startswith("bob@localhost/")
    assert "profile bob connected as bob@localhost/" in daemon.log()
    assert "Traceback" not in daemon.log()


def test_a_refused_password_is_shown_and_retried_while_other_profiles_work(
    xmpp_server: XMPPServer, tmp_path: Path, stopped_after: list[DaemonProcess]
) -> None:
    config = write_config(tmp_path, xmpp_server, profiles=["bob", "carol"])
    set_profile_key(config, "carol", "password", "not-her-password")
    daemon = start(DaemonProcess(config), stopped_after)

    assert profile_status(daemon, "bob")["state"] == "connected"
    wait_until(
        lambda: profile_status(daemon, "carol")["failures"] >= 2,
        "carol's connection to be tried again",
        timeout=60,
    )
    carol = profile_status(daemon, "carol")
    assert carol["error"].startswith("authentication failed")
    status = daemon.cli("status").stdout
    line = " ".join(status.split())
    assert "carol (carol@localhost): " in line and "authentication failed" in line
    assert "next try in" in line or "connecting" in line
    # the same failure is logged once at warning, not at every attempt
    log = daemon.log()
    assert log.count("profile carol: cannot connect: authentication failed") == 1, log
    assert "Traceback" not in log


# --- status ----------------------------------------------------------------------------------


def test_status_says_what_the_daemon_and_each_node_are_doing_in_80_columns(
    xmpp_server: XMPPServer,
    tmp_path: Path,
    stopped_after: list[DaemonProcess],
    fresh_node: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    small, big, refused = fresh_node(MICROBLOG), fresh_node(MICROBLOG), fresh_node("refused")
    publish_node(xmpp_server, small, 3)
    publish_node(xmpp_server, big, 8)
    publish_node(xmpp_server, refused, 1, access="whitelist")
    config = write_config(tmp_path, xmpp_server, cache_limit=5)
    daemon = start(DaemonProcess(config), stopped_after)
    service = xmpp_server.pubsub_service
    for node in (small, big):
        assert daemon.cli("sync", service, node, "--wait").returncode == 0
    assert daemon.cli("sync", service, refused, "--wait", check=False).returncode == 3
    daemon.cli("get", service, small)  # a hit
    daemon.cli("get", service, big)  # a miss: its oldest items are not kept
    daemon.cli("get", service, refused, check=False)  # a miss: never synchronised

    text = daemon.cli("status").stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    flat = " ".join(text.split())
    assert flat.startswith("libervia-cache ") and "(PID " in flat
    squashed = "".join(text.split())  # long paths wrap anywhere
    assert f"configuration{config}" in squashed
    assert f"databasesqlite+aiosqlite:///{tmp_path / 'cache.db'}" in squashed
    assert "bob (bob@localhost): connected as bob@localhost/" in flat
    assert "1 hit(s), 2 miss(es), hit ratio 33%" in flat
    assert "misses: node larger than the cache limit 1, not synchronised 1" in flat
    assert "3 started, 2 completed, 1 failed, 0 running" in flat
    big_row = next(line for line in lines if "5/8" in line)
    assert "COMPLETED" in big_row and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", big_row)
    assert "truncated by cache_limit: the newest 5 of 8 item(s) kept" in flat
    assert "ERROR" in text and "error: the pubsub service answered" in flat
    assert not LEAKS.search(text), text

    status = cli_json(daemon, "status")
    rows = {row["node"]: row for row in status["nodes"]}
    assert rows[big]["truncated"] is True and rows[big]["server_items"] == 8
    assert rows[big]["items"] == 5 and rows[big]["last_sync"] is not None
    assert rows[refused]["state"] == "ERROR" and rows[refused]["error"]
    assert rows[refused]["last_sync"] is None  # never completed
    assert status["counters"]["hits"] == 1
    assert status["counters"]["miss_reasons"] == {
        "node larger than the cache limit": 1,
        "not synchronised": 1,
    }
    assert status["daemon"]["config"] == str(config)
    assert status["daemon"]["uptime"] > 0 and status["daemon"]["pid"] == daemon.process.pid  # type: ignore[union-attr]
    assert status["database"]["open"] is True


# --- logs ------------------------------------------------------------------------------------


def test_the_log_tells_what_the_daemon_does_and_debug_each_request_without_library_noise(
    xmpp_server: XMPPServer,
    tmp_path: Path,
    stopped_after: list[DaemonProcess],
    fresh_node: Callable[..., str],
) -> None:
    node = fresh_node(MICROBLOG)
    publish_node(xmpp_server, node, 4)
    config = write_config(tmp_path, xmpp_server)
    config.write_text(config.read_text().replace("[daemon]\n", "[daemon]\nlog_level = debug\n"))
    daemon = start(DaemonProcess(config), stopped_after)
    service = xmpp_server.pubsub_service
    daemon.cli("get", service, node)
    daemon.cli("sync", service, node, "--wait")
    daemon.cli("get", service, node)
    log = daemon.log()
    for expected in (
        "libervia-cache ",  # the start, with version, PID and configuration
        f"configuration {config}",
        "profile bob: connecting as bob@localhost",
        "profile bob connected as bob@localhost/",
        "daemon ready (1 of 1 profile(s) connected)",
        f"items of {node} on {service}: miss (not synchronised)",
        f"synchronising node {node} on {service} (profile bob)",
        f"node {node} on {service} synchronised: 4 items in ",
        f"items of {node} on {service}: from the cache",
    ):
        assert expected in log, expected
    for noise in ("aiosqlite", "alembic", "Context impl", "Traceback"):
        assert noise not in log, noise

    (tmp_path / "info").mkdir()
    info = start(DaemonProcess(write_config(tmp_path / "info", xmpp_server)), stopped_after)
    info.cli("get", service, node)
    assert " DEBUG " not in info.log() and "daemon ready" in info.log()


def test_the_log_level_option_wins_over_the_configuration(
    xmpp_server: XMPPServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, xmpp_server)
    result = run_cli(config, "daemon", "--log-level", "loud", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "libervia-cache: --log-level: 'loud' is not a log level (debug, info, warning, error)"
    )


def notify_socket(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(60)
    return listener


def test_under_systemd_the_daemon_logs_for_the_journal_and_says_when_it_is_ready(
    tmp_path: Path,
) -> None:
    # no profile: the daemon starts, and warns that it has nothing to connect
    config = tmp_path / "libervia-cache.conf"
    config.write_text(f"[daemon]\nsocket = {tmp_path / 'daemon.sock'}\n")
    log_path = tmp_path / "journal"
    with notify_socket(tmp_path / "notify") as listener, log_path.open("wb") as journal:
        stat = os.fstat(journal.fileno())
        env = {
            **os.environ,
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "libervia_cache", "--config", str(config), "daemon"],
            stdout=journal,
            stderr=journal,
            env=env,
        )
        try:
            assert listener.recv(1000).startswith(b"READY=1\n")
            assert run_cli(config, "status").returncode == 0
            process.send_signal(signal.SIGTERM)
            assert listener.recv(1000) == b"STOPPING=1"
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = log_path.read_text().splitlines()
    assert lines, "the daemon logged nothing"
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines), lines  # no time
    assert any(line.startswith("<6>libervia_cache.backend.runner: daemon ready") for line in lines)
    assert any(
        line.startswith("<4>libervia_cache.backend.daemon: no profile configured: add a "
                        f"[profile NAME] section (jid, password) to {config}")
        for line in lines
    ), lines  # fmt: skip


def test_without_profile_commands_say_how_to_add_one(
    tmp_path: Path, stopped_after: list[DaemonProcess]
) -> None:
    config = tmp_path / "libervia-cache.conf"
    config.write_text(f"[daemon]\nsocket = {tmp_path / 'daemon.sock'}\n")
    daemon = start(DaemonProcess(config), stopped_after)
    result = daemon.cli("get", "pubsub.example.org", "node", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"libervia-cache: no profile is configured: add a [profile NAME] section to {config}\n"
    )
    assert "profiles       none configured" in daemon.cli("status").stdout


# --- the systemd unit ------------------------------------------------------------------------


def test_the_installed_unit_runs_the_daemon_and_restarts_it_on_failure(
    xmpp_server: XMPPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, xmpp_server)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    written = run_cli(config, "install-service")
    unit_path = tmp_path / "xdg" / "systemd" / "user" / "libervia-cache.service"
    assert str(unit_path) in written.stdout
    unit = unit_path.read_text()
    assert "Restart=on-failure" in unit and "Type=notify" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = shlex.split(exec_start.removeprefix("ExecStart="))
    # what systemd would run: ready (notified), then stopped cleanly by SIGTERM
    with notify_socket(tmp_path / "notify") as listener:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
        )
        try:
            assert listener.recv(1000).startswith(b"READY=1\n")
            assert profile_status_of(config, "bob")["state"] == "connected"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def profile_status_of(config: Path, name: str) -> dict[str, Any]:
    status = json.loads(run_cli(config, "status", "--json").stdout)["daemon"]
    return next(row for row in status["profiles"] if row["profile"] == name)


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    config = tmp_path / "libervia-cache.conf"
    config.write_text("")
    unit = tmp_path / "libervia-cache.service"
    unit.write_text(run_cli(config, "install-service", "--print").stdout)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # systemd ignores what it does not know, with a warning: there must be none
    assert str(unit) not in result.stderr, result.stderr
