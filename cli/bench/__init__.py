"""Benchmarks behind ``herd bench NAME``: each compares herd with plain Ray (or plain Python) in
the same run and reports ratios (these machines are shared and noisy), as a table and as JSON.

A benchmark is a module with ``run(**options) -> BenchReport``; :data:`BENCHMARKS` indexes them.
Add one by writing ``cli/bench/NAME.py`` and a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from herd.cli.bench import (
    consensus,
    crdt,
    dashboard,
    eventsourcing,
    failover,
    lightweight,
    membership,
    registry,
    replication,
    restart,
    services,
    spawn,
)
from herd.cli.bench.report import BenchReport
from herd.platform.errors import ConfigError

BenchRun = Callable[..., BenchReport]

BENCHMARKS: dict[str, tuple[BenchRun, str]] = {
    "membership": (membership.run,
                   "kill a worker node; time until NodeDown reaches a subscriber"),
    "dashboard": (dashboard.run,
                  "failover shown on the dashboard's stream vs a 1 s which_children poll; "
                  "cluster CPU with and without the dashboard, idle and in a 10 000-child "
                  "failover"),
    "registry": (registry.run,
                 "cached/uncached lookup vs ray.get_actor, register throughput, watch latency"),
    "restart": (restart.run,
                "SIGKILL a child; time until its replacement answers, herd vs max_restarts=-1"),
    "failover": (failover.run,
                 "SIGKILL a node holding K children; time until all answer, herd vs Ray-native"),
    "spawn": (spawn.run, "start_child throughput vs raw actor creation"),
    "replication": (replication.run,
                    "convergence p50/p99 across federated clusters with 50 ms delay, local write "
                    "throughput, reconciliation bytes vs full state"),
    "lightweight": (lightweight.run,
                    "spawn rate / memory per idle child and restart latency: lightweight vs "
                    "actor children"),
    "eventsourcing": (eventsourcing.run,
                      "commands/s through aggregates vs a plain append loop (SQLite, "
                      "PostgreSQL), rehydration, projection catch-up, failover"),
    "services": (services.run,
                 "presence convergence (join, heal, dead node), diff fan-out to 1000 listeners, "
                 "cache get local hit vs actor call, erpc multicall vs ray.wait"),
    "consensus": (consensus.run,
                  "Raft KV group: commands/s at 1/16/64 clients, commit p50/p99, ReadIndex vs "
                  "lease reads, leader SIGKILL -> commit, replaced member catch-up; GCS KV put "
                  "and registry compare_and_set baselines"),
    "crdt": (crdt.run,
             "ORSet / AWLWWMap merge of 100k elements vs plain set/dict; delta vs full size"),
}


def load(name: str) -> BenchRun:
    """The ``run`` function of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark; choose from {sorted(BENCHMARKS)}",
                          field="bench", value=name)
    return BENCHMARKS[name][0]
