"""The ``libervia-cache`` command without a daemon: help, arguments, exit codes, db."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from libervia_cache.backend.bridge import BridgeError
from libervia_cache.bridge_api import rsm_request, to_json
from libervia_cache.cli import main, parse_date, parse_order, parse_value

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


def test_db_commands_use_the_configured_database(config: Path, tmp_path: Path) -> None:
    result = invoke("--config", str(config), "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "upgrade: empty (no schema) -> 0002" in result.stdout
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


# --- bridge_api helpers ---------------------------------------------------------------------


def test_bridge_results_are_json_with_iso_dates() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    data = to_json({"created": when, "ids": ("a", "b"), "nested": [{"at": when}]})
    assert json.loads(json.dumps(data)) == {
        "created": "2026-01-01T00:00:00+00:00",
        "ids": ["a", "b"],
        "nested": [{"at": "2026-01-01T00:00:00+00:00"}],
    }


def test_a_bad_rsm_request_is_a_bad_request() -> None:
    assert rsm_request({"max": 5, "before": ""}) is not None
    for bad in ({"max": 5, "after": "a", "index": 2}, {"page": 1}, "max=5"):
        with pytest.raises(BridgeError) as caught:
            rsm_request(bad)  # type: ignore[arg-type]
        assert caught.value.kind == "bad_request"
