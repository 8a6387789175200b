"""Ray metrics of a federation gateway, sampled from its inbound statistics (tags: region of the
gateway, and origin region or refusal reason): messages accepted, refused, undeliverable, bytes."""

from __future__ import annotations

from typing import Any

from herd.platform.metrics import TotalsCounter


class GatewayMetrics:
    def __init__(self, region: str) -> None:
        self.tags = {"region": region}
        self.accepted = TotalsCounter("herd_fed_accepted_messages_total",
                                      "replication messages accepted, by origin region",
                                      ("region", "origin"))
        self.refused = TotalsCounter("herd_fed_refused_messages_total",
                                     "messages refused (bad token, size, peer), by reason",
                                     ("region", "reason"))
        self.undeliverable = TotalsCounter("herd_fed_undeliverable_messages_total",
                                           "good messages with no replica here, by reason",
                                           ("region", "reason"))
        self.bytes_in = TotalsCounter("herd_fed_received_bytes_total", "request bytes received",
                                      ("region",))

    def sample(self, stats: Any) -> None:
        """From the server's ``InboundStats``."""
        for origin, count in stats.accepted.items():
            self.accepted.observe(count, {**self.tags, "origin": origin})
        for reason, count in stats.refused.items():
            self.refused.observe(count, {**self.tags, "reason": reason})
        for reason, count in stats.undeliverable.items():
            self.undeliverable.observe(count, {**self.tags, "reason": reason})
        self.bytes_in.observe(stats.bytes_in, self.tags)
