"""Ray metrics of registry shards (tags: registry, shard; operations also by kind): names held,
operations, group-commit sizes and latency, watch events and subscribers."""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter, Gauge, Histogram

_TAGS = ("registry", "shard")
BATCH_BOUNDARIES = [1, 2, 5, 10, 50, 100, 500, 1000, 5000]
COMMIT_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]


class RegistryMetrics:
    def __init__(self, registry: str, shard: str) -> None:
        self.tags = {"registry": registry, "shard": shard}
        self.names = Gauge("herd_registry_names_count", "records held by the shard",
                           tag_keys=_TAGS)
        self.ops = Counter("herd_registry_ops_total", "operations, by kind (batch items count "
                           "one each)", tag_keys=(*_TAGS, "kind"))
        self.batch = Histogram("herd_registry_batch_size_writes", "writes per group commit",
                               boundaries=BATCH_BOUNDARIES, tag_keys=_TAGS)
        self.commit = Histogram("herd_registry_commit_latency_seconds",
                                "plan + durable store of one group commit",
                                boundaries=COMMIT_BOUNDARIES_S, tag_keys=_TAGS)
        self.watch_events = Counter("herd_registry_watch_events_total",
                                    "changes published to watchers and subscribers",
                                    tag_keys=_TAGS)
        self.subscribers = Gauge("herd_registry_watch_subscribers_count",
                                 "actor subscribers pushed every change", tag_keys=_TAGS)

    def op(self, kind: str, count: int = 1) -> None:
        if count:
            self.ops.inc(count, tags={**self.tags, "kind": kind})

    def committed(self, writes: int, seconds: float) -> None:
        self.batch.observe(writes, tags=self.tags)
        self.commit.observe(seconds, tags=self.tags)

    def published(self, events: int) -> None:
        if events:
            self.watch_events.inc(events, tags=self.tags)

    def sample(self, names: int, subscribers: int) -> None:
        self.names.set(names, tags=self.tags)
        self.subscribers.set(subscribers, tags=self.tags)


@cache
def of(registry: str, shard: str) -> RegistryMetrics:
    """The metrics of one shard in this process (made on first use)."""
    return RegistryMetrics(registry, shard)
