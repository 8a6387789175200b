"""Ray metrics of dynamic supervisors, one set per member (tags: supervisor, node; restarts also
by reason class). Exported by Ray's metrics agent; see :mod:`herd.platform.metrics`."""

from __future__ import annotations

from collections.abc import Iterable

from ray.util.metrics import Counter, Gauge, Histogram

from herd.platform.metrics import node_tag, reason_tag, region_tag
from herd.supervisors.otp.intensity import RestartIntensity

_TAGS = ("supervisor", "node", "region")
FAILOVER_BOUNDARIES_S = [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32]


class DynamicMetrics:
    """Children, restarts by reason, failovers and their latency, unplaced orphans and the
    restart intensity used by the children of one member."""

    def __init__(self, supervisor: str, node_id: str) -> None:
        self.tags = {"supervisor": supervisor, "node": node_tag(node_id), "region": region_tag()}
        self.children = Gauge("herd_dsup_children_count", "children running on this member",
                              tag_keys=_TAGS)
        self.restarts = Counter("herd_dsup_restarts_total", "child restarts, by exit reason",
                                tag_keys=(*_TAGS, "reason"))
        self.failovers = Counter("herd_dsup_failovers_total", "children claimed from a dead node",
                                 tag_keys=_TAGS)
        self.failover_latency = Histogram(
            "herd_dsup_failover_latency_seconds", "NodeDown seen -> child running again",
            boundaries=FAILOVER_BOUNDARIES_S, tag_keys=_TAGS)
        self.unplaced = Gauge("herd_dsup_unplaced_children_count",
                              "orphans no member can take (last reconcile round)", tag_keys=_TAGS)
        self.intensity = Gauge("herd_dsup_intensity_used_ratio",
                               "highest share of a child's restart budget used in its window",
                               tag_keys=_TAGS)
        self._unplaced_this_round = 0

    def running(self, count: int, budgets: Iterable[RestartIntensity] = ()) -> None:
        self.children.set(count, tags=self.tags)
        used = max((b.recent() / b.max_restarts if b.max_restarts else float(b.recent() > 0)
                    for b in budgets), default=0.0)
        self.intensity.set(used, tags=self.tags)
        self.unplaced.set(self._unplaced_this_round, tags=self.tags)
        self._unplaced_this_round = 0

    def restarted(self, reason: str = "other", count: int = 1) -> None:
        self.restarts.inc(count, tags={**self.tags, "reason": reason_tag(reason)})

    def failed_over(self, latency_s: float | None) -> None:
        self.failovers.inc(tags=self.tags)
        if latency_s is not None:
            self.failover_latency.observe(latency_s, tags=self.tags)

    def unplaced_children(self, count: int) -> None:
        """Orphans of this round nobody can take; published by the round's :meth:`running`."""
        self._unplaced_this_round += count
