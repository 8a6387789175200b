"""A bounded, seeded consensus chaos run: a KV group and a lock group on a head + 3 workers
cluster with isolated nodes, clients working both while the nemesis kills, pauses and cuts off
members' nodes; the linearizability checker finds every history linearizable and every fault
was recovered from (the groups whole again).

``HERD_CHAOS_SEED``, ``HERD_CHAOS_DURATION_S`` change the run (``herd chaos --workload
consensus`` is the same run from the command line)."""

from __future__ import annotations

import os

from herd.chaos.config import ChaosConfig
from herd.chaos.consensus_workload import HEALTH_CHECK, run_consensus
from herd.platform.local.cluster import LocalCluster

SEED = int(os.environ.get("HERD_CHAOS_SEED", "3"))
DURATION_S = float(os.environ.get("HERD_CHAOS_DURATION_S", "20"))


def test_consensus_chaos_run_is_linearizable() -> None:
    config = ChaosConfig.build(seed=SEED, duration_s=DURATION_S,
                               faults=["kill", "pause", "partition"], fault_gap_s=3.0,
                               hold_s=(1.0, 2.5), recovery_bound_s=40.0, op_gap_s=0.05)
    cluster = LocalCluster(nodes=4, regions=["us-east"], health_check=HEALTH_CHECK,
                           isolated_nodes=True)
    try:
        cluster.connect(log_to_driver=False)
        result = run_consensus(config, cluster)
    finally:
        cluster.shutdown()
    summary = result.summary
    print(f"\nconsensus chaos: {summary}")
    assert not result.violations, result.violations
    assert summary["faults"], "the nemesis injected no fault"
    ok = sum(n for key, n in summary["operations"].items() if key.endswith(":ok"))
    assert ok >= 50 and summary["kv"]["operations"] > 0 and summary["lock"]["operations"] > 0
