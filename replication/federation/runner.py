"""One region of a multi-cluster test bed, run inside that region's network namespace.

``python -m herd.replication.federation.runner --region R --federation FILE --control HOST:PORT
--run-dir DIR`` starts a :class:`LocalCluster` for the region (on 127.0.0.1 of its namespace,
so Ray never leaves the region), connects to it, starts the federation gateway, and serves a
small JSON-over-HTTP control API on ``--control`` (the region's hub-link address, which only the
test driver reaches) until ``POST /shutdown``, SIGTERM or EOF on stdin; then it stops the
cluster. :mod:`.regions` is the driver's side.

Control API: ``POST /call`` with ``{"op": ..., ...}``; answers ``{"result": ...}`` or
``{"error": {"type": "QuorumNotAchieved", "message": ...}}``.

* ``{"op": "start_store", "name", "kind", "sync_interval_ms", ...}``: the store over every
  federation region, the others reached through the gateway
* ``{"op": "store", "store", "method", "args", "kwargs"}``: one of :data:`STORE_METHODS`
* ``{"op": "timed", ...}``: a ``store`` call and when it started and returned
* ``{"op": "await_value", "store", "key", "value", "timeout"}``: when the value arrived here
* ``{"op": "write_burst", "store", "count", "threads"}``: local write throughput
* ``{"op": "start_presence", "name"}``: presence ``name`` with its federation bridge
* ``{"op": "presence_track", "name", "topic", "key", "meta"}``: a new actor of this region,
  tracked under ``key``; answers its actor id
* ``{"op": "presence_list", "name", "topic"}``, ``{"op": "presence_kill", "pid"}``
* ``{"op": "gateway_status"}``, ``{"op": "ping"}``
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ray

from herd.platform.errors import ClusterError, ConfigError, HerdTimeoutError
from herd.platform.local import LocalCluster
from herd.platform.logging import get_logger
from herd.replication.federation.config import Federation
from herd.replication.federation.gateway import gateway_status, start_gateway
from herd.replication.federation.transport import gateway_transport_spec
from herd.replication.presence import Presence
from herd.replication.store import ReplicatedStore

log = get_logger("herd.federation.runner")

CALL_TIMEOUT_S = 30.0
STORE_METHODS = frozenset({"put", "get", "delete", "items", "status", "incr", "add", "remove"})
MAX_REQUEST_BYTES = 64 * 1024 * 1024


@ray.remote(num_cpus=0)
class _Tracked:
    """A process for presence to track (``presence_track``)."""

    def ping(self) -> bool:
        return True


class RegionRunner:
    """The region's cluster, gateway and stores, driven by the control API."""

    def __init__(self, region: str, federation: Federation, run_dir: Path, nodes: int) -> None:
        self.region = region
        self.federation = federation
        self.cluster = LocalCluster(nodes=nodes, regions=[region], run_dir=run_dir / "cluster",
                                    start=False)
        self.stores: dict[str, ReplicatedStore] = {}
        self.tracked: dict[str, Any] = {}  # actor id -> a process tracked by presence_track
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def start(self) -> None:
        started = time.monotonic()
        self.cluster.start()
        self.cluster.connect(log_to_driver=False)
        start_gateway(self.federation)
        self.ready.set()
        log.info("region_ready", region=self.region, seconds=round(time.monotonic() - started, 1))

    def stop(self) -> None:
        self.cluster.shutdown()

    def call(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":  # and what a process in this namespace needs to join the cluster
            ready = self.ready.is_set()
            return {"region": self.region, "ready": ready,
                    "address": self.cluster.address if ready else None,
                    "env": self.cluster.env() if ready else {}}
        if not self.ready.is_set():
            raise ClusterError(f"region {self.region} is still starting")
        if op == "gateway_status":
            return gateway_status()
        if op == "start_store":
            return self._start_store(request)
        if op == "store":
            return self._store_call(request)
        if op == "timed":  # the call plus when it started and returned (CLOCK_MONOTONIC)
            started = time.monotonic()
            result = self._store_call(request)
            return {"result": result, "t0": started, "t1": time.monotonic()}
        if op == "await_value":
            return self._await_value(request)
        if op == "write_burst":
            return self._write_burst(request)
        if op.startswith("presence_") or op == "start_presence":
            return self._presence_call(op, request)
        raise ConfigError("unknown control op", field="op", value=op)

    def _store_call(self, request: dict[str, Any]) -> Any:
        method = request.get("method")
        if method not in STORE_METHODS:
            raise ConfigError(f"not one of {sorted(STORE_METHODS)}", field="method",
                              value=method)
        store = self._store(str(request.get("store")))
        return getattr(store, method)(*request.get("args", []), **request.get("kwargs", {}))

    def _await_value(self, request: dict[str, Any]) -> float:
        """When (CLOCK_MONOTONIC, shared by every namespace of the machine) ``key`` first read
        as ``value`` in this region; polls the replica every millisecond."""
        store = self._store(str(request["store"]))
        deadline = time.monotonic() + float(request.get("timeout", 30.0))
        while time.monotonic() < deadline:
            if store.get(request["key"]) == request["value"]:
                return time.monotonic()
            time.sleep(0.001)
        raise HerdTimeoutError(f"{request['key']!r} did not reach {self.region}")

    def _write_burst(self, request: dict[str, Any]) -> dict[str, float]:
        """``count`` local puts from ``threads`` threads; how long they took."""
        store = self._store(str(request["store"]))
        count, threads = int(request["count"]), int(request.get("threads", 1))
        prefix = str(request.get("prefix", "burst"))

        def run(offset: int) -> None:
            for n in range(offset, count, threads):
                store.put(f"{prefix}-{n}", n)

        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
        return {"ops": count, "seconds": time.monotonic() - started}

    def _start_store(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        options = {k: v for k, v in request.items() if k not in ("op", "name")}
        remote = {r: gateway_transport_spec() for r in self.federation.peers}
        self.stores[name] = ReplicatedStore.start(name, regions=sorted(self.federation.regions),
                                                  remote_regions=remote, **options)
        return {"store": name, "region": self.region}

    def _presence_call(self, op: str, request: dict[str, Any]) -> Any:
        if op == "start_presence":
            Presence.start(str(request["name"]), federation=self.federation)
            return {"presence": request["name"], "region": self.region}
        if op == "presence_kill":
            ray.kill(self.tracked.pop(str(request["pid"])), no_restart=True)
            return True
        presence = Presence(str(request["name"]))
        if op == "presence_list":
            return presence.list(str(request["topic"]))
        if op == "presence_track":
            member = _Tracked.remote()
            ray.get(member.ping.remote(), timeout=CALL_TIMEOUT_S)  # placed: its node is known
            pid = str(member._actor_id.hex())
            self.tracked[pid] = member
            presence.track(member, str(request["topic"]), str(request["key"]), request.get("meta"))
            return pid
        raise ConfigError("unknown control op", field="op", value=op)

    def _store(self, name: str) -> ReplicatedStore:
        if name not in self.stores:
            self.stores[name] = ReplicatedStore.get(name)
        return self.stores[name]


def _jsonable(value: Any) -> Any:
    """Sets (an ormap's set values) travel as sorted lists; anything else as its repr."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def _handler(runner: RegionRunner) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                self._answer(413, {"error": {"type": "ConfigError", "message": "too large"}})
                return
            if self.path == "/shutdown":
                runner.stopping.set()
                self._answer(200, {"result": "stopping"})
                return
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                answer = {"result": runner.call(request)}
            except Exception as exc:  # every failure goes back to the driver, typed
                answer = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000]}}
            self._answer(200, answer)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, default=_jsonable).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # requests are not worth a log line each

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herd-region-runner")
    parser.add_argument("--region", required=True)
    parser.add_argument("--federation", type=Path, required=True)
    parser.add_argument("--control", required=True, help="HOST:PORT of the control API")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    host, _, port = args.control.rpartition(":")
    runner = RegionRunner(args.region, Federation.from_yaml(args.federation), args.run_dir,
                          args.nodes)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    threading.Thread(target=lambda: (sys.stdin.read(), runner.stopping.set()),
                     daemon=True).start()
    server = ThreadingHTTPServer((host, int(port)), _handler(runner))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runner.start()
        runner.stopping.wait()
    finally:
        server.shutdown()
        server.server_close()
        runner.stop()


if __name__ == "__main__":
    main()
