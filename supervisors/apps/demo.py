"""``herd demo``: a real 3-node, 2-region local cluster runs ``configs/demo.yaml``; the worker
node holding most children is SIGKILLed and every child is shown coming back elsewhere."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path

from herd.platform import rpc
from herd.platform.cluster import LocalCluster
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.registry import via
from herd.supervisors.apps.app import AppSpec, run_app, stop_app
from herd.supervisors.apps.status import render, status
from herd.supervisors.dynamic.supervisor import DynamicSupervisor

Echo = Callable[[str], None]
FAILOVER_DEADLINE_S = 90.0


def run_demo(app_path: Path, echo: Echo) -> None:
    if not app_path.exists():
        raise ConfigError("demo app not found (run from the repository root, or pass --app)",
                          field="--app", value=str(app_path))
    spec = AppSpec.from_yaml(app_path)
    dynamic = [s for s in spec.supervisors if s.kind == "dynamic"]
    if not dynamic:
        raise ConfigError("the demo needs a dynamic supervisor", source=str(app_path),
                          field="supervisors", value=[s.kind for s in spec.supervisors])
    echo("starting a local cluster: 3 real `ray start` nodes, regions us-east/us-west ...")
    begin = time.monotonic()
    with LocalCluster(nodes=3, regions=["us-east", "us-west"]) as cluster:
        cluster.connect(log_to_driver=False)
        echo(f"cluster up in {time.monotonic() - begin:.1f} s at {cluster.address}")
        echo(f"starting app {spec.name!r} from {app_path} ...")
        run_app(spec, source=str(app_path))
        _show(echo)
        sup = DynamicSupervisor.get(dynamic[0].name)
        _kill_busiest_and_watch(cluster, sup, echo)
        _show(echo)
        echo(f"stopping app {spec.name!r} (reverse start order) and the cluster ...")
        stop_app(spec.name)
    echo("done: the app is stopped and every process of the cluster is gone")


def _show(echo: Echo) -> None:
    for line in render(status()):
        echo(line)


def _kill_busiest_and_watch(cluster: LocalCluster, sup: DynamicSupervisor, echo: Echo) -> None:
    before = {c.id: c for c in sup.which_children()}
    workers = {n.node_id for n in cluster.worker_nodes}
    load = Tally(c.node_id for c in before.values() if c.node_id in workers)
    victim_id = load.most_common(1)[0][0] if load else cluster.worker_nodes[0].node_id
    victim = cluster.node_by_id(victim_id)
    moving = sorted(cid for cid, c in before.items() if c.node_id == victim_id)
    echo(f"killing {victim.name} ({victim_id[:12]}, {victim.region}) with SIGKILL: it holds "
         f"{len(moving)} of {len(before)} children: {', '.join(moving)}")
    killed = time.monotonic()
    cluster.kill_node(victim)
    back: dict[str, float] = {}
    last_tick = killed
    while len(back) < len(moving):
        now = time.monotonic()
        if now - killed > FAILOVER_DEADLINE_S:
            raise HerdTimeoutError(f"children {sorted(set(moving) - set(back))} not back "
                                   f"within {FAILOVER_DEADLINE_S:.0f} s")
        for child in sup.which_children():
            if child.id in moving and child.id not in back and child.status == "running" \
                    and child.handle is not None and child.node_id != victim_id:
                back[child.id] = now - killed
                where = rpc.get(via(child.name).where.remote(), timeout=10)
                echo(f"  {child.id}: back on {child.node_id[:12]} ({where['region']}) after "
                     f"{back[child.id]:.2f} s, incarnation {child.incarnation}, "
                     f"epoch {child.epoch}")
        if now - last_tick >= 2:
            echo(f"  ... {time.monotonic() - killed:.0f} s: {len(back)}/{len(moving)} back")
            last_tick = now
        time.sleep(0.1)
    if back:
        echo(f"all {len(moving)} children back; slowest after {max(back.values()):.2f} s "
             f"(health checks declare a node dead in about "
             f"{cluster.health_check.expected_detection_s():.1f} s)")
