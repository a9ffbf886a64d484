"""The daemon's INI configuration, validated on load (implements :class:`hostapi.Config`).

Every key the daemon knows is declared once in :data:`SCHEMA` (section kind -> key ->
parser and default), merged with the sections its plugins declare
(``PLUGIN_INFO["config"]``, see :class:`libervia_cache.hostapi.ConfigKey`); anything
else in the file is an error. A :class:`ConfigError`
message is one line naming the file, ``[section] key`` and what is wrong, so that the
daemon and the CLI can print it as is::

    [daemon]
    socket = /run/user/1000/libervia-cache/daemon.sock
    # debug, info (default), warning or error; then LOGGER=LEVEL to change one logger
    log_level = info

    # a plugin's section: the cache plugin declares [pubsub_cache]
    [pubsub_cache]
    strategy = cache

    [profile alice]
    jid = alice@example.org
    password = secret
    # default: the JID's domain
    host = xmpp.example.org
    port = 5222
    # required, optional or off
    tls = required
    # certificate to trust, relative to this file
    tls_ca = ca.pem

Comments are whole lines (``#`` or ``;``): there are no inline comments, so a password
may hold any character.
Relative paths (``socket``, ``tls_ca``, and those of plugins' keys) are relative to the
directory of the file.
"""

from __future__ import annotations

import configparser
import enum
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from libervia_cache.hostapi import ConfigKey

__all__ = [
    "APP_NAME",
    "LOG_LEVELS",
    "QUIET_LOGGERS",
    "SCHEMA",
    "ConfigError",
    "DaemonConfig",
    "LogLevels",
    "ProfileConfig",
    "TLSPolicy",
    "default_config_path",
    "default_socket_path",
    "load_config",
    "parse_log_levels",
    "parse_value",
]

APP_NAME = "libervia-cache"
PROFILE_PREFIX = "profile"


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line naming the culprit."""


class TLSPolicy(enum.StrEnum):
    """``[profile NAME] tls``: how the client connection uses TLS."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    OFF = "off"


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/libervia-cache/libervia-cache.conf`` (per platformdirs)."""
    return platformdirs.user_config_path(APP_NAME) / f"{APP_NAME}.conf"


def default_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/libervia-cache/daemon.sock`` (per platformdirs).

    Without ``XDG_RUNTIME_DIR`` (no login session, e.g. root in a container) platformdirs
    falls back to ``/tmp/runtime-UID`` with a warning on stderr; the fallback is fine
    for us (the directory is created 0700), the warning would break one-line output.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_path(APP_NAME) / "daemon.sock"


@dataclass(frozen=True)
class ProfileConfig:
    """One ``[profile NAME]`` section: an XMPP account."""

    name: str
    jid: JID
    password: str = field(repr=False)
    host: str
    port: int
    tls: TLSPolicy
    tls_ca: Path | None


# --- value parsers: (raw string, directory of the config file) -> value, or ValueError


def _path(raw: str, base: Path) -> Path:
    return base / Path(raw).expanduser()


def _choice(enum_class: type[enum.StrEnum]) -> Callable[[str, Path], Any]:
    def parse(raw: str, base: Path) -> Any:
        try:
            return enum_class(raw.lower())
        except ValueError:
            choices = ", ".join(member.value for member in enum_class)
            raise ValueError(f"{raw!r} is not one of {choices}") from None

    return parse


def _int_range(low: int, high: int | None = None) -> Callable[[str, Path], int]:
    def parse(raw: str, base: Path) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            wanted = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"{value} is out of range (must be {wanted})")
        return value

    return parse


def _bare_jid(raw: str, base: Path) -> JID:
    try:
        jid = JID(raw)
    except InvalidFormat as e:
        raise ValueError(f"{raw!r} is not a valid JID ({e})") from None
    if not jid.user:
        raise ValueError(f"{raw!r} has no user part (expected user@domain)")
    if jid.resource:
        raise ValueError(f"{raw!r} is not a bare JID (remove the /resource)")
    return jid


def _text(raw: str, base: Path) -> str:
    return raw


def _pem_file(raw: str, base: Path) -> Path:
    path = _path(raw, base)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not an existing file")
    try:
        content = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{str(path)!r} cannot be read ({e.strerror or e})") from None
    if b"-----BEGIN CERTIFICATE-----" not in content:
        raise ValueError(f"{str(path)!r} holds no PEM certificate")
    return path


#: level names of ``log_level`` -> logging levels
LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

#: libraries whose logs are noise to a user (aiosqlite logs every statement at DEBUG,
#: Alembic its context at every start, Twisted each connection attempt): at WARNING
#: unless ``log_level`` names them
QUIET_LOGGERS = ("aiosqlite", "alembic", "sqlalchemy", "twisted")


@dataclass(frozen=True)
class LogLevels:
    """``[daemon] log_level`` or ``--log-level``: a level, then ``LOGGER=LEVEL`` pairs.

    ``debug`` is every log of the daemon and its plugins (each request, with hit or miss
    reason), ``info`` (the default) what it does (start, profiles, synchronisations),
    ``warning`` and ``error`` only problems. ``debug,aiosqlite=debug`` also shows a
    library's logs (``aiosqlite``, ``alembic``, ``sqlalchemy``, ``twisted`` are at
    ``warning`` otherwise).
    """

    level: int = LOG_LEVELS["info"]
    #: logger name -> level, as given
    loggers: tuple[tuple[str, int], ...] = ()
    text: str = "info"

    def __str__(self) -> str:
        return self.text

    def levels(self) -> dict[str, int]:
        """Logger name -> level, the quiet libraries included ("" is the root)."""
        result = {name: max(self.level, LOG_LEVELS["warning"]) for name in QUIET_LOGGERS}
        result[""] = self.level
        result.update(self.loggers)
        return result


def _level(raw: str, what: str) -> int:
    try:
        return LOG_LEVELS[raw.strip().lower()]
    except KeyError:
        choices = ", ".join(LOG_LEVELS)
        raise ValueError(f"{what}{raw.strip()!r} is not a log level ({choices})") from None


def parse_log_levels(raw: str, base: Path | None = None) -> LogLevels:
    """``LEVEL[,LOGGER=LEVEL...]`` (e.g. ``info,libervia_cache.plugin.sync=debug``);
    ``ValueError`` with a one-line reason."""
    parts = [part.strip() for part in raw.split(",")]
    if not parts or not parts[0] or "=" in parts[0]:
        raise ValueError(f"{raw!r}: expected LEVEL[,LOGGER=LEVEL...], e.g. info or debug")
    level = _level(parts[0], "")
    loggers: list[tuple[str, int]] = []
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{part!r}: expected LOGGER=LEVEL, e.g. aiosqlite=debug")
        loggers.append((name.strip(), _level(value, f"{name.strip()}: ")))
    return LogLevels(level, tuple(loggers), ",".join(parts).lower())


_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One configuration key: how to parse it and its default.

    ``default`` is a value, :data:`_REQUIRED`, or with ``computed`` a function of the
    values of the section parsed so far (keys are parsed in declaration order).
    """

    parse: Callable[[str, Path], Any]
    default: Any = None
    computed: bool = False

    def default_value(self, values: Mapping[str, Any]) -> Any:
        return self.default(values) if self.computed else self.default


#: Section kind -> key -> :class:`Key`: the daemon's own sections. ``profile`` is the
#: kind of ``[profile NAME]``. Plugins add theirs (:func:`plugin_schema`).
SCHEMA: dict[str, dict[str, Key]] = {
    "daemon": {
        "socket": Key(_path, lambda values: default_socket_path(), computed=True),
        "log_level": Key(parse_log_levels, LogLevels()),
    },
    PROFILE_PREFIX: {
        "jid": Key(_bare_jid, _REQUIRED),
        "password": Key(_text, _REQUIRED),
        "host": Key(_text, lambda values: values["jid"].host, computed=True),
        "port": Key(_int_range(1, 65535), 5222),
        "tls": Key(_choice(TLSPolicy), TLSPolicy.REQUIRED),
        "tls_ca": Key(_pem_file, None),
    },
}

Schema = dict[str, dict[str, Key]]


def plugin_schema(declared: Mapping[str, Sequence[ConfigKey]]) -> Schema:
    """The sections plugins declare (``{section: (ConfigKey, ...)}``) as schema entries."""
    return {
        section: {key.name: Key(key.parse, key.default) for key in keys}
        for section, keys in declared.items()
    }


def installed_plugins_config() -> dict[str, tuple[ConfigKey, ...]]:
    """The configuration sections declared by the installed plugins (entry points)."""
    from libervia_cache.backend.plugins import declared_config

    return declared_config()


def _merge(declared: Mapping[str, Sequence[ConfigKey]]) -> Schema:
    schema = dict(SCHEMA)
    for section, keys in plugin_schema(declared).items():
        if section in schema:
            raise ConfigError(
                f"a plugin declares configuration section [{section}], which is taken"
            )
        schema[section] = keys
    return schema


def _section_kind(schema: Schema, section: str) -> str | None:
    """The schema kind of a section name, or None if it is not one."""
    if section in schema and section != PROFILE_PREFIX:
        return section
    kind, _, name = section.partition(" ")
    if kind == PROFILE_PREFIX and name.strip() and name == name.strip():
        return PROFILE_PREFIX
    return None


class DaemonConfig:
    """The validated configuration: every known key has a value (given or default)."""

    def __init__(self, path: Path, sections: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self._sections = sections
        self.profiles: dict[str, ProfileConfig] = {
            section.partition(" ")[2]: ProfileConfig(name=section.partition(" ")[2], **values)
            for section, values in sections.items()
            if section.startswith(PROFILE_PREFIX + " ")
        }

    @property
    def socket_path(self) -> Path:
        """Path of the control socket (``[daemon] socket``)."""
        path: Path = self.get("daemon", "socket")
        return path

    @property
    def log_levels(self) -> LogLevels:
        """Logging levels (``[daemon] log_level``)."""
        levels: LogLevels = self.get("daemon", "log_level")
        return levels

    @property
    def default_profile(self) -> str:
        """Name of the first profile of the file (the CLI's default)."""
        if not self.profiles:
            raise ConfigError(f"no [profile NAME] section in {self.path}")
        return next(iter(self.profiles))

    def profile(self, name: str) -> ProfileConfig:
        """The profile called ``name``; :class:`ConfigError` listing known ones if none."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(self.profiles) or "none"
            raise ConfigError(
                f"unknown profile {name!r} (known profiles in {self.path}: {known})"
            ) from None

    def get(self, section: str, key: str) -> Any:
        """The validated value of ``[section] key`` (its default when not in the file).

        ``section`` is ``daemon``, a plugin's section or ``profile NAME`` (an existing
        profile). Raises ``KeyError`` for a key or section the daemon does not know.
        """
        if section in self._sections and key in self._sections[section]:
            return self._sections[section][key]
        raise KeyError(f"unknown configuration key [{section}] {key}")


def _parse_section(
    schema: Schema, path: Path, section: str, kind: str, raw: Mapping[str, str]
) -> dict[str, Any]:
    keys = schema[kind]
    for key in raw:
        if key not in keys:
            known = ", ".join(keys)
            raise ConfigError(f"{path}: [{section}] {key}: unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    for key, spec in keys.items():
        if key in raw:
            text = raw[key].strip()
            if not text:
                raise ConfigError(f"{path}: [{section}] {key}: empty value")
            try:
                values[key] = spec.parse(text, path.parent)
            except ValueError as e:
                raise ConfigError(f"{path}: [{section}] {key}: {e}") from None
        elif spec.default is _REQUIRED:
            raise ConfigError(f"{path}: [{section}] {key}: missing (this key is required)")
        else:
            values[key] = spec.default_value(values)
    return values


def _read(path: Path) -> configparser.ConfigParser:
    # No [DEFAULT] magic: it would leak keys into every section.
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    try:
        with path.open(encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except configparser.Error as e:
        raise ConfigError(f"{path}: {' '.join(e.message.split())}") from None
    return parser


def load_config(
    path: Path | None = None,
    plugins_config: Mapping[str, Sequence[ConfigKey]] | None = None,
) -> DaemonConfig:
    """Read and validate the configuration file.

    ``plugins_config``: the sections plugins declare (default: those of the installed
    plugins). Without ``path``, the default file (:func:`default_config_path`) is read
    if it exists, else every key has its default and there is no profile. An explicitly
    given file must exist. Raises :class:`ConfigError` (one line) on any problem.
    """
    schema = _merge(installed_plugins_config() if plugins_config is None else plugins_config)
    if path is None:
        path = default_config_path()
        if not path.exists():
            return DaemonConfig(path, _defaults(schema, path))
    elif not path.exists():
        raise ConfigError(f"configuration file {path} not found")
    path = path.absolute()
    parser = _read(path)
    sections = _defaults(schema, path)
    for section in parser.sections():
        kind = _section_kind(schema, section)
        if kind is None:
            expected = ", ".join(f"[{name}]" for name in schema if name != PROFILE_PREFIX)
            raise ConfigError(
                f"{path}: [{section}]: unknown section (expected {expected} or [profile NAME])"
            )
        sections[section] = _parse_section(schema, path, section, kind, parser[section])
    return DaemonConfig(path, sections)


def _defaults(schema: Schema, path: Path) -> dict[str, dict[str, Any]]:
    """The values of the global sections when the file does not set them."""
    return {
        kind: _parse_section(schema, path, kind, kind, {})
        for kind in schema
        if kind != PROFILE_PREFIX
    }


def parse_value(
    section: str,
    key: str,
    raw: str,
    base: Path,
    plugins_config: Mapping[str, Sequence[ConfigKey]] | None = None,
) -> Any:
    """``raw`` parsed as the value of ``[section] key`` would be in a configuration file
    (relative paths from ``base``): how a command validates an option that stands for a
    key (``db --db-url``). Raises :class:`ConfigError` naming the key."""
    schema = _merge(installed_plugins_config() if plugins_config is None else plugins_config)
    spec = schema.get(section, {}).get(key)
    if spec is None:
        raise ConfigError(f"unknown configuration key [{section}] {key}")
    try:
        return spec.parse(raw.strip(), base)
    except ValueError as e:
        raise ConfigError(f"[{section}] {key}: {e}") from None
