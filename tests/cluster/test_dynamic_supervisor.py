"""The distributed dynamic supervisor on a real 3-node, 2-region cluster (head us-east, worker-1
us-west, worker-2 us-east): placement by every strategy (off the head by default), region
constraints, impossible placements, the child API and child names, per-child restart budgets and
escalation, calls on a stopped supervisor, and -- last, because it adds a node -- join with
active rebalance and handoff, passive supervisors staying put, drain.

Children report to a ``Ledger`` actor on the head (starts, terminate hooks), so the tests check
what really ran, not only what the registry says."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform import kv, rpc
from herd.platform.control_plane import pinned_options
from herd.platform.errors import HerdTimeoutError
from herd.platform.gcs import NodeInfo
from herd.platform.waiting import wait_until
from herd.registry import Registry, via
from herd.supervisors import ChildAlreadyStarted, ChildSpec
from herd.supervisors import exit as herd_exit
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import (
    ChildNotFound,
    PlacementError,
    StartChildError,
    SupervisorStopped,
)
from herd.supervisors.fencing import Superseded, check
from herd.supervisors.strategies import make_strategy, member_of

WAIT_S = 60.0
DISTURBS_CLUSTER = True  # a test adds a node (see tests/shared_cluster.py)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class Ledger:
    """What children did: starts (tag, pid, node) and terminate hooks; crash switches."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int, str]] = []
        self.terminated: list[tuple[str, str]] = []
        self.crashing: set[str] = set()

    def started(self, tag: str, pid: int, node: str) -> None:
        self.starts.append((tag, pid, node))

    def terminate(self, tag: str, reason: str) -> None:
        self.terminated.append((tag, reason))

    def crash_loop(self, tag: str) -> None:
        self.crashing.add(tag)

    def is_crashing(self, tag: str) -> bool:
        return tag in self.crashing

    def report(self) -> dict[str, Any]:
        return {"starts": list(self.starts), "terminated": list(self.terminated)}


class DsupWorker:
    """A child with state that moves with it (``handoff``/``restore``)."""

    def __init__(self, ledger: Any, tag: str, fail: bool = False) -> None:
        if fail:
            raise RuntimeError(f"{tag} refuses to start")
        self.ledger, self.tag, self.state = ledger, tag, {}
        self.node = ray.get_runtime_context().get_node_id()
        rpc.get(ledger.started.remote(tag, os.getpid(), self.node), timeout=10)
        if rpc.get(ledger.is_crashing.remote(tag), timeout=10):
            threading.Timer(0.3, herd_exit, ("error: crash loop",)).start()

    def where(self) -> tuple[int, str]:
        return os.getpid(), self.node

    def put(self, key: str, value: Any) -> None:
        self.state[key] = value

    def get(self, key: str) -> Any:
        return self.state.get(key)

    def crash(self) -> None:
        """Exit abnormally now and in every later incarnation (0.3 s after it starts)."""
        rpc.get(self.ledger.crash_loop.remote(self.tag), timeout=10)
        herd_exit("error: crash loop")

    def fence(self, key: str) -> int | str:
        """``fencing.check(key)`` from inside this child: the epoch, or why it failed."""
        try:
            return check(key, timeout=2)
        except Superseded as exc:
            return exc.detail

    def handoff(self) -> dict[str, Any]:
        return dict(self.state)

    def restore(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    def terminate(self, reason: str) -> None:
        rpc.get(self.ledger.terminate.remote(self.tag, reason), timeout=10)


@pytest.fixture(scope="module")
def ledger(cluster: Any) -> Any:
    handle = Ledger.options(**pinned_options(cluster.head.node_id)).remote()
    yield handle
    ray.kill(handle)


def start_sup(started: list[DynamicSupervisor], name: str, **options: Any) -> DynamicSupervisor:
    options.setdefault("reconcile_interval_s", 0.5)
    sup = DynamicSupervisor.start(name, timeout=WAIT_S, **options)
    started.append(sup)
    return sup


def spec(ledger: Any, tag: str, **kw: Any) -> ChildSpec:
    kw.setdefault("shutdown", 2000)
    fail = kw.pop("fail", False)
    return ChildSpec(id=tag, actor=DsupWorker, args=(ledger, tag, fail), **kw)


def children(sup: DynamicSupervisor) -> dict[str, DynamicChildInfo]:
    return {c.id: c for c in sup.which_children(timeout=WAIT_S)}


def where(info: DynamicChildInfo) -> tuple[int, str]:
    return rpc.get(info.handle.where.remote(), timeout=WAIT_S)


def starts(ledger: Any, tag: str) -> list[tuple[str, int, str]]:
    return [s for s in rpc.get(ledger.report.remote(), timeout=WAIT_S)["starts"] if s[0] == tag]


def settled(sup: DynamicSupervisor, expect: dict[str, str] | None = None,
            what: str = "children settled") -> dict[str, DynamicChildInfo]:
    """Wait until every child runs with a holder (on the expected nodes, if given)."""
    seen: dict[str, Any] = {}

    def probe() -> dict[str, DynamicChildInfo] | None:
        now = children(sup)
        seen["last"] = {k: (c.node_id[:8] if c.node_id else None, c.status, c.incarnation)
                        for k, c in now.items()}
        if any(c.status != "running" or c.handle is None for c in now.values()):
            return None
        if expect is not None and {k: c.node_id for k, c in now.items()} != expect:
            return None
        return now

    try:
        return wait_until(probe, WAIT_S, what=what)
    except HerdTimeoutError as exc:
        wanted = {k: v[:8] for k, v in (expect or {}).items()}
        raise AssertionError(f"{exc}; last seen {seen.get('last')}; wanted {wanted}") from None


def ring_owners(sup: DynamicSupervisor, ids: list[str]) -> dict[str, str]:
    """The owners the supervisor's strategy gives ``ids`` over its current members."""
    members = [member_of_row(row) for row in sup.members(timeout=WAIT_S)]
    strategy = make_strategy(sup.config.distribution, **sup.config.distribution_options)
    return {i: strategy.choose(i, members).id for i in ids}


def member_of_row(row: dict[str, Any]) -> Any:
    return member_of(NodeInfo(row["node_id"], "", True, row["labels"], {}))


# ------------------------------------------------------------------------------ placement
def test_hash_ring_places_deterministically_and_the_child_api(cluster: Any, ledger: Any,
                                                               dynamic_sups: list) -> None:
    """hash_ring: owners are the ring's (a pure function of ids and members), spread over the
    worker nodes and never on the head (members="auto"), and each child really runs where its
    record says, registered as <supervisor>/<id>; region selectors; impossible placements fail
    fast and leave nothing; duplicate ids; terminate/restart/count."""
    sup = start_sup(dynamic_sups, "dsup-ring")
    workers = sorted(n.node_id for n in cluster.worker_nodes)
    assert [m["node_id"] for m in sup.members()] == workers
    assert member_handle("dsup-ring", cluster.head.node_id) is not None  # idle, standing by
    ids = [f"ring-{i}" for i in range(4)]
    for child_id in ids:
        info = sup.start_child(spec(ledger, child_id), timeout=WAIT_S)
        assert info.incarnation == 1 and info.status == "running" and info.handle is not None
        assert (info.id, info.name) == (child_id, f"dsup-ring/{child_id}")
    expected = ring_owners(sup, ids)
    now = children(sup)
    assert {k: c.node_id for k, c in now.items()} == expected
    spread = ring_owners(sup, [f"spread-{i}" for i in range(60)])  # the ring uses every worker
    assert sorted(set(spread.values())) == workers
    for child_id, info in now.items():
        pid, node = where(info)
        assert node == info.node_id and starts(ledger, child_id) == [(child_id, pid, node)]
        assert rpc.get(info.handle.fence.remote(info.name)) == info.epoch  # the holder
        assert via(info.name).where.call() == (pid, node)
    assert "holder is now actor" in rpc.get(now["ring-0"].handle.fence.remote(now["ring-1"].name))
    assert "no holder" in rpc.get(now["ring-0"].handle.fence.remote("dsup-ring/no-such-child"))

    west = next(n for n in cluster.nodes if n.region == "us-west")
    pinned = sup.start_child(spec(ledger, "ring-west",
                                  options={"label_selector": {"region": "us-west"}}))
    assert pinned.node_id == west.node_id and where(pinned)[1] == west.node_id
    assert pinned.region == "us-west"

    registry = Registry.start()
    for bad, error in ((spec(ledger, "ring-mars", options={"label_selector": {"region": "mars"}}),
                        PlacementError),
                       (spec(ledger, "ring-gpu", options={"num_gpus": 1}), PlacementError),
                       (spec(ledger, "ring-fail", fail=True), StartChildError)):
        began = time.monotonic()
        with pytest.raises(error) as caught:
            sup.start_child(bad, timeout=WAIT_S)
        assert time.monotonic() - began < 15, "an impossible child must fail fast"
        assert registry.entry(f"dsup-ring/{bad.id}", fresh=True) is None, caught.value
    assert "refuses to start" in str(caught.value)

    with pytest.raises(ChildAlreadyStarted):
        sup.start_child(spec(ledger, "ring-0"))
    assert where(children(sup)["ring-0"]) == where(now["ring-0"])  # untouched

    old_pid = where(now["ring-1"])[0]
    restarted = sup.restart_child("ring-1", timeout=WAIT_S)
    assert restarted.incarnation == 2 and where(restarted)[0] != old_pid
    sup.terminate_child("ring-2", timeout=WAIT_S)
    assert ("ring-2", "shutdown") in rpc.get(ledger.report.remote())["terminated"]
    assert registry.entry("dsup-ring/ring-2", fresh=True) is None
    with pytest.raises(ChildNotFound):
        sup.terminate_child("ring-2")
    assert sup.count_children() == {"specs": 4, "active": 4, "workers": 4, "supervisors": 0}


def test_members_all_and_child_names_per_supervisor(cluster: Any, ledger: Any,
                                                    dynamic_sups: list) -> None:
    """members="all" places on the head too. Two supervisors on one registry each run a child
    with the same id: the names <supervisor>/<id> keep them apart."""
    everywhere = start_sup(dynamic_sups, "dsup-all", members="all")
    assert [m["node_id"] for m in everywhere.members()] == sorted(n.node_id
                                                                  for n in cluster.nodes)
    owners = ring_owners(everywhere, [f"spread-{i}" for i in range(60)])
    assert cluster.head.node_id in owners.values()
    other = start_sup(dynamic_sups, "dsup-other")
    first = everywhere.start_child(spec(ledger, "twin"), timeout=WAIT_S)
    second = other.start_child(spec(ledger, "twin"), timeout=WAIT_S)
    assert (first.name, second.name) == ("dsup-all/twin", "dsup-other/twin")
    assert via(first.name).where.call() == where(first)
    assert via(second.name).where.call() == where(second) != where(first)
    everywhere.terminate_child("twin", timeout=WAIT_S)
    assert [c.id for c in other.which_children()] == ["twin"]


def test_least_loaded_and_random(cluster: Any, ledger: Any, dynamic_sups: list) -> None:
    """least_loaded fills the emptiest member (ties by id): two children on the two us-east
    nodes. random places on members only, and every child answers where its record says."""
    east = sorted(n.node_id for n in cluster.nodes if n.region == "us-east")
    loaded = start_sup(dynamic_sups, "dsup-least", distribution="least_loaded",
                       members={"region": "us-east"})
    nodes = [loaded.start_child(spec(ledger, f"least-{i}"), timeout=WAIT_S).node_id
             for i in range(2)]
    assert nodes == east
    rand = start_sup(dynamic_sups, "dsup-random", distribution="random",
                     members={"region": "us-east"})
    for i in range(3):
        rand.start_child(spec(ledger, f"rand-{i}"), timeout=WAIT_S)
    for info in children(rand).values():
        assert info.node_id in east and where(info)[1] == info.node_id


# -------------------------------------------------------------------------------- budgets
def test_region_members_and_per_child_budget(cluster: Any, ledger: Any, dynamic_sups: list) -> None:
    """members={"region": "us-west"}: members and children only there; a child that needs
    another region has no member to go to. A crash-looping child exhausts its own budget and
    is given up (reported); its siblings on the same node keep running, same incarnation."""
    west = [n.node_id for n in cluster.nodes if n.region == "us-west"]
    sup = start_sup(dynamic_sups, "dsup-budget", members={"region": "us-west"}, max_restarts=2,
                    max_seconds=60)
    assert [m["node_id"] for m in sup.members()] == west
    assert member_handle("dsup-budget", cluster.head.node_id) is None
    with pytest.raises(PlacementError):
        sup.start_child(spec(ledger, "bud-east", options={"label_selector": {"region": "us-east"}}))
    for tag in ("bud-a", "bud-b", "bud-crash"):
        assert sup.start_child(spec(ledger, tag), timeout=WAIT_S).node_id in west
    before = children(sup)
    sibling_pids = {k: where(before[k]) for k in ("bud-a", "bud-b")}
    before["bud-crash"].handle.crash.remote()
    wait_until(lambda: "bud-crash" in sup.given_up(), WAIT_S, what="crashing child given up")
    assert len(starts(ledger, "bud-crash")) == 3  # first start + max_restarts restarts
    assert "bud-crash" not in children(sup)
    after = children(sup)
    for tag, (pid, node) in sibling_pids.items():
        assert after[tag].incarnation == 1 and after[tag].epoch == before[tag].epoch
        assert where(after[tag]) == (pid, node)


def test_exhausted_budget_escalates_when_asked(cluster: Any, ledger: Any,
                                               dynamic_sups: list) -> None:
    """on_exhausted="escalate": the first child over its budget stops the whole supervisor.
    From then on every call on it says so, at once, with the reason: which child, which
    intensity."""
    sup = start_sup(dynamic_sups, "dsup-escalate", members={"region": "us-west"}, max_restarts=0,
                    max_seconds=30, on_exhausted="escalate")
    assert sup.stopped_reason() is None
    sibling = sup.start_child(spec(ledger, "esc-sibling"), timeout=WAIT_S)
    crasher = sup.start_child(spec(ledger, "esc-crash"), timeout=WAIT_S)
    crasher.handle.crash.remote()
    wait_until(lambda: _dead(sibling.handle), WAIT_S, what="sibling stopped by the escalation")
    assert ("esc-sibling", "shutdown") in rpc.get(ledger.report.remote())["terminated"]
    reason = sup.stopped_reason()
    assert reason is not None and "'esc-crash'" in reason, reason
    assert "max_restarts=0 in max_seconds=30" in reason
    calls = {
        "start_child": lambda: sup.start_child(spec(ledger, "esc-late")),
        "which_children": sup.which_children, "count_children": sup.count_children,
        "members": sup.members, "has_quorum": sup.has_quorum, "given_up": sup.given_up,
        "terminate_child": lambda: sup.terminate_child("esc-sibling"),
        "restart_child": lambda: sup.restart_child("esc-sibling"),
        "drain_node": lambda: sup.drain_node(cluster.worker_nodes[0].node_id),
        "get": lambda: DynamicSupervisor.get("dsup-escalate")}
    for name, call in calls.items():
        began = time.monotonic()
        with pytest.raises(SupervisorStopped, match="esc-crash") as caught:
            call()
        assert time.monotonic() - began < 1.0, name
        assert "max_restarts=0" in str(caught.value), name
    assert DynamicSupervisor.get("dsup-escalate", include_stopped=True).stopped_reason() == reason


def test_start_child_after_stop_fails_at_once_and_leaves_nothing(cluster: Any, ledger: Any,
                                                                  dynamic_sups: list) -> None:
    """After stop(): start_child raises SupervisorStopped in well under a second and creates no
    record; a new supervisor of the same name starts clean (no member meets a record without
    its spec, which it would log as child_spec_missing)."""
    sup = DynamicSupervisor.start("dsup-stopped", reconcile_interval_s=0.5, timeout=WAIT_S)
    sup.start_child(spec(ledger, "stop-a"), timeout=WAIT_S)
    sup.stop(timeout=WAIT_S)
    assert sup.stopped_reason() == "stopped"
    began = time.monotonic()
    with pytest.raises(SupervisorStopped):
        sup.start_child(spec(ledger, "stop-late"), timeout=WAIT_S)
    assert time.monotonic() - began < 1.0
    with pytest.raises(SupervisorStopped):
        sup.which_children()
    registry = Registry.start()
    assert registry.select(prefix="dsup-stopped/") == []
    assert kv.keys("dsup/dsup-stopped/") == []

    again = start_sup(dynamic_sups, "dsup-stopped")
    assert again.which_children() == []
    again.start_child(spec(ledger, "stop-b"), timeout=WAIT_S)
    time.sleep(2.0)  # several reconcile rounds of every member
    assert [c.id for c in settled(again).values()] == ["stop-b"]
    assert _logged(cluster, "member_started", "dsup-stopped")  # members' logs are read
    assert not _logged(cluster, "child_spec_missing", "dsup-stopped")


def _log_files(cluster: Any) -> list[Any]:
    """The cluster's Ray log files (actors' stdout/stderr included)."""
    return [path for path in cluster.ray_tmp.rglob("*")
            if path.is_file() and path.suffix in (".out", ".err", ".log")]


def _logged(cluster: Any, *words: str) -> list[str]:
    """Lines of the cluster's Ray logs with all ``words``."""
    found = []
    for path in _log_files(cluster):
        with open(path, errors="replace") as f:
            found += [line for line in f if all(w in line for w in words)]
    return found


def _dead(handle: Any) -> bool:
    try:
        rpc.get(handle.where.remote(), timeout=5)
        return False
    except ray.exceptions.RayActorError:
        return True


# ------------------------------------------------------------------- join, rebalance, drain
def test_join_rebalances_with_handoff_and_drain(cluster: Any, ledger: Any,
                                                dynamic_sups: list) -> None:
    """A us-west node joins: the active (least_loaded) supervisor evens its 4/0 split to 2/2 by
    moving children there with their state (handoff/restore); a passive one moves nothing.
    Draining the new node moves its children back, state included, and places nothing there."""
    active = start_sup(dynamic_sups, "dsup-active", members={"region": "us-west"},
                       distribution="least_loaded", redistribution="active")
    passive = start_sup(dynamic_sups, "dsup-passive", members={"region": "us-west"})
    ids = [f"act-{i}" for i in range(4)]
    for child_id in ids:
        info = active.start_child(spec(ledger, child_id), timeout=WAIT_S)
        rpc.get(info.handle.put.remote("value", child_id.upper()), timeout=WAIT_S)
    passive.start_child(spec(ledger, "pas-0"), timeout=WAIT_S)
    passive_before = {k: where(c) for k, c in children(passive).items()}
    first_pids = {k: where(c)[0] for k, c in children(active).items()}
    (west,) = {c.node_id for c in children(active).values()}  # the only us-west member

    joined = cluster.add_node(region="us-west")
    # Moves go in id order while they even the loads: act-0 and act-1 leave.
    expected = {"act-0": joined.node_id, "act-1": joined.node_id, "act-2": west, "act-3": west}
    now = settled(active, expected, "active rebalance")
    for child_id, info in now.items():
        pid, node = where(info)
        assert rpc.get(info.handle.get.remote("value")) == child_id.upper()  # state kept
        moved = node == joined.node_id
        assert (pid != first_pids[child_id]) == moved and info.incarnation == 1 + moved
    assert {k: where(c) for k, c in children(passive).items()} == passive_before

    active.drain_node(joined.node_id, timeout=WAIT_S)
    drained = settled(active, what="drained children running")
    for child_id, info in drained.items():
        assert where(info)[1] != joined.node_id
        assert rpc.get(info.handle.get.remote("value")) == child_id.upper()
    assert next(m for m in active.members() if m["node_id"] == joined.node_id)["draining"]
    late = [active.start_child(spec(ledger, f"act-late-{i}"), timeout=WAIT_S) for i in range(2)]
    assert all(info.node_id != joined.node_id for info in late)  # nothing placed there


def test_members_never_block_their_event_loop(cluster: Any, ledger: Any,
                                              dynamic_sups: list) -> None:
    """No member process makes Ray warn about a blocking ``ray.get`` inside an async actor
    (after the tests above, when run in order, and at least after its own starts, restart,
    crash and terminate)."""
    sup = start_sup(dynamic_sups, "dsup-async")
    for tag in ("async-a", "async-b"):
        sup.start_child(spec(ledger, tag), timeout=WAIT_S)
    sup.restart_child("async-a", timeout=WAIT_S)
    sup.terminate_child("async-b", timeout=WAIT_S)
    member_logs = [path for path in _log_files(cluster) if "member_started" in path.read_text(
        errors="replace")]
    assert member_logs
    warned = [path.name for path in member_logs
              if "blocking ray.get inside async actor" in path.read_text(errors="replace")]
    assert not warned
