"""Ray metrics of static (OTP) supervisors, tagged by supervisor: children running, child exits
by reason class, and the share of the restart intensity used in the current window.

Ray's agent drops a gauge that is not set again within two export intervals, so the gauges are
published again by a sampler in the supervisor's loop, from the core seen last."""

from __future__ import annotations

from functools import cache
from typing import Any

from ray.util.metrics import Counter, Gauge

from herd.platform.metrics import reason_tag, start_sampling

_TAGS = ("supervisor",)


class StaticMetrics:
    def __init__(self, supervisor: str) -> None:
        self.tags = {"supervisor": supervisor}
        self.children = Gauge("herd_sup_children_count", "children running", tag_keys=_TAGS)
        self.exits = Counter("herd_sup_child_exits_total", "child exits, by reason class",
                             tag_keys=(*_TAGS, "reason"))
        self.intensity = Gauge("herd_sup_intensity_used_ratio",
                               "restarts in the window / max_restarts", tag_keys=_TAGS)
        self._core: Any = None
        self._sampling: Any = None

    def exited(self, reason: str) -> None:
        self.exits.inc(tags={**self.tags, "reason": reason_tag(reason)})

    def observe(self, core: Any) -> None:
        """After each change of the supervisor (in its loop): publish its core's children and
        intensity now, and from then on every sampling interval."""
        self._core = core
        if self._sampling is None:
            self._sampling = start_sampling(self._publish)
        else:
            self._publish()

    def _publish(self) -> None:
        core = self._core
        self.children.set(sum(c.running is not None for c in core.children), tags=self.tags)
        limit = core.intensity
        self.intensity.set(limit.recent() / limit.max_restarts if limit.max_restarts
                           else float(limit.recent() > 0), tags=self.tags)


@cache
def of(supervisor: str) -> StaticMetrics:
    """The metrics of supervisor ``supervisor`` in this process (made on first use)."""
    return StaticMetrics(supervisor)
