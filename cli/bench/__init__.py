"""Benchmarks behind ``herd bench NAME``: each compares herd with plain Ray (or plain Python) in
the same run and reports ratios (these machines are shared and noisy), as a table and as JSON.

A benchmark is a module with ``run(**options) -> BenchReport``; :data:`BENCHMARKS` indexes them.
Add one by writing ``cli/bench/NAME.py`` and a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from herd.cli.bench import (
    crdt,
    failover,
    lightweight,
    membership,
    registry,
    replication,
    restart,
    spawn,
)
from herd.cli.bench.report import BenchReport
from herd.platform.errors import ConfigError

BenchRun = Callable[..., BenchReport]

BENCHMARKS: dict[str, tuple[BenchRun, str]] = {
    "membership": (membership.run,
                   "kill a worker node; time until NodeDown reaches a subscriber"),
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
    "crdt": (crdt.run,
             "ORSet / AWLWWMap merge of 100k elements vs plain set/dict; delta vs full size"),
}


def load(name: str) -> BenchRun:
    """The ``run`` function of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark; choose from {sorted(BENCHMARKS)}",
                          field="bench", value=name)
    return BENCHMARKS[name][0]
