"""Presence across federated clusters: one bridge per cluster (``herd/presence-bridge/<name>``)
carries every local tracker's own entries to the other regions through a federated replicated
store, ``presence-federation:<name>`` (``herd.replication.store``, its remote regions reached
through the federation gateways), and hands the other regions' entries to every local tracker.

Each round (``interval_ms``) the bridge:

* asks each live node's tracker for its own part (``export``: clock and entries) and writes it,
  when its clock changed, under ``<region>|<node id>``; a key of this region whose node is no
  longer alive is deleted, whoever wrote it (the other regions then drop that node's entries);
* reads the store's keys of the other regions and gives them to every local tracker
  (``import_remote``), which merges each as a replica part of its own (a newer clock replaces
  it, an unchanged one costs nothing) and drops the remote replicas that are no longer listed.

The store is AP like the rest of presence: while a region is cut off its entries stay as they
were last seen, and the views converge once the gateways reach each other again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from herd.platform import rpc
from herd.platform.control_plane import control_plane_options
from herd.platform.gcs import anodes
from herd.platform.logging import get_logger
from herd.replication.federation.config import Federation
from herd.replication.federation.transport import gateway_transport_spec
from herd.replication.presence_tracker import tracker_handle
from herd.replication.store import ReplicatedStore

__all__ = ["PresenceBridge", "bridge_name", "federation_store", "start_bridge"]

log = get_logger("herd.presence.federation")

BRIDGE_PREFIX = "herd/presence-bridge/"
STORE_PREFIX = "presence-federation:"
DEFAULT_INTERVAL_MS = 200
CALL_TIMEOUT_S = 5.0
STORE_SYNC_MS = 200


def bridge_name(name: str) -> str:
    return f"{BRIDGE_PREFIX}{name}"


def federation_store(name: str) -> str:
    return f"{STORE_PREFIX}{name}"


def _key(region: str, replica: str) -> str:
    return f"{region}|{replica}"


@ray.remote
class PresenceBridge:
    """The bridge of presence ``name`` in this cluster's region ``region``."""

    def __init__(self, name: str, region: str, regions: list[str], peers: list[str],
                 heartbeat_ms: int, interval_ms: int) -> None:
        self.name, self.region, self.heartbeat_ms = name, region, heartbeat_ms
        self.interval_s = interval_ms / 1000
        self.store = ReplicatedStore.start(
            federation_store(name), regions=sorted(regions), kind="lww_map",
            sync_interval_ms=STORE_SYNC_MS,
            remote_regions={peer: gateway_transport_spec() for peer in peers})
        self.written: dict[str, Any] = {}  # key -> the clock written under it
        self.trackers: dict[str, Any] = {}
        self.loop: asyncio.Task[None] | None = None

    async def ready(self) -> dict[str, Any]:
        if self.loop is None:
            self.loop = asyncio.get_running_loop().create_task(self._run())
        return {"region": self.region, "store": federation_store(self.name)}

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception as exc:  # one failed round must not end the bridge
                log.warning("presence_bridge_round_failed", presence=self.name,
                            error=repr(exc))
            await asyncio.sleep(self.interval_s)

    async def _round(self) -> None:
        live = [n.node_id for n in await anodes() if n.alive]
        exported = await asyncio.gather(
            *(rpc.aget(self._tracker(n).export.remote(), CALL_TIMEOUT_S, "presence export")
              for n in live), return_exceptions=True)
        for node_id, part in zip(live, exported, strict=True):
            key = _key(self.region, node_id)
            if isinstance(part, BaseException) or self.written.get(key) == part["clock"]:
                continue
            await rpc.blocking(self.store.put, key, part)
            self.written[key] = part["clock"]
        items = await rpc.blocking(self.store.items)
        own = f"{self.region}|"
        for key in [k for k in items if k.startswith(own) and k[len(own):] not in live]:
            await rpc.blocking(self.store.delete, key)  # also those of a bridge before a restart
            self.written.pop(key, None)
        remote = {key.split("|", 1)[1]: part for key, part in items.items()
                  if not key.startswith(own)}
        await asyncio.gather(
            *(rpc.aget(self._tracker(n).import_remote.remote(remote), CALL_TIMEOUT_S,
                       "presence import") for n in live), return_exceptions=True)

    def _tracker(self, node_id: str) -> Any:
        handle = self.trackers.get(node_id)
        if handle is None:
            handle = self.trackers[node_id] = tracker_handle(self.name, node_id,
                                                             self.heartbeat_ms)
        return handle


def start_bridge(name: str, federation: Federation, heartbeat_ms: int,
                 interval_ms: int = DEFAULT_INTERVAL_MS, timeout: float = 60.0) -> Any:
    """Start (or find) this cluster's bridge of presence ``name`` and wait until it runs."""
    bridge = PresenceBridge.options(**control_plane_options(bridge_name(name))).remote(
        name, federation.region, sorted(federation.regions), sorted(federation.peers),
        heartbeat_ms, interval_ms)
    rpc.get(bridge.ready.remote(), timeout=timeout, what=f"presence bridge {name}")
    return bridge
