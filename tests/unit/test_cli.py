"""The ``libervia-cache`` command without a daemon: help, arguments, exit codes, db."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from libervia_cache.cli import main, parse_date, parse_order, parse_value
from libervia_cache.cli.db import SUBCOMMANDS
from libervia_cache.cli.items import rsm_options
from libervia_cache.cli.values import ORDER_KEYS
from libervia_cache.errors import BridgeError

#: command -> arguments it needs to reach the daemon
BRIDGE_COMMANDS: dict[str, list[str]] = {
    "get": ["pubsub.example.org", "node"],
    "cache-get": ["pubsub.example.org", "node"],
    "sync": ["pubsub.example.org", "node", "--wait"],
    "search": ["--fts", "xmpp"],
    "purge": ["--yes"],
    "reset": ["--yes"],
    "status": [],
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose control socket nobody listens on."""
    path = tmp_path / "libervia-cache.conf"
    path.write_text(
        f"[daemon]\nsocket = {tmp_path / 'no-daemon.sock'}\n\n"
        f"[pubsub_cache]\ndb_url = sqlite+aiosqlite:///{tmp_path / 'configured.db'}\n"
    )
    return path


def invoke(*args: str, input: str | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.mark.parametrize("command", [*BRIDGE_COMMANDS, "daemon", "db"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    if command in BRIDGE_COMMANDS:
        assert "--json" in result.stdout


@pytest.mark.parametrize("command", BRIDGE_COMMANDS)
def test_every_command_says_in_one_line_that_no_daemon_runs_with_exit_code_2(
    command: str, config: Path
) -> None:
    result = invoke("--config", str(config), command, *BRIDGE_COMMANDS[command], "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no daemon is running" in result.stderr


def test_debug_shows_the_traceback(config: Path) -> None:
    result = invoke("--config", str(config), "--debug", "status")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "DaemonUnreachable" in result.stderr


def test_bad_usage_exits_with_code_1(config: Path) -> None:
    assert invoke("--config", str(config), "get").exit_code == 1  # missing arguments
    assert invoke("--config", str(config), "status", "--no-such-option").exit_code == 1
    both = invoke("--config", str(config), "get", "s", "n", "--after", "a", "--index", "1")
    assert both.exit_code == 1
    assert "use only one of --after, --before, --index" in both.stderr


def test_a_missing_configuration_file_is_a_user_error(tmp_path: Path) -> None:
    result = invoke("--config", str(tmp_path / "missing.conf"), "status")
    assert result.exit_code == 1
    assert "configuration" in result.stderr and "not found" in result.stderr


def test_an_unreadable_configuration_file_is_one_line_with_exit_code_1(tmp_path: Path) -> None:
    path = tmp_path / "libervia-cache.conf"
    path.write_text("socket = /tmp/x\n")
    result = invoke("--config", str(path), "status")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"libervia-cache: configuration: {path}: ")
    assert len(result.stderr.splitlines()) == 1


def test_the_daemon_command_validates_the_whole_configuration(tmp_path: Path) -> None:
    path = tmp_path / "libervia-cache.conf"
    path.write_text("[pubsub_cache]\nno_such_key = 1\n")
    # a process of its own: the command installs the asyncio reactor
    result = subprocess.run(
        [sys.executable, "-m", "libervia_cache", "--config", str(path), "daemon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no_such_key: unknown key" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_db_commands_use_the_configured_database(config: Path, tmp_path: Path) -> None:
    result = invoke("--config", str(config), "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("upgrade: empty (no schema) -> ")  # to the head
    assert (tmp_path / "configured.db").exists()
    assert "up to date" in invoke("--config", str(config), "db", "current").stdout


def test_db_url_option_wins_over_the_configuration(config: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    result = invoke(
        "--config", str(config), "db", "--db-url", f"sqlite+aiosqlite:///{other}", "current"
    )
    assert result.exit_code == 0, result.output
    assert other.exists() and not (tmp_path / "configured.db").exists()


def test_purge_refuses_a_date_that_is_neither_iso_nor_relative(config: Path) -> None:
    result = invoke("--config", str(config), "purge", "--updated-before", "yesterday")
    assert result.exit_code == 1
    assert "'--updated-before'" in result.stderr


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("15m", timedelta(minutes=15)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_relative_dates_count_back_from_now(text: str, ago: timedelta) -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_date(text, now=now) == now - ago


def test_iso_dates_are_utc_unless_they_say_otherwise() -> None:
    assert parse_date("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_date("2026-01-02T03:04:05+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(ValueError, match="30d"):
        parse_date("soon")


def test_parsed_values_are_json_when_valid_json_else_strings() -> None:
    assert parse_value('["xmpp", "python"]') == ["xmpp", "python"]
    assert parse_value("42") == 42
    assert parse_value("null") is None
    assert parse_value("Post 5") == "Post 5"


def test_order_by_takes_fixed_keys_or_parsed_paths_with_a_direction() -> None:
    assert parse_order("creation") == {"order": "creation", "direction": "asc"}
    assert parse_order("rank:desc") == {"order": "rank", "direction": "desc"}
    assert parse_order("author.name:asc") == {"path": "author.name", "direction": "asc"}
    assert parse_order("links[0].href") == {"path": "links[0].href", "direction": "asc"}


def test_the_cli_knows_the_search_order_keys_of_the_daemon() -> None:
    from libervia_cache.storage.query import ORDER_KEYS as DAEMON_ORDER_KEYS

    assert tuple(ORDER_KEYS) == tuple(DAEMON_ORDER_KEYS)


def test_db_help_lists_the_real_db_commands_with_their_summaries() -> None:
    from libervia_cache.storage.commands import db

    real = {name: command.get_short_help_str(limit=200) for name, command in db.commands.items()}
    assert real == SUBCOMMANDS


def test_db_help_does_not_need_the_storage_layer() -> None:
    result = invoke("db", "--help")
    assert result.exit_code == 0, result.output
    for name in SUBCOMMANDS:
        assert name in result.stdout
    assert "--db-url" in result.stdout


# --- RSM requests: what the CLI sends, the daemon parses ----------------------------------


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ((None, None, None, None), None),
        ((5, None, None, None), {"max": 5}),
        ((None, "k", None, None), {"max": 10, "after": "k"}),
        ((3, None, "", None), {"max": 3, "before": ""}),
        ((3, None, None, 6), {"max": 3, "index": 6}),
    ],
)
def test_rsm_options_are_the_json_form_the_daemon_parses(
    options: tuple[int | None, str | None, str | None, int | None],
    sent: dict[str, object] | None,
) -> None:
    from libervia_cache.hostapi import rsm_request

    assert rsm_options(*options) == sent
    assert (rsm_request(sent) is None) == (sent is None)


def test_a_bad_rsm_request_is_a_bad_request() -> None:
    from libervia_cache.hostapi import rsm_request

    for bad in ({"max": 5, "after": "a", "index": 2}, {"page": 1}, "max=5"):
        with pytest.raises(BridgeError) as caught:
            rsm_request(bad)  # type: ignore[arg-type]
        assert caught.value.kind == "bad_request"


# --- against a fake daemon: what each command sends and prints ----------------------------


class FakeDaemon:
    """A control socket answering each method with a canned reply (progress messages
    first), recording the requests."""

    def __init__(self, path: Path, replies: dict[str, list[dict[str, Any]]]) -> None:
        self.path = path
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rwb") as stream:
            for line in stream:
                request = json.loads(line)
                self.requests.append(request)
                for message in self.replies[request["method"]]:
                    stream.write(json.dumps({"id": request["id"], **message}).encode() + b"\n")
                stream.flush()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_daemon(config: Path, tmp_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(tmp_path / "no-daemon.sock", {})
    yield daemon
    daemon.close()


ITEMS = {
    "items": ["<item id='a'/>", "<item id='b'/>"],
    "metadata": {
        "service": "pubsub.example.org",
        "node": "blog",
        "cached": True,
        "rsm": {"first": "a", "last": "b", "index": 0, "count": 7},
    },
}
NODE = {
    "profile": "bob",
    "service": "pubsub.example.org",
    "node": "blog",
    "type": "blog",
    "state": "IN_PROGRESS",
    "items": 3,
    "last_sync": "2026-01-02T03:04:05.678+00:00",
    "subscribed": True,
    "progress": {"stored": 3, "total": 7},
}
COUNTERS = {"hits": 1, "misses": 2, "syncs_started": 3, "syncs_failed": 0}


def test_get_sends_the_request_and_prints_items_then_a_summary(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    fake_daemon.replies["ps_items_get"] = [{"result": ITEMS}]
    result = invoke(
        *("--config", str(config), "--profile", "bob", "get", "pubsub.example.org", "blog"),
        *("--rsm-max", "2", "--no-cache"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ITEMS["items"]
    assert result.stderr.strip() == (
        "2 item(s) of blog on pubsub.example.org from the cache (RSM index 0, count 7)"
    )
    assert fake_daemon.requests[0]["method"] == "ps_items_get"
    assert fake_daemon.requests[0]["params"] == {
        "service": "pubsub.example.org",
        "node": "blog",
        "profile": "bob",
        "max_items": None,
        "item_ids": None,
        "rsm": {"max": 2},
        "use_cache": False,
    }


def test_json_output_is_the_daemons_result_alone(fake_daemon: FakeDaemon, config: Path) -> None:
    fake_daemon.replies["ps_cache_get"] = [{"result": ITEMS}]
    result = invoke("--config", str(config), "cache-get", "s", "n", "--item", "a", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ITEMS and result.stderr == ""
    assert fake_daemon.requests[0]["params"]["item_ids"] == ["a"]


def test_a_bridge_error_is_one_line_with_the_exit_code_of_its_kind(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    for kind, code in (("not_cached", 1), ("server", 3), ("timeout", 3), ("surprise", 3)):
        fake_daemon.replies["ps_cache_get"] = [{"error": {"kind": kind, "message": "no luck"}}]
        result = invoke("--config", str(config), "cache-get", "s", "n")
        assert (result.exit_code, result.stderr) == (code, "libervia-cache: no luck\n")


def test_sync_wait_prints_progress_lines_then_the_state(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    done = {**NODE, "state": "COMPLETED", "items": 7, "progress": None}
    fake_daemon.replies["ps_cache_sync"] = [
        {"progress": {"stored": 3, "total": 7}},
        {"progress": {"stored": 7}},
        {"result": {"started": True, "nodes": [done]}},
    ]
    result = invoke("--config", str(config), "sync", "pubsub.example.org", "blog", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "sync blog: 3 item(s) stored of 7",
        "sync blog: 7 item(s) stored",
        "blog on pubsub.example.org: COMPLETED, 7 item(s)",
    ]


def test_status_draws_a_table_and_the_counters(fake_daemon: FakeDaemon, config: Path) -> None:
    fake_daemon.replies["ps_cache_status"] = [{"result": {"nodes": [NODE], "counters": COUNTERS}}]
    result = invoke("--config", str(config), "status")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "bob" in line)
    for cell in ("pubsub.example.org", "IN_PROGRESS (3/7)", "2026-01-02 03:04:05", "yes"):
        assert cell in row
    assert result.stdout.splitlines()[-1] == (
        "since start: 1 hit(s), 2 miss(es), 3 sync(s) started, 0 failed"
    )


def test_search_sends_the_query_and_draws_a_table(fake_daemon: FakeDaemon, config: Path) -> None:
    found = {
        "service": "pubsub.example.org",
        "node": "blog",
        "item_id": "a",
        "parsed": {"title": "Hello", "author": {"name": "Alice"}, "published": "2026"},
    }
    fake_daemon.replies["ps_cache_search"] = [{"result": [found]}]
    result = invoke(
        *("--config", str(config), "--profile", "bob", "search", "--fts", "hello"),
        *("--parsed", "tags", "overlap", '["x"]', "--order-by", "creation:desc"),
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == "1 result(s)\n"
    row = next(line for line in result.stdout.splitlines() if "Hello" in line)
    assert "Alice" in row and "blog" in row
    query = fake_daemon.requests[0]["params"]["query"]
    assert query["profiles"] == ["bob"] and query["fts"] == "hello"
    assert query["parsed"] == [{"path": "tags", "op": "overlap", "value": ["x"]}]
    assert query["order-by"] == [{"order": "creation", "direction": "desc"}]


def test_purge_asks_then_purges(fake_daemon: FakeDaemon, config: Path) -> None:
    fake_daemon.replies["ps_cache_purge"] = [{"result": {"count": 4, "purged": 4}}]
    declined = invoke("--config", str(config), "purge", "--node", "blog", input="n\n")
    assert declined.exit_code == 1
    assert "Purge 4 cached item(s)?" in declined.stderr and "aborted" in declined.stderr
    accepted = invoke("--config", str(config), "purge", "--updated-before", "2026-01-01", "--yes")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.splitlines() == ["4 cached item(s) match", "purged 4 item(s)"]
    assert fake_daemon.requests[-1]["params"] == {
        "filters": {"updated_before": "2026-01-01T00:00:00+00:00"}
    }


def test_reset_says_what_it_forgot(fake_daemon: FakeDaemon, config: Path) -> None:
    fake_daemon.replies["ps_cache_reset"] = [{"result": {"nodes": 1, "items": 3}}]
    result = invoke("--config", str(config), "reset", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "cache reset: 1 node(s) and 3 item(s) forgotten\n"


def test_an_unexpected_failure_is_an_internal_error_in_one_line(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    fake_daemon.replies["ps_cache_reset"] = [{"result": {"nodes": 1}}]  # "items" missing
    result = invoke("--config", str(config), "reset", "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith("libervia-cache: internal error: ")
    assert len(result.stderr.splitlines()) == 1 and "--debug" in result.stderr
