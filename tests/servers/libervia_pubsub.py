"""A private libervia-pubsub (0.4) component behind a private Prosody.

The component stores into a database with a random name created on the PostgreSQL that
runs on 127.0.0.1:5432 (trust authentication, env ``LIBERVIA_CACHE_TEST_PG_HOST`` /
``LIBERVIA_CACHE_TEST_PG_PORT`` / ``LIBERVIA_CACHE_TEST_PG_USER`` to change), dropped
at stop. It runs on Debian's ``/usr/bin/python3`` (it needs Debian's Twisted), not on
the test virtualenv.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from .base import ServerError, free_port, log_contains, port_open, run_command, wait_until
from .prosody import ProsodyServer

SCHEMA = Path("/usr/share/libervia/sat_pubsub/db/pubsub.sql")
LIBERVIA_PATH = "/usr/share/libervia"
TWISTD = "/usr/bin/twistd3"

COMPONENT_LISTENER = """\
component_ports = {{ {port} }}
component_interfaces = {{ "127.0.0.1" }}
"""

EXTERNAL_COMPONENT = """\
Component "{service}"
    component_secret = "{secret}"
"""


class LiberviaPubsubServer(ProsodyServer):
    """Prosody for c2s, libervia-pubsub as the external ``pubsub.localhost`` component."""

    kind = "libervia-pubsub"
    binaries = ("prosody", "prosodyctl", "psql", TWISTD)
    quirks: ClassVar[dict[str, Any]] = {
        "rsm": True,
        "rsm_advertised": True,
        "rsm_keys_are_item_ids": True,
        "rsm_index": False,  # <index> -> internal-server-error
        "rsm_count": True,
        "items_by_id_order": "asked",
        "max_items_order": "oldest_first",
        "retract_notify_needed": True,
        "delete_event": True,
        "purge_event": True,
        "owner_events_without_subscription": True,
        "unknown_id_fails": True,
        "auto_create_on_publish": True,
        "order_by": True,
        "republish_moves_to_newest": True,  # default order is modification time
        "disco_items_order": "modification",
        "rsm_unknown_key": "empty",
        "rsm_last_page_index": "correct",
        "max_items_rsm": False,
        "lowered_max_items": "refused",
        "deep_items_relayed": False,  # RecursionError on its side: no answer
    }

    def __init__(self, keep: bool = False) -> None:
        super().__init__(keep)
        self.component_port = 0
        self.component_secret = secrets.token_hex(16)
        self.pg_host = os.environ.get("LIBERVIA_CACHE_TEST_PG_HOST", "127.0.0.1")
        self.pg_port = os.environ.get("LIBERVIA_CACHE_TEST_PG_PORT", "5432")
        self.pg_user = os.environ.get("LIBERVIA_CACHE_TEST_PG_USER", "postgres")
        self.database = f"libervia_cache_test_{secrets.token_hex(6)}"
        self._database_created = False
        self.component: subprocess.Popen[bytes] | None = None

    @property
    def component_log_path(self) -> Path:
        return self.directory / "libervia-pubsub.log"

    def _component_config(self) -> tuple[str, str]:
        return (
            COMPONENT_LISTENER.format(port=self.component_port),
            EXTERNAL_COMPONENT.format(service=self.pubsub_service, secret=self.component_secret),
        )

    def _psql(self, *args: str, database: str = "postgres") -> None:
        run_command(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.pg_host, "-p", self.pg_port,
             "-U", self.pg_user, "-d", database, *args],
            f"psql {' '.join(args)[:60]}",
            env=self._clean_env(),
        )  # fmt: skip

    @staticmethod
    def _clean_env() -> dict[str, str]:
        # PG* variables would override the component's (and psql's) settings.
        return {key: value for key, value in os.environ.items() if not key.startswith("PG")}

    def _start(self) -> None:
        if not SCHEMA.exists():
            raise ServerError(f"libervia-pubsub schema not found: {SCHEMA}")
        self._psql("-c", f"CREATE DATABASE {self.database}")
        self._database_created = True
        self._psql("-f", str(SCHEMA), database=self.database)
        self.component_port = free_port()
        super()._start()
        env = self._clean_env()
        env["PYTHONPATH"] = LIBERVIA_PATH
        self.component = subprocess.Popen(
            [
                TWISTD, "--nodaemon", f"--pidfile={self.directory / 'libervia-pubsub.pid'}",
                f"--logfile={self.component_log_path}", "libervia-pubsub",
                f"--jid={self.pubsub_service}", f"--xmpp_pwd={self.component_secret}",
                f"--rhost={self.host}", f"--rport={self.component_port}",
                f"--db_host={self.pg_host}", f"--db_port={self.pg_port}",
                f"--db_user={self.pg_user}", "--db_pass=", f"--db_name={self.database}",
            ],
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "libervia-pubsub.stderr").open("wb"),
        )  # fmt: skip
        self.pids.append(self.component.pid)
        wait_until(
            lambda: log_contains(self.log_path, "External component successfully authenticated"),
            f"libervia-pubsub to connect (see {self.component_log_path})",
            alive=lambda: self.component is not None and self.component.poll() is None,
        )
        assert port_open(self.c2s_port)

    def _stop(self) -> None:
        try:
            if self.component is not None:
                self.component.terminate()
                try:
                    self.component.wait(10)
                except subprocess.TimeoutExpired:
                    self.component.kill()
                    self.component.wait()
                self.component = None
            super()._stop()
        finally:
            if self._database_created:
                self._psql("-c", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
                self._database_created = False

    def log_tail(self, lines: int = 40) -> str:
        try:
            component = self.component_log_path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            component = ["(no component log)"]
        return super().log_tail(lines) + "\n--- libervia-pubsub ---\n" + "\n".join(component)
