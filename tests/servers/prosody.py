"""A private Prosody (0.12) with its pubsub component on ``pubsub.localhost``.

The component runs Prosody's own ``pubsub`` module. :class:`ProsodyServer` also serves
as the XMPP server in front of libervia-pubsub (see ``libervia_pubsub.py``), which then
replaces the component by an external one.
"""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from .base import XMPPServer, log_contains, port_open, run_command, wait_until

PROSODY_CFG = """\
-- generated for tests: private instance, loopback only
run_as_root = true
daemonize = false
pidfile = "{directory}/prosody.pid"
data_path = "{data}"
log = {{ info = "{log}"; error = "{log}" }}
certificates = "{directory}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
{component_listener}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
-- without this, replies over 8 KiB stall ~45 ms (Nagle + delayed ACK)
network_settings = {{ nagle = false }}
limits = {{ c2s = {{ rate = "100mb/s"; burst = "10s" }} }}
c2s_stanza_size_limit = 10485760
admins = {{ "alice@{domain}" }}
pubsub_max_items = 100000
pep_max_items = 100000
{storage}
ssl = {{ certificate = "{cert}"; key = "{key}" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "pep"; "ping"; "register";
}}
modules_disabled = {{ "s2s"; "offline"; "c2s_limits"; "posix" }}

VirtualHost "{domain}"
    ssl = {{ certificate = "{cert}"; key = "{key}" }}

{component}
"""

SQL_STORAGE = """\
storage = "sql"
sql = { driver = "SQLite3"; database = "prosody.sqlite" }
"""

PUBSUB_COMPONENT = """\
Component "{service}" "pubsub"
    ssl = {{ certificate = "{cert}"; key = "{key}" }}
"""


def sqlite_driver_available() -> bool:
    """Whether LuaDBI's SQLite3 driver is installed (Prosody's SQL storage needs it)."""
    return bool(
        glob.glob("/usr/lib/*/lua/*/dbd/sqlite3.so") + glob.glob("/usr/lib/*/lua/*/dbdsqlite3.so")
    )


class ProsodyServer(XMPPServer):
    """Prosody with SQL storage (if LuaDBI SQLite3 is there) and a pubsub component."""

    kind = "prosody"
    binaries: ClassVar[tuple[str, ...]] = ("prosody", "prosodyctl")
    quirks: ClassVar[dict[str, Any]] = {
        "rsm": False,  # RSM ignored: every item is returned
        "rsm_advertised": False,
        "rsm_keys_are_item_ids": False,
        "rsm_index": False,
        "rsm_count": False,
        "items_by_id_order": "asked",
        "max_items_order": "oldest_first",
        "retract_notify_needed": True,
        "delete_event": True,
        "purge_event": True,
        "owner_events_without_subscription": False,
        "unknown_id_fails": False,  # unknown ids are dropped
        "auto_create_on_publish": False,
        "order_by": False,
        "republish_moves_to_newest": True,
        "disco_items_order": "newest_first",
        "rsm_unknown_key": None,
        "rsm_last_page_index": None,
        "max_items_rsm": False,
        "lowered_max_items": "at_once_silently",
        "deep_items_relayed": True,
        "default_node_max_items": 20,  # create nodes with pubsub#max_items raised
    }

    def __init__(self, keep: bool = False) -> None:
        super().__init__(keep)
        self.sql_storage = sqlite_driver_available()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "prosody.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    def _component_config(self) -> tuple[str, str]:
        """(global listener settings, component section) for the pubsub service."""
        return "", PUBSUB_COMPONENT.format(
            service=self.pubsub_service, cert=self.ca_file, key=self.key_file
        )

    def _write_config(self) -> None:
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        listener, component = self._component_config()
        self.config_path.write_text(
            PROSODY_CFG.format(
                directory=self.directory,
                data=data,
                log=self.log_path,
                c2s_port=self.c2s_port,
                domain=self.domain,
                cert=self.ca_file,
                key=self.key_file,
                storage=SQL_STORAGE if self.sql_storage else "",
                component_listener=listener,
                component=component,
            )
        )

    def _start(self) -> None:
        self._write_config()
        # Accounts first: prosodyctl works on the storage directly, before the start.
        self._register(self.accounts)
        self._start_prosody()

    def _start_prosody(self) -> None:
        self.process = subprocess.Popen(
            ["prosody", "--config", str(self.config_path), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "prosody.stderr").open("wb"),
        )
        self.pids.append(self.process.pid)
        wait_until(
            lambda: port_open(self.c2s_port),
            f"prosody c2s port {self.c2s_port}",
            alive=lambda: self.process is not None and self.process.poll() is None,
        )

    def _register(self, accounts: dict[str, str]) -> None:
        if self.process is not None:
            return  # registered before the start
        for user, password in accounts.items():
            run_command(
                [
                    "prosodyctl",
                    "--config",
                    str(self.config_path),
                    "register",
                    user,
                    self.domain,
                    password,
                ],
                "prosodyctl register",
            )

    def _stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def started_log_line(self, text: str) -> bool:
        """Whether the log holds ``text`` (readiness checks of subclasses)."""
        return log_contains(self.log_path, text)
