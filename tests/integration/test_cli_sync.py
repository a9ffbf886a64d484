"""``sync`` while a synchronisation runs, through the CLI against an in-process daemon whose
sync is held on its first page (never a timing): a second ``sync --wait`` follows the
running one with its progress, and interrupting ``sync --wait`` leaves it running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from libervia_cache.backend.daemon import Daemon
from libervia_cache.plugin.sync import Outcome
from tests.harness.daemon import atom_entry, cache_of, cli_argv, sync_of
from tests.harness.gates import NetworkGate
from tests.servers.base import XMPPServer
from tests.servers.publisher import Publisher

MICROBLOG = "urn:xmpp:microblog:0"
TIMEOUT = 60

pytestmark = pytest.mark.daemon_options(sync_page_size=5)


def on_loop(awaitable: Any) -> defer.Deferred[Any]:
    """An asyncio awaitable as a Deferred (the tests run on Twisted's asyncio reactor)."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait_for(awaitable, TIMEOUT)))


def default_sigint() -> None:
    # a CLI started from a shell that ignores SIGINT would inherit it: Ctrl-C must work
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CLI:
    """``libervia-cache`` as a child process, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, config: Path, *args: str) -> CLI:
        process = await on_loop(
            asyncio.create_subprocess_exec(
                *cli_argv(config, *args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=default_sigint,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await on_loop(self.process.stdout.readline())
        assert raw, f"the command ended: {self.lines}"
        self.lines.append(raw.decode().rstrip("\n"))
        return self.lines[-1]

    async def finish(self) -> tuple[int, str, str]:
        stdout, stderr = await on_loop(self.process.communicate())
        self.lines += stdout.decode().splitlines()
        return self.process.returncode or 0, "\n".join(self.lines), stderr.decode()


async def blog(publisher: Publisher, service: JID, node: str, count: int) -> None:
    await publisher.create_node(service, node, {"pubsub#access_model": "open"})
    posts = [(f"p{n:02d}", atom_entry(f"p{n:02d}", f"Post {n}")) for n in range(count)]
    await publisher.publish(service, node, posts, depth=1)


def config_of(daemon: Daemon) -> Path:
    return daemon.config.path


async def test_a_second_sync_follows_the_running_one_with_its_progress(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await blog(publisher, service, node, 12)
    gate = NetworkGate(daemon.xep_0060, "page", node=node)
    try:
        started = await CLI.start(config_of(daemon), "sync", service.full(), node)
        code, out, err = await started.finish()
        assert code == 0, err
        await gate.reached.addTimeout(TIMEOUT, _reactor())
        running = sync_of(daemon, service, node)
        assert running is not None and not running.ended
        assert cache_of(daemon).counters.syncs_started == 1

        follower = await CLI.start(config_of(daemon), "sync", service.full(), node, "--wait")
        assert await follower.line() == f"sync {node}: 0 item(s) stored"
        assert sync_of(daemon, service, node) is running  # followed, not started again
        gate.release()
        code, out, err = await follower.finish()
    finally:
        gate.remove()
    assert code == 0, err
    assert out.splitlines()[-1] == f"{node} on {service.full()}: COMPLETED, 12 item(s)"
    stored = [int(line.split(": ")[1].split()[0]) for line in out.splitlines()[:-1]]
    assert stored == sorted(stored) and stored[-1] == 12, out  # the running sync's progress
    assert running.outcome is Outcome.COMPLETED
    counters = cache_of(daemon).counters
    assert (counters.syncs_started, counters.syncs_completed) == (1, 1)


async def test_interrupting_sync_wait_says_the_sync_goes_on_and_it_does(
    daemon: Daemon, publisher: Publisher, xmpp_server: XMPPServer, fresh_node: Callable[..., str]
) -> None:
    service = JID(xmpp_server.pubsub_service)
    node = fresh_node(MICROBLOG)
    await blog(publisher, service, node, 7)
    gate = NetworkGate(daemon.xep_0060, "page", node=node)
    try:
        waiting = await CLI.start(config_of(daemon), "sync", service.full(), node, "--wait")
        await gate.reached.addTimeout(TIMEOUT, _reactor())
        assert await waiting.line() == f"sync {node}: 0 item(s) stored"
        waiting.process.send_signal(signal.SIGINT)
        code, out, err = await waiting.finish()
        assert code == 1
        assert err == (
            f"libervia-cache: interrupted: the synchronisation of {node} goes on in the daemon "
            f"(see: libervia-cache status {service.full()} {node})\n"
        )
        running = sync_of(daemon, service, node)
        assert running is not None and not running.ended
        gate.release()
        await running.wait().addTimeout(TIMEOUT, _reactor())
    finally:
        gate.remove()
    assert running.outcome is Outcome.COMPLETED
    status = await CLI.start(config_of(daemon), "status", service.full(), node, "--json")
    code, out, err = await status.finish()
    assert code == 0, err
    assert '"state": "COMPLETED"' in out and '"items": 7' in out


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor
