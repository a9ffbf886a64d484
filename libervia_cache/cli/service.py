"""``install-service``: a systemd user unit that runs the daemon.

The unit runs ``libervia-cache daemon`` with this very installation (the console script
or ``python -m libervia_cache`` of the running interpreter, so a virtualenv needs no
activation) and the configuration file given with ``--config``, if any. systemd restarts
it when it fails, except when it exits with 1 (a configuration it refuses, or another
daemon on the same socket or database: restarting would not help). It is a
``Type=notify`` service: the daemon tells systemd when it is ready, and its log goes to
the journal in the journal's form (see :mod:`libervia_cache.backend.runner`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from libervia_cache.cli.app import Context, fail, json_option, pass_context
from libervia_cache.cli.output import print_json
from libervia_cache.errors import EXIT_USER_ERROR

__all__ = ["UNIT_NAME", "install_service", "unit_file", "unit_path"]

UNIT_NAME = "libervia-cache.service"

UNIT_TEMPLATE = """\
[Unit]
Description=libervia-cache: transparent cache of XMPP pubsub nodes

[Service]
Type=notify
ExecStart={exec_start}
Restart=on-failure
RestartSec=10
# exit code 1: a configuration the daemon refuses, or another daemon on the same socket
# or database; restarting would not help (see: journalctl --user -u libervia-cache)
RestartPreventExitStatus=1

[Install]
WantedBy=default.target
"""


def unit_path() -> Path:
    """``$XDG_CONFIG_HOME/systemd/user/libervia-cache.service`` (``~/.config`` by
    default): where systemd looks for a user's own units."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def _systemd_quote(argument: str) -> str:
    """One ``ExecStart`` argument: quoted when needed; ``%`` and ``$`` escaped (systemd
    would expand them)."""
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def daemon_command(config_path: Path | None) -> list[str]:
    """The command line of the daemon, with this installation of libervia-cache."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "libervia-cache" and script.exists():
        command = [str(script.absolute())]
    else:
        command = [sys.executable, "-m", "libervia_cache"]
    if config_path is not None:
        command += ["--config", str(config_path.expanduser().absolute())]
    return [*command, "daemon"]


def unit_file(config_path: Path | None) -> str:
    """The text of the unit."""
    exec_start = " ".join(_systemd_quote(argument) for argument in daemon_command(config_path))
    return UNIT_TEMPLATE.format(exec_start=exec_start)


@click.command("install-service")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--force", is_flag=True, help="Replace an existing unit file.")
@json_option
@pass_context
def install_service(ctx: Context, print_only: bool, force: bool, as_json: bool) -> None:
    """Write a systemd user unit running the daemon (restarted when it fails).

    The unit goes to ~/.config/systemd/user/libervia-cache.service and runs this
    installation of libervia-cache with the configuration file given by --config (else
    the default one). Then: systemctl --user daemon-reload; systemctl --user enable
    --now libervia-cache. Its log: journalctl --user -u libervia-cache.
    """
    text = unit_file(ctx.config_path)
    path = unit_path()
    if print_only:
        if as_json:
            print_json({"path": None, "written": False, "unit": text})
        else:
            click.echo(text, nl=False)
        return
    if path.exists() and not force:
        fail(f"{path} exists: --force replaces it (--print shows the new one)", EXIT_USER_ERROR)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}", EXIT_USER_ERROR)
    if as_json:
        print_json({"path": str(path), "written": True, "unit": text})
        return
    click.echo(f"wrote {path}")
    click.echo("to start it now and at every login:")
    click.echo("  systemctl --user daemon-reload")
    click.echo("  systemctl --user enable --now libervia-cache")
    click.echo("its log: journalctl --user -u libervia-cache")
