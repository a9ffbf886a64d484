"""The root of the command: global options, the :class:`Context` every command gets, one-line
errors and exit codes.

Exit codes come from :mod:`libervia_cache.errors` (0 success, 1 user error, 2 daemon
unreachable, 3 server or internal error). Standard library and click only: everything a
client command needs to start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from libervia_cache.control import ControlClient
from libervia_cache.control.paths import ClientSettings, ConfigFileError, read_client_settings
from libervia_cache.errors import (
    EXIT_USER_ERROR,
    BridgeError,
    describe,
    exit_code,
    kind_of,
    one_line,
)

__all__ = [
    "CacheGroup",
    "Context",
    "fail",
    "json_option",
    "main",
    "pass_context",
    "profile_option",
]

F = TypeVar("F", bound=Callable[..., Any])


class CacheGroup(click.Group):
    """The root group: one exit-code policy and one-line errors for every command."""

    #: whether the running command was given ``--debug`` (set by the root callback)
    debug = False

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command, then exit: 0, or the code of the error (see the module)."""
        self.debug = False
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:  # click's code 2 is ours for "unreachable"
            command = _command_path(error.ctx)
            click.echo(
                f"{command}: {one_line(error.format_message())} (see: {command} --help)",
                err=True,
            )
            sys.exit(EXIT_USER_ERROR)
        except click.ClickException as error:
            click.echo(f"libervia-cache: {one_line(error.format_message())}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except click.Abort:
            click.echo("libervia-cache: aborted", err=True)
            sys.exit(EXIT_USER_ERROR)
        except BridgeError as error:  # only with --debug: Context.call handles it otherwise
            import traceback

            traceback.print_exc()
            sys.exit(exit_code(error.kind))
        except Exception as error:
            kind = kind_of(error)
            if self.debug:
                import traceback

                traceback.print_exc()
            elif kind == "internal":
                click.echo(
                    f"libervia-cache: internal error: {describe(error)} (--debug for details)",
                    err=True,
                )
            else:  # a known failure (a database that cannot be opened, say)
                click.echo(f"libervia-cache: {describe(error)}", err=True)
            sys.exit(exit_code(kind))
        sys.exit(result if isinstance(result, int) else 0)


def _command_path(ctx: click.Context | None) -> str:
    """``libervia-cache db current``: the command a usage error is about."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["libervia-cache", *reversed(names)])


def fail(message: str, code: int) -> NoReturn:
    """End the command with a one-line error on stderr."""
    click.echo(f"libervia-cache: {message}", err=True)
    sys.exit(code)


class Context:
    """What the global options give every command."""

    def __init__(self, config_path: Path | None, profile: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.profile_name = profile
        self.debug = debug
        self._settings: ClientSettings | None = None
        self._client: ControlClient | None = None
        #: for ``db``: what finds and checks its database URL (set by that command, which
        #: may load the daemon's configuration machinery; None: no database)
        self.db_url_resolver: Callable[[], str | None] | None = None
        self._db_url: str | None = None

    @property
    def settings(self) -> ClientSettings:
        """The socket path and database URL of the configuration file (a file that
        cannot be read ends the command, exit 1)."""
        if self._settings is None:
            try:
                self._settings = read_client_settings(self.config_path)
            except ConfigFileError as error:
                fail(f"configuration: {error}", EXIT_USER_ERROR)
        return self._settings

    @property
    def db_url(self) -> str | None:
        """For ``db``: the database URL :attr:`db_url_resolver` gives (None: the per-user
        default database), found once."""
        if self._db_url is None:
            url = self.db_url_resolver() if self.db_url_resolver is not None else None
            self._db_url = url or ""
        return self._db_url or None

    def call(
        self,
        method: str,
        params: dict[str, Any],
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """Call a bridge method of the daemon; a bridge error ends the command.

        The calls of one command share a connection (:meth:`close` ends it).
        """
        if self._client is None:
            self._client = ControlClient(self.settings.socket_path)
        try:
            return self._client.call(method, params, on_progress=on_progress)
        except BridgeError as error:
            if self.debug:
                raise
            fail(error.message, exit_code(error.kind))

    def call_optional(self, method: str, params: dict[str, Any]) -> Any:
        """:meth:`call` of a method the daemon may not have (None then)."""
        if self._client is None:
            self._client = ControlClient(self.settings.socket_path)
        try:
            return self._client.call(method, params)
        except BridgeError as error:
            if error.kind == "unknown_method":
                return None
            if self.debug:
                raise
            fail(error.message, exit_code(error.kind))

    def close(self) -> None:
        """Close the connection to the daemon, if any."""
        if self._client is not None:
            self._client.close()
            self._client = None


pass_context = click.make_pass_decorator(Context)


def json_option(function: F) -> F:
    """``--json``: one JSON document on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, nothing else."
    )(function)


def _set_profile(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    context = ctx.find_object(Context)
    if value and context is not None:
        context.profile_name = value


def profile_option(function: F) -> F:
    """``--profile`` after the command name, same as before it."""
    return click.option(
        "--profile",
        expose_value=False,
        callback=_set_profile,
        help="Profile (XMPP account) to use; default: the daemon's first one.",
    )(function)


@click.group(cls=CacheGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="LIBERVIA_CACHE_CONFIG",
    help="Configuration file (default: libervia-cache.conf in the XDG config dir).",
)
@click.option("--profile", help="Profile (XMPP account) to use; default: the daemon's first one.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="libervia-cache")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, profile: str | None, debug: bool) -> None:
    """Transparent, searchable cache of XMPP pubsub nodes.

    Exit codes: 0 success, 1 user error, 2 daemon unreachable, 3 server or internal error.
    """
    if isinstance(ctx.command, CacheGroup):
        ctx.command.debug = debug
    ctx.obj = Context(config_path, profile, debug)
    ctx.call_on_close(ctx.obj.close)
