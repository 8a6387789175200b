"""``herd demo``: a real 3-node, 2-region local cluster runs ``configs/demo.yaml``; the worker
node holding most children is SIGKILLed and every child it held is shown coming back on a
surviving node (the dynamic supervisor's ``members="auto"`` keeps children off the head node
while workers exist, so the victim holds several)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path

from herd.platform.cluster import LocalCluster
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.registry import via
from herd.supervisors.apps.app import AppSpec, run_app, stop_app
from herd.supervisors.apps.status import render, status
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor

Echo = Callable[[str], None]
FAILOVER_DEADLINE_S = 90.0
PROGRESS_EVERY_S = 3.0
DEMO_REGIONS = ["us-east", "us-west"]


def run_demo(app_path: Path, echo: Echo) -> None:
    """Run the demo with the app at ``app_path``, printing progress through ``echo``."""
    if not app_path.exists():
        raise ConfigError("demo app not found (run from the repository root, or pass --app)",
                          field="--app", value=str(app_path))
    spec = AppSpec.from_yaml(app_path)
    dynamic = [s for s in spec.supervisors if s.kind == "dynamic"]
    if not dynamic:
        raise ConfigError("the demo needs a dynamic supervisor", source=str(app_path),
                          field="supervisors", value=[s.kind for s in spec.supervisors])
    echo(f"starting a local cluster: 3 real `ray start` nodes (a head and two workers), "
         f"regions {'/'.join(DEMO_REGIONS)} ...")
    begin = time.monotonic()
    with LocalCluster(nodes=3, regions=DEMO_REGIONS) as cluster:
        cluster.connect(log_to_driver=False)
        echo(f"cluster up in {time.monotonic() - begin:.1f} s at {cluster.address}")
        echo(f"starting app {spec.name!r} from {app_path} ...")
        begin = time.monotonic()
        run_app(spec, source=str(app_path))
        echo(f"app started in {time.monotonic() - begin:.1f} s")
        _show(echo)
        _kill_busiest_and_watch(cluster, DynamicSupervisor.get(dynamic[0].name), echo)
        _show(echo)
        echo(f"stopping app {spec.name!r} (reverse start order) and the cluster ...")
        stop_app(spec.name)
    echo("done: the app is stopped and every process of the cluster is gone")


def _show(echo: Echo) -> None:
    echo("")
    for line in render(status()):
        echo(line)
    echo("")


def _kill_busiest_and_watch(cluster: LocalCluster, sup: DynamicSupervisor, echo: Echo) -> None:
    before = {c.id: c for c in sup.which_children()}
    workers = {n.node_id for n in cluster.worker_nodes}
    load = Tally(c.node_id for c in before.values() if c.node_id in workers)
    if not load:
        raise HerdTimeoutError("no child of the dynamic supervisor runs on a worker node")
    victim_id, _ = load.most_common(1)[0]
    victim = cluster.node_by_id(str(victim_id))
    moving = sorted(cid for cid, c in before.items() if c.node_id == victim_id)
    echo(f"killing {victim.name} ({str(victim_id)[:12]}, {victim.region}) with SIGKILL: it "
         f"holds {len(moving)} of {len(before)} children: {', '.join(moving)}")
    killed = time.monotonic()
    cluster.kill_node(victim)
    back: dict[str, float] = {}
    last_progress = killed
    while len(back) < len(moving):
        now = time.monotonic()
        if now - killed > FAILOVER_DEADLINE_S:
            raise HerdTimeoutError(f"children {sorted(set(moving) - set(back))} not back "
                                   f"within {FAILOVER_DEADLINE_S:.0f} s")
        for child in sup.which_children():
            if child.id in moving and child.id not in back and _moved(child, victim_id):
                back[child.id] = now - killed
                _report_back(child, back[child.id], echo)
        if len(back) < len(moving) and now - last_progress >= PROGRESS_EVERY_S:
            echo(f"  ... {now - killed:.0f} s: {len(back)}/{len(moving)} back")
            last_progress = now
        time.sleep(0.1)
    echo(f"all {len(moving)} children back; the slowest after {max(back.values()):.1f} s "
         f"(Ray's health checks declare a node dead after about "
         f"{cluster.health_check.expected_detection_s():.1f} s)")


def _moved(child: DynamicChildInfo, victim_id: str) -> bool:
    return (child.status == "running" and child.handle is not None
            and child.node_id is not None and child.node_id != victim_id)


def _report_back(child: DynamicChildInfo, after_s: float, echo: Echo) -> None:
    where = via(child.name).where.call()  # answered by the new incarnation
    echo(f"  {child.id}: back after {after_s:.1f} s on {str(child.node_id)[:12]} "
         f"({where['region']}), pid {where['pid']}, incarnation {child.incarnation}, "
         f"epoch {child.epoch}")
