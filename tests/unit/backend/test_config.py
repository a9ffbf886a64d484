"""Configuration file: every key, its default, and the one-line error of each mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.config import (
    ConfigError,
    DaemonConfig,
    ProfileConfig,
    TLSPolicy,
    default_config_path,
    default_socket_path,
    load_config,
)
from libervia_cache.hostapi import ConfigKey, integer
from libervia_cache.plugin.settings import CacheStrategy

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PROFILE = "[profile alice]\njid = alice@example.org\npassword = secret\n"


@pytest.fixture(autouse=True)
def xdg_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-runtime"))


def write(tmp_path: Path, text: str, name: str = "test.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> DaemonConfig:
    return load_config(write(tmp_path, text))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    message = str(raised.value)
    assert "\n" not in message
    return message


# --- file location


def test_default_paths_follow_xdg(tmp_path: Path) -> None:
    assert default_config_path() == tmp_path / "xdg-config/libervia-cache/libervia-cache.conf"
    assert default_socket_path() == tmp_path / "xdg-runtime/libervia-cache/daemon.sock"


def test_missing_default_file_gives_defaults_and_no_profiles(tmp_path: Path) -> None:
    config = load_config()
    assert config.path == default_config_path()
    assert config.profiles == {}
    assert config.socket_path == default_socket_path()
    assert config.get("pubsub_cache", "strategy") == "cache"


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    default_config_path().parent.mkdir(parents=True)
    default_config_path().write_text(PROFILE)
    assert list(load_config().profiles) == ["alice"]


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.conf")


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_syntax_error_is_one_line_naming_the_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, "jid = orphan\n")
    assert "test.conf" in message


def test_duplicate_section_is_an_error(tmp_path: Path) -> None:
    assert "daemon" in error_of(tmp_path, "[daemon]\n[daemon]\n")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    assert "strategy" in error_of(tmp_path, "[pubsub_cache]\nstrategy=cache\nstrategy=cache\n")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.profiles == {}
    assert config.get("pubsub_cache", "cache_limit") == 5000


# --- [daemon]


def test_socket_defaults_to_xdg_runtime_dir(tmp_path: Path) -> None:
    assert load(tmp_path, "[daemon]\n").socket_path == default_socket_path()


def test_socket_absolute_path(tmp_path: Path) -> None:
    config = load(tmp_path, "[daemon]\nsocket = /tmp/x/d.sock\n")
    assert config.socket_path == Path("/tmp/x/d.sock")
    assert config.get("daemon", "socket") == Path("/tmp/x/d.sock")


def test_socket_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    assert load(tmp_path, "[daemon]\nsocket = run/d.sock\n").socket_path == tmp_path / "run/d.sock"


def test_socket_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load(tmp_path, "[daemon]\nsocket = ~/d.sock\n").socket_path == tmp_path / "home/d.sock"


def test_empty_value_is_an_error(tmp_path: Path) -> None:
    assert "[daemon] socket: empty value" in error_of(tmp_path, "[daemon]\nsocket =\n")


def test_unknown_daemon_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[daemon]\nsockett = x\n")
    assert "[daemon] sockett: unknown key" in message
    assert "socket" in message


# --- [pubsub_cache]


def test_pubsub_cache_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.get("pubsub_cache", "strategy") is CacheStrategy.CACHE
    assert config.get("pubsub_cache", "db_url") is None
    assert config.get("pubsub_cache", "cache_limit") == 5000
    assert config.get("pubsub_cache", "progress_deadline") == 21600


@pytest.mark.parametrize("value", ["cache", "no_cache", "NO_CACHE"])
def test_strategy_values(tmp_path: Path, value: str) -> None:
    config = load(tmp_path, f"[pubsub_cache]\nstrategy = {value}\n")
    assert config.get("pubsub_cache", "strategy") == value.lower()


def test_bad_strategy_is_an_error_listing_choices(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[pubsub_cache]\nstrategy = sometimes\n")
    assert "[pubsub_cache] strategy: 'sometimes' is not one of cache, no_cache" in message


def test_db_url(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:////var/lib/cache.db"
    assert load(tmp_path, f"[pubsub_cache]\ndb_url = {url}\n").get("pubsub_cache", "db_url") == url


def test_a_relative_db_url_is_relative_to_the_configuration_file(tmp_path: Path) -> None:
    config = load(tmp_path, "[pubsub_cache]\ndb_url = sqlite+aiosqlite:///data/cache.db\n")
    assert config.get("pubsub_cache", "db_url") == f"sqlite+aiosqlite:///{tmp_path}/data/cache.db"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "is not a database URL"),
        ("sqlite:////var/lib/cache.db", "use sqlite+aiosqlite:///PATH"),
        ("postgresql://localhost/cache", "use sqlite+aiosqlite:///PATH"),
    ],
)
def test_bad_db_url_is_an_error(tmp_path: Path, url: str, problem: str) -> None:
    message = error_of(tmp_path, f"[pubsub_cache]\ndb_url = {url}\n")
    assert "[pubsub_cache] db_url:" in message
    assert problem in message


@pytest.mark.parametrize("key", ["cache_limit", "progress_deadline"])
def test_positive_integer_keys(tmp_path: Path, key: str) -> None:
    assert load(tmp_path, f"[pubsub_cache]\n{key} = 12\n").get("pubsub_cache", key) == 12


@pytest.mark.parametrize("key", ["cache_limit", "progress_deadline"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "out of range"),
        ("-3", "out of range"),
        ("ten", "not an integer"),
        ("1.5", "not an integer"),
    ],
)
def test_bad_positive_integer_is_an_error(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    message = error_of(tmp_path, f"[pubsub_cache]\n{key} = {value}\n")
    assert f"[pubsub_cache] {key}:" in message
    assert problem in message


def test_unknown_pubsub_cache_key_is_an_error(tmp_path: Path) -> None:
    assert "[pubsub_cache] limit: unknown key" in error_of(tmp_path, "[pubsub_cache]\nlimit = 1\n")


# --- sections


def test_the_daemon_knows_the_sections_its_plugins_declare_and_no_other(tmp_path: Path) -> None:
    declared = {"my_plugin": (ConfigKey("depth", integer(1, 9), 3, "how deep"),)}
    path = write(tmp_path, "[my_plugin]\ndepth = 7\n")
    assert load_config(path, plugins_config=declared).get("my_plugin", "depth") == 7
    assert load_config(write(tmp_path, "", "empty.conf"), declared).get("my_plugin", "depth") == 3
    with pytest.raises(ConfigError, match=r"\[my_plugin\] depth: 12 is out of range"):
        load_config(write(tmp_path, "[my_plugin]\ndepth = 12\n"), plugins_config=declared)
    with pytest.raises(ConfigError, match=r"\[pubsub_cache\]: unknown section"):
        load_config(write(tmp_path, "[pubsub_cache]\n"), plugins_config=declared)


@pytest.mark.parametrize("section", ["daemons", "DEFAULT", "profile", "profile ", "cache"])
def test_unknown_section_is_an_error(tmp_path: Path, section: str) -> None:
    message = error_of(tmp_path, f"[{section}]\n")
    assert f"[{section}]: unknown section" in message


def test_section_names_are_case_sensitive_keys_are_not(tmp_path: Path) -> None:
    assert "unknown section" in error_of(tmp_path, "[Daemon]\n")
    assert (
        load(tmp_path, "[pubsub_cache]\nCache_Limit = 3\n").get("pubsub_cache", "cache_limit") == 3
    )


def test_get_of_unknown_key_is_a_key_error(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    with pytest.raises(KeyError):
        config.get("pubsub_cache", "nope")
    with pytest.raises(KeyError):
        config.get("nope", "socket")


def test_comments_are_whole_lines_so_passwords_keep_hashes(tmp_path: Path) -> None:
    config = load(tmp_path, f"# comment\n; other\n{PROFILE}".replace("secret", "se #cret ;x"))
    assert config.profile("alice").password == "se #cret ;x"


def test_percent_signs_are_not_interpolated(tmp_path: Path) -> None:
    config = load(tmp_path, PROFILE.replace("secret", "100%(x)s"))
    assert config.profile("alice").password == "100%(x)s"


# --- [profile NAME]


def test_profile_minimal_with_defaults(tmp_path: Path) -> None:
    profile = load(tmp_path, PROFILE).profile("alice")
    assert profile == ProfileConfig(
        name="alice",
        jid=JID("alice@example.org"),
        password="secret",
        host="example.org",
        port=5222,
        tls=TLSPolicy.REQUIRED,
        tls_ca=None,
    )


def test_profile_password_is_not_in_repr(tmp_path: Path) -> None:
    assert "secret" not in repr(load(tmp_path, PROFILE).profile("alice"))


def test_profile_all_keys(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs/ca.pem").write_text(PEM)
    config = load(
        tmp_path,
        PROFILE + "host = 127.0.0.1\nport = 15222\ntls = optional\ntls_ca = certs/ca.pem\n",
    )
    profile = config.profile("alice")
    assert (profile.host, profile.port, profile.tls) == ("127.0.0.1", 15222, "optional")
    assert profile.tls_ca == tmp_path / "certs/ca.pem"
    assert config.get("profile alice", "port") == 15222


def test_profiles_keep_file_order_and_first_is_default(tmp_path: Path) -> None:
    text = PROFILE.replace("alice", "zed") + PROFILE + PROFILE.replace("alice", "bob")
    config = load(tmp_path, text)
    assert list(config.profiles) == ["zed", "alice", "bob"]
    assert config.default_profile == "zed"


def test_no_profile_means_no_default_profile(tmp_path: Path) -> None:
    config = load(tmp_path, "[daemon]\n")
    with pytest.raises(ConfigError, match=r"no \[profile NAME\] section in .*test.conf"):
        _ = config.default_profile


def test_unknown_profile_lists_known_ones(tmp_path: Path) -> None:
    config = load(tmp_path, PROFILE + PROFILE.replace("alice", "bob"))
    with pytest.raises(ConfigError, match=r"unknown profile 'carol'.*alice, bob"):
        config.profile("carol")
    with pytest.raises(ConfigError, match=r"known profiles.*none"):
        load(tmp_path, "").profile("carol")


def test_profile_names_may_hold_spaces(tmp_path: Path) -> None:
    config = load(tmp_path, PROFILE.replace("[profile alice]", "[profile work account]"))
    assert config.profile("work account").name == "work account"


@pytest.mark.parametrize("key", ["jid", "password"])
def test_profile_required_keys(tmp_path: Path, key: str) -> None:
    text = "\n".join(line for line in PROFILE.splitlines() if not line.startswith(key))
    assert f"[profile alice] {key}: missing" in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("jid", "problem"),
    [
        ("example.org", "no user part"),
        ("alice@example.org/phone", "not a bare JID"),
        ("alice@", "not a valid JID"),
        ("a@b@c d", "not a valid JID"),
    ],
)
def test_bad_jid_is_an_error(tmp_path: Path, jid: str, problem: str) -> None:
    message = error_of(tmp_path, PROFILE.replace("alice@example.org", jid))
    assert "[profile alice] jid:" in message
    assert problem in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [("0", "out of range"), ("65536", "out of range"), ("http", "not an integer")],
)
def test_bad_port_is_an_error(tmp_path: Path, value: str, problem: str) -> None:
    message = error_of(tmp_path, PROFILE + f"port = {value}\n")
    assert "[profile alice] port:" in message
    assert problem in message


@pytest.mark.parametrize("value", ["1", "65535"])
def test_port_bounds_are_accepted(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, PROFILE + f"port = {value}\n").profile("alice").port == int(value)


@pytest.mark.parametrize("value", ["required", "optional", "off"])
def test_tls_values(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, PROFILE + f"tls = {value}\n").profile("alice").tls == value


def test_bad_tls_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, PROFILE + "tls = yes\n")
    assert "[profile alice] tls: 'yes' is not one of required, optional, off" in message


def test_tls_ca_missing_file_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, PROFILE + "tls_ca = nope.pem\n")
    assert "[profile alice] tls_ca:" in message
    assert "not an existing file" in message


def test_tls_ca_not_pem_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("hello")
    assert "no PEM certificate" in error_of(tmp_path, PROFILE + "tls_ca = ca.pem\n")


def test_tls_ca_absolute_path(tmp_path: Path) -> None:
    ca = tmp_path / "elsewhere.pem"
    ca.write_text(PEM)
    assert load(tmp_path, PROFILE + f"tls_ca = {ca}\n").profile("alice").tls_ca == ca


def test_unknown_profile_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, PROFILE + "resource = phone\n")
    assert "[profile alice] resource: unknown key" in message
    assert "jid, password, host, port, tls, tls_ca" in message
