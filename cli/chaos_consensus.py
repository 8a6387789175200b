"""``herd chaos --workload consensus``: the consensus nemesis and linearizability check
(``herd.chaos.consensus_workload``) on a local cluster this command starts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from herd.chaos.config import ChaosConfig, parse_duration, parse_faults
from herd.chaos.consensus_workload import HEALTH_CHECK, check_faults, run_consensus
from herd.cli.common import DEFAULT_LOG_DIR, echo, ray_output_to
from herd.platform.connection import leave_ray
from herd.platform.local.cluster import LocalCluster

__all__ = ["run_consensus_chaos"]


def run_consensus_chaos(seed: int, duration: str, faults: str, out: Path | None,
                        workers: int) -> None:
    config = ChaosConfig.build(seed=seed, duration_s=parse_duration(duration, "--duration"),
                               faults=parse_faults(faults, "--faults"), fault_gap_s=6.0,
                               hold_s=(1.0, 4.0), recovery_bound_s=60.0, op_gap_s=0.05)
    check_faults(config)
    out = out or Path(f"chaos-consensus-{seed}.json")
    log_path = DEFAULT_LOG_DIR / f"chaos-consensus-{time.strftime('%Y%m%d-%H%M%S')}.log"
    tty = sys.stdout.isatty()
    with ray_output_to(log_path):
        echo(f"herd chaos --workload consensus: seed {seed}, {config.duration_s:g} s, faults "
             f"{','.join(config.faults)} (logs: {log_path})")
        cluster = LocalCluster(nodes=1 + workers, regions=["us-east"],
                               health_check=HEALTH_CHECK, isolated_nodes=True)
        try:
            cluster.connect(log_to_driver=False)
            result = run_consensus(config, cluster, progress=(
                lambda text: echo(f"\r\033[K{text}", nl=False) if tty else None))
        finally:
            leave_ray()  # before the cluster goes: Ray ends a driver that lost its GCS
            cluster.shutdown()
    if tty:
        echo()
    out.write_text(json.dumps({"summary": result.summary,
                               "history": result.history.to_list()}, default=repr))
    echo(json.dumps(result.summary, default=repr))
    echo(f"history and summary: {out}")
    if result.violations:
        for violation in result.violations:
            echo(f"VIOLATION {violation}", err=True)
        echo(f"replay with: herd chaos --workload consensus --seed {seed} --duration "
             f"{duration} --faults {faults}", err=True)
        sys.exit(1)
    echo(f"linearizable: 0 violations (seed {seed})")
