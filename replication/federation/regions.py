"""Separate Ray clusters, one per region, each in its own network namespace, federated through
their gateways: the test bed of the federation tests, ``herd bench replication`` and
``herd demo regions``.

    with FederatedRegions(["us-east", "us-west"], delay_ms=50) as regions:
        regions["us-east"].call("start_store", name="carts")   # and in us-west
        regions.partition("us-east", "us-west")                 # ip link set ... down
        regions["us-east"].store("carts", "put", "k", 1)
        regions.heal_all()

Each region runs :mod:`.runner` inside its namespace (through
:class:`~herd.platform.local.topology.RegionTopology`); this process, in the hub namespace,
talks to the runners over their hub links, which partitions never cut.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from herd.platform.errors import ClusterError, HerdError, HerdTimeoutError
from herd.platform.local.topology import CONTROL_PORT, GATEWAY_PORT, RegionTopology
from herd.platform.logging import get_logger
from herd.replication.federation.config import Federation, write_token_file
from herd.replication.federation.tls import make_ca, make_certificate

log = get_logger("herd.federation.regions")

START_TIMEOUT_S = 240.0
CALL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


class RemoteCallError(HerdError):
    """A control call failed inside a region; ``type`` is the remote exception's class name
    (``QuorumNotAchieved``, ``ConfigError``, ...)."""

    def __init__(self, region: str, type_name: str, message: str) -> None:
        super().__init__(f"{region}: {type_name}: {message}")
        self.region = region
        self.type = type_name
        self.message = message


class RegionClient:
    """The driver's handle on one region's runner."""

    def __init__(self, region: str, control_url: str) -> None:
        self.region = region
        self.control_url = control_url

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **fields: Any) -> Any:
        body = json.dumps({"op": op, **fields}).encode()
        request = urllib.request.Request(f"{self.control_url}/call", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except TimeoutError as exc:
            raise HerdTimeoutError(f"{self.region}: {op} did not answer within {timeout} s"
                                   ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ClusterError(f"{self.region}: control API unreachable: {exc}") from exc
        if "error" in answer:
            error = answer["error"]
            raise RemoteCallError(self.region, error["type"], error["message"])
        return answer["result"]

    def store(self, store: str, method: str, *args: Any, call_timeout: float = CALL_TIMEOUT_S,
              **kwargs: Any) -> Any:
        """``ReplicatedStore.get(store).<method>(*args, **kwargs)`` in this region."""
        return self.call("store", timeout=call_timeout, store=store, method=method,
                         args=list(args), kwargs=kwargs)

    def shutdown(self) -> None:
        request = urllib.request.Request(f"{self.control_url}/shutdown", data=b"{}",
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
        except (urllib.error.URLError, OSError):
            pass  # already gone: the topology stops its process anyway


class FederatedRegions:
    """One LocalCluster + gateway per region, in namespaces linked by veth pairs."""

    def __init__(self, regions: list[str], delay_ms: float = 0.0, tls: bool = False,
                 nodes: int = 1, run_dir: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.topology = RegionTopology(list(regions), delay_ms=delay_ms)
        self.tls = tls
        self.nodes = nodes
        self.run_dir = Path(run_dir) if run_dir else Path(f"/tmp/herd/fed-{secrets.token_hex(3)}")
        self.env = dict(env or {})
        self.clients: dict[str, RegionClient] = {}
        self.procs: dict[str, Any] = {}

    @property
    def regions(self) -> list[str]:
        return self.topology.regions

    def __getitem__(self, region: str) -> RegionClient:
        return self.clients[region]

    def __enter__(self) -> FederatedRegions:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = START_TIMEOUT_S) -> FederatedRegions:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.topology.start()
        try:
            token_file = write_token_file(self.run_dir / "federation.token")
            if self.tls:
                make_ca(self.run_dir / "tls")
            for region in self.regions:
                self._launch(region, token_file)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("regions_ready", regions=self.regions, run_dir=str(self.run_dir))
        return self

    def stop(self) -> None:
        """Ask every runner to stop its cluster, wait for them (Ray's driver replaces the
        SIGTERM handler, so a signal would cut their shutdown short), then tear down the
        topology, which signals whatever is left."""
        with ThreadPoolExecutor(max(1, len(self.clients))) as pool:
            list(pool.map(lambda c: c.shutdown(), self.clients.values()))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self.topology.stop()
        self.clients.clear()
        if not self.failed_logs():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def federation(self, region: str, token_file: Path) -> Federation:
        """The Federation config of ``region``: every peer as this region reaches it."""
        scheme = "https" if self.tls else "http"
        urls = self.topology.peer_urls(region, scheme)
        urls[region] = f"{scheme}://{self.topology.control_address(region)}:{GATEWAY_PORT}"
        tls = None
        if self.tls:
            tls = make_certificate(self.run_dir / "tls", region,
                                   self.topology.all_addresses(region))
        listen = f"0.0.0.0:{GATEWAY_PORT}"
        return Federation(region=region, regions=urls, listen=listen, token_file=token_file,
                          tls=tls)

    def _launch(self, region: str, token_file: Path) -> None:
        region_dir = self.run_dir / region
        region_dir.mkdir(parents=True, exist_ok=True)
        config_path = region_dir / "federation.yaml"
        config = self.federation(region, token_file).model_dump(mode="json", exclude_none=True)
        config_path.write_text(yaml.safe_dump(config))
        control = f"{self.topology.control_address(region)}:{CONTROL_PORT}"
        argv = [sys.executable, "-m", "herd.replication.federation.runner", "--region", region,
                "--federation", str(config_path), "--control", control,
                "--run-dir", str(region_dir), "--nodes", str(self.nodes)]
        env = {"HERD_LOG_JSON": "1", **self.env}
        self.procs[region] = self.topology.spawn(region, argv, env=env,
                                                 log_path=region_dir / "runner.log")
        self.clients[region] = RegionClient(region, f"http://{control}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.regions)
        while pending:
            for region in sorted(pending):
                proc = self.procs[region]
                if proc.poll() is not None:
                    raise ClusterError(f"region {region} exited with {proc.returncode}: "
                                       f"{self.log_tail(region)}")
                try:
                    if self.clients[region].call("ping", timeout=5)["ready"]:
                        pending.discard(region)
                except (ClusterError, HerdTimeoutError):
                    pass  # not listening yet
            if pending and time.monotonic() > deadline:
                raise HerdTimeoutError(f"regions {sorted(pending)} not ready within {timeout} s:"
                                       f" {self.log_tail(sorted(pending)[0])}")
            if pending:
                time.sleep(0.5)

    # ---------------------------------------------------------------------------- helpers
    def log_tail(self, region: str, chars: int = 3000) -> str:
        path = self.run_dir / region / "runner.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def failed_logs(self) -> list[str]:
        return [r for r, p in self.procs.items() if p.returncode not in (None, 0, -15)]

    def on_all(self, op: str, **fields: Any) -> dict[str, Any]:
        """Run the same control call in every region at once; results by region."""
        with ThreadPoolExecutor(len(self.regions)) as pool:
            futures = {r: pool.submit(self.clients[r].call, op, **fields) for r in self.regions}
            return {r: f.result() for r, f in futures.items()}

    def partition(self, a: str, b: str) -> None:
        self.topology.partition(a, b)

    def heal(self, a: str, b: str) -> None:
        self.topology.heal(a, b)

    def isolate(self, region: str) -> None:
        self.topology.isolate(region)

    def heal_all(self) -> None:
        self.topology.heal_all()
