"""The CLI is a thin client: its client commands, ``--help`` included, load no heavy module.

Each check runs in a fresh interpreter, so that what this test process imported does not
count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: top-level packages a client command must never load
HEAVY = ("twisted", "sqlalchemy", "alembic", "tx_xmpp", "rich")

CLIENT_COMMANDS = ("get", "cache-get", "sync", "search", "purge", "reset", "status")

#: runs the CLI once per argument list given as JSON in argv[1], then prints the exit
#: codes and the heavy modules loaded
PROBE = textwrap.dedent(
    """
    import json, sys
    from libervia_cache.cli import main

    codes = []
    for args in json.loads(sys.argv[1]):
        try:
            main.main(args, prog_name="libervia-cache", standalone_mode=False)
        except SystemExit as done:
            codes.append(done.code)
    heavy = sorted({name.partition(".")[0] for name in sys.modules} & set(sys.argv[2:]))
    print(json.dumps({"codes": codes, "heavy": heavy}), file=sys.stderr)
    """
)


def probe(*runs: list[str]) -> dict[str, list[object]]:
    """Run the CLI with each argument list in a fresh interpreter; its exit codes and
    the heavy modules it loaded."""
    process = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(runs)), *HEAVY],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, list[object]] = json.loads(process.stderr.strip().splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert probe() == {"codes": [], "heavy": []}


def test_the_help_of_every_command_loads_no_heavy_module() -> None:
    runs = [["--help"], *([c, "--help"] for c in CLIENT_COMMANDS), ["db", "--help"]]
    runs += [["daemon", "--help"], ["install-service", "--help"]]
    assert probe(*runs) == {"codes": [0] * len(runs), "heavy": []}


def test_printing_the_service_unit_loads_no_heavy_module() -> None:
    assert probe(["install-service", "--print"]) == {"codes": [0], "heavy": []}


@pytest.mark.parametrize("command", ["status", "get"])
def test_a_command_against_a_missing_daemon_loads_no_heavy_module(
    command: str, tmp_path: Path
) -> None:
    config = tmp_path / "libervia-cache.conf"
    config.write_text(f"[daemon]\nsocket = {tmp_path / 'nobody.sock'}\n")
    arguments = {"status": [], "get": ["pubsub.example.org", "node", "--json"]}[command]
    assert probe(["--config", str(config), command, *arguments]) == {"codes": [2], "heavy": []}


def test_a_command_with_the_default_configuration_loads_no_heavy_module(tmp_path: Path) -> None:
    # no --config: the default file and socket come from platformdirs
    process = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([["status"]]), *HEAVY],
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        },
    )
    result = json.loads(process.stderr.strip().splitlines()[-1])
    assert result == {"codes": [2], "heavy": []}
    assert str(tmp_path / "run" / "libervia-cache" / "daemon.sock") in process.stderr
