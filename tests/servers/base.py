"""Private XMPP servers for integration tests: the common part.

Each server kind (one module per kind) starts its own instance on 127.0.0.1, on ports
picked free at start, in a temporary directory holding its configuration, data, logs
and a self-signed certificate (valid for ``localhost`` and ``pubsub.localhost``, to be
trusted by clients through :attr:`XMPPServer.ca_file`). ``start()`` returns once the
server accepts clients (the log and the port are polled, never a blind sleep) and a pool
of accounts is registered; ``stop()`` stops every process it started, by PID, and
removes the directory unless ``keep`` is set.

``quirks`` documents, per kind, behaviour measured on the real server (and proved by
``tests/integration/test_servers.py``). Keys:

``rsm``                   RSM (XEP-0059) is honoured on items requests.
``rsm_advertised``        the service advertises RSM in disco#info.
``rsm_keys_are_item_ids`` RSM ``first``/``last`` are item ids (else opaque keys).
``rsm_index``             an ``<index>`` in the request is honoured.
``rsm_count``             the RSM answer carries ``count``.
``items_by_id_order``     order of items asked by id: "creation" or "asked".
``max_items_order``       order of a ``max_items=N`` answer: "oldest_first".
``retract_notify_needed`` retract events are sent only if the request says notify.
``delete_event``          subscribers get a ``delete`` event.
``purge_event``           subscribers get a ``purge`` event.
``owner_events_without_subscription`` the publisher gets item events unsubscribed.
``unknown_id_fails``      asking an unknown item id fails the whole request.
``auto_create_on_publish`` publishing to a missing node creates it.
``order_by``              XEP-0413 order-by (``creation``/``modification``) works.
``max_items_rsm``         a ``max_items`` answer carries RSM data (first/last keys,
                          ``index`` = count - max_items, even negative, and count).
``lowered_max_items``     what lowering ``pubsub#max_items`` below the item count does:
                          ``at_next_publication`` (ejabberd: items dropped then),
                          ``at_once_silently`` (Prosody: no event), ``refused``
                          (libervia-pubsub: conflict).
``deep_items_relayed``    an item nested 1500 levels deep is stored and notified
                          (libervia-pubsub fails with a RecursionError and never answers).
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

HOST = "127.0.0.1"
DOMAIN = "localhost"
PUBSUB_SERVICE = "pubsub.localhost"
# alice, bob, carol and dave are the names tests use; the pool users are spares for
# tests that need more clients (registering is slow on ejabberd, so do it once).
ACCOUNT_NAMES = ("alice", "bob", "carol", "dave", *tuple(f"user{i}" for i in range(1, 5)))
START_TIMEOUT = 60.0


class ServerError(RuntimeError):
    """A server could not be started, or failed while running."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_contains(path: Path, text: str) -> bool:
    """Whether the file at ``path`` exists and contains ``text``."""
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = START_TIMEOUT,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.02,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` or if ``alive`` says no."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise ServerError(f"process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def make_certificate(directory: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``names`` and its key; return (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subject_alt_names = ",".join(f"DNS:{name}" for name in names)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "3650", "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={subject_alt_names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` exists (and is not a zombie of ours)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop the process ``pid``: SIGTERM, then SIGKILL if it is still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not pid_alive(pid), f"process {pid} to exit", timeout)
            return
        except ServerError:
            continue


def run_command(args: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a helper command; a failure raises :class:`ServerError` with its output."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ServerError(f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


class XMPPServer(abc.ABC):
    """A private XMPP server with a pubsub service, for tests.

    Subclasses set :attr:`kind`, :attr:`binaries` and :attr:`quirks` and implement
    :meth:`_start`, :meth:`_register` and :meth:`_stop`.
    """

    kind: ClassVar[str]
    #: executables that must be installed for this kind to run
    binaries: ClassVar[tuple[str, ...]]
    quirks: ClassVar[dict[str, Any]]

    host = HOST
    domain = DOMAIN
    pubsub_service = PUBSUB_SERVICE

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.directory = Path(tempfile.mkdtemp(prefix=f"libervia-cache-{self.kind}-"))
        self.c2s_port = 0
        self.ca_file = self.directory / "cert.pem"
        self.key_file = self.directory / "key.pem"
        self.accounts: dict[str, str] = {name: f"{name}-pw" for name in ACCOUNT_NAMES}
        #: seconds taken by the last start() until ready, accounts included
        self.startup_time = 0.0
        #: seconds spent registering the accounts, part of ``startup_time``
        self.register_time = 0.0
        self.pids: list[int] = []
        self._started = False

    @classmethod
    def missing_binaries(cls) -> list[str]:
        """The executables this kind needs that are not installed."""
        return [name for name in cls.binaries if shutil.which(name) is None]

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The server's main log file."""

    def jid(self, user: str) -> str:
        """The bare JID of account ``user``."""
        return f"{user}@{self.domain}"

    def start(self) -> None:
        """Configure and start the server; return once it accepts clients."""
        if missing := self.missing_binaries():
            raise ServerError(f"{self.kind}: not installed: {', '.join(missing)}")
        began = time.monotonic()
        make_certificate(self.directory, (self.domain, self.pubsub_service))
        self.c2s_port = free_port()
        self._started = True
        try:
            self._start()
            registering = time.monotonic()
            self._register(self.accounts)
            self.register_time = time.monotonic() - registering
        except BaseException:
            self.stop()
            raise
        self.startup_time = time.monotonic() - began

    def stop(self) -> None:
        """Stop every process started, by PID; remove the directory unless ``keep``."""
        if self._started:
            try:
                self._stop()
            finally:
                for pid in reversed(self.pids):
                    stop_pid(pid)
                self.pids.clear()
                self._started = False
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, to explain a failure."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @abc.abstractmethod
    def _start(self) -> None:
        """Write the configuration, start the processes, wait until ready."""

    @abc.abstractmethod
    def _register(self, accounts: dict[str, str]) -> None:
        """Create the accounts (user name -> password)."""

    def _stop(self) -> None:  # noqa: B027 (optional hook)
        """Extra stop steps before the recorded PIDs are stopped."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} c2s={self.host}:{self.c2s_port}>"
