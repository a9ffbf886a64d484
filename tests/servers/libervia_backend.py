"""The real Libervia backend for tests and benchmarks: installed, started, driven.

Installation (:func:`ensure_installed`), as ``../shared/LIBERVIA.md`` measured it, with
no change to the system: Debian trixie's ``libervia-backend``, ``python3-wokkel`` and
``libervia-cli`` are downloaded with apt into a private directory (the system's own
Debian mirror, a private package list) and unpacked into one tree; a venv holds the
pinned Python packages they need, plus libervia-cache's own dependencies. It is built
once into ``~/.cache/libervia-cache-tests/`` (``LIBERVIA_CACHE_TEST_LIBERVIA_DIR``
elsewhere), about two minutes from zero, and reused; each run installs the checkout
under test into that venv (editable, a few seconds, only when it points elsewhere).

A backend (:class:`LiberviaBackend`) runs as a process of that venv, isolated in a
directory of its own (``HOME`` and the XDG directories, ``libervia.conf``, its database,
its logs, its PB bridge socket). ``cache`` chooses which pubsub cache it runs:
``"libervia-cache"`` (through ``python -m libervia_cache.hosts.libervia``'s launcher)
or ``"stock"`` (Libervia's own, as ``libervia-backend`` runs it). Both load the test
probe (:mod:`tests.harness.libervia`), a plugin that measures from inside. Tests talk to
it as Libervia's frontends do, over its Perspective Broker bridge (:class:`PBBridge`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor
from twisted.spread import pb

from tests.servers.base import ServerError, pid_alive, stop_pid

if TYPE_CHECKING:
    from tests.servers.base import XMPPServer

#: the repository's root (the checkout under test)
CHECKOUT = Path(__file__).resolve().parents[2]

#: Debian packages, pinned to the versions LIBERVIA.md measured
SUITE = "trixie"
PACKAGES = {
    "libervia-backend": "0.9.0~hg4352-1",
    "libervia-cli": "0.9.0~hg4352-1",
    "python3-wokkel": "18.0.0-5",
}
#: Python packages of the venv, pinned to trixie's versions (LIBERVIA.md), and what
#: libervia-cache needs beyond them
REQUIREMENTS = (
    "Twisted[tls]==24.11.0",
    "SQLAlchemy==2.0.40",
    "alembic==1.13.2",
    "aiosqlite==0.21.0",
    "lxml==5.4.0",
    "shortuuid==1.0.13",
    "pydantic==2.10.6",
    "treq==24.9.1",
    "cryptography==43.0.0",
    "pyOpenSSL==25.0.0",
    "xmlschema==3.4.5",
    "emoji==2.14.1",
    "babel==2.17.0",
    "python-dateutil==2.9.0",
    "pyxdg==0.28",
    "pillow==11.1.0",
    "service-identity==24.2.0",
    "zope.interface==7.2",
    "idna==3.10",
    "html2text==2025.4.15",
    "markdown==3.7",
    "jinja2==3.1.6",
    "pyyaml==6.0.2",
    "mutagen==1.47.0",
    "rich==13.9.4",
    "pygments==2.18.0",
    "prompt-toolkit==3.0.51",
    "progressbar2",
    "lxml-html-clean==0.4.4",
    "setuptools-scm",
    "pycryptodome==3.20.0",
    "txdbus==1.1.0",
    "cbor2==5.6.5",
    # libervia-cache's own, and what an editable install of it needs
    "tx-xmpp>=0.15",
    "platformdirs>=4",
    "click>=8.1",
    "setuptools>=68",
    "wheel",
)
#: bump to rebuild every cached installation
INSTALL_FORMAT = 1

DEFAULT_CACHE_DIR = "~/.cache/libervia-cache-tests"
READY_TIMEOUT = 120.0
#: the cache kinds a backend can run
CACHE_KINDS = ("libervia-cache", "stock")


class LiberviaInstallError(RuntimeError):
    """Libervia could not be installed; the message says what failed and its output."""


# --- installation ------------------------------------------------------------------------


@dataclass(frozen=True)
class LiberviaInstall:
    """An installed Libervia: the unpacked Debian tree and the venv."""

    root: Path

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def site(self) -> Path:
        """Where ``libervia``, ``sat_tmp`` and Debian's ``wokkel`` are."""
        return self.tree / "usr" / "lib" / "python3" / "dist-packages"

    @property
    def bin(self) -> Path:
        """Where Libervia's launchers are (``libervia-backend``, ``li``)."""
        return self.tree / "usr" / "bin"

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.root / "installed.json"

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment Libervia's programs run with: its tree first on the paths."""
        env = dict(os.environ if base is None else base)
        for name in list(env):
            if name.startswith(("PYTHON", "VIRTUAL_ENV", "TOX_")):
                del env[name]
        env["PYTHONPATH"] = str(self.site)
        env["PATH"] = os.pathsep.join([str(self.bin), str(self.python.parent), env.get("PATH", "")])
        return env


def cache_dir() -> Path:
    return Path(os.environ.get("LIBERVIA_CACHE_TEST_LIBERVIA_DIR", DEFAULT_CACHE_DIR)).expanduser()


def _run(args: list[str], what: str, **kwargs: Any) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    except OSError as error:
        raise LiberviaInstallError(f"{what}: cannot run {args[0]}: {error}") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise LiberviaInstallError(f"{what} failed ({' '.join(args[:3])} ...):\n{output}")
    return result.stdout


def debian_mirror() -> str:
    """The system's Debian mirror (its sources), or deb.debian.org."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "")
            if "security" not in suites and fields.get("URIs"):
                return fields["URIs"].split()[0].strip()
    classic = Path("/etc/apt/sources.list")
    if classic.exists():
        for line in classic.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[2]:
                return parts[1] if not parts[1].startswith("[") else parts[2]
    return "http://deb.debian.org/debian"


def _download_packages(work: Path) -> list[Path]:
    """Download the pinned packages with apt, in ``work`` only."""
    lists, cache, debs = work / "apt-lists", work / "apt-cache", work / "debs"
    for path in (lists / "partial", cache / "archives" / "partial", debs):
        path.mkdir(parents=True, exist_ok=True)
    sources = work / "sources.list"
    sources.write_text(f"deb {debian_mirror()} {SUITE} main\n")
    options = [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    if shutil.which("apt-get") is None:
        raise LiberviaInstallError("apt-get is missing: Libervia is installed from Debian")
    _run(["apt-get", *options, "-q", "update"], f"apt-get update (Debian {SUITE})")
    wanted = [f"{name}={version}" for name, version in PACKAGES.items()]
    _run(["apt-get", *options, "-q", "download", *wanted], "apt-get download", cwd=debs)
    return sorted(debs.glob("*.deb"))


def _build(root: Path) -> None:
    """Build a complete installation in ``root`` (a fresh directory)."""
    debs = _download_packages(root)
    tree = root / "tree"
    tree.mkdir()
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tree)], f"unpacking {deb.name}")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    _run([*pip, *REQUIREMENTS], "installing Libervia's Python packages")
    shutil.rmtree(root / "apt-cache", ignore_errors=True)
    shutil.rmtree(root / "apt-lists", ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp_content() -> dict[str, Any]:
    return {
        "format": INSTALL_FORMAT,
        "packages": PACKAGES,
        "requirements": list(REQUIREMENTS),
        "python": sys.version.split()[0],
    }


def ensure_installed(checkout: Path = CHECKOUT) -> LiberviaInstall:
    """Libervia, installed (once, cached) with ``checkout``'s libervia-cache in its venv."""
    base = cache_dir()
    with _locked(base / "install.lock"):
        stamp = _stamp_content()
        name = (
            f"libervia-{PACKAGES['libervia-backend']}-py{sys.version_info[0]}.{sys.version_info[1]}"
        )
        install = LiberviaInstall(base / name.replace("~", "_"))
        current = None
        if install.stamp.exists():
            try:
                current = json.loads(install.stamp.read_text())
            except ValueError:
                current = None
        if current != stamp:
            building = Path(tempfile.mkdtemp(prefix="building-", dir=base))
            try:
                _build(building)
                (building / "installed.json").write_text(json.dumps(stamp))
                shutil.rmtree(install.root, ignore_errors=True)
                building.rename(install.root)
            finally:
                shutil.rmtree(building, ignore_errors=True)
        _install_checkout(install, checkout)
    return install


def _install_checkout(install: LiberviaInstall, checkout: Path) -> None:
    """The checkout under test, editable in the venv, unless it is there already."""
    probe = "import libervia_cache.migration, libervia_cache; print(libervia_cache.__file__)"
    result = subprocess.run(
        [str(install.python), "-c", probe],
        capture_output=True,
        text=True,
        cwd="/",
        env=install.environment(),
        check=False,
    )
    location = Path(result.stdout.strip()) if result.returncode == 0 else None
    if location is not None and location.is_relative_to(checkout):
        return
    _run(
        [
            str(install.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "-e", str(checkout),
        ],
        "installing libervia-cache (editable) into Libervia's venv",
        cwd="/",
    )  # fmt: skip


# --- the bridge ---------------------------------------------------------------------------


class PBBridge:
    """Libervia's Perspective Broker bridge, as its frontends call it (positional
    arguments; errors are ``pb.CopiedFailure`` whose ``type`` names Libervia's
    exception)."""

    def __init__(self, root: pb.RemoteReference, factory: pb.PBClientFactory) -> None:
        self._root = root
        self._factory = factory

    @classmethod
    async def connect(cls, socket: Path) -> PBBridge:
        factory = pb.PBClientFactory()
        reactor.connectUNIX(str(socket), factory)  # type: ignore[attr-defined]
        root = await factory.getRootObject()
        return cls(root, factory)

    def call(self, name: str, *args: Any) -> defer.Deferred[Any]:
        return self._root.callRemote(name, *args)

    def close(self) -> None:
        self._factory.disconnect()


def error_class(error: Any) -> str:
    """The class name of the Libervia exception behind a bridge error (``"NotFound"``),
    as frontends read it (a ``pb.RemoteError``, or a ``pb.CopiedFailure``)."""
    name = getattr(error, "remoteType", None) or getattr(error, "type", None)
    if isinstance(name, bytes):
        name = name.decode()
    return str(name).rpartition(".")[2]


# --- the backend process ------------------------------------------------------------------

LAUNCHER = """\
import sys
sys.path.insert(0, {checkout!r})
from tests.harness.libervia import install_probe
install_probe()
from libervia_cache.hosts.libervia import launcher
if {replace!r}:
    launcher.install()
launcher.run_libervia_launcher(["fg"])
"""


class LiberviaBackend:
    """One Libervia backend process, in ``directory``, with its profiles connected to
    ``server``. ``options`` go to its ``[pubsub_cache]`` section."""

    def __init__(
        self,
        install: LiberviaInstall,
        directory: Path,
        server: XMPPServer,
        *,
        cache: str = "libervia-cache",
        profiles: Iterable[str] = ("bob",),
        options: Mapping[str, Any] | None = None,
        default_options: Mapping[str, Any] | None = None,
        log_level: str = "debug",
    ) -> None:
        if cache not in CACHE_KINDS:
            raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}")
        self.install = install
        self.directory = directory
        self.server = server
        self.cache = cache
        self.profiles = tuple(profiles)
        self.options = dict(options or {})
        #: more ``[DEFAULT]`` options (e.g. the stock cache's ``pubsub_cache_strategy``)
        self.default_options = dict(default_options or {})
        #: Libervia's ``log_level`` (its default is ``info``; tests read debug logs)
        self.log_level = log_level
        self.home = directory / "home"
        self.local_dir = directory / "local"
        self.log_dir = directory / "log"
        self.process: subprocess.Popen[bytes] | None = None
        self.bridge: PBBridge | None = None
        #: seconds from the start of the process to a ready bridge, profiles excluded
        self.startup_time = 0.0

    @property
    def socket(self) -> Path:
        return self.local_dir / "bridge_pb"

    @property
    def database(self) -> Path:
        """libervia-cache's database (Libervia's is ``libervia.db`` beside it)."""
        return self.local_dir / "pubsub_cache.db"

    def _write_configuration(self) -> None:
        for path in (self.home, self.local_dir, self.log_dir, self.directory / "pid"):
            path.mkdir(parents=True, exist_ok=True)
        lines = [
            "[DEFAULT]",
            "bridge = pb",
            f"local_dir = {self.local_dir}",
            f"log_dir = {self.log_dir}",
            f"pid_dir = {self.directory / 'pid'}",
            f"log_level = {self.log_level}",
            "log_colors = false",
            *(f"{key} = {value}" for key, value in self.default_options.items()),
            "",
            "[bridge_pb]",
            "connection_type = unix_socket",
            "",
            "[pubsub_cache]",
            *(f"{key} = {value}" for key, value in self.options.items()),
            "",
        ]
        (self.home / "libervia.conf").write_text("\n".join(lines))
        (self.directory / "launch.py").write_text(
            LAUNCHER.format(checkout=str(CHECKOUT), replace=self.cache == "libervia-cache")
        )

    def environment(self) -> dict[str, str]:
        env = self.install.environment()
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
        )
        env.pop("LIBERVIA_BRIDGE_NAME", None)
        return env

    async def start(self) -> None:
        """Start the process, wait for its bridge, create and connect its profiles."""
        began = time.monotonic()
        self._write_configuration()
        output = (self.log_dir / "process.out").open("wb")
        self.process = subprocess.Popen(
            [str(self.install.python), str(self.directory / "launch.py")],
            cwd=self.directory,
            env=self.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        try:
            await _wait_for(
                self.socket.exists, "Libervia's bridge socket", self._alive, READY_TIMEOUT
            )
            self.bridge = await PBBridge.connect(self.socket)
            await self.bridge.call("ready_get")
            self.startup_time = time.monotonic() - began
            for profile in self.profiles:
                await self.add_profile(profile)
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def add_profile(self, profile: str, user: str | None = None) -> None:
        """Create ``profile`` (account ``user``, default the same name) and connect it."""
        assert self.bridge is not None
        user = user or profile
        call = self.bridge.call
        await call("profile_create", profile, "", "")
        await call("profile_start_session", "", profile)
        settings = {
            "JabberID": f"{self.server.jid(user)}/libervia",
            "Password": self.server.accounts[user],
            "Force server": self.server.host,
            "Force port": str(self.server.c2s_port),
            "check_certificate": "false",
        }
        for name, value in settings.items():
            await call("param_set", name, value, "Connection", -1, profile)
        await call("connect", profile, "", {})
        deadline = time.monotonic() + 30
        while not await call("is_connected", profile):
            if time.monotonic() > deadline:
                raise ServerError(f"profile {profile} did not connect:\n{self.log_tail()}")
            await sleep(0.05)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
        if self.process is not None:
            if pid_alive(self.process.pid):
                stop_pid(self.process.pid)
            self.process.wait(timeout=10)
            self.process = None

    def log_tail(self, lines: int = 60) -> str:
        texts = []
        for path in sorted(self.log_dir.glob("*")):
            try:
                content = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            texts.append(f"--- {path.name}\n" + "\n".join(content))
        return "\n".join(texts)

    def log_text(self) -> str:
        """Everything Libervia logged so far."""
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log"))
        )


async def sleep(seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    await d


async def _wait_for(
    condition: Any, what: str, alive: Any, timeout: float, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not alive():
            raise ServerError(f"Libervia died while waiting for {what}")
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout:g} s waiting for {what}")
        await sleep(interval)


if __name__ == "__main__":
    # python -m tests.servers.libervia_backend: install (or check) the cached Libervia
    print(ensure_installed().root)
