"""The client's reading of the configuration agrees with the daemon's."""

from __future__ import annotations

from pathlib import Path

import pytest

from libervia_cache.backend.config import default_config_path as daemon_config_path
from libervia_cache.backend.config import default_socket_path as daemon_socket_path
from libervia_cache.backend.config import load_config
from libervia_cache.control.paths import (
    ConfigFileError,
    default_config_path,
    default_socket_path,
    read_client_settings,
)


@pytest.fixture
def xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def test_default_paths_are_the_daemons(xdg: Path) -> None:
    assert default_config_path() == daemon_config_path()
    assert default_config_path() == xdg / "config" / "libervia-cache" / "libervia-cache.conf"
    assert default_socket_path() == daemon_socket_path()
    assert default_socket_path() == xdg / "run" / "libervia-cache" / "daemon.sock"


def test_without_a_file_the_defaults_are_used(xdg: Path) -> None:
    settings = read_client_settings()
    assert settings.socket_path == default_socket_path()
    assert settings.db_url is None


@pytest.mark.parametrize("socket", ["daemon.sock", "run/../here.sock", "/abs/daemon.sock"])
def test_the_socket_path_is_the_one_the_daemon_listens_on(tmp_path: Path, socket: str) -> None:
    path = tmp_path / "libervia-cache.conf"
    path.write_text(f"[daemon]\nsocket = {socket}\n\n[pubsub_cache]\nstrategy = cache\n")
    assert read_client_settings(path).socket_path == load_config(path).socket_path


def test_the_database_url_is_read_as_given(tmp_path: Path) -> None:
    path = tmp_path / "libervia-cache.conf"
    path.write_text("[pubsub_cache]\ndb_url = sqlite+aiosqlite:////tmp/x.db\n")
    assert read_client_settings(path).db_url == "sqlite+aiosqlite:////tmp/x.db"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[daemon\nsocket = x\n", "File contains no section headers"),
        ("socket = x\n", "File contains no section headers"),
        ("[daemon]\nsocket =\n", "[daemon] socket: empty value"),
        (b"[daemon]\nsocket = \xff\n", "not a UTF-8 text file"),
    ],
)
def test_an_unusable_file_is_one_line_naming_it(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "libervia-cache.conf"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigFileError) as caught:
        read_client_settings(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        read_client_settings(tmp_path / "missing.conf")
