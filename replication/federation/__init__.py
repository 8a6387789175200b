"""Federation of separate Ray clusters, one per region: a gateway per cluster (an aiohttp server in
a supervised actor) carries the replication protocol's messages between the clusters' replicas,
authenticated with a shared token and TLS when configured.

    federation = Federation.from_yaml("federation.yaml")
    start_gateway(federation)                      # in each cluster
    ReplicatedStore.start("carts", regions=sorted(federation.regions),
                          remote_regions={r: gateway_transport_spec() for r in federation.peers})

``FederatedRegions`` (``regions.py``) runs several such clusters on one machine, each in its own
network namespace, for tests, ``herd bench replication`` and ``herd demo regions``.
"""

from herd.replication.federation.config import Federation, TlsConfig, write_token_file
from herd.replication.federation.gateway import gateway_status, start_gateway
from herd.replication.federation.transport import GatewayTransport, gateway_transport_spec

__all__ = ["Federation", "GatewayTransport", "TlsConfig", "gateway_status",
           "gateway_transport_spec", "start_gateway", "write_token_file"]
