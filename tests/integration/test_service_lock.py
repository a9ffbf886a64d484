"""Two daemons on one SQLite database: the second refuses to start, saying which daemon
uses it; a database of its own, it starts. (Needs the cache plugin's
``exclusive_files()``: the reference daemon locks what plugins name there.)"""

from __future__ import annotations

from pathlib import Path

from tests.harness.daemon import DaemonProcess, restart_log, running_daemon, write_config
from tests.servers.base import XMPPServer


def test_a_second_daemon_on_the_same_database_refuses_to_start(
    xmpp_server: XMPPServer, tmp_path: Path
) -> None:
    database = tmp_path / "shared.db"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_daemon(tmp_path / "first", xmpp_server, database=database) as first:
        assert first.process is not None
        config = write_config(tmp_path / "second", xmpp_server, database=database)
        second = DaemonProcess(config)
        result = second.cli("daemon", check=False)
        assert result.returncode == 1
        assert result.stdout == ""
        error = next(line for line in result.stderr.splitlines() if "could not start" in line)
        assert error.endswith(
            f"the daemon could not start: {database} is used by another libervia-cache daemon "
            f"(PID {first.process.pid}, control socket {tmp_path / 'first' / 'daemon.sock'}); "
            "stop it, or give this daemon a database of its own"
        )
        assert "Traceback" not in result.stderr
        # the first one is undisturbed
        assert first.cli("status").returncode == 0
        # with a database of its own, the second one starts
        own = write_config(tmp_path / "second", xmpp_server, database=tmp_path / "own.db")
        restart_log(second)
        other = DaemonProcess(own)
        other.start()
        assert other.stop() == 0
    # the first one gone, its database is free again
    again = DaemonProcess(write_config(tmp_path / "second", xmpp_server, database=database))
    restart_log(again)
    again.start()
    assert again.stop() == 0
