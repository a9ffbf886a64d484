"""``daemon``: run the reference daemon in the foreground.

Twisted, the backend and the daemon's configuration module (which validates the whole
file, with SQLAlchemy and Twisted) are imported when the command runs, not before:
``libervia-cache daemon --help`` stays as light as every other command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from libervia_cache.cli.app import Context, fail, pass_context
from libervia_cache.errors import EXIT_USER_ERROR

__all__ = ["daemon", "validated_setting"]


@click.command()
@click.option(
    "--log-level",
    metavar="LEVEL[,LOGGER=LEVEL...]",
    help="debug, info, warning or error, then LOGGER=LEVEL pairs for one logger "
    "(aiosqlite, alembic, sqlalchemy and twisted are at warning unless named); "
    "default: [daemon] log_level, else info (debug with --debug).",
)
@pass_context
def daemon(ctx: Context, log_level: str | None) -> None:
    """Run the daemon in the foreground (logs on stderr; stops on SIGINT/SIGTERM).

    At info, the log says what the daemon does: start, profiles (connected, or why not
    and when it tries again), synchronisations (started, done with counts and duration,
    redone and why); at debug, every request with where its answer came from.
    """
    # first: loading the configuration imports the plugins (they declare their keys),
    # and a module that imports twisted.internet.reactor would install the default one
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from libervia_cache.backend.config import ConfigError, load_config, parse_log_levels
    from libervia_cache.backend.runner import run_daemon, setup_logging

    try:
        levels = parse_log_levels(log_level) if log_level is not None else None
    except ValueError as error:
        fail(f"--log-level: {error}", EXIT_USER_ERROR)
    try:
        config = load_config(ctx.config_path)
    except ConfigError as error:
        fail(f"configuration: {error}", EXIT_USER_ERROR)
    if levels is None:
        levels = parse_log_levels("debug") if ctx.debug else config.log_levels
    setup_logging(levels)
    sys.exit(run_daemon(config, levels.text))


def validated_setting(
    config_path: Path | None, section: str, key: str, given: str | None = None
) -> Any:
    """The value of ``[section] key``, validated as the daemon validates it: ``given``
    (an option standing for the key, relative paths from the current directory), else the
    configuration file's (relative to the file), else the key's default. A configuration
    the daemon would refuse ends the command (exit 1). Imports the backend: for the
    commands that run the heavy parts (``db``)."""
    from libervia_cache.backend.config import ConfigError, load_config, parse_value

    try:
        if given is not None:
            return parse_value(section, key, given, Path.cwd())
        return load_config(config_path).get(section, key)
    except ConfigError as error:
        fail(f"configuration: {error}", EXIT_USER_ERROR)
    except KeyError:
        fail(f"configuration: no plugin declares [{section}] {key}", EXIT_USER_ERROR)
