"""``daemon``: run the reference daemon in the foreground.

Twisted, the backend and the daemon's configuration module (which validates the whole
file, with SQLAlchemy and Twisted) are imported when the command runs, not before:
``libervia-cache daemon --help`` stays as light as every other command.
"""

from __future__ import annotations

import sys

import click

from libervia_cache.cli.app import Context, fail, pass_context
from libervia_cache.errors import EXIT_USER_ERROR

__all__ = ["daemon"]


@click.command()
@pass_context
def daemon(ctx: Context) -> None:
    """Run the daemon in the foreground (logs on stderr; stops on SIGINT/SIGTERM)."""
    import logging

    # first: loading the configuration imports the plugins (they declare their keys),
    # and a module that imports twisted.internet.reactor would install the default one
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from libervia_cache.backend.config import ConfigError, load_config
    from libervia_cache.backend.runner import run_daemon

    try:
        config = load_config(ctx.config_path)
    except ConfigError as error:
        fail(f"configuration: {error}", EXIT_USER_ERROR)
    logging.basicConfig(
        level=logging.DEBUG if ctx.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    sys.exit(run_daemon(config))
