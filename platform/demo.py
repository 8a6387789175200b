"""``herd demo`` at the platform level: a real 3-node, 2-region cluster, its membership events
while a worker node is killed, and a clean stop."""

from __future__ import annotations

import time
from collections.abc import Callable

from herd.platform.cluster import LocalCluster
from herd.platform.membership import Membership, NodeDown

Echo = Callable[[str], None]


def node_table(cluster: LocalCluster, echo: Echo) -> None:
    echo(f"  {'NAME':<10} {'NODE ID':<14} {'REGION':<9} {'ZONE':<11} ALIVE")
    for node in cluster.nodes:
        echo(f"  {node.name:<10} {(node.node_id or '')[:12]:<14} {node.region or '-':<9} "
             f"{node.zone or '-':<11} {node.alive}")


def run_demo(echo: Echo) -> None:
    echo("starting a local cluster: 3 nodes (real `ray start`), regions us-east/us-west ...")
    started = time.monotonic()
    with LocalCluster(nodes=3, regions=["us-east", "us-west"]) as cluster:
        echo(f"cluster up in {time.monotonic() - started:.1f} s at {cluster.address}")
        node_table(cluster, echo)
        cluster.connect()
        membership = Membership.start()
        since = membership.stats()["seq"]
        victim = cluster.worker_nodes[0]
        echo(f"killing {victim.name} ({victim.node_id[:12]}, {victim.region}) with SIGKILL ...")
        killed_at = time.time()
        cluster.kill_node(victim)
        for event in membership.events(since=since, timeout=30):
            echo(f"  event {type(event).__name__} node={event.node_id[:12]} "
                 f"region={event.region} seq={event.seq}")
            if isinstance(event, NodeDown) and event.node_id == victim.node_id:
                echo(f"NodeDown seen {event.at - killed_at:.2f} s after the kill")
                break
        node_table(cluster, echo)
        echo("stopping the cluster ...")
    echo("done: every process of the cluster is stopped")
