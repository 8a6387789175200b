"""``herd chaos --workload services``: the presence and cache workload
(``herd.chaos.services_workload``) on a local cluster this command starts, checked by
``herd.chaos.services_checker``. Its faults are process kills of tracked members (``kill``);
``--faults`` must name only those."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ray

from herd.chaos.config import parse_duration, parse_faults
from herd.chaos.history import History
from herd.chaos.services_checker import check_services
from herd.chaos.services_workload import ServicesWorkload
from herd.cli.common import DEFAULT_LOG_DIR, echo, ray_output_to
from herd.platform import erpc
from herd.platform.connection import leave_ray
from herd.platform.errors import ConfigError
from herd.platform.gcs import nodes
from herd.platform.local.cluster import LocalCluster
from herd.replication.cache import Cache
from herd.replication.presence import Presence

__all__ = ["run_services_chaos"]

PRESENCE_BOUND_S = 1.5  # 1 s after Ray reports the process dead, plus one observation
CACHE_SETTLE_S = 1.0
KILL_EVERY_S = 5.0
CALL_TIMEOUT_S = 60.0


class Member:
    """A tracked process of the workload."""

    def where(self) -> tuple[int, str]:
        return os.getpid(), ray.get_runtime_context().get_node_id()


def run_services_chaos(seed: int, duration: str, faults: str, out: Path | None,
                       workers: int) -> None:
    duration_s = parse_duration(duration, "--duration")
    if set(parse_faults(faults, "--faults")) - {"kill"}:
        raise ConfigError("the services workload injects process kills only", field="--faults",
                          value=faults)
    out = out or Path(f"chaos-services-{seed}.json")
    log_path = DEFAULT_LOG_DIR / f"chaos-services-{time.strftime('%Y%m%d-%H%M%S')}.log"
    history = History()
    with ray_output_to(log_path):
        echo(f"herd chaos --workload services: seed {seed}, {duration_s:g} s (logs: {log_path})")
        cluster = LocalCluster(nodes=1 + workers, regions=["eu", "us"])
        try:
            cluster.connect(log_to_driver=False)
            presence = Presence.start("chaos", timeout=CALL_TIMEOUT_S)
            cache = Cache.start("chaos", topology="replicated", timeout=CALL_TIMEOUT_S)
            live = [n.node_id for n in nodes() if n.alive]
            members = {f"m{i}": erpc.spawn_on(live[i % len(live)], Member,
                                              timeout=CALL_TIMEOUT_S)
                       for i in range(2 * len(live))}
            kills = min(len(members) - 1, max(1, int(duration_s / KILL_EVERY_S)))
            ServicesWorkload(presence, cache, members, history, seed).run(duration_s, kills)
            cache.close()
        finally:
            leave_ray()
            cluster.shutdown()
    violations = check_services(history, PRESENCE_BOUND_S, CACHE_SETTLE_S)
    operations = len(history.completions())
    out.write_text(json.dumps({"summary": {"seed": seed, "operations": operations,
                                           "violations": [v.to_dict() for v in violations]},
                               "history": history.to_list()}, default=repr))
    echo(f"{operations} operations; history and summary: {out}")
    if violations:
        for violation in violations:
            echo(f"VIOLATION {violation}", err=True)
        echo(f"replay with: herd chaos --workload services --seed {seed} --duration {duration}",
             err=True)
        sys.exit(1)
    echo(f"services: 0 violations (seed {seed})")
