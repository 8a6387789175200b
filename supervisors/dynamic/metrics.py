"""Ray metrics of dynamic supervisors (exported by Ray's metrics agent when one runs)."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

_TAGS = ("supervisor", "node")


class DynamicMetrics:
    """Children per node, restarts, failovers and failover latency of one member."""

    def __init__(self, supervisor: str, node_id: str) -> None:
        self.tags = {"supervisor": supervisor, "node": node_id[:12]}
        self.children = Gauge("herd_dsup_children", "children running on this member's node",
                              tag_keys=_TAGS)
        self.restarts = Counter("herd_dsup_restarts", "child restarts after a crash",
                                tag_keys=_TAGS)
        self.failovers = Counter("herd_dsup_failovers", "children claimed from a dead node",
                                 tag_keys=_TAGS)
        self.failover_latency = Histogram(
            "herd_dsup_failover_latency_s", "NodeDown seen -> child running again",
            boundaries=[0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32], tag_keys=_TAGS)

    def running(self, count: int) -> None:
        self.children.set(count, tags=self.tags)

    def restarted(self) -> None:
        self.restarts.inc(tags=self.tags)

    def failed_over(self, latency_s: float | None) -> None:
        self.failovers.inc(tags=self.tags)
        if latency_s is not None:
            self.failover_latency.observe(latency_s, tags=self.tags)
