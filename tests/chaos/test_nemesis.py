"""A bounded, seeded chaos run (about 80 s with the cluster start) against a head + 3
workers cluster with fast health checks: the nemesis injects faults of the kinds this
LocalCluster supports (drawn by the seed) while the client works, and the checker finds no
violation in the history.

Replay a failure with the seed it prints (``herd chaos --seed S``), or here with
``HERD_CHAOS_SEED=S``; ``HERD_CHAOS_DURATION_S`` and ``HERD_CHAOS_FAULTS`` change the run,
``HERD_CHAOS_REPORT=FILE`` keeps its history and summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from herd.chaos.config import FAULT_KINDS, ChaosConfig, parse_faults
from herd.chaos.faults import NEEDS, cluster_options
from herd.chaos.runner import run
from herd.chaos.summary import write_report
from herd.platform.cluster import LocalCluster
from herd.platform.config import HealthCheckConfig

SEED = int(os.environ.get("HERD_CHAOS_SEED", "1"))
DURATION_S = float(os.environ.get("HERD_CHAOS_DURATION_S", "30"))
FAST = HealthCheckConfig(initial_delay_ms=1000, period_ms=500, timeout_ms=500,
                         failure_threshold=3)


def supported_faults() -> list[str]:
    wanted = os.environ.get("HERD_CHAOS_FAULTS")
    kinds = parse_faults(wanted) if wanted else list(FAULT_KINDS)
    return [k for k in kinds if k not in NEEDS or hasattr(LocalCluster, NEEDS[k])]


FAULTS = supported_faults()


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(nodes=4, health_check=FAST, **cluster_options(FAULTS))
    try:
        cluster.connect()
        yield cluster
    finally:
        if any(node.pids for node in cluster.nodes):  # the run shuts it down itself
            cluster.shutdown()


def test_seeded_run_keeps_every_guarantee(chaos_cluster: LocalCluster, tmp_path: Path) -> None:
    config = ChaosConfig(seed=SEED, duration_s=DURATION_S, faults=FAULTS, fault_gap_s=4.0,
                         recovery_bound_s=60.0)
    result = run(config, chaos_cluster, tmp_path / "chaos.ledger")
    report = Path(os.environ.get("HERD_CHAOS_REPORT", tmp_path / "chaos.json"))
    write_report(report, result.summary, result.history)
    summary = result.summary
    print(json.dumps({k: summary[k] for k in ("seed", "elapsed_s", "faults", "recovery",
                                              "ledger")}))
    assert not result.violations, (
        f"seed {SEED}: {len(result.violations)} violations (replay: {summary['replay']}):\n"
        + "\n".join(str(v) for v in result.violations))
    # The nemesis did act (the run is bounded by time and each fault waits for the recovery
    # from the one before: on a loaded machine a partition's takes 10 s, and only 2 fit).
    assert sum(summary["faults"].values()) >= 2, summary["faults"]
    ops = summary["operations"]
    assert ops["call"].get("ok", 0) >= 20 and ops["start_child"].get("ok", 0) >= 4, ops
    history = result.history
    assert history.last("teardown").value["leftover_pids"] == []
    # The children wrote through the run: the ledger observed the fencing.
    assert summary["ledger"]["writes"] >= 100 and summary["ledger"]["writers"] >= 4
    assert all(c["alive_pids"] for t, c in history.last("final").value["children"].items()
               if t.startswith("a-"))
