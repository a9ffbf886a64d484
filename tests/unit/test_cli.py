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


@pytest.mark.parametrize("command", [*BRIDGE_COMMANDS, "daemon", "db", "install-service"])
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


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["get"], "libervia-cache get: Missing argument 'SERVICE'."),
        (["get", "s", "n", "--rsm-max", "zz"], "'zz' is not a valid integer range"),
        (["get", "s", ""], "a node name cannot be empty"),
        (["sync", "s", ""], "a node name cannot be empty"),
        (["status", "--no-such-option"], "No such option '--no-such-option'"),
        (["no-such-command"], "libervia-cache: No such command 'no-such-command'."),
        (["db", "nothing"], "libervia-cache db: No such command 'nothing'."),
        (["search", "--order-by", "published:up"], "unknown direction 'up' (asc or desc)"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command_and_its_help(
    config: Path, args: list[str], says: str
) -> None:
    result = invoke("--config", str(config), *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert says in result.stderr
    assert result.stderr.rstrip().endswith("--help)")


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
        "--config", str(config), "db", "--db-url", f"sqlite+aiosqlite:///{other}", "upgrade"
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
    assert parse_order("ns:key:desc") == {"path": "ns:key", "direction": "desc"}


@pytest.mark.parametrize("text", ["published:up", "creation:", "ns:key", "rank:descending"])
def test_order_by_refuses_an_unknown_direction(text: str) -> None:
    with pytest.raises(click.BadParameter, match="unknown direction"):
        parse_order(text)


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


DAEMON = {
    "version": "1.2.3",
    "pid": 4242,
    "started": "2026-01-02T03:00:00+00:00",
    "uptime": 3725.0,
    "now": "2026-01-02T04:02:05+00:00",
    "config": "/home/someone/.config/libervia-cache/libervia-cache.conf",
    "config_exists": True,
    "socket": "/run/user/1000/libervia-cache/daemon.sock",
    "log_level": "info",
    "plugins": ["XEP-0060", "PUBSUB_CACHE"],
    "profiles": [
        {
            "profile": "bob",
            "jid": "bob@example.org",
            "state": "connected",
            "connected_as": "bob@example.org/cache",
            "error": None,
            "failures": 0,
            "next_retry": None,
        },
        {
            "profile": "carol",
            "jid": "carol@example.org",
            "state": "failed",
            "error": "authentication failed (not-authorized)",
            "failures": 3,
            "next_retry": "2026-01-02T04:02:47+00:00",
        },
    ],
}
CACHE_STATUS = {
    "nodes": [
        NODE,
        {
            **NODE,
            "node": "urn:xmpp:microblog:0:comments/" + "a-very-long-comment-node-identifier" * 2,
            "state": "COMPLETED",
            "items": 5000,
            "server_items": 8000,
            "truncated": True,
            "progress": None,
        },
        {
            **NODE,
            "service": "other.example.org",
            "node": "broken",
            "state": "ERROR",
            "error": "the pubsub service answered forbidden",
            "items": 0,
            "last_sync": None,
            "progress": None,
        },
    ],
    "database": {"url": "postgresql+asyncpg://cache:***@db/cache", "open": True},
    "syncs_running": 1,
    "counters": {
        **COUNTERS,
        "syncs_completed": 2,
        "miss_reasons": {"not synchronised": 2},
        "events_applied": 4,
    },
}


def test_status_shows_the_daemon_profiles_counters_and_nodes_within_80_columns(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    fake_daemon.replies["daemon_status"] = [{"result": DAEMON}]
    fake_daemon.replies["ps_cache_status"] = [{"result": CACHE_STATUS}]
    result = invoke("--config", str(config), "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    text = result.stdout
    assert lines[0] == "libervia-cache 1.2.3, up 1 h 2 min (PID 4242)"
    for expected in (
        "configuration  /home/someone/.config/libervia-cache/libervia-cache.conf",
        "database       postgresql+asyncpg://cache:***@db/cache",
        "bob (bob@example.org): connected as bob@example.org/cache",
        "carol (carol@example.org): failed (3 attempt(s)): authentication failed",
        "next try in 42 s",
        "1 hit(s), 2 miss(es), hit ratio 33%",
        "misses: not synchronised 2",
        "3 started, 2 completed, 0 failed, 1 running",
        "4 applied",
        "bob on pubsub.example.org",
        "bob on other.example.org",
        "error: the pubsub service answered forbidden",
        "truncated by cache_limit: the newest 5000 of 8000 item(s) kept",
        "synchronising: 3 of 7 item(s) stored",
    ):
        assert " ".join(expected.split()) in " ".join(text.split()), expected
    in_progress = next(line for line in lines if line.strip().startswith("blog (blog)"))
    assert "IN_PROGRESS" in in_progress and "3/?" in in_progress
    truncated = next(line for line in lines if "5000/8000" in line)
    assert "COMPLETED" in truncated
    assert "never" in next(line for line in lines if "broken" in line)
    # a long node name goes on lines of its own, whole: its cells on the next line
    long_name = CACHE_STATUS["nodes"][1]["node"]
    first = next(n for n, line in enumerate(lines) if line.startswith("  urn:xmpp:microblog"))
    last = lines.index(truncated) - 1
    assert "".join(line.strip() for line in lines[first : last + 1]) == f"{long_name} (blog)"
    assert truncated.startswith(" " * 20)


def test_status_json_is_the_caches_document_with_the_daemons(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    fake_daemon.replies["daemon_status"] = [{"result": DAEMON}]
    fake_daemon.replies["ps_cache_status"] = [{"result": CACHE_STATUS}]
    result = invoke("--config", str(config), "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**CACHE_STATUS, "daemon": DAEMON}


def test_status_of_a_daemon_without_daemon_status_shows_the_cache(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    fake_daemon.replies["daemon_status"] = [
        {"error": {"kind": "unknown_method", "message": "unknown method 'daemon_status'"}}
    ]
    fake_daemon.replies["ps_cache_status"] = [{"result": {**CACHE_STATUS, "nodes": []}}]
    result = invoke("--config", str(config), "status")
    assert result.exit_code == 0, result.output
    assert "no cached node" in result.stdout and "1 hit(s)" in result.stdout


@pytest.mark.parametrize("width", [60, 80, 132])
def test_the_status_layout_fits_the_width(width: int) -> None:
    from libervia_cache.cli.status import render_status

    text = render_status(DAEMON, CACHE_STATUS, width)
    assert max(len(line) for line in text.splitlines()) <= width, text


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


def test_search_says_when_more_results_match_than_the_limit_shows(
    fake_daemon: FakeDaemon, config: Path
) -> None:
    found = [
        {"service": "s", "node": "n", "item_id": str(n), "parsed": {"title": f"t{n}"}}
        for n in range(4)
    ]
    fake_daemon.replies["ps_cache_search"] = [{"result": found}]
    result = invoke("--config", str(config), "search", "--limit", "3", "--index", "6")
    assert result.exit_code == 0, result.output
    assert fake_daemon.requests[-1]["params"]["query"]["limit"] == 4  # one more than shown
    assert "t3" not in result.stdout and "t2" in result.stdout
    assert result.stderr.splitlines() == [
        "3 result(s) shown, more match: the next ones with --index 9, or a higher --limit"
    ]
    as_json = invoke("--config", str(config), "search", "--limit", "3", "--json")
    assert [r["item_id"] for r in json.loads(as_json.stdout)] == ["0", "1", "2"]


def test_the_rsm_summary_never_shows_a_missing_value(fake_daemon: FakeDaemon, config: Path) -> None:
    answer = {**ITEMS, "metadata": {**ITEMS["metadata"], "rsm": {"count": 7, "index": None}}}
    fake_daemon.replies["ps_items_get"] = [{"result": answer}]
    result = invoke("--config", str(config), "get", "pubsub.example.org", "blog")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().endswith("from the cache (RSM count 7)")
    assert "None" not in result.stderr


def test_sync_wait_says_why_a_node_is_in_error(fake_daemon: FakeDaemon, config: Path) -> None:
    failed = {**NODE, "state": "ERROR", "error": "the pubsub service answered forbidden"}
    fake_daemon.replies["ps_cache_sync"] = [{"result": {"started": True, "nodes": [failed]}}]
    result = invoke("--config", str(config), "sync", "pubsub.example.org", "blog", "--wait")
    assert result.stdout.splitlines()[-1] == (
        "blog on pubsub.example.org: ERROR (the pubsub service answered forbidden), 3 item(s)"
    )


# --- install-service ----------------------------------------------------------------------


def test_install_service_writes_a_user_unit_restarted_on_failure(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = invoke("--config", str(config), "install-service")
    assert result.exit_code == 0, result.output
    unit = tmp_path / "xdg" / "systemd" / "user" / "libervia-cache.service"
    assert str(unit) in result.stdout and "systemctl --user enable --now" in result.stdout
    text = unit.read_text()
    assert "Restart=on-failure" in text and "Type=notify" in text
    assert "RestartPreventExitStatus=1" in text and "WantedBy=default.target" in text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f"--config {config} daemon")
    again = invoke("--config", str(config), "install-service")
    assert again.exit_code == 1 and "--force" in again.stderr
    assert len(again.stderr.splitlines()) == 1
    assert invoke("--config", str(config), "install-service", "--force").exit_code == 0


def test_install_service_quotes_what_systemd_would_split_or_expand(tmp_path: Path) -> None:
    from libervia_cache.cli.service import unit_file

    odd = tmp_path / "my conf %h $HOME.conf"
    exec_start = next(line for line in unit_file(odd).splitlines() if line.startswith("ExecStart="))
    assert f'"{str(odd).replace("%", "%%").replace("$", "$$")}"' in exec_start


def test_install_service_print_writes_nothing(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = invoke("--config", str(config), "install-service", "--print")
    assert result.exit_code == 0 and result.stdout.startswith("[Unit]")
    assert not (tmp_path / "xdg").exists()


# --- db -----------------------------------------------------------------------------------


def test_db_current_never_creates_a_database_or_its_directory(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "cache.db"
    for command in (["current"], ["current", "--json"], ["downgrade", "base"]):
        result = invoke("db", "--db-url", f"sqlite+aiosqlite:///{missing}", *command)
        assert result.exit_code == 1, result.output
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1
        assert f"no database at {missing}" in result.stderr
    assert not missing.parent.exists()


def test_db_commands_have_json(config: Path, tmp_path: Path) -> None:
    from libervia_cache.storage import migrate

    head = migrate.head_revision()
    upgraded = json.loads(invoke("--config", str(config), "db", "upgrade", "--json").stdout)
    assert upgraded["before"] is None and upgraded["after"] == head
    current = json.loads(invoke("--config", str(config), "db", "current", "--json").stdout)
    assert current["current"] == head and current["up_to_date"] is True
    assert current["url"].endswith("configured.db")
    history = json.loads(invoke("--config", str(config), "db", "history", "--json").stdout)
    assert history["head"] == head and history["revisions"][-1]["revision"] == head


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "expected"),
        ("sqlite:///x.db", "asyncio driver"),
        ("mysql+aiomysql://u@h/db", "asyncio driver"),
    ],
)
def test_db_refuses_a_url_the_daemon_refuses_saying_what_it_wants(
    tmp_path: Path, url: str, says: str
) -> None:
    result = invoke("db", "--db-url", url, "current")
    assert result.exit_code == 1
    assert result.stderr.startswith("libervia-cache: configuration: [pubsub_cache] db_url: ")
    assert says in result.stderr and len(result.stderr.splitlines()) == 1


def test_db_takes_a_relative_db_url_from_the_configuration_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    config = directory / "libervia-cache.conf"
    config.write_text("[pubsub_cache]\ndb_url = sqlite+aiosqlite:///data/cache.db\n")
    (directory / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert invoke("--config", str(config), "db", "upgrade").exit_code == 0
    assert (directory / "data" / "cache.db").exists()
    assert not (tmp_path / "data").exists()


def test_db_downgrade_to_an_unknown_revision_is_one_line_listing_the_known_ones(
    config: Path,
) -> None:
    assert invoke("--config", str(config), "db", "upgrade").exit_code == 0
    result = invoke("--config", str(config), "db", "downgrade", "9999")
    assert result.exit_code == 1
    assert "9999" in result.stderr and "(known: base, 0001" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "internal" not in result.stderr


def test_db_on_a_database_that_cannot_be_opened_is_one_line_with_exit_code_3(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not an SQLite database, not at all" * 100)
    result = invoke("db", "--db-url", f"sqlite+aiosqlite:///{broken}", "current")
    assert result.exit_code == 3
    assert result.stderr.startswith("libervia-cache: the cache database failed: ")
    assert len(result.stderr.splitlines()) == 1 and "internal" not in result.stderr


def test_a_socket_path_the_system_cannot_use_is_said_without_none(tmp_path: Path) -> None:
    config = tmp_path / "libervia-cache.conf"
    config.write_text(f"[daemon]\nsocket = {tmp_path / ('x' * 120) / 'daemon.sock'}\n")
    result = invoke("--config", str(config), "status")
    assert result.exit_code == 2
    assert "is unusable: AF_UNIX path too long" in result.stderr
    assert "None" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_profile_trying_again_says_why_its_last_attempt_failed() -> None:
    from libervia_cache.cli.status import render_status

    retrying = {
        "profile": "bob",
        "jid": "bob@example.org",
        "state": "connecting",
        "error": "connection refused",
        "failures": 4,
        "next_retry": None,
    }
    text = render_status({**DAEMON, "profiles": [retrying]}, CACHE_STATUS, 80)
    assert (
        "bob (bob@example.org): connecting (the last attempt failed: connection refused)"
        in " ".join(text.split())
    )
