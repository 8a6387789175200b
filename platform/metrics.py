"""What herd's metric modules share: sampling gauges in an actor's loop, bounded tag values, and
counters fed from running totals.

Every herd actor exports its metrics through Ray's metrics agent (``ray.util.metrics``, the way
Ray Serve does); the agent of each node serves them at ``http://<node>:<metrics-export-port>/
metrics`` with Ray's ``ray_`` prefix. Names follow ``herd_<area>_<what>_<unit>``; tags stay
bounded (supervisor, registry, store, node, region, a reason class): per-child data belongs in
the dashboard, never in a tag.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping

import ray
from ray.util.metrics import Counter

from herd.platform.logging import get_logger

#: Seconds between two samples of an actor's gauges (``HERD_METRICS_INTERVAL_S``).
DEFAULT_SAMPLE_INTERVAL_S = 5.0
NODE_TAG_CHARS = 12
#: Exit and restart reasons as tags: the first word of a reason, one of these, else "other".
REASON_CLASSES = ("killed", "exception", "exited", "shutdown", "normal", "host_died",
                  "start_failed", "timeout", "node_down")

log = get_logger("herd.metrics")

Sample = Callable[[], Awaitable[None] | None]


def sample_interval_s() -> float:
    try:
        return max(0.1, float(os.environ.get("HERD_METRICS_INTERVAL_S", "")))
    except ValueError:
        return DEFAULT_SAMPLE_INTERVAL_S


def node_tag(node_id: str | None) -> str:
    return (node_id or "unknown")[:NODE_TAG_CHARS]


def region_tag() -> str:
    """The ``region`` label of the node this actor runs on ("none" without one)."""
    return ray.get_runtime_context().get_node_labels().get("region") or "none"


def reason_tag(reason: str | None) -> str:
    """``"exception: ValueError('x')"`` -> ``"exception"``; unknown reasons -> ``"other"``."""
    word = (reason or "").strip().split(":", 1)[0].split(" ", 1)[0].lower()
    return word if word in REASON_CLASSES else "other"


def start_sampling(sample: Sample, interval_s: float | None = None) -> asyncio.Task[None]:
    """Call ``sample()`` (it sets gauges) now and every ``interval_s`` in the running loop until
    the task is cancelled; a failing sample is logged, never fatal to the actor."""

    async def loop() -> None:
        every = interval_s or sample_interval_s()
        while True:
            try:
                result = sample()
                if result is not None:
                    await result
            except Exception as exc:  # a metric must never take an actor down
                log.warning("metrics_sample_failed", error=repr(exc))
            await asyncio.sleep(every)

    return asyncio.get_running_loop().create_task(loop())


class TotalsCounter:
    """A Ray counter fed from running totals the actor keeps anyway: each :meth:`observe`
    adds what grew since the last one, per tag set."""

    def __init__(self, name: str, description: str, tag_keys: tuple[str, ...]) -> None:
        self.counter = Counter(name, description, tag_keys=tag_keys)
        self._last: dict[tuple[tuple[str, str], ...], float] = {}

    def observe(self, total: float, tags: Mapping[str, str]) -> None:
        key = tuple(sorted(tags.items()))
        grown = total - self._last.get(key, 0.0)
        self._last[key] = total
        if grown > 0:
            self.counter.inc(grown, tags=dict(tags))

