"""The nemesis: injects one planned fault into a running ``LocalCluster``, ends it after its
hold time, measures the recovery (every anchor child answers again by name) and repairs the
cluster (a replacement for a node that died), recording each step in the history.

Kinds: ``kill`` SIGKILLs a worker node's processes; ``pause`` SIGSTOPs them, SIGCONT after the
hold; ``partition`` cuts a worker's link and heals it after the hold (``isolated_nodes``);
``child`` SIGKILLs one child's process; ``control`` kills a control-plane actor (membership or
a registry shard) and lets Ray restart it; ``head`` restarts the head node (GCS fault
tolerance). A worker the GCS declared dead is replaced by a new node, and the old
incarnations of its children must have stopped once it can talk again (``zombies``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from herd.chaos import ledger
from herd.chaos.config import ChaosConfig
from herd.chaos.errors import HeadLost, NoTarget
from herd.chaos.history import History
from herd.chaos.observe import REGISTRY_PROBE, alive_pids, wait_answering
from herd.chaos.schedule import PlannedFault
from herd.chaos.workload import Client
from herd.platform.control_plane import get_named
from herd.platform.errors import ClusterError, ConfigError
from herd.platform.gcs import nodes
from herd.platform.local.cluster import LocalCluster
from herd.platform.local.node import LocalNode
from herd.platform.logging import get_logger
from herd.platform.membership import ACTOR_NAME as MEMBERSHIP_ACTOR
from herd.platform.waiting import deadline_in
from herd.registry.layout import actor_name

__all__ = ["CONTROL_ACTORS", "Nemesis", "check_supported", "cluster_options"]

log = get_logger("herd.chaos.faults")

CONTROL_ACTORS = (MEMBERSHIP_ACTOR, actor_name("default", 0, 1))
#: How long the old incarnations on a node declared dead may run on after it can talk again.
ZOMBIE_BOUND_S = 30.0
#: A node fault spares the last worker, so children stay off the head.
MIN_WORKERS = 2

Ending = Callable[[], None]
#: Fault kinds that need a feature of ``LocalCluster``: the method they call.
NEEDS = {"head": "restart_head", "partition": "partition"}


def check_supported(faults: list[str]) -> None:
    """``ConfigError`` for a fault kind this ``LocalCluster`` cannot inject."""
    for kind in faults:
        method = NEEDS.get(kind)
        if method is not None and not hasattr(LocalCluster, method):
            raise ConfigError(f"fault kind {kind!r} needs LocalCluster.{method}(), which this "
                              f"version of herd does not have", field="faults", value=kind)


def cluster_options(faults: list[str]) -> dict[str, Any]:
    """``LocalCluster`` options the fault kinds need (partitions need isolated nodes)."""
    return {"isolated_nodes": True} if "partition" in faults else {}


class Nemesis:
    def __init__(self, config: ChaosConfig, cluster: LocalCluster, history: History,
                 ledger_path: Path, client: Client) -> None:
        self.config, self.cluster, self.history = config, cluster, history
        self.ledger_path = ledger_path
        self.client = client
        self.live_tags = client.live_tags
        # Recovery means: every anchor child, every child the fault hit (unless the client
        # terminated it meanwhile) and the registry answer again.
        self.anchors = [f"a-{i}" for i in range(config.anchor_children)]

    # --------------------------------------------------------------------------------- run
    def run(self, planned: PlannedFault) -> bool:
        """Inject ``planned``, end it after its hold, record its recovery, repair; False when
        the cluster did not recover within the bound."""
        op = self.history.invoke("nemesis", planned.kind,
                                 {"fault": planned.index, "hold_s": planned.hold_s})
        started = time.monotonic()
        running_before = self._running_children()
        try:
            value, ending, victim = self.inject(planned)
        except NoTarget as exc:
            op.fail({"fault": planned.index, "error": str(exc)})
            return True
        except HeadLost as exc:
            op.info({"fault": planned.index, "error": str(exc)})
            raise
        except Exception as exc:  # it may have happened in part: measure the recovery anyway
            log.warning("fault_injection_failed", kind=planned.kind, error=repr(exc))
            value, ending, victim = {"error": f"{type(exc).__name__}: {exc}"}, None, None
            op.info({"fault": planned.index, **value})
        else:
            op.ok({"fault": planned.index, **value})
        on_victim = [(s.tag, s.pid) for s in running_before
                     if victim is not None and s.node == victim.node_id]
        recover = self.history.invoke("nemesis", "recover",
                                      {"fault": planned.index, "kind": planned.kind})
        deadline = started + self.config.recovery_bound_s
        hit = {tag for tag, _ in on_victim} | ({value["child"]} if "child" in value else set())
        wanted = sorted(set(self.anchors) | hit | {REGISTRY_PROBE})
        if ending is not None:
            # Children on a paused or cut-off node fail over during the hold: watch them then.
            silent = wait_answering(self.config.supervisor, wanted,
                                    min(deadline, started + planned.hold_s), self.live_tags)
            time.sleep(max(0.0, started + planned.hold_s - time.monotonic()))
            self._end(planned, ending)
            if silent:
                silent = wait_answering(self.config.supervisor, sorted(silent), deadline,
                                        self.live_tags)
        else:
            silent = wait_answering(self.config.supervisor, wanted, deadline, self.live_tags)
        seconds = round(time.monotonic() - started, 3)
        zombies = self._repair(planned, victim, on_victim)
        result = {"fault": planned.index, "kind": planned.kind, "seconds": seconds,
                  "zombies": zombies}
        if silent:
            recover.fail({**result, "missing": sorted(silent)})
            return False
        recover.ok(result)
        return True

    # ------------------------------------------------------------------------------ inject
    def inject(self, planned: PlannedFault) -> tuple[dict[str, Any], Ending | None,
                                                     LocalNode | None]:
        """Start the fault; returns what it hit, how to end it (None: nothing to end) and the
        node it hit (node faults)."""
        kind = planned.kind
        if kind in ("kill", "pause", "partition"):
            node = self._worker(planned)
            value = {"node": node.name, "node_id": (node.node_id or "")[:12]}
            if kind == "kill":
                self.cluster.kill_node(node)
                return value, None, node
            if kind == "pause":
                self.cluster.pause_node(node)
                return value, lambda: _ignore(self.cluster.resume_node(node)), node
            self.cluster.partition(node)
            return value, lambda: self.cluster.heal(node), node
        if kind == "child":
            return self._kill_child(planned), None, None
        if kind == "control":
            return self._kill_control_actor(planned), None, None
        if kind == "head":
            # restart_head reconnects this process's driver: no client call may be in flight.
            with self.client.driver_lock:
                try:
                    took = self.cluster.restart_head()
                except ClusterError as exc:
                    raise HeadLost(f"the head did not come back: {first_line(exc)}") from exc
                finally:
                    with contextlib.suppress(Exception):  # its calls will tell
                        self.client.reconnected()
            return {"node": self.cluster.head.name, "restart_s": round(took, 3)}, None, None
        raise NoTarget(f"unknown fault kind {kind!r}")

    def _worker(self, planned: PlannedFault) -> LocalNode:
        workers = sorted((n for n in self.cluster.worker_nodes if n.state == "running"),
                         key=lambda n: n.name)
        if len(workers) < MIN_WORKERS:
            raise NoTarget(f"{len(workers)} running workers; a node fault needs "
                           f"{MIN_WORKERS}")
        node: LocalNode = planned.choose(workers)
        return node

    def _kill_child(self, planned: PlannedFault) -> dict[str, Any]:
        log_now = ledger.read(self.ledger_path)
        running = [(tag, pid) for tag in sorted(self.live_tags())
                   for pid in alive_pids(log_now, tag)]
        if not running:
            raise NoTarget("no child process runs")
        tag, pid = planned.choose(running)
        os.kill(pid, signal.SIGKILL)
        return {"child": tag, "pid": pid}

    def _kill_control_actor(self, planned: PlannedFault) -> dict[str, Any]:
        name = planned.choose(list(CONTROL_ACTORS))
        handle = get_named(name)
        if handle is None:
            raise NoTarget(f"no actor named {name}")
        ray.kill(handle, no_restart=False)
        return {"actor": name}

    def _end(self, planned: PlannedFault, ending: Ending) -> None:
        op = self.history.invoke("nemesis", f"end_{planned.kind}", {"fault": planned.index})
        try:
            ending()
        except Exception as exc:
            op.info({"fault": planned.index, "error": f"{type(exc).__name__}: {exc}"})
            return
        op.ok({"fault": planned.index})

    # ------------------------------------------------------------------------------ repair
    def _running_children(self) -> list[ledger.Start]:
        """The incarnations whose processes run now (from the ledger and /proc)."""
        return [s for s in ledger.read(self.ledger_path).starts
                if ledger.process_start_ticks(s.pid) == s.ticks]

    def _repair(self, planned: PlannedFault, victim: LocalNode | None,
                on_victim: list[tuple[str, int]]) -> list[int]:
        """Replace a worker that died; returns the old incarnations on a node declared dead
        that still ran ``ZOMBIE_BOUND_S`` after it could talk again."""
        if victim is None:
            return []
        zombies: list[int] = []
        if planned.kind in ("pause", "partition"):
            if not _declared_dead(victim):
                return []
            deadline = deadline_in(ZOMBIE_BOUND_S)
            zombies = [pid for _, pid in on_victim]
            while zombies and time.monotonic() < deadline:
                zombies = [p for p in zombies if ledger.process_start_ticks(p) is not None]
                time.sleep(0.2)
            if victim.state != "killed":
                self.cluster.kill_node(victim)  # what is left of it: raylet, agents
        op = self.history.invoke("nemesis", "replace_node", {"fault": planned.index,
                                                             "old": victim.name})
        try:
            node = self.cluster.add_node()
        except Exception as exc:
            op.info({"fault": planned.index, "error": f"{type(exc).__name__}: {exc}"})
        else:
            op.ok({"fault": planned.index, "node": node.name})
        return zombies


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _ignore(_result: object) -> None:
    """An ending returns nothing (``resume_node`` returns the node)."""


def _declared_dead(node: LocalNode) -> bool:
    """Whether the GCS declared ``node`` dead (waiting a little for it to say so)."""
    deadline = deadline_in(10.0)
    while True:
        try:
            table = {n.node_id: n.alive for n in nodes()}
        except Exception:  # the GCS is busy: ask again
            table = {}
        if node.node_id in table:
            return not table[node.node_id]
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)
