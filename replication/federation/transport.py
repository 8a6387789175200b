"""The replicas' transport to regions served by other Ray clusters: through this cluster's
federation gateway (a :class:`~herd.replication.transport.PeerTransport`).

A store spanning clusters names it for every remote region::

    ReplicatedStore.start("carts", regions=["us-east", "us-west"],
                          remote_regions={"us-west": gateway_transport_spec()})

The replica asks the gateway actor (found in the registry, cached; looked up again when it
died) to post the bytes to the region's gateway, which hands them to that region's replica.
"""

from __future__ import annotations

from ray.exceptions import RayError

from herd.platform.errors import HerdError
from herd.platform.rpc import aget
from herd.registry import AsyncRegistry
from herd.replication.federation.gateway import GATEWAY_NAME
from herd.replication.models import TransportSpec
from herd.replication.transport import PeerUnreachable

#: Time the gateway actor may add on top of the HTTP request itself.
HOP_MARGIN_S = 1.0


def gateway_transport_spec(registry: str = "default") -> TransportSpec:
    """The ``remote_regions`` entry that routes a region through the federation gateway."""
    return TransportSpec(transport=f"{__name__}:GatewayTransport",
                         options={"registry": registry})


class GatewayTransport:
    """Delivers a replica's messages to a remote region through the local gateway actor."""

    def __init__(self, registry: str = "default") -> None:
        self.registry_name = registry
        self._registry: AsyncRegistry | None = None

    async def send(self, store: str, region: str, payload: bytes, timeout_s: float) -> bytes:
        if self._registry is None:
            self._registry = await AsyncRegistry.start(self.registry_name)
        try:
            gateway = await self._registry.lookup(GATEWAY_NAME, timeout=timeout_s)
        except HerdError as exc:
            raise PeerUnreachable(f"federation gateway lookup failed ({exc})") from exc
        if gateway is None:
            raise PeerUnreachable("no federation gateway runs in this cluster")
        try:
            reply: bytes = await aget(gateway.send.remote(region, payload, timeout_s),
                                      timeout_s + HOP_MARGIN_S, f"replicate {store} to {region}")
        except PeerUnreachable:
            raise
        except RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, PeerUnreachable):
                raise PeerUnreachable(str(cause)) from None
            self._registry.invalidate(GATEWAY_NAME, gateway)
            raise PeerUnreachable(f"federation gateway failed: {type(exc).__name__}") from exc
        except HerdError as exc:
            raise PeerUnreachable(f"{region} via the gateway: {exc}") from exc
        return reply
