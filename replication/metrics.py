"""Ray metrics of replicated stores, sampled in each replica (tags: store, region; per peer
region too): pending deltas, replication lag, bytes sent, refused messages, buffered bytes."""

from __future__ import annotations

from typing import Any

from ray.util.metrics import Gauge

from herd.platform.metrics import TotalsCounter

_TAGS = ("store", "region")
_PEER_TAGS = (*_TAGS, "peer")


class ReplicaMetrics:
    def __init__(self, store: str, region: str) -> None:
        self.tags = {"store": store, "region": region}
        self.pending = Gauge("herd_repl_pending_deltas_count", "deltas a peer has not acked",
                             tag_keys=_PEER_TAGS)
        self.lag = Gauge("herd_repl_peer_lag_milliseconds",
                         "ms since the peer's last ack while it is owed deltas (0 when it has "
                         "them all)", tag_keys=_PEER_TAGS)
        self.sent = TotalsCounter("herd_repl_sent_bytes_total", "delta and state bytes sent",
                                  _PEER_TAGS)
        self.refusals = TotalsCounter("herd_repl_refusals_total",
                                      "messages refused, by this replica or by its peers", _TAGS)
        self.buffer = Gauge("herd_repl_buffer_bytes", "bytes of deltas kept for peers",
                            tag_keys=_TAGS)

    def sample(self, status: dict[str, Any]) -> None:
        """From ``ReplicaCore.status()``."""
        for peer, view in status["peers"].items():
            tags = {**self.tags, "peer": peer}
            self.pending.set(view["pending"], tags=tags)
            if view["lag_ms"] is not None:
                self.lag.set(view["lag_ms"], tags=tags)
            self.sent.observe(view["delta_bytes"] + view["state_bytes"], tags)
        self.refusals.observe(sum(status["rejected"].values())
                              + sum(status["rejected_by_peers"].values()), self.tags)
        self.buffer.set(status["buffer"]["bytes"], tags=self.tags)
