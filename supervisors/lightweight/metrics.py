"""Ray metrics of lightweight hosts, sampled in the host's loop (tags: supervisor, node):
children, loop lag, calls served and the host process's resident memory."""

from __future__ import annotations

from typing import Any

from ray.util.metrics import Gauge

from herd.platform.metrics import TotalsCounter, node_tag, region_tag
from herd.supervisors.lightweight.memory import rss_bytes

_TAGS = ("supervisor", "node", "region")


class HostMetrics:
    def __init__(self, host: Any, node_id: str) -> None:
        self.host = host
        self.tags = {"supervisor": host.owner, "node": node_tag(node_id), "region": region_tag()}
        self.children = Gauge("herd_lw_children_count", "lightweight children on this host",
                              tag_keys=_TAGS)
        self.loop_lag = Gauge("herd_lw_loop_lag_seconds", "last measured lag of the host's loop",
                              tag_keys=_TAGS)
        self.memory = Gauge("herd_lw_memory_bytes", "resident memory of the host process",
                            tag_keys=_TAGS)
        self.calls = TotalsCounter("herd_lw_calls_total", "calls served by the host's children",
                                   _TAGS)

    def sample(self) -> None:
        status = self.host.runtime.status(False)
        self.children.set(status["children"], tags=self.tags)
        self.calls.observe(status["calls"], self.tags)
        if self.host.watchdog is not None:
            self.loop_lag.set(self.host.watchdog.last_lag_s, tags=self.tags)
        self.memory.set(rss_bytes(), tags=self.tags)
