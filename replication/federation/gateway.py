"""The federation gateway of one cluster: a supervised Ray actor that runs the HTTP server peers
post to and the clients that post to peers.

It is the only process of the region that the other regions talk to. Inbound, it checks the
peer (token, origin, size, message; :mod:`.server`) and hands the bytes to this region's replica
of the store (``receive``, found in the registry under
:func:`herd.replication.models.replica_name`). Outbound, the replicas of this cluster call
:meth:`FederationGateway.send` (through :class:`~.transport.GatewayTransport`), which posts to
the peer's gateway and returns its reply bytes.

The server and clients live on an event loop of their own (a thread started by the
constructor), so binding the port happens while the actor is created: a gateway that cannot
listen fails to start and its supervisor sees it.

    gateway = start_gateway(Federation.from_yaml("federation.yaml"))   # root supervisor
    gateway_status()   # {"region", "inbound": {...}, "peers": {region: {...}}}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ray.exceptions import RayActorError

from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.registry import Registry, via
from herd.registry.aio import AsyncRegistry
from herd.replication.federation.client import PeerClients
from herd.replication.federation.config import Federation
from herd.replication.federation.server import GatewayServer
from herd.replication.models import replica_name
from herd.supervisors import ChildSpec, Supervisor

log = get_logger("herd.federation.gateway")

T = TypeVar("T")

SUPERVISOR = "herd-federation"
GATEWAY_CHILD = "gateway"
GATEWAY_NAME = f"{SUPERVISOR}/{GATEWAY_CHILD}"
START_TIMEOUT_S = 20.0
DELIVER_TIMEOUT_S = 30.0


class FederationGateway:
    """The gateway actor (a child of the ``herd-federation`` root supervisor)."""

    def __init__(self, federation: Federation, registry: str = "default") -> None:
        self.federation = federation
        self.registry_name = registry
        self.clients = PeerClients(federation)
        self.server = GatewayServer(federation, self._deliver, self._peer_status)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="herd-federation-gateway")
        self._thread.start()
        self.address = self._in_loop(self.server.start(), START_TIMEOUT_S)

    # ----------------------------------------------------------------------- actor methods
    async def send(self, region: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        """Post ``payload`` to ``region``'s gateway; its reply (``PeerUnreachable`` when the
        peer cannot be reached or refuses)."""
        return await self._await_in_loop(self.clients.send(region, payload, timeout_s))

    async def status(self) -> dict[str, Any]:
        return await self._await_in_loop(self.server.status())

    async def terminate(self, reason: str) -> None:
        """Close the listener and the peer connections (called by the child harness)."""
        await self._await_in_loop(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)

    # ----------------------------------------------------------------------------- inbound
    async def _deliver(self, store: str, payload: bytes) -> bytes:
        registry = await AsyncRegistry.get(self.registry_name)
        name = replica_name(store, self.federation.region)
        handle = await registry.lookup(name)
        if handle is None:
            raise LookupError(f"no replica of store {store!r} runs in region "
                              f"{self.federation.region!r}")
        try:
            reply = await asyncio.wait_for(handle.receive.remote(payload), DELIVER_TIMEOUT_S)
        except RayActorError:  # a cached holder that died: ask the registry once more
            handle = await registry.lookup(name, fresh=True)
            if handle is None:
                raise LookupError(f"the replica of store {store!r} is restarting") from None
            reply = await asyncio.wait_for(handle.receive.remote(payload), DELIVER_TIMEOUT_S)
        return bytes(reply)

    async def _peer_status(self) -> dict[str, Any]:
        return {"listen": list(self.address), "tls": self.federation.tls is not None,
                "peers": self.clients.status()}

    async def _close(self) -> None:
        await self.server.stop()
        await self.clients.close()

    # ------------------------------------------------------------------------------ loops
    def _in_loop(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _await_in_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))


def start_gateway(federation: Federation, registry: str = "default",
                  timeout: float | None = None) -> Supervisor:
    """Start this cluster's gateway under the ``herd-federation`` root supervisor (restarted
    per OTP ``permanent`` if it dies). Starts the registry if it is not running."""
    Registry.start(registry)
    spec = ChildSpec(id=GATEWAY_CHILD, actor=FederationGateway, args=(federation, registry),
                     restart="permanent", shutdown=5000,
                     options={"num_cpus": 0, "max_concurrency": 1000})
    return Supervisor.start(SUPERVISOR, [spec], strategy="one_for_one", max_restarts=10,
                            max_seconds=60, registry=registry, timeout=timeout)


def gateway_status(registry: str = "default", timeout: float = 10.0) -> dict[str, Any]:
    """The status of this cluster's gateway (``HerdError`` if none runs)."""
    try:
        status: dict[str, Any] = via(GATEWAY_NAME, registry=registry, timeout=timeout).status.call()
        return status
    except HerdError:
        raise
    except Exception as exc:
        raise HerdError(f"no federation gateway answers in this cluster: {exc}") from exc
