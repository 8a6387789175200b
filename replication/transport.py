"""How a replica delivers protocol messages to a peer replica.

A transport takes the request bytes to the peer replica's ``receive(payload) -> bytes`` and
returns its reply bytes (``b""``: no reply). Inside one Ray cluster that is an actor call to the
peer's registered replica (:class:`ActorTransport`); between clusters a gateway client does the
same over HTTP (configured per remote region with a
:class:`~herd.replication.models.TransportSpec`). A transport raises
:class:`PeerUnreachable` when the peer cannot be reached in time; the replica retries later.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from ray.exceptions import RayError

from herd.platform.errors import HerdError
from herd.platform.rpc import aget
from herd.registry import AsyncRegistry
from herd.registry.connection import named
from herd.replication.errors import ReplicationError
from herd.replication.models import TransportSpec, replica_name


class PeerUnreachable(ReplicationError):
    """The peer replica did not answer (dead, not yet registered, partitioned, too slow)."""


class PeerTransport(Protocol):
    """Delivers one request to ``region``'s replica of ``store`` and returns its reply."""

    async def send(self, store: str, region: str, payload: bytes, timeout_s: float) -> bytes:
        ...


class ActorTransport:
    """In-cluster transport: a call to the peer replica's actor, found through the registry
    (cached; a handle whose actor died is looked up again)."""

    def __init__(self, registry: str = "default") -> None:
        self.registry_name = registry
        self._registry: AsyncRegistry | None = None

    async def send(self, store: str, region: str, payload: bytes, timeout_s: float) -> bytes:
        if self._registry is None:
            self._registry = await AsyncRegistry.start(self.registry_name)
        name = replica_name(store, region)
        try:
            handle = await self._registry.lookup(name, timeout=timeout_s)
        except HerdError as exc:
            raise PeerUnreachable(f"{name}: lookup failed ({exc})") from exc
        if handle is None:
            raise PeerUnreachable(f"{name}: not registered")
        try:
            reply: bytes = await aget(handle.receive.remote(payload), timeout_s,
                                      f"replicate to {name}")
        except (HerdError, RayError) as exc:
            named(self.registry_name).invalidate(name, handle)
            raise PeerUnreachable(f"{name}: {type(exc).__name__}") from exc
        return reply


def load_transport(spec: TransportSpec) -> Any:
    """Build the transport a :class:`TransportSpec` names (``"pkg.mod:Class"`` + options)."""
    module_name, _, attr = spec.transport.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(**spec.options)
