"""Ray metrics of the membership actor: nodes by state and region, node events by kind, and the
time one scan of the GCS node table takes (herd's share of failure detection: Ray's GCS health
check declares the node dead, the next scan reports it)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

from herd.platform.gcs import NodeInfo

SCAN_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]


class MembershipMetrics:
    def __init__(self) -> None:
        self.nodes = Gauge("herd_membership_nodes_count", "nodes in the GCS node table",
                           tag_keys=("state", "region"))
        self.events = Counter("herd_membership_events_total", "NodeUp / NodeDown events",
                              tag_keys=("kind",))
        self.scan = Histogram("herd_membership_scan_latency_seconds",
                              "one read of the GCS node table and its diff",
                              boundaries=SCAN_BOUNDARIES_S)
        self._shown: set[tuple[str, str]] = set()

    def scanned(self, entries: Iterable[NodeInfo], events: Sequence[Any],
                seconds: float) -> None:
        counts = Tally(("alive" if n.alive else "dead", n.region or "none") for n in entries)
        for state, region in self._shown - set(counts):
            self.nodes.set(0, tags={"state": state, "region": region})
        for (state, region), count in counts.items():
            self.nodes.set(count, tags={"state": state, "region": region})
        self._shown = set(counts)
        for event in events:
            self.events.inc(tags={"kind": type(event).__name__})
        self.scan.observe(seconds)
