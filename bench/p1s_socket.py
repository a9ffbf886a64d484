"""P1s: the control socket is not the bottleneck of a cached read.

Two measures, both with a blocking :class:`~libervia_cache.control.ControlClient` (what
the CLI and scripts use) calling ``ps_items_get`` for a 20-item page:

- **P1s** (:func:`p1s_figures`, run by ``python -m bench`` with the private ejabberd):
  the real daemon process; a cached page vs the same request with
  ``use_cache: false`` (answered by ejabberd through the daemon), interleaved in
  rounds, ratio reported (target >= 10x).
- **Standalone** (``python -m bench.p1s_socket [--reps N] [--profile]``): no server,
  no plugin: a :class:`~libervia_cache.backend.bridge.Bridge` in this process whose
  ``ps_items_get`` answers a realistic 20-item page (Atom items of ~600 bytes as XML
  strings) at once, and a client in a child process. It isolates the socket path's
  own cost per call: a reused connection (what ``ControlClient`` does) and a fresh one
  per call (a new ``ControlClient`` each time: the CLI's one call per process).
  ``--profile`` prints where the daemon's side spends its time (cProfile).

It reports; it never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common

PAGE = 20
WARMUP = 200  # calls of each kind before timing
ATOM = "http://www.w3.org/2005/Atom"
PUBSUB = "http://jabber.org/protocol/pubsub"


def page_answer(count: int = PAGE) -> dict[str, Any]:
    """A ``ps_items_get`` answer of realistic size: ``count`` Atom items as XML strings
    (~600 bytes each) and the metadata of a cached RSM page."""
    items = []
    for n in range(count):
        entry = (
            f"<entry xmlns='{ATOM}'><id>urn:uuid:item-{n}</id><title>post {n}</title>"
            f"<content>{f'content of post {n}, with some words in it. ' * 8}</content>"
            "<published>2026-01-01T00:00:00Z</published>"
            "<updated>2026-01-01T00:00:00Z</updated>"
            f"<category term='t{n % 9}'/><author><name>alice</name></author></entry>"
        )
        items.append(f"<item xmlns='{PUBSUB}' id='item-{n}'>{entry}</item>")
    metadata = {
        "service": "pubsub.localhost",
        "node": "urn:xmpp:microblog:0:bench",
        "uri": "xmpp:pubsub.localhost?;node=urn:xmpp:microblog:0:bench",
        "cached": True,
        "complete": False,
        "rsm": {"first": "item-0", "last": f"item-{count - 1}", "index": 0, "count": 50},
    }
    return {"items": items, "metadata": metadata}


# --- standalone: the socket path alone ----------------------------------------------------


def client_main(path: str, reps: int, rounds: int) -> None:
    """Child process: time ``ps_items_get`` calls, reused vs fresh connection, in rounds."""
    from libervia_cache.control import ControlClient

    params: dict[str, Any] = {"service": "pubsub.localhost", "node": "urn:xmpp:microblog:0:bench"}
    params["rsm"] = {"max": PAGE}
    reused = ControlClient(path)

    def reused_call() -> None:
        result = reused.call("ps_items_get", params, timeout=30)
        if len(result["items"]) != PAGE:
            raise AssertionError("wrong answer")

    def fresh_call() -> None:
        client = ControlClient(path)
        try:
            result = client.call("ps_items_get", params, timeout=30)
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
        if len(result["items"]) != PAGE:
            raise AssertionError("wrong answer")

    samples: dict[str, list[float]] = {"reused": [], "fresh": []}
    cpu = {"reused": 0.0, "fresh": 0.0}
    common.timings_ms_sync(reused_call, 0, warmup=WARMUP)
    common.timings_ms_sync(fresh_call, 0, warmup=WARMUP)
    for _ in range(rounds):
        for name, fn in (("reused", reused_call), ("fresh", fresh_call)):
            started = time.process_time()
            samples[name] += common.timings_ms_sync(fn, reps // rounds, warmup=0)
            cpu[name] += time.process_time() - started
    print(json.dumps({"samples": samples, "cpu": cpu}))


async def serve_and_measure(reps: int, rounds: int, profile: bool) -> dict[str, Any]:
    """A bridge answering a fixed page in this process; the client in a child process."""
    from twisted.internet import threads

    from libervia_cache.backend.bridge import Bridge

    answer = page_answer()

    async def ps_items_get(
        service: str,
        node: str,
        profile: str | None = None,
        max_items: int | None = None,
        item_ids: list[str] | None = None,
        rsm: dict[str, Any] | None = None,
        use_cache: bool = True,
    ) -> dict[str, Any]:
        return answer

    bridge = Bridge()
    bridge.register_method("ps_items_get", ps_items_get)
    directory = Path(tempfile.mkdtemp(prefix="p1s-", dir="/tmp"))
    path = directory / "bench.sock"
    await bridge.listen(path)
    profiler = None
    cpu_started = time.process_time()
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        command = [sys.executable, "-m", "bench.p1s_socket", "--client", str(path)]
        command += ["--reps", str(reps), "--rounds", str(rounds)]
        output = await threads.deferToThread(
            subprocess.run, command, capture_output=True, text=True
        )
        if output.returncode != 0:
            raise RuntimeError(f"the client process failed:\n{output.stderr}")
    finally:
        if profiler is not None:
            profiler.disable()
        await bridge.stop()
        shutil.rmtree(directory, ignore_errors=True)
    server_cpu = time.process_time() - cpu_started
    client = json.loads(output.stdout.strip().splitlines()[-1])
    samples = client["samples"]
    calls = sum(len(values) for values in samples.values()) + 2 * WARMUP
    if profiler is not None:
        import pstats

        print("daemon side (cProfile, by own time, top 30):", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    reply_bytes = len(json.dumps({"id": 1, "result": answer}, ensure_ascii=False))
    return {
        "reused_connection_ms": common.spread(samples["reused"]),
        "fresh_connection_ms": common.spread(samples["fresh"]),
        "reply_bytes": reply_bytes,
        "daemon_cpu_us_per_call": round(server_cpu / calls * 1e6, 1),
        "client_cpu_us_per_call": {
            name: round(seconds / len(samples[name]) * 1e6, 1)
            for name, seconds in client["cpu"].items()
        },
        "how": "Bridge in one process answering a fixed 20-item page (async method), "
        "blocking ControlClient in a child process; medians of interleaved rounds",
    }


# --- P1s: through the real daemon process and ejabberd ------------------------------------


def p1s_figures(server: Any, directory: Path, node: str, sizes: Any) -> dict[str, Any]:
    """One ``ps_items_get`` over the control socket of the daemon process: a cached
    20-item page vs the same request with ``use_cache: false`` (ejabberd's answer
    through the daemon), interleaved; ``node`` is on ``server`` and has more than 20
    items."""
    from libervia_cache.control import ControlClient
    from tests.harness.daemon import DaemonProcess, write_config

    service = server.pubsub_service
    daemon = DaemonProcess(write_config(directory, server, profiles=["bob"]))
    daemon.start()
    client = ControlClient(directory / "daemon.sock")
    try:
        client.call("ps_cache_sync", {"service": service, "node": node, "wait": True}, timeout=300)
        # read the page once: on a server whose RSM keys are its own (ejabberd), the
        # cache learns those of a page from the server's first answer to it
        client.call("ps_items_get", {"service": service, "node": node, "rsm": {"max": PAGE}})

        def page(use_cache: bool) -> Callable[[], None]:
            params: dict[str, Any] = {"service": service, "node": node, "rsm": {"max": PAGE}}
            params["use_cache"] = use_cache

            def call() -> None:
                result = client.call("ps_items_get", params, timeout=60)
                if result["metadata"]["cached"] != use_cache or len(result["items"]) != PAGE:
                    raise AssertionError(f"unexpected answer: {result['metadata']}")

            return call

        def fresh_cached() -> None:
            fresh = ControlClient(directory / "daemon.sock")
            try:
                fresh.call("ps_items_get", {"service": service, "node": node, "rsm": {"max": PAGE}})
            finally:
                fresh.close()

        measures = {
            "cached": (page(True), sizes.bridge_reps),
            "server": (page(False), max(1, sizes.bridge_reps // 3)),
            "cached_fresh_connection": (fresh_cached, max(1, sizes.bridge_reps // 3)),
        }
        samples: dict[str, list[float]] = {name: [] for name in measures}
        for fn, _ in measures.values():
            common.timings_ms_sync(fn, 0, warmup=20)
        for _ in range(sizes.rounds):
            for name, (fn, reps) in measures.items():
                samples[name] += common.timings_ms_sync(fn, max(1, reps // sizes.rounds), 0)
    finally:
        client.close()
        code = daemon.stop()
        if code != 0:
            print(f"the daemon process exited with {code}; log: {daemon.log_path}", file=sys.stderr)
    cached = common.median(samples["cached"])
    network = common.median(samples["server"])
    return {
        "value": round(network / cached, 1),
        "unit": "x faster (ps_items_get use_cache=false / cached, over the control socket)",
        "target": ">= 10x",
        "detail": {
            "server": "ejabberd (real, loopback); the daemon as its own process",
            "cached_ms": round(cached, 3),
            "server_through_socket_ms": round(network, 3),
            "cached_fresh_connection_ms": round(
                common.median(samples["cached_fresh_connection"]), 3
            ),
            "cached_spread": common.spread(samples["cached"]),
            "server_spread": common.spread(samples["server"]),
            "how": "one blocking ControlClient (connection reused), interleaved rounds; "
            "fresh = a new ControlClient per call (the CLI's case)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3000, help="calls per measure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile of the daemon side")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.reps, args.rounds)
        return
    started = time.perf_counter()
    common.install()
    try:
        figures = common.run(serve_and_measure(args.reps, args.rounds, args.profile))
    finally:
        common.shutdown()
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
