"""PubSub on the shared 3-node cluster (subscribers on every node, ordering, dead subscribers,
listeners, fan-out restart, bad input) and QuorumCall against real tasks."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import ray
from ray.exceptions import RayError

from herd.platform import rpc
from herd.platform.control_plane import HERD_NAMESPACE, pinned_options
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.platform.pubsub import PubSub
from herd.platform.pubsub_node import ACTOR_PREFIX
from herd.platform.quorum import QuorumCall, QuorumNotReached, QuorumTimeout
from herd.platform.waiting import wait_until


@ray.remote(num_cpus=0)
class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def on_message(self, topic: str, message: Any) -> None:
        self.got.append((topic, message))

    def seen(self) -> list[tuple[str, Any]]:
        return self.got


@ray.remote(num_cpus=0)
def publish_many(topic: str, prefix: str, n: int) -> int:
    pubsub = PubSub(timeout=20)
    return sum(pubsub.publish(topic, f"{prefix}{i}") for i in range(n))


@ray.remote(num_cpus=0, max_retries=0)
def replica(i: int, fail: bool = False, delay_s: float = 0.0) -> int:
    time.sleep(delay_s)
    if fail:
        raise ValueError(f"replica {i} refused")
    return i


@pytest.fixture(scope="module")
def pubsub(cluster: Any) -> PubSub:
    return PubSub(timeout=20)


@pytest.fixture(scope="module")
def recorders(cluster: Any) -> dict[str, Any]:
    """One subscriber actor on each node, by node id."""
    handles = {node.node_id: Recorder.options(**pinned_options(node.node_id)).remote()
               for node in cluster.nodes}
    rpc.get([h.seen.remote() for h in handles.values()], timeout=60, what="recorders ready")
    return handles


def seen(handle: Any) -> list[tuple[str, Any]]:
    return rpc.get(handle.seen.remote(), timeout=10)


def test_every_node_gets_each_publish_once_in_publisher_order(
        cluster: Any, pubsub: PubSub, recorders: dict[str, Any]) -> None:
    for handle in recorders.values():
        assert pubsub.subscribe("orders", handle) is True
    assert pubsub.subscribe("orders", next(iter(recorders.values()))) is False  # idempotent
    assert pubsub.subscribers("orders") == sorted(h._actor_id.hex() for h in recorders.values())
    for node_id, handle in recorders.items():  # registered with the fan-out of its own node
        local = ray.get_actor(f"{ACTOR_PREFIX}{node_id}", namespace=HERD_NAMESPACE)
        stats = rpc.get(local.stats.remote(), timeout=10)
        assert stats["subscribers"]["orders"] == [handle._actor_id.hex()]

    with pubsub.listen("orders", timeout=60) as listener:
        n = 15
        remote = publish_many.options(**pinned_options(cluster.worker_nodes[0].node_id)).remote(
            "orders", "b", n)
        pushed = [pubsub.publish("orders", f"a{i}") for i in range(n)]
        assert pushed == [len(recorders) + 1] * n  # every subscriber plus the listener
        assert rpc.get(remote, timeout=60) == (len(recorders) + 1) * n
        heard = list(itertools.islice(listener, 2 * n))

    expected = {p: [f"{p}{i}" for i in range(n)] for p in "ab"}
    for handle in recorders.values():
        wait_until(lambda h=handle: len(seen(h)) >= 2 * n, 20, what="all deliveries")
    for stream in [[m for _, m in seen(h)] for h in recorders.values()] + [heard]:
        assert len(stream) == 2 * n  # exactly once
        for prefix, messages in expected.items():  # each publisher's order is kept
            assert [m for m in stream if m.startswith(prefix)] == messages
    assert all(topic == "orders" for h in recorders.values() for topic, _ in seen(h))


def test_dead_subscriber_is_dropped(cluster: Any, pubsub: PubSub,
                                    recorders: dict[str, Any]) -> None:
    worker = cluster.worker_nodes[-1].node_id
    healthy = recorders[worker]
    doomed = Recorder.options(**pinned_options(worker)).remote()
    pubsub.subscribe("alerts", healthy)
    pubsub.subscribe("alerts", doomed)
    assert len(pubsub.subscribers("alerts")) == 2
    ray.kill(doomed)
    assert pubsub.publish("alerts", "first") == 2  # pushed, and found dead on delivery
    wait_until(lambda: pubsub.subscribers("alerts") == [healthy._actor_id.hex()], 20,
               what="dead subscriber dropped")
    assert pubsub.publish("alerts", "second") == 1
    wait_until(lambda: [m for t, m in seen(healthy) if t == "alerts"] == ["first", "second"],
               10, what="healthy subscriber keeps receiving")
    with pytest.raises(ConfigError) as info:
        pubsub.subscribe("alerts", doomed)
    assert info.value.field == "handle"
    assert pubsub.unsubscribe("alerts", healthy) is True
    assert pubsub.unsubscribe("alerts", healthy) is False
    assert pubsub.publish("alerts", "third") == 0


def test_no_subscribers_and_bad_input(pubsub: PubSub, recorders: dict[str, Any]) -> None:
    assert pubsub.publish("nobody-listens", {"any": "message"}) == 0
    handle = next(iter(recorders.values()))
    for call, field in [
        (lambda: pubsub.publish("", 1), "topic"),
        (lambda: pubsub.publish("   ", 1), "topic"),
        (lambda: pubsub.publish(42, 1), "topic"),  # type: ignore[arg-type]
        (lambda: pubsub.subscribe(None, handle), "topic"),  # type: ignore[arg-type]
        (lambda: pubsub.subscribe("t", handle, "no_such_method"), "method"),
        (lambda: pubsub.subscribe("t", handle, ""), "method"),
        (lambda: pubsub.subscribe("t", "not a handle"), "handle"),
        (lambda: pubsub.unsubscribe("t", object()), "handle"),
        (lambda: pubsub.listen("", timeout=1), "topic"),
        (lambda: pubsub.listen("t", timeout=0), "timeout"),
        (lambda: pubsub.listen("t", buffer_size=0), "buffer_size"),
        (lambda: PubSub(timeout=-1), "timeout"),
    ]:
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.field == field


def test_restarted_fan_out_actor_reloads_its_subscriptions(
        cluster: Any, pubsub: PubSub, recorders: dict[str, Any]) -> None:
    node_id = cluster.worker_nodes[0].node_id
    handle = recorders[node_id]
    pubsub.subscribe("durable", handle)
    fan_out = ray.get_actor(f"{ACTOR_PREFIX}{node_id}", namespace=HERD_NAMESPACE)
    ray.kill(fan_out, no_restart=False)

    def restarted() -> bool:
        try:
            stats = rpc.get(fan_out.stats.remote(), timeout=5)
        except (RayError, HerdTimeoutError):
            return False
        return stats["reloaded"] and bool(stats["subscribers"].get("durable"))

    wait_until(restarted, 30, interval=0.3, what="fan-out actor restarted with its state")
    assert pubsub.publish("durable", "after restart") == 1
    wait_until(lambda: ("durable", "after restart") in seen(handle), 10, what="delivery")


def test_quorum_call_on_real_tasks(cluster: Any) -> None:
    ok = QuorumCall([replica.remote(i, fail=i in (1, 3)) for i in range(5)], timeout=30).wait()
    assert ok.reached and sorted(ok.successes) == [0, 2, 4] and ok.values == [0, 2, 4]

    started = time.monotonic()
    with pytest.raises(QuorumNotReached) as no:
        QuorumCall([replica.remote(0), replica.remote(1, fail=True),
                    replica.remote(2, fail=True)], required=2, timeout=30,
                   what="write k").wait()
    assert time.monotonic() - started < 20  # decided as soon as it was impossible
    assert sorted(no.value.result.failures) == [1, 2] and "replica 1 refused" in str(no.value)
    assert str(no.value).startswith("write k: no quorum: ")

    slow = [replica.remote(0), replica.remote(1, delay_s=5), replica.remote(2, delay_s=5)]
    with pytest.raises(QuorumTimeout) as late:
        QuorumCall(slow, required=2, timeout=1.0, what="read k").wait()
    assert {1, 2} <= set(late.value.result.pending)
    assert late.value.result.successes in ({}, {0: 0})
    assert "quorum not reached within 1.0 s" in str(late.value)
