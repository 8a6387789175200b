"""The nemesis of the consensus workload: kills, pauses and cuts off the node of a group
member (the leader half the time), ends the fault after its hold, keeps the cluster's capacity
(a new worker for one that died or was declared dead) and waits until every group is whole
again (three voters, no learner, a leader, logs level) before the next fault."""

from __future__ import annotations

import time
from typing import Any

from herd.chaos.config import ChaosConfig
from herd.chaos.history import History
from herd.chaos.schedule import PlannedFault, plan_faults
from herd.consensus import Group
from herd.platform.errors import ClusterError
from herd.platform.gcs import nodes
from herd.platform.local.cluster import LocalCluster
from herd.platform.logging import get_logger

__all__ = ["ConsensusNemesis", "group_whole"]

log = get_logger("herd.chaos.consensus")

SUPPORTED = ("kill", "pause", "partition")
CAUGHT_UP_LAG = 100  # entries a follower may trail the leader's commit (clients keep writing)


def group_whole(group: Group, replicas: int) -> bool:
    statuses = group.status(timeout=1.0)
    leaders = [s for s in statuses if s["role"] == "leader"]
    if not leaders:
        return False
    leader = max(leaders, key=lambda s: s["term"])
    live = [s for s in statuses if s["role"] != "unreachable"]
    caught_up = all(leader["matches"].get(member, 0) + CAUGHT_UP_LAG >= leader["commit"]
                    for member in leader["voters"])
    return (len(leader["voters"]) == replicas and not leader["learners"]
            and len(live) == replicas and caught_up)


class ConsensusNemesis:
    def __init__(self, config: ChaosConfig, cluster: LocalCluster, history: History,
                 groups: list[Group], replicas: int) -> None:
        self.config, self.cluster, self.history = config, cluster, history
        self.groups, self.replicas = groups, replicas
        self.recoveries: list[float] = []
        self.replaced: set[str] = set()

    def run(self, end: float, stop: Any) -> None:
        for planned in plan_faults(self.config):
            due = time.monotonic() + planned.gap_s
            while time.monotonic() < min(end, due) and not stop.is_set():
                time.sleep(0.1)
            if time.monotonic() >= end or stop.is_set():
                return
            if not self.fault(planned):
                return

    def fault(self, planned: PlannedFault) -> bool:
        group = self.groups[int(planned.pick * 1000) % len(self.groups)]
        statuses = [s for s in group.status(timeout=1.0) if s["role"] != "unreachable"]
        leader = next((s for s in statuses if s["role"] == "leader"), None)
        head = self.cluster.head.node_id
        candidates = sorted({s["node_id"] for s in statuses if s["node_id"] != head})
        target = (leader["node_id"] if leader and leader["node_id"] != head
                  and planned.pick < 0.5 else planned.choose(candidates))
        op = self.history.invoke("nemesis", planned.kind,
                                 {"fault": planned.index, "group": group.name})
        if target is None:
            op.fail({"error": "no member off the head"})
            return True
        node = self.cluster.node_by_id(target)
        began = time.monotonic()
        if planned.kind == "kill":
            self.cluster.kill_node(node)
            self.replaced.add(target)
            self.add_node()  # while the group finds out, a node for its new member
        elif planned.kind == "pause":
            self.cluster.pause_node(node)
        else:
            self.cluster.partition(node)
        op.ok({"fault": planned.index, "node": node.name,
               "leader": bool(leader and leader["node_id"] == target)})
        if planned.kind != "kill":
            time.sleep(planned.hold_s)
            if planned.kind == "pause":
                self.cluster.resume_node(node)
            else:
                self.cluster.heal(node)
        recover = self.history.invoke("nemesis", "recover", {"fault": planned.index})
        deadline = began + self.config.recovery_bound_s
        while time.monotonic() < deadline:
            self.keep_capacity()
            if all(group_whole(g, self.replicas) for g in self.groups):
                seconds = round(time.monotonic() - began, 3)
                self.recoveries.append(seconds)
                recover.ok({"fault": planned.index, "seconds": seconds})
                return True
            time.sleep(0.5)
        recover.fail({"fault": planned.index, "error": "a group did not become whole"})
        return False

    def keep_capacity(self) -> None:
        """Start a worker for each that is gone, so a replacement member has a node."""
        alive = {n.node_id for n in nodes() if n.alive}
        for node in [n for n in self.cluster.nodes if not n.is_head]:
            if node.node_id and node.node_id not in alive and node.node_id not in self.replaced:
                self.replaced.add(node.node_id)
                self.add_node()

    def add_node(self) -> None:
        """One more worker; a node that does not come up (a loaded machine) is recorded, and
        the next round tries again only for the next dead node."""
        op = self.history.invoke("nemesis", "add_node", None)
        try:
            node = self.cluster.add_node()
        except ClusterError as exc:
            log.warning("add_node_failed", error=str(exc)[:200])
            op.fail(str(exc)[:200])
        else:
            op.ok({"node": node.name})
