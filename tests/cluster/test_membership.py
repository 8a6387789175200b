"""Membership events on a real 3-node cluster: node kill, join, pause/resume, dead subscribers."""

from __future__ import annotations

import time
from typing import Any

import pytest
import ray

from herd.platform import rpc
from herd.platform.control_plane import get_named, pinned_options
from herd.platform.membership import ACTOR_NAME, AsyncMembership, Membership, NodeDown, NodeUp
from herd.platform.waiting import wait_until

OWN_CLUSTER = True  # it asserts how membership starts on a fresh cluster and kills nodes


@ray.remote(num_cpus=0)
class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_membership_event(self, event: Any) -> None:
        self.events.append(event)

    def seen(self) -> list[Any]:
        return self.events


@pytest.fixture(scope="module")
def membership(cluster: Any) -> Membership:
    return Membership.start()


def _events_of(recorder: Any) -> list[Any]:
    return rpc.get(recorder.seen.remote(), timeout=10)


def test_view_matches_cluster(cluster: Any, membership: Membership) -> None:
    nodes = membership.nodes()
    assert {n.node_id for n in nodes} == {n.node_id for n in cluster.nodes if n.alive}
    regions = {n.node_id: n.region for n in nodes}
    for node in cluster.nodes:
        assert regions[node.node_id] == node.region
    assert sum(n.is_head for n in nodes) == 1


def test_subscriber_gets_replay_then_node_down_on_kill(cluster: Any,
                                                       membership: Membership) -> None:
    recorder = Recorder.options(**pinned_options(cluster.head.node_id)).remote()
    membership.subscribe(recorder)
    wait_until(lambda: len(_events_of(recorder)) >= len(cluster.nodes), 10, what="replay")
    victim = cluster.worker_nodes[0]
    killed_at = time.time()
    cluster.kill_node(victim)
    down = wait_until(lambda: [e for e in _events_of(recorder)
                               if isinstance(e, NodeDown) and e.node_id == victim.node_id],
                      10, what="NodeDown for the killed node")
    assert down[0].at - killed_at < 10
    assert victim.node_id not in {n.node_id for n in membership.nodes()}
    replacement = cluster.add_node(region=victim.region)
    wait_until(lambda: [e for e in _events_of(recorder)
                        if isinstance(e, NodeUp) and e.node_id == replacement.node_id],
               10, what="NodeUp for the joined node")


def _next_matching(watch: Any, kind: type, node_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in watch.poll(timeout=1):
            if isinstance(event, kind) and event.node_id == node_id:
                return event
    return None


def test_driver_watch_sees_join(cluster: Any, membership: Membership) -> None:
    with membership.watch() as watch:
        node = cluster.add_node(region="us-west")
        seen = _next_matching(watch, NodeUp, node.node_id, 15)
    assert seen is not None and seen.region == "us-west"
    cluster.stop_node(node)
    wait_until(lambda: node.node_id not in {n.node_id for n in membership.nodes()}, 15,
               what="graceful stop seen as NodeDown")


def test_watch_position_is_fixed_when_it_is_created(cluster: Any,
                                                    membership: Membership) -> None:
    """A node that goes down after ``watch()`` returned and before the first read is seen
    (the old ``events()`` generator read its starting point at the first ``next()``)."""
    node = cluster.add_node(region="us-east")
    wait_until(lambda: node.node_id in {n.node_id for n in membership.nodes()}, 15,
               what="node joined")
    watch = Membership.get().watch()
    cluster.stop_node(node)
    wait_until(lambda: node.node_id not in {n.node_id for n in membership.nodes()}, 15,
               what="NodeDown applied")
    down = _next_matching(watch, NodeDown, node.node_id, 5)
    assert down is not None and not down.node.alive
    assert watch.poll(timeout=0.2) == [] and watch.since >= down.seq


def test_paused_node_is_declared_dead_and_fenced_on_resume(cluster: Any,
                                                            membership: Membership) -> None:
    victim = cluster.worker_nodes[0]
    cluster.pause_node(victim)
    wait_until(lambda: victim.node_id not in {n.node_id for n in membership.nodes()}, 15,
               what="paused node declared dead")
    cluster.resume_node(victim)
    # Ray's raylet exits once it learns the GCS declared it dead: the node must not come back.
    wait_until(lambda: not victim.pids, 30, interval=0.2, what="resumed node's processes exit")
    assert victim.node_id not in {n.node_id for n in membership.nodes()}
    cluster.add_node(region=victim.region)


def test_dead_subscriber_is_dropped(cluster: Any, membership: Membership) -> None:
    recorder = Recorder.options(**pinned_options(cluster.head.node_id)).remote()
    membership.subscribe(recorder, replay=False)
    before = membership.stats()["subscribers"]
    ray.kill(recorder)
    node = cluster.add_node()
    wait_until(lambda: membership.stats()["subscribers"] < before, 15,
               what="dead subscriber dropped")
    cluster.stop_node(node)


def test_actor_restart_reloads_state(cluster: Any, membership: Membership) -> None:
    seq_before = membership.stats()["seq"]
    pid = rpc.get(membership.actor.__ray_call__.remote(lambda self: __import__("os").getpid()),
                  timeout=10)
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    stats = wait_until(lambda: _stats_or_none(membership), 30, what="membership restarted")
    assert stats["restarted"] and stats["seq"] >= seq_before
    assert {n.node_id for n in membership.nodes()} == {n.node_id for n in cluster.nodes
                                                       if n.alive}


def _stats_or_none(membership: Membership) -> dict[str, Any] | None:
    try:
        return membership.stats(timeout=2)
    except Exception:
        return None


@ray.remote(num_cpus=0)
class AsyncClient:
    async def use(self) -> dict[str, Any]:
        membership = await AsyncMembership.get()
        me = ray.get_runtime_context().current_actor
        seq = await membership.subscribe(me, "on_membership_event", replay=False)
        stats = await membership.stats()
        nodes = await membership.nodes()
        removed = await membership.unsubscribe(me)
        return {"seq": seq == stats["seq"], "nodes": sorted(n.node_id for n in nodes),
                "removed": removed,
                "blocking_get": bool(ray._private.worker.blocking_get_inside_async_warned)}

    async def on_membership_event(self, event: Any) -> None:
        pass


def test_async_membership_from_an_async_actor(cluster: Any, membership: Membership) -> None:
    out = rpc.get(AsyncClient.remote().use.remote(), timeout=60)
    assert out == {"seq": True, "nodes": sorted(n.node_id for n in membership.nodes()),
                   "removed": True, "blocking_get": False}


def test_get_starts_membership_on_demand(cluster: Any, membership: Membership) -> None:
    ray.kill(membership.actor, no_restart=True)
    wait_until(lambda: get_named(ACTOR_NAME) is None, 30, what="membership actor gone")
    started = Membership.get()
    assert {n.node_id for n in started.nodes()} == {n.node_id for n in cluster.nodes
                                                    if n.alive}
