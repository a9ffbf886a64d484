"""Where a client finds the daemon: the few configuration values the CLI needs.

The daemon reads and validates the whole configuration file
(``libervia_cache.backend.config``, which needs SQLAlchemy and Twisted to check URLs and
JIDs). A client only needs the control socket's path, and the ``db`` commands the
database URL, so this module reads just those, with the standard library, the same way
the daemon does: the same default file, no ``[DEFAULT]`` section, no interpolation,
relative paths relative to the file's directory. It does not check the rest of the
file; the daemon does that when it starts.

``platformdirs`` (light, but it pulls in ``tempfile``) is imported only when a default
path is needed.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "APP_NAME",
    "ClientSettings",
    "ConfigFileError",
    "default_config_path",
    "default_socket_path",
    "read_client_settings",
]

APP_NAME = "libervia-cache"


class ConfigFileError(ValueError):
    """The configuration file cannot be read; the message is one line naming it."""


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/libervia-cache/libervia-cache.conf`` (per platformdirs)."""
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / f"{APP_NAME}.conf"


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/libervia-cache/daemon.sock`` (per platformdirs).

    Without ``XDG_RUNTIME_DIR`` platformdirs falls back to ``/tmp/runtime-UID`` with a
    warning on stderr, which would break one-line output: it is silenced (the daemon
    does the same, so both agree on the fallback).
    """
    import warnings

    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_path(APP_NAME) / "daemon.sock"


@dataclass(frozen=True)
class ClientSettings:
    """What a client of the daemon takes from the configuration file."""

    #: the configuration file (it may not exist when it is the default one)
    path: Path
    #: ``[daemon] socket``
    socket_path: Path
    #: ``[pubsub_cache] db_url``; None: the per-user default database
    db_url: str | None


def _read(path: Path) -> configparser.ConfigParser:
    # the daemon's parser settings: no [DEFAULT] magic, no interpolation
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    try:
        with path.open(encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as e:
        raise ConfigFileError(f"cannot read configuration file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not a UTF-8 text file") from None
    except configparser.Error as e:
        raise ConfigFileError(f"{path}: {' '.join(e.message.split())}") from None
    return parser


def _value(parser: configparser.ConfigParser, path: Path, section: str, key: str) -> str | None:
    raw = parser.get(section, key, fallback=None)
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        raise ConfigFileError(f"{path}: [{section}] {key}: empty value")
    return text


def read_client_settings(path: Path | None = None) -> ClientSettings:
    """The control socket's path and the database URL, from the configuration file.

    Without ``path``, the default file is read if it exists, else the defaults are
    used. An explicitly given file must exist. Raises :class:`ConfigFileError` when the
    file is missing (explicit), unreadable or not an INI file.
    """
    if path is None:
        path = default_config_path()
        if not path.exists():
            return ClientSettings(path, default_socket_path(), None)
    elif not path.exists():
        raise ConfigFileError(f"configuration file {path} not found")
    path = path.absolute()
    parser = _read(path)
    socket = _value(parser, path, "daemon", "socket")
    return ClientSettings(
        path=path,
        socket_path=path.parent / Path(socket).expanduser() if socket else default_socket_path(),
        db_url=_value(parser, path, "pubsub_cache", "db_url"),
    )
