"""A private ejabberd (23.01) with mod_pubsub on ``pubsub.localhost``."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    ServerError,
    XMPPServer,
    free_port,
    log_contains,
    port_open,
    run_command,
    wait_until,
)

EJABBERD_YML = """\
hosts: [{domain}]
loglevel: info
log_rotate_count: 0
certfiles: ["{certfile}"]
auth_method: internal
auth_password_format: plain
disable_sasl_mechanisms: [digest-md5, x-oauth2]
# fast publishing from parallel test clients: no traffic shaping, long queues
shaper: {{}}
shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
max_fsm_queue: 100000
acl:
  admin:
    user: alice@{domain}
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  pubsub_createnode:
    allow: all
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
  "loopback registration":
    from: [mod_http_api]
    who:
      ip: 127.0.0.1/8
    what: [register]
listen:
  - port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 1024
    max_stanza_size: 10485760
    shaper: none
    access: c2s
    starttls: true
    starttls_required: false
  # HTTP API, to register accounts without booting a VM per ejabberdctl call
  - port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
modules:
  mod_caps: {{}}
  mod_disco: {{}}
  mod_roster: {{}}
  mod_http_api: {{}}
  mod_pubsub:
    hosts: [{pubsub_service}]
    access_createnode: pubsub_createnode
    plugins: [flat, pep]
    nodetree: tree
    ignore_pep_from_offline: false
    last_item_cache: false
    max_items_node: 100000
    max_subscriptions_node: 1000
    default_node_config:
      max_items: 100000
      send_last_published_item: never
      notify_retract: true
      notify_delete: true
      notify_config: true
    force_node_config:
      "urn:xmpp:microblog:0":
        max_items: 100000
"""

EJABBERDCTL_CFG = """\
ERLANG_NODE={node}@localhost
ERL_DIST_PORT={dist_port}
INET_DIST_INTERFACE=127.0.0.1
ERL_OPTIONS="-setcookie {cookie}"
SPOOL_DIR={spool}
LOGS_DIR={logs}
EJABBERD_PID_PATH={pid_path}
EJABBERD_BYPASS_WARNINGS=true
"""


class EjabberdServer(XMPPServer):
    """ejabberd with its own config dir, mnesia spool and logs, run as user ejabberd."""

    kind = "ejabberd"
    binaries = ("ejabberdctl",)
    quirks: ClassVar[dict[str, Any]] = {
        "rsm": True,
        "rsm_advertised": False,
        "rsm_keys_are_item_ids": False,  # first/last are timestamps
        "rsm_index": True,  # honoured within range; past the end: internal-server-error
        "rsm_count": True,
        "items_by_id_order": "creation",
        "max_items_order": "oldest_first",
        "retract_notify_needed": False,  # node config notify_retract decides
        "delete_event": True,  # with notify_delete (set in default_node_config)
        "purge_event": True,
        "owner_events_without_subscription": False,
        "unknown_id_fails": False,
        "auto_create_on_publish": True,
        "order_by": False,
        "republish_moves_to_newest": False,  # keeps creation order (SERVERS.md says moves)
        "disco_items_order": "creation",
        "rsm_unknown_key": "empty",
        "rsm_last_page_index": "count-max",  # before="" max>count: index is negative
        "max_items_rsm": True,
        "lowered_max_items": "at_next_publication",
        "deep_items_relayed": True,
    }

    @property
    def log_path(self) -> Path:
        return self.directory / "logs" / "ejabberd.log"

    def _ctl(self, *args: str) -> list[str]:
        return ["ejabberdctl", "--config-dir", str(self.directory / "etc"), *args]

    def _start(self) -> None:
        user = pwd.getpwnam("ejabberd")
        etc, spool, logs = (self.directory / name for name in ("etc", "spool", "logs"))
        for path in (etc, spool, logs):
            path.mkdir()
        # ejabberdctl, run as root, switches to user ejabberd: it must reach everything.
        self.directory.chmod(0o755)
        combined = self.directory / "ejabberd.pem"
        combined.write_text(self.ca_file.read_text() + self.key_file.read_text())
        self.pid_path = self.directory / "ejabberd.pid"
        self.http_port = free_port()
        (etc / "ejabberd.yml").write_text(
            EJABBERD_YML.format(
                domain=self.domain,
                certfile=combined,
                c2s_port=self.c2s_port,
                http_port=self.http_port,
                pubsub_service=self.pubsub_service,
            )
        )
        (etc / "ejabberdctl.cfg").write_text(
            EJABBERDCTL_CFG.format(
                node=f"test{secrets.token_hex(4)}",
                dist_port=free_port(),
                cookie=secrets.token_hex(16),
                spool=spool,
                logs=logs,
                pid_path=self.pid_path,
            )
        )
        shutil.copy("/etc/ejabberd/inetrc", etc / "inetrc")
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        run_command(self._ctl("start"), "ejabberdctl start")
        wait_until(lambda: self.pid_path.exists(), "ejabberd pid file")
        pid = int(self.pid_path.read_text().strip() or 0)
        if pid:
            self.pids.append(pid)
        wait_until(
            lambda: log_contains(self.log_path, "is started in the node"),
            f"ejabberd start in {self.log_path}",
        )
        wait_until(lambda: port_open(self.c2s_port), f"ejabberd c2s port {self.c2s_port}")

    def _register(self, accounts: dict[str, str]) -> None:
        # Through the HTTP API: each ejabberdctl call would boot an Erlang VM (~0.3 s).
        wait_until(lambda: port_open(self.http_port), f"ejabberd HTTP API port {self.http_port}")
        for user, password in accounts.items():
            body = json.dumps({"user": user, "host": self.domain, "password": password})
            request = urllib.request.Request(
                f"http://{self.host}:{self.http_port}/api/register",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as e:
                raise ServerError(f"ejabberd: cannot register {user}: {e.read()!r}") from e

    def _stop(self) -> None:
        # The PID file may have been written after we read it (empty at first).
        if not self.pids and self.pid_path.exists():
            content = self.pid_path.read_text().strip()
            if content:
                self.pids.append(int(content))
